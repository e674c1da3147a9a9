/* lua_api.c - the `recd` Lua module.
 *
 * Every function exposed to Lua carries its stack effect in the Lua
 * manual's notation [-o, +p, x]: o values popped, p pushed, x = 'e' may
 * raise (engine errors are raised as error objects), 'm' may raise only on
 * memory errors.
 *
 * Writes commit when the call returns (autocommit) unless they run inside
 * db:batch(fn), which commits once when fn returns: one fsync for many
 * writes.
 */
#include "lua_api.h"

#include <lauxlib.h>
#include <lualib.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "input.h"
#include "learn.h"
#include "rank.h"
#include "sandbox.h"
#include "shown.h"
#include "click.h"
#include "value.h"
#include "vec.h"
#include "version.h"

#define DB_MT "recd.db"
#define BITMAP_MT "recd.bitmap"
#define ERR_MT "recd.error"
#define EVENTS_MT "recd.events"
#define MAX_K 100000

/* Work of one engine call is charged to the budget of the script calling
 * (sandbox.h) before it starts, in steps of about one Lua instruction:
 * FLOATS_PER_STEP multiply-adds of a scan, one graph step, one element
 * built. Without a budget (a plain Lua state) nothing is charged. */
#define FLOATS_PER_STEP 64

typedef struct ldb {
    rec_engine *e;   /* NULL once closed */
    int owned;       /* close frees the engine */
    int batch_depth; /* > 0 inside db:batch */
    int deferred;    /* lent without autocommit: the owner commits (the
                        server's group commit), never this handle */
} ldb;

typedef struct lbitmap {
    size_t words;
    uint64_t bits[]; /* bit set = item kept */
} lbitmap;

/* ---- errors -------------------------------------------------------------- */

static int err_tostring(lua_State *L) {
    lua_getfield(L, 1, "name");
    lua_getfield(L, 1, "message");
    lua_pushfstring(L, "%s: %s", luaL_optstring(L, -2, "error"),
                    luaL_optstring(L, -1, ""));
    return 1;
}

int rec_lua_error(lua_State *L, int code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, code);
    lua_setfield(L, -2, "code");
    lua_pushstring(L, rec_err_name(code));
    lua_setfield(L, -2, "name");
    lua_pushstring(L, msg[0] ? msg : rec_strerror(code));
    lua_setfield(L, -2, "message");
    if (luaL_newmetatable(L, ERR_MT)) {
        lua_pushcfunction(L, err_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushliteral(L, "recd.error");
        lua_setfield(L, -2, "__metatable");
    }
    lua_setmetatable(L, -2);
    return lua_error(L);
}

/* Raise the engine's error with its detail message when it has one. */
static int engine_error(lua_State *L, rec_engine *e, int rc) {
    const char *m = rec_engine_errmsg(e);
    return rec_lua_error(L, rc, "%s", m && m[0] ? m : rec_strerror(rc));
}

static ldb *check_db(lua_State *L) {
    ldb *d = luaL_checkudata(L, 1, DB_MT);
    if (!d->e)
        rec_lua_error(L, REC_EINVAL, "database is closed");
    return d;
}

/* Fold in what is owed for user (REC_IDX_NONE: every user) in space
 * (NULL: every space) before reading their rows (rec_learn_settle). */
static void settle(lua_State *L, ldb *d, const char *space, uint32_t user) {
    int rc = rec_learn_settle(d->e, space, user);
    if (rc)
        rec_lua_error(L, rc, "ials fold-in failed: %s", rec_strerror(rc));
}

/* Fold in the users owed in space (NULL: every space) who have no row yet,
 * before counting its users (rec_learn_settle_new). */
static void settle_new(lua_State *L, ldb *d, const char *space) {
    int rc = rec_learn_settle_new(d->e, space);
    if (rc)
        rec_lua_error(L, rc, "ials fold-in failed: %s", rec_strerror(rc));
}

static void autocommit(lua_State *L, ldb *d) {
    if (d->batch_depth == 0) {
        int rc = rec_engine_commit(d->e);
        if (rc)
            engine_error(L, d->e, rc);
    }
}

/* ---- ids ------------------------------------------------------------------ */

/* The Lua value at idx as an input field (input.h). A float with an
 * integral value reads as that integer, as Lua itself converts it. */
static void lua_input(lua_State *L, int idx, rec_field *f) {
    memset(f, 0, sizeof *f);
    switch (lua_type(L, idx)) {
    case LUA_TNONE:
        f->kind = REC_FIELD_ABSENT;
        break;
    case LUA_TNIL:
        f->kind = REC_FIELD_NIL;
        break;
    case LUA_TBOOLEAN:
        f->kind = REC_FIELD_BOOL;
        f->v.b = lua_toboolean(L, idx);
        break;
    case LUA_TNUMBER: {
        int isint;
        lua_Integer i = lua_tointegerx(L, idx, &isint);
        if (isint) {
            f->kind = REC_FIELD_INT;
            f->v.i = (int64_t)i;
        } else {
            f->kind = REC_FIELD_FLOAT;
            f->v.f = (double)lua_tonumber(L, idx);
        }
        break;
    }
    case LUA_TSTRING:
        f->kind = REC_FIELD_STR;
        f->v.s.p = lua_tolstring(L, idx, &f->v.s.n);
        break;
    case LUA_TTABLE:
        f->kind = REC_FIELD_TABLE;
        break;
    default:
        f->kind = REC_FIELD_OTHER;
        break;
    }
}

/* Raise the reason an input check gave.   [-0, +0, v] */
static int input_error(lua_State *L, int rc, const char *err) {
    return rec_lua_error(L, rc, "%s", err);
}

/* Encode the id at idx into key; raises on a bad id. */
static size_t check_id(lua_State *L, int idx, char *key, const char *what) {
    char err[256];
    rec_field f;
    lua_input(L, idx, &f);
    int rc = rec_input_id(&f, what, key, err, sizeof err);
    if (rc < 0)
        input_error(L, rc, err);
    return (size_t)rc;
}

void rec_lua_push_id(lua_State *L, const char *key, size_t klen) {
    int is_int;
    int64_t iv;
    const char *s;
    size_t n;
    if (!key || rec_id_decode(key, klen, &is_int, &iv, &s, &n)) {
        lua_pushnil(L);
    } else if (is_int) {
        lua_pushinteger(L, (lua_Integer)iv);
    } else {
        lua_pushlstring(L, s, n);
    }
}

static void push_idx(lua_State *L, rec_engine *e, rec_kind k, uint32_t idx) {
    size_t n;
    const char *key = rec_engine_key(e, k, idx, &n);
    rec_lua_push_id(L, key, n);
}

static uint32_t find_idx(lua_State *L, ldb *d, rec_kind k, int idx,
                         int must) {
    char key[REC_ID_MAX];
    const char *what = k == REC_KIND_ITEM ? "item" : "user";
    size_t n = check_id(L, idx, key, what);
    uint32_t i = rec_engine_lookup(d->e, k, key, n);
    if (i == REC_IDX_NONE && must) {
        lua_pushvalue(L, idx);
        rec_lua_error(L, REC_ENOTFOUND, "unknown %s '%s'", what,
                      luaL_tolstring(L, -1, NULL));
    }
    return i;
}

/* ---- values ------------------------------------------------------------- */

/* Pack the value at idx as msgpack into b; raises with the path on error. */
static void pack_value(lua_State *L, int idx, rec_buf *b, const char *what) {
    char err[256];
    /* nothing larger is stored: stop there, whatever the value's shape */
    int rc = rec_value_pack_lua_max(L, idx, b, REC_PROPS_MAX, err, sizeof err);
    if (rc) {
        rec_buf_free(b);
        rec_lua_error(L, rc, "%s: %s", what, err);
    }
}

typedef struct lua_array {
    lua_State *L;
    int idx;
} lua_array;

static void lua_input_at(void *src, size_t i, rec_field *out) {
    lua_array *a = src;
    lua_rawgeti(a->L, a->idx, (lua_Integer)i + 1);
    lua_input(a->L, -1, out); /* numbers only are read: nothing points into the value */
    lua_pop(a->L, 1);
}

/* Read a vector (array of numbers, or a string of little-endian float32)
 * at idx into a userdata pushed on the stack (so an error raised later
 * leaks nothing); *dim gets its length.   [-0, +1, e] */
static float *check_vector(lua_State *L, int idx, uint32_t *dim,
                           const char *space) {
    idx = lua_absindex(L, idx);
    rec_field f;
    lua_input(L, idx, &f);
    if (f.kind == REC_FIELD_STR) {
        f.kind = REC_FIELD_BIN; /* a Lua string holds the packed bytes */
    } else if (f.kind == REC_FIELD_TABLE) {
        f.kind = REC_FIELD_ARRAY;
        f.n = (size_t)lua_rawlen(L, idx);
    }
    uint32_t n = rec_input_vector_dim(&f);
    float *v = lua_newuserdatauv(L, (n ? n : 1) * sizeof *v, 0);
    lua_array a = {L, idx};
    char err[256];
    int rc = rec_input_vector(&f, lua_input_at, &a, space, v, dim, err, sizeof err);
    if (rc)
        input_error(L, rc, err);
    return v;
}

static void push_floats(lua_State *L, const float *v, uint32_t n) {
    lua_createtable(L, (int)n, 0);
    for (uint32_t i = 0; i < n; i++) {
        lua_pushnumber(L, (lua_Number)v[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

/* ---- module functions --------------------------------------------------- */

static const char *opt_field_str(lua_State *L, int t, const char *f,
                                 const char *def) {
    lua_getfield(L, t, f);
    const char *s = def;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING)
            rec_lua_error(L, REC_EINVAL, "option '%s' must be a string", f);
        s = lua_tostring(L, -1);
    }
    lua_pop(L, 1); /* s stays valid: the table still references it */
    return s;
}

static lua_Number opt_field_num(lua_State *L, int t, const char *f,
                                lua_Number def) {
    lua_getfield(L, t, f);
    lua_Number x = def;
    if (!lua_isnil(L, -1)) {
        int ok;
        x = lua_tonumberx(L, -1, &ok);
        if (!ok)
            rec_lua_error(L, REC_EINVAL, "option '%s' must be a number", f);
    }
    lua_pop(L, 1);
    return x;
}

static int opt_field_bool(lua_State *L, int t, const char *f, int def) {
    lua_getfield(L, t, f);
    int b = lua_isnil(L, -1) ? def : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return b;
}

/* recd.open(dir [, opts]) -> db   [-1|2, +1, e]
 * opts: read_only, no_sync, map_size, map_max (bytes), seed, window (5). */
static int l_open(lua_State *L) {
    const char *dir = luaL_checkstring(L, 1);
    rec_engine_opts o;
    rec_engine_opts_default(&o);
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        o.store.read_only = opt_field_bool(L, 2, "read_only", 0);
        o.store.no_sync = opt_field_bool(L, 2, "no_sync", 0);
        lua_Number ms = opt_field_num(L, 2, "map_size", (lua_Number)o.store.map_size);
        lua_Number mx = opt_field_num(L, 2, "map_max", (lua_Number)o.store.map_max);
        if (!(ms >= 65536 && ms <= 1e15 && mx >= ms && mx <= 1e15))
            return rec_lua_error(L, REC_ERANGE, "map_size must be >= 64 KiB and "
                                 "map_max >= map_size");
        o.store.map_size = (size_t)ms;
        o.store.map_max = (size_t)mx;
        o.seed = (uint64_t)opt_field_num(L, 2, "seed", 42);
        lua_Number w = opt_field_num(L, 2, "window", 5);
        if (!(w >= 1 && w <= 256))
            return rec_lua_error(L, REC_ERANGE, "window must be 1..256");
        o.cooc_window = (uint32_t)w;
    }
    ldb *d = lua_newuserdatauv(L, sizeof *d, 0);
    memset(d, 0, sizeof *d);
    luaL_setmetatable(L, DB_MT);
    char err[512] = "";
    int rc = rec_engine_open(&d->e, dir, &o, err, sizeof err);
    if (rc)
        return rec_lua_error(L, rc, "%s", err[0] ? err : rec_strerror(rc));
    d->owned = 1;
    return 1;
}

void rec_lua_push_engine(lua_State *L, rec_engine *e, int autocommit) {
    ldb *d = lua_newuserdatauv(L, sizeof *d, 0);
    memset(d, 0, sizeof *d);
    d->e = e;
    /* Without autocommit the owner commits (the server's group commit):
     * writes stay pending as if inside a db:batch that never ends. */
    d->batch_depth = autocommit ? 0 : 1;
    d->deferred = !autocommit;
    luaL_setmetatable(L, DB_MT);
}

/* recd.isa() -> "avx512" | "avx2" | "scalar"   [-0, +1, -] */
static int l_isa(lua_State *L) {
    lua_pushstring(L, rec_vec_isa_name());
    return 1;
}

/* recd.try(f, ...) -> results of f, or nil, name, message   [-n, +r, -] */
static int l_try(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int n = lua_gettop(L);
    if (lua_pcall(L, n - 1, LUA_MULTRET, 0) == LUA_OK)
        return lua_gettop(L);
    lua_pushnil(L);
    if (lua_type(L, -2) == LUA_TTABLE) {
        lua_getfield(L, -2, "name");
        lua_getfield(L, -3, "message");
    } else {
        lua_pushliteral(L, "error");
        lua_pushvalue(L, -3);
    }
    return 3;
}

/* db:close()   [-1, +0, -] */
static int db_close(lua_State *L) {
    ldb *d = luaL_checkudata(L, 1, DB_MT);
    if (!d->owned)
        return 0; /* a handle lent by its owner: closing it is not ours */
    if (d->e)
        rec_engine_free(d->e);
    d->e = NULL;
    return 0;
}

static int db_tostring(lua_State *L) {
    ldb *d = luaL_checkudata(L, 1, DB_MT);
    if (!d->e)
        lua_pushliteral(L, "recd.db (closed)");
    else
        lua_pushfstring(L, "recd.db (%d items, %d users)",
                        (int)rec_engine_count(d->e, REC_KIND_ITEM),
                        (int)rec_engine_count(d->e, REC_KIND_USER));
    return 1;
}

/* Collect vectors {space = vec, ...} at t into args; the copies are
 * userdata left on the stack (one per vector).   [-0, +n, e] */
static size_t collect_vectors(lua_State *L, int t, rec_vecarg *args,
                              size_t max) {
    size_t n = 0;
    t = lua_absindex(L, t);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            rec_lua_error(L, REC_EINVAL,
                          "vectors must be a map of space name to vector");
        if (n == max)
            rec_lua_error(L, REC_ETOOLARGE, "at most %d vectors per call",
                          (int)max);
        const char *name = lua_tostring(L, -2);
        uint32_t dim = 0;
        float *v = check_vector(L, -1, &dim, name);
        /* stack: key, value, copy -> keep the copy below the key */
        lua_insert(L, -3);
        lua_pop(L, 1);
        /* name stays valid: the vectors table holds the key string. */
        args[n].space = name;
        args[n].v = v;
        args[n].dim = dim;
        n++;
    }
    return n;
}

#define MAX_VECS 16

/* Shared body of item_put and user_put.
 * db:item_put(id [, props [, vectors [, active]]]) or
 * db:item_put{id=, props=, vectors=, active=} -> true   [-n, +1, e] */
static int put_common(lua_State *L, rec_kind kind) {
    ldb *d = check_db(L);
    int base = 2;
    if (lua_type(L, 2) == LUA_TTABLE && lua_gettop(L) == 2) {
        /* Table form: spread fields onto the stack in positional order. */
        lua_getfield(L, 2, "id");
        lua_getfield(L, 2, "props");
        lua_getfield(L, 2, "vectors");
        lua_getfield(L, 2, "active");
        base = 3;
    }
    const char *what = kind == REC_KIND_ITEM ? "item" : "user";
    char key[REC_ID_MAX];
    size_t klen = check_id(L, base, key, what);
    int active;
    char err[256];
    rec_field af;
    lua_input(L, base + 3, &af);
    int arc = rec_input_active(&af, kind, &active, err, sizeof err);
    if (arc)
        return input_error(L, arc, err);
    rec_vecarg vecs[MAX_VECS];
    size_t nv = 0;
    if (!lua_isnoneornil(L, base + 2)) {
        if (lua_type(L, base + 2) != LUA_TTABLE)
            return rec_lua_error(L, REC_EINVAL, "vectors must be a map of up to 16 "
                                 "space names to vectors");
        nv = collect_vectors(L, base + 2, vecs, MAX_VECS);
    }
    /* Packed last: nothing raises between here and the free below. */
    rec_buf props = REC_BUF_INIT;
    int has_props = !lua_isnoneornil(L, base + 1);
    if (has_props) {
        if (lua_type(L, base + 1) != LUA_TTABLE)
            return rec_lua_error(L, REC_EINVAL, "props must be a map");
        pack_value(L, base + 1, &props, "props");
    }
    uint32_t idx;
    int rc = rec_engine_put(d->e, kind, key, klen, has_props ? props.data : NULL,
                            props.len, active, vecs, nv, &idx);
    rec_buf_free(&props);
    if (rc)
        return engine_error(L, d->e, rc);
    autocommit(L, d);
    lua_pushboolean(L, 1);
    return 1;
}

static int db_item_put(lua_State *L) { return put_common(L, REC_KIND_ITEM); }
static int db_user_put(lua_State *L) { return put_common(L, REC_KIND_USER); }

/* [-0, +1, e] history of user idx, newest first, at most n entries. */
static void push_history(lua_State *L, ldb *d, uint32_t user, lua_Integer n) {
    uint32_t len;
    const rec_hentry *h = rec_graph_history(rec_engine_graph(d->e), user, &len);
    lua_Integer count = (lua_Integer)len < n ? (lua_Integer)len : n;
    rec_sandbox_charge(L, (uint64_t)count * 4);
    lua_createtable(L, (int)count, 0);
    for (lua_Integer i = 0; i < count; i++) {
        const rec_hentry *e = &h[len - 1 - (uint32_t)i];
        lua_createtable(L, 0, 4);
        push_idx(L, d->e, REC_KIND_ITEM, e->item);
        lua_setfield(L, -2, "item");
        const char *tn = rec_engine_type_name(d->e, e->type);
        lua_pushstring(L, tn ? tn : "?");
        lua_setfield(L, -2, "type");
        lua_pushnumber(L, e->ts);
        lua_setfield(L, -2, "ts");
        lua_pushnumber(L, (lua_Number)e->weight);
        lua_setfield(L, -2, "weight");
        lua_rawseti(L, -2, i + 1);
    }
}

