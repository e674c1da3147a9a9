/* test_ctr.c - the online click model: it learns a planted click rate
 * (AUC close to the planted model's own), the factorization machine
 * learns a cross the logistic part cannot, scoring many candidates equals
 * scoring each, bytes round-trip, bad input changes nothing. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctr.h"
#include "err.h"
#include "rng.h"

#define FIELDS 12
#define VALUES 40

typedef struct example {
    rec_ctr_feat f[FIELDS];
    double p; /* the planted probability */
    int y;
} example;

typedef struct scored {
    double s;
    int y;
} scored;

static int cmp_scored(const void *a, const void *b) {
    double x = ((const scored *)a)->s, y = ((const scored *)b)->s;
    return (x > y) - (x < y);
}

/* Area under the ROC curve of scores s for labels y (ties count half). */
static double auc(scored *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_scored);
    double pos = 0, neg = 0, rank_sum = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && v[j].s == v[i].s)
            j++;
        double mid = (double)(i + j + 1) / 2.0; /* ranks are 1-based */
        for (size_t t = i; t < j; t++)
            if (v[t].y) {
                rank_sum += mid;
                pos++;
            } else {
                neg++;
            }
        i = j;
    }
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg);
}

/* A planted logistic model over FIELDS categorical fields. */
static void planted_stream(example *ex, size_t n, uint64_t seed, const rec_ctr *m) {
    rec_rng r;
    rec_rng_seed(&r, 1234);
    double w[FIELDS][VALUES];
    for (int f = 0; f < FIELDS; f++)
        for (int v = 0; v < VALUES; v++)
            w[f][v] = (rec_rng_unit(&r) - 0.5) * 1.6;
    rec_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) {
        double logit = -2.0;
        for (int f = 0; f < FIELDS; f++) {
            /* skewed values: a few frequent, many rare */
            int v = (int)(VALUES * pow(rec_rng_unit(&r), 2.0));
            char name[16], val[16];
            snprintf(name, sizeof name, "f%d", f);
            snprintf(val, sizeof val, "%d", v);
            ex[i].f[f].idx = rec_ctr_index(m, name, strlen(name), val, strlen(val));
            ex[i].f[f].x = 1.0f;
            logit += w[f][v];
        }
        ex[i].p = 1.0 / (1.0 + exp(-logit));
        ex[i].y = rec_rng_unit(&r) < ex[i].p;
    }
}

static void test_learns_a_planted_click_rate(void **state) {
    (void)state;
    rec_ctr *m;
    assert_int_equal(rec_ctr_new(&m, NULL), 0);
    const size_t ntrain = 200000, ntest = 40000;
    example *ex = malloc((ntrain + ntest) * sizeof *ex);
    assert_non_null(ex);
    planted_stream(ex, ntrain + ntest, 7, m);
    for (size_t i = 0; i < ntrain; i++)
        assert_int_equal(rec_ctr_learn(m, ex[i].f, FIELDS, ex[i].y, NULL), 0);
    scored *by_model = malloc(ntest * sizeof *by_model), *by_truth = malloc(ntest * sizeof *by_truth);
    assert_true(by_model && by_truth);
    for (size_t i = 0; i < ntest; i++) {
        double l;
        assert_int_equal(rec_ctr_logit(m, ex[ntrain + i].f, FIELDS, &l), 0);
        by_model[i] = (scored){l, ex[ntrain + i].y};
        by_truth[i] = (scored){ex[ntrain + i].p, ex[ntrain + i].y};
    }
    double a_model = auc(by_model, ntest), a_truth = auc(by_truth, ntest);
    print_message("planted AUC %.4f, learned %.4f\n", a_truth, a_model);
    assert_true(a_truth > 0.7);              /* the stream has signal */
    assert_true(a_model > a_truth - 0.02);
    rec_ctr_stats st;
    rec_ctr_stats_get(m, &st);
    assert_int_equal(st.examples, ntrain);
    assert_true(st.positives > ntrain / 20 && st.positives < ntrain / 2);
    assert_true(st.logloss > 0 && st.logloss < 0.69);
    free(by_model);
    free(by_truth);
    free(ex);
    rec_ctr_free(m);
}

