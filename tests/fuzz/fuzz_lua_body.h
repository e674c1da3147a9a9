/* fuzz_lua_body.h - the msgpack -> Lua -> msgpack harness, shared by the
 * libFuzzer target (fuzz_lua.c) and the corpus regression test
 * (tests/unit/test_fuzz_regress.c).
 *
 * The includer may define FUZZ_CHECK(cond) before including; the default
 * prints the failed condition and aborts.
 *
 * fuzz_lua_one(L, data, size) pushes the bytes with rec_value_push_lua into a
 * caller-owned lua_State (reused across inputs). Invariants:
 *
 *   - the stack grows by exactly one on success and not at all on error;
 *     *used is within the input, > 0 on success and 0 on error;
 *   - the result agrees with rec_value_scan under the default limits (push
 *     succeeds only where the scan does, on the same number of bytes);
 *   - a pushed value packs back with rec_value_pack_lua unless some table in
 *     it is used as a map key (pack refuses those), and what pack writes
 *     pushes again, whole; the stack is balanced after each step.
 */
#ifndef REC_FUZZ_LUA_BODY_H
#define REC_FUZZ_LUA_BODY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <lua.h>

#include "buf.h"
#include "err.h"
#include "value.h"

#ifndef FUZZ_CHECK
#define FUZZ_CHECK(cond)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,  \
                    #cond);                                                   \
            abort();                                                          \
        }                                                                     \
    } while (0)
#endif

/* Does the value at idx hold a table used as a map key, at any depth?
 * Push nests at most 32 deep, so the recursion is bounded. [-0, +0, m] */
static int fuzz_lua_table_key(lua_State *L, int idx, int depth) {
    if (lua_type(L, idx) != LUA_TTABLE)
        return 0;
    FUZZ_CHECK(depth <= 40);
    FUZZ_CHECK(lua_checkstack(L, 3));
    idx = lua_absindex(L, idx);
    int found = 0;
    lua_pushnil(L);
    while (!found && lua_next(L, idx)) {
        found = lua_type(L, -2) == LUA_TTABLE ||
                fuzz_lua_table_key(L, -1, depth + 1);
        lua_pop(L, 1);
    }
    if (found)
        lua_pop(L, 1); /* the key left by the interrupted lua_next */
    return found;
}

static void fuzz_lua_one(lua_State *L, const uint8_t *data, size_t size) {
    int top = lua_gettop(L);
    size_t used = (size_t)-1;
    int rc = rec_value_push_lua(L, data, size, &used);
    FUZZ_CHECK(rc == 0 || rc == REC_EPROTOCOL || rc == REC_ETOOLARGE ||
               rc == REC_ENOMEM);
    FUZZ_CHECK(lua_gettop(L) == top + (rc == 0));
    FUZZ_CHECK(rc == 0 ? used > 0 && used <= size : used == 0);

    size_t su = 0;
    int src = rec_value_scan(data, size, NULL, &su, NULL);
    if (rc == 0)
        FUZZ_CHECK(src == 0 && su == used);
    if (src == REC_ETOOLARGE)
        FUZZ_CHECK(rc == REC_ETOOLARGE);
    if (rc)
        return;

    int has_table_key = fuzz_lua_table_key(L, -1, 0);
    FUZZ_CHECK(lua_gettop(L) == top + 1);
    rec_buf out = REC_BUF_INIT;
    char err[160];
    rc = rec_value_pack_lua(L, -1, &out, err, sizeof err);
    FUZZ_CHECK(lua_gettop(L) == top + 1);
    if (rc) {
        if (!has_table_key)
            fprintf(stderr, "pack refused: %s (%s)\n", rec_err_name(rc), err);
        FUZZ_CHECK(has_table_key);
        FUZZ_CHECK(rc == REC_EINVAL);
        FUZZ_CHECK(out.len == 0);
    } else {
        FUZZ_CHECK(out.len > 0);
        size_t used2 = 0;
        int rc2 = rec_value_push_lua(L, out.data, out.len, &used2);
        if (rc2)
            fprintf(stderr, "repush refused: %s\n", rec_err_name(rc2));
        FUZZ_CHECK(rc2 == 0 && used2 == out.len);
        FUZZ_CHECK(lua_gettop(L) == top + 2);
    }
    rec_buf_free(&out);
    lua_settop(L, top);
}

#endif