/* db:item_get(id) -> {id, props, active, vectors} | nil   [-2, +1, e]
 * db:user_get(id [, n]) adds history (newest first, default 50). */
static int get_common(lua_State *L, rec_kind kind) {
    ldb *d = check_db(L);
    lua_Integer hn = luaL_optinteger(L, 3, 50);
    uint32_t idx = find_idx(L, d, kind, 2, 0);
    if (idx == REC_IDX_NONE) {
        lua_pushnil(L);
        return 1;
    }
    rec_buf props = REC_BUF_INIT;
    int active = 1;
    int rc = rec_engine_get(d->e, kind, idx, &props, &active);
    if (rc) {
        rec_buf_free(&props);
        return engine_error(L, d->e, rc);
    }
    lua_createtable(L, 0, 5);
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, "id");
    size_t used;
    rc = rec_value_push_lua(L, props.data, props.len, &used);
    rec_buf_free(&props);
    if (rc)
        return rec_lua_error(L, REC_ECORRUPT, "stored properties cannot be decoded");
    lua_setfield(L, -2, "props");
    if (kind == REC_KIND_ITEM) {
        lua_pushboolean(L, active);
        lua_setfield(L, -2, "active");
    }
    lua_newtable(L);
    if (kind == REC_KIND_USER)
        settle(L, d, NULL, idx);
    for (size_t i = 0; i < rec_engine_space_count(d->e); i++) {
        rec_space *s = rec_engine_space_at(d->e, i);
        const float *v = rec_space_get(s, kind, idx);
        if (v) {
            push_floats(L, v, s->dim);
            lua_setfield(L, -2, s->name);
        }
    }
    lua_setfield(L, -2, "vectors");
    if (kind == REC_KIND_USER) {
        push_history(L, d, idx, hn < 0 ? 0 : hn);
        lua_setfield(L, -2, "history");
    }
    return 1;
}

static int db_item_get(lua_State *L) { return get_common(L, REC_KIND_ITEM); }
static int db_user_get(lua_State *L) { return get_common(L, REC_KIND_USER); }

/* db:item_delete(id) -> true | false (unknown id). A delete commits at
 * once (what is pending first): refused on a handle whose owner commits,
 * where it would commit other writes outside the owner's commit.
 * [-2, +1, e] */
static int delete_common(lua_State *L, rec_kind kind) {
    ldb *d = check_db(L);
    const char *what = kind == REC_KIND_ITEM ? "item" : "user";
    if (d->deferred)
        return rec_lua_error(L, REC_EINVAL, "%s_delete cannot run here: a delete commits "
                             "at once, and the writes of this handle commit with the "
                             "server's; call the %s.delete method", what, what);
    char key[REC_ID_MAX];
    size_t klen = check_id(L, 2, key, what);
    int rc = rec_engine_delete(d->e, kind, key, klen);
    if (rc == REC_ENOTFOUND) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if (rc)
        return engine_error(L, d->e, rc);
    lua_pushboolean(L, 1);
    return 1;
}

static int db_item_delete(lua_State *L) { return delete_common(L, REC_KIND_ITEM); }
static int db_user_delete(lua_State *L) { return delete_common(L, REC_KIND_USER); }

/* db:event{user=, item=, type=, value=, ts=, rec_id=, context=}
 *   -> seq, weight   [-2, +2, e] */
