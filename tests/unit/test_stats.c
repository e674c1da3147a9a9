/* test_stats.c - attribution and the live statistics: the Wilson interval
 * against values worked out by hand, counting by kind and name, the
 * stats.get answer, and which events a recorded recommendation credits
 * (a click or conversion on an item it showed, to its pipeline, arm and
 * the strategy that placed the item). Runs on a mkdtemp folder.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ftw.h>
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine.h"
#include "err.h"
#include "stats.h"

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    return remove(path);
}

static void test_wilson(void **state) {
    (void)state;
    double lo, hi;
    rec_stats_wilson(0, 0, &lo, &hi);
    assert_true(lo == 0.0 && hi == 1.0);
    /* 50 of 100 at z = 1.959964: centre .5, half-width
     * z * sqrt(.0025 + z^2 / 40000) / (1 + z^2 / 100) = .0960 */
    rec_stats_wilson(50, 100, &lo, &hi);
    assert_true(fabs(lo - 0.40383) < 1e-4 && fabs(hi - 0.59617) < 1e-4);
    /* none of 10: from 0, clamped; all of 10: up to 1 */
    rec_stats_wilson(0, 10, &lo, &hi);
    assert_true(lo == 0.0 && fabs(hi - 0.27753) < 1e-4);
    rec_stats_wilson(10, 10, &lo, &hi);
    assert_true(fabs(lo - 0.72247) < 1e-4 && hi <= 1.0 && hi > 0.99999);
}

