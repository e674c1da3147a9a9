/* test_space.c - named vector spaces: validation, layout, row storage,
 * presence and dirty tracking, and top-k checked against a brute-force
 * reference computed in double. Data comes from a fixed-seed xorshift.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "space.h"

/* ---- helpers --------------------------------------------------------- */

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

static rec_space *new_space(const char *name, uint32_t dim) {
    rec_space *s = NULL;
    assert_int_equal(rec_space_new(&s, name, 7, dim), 0);
    assert_non_null(s);
    return s;
}

static int bit(const uint64_t *map, uint32_t r) {
    return (int)(map[r >> 6] >> (r & 63) & 1);
}

/* Row r of a deterministic pattern: distinct per (r, i). */
static void pattern(float *v, uint32_t dim, uint32_t r) {
    for (uint32_t i = 0; i < dim; i++)
        v[i] = (float)r + (float)i / 1024.0f;
}

/* ---- validation and layout ------------------------------------------ */

static void test_name_validation(void **state) {
    char n63[64], n64[65];
    memset(n63, 'a', 63);
    n63[63] = 0;
    memset(n64, 'b', 64);
    n64[64] = 0;

    assert_int_equal(rec_space_name_ok("items"), 0);
    assert_int_equal(rec_space_name_ok("A-z_0.9"), 0);
    assert_int_equal(rec_space_name_ok("x"), 0);
    assert_int_equal(rec_space_name_ok(n63), 0);
    assert_int_equal(rec_space_name_ok(n64), REC_EINVAL);
    assert_int_equal(rec_space_name_ok(""), REC_EINVAL);
    assert_int_equal(rec_space_name_ok(NULL), REC_EINVAL);
    assert_int_equal(rec_space_name_ok("a b"), REC_EINVAL);
    assert_int_equal(rec_space_name_ok("a/b"), REC_EINVAL);
    assert_int_equal(rec_space_name_ok("a:b"), REC_EINVAL);
    assert_int_equal(rec_space_name_ok("caf\xc3\xa9"), REC_EINVAL);
    assert_int_equal(rec_space_name_ok("tab\t"), REC_EINVAL);

    rec_space dummy;
    rec_space *s = &dummy; /* must be reset to NULL on failure */
    assert_int_equal(rec_space_new(&s, "bad name", 1, 8), REC_EINVAL);
    assert_null(s);
    assert_int_equal(rec_space_new(&s, n64, 1, 8), REC_EINVAL);
    assert_null(s);

    s = new_space(n63, 8);
    assert_string_equal(s->name, n63);
    assert_int_equal(s->id, 7);
    rec_space_free(s);
    rec_space_free(NULL);
}

static void test_dim_range(void **state) {
    rec_space dummy;
    rec_space *s = &dummy;
    assert_int_equal(rec_space_new(&s, "d", 1, 0), REC_ERANGE);
    assert_null(s);
    assert_int_equal(rec_space_new(&s, "d", 1, REC_DIM_MAX + 1), REC_ERANGE);
    assert_null(s);
    assert_int_equal(rec_space_new(&s, "d", 1, UINT32_MAX), REC_ERANGE);

    const uint32_t dims[] = {1, 2, 15, 16, 17, 31, 33, 64, 100, 4095, 4096};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        uint32_t d = dims[i];
        s = new_space("d", d);
        assert_int_equal(s->dim, d);
        assert_int_equal(s->stride % 16, 0);
        assert_true(s->stride >= d && s->stride < d + 16);
        assert_int_equal(s->m[REC_KIND_ITEM].nrows, 0);
        assert_int_equal(s->m[REC_KIND_USER].count, 0);

        /* Rows are 64-byte aligned, across growth too. */
        float *v = calloc(d, sizeof *v);
        assert_non_null(v);
        const uint32_t idxs[] = {0, 1, 63, 64, 200};
        for (size_t j = 0; j < sizeof idxs / sizeof idxs[0]; j++) {
            assert_int_equal(rec_space_set(s, REC_KIND_ITEM, idxs[j], v, 0), 0);
            for (size_t r = 0; r <= j; r++) {
                const float *row = rec_space_get(s, REC_KIND_ITEM, idxs[r]);
                assert_non_null(row);
                assert_int_equal((uintptr_t)row % 64, 0);
            }
        }
        free(v);
        rec_space_free(s);
    }
}

