/* test_value.c - msgpack <-> Lua conversion and the bounded pre-scan. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include <msgpack.h>

#include "err.h"
#include "store.h"
#include "value.h"

/* ---- helpers ------------------------------------------------------------- */

static lua_State *new_state(void) {
    lua_State *L = luaL_newstate();
    assert_non_null(L);
    luaL_openlibs(L);
    return L;
}

/* Run a Lua chunk that returns one value and leave it on the stack. */
static void eval(lua_State *L, const char *code) {
    int rc = luaL_loadstring(L, code);
    if (rc == LUA_OK)
        rc = lua_pcall(L, 0, 1, 0);
    if (rc != LUA_OK)
        fail_msg("lua: %s", lua_tostring(L, -1));
}

/* Pack the value on top of the stack into a fresh buffer (asserting
 * success and a balanced stack). */
static void pack_top(lua_State *L, rec_buf *b) {
    char err[128];
    int top = lua_gettop(L);
    b->len = 0;
    int rc = rec_value_pack_lua(L, -1, b, err, sizeof err);
    if (rc)
        fail_msg("pack: %s (%s)", rec_err_name(rc), err);
    assert_int_equal(lua_gettop(L), top);
}

static void assert_bytes(const rec_buf *b, const void *want, size_t n) {
    assert_int_equal(b->len, n);
    assert_memory_equal(b->data, want, n);
}

/* Raw deep equality: same types, integers stay integers, floats stay floats
 * (NaN equals NaN, and the sign of zero matters), tables with the same keys
 * and deep-equal values. */
static int deep_equal(lua_State *L, int a, int b, int depth) {
    a = lua_absindex(L, a);
    b = lua_absindex(L, b);
    if (depth > 64 || lua_type(L, a) != lua_type(L, b))
        return 0;
    switch (lua_type(L, a)) {
    case LUA_TNIL:
        return 1;
    case LUA_TBOOLEAN:
        return lua_toboolean(L, a) == lua_toboolean(L, b);
    case LUA_TNUMBER:
        if (lua_isinteger(L, a) != lua_isinteger(L, b))
            return 0;
        if (lua_isinteger(L, a))
            return lua_tointeger(L, a) == lua_tointeger(L, b);
        {
            double x = lua_tonumber(L, a), y = lua_tonumber(L, b);
            if (isnan(x) || isnan(y))
                return isnan(x) && isnan(y);
            return x == y && signbit(x) == signbit(y);
        }
    case LUA_TSTRING: {
        size_t na, nb;
        const char *sa = lua_tolstring(L, a, &na);
        const char *sb = lua_tolstring(L, b, &nb);
        return na == nb && memcmp(sa, sb, na) == 0;
    }
    case LUA_TTABLE: {
        long ka = 0, kb = 0;
        lua_checkstack(L, 6);
        lua_pushnil(L);
        while (lua_next(L, a)) {
            ka++;
            lua_pushvalue(L, -2);
            lua_rawget(L, b);
            int eq = deep_equal(L, -1, -2, depth + 1);
            lua_pop(L, 2);
            if (!eq) {
                lua_pop(L, 1);
                return 0;
            }
        }
        lua_pushnil(L);
        while (lua_next(L, b)) {
            kb++;
            lua_pop(L, 1);
        }
        return ka == kb;
    }
    default:
        return lua_rawequal(L, a, b);
    }
}

/* Pack the top value, decode it again, and check the copy deep-equals it. */
static void roundtrip_top(lua_State *L, rec_buf *b) {
    int top = lua_gettop(L);
    pack_top(L, b);
    size_t used = 0;
    assert_int_equal(rec_value_scan(b->data, b->len, NULL, &used, NULL), 0);
    assert_int_equal(used, b->len);
    assert_int_equal(rec_value_push_lua(L, b->data, b->len, &used), 0);
    assert_int_equal(used, b->len);
    assert_int_equal(lua_gettop(L), top + 1);
    assert_true(deep_equal(L, -1, -2, 0));
    lua_pop(L, 1);
}

static int scan_default(const void *p, size_t n, size_t *used,
                        const char **why) {
    rec_value_limits l;
    rec_value_limits_default(&l);
    return rec_value_scan(p, n, &l, used, why);
}

/* ---- defaults ------------------------------------------------------------ */

static void test_limits_default(void **state) {
    (void)state;
    rec_value_limits l;
    memset(&l, 0xab, sizeof l);
    rec_value_limits_default(&l);
    assert_int_equal(l.max_bytes, 4u << 20);
    assert_int_equal(l.max_depth, 32);
    assert_int_equal(l.max_str, 1u << 20);
    assert_int_equal(l.max_items, 1000000);
}

/* ---- byte-exact encodings ------------------------------------------------ */

static void check_encoding(lua_State *L, const char *expr, const void *want,
                           size_t n) {
    rec_buf b = REC_BUF_INIT;
    char code[256];
    snprintf(code, sizeof code, "return %s", expr);
    eval(L, code);
    pack_top(L, &b);
    if (b.len != n || memcmp(b.data, want, n) != 0) {
        char hex[256] = "";
        for (size_t i = 0; i < b.len && i < 60; i++)
            snprintf(hex + 3 * i, 4, "%02x ", (unsigned char)b.data[i]);
        fail_msg("%s encoded as %s", expr, hex);
    }
    lua_pop(L, 1);
    rec_buf_free(&b);
}

#define ENC(L, expr, ...)                                                     \
    do {                                                                      \
        static const unsigned char w_[] = {__VA_ARGS__};                      \
        check_encoding(L, expr, w_, sizeof w_);                               \
    } while (0)

static void test_pack_exact(void **state) {
    (void)state;
    lua_State *L = new_state();
    ENC(L, "nil", 0xc0);
    ENC(L, "true", 0xc3);
    ENC(L, "false", 0xc2);
    ENC(L, "{1,2,3}", 0x93, 0x01, 0x02, 0x03);
    ENC(L, "{a=1}", 0x81, 0xa1, 0x61, 0x01);
    ENC(L, "{}", 0x80);
    ENC(L, "{{}}", 0x91, 0x80);
    ENC(L, "{{1},{a={}}}", 0x92, 0x91, 0x01, 0x81, 0xa1, 0x61, 0x80);
    ENC(L, "1.5", 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0);
    ENC(L, "2.0", 0xcb, 0x40, 0x00, 0, 0, 0, 0, 0, 0); /* stays a float */
    ENC(L, "0.0", 0xcb, 0, 0, 0, 0, 0, 0, 0, 0);
    ENC(L, "-0.0", 0xcb, 0x80, 0, 0, 0, 0, 0, 0, 0);
    ENC(L, "1/0", 0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0);
    ENC(L, "-1/0", 0xcb, 0xff, 0xf0, 0, 0, 0, 0, 0, 0);
    ENC(L, "''", 0xa0);
    ENC(L, "'a\\0b'", 0xa3, 0x61, 0x00, 0x62);
    ENC(L, "{[1]=true}", 0x91, 0xc3);
    ENC(L, "{[2]=true}", 0x81, 0x02, 0xc3);    /* no key 1: a map */
    ENC(L, "{[1.5]=0}", 0x81, 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0, 0x00);
    ENC(L, "{[true]=false}", 0x81, 0xc3, 0xc2);
    ENC(L, "{[-1]=1}", 0x81, 0xff, 0x01);
    ENC(L, "{['']=''}", 0x81, 0xa0, 0xa0);
    lua_close(L);
}

