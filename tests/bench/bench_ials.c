/* bench_ials.c - single-thread cost of implicit ALS: one training iteration
 * (users then items) and one fold-in.
 *
 *   bench_ials           full run (~0.3 GB peak, well under a minute)
 *   bench_ials --quick   only the MovieLens-sized case (also RECD_BENCH_QUICK=1)
 *
 * Data: uniform users, Zipf(1) item popularity, weight 1 per event (repeats
 * of a pair merge into one interaction with a larger confidence), alpha 40,
 * reg 0.1, f = 64.
 *   ml100k: 610 users, 9.7k items, 100k events (MovieLens ml-latest-small)
 *   1m:     10k users, 50k items, 1M events
 *   3m:     100k users, 100k items, 3M events (30 per user: most rows are
 *           solved in the short form, whose cost grows with them)
 * An iteration is timed after one untimed warm-up iteration; the figure is
 * the median of 3. Fold-in: 50 distinct Zipf items per call against the
 * trained ml100k items, median over 10k calls, each timed alone.
 *
 * Every figure is printed once for people and once as
 * `BENCH name=... value=... unit=...` for scripts. All data comes from
 * rec_rng with fixed seeds.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ials.h"
#include "counter.h"
#include "mf.h"
#include "rng.h"
#include "vec.h"

#include "bench_common.h"

#define FACTORS 64
#define ALPHA 40.0f
#define REG 0.1f

/* ---- helpers --------------------------------------------------------- */

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "bench_ials: cannot allocate %zu bytes\n", n);
        exit(1);
    }
    return p;
}

static void check(int rc, const char *what) {
    if (rc) {
        fprintf(stderr, "bench_ials: %s failed (%d)\n", what, rc);
        exit(1);
    }
}

static volatile float sink;

/* Zipf(s) over [0, n): cumulative weights, sampled by binary search. */
typedef struct zipf {
    double *cdf;
    uint32_t n;
} zipf;

static void zipf_init(zipf *z, uint32_t n, double s) {
    z->cdf = xmalloc((size_t)n * sizeof *z->cdf);
    z->n = n;
    double acc = 0.0;
    for (uint32_t i = 0; i < n; i++) {
        acc += 1.0 / pow((double)(i + 1), s);
        z->cdf[i] = acc;
    }
    for (uint32_t i = 0; i < n; i++)
        z->cdf[i] /= acc;
}

