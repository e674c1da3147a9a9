/* test_ials.c - implicit ALS: CSR build, Cholesky, Gram, training quality,
 * monotone loss, fold-in, determinism, argument checks.
 *
 * The quality test is a planted two-community dataset (users 0..49 click
 * only items 0..19, users 50..99 only items 20..39). The loss is recomputed
 * here by brute force over every (user, item) pair in double, independently
 * of rec_ials_loss. All data comes from rec_rng with fixed seeds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "ials.h"
#include "counter.h"
#include "mf.h"
#include "rng.h"
#include "vec.h"

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            print_error(__VA_ARGS__);                                         \
            print_error("\n  failed: %s (%s:%d)\n", #cond, __FILE__,          \
                        __LINE__);                                            \
            fail();                                                           \
        }                                                                     \
    } while (0)

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size);
    assert_non_null(p);
    return p;
}

/* ---- fixtures -------------------------------------------------------- */

#define C_USERS 100
#define C_ITEMS 40
#define C_PER_USER 8

/* Two communities: user u picks C_PER_USER distinct items from the 20 of
 * its half (partial Fisher-Yates). */
static void community_data(rec_ials_data *d, uint64_t seed) {
    rec_ials_triple t[C_USERS * C_PER_USER];
    rec_rng r;
    rec_rng_seed(&r, seed);
    size_t n = 0;
    for (uint32_t u = 0; u < C_USERS; u++) {
        uint32_t pool[20];
        uint32_t base = u < C_USERS / 2 ? 0 : 20;
        for (uint32_t k = 0; k < 20; k++)
            pool[k] = base + k;
        for (uint32_t k = 0; k < C_PER_USER; k++) {
            uint32_t j = k + rec_rng_below(&r, 20 - k);
            uint32_t tmp = pool[k];
            pool[k] = pool[j];
            pool[j] = tmp;
            t[n].user = u;
            t[n].item = pool[k];
            t[n].weight = 1.0f;
            n++;
        }
    }
    assert_int_equal(rec_ials_data_build(t, n, 0, 0, 10.0f, d), 0);
    assert_int_equal(d->nusers, C_USERS);
    assert_int_equal(d->nitems, C_ITEMS);
    assert_int_equal(d->user_ptr[C_USERS], C_USERS * C_PER_USER);
}

static int seen(const rec_ials_data *d, uint32_t u, uint32_t i) {
    for (uint32_t k = d->user_ptr[u]; k < d->user_ptr[u + 1]; k++)
        if (d->user_items[k] == i)
            return 1;
    return 0;
}

/* L(U, V) over every pair, straight from the definition. */
static double brute_loss(const rec_ials_data *d, uint32_t f, float reg,
                         const float *U, const float *V) {
    double sum = 0.0;
    for (uint32_t u = 0; u < d->nusers; u++)
        for (uint32_t i = 0; i < d->nitems; i++) {
            double s = 0.0;
            for (uint32_t k = 0; k < f; k++)
                s += (double)U[u * f + k] * (double)V[i * f + k];
            double c = 1.0, p = 0.0;
            for (uint32_t k = d->user_ptr[u]; k < d->user_ptr[u + 1]; k++)
                if (d->user_items[k] == i) {
                    c = 1.0 + (double)d->user_conf[k];
                    p = 1.0;
                }
            sum += c * (p - s) * (p - s);
        }
    double norms = 0.0;
    for (size_t k = 0; k < (size_t)d->nusers * f; k++)
        norms += (double)U[k] * (double)U[k];
    for (size_t k = 0; k < (size_t)d->nitems * f; k++)
        norms += (double)V[k] * (double)V[k];
    return sum + (double)reg * norms;
}

/* ---- data ------------------------------------------------------------ */

static void test_data_build_small(void **state) {
    (void)state;
    const rec_ials_triple t[] = {
        {0, 2, 1.0f},  {0, 1, 2.0f}, {1, 0, 1.0f},  {0, 2, 0.5f},
        {2, 1, -1.0f}, {1, 1, 0.0f}, {1, 0, NAN},   {3, 3, 1.0f},
        {1, 0, 0.25f}, {2, 1, -5.0f},
    };
    rec_ials_data d;
    assert_int_equal(rec_ials_data_build(t, sizeof t / sizeof t[0], 0, 6,
                                         2.0f, &d),
                     0);
    assert_non_null(d.block);
    assert_int_equal(d.nusers, 4); /* user 3 is the highest kept */
    assert_int_equal(d.nitems, 6); /* the hint is larger than the data */

    const uint32_t uptr[] = {0, 2, 3, 3, 4};
    const uint32_t uitems[] = {1, 2, 0, 3};
    const float uconf[] = {4.0f, 3.0f, 2.5f, 2.0f};
    assert_memory_equal(d.user_ptr, uptr, sizeof uptr);
    assert_memory_equal(d.user_items, uitems, sizeof uitems);
    assert_memory_equal(d.user_conf, uconf, sizeof uconf);

    const uint32_t iptr[] = {0, 1, 2, 3, 4, 4, 4};
    const uint32_t iusers[] = {1, 0, 0, 3};
    const float iconf[] = {2.5f, 4.0f, 3.0f, 2.0f};
    assert_memory_equal(d.item_ptr, iptr, sizeof iptr);
    assert_memory_equal(d.item_users, iusers, sizeof iusers);
    assert_memory_equal(d.item_conf, iconf, sizeof iconf);
    assert_int_equal(rec_ials_data_check(&d), 0);

    rec_ials_data_free(&d);
    assert_null(d.block);
    assert_int_equal(d.nusers, 0);
    rec_ials_data_free(&d); /* twice is harmless */
    rec_ials_data_free(NULL);
}

