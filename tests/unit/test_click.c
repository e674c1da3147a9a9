/* test_click.c - the click model of the served lists: its declaration,
 * features as served, learning from clicks and from the end of the
 * window, persistence through a checkpoint, erasing a user. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "tmp_folder.h"

#include <lauxlib.h>
#include <lualib.h>
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "click.h"
#include "engine.h"
#include "err.h"
#include "idmap.h"

static rec_engine *open_engine(const char *dir) {
    rec_engine_opts o;
    rec_engine_opts_default(&o);
    o.store.no_sync = 1;
    rec_engine *e = NULL;
    char err[256];
    if (rec_engine_open(&e, dir, &o, err, sizeof err))
        fail_msg("open: %s", err);
    return e;
}

/* Read `model = <src>` into s; returns the error code, message in err. */
static int spec_of(const char *src, rec_click_spec *s, char *err, size_t errlen) {
    lua_State *L = luaL_newstate();
    char chunk[1024];
    snprintf(chunk, sizeof chunk, "return %s", src);
    assert_int_equal(luaL_dostring(L, chunk), 0);
    int rc = rec_click_spec_read(L, -1, s, err, errlen);
    assert_int_equal(lua_gettop(L), 1); /* the stack is as it was */
    lua_close(L);
    return rc;
}

static void test_declaration(void **state) {
    (void)state;
    rec_click_spec s;
    char err[256];
    assert_int_equal(spec_of("{kind = 'fm', k = 4, window = 60, features = {'item', 'user', "
                             "'position', 'prop:category', {'prop:category', 'position'}, "
                             "'taste:category', 'shows', 'like:content'}}", &s, err, sizeof err),
                     0);
    assert_int_equal(s.n, 8);
    assert_int_equal(s.opts.k, 4);
    assert_true(s.window == 60);
    assert_string_equal(s.d[4].name, "prop:category x position");
    assert_int_equal(s.conversion, 1);
    assert_string_equal(s.clicks[0], "click");
    assert_string_equal(s.convs[0], "purchase");
    static const struct {
        const char *src, *msg;
    } bad[] = {
        {"{features = {'item', 'colour'}}", "model.features[2]: unknown feature 'colour'"},
        {"{features = {{'user', 'prop:category'}}}", "user may not be crossed"},
        {"{features = {{'score', 'item'}}}", "a cross takes two categorical features"},
        {"{features = {}}", "model.features: 1 to 32 features"},
        {"{kind = 'tree', features = {'item'}}", "model.kind must be \"lr\" or \"fm\""},
        {"{kind = 'fm', k = 99, features = {'item'}}", "model.k must be a number in [1, 32]"},
        {"{window = -1, features = {'item'}}", "model.window must be a number"},
        {"{clicks = 'click', features = {'item'}}", "model.clicks must be an array"},
        {"{features = {'prop:'}}", "unknown feature 'prop:'"},
        {"{features = {7}}", "model.features[1] must be a feature name or a pair"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(spec_of(bad[i].src, &s, err, sizeof err), REC_EINVAL);
        if (!strstr(err, bad[i].msg))
            fail_msg("%s: got '%s', want '%s'", bad[i].src, err, bad[i].msg);
    }
}

static size_t key_of(char *out, const char *s) { return (size_t)rec_id_str(out, s, strlen(s)); }

static uint32_t put_item(rec_engine *e, const char *id, const char *category) {
    char k[REC_ID_MAX];
    size_t kl = key_of(k, id);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "category", 8);
    msgpack_pack_str_with_body(&pk, category, strlen(category));
    uint32_t idx;
    assert_int_equal(rec_engine_put(e, REC_KIND_ITEM, k, kl, sb.data, sb.size, -1, NULL, 0, &idx),
                     0);
    msgpack_sbuffer_destroy(&sb);
    return idx;
}

/* Serve items (in order) to user as the server does: features into the
 * list's record, the list waiting for outcomes. */
