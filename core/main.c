/* main.c - the recd command line. */
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>

#include "lua_api.h"
#include "vec.h"

#define RECD_VERSION "0.1.0"

static void usage(FILE *f) {
    fprintf(f,
            "usage: recd <command> [args]\n"
            "  recd lua FILE [ARGS...]   run a Lua script with the recd module\n"
            "  recd version              print the version and the SIMD kernels in use\n");
}

/* Run a Lua file with `recd` preloaded and `arg` set like lua5.4 does. */
static int cmd_lua(int argc, char **argv) {
    if (argc < 1) {
        usage(stderr);
        return 2;
    }
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "recd: out of memory\n");
        return 1;
    }
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_recd);
    lua_setfield(L, -2, "recd");
    lua_pop(L, 1);
    lua_createtable(L, argc, 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    lua_setglobal(L, "arg");
    int rc = luaL_dofile(L, argv[0]);
    if (rc != LUA_OK) {
        const char *msg = luaL_tolstring(L, -1, NULL);
        fprintf(stderr, "recd: %s\n", msg);
    }
    lua_close(L);
    return rc == LUA_OK ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "lua") == 0)
        return cmd_lua(argc - 2, argv + 2);
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("recd %s (%s kernels)\n", RECD_VERSION, rec_vec_isa_name());
        return 0;
    }
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "recd: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
