/* value.c - msgpack <-> Lua values, and a bounded msgpack pre-scan.
 *
 * Three pieces, over one classification of header bytes (rec_value_classify in
 * value.h, also used by the RPC framer):
 *
 *   rec_value_scan      walks msgpack bytes without allocating. Each header's
 *                    claim (payload length, element count, nesting) is held
 *                    against the limits as soon as the header's length
 *                    bytes are present, whether or not the payload is, so a
 *                    5-byte array32 header claiming four billion elements is
 *                    refused at once rather than waited for.
 *   rec_value_push_lua  decodes one object onto a Lua stack. It scans first
 *                    with the default limits, so the decoder only ever sees
 *                    bytes whose sizes and depth are already known to be
 *                    bounded; msgpack-c's unpacker is not used because it
 *                    allocates whatever a header claims.
 *   rec_value_pack_lua  encodes a Lua value with msgpack-c's packer writing into
 *                    a rec_buf. Tables are read with raw access only, so no
 *                    metamethod (__index, __pairs, __len) runs.
 *
 * Nesting is counted the same way in all three: a top-level scalar is at
 * depth 0, a top-level array or map at depth 1, and at most 32 (the default
 * max_depth) levels of arrays/maps are accepted, so whatever pack produces
 * within the other limits, scan and push accept.
 */
#include "value.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <msgpack.h>

#include "err.h"

/* Hard cap on the scanner's explicit stack, whatever max_depth asks. */
#define SCAN_MAX_DEPTH 256
/* Nesting accepted by push_lua and pack_lua. */
#define LUA_MAX_DEPTH 32

void rec_value_limits_default(rec_value_limits *l) {
    l->max_bytes = (size_t)4 << 20;
    l->max_depth = LUA_MAX_DEPTH;
    l->max_str = (uint32_t)1 << 20;
    l->max_items = 1000000;
}

/* ---- scan ---------------------------------------------------------------- */

static int scan_fail(const char **why, const char *msg, int rc) {
    if (why)
        *why = msg;
    return rc;
}

int rec_value_scan(const void *data, size_t len, const rec_value_limits *lim,
                size_t *used, const char **why) {
    static const char *const too_long[] = {
        [REC_VALUE_STR] = "str exceeds max_str",
        [REC_VALUE_BIN] = "bin exceeds max_str",
        [REC_VALUE_EXT] = "ext exceeds max_str",
    };
    const unsigned char *p = data;
    rec_value_limits defl;
    if (!lim) {
        rec_value_limits_default(&defl);
        lim = &defl;
    }
    uint32_t maxd = lim->max_depth < SCAN_MAX_DEPTH ? lim->max_depth
                                                    : SCAN_MAX_DEPTH;
    uint64_t max_bytes = lim->max_bytes;
    /* rem[i]: elements still to read in the open container at level i+1. */
    uint64_t rem[SCAN_MAX_DEPTH];
    uint32_t depth = 0;
    /* Elements still to read at all levels (including the top-level one
     * before it starts); each needs at least one more byte. */
    uint64_t need = 1;
    uint64_t pos = 0;

    if (used)
        *used = 0;
    if (why)
        *why = NULL;
    for (;;) {
        /* The object is at least pos + need bytes long. */
        if (pos + need > max_bytes)
            return scan_fail(why, "object exceeds max_bytes", REC_ETOOLARGE);
        if (pos >= len)
            return scan_fail(why, "object incomplete", REC_VALUE_PARTIAL);
        rec_value_head h = rec_value_classify(p[pos]);
        if (h.kind == REC_VALUE_RESERVED)
            return scan_fail(why, "reserved byte 0xc1", REC_EPROTOCOL);
        need--; /* this element's bytes are accounted for below */
        if (depth > 0)
            rem[depth - 1]--;
        uint64_t at = pos + 1; /* just past what is known of the header */
        if (h.lenbytes) {
            at += h.lenbytes;
            if (at + need > max_bytes)
                return scan_fail(why, "object exceeds max_bytes",
                                 REC_ETOOLARGE);
            if (at > len)
                return scan_fail(why, "object incomplete", REC_VALUE_PARTIAL);
            h.n = rec_value_head_len(p + pos + 1, h.lenbytes);
        }
        if (h.kind == REC_VALUE_ARRAY || h.kind == REC_VALUE_MAP) {
            if (depth >= maxd)
                return scan_fail(why, "nesting exceeds max_depth",
                                 REC_ETOOLARGE);
            if (h.n > lim->max_items)
                return scan_fail(why,
                                 h.kind == REC_VALUE_ARRAY ? "array exceeds max_items"
                                                   : "map exceeds max_items",
                                 REC_ETOOLARGE);
            uint64_t elems = h.kind == REC_VALUE_MAP ? 2 * (uint64_t)h.n : h.n;
            need += elems;
            pos = at;
            if (pos + need > max_bytes)
                return scan_fail(why, "object exceeds max_bytes",
                                 REC_ETOOLARGE);
            if (elems)
                rem[depth++] = elems;
        } else {
            if (h.kind != REC_VALUE_SCALAR && h.n > lim->max_str)
                return scan_fail(why, too_long[h.kind], REC_ETOOLARGE);
            uint64_t end = at + h.extra + h.n;
            if (end + need > max_bytes)
                return scan_fail(why, "object exceeds max_bytes",
                                 REC_ETOOLARGE);
            if (end > len)
                return scan_fail(why, "object incomplete", REC_VALUE_PARTIAL);
            pos = end;
        }
        while (depth > 0 && rem[depth - 1] == 0)
            depth--;
        if (need == 0) {
            if (used)
                *used = (size_t)pos;
            return 0;
        }
    }
}

