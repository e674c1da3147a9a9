/* test_rank.c - the ranking primitives: rank fusion and maximal marginal
 * relevance, on hand-made lists and vectors whose answers are worked out
 * in the comments.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "rank.h"

static void test_fused_score(void **state) {
    (void)state;
    assert_true(rec_rank_fused(1.0f, 0.0f) == 1.0f / 10.0f);
    assert_true(rec_rank_fused(0.5f, 5.0f) == 0.5f / 15.0f);
    assert_true(rec_rank_fused(2.0f, 3.0f) > rec_rank_fused(2.0f, 4.0f));
}

static void test_fuse_sums_lists(void **state) {
    (void)state;
    rec_rank_fuse f = {0};
    assert_int_equal(rec_rank_fuse_reserve(&f, 8), 0);
    /* list a (w 1): 3, 1, 5; list b (w 1): 1, 7.
     * 1: 1/11 + 1/10 = .1909; 3: 1/10; 7: 1/11; 5: 1/12. */
    rec_hit a[] = {{3, 9.0f}, {1, 8.0f}, {5, 7.0f}};
    rec_hit b[] = {{1, 0.2f}, {7, 0.1f}};
    rec_rank_fuse_add(&f, a, 3, 1.0f);
    rec_rank_fuse_add(&f, b, 2, 1.0f);
    assert_int_equal(f.ntouched, 4);
    uint64_t skip[1] = {0};
    rec_hit out[8];
    size_t got = rec_rank_fuse_top(&f, out, 8, skip);
    assert_int_equal(got, 4);
    assert_int_equal(out[0].idx, 1);
    assert_int_equal(out[1].idx, 3);
    assert_int_equal(out[2].idx, 7);
    assert_int_equal(out[3].idx, 5);
    assert_true(out[0].score == rec_rank_fused(1.0f, 1.0f) + rec_rank_fused(1.0f, 0.0f));
    /* every touched item marked, the accumulator emptied */
    assert_int_equal(skip[0], (1u << 1) | (1u << 3) | (1u << 5) | (1u << 7));
    assert_int_equal(f.ntouched, 0);
    for (uint32_t i = 0; i < f.cap; i++)
        assert_true(f.score[i] == 0.0f);
    rec_rank_fuse_free(&f);
    assert_null(f.score);
    assert_int_equal(f.cap, 0);
}

static void test_fuse_weights_and_top_n(void **state) {
    (void)state;
    rec_rank_fuse f = {0};
    assert_int_equal(rec_rank_fuse_reserve(&f, 4), 0);
    /* growing keeps what is there and zeroes the rest */
    assert_int_equal(rec_rank_fuse_reserve(&f, 100), 0);
    assert_int_equal(f.cap, 100);
    for (uint32_t i = 0; i < 100; i++)
        assert_true(f.score[i] == 0.0f);
    /* a heavier second list wins at the same rank */
    rec_hit a[] = {{10, 1.0f}};
    rec_hit b[] = {{20, 1.0f}};
    rec_rank_fuse_add(&f, a, 1, 0.3f);
    rec_rank_fuse_add(&f, b, 1, 0.7f);
    rec_hit out[1];
    assert_int_equal(rec_rank_fuse_top(&f, out, 1, NULL), 1);
    assert_int_equal(out[0].idx, 20);
    assert_true(f.score[10] == 0.0f);
    rec_rank_fuse_free(&f);
}

static void test_fuse_clear(void **state) {
    (void)state;
    rec_rank_fuse f = {0};
    assert_int_equal(rec_rank_fuse_reserve(&f, 4), 0);
    rec_hit a[] = {{2, 1.0f}, {0, 1.0f}};
    rec_rank_fuse_add(&f, a, 2, 1.0f);
    rec_rank_fuse_clear(&f);
    assert_int_equal(f.ntouched, 0);
    assert_true(f.score[0] == 0.0f && f.score[2] == 0.0f);
    rec_hit out[4];
    assert_int_equal(rec_rank_fuse_top(&f, out, 4, NULL), 0);
    rec_rank_fuse_free(&f);
    rec_rank_fuse_free(&f); /* freeing twice is harmless */
}

static void test_mmr_diversifies(void **state) {
    (void)state;
    /* 0 and 1 point the same way, 2 elsewhere. Relevance 1, .9, .8.
     * lambda .5: 0 first; then 1 scores .5*.9 - .5*1 = -.05 and 2 scores
     * .5*.8 - 0 = .4, so 2 comes before 1. */
    const float x[2] = {1.0f, 0.0f}, y[2] = {0.0f, 1.0f};
    const float *rows[3] = {x, x, y};
    double score[3] = {10.0, 9.0, 8.0};
    uint32_t order[3];
    rec_rank_mmr(rows, score, 3, 2, 0.5, order);
    assert_int_equal(order[0], 0);
    assert_int_equal(order[1], 2);
    assert_int_equal(order[2], 1);
    /* lambda 1: relevance alone, the scores' order */
    rec_rank_mmr(rows, score, 3, 2, 1.0, order);
    assert_int_equal(order[0], 0);
    assert_int_equal(order[1], 1);
    assert_int_equal(order[2], 2);
    /* scores are not changed */
    assert_true(score[0] == 10.0 && score[1] == 9.0 && score[2] == 8.0);
}