static void serve(rec_engine *e, rec_click *m, uint64_t rid, const char *user,
                  const uint32_t *items, size_t n, double ts) {
    char uk[REC_ID_MAX];
    size_t ul = key_of(uk, user);
    rec_click_cand c[16];
    for (size_t i = 0; i < n; i++)
        c[i] = (rec_click_cand){.item = items[i], .position = (uint32_t)i, .strategy = "s",
                                .score = 1.0};
    rec_click_ask a = {.ukey = uk, .ulen = ul, .now = ts};
    rec_buf f = REC_BUF_INIT;
    assert_int_equal(rec_click_encode(m, e, &a, c, n, &f), 0);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "items", 5);
    msgpack_pack_array(&pk, n);
    for (size_t i = 0; i < n; i++)
        msgpack_pack_uint32(&pk, items[i]);
    msgpack_pack_str_with_body(&pk, "f", 1);
    msgpack_pack_bin_with_body(&pk, f.data, f.len);
    assert_int_equal(rec_engine_rec_put(e, rid, 0, sb.data, sb.size), 0);
    assert_int_equal(rec_click_served(m, rid, ts, (uint32_t)n), 0);
    msgpack_sbuffer_destroy(&sb);
    rec_buf_free(&f);
}

static void predict(rec_engine *e, rec_click *m, const char *user, const uint32_t *items,
                    size_t n, double *p) {
    char uk[REC_ID_MAX];
    size_t ul = key_of(uk, user);
    rec_click_cand c[16];
    for (size_t i = 0; i < n; i++)
        c[i] = (rec_click_cand){.item = items[i], .strategy = "s", .score = 1.0};
    rec_click_ask a = {.ukey = uk, .ulen = ul, .now = 1000};
    double sd[16], pv[16];
    assert_int_equal(rec_click_predict(m, e, &a, c, n, p, pv, sd), 0);
    for (size_t i = 0; i < n; i++) {
        assert_true(p[i] > 0 && p[i] < 1 && sd[i] > 0);
        assert_true(pv[i] > 0 && pv[i] < 1);
    }
}

static void rid_hex(char *out, uint64_t rid) {
    snprintf(out, 17, "%016llx", (unsigned long long)rid);
}

static void test_learns_from_outcomes(void **state) {
    (void)state;
    char *dir = rec_test_mkdir("click");
    rec_engine *e = open_engine(dir);
    rec_click *m = rec_engine_click(e);
    rec_click_spec s;
    char err[256];
    assert_int_equal(spec_of("{kind = 'lr', alpha = 0.5, l1 = 0, window = 100, "
                             "features = {'item', 'user', 'position', 'prop:category'}}",
                             &s, err, sizeof err),
                     0);
    uint32_t it[4] = {put_item(e, "a", "red"), put_item(e, "b", "red"),
                      put_item(e, "c", "blue"), put_item(e, "d", "blue")};
    double p0[4], p[4];
    /* nothing is learned before a model is set */
    rec_click_ask a0 = {.ukey = "x", .ulen = 1, .now = 1};
    rec_click_cand c0 = {.item = it[0]};
    assert_int_equal(rec_click_predict(m, e, &a0, &c0, 1, p0, NULL, NULL), REC_ENOTFOUND);
    assert_int_equal(rec_click_set(m, &s), 0);
    predict(e, m, "u", it, 4, p0);
    for (int i = 0; i < 4; i++)
        assert_true(fabs(p0[i] - 0.5) < 1e-9);
    /* lists of red and blue items; the user clicks red ones */
    char hex[17];
    for (uint64_t r = 1; r <= 40; r++) {
        uint32_t list[2] = {it[(r % 2) ? 0 : 2], it[(r % 2) ? 3 : 1]};
        serve(e, m, r, "u", list, 2, 1000.0 + (double)r);
        rid_hex(hex, r);
        uint32_t red = list[0] == it[0] ? it[0] : it[1];
        assert_int_equal(rec_click_feedback(m, e, hex, 16, red, "click", 5, 1000.5 + (double)r), 0);
        /* a second click on the same slot learns nothing more */
        assert_int_equal(rec_click_feedback(m, e, hex, 16, red, "click", 5, 1000.6 + (double)r), 0);
        /* a view is not a click; an item not in the list matches nothing */
        assert_int_equal(rec_click_feedback(m, e, hex, 16, red, "view", 4, 1000.6 + (double)r), 0);
        assert_int_equal(rec_click_feedback(m, e, hex, 16, it[3] == list[1] ? it[2] : it[3],
                                            "click", 5, 1000.7 + (double)r), 0);
    }
    rec_click_info ci;
    rec_click_info_get(m, &ci);
    assert_int_equal(ci.served, 40);
    assert_int_equal(ci.clicks, 40);
    assert_int_equal(ci.pending, 40);
    assert_int_equal(ci.negatives, 0);
    assert_int_equal(ci.unmatched, 40);
    /* the window ends for the first 20 lists: their unclicked slots */
    assert_int_equal(rec_click_expire(m, e, 1000.0 + 20 + 100), 0);
    rec_click_info_get(m, &ci);
    assert_int_equal(ci.pending, 20);
    assert_int_equal(ci.negatives, 20);
    /* a click after the window is late: not learned */
    rid_hex(hex, 3);
    assert_int_equal(rec_click_feedback(m, e, hex, 16, it[0], "click", 5, 1200), 0);
    rec_click_info_get(m, &ci);
    assert_int_equal(ci.late, 1);
    assert_int_equal(ci.clicks, 40);
    predict(e, m, "u", it, 4, p);
    assert_true(p[0] > p[2] && p[0] > p[3] && p[1] > p[2] && p[1] > p[3]);
    /* a purchase of a clicked item teaches the conversion model */
    uint32_t one[1] = {it[0]};
    serve(e, m, 100, "u", one, 1, 1500);
    rid_hex(hex, 100);
    assert_int_equal(rec_click_feedback(m, e, hex, 16, it[0], "purchase", 8, 1501), 0);
    rec_click_info_get(m, &ci);
    assert_int_equal(ci.conversions, 1);
    assert_int_equal(ci.clicks, 41); /* a conversion is a click too */
    predict(e, m, "u", it, 4, p);

    /* a checkpoint keeps it all: weights, statistics, waiting lists */
    assert_int_equal(rec_engine_checkpoint(e), 0);
    rec_engine_free(e);
    e = open_engine(dir);
    m = rec_engine_click(e);
    assert_int_equal(rec_click_set(m, &s), 0);
    rec_click_info c2;
    rec_click_info_get(m, &c2);
    assert_int_equal(c2.clicks, 41);
    assert_int_equal(c2.pending, 21);
    assert_int_equal(c2.click.examples, ci.click.examples);
    double p2[4];
    predict(e, m, "u", it, 4, p2);
    for (int i = 0; i < 4; i++)
        assert_true(fabs(p2[i] - p[i]) < 1e-12);
    /* the remaining lists expire after the reopen as before it */
    assert_int_equal(rec_click_expire(m, e, 1e6), 0);
    rec_click_info_get(m, &c2);
    assert_int_equal(c2.pending, 0);
    assert_int_equal(c2.negatives, 40);

    /* other options: a new model, learned from nothing */
    rec_click_spec s2 = s;
    s2.opts.bits = 16;
    assert_int_equal(rec_click_set(m, &s2), 0);
    predict(e, m, "u", it, 4, p2);
    assert_true(fabs(p2[0] - 0.5) < 1e-9);
    rec_engine_free(e);
    rec_test_rmdir(dir);
}

