/* bench_model.c - single-thread cost of the online-learning paths: one
 * rec_mf_step, one rec_graph_add, one rec_graph_walk.
 *
 *   bench_model           full run (~0.5 GB peak, well under a minute)
 *   bench_model --quick   smaller sizes for smoke runs (also RECD_BENCH_QUICK=1)
 *
 * MF: a space of 100k items and 10k users with random initial vectors;
 * (user, positive, negatives) triples drawn uniformly beforehand, so the
 * timed loop is rec_mf_step alone, with rows spread over the whole matrix
 * as in serving. Graph: a stream of 1M events over 10k uniform users and
 * 50k items with Zipf(1) popularity, 90% positive. Walk: 10k and 1000
 * steps from a few recent items of a user of the built graph, then 1000
 * steps on a graph of 100k items, 100k users and 1M events; each against
 * the single-chain walk it replaced, side by side.
 *
 * Every figure is the median of several runs, printed once for people and
 * once as `BENCH name=... value=... unit=...` for scripts. All data comes
 * from rec_rng with fixed seeds.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "graph.h"
#include "counter.h"
#include "mf.h"
#include "rng.h"
#include "space.h"
#include "vec.h"

#include "bench_common.h"

/* ---- helpers --------------------------------------------------------- */

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "bench_model: cannot allocate %zu bytes\n", n);
        exit(1);
    }
    return p;
}

static void check(int rc, const char *what) {
    if (rc) {
        fprintf(stderr, "bench_model: %s failed (%d)\n", what, rc);
        exit(1);
    }
}

/* Keeps results alive so the compiler cannot drop the work. */
static volatile double sink;

/* ---- matrix factorisation -------------------------------------------- */

typedef struct mf_case {
    uint32_t dim, negs;
    uint32_t items, users;
    uint32_t steps; /* per run */
    int runs;
} mf_case;

static void bench_mf(const mf_case *mc) {
    rec_mf_opts o;
    rec_mf_opts_default(&o);
    o.negatives = mc->negs;

    rec_space *s = NULL;
    check(rec_space_new(&s, "bench", 1, mc->dim), "rec_space_new");
    rec_rng r;
    rec_rng_seed(&r, 0x5eed0001u + mc->dim);
    float *v = xmalloc(mc->dim * sizeof *v);
    for (uint32_t i = 0; i < mc->items; i++) {
        rec_mf_init_vector(&r, &o, v, mc->dim);
        check(rec_space_set(s, REC_KIND_ITEM, i, v, 1), "rec_space_set");
    }
    for (uint32_t u = 0; u < mc->users; u++) {
        rec_mf_init_vector(&r, &o, v, mc->dim);
        check(rec_space_set(s, REC_KIND_USER, u, v, 1), "rec_space_set");
    }
    free(v);

    /* Triples for one run; every run replays them on the evolving space. */
    uint32_t *user = xmalloc((size_t)mc->steps * sizeof *user);
    uint32_t *pos = xmalloc((size_t)mc->steps * sizeof *pos);
    uint32_t *neg = xmalloc((size_t)mc->steps * mc->negs * sizeof *neg);
    for (uint32_t i = 0; i < mc->steps; i++) {
        user[i] = rec_rng_below(&r, mc->users);
        pos[i] = rec_rng_below(&r, mc->items);
        for (uint32_t j = 0; j < mc->negs; j++)
            neg[(size_t)i * mc->negs + j] = rec_rng_below(&r, mc->items);
    }

    double per_step[16];
    double loss = 0;
    for (int run = 0; run < mc->runs; run++) {
        /* A flush between runs, as the engine does; not timed. */
        rec_space_clean(s, REC_KIND_ITEM);
        rec_space_clean(s, REC_KIND_USER);
        double t0 = now();
        for (uint32_t i = 0; i < mc->steps; i++)
            loss += (double)rec_mf_step(s, user[i], pos[i], 1.0f,
                                        neg + (size_t)i * mc->negs, mc->negs,
                                        &o);
        per_step[run] = (now() - t0) / mc->steps * 1e9;
    }
    sink = loss;

    /* The vectors stayed finite through all the training. */
    for (int k = 0; k < 2; k++) {
        uint32_t n = k == REC_KIND_ITEM ? mc->items : mc->users;
        for (uint32_t i = 0; i < n; i++)
            if (!rec_vec_all_finite(rec_space_get(s, (rec_kind)k, i),
                                    mc->dim)) {
                fprintf(stderr, "bench_model: row %u of kind %d diverged\n",
                        i, k);
                exit(1);
            }
    }

    double lo = per_step[0], hi = per_step[0];
    for (int run = 1; run < mc->runs; run++) {
        lo = per_step[run] < lo ? per_step[run] : lo;
        hi = per_step[run] > hi ? per_step[run] : hi;
    }
    double med = median(per_step, mc->runs);
    printf("mf_step d=%u negatives=%u (%u items, %u users, %d runs x %u "
           "steps): median %.0f ns/step = %.3f us (min %.0f, max %.0f), "
           "%.2f M steps/s, mean loss %.3f\n",
           mc->dim, mc->negs, mc->items, mc->users, mc->runs, mc->steps, med,
           med / 1000.0, lo, hi, 1e3 / med,
           loss / ((double)mc->runs * mc->steps));
    char name[64];
    snprintf(name, sizeof name, "mf_step_d%u_neg%u", mc->dim, mc->negs);
    report(name, med, "ns");
    if (mc->dim == 64 && mc->negs == 4)
        printf("target <= 2 us per step at d=64 with 4 negatives: %s "
               "(%.3f us)\n",
               med <= 2000.0 ? "met" : "NOT met", med / 1000.0);

    free(user);
    free(pos);
    free(neg);
    rec_space_free(s);
}