static int db_event(lua_State *L) {
    ldb *d = check_db(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    rec_field f[REC_EVF_N];
    for (int k = 0; k < REC_EVF_N; k++) {
        lua_getfield(L, 2, rec_event_field_names[k]); /* stays: strings point into it */
        lua_input(L, -1, &f[k]);
    }
    rec_buf ctx = REC_BUF_INIT;
    lua_getfield(L, 2, rec_event_field_names[REC_EVF_CONTEXT]);
    if (!lua_isnil(L, -1))
        pack_value(L, -1, &ctx, "context");
    rec_event_input in;
    char err[256];
    int rc = rec_input_event(d->e, f, 0, ctx.data, ctx.len, &in, err, sizeof err);
    if (rc) {
        rec_buf_free(&ctx);
        return input_error(L, rc, err);
    }
    rec_event ev = in.ev;
    rec_event_out out;
    rc = rec_engine_event(d->e, &ev, &out);
    rec_buf_free(&ctx);
    if (rc)
        return engine_error(L, d->e, rc);
    autocommit(L, d);
    lua_pushinteger(L, (lua_Integer)out.seq);
    lua_pushnumber(L, (lua_Number)out.weight);
    return 2;
}

/* db:history(user [, n=50]) -> {{item, type, ts, weight}, ...} newest first
 * (empty for unknown users)   [-3, +1, e] */
static int db_history(lua_State *L) {
    ldb *d = check_db(L);
    uint32_t u = find_idx(L, d, REC_KIND_USER, 2, 0);
    lua_Integer n = luaL_optinteger(L, 3, 50);
    if (u == REC_IDX_NONE) {
        lua_newtable(L);
        return 1;
    }
    push_history(L, d, u, n < 0 ? 0 : n);
    return 1;
}

/* Item index named by entry i of db:drop_seen's list, at stack index idx
 * (an id, or a table whose `id` is one): REC_IDX_NONE for an unknown item
 * or a string that cannot be an id. Raises invalid_params on any other
 * entry.   [-0, +0, e] */
static uint32_t drop_seen_entry(lua_State *L, ldb *d, int idx, lua_Integer i) {
    char key[REC_ID_MAX];
    int kl = -1;
    int t = lua_type(L, idx);
    int field = t == LUA_TTABLE;
    if (field) {
        lua_getfield(L, idx, "id");
        idx = -1;
        t = lua_type(L, -1);
    }
    if (t == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        kl = rec_id_str(key, s, n); /* malformed: never an item */
    } else if (t == LUA_TNUMBER) {
        int isint;
        lua_Integer v = lua_tointegerx(L, idx, &isint);
        if (isint)
            kl = rec_id_int(key, (int64_t)v);
        else
            t = LUA_TNONE;
    }
    if (t != LUA_TSTRING && t != LUA_TNUMBER) {
        rec_lua_error(L, REC_EINVAL, field
                      ? "list[%d].id must be a string or an integer item id"
                      : "list[%d] must be an item id (a string or an integer) "
                        "or a table with an id", (int)i);
        return REC_IDX_NONE;
    }
    if (field)
        lua_pop(L, 1);
    return kl > 0 ? rec_engine_lookup(d->e, REC_KIND_ITEM, key, (size_t)kl)
                  : REC_IDX_NONE;
}

/* Probe for item idx in an open-addressed set of 2^bits slots
 * (REC_IDX_NONE = empty; Fibonacci hashing, linear probing): the slot
 * holding it, or the empty slot where it belongs. */
static uint32_t seen_slot(const uint32_t *slot, unsigned bits, uint32_t idx) {
    uint32_t mask = (1u << bits) - 1;
    uint32_t p = (idx * 0x9E3779B1u) >> (32 - bits);
    while (slot[p] != idx && slot[p] != REC_IDX_NONE)
        p = (p + 1) & mask;
    return p;
}

/* db:drop_seen(user, list) -> a new array of list's entries (item ids, or
 * tables with an `id`, mixed) whose item is not in the user's history (any
 * event type), in list order. An unknown or nil user gives a shallow copy;
 * ids of unknown items are kept. O(history + #list) in C: the list's items
 * go in a small hash set (2 to 4 slots per entry) and the history is
 * scanned once against it, stopping when every item is found.
 * [-3, +1, e] */
static int db_drop_seen(lua_State *L) {
    ldb *d = check_db(L);
    uint32_t u = REC_IDX_NONE;
    if (!lua_isnoneornil(L, 2))
        u = find_idx(L, d, REC_KIND_USER, 2, 0);
    if (lua_type(L, 3) != LUA_TTABLE)
        return rec_lua_error(L, REC_EINVAL, "list must be an array of item ids "
                             "or of tables with an id, got %s", luaL_typename(L, 3));
    lua_Integer len = (lua_Integer)lua_rawlen(L, 3);
    if (len > INT32_MAX / 4)
        return rec_lua_error(L, REC_ETOOLARGE, "list has more than %d entries",
                             INT32_MAX / 4);
    uint32_t hn = 0;
    if (u != REC_IDX_NONE)
        rec_graph_history(rec_engine_graph(d->e), u, &hn);
    rec_sandbox_charge(L, (uint64_t)len + hn);
    if (hn == 0 || len == 0) {
        lua_createtable(L, (int)len, 0);
        for (lua_Integer i = 1; i <= len; i++) {
            lua_rawgeti(L, 3, i);
            drop_seen_entry(L, d, -1, i); /* the same errors with or without history */
            lua_rawseti(L, -2, i);
        }
        return 1;
    }
    unsigned bits = 4;
    while ((1u << bits) < 2 * (uint64_t)len)
        bits++;
    uint32_t cap = 1u << bits;
    /* idx[i]: entry i's item; slot[]: the set; seen[]: found in history.
     * One userdata, so an error raised by a later entry leaks nothing. */
    uint32_t *idx = lua_newuserdatauv(L, ((size_t)len + cap) * sizeof(uint32_t) + cap, 0);
    uint32_t *slot = idx + len;
    uint8_t *seen = (uint8_t *)(slot + cap);
    memset(slot, 0xff, cap * sizeof(uint32_t));
    memset(seen, 0, cap);
    uint32_t distinct = 0;
    for (lua_Integer i = 0; i < len; i++) {
        lua_rawgeti(L, 3, i + 1);
        idx[i] = drop_seen_entry(L, d, -1, i + 1);
        lua_pop(L, 1);
        if (idx[i] != REC_IDX_NONE) {
            uint32_t p = seen_slot(slot, bits, idx[i]);
            if (slot[p] == REC_IDX_NONE) {
                slot[p] = idx[i];
                distinct++;
            }
        }
    }
    /* Read now: an `id` field's metamethod may have added to the history. */
    const rec_hentry *h = rec_graph_history(rec_engine_graph(d->e), u, &hn);
    uint32_t found = 0;
    for (uint32_t j = hn; j-- > 0 && found < distinct;) { /* newest first */
        uint32_t p = seen_slot(slot, bits, h[j].item);
        if (slot[p] != REC_IDX_NONE && !seen[p]) {
            seen[p] = 1;
            found++;
        }
    }
    lua_createtable(L, (int)len, 0);
    lua_Integer out = 0;
    for (lua_Integer i = 0; i < len; i++) {
        if (idx[i] != REC_IDX_NONE && seen[seen_slot(slot, bits, idx[i])])
            continue;
        lua_rawgeti(L, 3, i + 1);
        lua_rawseti(L, -2, ++out);
    }
    return 1;
}

/* [-0, +1, m] {name, dim, items, users} */
static void push_space_info(lua_State *L, const rec_engine *e, const rec_space *s) {
    lua_createtable(L, 0, 5);
    lua_pushstring(L, s->name);
    lua_setfield(L, -2, "name");
    lua_pushinteger(L, s->dim);
    lua_setfield(L, -2, "dim");
    lua_pushinteger(L, s->m[REC_KIND_ITEM].count);
    lua_setfield(L, -2, "items");
    lua_pushinteger(L, s->m[REC_KIND_USER].count);
    lua_setfield(L, -2, "users");
    lua_pushinteger(L, (lua_Integer)rec_engine_mf_owed(e, s->name));
    lua_setfield(L, -2, "mf_owed");
}

/* db:space(name [, dim]) -> info | nil; creates the space when dim is
 * given and it does not exist   [-3, +1, e] */
static int db_space(lua_State *L) {
    ldb *d = check_db(L);
    const char *name = luaL_checkstring(L, 2);
    rec_space *s = rec_engine_space(d->e, name);
    if (!lua_isnoneornil(L, 3)) {
        lua_Integer dim = luaL_checkinteger(L, 3);
        if (dim < 1 || dim > REC_DIM_MAX)
            return rec_lua_error(L, REC_ERANGE, "dimension must be 1..%d",
                                 REC_DIM_MAX);
        int rc = rec_engine_space_ensure(d->e, name, (uint32_t)dim, &s);
        if (rc)
            return engine_error(L, d->e, rc);
        autocommit(L, d);
    }
    if (!s) {
        lua_pushnil(L);
        return 1;
    }
    settle_new(L, d, name); /* users owed their first fold-in count */
    push_space_info(L, d->e, s);
    return 1;
}

/* db:spaces() -> {info, ...}   [-1, +1, m] */
static int db_spaces(lua_State *L) {
    ldb *d = check_db(L);
    settle_new(L, d, NULL);
    size_t n = rec_engine_space_count(d->e);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        push_space_info(L, d->e, rec_engine_space_at(d->e, i));
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static rec_kind check_kind(lua_State *L, int idx) {
    const char *k = luaL_checkstring(L, idx);
    if (strcmp(k, "item") == 0)
        return REC_KIND_ITEM;
    if (strcmp(k, "user") == 0)
        return REC_KIND_USER;
    rec_lua_error(L, REC_EINVAL, "kind must be \"item\" or \"user\", got '%s'", k);
    return REC_KIND_ITEM;
}

/* The space `name`, to read: MF steps owed there are paid first. */
static rec_space *check_space(lua_State *L, ldb *d, const char *name) {
    rec_space *s = rec_engine_space(d->e, name);
    if (!s)
        rec_lua_error(L, REC_ENOTFOUND, "unknown space '%s'", name);
    int rc = rec_engine_mf_settle(d->e, name);
    if (rc)
        engine_error(L, d->e, rc);
    return s;
}

/* db:vector(kind, id, space) -> {floats} | nil   [-4, +1, e] */
static int db_vector(lua_State *L) {
    ldb *d = check_db(L);
    rec_kind k = check_kind(L, 2);
    uint32_t idx = find_idx(L, d, k, 3, 1);
    rec_space *s = check_space(L, d, luaL_checkstring(L, 4));
    if (k == REC_KIND_USER)
        settle(L, d, s->name, idx);
    const float *v = rec_space_get(s, k, idx);
    if (!v)
        lua_pushnil(L);
    else
        push_floats(L, v, s->dim);
    return 1;
}

/* The user's taste in space s into q (dim floats, not normalised): the
 * sum of the unit vectors of the items of their newest n positive events
 * among their newest `events` events (0: all), each weighted by its
 * event's weight and by decay^j for the j-th positive event back (the
 * count runs over positive events with or without a vector). Returns
 * the positive events read; q is zero when none had a vector. */
static lua_Integer taste_query(ldb *d, uint32_t user, rec_space *s, lua_Integer n,
                               double decay, lua_Integer events, float *q) {
    uint32_t hn = 0;
    const rec_hentry *h =
        user == REC_IDX_NONE ? NULL : rec_graph_history(rec_engine_graph(d->e), user, &hn);
    memset(q, 0, s->dim * sizeof(float));
    uint32_t stop = events > 0 && (lua_Integer)hn > events ? hn - (uint32_t)events : 0;
    lua_Integer used = 0;
    double f = 1.0;
    for (uint32_t i = hn; i-- > stop && used < n;) {
        if (!(h[i].weight > 0))
            continue;
        used++;
        const float *v = rec_space_get(s, REC_KIND_ITEM, h[i].item);
        float nv = v ? rec_vec_norm2(v, s->dim) : 0.0f;
        if (nv > 0) {
            float w = (float)((double)h[i].weight * f) / sqrtf(nv);
            for (uint32_t j = 0; j < s->dim; j++)
                q[j] += w * v[j];
        }
        f *= decay;
    }
    return used;
}

/* db:profile(user, space [, n=20]) -> the unit mean of the unit vectors,
 * in space, of the items of the user's newest n positive events (each
 * weighted by its event's weight), or nil when none has a vector: the
 * user's taste as a query for db:topk. O(n x dim).   [-4, +1, e] */
static int db_profile(lua_State *L) {
    ldb *d = check_db(L);
    uint32_t user = find_idx(L, d, REC_KIND_USER, 2, 0);
    rec_space *s = check_space(L, d, luaL_checkstring(L, 3));
    lua_Integer n = luaL_optinteger(L, 4, 20);
    luaL_argcheck(L, n >= 1 && n <= 10000, 4, "n must be 1..10000");
    float *q = lua_newuserdatauv(L, s->dim * sizeof(float), 0);
    lua_Integer used = taste_query(d, user, s, n, 1.0, 0, q);
    rec_sandbox_charge(L, (uint64_t)used * s->dim);
    if (!(rec_vec_normalize(q, s->dim) > 0)) {
        lua_pushnil(L);
        return 1;
    }
    push_floats(L, q, s->dim);
    return 1;
}

/* db:set_vector(kind, id, space, vec) -> true; the space is created with
 * the vector's dimension when missing   [-5, +1, e] */
static int db_set_vector(lua_State *L) {
    ldb *d = check_db(L);
    rec_kind k = check_kind(L, 2);
    uint32_t idx = find_idx(L, d, k, 3, 1);
    const char *name = luaL_checkstring(L, 4);
    uint32_t dim;
    float *v = check_vector(L, 5, &dim, name);
    rec_space *s;
    int rc = rec_engine_space_ensure(d->e, name, dim, &s);
    if (!rc)
        rc = rec_engine_set_vector(d->e, s, k, idx, v, dim);
    if (rc)
        return engine_error(L, d->e, rc);
    autocommit(L, d);
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- filters and results ------------------------------------------------ */

typedef struct qopts {
    lua_Integer k;
    const char *space;
    int cosine;
    int include_inactive;
    int exclude_seen;
    rec_topk_how how;    /* vector scans: exact, probe */
    uint64_t *skip;      /* malloc'd, words long; bit set = leave out */
    size_t words;
} qopts;

static void skip_set(qopts *q, uint32_t idx) {
    if ((size_t)(idx >> 6) < q->words)
        q->skip[idx >> 6] |= 1ull << (idx & 63);
}

/* Build the skip map from options at index t (may be none): exclude
 * (list of item ids), filter (bitmap or function(id) -> keep), inactive
 * items unless include_inactive. The map is held in a userdata left on the
 * stack so an error cannot leak it. [-0, +1, e] */
static void build_skip(lua_State *L, ldb *d, int t, qopts *q) {
    uint32_t bound = rec_engine_bound(d->e, REC_KIND_ITEM);
    rec_sandbox_charge(L, (uint64_t)bound / 64 + (q->include_inactive ? bound / 4 : 0));
    q->words = ((size_t)bound + 63) / 64 + 1;
    q->skip = lua_newuserdatauv(L, q->words * sizeof(uint64_t), 0);
    memset(q->skip, 0, q->words * sizeof(uint64_t));
    int ud = lua_gettop(L);
    /* Inactive and deleted items, a word at a time; deleted ones stay out
     * even with include_inactive. */
    size_t w;
    const uint64_t *in = rec_engine_inactive(d->e, &w);
    for (size_t i = 0; i < w && i < q->words; i++)
        q->skip[i] |= in[i];
    if (q->include_inactive) {
        for (uint32_t i = 0; i < bound; i++) {
            size_t kl;
            if ((q->skip[i >> 6] >> (i & 63) & 1) &&
                rec_engine_key(d->e, REC_KIND_ITEM, i, &kl))
                q->skip[i >> 6] &= ~(1ull << (i & 63));
        }
    }
    if (t == 0)
        return;
    /* seen_by = user: leave out every item in that user's history, in C
     * (cheaper than an exclude list of the same ids). */
    lua_getfield(L, t, "seen_by");
    if (!lua_isnil(L, -1)) {
        uint32_t u = find_idx(L, d, REC_KIND_USER, -1, 0);
        uint32_t hn = 0;
        const rec_hentry *h = u != REC_IDX_NONE
                                  ? rec_graph_history(rec_engine_graph(d->e), u, &hn) : NULL;
        for (uint32_t i = 0; i < hn; i++)
            skip_set(q, h[i].item);
    }
    lua_pop(L, 1);
    /* shown_by = user: leave out what lists showed that person with a
     * weight (db:shown) of shown_min (default 1) or more since they last
     * engaged with it */
    lua_getfield(L, t, "shown_by");
    if (!lua_isnil(L, -1)) {
        char key[REC_ID_MAX];
        size_t kl = check_id(L, -1, key, "shown_by");
        lua_Number min = 1.0;
        lua_getfield(L, t, "shown_min");
        if (!lua_isnil(L, -1)) {
            int ok;
            min = lua_tonumberx(L, -1, &ok);
            if (!ok || !(min > 0) || !isfinite(min))
                rec_lua_error(L, REC_EINVAL, "shown_min must be a number > 0");
        }
        lua_pop(L, 1);
        uint32_t sn;
        const rec_shown_entry *se = rec_shown_list(rec_engine_shown(d->e), key, kl, &sn);
        for (uint32_t i = 0; i < sn; i++)
            if ((lua_Number)se[i].weight >= min)
                skip_set(q, se[i].item);
    }
    lua_pop(L, 1);
    lua_getfield(L, t, "exclude");
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TTABLE)
            rec_lua_error(L, REC_EINVAL, "exclude must be a list of item ids");
        lua_Unsigned n = lua_rawlen(L, -1);
        for (lua_Unsigned i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, (lua_Integer)i);
            uint32_t idx = find_idx(L, d, REC_KIND_ITEM, -1, 0);
            if (idx != REC_IDX_NONE)
                skip_set(q, idx);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    lua_getfield(L, t, "filter");
    if (lua_type(L, -1) == LUA_TUSERDATA) {
        lbitmap *b = luaL_checkudata(L, -1, BITMAP_MT);
        for (size_t i = 0; i < q->words; i++)
            q->skip[i] |= i < b->words ? ~b->bits[i] : ~0ull;
    } else if (lua_type(L, -1) == LUA_TFUNCTION) {
        /* One Lua call per candidate: O(items). Build a bitmap with
         * db:bitmap(fn) once to reuse across queries. */
        for (uint32_t i = 0; i < bound; i++) {
            if (q->skip[i >> 6] >> (i & 63) & 1)
                continue;
            lua_pushvalue(L, -1);
            push_idx(L, d->e, REC_KIND_ITEM, i);
            lua_call(L, 1, 1);
            if (!lua_toboolean(L, -1))
                skip_set(q, i);
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        rec_lua_error(L, REC_EINVAL, "filter must be a function or a bitmap");
    }
    lua_pop(L, 1);
    lua_settop(L, ud);
}

/* Parse query options at index t (table or none) with a default k. */
static void parse_qopts(lua_State *L, int t, qopts *q, lua_Integer k,
                        const char *space) {
    memset(q, 0, sizeof *q);
    q->k = k;
    q->space = space;
    q->cosine = 1;
    q->exclude_seen = 1;
    if (t == 0 || lua_isnoneornil(L, t))
        return;
    luaL_checktype(L, t, LUA_TTABLE);
    q->space = opt_field_str(L, t, "space", space);
    const char *metric = opt_field_str(L, t, "metric", "cosine");
    if (strcmp(metric, "cosine") == 0)
        q->cosine = 1;
    else if (strcmp(metric, "dot") == 0)
        q->cosine = 0;
    else
        rec_lua_error(L, REC_EINVAL, "metric must be \"cosine\" or \"dot\"");
    q->include_inactive = opt_field_bool(L, t, "include_inactive", 0);
    q->exclude_seen = opt_field_bool(L, t, "exclude_seen", 1);
    q->how.exact = opt_field_bool(L, t, "exact", 0);
    lua_Number probe = opt_field_num(L, t, "probe", 0);
    if (!(probe >= 0 && probe <= 65536))
        rec_lua_error(L, REC_ERANGE, "probe must be 0..65536");
    q->how.probe = (uint32_t)probe;
}

static lua_Integer check_k(lua_State *L, int idx, lua_Integer def) {
    lua_Integer k = luaL_optinteger(L, idx, def);
    if (k < 0 || k > MAX_K)
        rec_lua_error(L, REC_ERANGE, "k must be 0..%d", MAX_K);
    return k;
}

/* Push hits as {{id=, score=}, ...}. [-0, +1, m] */
static void push_hits(lua_State *L, ldb *d, rec_kind kind, const rec_hit *h,
                      size_t n) {
    rec_sandbox_charge(L, n);
    rec_engine_prefetch_keys(d->e, kind, h, n);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_createtable(L, 0, 2);
        push_idx(L, d->e, kind, h[i].idx);
        lua_setfield(L, -2, "id");
        lua_pushnumber(L, (lua_Number)h[i].score);
        lua_setfield(L, -2, "score");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

static rec_hit *hits_alloc(lua_State *L, lua_Integer k) {
    return lua_newuserdatauv(L, (size_t)(k ? k : 1) * sizeof(rec_hit), 0);
}

/* Default space of an entity: the only space it has a vector in, else
 * "content" when present. */
static const char *default_space(ldb *d, rec_kind k, uint32_t idx) {
    const char *found = NULL;
    for (size_t i = 0; i < rec_engine_space_count(d->e); i++) {
        rec_space *s = rec_engine_space_at(d->e, i);
        if (rec_space_has(s, k, idx)) {
            if (strcmp(s->name, "content") == 0)
                return s->name;
            if (!found)
                found = s->name;
        }
    }
    return found;
}

/* db:space_ann(name [, opts]) -> {min_rows, probe, lists, indexed,
 * trainings, training, probe_need}: the approximate index of the space's items (see
 * space.h). opts: min_rows (cosine scans of this many items or more use
 * it), probe (lists probed at least), build = true (train it now, on this
 * thread: O(items * lists * dim), about a second at 100k items)
 * [-3, +1, e] */
static int db_space_ann(lua_State *L) {
    ldb *d = check_db(L);
    rec_space *s = check_space(L, d, luaL_checkstring(L, 2));
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_Number min_rows = opt_field_num(L, 3, "min_rows", s->ann_min_rows);
        lua_Number probe = opt_field_num(L, 3, "probe", s->ann_probe);
        if (!(min_rows >= 1 && min_rows <= UINT32_MAX) || !(probe >= 1 && probe <= 65536))
            return rec_lua_error(L, REC_ERANGE, "min_rows must be 1..2^32-1, probe 1..65536");
        s->ann_min_rows = (uint32_t)min_rows;
        s->ann_probe = (uint32_t)probe;
        if (opt_field_bool(L, 3, "build", 0) && s->m[REC_KIND_ITEM].count) {
            uint64_t n = s->m[REC_KIND_ITEM].count;
            rec_sandbox_charge(L, n * s->dim / FLOATS_PER_STEP * 3 *
                                      ((uint64_t)sqrt((double)n) + 1));
            int rc = rec_space_ann_build(s, REC_KIND_ITEM);
            if (rc)
                return rec_lua_error(L, rc, "index training failed: %s", rec_strerror(rc));
        }
    }
    rec_ivf_stats st;
    rec_space_ann_stats(s, REC_KIND_ITEM, &st);
    lua_createtable(L, 0, 7);
    lua_pushinteger(L, s->ann_min_rows);
    lua_setfield(L, -2, "min_rows");
    lua_pushinteger(L, s->ann_probe);
    lua_setfield(L, -2, "probe");
    lua_pushinteger(L, st.lists);
    lua_setfield(L, -2, "lists");
    lua_pushinteger(L, st.indexed);
    lua_setfield(L, -2, "indexed");
    lua_pushinteger(L, st.trainings);
    lua_setfield(L, -2, "trainings");
    lua_pushboolean(L, st.training);
    lua_setfield(L, -2, "training");
    lua_pushinteger(L, st.probe_need);
    lua_setfield(L, -2, "probe_need");
    return 1;
}

/* Run a space scan and push results. q->skip must be set. */
static int scan_push(lua_State *L, ldb *d, rec_space *s, rec_kind kind,
                     const float *qv, qopts *q) {
    if (kind == REC_KIND_USER)
        settle(L, d, s->name, REC_IDX_NONE);
    rec_sandbox_charge(L, (uint64_t)s->m[kind].count * s->dim / FLOATS_PER_STEP);
    rec_hit *h = hits_alloc(L, q->k);
    int n = rec_space_topk_how(s, kind, qv, q->cosine, kind == REC_KIND_ITEM ?
                               q->skip : NULL, q->words, (size_t)q->k, &q->how, h);
    if (n < 0)
        return rec_lua_error(L, n, "top-k failed: %s", rec_strerror(n));
    push_hits(L, d, kind, h, (size_t)n);
    return 1;
}

/* db:similar(item [, k=10 [, opts]]) -> hits: items nearest to the item's
 * vector (cosine by default), the item itself left out.
 * opts: space, metric, exclude, filter, include_inactive   [-4, +1, e] */
static int db_similar(lua_State *L) {
    ldb *d = check_db(L);
    uint32_t idx = find_idx(L, d, REC_KIND_ITEM, 2, 1);
    qopts q;
    parse_qopts(L, lua_isnoneornil(L, 4) ? 0 : 4, &q, check_k(L, 3, 10), NULL);
    const char *sn = q.space ? q.space : default_space(d, REC_KIND_ITEM, idx);
    if (!sn)
        return rec_lua_error(L, REC_ENOTFOUND, "item has no vector in any space");
    rec_space *s = check_space(L, d, sn);
    const float *v = rec_space_get(s, REC_KIND_ITEM, idx);
    if (!v)
        return rec_lua_error(L, REC_ENOTFOUND, "item has no vector in space '%s'",
                             sn);
    build_skip(L, d, lua_isnoneornil(L, 4) ? 0 : 4, &q);
    skip_set(&q, idx);
    /* The row may move if a filter function writes vectors: copy it. */
    float *qv = lua_newuserdatauv(L, s->dim * sizeof(float), 0);
    memcpy(qv, rec_space_get(s, REC_KIND_ITEM, idx), s->dim * sizeof(float));
    return scan_push(L, d, s, REC_KIND_ITEM, qv, &q);
}

/* db:topk(space, vec [, k=10 [, opts]]) -> hits over items (or users with
 * opts.kind = "user") for an arbitrary query vector   [-5, +1, e] */
static int db_topk(lua_State *L) {
    ldb *d = check_db(L);
    rec_space *s = check_space(L, d, luaL_checkstring(L, 2));
    qopts q;
    int t = lua_isnoneornil(L, 5) ? 0 : 5;
    parse_qopts(L, t, &q, check_k(L, 4, 10), s->name);
    rec_kind kind = REC_KIND_ITEM;
    if (t) {
        const char *k = opt_field_str(L, t, "kind", "item");
        kind = strcmp(k, "user") == 0 ? REC_KIND_USER : REC_KIND_ITEM;
    }
    uint32_t dim;
    float *qv = check_vector(L, 3, &dim, s->name);
    if (dim != s->dim)
        return rec_lua_error(L, REC_EDIM, "space '%s' has dimension %u, query "
                             "has %u", s->name, s->dim, dim);
    build_skip(L, d, t, &q);
    return scan_push(L, d, s, kind, qv, &q);
}

/* Mark a user's consumed items in q->skip. */
static void skip_seen(ldb *d, uint32_t user, qopts *q) {
    uint32_t n;
    const rec_hentry *h = rec_graph_history(rec_engine_graph(d->e), user, &n);
    for (uint32_t i = 0; i < n; i++)
        skip_set(q, h[i].item);
}

/* db:recommend_vec(user [, k=10 [, opts]]) -> hits: items by the user's
 * vector (space "mf", dot product by default), seen items left out unless
 * opts.exclude_seen == false   [-4, +1, e] */
static int db_recommend_vec(lua_State *L) {
    ldb *d = check_db(L);
    uint32_t u = find_idx(L, d, REC_KIND_USER, 2, 1);
    qopts q;
    int t = lua_isnoneornil(L, 4) ? 0 : 4;
    parse_qopts(L, t, &q, check_k(L, 3, 10), "mf");
    if (!t || lua_getfield(L, t, "metric") == LUA_TNIL)
        q.cosine = 0;
    if (t)
        lua_pop(L, 1);
    rec_space *s = check_space(L, d, q.space);
    settle(L, d, s->name, u);
    const float *v = rec_space_get(s, REC_KIND_USER, u);
    if (!v) {
        lua_newtable(L);
        return 1;
    }
    build_skip(L, d, t, &q);
    if (q.exclude_seen)
        skip_seen(d, u, &q);
    float *qv = lua_newuserdatauv(L, s->dim * sizeof(float), 0);
    memcpy(qv, rec_space_get(s, REC_KIND_USER, u), s->dim * sizeof(float));
    return scan_push(L, d, s, REC_KIND_ITEM, qv, &q);
}

/* ---- event batches -------------------------------------------------------- */

/* A batch of events handed to a policy's on_events: a view of the
 * caller's array, valid during that call only (ev is NULL after, and any
 * use raises). Its uservalue caches the event tables built for it. */
typedef struct levents {
    rec_engine *e;
    const rec_replay_event *ev;
    size_t n;
    int logged;   /* the events as the log holds them, in its order (not
                     made by db:event_batch) */
} levents;

/* Which events of a batch a call takes: every one, or those of some
 * types, with weight > 0, with a value. */
typedef struct ev_filter {
    int positive;
    int valued;
    int typed;                              /* types[] applies */
    uint64_t types[(REC_MAX_TYPES + 63) / 64];
} ev_filter;

static void push_event(lua_State *L, rec_engine *e, const rec_replay_event *ev) {
    lua_createtable(L, 0, 10);
    size_t kl;
    const char *k = rec_engine_key(e, REC_KIND_USER, ev->user, &kl);
    rec_lua_push_id(L, k, kl);
    lua_setfield(L, -2, "user");
    k = rec_engine_key(e, REC_KIND_ITEM, ev->item, &kl);
    rec_lua_push_id(L, k, kl);
    lua_setfield(L, -2, "item");
    const char *tn = rec_engine_type_name(e, ev->type);
    lua_pushstring(L, tn ? tn : "?");
    lua_setfield(L, -2, "type");
    lua_pushnumber(L, ev->weight);
    lua_setfield(L, -2, "weight");
    lua_pushnumber(L, ev->ts);
    lua_setfield(L, -2, "ts");
    lua_pushinteger(L, (lua_Integer)ev->seq);
    lua_setfield(L, -2, "seq");
    if (ev->has_value) {
        lua_pushnumber(L, ev->value);
        lua_setfield(L, -2, "value");
    }
    if (ev->rlen) {
        lua_pushlstring(L, ev->rec_id, ev->rlen);
        lua_setfield(L, -2, "rec_id");
    }
    size_t used;
    if (ev->clen && rec_value_push_lua(L, ev->context, ev->clen, &used) == 0)
        lua_setfield(L, -2, "context");
}

static levents *check_events(lua_State *L, int idx) {
    levents *b = luaL_checkudata(L, idx, EVENTS_MT);
    if (!b->ev)
        rec_lua_error(L, REC_EINVAL, "an event batch is valid only during the on_events "
                      "call that received it");
    return b;
}

static int is_events(lua_State *L, int idx) {
    return luaL_testudata(L, idx, EVENTS_MT) != NULL;
}

void rec_lua_push_events(lua_State *L, rec_engine *e, const rec_replay_event *ev, size_t n) {
    levents *b = lua_newuserdatauv(L, sizeof *b, 1);
    b->e = e;
    b->ev = ev;
    b->n = n;
    b->logged = 1;
    luaL_setmetatable(L, EVENTS_MT);
    lua_createtable(L, n < INT_MAX ? (int)n : 0, 0);
    lua_setiuservalue(L, -2, 1);
}

void rec_lua_events_close(lua_State *L, int idx) {
    levents *b = luaL_checkudata(L, idx, EVENTS_MT);
    b->ev = NULL;
    b->n = 0;
}

void rec_lua_events_get(lua_State *L, int idx, size_t i) {
    levents *b = luaL_checkudata(L, idx, EVENTS_MT);
    if (!b->ev || i < 1 || i > b->n) {
        lua_pushnil(L);
        return;
    }
    lua_getiuservalue(L, idx, 1);
    if (lua_rawgeti(L, -1, (lua_Integer)i) == LUA_TNIL) {
        lua_pop(L, 1);
        push_event(L, b->e, &b->ev[i - 1]);
        lua_pushvalue(L, -1);
        lua_rawseti(L, -3, (lua_Integer)i);
    }
    lua_remove(L, -2);
}

/* batch[i] -> the i-th event as a table (nil past the end); batch:list
 * and the other methods by name.   [-2, +1, e] */
static int ev_index(lua_State *L) {
    if (lua_type(L, 2) == LUA_TNUMBER) {
        int isnum;
        lua_Integer i = lua_tointegerx(L, 2, &isnum);
        check_events(L, 1);
        if (!isnum || i < 1) {
            lua_pushnil(L);
            return 1;
        }
        rec_lua_events_get(L, 1, (size_t)i);
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    return 1;
}

/* #batch   [-1, +1, e] */
static int ev_len(lua_State *L) {
    levents *b = luaL_checkudata(L, 1, EVENTS_MT);
    lua_pushinteger(L, (lua_Integer)b->n);
    return 1;
}

static int ev_tostring(lua_State *L) {
    levents *b = luaL_checkudata(L, 1, EVENTS_MT);
    if (b->ev)
        lua_pushfstring(L, "recd.events (%d)", (int)b->n);
    else
        lua_pushliteral(L, "recd.events (closed)");
    return 1;
}

/* Read opts.types (an array of type names), opts.positive, opts.value
 * of the options table at t (0: none) into f. A type not known yet
 * matches no event of the batch. */
static void read_filter(lua_State *L, rec_engine *e, int t, int positive, ev_filter *f) {
    memset(f, 0, sizeof *f);
    f->positive = positive;
    if (!t)
        return;
    f->positive = opt_field_bool(L, t, "positive", positive);
    f->valued = opt_field_bool(L, t, "value", 0);
    if (lua_getfield(L, t, "types") != LUA_TNIL) {
        if (!lua_istable(L, -1))
            rec_lua_error(L, REC_EINVAL, "types must be an array of event type names");
        f->typed = 1;
        lua_Integer n = luaL_len(L, -1);
        for (lua_Integer i = 1; i <= n; i++) {
            if (lua_rawgeti(L, -1, i) != LUA_TSTRING)
                rec_lua_error(L, REC_EINVAL, "types[%d] must be a string", (int)i);
            size_t tl;
            const char *tn = lua_tolstring(L, -1, &tl);
            int id = rec_engine_type_find(e, tn, tl);
            if (id >= 0)
                f->types[id >> 6] |= 1ull << (id & 63);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

static int ev_pass(const ev_filter *f, const rec_replay_event *ev) {
    if (f->positive && !(ev->weight > 0.0f))
        return 0;
    if (f->valued && !ev->has_value)
        return 0;
    return !f->typed || (f->types[ev->type >> 6] >> (ev->type & 63) & 1);
}

/* The options table at idx, or 0 when absent. */
static int opt_table(lua_State *L, int idx) {
    if (lua_isnoneornil(L, idx))
        return 0;
    luaL_checktype(L, idx, LUA_TTABLE);
    return idx;
}

/* batch:list([opts]) -> {event, ...}: the events that pass the filter
 * (opts.types, opts.positive, opts.value), as tables, in order.
 * [-2, +1, e] */
static int ev_list(lua_State *L) {
    levents *b = check_events(L, 1);
    ev_filter f;
    read_filter(L, b->e, opt_table(L, 2), 0, &f);
    lua_settop(L, 1);
    lua_newtable(L);
    lua_Integer k = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (!ev_pass(&f, &b->ev[i]))
            continue;
        rec_lua_events_get(L, 1, i + 1);
        lua_rawseti(L, 2, ++k);
    }
    return 1;
}

static const luaL_Reg ev_methods[] = {
    {"list", ev_list},
    {NULL, NULL},
};


/* field f of the table at t as an id of kind k that must exist */
static uint32_t event_field_idx(lua_State *L, ldb *d, int t, const char *f, rec_kind k) {
    lua_getfield(L, t, f);
    uint32_t idx = find_idx(L, d, k, lua_gettop(L), 1);
    lua_pop(L, 1);
    return idx;
}

/* db:event_batch({event, ...}) -> batch: the batch a policy's on_events
 * gets, made from event tables (user and item that exist, type known to
 * the engine; weight defaults to the type's, ts to now, seq to 0; value
 * and rec_id kept; context is not carried): to feed policies by hand, in
 * the REPL or a test. It owns its events and stays valid.   [-2, +1, e] */
static int db_event_batch(lua_State *L) {
    ldb *d = check_db(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 2);
    if (n < 0 || n > 1 << 20)
        return rec_lua_error(L, REC_ETOOLARGE, "at most %d events per batch", 1 << 20);
    size_t bytes = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, 2, i) != LUA_TTABLE)
            return rec_lua_error(L, REC_EINVAL, "events[%d] must be a table", (int)i);
        size_t rl = 0;
        if (lua_getfield(L, -1, "rec_id") == LUA_TSTRING)
            lua_tolstring(L, -1, &rl);
        bytes += rl;
        lua_pop(L, 2);
    }
    rec_sandbox_charge(L, (uint64_t)n);
    size_t head = (sizeof(levents) + 7) & ~(size_t)7;
    levents *b = lua_newuserdatauv(L, head + (size_t)n * sizeof(rec_replay_event) + bytes, 1);
    rec_replay_event *ev = (rec_replay_event *)(void *)((char *)b + head);
    char *text = (char *)(ev + n);
    b->e = d->e;
    b->ev = NULL; /* valid once filled */
    b->n = 0;
    b->logged = 0;
    luaL_setmetatable(L, EVENTS_MT);
    lua_createtable(L, (int)n, 0);
    lua_setiuservalue(L, -2, 1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 2, i);
        int t = lua_gettop(L);
        rec_replay_event *x = &ev[i - 1];
        memset(x, 0, sizeof *x);
        x->user = event_field_idx(L, d, t, "user", REC_KIND_USER);
        x->item = event_field_idx(L, d, t, "item", REC_KIND_ITEM);
        lua_getfield(L, t, "type");
        size_t tl;
        const char *tn = luaL_optlstring(L, -1, NULL, &tl);
        int id = tn ? rec_engine_type_find(d->e, tn, tl) : -1;
        if (id < 0)
            return rec_lua_error(L, REC_EINVAL, "events[%d]: type must name a known event "
                                 "type", (int)i);
        x->type = (uint16_t)id;
        x->weight = (float)opt_field_num(L, t, "weight", rec_engine_type_weight(d->e, tn, tl));
        lua_pop(L, 1);
        x->ts = opt_field_num(L, t, "ts", rec_engine_now(d->e));
        x->seq = (uint64_t)opt_field_num(L, t, "seq", 0);
        if (!isfinite(x->ts) || !isfinite(x->weight))
            return rec_lua_error(L, REC_EINVAL, "events[%d]: weight and ts must be finite",
                                 (int)i);
        if (lua_getfield(L, t, "value") != LUA_TNIL) {
            x->value = luaL_checknumber(L, -1);
            x->has_value = 1;
        }
        lua_pop(L, 1);
        if (lua_getfield(L, t, "rec_id") == LUA_TSTRING) {
            const char *r = lua_tolstring(L, -1, &x->rlen);
            memcpy(text, r, x->rlen);
            x->rec_id = text;
            text += x->rlen;
        }
        lua_pop(L, 2);
    }
    b->ev = ev;
    b->n = (size_t)n;
    return 1;
}

/* db:counter_add(name, batch [, opts]) -> events added: each event of an
 * on_events batch that passes the filter (opts.types, opts.value; events
 * with weight > 0 unless opts.positive == false) adds its weight, or
 * opts.amount, at its item and its own time.   [-4, +1, e] */
static int counter_add_batch(lua_State *L, ldb *d, rec_counter *c) {
    levents *b = check_events(L, 3);
    int t = opt_table(L, 4);
    ev_filter f;
    read_filter(L, d->e, t, 1, &f);
    int fixed = 0;
    lua_Number amount = 0;
    if (t && lua_getfield(L, t, "amount") != LUA_TNIL) {
        amount = luaL_checknumber(L, -1);
        if (!isfinite(amount))
            return rec_lua_error(L, REC_EINVAL, "amount must be a finite number");
        fixed = 1;
    }
    if (rec_store_read_only(rec_engine_store(d->e)))
        return rec_lua_error(L, REC_EREADONLY, "the data folder is open read-only");
    rec_sandbox_charge(L, b->n);
    lua_Integer added = 0;
    for (size_t i = 0; i < b->n; i++) {
        const rec_replay_event *ev = &b->ev[i];
        if (i + 4 < b->n) /* a few events ahead, their rows load meanwhile */
            rec_counter_prefetch(c, ev[4].item);
        if (!ev_pass(&f, ev) || !rec_engine_alive(d->e, REC_KIND_ITEM, ev->item))
            continue;
        int rc = rec_counter_add(c, ev->item, fixed ? amount : (lua_Number)ev->weight, ev->ts);
        if (rc)
            return rec_lua_error(L, rc, "event %llu: weight and ts must be finite numbers",
                                 (unsigned long long)ev->seq);
        added++;
    }
    autocommit(L, d);
    lua_pushinteger(L, added);
    return 1;
}

/* The options of db:mf_update at t (0: none) into o, *space and *dim. */
static void read_mf_opts(lua_State *L, int t, rec_mf_opts *o, const char **space,
                         lua_Integer *dim) {
    rec_mf_opts_default(o);
    *space = "mf";
    *dim = 64;
    if (t) {
        *space = opt_field_str(L, t, "space", "mf");
        *dim = (lua_Integer)opt_field_num(L, t, "dim", 64);
        o->lr = (float)opt_field_num(L, t, "lr", o->lr);
        o->reg = (float)opt_field_num(L, t, "reg", o->reg);
        lua_Number ng = opt_field_num(L, t, "negatives", o->negatives);
        if (!(ng >= 0 && ng <= 64))
            rec_lua_error(L, REC_ERANGE, "negatives must be 0..64");
        o->negatives = (uint32_t)ng;
        if (!(o->lr > 0 && o->lr < 10) || !(o->reg >= 0 && o->reg < 10))
            rec_lua_error(L, REC_ERANGE, "lr must be in (0, 10), reg in [0, 10)");
    }
    if (*dim < 1 || *dim > REC_DIM_MAX)
        rec_lua_error(L, REC_ERANGE, "dim must be 1..%d", REC_DIM_MAX);
}

/* The space of db:mf_update, created with dim when missing. */
static rec_space *mf_space(lua_State *L, ldb *d, const char *name, lua_Integer dim) {
    rec_space *s = rec_engine_space(d->e, name);
    int rc = s ? 0 : rec_engine_space_ensure(d->e, name, (uint32_t)dim, &s);
    if (rc)
        engine_error(L, d->e, rc);
    return s;
}

/* db:mf_update(batch [, opts]) -> steps, loss: one BPR step per event of
 * an on_events batch with weight > 0 (and of opts.types), in order, each
 * at the event's weight, compressed when opts.weight is "log" (1 + ln w
 * above 1), or at what the function opts.weight(weight, type) returns (a
 * number; nil or <= 0 skips the event); then at most opts.max_weight.
 * Other opts as for one step.   [-3, +2, e] */
static int mf_update_batch(lua_State *L, ldb *d) {
    levents *b = check_events(L, 2);
    int t = opt_table(L, 3);
    ev_filter f;
    read_filter(L, d->e, t, 1, &f);
    rec_mf_opts o;
    const char *sn;
    lua_Integer dim;
    read_mf_opts(L, t, &o, &sn, &dim);
    int wfn = 0, wlog = 0;
    if (t && lua_getfield(L, t, "weight") != LUA_TNIL) {
        if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "log") == 0)
            wlog = 1;
        else if (!lua_isfunction(L, -1))
            return rec_lua_error(L, REC_EINVAL, "opts.weight must be \"log\" or a function, got %s",
                                 luaL_typename(L, -1));
        wfn = wlog ? 0 : lua_gettop(L);
    }
    lua_Number maxw = t ? opt_field_num(L, t, "max_weight", HUGE_VAL) : HUGE_VAL;
    if (!(maxw > 0))
        return rec_lua_error(L, REC_ERANGE, "max_weight must be a positive number");
    rec_space *s = mf_space(L, d, sn, dim);
    lua_Integer steps = 0;
    double total = 0;
    /* Stepped at once only while something reads the space; else owed,
     * and paid by the next read from the log (engine.h). A Lua weight
     * function, a value filter or a batch made by db:event_batch cannot
     * be owed: such a batch is stepped at once, after what was owed. */
    rec_mf_plan plan = {.mf = o, .log_weight = wlog, .max_weight = (float)maxw,
                        .typed = f.typed};
    memcpy(plan.types, f.types, sizeof plan.types);
    int lazy = !wfn && !f.valued && b->logged && b->ev && b->n > 0, now = 1;
    if (lazy) {
        int rc = rec_engine_mf_owe(d->e, sn, s->dim, &plan, b->ev, b->n, &now);
        if (rc)
            return engine_error(L, d->e, rc);
        if (!now) {
            rec_sandbox_charge(L, b->n);
            for (size_t i = 0; i < b->n; i++)
                steps += rec_mf_plan_weight(&plan, b->ev[i].type, b->ev[i].weight) > 0.0f &&
                         rec_engine_alive(d->e, REC_KIND_USER, b->ev[i].user) &&
                         rec_engine_alive(d->e, REC_KIND_ITEM, b->ev[i].item);
            lua_pushinteger(L, steps);
            lua_pushnumber(L, 0.0);
            return 2;
        }
    } else {
        int rc = rec_engine_mf_settle(d->e, sn);
        if (rc)
            return engine_error(L, d->e, rc);
    }
    rec_sandbox_charge(L, (uint64_t)b->n * (o.negatives + 2) * s->dim / FLOATS_PER_STEP);
    for (size_t i = 0; i < b->n && b->ev; i++) {
        const rec_replay_event *ev = &b->ev[i];
        if (i + 2 < b->n) { /* the rows of a step ahead load while this one runs */
            rec_space_prefetch(s, REC_KIND_USER, ev[2].user);
            rec_space_prefetch(s, REC_KIND_ITEM, ev[2].item);
        }
        if (!ev_pass(&f, ev))
            continue;
        float w = ev->weight;
        if (wfn) { /* script code: it may close the batch (b->ev) or raise */
            lua_pushvalue(L, wfn);
            lua_pushnumber(L, ev->weight);
            const char *tn = rec_engine_type_name(d->e, ev->type);
            lua_pushstring(L, tn ? tn : "?");
            lua_call(L, 2, 1);
            int isnum;
            lua_Number x = lua_tonumberx(L, -1, &isnum);
            lua_pop(L, 1);
            if (!b->ev)
                break;
            if (!isnum || !(x > 0))
                continue;
            if (!isfinite(x))
                return rec_lua_error(L, REC_EINVAL, "opts.weight returned a non-finite number");
            w = (float)x;
        }
        /* "log" (1 + ln w above 1: a purchase of 8 steps 3.1 times as far
         * as a view of 1, not 8), max_weight; <= 0: no step */
        if (!((w = rec_mf_plan_weight(&plan, ev->type, w)) > 0.0f))
            continue;
        if (!rec_engine_alive(d->e, REC_KIND_USER, ev->user) ||
            !rec_engine_alive(d->e, REC_KIND_ITEM, ev->item))
            continue;
        float loss = 0;
        int rc = rec_engine_mf_update(d->e, s, ev->user, ev->item, w, &o, &loss);
        if (rc)
            return engine_error(L, d->e, rc);
        total += (double)loss;
        steps++;
    }
    if (lazy)
        rec_engine_mf_stepped(d->e, sn, b->ev[b->n - 1].seq);
    autocommit(L, d);
    lua_pushinteger(L, steps);
    lua_pushnumber(L, total);
    return 2;
}