/* ---- rows ------------------------------------------------------------ */

static void test_set_get_copies(void **state) {
    rec_space *s = new_space("copy", 19);
    float v[19], w[19];
    pattern(v, 19, 3);
    memcpy(w, v, sizeof v);

    assert_null(rec_space_get(s, REC_KIND_ITEM, 3));
    assert_false(rec_space_has(s, REC_KIND_ITEM, 3));
    assert_int_equal(rec_space_set(s, REC_KIND_ITEM, 3, v, 0), 0);
    v[0] = -999.0f; /* the space holds its own copy */
    const float *row = rec_space_get(s, REC_KIND_ITEM, 3);
    assert_non_null(row);
    assert_ptr_not_equal(row, v);
    assert_memory_equal(row, w, sizeof w);
    /* Padding after dim stays zero. */
    for (uint32_t i = s->dim; i < s->stride; i++)
        assert_true(row[i] == 0.0f);

    /* Items and users are separate matrices. */
    assert_true(rec_space_has(s, REC_KIND_ITEM, 3));
    assert_false(rec_space_has(s, REC_KIND_USER, 3));
    assert_null(rec_space_get(s, REC_KIND_USER, 3));
    assert_null(rec_space_get(s, REC_KIND_ITEM, 2));
    assert_null(rec_space_get(s, REC_KIND_ITEM, 1000000));

    /* Overwrite keeps count, updates contents and the inverse norm. */
    float z[19];
    for (int i = 0; i < 19; i++)
        z[i] = i == 4 ? 2.0f : 0.0f;
    assert_int_equal(rec_space_set(s, REC_KIND_ITEM, 3, z, 0), 0);
    assert_int_equal(s->m[REC_KIND_ITEM].count, 1);
    assert_memory_equal(rec_space_get(s, REC_KIND_ITEM, 3), z, sizeof z);
    assert_float_equal(s->m[REC_KIND_ITEM].inv_norms[3], 0.5f, 1e-7f);

    /* A zero vector is a present row with inverse norm 0. */
    memset(z, 0, sizeof z);
    assert_int_equal(rec_space_set(s, REC_KIND_USER, 0, z, 0), 0);
    assert_true(rec_space_has(s, REC_KIND_USER, 0));
    assert_true(s->m[REC_KIND_USER].inv_norms[0] == 0.0f);

    /* In-place update through rec_space_row + touch. */
    float *wr = rec_space_row(s, REC_KIND_ITEM, 3);
    assert_non_null(wr);
    wr[4] = 4.0f;
    rec_space_touch(s, REC_KIND_ITEM, 3);
    assert_float_equal(s->m[REC_KIND_ITEM].inv_norms[3], 0.25f, 1e-7f);
    assert_null(rec_space_row(s, REC_KIND_ITEM, 4));
    rec_space_touch(s, REC_KIND_ITEM, 4); /* absent: no-op */
    assert_false(rec_space_has(s, REC_KIND_ITEM, 4));
    rec_space_free(s);
}

