/* test_vec.c - vec kernels under every ISA the CPU has, and exact top-k.
 *
 * Each SIMD kernel is checked two ways: on small-integer data, where every
 * sum is exact in float and all ISAs must agree bit for bit with an integer
 * reference, and on random reals against the scalar kernel with a relative
 * tolerance. Buffers are followed by NaN guards so a tail that reads or
 * writes past the end shows up. Top-k is compared with a sort of all scores.
 * All data comes from a fixed-seed xorshift.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
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

#define GUARD 16 /* NaN floats after every buffer */

static const size_t lengths[] = {0,  1,  3,  7,   15,  16,  17,  31,  33,
                                 63, 64, 65, 127, 383, 384, 385, 4096};
#define NLENGTHS (sizeof lengths / sizeof lengths[0])

static const rec_isa isas[] = {REC_ISA_SCALAR, REC_ISA_AVX2, REC_ISA_AVX512};
#define NISAS (sizeof isas / sizeof isas[0])

static const char *isa_names[] = {"scalar", "avx2", "avx512"};

static uint64_t rng_state;

static void seed(uint64_t s) { rng_state = s ? s : 0x9e3779b97f4a7c15u; }

static uint64_t xorshift(void) {
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

/* Uniform in [-1, 1). */
static float rnd(void) {
    return (float)((double)(xorshift() >> 40) / (double)(1u << 23) - 1.0);
}

/* Integer in [-4, 4]: products and sums of up to 4096 of them are exact. */
static float rnd_int(void) { return (float)(int)(xorshift() % 9) - 4.0f; }

/* 64-byte aligned storage of n floats + guard; the returned pointer is
 * offset by `off` floats so it is unaligned when off is odd. */
typedef struct fbuf {
    float *base;
    float *p;
    size_t n;
} fbuf;

static void fbuf_init(fbuf *b, size_t n, size_t off) {
    size_t total = n + off + GUARD;
    size_t bytes = (total * sizeof(float) + 63) / 64 * 64;
    b->base = aligned_alloc(64, bytes);
    assert_non_null(b->base);
    b->p = b->base + off;
    b->n = n;
    for (size_t i = 0; i < total; i++)
        b->base[i] = NAN;
}

static void fbuf_free(fbuf *b) { free(b->base); }

static int guard_intact(const fbuf *b) {
    for (size_t i = 0; i < GUARD; i++)
        if (!isnan(b->p[b->n + i]))
            return 0;
    return 1;
}

static void fill(float *x, size_t n, int ints) {
    for (size_t i = 0; i < n; i++)
        x[i] = ints ? rnd_int() : rnd();
}

static double dot_d(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * (double)b[i];
    return s;
}

static double absdot_d(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += fabs((double)a[i] * (double)b[i]);
    return s;
}

/* Sums of n float terms: allow 1e-5 of the sum of magnitudes. */
static double tol_for(double absum) { return 1e-5 * absum + 1e-6; }

static int near(double x, double ref, double tol) {
    return fabs(x - ref) <= tol;
}

static int set_isa(rec_isa isa) { return rec_vec_set_isa(isa) == 0; }

static int group_setup(void **state) {
    static rec_isa saved;
    saved = rec_vec_isa();
    *state = &saved;
    return 0;
}

static int group_teardown(void **state) {
    rec_vec_set_isa(*(rec_isa *)*state);
    return 0;
}

/* ---- dispatch ------------------------------------------------------- */

static void test_isa_select(void **state) {
    (void)state;
    rec_isa start = rec_vec_isa();
    assert_true(start == REC_ISA_SCALAR || start == REC_ISA_AVX2 ||
                start == REC_ISA_AVX512);

    assert_int_equal(rec_vec_set_isa(REC_ISA_SCALAR), 0);
    assert_int_equal(rec_vec_isa(), REC_ISA_SCALAR);
    assert_string_equal(rec_vec_isa_name(), "scalar");

    __builtin_cpu_init();
    int has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int has512 = __builtin_cpu_supports("avx512f");
    assert_int_equal(rec_vec_set_isa(REC_ISA_AVX2), has2 ? 0 : REC_ERANGE);
    assert_string_equal(rec_vec_isa_name(), has2 ? "avx2" : "scalar");
    assert_int_equal(rec_vec_set_isa(REC_ISA_AVX512), has512 ? 0 : REC_ERANGE);
    if (has512)
        assert_string_equal(rec_vec_isa_name(), "avx512");
    /* The widest supported ISA is the default. */
    assert_int_equal(start, has512 ? REC_ISA_AVX512
                            : has2 ? REC_ISA_AVX2
                                   : REC_ISA_SCALAR);

    rec_isa before = rec_vec_isa();
    assert_int_equal(rec_vec_set_isa((rec_isa)7), REC_EINVAL);
    assert_int_equal(rec_vec_isa(), before);
    rec_vec_set_isa(start);
}

/* ---- elementwise kernels ------------------------------------------- */

static void test_dot(void **state) {
    (void)state;
    seed(1);
    for (size_t li = 0; li < NLENGTHS; li++) {
        size_t n = lengths[li];
        for (size_t off = 0; off < 2; off++) {
            fbuf a, b;
            fbuf_init(&a, n, off);
            fbuf_init(&b, n, off);
            for (int ints = 1; ints >= 0; ints--) {
                fill(a.p, n, ints);
                fill(b.p, n, ints);
                double ref = dot_d(a.p, b.p, n);
                double tol = tol_for(absdot_d(a.p, b.p, n));
                set_isa(REC_ISA_SCALAR);
                float sc = rec_vec_dot(a.p, b.p, n);
                CHECK(near((double)sc, ref, tol), "scalar n=%zu", n);
                for (size_t k = 0; k < NISAS; k++) {
                    if (!set_isa(isas[k]))
                        continue;
                    float v = rec_vec_dot(a.p, b.p, n);
                    if (ints)
                        CHECK((double)v == ref, "%s n=%zu off=%zu: %g != %g",
                              isa_names[k], n, off, (double)v, ref);
                    else
                        CHECK(near((double)v, (double)sc, tol),
                              "%s n=%zu off=%zu: %g vs scalar %g",
                              isa_names[k], n, off, (double)v, (double)sc);
                }
            }
            fbuf_free(&a);
            fbuf_free(&b);
        }
    }
}

static void test_norm2(void **state) {
    (void)state;
    seed(2);
    for (size_t li = 0; li < NLENGTHS; li++) {
        size_t n = lengths[li];
        for (size_t off = 0; off < 2; off++) {
            fbuf a;
            fbuf_init(&a, n, off);
            for (int ints = 1; ints >= 0; ints--) {
                fill(a.p, n, ints);
                double ref = dot_d(a.p, a.p, n);
                set_isa(REC_ISA_SCALAR);
                float sc = rec_vec_norm2(a.p, n);
                CHECK(near((double)sc, ref, tol_for(ref)), "scalar n=%zu", n);
                for (size_t k = 0; k < NISAS; k++) {
                    if (!set_isa(isas[k]))
                        continue;
                    float v = rec_vec_norm2(a.p, n);
                    CHECK(v >= 0.0f, "%s n=%zu negative", isa_names[k], n);
                    if (ints)
                        CHECK((double)v == ref, "%s n=%zu off=%zu: %g != %g",
                              isa_names[k], n, off, (double)v, ref);
                    else
                        CHECK(near((double)v, (double)sc, tol_for(ref)),
                              "%s n=%zu off=%zu", isa_names[k], n, off);
                }
            }
            fbuf_free(&a);
        }
    }
}

static void test_cosine(void **state) {
    (void)state;
    seed(3);
    for (size_t li = 0; li < NLENGTHS; li++) {
        size_t n = lengths[li];
        for (size_t off = 0; off < 2; off++) {
            fbuf a, b, b0;
            fbuf_init(&a, n, off);
            fbuf_init(&b, n, off);
            fbuf_init(&b0, n, 0);
            fill(a.p, n, 0);
            fill(b0.p, n, 0);
            memcpy(b.p, b0.p, n * sizeof(float));
            double na = dot_d(a.p, a.p, n), nb = dot_d(b.p, b.p, n);
            double ref = n ? dot_d(a.p, b.p, n) / sqrt(na * nb) : 0.0;
            double tol = 1e-5 * absdot_d(a.p, b.p, n) / sqrt(na * nb + 1e-30)
                         + 1e-6;
            for (size_t k = 0; k < NISAS; k++) {
                if (!set_isa(isas[k]))
                    continue;
                memcpy(b.p, b0.p, n * sizeof(float));
                float c = rec_vec_cosine(a.p, b.p, n);
                CHECK(near((double)c, ref, tol), "%s n=%zu off=%zu: %g vs %g",
                      isa_names[k], n, off, (double)c, ref);
                CHECK(c >= -1.0f && c <= 1.0f, "%s out of range", isa_names[k]);
                if (n == 0)
                    continue;
                /* Self and opposite are exactly +-1 after clamping or
                 * within an ulp or two. */
                float self = rec_vec_cosine(a.p, a.p, n);
                CHECK(near((double)self, 1.0, 1e-6), "%s self n=%zu: %g",
                      isa_names[k], n, (double)self);
                memcpy(b.p, a.p, n * sizeof(float));
                rec_vec_scale(-3.0f, b.p, n);
                float opp = rec_vec_cosine(a.p, b.p, n);
                CHECK(near((double)opp, -1.0, 1e-6), "%s opp n=%zu: %g",
                      isa_names[k], n, (double)opp);
                /* A zero vector on either side gives 0. */
                memset(b.p, 0, n * sizeof(float));
                CHECK(rec_vec_cosine(a.p, b.p, n) == 0.0f, "%s zero b",
                      isa_names[k]);
                CHECK(rec_vec_cosine(b.p, a.p, n) == 0.0f, "%s zero a",
                      isa_names[k]);
                CHECK(guard_intact(&a) && guard_intact(&b), "guard");
            }
            fbuf_free(&a);
            fbuf_free(&b);
            fbuf_free(&b0);
        }
    }
    /* Tiny and huge vectors whose float squares underflow / overflow. */
    float tiny[3] = {1e-30f, 2e-30f, 0.0f}, tiny2[3] = {2e-30f, 4e-30f, 0.0f};
    float huge[3] = {1e30f, 0.0f, 1e30f}, huge2[3] = {1e30f, 1e30f, 0.0f};
    for (size_t k = 0; k < NISAS; k++) {
        if (!set_isa(isas[k]))
            continue;
        assert_float_equal(rec_vec_cosine(tiny, tiny2, 3), 1.0f, 1e-6f);
        assert_float_equal(rec_vec_cosine(huge, huge2, 3), 0.5f, 1e-6f);
    }
}

static void test_axpy(void **state) {
    (void)state;
    seed(4);
    for (size_t li = 0; li < NLENGTHS; li++) {
        size_t n = lengths[li];
        for (size_t off = 0; off < 2; off++) {
            fbuf x, y, y0, ysc;
            fbuf_init(&x, n, off);
            fbuf_init(&y, n, off);
            fbuf_init(&y0, n, 0);
            fbuf_init(&ysc, n, 0);
            for (int ints = 1; ints >= 0; ints--) {
                float alpha = ints ? -3.0f : 0.7f;
                fill(x.p, n, ints);
                fill(y0.p, n, ints);
                memcpy(ysc.p, y0.p, n * sizeof(float));
                set_isa(REC_ISA_SCALAR);
                rec_vec_axpy(alpha, x.p, ysc.p, n);
                for (size_t k = 0; k < NISAS; k++) {
                    if (!set_isa(isas[k]))
                        continue;
                    memcpy(y.p, y0.p, n * sizeof(float));
                    rec_vec_axpy(alpha, x.p, y.p, n);
                    for (size_t i = 0; i < n; i++) {
                        double ref = (double)y0.p[i] +
                                     (double)alpha * (double)x.p[i];
                        if (ints)
                            CHECK((double)y.p[i] == ref,
                                  "%s n=%zu i=%zu", isa_names[k], n, i);
                        else
                            CHECK(near((double)y.p[i], (double)ysc.p[i], 1e-6),
                                  "%s n=%zu off=%zu i=%zu", isa_names[k], n,
                                  off, i);
                    }
                    CHECK(guard_intact(&y), "%s n=%zu wrote past the end",
                          isa_names[k], n);
                }
            }
            fbuf_free(&x);
            fbuf_free(&y);
            fbuf_free(&y0);
            fbuf_free(&ysc);
        }
    }
}

static void test_scale(void **state) {
    (void)state;
    seed(5);
    for (size_t li = 0; li < NLENGTHS; li++) {
        size_t n = lengths[li];
        for (size_t off = 0; off < 2; off++) {
            fbuf x, x0;
            fbuf_init(&x, n, off);
            fbuf_init(&x0, n, 0);
            fill(x0.p, n, 0);
            for (size_t k = 0; k < NISAS; k++) {
                if (!set_isa(isas[k]))
                    continue;
                memcpy(x.p, x0.p, n * sizeof(float));
                rec_vec_scale(-2.5f, x.p, n);
                /* One rounding per element in every ISA: exact match. */
                for (size_t i = 0; i < n; i++)
                    CHECK(x.p[i] == -2.5f * x0.p[i], "%s n=%zu i=%zu",
                          isa_names[k], n, i);
                CHECK(guard_intact(&x), "%s n=%zu wrote past the end",
                      isa_names[k], n);
            }
            fbuf_free(&x);
            fbuf_free(&x0);
        }
    }
}

static void test_normalize(void **state) {
    (void)state;
    seed(6);
    for (size_t li = 0; li < NLENGTHS; li++) {
        size_t n = lengths[li];
        fbuf x, x0;
        fbuf_init(&x, n, 1);
        fbuf_init(&x0, n, 0);
        fill(x0.p, n, 0);
        for (size_t k = 0; k < NISAS; k++) {
            if (!set_isa(isas[k]))
                continue;
            memcpy(x.p, x0.p, n * sizeof(float));
            double ref = sqrt(dot_d(x0.p, x0.p, n));
            float nrm = rec_vec_normalize(x.p, n);
            CHECK(near((double)nrm, ref, 1e-5 * ref), "%s n=%zu norm %g vs %g",
                  isa_names[k], n, (double)nrm, ref);
            if (n) {
                double after = sqrt(dot_d(x.p, x.p, n));
                CHECK(near(after, 1.0, 1e-5), "%s n=%zu |x|=%g", isa_names[k],
                      n, after);
                for (size_t i = 0; i < n; i++)
                    CHECK(near((double)x.p[i], (double)x0.p[i] / ref, 1e-6),
                          "%s n=%zu i=%zu direction", isa_names[k], n, i);
            }
            CHECK(guard_intact(&x), "%s n=%zu wrote past the end",
                  isa_names[k], n);

            /* The zero vector is left alone and reports 0. */
            memset(x.p, 0, n * sizeof(float));
            CHECK(rec_vec_normalize(x.p, n) == 0.0f, "%s zero", isa_names[k]);
            for (size_t i = 0; i < n; i++)
                CHECK(x.p[i] == 0.0f && !signbit(x.p[i]), "%s zero changed",
                      isa_names[k]);
        }
        fbuf_free(&x);
        fbuf_free(&x0);
    }

    for (size_t k = 0; k < NISAS; k++) {
        if (!set_isa(isas[k]))
            continue;
        /* Squares underflow float: still a unit vector, not "zero". */
        float tiny[4] = {3e-25f, 0.0f, -4e-25f, 0.0f};
        float n1 = rec_vec_normalize(tiny, 4);
        assert_float_equal(n1, 5e-25f, 1e-30f);
        assert_float_equal(tiny[0], 0.6f, 1e-6f);
        assert_float_equal(tiny[2], -0.8f, 1e-6f);
        /* Squares overflow float. */
        float huge[2] = {3e30f, 4e30f};
        float n2 = rec_vec_normalize(huge, 2);
        assert_float_equal(n2 / 5e30f, 1.0f, 1e-6f);
        assert_float_equal(huge[0], 0.6f, 1e-6f);
        assert_float_equal(huge[1], 0.8f, 1e-6f);
        /* NaN in, NaN out, vector untouched. */
        float bad[3] = {1.0f, NAN, 2.0f};
        assert_true(isnan(rec_vec_normalize(bad, 3)));
        assert_true(bad[0] == 1.0f && bad[2] == 2.0f);
    }
}

static void test_all_finite(void **state) {
    (void)state;
    seed(7);
    const float bad[] = {NAN, INFINITY, -INFINITY};
    for (size_t li = 0; li < NLENGTHS; li++) {
        size_t n = lengths[li];
        for (size_t off = 0; off < 2; off++) {
            fbuf x;
            fbuf_init(&x, n, off);
            fill(x.p, n, 0);
            if (n > 2) {
                x.p[1] = FLT_MAX; /* extremes are finite */
                x.p[2] = -FLT_TRUE_MIN;
            }
            for (size_t k = 0; k < NISAS; k++) {
                if (!set_isa(isas[k]))
                    continue;
                /* The NaN guard right after the end must not be seen. */
                CHECK(rec_vec_all_finite(x.p, n) == 1, "%s n=%zu off=%zu",
                      isa_names[k], n, off);
                size_t pos[] = {0, n / 2, n - 1};
                for (size_t pi = 0; n && pi < 3; pi++) {
                    for (size_t bi = 0; bi < 3; bi++) {
                        float keep = x.p[pos[pi]];
                        x.p[pos[pi]] = bad[bi];
                        CHECK(rec_vec_all_finite(x.p, n) == 0,
                              "%s n=%zu off=%zu pos=%zu bad=%g", isa_names[k],
                              n, off, pos[pi], (double)bad[bi]);
                        x.p[pos[pi]] = keep;
                    }
                }
            }
            fbuf_free(&x);
        }
    }
}

static void test_dot_rows(void **state) {
    (void)state;
    seed(8);
    static const size_t ds[] = {1, 3, 15, 16, 17, 64, 65, 384};
    static const size_t ns[] = {0, 1, 3, 4, 5, 7, 64, 130};
    for (size_t di = 0; di < sizeof ds / sizeof ds[0]; di++) {
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
            size_t d = ds[di], nrows = ns[ni];
            for (size_t extra = 0; extra < 4; extra += 3) {
                size_t stride = d + extra; /* extra=3: rows unaligned */
                fbuf rows, q, out, ref;
                fbuf_init(&rows, nrows * stride, 1);
                fbuf_init(&q, d, 1);
                fbuf_init(&out, nrows, 0);
                fbuf_init(&ref, nrows, 0);
                for (int ints = 1; ints >= 0; ints--) {
                    fill(rows.p, nrows * stride, ints);
                    fill(q.p, d, ints);
                    set_isa(REC_ISA_SCALAR);
                    rec_vec_dot_rows(rows.p, stride, nrows, q.p, d, ref.p);
                    for (size_t k = 0; k < NISAS; k++) {
                        if (!set_isa(isas[k]))
                            continue;
                        rec_vec_dot_rows(rows.p, stride, nrows, q.p, d, out.p);
                        for (size_t r = 0; r < nrows; r++) {
                            const float *row = rows.p + r * stride;
                            double exact = dot_d(row, q.p, d);
                            double tol = tol_for(absdot_d(row, q.p, d));
                            if (ints)
                                CHECK((double)out.p[r] == exact,
                                      "%s d=%zu n=%zu r=%zu", isa_names[k], d,
                                      nrows, r);
                            else
                                CHECK(near((double)out.p[r],
                                           (double)ref.p[r], tol),
                                      "%s d=%zu n=%zu r=%zu: %g vs %g",
                                      isa_names[k], d, nrows, r,
                                      (double)out.p[r], (double)ref.p[r]);
                            /* Same row alone: same score as in the batch. */
                            float one;
                            rec_vec_dot_rows(row, stride, 1, q.p, d, &one);
                            CHECK(one == out.p[r], "%s position-dependent",
                                  isa_names[k]);
                        }
                        CHECK(guard_intact(&out), "%s wrote past out",
                              isa_names[k]);
                    }
                }
                fbuf_free(&rows);
                fbuf_free(&q);
                fbuf_free(&out);
                fbuf_free(&ref);
            }
        }
    }
}

