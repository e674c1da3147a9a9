/* test_ease.c - EASE: the blocked inverse against hand-computed and
 * random cases (sizes that cross block edges), refusal of matrices that
 * are not positive definite, the closed-form weights on a planted
 * pattern, and the engine path (snapshot, train, install, top-k that
 * reads the live history and honours the skip map).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ease.h"
#include "err.h"
#include "learn.h"

static void test_invert_2x2(void **state) {
    (void)state;
    double A[4] = {4, 1, 1, 3};
    assert_int_equal(rec_ease_invert(A, 2), 0);
    /* 1/11 [[3, -1], [-1, 4]] */
    assert_true(fabs(A[0] - 3.0 / 11) < 1e-12 && fabs(A[1] + 1.0 / 11) < 1e-12);
    assert_true(fabs(A[2] + 1.0 / 11) < 1e-12 && fabs(A[3] - 4.0 / 11) < 1e-12);
}

/* A random symmetric, diagonally dominant matrix of size n. */
static void spd(double *A, uint32_t n, unsigned seed) {
    srand(seed);
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t j = 0; j <= i; j++) {
            double v = (rand() % 4 == 0) ? (double)(rand() % 7) - 3.0 : 0.0;
            A[(size_t)i * n + j] = A[(size_t)j * n + i] = v;
        }
    for (uint32_t i = 0; i < n; i++)
        A[(size_t)i * n + i] += 4.0 * n;
}

static void test_invert_random_sizes(void **state) {
    (void)state;
    const uint32_t sizes[] = {1, 5, 63, 64, 65, 150};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        uint32_t n = sizes[t];
        double *A = malloc((size_t)n * n * sizeof *A), *M = malloc((size_t)n * n * sizeof *M);
        assert_non_null(A);
        assert_non_null(M);
        spd(A, n, 7 + n);
        memcpy(M, A, (size_t)n * n * sizeof *A);
        assert_int_equal(rec_ease_invert(A, n), 0);
        double worst = 0;
        for (uint32_t i = 0; i < n; i++)
            for (uint32_t j = 0; j < n; j++) {
                double s = 0;
                for (uint32_t k = 0; k < n; k++)
                    s += M[(size_t)i * n + k] * A[(size_t)k * n + j];
                double e = fabs(s - (i == j ? 1.0 : 0.0));
                if (e > worst)
                    worst = e;
            }
        assert_true(worst < 1e-10);
        free(A);
        free(M);
    }
}

static void test_not_positive_definite(void **state) {
    (void)state;
    double A[4] = {1, 2, 2, 1}; /* eigenvalues 3 and -1 */
    assert_int_equal(rec_ease_invert(A, 2), REC_ERANGE);
    double Z[1] = {0};
    assert_int_equal(rec_ease_invert(Z, 1), REC_ERANGE);
    assert_int_equal(rec_ease_invert(NULL, 3), REC_EINVAL);
}

/* Items come in pairs (2p, 2p+1): every user who has one has the other. */
static void test_fit_planted_pairs(void **state) {
    (void)state;
    enum { N = 8, U = 40 };
    uint32_t ptr[U + 1], idx[U * 4];
    uint32_t k = 0;
    for (uint32_t u = 0; u < U; u++) {
        ptr[u] = k;
        uint32_t p1 = u % 4, p2 = (u / 4 + 1 + p1) % 4;
        idx[k++] = 2 * p1;
        idx[k++] = 2 * p1 + 1;
        idx[k++] = 2 * p2;
        idx[k++] = 2 * p2 + 1;
    }
    ptr[U] = k;
    float B[N * N];
    assert_int_equal(rec_ease_fit(ptr, idx, U, N, 10.0, B), 0);
    for (uint32_t i = 0; i < N; i++) {
        assert_true(B[i * N + i] == 0.0f);
        uint32_t best = 0;
        for (uint32_t j = 1; j < N; j++)
            if (B[i * N + j] > B[i * N + best])
                best = j;
        assert_int_equal(best, i ^ 1u); /* the partner */
    }
    assert_int_equal(rec_ease_fit(ptr, idx, U, N, 0.0, B), REC_EINVAL);
    idx[0] = N; /* out of range */
    assert_int_equal(rec_ease_fit(ptr, idx, U, N, 10.0, B), REC_EINVAL);
}