static void test_nonfinite_refused(void **state) {
    rec_space *s = new_space("nan", 33);
    float v[33], bad[33];
    pattern(v, 33, 1);
    assert_int_equal(rec_space_set(s, REC_KIND_ITEM, 1, v, 0), 0);
    rec_space_clean(s, REC_KIND_ITEM);
    float inv = s->m[REC_KIND_ITEM].inv_norms[1];

    const float poison[] = {NAN, INFINITY, -INFINITY};
    const int where[] = {0, 16, 32};
    for (int p = 0; p < 3; p++) {
        for (int w = 0; w < 3; w++) {
            memcpy(bad, v, sizeof v);
            bad[where[w]] = poison[p];
            for (int i = 0; i < 33; i++)
                if (i != where[w])
                    bad[i] = -bad[i];
            /* Existing row: unchanged. */
            assert_int_equal(rec_space_set(s, REC_KIND_ITEM, 1, bad, 0),
                             REC_ENONFINITE);
            assert_memory_equal(rec_space_get(s, REC_KIND_ITEM, 1), v,
                                sizeof v);
            assert_true(s->m[REC_KIND_ITEM].inv_norms[1] == inv);
            /* New row: not created. */
            assert_int_equal(rec_space_set(s, REC_KIND_ITEM, 5, bad, 0),
                             REC_ENONFINITE);
            assert_false(rec_space_has(s, REC_KIND_ITEM, 5));
        }
    }
    assert_int_equal(s->m[REC_KIND_ITEM].count, 1);
    assert_int_equal(s->m[REC_KIND_ITEM].nrows, 2);
    assert_int_equal(s->m[REC_KIND_ITEM].ndirty, 0);
    rec_space_free(s);
}

static void test_growth_keeps_rows(void **state) {
    enum { D = 21, N = 20000 };
    rec_space *s = new_space("grow", D);
    float v[D];
    /* A far row first, then a dense run, then users interleaved. */
    pattern(v, D, 3 * N);
    assert_int_equal(rec_space_set(s, REC_KIND_ITEM, 3 * N, v, 1), 0);
    for (uint32_t r = 0; r < N; r++) {
        pattern(v, D, r);
        assert_int_equal(rec_space_set(s, REC_KIND_ITEM, r, v, 1), 0);
        if (r % 3 == 0) {
            pattern(v, D, r + 7);
            assert_int_equal(rec_space_set(s, REC_KIND_USER, r, v, 1), 0);
        }
    }
    assert_int_equal(s->m[REC_KIND_ITEM].count, N + 1);
    assert_int_equal(s->m[REC_KIND_ITEM].nrows, 3 * N + 1);
    assert_true(s->m[REC_KIND_ITEM].cap >= 3 * N + 1);
    assert_int_equal(s->m[REC_KIND_USER].count, (N + 2) / 3);
    for (uint32_t r = 0; r < N; r++) {
        pattern(v, D, r);
        const float *row = rec_space_get(s, REC_KIND_ITEM, r);
        assert_non_null(row);
        assert_memory_equal(row, v, sizeof v);
        if (r % 3 == 0) {
            pattern(v, D, r + 7);
            assert_memory_equal(rec_space_get(s, REC_KIND_USER, r), v,
                                sizeof v);
        } else {
            assert_null(rec_space_get(s, REC_KIND_USER, r));
        }
        double n2 = 0;
        for (int i = 0; i < D; i++)
            n2 += (double)row[i] * (double)row[i];
        float want = n2 > 0 ? (float)(1.0 / sqrt(n2)) : 0.0f;
        float got = s->m[REC_KIND_ITEM].inv_norms[r];
        assert_true(fabsf(got - want) <= 1e-5f * want + 1e-30f);
    }
    for (uint32_t r = N; r < 3 * N; r++)
        assert_false(rec_space_has(s, REC_KIND_ITEM, r));
    pattern(v, D, 3 * N);
    assert_memory_equal(rec_space_get(s, REC_KIND_ITEM, 3 * N), v, sizeof v);
    /* Loading with `clean` marks nothing dirty. */
    assert_int_equal(s->m[REC_KIND_ITEM].ndirty, 0);
    assert_int_equal(s->m[REC_KIND_USER].ndirty, 0);
    rec_space_free(s);
}

