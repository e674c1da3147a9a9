/* test_model.c - the online-learning primitives: the seeded generator
 * (rng), online matrix factorisation (mf) and decayed counters (counter).
 *
 * The generator is checked for reproducibility and rough uniformity; MF for
 * the direction of each step (loss falls, the positive overtakes the
 * negatives), its no-op cases and dirty marking, and end to end on a small
 * two-community dataset it must learn; counters for exact decay arithmetic.
 * Every random choice comes from rec_rng with a fixed seed.
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
#include "counter.h"
#include "mf.h"
#include "rng.h"

/* ---- helpers --------------------------------------------------------- */

static int bit(const uint64_t *map, uint32_t r) {
    return (int)(map[r >> 6] >> (r & 63) & 1);
}

static void assert_rel(double got, double want, double rel) {
    if (!(fabs(got - want) <= rel * fabs(want)))
        fail_msg("got %.17g, want %.17g (relative tolerance %g)", got, want,
                 rel);
}

/* A space of nusers users and nitems items, all randomly initialised. */
static rec_space *random_space(uint32_t dim, uint32_t nusers,
                               uint32_t nitems, uint64_t seed,
                               const rec_mf_opts *o) {
    rec_space *s = NULL;
    assert_int_equal(rec_space_new(&s, "mf", 1, dim), 0);
    rec_rng r;
    rec_rng_seed(&r, seed);
    float *v = calloc(dim, sizeof *v);
    assert_non_null(v);
    for (uint32_t u = 0; u < nusers; u++) {
        rec_mf_init_vector(&r, o, v, dim);
        assert_int_equal(rec_space_set(s, REC_KIND_USER, u, v, 1), 0);
    }
    for (uint32_t i = 0; i < nitems; i++) {
        rec_mf_init_vector(&r, o, v, dim);
        assert_int_equal(rec_space_set(s, REC_KIND_ITEM, i, v, 1), 0);
    }
    free(v);
    return s;
}

static float dot_ui(const rec_space *s, uint32_t u, uint32_t i) {
    return rec_vec_dot(rec_space_get(s, REC_KIND_USER, u),
                       rec_space_get(s, REC_KIND_ITEM, i), s->dim);
}

/* ---- generator ------------------------------------------------------- */

static void test_rng_reproducible(void **state) {
    rec_rng a, b, c;
    rec_rng_seed(&a, 42);
    rec_rng_seed(&b, 42);
    rec_rng_seed(&c, 43);
    int differs = 0;
    for (int i = 0; i < 10000; i++) {
        uint64_t x = rec_rng_next(&a), y = rec_rng_next(&b);
        assert_true(x == y);
        differs += rec_rng_next(&c) != x;
    }
    assert_true(differs > 9990);

    /* Seed 0 is a usable seed (splitmix never gives an all-zero state). */
    rec_rng z;
    rec_rng_seed(&z, 0);
    assert_false(z.s[0] == 0 && z.s[1] == 0 && z.s[2] == 0 && z.s[3] == 0);
    uint64_t first = rec_rng_next(&z), same = 0;
    for (int i = 0; i < 100; i++)
        same += rec_rng_next(&z) == first;
    assert_true(same == 0);

    /* Reseeding restarts the sequence. */
    rec_rng_seed(&a, 42);
    rec_rng_seed(&b, 42);
    for (int i = 0; i < 100; i++) {
        assert_true(rec_rng_below(&a, 1000) == rec_rng_below(&b, 1000));
        assert_true(rec_rng_unit(&a) == rec_rng_unit(&b));
    }
}

