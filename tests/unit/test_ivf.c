/* test_ivf.c - the approximate index of cosine top-k scans (ivf.h), through
 * the space that keeps it (rec_space_topk_how): training, the rows it
 * holds as items are put, changed, learned in place and removed, filters,
 * recall against the exact scan on planted clusters, training in the
 * background with changes under way, and when it is not used (small
 * matrices, dot products, exact asked for, a fresh start before training).
 *
 * Planted data: CLUSTERS well-separated unit directions, each row one of
 * them plus small noise, so the exact top-k of a cluster's direction lies
 * in that cluster. Random numbers from rec_rng with fixed seeds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "rng.h"
#include "space.h"

enum { DIM = 32, CLUSTERS = 20, ROWS = 4000 };

static float dirs[CLUSTERS][DIM];

static float gauss(rec_rng *r) {
    double u = rec_rng_unit(r), v = rec_rng_unit(r);
    return (float)(sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v));
}

/* A row of cluster c: its direction plus noise of `spread`. */
static void planted_row(rec_rng *r, uint32_t c, float spread, float *v) {
    for (int d = 0; d < DIM; d++)
        v[d] = dirs[c][d] + spread * gauss(r);
}

/* ROWS rows, row i in cluster i % CLUSTERS; the index trained on them. */
static rec_space *planted(uint32_t min_rows) {
    rec_rng r;
    rec_rng_seed(&r, 41);
    for (int c = 0; c < CLUSTERS; c++) {
        for (int d = 0; d < DIM; d++)
            dirs[c][d] = gauss(&r);
        float n = sqrtf(rec_vec_norm2(dirs[c], DIM));
        rec_vec_scale(1.0f / n, dirs[c], DIM);
    }
    rec_space *s = NULL;
    assert_int_equal(rec_space_new(&s, "content", 3, DIM), 0);
    s->ann_min_rows = min_rows;
    float v[DIM];
    for (uint32_t i = 0; i < ROWS; i++) {
        planted_row(&r, i % CLUSTERS, 0.05f, v);
        assert_int_equal(rec_space_set(s, REC_KIND_ITEM, i, v, REC_SET_CLEAN), 0);
    }
    return s;
}

static int exact(const rec_space *s, const float *q, const uint64_t *skip,
                 size_t words, size_t k, rec_hit *out) {
    rec_topk_how how = {.exact = 1};
    return rec_space_topk_how(s, REC_KIND_ITEM, q, 1, skip, words, k, &how, out);
}

static double recall(const rec_hit *a, int na, const rec_hit *b, int nb) {
    int same = 0;
    for (int i = 0; i < na; i++)
        for (int j = 0; j < nb; j++)
            if (a[i].idx == b[j].idx) {
                same++;
                break;
            }
    return nb ? (double)same / nb : 1.0;
}

static int has(const rec_hit *h, int n, uint32_t idx) {
    for (int i = 0; i < n; i++)
        if (h[i].idx == idx)
            return 1;
    return 0;
}

static void stats(const rec_space *s, rec_ivf_stats *st) {
    rec_space_ann_stats(s, REC_KIND_ITEM, st);
}

/* Every present row is in exactly one list: the index holds count rows. */
static void expect_all_indexed(const rec_space *s) {
    rec_ivf_stats st;
    stats(s, &st);
    assert_true(st.lists > 0);
    assert_int_equal(st.indexed, s->m[REC_KIND_ITEM].count);
}

/* ---- tests ----------------------------------------------------------- */

/* sqrt(rows) lists; a cluster's direction finds its cluster as the exact
 * scan does, for k from 30 to 200 (a cluster holds 200 rows). */