/* ---- graph ----------------------------------------------------------- */

typedef struct stream {
    uint32_t *user, *item;
    float *weight;
    uint32_t n;
} stream;

/* Item ranks by Zipf(s): P(rank r) ~ 1 / (r + 1)^s, drawn by binary search
 * in the cumulative table. Ranks are scattered over indexes so popular
 * items are not all neighbours in memory. */
static void make_stream(stream *st, uint32_t n, uint32_t users,
                        uint32_t items, double s, uint64_t seed) {
    double *cdf = xmalloc(items * sizeof *cdf);
    double acc = 0;
    for (uint32_t r = 0; r < items; r++) {
        acc += 1.0 / pow((double)r + 1.0, s);
        cdf[r] = acc;
    }
    uint32_t *perm = xmalloc(items * sizeof *perm);
    rec_rng r;
    rec_rng_seed(&r, seed);
    for (uint32_t i = 0; i < items; i++)
        perm[i] = i;
    for (uint32_t i = items - 1; i > 0; i--) {
        uint32_t j = rec_rng_below(&r, i + 1);
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    st->n = n;
    st->user = xmalloc((size_t)n * sizeof *st->user);
    st->item = xmalloc((size_t)n * sizeof *st->item);
    st->weight = xmalloc((size_t)n * sizeof *st->weight);
    for (uint32_t e = 0; e < n; e++) {
        double x = rec_rng_unit(&r) * acc;
        uint32_t lo = 0, hi = items - 1;
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (cdf[mid] <= x)
                lo = mid + 1;
            else
                hi = mid;
        }
        st->user[e] = rec_rng_below(&r, users);
        st->item[e] = perm[lo];
        /* 90% positive with a few event weights, 10% negative. */
        uint32_t k = rec_rng_below(&r, 10);
        st->weight[e] = k == 0 ? -1.0f : k < 7 ? 1.0f : k < 9 ? 2.0f : 3.0f;
    }
    free(perm);
    free(cdf);
}

static void stream_free(stream *st) {
    free(st->user);
    free(st->item);
    free(st->weight);
}

/* Builds the graph `runs` times; the last build is left in g for walks. */
static void bench_graph_add(rec_graph *g, const stream *st, uint32_t window,
                            int runs) {
    double rate[16];
    for (int run = 0; run < runs; run++) {
        if (run)
            rec_graph_close(g);
        rec_graph_init(g, window);
        double t0 = now();
        for (uint32_t e = 0; e < st->n; e++)
            check(rec_graph_add(g, st->user[e], st->item[e], 1.7e9 + e,
                                st->weight[e], 1, e),
                  "rec_graph_add");
        rate[run] = st->n / (now() - t0);
    }
    double med = median(rate, runs);
    printf("graph_add window=%u (%u events, %d runs): median %.2f M "
           "events/s = %.0f ns/event; %llu co-occurrence entries\n",
           window, st->n, runs, med / 1e6, 1e9 / med,
           (unsigned long long)g->edges);
    report("graph_add", med, "events/s");
}

/* The walk as it was before the walkers were interleaved: one chain,
 * each step three dependent cache misses or more. Kept here as the
 * reference the interleaved rec_graph_walk is timed against. visits and
 * touched are nitems long, visits all zero. */
