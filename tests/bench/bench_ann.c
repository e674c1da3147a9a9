/* bench_ann.c - the approximate index of cosine top-k scans (ivf.h)
 * against the exact scan, side by side: time per query and recall@k.
 *
 *   bench_ann           full run: 100k items of 64 dims (~0.3 GB peak)
 *   bench_ann --quick   20k items, for smoke runs (also RECD_BENCH_QUICK=1)
 *
 * Two catalogues: clustered (50 Gaussian centres, unit spread, items at
 * 0.5 around them, as the 100k-item benchmark fixture) and random (i.i.d.
 * Gaussian, the worst case for any partition). Queries: a user profile
 * (the sum of 10 random items of one cluster, as scripts/hybrid.lua
 * builds one) and an item's own vector, 200 of each kind. recall@k is
 * |approximate top-k ∩ exact top-k| / k, averaged over the queries, of
 * the index itself at several probe counts (rec_ivf_topk, whatever its
 * self-check decided). Then a query with 90% of the items filtered out
 * as rec_space_topk answers it (exact when the self-check found the index
 * not worth it), the training time with the self-check's verdict, and the
 * cost of putting an item once the index exists.
 *
 * Every time is a median over the queries, printed once for people and
 * once as `BENCH name=... value=... unit=...`. Data from rec_rng with
 * fixed seeds.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "space.h"
#include "vec.h"

#include "bench_common.h"

enum { DIM = 64, CLUSTERS = 50, QUERIES = 200, KMAX = 300 };

static void die(const char *what, int rc) {
    fprintf(stderr, "bench_ann: %s failed (%d)\n", what, rc);
    exit(1);
}

static float gauss(rec_rng *r) {
    double u = rec_rng_unit(r), v = rec_rng_unit(r);
    return (float)(sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v));
}

/* items rows; clustered when `clustered`, cluster of item i is i % 50. */
static rec_space *make_space(uint32_t items, int clustered, float *cent) {
    rec_space *s = NULL;
    int rc = rec_space_new(&s, clustered ? "clustered" : "random", 1, DIM);
    if (rc)
        die("rec_space_new", rc);
    rec_rng r;
    rec_rng_seed(&r, clustered ? 0xc1u : 0xc2u);
    for (uint32_t c = 0; c < CLUSTERS * DIM; c++)
        cent[c] = gauss(&r);
    float v[DIM];
    for (uint32_t i = 0; i < items; i++) {
        const float *ce = cent + (i % CLUSTERS) * DIM;
        for (int d = 0; d < DIM; d++)
            v[d] = clustered ? ce[d] + 0.5f * gauss(&r) : gauss(&r);
        if ((rc = rec_space_set(s, REC_KIND_ITEM, i, v, REC_SET_CLEAN)))
            die("rec_space_set", rc);
    }
    return s;
}

/* Query q of kind `profile` (10 items of one cluster summed) or an item. */
static void make_query(const rec_space *s, uint32_t items, int profile,
                       rec_rng *r, float *q) {
    if (!profile) {
        memcpy(q, rec_space_get(s, REC_KIND_ITEM, rec_rng_below(r, items)),
               DIM * sizeof(float));
        return;
    }
    memset(q, 0, DIM * sizeof(float));
    uint32_t c = rec_rng_below(r, CLUSTERS);
    for (int j = 0; j < 10; j++) {
        uint32_t i = rec_rng_below(r, items / CLUSTERS) * CLUSTERS + c;
        rec_vec_axpy(1.0f, rec_space_get(s, REC_KIND_ITEM, i), q, DIM);
    }
}

static double overlap(const rec_hit *a, size_t na, const rec_hit *b,
                      size_t nb) {
    size_t same = 0;
    for (size_t i = 0; i < na; i++)
        for (size_t j = 0; j < nb; j++)
            if (a[i].idx == b[j].idx) {
                same++;
                break;
            }
    return nb ? (double)same / (double)nb : 1.0;
}

static void run(rec_space *s, uint32_t items, const char *data, int profile,
                const size_t *ks, size_t nks, const uint32_t *probes,
                size_t nprobes) {
    const char *qk = profile ? "profile" : "item";
    static float qs[QUERIES][DIM];
    static rec_hit exact[QUERIES][KMAX];
    static size_t nexact[QUERIES];
    rec_rng r;
    rec_rng_seed(&r, 0x9e3u + (uint64_t)profile);
    for (int i = 0; i < QUERIES; i++)
        make_query(s, items, profile, &r, qs[i]);
    rec_topk_how ex = {.exact = 1};
    double t[QUERIES];
    rec_hit out[KMAX];
    for (size_t ki = 0; ki < nks; ki++) {
        size_t k = ks[ki];
        for (int i = 0; i < QUERIES; i++) {
            double t0 = now();
            int n = rec_space_topk_how(s, REC_KIND_ITEM, qs[i], 1, NULL, 0, k,
                                       &ex, exact[i]);
            t[i] = (now() - t0) * 1e6;
            if (n < 0)
                die("exact scan", n);
            nexact[i] = (size_t)n;
        }
        double tex = median(t, QUERIES);
        printf("%s %s k=%zu: exact scan %.1f us\n", data, qk, k, tex);
        char name[96];
        snprintf(name, sizeof name, "ann_%s_%s_k%zu_exact", data, qk, k);
        report(name, tex, "us");
        /* The index itself, whatever its self-check decided (through
         * rec_space_topk a space whose index is not useful scans exactly). */
        const rec_matrix *m = &s->m[REC_KIND_ITEM];
        rec_ivf_rows view = {.rows = m->rows, .stride = s->stride,
                             .dim = s->dim, .nrows = m->nrows,
                             .count = m->count, .inv_norms = m->inv_norms,
                             .present = m->present};
        for (size_t pi = 0; pi < nprobes; pi++) {
            double rec = 0.0;
            for (int i = 0; i < QUERIES; i++) {
                double t0 = now();
                int n = rec_ivf_topk(m->ivf, &view, qs[i], NULL, 0, probes[pi],
                                     k, out);
                t[i] = (now() - t0) * 1e6;
                if (n < 0)
                    die("index scan", n);
                rec += overlap(out, (size_t)n, exact[i], nexact[i]);
            }
            double tix = median(t, QUERIES);
            rec /= QUERIES;
            printf("  probe %3u: %.1f us (%.1fx faster), recall@%zu %.3f\n",
                   probes[pi], tix, tex / tix, k, rec);
            snprintf(name, sizeof name, "ann_%s_%s_k%zu_probe%u", data, qk, k,
                     probes[pi]);
            report(name, tix, "us");
            snprintf(name, sizeof name, "ann_%s_%s_k%zu_probe%u_recall", data,
                     qk, k, probes[pi]);
            report(name, rec, "ratio");
        }
    }
}

