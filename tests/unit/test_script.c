/* test_script.c - the Lua runtime: loading and contracts, the sandbox,
 * budgets (instructions, time, memory, stack) that pcall cannot swallow,
 * reload, removal and the folder watch. Each test writes its scripts into
 * its own mkdtemp folder, removed after (by the teardown, even on failure). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ftw.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "script.h"

#define S REC_SCRIPT_STRATEGY
#define P REC_SCRIPT_POLICY

/* ---- fixtures ------------------------------------------------------------ */

typedef struct fx {
    char root[64];
    char sdir[96];
    char pdir[96];
} fx;

static void fx_init(fx *f) {
    strcpy(f->root, "/tmp/test_script_XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(f->sdir, sizeof f->sdir, "%s/scripts", f->root);
    snprintf(f->pdir, sizeof f->pdir, "%s/policies", f->root);
    assert_int_equal(mkdir(f->sdir, 0700), 0);
    assert_int_equal(mkdir(f->pdir, 0700), 0);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    return remove(path);
}

/* Setup and teardown: the folder is removed even when a test fails. */
static int fx_setup(void **state) {
    fx *f = malloc(sizeof *f);
    if (!f)
        return -1;
    fx_init(f);
    *state = f;
    return 0;
}

static int fx_teardown(void **state) {
    fx *f = *state;
    int rc = nftw(f->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return rc;
}

/* Write root/rel as editors do: a temporary file renamed over it. */
static void put(const fx *f, const char *rel, const char *text) {
    char path[256], tmp[272];
    snprintf(path, sizeof path, "%s/%s", f->root, rel);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *fp = fopen(tmp, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(text, 1, strlen(text), fp), strlen(text));
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(rename(tmp, path), 0);
}

/* Write root/rel in place (no rename). */
static void put_raw(const fx *f, const char *rel, const char *text, size_t n) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", f->root, rel);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(text, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

static void del(const fx *f, const char *rel) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", f->root, rel);
    assert_int_equal(unlink(path), 0);
}

static void fx_opts(const fx *f, rec_script_opts *o) {
    rec_script_opts_default(o);
    o->scripts_dir = f->sdir;
    o->policies_dir = f->pdir;
}

static rec_script_rt *open_rt(const rec_script_opts *o, rec_script_env_fn fn, void *ud) {
    rec_script_rt *rt = NULL;
    char err[256];
    assert_int_equal(rec_script_new(&rt, o, fn, ud, err, sizeof err), 0);
    assert_non_null(rt);
    return rt;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Call fn of (kind, name) with no argument and one result: the integer it
 * returns, -1 when not found, -2 on a script error (message in err). */
static lua_Integer call_int(rec_script_rt *rt, rec_script_kind kind, const char *name,
                            const char *fn, char *err, size_t errlen) {
    lua_State *L = rec_script_lua(rt);
    int top = lua_gettop(L);
    int rc = rec_script_call(rt, kind, name, fn, 0, 1, err, errlen);
    if (rc == REC_ENOTFOUND) {
        assert_int_equal(lua_gettop(L), top);
        return -1;
    }
    if (rc == REC_ESCRIPT) {
        assert_int_equal(lua_gettop(L), top);
        return -2;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(lua_gettop(L), top + 1);
    lua_Integer v = lua_tointeger(L, -1);
    lua_pop(L, 1);
    return v;
}

/* Call fn expecting a script error; returns rc, message in err. */
static int call_err(rec_script_rt *rt, const char *name, const char *fn, char *err,
                    size_t errlen) {
    lua_State *L = rec_script_lua(rt);
    int top = lua_gettop(L);
    int rc = rec_script_call(rt, S, name, fn, 0, 1, err, errlen);
    assert_int_equal(lua_gettop(L), top);
    return rc;
}

static const rec_script_info *info_of(rec_script_rt *rt, rec_script_kind kind,
                                      const char *name, rec_script_info *in) {
    for (size_t i = 0; i < rec_script_count(rt); i++) {
        assert_int_equal(rec_script_info_at(rt, i, in), 0);
        if (in->kind == kind && strcmp(in->name, name) == 0)
            return in;
    }
    return NULL;
}

/* ---- loading and calling ------------------------------------------------- */

static void test_strategy_call(void **state) {
    fx f = *(fx *)*state;
    put(&f, "scripts/top.lua",
        "local M = {}\n"
        "function M.recommend(req)\n"
        "  local out = {}\n"
        "  for i = 1, req.k do\n"
        "    out[#out + 1] = {id = req.user .. '-' .. i, score = 1 / i}\n"
        "  end\n"
        "  return out\n"
        "end\n"
        "return M\n");
    rec_script_opts o;
    fx_opts(&f, &o);
    rec_script_rt *rt = open_rt(&o, NULL, NULL);
    lua_State *L = rec_script_lua(rt);
    int top = lua_gettop(L);
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, 3);
    lua_setfield(L, -2, "k");
    lua_pushstring(L, "u1");
    lua_setfield(L, -2, "user");
    char err[256];
    assert_int_equal(rec_script_call(rt, S, "top", "recommend", 1, 1, err, sizeof err), 0);
    assert_int_equal(lua_gettop(L), top + 1);
    assert_true(lua_istable(L, -1));
    assert_int_equal(luaL_len(L, -1), 3);
    lua_rawgeti(L, -1, 3);
    lua_getfield(L, -1, "id");
    assert_string_equal(lua_tostring(L, -1), "u1-3");
    lua_getfield(L, -2, "score");
    assert_true(lua_tonumber(L, -1) > 0.33 && lua_tonumber(L, -1) < 0.34);
    lua_settop(L, top);

    assert_int_equal(rec_script_has(rt, S, "top", "recommend"), 1);
    assert_int_equal(rec_script_has(rt, S, "top", "rerank"), 0);
    assert_int_equal(rec_script_has(rt, P, "top", "recommend"), 0);
    assert_int_equal(rec_script_push(rt, S, "top"), 1);
    assert_true(lua_istable(L, -1));
    lua_pop(L, 1);
    assert_int_equal(rec_script_push(rt, S, "nope"), 0);
    assert_int_equal(lua_gettop(L), top);

    rec_script_info in;
    assert_non_null(info_of(rt, S, "top", &in));
    assert_int_equal(in.loaded, 1);
    assert_null(in.error);
    assert_int_equal(in.version, 1);
    assert_int_equal(in.calls, 1);
    assert_int_equal(in.errors, 0);
    assert_true(in.loaded_at > 1e9);
    assert_true(rec_script_memory(rt) > 10000);
    rec_script_free(rt);
}

static void test_not_found_keeps_stack(void **state) {
    fx f = *(fx *)*state;
    put(&f, "scripts/a.lua", "return {recommend = function(x, y) return x + y end}\n");
    rec_script_opts o;
    fx_opts(&f, &o);
    rec_script_rt *rt = open_rt(&o, NULL, NULL);
    lua_State *L = rec_script_lua(rt);
    int top = lua_gettop(L);
    char err[256];
    lua_pushinteger(L, 1);
    lua_pushinteger(L, 2);
    assert_int_equal(rec_script_call(rt, S, "missing", "recommend", 2, 1, err, sizeof err),
                     REC_ENOTFOUND);
    assert_int_equal(lua_gettop(L), top);
    assert_non_null(strstr(err, "missing"));
    lua_pushinteger(L, 1);
    assert_int_equal(rec_script_call(rt, S, "a", "rerank", 1, 1, err, sizeof err),
                     REC_ENOTFOUND);
    assert_int_equal(lua_gettop(L), top);
    assert_int_equal(rec_script_call(rt, P, "a", "recommend", 0, 1, err, sizeof err),
                     REC_ENOTFOUND);
    lua_pushinteger(L, 40);
    lua_pushinteger(L, 2);
    assert_int_equal(rec_script_call(rt, S, "a", "recommend", 2, 1, err, sizeof err), 0);
    assert_int_equal(lua_tointeger(L, -1), 42);
    lua_pop(L, 1);
    /* two results asked, one given: padded with nil */
    lua_pushinteger(L, 1);
    lua_pushinteger(L, 1);
    assert_int_equal(rec_script_call(rt, S, "a", "recommend", 2, 2, err, sizeof err), 0);
    assert_int_equal(lua_gettop(L), top + 2);
    assert_true(lua_isnil(L, -1));
    lua_settop(L, top);
    rec_script_free(rt);
}

static void test_error_messages(void **state) {
    fx f = *(fx *)*state;
    put(&f, "scripts/e.lua",
        "local M = {}\n"
        "function M.recommend() error('boom') end\n"
        "function M.tbl() error({}) end\n"
        "function M.arith() local x; return x + 1 end\n"
        "function M.ok() return 5 end\n"
        "return M\n");
    rec_script_opts o;
    fx_opts(&f, &o);
    rec_script_rt *rt = open_rt(&o, NULL, NULL);
    char err[256];
    assert_int_equal(call_err(rt, "e", "recommend", err, sizeof err), REC_ESCRIPT);
    assert_string_equal(err, "strategy 'e': scripts/e.lua:2: boom");
    assert_int_equal(call_err(rt, "e", "tbl", err, sizeof err), REC_ESCRIPT);
    assert_string_equal(err, "strategy 'e': scripts/e.lua:3: (error object is a table value)");
    assert_int_equal(call_err(rt, "e", "arith", err, sizeof err), REC_ESCRIPT);
    assert_non_null(strstr(err, "strategy 'e': scripts/e.lua:4: attempt to perform arithmetic"));
    assert_int_equal(call_int(rt, S, "e", "ok", err, sizeof err), 5);
    rec_script_info in;
    assert_non_null(info_of(rt, S, "e", &in));
    assert_int_equal(in.calls, 4);
    assert_int_equal(in.errors, 3);
    rec_script_free(rt);
}

/* The env hook installs `probe(s)`, which records calls, and a global. */
typedef struct probe_log {
    int calls;
    char last[64];
} probe_log;

static int l_probe(lua_State *L) {
    probe_log *p = lua_touserdata(L, lua_upvalueindex(1));
    p->calls++;
    snprintf(p->last, sizeof p->last, "%s", luaL_checkstring(L, 1));
    return 0;
}

static void env_probe(lua_State *L, void *ud) {
    lua_pushlightuserdata(L, ud);
    lua_pushcclosure(L, l_probe, 1);
    lua_setfield(L, -2, "probe");
    lua_pushinteger(L, 7);
    lua_setfield(L, -2, "engine_version");
}

static void test_policy_hooks(void **state) {
    fx f = *(fx *)*state;
    put(&f, "policies/p.lua",
        "local P = {}\n"
        "local seen = 0\n"
        "function P.on_load() probe('loaded ' .. engine_version) end\n"
        "function P.on_event(ev) seen = seen + 1; return ev.type .. ':' .. seen end\n"
        "function P.rerank(req, items)\n"
        "  local out = {}\n"
        "  for i = #items, 1, -1 do out[#out + 1] = items[i] end\n"
        "  return out\n"
        "end\n"
        "return P\n");
    put(&f, "policies/only_event.lua", "return {on_event = function() return 1 end}\n");
    rec_script_opts o;
    fx_opts(&f, &o);
    probe_log pl = {0, ""};
    rec_script_rt *rt = open_rt(&o, env_probe, &pl);
    assert_int_equal(pl.calls, 1);
    assert_string_equal(pl.last, "loaded 7");
    assert_int_equal(rec_script_count(rt), 2);
    assert_int_equal(rec_script_has(rt, P, "p", "on_event"), 1);
    assert_int_equal(rec_script_has(rt, P, "p", "rerank"), 1);
    assert_int_equal(rec_script_has(rt, P, "only_event", "rerank"), 0);

    lua_State *L = rec_script_lua(rt);
    int top = lua_gettop(L);
    char err[256];
    for (int i = 1; i <= 2; i++) {
        lua_createtable(L, 0, 1);
        lua_pushstring(L, "click");
        lua_setfield(L, -2, "type");
        assert_int_equal(rec_script_call(rt, P, "p", "on_event", 1, 1, err, sizeof err), 0);
        char want[32];
        snprintf(want, sizeof want, "click:%d", i);
        assert_string_equal(lua_tostring(L, -1), want);
        lua_pop(L, 1);
    }
    lua_newtable(L);
    lua_createtable(L, 3, 0);
    for (int i = 1; i <= 3; i++) {
        lua_pushinteger(L, i * 10);
        lua_rawseti(L, -2, i);
    }
    assert_int_equal(rec_script_call(rt, P, "p", "rerank", 2, 1, err, sizeof err), 0);
    lua_rawgeti(L, -1, 1);
    assert_int_equal(lua_tointeger(L, -1), 30);
    lua_rawgeti(L, -2, 3);
    assert_int_equal(lua_tointeger(L, -1), 10);
    lua_settop(L, top);

    /* a new version whose on_load fails is not swapped in */
    put(&f, "policies/p.lua",
        "return {on_load = function() probe('v2'); error('nope') end,\n"
        "        on_event = function() return 'v2' end}\n");
    assert_int_equal(rec_script_reload(rt, "p", err, sizeof err), REC_ESCRIPT);
    assert_non_null(strstr(err, "policy 'p': policies/p.lua:1: nope"));
    assert_int_equal(pl.calls, 2);
    lua_createtable(L, 0, 1);
    lua_pushstring(L, "buy");
    lua_setfield(L, -2, "type");
    assert_int_equal(rec_script_call(rt, P, "p", "on_event", 1, 1, err, sizeof err), 0);
    assert_string_equal(lua_tostring(L, -1), "buy:3");
    lua_pop(L, 1);
    rec_script_info in;
    assert_non_null(info_of(rt, P, "p", &in));
    assert_int_equal(in.loaded, 1);
    assert_int_equal(in.version, 1);
    assert_non_null(in.error);
    assert_non_null(strstr(in.error, "nope"));
    rec_script_free(rt);
}

static void test_contracts_refused(void **state) {
    fx f = *(fx *)*state;
    put(&f, "scripts/num.lua", "return 42\n");
    put(&f, "scripts/empty.lua", "return {}\n");
    put(&f, "scripts/notfn.lua", "return {recommend = 1}\n");
    put(&f, "scripts/syntax.lua", "return {\n  recommend = function( end }\n");
    put(&f, "policies/none.lua", "return {recommend = function() end}\n");
    static const char bin[] = "\x1bLua\x54\x00\x19\x93\r\n\x1a\n";
    put_raw(&f, "scripts/bin.lua", bin, sizeof bin - 1);
    put(&f, "scripts/gc.lua",
        "setmetatable({}, {__gc = function() while true do end end})\n"
        "return {recommend = function() end}\n");
    put(&f, "scripts/good.lua", "return {recommend = function() return 1 end}\n");
    rec_script_opts o;
    fx_opts(&f, &o);
    rec_script_rt *rt = open_rt(&o, NULL, NULL);
    assert_int_equal(rec_script_count(rt), 8);
    static const struct {
        rec_script_kind kind;
        const char *name, *msg;
    } want[] = {
        {S, "num", "scripts/num.lua: must return a table (got number)"},
        {S, "empty", "a strategy must define recommend(req)"},
        {S, "notfn", "'recommend' must be a function"},
        {S, "syntax", "scripts/syntax.lua:2:"},
        {S, "bin", "strategy 'bin': scripts/bin.lua: attempt to load a binary chunk"},
        {S, "gc", "scripts/gc.lua:1: __gc metamethods are not allowed"},
        {P, "none", "a policy must define on_event, on_events, rerank or on_load"},
    };
    rec_script_info in;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_non_null(info_of(rt, want[i].kind, want[i].name, &in));
        assert_int_equal(in.loaded, 0);
        assert_int_equal(in.version, 0);
        assert_non_null(in.error);
        if (!strstr(in.error, want[i].msg))
            fail_msg("%s: '%s' lacks '%s'", want[i].name, in.error, want[i].msg);
    }
    /* listed sorted by kind, then name */
    const char *order[] = {"bin", "empty", "gc", "good", "notfn", "num", "syntax", "none"};
    for (size_t i = 0; i < 8; i++) {
        assert_int_equal(rec_script_info_at(rt, i, &in), 0);
        assert_string_equal(in.name, order[i]);
        assert_int_equal(in.kind, i < 7 ? S : P);
    }
    assert_int_equal(rec_script_info_at(rt, 8, &in), REC_ENOTFOUND);
    char err[256];
    assert_int_equal(call_int(rt, S, "num", "recommend", err, sizeof err), -1);
    assert_int_equal(call_int(rt, S, "good", "recommend", err, sizeof err), 1);
    /* reload of everything reports the first error, loads the rest */
    assert_int_equal(rec_script_reload(rt, NULL, err, sizeof err), REC_ESCRIPT);
    assert_true(err[0] != '\0');
    assert_non_null(info_of(rt, S, "good", &in));
    assert_int_equal(in.version, 2);
    rec_script_free(rt);
}

static void test_file_names(void **state) {
    fx f = *(fx *)*state;
    const char *ok = "return {recommend = function() return 1 end}\n";
    put(&f, "scripts/good-one_2.lua", ok);
    put_raw(&f, "scripts/x.lua.tmp", ok, strlen(ok));
    put_raw(&f, "scripts/.hidden.lua", ok, strlen(ok));
    put_raw(&f, "scripts/bad name.lua", ok, strlen(ok));
    put_raw(&f, "scripts/#a.lua#", ok, strlen(ok));
    put_raw(&f, "scripts/a.lua~", ok, strlen(ok));
    put_raw(&f, "scripts/.a.lua.swp", ok, strlen(ok));
    put_raw(&f, "scripts/pipelines.lua", "return {default = {}}\n", 22);
    char dir[128];
    snprintf(dir, sizeof dir, "%s/scripts/sub.lua", f.root);
    assert_int_equal(mkdir(dir, 0700), 0);
    rec_script_opts o;
    fx_opts(&f, &o);
    rec_script_rt *rt = open_rt(&o, NULL, NULL);
    assert_int_equal(rec_script_count(rt), 1);
    rec_script_info in;
    assert_int_equal(rec_script_info_at(rt, 0, &in), 0);
    assert_string_equal(in.name, "good-one_2");
    char err[256];
    assert_int_equal(rec_script_reload(rt, "pipelines", err, sizeof err), REC_ENOTFOUND);
    assert_int_equal(rec_script_reload(rt, "../etc/passwd", err, sizeof err), REC_EINVAL);
    assert_int_equal(rec_script_reload(rt, "nothing", err, sizeof err), REC_ENOTFOUND);
    assert_int_equal(rec_script_reload(rt, NULL, err, sizeof err), 0);
    assert_int_equal(rec_script_count(rt), 1);
    rec_script_free(rt);
}

/* ---- the config file ------------------------------------------------------- */

typedef struct cfg_probe {
    lua_Integer staged, applied;
    int applies, removals;
} cfg_probe;

/* Reads t.x (an integer) into staged; raises without one. */
static int cfg_read(lua_State *L) {
    cfg_probe *p = lua_touserdata(L, 1);
    lua_getfield(L, 2, "x");
    if (!lua_isinteger(L, -1))
        return luaL_error(L, "x must be an integer");
    p->staged = lua_tointeger(L, -1);
    return 0;
}

static void cfg_apply(void *ud, int present) {
    cfg_probe *p = ud;
    if (present) {
        p->applied = p->staged;
        p->applies++;
    } else {
        p->removals++;
    }
}

/* pipelines.lua: loaded like a script once a reader is set (sandboxed,
 * budgeted), applied only when read whole, kept when a new version fails,
 * unloaded when removed. */
static void test_config_file(void **state) {
    fx f = *(fx *)*state;
    put(&f, "scripts/pipelines.lua", "return {x = load and 1 or 2}\n");
    rec_script_opts o;
    fx_opts(&f, &o);
    o.max_seconds = 1.0; /* generous: valgrind runs this 20-50x slower */
    o.max_instructions = UINT64_MAX; /* the loop meets the deadline */
    rec_script_rt *rt = open_rt(&o, NULL, NULL);
    rec_script_info in;
    assert_int_equal(rec_script_count(rt), 0); /* no reader yet: skipped */
    cfg_probe p = {0};
    rec_script_config c = {.read = cfg_read, .apply = cfg_apply, .ud = &p};
    char err[256];
    assert_int_equal(rec_script_set_config(rt, &c, err, sizeof err), 0);
    assert_int_equal(p.applies, 1);
    assert_int_equal(p.applied, 2); /* the sandbox has no load */
    assert_non_null(info_of(rt, REC_SCRIPT_CONFIG, "pipelines", &in));
    assert_true(in.loaded && !in.error);
    assert_string_equal(rec_script_kind_name(in.kind), "config");
    assert_null(info_of(rt, S, "pipelines", &in));

    static const struct {
        const char *src, *want;
    } bad[] = {
        {"while true do end\n", "config 'pipelines': scripts/pipelines.lua:1: time budget exceeded"},
        {"local t = {}\nt.x.y = 1\n", "config 'pipelines': scripts/pipelines.lua:2: attempt to index"},
        {"return {y = 1}\n", "config 'pipelines': scripts/pipelines.lua: x must be an integer"},
        {"return 7\n", "config 'pipelines': scripts/pipelines.lua: must return a table"},
        {"return {x = (function() local s = ('x'):rep(1 << 20) local t = {} "
         "for i = 1, 1e9 do t[i] = s .. i end end)()}\n",
         "config 'pipelines': scripts/pipelines.lua: memory budget exceeded"},
        {"return {x = 1\n", "config 'pipelines': scripts/pipelines.lua:2: '}' expected"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        put(&f, "scripts/pipelines.lua", bad[i].src);
        assert_int_equal(rec_script_reload(rt, "pipelines", err, sizeof err), REC_ESCRIPT);
        if (!strstr(err, bad[i].want))
            fail_msg("%zu: %s", i, err);
        assert_int_equal(p.applies, 1); /* nothing applied */
        assert_int_equal(p.applied, 2);
        assert_non_null(info_of(rt, REC_SCRIPT_CONFIG, "pipelines", &in));
        assert_true(in.loaded && in.error && strstr(in.error, bad[i].want));
    }
    put(&f, "scripts/pipelines.lua", "return {x = 5}\n");
    assert_int_equal(rec_script_reload(rt, NULL, err, sizeof err), 0);
    assert_int_equal(p.applies, 2);
    assert_int_equal(p.applied, 5);
    del(&f, "scripts/pipelines.lua");
    assert_int_equal(rec_script_reload(rt, NULL, err, sizeof err), 0);
    assert_int_equal(p.removals, 1);
    assert_null(info_of(rt, REC_SCRIPT_CONFIG, "pipelines", &in));
    rec_script_free(rt);
}

/* ---- the sandbox ---------------------------------------------------------- */

static void test_sandbox_allow_list(void **state) {
    fx f = *(fx *)*state;
    put(&f, "scripts/probe.lua",
        "local M = {}\n"
        "function M.recommend()\n"
        "  local found = {}\n"
        "  local function chk(n, v) if v ~= nil then found[#found + 1] = n end end\n"
        "  chk('io', io); chk('os.execute', os.execute); chk('os.remove', os.remove)\n"
        "  chk('os.exit', os.exit); chk('os.getenv', os.getenv); chk('os.rename', os.rename)\n"
        "  chk('require', require); chk('load', load); chk('loadstring', loadstring)\n"
        "  chk('dofile', dofile); chk('loadfile', loadfile); chk('debug', debug)\n"
        "  chk('string.dump', string.dump); chk('(\"\").dump', ('').dump)\n"
        "  chk('package', package); chk('collectgarbage', collectgarbage)\n"
        "  chk('rawequal-ok', nil)\n"
        "  return table.concat(found, ',')\n"
        "end\n"
        "function M.present()\n"
        "  local names = {'print', 'pairs', 'ipairs', 'next', 'pcall', 'xpcall', 'select',\n"
        "    'tonumber', 'tostring', 'type', 'rawequal', 'rawget', 'rawlen', 'rawset',\n"
        "    'setmetatable', 'getmetatable', 'assert', 'error', '_VERSION'}\n"
        "  for _, n in ipairs(names) do assert(_G[n] ~= nil, n) end\n"
        "  assert(_G == _ENV)\n"
        "  assert(type(os.time()) == 'number' and type(os.clock()) == 'number')\n"
        "  assert(type(os.date('!%Y')) == 'string')\n"
        "  assert(string.format('%d', 3) == '3' and math.floor(2.5) == 2)\n"
        "  assert(table.concat({1, 2}, '-') == '1-2' and utf8.char(65) == 'A')\n"
        "  assert(coroutine.create and coroutine.wrap and coroutine.yield)\n"
        "  print('hello', 1, nil, true)\n"
        "  return 1\n"
        "end\n"
        "return M\n");
    rec_script_opts o;
    fx_opts(&f, &o);
    rec_script_rt *rt = open_rt(&o, NULL, NULL);
    lua_State *L = rec_script_lua(rt);
    char err[256];
    assert_int_equal(rec_script_call(rt, S, "probe", "recommend", 0, 1, err, sizeof err), 0);
    assert_string_equal(lua_tostring(L, -1), "");
    lua_pop(L, 1);
    assert_int_equal(call_int(rt, S, "probe", "present", err, sizeof err), 1);
    rec_script_free(rt);
}

static void test_globals_separate(void **state) {
    fx f = *(fx *)*state;
    put(&f, "scripts/a.lua",
        "x = 1\n"
        "string.upper = function() return 'hacked' end\n"
        "table.insert = nil\n"
        "return {recommend = function() x = x + 1; return x end}\n");
    put(&f, "scripts/b.lua",
        "return {recommend = function()\n"
        "  assert(x == nil, 'x leaked')\n"
        "  assert(string.upper('b') == 'B', 'string copy shared')\n"
        "  local t = {}; table.insert(t, 1)\n"
        "  return #t\n"
        "end}\n");
    rec_script_opts o;
    fx_opts(&f, &o);
    rec_script_rt *rt = open_rt(&o, NULL, NULL);
    char err[256];
    assert_int_equal(call_int(rt, S, "a", "recommend", err, sizeof err), 2);
    assert_int_equal(call_int(rt, S, "b", "recommend", err, sizeof err), 1);
    assert_int_equal(call_int(rt, S, "a", "recommend", err, sizeof err), 3);
    rec_script_free(rt);
}

static void test_string_metatable(void **state) {
    fx f = *(fx *)*state;
    put(&f, "scripts/a.lua",
        "return {recommend = function()\n"
        "  local mt = getmetatable('')\n"
        "  assert(type(mt) ~= 'table', 'string metatable reachable')\n"
        "  assert(not pcall(function() mt.__index.upper = nil end))\n"
        "  assert(not pcall(setmetatable, 'x', {}))\n"
        "  assert(not pcall(rawset, 'x', 'upper', 1))\n"
        "  string.upper = function() return 'hacked' end\n"
        "  assert(('a'):upper() == 'A', 'method table is the copy')\n"
        "  return 1\n"
        "end}\n");
    put(&f, "scripts/b.lua",
        "return {recommend = function()\n"
        "  assert(('c'):upper() == 'C' and string.upper('d') == 'D')\n"
        "  assert(('x'):rep(3) == 'xxx')\n"
        "  return 2\n"
        "end}\n");
    rec_script_opts o;
    fx_opts(&f, &o);
    rec_script_rt *rt = open_rt(&o, NULL, NULL);
    char err[256];
    assert_int_equal(call_int(rt, S, "a", "recommend", err, sizeof err), 1);
    assert_int_equal(call_int(rt, S, "b", "recommend", err, sizeof err), 2);
    rec_script_free(rt);
}

static void test_env_tricks(void **state) {
    fx f = *(fx *)*state;
    put(&f, "scripts/a.lua",
        "local M = {}\n"
        "function M.recommend() _ENV = nil; return 1 end\n"
        "function M.other() return tostring(1) end\n"
        "setmetatable(_G, {__index = function() return 'trap' end})\n"
        "return M\n");
    put(&f, "scripts/b.lua",
        "return {recommend = function()\n"
        "  assert(undefined_global == nil)\n"
        "  return tonumber(tostring(3))\n"
        "end}\n");
    rec_script_opts o;
    fx_opts(&f, &o);
    rec_script_rt *rt = open_rt(&o, NULL, NULL);
    char err[256];
    assert_int_equal(call_int(rt, S, "a", "recommend", err, sizeof err), 1);
    assert_int_equal(call_int(rt, S, "a", "other", err, sizeof err), -2);
    assert_non_null(strstr(err, "scripts/a.lua:3:"));
    assert_int_equal(call_int(rt, S, "b", "recommend", err, sizeof err), 3);
    /* a reload gives a fresh environment */
    assert_int_equal(rec_script_reload(rt, "a", err, sizeof err), 0);
    assert_int_equal(call_int(rt, S, "a", "other", err, sizeof err), 1);
    rec_script_free(rt);
}

/* ---- budgets -------------------------------------------------------------- */

static const char *const spin_src =
    "local M = {}\n"
    "function M.loop() while true do end end\n"
    "function M.pcall_loop()\n"
    "  while true do pcall(function() while true do end end) end\n"
    "end\n"
    "function M.xpcall_loop()\n"
    "  while true do\n"
    "    xpcall(function() while true do end end, function() while true do end end)\n"
    "  end\n"
    "end\n"
    "function M.co_loop()\n"
    "  local co = coroutine.wrap(function() while true do end end)\n"
    "  co()\n"
    "end\n"
    "function M.co_pcall_loop()\n"
    "  local co = coroutine.create(function()\n"
    "    while true do pcall(function() while true do end end) end\n"
    "  end)\n"
    "  while true do coroutine.resume(co) end\n"
    "end\n"
    "local kept\n"
    "function M.co_later()\n"
    "  if not kept then\n"
    "    kept = coroutine.wrap(function() coroutine.yield(1); while true do end end)\n"
    "    return kept()\n"
    "  end\n"
    "  return kept()\n"
    "end\n"
    "local function trap() return setmetatable({}, {__close = function() while true do end end}) end\n"
    "function M.tbc_main() local x <close> = trap(); while true do end end\n"
    "function M.co_close_trap()\n"
    "  local co = coroutine.wrap(function() local x <close> = trap(); while true do end end)\n"
    "  co()\n"
    "end\n"
    "local dead\n"
    "function M.co_dead()\n"
    "  if not dead then\n"
    "    dead = coroutine.create(function() local x <close> = trap(); while true do end end)\n"
    "    coroutine.resume(dead)\n"
    "    while true do end\n"
    "  end\n"
    "  return coroutine.close(dead) and 1 or 0\n"
    "end\n"
    "function M.ok() return 7 end\n"
    "function M.gen()\n"
    "  local g = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end)\n"
    "  return g() + g() + g()\n"
    "end\n"
    "M.recommend = M.ok\n"
    "return M\n";

static void test_time_budget(void **state) {
    fx f = *(fx *)*state;
    put(&f, "scripts/spin.lua", spin_src);
    rec_script_opts o;
    fx_opts(&f, &o);
    o.max_seconds = 0.2;
    o.max_instructions = UINT64_MAX;
    rec_script_rt *rt = open_rt(&o, NULL, NULL);
    static const char *const fns[] = {"loop", "pcall_loop", "xpcall_loop", "co_loop",
                                      "co_pcall_loop", "tbc_main", "co_close_trap",
                                      "co_dead"};
    char err[256];
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        double t0 = now_s();
        assert_int_equal(call_err(rt, "spin", fns[i], err, sizeof err), REC_ESCRIPT);
        double dt = now_s() - t0;
        if (!strstr(err, "time budget exceeded (0.2 s)") || !strstr(err, "scripts/spin.lua:"))
            fail_msg("%s: %s", fns[i], err);
        if (dt < 0.19 || dt > 1.0)
            fail_msg("%s stopped after %.3f s", fns[i], dt);
        /* the VM is usable at once */
        assert_int_equal(call_int(rt, S, "spin", "ok", err, sizeof err), 7);
    }
    rec_script_info in;
    assert_non_null(info_of(rt, S, "spin", &in));
    assert_int_equal(in.errors, 8);
    /* the coroutine killed in the last call is dead; closing it runs nothing */
    assert_int_equal(call_int(rt, S, "spin", "co_dead", err, sizeof err), 0);
    rec_script_free(rt);
}

static void test_instruction_budget(void **state) {
    fx f = *(fx *)*state;
    put(&f, "scripts/spin.lua", spin_src);
    rec_script_opts o;
    fx_opts(&f, &o);
    o.max_seconds = 30;
    o.max_instructions = 2000000;
    rec_script_rt *rt = open_rt(&o, NULL, NULL);
    static const char *const fns[] = {"loop", "pcall_loop", "xpcall_loop", "co_loop",
                                      "co_pcall_loop", "tbc_main", "co_close_trap"};
    char err[256];
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        assert_int_equal(call_err(rt, "spin", fns[i], err, sizeof err), REC_ESCRIPT);
        if (!strstr(err, "instruction budget exceeded (2000000)"))
            fail_msg("%s: %s", fns[i], err);
        assert_int_equal(call_int(rt, S, "spin", "ok", err, sizeof err), 7);
    }
    /* coroutines work, and one kept across calls stays under the budget */
    assert_int_equal(call_int(rt, S, "spin", "gen", err, sizeof err), 6);
    assert_int_equal(call_int(rt, S, "spin", "co_later", err, sizeof err), 1);
    assert_int_equal(call_err(rt, "spin", "co_later", err, sizeof err), REC_ESCRIPT);
    assert_non_null(strstr(err, "instruction budget exceeded"));
    /* a budget is per call: many small calls add up to more than one budget */
    for (int i = 0; i < 50; i++)
        assert_int_equal(call_int(rt, S, "spin", "gen", err, sizeof err), 6);
    rec_script_free(rt);
}