static void test_build_and_recall(void **state) {
    rec_space *s = planted(1);
    assert_int_equal(rec_space_ann_build(s, REC_KIND_ITEM), 0);
    rec_ivf_stats st;
    stats(s, &st);
    assert_int_equal(st.lists, 63); /* round(sqrt(4000)) */
    assert_int_equal(st.trained_on, ROWS);
    assert_int_equal(st.trainings, 1);
    /* The self-check finds the clusters within a few lists. */
    assert_true(st.probe_need >= 1 && st.probe_need <= 63 / 8);
    expect_all_indexed(s);
    static rec_hit a[300], e[300];
    const size_t ks[] = {30, 100, 200};
    for (size_t ki = 0; ki < 3; ki++) {
        double sum = 0;
        for (int c = 0; c < CLUSTERS; c++) {
            int na = rec_space_topk(s, REC_KIND_ITEM, dirs[c], 1, NULL, 0, ks[ki], a);
            int ne = exact(s, dirs[c], NULL, 0, ks[ki], e);
            assert_int_equal(na, (int)ks[ki]);
            assert_int_equal(ne, (int)ks[ki]);
            for (int i = 0; i < na; i++) {
                assert_int_equal(a[i].idx % CLUSTERS, (uint32_t)c);
                if (i > 0)
                    assert_true(rec_hit_cmp(&a[i - 1], &a[i]) < 0);
            }
            sum += recall(a, na, e, ne);
        }
        if (sum / CLUSTERS < 0.95)
            fail_msg("recall@%zu %.3f", ks[ki], sum / CLUSTERS);
    }
    /* probe = every list: the exact answer, scores included (to rounding). */
    rec_topk_how all = {.probe = 1000};
    int na = rec_space_topk_how(s, REC_KIND_ITEM, dirs[3], 1, NULL, 0, 50, &all, a);
    int ne = exact(s, dirs[3], NULL, 0, 50, e);
    assert_int_equal(na, ne);
    for (int i = 0; i < na; i++) {
        assert_int_equal(a[i].idx, e[i].idx);
        assert_true(fabsf(a[i].score - e[i].score) < 1e-5f);
    }
    rec_space_free(s);
}

/* Put, change, learn in place, remove: each is reflected at once. */
static void test_put_change_touch_remove(void **state) {
    rec_space *s = planted(1);
    assert_int_equal(rec_space_ann_build(s, REC_KIND_ITEM), 0);
    rec_hit a[30];
    /* A new row exactly on cluster 5's direction ranks first there. */
    assert_int_equal(rec_space_set(s, REC_KIND_ITEM, ROWS + 10, dirs[5], REC_SET_DIRTY), 0);
    expect_all_indexed(s);
    int n = rec_space_topk(s, REC_KIND_ITEM, dirs[5], 1, NULL, 0, 30, a);
    assert_int_equal(a[0].idx, ROWS + 10);
    assert_true(a[0].score > 0.9999f);
    /* Changed to cluster 9: found there, gone from 5. */
    assert_int_equal(rec_space_set(s, REC_KIND_ITEM, ROWS + 10, dirs[9], REC_SET_DIRTY), 0);
    expect_all_indexed(s);
    n = rec_space_topk(s, REC_KIND_ITEM, dirs[5], 1, NULL, 0, 30, a);
    assert_false(has(a, n, ROWS + 10));
    n = rec_space_topk(s, REC_KIND_ITEM, dirs[9], 1, NULL, 0, 30, a);
    assert_int_equal(a[0].idx, ROWS + 10);
    /* Learned in place (row 7, cluster 7, made exactly its direction):
     * the index scores the row as it is now. */
    float *row = rec_space_row(s, REC_KIND_ITEM, 7);
    memcpy(row, dirs[7], sizeof dirs[7]);
    rec_space_touch(s, REC_KIND_ITEM, 7);
    rec_ivf_stats st;
    stats(s, &st);
    assert_int_equal(st.drift, 1);
    n = rec_space_topk(s, REC_KIND_ITEM, dirs[7], 1, NULL, 0, 30, a);
    assert_int_equal(a[0].idx, 7);
    assert_true(a[0].score > 0.9999f);
    /* Removed: never again, and out of the lists. */
    rec_space_remove(s, REC_KIND_ITEM, ROWS + 10);
    rec_space_remove(s, REC_KIND_ITEM, 7);
    expect_all_indexed(s);
    n = rec_space_topk(s, REC_KIND_ITEM, dirs[9], 1, NULL, 0, 30, a);
    assert_false(has(a, n, ROWS + 10));
    n = rec_space_topk(s, REC_KIND_ITEM, dirs[7], 1, NULL, 0, 30, a);
    assert_false(has(a, n, 7));
    assert_int_equal(n, 30);
    stats(s, &st);
    assert_int_equal(st.changed, 4);
    rec_space_free(s);
}