static void test_user_erased_and_props_reread(void **state) {
    (void)state;
    char *dir = rec_test_mkdir("click");
    rec_engine *e = open_engine(dir);
    rec_click *m = rec_engine_click(e);
    rec_click_spec s;
    char err[256];
    assert_int_equal(spec_of("{kind = 'fm', k = 4, l1 = 0, alpha = 0.5, window = 10, "
                             "features = {'user', 'prop:category'}}", &s, err, sizeof err), 0);
    assert_int_equal(rec_click_set(m, &s), 0);
    uint32_t it[2] = {put_item(e, "a", "red"), put_item(e, "b", "blue")};
    char hex[17];
    for (uint64_t r = 1; r <= 30; r++) {
        serve(e, m, r, "u", it, 2, (double)r);
        rid_hex(hex, r);
        assert_int_equal(rec_click_feedback(m, e, hex, 16, it[0], "click", 5, (double)r), 0);
    }
    assert_int_equal(rec_click_expire(m, e, 1e6), 0);
    double pu[2], pv[2];
    predict(e, m, "u", it, 2, pu);
    predict(e, m, "v", it, 2, pv);
    double gap = pu[0] - pv[0];
    assert_true(gap > 0.05); /* u clicks more than a stranger would */
    /* erased: u is a stranger again (up to the random start of the
     * factors, different in every bucket) */
    char uk[REC_ID_MAX];
    rec_click_forget(m, uk, key_of(uk, "u"));
    predict(e, m, "u", it, 2, pu);
    assert_true(fabs(pu[0] - pv[0]) < gap / 20 && fabs(pu[1] - pv[1]) < gap / 20);
    /* b turns red: it is read again and scores as red */
    put_item(e, "b", "red");
    predict(e, m, "v", it, 2, pv);
    assert_true(fabs(pv[0] - pv[1]) < 1e-9);
    rec_engine_free(e);
    rec_test_rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_declaration),
        cmocka_unit_test(test_learns_from_outcomes),
        cmocka_unit_test(test_user_erased_and_props_reread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