/* Clicks when two fields agree: no weight of one field alone tells. */
static void test_the_machine_learns_a_cross(void **state) {
    (void)state;
    rec_ctr_opts o;
    rec_ctr_opts_default(&o);
    o.bits = 12;
    rec_ctr *lr, *fm;
    assert_int_equal(rec_ctr_new(&lr, &o), 0);
    o.k = 8;
    assert_int_equal(rec_ctr_new(&fm, &o), 0);
    rec_rng r;
    rec_rng_seed(&r, 99);
    const size_t n = 150000, ntest = 20000;
    scored *a = malloc(ntest * sizeof *a), *b = malloc(ntest * sizeof *b);
    scored *t = malloc(ntest * sizeof *t);
    assert_true(a && b && t);
    for (size_t i = 0; i < n + ntest; i++) {
        int u = (int)rec_rng_below(&r, 8), v = (int)rec_rng_below(&r, 8);
        char us[4], vs[4];
        snprintf(us, sizeof us, "%d", u);
        snprintf(vs, sizeof vs, "%d", v);
        rec_ctr_feat f[2] = {{rec_ctr_index(lr, "user_topic", 10, us, strlen(us)), 1.0f},
                             {rec_ctr_index(lr, "item_topic", 10, vs, strlen(vs)), 1.0f}};
        double p = u == v ? 0.5 : 0.05;
        int y = rec_rng_unit(&r) < p;
        if (i < n) {
            assert_int_equal(rec_ctr_learn(lr, f, 2, y, NULL), 0);
            assert_int_equal(rec_ctr_learn(fm, f, 2, y, NULL), 0);
        } else {
            double la, lb;
            assert_int_equal(rec_ctr_logit(lr, f, 2, &la), 0);
            assert_int_equal(rec_ctr_logit(fm, f, 2, &lb), 0);
            a[i - n] = (scored){la, y};
            b[i - n] = (scored){lb, y};
            t[i - n] = (scored){p, y};
        }
    }
    double auc_lr = auc(a, ntest), auc_fm = auc(b, ntest), auc_true = auc(t, ntest);
    print_message("cross: planted AUC %.4f, LR %.4f, FM %.4f\n", auc_true, auc_lr, auc_fm);
    assert_true(auc_fm > auc_true - 0.02);
    assert_true(auc_fm > auc_lr + 0.15);
    free(t);
    free(a);
    free(b);
    rec_ctr_free(lr);
    rec_ctr_free(fm);
}

static void test_scoring_many_is_scoring_each(void **state) {
    (void)state;
    rec_ctr_opts o;
    rec_ctr_opts_default(&o);
    o.bits = 14;
    o.k = 4;
    rec_ctr *m;
    assert_int_equal(rec_ctr_new(&m, &o), 0);
    example *ex = malloc(20000 * sizeof *ex);
    assert_non_null(ex);
    planted_stream(ex, 20000, 3, m);
    for (size_t i = 0; i < 20000; i++)
        assert_int_equal(rec_ctr_learn(m, ex[i].f, FIELDS, ex[i].y, NULL), 0);
    /* the first 4 fields are the request's, the rest each candidate's */
    uint32_t off[51];
    rec_ctr_feat cand[50 * (FIELDS - 4)];
    for (int c = 0; c <= 50; c++)
        off[c] = (uint32_t)(c * (FIELDS - 4));
    for (int c = 0; c < 50; c++)
        memcpy(cand + off[c], ex[c].f + 4, (FIELDS - 4) * sizeof *cand);
    double out[50];
    assert_int_equal(rec_ctr_score(m, ex[0].f, 4, cand, off, 50, out), 0);
    for (int c = 0; c < 50; c++) {
        rec_ctr_feat all[FIELDS];
        memcpy(all, ex[0].f, 4 * sizeof *all);
        memcpy(all + 4, ex[c].f + 4, (FIELDS - 4) * sizeof *all);
        double l;
        assert_int_equal(rec_ctr_logit(m, all, FIELDS, &l), 0);
        assert_true(fabs(l - out[c]) < 1e-4);
    }
    free(ex);
    rec_ctr_free(m);
}

