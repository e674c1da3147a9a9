/* test_idmap.c - id encoding and the id <-> dense index map.
 *
 * Encoding: string and integer ids never collide, integer keys sort by
 * value under memcmp, decoding round-trips, and the length limits hold.
 * Map: dense interning, lookups after many rehashes, removal leaves a hole
 * whose index is never handed out again, insert_at (the loading path) with
 * holes and conflicts, and tombstones surviving rebuilds. Keys are derived
 * from loop counters, so every run is the same. Flooding: ids found by
 * brute force to share one home slot under one hash key fill one probe
 * run under it, and spread under another key.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "hash.h"
#include "idmap.h"

/* ---- helpers --------------------------------------------------------- */

/* Key of the string id "item-<n>". */
static size_t str_key(char *out, unsigned n) {
    char s[32];
    int len = snprintf(s, sizeof s, "item-%u", n);
    int klen = rec_id_str(out, s, (size_t)len);
    assert_true(klen > 0);
    return (size_t)klen;
}

static uint32_t intern_new(rec_idmap *m, const char *key, size_t klen) {
    uint32_t idx = REC_IDX_NONE;
    int created = -1;
    assert_int_equal(rec_idmap_intern(m, key, klen, &idx, &created), 0);
    assert_int_equal(created, 1);
    return idx;
}

/* The table invariants every operation must keep. */
static void check_table(const rec_idmap *m) {
    assert_true(m->nslots == 0 || (m->nslots & (m->nslots - 1)) == 0);
    assert_true(m->used >= m->live);
    assert_true(m->used * 10 < m->nslots * 7 || m->nslots == 0);
    assert_true(m->live <= m->next);
}

/* ---- encoding -------------------------------------------------------- */

static void test_str_and_int_distinct(void **state) {
    char ks[REC_ID_MAX], ki[REC_ID_MAX];
    int ls = rec_id_str(ks, "42", 2);
    int li = rec_id_int(ki, 42);
    assert_int_equal(ls, 3);
    assert_int_equal(li, 9);
    assert_memory_equal(ks, "s42", 3);
    assert_int_equal(ki[0], 'i');

    rec_idmap m;
    rec_idmap_init(&m);
    uint32_t a = intern_new(&m, ks, (size_t)ls);
    uint32_t b = intern_new(&m, ki, (size_t)li);
    assert_int_not_equal(a, b);
    assert_int_equal(rec_idmap_find(&m, ks, (size_t)ls), a);
    assert_int_equal(rec_idmap_find(&m, ki, (size_t)li), b);

    /* The same bytes without the tag are not the id. */
    assert_int_equal(rec_idmap_find(&m, "42", 2), REC_IDX_NONE);
    rec_idmap_close(&m);
}

static void test_int_keys_sort_by_value(void **state) {
    const int64_t v[] = {INT64_MIN, INT64_MIN + 1, -65536, -256, -5, -1,
                         0,         1,             7,      255,  256,
                         65536,     INT64_MAX - 1, INT64_MAX};
    const size_t n = sizeof v / sizeof v[0];
    char prev[9], cur[9];
    assert_int_equal(rec_id_int(prev, v[0]), 9);
    for (size_t i = 1; i < n; i++) {
        assert_int_equal(rec_id_int(cur, v[i]), 9);
        if (memcmp(prev, cur, 9) >= 0)
            fail_msg("key(%lld) does not sort before key(%lld)",
                     (long long)v[i - 1], (long long)v[i]);
        memcpy(prev, cur, 9);
    }

    /* Three keys spelled out: a negative, zero and a positive integer. */
    char km5[9], k0[9], k7[9];
    rec_id_int(km5, -5);
    rec_id_int(k0, 0);
    rec_id_int(k7, 7);
    assert_true(memcmp(km5, k0, 9) < 0);
    assert_true(memcmp(k0, k7, 9) < 0);
    assert_true(memcmp(km5, k7, 9) < 0);
}

