/* graph.c - interaction graph, co-occurrence and random walks. */
#include "graph.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

void rec_graph_init(rec_graph *g, uint32_t window) {
    memset(g, 0, sizeof *g);
    g->window = window ? window : 5;
    g->top_budget = REC_GRAPH_TOP_ROWS;
}

void rec_graph_close(rec_graph *g) {
    for (uint32_t i = 0; i < g->nusers; i++)
        free(g->users[i].e);
    for (uint32_t i = 0; i < g->nitems; i++) {
        free(g->aud[i].u);
        free(g->cooc[i].e);
        free(g->cooc[i].top);
    }
    free(g->users);
    free(g->aud);
    free(g->cooc);
    free(g->scratch);
    free(g->touched);
    memset(g, 0, sizeof *g);
}

static int grow_users(rec_graph *g, uint32_t user) {
    if (user < g->nusers)
        return 0;
    uint64_t n = g->nusers ? g->nusers : 64;
    while (n <= user)
        n *= 2;
    rec_hlist *u = realloc(g->users, (size_t)n * sizeof *u);
    if (!u)
        return REC_ENOMEM;
    memset(u + g->nusers, 0, (size_t)(n - g->nusers) * sizeof *u);
    g->users = u;
    g->nusers = (uint32_t)n;
    return 0;
}

static int grow_items(rec_graph *g, uint32_t item) {
    if (item < g->nitems)
        return 0;
    uint64_t n = g->nitems ? g->nitems : 64;
    while (n <= item)
        n *= 2;
    rec_ulist *a = realloc(g->aud, (size_t)n * sizeof *a);
    if (!a)
        return REC_ENOMEM;
    memset(a + g->nitems, 0, (size_t)(n - g->nitems) * sizeof *a);
    g->aud = a;
    rec_cooc *c = realloc(g->cooc, (size_t)n * sizeof *c);
    if (!c)
        return REC_ENOMEM;
    memset(c + g->nitems, 0, (size_t)(n - g->nitems) * sizeof *c);
    g->cooc = c;
    g->nitems = (uint32_t)n;
    return 0;
}

static uint32_t slot_of(uint32_t key, uint32_t mask) {
    uint32_t h = key * 0x9e3779b1u;
    return (h ^ (h >> 15)) & mask;
}

static int cooc_reserve(rec_cooc *c) {
    if ((c->n + 1) * 4 < c->cap * 3)
        return 0;
    uint32_t cap = c->cap ? c->cap * 2 : 8;
    rec_cooc_slot *e = calloc(cap, sizeof *e);
    if (!e)
        return REC_ENOMEM;
    for (uint32_t i = 0; i < c->cap; i++) {
        if (!c->e[i].key)
            continue;
        uint32_t s = slot_of(c->e[i].key, cap - 1);
        while (e[s].key)
            s = (s + 1) & (cap - 1);
        e[s] = c->e[i];
    }
    free(c->e);
    c->e = e;
    c->cap = cap;
    return 0;
}

/* Pointer to the weight of neighbour b in c, inserting 0 when `add`. */
static float *cooc_slot(rec_cooc *c, uint32_t b, int add, int *created) {
    if (add && cooc_reserve(c))
        return NULL;
    if (!c->cap)
        return NULL;
    uint32_t mask = c->cap - 1, k = b + 1;
    for (uint32_t s = slot_of(k, mask);; s = (s + 1) & mask) {
        if (c->e[s].key == k)
            return &c->e[s].w;
        if (!c->e[s].key) {
            if (!add)
                return NULL;
            c->e[s] = (rec_cooc_slot){.key = k, .w = 0.0f};
            c->n++;
            *created = 1;
            return &c->e[s].w;
        }
    }
}

/* Weights at or below this are no neighbours (cooc_scan). */
#define COOC_MIN_W 1e-6f

/* Whether hit (idx, w) ranks before or with x in the head's order: weight
 * down, then index up (rec_hit_cmp). */
static int ranks_by(uint32_t idx, float w, const rec_hit *x) {
    return w > x->score || (w == x->score && idx <= x->idx);
}

/* Where (idx, w) goes in the ranked head top[0..n): the first entry it
 * ranks before. */
