/* bench_ctr.c - the online click model, one thread: scoring 500 candidates
 * of 20 pre-hashed features (8 of them the request's, shared) by
 * rec_ctr_score, beside scoring each candidate alone (rec_ctr_logit on all
 * 20: the baseline), and learning examples of 20 features, for logistic
 * regression and a factorization machine with k = 8. Medians of 9 runs. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "bench_common.h"
#include "ctr.h"
#include "rng.h"

#define NCAND 500
#define NFEAT 20
#define NSHARED 8
#define NLEARN 200000
#define RUNS 9

static void fill(rec_rng *r, rec_ctr_feat *f, size_t n) {
    for (size_t i = 0; i < n; i++) {
        f[i].idx = (uint32_t)rec_rng_next(r);
        f[i].x = i % 4 == 3 ? (float)rec_rng_unit(r) : 1.0f;
    }
}

static void bench(const char *name, uint32_t k) {
    rec_ctr_opts o;
    rec_ctr_opts_default(&o);
    o.k = k;
    o.bits = k ? 18 : 20;
    rec_ctr *m;
    if (rec_ctr_new(&m, &o)) {
        fprintf(stderr, "bench_ctr: cannot make the model\n");
        exit(1);
    }
    rec_rng r;
    rec_rng_seed(&r, 1);
    static rec_ctr_feat ex[NLEARN][NFEAT];
    for (size_t i = 0; i < NLEARN; i++)
        fill(&r, ex[i], NFEAT);
    /* learning: examples per second (the model warms up on the first run) */
    double t[RUNS];
    for (int run = 0; run < RUNS; run++) {
        double t0 = now();
        for (size_t i = 0; i < NLEARN; i++)
            rec_ctr_learn(m, ex[i], NFEAT, (double)(i % 7 == 0), NULL);
        t[run] = (double)NLEARN / (now() - t0);
    }
    double learn = median(t, RUNS);
    /* scoring: the request's 8 features shared, 12 per candidate */
    static rec_ctr_feat shared[NSHARED], cand[NCAND * (NFEAT - NSHARED)], all[NFEAT];
    static uint32_t off[NCAND + 1];
    fill(&r, shared, NSHARED);
    fill(&r, cand, NCAND * (NFEAT - NSHARED));
    for (int c = 0; c <= NCAND; c++)
        off[c] = (uint32_t)(c * (NFEAT - NSHARED));
    static double out[NCAND];
    double ts[RUNS], tb[RUNS], sink = 0;
    for (int run = 0; run < RUNS; run++) {
        double t0 = now();
        for (int rep = 0; rep < 100; rep++) {
            rec_ctr_score(m, shared, NSHARED, cand, off, NCAND, out);
            sink += out[rep % NCAND];
        }
        ts[run] = (now() - t0) / 100 * 1e6;
        t0 = now();
        for (int rep = 0; rep < 100; rep++)
            for (int c = 0; c < NCAND; c++) {
                memcpy(all, shared, sizeof shared);
                memcpy(all + NSHARED, cand + off[c], (NFEAT - NSHARED) * sizeof *all);
                double l;
                rec_ctr_logit(m, all, NFEAT, &l);
                sink += l;
            }
        tb[run] = (now() - t0) / 100 * 1e6;
    }
    double score = median(ts, RUNS), each = median(tb, RUNS);
    printf("%s: learn %.0f examples/s; score %d candidates x %d features %.1f us "
           "(each alone %.1f us: %.2fx)%s\n", name, learn, NCAND, NFEAT, score, each,
           each / score, isfinite(sink) ? "" : " ");
    char n1[64];
    snprintf(n1, sizeof n1, "ctr_%s_learn", name);
    report(n1, learn, "examples/s");
    snprintf(n1, sizeof n1, "ctr_%s_score_500x20", name);
    report(n1, score, "us");
    snprintf(n1, sizeof n1, "ctr_%s_score_vs_each", name);
    report(n1, each / score, "ratio");
    rec_ctr_free(m);
}

int main(void) {
    bench("lr", 0);
    bench("fm8", 8);
    return 0;
}