/* One call into the library is bounded too: the pattern functions, rep,
 * table.move and sort charge the instruction budget, pcall cannot swallow
 * the kill, and the message names the line. With the stock library each
 * of these calls ran to its end (seconds to hours) between two
 * instructions. */
static void test_library_budget(void **state) {
    fx f = *(fx *)*state;
    put(&f, "scripts/lib.lua",
        "local M = {}\n"
        "local s = string.rep('a', 1500)\n"
        "function M.find() return string.find(s, '.-.-.-b') end\n"
        "function M.method() return s:match('.-.-.-b') end\n"
        "function M.gsub() return (s:gsub('.-.-.-b', '')) end\n"
        "function M.pcall_find()\n"
        "  for i = 1, 100 do pcall(string.find, s, '.-.-.-b') end\n"
        "  return 'survived'\n"
        "end\n"
        "function M.move() return table.move({}, 1, 1 << 40, 1) end\n"
        "function M.sort()\n"
        "  local t = {} for i = 1, 1e5 do t[i] = (i * 7919) % 100003 end\n"
        "  table.sort(t, function(a, b) return a < b end) return t[1]\n"
        "end\n"
        "n = 0\n"
        "function M.concat()\n"
        "  local s = string.rep('a', 1 << 18)\n"
        "  while true do n = n + 1 local t = s .. 'x' end\n"
        "end\n"
        "function M.pcall_concat()\n"
        "  local s = string.rep('a', 1 << 18)\n"
        "  while true do n = n + 1 pcall(function() local t = s .. 'x' end) end\n"
        "end\n"
        "function M.count() return n end\n"
        "function M.recommend() return 1 end\n"
        "return M\n");
    rec_script_opts o;
    fx_opts(&f, &o);
    o.max_seconds = 30;
    o.max_instructions = 5000000;
    rec_script_rt *rt = open_rt(&o, NULL, NULL);
    static const char *const fns[] = {"find", "method", "gsub", "pcall_find", "move", "sort",
                                      "concat"};
    char err[256];
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        assert_int_equal(call_err(rt, "lib", fns[i], err, sizeof err), REC_ESCRIPT);
        if (!strstr(err, "instruction budget exceeded (5000000)") ||
            !strstr(err, "scripts/lib.lua:"))
            fail_msg("%s: %s", fns[i], err);
        assert_int_equal(call_int(rt, S, "lib", "recommend", err, sizeof err), 1);
    }
    /* a `..` of long strings is work the hook cannot see: its allocations
     * are charged, 4096 steps for each copy of 256 KiB, so the loop stops
     * after about 5M / 4096 rounds instead of 5M / 5 */
    assert_true(call_int(rt, S, "lib", "count", err, sizeof err) < 2000);
    assert_int_equal(call_err(rt, "lib", "pcall_concat", err, sizeof err), REC_ESCRIPT);
    assert_non_null(strstr(err, "instruction budget exceeded (5000000)"));
    assert_true(call_int(rt, S, "lib", "count", err, sizeof err) < 4000);
    /* the console path (admin.eval) has the same library */
    int env = 0, nres = 0;
    const char *code = "local s = string.rep('a', 20000) return string.find(s, '.-.-.-b')";
    assert_int_equal(rec_script_eval(rt, &env, code, strlen(code), &nres, err, sizeof err),
                     REC_ESCRIPT);
    assert_non_null(strstr(err, "instruction budget exceeded"));
    code = "return ('key=value'):match('^(%w+)=(%w+)$')";
    assert_int_equal(rec_script_eval(rt, &env, code, strlen(code), &nres, err, sizeof err), 0);
    assert_int_equal(nres, 2);
    assert_string_equal(lua_tostring(rec_script_lua(rt), -1), "value");
    lua_pop(rec_script_lua(rt), nres);
    rec_script_eval_end(rt, env);
    rec_script_free(rt);
}