static void test_rng_below(void **state) {
    enum { DRAWS = 100000, BUCKETS = 10 };
    rec_rng r;
    rec_rng_seed(&r, 7);
    unsigned count[BUCKETS] = {0};
    for (int i = 0; i < DRAWS; i++) {
        uint32_t x = rec_rng_below(&r, BUCKETS);
        assert_true(x < BUCKETS);
        count[x]++;
    }
    /* Chi-square, 9 degrees of freedom: 40 is p < 1e-5 for a fair die. */
    double chi2 = 0, e = (double)DRAWS / BUCKETS;
    for (int i = 0; i < BUCKETS; i++)
        chi2 += ((double)count[i] - e) * ((double)count[i] - e) / e;
    if (chi2 > 40.0)
        fail_msg("chi-square %.2f over %d buckets", chi2, BUCKETS);

    /* n = 1 always gives 0; large and awkward n stay in range. */
    for (int i = 0; i < 1000; i++)
        assert_int_equal(rec_rng_below(&r, 1), 0);
    const uint32_t ns[] = {2, 3, 7, 1000003, 0x80000001u, 3000000000u,
                           UINT32_MAX};
    for (size_t j = 0; j < sizeof ns / sizeof ns[0]; j++) {
        uint32_t hi = 0;
        for (int i = 0; i < 20000; i++) {
            uint32_t x = rec_rng_below(&r, ns[j]);
            assert_true(x < ns[j]);
            if (x > hi)
                hi = x;
        }
        /* The top half of the range is reached. */
        assert_true(hi >= ns[j] / 2);
    }

    /* n = 3 with 2^32 not divisible by 3: still balanced. */
    unsigned c3[3] = {0};
    for (int i = 0; i < 30000; i++)
        c3[rec_rng_below(&r, 3)]++;
    for (int i = 0; i < 3; i++)
        assert_true(c3[i] > 9500 && c3[i] < 10500);
}

static void test_rng_unit(void **state) {
    rec_rng r;
    rec_rng_seed(&r, 99);
    double lo = 1, hi = 0, sum = 0;
    unsigned dec[10] = {0};
    for (int i = 0; i < 100000; i++) {
        double x = rec_rng_unit(&r);
        assert_true(x >= 0.0 && x < 1.0);
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
        sum += x;
        dec[(int)(x * 10)]++;
    }
    assert_true(lo < 0.001 && hi > 0.999);
    assert_true(fabs(sum / 100000 - 0.5) < 0.01);
    for (int i = 0; i < 10; i++)
        assert_true(dec[i] > 9000 && dec[i] < 11000);
}

/* ---- matrix factorisation -------------------------------------------- */

static void test_mf_opts_and_init(void **state) {
    rec_mf_opts o;
    rec_mf_opts_default(&o);
    assert_float_equal(o.lr, 0.05f, 1e-9f);
    assert_float_equal(o.reg, 0.01f, 1e-9f);
    assert_int_equal(o.negatives, 4);
    assert_float_equal(o.init_scale, 0.1f, 1e-9f);

    const uint32_t dims[] = {1, 8, 64, 300};
    for (size_t j = 0; j < sizeof dims / sizeof dims[0]; j++) {
        uint32_t d = dims[j];
        float *a = calloc(d, sizeof *a), *b = calloc(d, sizeof *b);
        assert_non_null(a);
        assert_non_null(b);
        rec_rng ra, rb;
        rec_rng_seed(&ra, 5);
        rec_rng_seed(&rb, 5);
        rec_mf_init_vector(&ra, &o, a, d);
        rec_mf_init_vector(&rb, &o, b, d);
        assert_memory_equal(a, b, d * sizeof *a);

        /* Bounded by init_scale / sqrt(dim), and not degenerate. */
        float bound = o.init_scale / sqrtf((float)d);
        float amax = 0;
        for (uint32_t i = 0; i < d; i++) {
            assert_true(fabsf(a[i]) <= bound);
            amax = fabsf(a[i]) > amax ? fabsf(a[i]) : amax;
        }
        assert_true(amax > 0.0f);
        if (d >= 8)
            assert_true(amax > 0.5f * bound);

        /* The next vector from the same generator is different. */
        rec_mf_init_vector(&ra, &o, b, d);
        assert_memory_not_equal(a, b, d * sizeof *a);
        free(a);
        free(b);
    }

    /* Another scale scales the bound. */
    o.init_scale = 2.0f;
    float v[16];
    rec_rng r;
    rec_rng_seed(&r, 5);
    rec_mf_init_vector(&r, &o, v, 16);
    for (int i = 0; i < 16; i++)
        assert_true(fabsf(v[i]) <= 0.5f);
}