/* ---- decode onto a Lua stack --------------------------------------------- */

typedef struct dec {
    const unsigned char *p;
    size_t len;
    size_t pos;
} dec;

/* Read n bytes; NULL when they are not there (cannot happen after a
 * successful scan; checked anyway). */
static const unsigned char *take(dec *d, size_t n) {
    if (n > d->len - d->pos)
        return NULL;
    const unsigned char *r = d->p + d->pos;
    d->pos += n;
    return r;
}

static double get_f32(const unsigned char *p) {
    uint32_t u = rec_get_be32(p);
    float f;
    memcpy(&f, &u, sizeof f);
    return (double)f;
}

static double get_f64(const unsigned char *p) {
    uint64_t u = rec_get_be64(p);
    double f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Push the next object. [-0, +1, m] on success; on error it may leave
 * partly built tables above, which rec_value_push_lua discards. */
static int decode(lua_State *L, dec *d, int depth) {
    if (!lua_checkstack(L, 3))
        return REC_ENOMEM;
    const unsigned char *q = take(d, 1);
    if (!q)
        return REC_EPROTOCOL;
    unsigned char b = *q;
    if (b <= 0x7f) {
        lua_pushinteger(L, b);
        return 0;
    }
    if (b >= 0xe0) {
        lua_pushinteger(L, (lua_Integer)(int8_t)b);
        return 0;
    }
    rec_value_head h = rec_value_classify(b);
    if (h.kind == REC_VALUE_RESERVED || h.kind == REC_VALUE_EXT)
        return REC_EPROTOCOL;
    if (h.lenbytes) {
        if (!(q = take(d, h.lenbytes)))
            return REC_EPROTOCOL;
        h.n = rec_value_head_len(q, h.lenbytes);
    }
    if (h.kind == REC_VALUE_STR || h.kind == REC_VALUE_BIN) {
        if (!(q = take(d, h.n)))
            return REC_EPROTOCOL;
        lua_pushlstring(L, (const char *)q, h.n);
        return 0;
    }
    if (h.kind == REC_VALUE_ARRAY) {
        if (depth >= LUA_MAX_DEPTH)
            return REC_ETOOLARGE;
        /* A scanned array of n elements spans >= n bytes, so this size is
         * bounded by the default max_bytes. */
        lua_createtable(L, h.n > INT32_MAX ? 0 : (int)h.n, 0);
        for (uint32_t i = 0; i < h.n; i++) {
            int rc = decode(L, d, depth + 1);
            if (rc)
                return rc;
            lua_rawseti(L, -2, (lua_Integer)i + 1); /* nil leaves a hole */
        }
        return 0;
    }
    if (h.kind == REC_VALUE_MAP) {
        if (depth >= LUA_MAX_DEPTH)
            return REC_ETOOLARGE;
        lua_createtable(L, 0, h.n > INT32_MAX ? 0 : (int)h.n);
        for (uint32_t i = 0; i < h.n; i++) {
            int rc = decode(L, d, depth + 1);
            if (rc)
                return rc;
            int kt = lua_type(L, -1);
            if (kt == LUA_TNIL ||
                (kt == LUA_TNUMBER && !lua_isinteger(L, -1) &&
                 isnan(lua_tonumber(L, -1))))
                return REC_EPROTOCOL;
            if ((rc = decode(L, d, depth + 1)))
                return rc;
            lua_rawset(L, -3);
        }
        return 0;
    }
    /* REC_VALUE_SCALAR with a payload of h.n bytes */
    if (!(q = take(d, h.n)))
        return REC_EPROTOCOL;
    switch (b) {
    case 0xc0: lua_pushnil(L); break;
    case 0xc2: lua_pushboolean(L, 0); break;
    case 0xc3: lua_pushboolean(L, 1); break;
    case 0xca: lua_pushnumber(L, (lua_Number)get_f32(q)); break;
    case 0xcb: lua_pushnumber(L, (lua_Number)get_f64(q)); break;
    case 0xcc: lua_pushinteger(L, q[0]); break;
    case 0xcd: lua_pushinteger(L, (lua_Integer)rec_value_head_len(q, 2)); break;
    case 0xce: lua_pushinteger(L, (lua_Integer)rec_get_be32(q)); break;
    case 0xcf: {
        uint64_t u = rec_get_be64(q);
        if (u > INT64_MAX)
            lua_pushnumber(L, (lua_Number)u);
        else
            lua_pushinteger(L, (lua_Integer)u);
        break;
    }
    case 0xd0: lua_pushinteger(L, (int8_t)q[0]); break;
    case 0xd1: lua_pushinteger(L, (int16_t)rec_value_head_len(q, 2)); break;
    case 0xd2: lua_pushinteger(L, (int32_t)rec_get_be32(q)); break;
    case 0xd3: lua_pushinteger(L, (lua_Integer)(int64_t)rec_get_be64(q)); break;
    default: return REC_EPROTOCOL;
    }
    return 0;
}

/* [-0, +1, m] on success; [-0, +0, m] on error. */
int rec_value_push_lua(lua_State *L, const void *data, size_t len,
                    size_t *used) {
    rec_value_limits lim;
    rec_value_limits_default(&lim);
    size_t n = 0;
    if (used)
        *used = 0;
    int rc = rec_value_scan(data, len, &lim, &n, NULL);
    if (rc == REC_VALUE_PARTIAL)
        return REC_EPROTOCOL; /* truncated: nothing more is coming */
    if (rc)
        return rc;
    int top = lua_gettop(L);
    dec d = {data, n, 0};
    rc = decode(L, &d, 0);
    if (rc == 0 && d.pos != n)
        rc = REC_EPROTOCOL; /* scan and decode disagree: cannot happen */
    if (rc) {
        lua_settop(L, top);
        return rc;
    }
    if (used)
        *used = n;
    return 0;
}

/* ---- encode from a Lua stack --------------------------------------------- */

typedef struct pack_ctx {
    lua_State *L;
    msgpack_packer pk; /* appends to the caller's rec_buf */
    char *err;
    size_t errlen;
    int depth;                            /* tables open on the path */
    const void *open[LUA_MAX_DEPTH + 1];  /* those tables, for cycles */
    /* How each open table was entered from its parent: the stack index of
     * the map key, or 0 with the array index in path_i. */
    int path_key[LUA_MAX_DEPTH + 1];
    lua_Integer path_i[LUA_MAX_DEPTH + 1];
    int cur_key;                          /* same, for the value at hand */
    lua_Integer cur_i;
    rec_buf *out;
    size_t limit;                         /* out->len may not pass it */
    int over;                             /* a write would have passed it */
} pack_ctx;

static int buf_write(void *data, const char *p, size_t n) {
    pack_ctx *c = data;
    if (n > c->limit - c->out->len) {
        c->over = 1;
        return -1;
    }
    return rec_buf_append(c->out, p, n) ? -1 : 0;
}

/* Bounded appender for the error message. */
typedef struct msg {
    char *s;
    size_t cap, len;
} msg;

static void msg_add(msg *m, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void msg_add(msg *m, const char *fmt, ...) {
    if (m->cap == 0 || m->len >= m->cap - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(m->s + m->len, m->cap - m->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        m->len += (size_t)n < m->cap - m->len ? (size_t)n : m->cap - m->len - 1;
}

static int is_ident(const char *s, size_t n) {
    if (n == 0 || n > 64 || (s[0] >= '0' && s[0] <= '9'))
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9')))
            return 0;
    }
    return 1;
}

static void msg_path_elem(msg *m, lua_State *L, int keyidx, lua_Integer i,
                          int first) {
    if (keyidx == 0) {
        msg_add(m, "[%lld]", (long long)i);
        return;
    }
    switch (lua_type(L, keyidx)) {
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, keyidx, &n);
        if (is_ident(s, n))
            msg_add(m, "%s%s", first ? "" : ".", s);
        else
            msg_add(m, "[\"%.*s%s\"]", n > 32 ? 32 : (int)n, s,
                    n > 32 ? "..." : "");
        break;
    }
    case LUA_TNUMBER:
        if (lua_isinteger(L, keyidx))
            msg_add(m, "[%lld]", (long long)lua_tointeger(L, keyidx));
        else
            msg_add(m, "[%.17g]", (double)lua_tonumber(L, keyidx));
        break;
    case LUA_TBOOLEAN:
        msg_add(m, "[%s]", lua_toboolean(L, keyidx) ? "true" : "false");
        break;
    default:
        msg_add(m, "[?]");
        break;
    }
}

/* Write "<path>: <what><rest>" into ctx->err. The path leads from the root to the
 * value at hand (cur_key/cur_i when `at_value`, else to the open table). */
static int pack_fail(pack_ctx *c, int rc, int at_value, const char *what,
                     const char *rest) {
    msg m = {c->err, c->err ? c->errlen : 0, 0};
    if (m.cap == 0)
        return rc;
    m.s[0] = '\0';
    /* path_key[1..depth-1] entered the open tables below the root. */
    int n = 0;
    for (int i = 1; i < c->depth; i++, n++)
        msg_path_elem(&m, c->L, c->path_key[i], c->path_i[i], n == 0);
    if (at_value && c->depth > 0) {
        msg_path_elem(&m, c->L, c->cur_key, c->cur_i, n == 0);
        n++;
    }
    if (n > 0)
        msg_add(&m, ": ");
    msg_add(&m, "%s%s", what, rest);
    return rc;
}

#define PK(call)                                                              \
    do {                                                                      \
        if ((call) != 0)                                                      \
            return REC_ENOMEM;                                                \
    } while (0)

static int pack_value(pack_ctx *c, int idx);

/* Pack the map key at idx (a string, number or boolean). */
static int pack_key(pack_ctx *c, int idx) {
    switch (lua_type(c->L, idx)) {
    case LUA_TSTRING:
    case LUA_TNUMBER:
    case LUA_TBOOLEAN:
        return pack_value(c, idx);
    default:
        return pack_fail(c, REC_EINVAL, 0, luaL_typename(c->L, idx),
                         " key cannot be stored");
    }
}

static int pack_table(pack_ctx *c, int idx) {
    lua_State *L = c->L;
    const void *self = lua_topointer(L, idx);
    for (int i = 0; i < c->depth; i++)
        if (c->open[i] == self)
            return pack_fail(c, REC_EINVAL, 1, "cycle: table contains itself",
                             "");
    if (c->depth >= LUA_MAX_DEPTH)
        return pack_fail(c, REC_ERANGE, 1, "nesting deeper than 32", "");
    if (!lua_checkstack(L, 4))
        return REC_ENOMEM;
    c->open[c->depth] = self;
    c->path_key[c->depth] = c->cur_key;
    c->path_i[c->depth] = c->cur_i;
    c->depth++;

    /* An array when the keys are exactly 1..n: n distinct integer keys all
     * within 1..n, where n is a border of the table. */
    lua_Unsigned n = lua_rawlen(L, idx);
    lua_Unsigned count = 0;
    int seq = n >= 1;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        count++;
        if (seq && !(lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1 &&
                     (lua_Unsigned)lua_tointeger(L, -2) <= n))
            seq = 0;
        lua_pop(L, 1);
    }
    seq = seq && count == n;
    if (count > UINT32_MAX)
        return pack_fail(c, REC_ETOOLARGE, 1, "table too large", "");

    int rc;
    if (seq) {
        PK(msgpack_pack_array(&c->pk, (size_t)n));
        for (lua_Unsigned i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, (lua_Integer)i);
            c->cur_key = 0;
            c->cur_i = (lua_Integer)i;
            rc = pack_value(c, lua_gettop(L));
            if (rc)
                return rc;
            lua_pop(L, 1);
        }
    } else {
        PK(msgpack_pack_map(&c->pk, (size_t)count));
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            int k = lua_gettop(L) - 1;
            if ((rc = pack_key(c, k)))
                return rc;
            c->cur_key = k;
            c->cur_i = 0;
            if ((rc = pack_value(c, k + 1)))
                return rc;
            lua_pop(L, 1);
        }
    }
    c->depth--;
    return 0;
}