/* db:ials_fold_in(batch [, space="ials"]) -> true, or false when no model
 * was trained in this process for the space: the fold-ins owed for the
 * users of an on_events batch's events with weight > 0.   [-3, +1, e] */
static int ials_fold_in_batch(lua_State *L, ldb *d) {
    levents *b = check_events(L, 2);
    const char *sn = luaL_optstring(L, 3, "ials");
    rec_sandbox_charge(L, b->n);
    uint32_t *users = lua_newuserdatauv(L, (b->n ? b->n : 1) * sizeof *users, 0);
    size_t n = 0;
    for (size_t i = 0; i < b->n; i++)
        if (b->ev[i].weight > 0.0f && rec_engine_alive(d->e, REC_KIND_USER, b->ev[i].user))
            users[n++] = b->ev[i].user;
    int rc = n ? rec_learn_fold_in_later_n(d->e, sn, users, n) : 0;
    if (rc == REC_ENOTFOUND) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if (rc)
        return rec_lua_error(L, rc, "ials fold-in failed: %s", rec_strerror(rc));
    lua_pushboolean(L, 1);
    return 1;
}

/* db:mf_update(user, item [, weight=1 [, opts]]) -> loss: one online BPR
 * step; opts: space ("mf"), dim (64, used when the space is created), lr,
 * reg, negatives   [-5, +1, e] */
static int db_mf_update(lua_State *L) {
    ldb *d = check_db(L);
    if (is_events(L, 2))
        return mf_update_batch(L, d);
    uint32_t u = find_idx(L, d, REC_KIND_USER, 2, 1);
    uint32_t i = find_idx(L, d, REC_KIND_ITEM, 3, 1);
    lua_Number w = luaL_optnumber(L, 4, 1.0);
    rec_mf_opts o;
    const char *sn;
    lua_Integer dim;
    read_mf_opts(L, opt_table(L, 5), &o, &sn, &dim);
    rec_space *s = mf_space(L, d, sn, dim);
    float loss = 0;
    int rc = rec_engine_mf_update(d->e, s, u, i, (float)w, &o, &loss);
    if (rc)
        return engine_error(L, d->e, rc);
    autocommit(L, d);
    lua_pushnumber(L, (lua_Number)loss);
    return 1;
}