static void test_mf_step_learns_pair(void **state) {
    rec_mf_opts o;
    rec_mf_opts_default(&o);
    rec_space *s = random_space(16, 4, 10, 1, &o);
    const uint32_t negs[] = {2, 3, 4, 5};

    /* Before training the scores are all near 0: loss ~ ln 2. */
    float first = rec_mf_step(s, 0, 1, 1.0f, negs, 4, &o);
    assert_true(fabsf(first - logf(2.0f)) < 0.05f);
    float prev = first, last = first;
    int rises = 0;
    for (int i = 0; i < 300; i++) {
        last = rec_mf_step(s, 0, 1, 1.0f, negs, 4, &o);
        assert_true(isfinite(last) && last >= 0.0f);
        rises += last > prev;
        prev = last;
    }
    assert_int_equal(rises, 0); /* monotone on a single fixed example */
    assert_true(last < 0.5f * first);
    for (int j = 0; j < 4; j++)
        assert_true(dot_ui(s, 0, 1) > dot_ui(s, 0, negs[j]));

    /* Items never named did not move: a step touches only its rows. */
    rec_space *ref = random_space(16, 4, 10, 1, &o);
    for (uint32_t i = 6; i < 10; i++)
        assert_memory_equal(rec_space_get(s, REC_KIND_ITEM, i),
                            rec_space_get(ref, REC_KIND_ITEM, i),
                            16 * sizeof(float));
    for (uint32_t u = 1; u < 4; u++)
        assert_memory_equal(rec_space_get(s, REC_KIND_USER, u),
                            rec_space_get(ref, REC_KIND_USER, u),
                            16 * sizeof(float));

    /* The cached inverse norms follow the updates. */
    const float *row = rec_space_get(s, REC_KIND_USER, 0);
    float want = 1.0f / sqrtf(rec_vec_norm2(row, 16));
    assert_true(fabsf(s->m[REC_KIND_USER].inv_norms[0] - want) <=
                1e-5f * want);
    rec_space_free(ref);
    rec_space_free(s);
}

static void test_mf_step_weight_scales(void **state) {
    rec_mf_opts o;
    rec_mf_opts_default(&o);
    rec_space *a = random_space(8, 1, 3, 9, &o);
    rec_space *b = random_space(8, 1, 3, 9, &o);
    const uint32_t neg = 2;
    float la = rec_mf_step(a, 0, 1, 1.0f, &neg, 1, &o);
    float lb = rec_mf_step(b, 0, 1, 3.0f, &neg, 1, &o);
    assert_true(la == lb); /* loss is measured before the update */
    /* A heavier event moves the rows proportionally further. */
    rec_space *r = random_space(8, 1, 3, 9, &o);
    double da = 0, db = 0;
    for (int i = 0; i < 8; i++) {
        double x = (double)rec_space_get(r, REC_KIND_ITEM, 1)[i];
        da += fabs((double)rec_space_get(a, REC_KIND_ITEM, 1)[i] - x);
        db += fabs((double)rec_space_get(b, REC_KIND_ITEM, 1)[i] - x);
    }
    assert_true(db > 2.5 * da && db < 3.5 * da);
    rec_space_free(r);
    rec_space_free(a);
    rec_space_free(b);
}