static void test_pack_array_detection(void **state) {
    (void)state;
    lua_State *L = new_state();
    rec_buf b = REC_BUF_INIT;
    /* A sequence with an extra string key is a map. */
    eval(L, "return {1, 2, x = 3}");
    pack_top(L, &b);
    assert_int_equal((unsigned char)b.data[0], 0x83);
    lua_pop(L, 1);
    /* Sparse: keys 1 and 3 -> map of 2. */
    eval(L, "return {[1] = 'a', [3] = 'c'}");
    pack_top(L, &b);
    assert_int_equal((unsigned char)b.data[0], 0x82);
    lua_pop(L, 1);
    /* A hole inside the array part: the border may be 2 while key 1 is
     * missing; must still be a map of 2 entries. */
    eval(L, "return {nil, 'b', x = 'c'}");
    pack_top(L, &b);
    assert_int_equal((unsigned char)b.data[0], 0x82);
    lua_pop(L, 1);
    eval(L, "local t = {nil, 'b'} return t");
    pack_top(L, &b);
    assert_int_equal((unsigned char)b.data[0], 0x81);
    lua_pop(L, 1);
    /* 16 elements -> array16 */
    eval(L, "local t = {} for i = 1, 16 do t[i] = i end return t");
    pack_top(L, &b);
    assert_int_equal(b.len, 3 + 16);
    assert_int_equal((unsigned char)b.data[0], 0xdc);
    assert_int_equal((unsigned char)b.data[1], 0x00);
    assert_int_equal((unsigned char)b.data[2], 0x10);
    lua_pop(L, 1);
    /* Float keys that are integral are normalised by Lua to integers. */
    eval(L, "return {[1.0] = 'x', [2.0] = 'y'}");
    pack_top(L, &b);
    assert_int_equal((unsigned char)b.data[0], 0x92);
    lua_pop(L, 1);
    assert_int_equal(lua_gettop(L), 0);
    rec_buf_free(&b);
    lua_close(L);
}

/* Metamethods must not run: raw access only. */
static void test_pack_ignores_metatables(void **state) {
    (void)state;
    lua_State *L = new_state();
    rec_buf b = REC_BUF_INIT;
    eval(L, "calls = 0\n"
            "local mt = {\n"
            "  __index = function() calls = calls + 1 return 1 end,\n"
            "  __pairs = function() calls = calls + 1 error('no') end,\n"
            "  __len = function() calls = calls + 1 return 5 end,\n"
            "}\n"
            "return setmetatable({1, 2}, mt)");
    pack_top(L, &b);
    static const unsigned char want[] = {0x92, 0x01, 0x02};
    assert_bytes(&b, want, sizeof want);
    lua_getglobal(L, "calls");
    assert_int_equal(lua_tointeger(L, -1), 0);
    lua_pop(L, 2);
    rec_buf_free(&b);
    lua_close(L);
}

/* ---- integers ------------------------------------------------------------ */

static void test_int_boundaries(void **state) {
    (void)state;
    static const struct {
        lua_Integer v;
        unsigned char enc[9];
        size_t n;
    } cases[] = {
        {0, {0x00}, 1},
        {1, {0x01}, 1},
        {127, {0x7f}, 1},
        {128, {0xcc, 0x80}, 2},
        {255, {0xcc, 0xff}, 2},
        {256, {0xcd, 0x01, 0x00}, 3},
        {65535, {0xcd, 0xff, 0xff}, 3},
        {65536, {0xce, 0x00, 0x01, 0x00, 0x00}, 5},
        {4294967295LL, {0xce, 0xff, 0xff, 0xff, 0xff}, 5},
        {4294967296LL, {0xcf, 0, 0, 0, 0x01, 0, 0, 0, 0}, 9},
        {INT64_MAX,
         {0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9},
        {-1, {0xff}, 1},
        {-32, {0xe0}, 1},
        {-33, {0xd0, 0xdf}, 2},
        {-128, {0xd0, 0x80}, 2},
        {-129, {0xd1, 0xff, 0x7f}, 3},
        {-32768, {0xd1, 0x80, 0x00}, 3},
        {-32769, {0xd2, 0xff, 0xff, 0x7f, 0xff}, 5},
        {-2147483648LL, {0xd2, 0x80, 0x00, 0x00, 0x00}, 5},
        {-2147483649LL, {0xd3, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff},
         9},
        {INT64_MIN, {0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0}, 9},
    };
    lua_State *L = new_state();
    rec_buf b = REC_BUF_INIT;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lua_pushinteger(L, cases[i].v);
        pack_top(L, &b);
        assert_bytes(&b, cases[i].enc, cases[i].n);
        size_t used = 0;
        assert_int_equal(rec_value_push_lua(L, b.data, b.len, &used), 0);
        assert_int_equal(used, cases[i].n);
        assert_true(lua_isinteger(L, -1));
        assert_true(lua_tointeger(L, -1) == cases[i].v);
        lua_pop(L, 2);
    }
    assert_int_equal(lua_gettop(L), 0);
    rec_buf_free(&b);
    lua_close(L);
}

/* Non-minimal encodings decode to the same integers; uint64 above
 * INT64_MAX becomes a float. */
static void test_decode_int_forms(void **state) {
    (void)state;
    static const struct {
        unsigned char enc[9];
        size_t n;
        lua_Integer v;
    } cases[] = {
        {{0xcc, 0x05}, 2, 5},
        {{0xcd, 0x00, 0x05}, 3, 5},
        {{0xce, 0, 0, 0, 0x05}, 5, 5},
        {{0xcf, 0, 0, 0, 0, 0, 0, 0, 0x05}, 9, 5},
        {{0xd0, 0x05}, 2, 5},
        {{0xd0, 0xff}, 2, -1},
        {{0xd1, 0xff, 0xfe}, 3, -2},
        {{0xd2, 0xff, 0xff, 0xff, 0xfd}, 5, -3},
        {{0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfc}, 9, -4},
        {{0xce, 0xff, 0xff, 0xff, 0xff}, 5, 4294967295LL},
        {{0xd2, 0x80, 0, 0, 0}, 5, -2147483648LL},
    };
    lua_State *L = new_state();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t used = 0;
        assert_int_equal(rec_value_push_lua(L, cases[i].enc, cases[i].n, &used),
                         0);
        assert_int_equal(used, cases[i].n);
        assert_true(lua_isinteger(L, -1));
        assert_true(lua_tointeger(L, -1) == cases[i].v);
        lua_pop(L, 1);
    }
    static const unsigned char big[] = {0xcf, 0xff, 0xff, 0xff, 0xff,
                                        0xff, 0xff, 0xff, 0xff};
    assert_int_equal(rec_value_push_lua(L, big, sizeof big, NULL), 0);
    assert_false(lua_isinteger(L, -1));
    assert_true(lua_tonumber(L, -1) == 18446744073709551615.0);
    lua_pop(L, 1);
    static const unsigned char top[] = {0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(rec_value_push_lua(L, top, sizeof top, NULL), 0);
    assert_false(lua_isinteger(L, -1));
    assert_true(lua_tonumber(L, -1) == 9223372036854775808.0);
    lua_pop(L, 1);
    assert_int_equal(lua_gettop(L), 0);
    lua_close(L);
}

/* ---- floats -------------------------------------------------------------- */