/* db:cooc(a, b) -> co-occurrence weight (0 when none)   [-3, +1, e] */
static int db_cooc(lua_State *L) {
    ldb *d = check_db(L);
    uint32_t a = find_idx(L, d, REC_KIND_ITEM, 2, 0);
    uint32_t b = find_idx(L, d, REC_KIND_ITEM, 3, 0);
    lua_Number w = 0;
    if (a != REC_IDX_NONE && b != REC_IDX_NONE)
        w = (lua_Number)rec_graph_cooc(rec_engine_graph(d->e), a, b);
    lua_pushnumber(L, w);
    return 1;
}

/* db:neighbors(item [, k=10 [, opts]]) -> hits by co-occurrence weight
 * opts: exclude, filter, include_inactive   [-4, +1, e] */
static int db_neighbors(lua_State *L) {
    ldb *d = check_db(L);
    uint32_t idx = find_idx(L, d, REC_KIND_ITEM, 2, 1);
    qopts q;
    int t = lua_isnoneornil(L, 4) ? 0 : 4;
    parse_qopts(L, t, &q, check_k(L, 3, 10), NULL);
    build_skip(L, d, t, &q);
    rec_hit *h = hits_alloc(L, q.k);
    size_t n = rec_graph_neighbors(rec_engine_graph(d->e), idx, q.skip,
                                   q.words, (size_t)q.k, h);
    push_hits(L, d, REC_KIND_ITEM, h, n);
    return 1;
}

/* The seeds of a walk from the table at index t: {user = id} (the items
 * of the user's newest `recent` positive events, weighted by them; *user
 * gets the user, and an unknown one raises when must) or a list of item
 * ids (weight 1 each; unknown ones left out). Returns the seed count.
 * [-0, +0, e] */
static size_t walk_seeds(lua_State *L, ldb *d, int t, int must, size_t recent,
                         uint32_t *seeds, float *sw, uint32_t *user) {
    size_t ns = 0;
    *user = REC_IDX_NONE;
    lua_getfield(L, t, "user");
    if (!lua_isnil(L, -1)) {
        uint32_t u = find_idx(L, d, REC_KIND_USER, -1, must);
        uint32_t n = 0;
        const rec_hentry *h =
            u == REC_IDX_NONE ? NULL : rec_graph_history(rec_engine_graph(d->e), u, &n);
        for (uint32_t i = n; i-- > 0 && ns < recent;) {
            if (h[i].weight > 0) {
                seeds[ns] = h[i].item;
                sw[ns++] = h[i].weight;
            }
        }
        *user = u;
    } else {
        lua_Unsigned n = lua_rawlen(L, t);
        for (lua_Unsigned i = 1; i <= n && ns < recent; i++) {
            lua_rawgeti(L, t, (lua_Integer)i);
            uint32_t it = find_idx(L, d, REC_KIND_ITEM, -1, 0);
            lua_pop(L, 1);
            if (it != REC_IDX_NONE) {
                seeds[ns] = it;
                sw[ns++] = 1.0f;
            }
        }
    }
    lua_pop(L, 1);
    return ns;
}

/* db:walk(seeds [, opts]) -> hits by visit count. seeds: {user = id} (the
 * user's recent positive items, seen items left out) or a list of item ids.
 * opts: k (10), steps (10000), restart (0.3), recent (20 seed items),
 * exclude, filter, include_inactive   [-3, +1, e] */
static int db_walk(lua_State *L) {
    ldb *d = check_db(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    int t = lua_isnoneornil(L, 3) ? 0 : 3;
    qopts q;
    lua_Integer k = 10, steps = 10000, recent = 20;
    lua_Number restart = 0.3;
    if (t) {
        luaL_checktype(L, t, LUA_TTABLE);
        k = (lua_Integer)opt_field_num(L, t, "k", 10);
        steps = (lua_Integer)opt_field_num(L, t, "steps", 10000);
        restart = opt_field_num(L, t, "restart", 0.3);
        recent = (lua_Integer)opt_field_num(L, t, "recent", 20);
    }
    if (k < 0 || k > MAX_K || steps < 0 || steps > 10000000 ||
        !(restart >= 0 && restart <= 1) || recent < 1 || recent > 10000)
        return rec_lua_error(L, REC_ERANGE, "walk options out of range "
                             "(k 0..%d, steps 0..1e7, restart 0..1, recent 1..10000)",
                             MAX_K);
    parse_qopts(L, t, &q, k, NULL);
    rec_sandbox_charge(L, (uint64_t)steps * 4); /* a random step misses the cache */
    build_skip(L, d, t, &q);
    uint32_t *seeds = lua_newuserdatauv(L, (size_t)recent * sizeof *seeds +
                                        (size_t)recent * sizeof(float), 0);
    float *sw = (float *)(seeds + recent);
    uint32_t u;
    size_t ns = walk_seeds(L, d, 2, 1, (size_t)recent, seeds, sw, &u);
    if (u != REC_IDX_NONE)
        skip_seen(d, u, &q);
    rec_hit *hits = hits_alloc(L, q.k);
    size_t n = rec_graph_walk(rec_engine_graph(d->e), seeds, sw, ns,
                              (uint32_t)steps, restart, rec_engine_serve_rng(d->e),
                              q.skip, q.words, (size_t)q.k, hits);
    push_hits(L, d, REC_KIND_ITEM, hits, n);
    return 1;
}

/* ---- counters ----------------------------------------------------------- */

static rec_counter *check_counter(lua_State *L, ldb *d, int idx) {
    const char *name = luaL_checkstring(L, idx);
    rec_counter *c = rec_engine_counter(d->e, name);
    if (!c)
        rec_lua_error(L, REC_ENOTFOUND, "unknown counter '%s' (create it with "
                      "db:counter(name, half_life))", name);
    return c;
}

/* db:counter(name [, half_life_seconds]) -> {name, half_life, size}: the
 * family over items, created when half_life is given   [-3, +1, e] */
static int db_counter(lua_State *L) {
    ldb *d = check_db(L);
    const char *name = luaL_checkstring(L, 2);
    rec_counter *c = rec_engine_counter(d->e, name);
    if (!lua_isnoneornil(L, 3)) {
        lua_Number hl = luaL_checknumber(L, 3);
        int rc = rec_engine_counter_ensure(d->e, name, hl, &c);
        if (rc)
            return engine_error(L, d->e, rc);
        autocommit(L, d);
    }
    if (!c) {
        lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, 0, 3);
    lua_pushstring(L, c->name);
    lua_setfield(L, -2, "name");
    lua_pushnumber(L, c->half_life);
    lua_setfield(L, -2, "half_life");
    lua_pushinteger(L, c->n);
    lua_setfield(L, -2, "size");
    return 1;
}

/* db:now() -> the engine's clock (event time; rec_engine_now)   [-1, +1, -] */
static int db_now(lua_State *L) {
    ldb *d = check_db(L);
    lua_pushnumber(L, rec_engine_now(d->e));
    return 1;
}

/* db:counter_add(name, item [, amount=1 [, ts=now]]) -> value   [-5, +1, e] */
static int db_counter_add(lua_State *L) {
    ldb *d = check_db(L);
    rec_counter *c = check_counter(L, d, 2);
    if (is_events(L, 3))
        return counter_add_batch(L, d, c);
    uint32_t idx = find_idx(L, d, REC_KIND_ITEM, 3, 1);
    lua_Number amount = luaL_optnumber(L, 4, 1.0);
    lua_Number ts = luaL_optnumber(L, 5, 0);
    if (ts == 0)
        ts = rec_engine_now(d->e);
    if (rec_store_read_only(rec_engine_store(d->e)))
        return rec_lua_error(L, REC_EREADONLY, "the data folder is open read-only");
    int rc = rec_counter_add(c, idx, amount, ts);
    if (rc)
        return rec_lua_error(L, rc, "amount and ts must be finite numbers");
    autocommit(L, d);
    lua_pushnumber(L, rec_counter_get(c, idx, ts));
    return 1;
}

/* db:counter_get(name, item [, ts=now]) -> value (0 when unknown)
 * [-4, +1, e] */
static int db_counter_get(lua_State *L) {
    ldb *d = check_db(L);
    rec_counter *c = check_counter(L, d, 2);
    uint32_t idx = find_idx(L, d, REC_KIND_ITEM, 3, 0);
    lua_Number ts = luaL_optnumber(L, 4, 0);
    if (ts == 0)
        ts = rec_engine_now(d->e);
    lua_pushnumber(L, idx == REC_IDX_NONE ? 0 : rec_counter_get(c, idx, ts));
    return 1;
}

/* db:shown(user) -> {[item] = weight, ...}: what the server's lists showed
 * the person since they last engaged with each item, each showing weighed
 * by its position (shown.h; request state, not logged; {} when nothing).
 * [-2, +1, e] */
static int db_shown(lua_State *L) {
    ldb *d = check_db(L);
    char key[REC_ID_MAX];
    size_t kl = check_id(L, 2, key, "user");
    uint32_t n;
    const rec_shown_entry *se = rec_shown_list(rec_engine_shown(d->e), key, kl, &n);
    lua_createtable(L, 0, (int)n);
    for (uint32_t i = 0; i < n; i++) {
        push_idx(L, d->e, REC_KIND_ITEM, se[i].item);
        if (lua_isnil(L, -1)) { /* deleted since */
            lua_pop(L, 1);
            continue;
        }
        lua_pushnumber(L, (lua_Number)se[i].weight);
        lua_rawset(L, -3);
    }
    return 1;
}

/* An entry of a list being re-ranked: its score, and where it was (ties
 * keep that order). */
typedef struct ranked {
    double score;
    lua_Integer at;
} ranked;

static int ranked_cmp(const void *pa, const void *pb) {
    const ranked *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return a->at < b->at ? -1 : a->at > b->at;
}

static uint32_t item_or_none(lua_State *L, ldb *d, int idx);

/* db:discount_shown(user, items [, factor=0.5]) -> items: the list's items
 * (tables with an id and a score) that lists showed the person without
 * engagement (db:shown) get their score multiplied by factor^weight
 * (divided, for a negative score) and `fatigue` = weight, and the list is
 * re-ranked by score (ties keep their order; entries without a number
 * score count 0). Returns the same table when nothing was discounted,
 * else a new array. O(#items log #items) in C.   [-4, +1, e] */
static int db_discount_shown(lua_State *L) {
    ldb *d = check_db(L);
    char key[REC_ID_MAX];
    size_t kl = check_id(L, 2, key, "user");
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_Number f = luaL_optnumber(L, 4, 0.5);
    if (!(f > 0 && f <= 1))
        return rec_lua_error(L, REC_EINVAL, "factor must be in (0, 1]");
    lua_settop(L, 3);
    uint32_t sn;
    const rec_shown_entry *se = rec_shown_list(rec_engine_shown(d->e), key, kl, &sn);
    size_t n = lua_rawlen(L, 3);
    if (!sn || !n)
        return 1;
    rec_sandbox_charge(L, (uint64_t)n * 4 + sn);
    /* the shown items in a small open-addressed table: 2^bits >= 2 sn */
    unsigned bits = 4;
    while ((1u << bits) < 2 * sn)
        bits++;
    uint32_t *slot = lua_newuserdatauv(L, ((size_t)1 << bits) * sizeof *slot, 0); /* 4 */
    memset(slot, 0xff, ((size_t)1 << bits) * sizeof *slot);
    uint32_t mask = (1u << bits) - 1;
    for (uint32_t i = 0; i < sn; i++) {
        uint32_t p = (se[i].item * 0x9E3779B1u) >> (32 - bits);
        while (slot[p] != UINT32_MAX)
            p = (p + 1) & mask;
        slot[p] = i;
    }
    ranked *ds = lua_newuserdatauv(L, n * sizeof *ds, 0); /* 5 */
    int moved = 0;
    for (size_t i = 0; i < n; i++) {
        ds[i] = (ranked){.score = 0, .at = (lua_Integer)i + 1};
        if (lua_rawgeti(L, 3, (lua_Integer)i + 1) != LUA_TTABLE) {
            lua_pop(L, 1);
            continue;
        }
        lua_getfield(L, -1, "score");
        ds[i].score = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : 0.0;
        lua_getfield(L, -2, "id");
        uint32_t idx = item_or_none(L, d, -1);
        lua_pop(L, 2);
        if (idx != REC_IDX_NONE) {
            uint32_t p = (idx * 0x9E3779B1u) >> (32 - bits);
            while (slot[p] != UINT32_MAX && se[slot[p]].item != idx)
                p = (p + 1) & mask;
            double w = slot[p] == UINT32_MAX ? 0.0 : (double)se[slot[p]].weight;
            if (w > 0) {
                double g = pow(f, w);
                ds[i].score = ds[i].score >= 0 ? ds[i].score * g : ds[i].score / g;
                lua_pushnumber(L, ds[i].score);
                lua_setfield(L, -2, "score");
                lua_pushnumber(L, w);
                lua_setfield(L, -2, "fatigue");
                moved = 1;
            }
        }
        lua_pop(L, 1);
    }
    if (!moved) {
        lua_settop(L, 3);
        return 1;
    }
    qsort(ds, n, sizeof *ds, ranked_cmp);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 3, ds[i].at);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* The item the value at idx names, or REC_IDX_NONE for a value that is
 * not an id or an id the engine does not know (no error raised). */
static uint32_t item_or_none(lua_State *L, ldb *d, int idx) {
    rec_field f;
    lua_input(L, idx, &f);
    char key[REC_ID_MAX], err[128];
    int kl = rec_input_id(&f, "id", key, err, sizeof err);
    return kl < 0 ? REC_IDX_NONE : rec_engine_lookup(d->e, REC_KIND_ITEM, key, (size_t)kl);
}

/* db:click_predict(req, items) -> items, each given p_click, click_sd
 * and (with a conversion model) p_conversion: the click model's P(click)
 * at position 0, the uncertainty of its logit, and P(conversion | click)
 * (click.h). req is the request a policy gets (user, context, now);
 * items carry id, score and strategy as a policy gets them. Items
 * unknown to the engine get no fields. O(#items x features).
 * [-0, +0, e] */
/* The click model in force, or raise.   [-0, +0, e] */
static rec_click *check_click(lua_State *L, ldb *d) {
    rec_click *m = rec_engine_click(d->e);
    if (!rec_click_active(m))
        rec_lua_error(L, REC_ENOTFOUND, "no click model: no loaded policy declares one "
                      "(a policy's model = {...})");
    return m;
}

/* The request at index r as the click model asks it: the user's id into
 * key, now, and the context packed into ctx (the caller frees it).
 * [-0, +0, e] */
static void click_ask(lua_State *L, ldb *d, int r, char *key, rec_buf *ctx, rec_click_ask *a) {
    lua_getfield(L, r, "user");
    size_t kl = check_id(L, -1, key, "req.user");
    lua_pop(L, 1);
    lua_getfield(L, r, "now");
    double now = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : rec_engine_now(d->e);
    lua_pop(L, 1);
    if (lua_getfield(L, r, "context") == LUA_TTABLE)
        pack_value(L, -1, ctx, "req.context");
    lua_pop(L, 1);
    *a = (rec_click_ask){.ukey = key, .ulen = kl, .context = ctx->len ? ctx->data : NULL,
                         .clen = ctx->len, .now = now};
}

/* The known items of the list at index t (tables with an id, a score and
 * a strategy) as candidates into c; at[j] gets candidate j's position in
 * the list (1-based). Returns the count.   [-0, +0, e] */
static size_t click_cands(lua_State *L, ldb *d, int t, size_t n, rec_click_cand *c,
                          lua_Integer *at) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (lua_rawgeti(L, t, (lua_Integer)i + 1) != LUA_TTABLE) {
            lua_pop(L, 1);
            continue;
        }
        lua_getfield(L, -1, "id");
        uint32_t idx = item_or_none(L, d, -1);
        lua_getfield(L, -2, "score");
        double sc = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : 0.0;
        lua_getfield(L, -3, "strategy");
        const char *st = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        lua_pop(L, 4); /* the strategy string stays referenced by its item */
        if (idx == REC_IDX_NONE)
            continue;
        c[m] = (rec_click_cand){.item = idx, .position = 0, .strategy = st, .score = sc};
        at[m++] = (lua_Integer)i + 1;
    }
    return m;
}

/* Set p_click, click_sd and (when not NaN) p_conversion on the table at
 * the top of the stack.   [-0, +0, m] */
static void click_fields(lua_State *L, double pc, double sd, double pv) {
    lua_pushnumber(L, pc);
    lua_setfield(L, -2, "p_click");
    lua_pushnumber(L, sd);
    lua_setfield(L, -2, "click_sd");
    if (!isnan(pv)) {
        lua_pushnumber(L, pv);
        lua_setfield(L, -2, "p_conversion");
    }
}

static lua_Integer click_examples(const rec_click *m) {
    rec_click_info ci;
    rec_click_info_get(m, &ci);
    return (lua_Integer)ci.click.examples;
}

static int db_click_predict(lua_State *L) {
    ldb *d = check_db(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    rec_click *m = check_click(L, d);
    char key[REC_ID_MAX];
    size_t n = lua_rawlen(L, 3);
    rec_sandbox_charge(L, (uint64_t)n * 8);
    /* scratch the collector owns: a raised error leaks nothing */
    size_t bytes = n * (sizeof(rec_click_cand) + 3 * sizeof(double) + sizeof(lua_Integer));
    char *mem = lua_newuserdatauv(L, bytes ? bytes : 1, 0); /* 4 */
    rec_click_cand *c = (rec_click_cand *)mem;
    double *pc = (double *)(c + n), *pv = pc + n, *sd = pv + n;
    lua_Integer *at = (lua_Integer *)(sd + n);
    size_t m_n = click_cands(L, d, 3, n, c, at);
    rec_buf ctx = REC_BUF_INIT;
    rec_click_ask a;
    click_ask(L, d, 2, key, &ctx, &a);
    int rc = rec_click_predict(m, d->e, &a, c, m_n, pc, pv, sd);
    rec_buf_free(&ctx);
    if (rc)
        rec_lua_error(L, rc, "click model: %s", rec_strerror(rc));
    for (size_t i = 0; i < m_n; i++) {
        lua_rawgeti(L, 3, at[i]);
        click_fields(L, pc[i], sd[i], pv[i]);
        lua_pop(L, 1);
    }
    lua_settop(L, 3);
    lua_pushinteger(L, click_examples(m));
    return 2;
}

/* A standard normal draw (Box-Muller) from the request generator. */
static double rng_gauss(rec_rng *r) {
    double u = rec_rng_unit(r);
    if (u < 1e-300)
        u = 1e-300;
    return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * rec_rng_unit(r));
}