static void test_memory_budget(void **state) {
    fx f = *(fx *)*state;
    put(&f, "scripts/bomb.lua",
        "local M = {}\n"
        "function M.tables() local t = {} for i = 1, 1e9 do t[i] = {i} end return #t end\n"
        "function M.rep() return #string.rep('x', 1 << 30) end\n"
        "function M.pcall_concat()\n"
        "  while true do\n"
        "    pcall(function() local s = 'x' while true do s = s .. s end end)\n"
        "  end\n"
        "end\n"
        "keep = {}\n"
        "function M.global_bomb() while true do keep[#keep + 1] = ('y'):rep(1000) end end\n"
        "function M.garbage()\n"
        "  local n = 0\n"
        "  for i = 1, 200000 do local t = {i, i, i, i}; n = n + #t end\n"
        "  return n\n"
        "end\n"
        "function M.error_object()\n"
        "  error(setmetatable({}, {__tostring = function()\n"
        "    local t = {} for i = 1, 1e7 do t[i] = i end return 'built'\n"
        "  end}))\n"
        "end\n"
        "function M.close_bomb()\n"
        "  local x <close> = setmetatable({}, {__close = function()\n"
        "    local t = {} for i = 1, 1e7 do t[i] = i end\n"
        "  end})\n"
        "  error('first')\n"
        "end\n"
        "function M.recommend() return 1 end\n"
        "return M\n");
    put(&f, "scripts/other.lua", "return {recommend = function() return 9 end}\n");
    put(&f, "scripts/loadbomb.lua",
        "local t = {} for i = 1, 1e9 do t[i] = {} end\n"
        "return {recommend = function() return 1 end}\n");
    rec_script_opts o;
    fx_opts(&f, &o);
    o.max_call_memory = 8u << 20;
    o.max_seconds = 30;
    o.max_instructions = UINT64_MAX;
    rec_script_rt *rt = open_rt(&o, NULL, NULL);
    rec_script_info in;
    assert_non_null(info_of(rt, S, "loadbomb", &in));
    assert_int_equal(in.loaded, 0);
    assert_non_null(strstr(in.error, "memory budget exceeded (8 MiB per call)"));
    size_t base = rec_script_memory(rt);
    char err[256];
    static const char *const fns[] = {"tables", "rep", "pcall_concat", "global_bomb"};
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        assert_int_equal(call_err(rt, "bomb", fns[i], err, sizeof err), REC_ESCRIPT);
        /* string.rep is refused before it allocates, with the line */
        if (!strstr(err, "strategy 'bomb': scripts/bomb.lua:") ||
            !strstr(err, "memory budget exceeded (8 MiB per call)"))
            fail_msg("%s: %s", fns[i], err);
        assert_int_equal(call_int(rt, S, "other", "recommend", err, sizeof err), 9);
        assert_int_equal(call_int(rt, S, "bomb", "recommend", err, sizeof err), 1);
    }
    /* an error object's __tostring, and a __close run by an error, run
     * under the caps too */
    static const char *const unwinding[] = {"error_object", "close_bomb"};
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(call_err(rt, "bomb", unwinding[i], err, sizeof err), REC_ESCRIPT);
        if (!strstr(err, "memory budget exceeded (8 MiB per call)"))
            fail_msg("%s: %s", unwinding[i], err);
    }
    assert_int_equal(call_int(rt, S, "bomb", "recommend", err, sizeof err), 1);
    /* the global bomb keeps what it stored (under 8 MiB); the rest is freed */
    lua_gc(rec_script_lua(rt), LUA_GCCOLLECT);
    if (rec_script_memory(rt) > base + (8u << 20) + (64u << 10))
        fail_msg("memory %zu, base %zu", rec_script_memory(rt), base);
    /* garbage is not growth: 200k short-lived tables fit in 8 MiB */
    assert_int_equal(call_int(rt, S, "bomb", "garbage", err, sizeof err), 800000);
    rec_script_free(rt);
}