/* 90% of the items filtered out at random: k hits still, and recall
 * against the exact scan under the same filter. */
static void run_filtered(rec_space *s, uint32_t items, const char *data) {
    size_t words = (items + 63) / 64;
    uint64_t *skip = calloc(words, 8);
    if (!skip)
        die("calloc", -1);
    rec_rng r;
    rec_rng_seed(&r, 0xf1);
    for (uint32_t i = 0; i < items; i++)
        if (rec_rng_below(&r, 10))
            skip[i >> 6] |= 1ull << (i & 63);
    float q[DIM];
    rec_hit ex[30], ap[30];
    rec_topk_how exact = {.exact = 1};
    double te[QUERIES], ta[QUERIES], rec = 0.0;
    size_t short_answers = 0;
    for (int i = 0; i < QUERIES; i++) {
        make_query(s, items, 1, &r, q);
        double t0 = now();
        int ne = rec_space_topk_how(s, REC_KIND_ITEM, q, 1, skip, words, 30,
                                    &exact, ex);
        double t1 = now();
        int na = rec_space_topk_how(s, REC_KIND_ITEM, q, 1, skip, words, 30,
                                    NULL, ap);
        double t2 = now();
        te[i] = (t1 - t0) * 1e6;
        ta[i] = (t2 - t1) * 1e6;
        short_answers += na < 30;
        rec += overlap(ap, (size_t)na, ex, (size_t)ne);
    }
    double me = median(te, QUERIES), ma = median(ta, QUERIES);
    printf("%s profile k=30, 90%% filtered out: exact %.1f us, index %.1f us "
           "(%.1fx), recall@30 %.3f, %zu answers short of 30\n",
           data, me, ma, me / ma, rec / QUERIES, short_answers);
    char name[96];
    snprintf(name, sizeof name, "ann_%s_filtered90_exact", data);
    report(name, me, "us");
    snprintf(name, sizeof name, "ann_%s_filtered90_index", data);
    report(name, ma, "us");
    snprintf(name, sizeof name, "ann_%s_filtered90_recall", data);
    report(name, rec / QUERIES, "ratio");
    free(skip);
}

int main(int argc, char **argv) {
    int quick = bench_quick_args(argc, argv);
    if (quick < 0)
        return 2;
    uint32_t items = quick ? 20000 : 100000;
    printf("bench_ann: isa %s, %u items of %d dims, %s mode\n",
           rec_vec_isa_name(), items, DIM, quick ? "quick" : "full");
    static float cent[CLUSTERS * DIM];
    const size_t ks[] = {30, 100, 300};
    const uint32_t probes[] = {4, 8, 12, 16, 32, 64};
    for (int clustered = 1; clustered >= 0; clustered--) {
        const char *data = clustered ? "clustered" : "random";
        rec_space *s = make_space(items, clustered, cent);
        s->ann_min_rows = 1; /* the quick run's 20k items too */
        double t0 = now();
        int rc = rec_space_ann_build(s, REC_KIND_ITEM);
        double tb = now() - t0;
        if (rc)
            die("rec_space_ann_build", rc);
        rec_ivf_stats st;
        rec_space_ann_stats(s, REC_KIND_ITEM, &st);
        printf("%s: index of %u lists over %u rows trained in %.0f ms; its "
               "self-check asks for %u lists%s\n", data, st.lists, st.indexed,
               tb * 1e3, st.probe_need,
               st.probe_need ? "" : " (none would do: scans stay exact)");
        char name[96];
        snprintf(name, sizeof name, "ann_%s_train", data);
        report(name, tb * 1e3, "ms");
        run(s, items, data, 1, ks, 3, probes, 6);
        run(s, items, data, 0, ks, 1, probes, 6);
        run_filtered(s, items, data);
        if (clustered) {
            /* Putting an item with the index in place: nearest list at once. */
            float v[DIM];
            rec_rng r;
            rec_rng_seed(&r, 0x77);
            double tp[QUERIES];
            for (int i = 0; i < QUERIES; i++) {
                for (int d = 0; d < DIM; d++)
                    v[d] = cent[(i % CLUSTERS) * DIM + d] + 0.5f * gauss(&r);
                double t1 = now();
                rc = rec_space_set(s, REC_KIND_ITEM, rec_rng_below(&r, items), v,
                                   REC_SET_CLEAN);
                tp[i] = (now() - t1) * 1e6;
                if (rc)
                    die("rec_space_set", rc);
            }
            double mp = median(tp, QUERIES);
            printf("%s: putting an item with the index in place: %.2f us\n",
                   data, mp);
            report("ann_put", mp, "us");
        }
        rec_space_free(s);
    }
    return 0;
}