/* db:click_rank(req, items [, opts]) -> ranked, learned: the list ranked
 * by expected value under the click model, in C. Each candidate's score
 * becomes
 *     draw(P(click)) x (1 + conversion_weight x P(conversion | click) x rel)
 * with draw Thompson sampling on the click logit (the logit plus explore
 * standard deviations of its uncertainty times a normal draw from the
 * request generator; explore 0: the prediction) and rel what a
 * conversion of the item is worth against the mean (opts.value: {sum =
 * counter, count = counter, mean = the mean of all, prior = 5}: (sum +
 * prior x mean) / (count + prior) / mean; without it, 1). The list's items
 * (tables with an id, as a policy gets them) get score, p_click, click_sd
 * and p_conversion; opts.sample items drawn from the catalogue (not in
 * the list, not in the user's history, not in req.exclude) join with
 * score 0 before the ranking. The answer holds the best opts.keep (all)
 * in a new array, best first (ties: list order, the drawn ones last);
 * items unknown to the engine go last in list order. learned: the model's
 * examples so far.   [-3, +2, e] */
static int db_click_rank(lua_State *L) {
    ldb *d = check_db(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    int t = lua_isnoneornil(L, 4) ? 0 : 4;
    if (t)
        luaL_checktype(L, t, LUA_TTABLE);
    lua_settop(L, 4);
    rec_click *m = check_click(L, d);
    lua_Number explore = t ? opt_field_num(L, t, "explore", 0) : 0;
    lua_Number cw = t ? opt_field_num(L, t, "conversion_weight", 1) : 1;
    lua_Integer sample = t ? (lua_Integer)opt_field_num(L, t, "sample", 0) : 0;
    lua_Integer keep = t ? (lua_Integer)opt_field_num(L, t, "keep", (lua_Number)MAX_K) : MAX_K;
    if (!(explore >= 0 && explore <= 100) || !(cw >= 0 && cw <= 1e6))
        return rec_lua_error(L, REC_EINVAL, "explore must be in [0, 100], conversion_weight "
                             "in [0, 1e6]");
    if (sample < 0 || sample > 10000 || keep < 0 || keep > MAX_K)
        return rec_lua_error(L, REC_ERANGE, "sample must be 0..10000, keep 0..%d", MAX_K);
    rec_counter *vsum = NULL, *vcnt = NULL;
    double vmean = 0, vprior = 5;
    if (t && lua_getfield(L, t, "value") != LUA_TNIL) {
        if (!lua_istable(L, -1))
            return rec_lua_error(L, REC_EINVAL, "value must be {sum =, count =, mean =, prior =}");
        int v = lua_gettop(L);
        vmean = opt_field_num(L, v, "mean", 0);
        vprior = opt_field_num(L, v, "prior", 5);
        if (!(vprior >= 0 && vprior < 1e12) || !(vmean >= 0 && vmean < 1e300))
            return rec_lua_error(L, REC_EINVAL, "value: prior and mean must be numbers >= 0");
        if (vmean > 0) {
            vsum = check_counter(L, d, (lua_getfield(L, v, "sum"), -1));
            vcnt = check_counter(L, d, (lua_getfield(L, v, "count"), -1));
            lua_pop(L, 2);
        }
    }
    lua_settop(L, 4);
    size_t n = lua_rawlen(L, 3);
    size_t cap = n + (size_t)sample;
    rec_sandbox_charge(L, (uint64_t)cap * 8);
    size_t bytes = cap * (sizeof(rec_click_cand) + 3 * sizeof(double) + sizeof(lua_Integer) +
                          sizeof(ranked));
    char *mem = lua_newuserdatauv(L, bytes ? bytes : 1, 0); /* 5 */
    rec_click_cand *c = (rec_click_cand *)mem;
    double *pc = (double *)(c + cap), *pv = pc + cap, *sd = pv + cap;
    lua_Integer *at = (lua_Integer *)(sd + cap);
    ranked *rk = (ranked *)(at + cap);
    size_t mn = click_cands(L, d, 3, n, c, at);
    size_t listed = mn;
    if (sample > 0) {
        /* the draws: outside the user's history, req.exclude and the list */
        lua_createtable(L, 0, 2); /* 6 */
        lua_getfield(L, 2, "user");
        lua_setfield(L, -2, "seen_by");
        lua_getfield(L, 2, "exclude");
        lua_setfield(L, -2, "exclude");
        qopts q;
        parse_qopts(L, 0, &q, sample, NULL);
        build_skip(L, d, 6, &q); /* 7 */
        for (size_t j = 0; j < mn; j++)
            skip_set(&q, c[j].item);
        uint32_t bound = rec_engine_bound(d->e, REC_KIND_ITEM);
        rec_rng *rng = rec_engine_serve_rng(d->e);
        for (lua_Integer tries = 0, got = 0; bound && got < sample && tries < 8 * sample + 64;
             tries++) {
            uint32_t i = rec_rng_below(rng, bound);
            if (q.skip[i >> 6] >> (i & 63) & 1)
                continue;
            skip_set(&q, i);
            c[mn] = (rec_click_cand){.item = i, .position = 0, .strategy = NULL, .score = 0};
            at[mn++] = 0;
            got++;
        }
        lua_settop(L, 5);
    }
    char key[REC_ID_MAX];
    rec_buf ctx = REC_BUF_INIT;
    rec_click_ask a;
    click_ask(L, d, 2, key, &ctx, &a);
    int rc = rec_click_predict(m, d->e, &a, c, mn, pc, pv, sd);
    rec_buf_free(&ctx);
    if (rc)
        rec_lua_error(L, rc, "click model: %s", rec_strerror(rc));
    rec_rng *rng = rec_engine_serve_rng(d->e);
    for (size_t j = 0; j < mn; j++) {
        double p = pc[j] < 1e-9 ? 1e-9 : pc[j] > 1 - 1e-9 ? 1 - 1e-9 : pc[j];
        double draw = p;
        if (explore > 0) {
            double z = log(p / (1 - p)) + explore * sd[j] * rng_gauss(rng);
            draw = 1.0 / (1.0 + exp(-z));
        }
        double rel = 1.0;
        if (vsum) {
            double vs = rec_counter_get(vsum, c[j].item, a.now);
            double vc = rec_counter_get(vcnt, c[j].item, a.now);
            rel = (vs + vprior * vmean) / (vc + vprior) / vmean;
        }
        double cv = isnan(pv[j]) ? 0.0 : pv[j];
        rk[j] = (ranked){.score = draw * (1.0 + cw * cv * rel), .at = (lua_Integer)j};
    }
    qsort(rk, mn, sizeof *rk, ranked_cmp);
    /* unknown items (not candidates) follow in list order */
    size_t out = mn + (n - listed);
    if (out > (size_t)keep)
        out = (size_t)keep;
    rec_sandbox_charge(L, (uint64_t)out * 4);
    lua_createtable(L, (int)out, 0); /* 6 */
    size_t w = 0;
    for (size_t r = 0; r < mn && w < out; r++) {
        size_t j = (size_t)rk[r].at;
        if (at[j]) {
            lua_rawgeti(L, 3, at[j]);
        } else {
            lua_createtable(L, 0, 5);
            push_idx(L, d->e, REC_KIND_ITEM, c[j].item);
            lua_setfield(L, -2, "id");
        }
        lua_pushnumber(L, rk[r].score);
        lua_setfield(L, -2, "score");
        click_fields(L, pc[j], sd[j], pv[j]);
        lua_rawseti(L, 6, (lua_Integer)++w);
    }
    if (w < out) {
        /* the list's entries that are not candidates, in order */
        size_t j = 0;
        for (size_t i = 1; i <= n && w < out; i++) {
            while (j < listed && at[j] < (lua_Integer)i)
                j++;
            if (j < listed && at[j] == (lua_Integer)i)
                continue;
            lua_rawgeti(L, 3, (lua_Integer)i);
            lua_rawseti(L, 6, (lua_Integer)++w);
        }
    }
    lua_pushinteger(L, click_examples(m));
    return 2;
}

/* Push the click model's state (rec_click_info) as a table. */
void rec_lua_push_click_info(lua_State *L, const rec_click *m) {
    rec_click_info ci;
    rec_click_info_get(m, &ci);
    lua_createtable(L, 0, 12);
    lua_pushboolean(L, ci.active);
    lua_setfield(L, -2, "active");
    static const char *const names[] = {"served", "pending", "clicks", "conversions",
                                        "negatives", "late", "unmatched"};
    uint64_t vals[] = {ci.served, ci.pending, ci.clicks, ci.conversions, ci.negatives,
                       ci.late, ci.unmatched};
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
        lua_pushinteger(L, (lua_Integer)vals[i]);
        lua_setfield(L, -2, names[i]);
    }
    lua_pushinteger(L, (lua_Integer)ci.click.examples);
    lua_setfield(L, -2, "examples");
    lua_pushnumber(L, ci.click.logloss);
    lua_setfield(L, -2, "logloss");
    lua_pushinteger(L, (lua_Integer)ci.conv.examples);
    lua_setfield(L, -2, "conversion_examples");
    lua_pushnumber(L, ci.conv.logloss);
    lua_setfield(L, -2, "conversion_logloss");
}

/* db:click_model(spec | nil) -> true: put a click model in force (the
 * table a policy declares as `model`), or none. A server follows its
 * policies' declaration; this is for the Lua module and the REPL.
 * [-1, +1, e] */
static int db_click_model(lua_State *L) {
    ldb *d = check_db(L);
    rec_click *m = rec_engine_click(d->e);
    int rc;
    if (lua_isnoneornil(L, 2)) {
        rc = rec_click_set(m, NULL);
    } else {
        rec_click_spec sp;
        char err[256];
        if (rec_click_spec_read(L, 2, &sp, err, sizeof err))
            return rec_lua_error(L, REC_EINVAL, "%s", err);
        rc = rec_click_set(m, &sp);
    }
    if (rc)
        return rec_lua_error(L, rc, "click_model: %s", rec_strerror(rc));
    lua_pushboolean(L, 1);
    return 1;
}

/* db:click_info() -> the click model's state: active, served (lists
 * logged), pending (lists waiting for outcomes), clicks, conversions,
 * negatives (learned), late (outcomes after the window), unmatched,
 * examples, logloss (progressive), conversion_examples,
 * conversion_logloss.   [-0, +1, m] */
static int db_click_info(lua_State *L) {
    ldb *d = check_db(L);
    rec_lua_push_click_info(L, rec_engine_click(d->e));
    return 1;
}

/* db:mark_shown(user, items [, ts]) -> true: record a list shown to the
 * user, items[1] at the top (ids, or tables with id), as the server does
 * for every list it serves: what db:shown and shown_by read. For lists a
 * script serves itself, and for trying policies in the REPL. Unknown ids
 * are skipped; at most 100 items. O(#items x entries).   [-0, +1, e] */
static int db_mark_shown(lua_State *L) {
    ldb *d = check_db(L);
    char key[REC_ID_MAX];
    size_t kl = check_id(L, 2, key, "user");
    luaL_checktype(L, 3, LUA_TTABLE);
    double ts = luaL_optnumber(L, 4, rec_engine_now(d->e));
    uint32_t idx[100];
    size_t n = 0, len = lua_rawlen(L, 3);
    for (size_t i = 0; i < len && n < 100; i++) {
        if (lua_rawgeti(L, 3, (lua_Integer)i + 1) == LUA_TTABLE) {
            lua_getfield(L, -1, "id");
            lua_remove(L, -2);
        }
        uint32_t x = item_or_none(L, d, -1);
        lua_pop(L, 1);
        if (x != REC_IDX_NONE)
            idx[n++] = x;
    }
    int rc = rec_shown_add(rec_engine_shown(d->e), key, kl, idx, n, ts);
    if (rc)
        return rec_lua_error(L, rc, "mark_shown: %s", rec_strerror(rc));
    lua_pushboolean(L, 1);
    return 1;
}

/* db:sample([k=10 [, opts]]) -> up to k distinct items drawn at random
 * from the catalogue (score 0), leaving out what the query options leave
 * out (exclude, seen_by, filter, inactive items): where a list with no
 * evidence yet can start. Draws from the engine's request generator; a
 * catalogue mostly left out gives fewer. O(k) draws, at most 8k + 64.
 * [-3, +1, e] */
static int db_sample(lua_State *L) {
    ldb *d = check_db(L);
    qopts q;
    int t = lua_isnoneornil(L, 3) ? 0 : 3;
    parse_qopts(L, t, &q, check_k(L, 2, 10), NULL);
    build_skip(L, d, t, &q);
    uint32_t bound = rec_engine_bound(d->e, REC_KIND_ITEM);
    rec_hit *h = hits_alloc(L, q.k);
    size_t n = 0;
    rec_rng *rng = rec_engine_serve_rng(d->e);
    for (lua_Integer tries = 0; bound && (lua_Integer)n < q.k && tries < 8 * q.k + 64; tries++) {
        uint32_t i = rec_rng_below(rng, bound);
        if (q.skip[i >> 6] >> (i & 63) & 1)
            continue;
        skip_set(&q, i); /* distinct */
        h[n++] = (rec_hit){.idx = i, .score = 0.0f};
    }
    rec_sandbox_charge(L, (uint64_t)n);
    push_hits(L, d, REC_KIND_ITEM, h, n);
    return 1;
}

/* db:counter_top(name [, k=10 [, opts]]) -> hits by decayed value
 * opts: ts, exclude, filter, include_inactive   [-4, +1, e] */
static int db_counter_top(lua_State *L) {
    ldb *d = check_db(L);
    rec_counter *c = check_counter(L, d, 2);
    qopts q;
    int t = lua_isnoneornil(L, 4) ? 0 : 4;
    parse_qopts(L, t, &q, check_k(L, 3, 10), NULL);
    lua_Number ts = t ? opt_field_num(L, t, "ts", 0) : 0;
    if (ts == 0)
        ts = rec_engine_now(d->e);
    build_skip(L, d, t, &q);
    rec_sandbox_charge(L, c->n / 4);
    rec_hit *h = hits_alloc(L, q.k);
    size_t n = rec_counter_topk(c, ts, q.skip, q.words, (size_t)q.k, h);
    push_hits(L, d, REC_KIND_ITEM, h, n);
    return 1;
}

/* ---- blend ---------------------------------------------------------------- */

/* What db:blend's sources can be. */
enum { SRC_NEIGHBORS, SRC_SIMILAR, SRC_TOPK, SRC_TASTE, SRC_VEC, SRC_EASE, SRC_WALK,
       SRC_COUNTER, SRC_SAMPLE };
static const char *const src_kinds[] = {"neighbors", "similar", "topk", "taste", "vec",
                                        "ease", "walk", "counter", "sample", NULL};

/* Source i's kind, at index t: its [1] or its `kind`.   [-0, +0, e] */
static int src_kind(lua_State *L, int t, lua_Integer i) {
    if (lua_rawgeti(L, t, 1) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_getfield(L, t, "kind");
    }
    const char *k = lua_tostring(L, -1);
    int found = -1;
    for (int j = 0; k && src_kinds[j]; j++)
        if (strcmp(k, src_kinds[j]) == 0)
            found = j;
    lua_pop(L, 1);
    if (found < 0)
        rec_lua_error(L, REC_EINVAL, "sources[%d]: kind must be one of neighbors, similar, "
                      "topk, taste, vec, ease, walk, counter, sample", (int)i);
    return found;
}

/* A scan of space s for query qv into h; a space scan charges its rows. */
static size_t src_scan(lua_State *L, ldb *d, rec_space *s, const float *qv, int cosine,
                       qopts *q, size_t k, rec_hit *h) {
    rec_sandbox_charge(L, (uint64_t)s->m[REC_KIND_ITEM].count * s->dim / FLOATS_PER_STEP);
    int n = rec_space_topk_how(s, REC_KIND_ITEM, qv, cosine, q->skip, q->words, k, &q->how, h);
    if (n < 0)
        rec_lua_error(L, n, "top-k failed: %s", rec_strerror(n));
    return (size_t)n;
}

static int src_cosine(lua_State *L, int t, int def) {
    const char *m = opt_field_str(L, t, "metric", def ? "cosine" : "dot");
    if (strcmp(m, "cosine") != 0 && strcmp(m, "dot") != 0)
        rec_lua_error(L, REC_EINVAL, "metric must be \"cosine\" or \"dot\"");
    return strcmp(m, "cosine") == 0;
}

/* Run the source at index t (kind `kind`) into h (room for k): its hits,
 * best first. q holds the blend's skip map; a source that cannot answer
 * (an unknown item or user, no vector, no model yet) gives none.
 * Leaves the stack as it found it.   [-0, +0, e] */