static void test_vm_memory_cap(void **state) {
    fx f = *(fx *)*state;
    put(&f, "scripts/grow.lua",
        "keep = {}\n"
        "return {recommend = function()\n"
        "  keep[#keep + 1] = ('z'):rep(3 << 20)\n"
        "  return #keep\n"
        "end}\n");
    put(&f, "scripts/small.lua", "return {recommend = function() return #{1, 2, 3} end}\n");
    rec_script_opts o;
    fx_opts(&f, &o);
    o.max_memory = 16u << 20;
    o.max_call_memory = 8u << 20;
    rec_script_rt *rt = open_rt(&o, NULL, NULL);
    char err[256];
    lua_Integer n = 0, got;
    while ((got = call_int(rt, S, "grow", "recommend", err, sizeof err)) > 0)
        assert_int_equal(got, ++n);
    assert_int_equal(got, -2);
    assert_true(n >= 2 && n <= 5);
    assert_non_null(strstr(err, "memory budget exceeded (16 MiB for all scripts)"));
    assert_true(rec_script_memory(rt) <= 16u << 20);
    /* other scripts still run in what is left */
    assert_int_equal(call_int(rt, S, "small", "recommend", err, sizeof err), 3);
    rec_script_free(rt);
}

static void test_deep_recursion(void **state) {
    fx f = *(fx *)*state;
    put(&f, "scripts/deep.lua",
        "local M = {}\n"
        "local function f(n) return 1 + f(n + 1) end\n"
        "function M.recommend() return f(1) end\n"
        "function M.cdeep() local function g() return pcall(g) end return g() end\n"
        "function M.meta()\n"
        "  local t = setmetatable({}, {})\n"
        "  getmetatable(t).__index = function(_, k) return t[k] end\n"
        "  return t.x\n"
        "end\n"
        "function M.ok() return 3 end\n"
        "return M\n");
    rec_script_opts o;
    fx_opts(&f, &o);
    o.max_seconds = 10;
    rec_script_rt *rt = open_rt(&o, NULL, NULL);
    char err[256];
    assert_int_equal(call_err(rt, "deep", "recommend", err, sizeof err), REC_ESCRIPT);
    if (!strstr(err, "stack overflow"))
        fail_msg("%s", err);
    assert_int_equal(call_int(rt, S, "deep", "ok", err, sizeof err), 3);
    assert_int_equal(call_int(rt, S, "deep", "cdeep", err, sizeof err), 0);
    assert_int_equal(call_err(rt, "deep", "meta", err, sizeof err), REC_ESCRIPT);
    if (!strstr(err, "overflow"))
        fail_msg("%s", err);
    assert_int_equal(call_int(rt, S, "deep", "ok", err, sizeof err), 3);
    rec_script_free(rt);
}