/* ---- top-k ---------------------------------------------------------- */

static int ref_cmp(const void *pa, const void *pb) {
    const rec_hit *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx ? 1 : 0;
}

static int skipped(const uint64_t *skip, size_t r) {
    return skip && (skip[r >> 6] >> (r & 63) & 1);
}

/* Brute force: sort every eligible row, keep min(k, count). */
static size_t ref_topk(const float *scores, size_t nrows,
                       const uint64_t *skip, size_t k, rec_hit *out) {
    rec_hit *all = malloc((nrows + 1) * sizeof *all);
    assert_non_null(all);
    size_t m = 0;
    for (size_t r = 0; r < nrows; r++) {
        if (skipped(skip, r) || isnan(scores[r]))
            continue;
        all[m].idx = (uint32_t)r;
        all[m].score = scores[r];
        m++;
    }
    qsort(all, m, sizeof *all, ref_cmp);
    size_t n = m < k ? m : k;
    memcpy(out, all, n * sizeof *out);
    free(all);
    return n;
}

/* Scores the scan must reproduce exactly: the ISA's own dot_rows. */
static float *scan_scores(const rec_scan *s, const float *q) {
    float *sc = malloc((s->nrows + 1) * sizeof *sc);
    assert_non_null(sc);
    rec_vec_dot_rows(s->rows, s->stride, s->nrows, q, s->d, sc);
    return sc;
}