static size_t src_run(lua_State *L, ldb *d, int t, int kind, qopts *q, size_t k, rec_hit *h) {
    int top = lua_gettop(L);
    size_t n = 0;
    rec_graph *g = rec_engine_graph(d->e);
    switch (kind) {
    case SRC_NEIGHBORS: {
        lua_getfield(L, t, "item");
        uint32_t it = find_idx(L, d, REC_KIND_ITEM, -1, 0);
        if (it != REC_IDX_NONE)
            n = rec_graph_neighbors(g, it, q->skip, q->words, k, h);
        break;
    }
    case SRC_SIMILAR: {
        lua_getfield(L, t, "item");
        uint32_t it = find_idx(L, d, REC_KIND_ITEM, -1, 0);
        rec_space *s = check_space(L, d, opt_field_str(L, t, "space", "content"));
        const float *v = it == REC_IDX_NONE ? NULL : rec_space_get(s, REC_KIND_ITEM, it);
        if (v) {
            /* the item itself is left out of this source only */
            uint64_t bit = 1ull << (it & 63), was = q->skip[it >> 6] & bit;
            q->skip[it >> 6] |= bit;
            n = src_scan(L, d, s, v, src_cosine(L, t, 1), q, k, h);
            q->skip[it >> 6] = (q->skip[it >> 6] & ~bit) | was;
        }
        break;
    }
    case SRC_TOPK: {
        rec_space *s = check_space(L, d, opt_field_str(L, t, "space", "content"));
        lua_getfield(L, t, "vector");
        uint32_t dim;
        float *qv = check_vector(L, -1, &dim, s->name);
        if (dim != s->dim)
            rec_lua_error(L, REC_EDIM, "space '%s' has dimension %u, query has %u", s->name,
                          s->dim, dim);
        n = src_scan(L, d, s, qv, src_cosine(L, t, 1), q, k, h);
        break;
    }
    case SRC_TASTE: {
        lua_getfield(L, t, "user");
        uint32_t u = find_idx(L, d, REC_KIND_USER, -1, 0);
        rec_space *s = check_space(L, d, opt_field_str(L, t, "space", "content"));
        lua_Integer recent = (lua_Integer)opt_field_num(L, t, "recent", 20);
        lua_Number decay = opt_field_num(L, t, "decay", 1.0);
        lua_Integer events = (lua_Integer)opt_field_num(L, t, "events", 0);
        if (recent < 1 || recent > 10000 || !(decay > 0 && decay <= 1) || events < 0)
            rec_lua_error(L, REC_ERANGE, "taste: recent must be 1..10000, decay in (0, 1], "
                          "events >= 0");
        float *qv = lua_newuserdatauv(L, s->dim * sizeof(float), 0);
        lua_Integer used = taste_query(d, u, s, recent, decay, events, qv);
        rec_sandbox_charge(L, (uint64_t)used * s->dim);
        if (rec_vec_norm2(qv, s->dim) > 0)
            n = src_scan(L, d, s, qv, 1, q, k, h);
        break;
    }
    case SRC_VEC: {
        lua_getfield(L, t, "user");
        uint32_t u = find_idx(L, d, REC_KIND_USER, -1, 0);
        rec_space *s = check_space(L, d, opt_field_str(L, t, "space", "mf"));
        if (u != REC_IDX_NONE)
            settle(L, d, s->name, u); /* a fold-in owed is paid first */
        const float *v = u == REC_IDX_NONE ? NULL : rec_space_get(s, REC_KIND_USER, u);
        if (v)
            n = src_scan(L, d, s, v, src_cosine(L, t, 0), q, k, h);
        break;
    }
    case SRC_EASE: {
        lua_getfield(L, t, "user");
        uint32_t u = find_idx(L, d, REC_KIND_USER, -1, 0);
        const char *name = opt_field_str(L, t, "name", "ease");
        lua_Number recent = opt_field_num(L, t, "recent", 0);
        lua_Number decay = opt_field_num(L, t, "decay", 1.0);
        if (recent < 0 || recent > 1e6 || !(decay > 0) || decay > 1)
            rec_lua_error(L, REC_EINVAL, "ease: recent must be 0..1e6, decay in (0, 1]");
        uint32_t hn = 0;
        if (u != REC_IDX_NONE)
            rec_graph_history(g, u, &hn);
        rec_sandbox_charge(L, (uint64_t)rec_engine_bound(d->e, REC_KIND_ITEM) *
                                  (recent > 0 && recent < hn ? (uint64_t)recent : hn) /
                                  FLOATS_PER_STEP);
        int r = rec_learn_ease_topk_recent(d->e, name, u, (uint32_t)recent, (float)decay,
                                           q->skip, q->words, k, h);
        if (r < 0 && r != REC_ENOTFOUND)
            rec_lua_error(L, r, "ease: %s", rec_strerror(r));
        n = r < 0 ? 0 : (size_t)r;
        break;
    }
    case SRC_WALK: {
        lua_Integer steps = (lua_Integer)opt_field_num(L, t, "steps", 10000);
        lua_Number restart = opt_field_num(L, t, "restart", 0.3);
        lua_Integer recent = (lua_Integer)opt_field_num(L, t, "recent", 20);
        if (steps < 0 || steps > 10000000 || !(restart >= 0 && restart <= 1) || recent < 1 ||
            recent > 10000)
            rec_lua_error(L, REC_ERANGE, "walk: steps must be 0..1e7, restart 0..1, "
                          "recent 1..10000");
        rec_sandbox_charge(L, (uint64_t)steps * 4);
        uint32_t *seeds = lua_newuserdatauv(L, (size_t)recent * (sizeof *seeds + sizeof(float)), 0);
        float *sw = (float *)(seeds + recent);
        lua_getfield(L, t, "seeds");
        size_t ns = 0;
        uint32_t u = REC_IDX_NONE;
        if (lua_type(L, -1) == LUA_TTABLE)
            ns = walk_seeds(L, d, lua_gettop(L), 0, (size_t)recent, seeds, sw, &u);
        else if (!lua_isnil(L, -1))
            rec_lua_error(L, REC_EINVAL, "walk: seeds must be {user = id} or a list of items");
        n = rec_graph_walk(g, seeds, sw, ns, (uint32_t)steps, restart,
                           rec_engine_serve_rng(d->e), q->skip, q->words, k, h);
        break;
    }
    case SRC_COUNTER: {
        rec_counter *c = rec_engine_counter(d->e, opt_field_str(L, t, "name", "popularity"));
        if (c) {
            lua_Number ts = opt_field_num(L, t, "ts", 0);
            if (ts == 0)
                ts = rec_engine_now(d->e);
            rec_sandbox_charge(L, c->n / 4);
            n = rec_counter_topk(c, ts, q->skip, q->words, k, h);
        }
        break;
    }
    case SRC_SAMPLE: {
        uint32_t bound = rec_engine_bound(d->e, REC_KIND_ITEM);
        rec_rng *rng = rec_engine_serve_rng(d->e);
        for (size_t tries = 0; bound && n < k && tries < 8 * k + 64; tries++) {
            uint32_t i = rec_rng_below(rng, bound);
            if (q->skip[i >> 6] >> (i & 63) & 1)
                continue;
            q->skip[i >> 6] |= 1ull << (i & 63); /* distinct */
            h[n++] = (rec_hit){.idx = i, .score = 0.0f};
        }
        for (size_t j = 0; j < n; j++) /* taken back: the other sources may propose them */
            q->skip[h[j].idx >> 6] &= ~(1ull << (h[j].idx & 63));
        rec_sandbox_charge(L, (uint64_t)n);
        break;
    }
    }
    lua_settop(L, top);
    return n;
}

/* db:blend(sources [, n=10 [, opts]]) -> {{id, score, why}, ...}: the n
 * best items of several candidate sources, rank-fused in C: the item at
 * 0-based rank r of a source with weight w scores w / (10 + r), summed
 * over the sources; why is the source that gave the largest single part.
 * One skip map from opts (exclude, filter, seen_by, shown_by, shown_min,
 * include_inactive) holds for every source, and opts.exact / opts.probe
 * for its vector scans. opts.k: each source's
 * default length (n); opts.shown_discount in (0, 1] (with shown_by):
 * every item shown to that person below shown_min has its score
 * multiplied by shown_discount^weight (db:shown).
 * sources: a list of tables {kind, w = 1, k = opts.k, why = kind, ...}:
 *   {"neighbors", item}             co-occurrence neighbours
 *   {"similar", item, space, metric} nearest items to the item's vector
 *   {"topk", vector, space, metric} nearest items to a query vector
 *   {"taste", user, space, recent = 20, decay = 1, events = 0}: nearest
 *                                   to the user's taste (db:profile over
 *                                   the newest `events` events, 0: all;
 *                                   the j-th positive one back weighs decay^j)
 *   {"vec", user, space = "mf", metric = "dot"}  by the user's vector
 *   {"ease", user, name, recent, decay}           db:ease
 *   {"walk", seeds, steps, restart, recent}        db:walk
 *   {"counter", name = "popularity", ts}          db:counter_top
 *   {"sample"}                      random items of the catalogue
 * A source with w <= 0 is not run; one that cannot answer (an unknown
 * item or user, no vector, an EASE model or counter not there yet) adds
 * nothing. Unknown spaces and bad options raise.   [-4, +1, e] */
static int db_blend(lua_State *L) {
    ldb *d = check_db(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer n = check_k(L, 3, 10);
    int t = lua_isnoneornil(L, 4) ? 0 : 4;
    qopts q;
    parse_qopts(L, t, &q, n, NULL);
    lua_Integer kdef = t ? (lua_Integer)opt_field_num(L, t, "k", (lua_Number)n) : n;
    lua_Number disc = t ? opt_field_num(L, t, "shown_discount", 1.0) : 1.0;
    lua_Number shown_min = t ? opt_field_num(L, t, "shown_min", 1.0) : 1.0;
    if (kdef < 0 || kdef > MAX_K)
        return rec_lua_error(L, REC_ERANGE, "k must be 0..%d", MAX_K);
    if (!(disc > 0 && disc <= 1))
        return rec_lua_error(L, REC_EINVAL, "shown_discount must be in (0, 1]");
    lua_Integer ns = (lua_Integer)lua_rawlen(L, 2);
    if (ns > 64)
        return rec_lua_error(L, REC_ERANGE, "at most 64 sources");
    /* the sources' weights, lengths and kinds first: bad input raises
     * before anything runs */
    struct { double w; lua_Integer k; int kind; const char *why; } src[64];
    size_t total = 0, kmax = 1;
    for (lua_Integer i = 1; i <= ns; i++) {
        if (lua_rawgeti(L, 2, i) != LUA_TTABLE)
            return rec_lua_error(L, REC_EINVAL, "sources[%d] must be a table", (int)i);
        int st = lua_gettop(L);
        src[i - 1].kind = src_kind(L, st, i);
        src[i - 1].w = opt_field_num(L, st, "w", 1.0);
        src[i - 1].k = (lua_Integer)opt_field_num(L, st, "k", (lua_Number)kdef);
        src[i - 1].why = opt_field_str(L, st, "why", src_kinds[src[i - 1].kind]);
        if (src[i - 1].w != src[i - 1].w || isinf(src[i - 1].w))
            return rec_lua_error(L, REC_EINVAL, "sources[%d].w must be a finite number", (int)i);
        if (src[i - 1].k < 0 || src[i - 1].k > MAX_K)
            return rec_lua_error(L, REC_ERANGE, "sources[%d].k must be 0..%d", (int)i, MAX_K);
        lua_pop(L, 1); /* why stays valid: the sources table holds it */
        if (src[i - 1].w > 0) {
            total += (size_t)src[i - 1].k;
            kmax = (size_t)src[i - 1].k > kmax ? (size_t)src[i - 1].k : kmax;
        }
    }
    build_skip(L, d, t, &q);
    rec_hit *h = hits_alloc(L, (lua_Integer)kmax);
    size_t cap = total ? total : 1;
    rec_rank_blend b;
    rec_rank_blend_init(&b, lua_newuserdatauv(L, rec_rank_blend_bytes(cap), 0), cap);
    for (lua_Integer i = 0; i < ns; i++) {
        if (!(src[i].w > 0) || src[i].k == 0)
            continue;
        lua_rawgeti(L, 2, i + 1);
        size_t got = src_run(L, d, lua_gettop(L), src[i].kind, &q, (size_t)src[i].k, h);
        lua_pop(L, 1);
        rec_rank_blend_add(&b, h, got, src[i].w, (uint32_t)i);
    }
    if (disc < 1 && t && lua_getfield(L, t, "shown_by") != LUA_TNIL) {
        char key[REC_ID_MAX];
        size_t kl = check_id(L, -1, key, "shown_by");
        uint32_t sn;
        const rec_shown_entry *se = rec_shown_list(rec_engine_shown(d->e), key, kl, &sn);
        for (uint32_t i = 0; i < sn; i++)
            if ((lua_Number)se[i].weight < shown_min)
                rec_rank_blend_scale(&b, se[i].item, pow(disc, (double)se[i].weight));
    }
    size_t m = rec_rank_blend_rank(&b, (size_t)n);
    rec_sandbox_charge(L, m);
    lua_createtable(L, (int)m, 0);
    for (size_t i = 0; i < m; i++) {
        lua_createtable(L, 0, 3);
        push_idx(L, d->e, REC_KIND_ITEM, b.item[i].idx);
        lua_setfield(L, -2, "id");
        lua_pushnumber(L, (lua_Number)b.item[i].score);
        lua_setfield(L, -2, "score");
        lua_pushstring(L, src[b.item[i].why].why);
        lua_setfield(L, -2, "why");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* ---- kv, weights, transactions, stats --------------------------------- */

/* db:kv_put(key, value) -> true; value any storable Lua value   [-3, +1, e] */
static int db_kv_put(lua_State *L) {
    ldb *d = check_db(L);
    size_t kl;
    const char *k = luaL_checklstring(L, 2, &kl);
    luaL_checkany(L, 3);
    rec_buf b = REC_BUF_INIT;
    pack_value(L, 3, &b, "value");
    int rc = rec_engine_kv_put(d->e, k, kl, b.data, b.len);
    rec_buf_free(&b);
    if (rc)
        return engine_error(L, d->e, rc);
    autocommit(L, d);
    lua_pushboolean(L, 1);
    return 1;
}

/* db:kv_get(key) -> value | nil   [-2, +1, e] */
static int db_kv_get(lua_State *L) {
    ldb *d = check_db(L);
    size_t kl;
    const char *k = luaL_checklstring(L, 2, &kl);
    rec_buf b = REC_BUF_INIT;
    int rc = rec_engine_kv_get(d->e, k, kl, &b);
    if (rc == REC_ENOTFOUND) {
        rec_buf_free(&b);
        lua_pushnil(L);
        return 1;
    }
    if (rc) {
        rec_buf_free(&b);
        return engine_error(L, d->e, rc);
    }
    size_t used;
    rc = rec_value_push_lua(L, b.data, b.len, &used);
    rec_buf_free(&b);
    if (rc)
        return rec_lua_error(L, REC_ECORRUPT, "stored value cannot be decoded");
    return 1;
}

/* db:kv_delete(key) -> true   [-2, +1, e] */
static int db_kv_delete(lua_State *L) {
    ldb *d = check_db(L);
    size_t kl;
    const char *k = luaL_checklstring(L, 2, &kl);
    int rc = rec_engine_kv_del(d->e, k, kl);
    if (rc)
        return engine_error(L, d->e, rc);
    autocommit(L, d);
    lua_pushboolean(L, 1);
    return 1;
}

/* db:event_weight(type [, weight]) -> weight; sets it when given
 * [-3, +1, e] */
static int db_event_weight(lua_State *L) {
    ldb *d = check_db(L);
    size_t tl;
    const char *t = luaL_checklstring(L, 2, &tl);
    if (!lua_isnoneornil(L, 3)) {
        int rc = rec_engine_set_type_weight(d->e, t, tl, (float)luaL_checknumber(L, 3));
        if (rc)
            return engine_error(L, d->e, rc);
        autocommit(L, d);
    }
    lua_pushnumber(L, (lua_Number)rec_engine_type_weight(d->e, t, tl));
    return 1;
}

/* db:commit() -> true. On a handle whose owner commits (the `rec` of
 * scripts in the server) it does nothing: the writes go with the owner's
 * next commit, and the answer to the request that made them waits for it.
 * [-1, +1, e] */
static int db_commit(lua_State *L) {
    ldb *d = check_db(L);
    if (d->deferred) {
        lua_pushboolean(L, 1);
        return 1;
    }
    int rc = rec_engine_commit(d->e);
    if (rc)
        return engine_error(L, d->e, rc);
    lua_pushboolean(L, 1);
    return 1;
}

/* db:batch(fn, ...) -> results of fn: writes inside commit once at the end
 * (one fsync). If fn raises, what it wrote is still committed with what
 * came before, and the error is raised again.   [-n, +r, e] */
static int db_batch(lua_State *L) {
    ldb *d = check_db(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    d->batch_depth++;
    int n = lua_gettop(L);
    int st = lua_pcall(L, n - 2, LUA_MULTRET, 0);
    d->batch_depth--;
    if (d->e && d->batch_depth == 0) {
        int rc = rec_engine_commit(d->e);
        if (rc && st == LUA_OK)
            return engine_error(L, d->e, rc);
    }
    if (st != LUA_OK)
        return lua_error(L);
    return lua_gettop(L) - 1;
}

/* db:stats() -> {items, users, events, spaces, counters, edges, map_size,
 * map_used, pending, isa}   [-1, +1, e] */
static int db_stats(lua_State *L) {
    ldb *d = check_db(L);
    rec_store_stats st;
    int rc = rec_store_stats_get(rec_engine_store(d->e), &st);
    if (rc)
        return rec_lua_error(L, rc, "stats: %s", rec_strerror(rc));
    lua_createtable(L, 0, 12);
    lua_pushinteger(L, rec_engine_count(d->e, REC_KIND_ITEM));
    lua_setfield(L, -2, "items");
    lua_pushinteger(L, rec_engine_count(d->e, REC_KIND_USER));
    lua_setfield(L, -2, "users");
    lua_pushinteger(L, (lua_Integer)rec_engine_events(d->e));
    lua_setfield(L, -2, "events");
    lua_pushinteger(L, (lua_Integer)rec_engine_space_count(d->e));
    lua_setfield(L, -2, "spaces");
    lua_pushinteger(L, (lua_Integer)rec_engine_counter_count(d->e));
    lua_setfield(L, -2, "counters");
    lua_pushinteger(L, (lua_Integer)rec_graph_edges(rec_engine_graph(d->e)));
    lua_setfield(L, -2, "edges");
    lua_pushinteger(L, (lua_Integer)st.map_size);
    lua_setfield(L, -2, "map_size");
    lua_pushinteger(L, (lua_Integer)st.map_max);
    lua_setfield(L, -2, "map_max");
    lua_pushinteger(L, (lua_Integer)st.used_bytes);
    lua_setfield(L, -2, "map_used");
    lua_pushinteger(L, (lua_Integer)st.map_grows);
    lua_setfield(L, -2, "map_grows");
    lua_pushinteger(L, (lua_Integer)rec_engine_pending(d->e));
    lua_setfield(L, -2, "pending");
    lua_pushstring(L, rec_vec_isa_name());
    lua_setfield(L, -2, "isa");
    return 1;
}

/* db:mmr(items [, opts]) -> items re-ranked by maximal marginal relevance:
 * greedily the item maximising lambda * relevance - (1 - lambda) * (max
 * cosine to the items already placed), relevance being the score scaled to
 * [0, 1]. Works on the first `window` items (50); the rest follow in their
 * order. Items without a vector in the space count as unlike everything.
 * opts: space ("content"), lambda (0.7), window (50). O(window^2 * dim) in
 * C (rec_rank_mmr).   [-2, +1, e] */
static int db_mmr(lua_State *L) {
    ldb *d = check_db(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    const char *sn = "content";
    double lambda = 0.7;
    lua_Integer window = 50;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        sn = opt_field_str(L, 3, "space", "content");
        lambda = opt_field_num(L, 3, "lambda", 0.7);
        window = (lua_Integer)opt_field_num(L, 3, "window", 50);
    }
    if (!(lambda >= 0 && lambda <= 1) || window < 1 || window > REC_RANK_MMR_MAX)
        return rec_lua_error(L, REC_ERANGE, "lambda must be 0..1 and window 1..%d",
                             REC_RANK_MMR_MAX);
    lua_Integer total = (lua_Integer)lua_rawlen(L, 2);
    lua_Integer m = total < window ? total : window;
    rec_space *s = rec_engine_space(d->e, sn);
    rec_sandbox_charge(L, (uint64_t)total +
                              (s ? (uint64_t)m * (uint64_t)m * s->dim / FLOATS_PER_STEP : 0));
    lua_createtable(L, (int)total, 0);
    int out = lua_gettop(L);
    if (!s || m < 3) {
        for (lua_Integer i = 1; i <= total; i++) {
            lua_rawgeti(L, 2, i);
            lua_rawseti(L, out, i);
        }
        return 1;
    }
    const float *rows[REC_RANK_MMR_MAX];
    double score[REC_RANK_MMR_MAX];
    uint32_t order[REC_RANK_MMR_MAX];
    for (lua_Integer i = 0; i < m; i++) {
        lua_rawgeti(L, 2, i + 1);
        if (lua_type(L, -1) != LUA_TTABLE)
            return rec_lua_error(L, REC_EINVAL, "items[%d] must be {id =, score =}",
                                 (int)i + 1);
        lua_getfield(L, -1, "id");
        uint32_t idx = find_idx(L, d, REC_KIND_ITEM, -1, 0);
        lua_getfield(L, -2, "score");
        score[i] = lua_tonumber(L, -1);
        lua_pop(L, 3);
        rows[i] = idx == REC_IDX_NONE ? NULL : rec_space_get(s, REC_KIND_ITEM, idx);
        if (rows[i] && s->m[REC_KIND_ITEM].inv_norms[idx] == 0.0f)
            rows[i] = NULL;
    }
    rec_rank_mmr(rows, score, (size_t)m, s->dim, lambda, order);
    for (lua_Integer i = 0; i < m; i++) {
        lua_rawgeti(L, 2, (lua_Integer)order[i] + 1);
        lua_rawseti(L, out, i + 1);
    }
    for (lua_Integer i = m + 1; i <= total; i++) {
        lua_rawgeti(L, 2, i);
        lua_rawseti(L, out, i);
    }
    return 1;
}

/* ---- batch models ------------------------------------------------------- */

/* db:ials_train([opts]) -> {users, items, pairs, seconds}: train implicit
 * ALS on every positive interaction and install the factors in a space
 * (item and user rows, written at the next checkpoint). opts: space
 * ("ials"), factors (64), iters (8), reg (30), alpha (2), seed (42).
 * Blocks for the whole training: in the server, model.train runs it in a
 * worker instead, and this raises busy.   [-2, +1, e] */
static int db_ials_train(lua_State *L) {
    ldb *d = check_db(L);
    if (!d->owned && d->batch_depth > 0)
        return rec_lua_error(L, REC_EBUSY, "training blocks: in the server use the "
                             "model.train method, which trains in a worker");
    rec_learn_ials_opts o;
    rec_learn_ials_opts_default(&o);
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        snprintf(o.space, sizeof o.space, "%s", opt_field_str(L, 2, "space", "ials"));
        o.factors = (uint32_t)opt_field_num(L, 2, "factors", 64);
        o.iters = (uint32_t)opt_field_num(L, 2, "iters", 8);
        o.reg = (float)opt_field_num(L, 2, "reg", o.reg);
        o.alpha = (float)opt_field_num(L, 2, "alpha", o.alpha);
        o.seed = (uint64_t)opt_field_num(L, 2, "seed", 42);
    }
    rec_learn_ials_job *j;
    int rc = rec_learn_ials_job_new(d->e, &o, &j);
    if (rc)
        return rec_lua_error(L, rc, "ials: %s", rc == REC_EDIM
                             ? "the space exists with another dimension than factors"
                             : "bad options (factors 1..256, iters 0..1000, reg and alpha > 0)");
    rc = rec_learn_ials_job_run(j);
    if (!rc)
        rc = rec_learn_ials_job_install(d->e, j);
    if (rc) {
        rec_learn_ials_job_free(j);
        return rec_lua_error(L, rc, "ials training failed: %s", rec_strerror(rc));
    }
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, rec_engine_count(d->e, REC_KIND_USER));
    lua_setfield(L, -2, "users");
    lua_pushinteger(L, rec_engine_count(d->e, REC_KIND_ITEM));
    lua_setfield(L, -2, "items");
    lua_pushinteger(L, (lua_Integer)rec_learn_ials_job_pairs(j));
    lua_setfield(L, -2, "pairs");
    lua_pushnumber(L, rec_learn_ials_job_seconds(j));
    lua_setfield(L, -2, "seconds");
    rec_learn_ials_job_free(j);
    autocommit(L, d);
    return 1;
}

/* db:ease_train([opts]) -> {items, users, seconds}: EASE item-item
 * weights over the most engaged items (learn.h), installed under
 * opts.name ("ease"); opts: name, lambda (250), max_items (3000). Blocks
 * while it trains, like ials_train.   [-2, +1, e] */
static int db_ease_train(lua_State *L) {
    ldb *d = check_db(L);
    if (!d->owned && d->batch_depth > 0)
        return rec_lua_error(L, REC_EBUSY, "training blocks: in the server use the "
                             "model.train method, which trains in a worker");
    rec_learn_ease_opts o;
    rec_learn_ease_opts_default(&o);
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        snprintf(o.name, sizeof o.name, "%s", opt_field_str(L, 2, "name", "ease"));
        o.lambda = (float)opt_field_num(L, 2, "lambda", o.lambda);
        lua_Number mi = opt_field_num(L, 2, "max_items", o.max_items);
        o.max_items = mi >= 1 && mi <= 20000 ? (uint32_t)mi : 0;
    }
    rec_learn_ease_job *j;
    int rc = rec_learn_ease_job_new(d->e, &o, &j);
    if (rc)
        return rec_lua_error(L, rc, "ease: %s", rc == REC_EINVAL
                             ? "bad options (name a space-like name, lambda > 0, "
                               "max_items 1..20000)"
                             : rec_strerror(rc));
    rc = rec_learn_ease_job_run(j);
    if (!rc)
        rc = rec_learn_ease_job_install(d->e, j);
    if (rc) {
        rec_learn_ease_job_free(j);
        return rec_lua_error(L, rc, "ease training failed: %s", rec_strerror(rc));
    }
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, rec_learn_ease_job_items(j));
    lua_setfield(L, -2, "items");
    lua_pushinteger(L, rec_learn_ease_job_users(j));
    lua_setfield(L, -2, "users");
    lua_pushnumber(L, rec_learn_ease_job_seconds(j));
    lua_setfield(L, -2, "seconds");
    rec_learn_ease_job_free(j);
    return 1;
}

