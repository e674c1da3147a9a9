/* test_u64set.c - the set of 64-bit integers.
 *
 * Membership of edge keys (0, which lives beside the table, and
 * UINT64_MAX), duplicates counted once, and many keys through many
 * doublings: pairs of 32-bit indexes packed as (u << 32 | i), so keys that
 * differ only in their high half, all found again, none of their
 * neighbours found, and the table kept a power of two at most half full.
 * Keys come from loop counters, so every run is the same.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "u64set.h"

static void check_table(const rec_u64set *s) {
    if (!s->slot) {
        assert_int_equal(s->used, 0);
        return;
    }
    size_t n = s->mask + 1, held = 0;
    assert_true((n & (n - 1)) == 0);
    assert_true(s->used * 2 <= n);
    for (size_t j = 0; j < n; j++)
        held += s->slot[j] != 0;
    assert_int_equal(held, s->used);
}

static void test_empty(void **state) {
    (void)state;
    rec_u64set s;
    rec_u64set_init(&s);
    assert_false(rec_u64set_has(&s, 0));
    assert_false(rec_u64set_has(&s, 1));
    assert_false(rec_u64set_has(&s, UINT64_MAX));
    assert_int_equal(rec_u64set_count(&s), 0);
    rec_u64set z = {0}; /* a zeroed struct is an empty set too */
    assert_false(rec_u64set_has(&z, 7));
    assert_int_equal(rec_u64set_add(&z, 7), 0);
    assert_true(rec_u64set_has(&z, 7));
    rec_u64set_close(&z);
    rec_u64set_close(&s);
}

static void test_edge_keys_and_duplicates(void **state) {
    (void)state;
    rec_u64set s;
    rec_u64set_init(&s);
    assert_int_equal(rec_u64set_add(&s, 0), 0);
    assert_true(rec_u64set_has(&s, 0));
    assert_false(rec_u64set_has(&s, 1));
    assert_int_equal(rec_u64set_count(&s), 1);
    assert_int_equal(rec_u64set_add(&s, UINT64_MAX), 0);
    assert_int_equal(rec_u64set_add(&s, 1), 0);
    for (int rep = 0; rep < 3; rep++) {
        assert_int_equal(rec_u64set_add(&s, 0), 0);
        assert_int_equal(rec_u64set_add(&s, 1), 0);
        assert_int_equal(rec_u64set_add(&s, UINT64_MAX), 0);
    }
    assert_int_equal(rec_u64set_count(&s), 3);
    assert_true(rec_u64set_has(&s, 0));
    assert_true(rec_u64set_has(&s, 1));
    assert_true(rec_u64set_has(&s, UINT64_MAX));
    assert_false(rec_u64set_has(&s, 2));
    assert_false(rec_u64set_has(&s, UINT64_MAX - 1));
    check_table(&s);
    rec_u64set_close(&s);
    /* close empties it, and it is usable again */
    assert_false(rec_u64set_has(&s, 0));
    assert_false(rec_u64set_has(&s, 1));
    assert_int_equal(rec_u64set_count(&s), 0);
    assert_int_equal(rec_u64set_add(&s, 5), 0);
    assert_true(rec_u64set_has(&s, 5));
    assert_int_equal(rec_u64set_count(&s), 1);
    rec_u64set_close(&s);
}

static uint64_t pair(uint32_t u, uint32_t i) { return (uint64_t)u << 32 | i; }

static void test_many_pairs(void **state) {
    (void)state;
    rec_u64set s;
    rec_u64set_init(&s);
    /* 300 users x 200 items, every third pair, added twice over */
    size_t want = 0;
    for (int rep = 0; rep < 2; rep++)
        for (uint32_t u = 0; u < 300; u++)
            for (uint32_t i = 0; i < 200; i++)
                if ((u + i) % 3 == 0) {
                    assert_int_equal(rec_u64set_add(&s, pair(u, i)), 0);
                    want += rep == 0;
                    if (rep == 0 && (want & (want - 1)) == 0)
                        check_table(&s); /* around the doublings */
                }
    assert_int_equal(rec_u64set_count(&s), want);
    check_table(&s);
    for (uint32_t u = 0; u < 301; u++)
        for (uint32_t i = 0; i < 201; i++) {
            int in = u < 300 && i < 200 && (u + i) % 3 == 0;
            assert_int_equal(rec_u64set_has(&s, pair(u, i)), in);
            assert_false(rec_u64set_has(&s, pair(i, u) | (uint64_t)1 << 63));
        }
    rec_u64set_close(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_edge_keys_and_duplicates),
        cmocka_unit_test(test_many_pairs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