static void test_remove(void **state) {
    rec_space *s = new_space("rm", 5);
    float v[5];
    for (uint32_t r = 0; r < 10; r++) {
        pattern(v, 5, r + 1);
        assert_int_equal(rec_space_set(s, REC_KIND_ITEM, r, v, 1), 0);
    }
    rec_matrix *m = &s->m[REC_KIND_ITEM];
    assert_int_equal(m->nrows, 10);

    rec_space_remove(s, REC_KIND_ITEM, 5);
    assert_false(rec_space_has(s, REC_KIND_ITEM, 5));
    assert_null(rec_space_get(s, REC_KIND_ITEM, 5));
    assert_int_equal(m->count, 9);
    assert_int_equal(m->nrows, 10);
    assert_true(m->inv_norms[5] == 0.0f);
    assert_int_equal(m->ndirty, 1);
    assert_int_equal(m->dirty_list[0], 5);
    assert_true(bit(m->dirty, 5));

    rec_space_remove(s, REC_KIND_ITEM, 9);
    assert_int_equal(m->nrows, 9);
    /* Removing 8, 7, 6 shrinks past the hole at 5. */
    rec_space_remove(s, REC_KIND_ITEM, 8);
    rec_space_remove(s, REC_KIND_ITEM, 7);
    rec_space_remove(s, REC_KIND_ITEM, 6);
    assert_int_equal(m->nrows, 5);
    assert_int_equal(m->count, 5);

    /* Absent rows: no-op, nothing marked. */
    uint32_t nd = m->ndirty;
    rec_space_remove(s, REC_KIND_ITEM, 5);
    rec_space_remove(s, REC_KIND_ITEM, 100000);
    rec_space_remove(s, REC_KIND_USER, 0);
    assert_int_equal(m->ndirty, nd);
    assert_int_equal(m->count, 5);
    assert_int_equal(s->m[REC_KIND_USER].ndirty, 0);

    /* A removed row comes back with fresh contents. */
    pattern(v, 5, 77);
    assert_int_equal(rec_space_set(s, REC_KIND_ITEM, 7, v, 0), 0);
    assert_memory_equal(rec_space_get(s, REC_KIND_ITEM, 7), v, sizeof v);
    assert_int_equal(m->nrows, 8);
    assert_false(rec_space_has(s, REC_KIND_ITEM, 6));

    /* Removing everything leaves an empty scan. */
    for (uint32_t r = 0; r < 10; r++)
        rec_space_remove(s, REC_KIND_ITEM, r);
    assert_int_equal(m->nrows, 0);
    assert_int_equal(m->count, 0);
    rec_hit out[4];
    assert_int_equal(
        rec_space_topk(s, REC_KIND_ITEM, v, 0, NULL, 0, 4, out), 0);
    rec_space_free(s);
}

static void test_dirty_tracking(void **state) {
    rec_space *s = new_space("dirty", 4);
    rec_matrix *m = &s->m[REC_KIND_USER];
    float v[4] = {1, 2, 3, 4};
    assert_int_equal(rec_space_set(s, REC_KIND_USER, 3, v, 0), 0);
    assert_int_equal(rec_space_set(s, REC_KIND_USER, 70, v, 0), 0);
    assert_int_equal(rec_space_set(s, REC_KIND_USER, 3, v, 0), 0);
    assert_int_equal(rec_space_set(s, REC_KIND_USER, 1, v, 1), 0); /* clean */
    rec_space_touch(s, REC_KIND_USER, 70);
    assert_int_equal(m->ndirty, 2);
    assert_int_equal(m->dirty_list[0], 3);
    assert_int_equal(m->dirty_list[1], 70);
    assert_true(bit(m->dirty, 3));
    assert_true(bit(m->dirty, 70));
    assert_false(bit(m->dirty, 1));
    assert_int_equal(s->m[REC_KIND_ITEM].ndirty, 0);
    /* Learning (touch) is tracked apart, for checkpoints. */
    assert_int_equal(m->nlearned, 1);
    assert_int_equal(m->learned_list[0], 70);
    assert_true(bit(m->learned, 70));
    assert_false(bit(m->learned, 3));

    rec_space_clean(s, REC_KIND_USER);
    assert_int_equal(m->ndirty, 0);
    for (uint32_t r = 0; r < m->cap; r++)
        assert_false(bit(m->dirty, r));
    assert_int_equal(m->nlearned, 1);
    rec_space_clean_learned(s, REC_KIND_USER);
    assert_int_equal(m->nlearned, 0);
    assert_false(bit(m->learned, 70));

    /* After a clean, rows are tracked afresh, once each. */
    rec_space_touch(s, REC_KIND_USER, 1);
    rec_space_remove(s, REC_KIND_USER, 70);
    rec_space_touch(s, REC_KIND_USER, 1);
    assert_int_equal(m->ndirty, 1);
    assert_int_equal(m->nlearned, 1);
    assert_int_equal(m->dirty_list[0], 70);
    assert_int_equal(m->learned_list[0], 1);

    /* Every row dirty at once, across growth: the list holds each once. */
    rec_space_clean(s, REC_KIND_USER);
    for (uint32_t r = 0; r < 1000; r++)
        assert_int_equal(rec_space_set(s, REC_KIND_USER, r, v, 0), 0);
    for (uint32_t r = 0; r < 1000; r++)
        assert_int_equal(rec_space_set(s, REC_KIND_USER, 999 - r, v, 0), 0);
    assert_int_equal(m->ndirty, 1000);
    for (uint32_t r = 0; r < 1000; r++)
        assert_int_equal(m->dirty_list[r], r);
    rec_space_clean(s, REC_KIND_USER);
    assert_int_equal(m->ndirty, 0);
    rec_space_free(s);
}