static size_t walk_serial(const rec_graph *g, float *visits, uint32_t *touched,
                          const uint32_t *seeds, const float *seed_w,
                          size_t nseeds, uint32_t steps, double restart,
                          rec_rng *rng, size_t k, rec_hit *out) {
    rec_topk tk;
    rec_topk_init(&tk, out, k);
    double total = 0.0;
    for (size_t i = 0; i < nseeds; i++)
        total += seed_w[i] > 0.0f ? (double)seed_w[i] : 0.0;
    uint32_t ntouched = 0, cur = UINT32_MAX;
    for (uint32_t s = 0; s < steps; s++) {
        if (cur == UINT32_MAX || rec_rng_unit(rng) < restart) {
            double r = rec_rng_unit(rng) * total;
            size_t i = 0;
            for (; i + 1 < nseeds; i++) {
                double w = seed_w[i] > 0.0f ? (double)seed_w[i] : 0.0;
                if (r < w)
                    break;
                r -= w;
            }
            cur = seeds[i];
        }
        if (cur >= g->nitems || !g->aud[cur].n) {
            cur = UINT32_MAX;
            continue;
        }
        const rec_ulist *a = &g->aud[cur];
        uint32_t u = a->u[rec_rng_below(rng, a->n)];
        const rec_hlist *h = u < g->nusers ? &g->users[u] : NULL;
        if (!h || !h->n) {
            cur = UINT32_MAX;
            continue;
        }
        uint32_t next = UINT32_MAX;
        for (int t = 0; t < 4; t++) {
            const rec_hentry *e = &h->e[rec_rng_below(rng, h->n)];
            if (e->weight > 0.0f && e->item < g->nitems) {
                next = e->item;
                break;
            }
        }
        if (next == UINT32_MAX) {
            cur = UINT32_MAX;
            continue;
        }
        if (visits[next] == 0.0f)
            touched[ntouched++] = next;
        visits[next] += 1.0f;
        cur = next;
    }
    for (uint32_t i = 0; i < ntouched; i++) {
        rec_topk_push(&tk, touched[i], visits[touched[i]]);
        visits[touched[i]] = 0.0f;
    }
    return rec_topk_finish(&tk);
}

/* Walks from the last (up to) 10 positive items of random users: the
 * interleaved rec_graph_walk and the single-chain reference alternate on
 * the same seeds, so the ratio is side by side. `tag` names the graph. */
static void bench_walk(rec_graph *g, const char *tag, uint32_t users,
                       uint32_t steps, int walks) {
    rec_rng pick, r;
    rec_rng_seed(&pick, 0x3a1c);
    rec_rng_seed(&r, 0x3a1d);
    double *us = xmalloc((size_t)walks * sizeof *us);
    double *ref = xmalloc((size_t)walks * sizeof *ref);
    float *visits = calloc(g->nitems, sizeof *visits);
    uint32_t *touched = xmalloc((size_t)g->nitems * sizeof *touched);
    if (!visits) {
        fprintf(stderr, "bench_model: out of memory\n");
        exit(1);
    }
    rec_hit out[50];
    uint64_t hits = 0, ref_hits = 0;
    int done = 0;
    while (done < walks) {
        uint32_t u = rec_rng_below(&pick, users), n = 0, nseeds = 0;
        uint32_t seeds[10];
        float w[10];
        const rec_hentry *h = rec_graph_history(g, u, &n);
        for (uint32_t i = n; i-- > 0 && nseeds < 10;)
            if (h[i].weight > 0.0f) {
                seeds[nseeds] = h[i].item;
                w[nseeds++] = h[i].weight;
            }
        if (!nseeds)
            continue;
        double t0 = now();
        size_t k = rec_graph_walk(g, seeds, w, nseeds, steps, 0.3, &r, NULL,
                                  0, 50, out);
        double t1 = now();
        size_t kr = walk_serial(g, visits, touched, seeds, w, nseeds, steps,
                                0.3, &r, 50, out);
        double t2 = now();
        us[done] = (t1 - t0) * 1e6;
        ref[done++] = (t2 - t1) * 1e6;
        hits += k;
        ref_hits += kr;
    }
    double med = median(us, walks), mref = median(ref, walks);
    printf("graph_walk %s %u steps, restart 0.3, k=50 (%d walks): median "
           "%.1f us = %.1f ns/step (single chain %.1f us, %.2fx faster), "
           "%.1f hits per walk (single chain %.1f)\n",
           tag, steps, walks, med, med * 1e3 / steps, mref, mref / med,
           (double)hits / walks, (double)ref_hits / walks);
    char name[64];
    snprintf(name, sizeof name, "walk_%s_%uk", tag, steps / 1000);
    if (steps < 1000)
        snprintf(name, sizeof name, "walk_%s_%u", tag, steps);
    report(name, med, "us");
    snprintf(name + strlen(name), sizeof name - strlen(name), "_serial");
    report(name, mref, "us");
    free(us);
    free(ref);
    free(visits);
    free(touched);
}