static void expect_exact(const rec_scan *s, const float *q, size_t k,
                         const char *what) {
    float *sc = scan_scores(s, q);
    rec_hit *got = malloc((k + 1) * sizeof *got);
    rec_hit *want = malloc((k + 1) * sizeof *want);
    assert_true(got && want);
    size_t nw = ref_topk(sc, s->nrows, s->skip, k, want);
    size_t ng = rec_vec_topk(s, q, k, got);
    CHECK(ng == nw, "%s %s n=%zu d=%zu k=%zu: %zu hits, want %zu",
          rec_vec_isa_name(), what, s->nrows, s->d, k, ng, nw);
    for (size_t i = 0; i < ng; i++) {
        CHECK(got[i].idx == want[i].idx && got[i].score == want[i].score,
              "%s %s n=%zu d=%zu k=%zu hit %zu: (%u, %g) want (%u, %g)",
              rec_vec_isa_name(), what, s->nrows, s->d, k, i,
              (unsigned)got[i].idx, (double)got[i].score,
              (unsigned)want[i].idx, (double)want[i].score);
    }
    free(sc);
    free(got);
    free(want);
}

typedef struct matrix {
    fbuf rows;
    fbuf q;
    size_t nrows, d, stride;
} matrix;

static void matrix_init(matrix *m, size_t nrows, size_t d, size_t stride,
                        size_t off) {
    m->nrows = nrows;
    m->d = d;
    m->stride = stride;
    fbuf_init(&m->rows, nrows * stride, off);
    fbuf_init(&m->q, d, off);
    fill(m->rows.p, nrows * stride, 0);
    fill(m->q.p, d, 0);
}