/* db:ease(user [, k=10 [, opts]]) -> hits by the installed EASE model
 * (opts.name, default "ease") over the user's positive history as it is
 * now (opts.recent: only the newest N distinct items, each older one
 * weighing opts.decay times the next); seen items left out unless
 * exclude_seen = false; nil when no model
 * was trained in this process; {} for an unknown user or one whose items
 * the model does not cover.   [-4, +1, e] */
static int db_ease(lua_State *L) {
    ldb *d = check_db(L);
    uint32_t u = find_idx(L, d, REC_KIND_USER, 2, 0);
    qopts q;
    int t = lua_isnoneornil(L, 4) ? 0 : 4;
    parse_qopts(L, t, &q, check_k(L, 3, 10), NULL);
    const char *name = t ? opt_field_str(L, t, "name", "ease") : "ease";
    lua_Number recent = t ? opt_field_num(L, t, "recent", 0) : 0;
    lua_Number decay = t ? opt_field_num(L, t, "decay", 1.0) : 1.0;
    if (recent < 0 || recent > 1e6 || !(decay > 0) || decay > 1)
        return rec_lua_error(L, REC_EINVAL, "ease: recent must be 0..1e6, decay in (0, 1]");
    build_skip(L, d, t, &q);
    if (q.exclude_seen && u != REC_IDX_NONE)
        skip_seen(d, u, &q);
    uint32_t hn = 0;
    if (u != REC_IDX_NONE)
        rec_graph_history(rec_engine_graph(d->e), u, &hn);
    /* a row of weights over the model's items per history item */
    rec_sandbox_charge(L, (uint64_t)rec_engine_bound(d->e, REC_KIND_ITEM) *
                              (recent > 0 && recent < hn ? (uint64_t)recent : hn) /
                              FLOATS_PER_STEP);
    rec_hit *h = hits_alloc(L, q.k);
    int n = rec_learn_ease_topk_recent(d->e, name, u, (uint32_t)recent, (float)decay, q.skip,
                                       q.words, (size_t)q.k, h);
    if (n == REC_ENOTFOUND) {
        lua_pushnil(L);
        return 1;
    }
    if (n < 0)
        return rec_lua_error(L, n, "ease: %s", rec_strerror(n));
    push_hits(L, d, REC_KIND_ITEM, h, (size_t)n);
    return 1;
}

/* db:ials_fold_in(user [, space="ials"]) -> true, or false when no model
 * was trained in this process for the space: the user's vector re-solved
 * in closed form from their whole history against the current item
 * factors (rec_learn_fold_in_later). The solve is owed, not done: the user
 * is marked once however many events mark them, whoever reads the row
 * (db:vector, db:recommend_vec, db:topk over users, item/user gets)
 * folds them in first, and the server pays the rest in a worker between
 * batches of requests. O(1) here; O(n f^2 + f^3) once per user later.
 * [-3, +1, e] */
static int db_ials_fold_in(lua_State *L) {
    ldb *d = check_db(L);
    if (is_events(L, 2))
        return ials_fold_in_batch(L, d);
    uint32_t u = find_idx(L, d, REC_KIND_USER, 2, 1);
    const char *sn = luaL_optstring(L, 3, "ials");
    int rc = rec_learn_fold_in_later(d->e, sn, u);
    if (rc == REC_ENOTFOUND) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if (rc)
        return rec_lua_error(L, rc, "ials fold-in failed: %s", rec_strerror(rc));
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- bitmaps ------------------------------------------------------------- */

/* db:bitmap([fn]) -> bitmap over items: bit set = kept. With fn, each live
 * item id is passed to fn(id) once and kept when it returns true; without,
 * the bitmap starts empty. O(items) calls.   [-2, +1, e] */
static int db_bitmap(lua_State *L) {
    ldb *d = check_db(L);
    lua_settop(L, 2); /* the bitmap goes above the optional argument */
    uint32_t bound = rec_engine_bound(d->e, REC_KIND_ITEM);
    rec_sandbox_charge(L, bound / 64);
    size_t words = ((size_t)bound + 63) / 64 + 1;
    lbitmap *b = lua_newuserdatauv(L, sizeof *b + words * sizeof(uint64_t), 1);
    b->words = words;
    memset(b->bits, 0, words * sizeof(uint64_t));
    luaL_setmetatable(L, BITMAP_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1); /* keep the db alive for id lookups */
    if (lua_isfunction(L, 2)) {
        for (uint32_t i = 0; i < bound; i++) {
            size_t kl;
            const char *key = rec_engine_key(d->e, REC_KIND_ITEM, i, &kl);
            if (!key)
                continue;
            lua_pushvalue(L, 2);
            rec_lua_push_id(L, key, kl);
            lua_call(L, 1, 1);
            if (lua_toboolean(L, -1))
                b->bits[i >> 6] |= 1ull << (i & 63);
            lua_pop(L, 1);
        }
    } else if (!lua_isnoneornil(L, 2)) {
        return rec_lua_error(L, REC_EINVAL, "bitmap takes a function or nothing");
    }
    return 1;
}

static uint32_t bitmap_idx(lua_State *L, lbitmap **bp) {
    lbitmap *b = luaL_checkudata(L, 1, BITMAP_MT);
    lua_getiuservalue(L, 1, 1);
    ldb *d = luaL_checkudata(L, -1, DB_MT);
    if (!d->e)
        rec_lua_error(L, REC_EINVAL, "database is closed");
    uint32_t idx = find_idx(L, d, REC_KIND_ITEM, 2, 0);
    lua_pop(L, 1);
    *bp = b;
    return idx;
}

/* bitmap:set(id [, on=true]) -> bitmap   [-3, +1, e] */
static int bm_set(lua_State *L) {
    lbitmap *b;
    uint32_t idx = bitmap_idx(L, &b);
    if (idx == REC_IDX_NONE || (size_t)(idx >> 6) >= b->words)
        return rec_lua_error(L, REC_ENOTFOUND, "unknown item (or added after "
                             "the bitmap was made)");
    if (lua_isnoneornil(L, 3) || lua_toboolean(L, 3))
        b->bits[idx >> 6] |= 1ull << (idx & 63);
    else
        b->bits[idx >> 6] &= ~(1ull << (idx & 63));
    lua_settop(L, 1);
    return 1;
}

/* bitmap:has(id) -> boolean   [-2, +1, e] */
static int bm_has(lua_State *L) {
    lbitmap *b;
    uint32_t idx = bitmap_idx(L, &b);
    lua_pushboolean(L, idx != REC_IDX_NONE && (size_t)(idx >> 6) < b->words &&
                           (b->bits[idx >> 6] >> (idx & 63) & 1));
    return 1;
}

/* #bitmap -> number of items kept   [-1, +1, -] */
static int bm_len(lua_State *L) {
    lbitmap *b = luaL_checkudata(L, 1, BITMAP_MT);
    lua_Integer n = 0;
    for (size_t i = 0; i < b->words; i++)
        n += __builtin_popcountll(b->bits[i]);
    lua_pushinteger(L, n);
    return 1;
}

static const luaL_Reg db_methods[] = {
    {"close", db_close},
    {"item_put", db_item_put},
    {"item_get", db_item_get},
    {"item_delete", db_item_delete},
    {"user_put", db_user_put},
    {"user_get", db_user_get},
    {"user_delete", db_user_delete},
    {"event", db_event},
    {"event_batch", db_event_batch},
    {"now", db_now},
    {"sample", db_sample},
    {"shown", db_shown},
    {"mark_shown", db_mark_shown},
    {"click_predict", db_click_predict},
    {"click_rank", db_click_rank},
    {"discount_shown", db_discount_shown},
    {"click_info", db_click_info},
    {"click_model", db_click_model},
    {"history", db_history},
    {"drop_seen", db_drop_seen},
    {"space", db_space},
    {"spaces", db_spaces},
    {"space_ann", db_space_ann},
    {"vector", db_vector},
    {"set_vector", db_set_vector},
    {"profile", db_profile},
    {"similar", db_similar},
    {"topk", db_topk},
    {"recommend_vec", db_recommend_vec},
    {"mf_update", db_mf_update},
    {"cooc", db_cooc},
    {"neighbors", db_neighbors},
    {"walk", db_walk},
    {"blend", db_blend},
    {"counter", db_counter},
    {"counter_add", db_counter_add},
    {"counter_get", db_counter_get},
    {"counter_top", db_counter_top},
    {"kv_put", db_kv_put},
    {"kv_get", db_kv_get},
    {"kv_delete", db_kv_delete},
    {"event_weight", db_event_weight},
    {"commit", db_commit},
    {"batch", db_batch},
    {"stats", db_stats},
    {"bitmap", db_bitmap},
    {"mmr", db_mmr},
    {"ials_train", db_ials_train},
    {"ials_fold_in", db_ials_fold_in},
    {"ease_train", db_ease_train},
    {"ease", db_ease},
    {NULL, NULL},
};

const char *rec_lua_db_method(size_t i) {
    return i < sizeof db_methods / sizeof *db_methods ? db_methods[i].name : NULL;
}

static const luaL_Reg bm_methods[] = {
    {"set", bm_set},
    {"has", bm_has},
    {NULL, NULL},
};

static const luaL_Reg module_fns[] = {
    {"open", l_open},
    {"isa", l_isa},
    {"try", l_try},
    {NULL, NULL},
};

int luaopen_recd(lua_State *L) {
    if (luaL_newmetatable(L, DB_MT)) {
        luaL_newlib(L, db_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, db_close);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, db_close);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, db_tostring);
        lua_setfield(L, -2, "__tostring");
        /* Scripts share these handles: getmetatable must not hand out the
         * table that holds every script's methods. */
        lua_pushliteral(L, "recd.db");
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, BITMAP_MT)) {
        luaL_newlib(L, bm_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, bm_len);
        lua_setfield(L, -2, "__len");
        lua_pushliteral(L, "recd.bitmap");
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, EVENTS_MT)) {
        luaL_newlib(L, ev_methods);
        lua_pushcclosure(L, ev_index, 1);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, ev_len);
        lua_setfield(L, -2, "__len");
        lua_pushcfunction(L, ev_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushliteral(L, "recd.events");
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    luaL_newlib(L, module_fns);
    lua_pushliteral(L, REC_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}

void rec_lua_set_rec(lua_State *L, rec_engine *e, int *ref) {
    if (!*ref) {
        luaL_requiref(L, "recd", luaopen_recd, 0); /* the handle's metatable */
        lua_pop(L, 1);
        rec_lua_push_engine(L, e, 0);
        *ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, *ref);
    lua_setfield(L, -2, "rec");
}