/* Random triples with many duplicates against a dense reference. */
static void test_data_build_random(void **state) {
    (void)state;
    enum { NU = 37, NI = 53, N = 3000 };
    rec_ials_triple *t = xcalloc(N, sizeof *t);
    double *dense = xcalloc((size_t)NU * NI, sizeof *dense);
    rec_rng r;
    rec_rng_seed(&r, 42);
    for (size_t k = 0; k < N; k++) {
        t[k].user = rec_rng_below(&r, NU);
        t[k].item = rec_rng_below(&r, NI);
        t[k].weight = (float)rec_rng_below(&r, 7) - 2.0f; /* -2..4 */
        if (t[k].weight > 0.0f)
            dense[t[k].user * NI + t[k].item] += (double)t[k].weight;
    }
    rec_ials_data d;
    assert_int_equal(rec_ials_data_build(t, N, NU + 3, 0, 0.5f, &d), 0);
    assert_int_equal(d.nusers, NU + 3);
    assert_int_equal(d.nitems, NI);
    assert_int_equal(rec_ials_data_check(&d), 0);

    size_t nnz = 0;
    for (size_t k = 0; k < (size_t)NU * NI; k++)
        nnz += dense[k] > 0.0;
    assert_int_equal(d.user_ptr[d.nusers], nnz);
    assert_int_equal(d.item_ptr[d.nitems], nnz);
    for (uint32_t u = NU; u < NU + 3; u++)
        assert_int_equal(d.user_ptr[u + 1], d.user_ptr[u]);

    for (uint32_t u = 0; u < NU; u++)
        for (uint32_t k = d.user_ptr[u]; k < d.user_ptr[u + 1]; k++) {
            uint32_t i = d.user_items[k];
            CHECK(k == d.user_ptr[u] || d.user_items[k - 1] < i,
                  "user %u row not strictly increasing", u);
            CHECK(d.user_conf[k] == (float)(0.5 * dense[u * NI + i]),
                  "conf of (%u,%u)", u, i);
        }
    for (uint32_t i = 0; i < NI; i++)
        for (uint32_t k = d.item_ptr[i]; k < d.item_ptr[i + 1]; k++) {
            uint32_t u = d.item_users[k];
            CHECK(k == d.item_ptr[i] || d.item_users[k - 1] < u,
                  "item %u row not strictly increasing", i);
            CHECK(dense[u * NI + i] > 0.0 &&
                      d.item_conf[k] == (float)(0.5 * dense[u * NI + i]),
                  "transposed conf of (%u,%u)", u, i);
        }
    rec_ials_data_free(&d);
    free(dense);
    free(t);
}

static void test_data_build_errors(void **state) {
    (void)state;
    rec_ials_data d;
    rec_ials_triple t[2] = {{0, 0, 1.0f}, {1, 1, 2.0f}};
    assert_int_equal(rec_ials_data_build(t, 2, 0, 0, 1.0f, NULL),
                     REC_EINVAL);
    assert_int_equal(rec_ials_data_build(NULL, 2, 0, 0, 1.0f, &d),
                     REC_EINVAL);
    assert_int_equal(rec_ials_data_build(t, 2, 0, 0, 0.0f, &d), REC_EINVAL);
    assert_int_equal(rec_ials_data_build(t, 2, 0, 0, -1.0f, &d), REC_EINVAL);
    assert_int_equal(rec_ials_data_build(t, 2, 0, 0, NAN, &d), REC_EINVAL);
    assert_int_equal(rec_ials_data_build(t, 2, 0, 0, INFINITY, &d),
                     REC_EINVAL);
    assert_null(d.block);
    t[1].weight = INFINITY;
    assert_int_equal(rec_ials_data_build(t, 2, 0, 0, 1.0f, &d),
                     REC_ENONFINITE);
    /* Finite weights whose confidence overflows. */
    t[1].weight = 1e30f;
    assert_int_equal(rec_ials_data_build(t, 2, 0, 0, 1e30f, &d),
                     REC_ENONFINITE);
    assert_null(d.block);
    /* Nothing kept: only the hinted (empty) rows. */
    t[0].weight = -1.0f;
    t[1].weight = 0.0f;
    assert_int_equal(rec_ials_data_build(t, 2, 3, 0, 1.0f, &d), 0);
    assert_int_equal(d.nusers, 3);
    assert_int_equal(d.nitems, 0);
    assert_int_equal(d.user_ptr[3], 0);
    assert_int_equal(d.item_ptr[0], 0);
    rec_ials_data_free(&d);
    assert_int_equal(rec_ials_data_build(NULL, 0, 0, 0, 1.0f, &d), 0);
    assert_int_equal(d.nusers, 0);
    assert_int_equal(rec_ials_data_check(&d), 0);
    rec_ials_data_free(&d);
}