static char tmpdir[] = "/tmp/recd-test-ease-XXXXXX";

static void event(rec_engine *e, int user, int item) {
    char uk[16], ik[16];
    int ul = rec_id_int(uk, user), il = rec_id_int(ik, item);
    rec_event ev = {.user = uk, .ulen = (size_t)ul, .item = ik, .ilen = (size_t)il,
                    .type = "click", .tlen = 5, .ts = 1000.0 + user * 10 + item};
    assert_int_equal(rec_engine_event(e, &ev, NULL), 0);
}

static uint32_t idx_of(rec_engine *e, rec_kind k, int id) {
    char key[16];
    int kl = rec_id_int(key, id);
    return rec_engine_lookup(e, k, key, (size_t)kl);
}

static void test_engine_topk(void **state) {
    (void)state;
    rec_engine_opts eo;
    rec_engine_opts_default(&eo);
    eo.store.no_sync = 1;
    rec_engine *e;
    char err[256];
    assert_int_equal(rec_engine_open(&e, tmpdir, &eo, err, sizeof err), 0);
    /* 30 users; items 10+p and 20+p always together, plus a rare item 99 */
    for (int u = 1; u <= 30; u++) {
        int p = u % 5, q = (u / 5) % 5;
        event(e, u, 10 + p);
        event(e, u, 20 + p);
        if (q != p) {
            event(e, u, 10 + q);
            event(e, u, 20 + q);
        }
    }
    event(e, 1, 99);
    rec_hit out[10];
    assert_int_equal(rec_learn_ease_topk(e, "ease", 1, NULL, 0, 5, out), REC_ENOTFOUND);
    rec_learn_ease_opts o;
    rec_learn_ease_opts_default(&o);
    o.lambda = 5.0f;
    o.max_items = 10; /* item 99 (one user) is left out */
    rec_learn_ease_job *j;
    assert_int_equal(rec_learn_ease_job_new(e, &o, &j), 0);
    assert_int_equal(rec_learn_ease_job_run(j), 0);
    assert_int_equal(rec_learn_ease_job_items(j), 10);
    assert_int_equal(rec_learn_ease_job_install(e, j), 0);
    rec_learn_ease_job_free(j);

    /* a new user who clicked 13 now: 23 comes first, at once */
    event(e, 500, 13);
    uint32_t u = idx_of(e, REC_KIND_USER, 500);
    int n = rec_learn_ease_topk(e, "ease", u, NULL, 0, 3, out);
    assert_true(n == 3);
    assert_int_equal(out[0].idx, idx_of(e, REC_KIND_ITEM, 23));
    /* skipped items are left out; 99 is not modelled and never returned */
    size_t words = (rec_engine_bound(e, REC_KIND_ITEM) + 63) / 64;
    uint64_t *skip = calloc(words, sizeof *skip);
    uint32_t i23 = idx_of(e, REC_KIND_ITEM, 23);
    skip[i23 >> 6] |= 1ull << (i23 & 63);
    n = rec_learn_ease_topk(e, "ease", u, skip, words, 10, out);
    assert_true(n > 0);
    for (int i = 0; i < n; i++) {
        assert_int_not_equal(out[i].idx, i23);
        assert_int_not_equal(out[i].idx, idx_of(e, REC_KIND_ITEM, 99));
    }
    free(skip);
    /* a user with nothing the model covers gets no guess */
    event(e, 501, 99);
    assert_int_equal(rec_learn_ease_topk(e, "ease", idx_of(e, REC_KIND_USER, 501), NULL, 0, 3,
                                         out),
                     0);
    assert_int_equal(rec_learn_ease_topk(e, "ease", REC_IDX_NONE, NULL, 0, 3, out), 0);
    rec_learn_ease_opts bad = o;
    bad.lambda = -1.0f;
    assert_int_equal(rec_learn_ease_job_new(e, &bad, &j), REC_EINVAL);
    rec_engine_free(e);
}

static int setup(void **state) {
    (void)state;
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invert_2x2),
        cmocka_unit_test(test_invert_random_sizes),
        cmocka_unit_test(test_not_positive_definite),
        cmocka_unit_test(test_fit_planted_pairs),
        cmocka_unit_test(test_engine_topk),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