/* ---- top-k ----------------------------------------------------------- */

typedef struct ref_hit {
    uint32_t idx;
    double score;
} ref_hit;

static int ref_cmp(const void *pa, const void *pb) {
    const ref_hit *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

/* Score of row r in double: dot, or cosine (0 when either is zero). */
static double ref_score(const rec_space *s, rec_kind k, uint32_t r,
                        const float *q, int cosine) {
    const float *row = s->m[k].rows + (size_t)r * s->stride;
    double dot = 0, nr = 0, nq = 0;
    for (uint32_t i = 0; i < s->dim; i++) {
        dot += (double)row[i] * (double)q[i];
        nr += (double)row[i] * (double)row[i];
        nq += (double)q[i] * (double)q[i];
    }
    if (!cosine)
        return dot;
    return nr > 0 && nq > 0 ? dot / sqrt(nr * nq) : 0.0;
}

/* Compare rec_space_topk with a sort of every eligible row. Near-ties
 * may legitimately swap, so each rank is checked by score, and every hit
 * must be an eligible row scored correctly. */
static void check_topk(const rec_space *s, rec_kind k, const float *q,
                       int cosine, const uint64_t *ex, size_t exw,
                       size_t topk) {
    const rec_matrix *m = &s->m[k];
    ref_hit *ref = calloc(m->nrows + 1, sizeof *ref);
    rec_hit *out = calloc(topk + 1, sizeof *out);
    assert_non_null(ref);
    assert_non_null(out);
    size_t n = 0;
    for (uint32_t r = 0; r < m->nrows; r++) {
        if (!rec_space_has(s, k, r))
            continue;
        if (ex && (r >> 6) < exw && bit(ex, r))
            continue;
        ref[n].idx = r;
        ref[n++].score = ref_score(s, k, r, q, cosine);
    }
    qsort(ref, n, sizeof *ref, ref_cmp);
    size_t want = n < topk ? n : topk;

    int got = rec_space_topk(s, k, q, cosine, ex, exw, topk, out);
    assert_int_equal(got, (int)want);
    const double tol = 1e-4;
    for (size_t i = 0; i < want; i++) {
        uint32_t r = out[i].idx;
        assert_true(rec_space_has(s, k, r));
        if (ex && (r >> 6) < exw)
            assert_false(bit(ex, r));
        for (size_t j = 0; j < i; j++)
            assert_int_not_equal(out[j].idx, r);
        if (i > 0)
            assert_true(rec_hit_cmp(&out[i - 1], &out[i]) < 0);
        double exact = ref_score(s, k, r, q, cosine);
        double sc = (double)out[i].score;
        if (fabs(sc - exact) > tol || fabs(sc - ref[i].score) > tol)
            fail_msg("rank %zu: got idx %u score %g (exact %g), reference "
                     "idx %u score %g",
                     i, r, (double)out[i].score, exact, ref[i].idx,
                     ref[i].score);
        /* Clear winners must match exactly. */
        int clear = (i == 0 || ref[i - 1].score - ref[i].score > tol) &&
                    (i + 1 >= n || ref[i].score - ref[i + 1].score > tol);
        if (clear)
            assert_int_equal(r, ref[i].idx);
    }
    free(ref);
    free(out);
}

static void test_topk_matches_reference(void **state) {
    enum { D = 37, N = 700 };
    seed(12345);
    rec_space *s = new_space("topk", D);
    float v[D], q[D];
    /* Rows: most present, every 11th never set, every 13th set then
     * removed, a few zero vectors. */
    for (uint32_t r = 0; r < N; r++) {
        if (r % 11 == 5)
            continue;
        for (int i = 0; i < D; i++)
            v[i] = r % 97 == 3 ? 0.0f : rnd() * (1.0f + (float)(r % 5));
        assert_int_equal(rec_space_set(s, REC_KIND_ITEM, r, v, 0), 0);
    }
    for (uint32_t r = 0; r < N; r += 13)
        rec_space_remove(s, REC_KIND_ITEM, r);
    for (int i = 0; i < D; i++)
        q[i] = rnd();

    uint64_t ex[(N + 63) / 64];
    memset(ex, 0, sizeof ex);
    for (uint32_t r = 0; r < N; r++)
        if (xorshift() % 4 == 0)
            ex[r >> 6] |= 1ull << (r & 63);

    const size_t ks[] = {1, 2, 10, 64, 100, 1000};
    for (int cosine = 0; cosine <= 1; cosine++) {
        for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
            check_topk(s, REC_KIND_ITEM, q, cosine, NULL, 0, ks[i]);
            check_topk(s, REC_KIND_ITEM, q, cosine, ex, (N + 63) / 64, ks[i]);
            /* A short bitmap excludes only the rows it covers. */
            check_topk(s, REC_KIND_ITEM, q, cosine, ex, 3, ks[i]);
        }
    }

    /* Cosine ignores row length; dot does not. */
    float big[D];
    for (int i = 0; i < D; i++)
        big[i] = q[i] * 1000.0f;
    assert_int_equal(rec_space_set(s, REC_KIND_ITEM, N + 50, big, 0), 0);
    float small[D];
    for (int i = 0; i < D; i++)
        small[i] = q[i] * 0.001f;
    assert_int_equal(rec_space_set(s, REC_KIND_ITEM, N + 51, small, 0), 0);
    rec_hit out[2];
    assert_int_equal(rec_space_topk(s, REC_KIND_ITEM, q, 0, NULL, 0, 1, out),
                     1);
    assert_int_equal(out[0].idx, N + 50);
    assert_int_equal(rec_space_topk(s, REC_KIND_ITEM, q, 1, NULL, 0, 2, out),
                     2);
    assert_int_equal(out[0].idx, N + 50); /* cosine 1, tie: lower idx */
    assert_int_equal(out[1].idx, N + 51);
    assert_float_equal(out[0].score, 1.0f, 1e-5f);
    assert_float_equal(out[1].score, 1.0f, 1e-5f);
    check_topk(s, REC_KIND_ITEM, q, 1, ex, (N + 63) / 64, 50);
    rec_space_free(s);
}