/* Pack the value at absolute index idx; cur_key/cur_i name it. */
static int pack_value(pack_ctx *c, int idx) {
    lua_State *L = c->L;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        PK(msgpack_pack_nil(&c->pk));
        return 0;
    case LUA_TBOOLEAN:
        PK(lua_toboolean(L, idx) ? msgpack_pack_true(&c->pk)
                                 : msgpack_pack_false(&c->pk));
        return 0;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            PK(msgpack_pack_int64(&c->pk, (int64_t)lua_tointeger(L, idx)));
        else
            PK(msgpack_pack_double(&c->pk, (double)lua_tonumber(L, idx)));
        return 0;
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        if (n > UINT32_MAX)
            return pack_fail(c, REC_ETOOLARGE, 1, "string too long", "");
        PK(msgpack_pack_str_with_body(&c->pk, s, n));
        return 0;
    }
    case LUA_TTABLE:
        return pack_table(c, idx);
    default:
        return pack_fail(c, REC_EINVAL, 1, luaL_typename(L, idx),
                         " cannot be stored");
    }
}

/* [-0, +0, m] */
int rec_value_pack_lua(lua_State *L, int idx, rec_buf *out, char *err,
                    size_t errlen) {
    return rec_value_pack_lua_max(L, idx, out, SIZE_MAX, err, errlen);
}