static void test_decode_round_trip(void **state) {
    const int64_t v[] = {INT64_MIN, -1, 0, 1, 42, INT64_MAX, -4242424242LL};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char k[9];
        int is_int = -1;
        int64_t iv = 0;
        const char *s = NULL;
        size_t len = 0;
        assert_int_equal(rec_id_int(k, v[i]), 9);
        assert_int_equal(rec_id_decode(k, 9, &is_int, &iv, &s, &len), 0);
        assert_int_equal(is_int, 1);
        if (iv != v[i])
            fail_msg("decoded %lld, want %lld", (long long)iv,
                     (long long)v[i]);
    }

    /* Strings, including an embedded NUL and a multi-byte character. */
    const char raw[] = {'a', 0, (char)0xc3, (char)0xa9, 'z'};
    char k[REC_ID_MAX];
    int kl = rec_id_str(k, raw, sizeof raw);
    assert_int_equal(kl, 6);
    int is_int = -1;
    int64_t iv = 0;
    const char *s = NULL;
    size_t len = 0;
    assert_int_equal(rec_id_decode(k, (size_t)kl, &is_int, &iv, &s, &len), 0);
    assert_int_equal(is_int, 0);
    assert_int_equal(len, sizeof raw);
    assert_ptr_equal(s, k + 1); /* borrowed from the key */
    assert_memory_equal(s, raw, sizeof raw);

    /* Malformed keys. */
    assert_int_equal(rec_id_decode("s", 1, &is_int, &iv, &s, &len),
                     REC_ECORRUPT);
    assert_int_equal(rec_id_decode("", 0, &is_int, &iv, &s, &len),
                     REC_ECORRUPT);
    assert_int_equal(rec_id_decode("i1234567", 8, &is_int, &iv, &s, &len),
                     REC_ECORRUPT);
    assert_int_equal(rec_id_decode("i123456789", 10, &is_int, &iv, &s, &len),
                     REC_ECORRUPT);
    assert_int_equal(rec_id_decode("x12345678", 9, &is_int, &iv, &s, &len),
                     REC_ECORRUPT);
}

static void test_str_length_limits(void **state) {
    char k[REC_ID_MAX + 8];
    char s[300];
    memset(s, 'q', sizeof s);

    assert_int_equal(rec_id_str(k, "", 0), REC_EINVAL);
    assert_int_equal(rec_id_str(k, s, 1), 2);
    assert_int_equal(rec_id_str(k, s, REC_ID_MAX - 1), REC_ID_MAX);
    assert_int_equal(rec_id_str(k, s, REC_ID_MAX), REC_ETOOLARGE);
    assert_int_equal(rec_id_str(k, s, 299), REC_ETOOLARGE);

    /* The longest id is a usable key. */
    rec_idmap m;
    rec_idmap_init(&m);
    int kl = rec_id_str(k, s, 255);
    assert_int_equal(kl, 256);
    uint32_t idx = intern_new(&m, k, (size_t)kl);
    assert_int_equal(rec_idmap_find(&m, k, (size_t)kl), idx);
    size_t got = 0;
    const char *stored = rec_idmap_key(&m, idx, &got);
    assert_non_null(stored);
    assert_int_equal(got, 256);
    assert_memory_equal(stored, k, 256);
    /* One byte shorter is a different id. */
    assert_int_equal(rec_idmap_find(&m, k, 255), REC_IDX_NONE);
    rec_idmap_close(&m);
}

/* ---- map ------------------------------------------------------------- */

static void test_intern_dense(void **state) {
    rec_idmap m;
    rec_idmap_init(&m);
    assert_int_equal(rec_idmap_find(&m, "sx", 2), REC_IDX_NONE);
    char k[REC_ID_MAX];
    for (unsigned i = 0; i < 1000; i++) {
        size_t kl = str_key(k, i);
        assert_int_equal(intern_new(&m, k, kl), i);
    }
    assert_int_equal(m.live, 1000);
    assert_int_equal(m.next, 1000);
    /* Interning again finds, never creates. */
    for (unsigned i = 0; i < 1000; i += 7) {
        size_t kl = str_key(k, i);
        uint32_t idx = 0;
        int created = -1;
        assert_int_equal(rec_idmap_intern(&m, k, kl, &idx, &created), 0);
        assert_int_equal(created, 0);
        assert_int_equal(idx, i);
        /* created may be NULL */
        assert_int_equal(rec_idmap_intern(&m, k, kl, &idx, NULL), 0);
        assert_int_equal(idx, i);
    }
    assert_int_equal(m.next, 1000);
    check_table(&m);
    rec_idmap_close(&m);
}