static uint32_t zipf_draw(const zipf *z, rec_rng *r) {
    double x = rec_rng_unit(r);
    uint32_t lo = 0, hi = z->n - 1;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (z->cdf[mid] > x)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* ---- cases ----------------------------------------------------------- */

typedef struct ials_case {
    const char *name;
    uint32_t users, items;
    size_t events;
    uint64_t seed;
} ials_case;

typedef struct trained {
    float *V; /* items x FACTORS */
    uint32_t nitems;
    zipf z;
} trained;

/* Build the case's data, time iterations; optionally hand back V. */
static void bench_train(const ials_case *c, trained *keep) {
    rec_rng r;
    rec_rng_seed(&r, c->seed);
    zipf z;
    zipf_init(&z, c->items, 1.0);
    rec_ials_triple *t = xmalloc(c->events * sizeof *t);
    for (size_t k = 0; k < c->events; k++) {
        t[k].user = rec_rng_below(&r, c->users);
        t[k].item = zipf_draw(&z, &r);
        t[k].weight = 1.0f;
    }

    rec_ials_data d;
    double t0 = now();
    check(rec_ials_data_build(t, c->events, c->users, c->items, ALPHA, &d),
          "rec_ials_data_build");
    double build_ms = (now() - t0) * 1e3;
    free(t);
    uint32_t nnz = d.user_ptr[d.nusers];

    float *U = xmalloc((size_t)d.nusers * FACTORS * sizeof *U);
    float *V = xmalloc((size_t)d.nitems * FACTORS * sizeof *V);
    check(rec_ials_train(&d, FACTORS, REG, 1, c->seed, U, V, 1),
          "rec_ials_train (warm-up)");
    double ms[3], loss[4];
    check(rec_ials_loss(&d, FACTORS, REG, U, V, &loss[0]), "rec_ials_loss");
    for (int run = 0; run < 3; run++) {
        t0 = now();
        check(rec_ials_train(&d, FACTORS, REG, 1, 0, U, V, 0),
              "rec_ials_train");
        ms[run] = (now() - t0) * 1e3;
        check(rec_ials_loss(&d, FACTORS, REG, U, V, &loss[run + 1]),
              "rec_ials_loss");
    }
    double med = median(ms, 3);
    printf("ials %s: %u users, %u items, %zu events -> %u pairs; build "
           "%.1f ms; iteration f=%d median %.1f ms (loss %.4g -> %.4g)\n",
           c->name, d.nusers, d.nitems, c->events, nnz, build_ms, FACTORS,
           med, loss[0], loss[3]);
    char name[64];
    snprintf(name, sizeof name, "ials_build_%s", c->name);
    report(name, build_ms, "ms");
    snprintf(name, sizeof name, "ials_iter_%s_f%d", c->name, FACTORS);
    report(name, med, "ms");

    free(U);
    if (keep) {
        keep->V = V;
        keep->nitems = d.nitems;
        keep->z = z;
    } else {
        free(V);
        free(z.cdf);
    }
    rec_ials_data_free(&d);
}

static void bench_fold_in(const trained *tr, uint32_t calls) {
    enum { N = 50 };
    float *G = xmalloc((size_t)FACTORS * FACTORS * sizeof *G);
    rec_ials_gram(tr->V, tr->nitems, FACTORS, G);

    /* Distinct Zipf items per call (redraw repeats). */
    rec_rng r;
    rec_rng_seed(&r, 0xf01d);
    uint32_t *items = xmalloc((size_t)calls * N * sizeof *items);
    float conf[N];
    for (int k = 0; k < N; k++)
        conf[k] = ALPHA;
    for (uint32_t c = 0; c < calls; c++) {
        uint32_t *it = items + (size_t)c * N;
        for (int k = 0; k < N; k++) {
            int dup;
            do {
                it[k] = zipf_draw(&tr->z, &r);
                dup = 0;
                for (int j = 0; j < k; j++)
                    dup |= it[j] == it[k];
            } while (dup);
        }
    }

    double *us = xmalloc((size_t)calls * sizeof *us);
    float u[FACTORS];
    for (uint32_t c = 0; c < calls; c++) {
        double t0 = now();
        check(rec_ials_fold_in(tr->V, G, tr->nitems, FACTORS, REG,
                               items + (size_t)c * N, conf, N, u),
              "rec_ials_fold_in");
        us[c] = (now() - t0) * 1e6;
        sink = u[0];
    }
    double med = median(us, calls);
    printf("ials fold_in f=%d, %d interactions, %u items: median %.1f us "
           "(%u calls)\n",
           FACTORS, N, tr->nitems, med, calls);
    report("ials_fold_in_f64", med, "us");
    free(us);
    free(items);
    free(G);
}

int main(int argc, char **argv) {
    int quick = bench_quick_args(argc, argv);
    if (quick < 0)
        return 2;
    printf("bench_ials: isa %s, %s mode, single thread\n", rec_vec_isa_name(),
           quick ? "quick" : "full");

    const ials_case ml = {"ml100k", 610, 9700, 100000, 0x1a150001u};
    const ials_case big = {"1m", 10000, 50000, 1000000, 0x1a150002u};
    const ials_case wide = {"3m", 100000, 100000, 3000000, 0x1a150003u};
    trained tr;
    bench_train(&ml, &tr);
    bench_fold_in(&tr, quick ? 1000 : 10000);
    free(tr.V);
    free(tr.z.cdf);
    if (!quick) {
        bench_train(&big, NULL);
        bench_train(&wide, NULL);
    }
    return 0;
}