/* ---- linear algebra -------------------------------------------------- */

static void test_cholesky_known(void **state) {
    (void)state;
    /* A = L L^T with L = [[2,0,0],[6,1,0],[-8,5,3]]; x = (1, 2, 3). The
     * upper triangle holds NaN: it must never be read. */
    float A[9] = {4, NAN, NAN, 12, 37, NAN, -16, -43, 98};
    float b[3] = {-20, -43, 192};
    assert_int_equal(rec_ials_cholesky_solve(A, b, 3), 0);
    const float L[9] = {2, 0, 0, 6, 1, 0, -8, 5, 3};
    for (int r = 0; r < 3; r++)
        for (int c = 0; c <= r; c++)
            assert_float_equal(A[r * 3 + c], L[r * 3 + c], 1e-5);
    assert_float_equal(b[0], 1.0f, 1e-5);
    assert_float_equal(b[1], 2.0f, 1e-5);
    assert_float_equal(b[2], 3.0f, 1e-5);

    /* Indefinite and singular systems are refused. */
    float B[4] = {1, 2, 2, 1};
    float y[2] = {1, 1};
    assert_int_equal(rec_ials_cholesky_solve(B, y, 2), REC_ERANGE);
    float Z[4] = {0, 0, 0, 0};
    assert_int_equal(rec_ials_cholesky_solve(Z, y, 2), REC_ERANGE);
    assert_int_equal(rec_ials_cholesky_solve(Z, y, 0), 0);
}

/* A = M M^T + n I at n = 1..130 against a known x, residual in double. */
static void test_cholesky_random(void **state) {
    (void)state;
    rec_rng r;
    rec_rng_seed(&r, 7);
    const uint32_t sizes[] = {1, 2, 5, 16, 17, 64, 130};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        uint32_t n = sizes[s];
        double *M = xcalloc((size_t)n * n, sizeof *M);
        double *Ad = xcalloc((size_t)n * n, sizeof *Ad);
        float *A = xcalloc((size_t)n * n, sizeof *A);
        double *x = xcalloc(n, sizeof *x);
        float *b = xcalloc(n, sizeof *b);
        for (size_t k = 0; k < (size_t)n * n; k++)
            M[k] = rec_rng_unit(&r) * 2.0 - 1.0;
        for (uint32_t i = 0; i < n; i++)
            x[i] = rec_rng_unit(&r) * 2.0 - 1.0;
        for (uint32_t i = 0; i < n; i++)
            for (uint32_t j = 0; j < n; j++) {
                double a = i == j ? (double)n : 0.0;
                for (uint32_t k = 0; k < n; k++)
                    a += M[i * n + k] * M[j * n + k];
                Ad[i * n + j] = a;
                A[i * n + j] = (float)a;
            }
        for (uint32_t i = 0; i < n; i++) {
            double a = 0.0;
            for (uint32_t j = 0; j < n; j++)
                a += Ad[i * n + j] * x[j];
            b[i] = (float)a;
        }
        assert_int_equal(rec_ials_cholesky_solve(A, b, n), 0);
        double err = 0.0, norm = 0.0;
        for (uint32_t i = 0; i < n; i++) {
            err += ((double)b[i] - x[i]) * ((double)b[i] - x[i]);
            norm += x[i] * x[i];
        }
        CHECK(sqrt(err / norm) < 1e-4, "n=%u rel err %g", n,
              sqrt(err / norm));
        free(M);
        free(Ad);
        free(A);
        free(x);
        free(b);
    }
}

static void test_gram(void **state) {
    (void)state;
    enum { N = 201, F = 19 };
    float *V = xcalloc((size_t)N * F, sizeof *V);
    float G[F * F];
    rec_rng r;
    rec_rng_seed(&r, 3);
    for (size_t k = 0; k < (size_t)N * F; k++)
        V[k] = (float)(rec_rng_unit(&r) * 2.0 - 1.0);
    rec_ials_gram(V, N, F, G);
    for (int a = 0; a < F; a++)
        for (int c = 0; c < F; c++) {
            double s = 0.0;
            for (int i = 0; i < N; i++)
                s += (double)V[i * F + a] * (double)V[i * F + c];
            CHECK(fabs((double)G[a * F + c] - s) < 1e-4 * (1.0 + fabs(s)),
                  "G[%d][%d] = %g, want %g", a, c, (double)G[a * F + c], s);
            CHECK(G[a * F + c] == G[c * F + a], "not symmetric");
        }
    rec_ials_gram(V, 0, F, G); /* no rows: zero */
    for (int k = 0; k < F * F; k++)
        assert_true(G[k] == 0.0f);
    free(V);
}