static uint32_t top_place(const rec_hit *top, uint32_t n, uint32_t idx, float w) {
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (ranks_by(idx, w, &top[mid]))
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* Whether a raise of neighbour b to nw leaves the head as it is: b ranks
 * after a full head (whose floor only rises with raises). */
static int after_head(const rec_cooc *c, uint32_t b, float nw) {
    return nw <= COOC_MIN_W ||
           (c->ntop == REC_GRAPH_TOP_CAP && !ranks_by(b, nw, &c->floor));
}

/* Neighbour b of row c went from weight ow (0: new) to nw > ow: put the
 * ranked head right without a scan. The head holds the REC_GRAPH_TOP_CAP
 * strongest neighbours (every one, when it is not full), so b was in it
 * iff ow ranked within it; it is in it now iff nw does. */
static void top_raise(rec_cooc *c, uint32_t b, float ow, float nw) {
    if (after_head(c, b, nw))
        return; /* after the head, before and after */
    int full = c->ntop == REC_GRAPH_TOP_CAP;
    int was_in = ow > COOC_MIN_W && (!full || ranks_by(b, ow, &c->floor));
    uint32_t from;
    if (was_in) {
        from = top_place(c->top, c->ntop, b, ow);
        if (from >= c->ntop || c->top[from].idx != b) { /* cannot be: rescan */
            c->fresh = 0;
            return;
        }
    } else {
        from = full ? c->ntop - 1 : c->ntop++; /* the last falls out */
    }
    uint32_t to = top_place(c->top, from, b, nw);
    memmove(c->top + to + 1, c->top + to, (size_t)(from - to) * sizeof *c->top);
    c->top[to] = (rec_hit){b, nw};
    c->floor = c->top[c->ntop - 1];
}

/* A write raised neighbour b of a row whose head is fresh from ow to nw:
 * nothing to do when b ranks after the head; else noted for the next read
 * (once per neighbour: the first weight is the one the head holds), or
 * the head dropped when the notes are full. No line but the row's own. */
static void head_note(rec_cooc *c, uint32_t b, float ow, float nw) {
    if (after_head(c, b, nw))
        return;
    for (uint32_t i = 0; i < c->npend; i++)
        if (c->pend[i].idx == b)
            return;
    if (c->npend == REC_GRAPH_TOP_PEND) {
        c->fresh = 0;
        return;
    }
    c->pend[c->npend++] = (rec_hit){b, ow};
}

/* The noted raises into the head (which may drop it: fresh 0). */
static void head_settle(rec_cooc *c) {
    for (uint32_t i = 0; i < c->npend && c->fresh; i++) {
        int created = 0;
        const float *p = cooc_slot(c, c->pend[i].idx, 0, &created);
        if (!p || !(*p >= c->pend[i].score)) { /* cannot be: rescan */
            c->fresh = 0;
            break;
        }
        top_raise(c, c->pend[i].idx, c->pend[i].score, *p);
    }
    c->npend = 0;
}

static int cooc_add(rec_graph *g, uint32_t a, uint32_t b, float w) {
    int created = 0;
    rec_cooc *c = &g->cooc[a];
    float *p = cooc_slot(c, b, 1, &created);
    if (!p)
        return REC_ENOMEM;
    float ow = *p;
    *p += w;
    if (c->fresh && *p > ow)
        head_note(c, b, created ? 0.0f : ow, *p);
    else if (*p != ow)
        c->fresh = 0;
    g->edges += (uint64_t)created;
    return 0;
}

/* Distinct positive items among the last entries of h (before position
 * `end`), excluding `item`, at most `window` of them. */
static uint32_t recent_positive(const rec_hlist *h, uint32_t end,
                                uint32_t item, uint32_t window,
                                uint32_t *out, float *wout) {
    uint32_t n = 0;
    for (uint32_t i = end; i-- > 0 && n < window;) {
        const rec_hentry *e = &h->e[i];
        if (e->weight <= 0.0f || e->item == item)
            continue;
        uint32_t j = 0;
        while (j < n && out[j] != e->item)
            j++;
        if (j < n)
            continue;
        out[n] = e->item;
        wout[n++] = e->weight;
    }
    return n;
}

#define WINDOW_MAX 256

/* The neighbours of one event and their weights (see cooc_apply). */
typedef struct nbrs {
    uint32_t n;
    uint32_t item[WINDOW_MAX];
    float w[WINDOW_MAX];
} nbrs;

static void nbrs_find(const rec_graph *g, const rec_hlist *h, uint32_t end,
                      uint32_t item, nbrs *nb) {
    uint32_t win = g->window < WINDOW_MAX ? g->window : WINDOW_MAX;
    nb->n = recent_positive(h, end, item, win, nb->item, nb->w);
}

/* Ask the cache for the slots that nbrs_add updates; their tables' headers
 * are best loaded already. */
static void nbrs_prefetch(const rec_graph *g, uint32_t item, const nbrs *nb) {
    const rec_cooc *own = &g->cooc[item];
    for (uint32_t j = 0; j < nb->n; j++) {
        const rec_cooc *c = &g->cooc[nb->item[j]];
        if (c->cap)
            rec_prefetch(&c->e[slot_of(item + 1, c->cap - 1)]);
        if (own->cap)
            rec_prefetch(&own->e[slot_of(nb->item[j] + 1, own->cap - 1)]);
    }
}

static int nbrs_add(rec_graph *g, uint32_t item, float weight, float sign, const nbrs *nb) {
    for (uint32_t j = 0; j < nb->n; j++) {
        float w = sign * (weight < nb->w[j] ? weight : nb->w[j]);
        int rc = cooc_add(g, item, nb->item[j], w);
        if (!rc)
            rc = cooc_add(g, nb->item[j], item, w);
        if (rc)
            return rc;
    }
    return 0;
}

static int cooc_apply(rec_graph *g, const rec_hlist *h, uint32_t end,
                      uint32_t item, float weight, float sign) {
    nbrs nb;
    nbrs_find(g, h, end, item, &nb);
    /* The tables touched are spread over memory: load their headers, then
     * the slots probed first, all at once, before updating any. */
    for (uint32_t j = 0; j < nb.n; j++)
        rec_prefetch(&g->cooc[nb.item[j]]);
    nbrs_prefetch(g, item, &nb);
    return nbrs_add(g, item, weight, sign, &nb);
}

/* Events apart between the stages of rec_graph_settle, and the ring of
 * neighbour lists between the third stage and the last. */
#define SETTLE_GAP 2
#define SETTLE_RING 8

int rec_graph_settle(rec_graph *g) {
    uint32_t n = g->npend;
    g->npend = 0;
    static_assert(SETTLE_RING >= 2 * SETTLE_GAP + 1, "the ring holds the events in flight");
    nbrs ring[SETTLE_RING];
    /* Event i goes through: its history header and own table's header
     * asked for (stage 0); its history's tail asked for (stage 1, GAP
     * later); its neighbours found and their headers asked for (2); their
     * slots asked for (3); the updates (4). */
    for (uint32_t t = 0; t < n + 4 * SETTLE_GAP; t++) {
        if (t < n) {
            rec_prefetch(&g->users[g->pend_user[t]]);
            rec_prefetch(&g->cooc[g->pend_item[t]]);
        }
        uint32_t i = t - SETTLE_GAP;
        if (t >= SETTLE_GAP && i < n) {
            const rec_hlist *h = &g->users[g->pend_user[i]];
            uint32_t p = g->pend_pos[i];
            rec_prefetch(&h->e[p]);
            if (p >= 2)
                rec_prefetch(&h->e[p - 2]);
            if (p >= 5)
                rec_prefetch(&h->e[p - 5]);
        }
        i = t - 2 * SETTLE_GAP;
        if (t >= 2 * SETTLE_GAP && i < n) {
            nbrs *nb = &ring[i % SETTLE_RING];
            nbrs_find(g, &g->users[g->pend_user[i]], g->pend_pos[i], g->pend_item[i], nb);
            for (uint32_t j = 0; j < nb->n; j++)
                rec_prefetch(&g->cooc[nb->item[j]]);
        }
        i = t - 3 * SETTLE_GAP;
        if (t >= 3 * SETTLE_GAP && i < n)
            nbrs_prefetch(g, g->pend_item[i], &ring[i % SETTLE_RING]);
        i = t - 4 * SETTLE_GAP;
        if (t >= 4 * SETTLE_GAP && i < n) {
            int rc = nbrs_add(g, g->pend_item[i], g->pend_w[i], 1.0f, &ring[i % SETTLE_RING]);
            g->pend_rc = g->pend_rc ? g->pend_rc : rc;
        }
    }
    int rc = g->pend_rc;
    g->pend_rc = 0;
    return rc;
}

uint64_t rec_graph_edges(rec_graph *g) {
    (void)rec_graph_settle(g);
    return g->edges;
}

int rec_graph_add(rec_graph *g, uint32_t user, uint32_t item, double ts,
                  float weight, uint16_t type, uint64_t seq) {
    int rc = grow_users(g, user);
    if (!rc)
        rc = grow_items(g, item);
    if (rc)
        return rc;
    rec_hlist *h = &g->users[user];
    if (h->n == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : 8;
        rec_hentry *e = realloc(h->e, (size_t)cap * sizeof *e);
        if (!e)
            return REC_ENOMEM;
        h->e = e;
        h->cap = cap;
    }
    if (weight > 0.0f) {
        rec_ulist *a = &g->aud[item];
        if (a->n == a->cap) {
            uint32_t cap = a->cap ? a->cap * 2 : 4;
            uint32_t *u = realloc(a->u, (size_t)cap * sizeof *u);
            if (!u)
                return REC_ENOMEM;
            a->u = u;
            a->cap = cap;
        }
        if (g->npend == REC_GRAPH_PENDING)
            (void)rec_graph_settle(g); /* a failure stays in pend_rc */
        uint32_t k = g->npend++;
        g->pend_user[k] = user;
        g->pend_pos[k] = h->n;
        g->pend_item[k] = item;
        g->pend_w[k] = weight;
        a->u[a->n++] = user;
    }
    h->e[h->n++] = (rec_hentry){.ts = ts, .seq = seq, .item = item,
                                .weight = weight, .type = type};
    g->events++;
    return 0;
}

const rec_hentry *rec_graph_history(const rec_graph *g, uint32_t user,
                                    uint32_t *n) {
    if (user >= g->nusers || !g->users[user].n) {
        *n = 0;
        return NULL;
    }
    *n = g->users[user].n;
    return g->users[user].e;
}

float rec_graph_cooc(rec_graph *g, uint32_t a, uint32_t b) {
    (void)rec_graph_settle(g);
    if (a >= g->nitems)
        return 0.0f;
    int created = 0;
    float *p = cooc_slot(&g->cooc[a], b, 0, &created);
    return p ? *p : 0.0f;
}

static int skipped(const uint64_t *skip, size_t words, uint32_t i) {
    return skip && (size_t)(i >> 6) < words && (skip[i >> 6] >> (i & 63) & 1);
}

/* Every neighbour of row c with a weight, not skipped, into tk. */
static void cooc_scan(const rec_cooc *c, const uint64_t *skip, size_t skip_words, rec_topk *tk) {
    for (uint32_t s = 0; s < c->cap; s++) {
        if (!c->e[s].key || c->e[s].w <= COOC_MIN_W)
            continue;
        uint32_t j = c->e[s].key - 1;
        if (!skipped(skip, skip_words, j))
            rec_topk_push(tk, j, c->e[s].w);
    }
}

size_t rec_graph_neighbors(rec_graph *g, uint32_t item,
                           const uint64_t *skip, size_t skip_words, size_t k,
                           rec_hit *out) {
    rec_topk tk;
    rec_topk_init(&tk, out, k);
    (void)rec_graph_settle(g);
    if (item >= g->nitems)
        return 0;
    rec_cooc *c = &g->cooc[item];
    if (c->n > REC_GRAPH_TOP_MIN && k <= REC_GRAPH_TOP_CAP) {
        if (!c->top && g->top_rows < g->top_budget) {
            c->top = malloc(REC_GRAPH_TOP_CAP * sizeof *c->top);
            g->top_rows += c->top != NULL;
        }
        if (c->top && c->fresh && c->npend)
            head_settle(c);
        if (c->top && !c->fresh) {
            c->npend = 0;
            rec_topk all;
            rec_topk_init(&all, c->top, REC_GRAPH_TOP_CAP);
            cooc_scan(c, NULL, 0, &all);
            c->ntop = (uint32_t)rec_topk_finish(&all);
            if (c->ntop)
                c->floor = c->top[c->ntop - 1];
            c->fresh = 1;
        }
        if (c->top) {
            /* the ranked head, filtered: the answer when it yields k, or
             * when it holds every neighbour with a weight */
            size_t n = 0;
            for (uint32_t i = 0; i < c->ntop && n < k; i++)
                if (!skipped(skip, skip_words, c->top[i].idx))
                    out[n++] = c->top[i];
            if (n == k || c->ntop < REC_GRAPH_TOP_CAP)
                return n;
        }
    }
    cooc_scan(c, skip, skip_words, &tk);
    return rec_topk_finish(&tk);
}

static int scratch_reserve(rec_graph *g) {
    if (g->scratch_cap >= g->nitems)
        return 0;
    float *s = realloc(g->scratch, (size_t)g->nitems * sizeof *s);
    if (!s)
        return REC_ENOMEM;
    g->scratch = s;
    uint32_t *t = realloc(g->touched, (size_t)g->nitems * sizeof *t);
    if (!t)
        return REC_ENOMEM;
    g->touched = t;
    memset(s + g->scratch_cap, 0,
           (size_t)(g->nitems - g->scratch_cap) * sizeof *s);
    g->scratch_cap = g->nitems;
    return 0;
}

/* Walkers of rec_graph_walk that advance in lockstep, one stage of a step
 * at a time: each stage reads what the previous one asked the cache for
 * and asks for what the next one reads, so the misses of all walkers
 * overlap instead of queueing one behind the other. */
enum { WALKERS = 32, WALK_TRIES = 4 };

static uint32_t pick_seed(const uint32_t *seeds, const float *seed_w,
                          size_t nseeds, double total, rec_rng *rng) {
    double r = rec_rng_unit(rng) * total;
    size_t i = 0;
    for (; i + 1 < nseeds; i++) {
        double w = seed_w ? (seed_w[i] > 0.0f ? (double)seed_w[i] : 0.0) : 1.0;
        if (r < w)
            break;
        r -= w;
    }
    return seeds[i];
}

size_t rec_graph_walk(rec_graph *g, const uint32_t *seeds,
                      const float *seed_w, size_t nseeds, uint32_t steps,
                      double restart, rec_rng *rng, const uint64_t *skip,
                      size_t skip_words, size_t k, rec_hit *out) {
    rec_topk tk;
    rec_topk_init(&tk, out, k);
    if (!nseeds || !g->nitems || scratch_reserve(g))
        return 0;
    double total = 0.0;
    for (size_t i = 0; i < nseeds; i++)
        total += seed_w && seed_w[i] > 0.0f ? (double)seed_w[i] : (seed_w ? 0.0 : 1.0);
    if (!(total > 0.0))
        return 0;
    uint32_t cur[WALKERS];           /* item each walker stands on */
    const uint32_t *pick[WALKERS];   /* audience slot drawn */
    const rec_hlist *hist[WALKERS];  /* history of the user drawn */
    const rec_hentry *ent[WALKERS];  /* history entry drawn */
    uint32_t live[WALKERS];          /* walkers still stepping, this round */
    uint32_t seen[WALKERS];          /* items reached, counted next round */
    for (uint32_t i = 0; i < WALKERS; i++)
        cur[i] = UINT32_MAX;
    uint32_t ntouched = 0, nseen = 0;
    /* Each round every walker takes one step (the last round as many as
     * steps are left). A failed step (no audience, no history, no
     * positive entry in WALK_TRIES draws) leaves the walker on no item,
     * so its next step starts from a seed, as a restart does. */
    for (uint32_t left = steps;;) {
        /* Count the last round's visits: their lines were asked for a
         * stage ago. */
        for (uint32_t j = 0; j < nseen; j++) {
            uint32_t it = seen[j];
            if (g->scratch[it] == 0.0f)
                g->touched[ntouched++] = it;
            g->scratch[it] += 1.0f;
        }
        nseen = 0;
        if (!left)
            break;
        uint32_t n = left < WALKERS ? left : WALKERS, nl = 0;
        left -= n;
        for (uint32_t i = 0; i < n; i++) {
            if (cur[i] == UINT32_MAX || rec_rng_unit(rng) < restart)
                cur[i] = pick_seed(seeds, seed_w, nseeds, total, rng);
            if (cur[i] < g->nitems) {
                rec_prefetch(&g->aud[cur[i]]);
                live[nl++] = i;
            } else {
                cur[i] = UINT32_MAX;
            }
        }
        uint32_t m = 0;
        for (uint32_t j = 0; j < nl; j++) {
            uint32_t i = live[j];
            const rec_ulist *a = &g->aud[cur[i]];
            if (!a->n) {
                cur[i] = UINT32_MAX;
                continue;
            }
            pick[i] = &a->u[rec_rng_below(rng, a->n)];
            rec_prefetch(pick[i]);
            live[m++] = i;
        }
        nl = m, m = 0;
        for (uint32_t j = 0; j < nl; j++) {
            uint32_t i = live[j], u = *pick[i];
            if (u >= g->nusers) {
                cur[i] = UINT32_MAX;
                continue;
            }
            hist[i] = &g->users[u];
            rec_prefetch(hist[i]);
            live[m++] = i;
        }
        nl = m, m = 0;
        for (uint32_t j = 0; j < nl; j++) {
            uint32_t i = live[j];
            if (!hist[i]->n) {
                cur[i] = UINT32_MAX;
                continue;
            }
            ent[i] = &hist[i]->e[rec_rng_below(rng, hist[i]->n)];
            rec_prefetch(ent[i]);
            live[m++] = i;
        }
        nl = m;
        for (int t = 0; t < WALK_TRIES && nl; t++) {
            m = 0;
            for (uint32_t j = 0; j < nl; j++) {
                uint32_t i = live[j];
                const rec_hentry *e = ent[i];
                if (e->weight > 0.0f && e->item < g->nitems) {
                    /* Reached: ask for its count and for the next
                     * step's audience. */
                    uint32_t it = e->item;
                    seen[nseen++] = it;
                    cur[i] = it;
                    rec_prefetch(&g->scratch[it]);
                    rec_prefetch(&g->aud[it]);
                } else if (t + 1 < WALK_TRIES) {
                    ent[i] = &hist[i]->e[rec_rng_below(rng, hist[i]->n)];
                    rec_prefetch(ent[i]);
                    live[m++] = i;
                } else {
                    cur[i] = UINT32_MAX;
                }
            }
            nl = m;
        }
    }
    for (uint32_t i = 0; i < ntouched; i++) {
        uint32_t it = g->touched[i];
        if (!skipped(skip, skip_words, it))
            rec_topk_push(&tk, it, g->scratch[it]);
        g->scratch[it] = 0.0f;
    }
    return rec_topk_finish(&tk);
}

static void ulist_drop(rec_ulist *a, uint32_t user) {
    uint32_t w = 0;
    for (uint32_t i = 0; i < a->n; i++)
        if (a->u[i] != user)
            a->u[w++] = a->u[i];
    a->n = w;
}

void rec_graph_forget_user(rec_graph *g, uint32_t user) {
    (void)rec_graph_settle(g); /* the positions owed stay valid until now */
    if (user >= g->nusers)
        return;
    rec_hlist *h = &g->users[user];
    /* Replay the history in order, taking back each contribution with the
     * same window it was added with. */
    for (uint32_t i = 0; i < h->n; i++) {
        const rec_hentry *e = &h->e[i];
        if (e->weight <= 0.0f || e->item >= g->nitems)
            continue;
        (void)cooc_apply(g, h, i, e->item, e->weight, -1.0f);
        ulist_drop(&g->aud[e->item], user);
    }
    g->events -= h->n;
    free(h->e);
    memset(h, 0, sizeof *h);
}

/* Add (sign 1) or take back (sign -1) every co-occurrence contribution of
 * a history, each with the window it had at its position. */
static void cooc_replay(rec_graph *g, const rec_hlist *h, float sign) {
    for (uint32_t i = 0; i < h->n; i++) {
        const rec_hentry *e = &h->e[i];
        if (e->weight > 0.0f && e->item < g->nitems)
            (void)cooc_apply(g, h, i, e->item, e->weight, sign);
    }
}

void rec_graph_forget_item(rec_graph *g, uint32_t item) {
    (void)rec_graph_settle(g);
    if (item >= g->nitems)
        return;
    /* Every history holding the item, negative entries included (those
     * users are in no audience), so all users are scanned: O(events), plus
     * O(history * window) per user who had it. Each such user's
     * contributions are taken back, the item dropped, and the rest added
     * again: items it separated may now share a window, as they do when
     * the graph is rebuilt from the remaining history, and a later
     * forget_user takes back exactly what is there. */
    for (uint32_t u = 0; u < g->nusers; u++) {
        rec_hlist *h = &g->users[u];
        uint32_t r = 0;
        while (r < h->n && h->e[r].item != item)
            r++;
        if (r == h->n)
            continue;
        cooc_replay(g, h, -1.0f);
        uint32_t w = r;
        for (; r < h->n; r++)
            if (h->e[r].item != item)
                h->e[w++] = h->e[r];
        g->events -= h->n - w;
        h->n = w;
        cooc_replay(g, h, 1.0f);
    }
    rec_cooc *c = &g->cooc[item];
    for (uint32_t s = 0; s < c->cap; s++) {
        if (!c->e[s].key)
            continue;
        uint32_t j = c->e[s].key - 1;
        int created = 0;
        float *p = j < g->nitems ? cooc_slot(&g->cooc[j], item, 0, &created) : NULL;
        if (p) {
            *p = 0.0f;
            g->cooc[j].fresh = 0;
        }
    }
    g->edges -= c->n;
    free(c->e);
    g->top_rows -= c->top != NULL;
    free(c->top);
    memset(c, 0, sizeof *c);
    rec_ulist *a = &g->aud[item];
    free(a->u);
    memset(a, 0, sizeof *a);
}