/* ---- reload ---------------------------------------------------------------- */

static void test_reload_rewrite_and_removal(void **state) {
    fx f = *(fx *)*state;
    put(&f, "scripts/s.lua", "return {recommend = function() return 1 end}\n");
    rec_script_opts o;
    fx_opts(&f, &o);
    rec_script_rt *rt = open_rt(&o, NULL, NULL);
    char err[256];
    assert_int_equal(call_int(rt, S, "s", "recommend", err, sizeof err), 1);

    /* a syntax error keeps the running version */
    put(&f, "scripts/s.lua", "return {\n  recommend = function( return 2 end }\n");
    assert_int_equal(rec_script_reload(rt, "s", err, sizeof err), REC_ESCRIPT);
    assert_non_null(strstr(err, "strategy 's': scripts/s.lua:2:"));
    assert_int_equal(call_int(rt, S, "s", "recommend", err, sizeof err), 1);
    rec_script_info in;
    assert_non_null(info_of(rt, S, "s", &in));
    assert_int_equal(in.loaded, 1);
    assert_int_equal(in.version, 1);
    assert_non_null(strstr(in.error, "scripts/s.lua:2:"));

    /* a refused contract too */
    put(&f, "scripts/s.lua", "return {rerank = function() end}\n");
    assert_int_equal(rec_script_reload(rt, "s", err, sizeof err), REC_ESCRIPT);
    assert_int_equal(call_int(rt, S, "s", "recommend", err, sizeof err), 1);

    /* a good rewrite is picked up and clears the error */
    put(&f, "scripts/s.lua", "return {recommend = function() return 3 end}\n");
    assert_int_equal(rec_script_reload(rt, "s", err, sizeof err), 0);
    assert_int_equal(call_int(rt, S, "s", "recommend", err, sizeof err), 3);
    assert_non_null(info_of(rt, S, "s", &in));
    assert_int_equal(in.version, 2);
    assert_null(in.error);

    /* a new file appears with a rescan, a removed one is unloaded */
    put(&f, "policies/q.lua", "return {on_event = function() return 4 end}\n");
    assert_int_equal(rec_script_reload(rt, NULL, err, sizeof err), 0);
    assert_int_equal(call_int(rt, P, "q", "on_event", err, sizeof err), 4);
    assert_int_equal(rec_script_count(rt), 2);
    del(&f, "scripts/s.lua");
    assert_int_equal(rec_script_reload(rt, "s", err, sizeof err), 0);
    assert_int_equal(call_int(rt, S, "s", "recommend", err, sizeof err), -1);
    assert_int_equal(rec_script_count(rt), 1);
    del(&f, "policies/q.lua");
    assert_int_equal(rec_script_reload(rt, NULL, err, sizeof err), 0);
    assert_int_equal(rec_script_count(rt), 0);
    assert_int_equal(rec_script_reload(rt, "s", err, sizeof err), REC_ENOTFOUND);
    rec_script_free(rt);
}

