/* test_sandbox.c - the bounded library: the same answers as Lua's own
 * (tests/unit/sandbox_cases.lua runs both on a table of cases and on
 * random patterns), and each bounded function stopped by the budget on
 * its worst input. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "err.h"
#include "lua_api.h"
#include "sandbox.h"
#include "value.h"

#include <ftw.h>
#include <stdlib.h>

/* A budget for tests: steps and bytes counted, limits settable. */
typedef struct tbudget {
    uint64_t steps, max_steps;
    size_t room;
    int charges, refusals;
} tbudget;

static const char *t_charge(void *ud, lua_State *L, uint64_t steps, uint64_t call_steps) {
    tbudget *b = ud;
    b->steps += steps;
    b->charges++;
    return b->steps > b->max_steps ? "instruction budget exceeded (test)" : NULL;
}

static const char *t_reserve(void *ud, lua_State *L, size_t bytes) {
    tbudget *b = ud;
    if (bytes <= b->room)
        return NULL;
    b->refusals++;
    return "memory budget exceeded (test)";
}

typedef struct tstate {
    lua_State *L;
    tbudget b;
    rec_sandbox_budget sb;
} tstate;

/* A state with the stock libraries, and SB.string, SB.table, SB.utf8 the
 * bounded copies; the bounded string library is also the strings'
 * metatable __index. */
static void open_state(tstate *t, uint64_t max_steps, size_t room) {
    memset(t, 0, sizeof *t);
    t->b.max_steps = max_steps;
    t->b.room = room;
    t->sb = (rec_sandbox_budget){.charge = t_charge, .reserve = t_reserve, .ud = &t->b};
    lua_State *L = t->L = luaL_newstate();
    assert_non_null(L);
    luaL_openlibs(L);
    rec_sandbox_set_budget(L, &t->sb);
    lua_newtable(L);
    static const char *const libs[] = {"string", "table", "utf8", NULL};
    for (int i = 0; libs[i]; i++) {
        lua_getglobal(L, libs[i]);
        lua_newtable(L);
        lua_pushnil(L);
        while (lua_next(L, -3)) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -4);
        }
        rec_sandbox_patch(L, -1, libs[i]);
        lua_setfield(L, -3, libs[i]);
        lua_pop(L, 1);
    }
    lua_setglobal(L, "SB");
}

/* Run code; returns 1 when it raised, with the message in msg. */
static int run(tstate *t, const char *code, char *msg, size_t len) {
    lua_State *L = t->L;
    msg[0] = 0;
    int st = luaL_loadstring(L, code);
    if (st == LUA_OK)
        st = lua_pcall(L, 0, 1, 0);
    if (st != LUA_OK) {
        snprintf(msg, len, "%s", luaL_tolstring(L, -1, NULL)); /* error objects too */
        lua_pop(L, 2);
        return 1;
    }
    const char *r = lua_tostring(L, -1);
    snprintf(msg, len, "%s", r ? r : "");
    lua_pop(L, 1);
    return 0;
}

static void expect_error(tstate *t, const char *code, const char *want) {
    char msg[512];
    int raised = run(t, code, msg, sizeof msg);
    if (!raised || !strstr(msg, want))
        fail_msg("%s\n  raised %d: %s\n  wanted an error with: %s", code, raised, msg, want);
}

static void expect_result(tstate *t, const char *code, const char *want) {
    char msg[512];
    int raised = run(t, code, msg, sizeof msg);
    if (raised || strcmp(msg, want) != 0)
        fail_msg("%s\n  raised %d: %s\n  wanted: %s", code, raised, msg, want);
}

/* ---- conformance ------------------------------------------------------- */