static void test_floats(void **state) {
    (void)state;
    lua_State *L = new_state();
    rec_buf b = REC_BUF_INIT;
    static const double vals[] = {0.0, -0.0, 1.5, -2.25, 2.0, 1e300, -1e-300,
                                  4.9e-324, 9007199254740993.0,
                                  9223372036854775808.0};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        lua_pushnumber(L, vals[i]);
        roundtrip_top(L, &b);
        assert_int_equal(b.len, 9);
        assert_int_equal((unsigned char)b.data[0], 0xcb);
        lua_pop(L, 1);
    }
    lua_pushnumber(L, HUGE_VAL);
    roundtrip_top(L, &b);
    lua_pop(L, 1);
    lua_pushnumber(L, -HUGE_VAL);
    roundtrip_top(L, &b);
    lua_pop(L, 1);
    lua_pushnumber(L, (lua_Number)NAN);
    pack_top(L, &b);
    lua_pop(L, 1);
    assert_int_equal(rec_value_push_lua(L, b.data, b.len, NULL), 0);
    assert_false(lua_isinteger(L, -1));
    assert_true(isnan(lua_tonumber(L, -1)));
    lua_pop(L, 1);

    /* float32 decodes */
    static const unsigned char f32[] = {0xca, 0x3f, 0xc0, 0x00, 0x00};
    assert_int_equal(rec_value_push_lua(L, f32, sizeof f32, NULL), 0);
    assert_false(lua_isinteger(L, -1));
    assert_true(lua_tonumber(L, -1) == 1.5);
    lua_pop(L, 1);
    static const unsigned char f32inf[] = {0xca, 0xff, 0x80, 0x00, 0x00};
    assert_int_equal(rec_value_push_lua(L, f32inf, sizeof f32inf, NULL), 0);
    assert_true(isinf(lua_tonumber(L, -1)) && lua_tonumber(L, -1) < 0);
    lua_pop(L, 1);
    /* float64 holding an integral value stays a float */
    static const unsigned char f64[] = {0xcb, 0x40, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(rec_value_push_lua(L, f64, sizeof f64, NULL), 0);
    assert_false(lua_isinteger(L, -1));
    assert_true(lua_tonumber(L, -1) == 2.0);
    lua_pop(L, 1);
    assert_int_equal(lua_gettop(L), 0);
    rec_buf_free(&b);
    lua_close(L);
}

/* ---- strings ------------------------------------------------------------- */

static void test_strings(void **state) {
    (void)state;
    static const struct {
        size_t n;
        unsigned char hdr[5];
        size_t hn;
    } cases[] = {
        {0, {0xa0}, 1},
        {1, {0xa1}, 1},
        {31, {0xbf}, 1},
        {32, {0xd9, 32}, 2},
        {255, {0xd9, 0xff}, 2},
        {256, {0xda, 0x01, 0x00}, 3},
        {65535, {0xda, 0xff, 0xff}, 3},
        {65536, {0xdb, 0x00, 0x01, 0x00, 0x00}, 5},
    };
    lua_State *L = new_state();
    rec_buf b = REC_BUF_INIT;
    char *s = malloc(65536);
    assert_non_null(s);
    for (size_t i = 0; i < 65536; i++)
        s[i] = (char)(i * 7 % 251); /* includes NUL bytes */
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = cases[i].n;
        lua_pushlstring(L, s, n);
        pack_top(L, &b);
        assert_int_equal(b.len, cases[i].hn + n);
        assert_memory_equal(b.data, cases[i].hdr, cases[i].hn);
        if (n)
            assert_memory_equal(b.data + cases[i].hn, s, n);
        roundtrip_top(L, &b);
        lua_pop(L, 1);
    }
    /* embedded NUL bytes */
    lua_pushlstring(L, "\0a\0\0b\0", 6);
    roundtrip_top(L, &b);
    lua_pop(L, 1);
    /* bin8/16/32 decode to strings */
    static const unsigned char bin8[] = {0xc4, 3, 'a', 0, 'c'};
    static const unsigned char bin16[] = {0xc5, 0, 2, 'x', 'y'};
    static const unsigned char bin32[] = {0xc6, 0, 0, 0, 1, 'z'};
    size_t n;
    assert_int_equal(rec_value_push_lua(L, bin8, sizeof bin8, NULL), 0);
    assert_memory_equal(lua_tolstring(L, -1, &n), "a\0c", 3);
    assert_int_equal(n, 3);
    assert_int_equal(rec_value_push_lua(L, bin16, sizeof bin16, NULL), 0);
    assert_string_equal(lua_tostring(L, -1), "xy");
    assert_int_equal(rec_value_push_lua(L, bin32, sizeof bin32, NULL), 0);
    assert_string_equal(lua_tostring(L, -1), "z");
    lua_pop(L, 3);
    free(s);
    rec_buf_free(&b);
    lua_close(L);
}

/* ---- nested round trips -------------------------------------------------- */

static void test_roundtrip_nested(void **state) {
    (void)state;
    lua_State *L = new_state();
    rec_buf b = REC_BUF_INIT;
    static const char *const exprs[] = {
        "{}",
        "{a = {b = {1, 2, {c = 'x'}}}, list = {1, 2, 3}, flag = true,"
        " off = false, f = 1.5, neg = -7, s = 'h\\0i', e = {}}",
        "{{{{{{{{{{}}}}}}}}}}",
        "{[1] = 'a', [3] = 'c', [-5] = {x = {y = {}}}, [2.5] = 'f',"
        " [true] = 1, [false] = 0}",
        "{1, 'two', 3.0, {4}, {five = 5}, true, false}",
        "(function() local t = {} for i = 1, 1000 do t[i] = i * i end"
        " return t end)()",
        "(function() local t = {} for i = 1, 300 do t['k' .. i] = {i, -i,"
        " tostring(i)} end return t end)()",
        "{math.maxinteger, math.mininteger, 1/0, -1/0, -0.0}",
    };
    for (size_t i = 0; i < sizeof exprs / sizeof exprs[0]; i++) {
        char code[512];
        snprintf(code, sizeof code, "return %s", exprs[i]);
        eval(L, code);
        roundtrip_top(L, &b);
        lua_pop(L, 1);
    }
    /* Shared (non-cyclic) subtables are packed twice, not refused. */
    eval(L, "local s = {1, 2} return {a = s, b = s, c = {s, s}}");
    roundtrip_top(L, &b);
    lua_pop(L, 1);
    /* 32 levels are accepted by pack, scan and push alike. */
    eval(L, "local t = {} for i = 1, 31 do t = {t} end return t");
    roundtrip_top(L, &b);
    assert_int_equal(b.len, 32);
    lua_pop(L, 1);
    assert_int_equal(lua_gettop(L), 0);
    rec_buf_free(&b);
    lua_close(L);
}

static void test_decode_shapes(void **state) {
    (void)state;
    lua_State *L = new_state();
    /* nil inside an array leaves a hole */
    static const unsigned char holes[] = {0x93, 0x01, 0xc0, 0x03};
    assert_int_equal(rec_value_push_lua(L, holes, sizeof holes, NULL), 0);
    lua_rawgeti(L, -1, 1);
    assert_int_equal(lua_tointeger(L, -1), 1);
    lua_rawgeti(L, -2, 2);
    assert_true(lua_isnil(L, -1));
    lua_rawgeti(L, -3, 3);
    assert_int_equal(lua_tointeger(L, -1), 3);
    lua_pop(L, 4);
    /* array16 and map16 forms, map with integer and string keys */
    static const unsigned char m16[] = {0xde, 0x00, 0x02, 0x01, 0xa1, 'a',
                                        0xa1, 'k', 0xdc, 0x00, 0x01, 0xc3};
    assert_int_equal(rec_value_push_lua(L, m16, sizeof m16, NULL), 0);
    lua_rawgeti(L, -1, 1);
    assert_string_equal(lua_tostring(L, -1), "a");
    lua_pop(L, 1);
    lua_getfield(L, -1, "k");
    assert_true(lua_istable(L, -1));
    lua_rawgeti(L, -1, 1);
    assert_true(lua_isboolean(L, -1) && lua_toboolean(L, -1));
    lua_pop(L, 3);
    /* duplicate keys: the last wins */
    static const unsigned char dup[] = {0x82, 0xa1, 'a', 0x01, 0xa1, 'a', 0x02};
    assert_int_equal(rec_value_push_lua(L, dup, sizeof dup, NULL), 0);
    lua_getfield(L, -1, "a");
    assert_int_equal(lua_tointeger(L, -1), 2);
    lua_pop(L, 2);
    /* trailing bytes are not consumed */
    static const unsigned char trail[] = {0x92, 0x01, 0x02, 0xc0, 0xc1};
    size_t used = 0;
    assert_int_equal(rec_value_push_lua(L, trail, sizeof trail, &used), 0);
    assert_int_equal(used, 3);
    assert_int_equal(lua_rawlen(L, -1), 2);
    lua_pop(L, 1);
    assert_int_equal(lua_gettop(L), 0);
    lua_close(L);
}