static void test_mf_step_noops(void **state) {
    rec_mf_opts o;
    rec_mf_opts_default(&o);
    rec_space *s = random_space(8, 2, 6, 3, &o);
    rec_space *ref = random_space(8, 2, 6, 3, &o);
    const uint32_t negs[] = {2, 3};
    const uint32_t self[] = {1, 1};
    const uint32_t absent[] = {40, 41};

    assert_true(rec_mf_step(s, 0, 1, 1.0f, negs, 0, &o) == 0.0f);
    assert_true(rec_mf_step(s, 0, 1, 1.0f, NULL, 0, &o) == 0.0f);
    assert_true(rec_mf_step(s, 0, 1, 0.0f, negs, 2, &o) == 0.0f);
    assert_true(rec_mf_step(s, 0, 1, -1.0f, negs, 2, &o) == 0.0f);
    assert_true(rec_mf_step(s, 0, 1, NAN, negs, 2, &o) == 0.0f);
    /* Negatives equal to the positive are skipped; so are absent ones. */
    assert_true(rec_mf_step(s, 0, 1, 1.0f, self, 2, &o) == 0.0f);
    assert_true(rec_mf_step(s, 0, 1, 1.0f, absent, 2, &o) == 0.0f);
    /* Absent user or positive. */
    assert_true(rec_mf_step(s, 9, 1, 1.0f, negs, 2, &o) == 0.0f);
    assert_true(rec_mf_step(s, 0, 9, 1.0f, negs, 2, &o) == 0.0f);

    for (int k = 0; k < 2; k++) {
        assert_int_equal(s->m[k].nlearned, 0);
        size_t n = k == REC_KIND_USER ? 2 : 6;
        for (uint32_t r = 0; r < n; r++)
            assert_memory_equal(rec_space_get(s, (rec_kind)k, r),
                                rec_space_get(ref, (rec_kind)k, r),
                                8 * sizeof(float));
    }

    /* A mix of valid, self and absent negatives: only the valid one counts. */
    const uint32_t mixed[] = {1, 40, 3};
    const uint32_t only3[] = {3};
    float lm = rec_mf_step(s, 0, 1, 1.0f, mixed, 3, &o);
    float lo = rec_mf_step(ref, 0, 1, 1.0f, only3, 1, &o);
    assert_true(lm == lo);
    for (int k = 0; k < 2; k++) {
        size_t n = k == REC_KIND_USER ? 2 : 6;
        for (uint32_t r = 0; r < n; r++)
            assert_memory_equal(rec_space_get(s, (rec_kind)k, r),
                                rec_space_get(ref, (rec_kind)k, r),
                                8 * sizeof(float));
    }
    rec_space_free(ref);
    rec_space_free(s);
}

static void test_mf_step_marks_dirty(void **state) {
    rec_mf_opts o;
    rec_mf_opts_default(&o);
    rec_space *s = random_space(8, 3, 8, 4, &o);
    const uint32_t negs[] = {5, 2, 5};
    assert_int_equal(s->m[REC_KIND_USER].ndirty, 0);
    assert_int_equal(s->m[REC_KIND_ITEM].ndirty, 0);
    assert_true(rec_mf_step(s, 1, 3, 1.0f, negs, 3, &o) > 0.0f);

    const rec_matrix *mu = &s->m[REC_KIND_USER], *mi = &s->m[REC_KIND_ITEM];
    assert_int_equal(mu->nlearned, 1);
    assert_int_equal(mu->learned_list[0], 1);
    assert_int_equal(mi->nlearned, 3); /* 3, 5, 2: each once */
    for (uint32_t r = 0; r < 8; r++)
        assert_int_equal(bit(mi->learned, r), r == 2 || r == 3 || r == 5);
    assert_int_equal(mu->ndirty, 0); /* learning waits for a checkpoint */
    rec_space_free(s);
}

/* Two communities: even users like items 0..9, odd users items 10..19.
 * Negatives are sampled uniformly from all items, as the engine does, so
 * some are from the user's own group. */
static void test_mf_learns_groups(void **state) {
    enum { USERS = 20, ITEMS = 20, DIM = 8, STEPS = 6000 };
    rec_mf_opts o;
    rec_mf_opts_default(&o);
    rec_space *s = random_space(DIM, USERS, ITEMS, 2024, &o);
    rec_rng r;
    rec_rng_seed(&r, 77);
    double early = 0, late = 0;
    for (int step = 0; step < STEPS; step++) {
        uint32_t u = rec_rng_below(&r, USERS);
        uint32_t pos = (u % 2) * 10 + rec_rng_below(&r, 10);
        uint32_t negs[4];
        for (int j = 0; j < 4; j++)
            negs[j] = rec_rng_below(&r, ITEMS);
        float loss = rec_mf_step(s, u, pos, 1.0f, negs, 4, &o);
        assert_true(isfinite(loss));
        if (step < 500)
            early += (double)loss;
        else if (step >= STEPS - 500)
            late += (double)loss;
    }
    assert_true(late < 0.75 * early);

    rec_hit hits[5];
    for (uint32_t u = 0; u < USERS; u++) {
        const float *q = rec_space_get(s, REC_KIND_USER, u);
        int n = rec_space_topk(s, REC_KIND_ITEM, q, 0, NULL, 0, 5, hits);
        assert_int_equal(n, 5);
        for (int j = 0; j < n; j++)
            if (hits[j].idx / 10 != u % 2)
                fail_msg("user %u (group %u): rank %d is item %u", u, u % 2,
                         j, hits[j].idx);
    }
    rec_space_free(s);
}