static void test_find_after_many_inserts(void **state) {
    enum { N = 100000 };
    rec_idmap m;
    rec_idmap_init(&m);
    char k[REC_ID_MAX];
    for (unsigned i = 0; i < N; i++) {
        /* Alternate string and integer ids. */
        size_t kl = i % 2 ? str_key(k, i) : (size_t)rec_id_int(k, -(int64_t)i);
        assert_int_equal(intern_new(&m, k, kl), i);
    }
    check_table(&m);
    assert_true(m.nslots >= N); /* it did rehash, repeatedly */
    for (unsigned i = 0; i < N; i++) {
        size_t kl = i % 2 ? str_key(k, i) : (size_t)rec_id_int(k, -(int64_t)i);
        uint32_t idx = rec_idmap_find(&m, k, kl);
        if (idx != i)
            fail_msg("find(%u) = %u", i, idx);
        size_t sl = 0;
        const char *stored = rec_idmap_key(&m, i, &sl);
        assert_non_null(stored);
        assert_int_equal(sl, kl);
        assert_memory_equal(stored, k, kl);
    }
    /* Ids never inserted. */
    for (unsigned i = N; i < N + 1000; i++) {
        size_t kl = str_key(k, i);
        assert_int_equal(rec_idmap_find(&m, k, kl), REC_IDX_NONE);
    }
    rec_idmap_close(&m);
}

static void test_remove_leaves_hole(void **state) {
    rec_idmap m;
    rec_idmap_init(&m);
    char k[REC_ID_MAX];
    for (unsigned i = 0; i < 10; i++)
        intern_new(&m, k, str_key(k, i));

    size_t kl = str_key(k, 4);
    rec_idmap_remove(&m, 4);
    assert_false(rec_idmap_alive(&m, 4));
    size_t sl = 99;
    assert_null(rec_idmap_key(&m, 4, &sl));
    assert_int_equal(rec_idmap_find(&m, k, kl), REC_IDX_NONE);
    assert_int_equal(m.live, 9);
    assert_int_equal(m.next, 10);

    /* Removing again, or an index never handed out, changes nothing. */
    rec_idmap_remove(&m, 4);
    rec_idmap_remove(&m, 10);
    rec_idmap_remove(&m, 123456);
    rec_idmap_remove(&m, REC_IDX_NONE);
    assert_int_equal(m.live, 9);

    /* The neighbours are untouched. */
    for (unsigned i = 0; i < 10; i++) {
        if (i == 4)
            continue;
        char k2[REC_ID_MAX];
        assert_int_equal(rec_idmap_find(&m, k2, str_key(k2, i)), i);
        assert_true(rec_idmap_alive(&m, i));
    }

    /* The id comes back with a new index; 4 stays a hole. */
    uint32_t idx = intern_new(&m, k, kl);
    assert_int_equal(idx, 10);
    assert_false(rec_idmap_alive(&m, 4));
    assert_int_equal(rec_idmap_find(&m, k, kl), 10);
    /* Removing the last index does not hand it out again either. */
    rec_idmap_remove(&m, 10);
    assert_int_equal(intern_new(&m, k, kl), 11);
    check_table(&m);
    rec_idmap_close(&m);
}