static void matrix_free(matrix *m) {
    fbuf_free(&m->rows);
    fbuf_free(&m->q);
}

static rec_scan scan_of(const matrix *m, const float *inv,
                        const uint64_t *skip) {
    rec_scan s = {m->rows.p, m->stride, m->nrows, m->d, inv, skip};
    return s;
}

static void test_topk_heap(void **state) {
    (void)state;
    rec_hit h[4];
    rec_topk t;
    rec_topk_init(&t, h, 4);
    assert_true(rec_topk_threshold(&t) == -INFINITY);
    static const float sc[] = {0.5f, 2.0f, -1.0f, 2.0f, NAN, 0.5f, 3.0f, 1.0f};
    for (uint32_t i = 0; i < 8; i++) {
        rec_topk_push(&t, i, sc[i]);
        if (i == 2)
            assert_true(rec_topk_threshold(&t) == -INFINITY);
    }
    /* Held: 3.0@6, 2.0@1, 2.0@3, 1.0@7; worst is 1.0. */
    assert_int_equal(t.n, 4);
    assert_true(rec_topk_threshold(&t) == 1.0f);
    rec_topk_push(&t, 8, 1.0f); /* ties the worst, later index: stays out */
    assert_true(rec_topk_threshold(&t) == 1.0f);
    rec_topk_push(&t, 0, 1.0f); /* ties the worst, earlier index: enters */
    assert_int_equal(rec_topk_finish(&t), 4);
    static const uint32_t idx[] = {6, 1, 3, 0};
    static const float want[] = {3.0f, 2.0f, 2.0f, 1.0f};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(h[i].idx, idx[i]);
        assert_true(h[i].score == want[i]);
    }

    rec_topk_init(&t, NULL, 0);
    rec_topk_push(&t, 1, 5.0f);
    assert_int_equal(t.n, 0);
    assert_int_equal(rec_topk_finish(&t), 0);

    rec_hit a = {1, 2.0f}, b = {2, 2.0f}, c = {0, 1.0f}, n = {0, NAN};
    assert_true(rec_hit_cmp(&a, &b) < 0);
    assert_true(rec_hit_cmp(&b, &a) > 0);
    assert_true(rec_hit_cmp(&a, &a) == 0);
    assert_true(rec_hit_cmp(&a, &c) < 0);
    assert_true(rec_hit_cmp(&c, &a) > 0);
    assert_true(rec_hit_cmp(&n, &c) > 0);
    assert_true(rec_hit_cmp(&c, &n) < 0);

    /* A big random stream against the sort. */
    seed(9);
    enum { N = 5000, K = 37 };
    static float many[N];
    static rec_hit hk[K], want2[K];
    for (size_t i = 0; i < N; i++)
        many[i] = (float)(xorshift() % 300); /* plenty of ties */
    rec_topk_init(&t, hk, K);
    for (uint32_t i = N; i-- > 0;) /* reverse order: ties decided by cmp */
        rec_topk_push(&t, i, many[i]);
    assert_int_equal(rec_topk_finish(&t), K);
    assert_int_equal(ref_topk(many, N, NULL, K, want2), K);
    for (size_t i = 0; i < K; i++) {
        assert_int_equal(hk[i].idx, want2[i].idx);
        assert_true(hk[i].score == want2[i].score);
    }
}