/* ---- counters -------------------------------------------------------- */

static rec_counter *new_counter(double half_life) {
    rec_counter *c = NULL;
    assert_int_equal(rec_counter_new(&c, "views", 3, half_life), 0);
    assert_non_null(c);
    return c;
}

static void test_counter_validation(void **state) {
    rec_counter dummy;
    rec_counter *c = &dummy;
    assert_int_equal(rec_counter_new(&c, "", 1, 0), REC_EINVAL);
    assert_null(c);
    c = &dummy;
    assert_int_equal(rec_counter_new(&c, NULL, 1, 0), REC_EINVAL);
    assert_null(c);
    assert_int_equal(rec_counter_new(&c, "a b", 1, 0), REC_EINVAL);
    char n64[65];
    memset(n64, 'x', 64);
    n64[64] = 0;
    assert_int_equal(rec_counter_new(&c, n64, 1, 0), REC_EINVAL);
    assert_int_equal(rec_counter_new(&c, "ok", 1, -1.0), REC_EINVAL);
    assert_int_equal(rec_counter_new(&c, "ok", 1, NAN), REC_EINVAL);
    assert_int_equal(rec_counter_new(&c, "ok", 1, INFINITY), REC_EINVAL);
    assert_int_equal(rec_counter_new(&c, "ok", 1, -INFINITY), REC_EINVAL);
    assert_null(c);

    n64[63] = 0;
    assert_int_equal(rec_counter_new(&c, n64, 9, 0.0), 0);
    assert_string_equal(c->name, n64);
    assert_int_equal(c->id, 9);
    assert_true(c->half_life == 0.0);
    /* Non-finite amounts and times are refused and change nothing. */
    assert_int_equal(rec_counter_add(c, 0, NAN, 1), REC_EINVAL);
    assert_int_equal(rec_counter_add(c, 0, INFINITY, 1), REC_EINVAL);
    assert_int_equal(rec_counter_add(c, 0, 1, NAN), REC_EINVAL);
    assert_true(rec_counter_get(c, 0, 1) == 0.0);
    assert_int_equal(c->ndirty, 0);
    rec_counter_free(c);
    rec_counter_free(NULL);
}

static void test_counter_no_decay(void **state) {
    rec_counter *c = new_counter(0.0);
    assert_int_equal(rec_counter_add(c, 4, 1.0, 0.0), 0);
    assert_int_equal(rec_counter_add(c, 4, 2.5, 100.0), 0);
    assert_int_equal(rec_counter_add(c, 4, 0.5, 50.0), 0); /* out of order */
    assert_int_equal(rec_counter_add(c, 2, -1.0, 10.0), 0);
    assert_true(rec_counter_get(c, 4, 0.0) == 4.0);
    assert_true(rec_counter_get(c, 4, 1e9) == 4.0);
    assert_true(rec_counter_get(c, 2, 1e9) == -1.0);
    assert_true(rec_counter_get(c, 3, 1e9) == 0.0);
    assert_int_equal(c->n, 5);
    rec_counter_free(c);
}