static void test_missing_folders(void **state) {
    rec_script_opts o;
    rec_script_opts_default(&o);
    o.scripts_dir = "/tmp/test_script_no_such_dir/scripts";
    o.policies_dir = NULL;
    rec_script_rt *rt = open_rt(&o, NULL, NULL);
    assert_int_equal(rec_script_count(rt), 0);
    char err[256];
    assert_int_equal(rec_script_reload(rt, NULL, err, sizeof err), 0);
    assert_int_equal(rec_script_reload(rt, "x", err, sizeof err), REC_ENOTFOUND);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(rec_script_watch(rt, &loop), 0);
    assert_int_equal(rec_script_watch(rt, &loop), REC_EEXISTS);
    rec_script_unwatch(rt);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    rec_script_free(rt);
    assert_int_equal(uv_loop_close(&loop), 0);

    rt = open_rt(NULL, NULL, NULL);
    assert_int_equal(rec_script_count(rt), 0);
    assert_int_equal(rec_script_reload(rt, NULL, err, sizeof err), 0);
    rec_script_free(rt);
    rec_script_free(NULL);
}

/* ---- watching --------------------------------------------------------------- */

typedef struct waiter {
    rec_script_rt *rt;
    rec_script_kind kind;
    const char *name, *fn;
    lua_Integer want;
    double until;
    int met;
} waiter;

