/* test_hash.c - SipHash-1-3, the per-process key, and the fixed hash.
 *
 * SipHash-1-3 is checked against vectors printed by tests/unit/siphash_ref.py,
 * a separate implementation in Python written from the paper, which checks
 * itself against the paper's SipHash-2-4 example and against Python's own
 * string hash (SipHash-1-3 with an all-zero key under PYTHONHASHSEED=0).
 * The key-00..0f vectors are also those the reference implementation
 * publishes for SipHash-1-3. Two runs of this program (itself, started with
 * --print-key) must draw different keys. The fixed hash keeps its values,
 * and the experiment split keeps every user in the arm it had.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hash.h"
#include "pipeline.h"

/* SipHash-1-3, key 00 01 .. 0f, message 00 01 .. (n-1) for n = 0..63. */
static const uint64_t vec_seq[64] = {
    0xabac0158050fc4dcull, 0xc9f49bf37d57ca93ull, 0x82cb9b024dc7d44dull,
    0x8bf80ab8e7ddf7fbull, 0xcf75576088d38328ull, 0xdef9d52f49533b67ull,
    0xc50d2b50c59f22a7ull, 0xd3927d989bb11140ull, 0x369095118d299a8eull,
    0x25a48eb36c063de4ull, 0x79de85ee92ff097full, 0x70c118c1f94dc352ull,
    0x78a384b157b4d9a2ull, 0x306f760c1229ffa7ull, 0x605aa111c0f95d34ull,
    0xd320d86d2a519956ull, 0xcc4fdd1a7d908b66ull, 0x9cf2689063dbd80cull,
    0x8ffc389cb473e63eull, 0xf21f9de58d297d1cull, 0xc0dc2f46a6cce040ull,
    0xb992abfe2b45f844ull, 0x7ffe7b9ba320872eull, 0x525a0e7fdae6c123ull,
    0xf464aeb267349c8cull, 0x45cd5928705b0979ull, 0x3a3e35e3ca9913a5ull,
    0xa91dc74e4ade3b35ull, 0xfb0bed02ef6cd00dull, 0x88d93cb44ab1e1f4ull,
    0x540f11d643c5e663ull, 0x2370dd1f8c21d1bcull, 0x81157b6c16a7b60dull,
    0x4d54b9e57a8ff9bfull, 0x759f12781f2a753eull, 0xcea1a3bebf186b91ull,
    0x2cf508d3ada26206ull, 0xb6101c2da3c33057ull, 0xb3f47496ae3a36a1ull,
    0x626b57547b108392ull, 0xc1d2363299e41531ull, 0x667cc1923f1ad944ull,
    0x65704ffec8138825ull, 0x24f280d1c28949a6ull, 0xc2ca1cedfaf8876bull,
    0xc2164bfc9f042196ull, 0xa16e9c9368b1d623ull, 0x49fb169c8b5114fdull,
    0x9f3143f8df074c46ull, 0xc6fdaf2412cc86b3ull, 0x7eaf49d10a52098full,
    0x1cf313559d292f9aull, 0xc44a30dda2f41f12ull, 0x36fae98943a71ed0ull,
    0x318fb34c73f0bce6ull, 0xa27abf3670a7e980ull, 0xb4bcc0db243c6d75ull,
    0x23f8d852fdb71513ull, 0x8f035f4da67d8a08ull, 0xd89cd0e5b7e8f148ull,
    0xf6f4e6bcf7a644eeull, 0xaec59ad80f1837f2ull, 0xc3b2f6154b6694e0ull,
    0x9d199062b7bbb3a8ull,
};

/* SipHash-1-3 with the all-zero key (what Python's hash() gives for these
 * bytes under PYTHONHASHSEED=0). */
static const struct {
    const char *msg;
    uint64_t h;
} vec_zero[] = {
    {"", 0xd1fba762150c532cull},
    {"a", 0x407448d2b89b1813ull},
    {"recd", 0x62e02cac96ba2cd5ull},
    {"user:42", 0x223dd74fb15f308dull},
    {"0123456789abcdef0", 0xf738bb4f30801228ull},
};

static void test_siphash13_vectors(void **state) {
    uint8_t key[16], msg[64];
    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)i;
    for (int i = 0; i < 64; i++)
        msg[i] = (uint8_t)i;
    for (size_t n = 0; n < 64; n++) {
        uint64_t h = rec_hash_siphash13(key, msg, n);
        if (h != vec_seq[n])
            fail_msg("n=%zu: %016" PRIx64 ", want %016" PRIx64, n, h, vec_seq[n]);
    }
    uint8_t zero[16] = {0};
    for (size_t i = 0; i < sizeof vec_zero / sizeof *vec_zero; i++)
        assert_int_equal(rec_hash_siphash13(zero, vec_zero[i].msg, strlen(vec_zero[i].msg)),
                         vec_zero[i].h);
}