/* Skip bits leave the same rows out as the exact scan, and a query whose
 * probed lists are almost all filtered still gets k hits. */
static void test_filters(void **state) {
    rec_space *s = planted(1);
    assert_int_equal(rec_space_ann_build(s, REC_KIND_ITEM), 0);
    size_t words = (ROWS + 63) / 64;
    uint64_t *skip = calloc(words, 8);
    assert_non_null(skip);
    /* Cluster 4 entirely filtered, and 90% of the rest. */
    rec_rng r;
    rec_rng_seed(&r, 43);
    uint32_t kept = 0;
    for (uint32_t i = 0; i < ROWS; i++) {
        if (i % CLUSTERS == 4 || rec_rng_below(&r, 10))
            skip[i >> 6] |= 1ull << (i & 63);
        else
            kept++;
    }
    static rec_hit a[100], e[100];
    int n = rec_space_topk(s, REC_KIND_ITEM, dirs[4], 1, skip, words, 100, a);
    assert_int_equal(n, 100);
    for (int i = 0; i < n; i++)
        assert_false(skip[a[i].idx >> 6] >> (a[i].idx & 63) & 1);
    /* Asking for more than is left: every row left, as the exact scan. */
    static rec_hit all[ROWS];
    n = rec_space_topk(s, REC_KIND_ITEM, dirs[4], 1, skip, words, ROWS, all);
    assert_int_equal(n, (int)kept);
    /* Cluster 6 with 90% of it filtered: its kept rows, as the exact scan. */
    n = rec_space_topk(s, REC_KIND_ITEM, dirs[6], 1, skip, words, 15, a);
    int ne = exact(s, dirs[6], skip, words, 15, e);
    assert_int_equal(n, ne);
    assert_true(recall(a, n, e, ne) >= 0.95);
    free(skip);
    rec_space_free(s);
}

/* No index below the size threshold, for dot products, when the exact
 * scan is asked for; and on a fresh start (rows loaded, no index yet) the
 * first large cosine scan answers exactly while training starts. */
static void test_when_exact(void **state) {
    rec_space *s = planted(ROWS + 1);
    rec_hit a[30], e[30];
    rec_ivf_stats st;
    int n = rec_space_topk(s, REC_KIND_ITEM, dirs[1], 1, NULL, 0, 30, a);
    assert_int_equal(n, 30);
    stats(s, &st);
    assert_int_equal(st.lists + st.training + st.trainings, 0);
    assert_null(s->m[REC_KIND_ITEM].ivf);

    s->ann_min_rows = ROWS;
    n = rec_space_topk(s, REC_KIND_ITEM, dirs[1], 0, NULL, 0, 30, a);
    assert_null(s->m[REC_KIND_ITEM].ivf); /* dot product */
    rec_topk_how ex = {.exact = 1};
    n = rec_space_topk_how(s, REC_KIND_ITEM, dirs[1], 1, NULL, 0, 30, &ex, a);
    assert_null(s->m[REC_KIND_ITEM].ivf);
    /* Users: always the exact scan. */
    s->ann_min_rows = 1;
    assert_int_equal(rec_space_set(s, REC_KIND_USER, 0, dirs[1], REC_SET_CLEAN), 0);
    assert_int_equal(rec_space_topk(s, REC_KIND_USER, dirs[1], 1, NULL, 0, 5, a), 1);
    assert_null(s->m[REC_KIND_USER].ivf);
    assert_null(s->m[REC_KIND_ITEM].ivf);
    s->ann_min_rows = ROWS;

    /* The first cosine scan at the threshold: exact, training started. */
    n = rec_space_topk(s, REC_KIND_ITEM, dirs[2], 1, NULL, 0, 30, a);
    int ne = exact(s, dirs[2], NULL, 0, 30, e);
    assert_int_equal(n, ne);
    assert_memory_equal(a, e, (size_t)n * sizeof *a);
    assert_non_null(s->m[REC_KIND_ITEM].ivf);
    stats(s, &st);
    assert_int_equal(st.lists, 0);
    rec_space_free(s); /* waits for the training under way */
}