static void test_conformance(void **state) {
    tstate t;
    open_state(&t, UINT64_MAX, SIZE_MAX);
    lua_State *L = t.L;
    if (luaL_dofile(L, "tests/unit/sandbox_cases.lua") != LUA_OK)
        fail_msg("sandbox_cases.lua: %s", lua_tostring(L, -1));
    lua_Integer count = lua_tointeger(L, -2);
    lua_Integer bad = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= bad; i++) {
        lua_rawgeti(L, -1, i);
        printf("mismatch: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    printf("  %lld comparisons with the stock library\n", (long long)count);
    assert_true(count > 90000);
    assert_int_equal(bad, 0);
    lua_close(L);
}

/* ---- worst inputs -------------------------------------------------------- */

/* The backtracking that held a server for minutes: n^3 steps. */
static void test_pattern_worst(void **state) {
    tstate t;
    open_state(&t, 2000000, SIZE_MAX);
    static const char *const code[] = {
        "local s = string.rep('a', 20000) return SB.string.find(s, '.-.-.-b')",
        "local s = string.rep('a', 20000) return SB.string.match(s, '.-.-.-b')",
        "local s = string.rep('a', 20000) for x in SB.string.gmatch(s, '.-.-.-b') do end",
        "local s = string.rep('a', 20000) return SB.string.gsub(s, '.-.-.-b', '')",
        "local s = string.rep('a', 20000) return ('x' .. s):find('x.*.*.*b')",
        "local s = string.rep('(', 20000) return SB.string.find(s, '%b()')",
        "local s = string.rep('a', 20000) return SB.string.find(s, '(.*)%1b')",
        "local s = string.rep('a', 20000) return SB.string.find(s, 'a*a*a*b')",
    };
    for (size_t i = 0; i < sizeof code / sizeof *code; i++) {
        t.b.steps = 0;
        if (strstr(code[i], "('x' .. s):find")) {
            /* through the string metatable: set it to the bounded copy */
            run(&t, "getmetatable('').__index = SB.string return 1", (char[8]){0}, 8);
        }
        expect_error(&t, code[i], "instruction budget exceeded");
        assert_true(t.b.steps > 2000000);
        assert_true(t.b.steps < 2000000 + 2 * 4096 + 20000);
    }
    lua_close(t.L);
}

/* A plain find is linear whatever the two strings (memmem), and charged. */
static void test_plain_find_linear(void **state) {
    tstate t;
    open_state(&t, UINT64_MAX, SIZE_MAX);
    expect_result(&t, "local s = string.rep('a', 1 << 22) "
                      "return tostring(SB.string.find(s, string.rep('a', 5000) .. 'b', 1, true))",
                  "nil");
    assert_true(t.b.steps >= (1u << 22) / REC_SANDBOX_BYTES_PER_STEP);
    lua_close(t.L);
}

static void test_rep_checked_before_allocating(void **state) {
    tstate t;
    open_state(&t, UINT64_MAX, 1 << 20);
    expect_error(&t, "return SB.string.rep('abc', 1e8)", "memory budget exceeded");
    expect_error(&t, "return SB.string.rep('', 1e8, 'xy')", "memory budget exceeded");
    expect_error(&t, "return SB.string.rep('x', 1 << 40)", "resulting string too large");
    assert_int_equal(t.b.refusals, 2);
    expect_result(&t, "return SB.string.rep('ab', 3, '-')", "ab-ab-ab");
    expect_result(&t, "return #SB.string.rep('abc', 100000, ',')", "399999");
    expect_result(&t, "local r = SB.string.rep('ab', 1000, '-') "
                      "return tostring(r == string.rep('ab', 1000, '-'))", "true");
    lua_close(t.L);
}

static void test_format_bounded(void **state) {
    tstate t;
    open_state(&t, UINT64_MAX, 1 << 20);
    expect_error(&t, "local s = string.rep('a', 600000) return SB.string.format('%s%s', s, s)",
                 "memory budget exceeded");
    expect_error(&t, "local s = string.rep('a', 300000) return SB.string.format('%q', s)",
                 "memory budget exceeded");
    expect_error(&t, "return SB.string.format('%1000d', 1)", "invalid conversion");
    expect_result(&t, "return SB.string.format('%5.1f|%-3s|%q', 2.25, 'x', 'a\\n')",
                  "  2.2|x  |\"a\\\n\"");
    /* a __tostring runs once, as with the stock function */
    expect_result(&t, "local n = 0 local o = setmetatable({}, {__tostring = function() "
                      "n = n + 1 return 'o' end}) return SB.string.format('%s', o) .. n", "o1");
    lua_close(t.L);
}

static void test_concat_bounded(void **state) {
    tstate t;
    open_state(&t, 100000, 1 << 20);
    /* separators alone past the memory left: refused before any work */
    expect_error(&t, "local sep = string.rep(',', 1000) "
                     "local t = setmetatable({}, {__index = function() return '' end}) "
                     "return SB.table.concat(t, sep, 1, 1e6)", "memory budget exceeded");
    /* many elements: charged one step each */
    expect_error(&t, "local t = setmetatable({}, {__index = function() return '' end}) "
                     "return SB.table.concat(t, '', 1, 1e9)", "instruction budget exceeded");
    lua_close(t.L);
}

static void test_move_insert_remove_charged(void **state) {
    tstate t;
    open_state(&t, 1000000, SIZE_MAX);
    /* the stock move would loop 2^40 times in C */
    expect_error(&t, "return SB.table.move({}, 1, 1 << 40, 1)", "instruction budget exceeded");
    assert_true(t.b.steps >= (1ull << 40));
    t.b.steps = 0;
    expect_error(&t, "local t = {} for i = 1, 20000 do t[i] = i end "
                     "for i = 1, 1000 do SB.table.insert(t, 1, 0) end",
                 "instruction budget exceeded");
    t.b.steps = 0;
    expect_error(&t, "local t = {} for i = 1, 20000 do t[i] = i end "
                     "for i = 1, 1000 do SB.table.remove(t, 1) end",
                 "instruction budget exceeded");
    lua_close(t.L);
}

static void test_sort_bounded(void **state) {
    tstate t;
    open_state(&t, UINT64_MAX, SIZE_MAX);
    /* an inconsistent comparator: an error, and the table keeps its elements */
    expect_error(&t, "local t = {} for i = 1, 100 do t[i] = i % 7 end "
                     "SB.table.sort(t, function(a, b) return true end)",
                 "invalid order function for sorting");
    expect_error(&t, "local t = {} for i = 1, 100 do t[i] = i % 7 end "
                     "SB.table.sort(t, function(a, b) return a <= b end)",
                 "invalid order function for sorting");
    expect_result(&t, "local t = {} for i = 1, 200 do t[i] = i end local n = 0 "
                      "local ok = pcall(SB.table.sort, t, function(a, b) n = n + 1 "
                      "if n == 300 then error('boom') end return a > b end) "
                      "local seen = {} for i = 1, 200 do seen[t[i]] = true end "
                      "for i = 1, 200 do if not seen[i] then return 'lost ' .. i end end "
                      "return tostring(ok) .. ' ' .. #t", "false 200");
    /* comparisons: n log n whatever the input, for a sorted, reversed or
     * organ-pipe array alike */
    expect_result(&t, "local worst = 0 for _, kind in ipairs({'up', 'down', 'pipe', 'same'}) do "
                      "local t, n = {}, 0 for i = 1, 4096 do t[i] = kind == 'up' and i or "
                      "kind == 'down' and -i or kind == 'pipe' and math.abs(i - 2048) or 1 end "
                      "SB.table.sort(t, function(a, b) n = n + 1 return a < b end) "
                      "for i = 2, #t do assert(t[i - 1] <= t[i]) end "
                      "if n > worst then worst = n end end "
                      "return tostring(worst <= 4096 * 12 + 3 * 4096)", "true");
    /* arrays too large for the stack: sorted in place, same guarantees */
    expect_result(&t, "local t = {} for i = 1, 250000 do t[i] = (i * 7919) % 250007 end "
                      "SB.table.sort(t) for i = 2, #t do if t[i - 1] > t[i] then "
                      "return 'unsorted' end end return 'ok'", "ok");
    expect_result(&t, "local t = {} for i = 1, 250000 do t[i] = i end local n = 0 "
                      "local ok = pcall(SB.table.sort, t, function(a, b) n = n + 1 "
                      "if n == 100000 then error('boom') end return a > b end) "
                      "local seen = {} for i = 1, #t do seen[t[i]] = true end "
                      "for i = 1, 250000 do if not seen[i] then return 'lost ' .. i end end "
                      "return tostring(ok) .. ' ' .. #t", "false 250000");
    expect_error(&t, "local t = {} for i = 1, 250000 do t[i] = i % 7 end "
                     "SB.table.sort(t, function(a, b) return a <= b end)",
                 "invalid order function for sorting");
    /* long equal strings: each comparison charged by its bytes */
    t.b.max_steps = 1000000;
    t.b.steps = 0;
    expect_error(&t, "local s = string.rep('a', 1 << 20) local t = {} "
                     "for i = 1, 2000 do t[i] = s end SB.table.sort(t)",
                 "instruction budget exceeded");
    lua_close(t.L);
}

static void test_utf8_charged(void **state) {
    tstate t;
    open_state(&t, 1000000, SIZE_MAX);
    /* the codes iterator called again and again over continuation bytes */
    expect_error(&t, "local s = string.rep('\\x80', 1 << 20) local f = SB.utf8.codes('a' .. s) "
                     "for i = 1, 1000 do f(s, 0) end", "instruction budget exceeded");
    t.b.steps = 0;
    expect_error(&t, "local s = string.rep('a', 1 << 20) "
                     "for i = 1, 1000 do SB.utf8.len(s) end", "instruction budget exceeded");
    t.b.steps = 0;
    expect_error(&t, "local s = string.rep('\\x80', 1 << 20) "
                     "for i = 1, 1000 do SB.utf8.offset(s, 0, #s) end",
                 "instruction budget exceeded");
    lua_close(t.L);
}

static void test_charged_wrappers(void **state) {
    tstate t;
    open_state(&t, 1000000, SIZE_MAX);
    expect_error(&t, "local s = string.rep('a', 1 << 22) "
                     "for i = 1, 1000 do local u = SB.string.upper(s) end",
                 "instruction budget exceeded");
    t.b.steps = 0;
    expect_error(&t, "local s = string.rep('a', 1 << 22) "
                     "for i = 1, 1000 do local u = SB.string.sub(s, 2) end",
                 "instruction budget exceeded");
    t.b.steps = 0;
    /* small results are not charged at all */
    expect_result(&t, "for i = 1, 1000 do local u = SB.string.sub('abc', 2) end return 'ok'", "ok");
    assert_int_equal(t.b.steps, 0);
    lua_close(t.L);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    return remove(path);
}

/* The engine's methods charge their work before doing it: a scan by rows
 * times dimension, a walk by steps, results by count. */
static void test_engine_methods_charged(void **state) {
    tstate t;
    open_state(&t, UINT64_MAX, SIZE_MAX);
    char dir[] = "/tmp/test_sandbox_XXXXXX";
    assert_non_null(mkdtemp(dir));
    luaL_requiref(t.L, "recd", luaopen_recd, 1);
    lua_pop(t.L, 1);
    char code[512];
    snprintf(code, sizeof code,
             "db = recd.open('%s', {no_sync = true}) "
             "db:batch(function() for i = 1, 2000 do local v = {} "
             "for j = 1, 64 do v[j] = math.sin(i * j) end "
             "db:item_put('i' .. i, {}, {content = v}) end end) "
             "db:event{user = 'u', item = 'i1', type = 'click'} return 'ok'", dir);
    expect_result(&t, code, "ok");
    t.b.steps = 0;
    expect_result(&t, "local q = {} for j = 1, 64 do q[j] = 1 end "
                      "return #db:topk('content', q, 10)", "10");
    assert_true(t.b.steps >= 2000); /* 2000 rows x 64 floats, 64 a step */
    t.b.max_steps = t.b.steps + 1000;
    expect_error(&t, "local q = {} for j = 1, 64 do q[j] = 1 end "
                     "for i = 1, 100 do db:topk('content', q, 10) end",
                 "instruction budget exceeded");
    t.b.steps = 0;
    t.b.max_steps = 1000000;
    expect_error(&t, "return db:walk({'i1'}, {steps = 1e7})", "instruction budget exceeded");
    t.b.steps = 0;
    expect_error(&t, "for i = 1, 1e6 do db:similar('i1', 1000) end", "instruction budget exceeded");
    /* a table holding the same subtable twice, 30 deep: 2^30 leaves to
     * encode; stored values stop at their 1 MiB cap instead */
    expect_error(&t, "local t = {1} for i = 1, 30 do t = {t, t} end db:kv_put('k', t)",
                 "larger than 1048576 bytes");
    expect_error(&t, "local t = {x = 1} for i = 1, 30 do t = {a = t, b = t} end "
                     "db:item_put('i1', t)", "larger than 1048576 bytes");
    expect_result(&t, "db:kv_put('k', {1, 2, {3}}) return tostring(db:kv_get('k')[3][1])", "3");
    lua_close(t.L);
    assert_int_equal(nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
}

/* rec_value_pack_lua_max stops at its cap, leaving the buffer as it was. */
static void test_pack_max(void **state) {
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    assert_int_equal(luaL_dostring(L, "local t = {1} for i = 1, 30 do t = {t, t} end return t"),
                     LUA_OK);
    rec_buf b = REC_BUF_INIT;
    assert_int_equal(rec_buf_append(&b, "xy", 2), 0);
    char err[128];
    assert_int_equal(rec_value_pack_lua_max(L, -1, &b, 1000, err, sizeof err), REC_ETOOLARGE);
    assert_string_equal(err, "larger than 1000 bytes of msgpack");
    assert_int_equal(b.len, 2);
    assert_int_equal(luaL_dostring(L, "return {1, 2, 3}"), LUA_OK);
    assert_int_equal(rec_value_pack_lua_max(L, -1, &b, 4, err, sizeof err), 0); /* exactly 4 */
    assert_int_equal(b.len, 6);
    assert_int_equal(rec_value_pack_lua_max(L, -1, &b, 3, err, sizeof err), REC_ETOOLARGE);
    assert_int_equal(b.len, 6);
    rec_buf_free(&b);
    lua_close(L);
}

/* Without a budget the functions answer as the stock ones. */
static void test_no_budget(void **state) {
    tstate t;
    open_state(&t, 0, 0);
    rec_sandbox_set_budget(t.L, NULL);
    expect_result(&t, "return SB.string.gsub('hello world', '(%w+)', '<%1>')", "<hello> <world>");
    expect_result(&t, "return SB.string.rep('ab', 2)", "abab");
    lua_close(t.L);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conformance),
        cmocka_unit_test(test_pattern_worst),
        cmocka_unit_test(test_plain_find_linear),
        cmocka_unit_test(test_rep_checked_before_allocating),
        cmocka_unit_test(test_format_bounded),
        cmocka_unit_test(test_concat_bounded),
        cmocka_unit_test(test_move_insert_remove_charged),
        cmocka_unit_test(test_sort_bounded),
        cmocka_unit_test(test_utf8_charged),
        cmocka_unit_test(test_charged_wrappers),
        cmocka_unit_test(test_engine_methods_charged),
        cmocka_unit_test(test_pack_max),
        cmocka_unit_test(test_no_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