/* ---- training -------------------------------------------------------- */

static void test_train_communities(void **state) {
    (void)state;
    enum { F = 8 };
    rec_ials_data d;
    community_data(&d, 1234);
    float *U = xcalloc((size_t)C_USERS * F, sizeof *U);
    float *V = xcalloc((size_t)C_ITEMS * F, sizeof *V);
    assert_int_equal(rec_ials_train(&d, F, 0.1f, 10, 99, U, V, 1), 0);

    int good = 0;
    for (uint32_t u = 0; u < C_USERS; u++) {
        uint32_t best = UINT32_MAX;
        float best_s = -INFINITY;
        for (uint32_t i = 0; i < C_ITEMS; i++) {
            if (seen(&d, u, i))
                continue;
            float s = rec_vec_dot(U + u * F, V + i * F, F);
            if (s > best_s) {
                best_s = s;
                best = i;
            }
        }
        assert_true(best != UINT32_MAX);
        good += (best < 20) == (u < C_USERS / 2);
    }
    CHECK(good >= 95, "only %d of %d users get their community", good,
          C_USERS);

    /* Observed pairs score near 1, and above the user's unseen items on
     * average. */
    double obs = 0.0;
    for (uint32_t u = 0; u < C_USERS; u++)
        for (uint32_t k = d.user_ptr[u]; k < d.user_ptr[u + 1]; k++)
            obs += (double)rec_vec_dot(U + u * F,
                                       V + d.user_items[k] * F, F);
    obs /= C_USERS * C_PER_USER;
    CHECK(obs > 0.5 && obs < 1.2, "mean observed score %g", obs);
    free(U);
    free(V);
    rec_ials_data_free(&d);
}

static void test_loss_monotone(void **state) {
    (void)state;
    enum { F = 8, ITERS = 10 };
    const float reg = 0.1f;
    rec_ials_data d;
    community_data(&d, 77);
    float *U = xcalloc((size_t)C_USERS * F, sizeof *U);
    float *V = xcalloc((size_t)C_ITEMS * F, sizeof *V);
    double loss[ITERS + 1];

    /* iters = 0: initialisation only. */
    assert_int_equal(rec_ials_train(&d, F, reg, 0, 5, U, V, 1), 0);
    for (int it = 0; it <= ITERS; it++) {
        if (it > 0)
            assert_int_equal(rec_ials_train(&d, F, reg, 1, 0, U, V, 0), 0);
        loss[it] = brute_loss(&d, F, reg, U, V);
        double fast;
        assert_int_equal(rec_ials_loss(&d, F, reg, U, V, &fast), 0);
        CHECK(fabs(fast - loss[it]) <= 1e-4 * loss[it],
              "rec_ials_loss %.9g vs brute force %.9g", fast, loss[it]);
        if (it > 0)
            CHECK(loss[it] <= loss[it - 1] * (1.0 + 1e-6),
                  "loss rose at iteration %d: %.9g -> %.9g", it,
                  loss[it - 1], loss[it]);
    }
    /* Real progress, not just no regress: the untrained model scores
     * ~0 everywhere, so its loss is about sum of c over observed pairs. */
    CHECK(loss[ITERS] < 0.5 * loss[0], "loss %.6g -> %.6g", loss[0],
          loss[ITERS]);
    CHECK(loss[1] > loss[ITERS], "no progress after the first iteration");
    free(U);
    free(V);
    rec_ials_data_free(&d);
}