static void test_topk_edge_cases(void **state) {
    rec_space *s = new_space("edge", 3);
    float q[3] = {1, 0, 0};
    rec_hit out[8];
    /* Empty space, both kinds, both metrics. */
    for (int c = 0; c <= 1; c++) {
        assert_int_equal(
            rec_space_topk(s, REC_KIND_ITEM, q, c, NULL, 0, 8, out), 0);
        assert_int_equal(
            rec_space_topk(s, REC_KIND_USER, q, c, NULL, 0, 8, out), 0);
    }
    float a[3] = {1, 0, 0}, b[3] = {0, 2, 0}, c3[3] = {-3, 0, 0};
    assert_int_equal(rec_space_set(s, REC_KIND_ITEM, 2, a, 0), 0);
    assert_int_equal(rec_space_set(s, REC_KIND_ITEM, 4, b, 0), 0);
    assert_int_equal(rec_space_set(s, REC_KIND_ITEM, 9, c3, 0), 0);
    /* k larger than the number of rows: every present row, ranked. */
    assert_int_equal(rec_space_topk(s, REC_KIND_ITEM, q, 0, NULL, 0, 8, out),
                     3);
    assert_int_equal(out[0].idx, 2);
    assert_int_equal(out[1].idx, 4);
    assert_int_equal(out[2].idx, 9);
    assert_true(out[0].score == 1.0f);
    assert_true(out[1].score == 0.0f);
    assert_true(out[2].score == -3.0f);
    /* k = 0 */
    assert_int_equal(rec_space_topk(s, REC_KIND_ITEM, q, 0, NULL, 0, 0, out),
                     0);
    /* Users are still empty. */
    assert_int_equal(rec_space_topk(s, REC_KIND_USER, q, 0, NULL, 0, 8, out),
                     0);
    /* Everything excluded. */
    uint64_t ex = ~0ull;
    assert_int_equal(rec_space_topk(s, REC_KIND_ITEM, q, 1, &ex, 1, 8, out),
                     0);
    /* A zero query scores every row 0 by cosine. */
    float zq[3] = {0, 0, 0};
    assert_int_equal(rec_space_topk(s, REC_KIND_ITEM, zq, 1, NULL, 0, 8, out),
                     3);
    for (int i = 0; i < 3; i++)
        assert_true(out[i].score == 0.0f);
    assert_int_equal(out[0].idx, 2);
    rec_space_free(s);
}

