/* value.h - msgpack <-> Lua values, and a bounded msgpack pre-scan.
 *
 * The pre-scan walks msgpack bytes without allocating and checks every
 * header against limits and against the bytes actually present, so a hostile
 * header (an array32 claiming four billion elements) is refused before any
 * decoder allocates what it claims.
 */
#ifndef REC_VALUE_H
#define REC_VALUE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <lua.h>
#include <msgpack.h>

#include "buf.h"
#include "err.h" /* REC_VALUE_PARTIAL */
#include "input.h"

typedef struct rec_value_limits {
    size_t max_bytes;     /* whole object; default 4 MiB */
    uint32_t max_depth;   /* nesting of arrays/maps; default 32 */
    uint32_t max_str;     /* str/bin/ext payload bytes; default 1 MiB */
    uint32_t max_items;   /* elements of one array or pairs of one map; default 1,000,000 */
} rec_value_limits;

void rec_value_limits_default(rec_value_limits *l);

/* What a msgpack type byte announces: the one classification every walker
 * of msgpack bytes shares (rec_value_scan, rec_value_push_lua, the RPC framer).
 * A header is the type byte, then `lenbytes` big-endian length bytes (read
 * them with rec_value_head_len; when lenbytes is 0, `n` is already known),
 * then `extra` bytes (an ext's type) before the payload. */
typedef enum rec_value_kind {
    REC_VALUE_SCALAR,   /* nil, booleans, integers, floats: n payload bytes */
    REC_VALUE_STR,      /* n payload bytes */
    REC_VALUE_BIN,      /* n payload bytes */
    REC_VALUE_EXT,      /* extra = 1 type byte, then n payload bytes */
    REC_VALUE_ARRAY,    /* n elements */
    REC_VALUE_MAP,      /* n pairs */
    REC_VALUE_RESERVED, /* 0xc1, never used: malformed */
} rec_value_kind;

typedef struct rec_value_head {
    rec_value_kind kind;
    unsigned lenbytes; /* 0, 1, 2 or 4 */
    unsigned extra;    /* 1 for ext, else 0 */
    uint32_t n;        /* payload bytes, or elements / pairs; when lenbytes
                          is 0 (else 0 until read) */
} rec_value_head;

/* The header announced by type byte b. Pure, total over 0..255. Inline:
 * the framer classifies every value of every message. */
static inline rec_value_head rec_value_classify(unsigned char b) {
    if (b <= 0x7f || b >= 0xe0) /* positive / negative fixint */
        return (rec_value_head){REC_VALUE_SCALAR, 0, 0, 0};
    if (b <= 0x8f)
        return (rec_value_head){REC_VALUE_MAP, 0, 0, b & 0x0fu};
    if (b <= 0x9f)
        return (rec_value_head){REC_VALUE_ARRAY, 0, 0, b & 0x0fu};
    if (b <= 0xbf)
        return (rec_value_head){REC_VALUE_STR, 0, 0, b & 0x1fu};
    switch (b) {
    case 0xc0: case 0xc2: case 0xc3: /* nil, false, true */
        return (rec_value_head){REC_VALUE_SCALAR, 0, 0, 0};
    case 0xc4: return (rec_value_head){REC_VALUE_BIN, 1, 0, 0};
    case 0xc5: return (rec_value_head){REC_VALUE_BIN, 2, 0, 0};
    case 0xc6: return (rec_value_head){REC_VALUE_BIN, 4, 0, 0};
    case 0xc7: return (rec_value_head){REC_VALUE_EXT, 1, 1, 0};
    case 0xc8: return (rec_value_head){REC_VALUE_EXT, 2, 1, 0};
    case 0xc9: return (rec_value_head){REC_VALUE_EXT, 4, 1, 0};
    case 0xca: return (rec_value_head){REC_VALUE_SCALAR, 0, 0, 4};
    case 0xcb: return (rec_value_head){REC_VALUE_SCALAR, 0, 0, 8};
    case 0xcc: case 0xd0: return (rec_value_head){REC_VALUE_SCALAR, 0, 0, 1};
    case 0xcd: case 0xd1: return (rec_value_head){REC_VALUE_SCALAR, 0, 0, 2};
    case 0xce: case 0xd2: return (rec_value_head){REC_VALUE_SCALAR, 0, 0, 4};
    case 0xcf: case 0xd3: return (rec_value_head){REC_VALUE_SCALAR, 0, 0, 8};
    case 0xd4: return (rec_value_head){REC_VALUE_EXT, 0, 1, 1};
    case 0xd5: return (rec_value_head){REC_VALUE_EXT, 0, 1, 2};
    case 0xd6: return (rec_value_head){REC_VALUE_EXT, 0, 1, 4};
    case 0xd7: return (rec_value_head){REC_VALUE_EXT, 0, 1, 8};
    case 0xd8: return (rec_value_head){REC_VALUE_EXT, 0, 1, 16};
    case 0xd9: return (rec_value_head){REC_VALUE_STR, 1, 0, 0};
    case 0xda: return (rec_value_head){REC_VALUE_STR, 2, 0, 0};
    case 0xdb: return (rec_value_head){REC_VALUE_STR, 4, 0, 0};
    case 0xdc: return (rec_value_head){REC_VALUE_ARRAY, 2, 0, 0};
    case 0xdd: return (rec_value_head){REC_VALUE_ARRAY, 4, 0, 0};
    case 0xde: return (rec_value_head){REC_VALUE_MAP, 2, 0, 0};
    case 0xdf: return (rec_value_head){REC_VALUE_MAP, 4, 0, 0};
    default: /* 0xc1, never used */
        return (rec_value_head){REC_VALUE_RESERVED, 0, 0, 0};
    }
}