int rec_value_pack_lua_max(lua_State *L, int idx, rec_buf *out, size_t max, char *err,
                        size_t errlen) {
    pack_ctx c;
    c.L = L;
    c.out = out;
    c.limit = max > SIZE_MAX - out->len ? SIZE_MAX : out->len + max;
    c.over = 0;
    c.err = err;
    c.errlen = errlen;
    c.depth = 0;
    c.cur_key = 0;
    c.cur_i = 0;
    msgpack_packer_init(&c.pk, &c, buf_write);
    if (err && errlen)
        err[0] = '\0';

    int top = lua_gettop(L);
    size_t len0 = out->len;
    int rc = pack_value(&c, lua_absindex(L, idx));
    lua_settop(L, top);
    if (rc) {
        out->len = len0;
        if (c.over) {
            rc = REC_ETOOLARGE;
            if (err && errlen)
                snprintf(err, errlen, "larger than %zu bytes of msgpack", max);
        } else if (rc == REC_ENOMEM && err && errlen && err[0] == '\0') {
            snprintf(err, errlen, "%s", rec_strerror(rc));
        }
    }
    return rc;
}

const msgpack_object *rec_value_field_n(const msgpack_object *map, const char *name, size_t n) {
    if (map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        if (rec_value_is_strn(&map->via.map.ptr[i].key, name, n)) {
            const msgpack_object *v = &map->via.map.ptr[i].val;
            return v->type == MSGPACK_OBJECT_NIL ? NULL : v;
        }
    }
    return NULL;
}