static void test_counter_half_life(void **state) {
    const double hl = 3600.0, t0 = 1.7e9;
    rec_counter *c = new_counter(hl);
    assert_int_equal(rec_counter_add(c, 0, 8.0, t0), 0);
    assert_rel(rec_counter_get(c, 0, t0), 8.0, 1e-12);
    assert_rel(rec_counter_get(c, 0, t0 + hl), 4.0, 1e-9);
    assert_rel(rec_counter_get(c, 0, t0 + 2 * hl), 2.0, 1e-9);
    assert_rel(rec_counter_get(c, 0, t0 + hl / 2), 8.0 / sqrt(2.0), 1e-9);

    /* In-order adds: the stored value decays to the new time first. */
    assert_int_equal(rec_counter_add(c, 0, 1.0, t0 + hl), 0);
    assert_rel(rec_counter_get(c, 0, t0 + hl), 5.0, 1e-9);
    assert_rel(rec_counter_get(c, 0, t0 + 2 * hl), 2.5, 1e-9);

    /* Out-of-order add: an event one half-life old counts half, and the
     * clock does not move back. */
    assert_int_equal(rec_counter_add(c, 1, 1.0, t0), 0);
    assert_int_equal(rec_counter_add(c, 1, 1.0, t0 - hl), 0);
    assert_rel(rec_counter_get(c, 1, t0), 1.5, 1e-9);
    assert_true(c->t_last[1] == t0);
    assert_int_equal(rec_counter_add(c, 1, 4.0, t0 - 2 * hl), 0);
    assert_rel(rec_counter_get(c, 1, t0), 2.5, 1e-9);
    assert_rel(rec_counter_get(c, 1, t0 + hl), 1.25, 1e-9);

    /* Order of arrival does not matter for the value. */
    rec_counter *d = new_counter(hl);
    assert_int_equal(rec_counter_add(d, 1, 4.0, t0 - 2 * hl), 0);
    assert_int_equal(rec_counter_add(d, 1, 1.0, t0 - hl), 0);
    assert_int_equal(rec_counter_add(d, 1, 1.0, t0), 0);
    assert_rel(rec_counter_get(d, 1, t0 + 123.0),
               rec_counter_get(c, 1, t0 + 123.0), 1e-12);
    rec_counter_free(d);

    /* Unknown indexes read 0: beyond n, and below n but never touched. */
    assert_true(rec_counter_get(c, 2, t0) == 0.0);
    assert_true(rec_counter_get(c, 1000000, t0) == 0.0);
    assert_true(rec_counter_get(c, UINT32_MAX, t0) == 0.0);
    rec_counter_free(c);
}

static void test_counter_topk(void **state) {
    const double t = 1000.0;
    rec_counter *c = new_counter(0.0);
    /* value of i: distinct, some equal, some <= 0 */
    const double v[] = {3, 0, 7, -2, 5, 7, 1, 0.5, 9, 4};
    for (uint32_t i = 0; i < 10; i++)
        if (v[i] != 0)
            assert_int_equal(rec_counter_add(c, i, v[i], t), 0);
    /* A far index forces growth. */
    assert_int_equal(rec_counter_add(c, 700, 6.0, t), 0);

    rec_hit out[16];
    size_t n = rec_counter_topk(c, t, NULL, 0, 16, out);
    const uint32_t want[] = {8, 2, 5, 700, 4, 9, 0, 6, 7};
    assert_int_equal(n, 9); /* only values > 0 */
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(out[i].idx, want[i]);
        double wv = want[i] == 700 ? 6.0 : v[want[i]];
        assert_true((double)out[i].score == wv);
    }
    assert_int_equal(rec_counter_topk(c, t, NULL, 0, 3, out), 3);
    assert_int_equal(out[0].idx, 8);
    assert_int_equal(out[1].idx, 2);
    assert_int_equal(out[2].idx, 5);
    assert_int_equal(rec_counter_topk(c, t, NULL, 0, 0, out), 0);

    /* Skip 8 and 5 (word 0) and 700 (word 10). A bitmap too short to
     * cover 700 does not skip it. */
    uint64_t skip[11] = {0};
    skip[0] = 1ull << 8 | 1ull << 5;
    skip[10] = 1ull << (700 - 640);
    n = rec_counter_topk(c, t, skip, 11, 3, out);
    assert_int_equal(n, 3);
    assert_int_equal(out[0].idx, 2);
    assert_int_equal(out[1].idx, 4);
    assert_int_equal(out[2].idx, 9);
    n = rec_counter_topk(c, t, skip, 1, 3, out);
    assert_int_equal(out[0].idx, 2);
    assert_int_equal(out[1].idx, 700);
    assert_int_equal(out[2].idx, 4);

    /* With decay the ranking follows the time of the values. */
    rec_counter *d = new_counter(10.0);
    assert_int_equal(rec_counter_add(d, 0, 8.0, 0.0), 0);  /* 1 at t=30 */
    assert_int_equal(rec_counter_add(d, 1, 2.0, 20.0), 0); /* 1 at t=30 */
    assert_int_equal(rec_counter_add(d, 2, 1.5, 30.0), 0);
    n = rec_counter_topk(d, 30.0, NULL, 0, 3, out);
    assert_int_equal(n, 3);
    assert_int_equal(out[0].idx, 2);
    assert_float_equal(out[1].score, 1.0f, 1e-6f);
    assert_float_equal(out[2].score, 1.0f, 1e-6f);
    rec_counter_free(d);
    rec_counter_free(c);
}

