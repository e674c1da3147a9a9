/* sim.c - `recd sim`: a seeded world of people and items, run in a closed
 * loop against each arm (a pipeline, a strategy alone, or a learner built
 * into the sim), with the expected click-through of a uniform random list
 * and of the oracle computed beside it at every request.
 *
 * Each arm runs in its own copy of the world, generated from the same seed
 * on its own thread: the same people ask in the same order, and the
 * uniform draws that decide clicks are the same per request and position
 * (common random numbers), so two arms differ only by what they show.
 * Scripted arms go through rec_harness (the dispatcher in-process, or a
 * server over the protocol) with the requests a client would send.
 */
#include "sim.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>

#include "chart.h"
#include "cli.h"
#include "err.h"
#include "eval.h"
#include "harness.h"
#include "log.h"
#include "pipeline.h"
#include "space.h"
#include "vec.h"

#define DIM 16        /* content and taste vectors */
#define MAX_ARMS 32
#define MAX_N 100
#define TENTHS 10
#define PUT_BATCH 256

/* ---- random numbers ------------------------------------------------------------ */

/* splitmix64 */
static uint64_t mix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double unif(uint64_t *s) { return (double)(mix(s) >> 11) * 0x1.0p-53; }

static double gauss(uint64_t *s) {
    double u = unif(s), v = unif(s);
    return sqrt(-2.0 * log(u > 0 ? u : 0x1.0p-53)) * cos(6.283185307179586 * v);
}

/* A generator of its own for each use (a, b): the world, the people who
 * ask, the clicks of request j, ... so that one never shifts another. */
static uint64_t stream(uint64_t seed, uint64_t a, uint64_t b) {
    uint64_t s = seed ^ (a * 0xd1b54a32d192ed03ull) ^ (b * 0x8cb92ba72f3d8dd7ull);
    mix(&s);
    return s;
}

enum { S_PROTO = 1, S_ITEM, S_USER, S_ACTIVITY, S_ASK, S_CLICK, S_ORGANIC, S_LEARNER };

static double logistic(double x) { return 1.0 / (1.0 + exp(-x)); }

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- the world ------------------------------------------------------------------ */

void rec_sim_world_opts_default(rec_sim_world_opts *o) {
    memset(o, 0, sizeof *o);
    o->seed = 42;
    o->users = 2000;
    o->items = 3600;
    o->topics = 16;
    o->n = 10;
    o->requests = 20000;
    o->new_items = 0.1;
    o->drift_share = 0.3;
    o->drift_at = 0.5;
    o->organic = 0;
    o->warmup = 0;
    o->exam_power = 0.7;
    o->fatigue = 0.5;
    o->skew = 0.8;
    o->content_noise = 0.5;
    o->bias = -4.0;
    o->w_affinity = 4.0;
    o->w_quality = 0.6;
    o->conv_bias = -3.5;
    o->conv_affinity = 3.0;
    o->interval = 30;
    o->start = 1.7e9;
    o->train_every = 0;
}

double rec_sim_examination(const rec_sim_world_opts *o, uint32_t p) {
    return pow(1.0 + p, -o->exam_power);
}

typedef struct world {
    const rec_sim_world_opts *o;
    uint32_t nitems;    /* the whole catalogue, arrivals included */
    uint32_t active;    /* items arrived so far (indexes 0..active) */
    uint32_t nnew;      /* items arriving during the run */
    float *truth;       /* nitems x DIM, unit: the hidden topic mix */
    float *content;     /* nitems x DIM, unit: what the engine gets */
    float *quality;     /* nitems, hidden */
    float *price;       /* nitems */
    uint16_t *cat;      /* nitems: the main topic, the item's category */
    float *taste;       /* users x DIM, unit, hidden; drifting users change it */
    float *later;       /* users x DIM: the taste after the drift */
    uint8_t *drifts;    /* users */
    double *cdf;        /* users: cumulative activity weights */
    uint8_t *imp;       /* users x nitems: earlier impressions (saturating) */
    int drifted;
} world;

static void normalise(float *v) {
    double s = 0;
    for (int d = 0; d < DIM; d++)
        s += (double)v[d] * (double)v[d];
    s = s > 0 ? 1.0 / sqrt(s) : 0;
    for (int d = 0; d < DIM; d++)
        v[d] = (float)((double)v[d] * s);
}

/* A taste: one to three topics with random weights, and some noise. */
static void make_taste(const world *w, const float *proto, uint64_t *r, float *v) {
    int k = 1 + (int)(unif(r) * 3);
    memset(v, 0, DIM * sizeof *v);
    for (int i = 0; i < k; i++) {
        uint32_t t = (uint32_t)(unif(r) * w->o->topics);
        double wt = 0.5 + unif(r);
        for (int d = 0; d < DIM; d++)
            v[d] += (float)(wt * (double)proto[t * DIM + d]);
    }
    for (int d = 0; d < DIM; d++)
        v[d] += (float)(0.3 * gauss(r) / 4.0);
    normalise(v);
}

static void world_free(world *w) {
    free(w->truth);
    free(w->content);
    free(w->quality);
    free(w->price);
    free(w->cat);
    free(w->taste);
    free(w->later);
    free(w->drifts);
    free(w->cdf);
    free(w->imp);
    memset(w, 0, sizeof *w);
}

static int world_init(world *w, const rec_sim_world_opts *o) {
    memset(w, 0, sizeof *w);
    w->o = o;
    w->nnew = (uint32_t)floor(o->items * o->new_items + 0.5);
    w->nitems = o->items + w->nnew;
    w->active = o->items;
    size_t ni = w->nitems, nu = o->users;
    float *proto = malloc((size_t)o->topics * DIM * sizeof *proto);
    w->truth = malloc(ni * DIM * sizeof *w->truth);
    w->content = malloc(ni * DIM * sizeof *w->content);
    w->quality = malloc(ni * sizeof *w->quality);
    w->price = malloc(ni * sizeof *w->price);
    w->cat = malloc(ni * sizeof *w->cat);
    w->taste = malloc(nu * DIM * sizeof *w->taste);
    w->later = malloc(nu * DIM * sizeof *w->later);
    w->drifts = calloc(nu, 1);
    w->cdf = malloc(nu * sizeof *w->cdf);
    w->imp = calloc(nu * ni, 1);
    uint32_t *perm = malloc(nu * sizeof *perm);
    if (!proto || !w->truth || !w->content || !w->quality || !w->price || !w->cat ||
        !w->taste || !w->later || !w->drifts || !w->cdf || !w->imp || !perm) {
        free(proto);
        free(perm);
        world_free(w);
        return REC_ENOMEM;
    }
    uint64_t r = stream(o->seed, S_PROTO, 0);
    for (uint32_t t = 0; t < o->topics; t++) {
        for (int d = 0; d < DIM; d++)
            proto[t * DIM + d] = (float)gauss(&r);
        normalise(proto + t * DIM);
    }
    r = stream(o->seed, S_ITEM, 0);
    for (size_t i = 0; i < ni; i++) {
        uint32_t c = (uint32_t)(unif(&r) * o->topics);
        float *t = w->truth + i * DIM, *v = w->content + i * DIM;
        w->cat[i] = (uint16_t)c;
        for (int d = 0; d < DIM; d++)
            t[d] = (float)((double)proto[c * DIM + d] + 0.6 * gauss(&r) / 4.0);
        normalise(t);
        for (int d = 0; d < DIM; d++)
            v[d] = (float)((double)t[d] + o->content_noise * gauss(&r) / 4.0);
        normalise(v);
        w->quality[i] = (float)gauss(&r);
        w->price[i] = (float)(floor(exp(3.0 + 0.8 * gauss(&r)) * 100.0 + 0.5) / 100.0);
    }
    r = stream(o->seed, S_USER, 0);
    for (size_t u = 0; u < nu; u++) {
        make_taste(w, proto, &r, w->taste + u * DIM);
        make_taste(w, proto, &r, w->later + u * DIM);
        w->drifts[u] = unif(&r) < o->drift_share;
    }
    /* activity: a random rank per user, weight 1/rank^skew */
    r = stream(o->seed, S_ACTIVITY, 0);
    for (uint32_t u = 0; u < nu; u++)
        perm[u] = u;
    for (uint32_t u = (uint32_t)nu; u > 1; u--) {
        uint32_t j = (uint32_t)(mix(&r) % u), t = perm[u - 1];
        perm[u - 1] = perm[j];
        perm[j] = t;
    }
    double *wt = w->cdf;
    for (uint32_t k = 0; k < nu; k++)
        wt[perm[k]] = pow(1.0 + k, -o->skew);
    double acc = 0;
    for (size_t u = 0; u < nu; u++)
        wt[u] = acc += wt[u];
    for (size_t u = 0; u < nu; u++)
        wt[u] /= acc;
    free(proto);
    free(perm);
    return 0;
}