static void test_topk_dot(void **state) {
    (void)state;
    seed(10);
    static const size_t ns[] = {0, 1, 5, 63, 64, 65, 1000, 3001};
    static const size_t ds[] = {7, 16, 64, 100};
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
        for (size_t di = 0; di < sizeof ds / sizeof ds[0]; di++) {
            size_t n = ns[ni], d = ds[di];
            matrix m;
            matrix_init(&m, n, d, d, di & 1);
            rec_scan s = scan_of(&m, NULL, NULL);
            size_t ks[] = {0, 1, 10, 63, 64, 65, n, n + 7};
            for (size_t k = 0; k < NISAS; k++) {
                if (!set_isa(isas[k]))
                    continue;
                for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
                    expect_exact(&s, m.q.p, ks[ki], "dot");
            }
            matrix_free(&m);
        }
    }
}

static void test_topk_k_exceeds(void **state) {
    (void)state;
    seed(11);
    matrix m;
    matrix_init(&m, 10, 16, 16, 0);
    rec_scan s = scan_of(&m, NULL, NULL);
    rec_hit out[50];
    for (size_t k = 0; k < NISAS; k++) {
        if (!set_isa(isas[k]))
            continue;
        assert_int_equal(rec_vec_topk(&s, m.q.p, 50, out), 10);
        for (size_t i = 1; i < 10; i++)
            assert_true(out[i - 1].score >= out[i].score);
        uint32_t seen = 0;
        for (size_t i = 0; i < 10; i++)
            seen |= 1u << out[i].idx;
        assert_int_equal(seen, 0x3ff);
        assert_int_equal(rec_vec_topk(&s, m.q.p, 0, out), 0);
    }
    matrix_free(&m);
}