static void test_fold_in(void **state) {
    (void)state;
    enum { F = 8 };
    const float reg = 0.1f;
    rec_ials_data d;
    community_data(&d, 555);
    float *U = xcalloc((size_t)C_USERS * F, sizeof *U);
    float *U2 = xcalloc((size_t)C_USERS * F, sizeof *U2);
    float *V = xcalloc((size_t)C_ITEMS * F, sizeof *V);
    float G[F * F], scratch[REC_IALS_SCRATCH_FLOATS(F)], x[F];
    assert_int_equal(rec_ials_train(&d, F, reg, 30, 11, U, V, 1), 0);
    rec_ials_gram(V, C_ITEMS, F, G);

    /* Against the final V, fold-in is exactly one more user half-step. */
    assert_int_equal(rec_ials_solve_rows(V, G, NULL, F, reg, d.user_ptr,
                                         d.user_items, d.user_conf, 0,
                                         C_USERS, U2, scratch),
                     0);
    double worst = 0.0;
    for (uint32_t u = 0; u < C_USERS; u++) {
        uint32_t s = d.user_ptr[u], n = d.user_ptr[u + 1] - s;
        assert_int_equal(rec_ials_fold_in(V, G, C_ITEMS, F, reg,
                                          d.user_items + s, d.user_conf + s,
                                          n, x),
                         0);
        assert_memory_equal(x, U2 + u * F, sizeof x);
        /* ... and after convergence that is (nearly) the trained row. */
        double e = 0.0, nn = 0.0;
        for (int k = 0; k < F; k++) {
            double diff = (double)x[k] - (double)U[u * F + k];
            e += diff * diff;
            nn += (double)U[u * F + k] * (double)U[u * F + k];
        }
        if (sqrt(e / nn) > worst)
            worst = sqrt(e / nn);
    }
    CHECK(worst < 0.05, "fold-in differs from the trained user by %g",
          worst);

    /* Bad inputs. */
    uint32_t items[2] = {0, C_ITEMS};
    float conf[2] = {1.0f, 1.0f};
    assert_int_equal(rec_ials_fold_in(V, G, C_ITEMS, F, reg, items, conf, 2,
                                      x),
                     REC_ERANGE);
    items[1] = 1;
    conf[1] = -1.0f;
    assert_int_equal(rec_ials_fold_in(V, G, C_ITEMS, F, reg, items, conf, 2,
                                      x),
                     REC_EINVAL);
    conf[1] = NAN;
    assert_int_equal(rec_ials_fold_in(V, G, C_ITEMS, F, reg, items, conf, 2,
                                      x),
                     REC_EINVAL);
    conf[1] = 0.0f; /* observed with no extra confidence is fine */
    assert_int_equal(rec_ials_fold_in(V, G, C_ITEMS, F, reg, items, conf, 2,
                                      x),
                     0);
    assert_int_equal(rec_ials_fold_in(V, G, C_ITEMS, F, 0.0f, items, conf,
                                      2, x),
                     REC_EINVAL);
    assert_int_equal(rec_ials_fold_in(V, G, C_ITEMS, F, reg, items, conf, 2,
                                      NULL),
                     REC_EINVAL);
    free(U);
    free(U2);
    free(V);
    rec_ials_data_free(&d);
}

/* Fold-in against a double-precision reference (Gaussian elimination) at
 * counts that hit both accumulation paths (rank-1 below 8 interactions,
 * blocked from 8) and the block boundary at 64, with an odd f. */
static void test_fold_in_reference(void **state) {
    (void)state;
    enum { F = 13, NI = 300 };
    const float reg = 0.3f;
    float *V = xcalloc((size_t)NI * F, sizeof *V);
    float G[F * F], x[F];
    uint32_t items[NI];
    float conf[NI];
    rec_rng r;
    rec_rng_seed(&r, 808);
    for (size_t k = 0; k < (size_t)NI * F; k++)
        V[k] = (float)(rec_rng_unit(&r) * 2.0 - 1.0) * 0.3f;
    for (uint32_t k = 0; k < NI; k++) {
        items[k] = (k * 7u + 3u) % NI; /* distinct, shuffled */
        conf[k] = k % 5 == 0 ? 0.0f : (float)(rec_rng_unit(&r) * 20.0);
    }
    rec_ials_gram(V, NI, F, G);
    const size_t counts[] = {1, 2, 7, 8, 9, 63, 64, 65, 130, 300};
    for (size_t t = 0; t < sizeof counts / sizeof counts[0]; t++) {
        size_t n = counts[t];
        assert_int_equal(rec_ials_fold_in(V, G, NI, F, reg, items, conf, n,
                                          x),
                         0);
        /* [A | b] in double: A = VtV + sum c v v^T + reg I. */
        double M[F][F + 1];
        for (int a = 0; a < F; a++) {
            for (int c = 0; c < F; c++) {
                double s = a == c ? (double)reg : 0.0;
                for (int i = 0; i < NI; i++)
                    s += (double)V[i * F + a] * (double)V[i * F + c];
                M[a][c] = s;
            }
            M[a][F] = 0.0;
        }
        for (size_t j = 0; j < n; j++) {
            const float *v = V + items[j] * F;
            for (int a = 0; a < F; a++) {
                for (int c = 0; c < F; c++)
                    M[a][c] += (double)conf[j] * (double)v[a] * (double)v[c];
                M[a][F] += (1.0 + (double)conf[j]) * (double)v[a];
            }
        }
        for (int p = 0; p < F; p++) /* SPD: no pivoting needed */
            for (int i = p + 1; i < F; i++) {
                double m = M[i][p] / M[p][p];
                for (int c = p; c <= F; c++)
                    M[i][c] -= m * M[p][c];
            }
        double ref[F], err = 0.0, norm = 0.0;
        for (int i = F - 1; i >= 0; i--) {
            double s = M[i][F];
            for (int c = i + 1; c < F; c++)
                s -= M[i][c] * ref[c];
            ref[i] = s / M[i][i];
        }
        for (int i = 0; i < F; i++) {
            err += ((double)x[i] - ref[i]) * ((double)x[i] - ref[i]);
            norm += ref[i] * ref[i];
        }
        CHECK(sqrt(err / norm) < 1e-4, "n=%zu rel err %g", n,
              sqrt(err / norm));
    }
    free(V);
}