#define FIELDS_MAX 32

void rec_value_fields(const msgpack_object *map, const char *const *names, size_t n,
                      const msgpack_object **out) {
    size_t len[FIELDS_MAX];
    uint32_t found = 0; /* a bit per name whose first key was met */
    for (size_t k = 0; k < n; k++)
        out[k] = NULL;
    if (n > FIELDS_MAX) /* past the bits kept: field by field */
        for (size_t k = FIELDS_MAX; k < n; k++)
            out[k] = rec_value_field(map, names[k]);
    n = n < FIELDS_MAX ? n : FIELDS_MAX;
    for (size_t k = 0; k < n; k++)
        len[k] = strlen(names[k]);
    if (map->type != MSGPACK_OBJECT_MAP)
        return;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *key = &map->via.map.ptr[i].key;
        if (key->type != MSGPACK_OBJECT_STR)
            continue;
        for (size_t k = 0; k < n; k++) {
            if (found & (1u << k) || !rec_value_is_strn(key, names[k], len[k]))
                continue;
            found |= 1u << k;
            const msgpack_object *v = &map->via.map.ptr[i].val;
            out[k] = v->type == MSGPACK_OBJECT_NIL ? NULL : v;
            break;
        }
    }
}

int rec_value_pack_str(msgpack_packer *pk, const char *s) {
    size_t n = strlen(s);
    return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n);
}