static void test_topk_skip(void **state) {
    (void)state;
    seed(12);
    size_t n = 1000, d = 33;
    matrix m;
    matrix_init(&m, n, d, 48, 0);
    uint64_t skip[16];
    for (size_t w = 0; w < 16; w++)
        skip[w] = xorshift() & xorshift(); /* ~25% of rows */
    skip[3] = ~(uint64_t)0;                /* a fully skipped block */
    skip[15] = ~(uint64_t)0 << 8;          /* only rows 960..967 live */
    rec_scan s = scan_of(&m, NULL, skip);
    for (size_t k = 0; k < NISAS; k++) {
        if (!set_isa(isas[k]))
            continue;
        static const size_t ks[] = {1, 10, 100, 700, 2000};
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
            expect_exact(&s, m.q.p, ks[ki], "skip");
        /* Nothing skipped row ever comes back, even with k > live rows. */
        rec_hit out[1000];
        size_t got = rec_vec_topk(&s, m.q.p, 1000, out);
        size_t live = 0;
        for (size_t r = 0; r < n; r++)
            live += !skipped(skip, r);
        assert_int_equal(got, live);
        for (size_t i = 0; i < got; i++)
            assert_false(skipped(skip, out[i].idx));
    }
    /* Everything skipped. */
    uint64_t all[16];
    memset(all, 0xff, sizeof all);
    s.skip = all;
    rec_hit out[5];
    for (size_t k = 0; k < NISAS; k++)
        if (set_isa(isas[k]))
            assert_int_equal(rec_vec_topk(&s, m.q.p, 5, out), 0);
    matrix_free(&m);
}

static void test_topk_ties(void **state) {
    (void)state;
    seed(13);
    size_t n = 777, d = 40;
    matrix m;
    matrix_init(&m, n, d, d, 1);
    /* Every row is one of three patterns: 259 copies of each score. */
    for (size_t r = 3; r < n; r++)
        memcpy(m.rows.p + r * d, m.rows.p + (r % 3) * d, d * sizeof(float));
    rec_scan s = scan_of(&m, NULL, NULL);
    for (size_t k = 0; k < NISAS; k++) {
        if (!set_isa(isas[k]))
            continue;
        static const size_t ks[] = {1, 5, 64, 258, 259, 260, 600, 777};
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
            expect_exact(&s, m.q.p, ks[ki], "ties");
        /* Spelled out: equal scores come back by ascending index. */
        rec_hit out[300];
        size_t got = rec_vec_topk(&s, m.q.p, 300, out);
        assert_int_equal(got, 300);
        size_t best = out[0].idx;
        assert_true(best < 3);
        for (size_t i = 0; i < 259; i++) {
            assert_int_equal(out[i].idx, best + 3 * i);
            assert_true(out[i].score == out[0].score);
        }
        assert_true(out[259].score < out[0].score);
        assert_true(out[259].idx < 3);
    }
    matrix_free(&m);
}

static void test_topk_nan(void **state) {
    (void)state;
    seed(14);
    size_t n = 300, d = 20;
    matrix m;
    matrix_init(&m, n, d, d, 0);
    for (size_t r = 0; r < n; r += 7)
        m.rows.p[r * d + r % d] = NAN;
    m.rows.p[5 * d] = INFINITY; /* row 5: +-Inf score, still a number */
    rec_scan s = scan_of(&m, NULL, NULL);
    size_t nan_rows = (n + 6) / 7;
    for (size_t k = 0; k < NISAS; k++) {
        if (!set_isa(isas[k]))
            continue;
        static const size_t ks[] = {1, 3, 50, 300};
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
            expect_exact(&s, m.q.p, ks[ki], "nan");
        rec_hit out[300];
        size_t got = rec_vec_topk(&s, m.q.p, 300, out);
        assert_int_equal(got, n - nan_rows);
        for (size_t i = 0; i < got; i++) {
            assert_false(isnan(out[i].score));
            assert_true(out[i].idx % 7 != 0);
        }
        /* The infinite row sorts to one end. */
        assert_true(out[0].idx == 5 || out[got - 1].idx == 5);
        /* A NaN query scores NaN everywhere: nothing comes back. */
        float keep = m.q.p[3];
        m.q.p[3] = NAN;
        assert_int_equal(rec_vec_topk(&s, m.q.p, 10, out), 0);
        m.q.p[3] = keep;
    }
    matrix_free(&m);
}

/* Cosine scores depend on how q is normalised inside, so check the result
 * is *a* correct top-k within tolerance: right count, sorted, scores match
 * the double reference, nothing left out scores higher. */
static void check_cosine(const rec_scan *s, const float *q, size_t k,
                         const double *ref, size_t eligible) {
    rec_hit *got = malloc((k + 1) * sizeof *got);
    assert_non_null(got);
    size_t ng = rec_vec_topk(s, q, k, got);
    size_t want = k < eligible ? k : eligible;
    CHECK(ng == want, "%s cosine k=%zu: %zu hits, want %zu",
          rec_vec_isa_name(), k, ng, want);
    const double tol = 2e-6;
    char *in = calloc(s->nrows + 1, 1);
    assert_non_null(in);
    for (size_t i = 0; i < ng; i++) {
        uint32_t r = got[i].idx;
        CHECK(r < s->nrows && !in[r] && !skipped(s->skip, r) &&
                  !isnan(ref[r]),
              "%s cosine bad idx %u", rec_vec_isa_name(), (unsigned)r);
        in[r] = 1;
        CHECK(near((double)got[i].score, ref[r], tol),
              "%s cosine idx %u: %g vs %g", rec_vec_isa_name(), (unsigned)r,
              (double)got[i].score, ref[r]);
        if (i)
            CHECK(got[i - 1].score > got[i].score ||
                      (got[i - 1].score == got[i].score &&
                       got[i - 1].idx < got[i].idx),
                  "%s cosine order at %zu", rec_vec_isa_name(), i);
    }
    if (ng) {
        double floor_ = ref[got[ng - 1].idx];
        for (size_t r = 0; r < s->nrows; r++)
            if (!in[r] && !skipped(s->skip, r) && !isnan(ref[r]))
                CHECK(ref[r] <= floor_ + 2 * tol,
                      "%s cosine k=%zu missed row %zu (%g > %g)",
                      rec_vec_isa_name(), k, r, ref[r], floor_);
    }
    free(in);
    free(got);
}