static void test_insert_at(void **state) {
    rec_idmap m;
    rec_idmap_init(&m);
    char k[REC_ID_MAX];

    /* Loading out of order, with holes. */
    assert_int_equal(rec_idmap_insert_at(&m, k, str_key(k, 5), 5), 0);
    assert_int_equal(rec_idmap_insert_at(&m, k, str_key(k, 2), 2), 0);
    assert_int_equal(rec_idmap_insert_at(&m, k, str_key(k, 300), 300), 0);
    assert_int_equal(m.next, 301);
    assert_int_equal(m.live, 3);
    for (uint32_t i = 0; i < 301; i++) {
        int want = i == 2 || i == 5 || i == 300;
        assert_int_equal(rec_idmap_alive(&m, i), want);
    }
    assert_int_equal(rec_idmap_find(&m, k, str_key(k, 5)), 5);
    assert_int_equal(rec_idmap_find(&m, k, str_key(k, 2)), 2);
    assert_int_equal(rec_idmap_find(&m, k, str_key(k, 300)), 300);

    /* Taken key (at another index) and taken index (with another key). */
    assert_int_equal(rec_idmap_insert_at(&m, k, str_key(k, 5), 7),
                     REC_EEXISTS);
    assert_int_equal(rec_idmap_insert_at(&m, k, str_key(k, 9), 5),
                     REC_EEXISTS);
    assert_int_equal(rec_idmap_insert_at(&m, k, str_key(k, 5), 5),
                     REC_EEXISTS);
    assert_false(rec_idmap_alive(&m, 7));
    assert_int_equal(rec_idmap_find(&m, k, str_key(k, 9)), REC_IDX_NONE);
    assert_int_equal(m.live, 3);

    /* Bad arguments. */
    assert_int_equal(rec_idmap_insert_at(&m, k, 0, 8), REC_EINVAL);
    assert_int_equal(rec_idmap_insert_at(&m, k, REC_ID_MAX + 1, 8),
                     REC_EINVAL);
    assert_int_equal(rec_idmap_insert_at(&m, k, str_key(k, 8), REC_IDX_NONE),
                     REC_EINVAL);

    /* A hole below next can be filled (the store names it). */
    assert_int_equal(rec_idmap_insert_at(&m, k, str_key(k, 3), 3), 0);
    assert_int_equal(rec_idmap_find(&m, k, str_key(k, 3)), 3);
    assert_int_equal(m.next, 301);

    /* Interning continues after the highest index. */
    assert_int_equal(intern_new(&m, k, str_key(k, 1000)), 301);
    check_table(&m);
    rec_idmap_close(&m);
}

static void test_tombstones_and_rehash(void **state) {
    enum { N = 50000 };
    rec_idmap m;
    rec_idmap_init(&m);
    char k[REC_ID_MAX];
    for (unsigned i = 0; i < N; i++)
        assert_int_equal(intern_new(&m, k, str_key(k, i)), i);
    for (unsigned i = 0; i < N; i += 2)
        rec_idmap_remove(&m, i);
    assert_int_equal(m.live, N / 2);
    check_table(&m);
    for (unsigned i = N; i < 2 * N; i++) {
        assert_int_equal(intern_new(&m, k, str_key(k, i)), i);
        if (i % 4096 == 0)
            check_table(&m);
    }
    check_table(&m);
    assert_int_equal(m.live, N / 2 + N);
    for (unsigned i = 0; i < 2 * N; i++) {
        size_t kl = str_key(k, i);
        uint32_t want = (i < N && i % 2 == 0) ? REC_IDX_NONE : i;
        uint32_t got = rec_idmap_find(&m, k, kl);
        if (got != want)
            fail_msg("find(item-%u) = %u, want %u", i, got, want);
        assert_int_equal(rec_idmap_alive(&m, i), want != REC_IDX_NONE);
    }

    /* Churn on a small map: the same few ids removed and re-interned
     * many times must not fill the table with tombstones. */
    rec_idmap small;
    rec_idmap_init(&small);
    uint32_t ids[8];
    for (unsigned i = 0; i < 8; i++)
        ids[i] = intern_new(&small, k, str_key(k, i));
    for (unsigned round = 0; round < 5000; round++) {
        unsigned j = round % 8;
        rec_idmap_remove(&small, ids[j]);
        ids[j] = intern_new(&small, k, str_key(k, j));
        check_table(&small);
    }
    assert_true(small.nslots <= 64);
    for (unsigned i = 0; i < 8; i++)
        assert_int_equal(rec_idmap_find(&small, k, str_key(k, i)), ids[i]);
    rec_idmap_close(&small);
    rec_idmap_close(&m);
}

/* Keys are compared in the slot up to REC_ID_INLINE bytes and confirmed
 * against the stored key beyond: keys on both sides of that length, long
 * keys alike in their first bytes, keys that are prefixes of each other,
 * and the longest key, all stay distinct through rehashes and removals. */