/* Uniformly random rows have no clusters: the self-check finds no probe
 * count worth it, and scans stay exact (the index is kept in step all the
 * same, for when the rows change). */
static void test_random_rows_scan_exactly(void **state) {
    rec_space *s = NULL;
    assert_int_equal(rec_space_new(&s, "noise", 4, DIM), 0);
    s->ann_min_rows = 1;
    rec_rng r;
    rec_rng_seed(&r, 59);
    float v[DIM];
    for (uint32_t i = 0; i < ROWS; i++) {
        for (int d = 0; d < DIM; d++)
            v[d] = gauss(&r);
        assert_int_equal(rec_space_set(s, REC_KIND_ITEM, i, v, REC_SET_CLEAN), 0);
    }
    assert_int_equal(rec_space_ann_build(s, REC_KIND_ITEM), 0);
    rec_ivf_stats st;
    stats(s, &st);
    assert_int_equal(st.lists, 63);
    assert_int_equal(st.probe_need, 0);
    expect_all_indexed(s);
    rec_hit a[30], e[30];
    for (int i = 0; i < 5; i++) {
        for (int d = 0; d < DIM; d++)
            v[d] = gauss(&r);
        int n = rec_space_topk(s, REC_KIND_ITEM, v, 1, NULL, 0, 30, a);
        int ne = exact(s, v, NULL, 0, 30, e);
        assert_int_equal(n, ne);
        assert_memory_equal(a, e, (size_t)n * sizeof *a);
    }
    rec_space_free(s);
}

/* Calls scans until the training under way is installed (a generous bound
 * on the number of calls, not on time). */
static void wait_installed(rec_space *s, uint32_t trainings) {
    const struct timespec ms = {0, 1000000};
    rec_hit a[10];
    rec_ivf_stats st;
    for (int i = 0; i < 120000; i++) {
        (void)rec_space_topk(s, REC_KIND_ITEM, dirs[0], 1, NULL, 0, 10, a);
        stats(s, &st);
        if (st.trainings >= trainings && !st.training)
            return;
        nanosleep(&ms, NULL);
    }
    fail_msg("training never installed");
}

/* Training in the background: installed at a later scan; rows put and
 * removed while it ran are where they belong once it is. Growth to twice
 * the rows trains again, with more lists. */
