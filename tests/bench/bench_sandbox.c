/* bench_sandbox.c - what the bounded library costs on ordinary work.
 *
 * The same Lua loop runs once with the stock functions and once with the
 * bounded ones (core/engine/sandbox.c), charged to a budget that reads the
 * monotonic clock at each charge as script.c's does but never runs out.
 * Prints ns per call of each and the ratio bounded / stock (the median of
 * 5 runs), as `BENCH name=sandbox_<case> value=<ratio> unit=x`.
 */
#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "sandbox.h"

#include "bench_common.h"

static uint64_t spent;

static const char *b_charge(void *ud, lua_State *L, uint64_t steps, uint64_t call_steps) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* the deadline check */
    spent += steps + (uint64_t)(ts.tv_nsec & 0);
    return NULL;
}

static const char *b_reserve(void *ud, lua_State *L, size_t bytes) { return NULL; }

static const rec_sandbox_budget budget = {.charge = b_charge, .reserve = b_reserve};

typedef struct bcase {
    const char *name;
    const char *setup; /* defines `subject` etc. */
    const char *body;  /* one call, L is the library table */
    int iters;
} bcase;

static const bcase cases[] = {
    {"match_kv", "local s = 'content_key=some_value_42'",
     "local a, b = S.match(s, '^([%w_]+)=([%w_]+)$')", 400000},
    {"find_class", "local s = ('x'):rep(60) .. ' price 12.50 EUR'",
     "local a = S.find(s, '%d+%.%d+')", 400000},
    {"find_plain", "local s = ('lorem ipsum dolor sit amet '):rep(150) .. 'needle'",
     "local a = S.find(s, 'needle', 1, true)", 200000},
    {"gsub_space", "local s = ('a  b\\t c   d '):rep(20)",
     "local r = S.gsub(s, '%s+', ' ')", 100000},
    {"gsub_fn", "local s = ('word '):rep(40)",
     "local r = S.gsub(s, '(%w+)', function(w) return w end)", 20000},
    {"gmatch_csv", "local s = ('field,'):rep(100)",
     "for f in S.gmatch(s, '[^,]+') do end", 20000},
    {"sort_cmp", "local src = {} for i = 1, 1000 do src[i] = (i * 7919) % 1000 end",
     "local t = {table.unpack(src)} T.sort(t, function(a, b) return a > b end)", 300},
    {"sort_default", "local src = {} for i = 1, 1000 do src[i] = ('k%05d'):format((i * 7919) % 1000) end",
     "local t = {table.unpack(src)} T.sort(t)", 500},
    {"concat", "local t = {} for i = 1, 100 do t[i] = 'item' .. i end",
     "local r = T.concat(t, ',')", 100000},
    {"format", "", "local r = S.format('%s=%d (%.2f)', 'x', 42, 3.14159)", 400000},
};

static double run_once(lua_State *L, const bcase *c, int bounded) {
    char code[1024];
    snprintf(code, sizeof code,
             "local S, T = %s, %s %s\n"
             "return function() for _ = 1, %d do %s end end",
             bounded ? "SB.string" : "string", bounded ? "SB.table" : "table", c->setup,
             c->iters, c->body);
    if (luaL_loadstring(L, code) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
        fprintf(stderr, "bench_sandbox %s: %s\n", c->name, lua_tostring(L, -1));
        exit(1);
    }
    double t0 = now();
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        fprintf(stderr, "bench_sandbox %s: %s\n", c->name, lua_tostring(L, -1));
        exit(1);
    }
    return (now() - t0) / c->iters * 1e9;
}

int main(void) {
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    rec_sandbox_set_budget(L, &budget);
    lua_newtable(L);
    static const char *const libs[] = {"string", "table", NULL};
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
    printf("%-14s %12s %12s %8s\n", "case", "stock ns", "bounded ns", "ratio");
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        double a[5], b[5], r[5];
        for (int k = 0; k < 5; k++) {
            a[k] = run_once(L, &cases[i], 0);
            b[k] = run_once(L, &cases[i], 1);
            r[k] = b[k] / a[k];
        }
        double ma = median(a, 5), mb = median(b, 5), mr = median(r, 5);
        printf("%-14s %12.1f %12.1f %8.2f\n", cases[i].name, ma, mb, mr);
        char name[64];
        snprintf(name, sizeof name, "sandbox_%s", cases[i].name);
        report(name, mr, "x");
    }
    lua_close(L);
    return 0;
}