static void test_inline_and_long_keys(void **state) {
    static const size_t lens[] = {1, 2, REC_ID_INLINE - 1, REC_ID_INLINE,
                                  REC_ID_INLINE + 1, 32, 254, 255, REC_ID_MAX};
    const size_t nl = sizeof lens / sizeof lens[0];
    enum { VARIANTS = 300 };
    static char keys[sizeof lens / sizeof lens[0]][VARIANTS][REC_ID_MAX];
    static uint32_t idx[sizeof lens / sizeof lens[0]][VARIANTS];
    rec_idmap m;
    rec_idmap_init(&m);
    for (size_t l = 0; l < nl; l++)
        for (unsigned v = 0; v < VARIANTS; v++) {
            /* All alike but the last two bytes (a shared prefix longer
             * than what the slot keeps, for the long ones). */
            memset(keys[l][v], 'k', lens[l]);
            keys[l][v][lens[l] - 1] = (char)('A' + v % 64);
            if (lens[l] > 1)
                keys[l][v][lens[l] - 2] = (char)('A' + v / 64);
            int dup = lens[l] == 1 && v >= 64;
            if (dup)
                continue;
            idx[l][v] = intern_new(&m, keys[l][v], lens[l]);
        }
    check_table(&m);
    for (size_t l = 0; l < nl; l++)
        for (unsigned v = 0; v < VARIANTS; v++) {
            if (lens[l] == 1 && v >= 64)
                continue;
            assert_int_equal(rec_idmap_find(&m, keys[l][v], lens[l]), idx[l][v]);
            size_t kl = 0;
            const char *k = rec_idmap_key(&m, idx[l][v], &kl);
            assert_int_equal(kl, lens[l]);
            assert_memory_equal(k, keys[l][v], kl);
            /* One byte shorter or longer is another key. */
            if (lens[l] > 2)
                assert_true(rec_idmap_find(&m, keys[l][v], lens[l] - 1) !=
                            idx[l][v]);
        }
    /* Remove every other long key; the rest are still found, the removed
     * are not, and adding them again gives new indexes. */
    for (unsigned v = 0; v < VARIANTS; v += 2)
        rec_idmap_remove(&m, idx[nl - 1][v]);
    for (unsigned v = 0; v < VARIANTS; v++) {
        uint32_t got = rec_idmap_find(&m, keys[nl - 1][v], REC_ID_MAX);
        assert_int_equal(got, v % 2 ? idx[nl - 1][v] : REC_IDX_NONE);
    }
    for (unsigned v = 0; v < VARIANTS; v += 2) {
        uint32_t again = intern_new(&m, keys[nl - 1][v], REC_ID_MAX);
        assert_true(again >= idx[nl - 1][VARIANTS - 1]);
    }
    check_table(&m);
    /* The hashed entry points agree with the plain ones. */
    uint64_t h = rec_idmap_hash(keys[4][7], lens[4]);
    assert_int_equal(rec_idmap_find_hashed(&m, keys[4][7], lens[4], h), idx[4][7]);
    rec_idmap_close(&m);
}

static void test_close_empty_and_reuse(void **state) {
    rec_idmap m;
    rec_idmap_init(&m);
    rec_idmap_close(&m); /* never used */
    rec_idmap_close(&m); /* twice */
    char k[REC_ID_MAX];
    assert_int_equal(intern_new(&m, k, str_key(k, 1)), 0);
    rec_idmap_close(&m);
    assert_int_equal(m.next, 0);
    assert_int_equal(rec_idmap_find(&m, k, str_key(k, 1)), REC_IDX_NONE);
}

/* String ids are UTF-8: malformed sequences, overlongs, surrogates and
 * code points past U+10FFFF are refused; every valid form is kept. */
static void test_id_utf8(void **state) {
    (void)state;
    char out[REC_ID_MAX];
    static const char *const good[] = {"plain", "caf\xc3\xa9", "\xe2\x82\xac",
                                       "\xf0\x9f\x8e\xac", "\xf4\x8f\xbf\xbf", NULL};
    static const char *const bad[] = {"\xff", "\xc3", "\xc0\xaf", "\xe0\x80\xaf",
                                      "\xed\xa0\x80", "\xf4\x90\x80\x80",
                                      "ok\x80", "\xe2\x82", NULL};
    for (int i = 0; good[i]; i++)
        assert_int_equal(rec_id_str(out, good[i], strlen(good[i])),
                         (int)strlen(good[i]) + 1);
    for (int i = 0; bad[i]; i++)
        assert_int_equal(rec_id_str(out, bad[i], strlen(bad[i])), REC_EINVAL);
}