/* The top cache against a brute-force ranking of every key, through
 * thousands of random adds (rises and falls), removes, loads and queries
 * with random skip maps: the cached answer must always be the exact one. */
static uint64_t lcg(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static size_t brute_topk(const rec_counter *c, const uint64_t *skip, size_t k,
                         uint32_t *out) {
    size_t n = 0;
    for (size_t r = 0; r < k; r++) {
        uint32_t best = UINT32_MAX;
        for (uint32_t i = 0; i < c->n; i++) {
            if (isinf(c->key[i]) || (skip[i >> 6] >> (i & 63) & 1))
                continue;
            int taken = 0;
            for (size_t j = 0; j < n && !taken; j++)
                taken = out[j] == i;
            if (taken)
                continue;
            if (best == UINT32_MAX || c->key[i] > c->key[best])
                best = i;
        }
        if (best == UINT32_MAX)
            break;
        out[n++] = best;
    }
    return n;
}

static void test_counter_top_cache_exact(void **state) {
    (void)state;
    for (int round = 0; round < 2; round++) {
        /* round 0: fewer items than the cache holds; round 1: many more */
        uint32_t items = round ? 3000 : 100;
        rec_counter *c = new_counter(round ? 3600.0 : 0.0);
        uint64_t s = 12345 + (uint64_t)round;
        uint64_t skip[3000 / 64 + 1];
        rec_hit got[40];
        uint32_t want[40];
        double t = 1000.0;
        for (int op = 0; op < 6000; op++) {
            uint32_t idx = (uint32_t)(lcg(&s) % items);
            uint64_t r = lcg(&s) % 100;
            t += (double)(lcg(&s) % 5);
            if (r < 70) {
                /* integer amounts and whole-second steps keep keys distinct */
                assert_int_equal(rec_counter_add(c, idx, (double)(1 + lcg(&s) % 9), t), 0);
            } else if (r < 80) {
                assert_int_equal(rec_counter_add(c, idx, -(double)(1 + lcg(&s) % 3), t), 0);
            } else if (r < 85) {
                rec_counter_remove(c, idx);
            } else if (r < 88) {
                assert_int_equal(rec_counter_load(c, idx, (double)(1 + lcg(&s) % 50), t), 0);
            } else {
                memset(skip, 0, sizeof skip);
                for (int j = 0; j < 20; j++) {
                    uint32_t x = (uint32_t)(lcg(&s) % items);
                    skip[x >> 6] |= 1ull << (x & 63);
                }
                size_t k = 1 + lcg(&s) % 40;
                size_t n = rec_counter_topk(c, t, skip, sizeof skip / 8, k, got);
                size_t m = brute_topk(c, skip, k, want);
                assert_int_equal(n, m);
                for (size_t j = 0; j < n; j++) {
                    /* equal keys may come in either order: compare keys */
                    assert_true(c->key[got[j].idx] == c->key[want[j]]);
                    assert_true(fabs((double)got[j].score - rec_counter_get(c, got[j].idx, t)) <=
                                1e-4 * fabs(rec_counter_get(c, got[j].idx, t)) + 1e-6);
                }
            }
        }
        rec_counter_free(c);
    }
}

static void test_counter_dirty_remove_load(void **state) {
    rec_counter *c = new_counter(60.0);
    assert_int_equal(rec_counter_add(c, 5, 1.0, 0.0), 0);
    assert_int_equal(rec_counter_add(c, 300, 1.0, 0.0), 0);
    assert_int_equal(rec_counter_add(c, 5, 1.0, 1.0), 0);
    assert_int_equal(c->ndirty, 2);
    assert_int_equal(c->dirty_list[0], 5);
    assert_int_equal(c->dirty_list[1], 300);
    rec_counter_clean(c);
    assert_int_equal(c->ndirty, 0);
    assert_false(bit(c->dirty, 5));
    assert_false(bit(c->dirty, 300));

    /* Remove: value 0, marked dirty once. */
    rec_counter_remove(c, 5);
    rec_counter_remove(c, 5);
    assert_true(rec_counter_get(c, 5, 1.0) == 0.0);
    assert_int_equal(c->ndirty, 1);
    assert_int_equal(c->dirty_list[0], 5);
    assert_true(bit(c->dirty, 5));
    rec_hit out[4];
    assert_int_equal(rec_counter_topk(c, 1.0, NULL, 0, 4, out), 1);
    assert_int_equal(out[0].idx, 300);
    /* Removing an index never touched changes nothing. */
    rec_counter_remove(c, 100000);
    assert_int_equal(c->ndirty, 1);
    /* A removed index counts afresh. */
    assert_int_equal(rec_counter_add(c, 5, 2.0, 600.0), 0);
    assert_rel(rec_counter_get(c, 5, 660.0), 1.0, 1e-9);
    rec_counter_clean(c);

    /* Load restores state without marking it dirty. */
    assert_int_equal(rec_counter_load(c, 7, 10.0, 100.0), 0);
    assert_int_equal(rec_counter_load(c, 5000, 3.0, 100.0), 0);
    assert_int_equal(c->ndirty, 0);
    assert_false(bit(c->dirty, 7));
    assert_false(bit(c->dirty, 5000));
    assert_rel(rec_counter_get(c, 7, 160.0), 5.0, 1e-9);
    assert_rel(rec_counter_get(c, 5000, 100.0), 3.0, 1e-12);
    assert_int_equal(c->n, 5001);
    /* ... and later adds build on the loaded state. */
    assert_int_equal(rec_counter_add(c, 7, 1.0, 160.0), 0);
    assert_rel(rec_counter_get(c, 7, 160.0), 6.0, 1e-9);
    assert_int_equal(c->ndirty, 1);
    rec_counter_free(c);
}

/* Heavy weights and a large learning rate: coupled user/item growth must
 * not diverge; every row stays finite and within max_norm. */
static void test_mf_step_stays_bounded(void **state) {
    (void)state;
    rec_mf_opts o;
    rec_mf_opts_default(&o);
    o.lr = 0.5f;
    rec_space *s = random_space(16, 10, 40, 11, &o);
    rec_rng r;
    rec_rng_seed(&r, 5);
    for (int step = 0; step < 20000; step++) {
        uint32_t u = rec_rng_below(&r, 10), p = rec_rng_below(&r, 5);
        uint32_t negs[4];
        for (int k = 0; k < 4; k++)
            negs[k] = 5 + rec_rng_below(&r, 35);
        rec_mf_step(s, u, p, 8.0f, negs, 4, &o);
    }
    for (int k = 0; k < 2; k++)
        for (uint32_t i = 0; i < (k ? 10u : 40u); i++) {
            const float *v = rec_space_get(s, (rec_kind)k, i);
            assert_true(rec_vec_all_finite(v, 16));
            assert_true(rec_vec_norm2(v, 16) <= o.max_norm * o.max_norm * 1.001f);
        }
    rec_space_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mf_step_stays_bounded),
        cmocka_unit_test(test_rng_reproducible),
        cmocka_unit_test(test_rng_below),
        cmocka_unit_test(test_rng_unit),
        cmocka_unit_test(test_mf_opts_and_init),
        cmocka_unit_test(test_mf_step_learns_pair),
        cmocka_unit_test(test_mf_step_weight_scales),
        cmocka_unit_test(test_mf_step_noops),
        cmocka_unit_test(test_mf_step_marks_dirty),
        cmocka_unit_test(test_mf_learns_groups),
        cmocka_unit_test(test_counter_validation),
        cmocka_unit_test(test_counter_no_decay),
        cmocka_unit_test(test_counter_half_life),
        cmocka_unit_test(test_counter_topk),
        cmocka_unit_test(test_counter_top_cache_exact),
        cmocka_unit_test(test_counter_dirty_remove_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