static void test_topk_cosine(void **state) {
    (void)state;
    seed(15);
    size_t n = 2000, d = 50;
    matrix m;
    matrix_init(&m, n, d, 64, 1);
    /* Very different row lengths, so dot order != cosine order. */
    for (size_t r = 0; r < n; r++) {
        float f = 0.01f + 100.0f * (float)(xorshift() % 1000) / 1000.0f;
        for (size_t j = 0; j < d; j++)
            m.rows.p[r * 64 + j] *= f;
    }
    /* Rows 100..109 (set below) are copies of row 7 scaled by 2: their
     * cosines are identical. */
    memset(m.rows.p + 300 * 64, 0, 64 * sizeof(float)); /* a zero row */
    /* Row 7 at unit scale, and q aimed at it so its copies lead. */
    for (size_t j = 0; j < d; j++)
        m.rows.p[7 * 64 + j] = rnd();
    for (size_t r = 100; r < 110; r++)
        for (size_t j = 0; j < d; j++)
            m.rows.p[r * 64 + j] = 2.0f * m.rows.p[7 * 64 + j];
    for (size_t j = 0; j < d; j++)
        m.q.p[j] = 3.0f * m.rows.p[7 * 64 + j] + 0.01f * rnd();

    float *inv = malloc(n * sizeof *inv);
    double *ref = malloc(n * sizeof *ref);
    assert_true(inv && ref);
    double qn = sqrt(dot_d(m.q.p, m.q.p, d));
    for (size_t r = 0; r < n; r++) {
        const float *row = m.rows.p + r * 64;
        double rn = sqrt(dot_d(row, row, d));
        inv[r] = rn > 0 ? (float)(1.0 / rn) : 0.0f;
        ref[r] = rn > 0 ? dot_d(row, m.q.p, d) / (rn * qn) : 0.0;
    }
    uint64_t skip[32] = {0};
    skip[0] = (uint64_t)1 << 7; /* skip the original row 7 */
    skip[10] = ~(uint64_t)0;
    size_t eligible = n - 1 - 64;
    rec_scan s = scan_of(&m, inv, skip);
    for (size_t k = 0; k < NISAS; k++) {
        if (!set_isa(isas[k]))
            continue;
        static const size_t ks[] = {1, 10, 11, 100, 2000, 2500};
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
            check_cosine(&s, m.q.p, ks[ki], ref, eligible);
        /* The ten copies tie exactly and come back in index order. */
        rec_hit out[12];
        assert_int_equal(rec_vec_topk(&s, m.q.p, 12, out), 12);
        for (size_t i = 0; i < 10; i++) {
            assert_int_equal(out[i].idx, 100 + i);
            assert_true(out[i].score == out[0].score);
            assert_true(out[i].score <= 1.0f + 1e-6f && out[i].score > 0.99f);
        }
        assert_true(out[10].score < out[0].score);

        /* Scaling q changes nothing beyond rounding: it is normalised. */
        fbuf q2;
        fbuf_init(&q2, d, 0);
        memcpy(q2.p, m.q.p, d * sizeof(float));
        rec_vec_scale(1e-20f, q2.p, d);
        check_cosine(&s, q2.p, 100, ref, eligible);
        fbuf_free(&q2);
    }
    free(inv);
    free(ref);
    matrix_free(&m);
}

static void test_topk_cosine_zero_q(void **state) {
    (void)state;
    seed(16);
    size_t n = 200, d = 8;
    matrix m;
    matrix_init(&m, n, d, d, 0);
    memset(m.q.p, 0, d * sizeof(float));
    float inv[200];
    for (size_t r = 0; r < n; r++)
        inv[r] = 1.0f;
    uint64_t skip[4] = {0x5, 0, 0, 0}; /* rows 0 and 2 */
    rec_scan s = scan_of(&m, inv, skip);
    for (size_t k = 0; k < NISAS; k++) {
        if (!set_isa(isas[k]))
            continue;
        rec_hit out[300];
        assert_int_equal(rec_vec_topk(&s, m.q.p, 4, out), 4);
        static const uint32_t want[] = {1, 3, 4, 5};
        for (size_t i = 0; i < 4; i++) {
            assert_int_equal(out[i].idx, want[i]);
            assert_true(out[i].score == 0.0f);
        }
        assert_int_equal(rec_vec_topk(&s, m.q.p, 300, out), n - 2);
        /* A q holding Inf or NaN is not a zero q: every score is NaN. */
        m.q.p[5] = INFINITY;
        assert_int_equal(rec_vec_topk(&s, m.q.p, 4, out), 0);
        m.q.p[5] = NAN;
        assert_int_equal(rec_vec_topk(&s, m.q.p, 4, out), 0);
        m.q.p[5] = 0.0f;
    }
    matrix_free(&m);
}

/* The bf16 scan returns the float scan's hits and scores exactly: random
 * rows, clustered rows (many near ties), duplicated rows (exact ties), zero
 * rows and skipped rows, by dot and by cosine, for several k; and when the
 * CPU or the kernels in use cannot run it, through the fallback. */