/* ---- scan ---------------------------------------------------------------- */

/* Every proper prefix is PARTIAL; the whole is 0 with *used = its length,
 * also with trailing bytes after it. */
static void check_prefixes(const unsigned char *p, size_t n) {
    rec_value_limits l;
    rec_value_limits_default(&l);
    unsigned char *q = malloc(n + 3);
    assert_non_null(q);
    memcpy(q, p, n);
    memcpy(q + n, "\xc1\x91\xdd", 3);
    for (size_t k = 0; k < n; k++) {
        size_t used = 77;
        const char *why = NULL;
        int rc = rec_value_scan(q, k, &l, &used, &why);
        if (rc != REC_VALUE_PARTIAL)
            fail_msg("prefix %zu of %zu: rc %d (%s)", k, n, rc,
                     why ? why : "-");
        assert_int_equal(used, 0);
        assert_non_null(why);
    }
    for (size_t extra = 0; extra <= 3; extra++) {
        size_t used = 0;
        const char *why = "x";
        assert_int_equal(rec_value_scan(q, n + extra, &l, &used, &why), 0);
        assert_int_equal(used, n);
        assert_null(why);
    }
    free(q);
}

static void test_scan_prefixes(void **state) {
    (void)state;
    /* Every format, nested. */
    static const unsigned char obj[] = {
        0xdf, 0, 0, 0, 3,                      /* map32, 3 pairs */
        0xa1, 'a',                             /* "a" => */
        0xdd, 0, 0, 0, 15,                     /* array32 of 15 */
        0x00, 0x7f, 0xe0, 0xc0, 0xc2, 0xc3,    /* fixints, nil, bools */
        0xcc, 0xff, 0xcd, 0xff, 0xff,          /* uint8, uint16 */
        0xce, 1, 2, 3, 4,                      /* uint32 */
        0xcf, 1, 2, 3, 4, 5, 6, 7, 8,          /* uint64 */
        0xd3, 1, 2, 3, 4, 5, 6, 7, 8,          /* int64 */
        0xca, 0x3f, 0xc0, 0, 0,                /* float32 */
        0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0,    /* float64 */
        0x90,                                  /* empty array */
        0xdc, 0, 3,                            /* array16 of 3 */
        0xd0, 0x80, 0xd1, 0, 1, 0xd2, 0, 0, 0, 1,
        0xd9, 2, 'h', 'i',                     /* str8 => */
        0xde, 0, 2,                            /* map16, 2 pairs */
        0xda, 0, 1, 'x', 0xc4, 1, 0xff,        /* str16 => bin8 */
        0xdb, 0, 0, 0, 1, 'y',                 /* str32 => */
        0x92, 0xc5, 0, 1, 0, 0xc6, 0, 0, 0, 0, /* [bin16, bin32 empty] */
        0x80,                                  /* {} => */
        0x94,                                  /* [ext forms] */
        0xd4, 1, 0xaa, 0xd8, 2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
        14, 15, 16, 0xc7, 2, 5, 1, 2, 0xc9, 0, 0, 0, 1, 7, 9,
    };
    check_prefixes(obj, sizeof obj);
    /* scalars alone */
    static const unsigned char one[] = {0x05};
    check_prefixes(one, 1);
    static const unsigned char d6[] = {0xd6, 1, 1, 2, 3, 4};
    check_prefixes(d6, sizeof d6);
    static const unsigned char c8[] = {0xc8, 0, 1, 3, 0};
    check_prefixes(c8, sizeof c8);

    /* Something packed from Lua, too. */
    lua_State *L = new_state();
    rec_buf b = REC_BUF_INIT;
    eval(L, "return {users = {{id = 1, tags = {'a', 'b'}},"
            " {id = 2, w = 0.5}}, n = 70000, s = string.rep('z', 300)}");
    pack_top(L, &b);
    check_prefixes((const unsigned char *)b.data, b.len);
    rec_buf_free(&b);
    lua_close(L);
}

static void test_scan_null_limits_and_used(void **state) {
    (void)state;
    static const unsigned char p[] = {0x92, 0x01, 0x02};
    size_t used = 0;
    assert_int_equal(rec_value_scan(p, sizeof p, NULL, &used, NULL), 0);
    assert_int_equal(used, 3);
    assert_int_equal(rec_value_scan(p, sizeof p, NULL, NULL, NULL), 0);
    assert_int_equal(rec_value_scan(p, 0, NULL, NULL, NULL), REC_VALUE_PARTIAL);
    assert_int_equal(rec_value_scan(NULL, 0, NULL, NULL, NULL), REC_VALUE_PARTIAL);
}

/* Each hostile header is refused from its first bytes, without waiting for
 * the payload it claims. */
static void expect_toolarge(const unsigned char *p, size_t n, size_t hdr,
                            const char *rule) {
    /* Fewer bytes than the length field: nothing known yet. */
    for (size_t k = 0; k < hdr; k++)
        assert_int_equal(scan_default(p, k, NULL, NULL), REC_VALUE_PARTIAL);
    for (size_t k = hdr; k <= n; k++) {
        const char *why = NULL;
        size_t used = 99;
        assert_int_equal(scan_default(p, k, &used, &why), REC_ETOOLARGE);
        assert_non_null(why);
        assert_string_equal(why, rule);
        assert_int_equal(used, 0);
    }
}

