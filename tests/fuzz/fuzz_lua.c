/* fuzz_lua.c - libFuzzer target: msgpack -> Lua (rec_value_push_lua) and back
 * (rec_value_pack_lua). One lua_State serves every input, as one script VM
 * serves many requests. The harness is fuzz_lua_body.h, which the corpus
 * regression test runs too. Build and run with tests/fuzz/run.sh. */
#include <stddef.h>
#include <stdint.h>

#include <lauxlib.h>

#include "fuzz_lua_body.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static lua_State *L; /* reused; released at process exit */
    if (!L) {
        L = luaL_newstate();
        FUZZ_CHECK(L != NULL);
    }
    fuzz_lua_one(L, data, size);
    FUZZ_CHECK(lua_gettop(L) == 0);
    return 0;
}