static void test_deterministic(void **state) {
    (void)state;
    enum { F = 16 };
    rec_ials_data d;
    community_data(&d, 9);
    size_t nu = (size_t)C_USERS * F, ni = (size_t)C_ITEMS * F;
    float *U1 = xcalloc(nu, sizeof *U1), *V1 = xcalloc(ni, sizeof *V1);
    float *U2 = xcalloc(nu, sizeof *U2), *V2 = xcalloc(ni, sizeof *V2);
    assert_int_equal(rec_ials_train(&d, F, 0.05f, 4, 2024, U1, V1, 1), 0);
    assert_int_equal(rec_ials_train(&d, F, 0.05f, 4, 2024, U2, V2, 1), 0);
    assert_memory_equal(U1, U2, nu * sizeof *U1);
    assert_memory_equal(V1, V2, ni * sizeof *V1);
    /* Another seed starts elsewhere. */
    assert_int_equal(rec_ials_train(&d, F, 0.05f, 0, 2025, U2, V2, 1), 0);
    assert_true(memcmp(V1, V2, ni * sizeof *V1) != 0);
    /* 4 iterations at once == 1 + 3 continued. */
    assert_int_equal(rec_ials_train(&d, F, 0.05f, 1, 2024, U2, V2, 1), 0);
    assert_int_equal(rec_ials_train(&d, F, 0.05f, 3, 0, U2, V2, 0), 0);
    assert_memory_equal(U1, U2, nu * sizeof *U1);
    assert_memory_equal(V1, V2, ni * sizeof *V1);
    free(U1);
    free(V1);
    free(U2);
    free(V2);
    rec_ials_data_free(&d);
}

static void test_factors_range(void **state) {
    (void)state;
    rec_ials_data d;
    community_data(&d, 3);
    float *U = xcalloc((size_t)C_USERS * 256, sizeof *U);
    float *V = xcalloc((size_t)C_ITEMS * 256, sizeof *V);
    float *G = xcalloc(256 * 256, sizeof *G);
    float x[257];
    uint32_t items[1] = {0};
    float conf[1] = {1.0f};
    double loss;
    assert_int_equal(rec_ials_train(&d, 0, 0.1f, 1, 1, U, V, 1), REC_ERANGE);
    assert_int_equal(rec_ials_train(&d, 257, 0.1f, 1, 1, U, V, 1),
                     REC_ERANGE);
    assert_int_equal(rec_ials_fold_in(V, G, C_ITEMS, 0, 0.1f, items, conf, 1,
                                      x),
                     REC_ERANGE);
    assert_int_equal(rec_ials_fold_in(V, G, C_ITEMS, 257, 0.1f, items, conf,
                                      1, x),
                     REC_ERANGE);
    assert_int_equal(rec_ials_loss(&d, 0, 0.1f, U, V, &loss), REC_ERANGE);
    assert_int_equal(rec_ials_solve_rows(V, G, NULL, 300, 0.1f, d.user_ptr,
                                         d.user_items, d.user_conf, 0, 1, U,
                                         G),
                     REC_ERANGE);
    /* Both ends of the range work. */
    assert_int_equal(rec_ials_train(&d, 1, 0.1f, 2, 1, U, V, 1), 0);
    assert_true(rec_vec_all_finite(U, C_USERS));
    assert_int_equal(rec_ials_train(&d, 256, 0.1f, 1, 1, U, V, 1), 0);
    assert_true(rec_vec_all_finite(U, (size_t)C_USERS * 256));
    assert_true(rec_vec_all_finite(V, (size_t)C_ITEMS * 256));
    rec_ials_gram(V, C_ITEMS, 256, G);
    assert_int_equal(rec_ials_fold_in(V, G, C_ITEMS, 256, 0.1f, items, conf,
                                      1, x),
                     0);
    assert_true(rec_vec_all_finite(x, 256));
    free(U);
    free(V);
    free(G);
    rec_ials_data_free(&d);
}

/* A user and an item with no interactions get exactly zero vectors. */
static void test_empty_rows(void **state) {
    (void)state;
    enum { F = 4 };
    const rec_ials_triple t[] = {
        {0, 0, 1.0f}, {0, 1, 1.0f}, {2, 1, 1.0f}, {2, 3, 2.0f}, {3, 0, 1.0f},
    };
    rec_ials_data d;
    /* User 1 and items 2, 4 are empty. */
    assert_int_equal(rec_ials_data_build(t, 5, 0, 5, 5.0f, &d), 0);
    assert_int_equal(d.nusers, 4);
    float U[4 * F], V[5 * F];
    assert_int_equal(rec_ials_train(&d, F, 0.1f, 3, 8, U, V, 1), 0);
    for (int k = 0; k < F; k++) {
        assert_true(U[1 * F + k] == 0.0f);
        assert_true(V[2 * F + k] == 0.0f);
        assert_true(V[4 * F + k] == 0.0f);
    }
    assert_true(rec_vec_norm2(U, F) > 0.0f);
    assert_true(rec_vec_norm2(V + 3 * F, F) > 0.0f);

    float G[F * F], x[F] = {1, 1, 1, 1};
    rec_ials_gram(V, 5, F, G);
    assert_int_equal(rec_ials_fold_in(V, G, 5, F, 0.1f, NULL, NULL, 0, x), 0);
    for (int k = 0; k < F; k++)
        assert_true(x[k] == 0.0f);

    /* No data at all: nothing to do, still fine. */
    rec_ials_data e;
    assert_int_equal(rec_ials_data_build(NULL, 0, 0, 0, 1.0f, &e), 0);
    assert_int_equal(rec_ials_train(&e, F, 0.1f, 2, 1, NULL, NULL, 1), 0);
    rec_ials_data_free(&e);
    rec_ials_data_free(&d);
}

