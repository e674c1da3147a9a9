/* test_fuzz_regress.c - every input of the fuzzers' checked-in corpora
 * (tests/fuzz/corpus/{rpc,lua}/) through the fuzz harnesses, so the seeds
 * and every crash the fuzzers once found stay regression tests. Runs from
 * the repository root. The harness bodies are shared with the libFuzzer
 * targets (tests/fuzz/fuzz_*_body.h); their checks fail the test here. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

/* The corpus file under test, named by a failing check. */
static const char *cur_file = "";

#define FUZZ_CHECK(cond)                                                      \
    do {                                                                      \
        if (!(cond))                                                          \
            fail_msg("%s: check failed at %s:%d: %s", cur_file, __FILE__,     \
                     __LINE__, #cond);                                        \
    } while (0)

#include "../fuzz/fuzz_lua_body.h"
#include "../fuzz/fuzz_rpc_body.h"

#define CORPUS_DIR "tests/fuzz/corpus/"
#define FUZZ_MAX_LEN 65536 /* the fuzzers' -max_len */

typedef void (*harness_fn)(void *ctx, const uint8_t *data, size_t size);

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Run every regular file of CORPUS_DIR<sub> through fn, in name order.
 * Returns the number of files run. */
static size_t run_corpus(const char *sub, harness_fn fn, void *ctx) {
    char dirpath[256];
    snprintf(dirpath, sizeof dirpath, "%s%s", CORPUS_DIR, sub);
    DIR *d = opendir(dirpath);
    if (!d)
        fail_msg("cannot open %s (run from the repository root)", dirpath);
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **nn = realloc(names, cap * sizeof *names);
            assert_non_null(nn);
            names = nn;
        }
        names[n] = strdup(e->d_name);
        assert_non_null(names[n]);
        n++;
    }
    closedir(d);
    if (n > 0)
        qsort(names, n, sizeof *names, by_name);

    uint8_t *buf = malloc(FUZZ_MAX_LEN);
    assert_non_null(buf);
    char path[512];
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%s", dirpath, names[i]);
        FILE *f = fopen(path, "rb");
        if (!f)
            fail_msg("cannot open %s", path);
        size_t len = fread(buf, 1, FUZZ_MAX_LEN, f);
        int longer = fgetc(f) != EOF;
        fclose(f);
        if (longer)
            fail_msg("%s is over %d bytes, the fuzzers' -max_len", path,
                     FUZZ_MAX_LEN);
        /* An exact-size copy, so ASan sees a read past the input's end. */
        uint8_t *in = malloc(len ? len : 1);
        assert_non_null(in);
        memcpy(in, buf, len);
        cur_file = path;
        fn(ctx, in, len);
        cur_file = "";
        free(in);
        free(names[i]);
    }
    free(buf);
    free(names);
    return n;
}

static void rpc_harness(void *ctx, const uint8_t *data, size_t size) {
    (void)ctx;
    fuzz_rpc_one(data, size);
}

static void lua_harness(void *ctx, const uint8_t *data, size_t size) {
    lua_State *L = ctx;
    fuzz_lua_one(L, data, size);
    FUZZ_CHECK(lua_gettop(L) == 0);
}

static void test_rpc_corpus(void **state) {
    (void)state;
    size_t n = run_corpus("rpc", rpc_harness, NULL);
    assert_true(n >= 10);
}

static void test_lua_corpus(void **state) {
    (void)state;
    /* One state for the whole corpus, as in the fuzzer. */
    lua_State *L = luaL_newstate();
    assert_non_null(L);
    size_t n = run_corpus("lua", lua_harness, L);
    lua_close(L);
    assert_true(n >= 10);
}

/* Each corpus through the other harness too: both take any bytes. */
static void test_cross_corpus(void **state) {
    (void)state;
    lua_State *L = luaL_newstate();
    assert_non_null(L);
    run_corpus("rpc", lua_harness, L);
    lua_close(L);
    run_corpus("lua", rpc_harness, NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rpc_corpus),
        cmocka_unit_test(test_lua_corpus),
        cmocka_unit_test(test_cross_corpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