static void test_background_and_retrain(void **state) {
    rec_space *s = planted(1);
    rec_hit a[30];
    (void)rec_space_topk(s, REC_KIND_ITEM, dirs[0], 1, NULL, 0, 30, a);
    rec_ivf_stats st;
    stats(s, &st);
    assert_int_equal(st.training, 1);
    /* Changes while it runs (or after; either way they must show). */
    assert_int_equal(rec_space_set(s, REC_KIND_ITEM, ROWS + 1, dirs[11], REC_SET_DIRTY), 0);
    assert_int_equal(rec_space_set(s, REC_KIND_ITEM, 11, dirs[12], REC_SET_DIRTY), 0);
    rec_space_remove(s, REC_KIND_ITEM, 31);
    wait_installed(s, 1);
    expect_all_indexed(s);
    int n = rec_space_topk(s, REC_KIND_ITEM, dirs[11], 1, NULL, 0, 30, a);
    assert_int_equal(a[0].idx, ROWS + 1);
    assert_false(has(a, n, 11));
    assert_false(has(a, n, 31));
    n = rec_space_topk(s, REC_KIND_ITEM, dirs[12], 1, NULL, 0, 30, a);
    assert_int_equal(a[0].idx, 11);

    /* Twice the rows: a second training, sqrt of the new count lists. */
    rec_rng r;
    rec_rng_seed(&r, 47);
    float v[DIM];
    for (uint32_t i = ROWS + 2; i < 2 * ROWS + 10; i++) {
        planted_row(&r, i % CLUSTERS, 0.05f, v);
        assert_int_equal(rec_space_set(s, REC_KIND_ITEM, i, v, REC_SET_CLEAN), 0);
    }
    expect_all_indexed(s); /* new rows placed at once meanwhile */
    wait_installed(s, 2);
    stats(s, &st);
    assert_int_equal(st.trainings, 2);
    assert_int_equal(st.lists, (uint32_t)lround(sqrt((double)st.trained_on)));
    assert_true(st.trained_on > ROWS * 2 - 20);
    expect_all_indexed(s);
    n = rec_space_topk(s, REC_KIND_ITEM, dirs[11], 1, NULL, 0, 30, a);
    assert_int_equal(a[0].idx, ROWS + 1);
    for (int i = 0; i < n; i++)
        assert_true(a[i].idx % CLUSTERS == 11 || a[i].idx == ROWS + 1);
    rec_space_free(s);
}

/* Freed while a training runs: it is stopped and waited for (sanitisers
 * see no leak and no use after free). */
static void test_free_while_training(void **state) {
    rec_space *s = planted(1);
    rec_hit a[10];
    (void)rec_space_topk(s, REC_KIND_ITEM, dirs[0], 1, NULL, 0, 10, a);
    rec_ivf_stats st;
    stats(s, &st);
    assert_int_equal(st.training, 1);
    rec_space_free(s);
}

/* Synchronous training (replays): the first large scan trains and
 * installs the index before it answers, through the index. */
static void test_sync(void **state) {
    rec_space_ann_sync(1);
    rec_space *s = planted(1);
    rec_hit a[30], e[30];
    int n = rec_space_topk(s, REC_KIND_ITEM, dirs[8], 1, NULL, 0, 30, a);
    rec_ivf_stats st;
    stats(s, &st);
    assert_int_equal(st.training, 0);
    assert_int_equal(st.trainings, 1);
    expect_all_indexed(s);
    int ne = exact(s, dirs[8], NULL, 0, 30, e);
    assert_int_equal(n, ne);
    assert_true(recall(a, n, e, ne) >= 0.95);
    /* Growth trains again at the next scan, at once. */
    rec_rng r;
    rec_rng_seed(&r, 53);
    float v[DIM];
    for (uint32_t i = ROWS; i < 2 * ROWS + 1; i++) {
        planted_row(&r, i % CLUSTERS, 0.05f, v);
        assert_int_equal(rec_space_set(s, REC_KIND_ITEM, i, v, REC_SET_CLEAN), 0);
    }
    (void)rec_space_topk(s, REC_KIND_ITEM, dirs[8], 1, NULL, 0, 30, a);
    stats(s, &st);
    assert_int_equal(st.trainings, 2);
    assert_int_equal(st.trained_on, 2 * ROWS + 1);
    rec_space_ann_sync(0);
    rec_space_free(s);
}

/* A matrix larger than a copy step: the training's copy is taken over
 * several scans (which answer exactly meanwhile), the lists are built on
 * the training's thread, and rows set, removed or changed in place while
 * the copy or the training ran, on either side of the copy's progress,
 * are where they belong once it is installed. */