static void test_bytes_round_trip(void **state) {
    (void)state;
    rec_ctr_opts o;
    rec_ctr_opts_default(&o);
    o.bits = 10;
    o.k = 3;
    rec_ctr *m, *twin, *back;
    assert_int_equal(rec_ctr_new(&m, &o), 0);
    assert_int_equal(rec_ctr_new(&twin, &o), 0);
    example *ex = malloc(5000 * sizeof *ex);
    assert_non_null(ex);
    planted_stream(ex, 5000, 5, m);
    for (size_t i = 0; i < 5000; i++) {
        assert_int_equal(rec_ctr_learn(m, ex[i].f, FIELDS, ex[i].y, NULL), 0);
        assert_int_equal(rec_ctr_learn(twin, ex[i].f, FIELDS, ex[i].y, NULL), 0);
    }
    rec_buf a = REC_BUF_INIT, b = REC_BUF_INIT;
    assert_int_equal(rec_ctr_save(m, &a), 0);
    assert_int_equal(rec_ctr_save(twin, &b), 0);
    /* the same options and examples make the same model, bit for bit */
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    assert_int_equal(rec_ctr_load(&back, a.data, a.len), 0);
    for (size_t i = 0; i < 100; i++) {
        double x, y;
        assert_int_equal(rec_ctr_logit(m, ex[i].f, FIELDS, &x), 0);
        assert_int_equal(rec_ctr_logit(back, ex[i].f, FIELDS, &y), 0);
        assert_true(x == y);
    }
    rec_ctr_stats s1, s2;
    rec_ctr_stats_get(m, &s1);
    rec_ctr_stats_get(back, &s2);
    assert_true(s1.examples == s2.examples && s1.logloss == s2.logloss);
    rec_ctr *bad;
    assert_int_equal(rec_ctr_load(&bad, a.data, a.len - 1), REC_ECORRUPT);
    ((char *)a.data)[0] ^= 1;
    assert_int_equal(rec_ctr_load(&bad, a.data, a.len), REC_ECORRUPT);
    assert_null(bad);
    rec_buf_free(&a);
    rec_buf_free(&b);
    free(ex);
    rec_ctr_free(m);
    rec_ctr_free(twin);
    rec_ctr_free(back);
}

static void test_bad_input_changes_nothing(void **state) {
    (void)state;
    rec_ctr_opts o;
    rec_ctr_opts_default(&o);
    o.bits = 10;
    o.k = 2;
    rec_ctr *m;
    assert_int_equal(rec_ctr_new(&m, &o), 0);
    rec_ctr_feat f[2] = {{1, 1.0f}, {2, (float)NAN}};
    double l;
    assert_int_equal(rec_ctr_learn(m, f, 2, 1.0, NULL), REC_EINVAL);
    assert_int_equal(rec_ctr_logit(m, f, 2, &l), REC_EINVAL);
    f[1].x = (float)INFINITY;
    assert_int_equal(rec_ctr_learn(m, f, 2, 1.0, NULL), REC_EINVAL);
    f[1].x = 1.0f;
    assert_int_equal(rec_ctr_learn(m, f, 2, 2.0, NULL), REC_EINVAL);
    assert_int_equal(rec_ctr_learn(m, f, 2, NAN, NULL), REC_EINVAL);
    rec_ctr_feat *many = calloc(REC_CTR_MAX_FEATS + 1, sizeof *many);
    assert_non_null(many);
    assert_int_equal(rec_ctr_learn(m, many, REC_CTR_MAX_FEATS + 1, 1.0, NULL), REC_EINVAL);
    free(many);
    rec_ctr_stats st;
    rec_ctr_stats_get(m, &st);
    assert_int_equal(st.examples, 0);
    assert_int_equal(rec_ctr_logit(m, f, 2, &l), 0);
    assert_true(fabs(l) < 1e-3); /* nothing learned: bias and weights 0, factors tiny */
    double p;
    assert_int_equal(rec_ctr_learn(m, f, 2, 1.0, &p), 0);
    assert_true(fabs(p - 0.5) < 1e-3);
    rec_ctr_free(m);
    rec_ctr *x;
    o.bits = 30;
    assert_int_equal(rec_ctr_new(&x, &o), REC_EINVAL);
    o.bits = 10;
    o.k = REC_CTR_MAX_K + 1;
    assert_int_equal(rec_ctr_new(&x, &o), REC_EINVAL);
    o.k = 0;
    o.alpha = 0;
    assert_int_equal(rec_ctr_new(&x, &o), REC_EINVAL);
    assert_null(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_learns_a_planted_click_rate),
        cmocka_unit_test(test_the_machine_learns_a_cross),
        cmocka_unit_test(test_scoring_many_is_scoring_each),
        cmocka_unit_test(test_bytes_round_trip),
        cmocka_unit_test(test_bad_input_changes_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