static void test_mmr_no_vector_and_negative_scores(void **state) {
    (void)state;
    /* Without vectors nothing is alike: the order of the scores. Negative
     * scores are scaled min-max (-3 -> 0, -1 -> 1, -2 -> .5). */
    const float *rows[3] = {NULL, NULL, NULL};
    double score[3] = {-3.0, -1.0, -2.0};
    uint32_t order[3];
    rec_rank_mmr(rows, score, 3, 2, 0.7, order);
    assert_int_equal(order[0], 1);
    assert_int_equal(order[1], 2);
    assert_int_equal(order[2], 0);
    /* equal scores, no vectors: ties go to the lower index */
    double same[3] = {4.0, 4.0, 4.0};
    rec_rank_mmr(rows, same, 3, 2, 0.7, order);
    assert_int_equal(order[0], 0);
    assert_int_equal(order[1], 1);
    assert_int_equal(order[2], 2);
    /* an item without a vector is unlike the one placed before it */
    const float x[2] = {1.0f, 0.0f};
    const float *mixed[3] = {x, x, NULL};
    double sc[3] = {1.0, 0.95, 0.9};
    rec_rank_mmr(mixed, sc, 3, 2, 0.5, order);
    assert_int_equal(order[0], 0);
    assert_int_equal(order[1], 2);
    assert_int_equal(order[2], 1);
}

/* A blend ranks like a full sort of its items by (score, first proposal),
 * whatever n; why names the source of the largest part; a scale moves an
 * item. Many ties (few distinct ranks) exercise the order of proposal. */
static void test_blend_partial_rank(void **state) {
    (void)state;
    enum { LISTS = 6, LEN = 150, CAP = LISTS * LEN };
    static rec_hit lists[LISTS][LEN];
    uint32_t x = 12345;
    for (int l = 0; l < LISTS; l++)
        for (int r = 0; r < LEN; r++) {
            x = x * 1103515245u + 12345u;
            lists[l][r] = (rec_hit){.idx = (x >> 8) % 400, .score = 0};
        }
    /* dedupe within a list: a source proposes an item once */
    for (int l = 0; l < LISTS; l++)
        for (int r = 0; r < LEN; r++)
            for (int q = 0; q < r; q++)
                if (lists[l][q].idx == lists[l][r].idx)
                    lists[l][r].idx = 400 + (uint32_t)(l * LEN + r);
    size_t ns[] = {0, 1, 10, 50, 333, CAP};
    for (size_t t = 0; t < sizeof ns / sizeof *ns; t++) {
        static unsigned char mem_a[1 << 16], mem_b[1 << 16];
        assert_true(rec_rank_blend_bytes(CAP) <= sizeof mem_a);
        rec_rank_blend a, b;
        rec_rank_blend_init(&a, mem_a, CAP);
        rec_rank_blend_init(&b, mem_b, CAP);
        for (int l = 0; l < LISTS; l++) {
            double w = l == 2 ? 3.0 : 1.0;
            rec_rank_blend_add(&a, lists[l], LEN, w, (uint32_t)l);
            rec_rank_blend_add(&b, lists[l], LEN, w, (uint32_t)l);
        }
        rec_rank_blend_scale(&a, lists[0][0].idx, 0.25);
        rec_rank_blend_scale(&b, lists[0][0].idx, 0.25);
        size_t all = rec_rank_blend_rank(&b, CAP);
        assert_int_equal(all, b.n);
        for (size_t i = 1; i < all; i++)
            assert_true(b.item[i - 1].score > b.item[i].score ||
                        (b.item[i - 1].score == b.item[i].score &&
                         b.item[i - 1].ord < b.item[i].ord));
        size_t got = rec_rank_blend_rank(&a, ns[t]);
        assert_int_equal(got, ns[t] < all ? ns[t] : all);
        for (size_t i = 0; i < got; i++) {
            assert_int_equal(a.item[i].idx, b.item[i].idx);
            assert_true(a.item[i].score == b.item[i].score);
            assert_int_equal(a.item[i].why, b.item[i].why);
        }
    }
    /* weights: an item first in list 2 (w 3) alone scores 3 / 10 */
    static unsigned char mem[4096];
    rec_rank_blend c;
    rec_rank_blend_init(&c, mem, 4);
    rec_hit one[2] = {{.idx = 7}, {.idx = 9}}, two[1] = {{.idx = 9}};
    rec_rank_blend_add(&c, one, 2, 3.0, 0);
    rec_rank_blend_add(&c, two, 1, 2.0, 1);
    assert_int_equal(rec_rank_blend_rank(&c, 1), 1);
    assert_int_equal(c.item[0].idx, 9); /* 3/11 + 2/10 > 3/10 */
    assert_int_equal(c.item[0].why, 0); /* 3/11 > 2/10 */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fused_score),
        cmocka_unit_test(test_fuse_sums_lists),
        cmocka_unit_test(test_fuse_weights_and_top_n),
        cmocka_unit_test(test_fuse_clear),
        cmocka_unit_test(test_mmr_diversifies),
        cmocka_unit_test(test_mmr_no_vector_and_negative_scores),
        cmocka_unit_test(test_blend_partial_rank),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