/* The `total` map of kind/name in a stats.get answer, or NULL. */
static const msgpack_object *find(const msgpack_object *map, const char *key) {
    for (uint32_t i = 0; map && map->type == MSGPACK_OBJECT_MAP && i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
            memcmp(k->via.str.ptr, key, k->via.str.size) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

static double total(const msgpack_object *root, const char *kinds, const char *name,
                    const char *what) {
    const msgpack_object *v = find(find(find(find(root, kinds), name), "total"), what);
    if (!v)
        return -1;
    return v->via.f64;
}

typedef struct answer {
    msgpack_sbuffer sb;
    msgpack_unpacked u;
} answer;

static const msgpack_object *pack(const rec_stats *st, answer *a, double now) {
    msgpack_sbuffer_init(&a->sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &a->sb, msgpack_sbuffer_write);
    assert_int_equal(rec_stats_pack(st, &pk, now), 0);
    msgpack_unpacked_init(&a->u);
    assert_int_equal(msgpack_unpack_next(&a->u, a->sb.data, a->sb.size, NULL),
                     MSGPACK_UNPACK_SUCCESS);
    return &a->u.data;
}

static void answer_free(answer *a) {
    msgpack_unpacked_destroy(&a->u);
    msgpack_sbuffer_destroy(&a->sb);
}

static void test_add_and_pack(void **state) {
    (void)state;
    static rec_stats st; /* large: not on the stack */
    memset(&st, 0, sizeof st);
    /* later than the metrics' creation (rec_now()): their decay clock
     * starts at exactly t */
    double t = rec_now() + 1000;
    rec_stats_add(&st, "pipeline", "main", 10, 0, 0, t);
    rec_stats_add(&st, "pipeline", "main", 0, 2, 1, t);
    rec_stats_add(&st, "strategy", "main", 4, 0, 0, t);
    answer a;
    const msgpack_object *r = pack(&st, &a, t);
    assert_true(find(r, "recent_half_life_s")->via.f64 == REC_STATS_HALF_LIFE);
    assert_true(total(r, "pipelines", "main", "impressions") == 10);
    assert_true(total(r, "pipelines", "main", "clicks") == 2);
    assert_true(total(r, "pipelines", "main", "conversions") == 1);
    assert_true(total(r, "pipelines", "main", "ctr") == 0.2);
    assert_true(total(r, "strategies", "main", "impressions") == 4);
    assert_int_equal(find(r, "variants")->via.map.size, 0);
    /* one half-life later, recent is half of total */
    answer_free(&a);
    r = pack(&st, &a, t + REC_STATS_HALF_LIFE);
    const msgpack_object *rec = find(find(find(r, "pipelines"), "main"), "recent");
    assert_true(fabs(find(rec, "impressions")->via.f64 - 5.0) < 1e-9);
    assert_true(total(r, "pipelines", "main", "impressions") == 10);
    answer_free(&a);
    /* beyond REC_STATS_MAX metrics, the new ones are not counted */
    for (int i = 0; i < REC_STATS_MAX + 5; i++) {
        char name[16];
        snprintf(name, sizeof name, "v%d", i);
        rec_stats_add(&st, "variant", name, 1, 0, 0, t);
    }
    assert_int_equal(st.n, REC_STATS_MAX);
}

static void test_attribute(void **state) {
    (void)state;
    char root[] = "/tmp/test_stats_XXXXXX";
    assert_non_null(mkdtemp(root));
    rec_engine *e;
    char err[256];
    assert_int_equal(rec_engine_open(&e, root, NULL, err, sizeof err), 0);
    /* what rec.recommend records: items 3 and 5, placed by s1 and s2 */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
#define S(x) msgpack_pack_str(&pk, strlen(x)), msgpack_pack_str_body(&pk, x, strlen(x))
    msgpack_pack_map(&pk, 6);
    S("ts"), msgpack_pack_double(&pk, 1.7e9);
    S("pipeline"), S("main");
    S("arm"), S("B");
    S("strategies"), msgpack_pack_array(&pk, 2), S("s1"), S("s2");
    S("items"), msgpack_pack_array(&pk, 2), msgpack_pack_uint32(&pk, 3),
        msgpack_pack_uint32(&pk, 5);
    S("by"), msgpack_pack_array(&pk, 2), msgpack_pack_int(&pk, 0), msgpack_pack_int(&pk, 1);
#undef S
    assert_int_equal(rec_engine_rec_put(e, 0x0123456789abcdefull, 0, sb.data, sb.size), 0);
    msgpack_sbuffer_destroy(&sb);
    static rec_stats st;
    memset(&st, 0, sizeof st);
    const char *id = "0123456789abcdef";
    double t = rec_now();
    rec_stats_attribute(&st, e, id, 16, 5, "click", 5, t);
    rec_stats_attribute(&st, e, id, 16, 3, "purchase", 8, t);
    rec_stats_attribute(&st, e, id, 16, 3, "add_to_cart", 11, t);
    /* not credited: another type, an item not shown, an unknown or
     * malformed rec_id */
    rec_stats_attribute(&st, e, id, 16, 5, "view", 4, t);
    rec_stats_attribute(&st, e, id, 16, 7, "click", 5, t);
    rec_stats_attribute(&st, e, "0123456789abcdee", 16, 5, "click", 5, t);
    rec_stats_attribute(&st, e, "0123456789abcdeZ", 16, 5, "click", 5, t);
    rec_stats_attribute(&st, e, id, 15, 5, "click", 5, t);
    answer a;
    const msgpack_object *r = pack(&st, &a, t);
    assert_true(total(r, "pipelines", "main", "clicks") == 1);
    assert_true(total(r, "pipelines", "main", "conversions") == 2);
    assert_true(total(r, "pipelines", "main", "impressions") == 0);
    assert_true(total(r, "variants", "B", "clicks") == 1);
    assert_true(total(r, "variants", "B", "conversions") == 2);
    assert_true(total(r, "strategies", "s2", "clicks") == 1);
    assert_true(total(r, "strategies", "s2", "conversions") == 0);
    assert_true(total(r, "strategies", "s1", "conversions") == 2);
    assert_true(total(r, "strategies", "s1", "clicks") == 0);
    assert_int_equal(st.n, 4);
    answer_free(&a);
    rec_engine_free(e);
    assert_int_equal(nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wilson),
        cmocka_unit_test(test_add_and_pack),
        cmocka_unit_test(test_attribute),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