static void on_poll(uv_timer_t *t) {
    waiter *w = t->data;
    char err[256];
    if (call_int(w->rt, w->kind, w->name, w->fn, err, sizeof err) == w->want) {
        w->met = 1;
        uv_stop(t->loop);
    } else if (now_s() > w->until) {
        uv_stop(t->loop);
    }
}

/* Run the loop until fn of (kind, name) returns want, at most secs. */
static int wait_for(uv_loop_t *loop, rec_script_rt *rt, rec_script_kind kind,
                    const char *name, const char *fn, lua_Integer want, double secs) {
    waiter w = {rt, kind, name, fn, want, now_s() + secs, 0};
    uv_timer_t t;
    assert_int_equal(uv_timer_init(loop, &t), 0);
    t.data = &w;
    assert_int_equal(uv_timer_start(&t, on_poll, 5, 5), 0);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return w.met;
}

static void test_watch(void **state) {
    fx f = *(fx *)*state;
    put(&f, "scripts/w.lua", "return {recommend = function() return 1 end}\n");
    rec_script_opts o;
    fx_opts(&f, &o);
    o.debounce = 0.02;
    rec_script_rt *rt = open_rt(&o, NULL, NULL);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(rec_script_watch(rt, &loop), 0);

    put(&f, "scripts/w.lua", "return {recommend = function() return 2 end}\n");
    assert_true(wait_for(&loop, rt, S, "w", "recommend", 2, 2.0));
    put(&f, "policies/n.lua", "return {on_event = function() return 5 end}\n");
    assert_true(wait_for(&loop, rt, P, "n", "on_event", 5, 2.0));

    /* a broken save keeps the old version and records the error */
    put(&f, "scripts/w.lua", "return {recommend = function() return 3 end\n");
    char bad[256];
    snprintf(bad, sizeof bad, "%s", "");
    assert_false(wait_for(&loop, rt, S, "w", "recommend", 3, 0.3));
    assert_int_equal(call_int(rt, S, "w", "recommend", bad, sizeof bad), 2);
    rec_script_info in;
    assert_non_null(info_of(rt, S, "w", &in));
    assert_non_null(in.error);
    assert_non_null(strstr(in.error, "scripts/w.lua:"));

    /* temporary files are ignored */
    const char *tmp = "return {recommend = function() return 9 end}\n";
    put_raw(&f, "scripts/t.lua.tmp", tmp, strlen(tmp));
    assert_false(wait_for(&loop, rt, S, "t", "recommend", 9, 0.2));
    assert_int_equal(rec_script_count(rt), 2);

    /* fixed, then removed */
    put(&f, "scripts/w.lua", "return {recommend = function() return 4 end}\n");
    assert_true(wait_for(&loop, rt, S, "w", "recommend", 4, 2.0));
    del(&f, "scripts/w.lua");
    assert_true(wait_for(&loop, rt, S, "w", "recommend", -1, 2.0));
    assert_int_equal(rec_script_count(rt), 1);

    rec_script_unwatch(rt);
    rec_script_unwatch(rt);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    rec_script_free(rt);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* Free while watching: the handles close when the loop runs next. */
static void test_free_while_watching(void **state) {
    fx f = *(fx *)*state;
    put(&f, "scripts/w.lua", "return {recommend = function() return 1 end}\n");
    rec_script_opts o;
    fx_opts(&f, &o);
    rec_script_rt *rt = open_rt(&o, NULL, NULL);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(rec_script_watch(rt, &loop), 0);
    put(&f, "scripts/w.lua", "return {recommend = function() return 2 end}\n");
    rec_script_free(rt);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_strategy_call, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_not_found_keeps_stack, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_error_messages, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_policy_hooks, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_contracts_refused, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_file_names, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_config_file, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sandbox_allow_list, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_globals_separate, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_string_metatable, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_env_tricks, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_time_budget, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_instruction_budget, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_library_budget, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_memory_budget, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_vm_memory_cap, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_deep_recursion, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_reload_rewrite_and_removal, fx_setup, fx_teardown),
        cmocka_unit_test(test_missing_folders),
        cmocka_unit_test_setup_teardown(test_watch, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_free_while_watching, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