static void test_train_validation(void **state) {
    (void)state;
    enum { F = 2 };
    /* Hand-built (block == NULL): 2 users, 2 items, pairs (0,1) and (1,0). */
    uint32_t uptr[] = {0, 1, 2}, uitems[] = {1, 0};
    uint32_t iptr[] = {0, 1, 2}, iusers[] = {1, 0};
    float conf[] = {3.0f, 3.0f};
    rec_ials_data d = {2, 2, uptr, uitems, conf, iptr, iusers, conf, NULL};
    float U[2 * F], V[2 * F];
    double loss;
    assert_int_equal(rec_ials_data_check(&d), 0);
    assert_int_equal(rec_ials_train(&d, F, 0.1f, 3, 1, U, V, 1), 0);
    assert_true(rec_vec_dot(U, V + F, F) > 0.5f);
    assert_int_equal(rec_ials_loss(&d, F, 0.1f, U, V, &loss), 0);
    assert_true(loss > 0.0);

    assert_int_equal(rec_ials_train(&d, F, 0.0f, 1, 1, U, V, 1), REC_EINVAL);
    assert_int_equal(rec_ials_train(&d, F, -1.0f, 1, 1, U, V, 1),
                     REC_EINVAL);
    assert_int_equal(rec_ials_train(&d, F, NAN, 1, 1, U, V, 1), REC_EINVAL);
    assert_int_equal(rec_ials_train(&d, F, 0.1f, 1, 1, NULL, V, 1),
                     REC_EINVAL);
    assert_int_equal(rec_ials_train(NULL, F, 0.1f, 1, 1, U, V, 1),
                     REC_EINVAL);
    assert_int_equal(rec_ials_loss(&d, F, 0.1f, U, V, NULL), REC_EINVAL);

    uitems[1] = 2; /* out of range */
    assert_int_equal(rec_ials_data_check(&d), REC_EINVAL);
    assert_int_equal(rec_ials_train(&d, F, 0.1f, 1, 1, U, V, 1), REC_EINVAL);
    uitems[1] = 0;
    conf[0] = -1.0f;
    assert_int_equal(rec_ials_data_check(&d), REC_EINVAL);
    conf[0] = 3.0f;
    iptr[2] = 1; /* orientations disagree on the count */
    assert_int_equal(rec_ials_data_check(&d), REC_EINVAL);
    iptr[2] = 2;
    uptr[1] = 3; /* not monotone */
    assert_int_equal(rec_ials_data_check(&d), REC_EINVAL);
    uptr[1] = 1;
    assert_int_equal(rec_ials_data_check(&d), 0);
    assert_int_equal(rec_ials_data_check(NULL), REC_EINVAL);
}

/* ---- splitting a half-step over threads ------------------------------ */

typedef struct half_job {
    const float *Y, *G;
    const rec_ials_data *d;
    uint32_t f, begin, end;
    float *X;
    int rc;
} half_job;

static void *half_worker(void *arg) {
    half_job *j = arg;
    float *scratch = malloc(REC_IALS_SCRATCH_FLOATS(j->f) * sizeof *scratch);
    j->rc = scratch ? rec_ials_solve_rows(j->Y, j->G, NULL, j->f, 0.1f,
                                          j->d->user_ptr, j->d->user_items,
                                          j->d->user_conf, j->begin, j->end,
                                          j->X, scratch)
                    : REC_ENOMEM;
    free(scratch);
    return NULL;
}

static void test_solve_rows_threads(void **state) {
    (void)state;
    enum { F = 12, T = 3 };
    rec_ials_data d;
    community_data(&d, 31);
    float *U = xcalloc((size_t)C_USERS * F, sizeof *U);
    float *U2 = xcalloc((size_t)C_USERS * F, sizeof *U2);
    float *V = xcalloc((size_t)C_ITEMS * F, sizeof *V);
    float G[F * F];
    assert_int_equal(rec_ials_train(&d, F, 0.1f, 2, 4, U, V, 1), 0);
    rec_ials_gram(V, C_ITEMS, F, G);

    pthread_t th[T];
    half_job jobs[T];
    for (uint32_t k = 0; k < T; k++) {
        jobs[k] = (half_job){V, G, &d, F, k * C_USERS / T,
                             (k + 1) * C_USERS / T, U2, -1};
        assert_int_equal(pthread_create(&th[k], NULL, half_worker, &jobs[k]),
                         0);
    }
    for (uint32_t k = 0; k < T; k++) {
        assert_int_equal(pthread_join(th[k], NULL), 0);
        assert_int_equal(jobs[k].rc, 0);
    }
    /* Same as the single-threaded user half-step of another iteration. */
    float scratch[REC_IALS_SCRATCH_FLOATS(F)];
    assert_int_equal(rec_ials_solve_rows(V, G, NULL, F, 0.1f, d.user_ptr,
                                         d.user_items, d.user_conf, 0,
                                         C_USERS, U, scratch),
                     0);
    assert_memory_equal(U, U2, (size_t)C_USERS * F * sizeof *U);
    free(U);
    free(U2);
    free(V);
    rec_ials_data_free(&d);
}

