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

#include <lua.h>

#include "buf.h"

typedef struct rec_mp_limits {
    size_t max_bytes;     /* whole object; default 4 MiB */
    uint32_t max_depth;   /* nesting of arrays/maps; default 32 */
    uint32_t max_str;     /* str/bin/ext payload bytes; default 1 MiB */
    uint32_t max_items;   /* elements of one array or pairs of one map; default 1,000,000 */
} rec_mp_limits;

void rec_mp_limits_default(rec_mp_limits *l);

/* Result of a pre-scan. */
enum {
    REC_MP_PARTIAL = 1, /* the bytes end before the object does: read more */
};

/* Check that data[0..len) starts with one complete msgpack object within
 * the limits. Returns 0 and sets *used to its size; REC_MP_PARTIAL when more
 * bytes are needed (and the prefix seen so far is within limits); or
 * REC_EPROTOCOL (malformed: reserved byte 0xc1), REC_ETOOLARGE (a limit
 * exceeded; max_bytes counts bytes seen even when partial). When why is not
 * NULL it receives a static string naming the violated rule. Pure: no
 * allocation, O(len), no recursion (explicit stack bounded by max_depth). */
int rec_mp_scan(const void *data, size_t len, const rec_mp_limits *l,
                size_t *used, const char **why);

/* Push one msgpack object decoded from data[0..len) onto L. Maps become
 * tables (nil keys and NaN keys are refused), arrays become sequences, bin
 * becomes a string, ext is refused, nil inside an array leaves a hole.
 * Integers beyond int64 (uint64 > INT64_MAX) become floats.
 * Depth is limited to 32. *used receives the bytes consumed. Returns 0, or
 * REC_EPROTOCOL / REC_ETOOLARGE / REC_ENOMEM with nothing pushed. Never
 * raises a Lua error except on Lua memory failure. [-0, +1, m] */
int rec_mp_push_lua(lua_State *L, const void *data, size_t len,
                    size_t *used);

/* Append the Lua value at idx to out as msgpack. nil, booleans, integers,
 * floats, strings; tables become arrays when their keys are exactly 1..n
 * (n >= 1), otherwise maps (keys must be strings, integers, floats or
 * booleans); an empty table becomes an empty map. Functions, userdata,
 * threads, cycles and nesting deeper than 32 are refused with REC_EINVAL
 * (REC_ERANGE for depth) and a message in err naming the path
 * ("props.tags[3]: function cannot be stored"). out is left as it was on
 * error. Does not raise. [-0, +0, m] */
int rec_mp_pack_lua(lua_State *L, int idx, rec_buf *out, char *err,
                    size_t errlen);
/* The same, refusing with REC_ETOOLARGE ("larger than <max> bytes of
 * msgpack") as soon as the encoding would pass max bytes: its time and
 * memory are then bounded by max, even for a table that holds the same
 * subtable many times over (2^depth leaves). [-0, +0, m] */
int rec_mp_pack_lua_max(lua_State *L, int idx, rec_buf *out, size_t max, char *err,
                        size_t errlen);

#endif