static void check_bf16(const matrix *m, const uint64_t *skip, int cosine,
                       size_t k) {
    float *inv = malloc(m->nrows * sizeof *inv);
    float *meta = malloc(2 * m->nrows * sizeof *meta);
    uint16_t *r16 = malloc(m->nrows * m->stride * sizeof *r16);
    assert_non_null(meta);
    rec_hit *a = malloc(k * sizeof *a), *b = malloc(k * sizeof *b);
    assert_non_null(inv);
    assert_non_null(r16);
    assert_non_null(a);
    assert_non_null(b);
    for (size_t r = 0; r < m->nrows; r++) {
        const float *row = m->rows.p + r * m->stride;
        double n2 = dot_d(row, row, m->d);
        inv[r] = n2 > 0 ? (float)(1.0 / sqrt(n2)) : 0.0f;
        assert_true(rec_vec_bf16_row(row, m->d, r16 + r * m->stride, meta + 2 * r));
    }
    rec_scan sc = scan_of(m, cosine ? inv : NULL, skip);
    size_t na = rec_vec_topk(&sc, m->q.p, k, a);
    size_t nb = rec_vec_topk_bf16(&sc, r16, meta, m->q.p, k, b);
    assert_int_equal(na, nb);
    for (size_t i = 0; i < na; i++) {
        assert_int_equal(a[i].idx, b[i].idx);
        assert_memory_equal(&a[i].score, &b[i].score, sizeof(float));
    }
    free(inv);
    free(meta);
    free(r16);
    free(a);
    free(b);
}

static void test_topk_bf16(void **state) {
    static const size_t shapes[][2] = {{1000, 64}, {3001, 7}, {2500, 100}, {700, 33}};
    static const size_t ks[] = {1, 10, 100};
    for (size_t ii = 0; ii < sizeof isas / sizeof isas[0]; ii++) {
        if (!set_isa(isas[ii]))
            continue;
        for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++) {
            size_t n = shapes[sh][0], d = shapes[sh][1];
            for (int kind = 0; kind < 3; kind++) {
                seed(1000 + 10 * sh + (size_t)kind);
                matrix m;
                matrix_init(&m, n, d, (d + 15) & ~(size_t)15, 0);
                if (kind == 1) { /* 20 clusters, small noise: near ties */
                    for (size_t r = 0; r < n; r++)
                        for (size_t j = 0; j < d; j++)
                            m.rows.p[r * m.stride + j] =
                                m.rows.p[(r % 20) * m.stride + j] + 1e-3f * rnd();
                } else if (kind == 2) { /* duplicates and zero rows */
                    for (size_t r = 20; r < n; r++)
                        memcpy(m.rows.p + r * m.stride,
                               m.rows.p + (r % 20) * m.stride, d * sizeof(float));
                    for (size_t r = 3; r < n; r += 97)
                        memset(m.rows.p + r * m.stride, 0, d * sizeof(float));
                }
                size_t words = (n + 63) / 64;
                uint64_t *skip = calloc(words, sizeof *skip);
                assert_non_null(skip);
                for (size_t w = 0; w < words; w++)
                    skip[w] = xorshift() & xorshift(); /* about a quarter */
                for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
                    for (int cosine = 0; cosine < 2; cosine++) {
                        check_bf16(&m, NULL, cosine, ks[ki]);
                        check_bf16(&m, skip, cosine, ks[ki]);
                    }
                free(skip);
                matrix_free(&m);
            }
        }
    }
    uint64_t fast0, fall0, fast1, fall1;
    rec_vec_bf16_counts(&fast0, &fall0);
    /* Every row alike: far more rows in doubt than the exact pass takes. */
    matrix m;
    matrix_init(&m, 20000, 16, 16, 0);
    for (size_t r = 1; r < m.nrows; r++)
        memcpy(m.rows.p + r * 16, m.rows.p, 16 * sizeof(float));
    check_bf16(&m, NULL, 0, 10);
    matrix_free(&m);
    rec_vec_bf16_counts(&fast1, &fall1);
    if (rec_vec_bf16_scan_ok()) { /* that one fell back; the rest did not */
        assert_int_equal(fall1, fall0 + 1);
        assert_true(fast0 > 0);
        assert_int_equal(fall0, 0);
    } else {
        assert_int_equal(fast1 + fall1, 0);
    }
    /* Conversion: rounding to nearest even, and floats too large for bf16. */
    assert_int_equal(rec_vec_bf16(1.0f), 0x3f80);
    assert_int_equal(rec_vec_bf16(1.00390625f), 0x3f80);  /* tie, to even */
    assert_int_equal(rec_vec_bf16(1.01171875f), 0x3f82);  /* tie, to even */
    assert_int_equal(rec_vec_bf16(-2.0f), 0xc000);
    assert_int_equal(rec_vec_bf16(1e-39f), 0); /* below bf16's normals */
    float big[2] = {1.0f, 3.4e38f}, mt[2];
    uint16_t out[3];
    assert_int_equal(rec_vec_bf16_row(big, 2, out, mt), 0);
    float small[3] = {3.0f, 4.0f, 1.00390625f};
    assert_int_equal(rec_vec_bf16_row(small, 3, out, mt), 1);
    assert_true(mt[0] >= 5.09977f && mt[0] < 5.0998f);      /* |x| */
    assert_true(mt[1] >= 0.00390625f && mt[1] < 0.0039063f); /* |x - bf16 x| */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_isa_select),
        cmocka_unit_test(test_dot),
        cmocka_unit_test(test_norm2),
        cmocka_unit_test(test_cosine),
        cmocka_unit_test(test_axpy),
        cmocka_unit_test(test_scale),
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_all_finite),
        cmocka_unit_test(test_dot_rows),
        cmocka_unit_test(test_topk_heap),
        cmocka_unit_test(test_topk_dot),
        cmocka_unit_test(test_topk_k_exceeds),
        cmocka_unit_test(test_topk_skip),
        cmocka_unit_test(test_topk_ties),
        cmocka_unit_test(test_topk_nan),
        cmocka_unit_test(test_topk_cosine),
        cmocka_unit_test(test_topk_cosine_zero_q),
        cmocka_unit_test(test_topk_bf16),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