static uint32_t pick_user(const world *w, double x) {
    size_t lo = 0, hi = w->o->users - 1;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (w->cdf[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (uint32_t)lo;
}

static double affinity(const world *w, uint32_t u, uint32_t i) {
    const float *a = w->taste + (size_t)u * DIM, *b = w->truth + (size_t)i * DIM;
    double s = 0;
    for (int d = 0; d < DIM; d++)
        s += (double)a[d] * (double)b[d];
    return s;
}

/* The relevance of item i to user u, before examination and fatigue. */
static double relevance(const world *w, uint32_t u, uint32_t i) {
    const rec_sim_world_opts *o = w->o;
    return logistic(o->bias + o->w_affinity * affinity(w, u, i) + o->w_quality * (double)w->quality[i]);
}

/* The click probability of i for u once examined: relevance x fatigue. */
static double click_prob(const world *w, uint32_t u, uint32_t i) {
    uint8_t k = w->imp[(size_t)u * w->nitems + i];
    return relevance(w, u, i) * (k ? pow(w->o->fatigue, k) : 1.0);
}

/* The request index at which the j-th new item arrives (evenly spread). */
static uint32_t arrival(const world *w, uint32_t j) {
    return (uint32_t)((uint64_t)(j + 1) * w->o->requests / (w->nnew + 1));
}

/* ---- arms ------------------------------------------------------------------------- */

typedef enum {
    ARM_DEFAULT, ARM_PIPELINE, ARM_STRATEGY, ARM_RANDOM, ARM_POPULAR, ARM_PROFILE_TS,
    ARM_LINUCB
} arm_kind;

typedef struct arm {
    arm_kind kind;
    char name[64];   /* pipeline or strategy */
    char label[96];  /* as printed */
    double p1, p2;   /* the learner's setting (see learner_list) */
} arm;

typedef struct tenth {
    uint64_t requests, slots, shown, clicks, conversions, repeated, covered;
    double value, e_arm, e_random, e_oracle;
    uint32_t catalogue;
} tenth;

typedef struct result {
    atomic_int done;
    int failed;
    char err[600];
    double seconds;
    uint64_t organic;
    tenth t[TENTHS];
} result;

typedef struct sim_ctx {
    const rec_sim_world_opts *o;
    const char *scripts, *policies, *connect;
    atomic_size_t *work_done; /* requests run, all arms (the progress bar) */
} sim_ctx;

static int scripted(const arm *a) { return a->kind <= ARM_STRATEGY; }

/* The sim's own learners: state and lists. */
typedef struct learner {
    const arm *a;
    const world *w;
    uint32_t *clicks, *imps; /* per item, all users */
    uint8_t *clicked;        /* users x nitems: never shown again (the engine's seen filter) */
    float *profile;          /* users x DIM: content of clicked items */
    float *ainv, *b;         /* LinUCB per user: A^-1 (DIM x DIM), b (DIM) */
    double *score;           /* per item, scratch */
    uint64_t rng;
} learner;

static void learner_close(learner *l) {
    free(l->clicks);
    free(l->imps);
    free(l->clicked);
    free(l->profile);
    free(l->ainv);
    free(l->b);
    free(l->score);
}

static int learner_open(learner *l, const arm *a, const world *w) {
    memset(l, 0, sizeof *l);
    l->a = a;
    l->w = w;
    size_t ni = w->nitems, nu = w->o->users;
    l->rng = stream(w->o->seed, S_LEARNER, 0);
    l->clicks = calloc(ni, sizeof *l->clicks);
    l->imps = calloc(ni, sizeof *l->imps);
    l->clicked = calloc(nu * ni, 1);
    l->score = malloc(ni * sizeof *l->score);
    if (!l->clicks || !l->imps || !l->clicked || !l->score)
        return REC_ENOMEM;
    if (a->kind == ARM_PROFILE_TS && !(l->profile = calloc(nu * DIM, sizeof *l->profile)))
        return REC_ENOMEM;
    if (a->kind == ARM_LINUCB) {
        l->ainv = calloc(nu * DIM * DIM, sizeof *l->ainv);
        l->b = calloc(nu * DIM, sizeof *l->b);
        if (!l->ainv || !l->b)
            return REC_ENOMEM;
        for (size_t u = 0; u < nu; u++)
            for (int d = 0; d < DIM; d++)
                l->ainv[u * DIM * DIM + d * DIM + d] = 1.0f; /* A = I */
    }
    return 0;
}

/* What a learner sees: item i shown to u (clicked or not), or an organic click. */
static void learner_observe(learner *l, uint32_t u, uint32_t i, int shown, int click) {
    const world *w = l->w;
    const float *x = w->content + (size_t)i * DIM;
    if (shown)
        l->imps[i]++;
    if (click) {
        l->clicks[i]++;
        l->clicked[(size_t)u * w->nitems + i] = 1;
        if (l->profile)
            for (int d = 0; d < DIM; d++)
                l->profile[(size_t)u * DIM + d] += x[d];
    }
    if (l->ainv && (shown || click)) {
        /* Sherman-Morrison: A += x x^T, b += r x */
        float *A = l->ainv + (size_t)u * DIM * DIM, *b = l->b + (size_t)u * DIM;
        double ax[DIM], den = 1;
        for (int r = 0; r < DIM; r++) {
            double s = 0;
            for (int c = 0; c < DIM; c++)
                s += (double)A[r * DIM + c] * (double)x[c];
            ax[r] = s;
            den += s * (double)x[r];
        }
        for (int r = 0; r < DIM; r++)
            for (int c = 0; c < DIM; c++)
                A[r * DIM + c] -= (float)(ax[r] * ax[c] / den);
        if (click)
            for (int d = 0; d < DIM; d++)
                b[d] += x[d];
    }
}

/* A Beta(a, b) draw, by its normal approximation (a, b >= 1 here). */
static double beta_draw(uint64_t *r, double a, double b) {
    double m = a / (a + b), v = a * b / ((a + b) * (a + b) * (a + b + 1));
    double x = m + sqrt(v) * gauss(r);
    return x < 0 ? 0 : x > 1 ? 1 : x;
}

/* The learner's list for u: the top n of its scores over the items
 * arrived, those u clicked left out. */
static uint32_t learner_list(learner *l, uint32_t u, uint32_t n, uint32_t *list) {
    const world *w = l->w;
    const arm *a = l->a;
    uint32_t m = 0;
    size_t row = (size_t)u * w->nitems;
    if (a->kind == ARM_RANDOM) {
        for (uint32_t tries = 0; m < n && tries < 50 * n; tries++) {
            uint32_t i = (uint32_t)(mix(&l->rng) % w->active);
            int dup = 0;
            for (uint32_t k = 0; k < m && !dup; k++)
                dup = list[k] == i;
            if (!dup)
                list[m++] = i;
        }
        return m;
    }
    double th[DIM];
    const float *A = NULL, *p = NULL;
    double pn = 0;
    if (a->kind == ARM_LINUCB) {
        A = l->ainv + (size_t)u * DIM * DIM;
        const float *b = l->b + (size_t)u * DIM;
        for (int r = 0; r < DIM; r++) {
            double s = 0;
            for (int c = 0; c < DIM; c++)
                s += (double)A[r * DIM + c] * (double)b[c];
            th[r] = s;
        }
    } else if (a->kind == ARM_PROFILE_TS) {
        p = l->profile + (size_t)u * DIM;
        for (int d = 0; d < DIM; d++)
            pn += (double)p[d] * (double)p[d];
        pn = pn > 0 ? 1.0 / sqrt(pn) : 0;
    }
    for (uint32_t i = 0; i < w->active; i++) {
        double s;
        const float *x = w->content + (size_t)i * DIM;
        if (l->clicked[row + i]) {
            l->score[i] = -INFINITY;
            continue;
        }
        if (a->kind == ARM_POPULAR) {
            s = l->clicks[i] + 1e-9 * (w->active - i); /* ties: the older first */
        } else if (a->kind == ARM_PROFILE_TS) {
            /* p1: weight of the profile, p2: prior impressions per click */
            double cs = 0;
            for (int d = 0; d < DIM; d++)
                cs += (double)p[d] * (double)x[d];
            s = beta_draw(&l->rng, 1.0 + l->clicks[i], a->p2 + l->imps[i] - l->clicks[i]) +
                a->p1 * cs * pn;
        } else {
            /* LinUCB, p1: alpha */
            double mean = 0, var = 0;
            for (int r = 0; r < DIM; r++) {
                double ar = 0;
                for (int c = 0; c < DIM; c++)
                    ar += (double)A[r * DIM + c] * (double)x[c];
                var += ar * (double)x[r];
                mean += th[r] * (double)x[r];
            }
            s = mean + a->p1 * sqrt(var > 0 ? var : 0);
        }
        l->score[i] = s;
    }
    /* top n by selection (n is small) */
    for (uint32_t k = 0; k < n; k++) {
        uint32_t best = UINT32_MAX;
        for (uint32_t i = 0; i < w->active; i++)
            if (l->score[i] > (double)-INFINITY && (best == UINT32_MAX || l->score[i] > l->score[best]))
                best = i;
        if (best == UINT32_MAX)
            break;
        list[m++] = best;
        l->score[best] = -INFINITY;
    }
    return m;
}

/* ---- one arm's run ------------------------------------------------------------------ */

typedef struct runner {
    const sim_ctx *x;
    const arm *a;
    result *r;
    world w;
    int scripted;
    rec_harness h;
    learner l;
    msgpack_sbuffer sb;
    char rec_id[128];
    uint32_t list[MAX_N];
    uint32_t nlist;
    double *p;          /* per item: the click probability for this request's user */
    uint8_t *shown;     /* per item: shown in this tenth */
} runner;

static void pack_str(msgpack_packer *pk, const char *s) {
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pack_id(msgpack_packer *pk, char kind, uint32_t i) {
    char id[16];
    snprintf(id, sizeof id, "%c%u", kind, i);
    pack_str(pk, id);
}

/* item.put of items [from, to), in batches. */
static int put_items(runner *u, uint32_t from, uint32_t to) {
    const world *w = &u->w;
    for (uint32_t b = from; b < to; b += PUT_BATCH) {
        uint32_t e = to - b > PUT_BATCH ? b + PUT_BATCH : to;
        msgpack_packer pk;
        u->sb.size = 0;
        msgpack_packer_init(&pk, &u->sb, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, e - b);
        for (uint32_t i = b; i < e; i++) {
            char cat[16];
            snprintf(cat, sizeof cat, "c%02u", w->cat[i]);
            msgpack_pack_map(&pk, 3);
            pack_str(&pk, "id");
            pack_id(&pk, 'i', i);
            pack_str(&pk, "props");
            msgpack_pack_map(&pk, 2);
            pack_str(&pk, "category");
            pack_str(&pk, cat);
            pack_str(&pk, "price");
            msgpack_pack_double(&pk, w->price[i]);
            pack_str(&pk, "vectors");
            msgpack_pack_map(&pk, 1);
            pack_str(&pk, "content");
            msgpack_pack_array(&pk, DIM);
            for (int d = 0; d < DIM; d++)
                msgpack_pack_float(&pk, w->content[(size_t)i * DIM + d]);
        }
        int rc = rec_harness_call_packed(&u->h, "item.put", u->sb.data, u->sb.size);
        if (rc) {
            set_err(u->r->err, sizeof u->r->err, "%s", u->h.err);
            return rc;
        }
    }
    return rec_harness_commit(&u->h);
}

typedef struct sim_event {
    uint32_t user, item;
    const char *type;
    double value, ts;
    int attributed;  /* carries the list's rec_id */
} sim_event;

static int send_events(runner *u, const sim_event *ev, uint32_t n) {
    if (!n)
        return 0;
    msgpack_packer pk;
    u->sb.size = 0;
    msgpack_packer_init(&pk, &u->sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, n);
    for (uint32_t k = 0; k < n; k++) {
        msgpack_pack_map(&pk, 4 + (ev[k].attributed ? 1u : 0u) + (ev[k].value > 0 ? 1u : 0u));
        pack_str(&pk, "user");
        pack_id(&pk, 'u', ev[k].user);
        pack_str(&pk, "item");
        pack_id(&pk, 'i', ev[k].item);
        pack_str(&pk, "type");
        pack_str(&pk, ev[k].type);
        pack_str(&pk, "ts");
        msgpack_pack_double(&pk, ev[k].ts);
        if (ev[k].attributed) {
            pack_str(&pk, "rec_id");
            pack_str(&pk, u->rec_id);
        }
        if (ev[k].value > 0) {
            pack_str(&pk, "value");
            msgpack_pack_double(&pk, ev[k].value);
        }
    }
    int rc = rec_harness_call_packed(&u->h, "event.add", u->sb.data, u->sb.size);
    if (rc)
        set_err(u->r->err, sizeof u->r->err, "%s", u->h.err);
    return rc;
}

static const msgpack_object *map_get(const msgpack_object *m, const char *key) {
    size_t kl = strlen(key);
    if (m->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kl &&
            !memcmp(k->via.str.ptr, key, kl))
            return &m->via.map.ptr[i].val;
    }
    return NULL;
}

/* The scripted arm's list for user at time t into u->list, its rec_id
 * into u->rec_id. */
static int ask(runner *u, uint32_t user, double t) {
    const arm *a = u->a;
    msgpack_packer pk;
    u->sb.size = 0;
    msgpack_packer_init(&pk, &u->sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, a->kind == ARM_DEFAULT ? 3 : 4);
    pack_str(&pk, "user");
    pack_id(&pk, 'u', user);
    pack_str(&pk, "n");
    msgpack_pack_uint32(&pk, u->x->o->n);
    pack_str(&pk, "now");
    msgpack_pack_double(&pk, t);
    if (a->kind != ARM_DEFAULT) {
        pack_str(&pk, a->kind == ARM_STRATEGY ? "strategy" : "pipeline");
        pack_str(&pk, a->name);
    }
    int rc = rec_harness_call_packed(&u->h, "rec.recommend", u->sb.data, u->sb.size);
    if (rc) {
        set_err(u->r->err, sizeof u->r->err, "%s", u->h.err);
        return rc;
    }
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    u->nlist = 0;
    u->rec_id[0] = 0;
    rc = msgpack_unpack_next(&up, u->h.answer, u->h.answer_len, NULL) == MSGPACK_UNPACK_SUCCESS
             ? 0 : REC_EPROTOCOL;
    const msgpack_object *rid = rc ? NULL : map_get(&up.data, "rec_id");
    const msgpack_object *items = rc ? NULL : map_get(&up.data, "items");
    if (rid && rid->type == MSGPACK_OBJECT_STR && rid->via.str.size < sizeof u->rec_id) {
        memcpy(u->rec_id, rid->via.str.ptr, rid->via.str.size);
        u->rec_id[rid->via.str.size] = 0;
    }
    if (!rc && (!items || items->type != MSGPACK_OBJECT_ARRAY))
        rc = REC_EPROTOCOL;
    for (uint32_t k = 0; !rc && k < items->via.array.size && u->nlist < u->x->o->n; k++) {
        const msgpack_object *id = map_get(&items->via.array.ptr[k], "id");
        char buf[16];
        if (!id || id->type != MSGPACK_OBJECT_STR || id->via.str.size < 2 ||
            id->via.str.size >= sizeof buf || id->via.str.ptr[0] != 'i')
            continue; /* not one of the sim's items */
        memcpy(buf, id->via.str.ptr + 1, id->via.str.size - 1);
        buf[id->via.str.size - 1] = 0;
        char *end;
        unsigned long i = strtoul(buf, &end, 10);
        if (*end || i >= u->w.active)
            continue;
        int dup = 0; /* an item twice in a list is shown once */
        for (uint32_t m = 0; m < u->nlist && !dup; m++)
            dup = u->list[m] == i;
        if (!dup)
            u->list[u->nlist++] = (uint32_t)i;
    }
    msgpack_unpacked_destroy(&up);
    if (rc == REC_EPROTOCOL)
        set_err(u->r->err, sizeof u->r->err, "rec.recommend: unreadable answer");
    return rc;
}

/* An organic click of request j (or of the warm-up, j = requests + k):
 * someone, by activity, finds an item by themselves, with probability in
 * proportion to its relevance to them. */
static void organic_pick(const world *w, uint64_t j, uint32_t *user, uint32_t *item, double *buf) {
    uint64_t r = stream(w->o->seed, S_ORGANIC, j);
    uint32_t u = pick_user(w, unif(&r));
    double acc = 0;
    for (uint32_t i = 0; i < w->active; i++)
        buf[i] = acc += relevance(w, u, i);
    double x = unif(&r) * acc;
    uint32_t lo = 0, hi = w->active - 1;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (buf[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    *user = u;
    *item = lo;
}

/* Organic click number j: the warm-up's are j = requests + k (k <
 * warmup); those of request r are j = 2 requests + warmup + 64 r + k (at
 * most 64 a request); the draw of how many request r gets is stream
 * (S_ORGANIC, requests + warmup + r). The index spaces do not meet. */
static int organic(runner *u, uint64_t j, double ts) {
    uint32_t user, item;
    organic_pick(&u->w, j, &user, &item, u->p);
    u->r->organic++;
    if (!u->scripted) {
        learner_observe(&u->l, user, item, 0, 1);
        return 0;
    }
    sim_event ev = {user, item, "click", 0, ts, 0};
    return send_events(u, &ev, 1);
}

static int run_requests(runner *u) {
    const rec_sim_world_opts *o = u->x->o;
    world *w = &u->w;
    result *r = u->r;
    uint32_t n = o->n;
    double exam[MAX_N], exam_sum = 0;
    for (uint32_t k = 0; k < n; k++)
        exam_sum += exam[k] = rec_sim_examination(o, k);
    uint32_t every = o->train_every ? o->train_every : (o->requests / 10 ? o->requests / 10 : 1);
    uint32_t next_new = 0, drift_at = (uint32_t)(o->drift_at * o->requests);
    int rc = 0;
    if (u->scripted && (rc = put_items(u, 0, w->active)))
        return rc;
    for (uint32_t k = 0; !rc && k < o->warmup; k++) {
        double ts = o->start - (double)(o->warmup - k) * o->interval / 4;
        if (u->scripted && !u->h.cl)
            rec_clock_set(ts);
        rc = organic(u, (uint64_t)o->requests + k, ts);
    }
    double top[MAX_N];
    for (uint32_t j = 0; !rc && j < o->requests; j++) {
        double t = o->start + (double)j * o->interval;
        tenth *d = &r->t[(uint64_t)j * TENTHS / o->requests];
        if (d->requests == 0)
            memset(u->shown, 0, w->nitems);
        if (u->scripted && !u->h.cl)
            rec_clock_set(t);
        /* new items, the drift */
        uint32_t from = w->active;
        while (next_new < w->nnew && arrival(w, next_new) <= j) {
            w->active++;
            next_new++;
        }
        if (u->scripted && w->active > from && (rc = put_items(u, from, w->active)))
            break;
        if (!w->drifted && j >= drift_at && o->drift_share > 0) {
            for (uint32_t v = 0; v < o->users; v++)
                if (w->drifts[v])
                    memcpy(w->taste + (size_t)v * DIM, w->later + (size_t)v * DIM,
                           DIM * sizeof *w->taste);
            w->drifted = 1;
        }
        uint64_t ar = stream(o->seed, S_ASK, j);
        uint32_t user = pick_user(w, unif(&ar));
        /* the references: a uniform random list and the oracle, in closed form */
        double mean = 0;
        uint32_t ntop = 0;
        for (uint32_t i = 0; i < w->active; i++) {
            double p = u->p[i] = click_prob(w, user, i);
            mean += p;
            if (ntop < n || p > top[ntop - 1]) {
                uint32_t k = ntop < n ? ntop++ : n - 1;
                while (k > 0 && top[k - 1] < p) {
                    top[k] = top[k - 1];
                    k--;
                }
                top[k] = p;
            }
        }
        mean /= w->active;
        double eo = 0, er = 0;
        for (uint32_t k = 0; k < ntop; k++) {
            eo += exam[k] * top[k];
            er += exam[k] * mean;
        }
        /* the arm's list */
        if (u->scripted) {
            if ((rc = ask(u, user, t)))
                break;
        } else {
            u->nlist = learner_list(&u->l, user, n, u->list);
        }
        /* what the person does with it */
        uint64_t cr = stream(o->seed, S_CLICK, j);
        sim_event ev[2 * MAX_N];
        uint32_t nev = 0;
        double ea = 0;
        for (uint32_t k = 0; k < n; k++) {
            double x = unif(&cr), y = unif(&cr); /* drawn for every slot: common numbers */
            if (k >= u->nlist)
                continue;
            uint32_t i = u->list[k];
            double p = exam[k] * u->p[i];
            int click = x < p;
            ea += p;
            uint8_t *imp = &w->imp[(size_t)user * w->nitems + i];
            d->repeated += *imp > 0;
            if (*imp < 255)
                ++*imp;
            if (!u->shown[i]) {
                u->shown[i] = 1;
                d->covered++;
            }
            int conv = click && y < logistic(o->conv_bias + o->conv_affinity * affinity(w, user, i));
            if (!u->scripted)
                learner_observe(&u->l, user, i, 1, click);
            if (click) {
                d->clicks++;
                ev[nev++] = (sim_event){user, i, "click", 0, t + 1, 1};
            }
            if (conv) {
                d->conversions++;
                d->value += (double)w->price[i];
                ev[nev++] = (sim_event){user, i, "purchase", w->price[i], t + 2, 1};
            }
        }
        d->requests++;
        d->slots += n;
        d->shown += u->nlist;
        d->e_arm += ea;
        d->e_random += er;
        d->e_oracle += eo;
        d->catalogue = w->active;
        if (u->scripted && (rc = send_events(u, ev, nev)))
            break;
        /* organic clicks: floor(rate) each request, and one more with the
         * fraction's probability */
        uint64_t orr = stream(o->seed, S_ORGANIC, (uint64_t)o->requests + o->warmup + j);
        uint32_t no = (uint32_t)o->organic + (unif(&orr) < o->organic - floor(o->organic));
        for (uint32_t k = 0; !rc && k < no; k++)
            rc = organic(u, (uint64_t)2 * o->requests + o->warmup + (uint64_t)j * 64 + k, t + 3);
        if (!rc && u->scripted && (j + 1) % every == 0 && j + 1 < o->requests)
            rec_harness_train(&u->h);
        atomic_fetch_add_explicit(u->x->work_done, 1, memory_order_relaxed);
    }
    return rc;
}

/* --connect: the server must hold nothing yet (what it held would mix
 * with the world: other items, impressions of another run). */
static int check_empty(runner *u) {
    int rc = rec_harness_call_packed(&u->h, "sys.info", "\x90", 1);
    if (rc) {
        set_err(u->r->err, sizeof u->r->err, "%s", u->h.err);
        return rc;
    }
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    int64_t count[3] = {0, 0, 0};
    static const char *const what[3] = {"items", "users", "events"};
    if (msgpack_unpack_next(&up, u->h.answer, u->h.answer_len, NULL) == MSGPACK_UNPACK_SUCCESS)
        for (int k = 0; k < 3; k++) {
            const msgpack_object *v = map_get(&up.data, what[k]);
            if (v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                count[k] = (int64_t)v->via.u64;
        }
    msgpack_unpacked_destroy(&up);
    if (count[0] || count[1] || count[2]) {
        set_err(u->r->err, sizeof u->r->err,
                "the server at %s already holds %lld items, %lld users, %lld events: run "
                "the sim against a server on an empty data folder", u->x->connect,
                (long long)count[0], (long long)count[1], (long long)count[2]);
        return REC_EINVAL;
    }
    return 0;
}

static void run_arm(const sim_ctx *x, const arm *a, result *r) {
    runner u;
    memset(&u, 0, sizeof u);
    u.x = x;
    u.a = a;
    u.r = r;
    u.scripted = scripted(a);
    msgpack_sbuffer_init(&u.sb);
    double t0 = mono();
    int rc = world_init(&u.w, x->o);
    if (!rc) {
        u.p = malloc(u.w.nitems * sizeof *u.p);
        u.shown = calloc(u.w.nitems, 1);
        if (!u.p || !u.shown)
            rc = REC_ENOMEM;
    }
    if (!rc && u.scripted) {
        rec_harness_opts ho = {.prog = "recd sim", .scripts = x->scripts,
                               .policies = x->policies, .connect = x->connect,
                               .seed = x->o->seed};
        if ((rc = rec_harness_open(&u.h, &ho)))
            set_err(r->err, sizeof r->err, "%s", u.h.err);
    } else if (!rc) {
        rc = learner_open(&u.l, a, &u.w);
    }
    if (!rc && u.scripted && u.h.cl)
        rc = check_empty(&u);
    if (!rc)
        rc = run_requests(&u);
    if (rc && !r->err[0])
        set_err(r->err, sizeof r->err, "%s", rec_strerror(rc));
    r->failed = rc != 0;
    r->seconds = mono() - t0;
    if (u.scripted)
        rec_harness_close(&u.h);
    else
        learner_close(&u.l);
    rec_clock_set(0);
    msgpack_sbuffer_destroy(&u.sb);
    free(u.p);
    free(u.shown);
    world_free(&u.w);
    atomic_store(&r->done, 1);
}

/* ---- output ----------------------------------------------------------------------- */

static double ratio(double a, double b) { return b > 0 ? a / b : 0.0; }

/* The figures of tenths [from, to) of one arm summed. */
static tenth sum_tenths(const result *r, int from, int to) {
    tenth s;
    memset(&s, 0, sizeof s);
    for (int d = from; d < to; d++) {
        const tenth *t = &r->t[d];
        s.requests += t->requests;
        s.slots += t->slots;
        s.shown += t->shown;
        s.clicks += t->clicks;
        s.conversions += t->conversions;
        s.repeated += t->repeated;
        s.covered += t->covered;
        s.value += t->value;
        s.e_arm += t->e_arm;
        s.e_random += t->e_random;
        s.e_oracle += t->e_oracle;
        s.catalogue = t->catalogue;
    }
    return s;
}

/* ctr: clicks per slot asked (an empty slot is a slot without a click);
 * the expected figures likewise. */
static void json_figures(FILE *f, const tenth *t, int coverage) {
    fprintf(f, "\"requests\": %llu, \"ctr\": %.6f, \"expected_ctr\": %.6f, \"random_ctr\": %.6f, "
               "\"oracle_ctr\": %.6f, \"conversion_rate\": %.6f, \"value_per_impression\": %.6f, "
               "\"repeated\": %.6f, \"fill\": %.6f, \"clicks\": %llu, \"conversions\": %llu",
            (unsigned long long)t->requests, ratio((double)t->clicks, (double)t->slots),
            ratio(t->e_arm, (double)t->slots), ratio(t->e_random, (double)t->slots),
            ratio(t->e_oracle, (double)t->slots), ratio((double)t->conversions, (double)t->clicks),
            ratio(t->value, (double)t->slots), ratio((double)t->repeated, (double)t->shown),
            ratio((double)t->shown, (double)t->slots), (unsigned long long)t->clicks,
            (unsigned long long)t->conversions);
    if (coverage)
        fprintf(f, ", \"coverage\": %.6f, \"catalogue\": %u",
                ratio((double)t->covered, (double)t->catalogue), t->catalogue);
}

/* best: the arms that won their learner's grid (nbest of them; --grid). */
static void print_json(FILE *f, const sim_ctx *x, const arm *arms, const result *res, int narms,
                       const int *best, int nbest, double seconds) {
    const rec_sim_world_opts *o = x->o;
    fprintf(f, "{\"world\": {\"seed\": %llu, \"users\": %u, \"items\": %u, \"new_items\": %.4f, "
               "\"topics\": %u, \"n\": %u, \"requests\": %u, \"drift_share\": %.4f, "
               "\"drift_at\": %.4f, \"organic\": %.4f, \"warmup\": %u, \"examination\": %.4f, "
               "\"fatigue\": %.4f, \"skew\": %.4f, \"content_noise\": %.4f, "
               "\"relevance\": [%.4f, %.4f, %.4f], \"conversion\": [%.4f, %.4f], "
               "\"interval\": %.3f, \"connect\": %s},\n\"arms\": [",
            (unsigned long long)o->seed, o->users, o->items, o->new_items, o->topics, o->n,
            o->requests, o->drift_share, o->drift_at, o->organic, o->warmup, o->exam_power,
            o->fatigue, o->skew, o->content_noise, o->bias, o->w_affinity, o->w_quality,
            o->conv_bias, o->conv_affinity, o->interval, x->connect ? "true" : "false");
    for (int i = 0; i < narms; i++) {
        const result *r = &res[i];
        fprintf(f, "%s\n  {\"pipeline\": ", i ? "," : "");
        rec_eval_json_str(f, arms[i].label);
        if (r->failed) {
            fprintf(f, ", \"error\": ");
            rec_eval_json_str(f, r->err);
            fputc('}', f);
            continue;
        }
        tenth all = sum_tenths(r, 0, TENTHS), last = sum_tenths(r, TENTHS - 3, TENTHS);
        fprintf(f, ", ");
        json_figures(f, &all, 0);
        fprintf(f, ", \"organic_clicks\": %llu, \"last3\": {", (unsigned long long)r->organic);
        json_figures(f, &last, 0);
        fprintf(f, "}, \"tenths\": [");
        for (int d = 0; d < TENTHS; d++) {
            fprintf(f, "%s{", d ? ", " : "");
            json_figures(f, &r->t[d], 1);
            fputc('}', f);
        }
        fprintf(f, "]}");
    }
    fprintf(f, "\n],\n");
    if (nbest) {
        fprintf(f, "\"best_of_grid\": [");
        for (int k = 0; k < nbest; k++) {
            fprintf(f, "%s", k ? ", " : "");
            rec_eval_json_str(f, arms[best[k]].label);
        }
        fprintf(f, "],\n");
    }
    fprintf(f, "\"seconds\": %.3f}\n", seconds);
}

static void print_table(FILE *f, const sim_ctx *x, const arm *arms, const result *res, int narms,
                        double seconds) {
    const rec_sim_world_opts *o = x->o;
    fprintf(f, "world: %u users, %u items (+%.0f%% arriving), %u topics, %u requests of %u, "
               "seed %llu; drift: %.0f%% of users at %.0f%%; organic %.2f/request, warm-up %u\n",
            o->users, o->items, o->new_items * 100, o->topics, o->requests, o->n,
            (unsigned long long)o->seed, o->drift_share * 100, o->drift_at * 100, o->organic,
            o->warmup);
    fprintf(f, "CTR: clicks per slot asked; exp: expected CTR of the lists shown; random and "
               "oracle: expected CTR of a uniform random list and of the best list, same "
               "people, same moments\n");
    for (int i = 0; i < narms; i++) {
        const result *r = &res[i];
        fprintf(f, "\n%s", arms[i].label);
        if (r->failed) {
            fprintf(f, ": failed: %s\n", r->err);
            continue;
        }
        tenth all = sum_tenths(r, 0, TENTHS), last = sum_tenths(r, TENTHS - 3, TENTHS);
        fprintf(f, ": CTR %.4f (%.2fx random, %.2f of oracle); last three tenths %.4f "
                   "(%.2fx random, %.2f of oracle); %.1f s\n",
                ratio((double)all.clicks, (double)all.slots),
                ratio((double)all.clicks, all.e_random), ratio((double)all.clicks, all.e_oracle),
                ratio((double)last.clicks, (double)last.slots),
                ratio((double)last.clicks, last.e_random),
                ratio((double)last.clicks, last.e_oracle), r->seconds);
        fprintf(f, "%6s %7s %7s %7s %7s %6s %6s %7s %7s %7s %6s\n", "tenth", "CTR", "exp",
                "random", "oracle", "xrand", "conv", "val/imp", "repeat", "cover", "fill");
        for (int d = 0; d < TENTHS; d++) {
            const tenth *t = &r->t[d];
            double sl = (double)t->slots;
            fprintf(f, "%6d %7.4f %7.4f %7.4f %7.4f %6.2f %6.3f %7.3f %7.3f %7.3f %6.3f\n",
                    d + 1, ratio((double)t->clicks, sl), ratio(t->e_arm, sl),
                    ratio(t->e_random, sl), ratio(t->e_oracle, sl),
                    ratio((double)t->clicks, t->e_random),
                    ratio((double)t->conversions, (double)t->clicks), ratio(t->value, sl),
                    ratio((double)t->repeated, (double)t->shown),
                    ratio((double)t->covered, (double)t->catalogue),
                    ratio((double)t->shown, sl));
        }
    }
    fprintf(f, "\nran in %.1f s\n", seconds);
}

/* CTR by tenth, one line per arm; the first arm's random and oracle
 * references dashed. */
static int write_svg(const char *path, const arm *arms, const result *res, int narms) {
    size_t cap = (size_t)narms + 2;
    rec_chart_line *lines = calloc(cap, sizeof *lines);
    double *pts = calloc(cap * TENTHS, sizeof *pts);
    int rc = -1;
    if (lines && pts) {
        int ref = -1;
        for (int i = 0; i < narms && ref < 0; i++)
            if (!res[i].failed)
                ref = i;
        size_t n = 0;
        for (int i = ref < 0 ? 0 : -2; i < narms; i++) {
            const result *r = &res[i < 0 ? ref : i];
            if (i >= 0 && r->failed)
                continue;
            double *y = pts + n * TENTHS;
            for (int d = 0; d < TENTHS; d++) {
                const tenth *t = &r->t[d];
                y[d] = i == -2   ? ratio(t->e_random, (double)t->slots)
                       : i == -1 ? ratio(t->e_oracle, (double)t->slots)
                                 : ratio((double)t->clicks, (double)t->slots);
            }
            lines[n] = (rec_chart_line){
                .label = i == -2 ? "random list (expected)" : i == -1 ? "oracle (expected)"
                                                                      : arms[i].label,
                .y = y, .n = TENTHS, .colour = i == -2 ? "#888" : i == -1 ? "#000" : NULL,
                .dashed = i < 0};
            n++;
        }
        rc = rec_chart_svg(path, "Closed-loop CTR by tenth of the run", "share of the run", lines,
                           n);
    }
    free(lines);
    free(pts);
    return rc;
}

/* ---- the command ---------------------------------------------------------------------- */

static void sim_usage(FILE *f) {
    fprintf(f,
            "usage: recd sim [options]\n"
            "\n"
            "Simulate people asking for lists, clicking and buying, against each\n"
            "pipeline in a closed loop; report CTR by tenth of the run beside a\n"
            "uniform random list and the oracle (docs/sim.md).\n"
            "\n"
            "what to compare\n"
            "  --pipelines LIST   comma-separated: default (the default pipeline), a\n"
            "                     pipeline name, strategy:NAME (one strategy alone),\n"
            "                     baseline:random, baseline:popular (clicks so far),\n"
            "                     baseline:profile_ts (content profile from clicks +\n"
            "                     Thompson sampling on item CTR), baseline:linucb\n"
            "                     (per-user LinUCB on the content vectors)\n"
            "                     (default: default,baseline:profile_ts,baseline:linucb)\n"
            "  --grid             run each profile_ts and linucb arm over its small\n"
            "                     grid of settings and name the best\n"
            "  --scripts DIR      strategies and pipelines.lua (default: beside recd)\n"
            "  --policies DIR     policies (default: beside recd)\n"
            "  --connect ADDR     run against a running server (host:port or a Unix\n"
            "                     socket, its data folder empty) instead of temporary\n"
            "                     databases: one scripted arm, baselines beside it\n"
            "the world\n"
            "  --seed N           the world, the people, their clicks (42)\n"
            "  --users N          people (2000)\n"
            "  --items N          items at the start (3600)\n"
            "  --new-items F      items arriving evenly over the run, as a share of\n"
            "                     --items (0.1)\n"
            "  --topics N         hidden topics, 1..1000; an item's main one is its\n"
            "                     category (16)\n"
            "  -n, --n N          items per request, 1..%d (10)\n"
            "  --requests N       requests in the run, at least 10 (20000)\n"
            "  --interval S       simulated seconds between requests (30)\n"
            "  --skew X           activity: the user of rank r asks with weight\n"
            "                     1/r^X (0.8)\n"
            "  --examination X    P(a slot is looked at) = 1/(1+position)^X (0.7)\n"
            "  --fatigue F        each earlier impression of the item to the person\n"
            "                     multiplies the click probability by F (0.5)\n"
            "  --relevance-bias B, --affinity-weight A, --quality-weight Q\n"
            "                     relevance = logistic(B + A affinity + Q quality)\n"
            "                     (-4, 4, 0.6)\n"
            "  --conversion-bias B, --conversion-affinity A\n"
            "                     P(purchase | click) = logistic(B + A affinity)\n"
            "                     (-3.5, 3)\n"
            "  --content-noise X  noise of the content vectors the engine gets (0.5)\n"
            "  --drift-share F    share of people whose taste changes (0.3)\n"
            "  --drift-at F       when, as a share of the run (0.5)\n"
            "  --organic R        organic clicks (no rec_id) per request (0)\n"
            "  --warmup N         organic clicks before the first request (0)\n"
            "  --train-every N    requests between batch trainings (requests/10)\n"
            "output\n"
            "  --json             results as JSON on stdout\n"
            "  --svg FILE         draw CTR by tenth, one line per arm\n"
            "  --jobs N           arms run in parallel (default: online CPUs)\n"
            "  --quiet            no progress bar\n",
            MAX_N);
}

static const struct {
    const char *name;
    arm_kind kind;
    double p1, p2;       /* the defaults: the best of the grid on the default world */
    const char *p1name, *p2name;
    double grid1[4], grid2[4];
} learners[] = {
    {"random", ARM_RANDOM, 0, 0, NULL, NULL, {0}, {0}},
    {"popular", ARM_POPULAR, 0, 0, NULL, NULL, {0}, {0}},
    {"profile_ts", ARM_PROFILE_TS, 0.1, 20, "weight", "prior", {0.02, 0.05, 0.1, 0.2}, {5, 20, 50, 0}},
    {"linucb", ARM_LINUCB, 0.2, 0, "alpha", NULL, {0.05, 0.1, 0.2, 0.5}, {0}},
};
#define NLEARNERS (sizeof learners / sizeof learners[0])

static int add_arm(arm *arms, int *n, const char *spec, int grid) {
    arm a;
    memset(&a, 0, sizeof a);
    const char *name = spec;
    int lk = -1;
    if (!strcmp(spec, "default")) {
        a.kind = ARM_DEFAULT;
    } else if (!strncmp(spec, "strategy:", 9)) {
        a.kind = ARM_STRATEGY;
        name = spec + 9;
    } else if (!strncmp(spec, "baseline:", 9)) {
        for (size_t k = 0; k < NLEARNERS && lk < 0; k++)
            if (!strcmp(spec + 9, learners[k].name))
                lk = (int)k;
        if (lk < 0) {
            fprintf(stderr, "recd sim: unknown baseline '%s' (random, popular, profile_ts or "
                            "linucb)\n", spec + 9);
            return -1;
        }
        a.kind = learners[lk].kind;
        a.p1 = learners[lk].p1;
        a.p2 = learners[lk].p2;
    } else {
        a.kind = ARM_PIPELINE;
    }
    if (!*name || strlen(name) >= sizeof a.name) {
        fprintf(stderr, "recd sim: bad pipeline name '%s'\n", spec);
        return -1;
    }
    snprintf(a.name, sizeof a.name, "%s", name);
    int ng1 = 1, ng2 = 1;
    if (grid && lk >= 0 && learners[lk].p1name) {
        for (ng1 = 0; ng1 < 4 && learners[lk].grid1[ng1] > 0; ng1++)
            ;
        for (ng2 = 0; learners[lk].p2name && ng2 < 4 && learners[lk].grid2[ng2] > 0; ng2++)
            ;
        if (!ng2)
            ng2 = 1;
    }
    for (int g1 = 0; g1 < ng1; g1++)
        for (int g2 = 0; g2 < ng2; g2++) {
            arm b = a;
            if (lk >= 0 && learners[lk].p1name) {
                if (grid) {
                    b.p1 = learners[lk].grid1[g1];
                    if (learners[lk].p2name)
                        b.p2 = learners[lk].grid2[g2];
                }
                if (learners[lk].p2name)
                    snprintf(b.label, sizeof b.label, "%s %s=%g %s=%g", spec,
                             learners[lk].p1name, b.p1, learners[lk].p2name, b.p2);
                else
                    snprintf(b.label, sizeof b.label, "%s %s=%g", spec, learners[lk].p1name,
                             b.p1);
            } else {
                snprintf(b.label, sizeof b.label, "%s", spec);
            }
            int dup = 0;
            for (int i = 0; i < *n && !dup; i++)
                dup = !strcmp(arms[i].label, b.label);
            if (dup)
                continue;
            if (*n >= MAX_ARMS) {
                fprintf(stderr, "recd sim: at most %d arms\n", MAX_ARMS);
                return -1;
            }
            arms[(*n)++] = b;
        }
    return 0;
}

/* Every scripted arm names a pipeline or strategy the scripts have: 0, or
 * the exit status after a message. */
static int check_arms(const sim_ctx *x, const arm *arms, int narms) {
    int any = 0;
    for (int i = 0; i < narms; i++)
        any |= arms[i].kind == ARM_PIPELINE || arms[i].kind == ARM_STRATEGY;
    if (!any || x->connect)
        return 0;
    rec_harness h;
    rec_harness_opts ho = {.prog = "recd sim", .scripts = x->scripts, .policies = x->policies,
                           .seed = x->o->seed};
    if (rec_harness_open(&h, &ho)) {
        fprintf(stderr, "recd sim: %s\n", h.err[0] ? h.err : "cannot load the scripts");
        rec_harness_close(&h);
        return 1;
    }
    const rec_pipeline_config *cfg = rec_dispatch_pipelines(h.d);
    int status = 0;
    for (int i = 0; i < narms && !status; i++) {
        const arm *a = &arms[i];
        if (a->kind == ARM_PIPELINE && (!cfg || !rec_pipeline_pick(cfg, a->name, "", 0, NULL)))
            status = 2;
        else if (a->kind == ARM_STRATEGY &&
                 !rec_script_has(h.rt, REC_SCRIPT_STRATEGY, a->name, "recommend"))
            status = 2;
        if (!status)
            continue;
        fprintf(stderr, "recd sim: unknown %s '%s'; known: default",
                a->kind == ARM_STRATEGY ? "strategy" : "pipeline", a->name);
        for (int k = 0; cfg && k < cfg->npipelines; k++)
            fprintf(stderr, ", %s", cfg->pipelines[k].name);
        rec_script_info in;
        for (size_t k = 0; k < rec_script_count(h.rt); k++)
            if (!rec_script_info_at(h.rt, k, &in) && in.kind == REC_SCRIPT_STRATEGY &&
                rec_script_has(h.rt, REC_SCRIPT_STRATEGY, in.name, "recommend"))
                fprintf(stderr, ", strategy:%s", in.name);
        fprintf(stderr, ", baseline:random, baseline:popular, baseline:profile_ts, "
                        "baseline:linucb\n");
    }
    rec_harness_close(&h);
    return status;
}

typedef struct pool {
    const sim_ctx *x;
    const arm *arms;
    result *res;
    int n;
    atomic_int next;
} pool;

static void *worker(void *p_) {
    pool *p = p_;
    for (;;) {
        int i = atomic_fetch_add(&p->next, 1);
        if (i >= p->n)
            return NULL;
        run_arm(p->x, &p->arms[i], &p->res[i]);
    }
}

static int parse_u32(const char *s, uint32_t *out, uint32_t lo, uint32_t hi) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int parse_dbl(const char *s, double *out, double lo, double hi) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int rec_sim_main(int argc, char **argv, const char *default_scripts,
                 const char *default_policies) {
    rec_sim_world_opts o;
    rec_sim_world_opts_default(&o);
    const char *pipelines = NULL, *svg = NULL, *connect = NULL;
    const char *scripts = default_scripts, *policies = default_policies;
    uint32_t jobs = 0;
    int json = 0, quiet = 0, grid = 0;
    enum { O_PIPELINES = 256, O_GRID, O_SCRIPTS, O_POLICIES, O_CONNECT, O_SEED, O_USERS,
           O_ITEMS, O_NEW, O_TOPICS, O_REQUESTS, O_INTERVAL, O_SKEW, O_EXAM, O_FATIGUE,
           O_RBIAS, O_AFF, O_QUAL, O_CBIAS, O_CAFF, O_NOISE, O_DSHARE, O_DAT, O_ORGANIC,
           O_WARMUP, O_TRAIN, O_JSON, O_SVG, O_JOBS, O_QUIET };
    static const struct option opts[] = {
        {"pipelines", required_argument, NULL, O_PIPELINES},
        {"grid", no_argument, NULL, O_GRID},
        {"scripts", required_argument, NULL, O_SCRIPTS},
        {"policies", required_argument, NULL, O_POLICIES},
        {"connect", required_argument, NULL, O_CONNECT},
        {"seed", required_argument, NULL, O_SEED},
        {"users", required_argument, NULL, O_USERS},
        {"items", required_argument, NULL, O_ITEMS},
        {"new-items", required_argument, NULL, O_NEW},
        {"topics", required_argument, NULL, O_TOPICS},
        {"n", required_argument, NULL, 'n'},
        {"requests", required_argument, NULL, O_REQUESTS},
        {"interval", required_argument, NULL, O_INTERVAL},
        {"skew", required_argument, NULL, O_SKEW},
        {"examination", required_argument, NULL, O_EXAM},
        {"fatigue", required_argument, NULL, O_FATIGUE},
        {"relevance-bias", required_argument, NULL, O_RBIAS},
        {"affinity-weight", required_argument, NULL, O_AFF},
        {"quality-weight", required_argument, NULL, O_QUAL},
        {"conversion-bias", required_argument, NULL, O_CBIAS},
        {"conversion-affinity", required_argument, NULL, O_CAFF},
        {"content-noise", required_argument, NULL, O_NOISE},
        {"drift-share", required_argument, NULL, O_DSHARE},
        {"drift-at", required_argument, NULL, O_DAT},
        {"organic", required_argument, NULL, O_ORGANIC},
        {"warmup", required_argument, NULL, O_WARMUP},
        {"train-every", required_argument, NULL, O_TRAIN},
        {"json", no_argument, NULL, O_JSON},
        {"svg", required_argument, NULL, O_SVG},
        {"jobs", required_argument, NULL, O_JOBS},
        {"quiet", no_argument, NULL, O_QUIET},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    rec_cli cli;
    rec_cli_init(&cli, "recd sim", argc, argv, "hn:", opts);
    for (int ch; (ch = rec_cli_next(&cli)) != REC_CLI_DONE;) {
        const char *v = cli.arg;
        int bad = 0;
        uint64_t seed;
        char *end;
        switch (ch) {
        case REC_CLI_ERROR:
            return 2;
        case 'h':
            sim_usage(stdout);
            return 0;
        case REC_CLI_OPERAND:
            fprintf(stderr, "recd sim: unexpected argument '%s'\n", v);
            return 2;
        case O_PIPELINES: pipelines = v; break;
        case O_GRID: grid = 1; break;
        case O_SCRIPTS: scripts = *v ? v : NULL; break;
        case O_POLICIES: policies = *v ? v : NULL; break;
        case O_CONNECT: connect = v; break;
        case O_SEED:
            errno = 0;
            seed = strtoull(v, &end, 10);
            bad = errno || end == v || *end || v[0] == '-';
            o.seed = seed;
            break;
        case O_USERS: bad = parse_u32(v, &o.users, 1, 10000000); break;
        case O_ITEMS: bad = parse_u32(v, &o.items, 1, 10000000); break;
        case O_NEW: bad = parse_dbl(v, &o.new_items, 0, 10); break;
        case O_TOPICS: bad = parse_u32(v, &o.topics, 1, 1000); break;
        case 'n': bad = parse_u32(v, &o.n, 1, MAX_N); break;
        case O_REQUESTS: bad = parse_u32(v, &o.requests, 10, 100000000); break;
        case O_INTERVAL: bad = parse_dbl(v, &o.interval, 0.001, 86400); break;
        case O_SKEW: bad = parse_dbl(v, &o.skew, 0, 5); break;
        case O_EXAM: bad = parse_dbl(v, &o.exam_power, 0, 10); break;
        case O_FATIGUE: bad = parse_dbl(v, &o.fatigue, 0, 1); break;
        case O_RBIAS: bad = parse_dbl(v, &o.bias, -50, 50); break;
        case O_AFF: bad = parse_dbl(v, &o.w_affinity, -50, 50); break;
        case O_QUAL: bad = parse_dbl(v, &o.w_quality, -50, 50); break;
        case O_CBIAS: bad = parse_dbl(v, &o.conv_bias, -50, 50); break;
        case O_CAFF: bad = parse_dbl(v, &o.conv_affinity, -50, 50); break;
        case O_NOISE: bad = parse_dbl(v, &o.content_noise, 0, 100); break;
        case O_DSHARE: bad = parse_dbl(v, &o.drift_share, 0, 1); break;
        case O_DAT: bad = parse_dbl(v, &o.drift_at, 0, 1); break;
        case O_ORGANIC: bad = parse_dbl(v, &o.organic, 0, 64); break;
        case O_WARMUP: bad = parse_u32(v, &o.warmup, 0, 100000000); break;
        case O_TRAIN: bad = parse_u32(v, &o.train_every, 1, 100000000); break;
        case O_JSON: json = 1; break;
        case O_SVG: svg = v; break;
        case O_JOBS: bad = parse_u32(v, &jobs, 1, 64); break;
        case O_QUIET: quiet = 1; break;
        default: return 2; /* not reached: every option has its case */
        }
        if (bad) {
            const char *name = "?";
            for (const struct option *p = opts; p->name && *name == '?'; p++)
                if (p->val == ch)
                    name = p->name;
            fprintf(stderr, "recd sim: bad value '%s' for --%s (recd sim --help gives the "
                            "range)\n", v, name);
            return 2;
        }
    }
    double nitems = (double)o.items + floor(o.items * o.new_items + 0.5);
    if (o.items < o.n) {
        fprintf(stderr, "recd sim: --items (%u) must be at least -n (%u)\n", o.items, o.n);
        return 2;
    }
    if ((double)o.users * nitems > (double)(1u << 28)) {
        fprintf(stderr, "recd sim: users x items is at most 268,435,456 (each arm keeps a "
                        "count per pair)\n");
        return 2;
    }
    arm arms[MAX_ARMS];
    int narms = 0;
    char list[2048];
    snprintf(list, sizeof list, "%s",
             pipelines ? pipelines : "default,baseline:profile_ts,baseline:linucb");
    char *save = NULL;
    for (char *s = strtok_r(list, ",", &save); s; s = strtok_r(NULL, ",", &save)) {
        while (*s == ' ')
            s++;
        if (*s && add_arm(arms, &narms, s, grid))
            return 2;
    }
    if (!narms) {
        fprintf(stderr, "recd sim: nothing to compare\n");
        return 2;
    }
    int nscripted = 0;
    for (int i = 0; i < narms; i++)
        nscripted += scripted(&arms[i]);
    if (connect && nscripted > 1) {
        fprintf(stderr, "recd sim: --connect runs one scripted arm against the server's data "
                        "(baselines may run beside it)\n");
        return 2;
    }
    if (!connect && nscripted && !scripts) {
        fprintf(stderr, "recd sim: scripted arms need a scripts folder (--scripts DIR)\n");
        return 2;
    }
    rec_log_set_level(REC_LOG_ERROR); /* the scripts' own chatter */
    sim_ctx x;
    memset(&x, 0, sizeof x);
    x.o = &o;
    x.scripts = scripts;
    x.policies = policies;
    x.connect = connect;
    atomic_size_t work_done;
    atomic_init(&work_done, 0);
    x.work_done = &work_done;
    int status = check_arms(&x, arms, narms);
    if (status)
        return status;
    result *res = calloc((size_t)narms, sizeof *res);
    if (!res) {
        fprintf(stderr, "recd sim: out of memory\n");
        return 1;
    }
    if (!jobs) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        jobs = c > 0 ? (uint32_t)c : 1;
    }
    if (jobs > (uint32_t)narms)
        jobs = (uint32_t)narms;
    (void)rec_vec_isa_name(); /* kernels chosen before the threads start */
    rec_space_ann_sync(1);      /* answers that do not depend on timing */
    double t0 = mono();
    pool pl = {.x = &x, .arms = arms, .res = res, .n = narms};
    atomic_init(&pl.next, 0);
    pthread_t th[64];
    uint32_t started = 0;
    for (; started < jobs; started++)
        if (pthread_create(&th[started], NULL, worker, &pl))
            break;
    if (!started)
        worker(&pl);
    int tty = !quiet && isatty(2);
    double total = (double)o.requests * narms;
    for (;;) {
        int all = 1;
        for (int i = 0; i < narms; i++)
            all &= atomic_load(&res[i].done) != 0;
        if (all)
            break;
        if (tty) {
            double f = (double)atomic_load(&work_done) / total, el = mono() - t0;
            fprintf(stderr, "\r[%-30.*s] %3.0f%%  %.0f s elapsed", (int)(f * 30),
                    "##############################", f * 100, el);
            if (f > 0.01)
                fprintf(stderr, ", about %.0f s left ", el / f - el);
            fflush(stderr);
        }
        struct timespec ns = {0, 200 * 1000 * 1000};
        nanosleep(&ns, NULL);
    }
    for (uint32_t i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    if (tty)
        fprintf(stderr, "\r%70s\r", "");
    double seconds = mono() - t0;
    /* --grid: the best setting of each learner, by CTR over the run */
    int best[NLEARNERS], nbest = 0;
    double best_ctr[NLEARNERS];
    for (size_t k = 0; grid && k < NLEARNERS; k++) {
        int b = -1;
        double bc = -1;
        for (int i = 0; i < narms; i++) {
            tenth s = sum_tenths(&res[i], 0, TENTHS);
            double c = ratio((double)s.clicks, (double)s.slots);
            if (arms[i].kind == learners[k].kind && !res[i].failed && c > bc) {
                bc = c;
                b = i;
            }
        }
        if (b >= 0 && learners[k].p1name) {
            best_ctr[nbest] = bc;
            best[nbest++] = b;
        }
    }
    if (json) {
        print_json(stdout, &x, arms, res, narms, best, nbest, seconds);
    } else {
        print_table(stdout, &x, arms, res, narms, seconds);
        for (int k = 0; k < nbest; k++)
            printf("best of the grid: %s (CTR %.4f)\n", arms[best[k]].label, best_ctr[k]);
    }
    status = 0;
    for (int i = 0; i < narms; i++)
        if (res[i].failed)
            status = 1;
    if (svg && write_svg(svg, arms, res, narms)) {
        fprintf(stderr, "recd sim: cannot write %s: %s\n", svg, strerror(errno));
        status = 1;
    }
    free(res);
    return status;
}