void rec_value_input(const msgpack_object *o, rec_field *out) {
    memset(out, 0, sizeof *out);
    if (!o) {
        out->kind = REC_FIELD_ABSENT;
        return;
    }
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        out->kind = REC_FIELD_NIL;
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        out->kind = REC_FIELD_BOOL;
        out->v.b = o->via.boolean;
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        out->kind = REC_FIELD_INT;
        out->big = o->via.u64 > INT64_MAX;
        out->v.i = (int64_t)o->via.u64;
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        out->kind = REC_FIELD_INT;
        out->v.i = o->via.i64;
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        out->kind = REC_FIELD_FLOAT;
        out->v.f = o->via.f64;
        break;
    case MSGPACK_OBJECT_STR:
        out->kind = REC_FIELD_STR;
        out->v.s.p = o->via.str.ptr;
        out->v.s.n = o->via.str.size;
        break;
    case MSGPACK_OBJECT_BIN:
        out->kind = REC_FIELD_BIN;
        out->v.s.p = o->via.bin.ptr;
        out->v.s.n = o->via.bin.size;
        break;
    case MSGPACK_OBJECT_ARRAY:
        out->kind = REC_FIELD_ARRAY;
        out->n = o->via.array.size;
        break;
    case MSGPACK_OBJECT_MAP:
        out->kind = REC_FIELD_MAP;
        out->n = o->via.map.size;
        break;
    default:
        out->kind = REC_FIELD_OTHER;
        break;
    }
}

void rec_value_input_at(void *src, size_t i, rec_field *out) {
    const msgpack_object *a = src;
    rec_value_input(&a->via.array.ptr[i], out);
}