/* The data is read where it lies: no alignment assumed. */
static void test_siphash13_unaligned(void **state) {
    uint8_t key[16], buf[80];
    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)i;
    for (size_t off = 1; off < 8; off++) {
        for (int i = 0; i < 63; i++)
            buf[off + (size_t)i] = (uint8_t)i;
        assert_int_equal(rec_hash_siphash13(key, buf + off, 63), vec_seq[63]);
        assert_int_equal(rec_hash_siphash13(key, buf + off, 13), vec_seq[13]);
    }
}

static void test_keyed_uses_the_process_key(void **state) {
    uint64_t k0, k1;
    rec_hash_seed_get(&k0, &k1);
    assert_false(k0 == 0 && k1 == 0);
    uint8_t key[16];
    for (int i = 0; i < 8; i++) {
        key[i] = (uint8_t)(k0 >> (8 * i));
        key[8 + i] = (uint8_t)(k1 >> (8 * i));
    }
    assert_int_equal(rec_hash_keyed("user:42", 7), rec_hash_siphash13(key, "user:42", 7));

    /* A key set by a test gives the same hashes on every run. */
    rec_hash_seed_set(0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull);
    uint8_t seq[20];
    for (int i = 0; i < 20; i++)
        seq[i] = (uint8_t)i;
    assert_int_equal(rec_hash_keyed(seq, 20), vec_seq[20]);
    uint64_t a = rec_hash_keyed("user:42", 7);
    rec_hash_seed_set(1, 2);
    assert_int_not_equal(rec_hash_keyed("user:42", 7), a);
    rec_hash_seed_set(k0, k1);
}

/* Runs this program again with --print-key; its key, or fails. */
static void key_of_a_new_process(uint64_t *k0, uint64_t *k1) {
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 16);
    assert_true(n > 0);
    self[n] = 0;
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "'%s' --print-key", self);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line[128] = "";
    assert_non_null(fgets(line, sizeof line, p));
    assert_int_equal(pclose(p), 0);
    assert_int_equal(sscanf(line, "%" SCNx64 " %" SCNx64, k0, k1), 2);
}

static void test_two_processes_draw_different_keys(void **state) {
    uint64_t a0, a1, b0, b1, c0, c1;
    key_of_a_new_process(&a0, &a1);
    key_of_a_new_process(&b0, &b1);
    rec_hash_seed_get(&c0, &c1);
    assert_false(a0 == b0 && a1 == b1);
    assert_false(a0 == c0 && a1 == c1);
    assert_false(b0 == c0 && b1 == c1);
}

/* The fixed hash: values computed once (FNV-1a 64 with this offset basis,
 * then the finish), never to change. */
static void test_stable_values(void **state) {
    assert_int_equal(rec_hash_stable("", 0), 0xe36f5519ee926a53ull);
    assert_int_equal(rec_hash_stable("a", 1), 0x6cd53dd3a3028c95ull);
    assert_int_equal(rec_hash_stable("recd", 4), 0x9f1e620312f80347ull);
    const char whole[] = "experiment\xffsu42";
    assert_int_equal(rec_hash_stable(whole, sizeof whole - 1), 0x3b56834f882018d1ull);
    uint64_t h = rec_hash_stable_add(REC_HASH_STABLE_INIT, "experiment", 10);
    h = rec_hash_stable_add(h, "\xff", 1);
    h = rec_hash_stable_add(h, "su42", 4);
    assert_int_equal(rec_hash_stable_end(h), 0x3b56834f882018d1ull);
    /* and it does not depend on the process key */
    uint64_t k0, k1;
    rec_hash_seed_get(&k0, &k1);
    rec_hash_seed_set(~k0, ~k1);
    assert_int_equal(rec_hash_stable("recd", 4), 0x9f1e620312f80347ull);
    rec_hash_seed_set(k0, k1);
}

/* Users keep the experiment arm they were given by earlier versions: the
 * arms of su0..su63 under shares 0.2/0.3/0.4 ('-': the default). */
static void test_experiment_arms_unchanged(void **state) {
    static rec_pipeline_config c;
    strcpy(c.experiment, "ranker-test");
    c.narms = 3;
    strcpy(c.arms[0].pipeline, "a");
    c.arms[0].share = 0.2;
    strcpy(c.arms[1].pipeline, "b");
    c.arms[1].share = 0.3;
    strcpy(c.arms[2].pipeline, "c");
    c.arms[2].share = 0.4;
    char got[65];
    for (int i = 0; i < 64; i++) {
        char k[16];
        int l = snprintf(k, sizeof k, "su%d", i);
        int a = rec_pipeline_arm(&c, k, (size_t)l);
        got[i] = a < 0 ? '-' : (char)('0' + a);
    }
    got[64] = 0;
    assert_string_equal(got, "-1-21100212112221--2112002011-11011202122202002212212121112111-1");
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--print-key") == 0) {
        uint64_t k0, k1;
        rec_hash_seed_get(&k0, &k1);
        printf("%016" PRIx64 " %016" PRIx64 "\n", k0, k1);
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_siphash13_vectors),
        cmocka_unit_test(test_siphash13_unaligned),
        cmocka_unit_test(test_keyed_uses_the_process_key),
        cmocka_unit_test(test_two_processes_draw_different_keys),
        cmocka_unit_test(test_stable_values),
        cmocka_unit_test(test_experiment_arms_unchanged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