/* The length held in the lenbytes (1, 2 or 4) bytes at p, big-endian. */
static inline uint32_t rec_value_head_len(const unsigned char *p, unsigned lenbytes) {
    switch (lenbytes) {
    case 1: return p[0];
    case 2: return (uint32_t)p[0] << 8 | p[1];
    default: return rec_get_be32(p);
    }
}

/* Check that data[0..len) starts with one complete msgpack object within
 * the limits. Returns 0 and sets *used to its size; REC_VALUE_PARTIAL when more
 * bytes are needed (and the prefix seen so far is within limits); or
 * REC_EPROTOCOL (malformed: reserved byte 0xc1), REC_ETOOLARGE (a limit
 * exceeded; max_bytes counts bytes seen even when partial). When why is not
 * NULL it receives a static string naming the violated rule. Pure: no
 * allocation, O(len), no recursion (explicit stack bounded by max_depth). */
int rec_value_scan(const void *data, size_t len, const rec_value_limits *l,
                size_t *used, const char **why);

/* Push one msgpack object decoded from data[0..len) onto L. Maps become
 * tables (nil keys and NaN keys are refused), arrays become sequences, bin
 * becomes a string, ext is refused, nil inside an array leaves a hole.
 * Integers beyond int64 (uint64 > INT64_MAX) become floats.
 * Depth is limited to 32. *used receives the bytes consumed. Returns 0, or
 * REC_EPROTOCOL / REC_ETOOLARGE / REC_ENOMEM with nothing pushed. Never
 * raises a Lua error except on Lua memory failure. [-0, +1, m] */
int rec_value_push_lua(lua_State *L, const void *data, size_t len,
                    size_t *used);

/* Append the Lua value at idx to out as msgpack. nil, booleans, integers,
 * floats, strings; tables become arrays when their keys are exactly 1..n
 * (n >= 1), otherwise maps (keys must be strings, integers, floats or
 * booleans); an empty table becomes an empty map. Functions, userdata,
 * threads, cycles and nesting deeper than 32 are refused with REC_EINVAL
 * (REC_ERANGE for depth) and a message in err naming the path
 * ("props.tags[3]: function cannot be stored"). out is left as it was on
 * error. Does not raise. [-0, +0, m] */
int rec_value_pack_lua(lua_State *L, int idx, rec_buf *out, char *err,
                    size_t errlen);
/* The same, refusing with REC_ETOOLARGE ("larger than <max> bytes of
 * msgpack") as soon as the encoding would pass max bytes: its time and
 * memory are then bounded by max, even for a table that holds the same
 * subtable many times over (2^depth leaves). [-0, +0, m] */
int rec_value_pack_lua_max(lua_State *L, int idx, rec_buf *out, size_t max, char *err,
                        size_t errlen);

/* Whether the msgpack object o is the string s of n bytes. */
static inline int rec_value_is_strn(const msgpack_object *o, const char *s, size_t n) {
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
           memcmp(o->via.str.ptr, s, n) == 0;
}

/* Whether the msgpack object o is the string s (NUL-terminated; inline, so
 * that the length of a literal is known when compiling). */
static inline int rec_value_is_str(const msgpack_object *o, const char *s) {
    return rec_value_is_strn(o, s, strlen(s));
}

/* The field `name` (n bytes) of a decoded msgpack map: NULL when map is
 * not a map, the field is missing, or it is nil. Borrowed from map.
 * O(fields). */
const msgpack_object *rec_value_field_n(const msgpack_object *map, const char *name, size_t n);

static inline const msgpack_object *rec_value_field(const msgpack_object *map,
                                                    const char *name) {
    return rec_value_field_n(map, name, strlen(name));
}

/* The fields names[0..n) of map in one pass over it: out[k] as
 * rec_value_field(map, names[k]) would give it (the first key of that name
 * wins). For a record read field by field on a hot path. O(fields x n). */
void rec_value_fields(const msgpack_object *map, const char *const *names, size_t n,
                      const msgpack_object **out);

/* The msgpack object o (NULL: absent) as an input field (input.h); strings
 * and bins point into o. */
void rec_value_input(const msgpack_object *o, rec_field *out);

/* Element i of the msgpack array src, as an input field (a rec_field_at). */
void rec_value_input_at(void *src, size_t i, rec_field *out);

/* Pack the NUL-terminated s as a msgpack str: 0, or nonzero when the
 * packer's writer failed. */
int rec_value_pack_str(msgpack_packer *pk, const char *s);

#endif