/* The exact top-k of a matrix by the float scan alone, for reference. */
static size_t float_topk(const rec_space *s, const float *q, int cosine,
                         size_t k, rec_hit *out) {
    const rec_matrix *m = &s->m[REC_KIND_ITEM];
    size_t words = ((size_t)m->nrows + 63) / 64;
    uint64_t *skip = malloc(words * sizeof *skip);
    assert_non_null(skip);
    for (size_t w = 0; w < words; w++)
        skip[w] = ~m->present[w];
    rec_scan sc = {m->rows, s->stride, m->nrows, s->dim,
                   cosine ? m->inv_norms : NULL, skip};
    size_t n = rec_vec_topk(&sc, q, k, out);
    free(skip);
    return n;
}

static void expect_same_topk(const rec_space *s, const float *q, int cosine,
                             size_t k) {
    rec_hit a[64], b[64];
    assert_true(k <= 64);
    int n = rec_space_topk(s, REC_KIND_ITEM, q, cosine, NULL, 0, k, a);
    assert_true(n >= 0);
    assert_int_equal((size_t)n, float_topk(s, q, cosine, k, b));
    for (int i = 0; i < n; i++) {
        assert_int_equal(a[i].idx, b[i].idx);
        assert_memory_equal(&a[i].score, &b[i].score, sizeof(float));
    }
}

/* Items 0..n-1 of s set to random rows of d, drawn after seeding with
 * `sd`, then a random query of d into q. */
static void fill_random(rec_space *s, uint32_t n, uint32_t d, unsigned sd, float *q) {
    float v[REC_DIM_MAX];
    seed(sd);
    for (uint32_t i = 0; i < n; i++) {
        for (uint32_t j = 0; j < d; j++)
            v[j] = rnd();
        assert_int_equal(rec_space_set(s, REC_KIND_ITEM, i, v, REC_SET_DIRTY), 0);
    }
    for (uint32_t j = 0; j < d; j++)
        q[j] = rnd();
}

/* A large matrix is scanned through a bf16 copy made at its first scan;
 * the copy follows every later set, in-place update and removal, and the
 * answers stay the float scan's. */