/* With P, rows of fewer interactions than factors are solved by the
 * Woodbury identity: the same rows as the f x f solve up to rounding; a
 * row with a confidence of 0 and rows of f or more take the f x f solve,
 * bit for bit. */
static void test_solve_rows_short(void **state) {
    (void)state;
    enum { F = 16 }; /* users have C_PER_USER = 8 < F items; items more */
    const float reg = 0.1f;
    rec_ials_data d;
    community_data(&d, 4242);
    float *U = xcalloc((size_t)C_USERS * F, sizeof *U);
    float *U2 = xcalloc((size_t)C_USERS * F, sizeof *U2);
    float *V = xcalloc((size_t)C_ITEMS * F, sizeof *V);
    float *V2 = xcalloc((size_t)C_ITEMS * F, sizeof *V2);
    float *P = xcalloc((size_t)C_USERS * F, sizeof *P);
    float G[F * F], Binv[F * F], scratch[REC_IALS_SCRATCH_FLOATS(F)];
    assert_int_equal(rec_ials_train(&d, F, reg, 5, 7, U, V, 1), 0);

    assert_int_equal(rec_ials_half_prepare(V, C_ITEMS, F, reg, G, Binv, scratch), 0);
    rec_ials_short_rows(Binv, V, 0, C_ITEMS, F, P);
    float *conf = xcalloc(d.user_ptr[C_USERS], sizeof *conf);
    memcpy(conf, d.user_conf, d.user_ptr[C_USERS] * sizeof *conf);
    conf[d.user_ptr[3]] = 0.0f; /* user 3: observed, no extra confidence */
    assert_int_equal(rec_ials_solve_rows(V, G, NULL, F, reg, d.user_ptr, d.user_items, conf, 0,
                                         C_USERS, U, scratch), 0);
    assert_int_equal(rec_ials_solve_rows(V, G, P, F, reg, d.user_ptr, d.user_items, conf, 0,
                                         C_USERS, U2, scratch), 0);
    double worst = 0.0;
    int differ = 0;
    for (uint32_t u = 0; u < C_USERS; u++) {
        double e = 0.0, nn = 0.0;
        for (int k = 0; k < F; k++) {
            double diff = (double)U2[u * F + k] - (double)U[u * F + k];
            e += diff * diff;
            nn += (double)U[u * F + k] * (double)U[u * F + k];
        }
        worst = fmax(worst, sqrt(e / nn));
        differ += memcmp(U + u * F, U2 + u * F, F * sizeof *U) != 0;
    }
    CHECK(worst < 1e-4, "the short form differs from the f x f solve by %g", worst);
    assert_true(differ > 0); /* the short form did run */
    assert_memory_equal(U + 3 * F, U2 + 3 * F, F * sizeof *U);

    /* items have more users than factors: the f x f solve either way */
    assert_int_equal(rec_ials_half_prepare(U, C_USERS, F, reg, G, Binv, scratch), 0);
    rec_ials_short_rows(Binv, U, 0, C_USERS, F, P);
    assert_int_equal(rec_ials_solve_rows(U, G, NULL, F, reg, d.item_ptr, d.item_users,
                                         d.item_conf, 0, C_ITEMS, V, scratch), 0);
    assert_int_equal(rec_ials_solve_rows(U, G, P, F, reg, d.item_ptr, d.item_users,
                                         d.item_conf, 0, C_ITEMS, V2, scratch), 0);
    for (uint32_t i = 0; i < C_ITEMS; i++)
        if (d.item_ptr[i + 1] - d.item_ptr[i] >= F)
            assert_memory_equal(V + i * F, V2 + i * F, F * sizeof *V);
    free(conf);
    free(U);
    free(U2);
    free(V);
    free(V2);
    free(P);
    rec_ials_data_free(&d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_data_build_small),
        cmocka_unit_test(test_data_build_random),
        cmocka_unit_test(test_data_build_errors),
        cmocka_unit_test(test_cholesky_known),
        cmocka_unit_test(test_cholesky_random),
        cmocka_unit_test(test_gram),
        cmocka_unit_test(test_train_communities),
        cmocka_unit_test(test_loss_monotone),
        cmocka_unit_test(test_fold_in),
        cmocka_unit_test(test_fold_in_reference),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_factors_range),
        cmocka_unit_test(test_empty_rows),
        cmocka_unit_test(test_train_validation),
        cmocka_unit_test(test_solve_rows_threads),
        cmocka_unit_test(test_solve_rows_short),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