static void test_copy_in_steps(void **state) {
    (void)state;
    enum { BIG = 20000, STEP = 8192 };
    rec_space_free(planted(1)); /* the cluster directions */
    rec_space *s = NULL;
    assert_int_equal(rec_space_new(&s, "big", 4, DIM), 0);
    s->ann_min_rows = 1;
    s->copy_step = STEP; /* the logic of 65,536 rows a step, at a test's size */
    rec_rng r;
    rec_rng_seed(&r, 61);
    float v[DIM];
    for (uint32_t i = 0; i < BIG; i++) {
        planted_row(&r, i % CLUSTERS, 0.05f, v);
        assert_int_equal(rec_space_set(s, REC_KIND_ITEM, i, v, REC_SET_CLEAN), 0);
    }
    rec_hit a[30], e[30];
    int n = rec_space_topk(s, REC_KIND_ITEM, dirs[3], 1, NULL, 0, 30, a);
    int ne = exact(s, dirs[3], NULL, 0, 30, e);
    assert_int_equal(n, ne); /* not ready: the exact scan's answer */
    for (int i = 0; i < n; i++)
        assert_int_equal(a[i].idx, e[i].idx);
    rec_ivf_stats st;
    stats(s, &st);
    assert_int_equal(st.training, 1);
    assert_int_equal(st.lists, 0);
    assert_int_equal(st.copy_left, BIG - STEP); /* one step a scan */
    /* changes behind and ahead of the copy's progress */
    for (int d = 0; d < DIM; d++)
        v[d] = 3.0f * dirs[11][d];
    assert_int_equal(rec_space_set(s, REC_KIND_ITEM, 100, v, REC_SET_DIRTY), 0);
    for (int d = 0; d < DIM; d++)
        v[d] = 3.0f * dirs[12][d];
    assert_int_equal(rec_space_set(s, REC_KIND_ITEM, 18500, v, REC_SET_DIRTY), 0);
    assert_int_equal(rec_space_set(s, REC_KIND_ITEM, BIG + 5, dirs[14], REC_SET_DIRTY), 0);
    rec_space_remove(s, REC_KIND_ITEM, 31);
    rec_space_remove(s, REC_KIND_ITEM, 17031);
    float *row = rec_space_row(s, REC_KIND_ITEM, 5);
    assert_non_null(row);
    for (int d = 0; d < DIM; d++)
        row[d] = 3.0f * dirs[13][d];
    rec_space_touch(s, REC_KIND_ITEM, 5);
    wait_installed(s, 1);
    expect_all_indexed(s);
    n = rec_space_topk(s, REC_KIND_ITEM, dirs[11], 1, NULL, 0, 30, a);
    assert_int_equal(a[0].idx, 100);
    n = rec_space_topk(s, REC_KIND_ITEM, dirs[12], 1, NULL, 0, 30, a);
    assert_int_equal(a[0].idx, 18500);
    n = rec_space_topk(s, REC_KIND_ITEM, dirs[13], 1, NULL, 0, 30, a);
    assert_int_equal(a[0].idx, 5);
    n = rec_space_topk(s, REC_KIND_ITEM, dirs[14], 1, NULL, 0, 30, a);
    assert_int_equal(a[0].idx, BIG + 5);
    n = rec_space_topk(s, REC_KIND_ITEM, dirs[31 % CLUSTERS], 1, NULL, 0, 30, a);
    assert_false(has(a, n, 31));
    assert_false(has(a, n, 17031));
    /* through the index, the exact scan's scores */
    n = rec_space_topk(s, REC_KIND_ITEM, dirs[7], 1, NULL, 0, 30, a);
    ne = exact(s, dirs[7], NULL, 0, 30, e);
    assert_true(recall(a, n, e, ne) >= 0.95);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < ne; k++)
            if (a[i].idx == e[k].idx)
                assert_memory_equal(&a[i].score, &e[k].score, sizeof(float));
    rec_space_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_and_recall),
        cmocka_unit_test(test_put_change_touch_remove),
        cmocka_unit_test(test_filters),
        cmocka_unit_test(test_when_exact),
        cmocka_unit_test(test_background_and_retrain),
        cmocka_unit_test(test_free_while_training),
        cmocka_unit_test(test_sync),
        cmocka_unit_test(test_copy_in_steps),
        cmocka_unit_test(test_random_rows_scan_exactly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
