/* test_idslots.c - the table of records numbered in order.
 *
 * Records taken in order are found again with what was written in them; a
 * freed slot is found no more; a record left live while the ids run past
 * the table's span makes the table double (never two live records in one
 * slot), and a scan over the slots sees exactly the live ones.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "idslots.h"

typedef struct rec {
    uint64_t id;
    uint32_t value;
    char pad[20];
} rec;

static size_t live_in_scan(const rec_idslots *t) {
    size_t n = 0;
    for (size_t i = 0; i < t->cap; i++)
        n += rec_idslots_id(rec_idslots_at(t, i)) != 0;
    return n;
}

static void test_take_find_free(void **state) {
    (void)state;
    rec_idslots t;
    rec_idslots_init(&t, sizeof(rec), 4);
    assert_null(rec_idslots_find(&t, 1));
    assert_null(rec_idslots_find(&t, 0));
    for (uint64_t id = 1; id <= 3; id++) {
        rec *r = rec_idslots_take(&t, id);
        assert_non_null(r);
        assert_int_equal(r->id, id);
        assert_int_equal(r->value, 0);
        r->value = (uint32_t)(100 + id);
    }
    assert_int_equal(t.cap, 4);
    for (uint64_t id = 1; id <= 3; id++) {
        rec *r = rec_idslots_find(&t, id);
        assert_non_null(r);
        assert_int_equal(r->value, 100 + id);
    }
    assert_null(rec_idslots_find(&t, 0));
    assert_null(rec_idslots_find(&t, 5)); /* slot 1 holds id 1 */
    rec *r2 = rec_idslots_find(&t, 2);
    r2->id = 0; /* freed */
    assert_null(rec_idslots_find(&t, 2));
    assert_int_equal(live_in_scan(&t), 2);
    rec_idslots_free(&t);
    assert_int_equal(t.cap, 0);
    assert_null(rec_idslots_find(&t, 1));
}

/* One record kept live while 1,000 more come and go: the table doubles
 * until the live ids fit, keeps every value, and a slot is reused once
 * its record is freed. */
static void test_long_lived_record(void **state) {
    (void)state;
    rec_idslots t;
    rec_idslots_init(&t, sizeof(rec), 4);
    rec *keep = rec_idslots_take(&t, 1);
    keep->value = 7;
    for (uint64_t id = 2; id <= 1000; id++) {
        rec *r = rec_idslots_take(&t, id);
        assert_non_null(r);
        r->value = (uint32_t)id;
        if (id % 10) /* most go at once; one in ten stays */
            r->id = 0;
    }
    assert_true((t.cap & (t.cap - 1)) == 0);
    assert_true(t.cap >= 1000); /* ids 1 and 1000 are live together */
    assert_int_equal(((rec *)rec_idslots_find(&t, 1))->value, 7);
    for (uint64_t id = 2; id <= 1000; id++) {
        rec *r = rec_idslots_find(&t, id);
        if (id % 10) {
            assert_null(r);
        } else {
            assert_non_null(r);
            assert_int_equal(r->value, id);
        }
    }
    assert_int_equal(live_in_scan(&t), 1 + 100); /* ids 10, 20, ..., 1000 */
    rec_idslots_free(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_take_find_free),
        cmocka_unit_test(test_long_lived_record),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