/* ---- flooding ---------------------------------------------------------- */

/* Sum and maximum over the live slots of how far each sits past its home
 * slot (the probes a lookup of it costs, less one); checks each slot's
 * tag and inline bytes against its key on the way. */
static void displacement(const rec_idmap *m, size_t *sum, size_t *max) {
    size_t mask = m->nslots - 1;
    *sum = *max = 0;
    for (size_t i = 0; i < m->nslots; i++) {
        const rec_idslot *sl = &m->slots[i];
        if (sl->idx1 == 0 || sl->idx1 == UINT32_MAX)
            continue;
        size_t kl;
        const char *k = rec_idmap_key(m, sl->idx1 - 1, &kl);
        assert_non_null(k);
        uint64_t h = rec_idmap_hash(k, kl);
        assert_int_equal(sl->tag, (uint16_t)(h >> 48));
        assert_memory_equal(sl->inl, k, kl < REC_ID_INLINE ? kl : REC_ID_INLINE);
        size_t d = (i - (size_t)(h & mask)) & mask;
        *sum += d;
        if (d > *max)
            *max = d;
    }
}

#define FLOOD 40 /* ids; the map keeps them in 64 slots */

static void test_crafted_collisions_spread_under_another_key(void **state) {
    uint64_t k0, k1;
    rec_hash_seed_get(&k0, &k1);
    /* Under key A: ids "item-<n>" whose hash has the same low 6 bits (one
     * home slot in a map of 64), found by trying n = 0, 1, 2, ... */
    rec_hash_seed_set(0x243f6a8885a308d3ull, 0x13198a2e03707344ull);
    static char keys[FLOOD][REC_ID_MAX];
    size_t lens[FLOOD];
    unsigned found = 0;
    for (unsigned n = 0; found < FLOOD; n++) {
        assert_true(n < 100000);
        size_t l = str_key(keys[found], n);
        if ((rec_idmap_hash(keys[found], l) & 63) == 0)
            lens[found++] = l;
    }
    rec_idmap m;
    rec_idmap_init(&m);
    for (unsigned i = 0; i < FLOOD; i++)
        assert_int_equal(intern_new(&m, keys[i], lens[i]), i);
    assert_int_equal(m.nslots, 64);
    size_t sum, max;
    displacement(&m, &sum, &max);
    assert_int_equal(max, FLOOD - 1); /* one run: the i-th id probes i slots */
    assert_int_equal(sum, FLOOD * (FLOOD - 1) / 2);
    rec_idmap_close(&m);

    /* Under key B the same ids scatter like any others. */
    rec_hash_seed_set(0xa4093822299f31d0ull, 0x082efa98ec4e6c89ull);
    rec_idmap_init(&m);
    for (unsigned i = 0; i < FLOOD; i++)
        assert_int_equal(intern_new(&m, keys[i], lens[i]), i);
    assert_int_equal(m.nslots, 64);
    displacement(&m, &sum, &max);
    print_message("under another key: %zu probes past home in all, at most %zu\n", sum, max);
    assert_true(max < 16);
    assert_true(sum < FLOOD * (FLOOD - 1) / 8);
    for (unsigned i = 0; i < FLOOD; i++)
        assert_int_equal(rec_idmap_find(&m, keys[i], lens[i]), i);
    check_table(&m);
    rec_idmap_close(&m);
    rec_hash_seed_set(k0, k1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id_utf8),
        cmocka_unit_test(test_str_and_int_distinct),
        cmocka_unit_test(test_int_keys_sort_by_value),
        cmocka_unit_test(test_decode_round_trip),
        cmocka_unit_test(test_str_length_limits),
        cmocka_unit_test(test_intern_dense),
        cmocka_unit_test(test_find_after_many_inserts),
        cmocka_unit_test(test_remove_leaves_hole),
        cmocka_unit_test(test_insert_at),
        cmocka_unit_test(test_tombstones_and_rehash),
        cmocka_unit_test(test_close_empty_and_reuse),
        cmocka_unit_test(test_inline_and_long_keys),
        cmocka_unit_test(test_crafted_collisions_spread_under_another_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