/* counter_top over n items (Zipf-ish counts, 1-day half-life): k = 30
 * answered from the top cache, against the same query forced to scan
 * (a skip map hiding the cache's items). */
static void bench_counter_top(uint32_t n, int runs) {
    rec_counter *c = NULL;
    check(rec_counter_new(&c, "pop", 1, 86400.0), "counter");
    rec_rng rng;
    rec_rng_seed(&rng, 0xbeef);
    double t = 1.7e9;
    for (uint32_t e = 0; e < 4 * n; e++) {
        double u = (double)(rec_rng_next(&rng) >> 11) * 0x1.0p-53;
        uint32_t idx = (uint32_t)(pow(u, 3.0) * n) % n; /* many hits low */
        check(rec_counter_add(c, idx, 1.0, t), "add");
        t += 0.01;
    }
    size_t words = (n + 63) / 64;
    uint64_t *none = calloc(words, 8), *hide = calloc(words, 8);
    rec_hit out[30];
    rec_counter_topk(c, t, none, words, 30, out); /* builds the cache */
    for (uint32_t i = 0; i < c->ntop; i++)
        hide[c->top[i] >> 6] |= 1ull << (c->top[i] & 63);
    double cached[64], scan[64];
    for (int r = 0; r < runs; r++) {
        int reps = 200;
        double t0 = now();
        for (int i = 0; i < reps; i++)
            sink += rec_counter_topk(c, t, none, words, 30, out);
        double t1 = now();
        for (int i = 0; i < reps; i++)
            sink += rec_counter_topk(c, t, hide, words, 30, out);
        double t2 = now();
        cached[r] = (t1 - t0) / reps * 1e6;
        scan[r] = (t2 - t1) / reps * 1e6;
    }
    double mc = median(cached, runs), ms = median(scan, runs);
    printf("counter_top k=30 over %u items: cached %.2f us, scan %.1f us (%.0fx)\n", n, mc,
           ms, ms / mc);
    char name[64];
    snprintf(name, sizeof name, "counter_top_cached_n%u", n);
    report(name, mc, "us");
    snprintf(name, sizeof name, "counter_top_scan_n%u", n);
    report(name, ms, "us");
    free(none);
    free(hide);
    rec_counter_free(c);
}

int main(int argc, char **argv) {
    int quick = bench_quick_args(argc, argv);
    if (quick < 0)
        return 2;
    printf("bench_model: isa %s, %s mode, single thread\n",
           rec_vec_isa_name(), quick ? "quick" : "full");

    const mf_case cases[] = {
        {64, 4, 100000, 10000, quick ? 20000 : 200000, quick ? 3 : 7},
        {128, 8, 100000, 10000, quick ? 20000 : 200000, quick ? 3 : 5},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        bench_mf(&cases[i]);

    const uint32_t users = 10000, items = 50000;
    stream st;
    make_stream(&st, quick ? 100000 : 1000000, users, items, 1.0, 0xc0ffee);
    rec_graph g;
    bench_graph_add(&g, &st, 10, quick ? 3 : 5);
    bench_walk(&g, "50k", users, 10000, quick ? 21 : 201);
    bench_walk(&g, "50k", users, 1000, quick ? 101 : 1001);
    rec_graph_close(&g);
    stream_free(&st);
    /* The size of the default configuration's benchmark: 100k items,
     * 100k users, 1M events, 1000 steps as scripts/hybrid.lua walks. */
    make_stream(&st, quick ? 100000 : 1000000, 100000, 100000, 1.0, 0xc0ffef);
    bench_graph_add(&g, &st, 10, 1);
    bench_walk(&g, "100k", 100000, 1000, quick ? 101 : 1001);
    rec_graph_close(&g);
    stream_free(&st);
    bench_counter_top(quick ? 10000 : 100000, quick ? 3 : 7);
    return 0;
}