static void test_scan_hostile_headers(void **state) {
    (void)state;
    static const unsigned char a32[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    expect_toolarge(a32, sizeof a32, 5, "array exceeds max_items");
    static const unsigned char m32[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    expect_toolarge(m32, sizeof m32, 5, "map exceeds max_items");
    static const unsigned char s32[] = {0xdb, 0xb2, 0xd0, 0x5e, 0x00}; /* 3 GB */
    expect_toolarge(s32, sizeof s32, 5, "str exceeds max_str");
    static const unsigned char b32[] = {0xc6, 0xff, 0xff, 0xff, 0xff};
    expect_toolarge(b32, sizeof b32, 5, "bin exceeds max_str");
    static const unsigned char e32[] = {0xc9, 0xff, 0xff, 0xff, 0xff, 0x01};
    expect_toolarge(e32, sizeof e32, 5, "ext exceeds max_str");
    static const unsigned char s16[] = {0xda, 0xff, 0xff};
    rec_value_limits l;
    rec_value_limits_default(&l);
    l.max_str = 1000;
    const char *why = NULL;
    assert_int_equal(rec_value_scan(s16, 3, &l, NULL, &why), REC_ETOOLARGE);
    assert_string_equal(why, "str exceeds max_str");
    /* fixstr of 31 with max_str 30: the fixed-size headers count too */
    static const unsigned char fs[] = {0xbf};
    l.max_str = 30;
    assert_int_equal(rec_value_scan(fs, 1, &l, NULL, &why), REC_ETOOLARGE);
    l.max_str = 31;
    assert_int_equal(rec_value_scan(fs, 1, &l, NULL, &why), REC_VALUE_PARTIAL);
    /* fixext 16 with max_str 8 */
    static const unsigned char fx[] = {0xd8, 0x01};
    l.max_str = 8;
    assert_int_equal(rec_value_scan(fx, 2, &l, NULL, &why), REC_ETOOLARGE);
    assert_string_equal(why, "ext exceeds max_str");

    /* A nested claim inside a valid prefix. */
    static const unsigned char nested[] = {0x92, 0x01, 0xdd, 0x7f, 0, 0, 0};
    assert_int_equal(scan_default(nested, sizeof nested, NULL, &why),
                     REC_ETOOLARGE);
    assert_string_equal(why, "array exceeds max_items");

    /* Within max_items but more elements than max_bytes can hold: each
     * element needs at least one byte. */
    rec_value_limits_default(&l);
    l.max_bytes = 1000;
    static const unsigned char a16[] = {0xdc, 0x03, 0xe8}; /* 1000 items */
    assert_int_equal(rec_value_scan(a16, 3, &l, NULL, &why), REC_ETOOLARGE);
    assert_string_equal(why, "object exceeds max_bytes");
    static const unsigned char a16ok[] = {0xdc, 0x03, 0xe5}; /* 997 */
    assert_int_equal(rec_value_scan(a16ok, 3, &l, NULL, &why), REC_VALUE_PARTIAL);
    static const unsigned char m16[] = {0xde, 0x01, 0xf4}; /* 500 pairs */
    assert_int_equal(rec_value_scan(m16, 3, &l, NULL, &why), REC_ETOOLARGE);
    /* A string whose claimed payload runs past max_bytes. */
    static const unsigned char s8[] = {0xd9, 0xff};
    l.max_bytes = 200;
    assert_int_equal(rec_value_scan(s8, 2, &l, NULL, &why), REC_ETOOLARGE);
    assert_string_equal(why, "object exceeds max_bytes");
    /* Exactly max_bytes is fine. */
    unsigned char exact[200] = {0xd9, 198};
    size_t used = 0;
    assert_int_equal(rec_value_scan(exact, 200, &l, &used, NULL), 0);
    assert_int_equal(used, 200);
    l.max_bytes = 199;
    assert_int_equal(rec_value_scan(exact, 200, &l, &used, NULL), REC_ETOOLARGE);
    /* Pending siblings count: [str(190), 10 more items] with max 200. */
    unsigned char sib[3] = {0x9b, 0xd9, 190};
    l.max_bytes = 200;
    assert_int_equal(rec_value_scan(sib, 3, &l, NULL, &why), REC_ETOOLARGE);
    sib[2] = 187; /* 1 + 2 + 187 + 10 = 200 */
    assert_int_equal(rec_value_scan(sib, 3, &l, NULL, &why), REC_VALUE_PARTIAL);
    /* Length bytes that would run past max_bytes are refused before they
     * arrive. */
    static const unsigned char h32[] = {0xdd, 0x00, 0x00};
    l.max_bytes = 4;
    assert_int_equal(rec_value_scan(h32, sizeof h32, &l, NULL, &why),
                     REC_ETOOLARGE);
    assert_string_equal(why, "object exceeds max_bytes");
    l.max_bytes = 5;
    assert_int_equal(rec_value_scan(h32, sizeof h32, &l, NULL, &why),
                     REC_VALUE_PARTIAL);
    static const unsigned char inner[] = {0x92, 0xc0, 0xdb, 0x00};
    l.max_bytes = 7; /* [nil, str32 ""] would fit exactly */
    assert_int_equal(rec_value_scan(inner, sizeof inner, &l, NULL, &why),
                     REC_VALUE_PARTIAL);
    l.max_bytes = 6;
    assert_int_equal(rec_value_scan(inner, sizeof inner, &l, NULL, &why),
                     REC_ETOOLARGE);
    /* max_bytes counts bytes seen even when the object is incomplete. */
    unsigned char run[300];
    memset(run, 0x91, sizeof run);
    rec_value_limits_default(&l);
    l.max_depth = 1000;
    l.max_bytes = 100;
    assert_int_equal(rec_value_scan(run, 100, &l, NULL, &why), REC_ETOOLARGE);
}

static void test_scan_depth(void **state) {
    (void)state;
    unsigned char *bomb = malloc(10001);
    assert_non_null(bomb);
    memset(bomb, 0x91, 10000);
    bomb[10000] = 0xc0;
    const char *why = NULL;
    assert_int_equal(scan_default(bomb, 10001, NULL, &why), REC_ETOOLARGE);
    assert_string_equal(why, "nesting exceeds max_depth");
    /* refused as soon as level 33 opens, whatever follows */
    assert_int_equal(scan_default(bomb, 33, NULL, &why), REC_ETOOLARGE);
    assert_int_equal(scan_default(bomb, 32, NULL, &why), REC_VALUE_PARTIAL);
    /* exactly 32 levels is fine */
    unsigned char ok[33];
    memset(ok, 0x91, 32);
    ok[32] = 0xc0;
    size_t used = 0;
    assert_int_equal(scan_default(ok, 33, &used, NULL), 0);
    assert_int_equal(used, 33);
    /* maps nest too: {0: {0: ...}} */
    unsigned char mp[2 * 33 + 1];
    for (int i = 0; i < 33; i++) {
        mp[2 * i] = 0x81;
        mp[2 * i + 1] = 0x00;
    }
    mp[66] = 0xc0;
    assert_int_equal(scan_default(mp, sizeof mp, NULL, &why), REC_ETOOLARGE);
    assert_string_equal(why, "nesting exceeds max_depth");
    assert_int_equal(scan_default(mp + 2, sizeof mp - 2, &used, NULL), 0);
    /* empty containers count as a level */
    ok[32] = 0x90;
    assert_int_equal(scan_default(ok, 33, NULL, &why), REC_ETOOLARGE);
    ok[32] = 0x80;
    assert_int_equal(scan_default(ok, 33, NULL, &why), REC_ETOOLARGE);
    /* A caller asking for more than the internal cap gets the cap. */
    rec_value_limits l;
    rec_value_limits_default(&l);
    l.max_depth = 100000;
    assert_int_equal(rec_value_scan(bomb, 10001, &l, NULL, &why), REC_ETOOLARGE);
    assert_string_equal(why, "nesting exceeds max_depth");
    memset(bomb, 0x91, 256);
    bomb[256] = 0x05;
    assert_int_equal(rec_value_scan(bomb, 257, &l, &used, NULL), 0);
    assert_int_equal(used, 257);
    /* max_depth 0 allows scalars only */
    l.max_depth = 0;
    assert_int_equal(rec_value_scan(bomb + 256, 1, &l, &used, NULL), 0);
    assert_int_equal(rec_value_scan(bomb, 1, &l, &used, NULL), REC_ETOOLARGE);
    /* siblings at depth do not add up: wide but shallow is fine */
    static const unsigned char wide[] = {0x93, 0x91, 0x91, 0x01, 0x91, 0x02,
                                         0x91, 0x91, 0x03};
    rec_value_limits_default(&l);
    l.max_depth = 3;
    assert_int_equal(rec_value_scan(wide, sizeof wide, &l, &used, NULL), 0);
    assert_int_equal(used, sizeof wide);
    l.max_depth = 2;
    assert_int_equal(rec_value_scan(wide, sizeof wide, &l, &used, &why),
                     REC_ETOOLARGE);
    free(bomb);
}

static void test_scan_reserved(void **state) {
    (void)state;
    const char *why = NULL;
    static const unsigned char c1[] = {0xc1};
    assert_int_equal(scan_default(c1, 1, NULL, &why), REC_EPROTOCOL);
    assert_string_equal(why, "reserved byte 0xc1");
    static const unsigned char in[] = {0x92, 0x01, 0xc1};
    assert_int_equal(scan_default(in, 3, NULL, &why), REC_EPROTOCOL);
    assert_int_equal(scan_default(in, 2, NULL, &why), REC_VALUE_PARTIAL);
    static const unsigned char key[] = {0x81, 0xc1, 0x01};
    assert_int_equal(scan_default(key, 3, NULL, &why), REC_EPROTOCOL);
    /* inside a string payload 0xc1 is just a byte */
    static const unsigned char str[] = {0xa1, 0xc1};
    size_t used = 0;
    assert_int_equal(scan_default(str, 2, &used, NULL), 0);
    assert_int_equal(used, 2);
    /* scan accepts ext (push_lua refuses it) */
    static const unsigned char ext[] = {0xd4, 0x01, 0x02};
    assert_int_equal(scan_default(ext, 3, &used, NULL), 0);
}

/* ---- push_lua refusals --------------------------------------------------- */

static void expect_push_fails(lua_State *L, const void *p, size_t n,
                              int want) {
    lua_pushstring(L, "sentinel");
    int top = lua_gettop(L);
    size_t used = 123;
    assert_int_equal(rec_value_push_lua(L, p, n, &used), want);
    assert_int_equal(lua_gettop(L), top);
    assert_string_equal(lua_tostring(L, -1), "sentinel");
    assert_int_equal(used, 0);
    lua_pop(L, 1);
}

static void test_push_refuses(void **state) {
    (void)state;
    lua_State *L = new_state();
    static const unsigned char nilkey[] = {0x81, 0xc0, 0x01};
    expect_push_fails(L, nilkey, sizeof nilkey, REC_EPROTOCOL);
    static const unsigned char nankey[] = {0x81, 0xcb, 0x7f, 0xf8, 0, 0,
                                           0,    0,    0,    0,    0x01};
    expect_push_fails(L, nankey, sizeof nankey, REC_EPROTOCOL);
    static const unsigned char nan32[] = {0x81, 0xca, 0x7f, 0xc0, 0, 0, 0x01};
    expect_push_fails(L, nan32, sizeof nan32, REC_EPROTOCOL);
    /* nil key deep inside, after other content was pushed */
    static const unsigned char deep[] = {0x82, 0xa1, 'a', 0x93, 1, 2, 3,
                                         0xa1, 'b', 0x91, 0x81, 0xc0, 0x00};
    expect_push_fails(L, deep, sizeof deep, REC_EPROTOCOL);
    static const unsigned char ext[] = {0xd4, 0x01, 0x00};
    expect_push_fails(L, ext, sizeof ext, REC_EPROTOCOL);
    static const unsigned char ext8[] = {0x92, 0x01, 0xc7, 0x01, 0x05, 0xaa};
    expect_push_fails(L, ext8, sizeof ext8, REC_EPROTOCOL);
    static const unsigned char extval[] = {0x81, 0xa1, 'k', 0xd5, 1, 2, 3};
    expect_push_fails(L, extval, sizeof extval, REC_EPROTOCOL);
    static const unsigned char c1[] = {0x91, 0xc1};
    expect_push_fails(L, c1, sizeof c1, REC_EPROTOCOL);
    /* truncated input is malformed for push_lua */
    static const unsigned char trunc[] = {0x93, 0x01, 0x02};
    expect_push_fails(L, trunc, sizeof trunc, REC_EPROTOCOL);
    expect_push_fails(L, trunc, 0, REC_EPROTOCOL);
    static const unsigned char a32[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    expect_push_fails(L, a32, sizeof a32, REC_ETOOLARGE);
    unsigned char bomb[34];
    memset(bomb, 0x91, 33);
    bomb[33] = 0x01;
    expect_push_fails(L, bomb, sizeof bomb, REC_ETOOLARGE);
    assert_int_equal(rec_value_push_lua(L, bomb + 1, 33, NULL), 0);
    lua_pop(L, 1);
    /* strings above the default max_str */
    size_t big = (1u << 20) + 1;
    unsigned char *s = calloc(1, big + 5);
    assert_non_null(s);
    s[0] = 0xdb;
    s[1] = 0x00;
    s[2] = 0x10;
    s[3] = 0x00;
    s[4] = 0x01;
    expect_push_fails(L, s, big + 5, REC_ETOOLARGE);
    s[4] = 0x00; /* exactly 1 MiB */
    assert_int_equal(rec_value_push_lua(L, s, big + 4, NULL), 0);
    assert_int_equal(lua_rawlen(L, -1), big - 1);
    lua_pop(L, 1);
    free(s);
    assert_int_equal(lua_gettop(L), 0);
    lua_close(L);
}

/* ---- pack refusals ------------------------------------------------------- */

static void expect_pack_fails(lua_State *L, const char *expr, int want,
                              const char *msg) {
    rec_buf b = REC_BUF_INIT;
    assert_int_equal(rec_buf_append(&b, "xyz", 3), 0);
    char code[512];
    snprintf(code, sizeof code, "return %s", expr);
    eval(L, code);
    lua_pushstring(L, "above");
    int top = lua_gettop(L);
    char err[128];
    memset(err, 'Q', sizeof err);
    int rc = rec_value_pack_lua(L, -2, &b, err, sizeof err);
    if (rc != want)
        fail_msg("%s: rc %d (%s), want %d", expr, rc, err, want);
    assert_int_equal(lua_gettop(L), top);
    assert_string_equal(lua_tostring(L, -1), "above");
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "xyz", 3);
    if (strcmp(err, msg) != 0)
        fail_msg("%s: err '%s', want '%s'", expr, err, msg);
    /* NULL err is fine too */
    assert_int_equal(rec_value_pack_lua(L, -2, &b, NULL, 0), want);
    assert_int_equal(b.len, 3);
    lua_pop(L, 2);
    rec_buf_free(&b);
}

static void test_pack_refuses(void **state) {
    (void)state;
    lua_State *L = new_state();
    expect_pack_fails(L, "print", REC_EINVAL, "function cannot be stored");
    expect_pack_fails(L, "{tags = {'a', 'b', print}}", REC_EINVAL,
                      "tags[3]: function cannot be stored");
    expect_pack_fails(L, "{a = {b = print}}", REC_EINVAL,
                      "a.b: function cannot be stored");
    expect_pack_fails(L, "{props = {tags = {1, 2, function() end}}}",
                      REC_EINVAL, "props.tags[3]: function cannot be stored");
    expect_pack_fails(L, "{{}, {x = {coroutine.create(print)}}}", REC_EINVAL,
                      "[2].x[1]: thread cannot be stored");
    expect_pack_fails(L, "{['a b'] = {[7] = {[true] = print}}}", REC_EINVAL,
                      "[\"a b\"][7][true]: function cannot be stored");
    expect_pack_fails(L, "{[2.5] = io.stdout}", REC_EINVAL,
                      "[2.5]: userdata cannot be stored");
    expect_pack_fails(L, "{a = {[{}] = 1}}", REC_EINVAL,
                      "a: table key cannot be stored");
    expect_pack_fails(L, "{[print] = 1}", REC_EINVAL,
                      "function key cannot be stored");
    expect_pack_fails(L, "(function() local t = {} t.self = t return t end)()",
                      REC_EINVAL, "self: cycle: table contains itself");
    expect_pack_fails(L,
                      "(function() local t = {a = {b = {}}} t.a.b.c = t.a"
                      " return t end)()",
                      REC_EINVAL, "a.b.c: cycle: table contains itself");
    expect_pack_fails(L,
                      "(function() local t = {} for i = 1, 39 do t = {t} end"
                      " return t end)()",
                      REC_ERANGE,
                      "[1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1]"
                      "[1][1][1][1][1][1][1][1][1][1][1][1][1][1]: nesting"
                      " deeper than 32");
    expect_pack_fails(L,
                      "(function() local t = {} for i = 1, 32 do t = {t} end"
                      " return t end)()",
                      REC_ERANGE,
                      "[1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1]"
                      "[1][1][1][1][1][1][1][1][1][1][1][1][1][1]: nesting"
                      " deeper than 32");

    /* light userdata and full userdata from C */
    rec_buf b = REC_BUF_INIT;
    char err[64];
    lua_pushlightuserdata(L, &b);
    assert_int_equal(rec_value_pack_lua(L, -1, &b, err, sizeof err), REC_EINVAL);
    assert_string_equal(err, "userdata cannot be stored");
    lua_pop(L, 1);
    lua_newuserdatauv(L, 8, 0);
    assert_int_equal(rec_value_pack_lua(L, -1, &b, err, sizeof err), REC_EINVAL);
    lua_pop(L, 1);
    /* A tiny err buffer is truncated, still terminated. */
    eval(L, "return {alpha = {beta = print}}");
    char tiny[8];
    assert_int_equal(rec_value_pack_lua(L, -1, &b, tiny, sizeof tiny),
                     REC_EINVAL);
    assert_string_equal(tiny, "alpha.b");
    assert_int_equal(rec_value_pack_lua(L, -1, &b, tiny, 1), REC_EINVAL);
    assert_string_equal(tiny, "");
    lua_pop(L, 1);
    assert_int_equal(b.len, 0);
    /* Negative and positive indices both work. */
    lua_pushinteger(L, 7);
    lua_pushnil(L);
    assert_int_equal(rec_value_pack_lua(L, 1, &b, err, sizeof err), 0);
    assert_int_equal(rec_value_pack_lua(L, -1, &b, err, sizeof err), 0);
    static const unsigned char want[] = {0x07, 0xc0};
    assert_bytes(&b, want, sizeof want);
    lua_pop(L, 2);
    assert_int_equal(lua_gettop(L), 0);
    rec_buf_free(&b);
    lua_close(L);
}

/* ---- fuzz ---------------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t xorshift(void) {
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

/* Bytes that make interesting headers more often than uniform noise. */
static unsigned char fuzz_byte(void) {
    static const unsigned char hot[] = {
        0x00, 0x01, 0x7f, 0x80, 0x81, 0x82, 0x8f, 0x90, 0x91, 0x92, 0x9f,
        0xa0, 0xa1, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
        0xc8, 0xc9, 0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd1, 0xd2,
        0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd,
        0xde, 0xdf, 0xe0, 0xff, 0x7f, 0xf8};
    uint64_t r = xorshift();
    if (r & 1)
        return hot[(r >> 8) % sizeof hot];
    return (unsigned char)(r >> 16);
}

static void fuzz_one(lua_State *L, const unsigned char *p, size_t n,
                     rec_buf *b, long *decoded) {
    rec_value_limits l;
    rec_value_limits_default(&l);
    size_t used = 0;
    const char *why = NULL;
    int s = rec_value_scan(p, n, &l, &used, &why);
    assert_true(s == 0 || s == REC_VALUE_PARTIAL || s == REC_EPROTOCOL ||
                s == REC_ETOOLARGE);
    if (s == 0) {
        assert_true(used >= 1 && used <= n);
        assert_null(why);
        /* the object alone scans the same; any shorter prefix is partial */
        size_t u2 = 0;
        assert_int_equal(rec_value_scan(p, used, &l, &u2, NULL), 0);
        assert_int_equal(u2, used);
        size_t k = (size_t)(xorshift() % used);
        assert_int_equal(rec_value_scan(p, k, &l, &u2, NULL), REC_VALUE_PARTIAL);
    } else {
        assert_non_null(why);
    }
    /* Tight limits must never do worse than refuse. */
    rec_value_limits t = {16, 3, 4, 4};
    int st = rec_value_scan(p, n, &t, &used, &why);
    assert_true(st == 0 || st == REC_VALUE_PARTIAL || st == REC_EPROTOCOL ||
                st == REC_ETOOLARGE);
    if (st == 0)
        assert_int_equal(s, 0);

    int top = lua_gettop(L);
    size_t pu = 0;
    int rc = rec_value_push_lua(L, p, n, &pu);
    if (rc != 0) {
        assert_int_equal(lua_gettop(L), top);
        if (s == REC_VALUE_PARTIAL || s == 0)
            assert_int_equal(rc, REC_EPROTOCOL); /* truncated / ext / key */
        else
            assert_int_equal(rc, s);
        return;
    }
    assert_int_equal(s, 0);
    rec_value_scan(p, n, &l, &used, NULL);
    assert_int_equal(pu, used);
    assert_int_equal(lua_gettop(L), top + 1);
    (*decoded)++;
    /* Whatever decodes re-encodes (unless a key is a table) and decodes to
     * an equal value. */
    char err[128];
    b->len = 0;
    int pr = rec_value_pack_lua(L, -1, b, err, sizeof err);
    assert_int_equal(lua_gettop(L), top + 1);
    if (pr != 0) {
        assert_int_equal(pr, REC_EINVAL);
        assert_non_null(strstr(err, "table key cannot be stored"));
        assert_int_equal(b->len, 0);
    } else {
        assert_int_equal(rec_value_push_lua(L, b->data, b->len, &pu), 0);
        assert_int_equal(pu, b->len);
        assert_true(deep_equal(L, -1, -2, 0));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static void test_fuzz(void **state) {
    (void)state;
    lua_State *L = new_state();
    rec_buf b = REC_BUF_INIT;
    rec_buf seed = REC_BUF_INIT;
    unsigned char buf[80];
    long decoded = 0;
    rng_state = 0x9e3779b97f4a7c15ULL;

    /* Valid encodings to mutate. */
    static const char *const corpus_src[] = {
        "{1, 2, 3}",
        "{a = 1, b = {c = 'xy', d = {true, false}}, [5] = 2.5}",
        "{{{{}}}, {x = -1000000}, 'str', 65536, -129}",
        "{math.maxinteger, math.mininteger, 0.1, ''}",
        "{k = string.rep('q', 40)}",
    };
    enum { NCORPUS = sizeof corpus_src / sizeof corpus_src[0] };
    unsigned char corpus[NCORPUS][80];
    size_t corpus_len[NCORPUS];
    for (int i = 0; i < NCORPUS; i++) {
        char code[256];
        snprintf(code, sizeof code, "return %s", corpus_src[i]);
        eval(L, code);
        pack_top(L, &seed);
        lua_pop(L, 1);
        assert_true(seed.len <= sizeof corpus[i]);
        memcpy(corpus[i], seed.data, seed.len);
        corpus_len[i] = seed.len;
    }
    static const unsigned char handmade[] = {
        0x83, 0xc4, 2, 'a', 'b', 0x92, 0xc0, 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0,
        0, 0xd9, 1, 'z', 0x81, 0xa1, 'n', 0x80, 0x02, 0xd4, 1, 1};

    for (long iter = 0; iter < 200000; iter++) {
        size_t n;
        uint64_t mode = xorshift() % 3;
        if (mode == 0) {
            n = (size_t)(xorshift() % 65);
            for (size_t i = 0; i < n; i++)
                buf[i] = fuzz_byte();
        } else {
            const unsigned char *src;
            if (mode == 1) {
                size_t c = (size_t)(xorshift() % NCORPUS);
                src = corpus[c];
                n = corpus_len[c];
            } else {
                src = handmade;
                n = sizeof handmade;
            }
            memcpy(buf, src, n);
            int muts = 1 + (int)(xorshift() % 4);
            for (int m = 0; m < muts; m++) {
                uint64_t r = xorshift();
                size_t at = n ? (size_t)((r >> 8) % n) : 0;
                switch (r % 4) {
                case 0: /* replace */
                    if (n)
                        buf[at] = fuzz_byte();
                    break;
                case 1: /* flip a bit */
                    if (n)
                        buf[at] ^= (unsigned char)(1u << ((r >> 40) % 8));
                    break;
                case 2: /* truncate */
                    n = at;
                    break;
                default: /* insert */
                    if (n < 64) {
                        memmove(buf + at + 1, buf + at, n - at);
                        buf[at] = fuzz_byte();
                        n++;
                    }
                    break;
                }
            }
        }
        fuzz_one(L, buf, n, &b, &decoded);
        assert_int_equal(lua_gettop(L), 0);
    }
    /* The loop must actually reach the decoder, not only refusals. */
    assert_true(decoded > 20000);
    rec_buf_free(&b);
    rec_buf_free(&seed);
    lua_close(L);
}

/* ---- header classification --------------------------------------------- */

/* rec_value_classify against msgpack-c, byte by byte: for every type byte,
 * the smallest object its header describes (a length of 3 where the header
 * holds one, zero bytes for payloads, nil for elements) is what msgpack-c
 * decodes, of the same kind and consuming exactly those bytes; 0xc1 is
 * refused by both. */
static void test_classify_every_byte(void **state) {
    (void)state;
    msgpack_zone *z = msgpack_zone_new(1024);
    assert_non_null(z);
    for (unsigned b = 0; b < 256; b++) {
        rec_value_head h = rec_value_classify((unsigned char)b);
        unsigned char obj[64] = {(unsigned char)b};
        size_t len = 1, off = 0;
        msgpack_object o;
        if (h.kind == REC_VALUE_RESERVED) {
            assert_int_equal(b, 0xc1);
            assert_true(msgpack_unpack((const char *)obj, sizeof obj, &off, z, &o) < 0);
            continue;
        }
        assert_true(h.lenbytes == 0 || h.lenbytes == 1 || h.lenbytes == 2 || h.lenbytes == 4);
        assert_int_equal(h.extra, h.kind == REC_VALUE_EXT);
        uint32_t n = h.n;
        if (h.lenbytes) {
            assert_int_equal(h.n, 0);
            n = 3;
            obj[len + h.lenbytes - 1] = 3; /* big-endian 3 */
            assert_int_equal(rec_value_head_len(obj + len, h.lenbytes), 3);
            len += h.lenbytes;
        }
        size_t body = h.kind == REC_VALUE_MAP ? 2 * (size_t)n : (size_t)n;
        len += h.extra + body;
        for (size_t i = len - body; i < len; i++)
            obj[i] = h.kind == REC_VALUE_ARRAY || h.kind == REC_VALUE_MAP ? 0xc0 : 'x';
        assert_true(len < sizeof obj);
        msgpack_zone_clear(z);
        assert_int_equal(msgpack_unpack((const char *)obj, len, &off, z, &o),
                         MSGPACK_UNPACK_SUCCESS);
        assert_int_equal(off, len);
        off = 0; /* and one byte less is not enough */
        assert_int_equal(msgpack_unpack((const char *)obj, len - 1, &off, z, &o),
                         MSGPACK_UNPACK_CONTINUE);
        off = 0;
        msgpack_unpack((const char *)obj, len, &off, z, &o);
        switch (h.kind) {
        case REC_VALUE_STR: assert_int_equal(o.type, MSGPACK_OBJECT_STR); break;
        case REC_VALUE_BIN: assert_int_equal(o.type, MSGPACK_OBJECT_BIN); break;
        case REC_VALUE_EXT: assert_int_equal(o.type, MSGPACK_OBJECT_EXT); break;
        case REC_VALUE_ARRAY:
            assert_int_equal(o.type, MSGPACK_OBJECT_ARRAY);
            assert_int_equal(o.via.array.size, n);
            break;
        case REC_VALUE_MAP:
            assert_int_equal(o.type, MSGPACK_OBJECT_MAP);
            assert_int_equal(o.via.map.size, n);
            break;
        default:
            assert_int_equal(h.kind, REC_VALUE_SCALAR);
            assert_true(o.type == MSGPACK_OBJECT_NIL || o.type == MSGPACK_OBJECT_BOOLEAN ||
                        o.type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
                        o.type == MSGPACK_OBJECT_NEGATIVE_INTEGER ||
                        o.type == MSGPACK_OBJECT_FLOAT32 || o.type == MSGPACK_OBJECT_FLOAT64);
        }
        if (h.kind == REC_VALUE_STR || h.kind == REC_VALUE_BIN)
            assert_int_equal(o.via.str.size, n);
    }
    msgpack_zone_free(z);
    /* lengths are big-endian, up to four bytes */
    const unsigned char be[4] = {0x12, 0x34, 0x56, 0x78};
    assert_int_equal(rec_value_head_len(be, 1), 0x12);
    assert_int_equal(rec_value_head_len(be, 2), 0x1234);
    assert_int_equal(rec_value_head_len(be, 4), 0x12345678);
}

/* The positive results (err.h) are apart from each other, from success,
 * from a stray 1 and from every error: none has an error's name. */
static void test_statuses_apart(void **state) {
    (void)state;
    const int st[] = {REC_VALUE_PARTIAL, REC_BATCH_SILENT, REC_NOT_LOADED, REC_PENDING};
    size_t n = sizeof st / sizeof st[0];
    assert_int_equal(n, REC__STATUS_END - REC__STATUS_BASE - 1);
    for (size_t i = 0; i < n; i++) {
        assert_true(st[i] > 1);
        assert_string_equal(rec_err_name(st[i]), "unknown_error");
        for (size_t j = 0; j < i; j++)
            assert_int_not_equal(st[i], st[j]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limits_default),
        cmocka_unit_test(test_pack_exact),
        cmocka_unit_test(test_pack_array_detection),
        cmocka_unit_test(test_pack_ignores_metatables),
        cmocka_unit_test(test_int_boundaries),
        cmocka_unit_test(test_decode_int_forms),
        cmocka_unit_test(test_floats),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_roundtrip_nested),
        cmocka_unit_test(test_decode_shapes),
        cmocka_unit_test(test_scan_prefixes),
        cmocka_unit_test(test_scan_null_limits_and_used),
        cmocka_unit_test(test_scan_hostile_headers),
        cmocka_unit_test(test_scan_depth),
        cmocka_unit_test(test_scan_reserved),
        cmocka_unit_test(test_push_refuses),
        cmocka_unit_test(test_pack_refuses),
        cmocka_unit_test(test_fuzz),
        cmocka_unit_test(test_classify_every_byte),
        cmocka_unit_test(test_statuses_apart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
