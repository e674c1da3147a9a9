/* test_shown.c - what each person was shown: counts per list, cleared by
 * an engagement, forgotten with the person, the oldest giving way. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "err.h"
#include "shown.h"

static uint32_t count_of(const rec_shown *s, const char *u, uint32_t item) {
    uint32_t n;
    const rec_shown_entry *e = rec_shown_list(s, u, strlen(u), &n);
    for (uint32_t i = 0; i < n; i++)
        if (e[i].item == item)
            return e[i].count;
    return 0;
}

static void test_counts_clear_forget(void **state) {
    (void)state;
    rec_shown *s;
    assert_int_equal(rec_shown_new(&s), 0);
    const uint32_t a[] = {1, 2, 3}, b[] = {3, 4};
    assert_int_equal(rec_shown_add(s, "ann", 3, a, 3, 10.0), 0);
    assert_int_equal(rec_shown_add(s, "ann", 3, b, 2, 11.0), 0);
    assert_int_equal(rec_shown_add(s, "bob", 3, b, 2, 11.0), 0);
    assert_int_equal(count_of(s, "ann", 1), 1);
    assert_int_equal(count_of(s, "ann", 3), 2);
    assert_int_equal(count_of(s, "ann", 4), 1);
    assert_int_equal(count_of(s, "bob", 1), 0);
    rec_shown_clear(s, "ann", 3, 3); /* ann engaged with 3 */
    assert_int_equal(count_of(s, "ann", 3), 0);
    assert_int_equal(count_of(s, "bob", 3), 1);
    rec_shown_clear(s, "nobody", 6, 3); /* no-op */
    rec_shown_forget(s, "ann", 3);
    uint32_t n;
    assert_null(rec_shown_list(s, "ann", 3, &n));
    assert_int_equal(n, 0);
    assert_int_equal(count_of(s, "bob", 4), 1);
    /* forgotten, then shown again: starts from nothing */
    assert_int_equal(rec_shown_add(s, "ann", 3, a, 1, 12.0), 0);
    assert_int_equal(count_of(s, "ann", 1), 1);
    size_t users;
    uint64_t dropped;
    rec_shown_counts(s, &users, &dropped);
    assert_int_equal(users, 2);
    assert_int_equal(dropped, 0);
    rec_shown_free(s);
}

static void test_the_oldest_gives_way(void **state) {
    (void)state;
    rec_shown *s;
    assert_int_equal(rec_shown_new(&s), 0);
    for (uint32_t i = 0; i < REC_SHOWN_PER_USER + 10; i++)
        assert_int_equal(rec_shown_add(s, "u", 1, &i, 1, 100.0 + i), 0);
    uint32_t n;
    rec_shown_list(s, "u", 1, &n);
    assert_int_equal(n, REC_SHOWN_PER_USER);
    for (uint32_t i = 0; i < 10; i++)
        assert_int_equal(count_of(s, "u", i), 0);
    for (uint32_t i = 10; i < REC_SHOWN_PER_USER + 10; i++)
        assert_int_equal(count_of(s, "u", i), 1);
    /* many people: the table grows and keeps each one's entries */
    char key[16];
    for (uint32_t u = 0; u < 5000; u++) {
        snprintf(key, sizeof key, "p%u", u);
        assert_int_equal(rec_shown_add(s, key, strlen(key), &u, 1, 1.0), 0);
    }
    for (uint32_t u = 0; u < 5000; u += 97) {
        snprintf(key, sizeof key, "p%u", u);
        assert_int_equal(count_of(s, key, u), 1);
        assert_int_equal(count_of(s, key, u + 1), 0);
    }
    rec_shown_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_clear_forget),
        cmocka_unit_test(test_the_oldest_gives_way),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