static void test_topk_bf16_copy_follows(void **state) {
    const uint32_t n = 20000, d = 24;
    rec_space *s = new_space("big", d);
    float v[24], q[24];
    fill_random(s, n, d, 77, q);
    for (int cosine = 0; cosine < 2; cosine++)
        expect_same_topk(s, q, cosine, 20);
    const rec_matrix *m = &s->m[REC_KIND_ITEM];
    assert_int_equal(m->rows16_state, rec_vec_bf16_scan_ok() ? 1 : 0);

    /* Rows set to point along q (an existing one, a new one past the
     * capacity), one moved in place, and the best rows removed: each must
     * show in the next answers. */
    rec_hit top[5];
    assert_int_equal(rec_space_topk(s, REC_KIND_ITEM, q, 0, NULL, 0, 5, top), 5);
    for (int i = 0; i < 5; i++)
        rec_space_remove(s, REC_KIND_ITEM, top[i].idx);
    for (uint32_t j = 0; j < d; j++)
        v[j] = 3.0f * q[j];
    assert_int_equal(rec_space_set(s, REC_KIND_ITEM, 17, v, REC_SET_DIRTY), 0);
    assert_int_equal(rec_space_set(s, REC_KIND_ITEM, 40000, v, REC_SET_DIRTY), 0); /* grows */
    float *row = rec_space_row(s, REC_KIND_ITEM, 4242);
    assert_non_null(row);
    for (uint32_t j = 0; j < d; j++)
        row[j] = 2.0f * q[j];
    rec_space_touch(s, REC_KIND_ITEM, 4242);
    rec_hit now[3];
    assert_int_equal(rec_space_topk(s, REC_KIND_ITEM, q, 0, NULL, 0, 3, now), 3);
    assert_int_equal(now[0].idx, 17);
    assert_int_equal(now[1].idx, 40000);
    assert_int_equal(now[2].idx, 4242);
    for (int cosine = 0; cosine < 2; cosine++)
        expect_same_topk(s, q, cosine, 30);
    rec_space_free(s);
}

/* The copy of a matrix larger than a step is made over several scans,
 * which answer in float meanwhile; rows set while it is made, on either
 * side of the rows already copied, are in it when it is done. */
static void test_topk_bf16_copy_made_in_steps(void **state) {
    (void)state;
    const uint32_t n = 20000, d = 4;
    rec_space *s = new_space("huge", d);
    s->copy_step = 8192; /* the logic of 65,536 rows a step, at a test's size */
    float v[4], q[4];
    fill_random(s, n, d, 78, q);
    const rec_matrix *m = &s->m[REC_KIND_ITEM];
    if (!rec_vec_bf16_scan_ok()) {
        expect_same_topk(s, q, 1, 20);
        assert_int_equal(m->rows16_state, 0);
        rec_space_free(s);
        return;
    }
    expect_same_topk(s, q, 1, 20);
    assert_int_equal(m->rows16_state, 2);
    assert_int_equal(m->rows16_built, 8192);
    for (uint32_t j = 0; j < d; j++)
        v[j] = 5.0f * q[j];
    assert_int_equal(rec_space_set(s, REC_KIND_ITEM, 100, v, REC_SET_DIRTY), 0);    /* copied */
    assert_int_equal(rec_space_set(s, REC_KIND_ITEM, 18000, v, REC_SET_DIRTY), 0); /* not yet */
    expect_same_topk(s, q, 0, 20);
    assert_int_equal(m->rows16_state, 2);
    expect_same_topk(s, q, 0, 20);
    assert_int_equal(m->rows16_state, 1); /* the third step copied the rest */
    rec_hit top[2];
    assert_int_equal(rec_space_topk(s, REC_KIND_ITEM, q, 0, NULL, 0, 2, top), 2);
    assert_int_equal(top[0].idx, 100); /* equal scores: by index */
    assert_int_equal(top[1].idx, 18000);
    for (int cosine = 0; cosine < 2; cosine++)
        expect_same_topk(s, q, cosine, 30);
    rec_space_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_validation),
        cmocka_unit_test(test_dim_range),
        cmocka_unit_test(test_set_get_copies),
        cmocka_unit_test(test_nonfinite_refused),
        cmocka_unit_test(test_growth_keeps_rows),
        cmocka_unit_test(test_remove),
        cmocka_unit_test(test_dirty_tracking),
        cmocka_unit_test(test_topk_matches_reference),
        cmocka_unit_test(test_topk_bf16_copy_made_in_steps),
        cmocka_unit_test(test_topk_edge_cases),
        cmocka_unit_test(test_topk_bf16_copy_follows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
