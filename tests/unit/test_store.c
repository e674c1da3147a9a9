/* test_store.c - LMDB store: open, reads, scans, batches, map growth,
 * read-only opens beside a writer process and a writer thread. Each test
 * runs in its own mkdtemp folder, removed afterwards. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "store.h"

#define MIB ((size_t)1 << 20)

/* ---- fixture --------------------------------------------------------- */

static int setup_dir(void **state) {
    char tmpl[] = "/tmp/recd-test-store-XXXXXX";
    if (!mkdtemp(tmpl))
        return -1;
    *state = strdup(tmpl);
    return *state ? 0 : -1;
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw) {
    return remove(path);
}

static int teardown_dir(void **state) {
    char *dir = *state;
    chmod(dir, 0700);
    int rc = nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
    return rc;
}

/* ---- helpers --------------------------------------------------------- */

static void path_in(char *out, size_t n, const char *dir, const char *name) {
    snprintf(out, n, "%s/%s", dir, name);
}

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static rec_store_opts fast_opts(void) {
    rec_store_opts o;
    rec_store_opts_default(&o);
    o.no_sync = 1;
    return o;
}

static rec_store *open_ok(const char *dir, const rec_store_opts *o) {
    char err[512];
    rec_store *s = NULL;
    int rc = rec_store_open(&s, dir, o, err, sizeof err);
    if (rc)
        print_error("open %s: %s\n", dir, err);
    assert_int_equal(rc, 0);
    assert_non_null(s);
    assert_string_equal(err, "");
    return s;
}

static void put_str(rec_store *s, rec_dbi db, const char *k, const char *v) {
    rec_batch *b = rec_batch_new();
    assert_non_null(b);
    assert_int_equal(rec_batch_put(b, db, k, strlen(k), v, strlen(v)), 0);
    assert_int_equal(rec_store_commit(s, b), 0);
    rec_batch_free(b);
}

static void expect_val(rec_store *s, rec_dbi db, const void *k, size_t kl,
                       const void *v, size_t vl) {
    rec_buf out = REC_BUF_INIT;
    assert_int_equal(rec_store_get(s, db, k, kl, &out), 0);
    assert_int_equal(out.len, vl);
    if (vl)
        assert_memory_equal(out.data, v, vl);
    rec_buf_free(&out);
}

static void expect_str(rec_store *s, rec_dbi db, const char *k,
                       const char *v) {
    expect_val(s, db, k, strlen(k), v, strlen(v));
}

static void expect_absent(rec_store *s, rec_dbi db, const void *k,
                          size_t kl) {
    rec_buf out = REC_BUF_INIT;
    assert_int_equal(rec_store_get(s, db, k, kl, &out), REC_ENOTFOUND);
    rec_buf_free(&out);
}

static size_t count_of(rec_store *s, rec_dbi db) {
    rec_rtxn *t;
    size_t n = 0;
    assert_int_equal(rec_store_read_begin(s, &t), 0);
    assert_int_equal(rec_rtxn_count(t, db, &n), 0);
    rec_store_read_end(t);
    return n;
}

/* Scan collector: renders visited keys as "k1|k2|...", bytes outside
 * printable ASCII as <hh>. */
typedef struct collect {
    char out[2048];
    size_t len;
    int visits;
    int stop_at; /* return 1 on this visit (1-based); 0: never */
    int fail_at; /* return REC_EDIM on this visit; 0: never */
} collect;

static int collect_cb(void *ud, rec_val key, rec_val val) {
    collect *c = ud;
    const unsigned char *p = key.data;
    c->visits++;
    if (c->len && c->len < sizeof c->out - 1)
        c->out[c->len++] = '|';
    for (size_t i = 0; i < key.len && c->len < sizeof c->out - 8; i++) {
        if (p[i] >= 0x21 && p[i] < 0x7f && p[i] != '<' && p[i] != '|')
            c->out[c->len++] = (char)p[i];
        else
            c->len += (size_t)snprintf(c->out + c->len, 5, "<%02x>", p[i]);
    }
    c->out[c->len] = '\0';
    if (c->fail_at == c->visits)
        return REC_EDIM;
    if (c->stop_at == c->visits)
        return 1;
    return 0;
}

static const char *scan_str(rec_store *s, rec_dbi db, const char *prefix,
                            size_t plen, int reverse, collect *c) {
    rec_rtxn *t;
    memset(c, 0, sizeof *c);
    assert_int_equal(rec_store_read_begin(s, &t), 0);
    assert_int_equal(rec_rtxn_scan(t, db, prefix, plen, reverse, collect_cb, c),
                     0);
    rec_store_read_end(t);
    return c->out;
}

static void put_raw_keys(rec_store *s, rec_dbi db, const char *const *keys,
                         const size_t *lens, size_t n) {
    rec_batch *b = rec_batch_new();
    assert_non_null(b);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(rec_batch_put(b, db, keys[i], lens[i], "v", 1), 0);
    assert_int_equal(rec_store_commit(s, b), 0);
    rec_batch_free(b);
}

/* ---- tests ----------------------------------------------------------- */

static void test_open_create(void **state) {
    const char *root = *state;
    char dir[512], file[600];
    path_in(dir, sizeof dir, root, "data");
    assert_false(exists(dir));

    rec_store_opts o = fast_opts();
    rec_store *s = open_ok(dir, &o);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0700);
    path_in(file, sizeof file, dir, "data.mdb");
    assert_true(exists(file));
    assert_int_equal(rec_store_read_only(s), 0);
    assert_string_equal(rec_store_errmsg(s), "");

    static const unsigned char v1[4] = {0, 0, 0, 1};
    expect_val(s, REC_DB_META, "schema_version", 14, v1, 4);

    static const char *const names[REC_DB__COUNT] = {
        "meta",  "item_ids", "item_keys", "user_ids", "user_keys",
        "items", "users",    "vectors",   "events",
        "counters", "kv",    "recs",     "models"};
    for (int i = 0; i < REC_DB__COUNT; i++) {
        assert_string_equal(rec_store_db_name((rec_dbi)i), names[i]);
        assert_int_equal(count_of(s, (rec_dbi)i), i == REC_DB_META ? 1 : 0);
    }
    assert_string_equal(rec_store_db_name(REC_DB__COUNT), "unknown");
    rec_store_free(s);
    rec_store_free(NULL);

    /* An existing empty folder is fine too. */
    path_in(dir, sizeof dir, root, "empty");
    assert_int_equal(mkdir(dir, 0755), 0);
    s = open_ok(dir, &o);
    rec_store_free(s);
}

static void test_put_get_del(void **state) {
    rec_store_opts o = fast_opts();
    rec_store *s = open_ok(*state, &o);

    put_str(s, REC_DB_KV, "alpha", "1");
    put_str(s, REC_DB_KV, "beta", "22");
    expect_str(s, REC_DB_KV, "alpha", "1");
    expect_str(s, REC_DB_KV, "beta", "22");
    put_str(s, REC_DB_KV, "alpha", "333"); /* overwrite */
    expect_str(s, REC_DB_KV, "alpha", "333");
    put_str(s, REC_DB_KV, "empty", ""); /* empty values are values */
    expect_str(s, REC_DB_KV, "empty", "");

    rec_batch *b = rec_batch_new();
    assert_non_null(b);
    assert_int_equal(rec_batch_del(b, REC_DB_KV, "beta", 4), 0);
    assert_int_equal(rec_batch_del(b, REC_DB_KV, "missing", 7), 0);
    assert_int_equal(rec_store_commit(s, b), 0);
    rec_batch_free(b);
    expect_absent(s, REC_DB_KV, "beta", 4);
    expect_str(s, REC_DB_KV, "alpha", "333");
    assert_int_equal(count_of(s, REC_DB_KV), 2);

    /* Views are borrowed from the rtxn. */
    rec_rtxn *t;
    rec_val v;
    assert_int_equal(rec_store_read_begin(s, &t), 0);
    assert_int_equal(rec_rtxn_get(t, REC_DB_KV, "alpha", 5, &v), 0);
    assert_int_equal(v.len, 3);
    assert_memory_equal(v.data, "333", 3);
    assert_int_equal(rec_rtxn_get(t, REC_DB_KV, "beta", 4, &v),
                     REC_ENOTFOUND);
    assert_int_equal(rec_rtxn_get(t, REC_DB_ITEMS, "alpha", 5, &v),
                     REC_ENOTFOUND);
    assert_int_equal(rec_rtxn_get(t, REC_DB__COUNT, "alpha", 5, &v),
                     REC_EINVAL);
    assert_int_equal(rec_rtxn_get(t, REC_DB_KV, "", 0, &v), REC_EINVAL);
    rec_store_read_end(t);
    rec_store_read_end(NULL);
    rec_store_free(s);
}

static void test_dbs_independent(void **state) {
    rec_store_opts o = fast_opts();
    rec_store *s = open_ok(*state, &o);
    rec_batch *b = rec_batch_new();
    assert_non_null(b);
    char v[16];
    for (int i = 0; i < REC_DB__COUNT; i++) {
        int n = snprintf(v, sizeof v, "v%d", i);
        assert_int_equal(rec_batch_put(b, (rec_dbi)i, "k", 1, v, (size_t)n),
                         0);
    }
    assert_int_equal(rec_store_commit(s, b), 0);
    for (int i = 0; i < REC_DB__COUNT; i++) {
        snprintf(v, sizeof v, "v%d", i);
        expect_str(s, (rec_dbi)i, "k", v);
        assert_int_equal(count_of(s, (rec_dbi)i), i == REC_DB_META ? 2 : 1);
    }

    rec_batch_clear(b);
    assert_int_equal(rec_batch_del(b, REC_DB_VECTORS, "k", 1), 0);
    assert_int_equal(rec_batch_del_prefix(b, REC_DB_KV, NULL, 0), 0);
    assert_int_equal(rec_store_commit(s, b), 0);
    rec_batch_free(b);
    for (int i = 0; i < REC_DB__COUNT; i++) {
        if (i == REC_DB_VECTORS || i == REC_DB_KV) {
            expect_absent(s, (rec_dbi)i, "k", 1);
            assert_int_equal(count_of(s, (rec_dbi)i), 0);
        } else {
            snprintf(v, sizeof v, "v%d", i);
            expect_str(s, (rec_dbi)i, "k", v);
        }
    }
    rec_store_free(s);
}

static void test_scan_prefix(void **state) {
    rec_store_opts o = fast_opts();
    rec_store *s = open_ok(*state, &o);
    static const char *const keys[] = {"a",  "ab", "abc", "abd",
                                       "ac", "b",  "ba"};
    size_t lens[7];
    for (int i = 0; i < 7; i++)
        lens[i] = strlen(keys[i]);
    put_raw_keys(s, REC_DB_KV, keys, lens, 7);
    put_str(s, REC_DB_ITEMS, "ab", "other db");

    collect c;
    assert_string_equal(scan_str(s, REC_DB_KV, "ab", 2, 0, &c), "ab|abc|abd");
    assert_string_equal(scan_str(s, REC_DB_KV, "ab", 2, 1, &c), "abd|abc|ab");
    assert_string_equal(scan_str(s, REC_DB_KV, NULL, 0, 0, &c),
                        "a|ab|abc|abd|ac|b|ba");
    assert_int_equal(c.visits, 7);
    assert_string_equal(scan_str(s, REC_DB_KV, NULL, 0, 1, &c),
                        "ba|b|ac|abd|abc|ab|a");
    /* The successor of "a" is the stored key "b". */
    assert_string_equal(scan_str(s, REC_DB_KV, "a", 1, 1, &c),
                        "ac|abd|abc|ab|a");
    assert_string_equal(scan_str(s, REC_DB_KV, "b", 1, 1, &c), "ba|b");
    assert_string_equal(scan_str(s, REC_DB_KV, "b", 1, 0, &c), "b|ba");
    assert_string_equal(scan_str(s, REC_DB_KV, "abc", 3, 1, &c), "abc");
    /* Nothing matches: before all keys, after all keys, between keys. */
    assert_string_equal(scan_str(s, REC_DB_KV, "0", 1, 0, &c), "");
    assert_string_equal(scan_str(s, REC_DB_KV, "0", 1, 1, &c), "");
    assert_string_equal(scan_str(s, REC_DB_KV, "c", 1, 0, &c), "");
    assert_string_equal(scan_str(s, REC_DB_KV, "c", 1, 1, &c), "");
    assert_string_equal(scan_str(s, REC_DB_KV, "abcz", 4, 0, &c), "");
    assert_string_equal(scan_str(s, REC_DB_KV, "abcz", 4, 1, &c), "");
    assert_string_equal(scan_str(s, REC_DB_KV, "aa", 2, 1, &c), "");
    assert_int_equal(c.visits, 0);
    /* Empty database, both directions. */
    assert_string_equal(scan_str(s, REC_DB_USERS, "a", 1, 1, &c), "");
    assert_string_equal(scan_str(s, REC_DB_USERS, NULL, 0, 1, &c), "");
    assert_string_equal(scan_str(s, REC_DB_USERS, NULL, 0, 0, &c), "");

    rec_rtxn *t;
    assert_int_equal(rec_store_read_begin(s, &t), 0);
    assert_int_equal(
        rec_rtxn_scan(t, REC_DB__COUNT, "a", 1, 0, collect_cb, &c),
        REC_EINVAL);
    assert_int_equal(rec_rtxn_scan(t, REC_DB_KV, "a", 1, 0, NULL, &c),
                     REC_EINVAL);
    rec_store_read_end(t);
    rec_store_free(s);
}

static void test_scan_ff_prefix(void **state) {
    rec_store_opts o = fast_opts();
    rec_store *s = open_ok(*state, &o);
    static const char *const keys[] = {
        "\xfe\xff", "\xff",     "\xff\x00",     "\xff\xff",
        "\xff\xff\x01", "\xff\xff\xff", "a\xff", "a\xff\x01",
        "a\xff\xff", "b",       "b\x00"};
    static const size_t lens[] = {2, 1, 2, 2, 3, 3, 2, 3, 3, 1, 2};
    put_raw_keys(s, REC_DB_VECTORS, keys, lens, 11);

    collect c;
    assert_string_equal(scan_str(s, REC_DB_VECTORS, "\xff", 1, 1, &c),
                        "<ff><ff><ff>|<ff><ff><01>|<ff><ff>|<ff><00>|<ff>");
    assert_string_equal(scan_str(s, REC_DB_VECTORS, "\xff", 1, 0, &c),
                        "<ff>|<ff><00>|<ff><ff>|<ff><ff><01>|<ff><ff><ff>");
    assert_string_equal(scan_str(s, REC_DB_VECTORS, "\xff\xff", 2, 0, &c),
                        "<ff><ff>|<ff><ff><01>|<ff><ff><ff>");
    assert_string_equal(scan_str(s, REC_DB_VECTORS, "\xff\xff", 2, 1, &c),
                        "<ff><ff><ff>|<ff><ff><01>|<ff><ff>");
    assert_string_equal(scan_str(s, REC_DB_VECTORS, "\xff\xff\xff", 3, 1, &c),
                        "<ff><ff><ff>");
    assert_string_equal(
        scan_str(s, REC_DB_VECTORS, "\xff\xff\xff\xff", 4, 1, &c), "");
    /* Successor of "a\xff" is the stored key "b". */
    assert_string_equal(scan_str(s, REC_DB_VECTORS, "a\xff", 2, 1, &c),
                        "a<ff><ff>|a<ff><01>|a<ff>");
    assert_string_equal(scan_str(s, REC_DB_VECTORS, "a\xff\xff", 3, 1, &c),
                        "a<ff><ff>");
    assert_string_equal(scan_str(s, REC_DB_VECTORS, "a", 1, 1, &c),
                        "a<ff><ff>|a<ff><01>|a<ff>");
    /* Successor of "\xfe" and of "\xfe\xff" is "\xff", a stored key. */
    assert_string_equal(scan_str(s, REC_DB_VECTORS, "\xfe", 1, 1, &c),
                        "<fe><ff>");
    assert_string_equal(scan_str(s, REC_DB_VECTORS, "\xfe\xff", 2, 1, &c),
                        "<fe><ff>");
    assert_string_equal(scan_str(s, REC_DB_VECTORS, "b", 1, 1, &c),
                        "b<00>|b");
    assert_string_equal(scan_str(s, REC_DB_VECTORS, "\x00", 1, 1, &c), "");

    /* A 0xFF prefix where the last key does not match. */
    static const char *const low[] = {"a", "b"};
    static const size_t low_lens[] = {1, 1};
    put_raw_keys(s, REC_DB_EVENTS, low, low_lens, 2);
    assert_string_equal(scan_str(s, REC_DB_EVENTS, "\xff", 1, 1, &c), "");
    assert_string_equal(scan_str(s, REC_DB_EVENTS, "\xff", 1, 0, &c), "");
    rec_store_free(s);
}

static void test_scan_stop_and_error(void **state) {
    rec_store_opts o = fast_opts();
    rec_store *s = open_ok(*state, &o);
    static const char *const keys[] = {"p1", "p2", "p3", "p4", "q"};
    static const size_t lens[] = {2, 2, 2, 2, 1};
    put_raw_keys(s, REC_DB_KV, keys, lens, 5);

    rec_rtxn *t;
    collect c;
    assert_int_equal(rec_store_read_begin(s, &t), 0);
    for (int reverse = 0; reverse < 2; reverse++) {
        memset(&c, 0, sizeof c);
        c.stop_at = 2;
        assert_int_equal(
            rec_rtxn_scan(t, REC_DB_KV, "p", 1, reverse, collect_cb, &c), 0);
        assert_int_equal(c.visits, 2);
        assert_string_equal(c.out, reverse ? "p4|p3" : "p1|p2");

        memset(&c, 0, sizeof c);
        c.fail_at = 1;
        assert_int_equal(
            rec_rtxn_scan(t, REC_DB_KV, NULL, 0, reverse, collect_cb, &c),
            REC_EDIM);
        assert_int_equal(c.visits, 1);
        assert_string_equal(c.out, reverse ? "q" : "p1");

        memset(&c, 0, sizeof c);
        c.fail_at = 3;
        assert_int_equal(
            rec_rtxn_scan(t, REC_DB_KV, "p", 1, reverse, collect_cb, &c),
            REC_EDIM);
        assert_int_equal(c.visits, 3);
    }
    /* The rtxn is still usable after a stopped scan. */
    size_t n;
    assert_int_equal(rec_rtxn_count(t, REC_DB_KV, &n), 0);
    assert_int_equal(n, 5);
    rec_store_read_end(t);
    rec_store_free(s);
}

static void be64key(unsigned char *k, uint64_t v) { rec_be64(k, v); }

typedef struct seq_check {
    uint64_t last;
    int n;
    int ordered;
} seq_check;

static int seq_cb(void *ud, rec_val key, rec_val val) {
    seq_check *c = ud;
    uint64_t v = rec_get_be64(key.data);
    if (key.len != 8 || (c->n > 0 && v <= c->last))
        c->ordered = 0;
    c->last = v;
    c->n++;
    return 0;
}

static void test_append(void **state) {
    rec_store_opts o = fast_opts();
    rec_store *s = open_ok(*state, &o);
    rec_batch *b = rec_batch_new();
    assert_non_null(b);
    unsigned char k[8];
    for (uint64_t i = 1; i <= 1000; i++) {
        be64key(k, i * 10);
        assert_int_equal(rec_batch_append(b, REC_DB_EVENTS, k, 8, k, 8), 0);
    }
    assert_int_equal(rec_store_commit(s, b), 0);
    assert_int_equal(count_of(s, REC_DB_EVENTS), 1000);

    /* Out of order: equal to an existing key, before the first, in the
     * middle, after the last and then before that. All fall back. */
    rec_batch_clear(b);
    static const uint64_t odd[] = {5000, 0, 4005, 20000, 15000};
    for (int i = 0; i < 5; i++) {
        be64key(k, odd[i]);
        assert_int_equal(rec_batch_append(b, REC_DB_EVENTS, k, 8, "x", 1), 0);
    }
    assert_int_equal(rec_store_commit(s, b), 0);
    rec_batch_free(b);
    assert_int_equal(count_of(s, REC_DB_EVENTS), 1004);
    for (int i = 0; i < 5; i++) {
        be64key(k, odd[i]);
        expect_val(s, REC_DB_EVENTS, k, 8, "x", 1);
    }
    be64key(k, 4990);
    expect_val(s, REC_DB_EVENTS, k, 8, k, 8);


    seq_check c = {0, 0, 1};
    rec_rtxn *t;
    assert_int_equal(rec_store_read_begin(s, &t), 0);
    assert_int_equal(rec_rtxn_scan(t, REC_DB_EVENTS, NULL, 0, 0, seq_cb, &c),
                     0);
    rec_store_read_end(t);
    assert_int_equal(c.n, 1004);
    assert_true(c.ordered);
    assert_int_equal(c.last, 20000);

    /* A log record: committed like an append, never seen by find. */
    b = rec_batch_new();
    assert_non_null(b);
    be64key(k, 30000);
    assert_int_equal(rec_batch_log(b, REC_DB_EVENTS, k, 8, "log", 3), 0);
    rec_val pv;
    assert_int_equal(rec_batch_find(b, REC_DB_EVENTS, k, 8, &pv), REC_BATCH_SILENT);
    assert_int_equal(rec_batch_count(b), 1);
    assert_int_equal(rec_store_commit(s, b), 0);
    rec_batch_free(b);
    expect_val(s, REC_DB_EVENTS, k, 8, "log", 3);
    assert_int_equal(count_of(s, REC_DB_EVENTS), 1005);

    /* Unread puts and deletes: committed in order, never seen by find. */
    b = rec_batch_new();
    assert_non_null(b);
    assert_int_equal(rec_batch_put_unread(b, REC_DB_VECTORS, "r1", 2, "one", 3), 0);
    assert_int_equal(rec_batch_put_unread(b, REC_DB_VECTORS, "r2", 2, "two", 3), 0);
    assert_int_equal(rec_batch_put_unread(b, REC_DB_VECTORS, "r1", 2, "uno", 3), 0);
    assert_int_equal(rec_batch_find(b, REC_DB_VECTORS, "r1", 2, &pv), REC_BATCH_SILENT);
    assert_int_equal(rec_store_commit(s, b), 0);
    rec_batch_clear(b);
    expect_val(s, REC_DB_VECTORS, "r1", 2, "uno", 3);
    expect_val(s, REC_DB_VECTORS, "r2", 2, "two", 3);
    assert_int_equal(rec_batch_del_unread(b, REC_DB_VECTORS, "r2", 2), 0);
    assert_int_equal(rec_batch_find(b, REC_DB_VECTORS, "r2", 2, &pv), REC_BATCH_SILENT);
    assert_int_equal(rec_batch_put_unread(b, REC_DB_VECTORS, "", 0, "x", 1), REC_EINVAL);
    assert_int_equal(rec_batch_count(b), 1);
    assert_int_equal(rec_store_commit(s, b), 0);
    rec_batch_free(b);
    assert_int_equal(count_of(s, REC_DB_VECTORS), 1);
    rec_store_free(s);
}

static void ckey(unsigned char *k, unsigned char p, uint32_t i) {
    k[0] = p;
    rec_be32(k + 1, i);
}

static void test_del_prefix(void **state) {
    rec_store_opts o = fast_opts();
    rec_store *s = open_ok(*state, &o);
    rec_batch *b = rec_batch_new();
    assert_non_null(b);
    unsigned char k[5], v[32];
    for (unsigned char p = 0; p < 3; p++)
        for (uint32_t i = 0; i < 2000; i++) {
            ckey(k, p, i);
            memset(v, p + 'a', sizeof v);
            assert_int_equal(
                rec_batch_put(b, REC_DB_COUNTERS, k, 5, v, sizeof v), 0);
        }
    assert_int_equal(rec_batch_put(b, REC_DB_KV, "\x01", 1, "kv", 2), 0);
    assert_int_equal(rec_store_commit(s, b), 0);
    assert_int_equal(count_of(s, REC_DB_COUNTERS), 6000);

    rec_batch_clear(b);
    assert_int_equal(rec_batch_del_prefix(b, REC_DB_COUNTERS, "\x01", 1), 0);
    assert_int_equal(rec_batch_del_prefix(b, REC_DB_COUNTERS, "\x07", 1), 0);
    assert_int_equal(rec_store_commit(s, b), 0);
    assert_int_equal(count_of(s, REC_DB_COUNTERS), 4000);
    collect c;
    scan_str(s, REC_DB_COUNTERS, "\x01", 1, 0, &c);
    assert_int_equal(c.visits, 0);
    scan_str(s, REC_DB_COUNTERS, "\x00", 1, 0, &c);
    assert_int_equal(c.visits, 2000);
    scan_str(s, REC_DB_COUNTERS, "\x02", 1, 1, &c);
    assert_int_equal(c.visits, 2000);
    ckey(k, 2, 0);
    memset(v, 'c', sizeof v);
    expect_val(s, REC_DB_COUNTERS, k, 5, v, sizeof v);
    ckey(k, 0, 1999);
    memset(v, 'a', sizeof v);
    expect_val(s, REC_DB_COUNTERS, k, 5, v, sizeof v);
    expect_str(s, REC_DB_KV, "\x01", "kv");

    /* Ops apply in order inside one batch. */
    rec_batch_clear(b);
    assert_int_equal(rec_batch_put(b, REC_DB_KV, "pa", 2, "1", 1), 0);
    assert_int_equal(rec_batch_put(b, REC_DB_KV, "pb", 2, "1", 1), 0);
    assert_int_equal(rec_batch_del_prefix(b, REC_DB_KV, "p", 1), 0);
    assert_int_equal(rec_batch_put(b, REC_DB_KV, "pc", 2, "2", 1), 0);
    assert_int_equal(rec_store_commit(s, b), 0);
    assert_string_equal(scan_str(s, REC_DB_KV, "p", 1, 0, &c), "pc");

    /* plen 0 empties one database only. */
    rec_batch_clear(b);
    assert_int_equal(rec_batch_del_prefix(b, REC_DB_COUNTERS, NULL, 0), 0);
    assert_int_equal(rec_store_commit(s, b), 0);
    rec_batch_free(b);
    assert_int_equal(count_of(s, REC_DB_COUNTERS), 0);
    assert_int_equal(count_of(s, REC_DB_KV), 2);
    put_str(s, REC_DB_COUNTERS, "again", "1"); /* still usable */
    expect_str(s, REC_DB_COUNTERS, "again", "1");
    rec_store_free(s);
}

static void test_batch_reuse(void **state) {
    rec_store_opts o = fast_opts();
    rec_store *s = open_ok(*state, &o);
    rec_batch *b = rec_batch_new();
    assert_non_null(b);
    assert_int_equal(rec_batch_count(b), 0);
    assert_int_equal(rec_batch_bytes(b), 0);
    assert_int_equal(rec_store_commit(s, b), 0); /* empty: no-op */

    assert_int_equal(rec_batch_put(b, REC_DB_KV, "abc", 3, "hello", 5), 0);
    assert_int_equal(rec_batch_del(b, REC_DB_KV, "xyz", 3), 0);
    assert_int_equal(rec_batch_count(b), 2);
    assert_int_equal(rec_batch_bytes(b), 11);
    rec_batch_clear(b);
    assert_int_equal(rec_batch_count(b), 0);
    assert_int_equal(rec_batch_bytes(b), 0);

    /* The cleared ops are gone; new ones apply. */
    assert_int_equal(rec_batch_put(b, REC_DB_KV, "new", 3, "1", 1), 0);
    assert_int_equal(rec_store_commit(s, b), 0);
    assert_int_equal(rec_batch_count(b), 1); /* left as it was */
    assert_int_equal(rec_store_commit(s, b), 0); /* replay: idempotent */
    expect_absent(s, REC_DB_KV, "abc", 3);
    expect_str(s, REC_DB_KV, "new", "1");
    assert_int_equal(count_of(s, REC_DB_KV), 1);

    /* Many rounds through the same batch. */
    char key[16];
    for (int round = 0; round < 20; round++) {
        rec_batch_clear(b);
        for (int i = 0; i < 50; i++) {
            int n = snprintf(key, sizeof key, "r%02d-%02d", round, i);
            assert_int_equal(
                rec_batch_put(b, REC_DB_USERS, key, (size_t)n, key, (size_t)n),
                0);
        }
        assert_int_equal(rec_store_commit(s, b), 0);
    }
    assert_int_equal(count_of(s, REC_DB_USERS), 1000);
    expect_str(s, REC_DB_USERS, "r19-49", "r19-49");
    expect_str(s, REC_DB_USERS, "r00-00", "r00-00");
    rec_batch_free(b);
    rec_batch_free(NULL);
    rec_store_free(s);
}

static void test_reopen_keeps_data(void **state) {
    rec_store_opts o = fast_opts();
    rec_store *s = open_ok(*state, &o);
    rec_batch *b = rec_batch_new();
    assert_non_null(b);
    char key[16];
    for (int i = 0; i < 100; i++) {
        int n = snprintf(key, sizeof key, "item%03d", i);
        assert_int_equal(
            rec_batch_put(b, REC_DB_ITEMS, key, (size_t)n, key, (size_t)n),
            0);
    }
    assert_int_equal(rec_store_commit(s, b), 0);
    rec_batch_free(b);
    rec_store_free(s);

    o.no_sync = 0;
    s = open_ok(*state, &o);
    assert_int_equal(count_of(s, REC_DB_ITEMS), 100);
    expect_str(s, REC_DB_ITEMS, "item000", "item000");
    expect_str(s, REC_DB_ITEMS, "item099", "item099");
    assert_int_equal(count_of(s, REC_DB_META), 1);
    put_str(s, REC_DB_ITEMS, "item100", "durable");
    rec_store_free(s);

    o.read_only = 1;
    s = open_ok(*state, &o);
    assert_int_equal(count_of(s, REC_DB_ITEMS), 101);
    expect_str(s, REC_DB_ITEMS, "item100", "durable");
    rec_store_free(s);
}

static void test_schema_newer_refused(void **state) {
    const char *root = *state;
    char dir[512], expect[700], err[512];
    path_in(dir, sizeof dir, root, "newer");
    rec_store_opts o = fast_opts();
    rec_store *s = open_ok(dir, &o);
    unsigned char v[4];
    rec_be32(v, 3);
    rec_batch *b = rec_batch_new();
    assert_non_null(b);
    assert_int_equal(
        rec_batch_put(b, REC_DB_META, "schema_version", 14, v, 4), 0);
    assert_int_equal(rec_batch_put(b, REC_DB_KV, "kept", 4, "1", 1), 0);
    assert_int_equal(rec_store_commit(s, b), 0);
    rec_store_free(s);

    snprintf(expect, sizeof expect,
             "data folder %s was written by schema 3; this recd reads schema "
             "1 or older",
             dir);
    for (int ro = 0; ro < 2; ro++) {
        o.read_only = ro;
        s = (rec_store *)(uintptr_t)1; /* must be reset to NULL */
        assert_int_equal(rec_store_open(&s, dir, &o, err, sizeof err),
                         REC_ESCHEMA);
        assert_null(s);
        assert_string_equal(err, expect);
    }
    /* A NULL errbuf is allowed. */
    assert_int_equal(rec_store_open(&s, dir, &o, NULL, 0), REC_ESCHEMA);

    /* A schema_version of the wrong size is corruption. */
    path_in(dir, sizeof dir, root, "badlen");
    o.read_only = 0;
    s = open_ok(dir, &o);
    rec_batch_clear(b);
    assert_int_equal(
        rec_batch_put(b, REC_DB_META, "schema_version", 14, "\x01", 1), 0);
    assert_int_equal(rec_store_commit(s, b), 0);
    rec_batch_free(b);
    rec_store_free(s);
    assert_int_equal(rec_store_open(&s, dir, &o, err, sizeof err),
                     REC_ECORRUPT);
    assert_non_null(strstr(err, "schema_version holds 1 bytes"));
}

static void fill_value(unsigned char *v, size_t n, uint32_t i) {
    for (size_t j = 0; j < n; j++)
        v[j] = (unsigned char)(i * 7 + j);
}

static void test_map_growth(void **state) {
    rec_store_opts o = fast_opts();
    o.map_size = MIB;
    rec_store *s = open_ok(*state, &o);
    rec_store_stats st;
    assert_int_equal(rec_store_stats_get(s, &st), 0);
    assert_int_equal(st.map_size, MIB);
    assert_int_equal(st.map_grows, 0);

    enum { BATCHES = 48, PER = 16, VLEN = 3000 };
    unsigned char k[4], v[VLEN];
    rec_batch *b = rec_batch_new();
    assert_non_null(b);
    for (uint32_t i = 0; i < BATCHES; i++) {
        rec_batch_clear(b);
        for (uint32_t j = 0; j < PER; j++) {
            uint32_t id = i * PER + j;
            rec_be32(k, id);
            fill_value(v, sizeof v, id);
            assert_int_equal(rec_batch_put(b, REC_DB_VECTORS, k, 4, v, VLEN),
                             0);
        }
        assert_int_equal(rec_store_commit(s, b), 0);
    }
    rec_batch_free(b);
    assert_int_equal(rec_store_stats_get(s, &st), 0);
    assert_true(st.map_grows >= 2);
    assert_int_equal(st.map_size, MIB << st.map_grows);
    assert_true(st.used_bytes > 2 * MIB);
    assert_true(st.used_bytes <= st.map_size);
    assert_int_equal(st.commits, BATCHES);
    assert_int_equal(st.entries[REC_DB_VECTORS], BATCHES * PER);
    for (uint32_t id = 0; id < BATCHES * PER; id++) {
        rec_be32(k, id);
        fill_value(v, sizeof v, id);
        expect_val(s, REC_DB_VECTORS, k, 4, v, VLEN);
    }
    size_t grown = st.map_size;
    rec_store_free(s);

    /* Reopening with a small map_size keeps the grown map. */
    s = open_ok(*state, &o);
    assert_int_equal(rec_store_stats_get(s, &st), 0);
    assert_int_equal(st.map_size, grown);
    assert_int_equal(st.map_grows, 0);
    rec_be32(k, 0);
    fill_value(v, sizeof v, 0);
    expect_val(s, REC_DB_VECTORS, k, 4, v, VLEN);
    rec_store_free(s);
}

static void test_map_full(void **state) {
    rec_store_opts o = fast_opts();
    o.map_size = MIB;
    o.map_max = 4 * MIB;
    rec_store *s = open_ok(*state, &o);
    char key[32];
    rec_batch *b = rec_batch_new();
    assert_non_null(b);
    for (int i = 0; i < 10; i++) {
        int n = snprintf(key, sizeof key, "keep%d", i);
        assert_int_equal(
            rec_batch_put(b, REC_DB_KV, key, (size_t)n, key, (size_t)n), 0);
    }
    assert_int_equal(rec_store_commit(s, b), 0);

    enum { BIG = 2000, VLEN = 4096 };
    static unsigned char v[VLEN];
    memset(v, 'z', sizeof v);
    rec_batch_clear(b);
    for (int i = 0; i < BIG; i++) {
        int n = snprintf(key, sizeof key, "big%04d", i);
        assert_int_equal(rec_batch_put(b, REC_DB_KV, key, (size_t)n, v, VLEN),
                         0);
    }
    assert_int_equal(rec_store_commit(s, b), REC_EFULL);
    assert_non_null(strstr(rec_store_errmsg(s),
                           "map full at 4.0 MiB (map_max); raise map_max"));
    assert_int_equal(rec_batch_count(b), BIG); /* left as it was */

    /* Nothing of the batch, all of the earlier data. */
    assert_int_equal(count_of(s, REC_DB_KV), 10);
    for (int i = 0; i < BIG; i++) {
        int n = snprintf(key, sizeof key, "big%04d", i);
        expect_absent(s, REC_DB_KV, key, (size_t)n);
    }
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof key, "keep%d", i);
        expect_str(s, REC_DB_KV, key, key);
    }
    rec_store_stats st;
    assert_int_equal(rec_store_stats_get(s, &st), 0);
    assert_int_equal(st.map_size, 4 * MIB);
    assert_int_equal(st.map_max, 4 * MIB);
    assert_int_equal(st.map_grows, 2);
    assert_int_equal(st.commits, 1);

    /* Later commits that fit still work. */
    put_str(s, REC_DB_KV, "after", "ok");
    rec_batch_clear(b);
    for (int i = 0; i < 100; i++) {
        int n = snprintf(key, sizeof key, "mid%03d", i);
        assert_int_equal(rec_batch_put(b, REC_DB_KV, key, (size_t)n, v, VLEN),
                         0);
    }
    assert_int_equal(rec_store_commit(s, b), 0);
    rec_batch_free(b);
    assert_int_equal(count_of(s, REC_DB_KV), 111);
    expect_str(s, REC_DB_KV, "after", "ok");
    expect_val(s, REC_DB_KV, "mid099", 6, v, VLEN);
    rec_store_free(s);
}

static void test_read_only(void **state) {
    rec_store_opts o = fast_opts();
    rec_store *s = open_ok(*state, &o);
    put_str(s, REC_DB_USERS, "u1", "alice");
    rec_store_free(s);

    o.read_only = 1;
    s = open_ok(*state, &o);
    assert_int_equal(rec_store_read_only(s), 1);
    expect_str(s, REC_DB_USERS, "u1", "alice");
    rec_batch *b = rec_batch_new();
    assert_non_null(b);
    assert_int_equal(rec_batch_put(b, REC_DB_USERS, "u2", 2, "bob", 3), 0);
    assert_int_equal(rec_store_commit(s, b), REC_EREADONLY);
    assert_non_null(strstr(rec_store_errmsg(s), "read-only"));
    rec_batch_free(b);
    expect_absent(s, REC_DB_USERS, "u2", 2);
    rec_store_stats st;
    assert_int_equal(rec_store_stats_get(s, &st), 0);
    assert_int_equal(st.entries[REC_DB_USERS], 1);
    assert_int_equal(st.commits, 0);
    rec_store_free(s);
}

static void expect_open_fails(const char *dir, const rec_store_opts *o,
                              int code, const char *needle) {
    char err[512];
    rec_store *s = NULL;
    assert_int_equal(rec_store_open(&s, dir, o, err, sizeof err), code);
    assert_null(s);
    if (!strstr(err, needle))
        print_error("message: %s\n", err);
    assert_non_null(strstr(err, needle));
    assert_non_null(strstr(err, dir));
}

/* One writer per folder: a second writable open is refused with the
 * holder's pid, read-only opens work beside the writer, and the lock goes
 * with the store that held it. */
static void test_one_writer(void **state) {
    rec_store_opts o = fast_opts();
    rec_store *w = open_ok(*state, &o);
    put_str(w, REC_DB_USERS, "u1", "alice");

    char pid[32];
    snprintf(pid, sizeof pid, "process %ld", (long)getpid());
    expect_open_fails(*state, &o, REC_EBUSY, pid);

    o.read_only = 1;
    rec_store *r = open_ok(*state, &o);
    expect_str(r, REC_DB_USERS, "u1", "alice");
    rec_store_free(r);

    /* another process is refused too, while this one holds the lock */
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        rec_store_opts co = fast_opts();
        rec_store *s = NULL;
        char err[512];
        int rc = rec_store_open(&s, *state, &co, err, sizeof err);
        _exit(rc == REC_EBUSY && strstr(err, pid) ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    rec_store_free(w);
    o.read_only = 0;
    w = open_ok(*state, &o); /* released with the store */
    expect_str(w, REC_DB_USERS, "u1", "alice");
    rec_store_free(w);
}

static void test_open_failures(void **state) {
    const char *root = *state;
    char dir[512], file[600];
    rec_store_opts o = fast_opts();

    /* Read-only: a missing folder is not created. */
    o.read_only = 1;
    path_in(dir, sizeof dir, root, "missing");
    expect_open_fails(dir, &o, REC_ENOTFOUND, "does not exist");
    assert_false(exists(dir));

    /* Read-only: an empty folder holds no store; nothing is created. */
    path_in(dir, sizeof dir, root, "empty");
    assert_int_equal(mkdir(dir, 0700), 0);
    expect_open_fails(dir, &o, REC_ENOTFOUND, "no data.mdb");
    path_in(file, sizeof file, dir, "lock.mdb");
    assert_false(exists(file));

    /* A file where the folder should be. */
    o.read_only = 0;
    path_in(dir, sizeof dir, root, "plain-file");
    int fd = open(dir, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    close(fd);
    expect_open_fails(dir, &o, REC_EINVAL, "is not a folder");

    /* Missing parents are created; a parent that is a file cannot be. */
    path_in(dir, sizeof dir, root, "plain-file/below");
    expect_open_fails(dir, &o, REC_EIO, "cannot reach data folder");

    /* Not an LMDB environment. */
    path_in(dir, sizeof dir, root, "garbage");
    assert_int_equal(mkdir(dir, 0700), 0);
    path_in(file, sizeof file, dir, "data.mdb");
    fd = open(file, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    static char junk[16384];
    memset(junk, 'x', sizeof junk);
    assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
    close(fd);
    expect_open_fails(dir, &o, REC_ECORRUPT, "does not hold an LMDB");
    o.read_only = 1;
    expect_open_fails(dir, &o, REC_ECORRUPT, "does not hold an LMDB");

    /* Permissions (root ignores them). */
    if (geteuid() != 0) {
        o.read_only = 0;
        path_in(dir, sizeof dir, root, "locked");
        assert_int_equal(mkdir(dir, 0500), 0);
        expect_open_fails(dir, &o, REC_EIO, "permission denied");
        chmod(dir, 0700);
    }

    char err[64];
    rec_store *s = NULL;
    assert_int_equal(rec_store_open(&s, "", &o, err, sizeof err), REC_EINVAL);
    assert_int_equal(rec_store_open(&s, NULL, NULL, err, sizeof err),
                     REC_EINVAL);
    assert_null(s);
}

static void test_oversize_key(void **state) {
    rec_store_opts o = fast_opts();
    rec_store *s = open_ok(*state, &o);
    assert_int_equal(rec_store_max_key(), 511);
    static char big[600];
    memset(big, 'k', sizeof big);

    rec_batch *b = rec_batch_new();
    assert_non_null(b);
    assert_int_equal(rec_batch_put(b, REC_DB_KV, big, 511, "v", 1), 0);
    assert_int_equal(rec_batch_count(b), 1);
    assert_int_equal(rec_batch_bytes(b), 512);
    assert_int_equal(rec_batch_put(b, REC_DB_KV, big, 512, "v", 1),
                     REC_ETOOLARGE);
    assert_int_equal(rec_batch_append(b, REC_DB_KV, big, 512, "v", 1),
                     REC_ETOOLARGE);
    assert_int_equal(rec_batch_del(b, REC_DB_KV, big, 512), REC_ETOOLARGE);
    assert_int_equal(rec_batch_del_prefix(b, REC_DB_KV, big, 512),
                     REC_ETOOLARGE);
    /* Checked before any copy: the value pointer is never read. */
    assert_int_equal(rec_batch_put(b, REC_DB_KV, "k", 1, big,
                                   (size_t)UINT32_MAX + 1),
                     REC_ETOOLARGE);
    assert_int_equal(rec_batch_put(b, REC_DB_KV, "", 0, "v", 1), REC_EINVAL);
    assert_int_equal(rec_batch_append(b, REC_DB_KV, "", 0, "v", 1),
                     REC_EINVAL);
    assert_int_equal(rec_batch_del(b, REC_DB_KV, "", 0), REC_EINVAL);
    assert_int_equal(rec_batch_put(b, REC_DB__COUNT, "k", 1, "v", 1),
                     REC_EINVAL);
    assert_int_equal(rec_batch_count(b), 1); /* errors leave it as it was */
    assert_int_equal(rec_batch_bytes(b), 512);
    assert_int_equal(rec_store_commit(s, b), 0);
    rec_batch_free(b);

    expect_val(s, REC_DB_KV, big, 511, "v", 1);
    rec_buf out = REC_BUF_INIT;
    assert_int_equal(rec_store_get(s, REC_DB_KV, big, 512, &out),
                     REC_ETOOLARGE);
    rec_buf_free(&out);
    collect c;
    scan_str(s, REC_DB_KV, big, 511, 0, &c);
    assert_int_equal(c.visits, 1);
    scan_str(s, REC_DB_KV, big, 511, 1, &c);
    assert_int_equal(c.visits, 1);
    scan_str(s, REC_DB_KV, big, 512, 0, &c);
    assert_int_equal(c.visits, 0);
    rec_store_free(s);
}

static void test_stats(void **state) {
    rec_store_opts o;
    rec_store_opts_default(&o);
    assert_int_equal(o.map_size, 64 * MIB);
    assert_int_equal(o.map_max, (size_t)16 << 30);
    assert_int_equal(o.read_only, 0);
    assert_int_equal(o.no_sync, 0);
    o.no_sync = 1;
    o.map_max = 256 * MIB;
    rec_store *s = open_ok(*state, &o);
    rec_store_stats st;
    assert_int_equal(rec_store_stats_get(s, &st), 0);
    assert_int_equal(st.map_size, 64 * MIB);
    assert_int_equal(st.map_max, 256 * MIB);
    assert_int_equal(st.commits, 0);
    assert_int_equal(st.map_grows, 0);
    assert_int_equal(st.entries[REC_DB_META], 1);
    size_t used0 = st.used_bytes;
    assert_true(used0 > 0);

    rec_batch *b = rec_batch_new();
    assert_non_null(b);
    assert_int_equal(rec_batch_put(b, REC_DB_ITEMS, "i1", 2, "x", 1), 0);
    assert_int_equal(rec_batch_put(b, REC_DB_ITEMS, "i2", 2, "x", 1), 0);
    assert_int_equal(rec_batch_put(b, REC_DB_ITEMS, "i3", 2, "x", 1), 0);
    assert_int_equal(rec_store_commit(s, b), 0);
    rec_batch_clear(b);
    assert_int_equal(rec_batch_put(b, REC_DB_USERS, "u1", 2, "x", 1), 0);
    assert_int_equal(rec_batch_put(b, REC_DB_USERS, "u2", 2, "x", 1), 0);
    assert_int_equal(rec_store_commit(s, b), 0);
    rec_batch_free(b);

    assert_int_equal(rec_store_stats_get(s, &st), 0);
    assert_int_equal(st.commits, 2);
    assert_int_equal(st.entries[REC_DB_ITEMS], 3);
    assert_int_equal(st.entries[REC_DB_USERS], 2);
    assert_int_equal(st.entries[REC_DB_META], 1);
    for (int i = 0; i < REC_DB__COUNT; i++)
        if (i != REC_DB_ITEMS && i != REC_DB_USERS && i != REC_DB_META)
            assert_int_equal(st.entries[i], 0);
    assert_true(st.used_bytes > used0);
    assert_true(st.used_bytes < st.map_size);
    rec_store_free(s);
}

static void test_rtxn_reuse_and_snapshot(void **state) {
    rec_store_opts o = fast_opts();
    rec_store *s = open_ok(*state, &o);
    put_str(s, REC_DB_KV, "k", "old");

    rec_rtxn *t1, *t2;
    assert_int_equal(rec_store_read_begin(s, &t1), 0);
    rec_store_read_end(t1);
    assert_int_equal(rec_store_read_begin(s, &t2), 0);
    assert_ptr_equal(t1, t2); /* the parked reader was reused */

    /* Two at once in one thread; t2 keeps its snapshot across a commit. */
    assert_int_equal(rec_store_read_begin(s, &t1), 0);
    assert_ptr_not_equal(t1, t2);
    rec_store_read_end(t1);
    put_str(s, REC_DB_KV, "k", "new");
    rec_val v;
    assert_int_equal(rec_rtxn_get(t2, REC_DB_KV, "k", 1, &v), 0);
    assert_int_equal(v.len, 3);
    assert_memory_equal(v.data, "old", 3);
    assert_int_equal(rec_store_read_begin(s, &t1), 0);
    assert_int_equal(rec_rtxn_get(t1, REC_DB_KV, "k", 1, &v), 0);
    assert_memory_equal(v.data, "new", 3);
    size_t n;
    assert_int_equal(rec_rtxn_count(t1, REC_DB_KV, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(rec_rtxn_count(t1, REC_DB__COUNT, &n), REC_EINVAL);
    rec_store_read_end(t1);
    rec_store_read_end(t2);
    rec_store_free(s);
}

/* A commit that must grow the map while its own thread holds an rtxn
 * fails with REC_EBUSY instead of deadlocking, and writes nothing. */
static void test_grow_with_own_rtxn_busy(void **state) {
    rec_store_opts o = fast_opts();
    o.map_size = MIB;
    rec_store *s = open_ok(*state, &o);
    static unsigned char v[4096];
    memset(v, 'q', sizeof v);
    rec_batch *b = rec_batch_new();
    assert_non_null(b);
    char key[16];
    for (int i = 0; i < 400; i++) {
        int n = snprintf(key, sizeof key, "q%03d", i);
        assert_int_equal(
            rec_batch_put(b, REC_DB_KV, key, (size_t)n, v, sizeof v), 0);
    }
    rec_rtxn *t;
    assert_int_equal(rec_store_read_begin(s, &t), 0);
    assert_int_equal(rec_store_commit(s, b), REC_EBUSY);
    assert_non_null(strstr(rec_store_errmsg(s), "holds a read transaction"));
    rec_store_read_end(t);
    assert_int_equal(count_of(s, REC_DB_KV), 0);
    assert_int_equal(rec_store_commit(s, b), 0);
    assert_int_equal(count_of(s, REC_DB_KV), 400);
    rec_batch_free(b);
    rec_store_free(s);
}

/* Thread A commits a batch that must grow the map while the main thread
 * holds an rtxn; A waits for it, and meanwhile the main thread can still
 * commit a small batch (no lock-order deadlock). */
typedef struct grower_ctx {
    rec_store *s;
    rec_batch *b;
    int rc;
} grower_ctx;

static void *grower_main(void *arg) {
    grower_ctx *g = arg;
    g->rc = rec_store_commit(g->s, g->b);
    return NULL;
}

static void test_commit_while_other_thread_grows(void **state) {
    rec_store_opts o = fast_opts();
    o.map_size = MIB;
    grower_ctx g;
    g.s = open_ok(*state, &o);
    g.b = rec_batch_new();
    assert_non_null(g.b);
    static unsigned char v[4096];
    memset(v, 'g', sizeof v);
    char key[16];
    for (int i = 0; i < 400; i++) {
        int n = snprintf(key, sizeof key, "g%03d", i);
        assert_int_equal(
            rec_batch_put(g.b, REC_DB_KV, key, (size_t)n, v, sizeof v), 0);
    }
    g.rc = -1;

    rec_rtxn *t;
    assert_int_equal(rec_store_read_begin(g.s, &t), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, grower_main, &g), 0);
    /* Give A time to hit MDB_MAP_FULL and wait for our rtxn. The test
     * passes either way; without the wait it just covers less. */
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    put_str(g.s, REC_DB_USERS, "small", "ok");
    rec_val val;
    assert_int_equal(rec_rtxn_get(t, REC_DB_USERS, "small", 5, &val),
                     REC_ENOTFOUND); /* t keeps its snapshot */
    rec_store_read_end(t);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(g.rc, 0);

    assert_int_equal(count_of(g.s, REC_DB_KV), 400);
    expect_str(g.s, REC_DB_USERS, "small", "ok");
    rec_store_stats st;
    assert_int_equal(rec_store_stats_get(g.s, &st), 0);
    assert_true(st.map_grows >= 1);
    assert_int_equal(st.commits, 2);
    rec_batch_free(g.b);
    rec_store_free(g.s);
}

/* ---- a reader thread while the map grows ------------------------------ */

enum { TH_BATCHES = 120, TH_PER = 8, TH_VLEN = 4000 };

typedef struct reader_ctx {
    rec_store *s;
    atomic_int stop;
    atomic_long reads;
    atomic_int errors;
} reader_ctx;

/* One consistent snapshot: "n" batches are visible, each complete. */
static int check_snapshot(rec_rtxn *t, uint32_t *seen) {
    rec_val v;
    int rc = rec_rtxn_get(t, REC_DB_KV, "n", 1, &v);
    if (rc == REC_ENOTFOUND) {
        *seen = 0;
        return 0;
    }
    if (rc || v.len != 4)
        return -1;
    uint32_t n = rec_get_be32(v.data);
    size_t count;
    if (rec_rtxn_count(t, REC_DB_VECTORS, &count) || count != n * TH_PER)
        return -1;
    if (n) {
        unsigned char k[4], want[TH_VLEN];
        uint32_t id = n * TH_PER - 1;
        rec_be32(k, id);
        fill_value(want, sizeof want, id);
        if (rec_rtxn_get(t, REC_DB_VECTORS, k, 4, &v) || v.len != TH_VLEN ||
            memcmp(v.data, want, TH_VLEN) != 0)
            return -1;
    }
    *seen = n;
    return 0;
}

static void *reader_main(void *arg) {
    reader_ctx *c = arg;
    while (!atomic_load(&c->stop)) {
        rec_rtxn *t;
        uint32_t n;
        if (rec_store_read_begin(c->s, &t) != 0) {
            atomic_fetch_add(&c->errors, 1);
            continue;
        }
        if (check_snapshot(t, &n))
            atomic_fetch_add(&c->errors, 1);
        rec_store_read_end(t);
        atomic_fetch_add(&c->reads, 1);
        sched_yield(); /* under valgrind, threads take turns: give the writer its own */
    }
    return NULL;
}

static int write_batch(rec_store *s, rec_batch *b, uint32_t i) {
    unsigned char k[4], n[4], v[TH_VLEN];
    rec_batch_clear(b);
    for (uint32_t j = 0; j < TH_PER; j++) {
        uint32_t id = i * TH_PER + j;
        rec_be32(k, id);
        fill_value(v, sizeof v, id);
        if (rec_batch_put(b, REC_DB_VECTORS, k, 4, v, sizeof v))
            return -1;
    }
    rec_be32(n, i + 1);
    if (rec_batch_put(b, REC_DB_KV, "n", 1, n, 4))
        return -1;
    return rec_store_commit(s, b);
}

static void test_reader_thread_during_growth(void **state) {
    rec_store_opts o = fast_opts();
    o.map_size = MIB;
    reader_ctx c;
    c.s = open_ok(*state, &o);
    atomic_init(&c.stop, 0);
    atomic_init(&c.reads, 0);
    atomic_init(&c.errors, 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, reader_main, &c), 0);
    while (atomic_load(&c.reads) == 0)
        sched_yield();

    rec_batch *b = rec_batch_new();
    assert_non_null(b);
    for (uint32_t i = 0; i < TH_BATCHES; i++)
        assert_int_equal(write_batch(c.s, b, i), 0);
    rec_batch_free(b);
    long before = atomic_load(&c.reads);
    while (atomic_load(&c.reads) < before + 2)
        sched_yield();
    atomic_store(&c.stop, 1);
    assert_int_equal(pthread_join(th, NULL), 0);

    assert_int_equal(atomic_load(&c.errors), 0);
    rec_store_stats st;
    assert_int_equal(rec_store_stats_get(c.s, &st), 0);
    assert_true(st.map_grows >= 1);
    assert_int_equal(st.entries[REC_DB_VECTORS], TH_BATCHES * TH_PER);
    rec_store_free(c.s);
}

/* ---- a read-only process beside a writer process --------------------- */

/* The child: create the store, commit batch 0, tell the parent, wait for
 * it to open, then commit the rest (growing the map from 1 MiB). */
static int child_writer(const char *dir, int ready_fd, int go_fd) {
    rec_store_opts o = fast_opts();
    o.map_size = MIB;
    rec_store *s = NULL;
    if (rec_store_open(&s, dir, &o, NULL, 0))
        return 2;
    rec_batch *b = rec_batch_new();
    int rc = b ? write_batch(s, b, 0) : -1;
    char byte = 'r';
    if (rc || write(ready_fd, &byte, 1) != 1 || read(go_fd, &byte, 1) != 1)
        rc = 3;
    else
        rc = 0;
    for (uint32_t i = 1; i < TH_BATCHES && !rc; i++)
        if (write_batch(s, b, i))
            rc = 4;
    rec_store_stats st;
    if (!rc && (rec_store_stats_get(s, &st) || st.map_grows < 2))
        rc = 5;
    rec_batch_free(b);
    rec_store_free(s);
    return rc;
}

static void test_read_only_beside_writer_process(void **state) {
    const char *dir = *state;
    int ready[2], go[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(go), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        close(go[1]);
        _exit(child_writer(dir, ready[1], go[0]));
    }
    close(ready[1]);
    close(go[0]);
    char byte;
    assert_int_equal(read(ready[0], &byte, 1), 1);
    close(ready[0]);

    rec_store_opts o = fast_opts();
    o.read_only = 1;
    rec_store *s = open_ok(dir, &o);
    rec_store_stats st;
    assert_int_equal(rec_store_stats_get(s, &st), 0);
    assert_int_equal(st.map_size, MIB);
    size_t first_map = st.map_size;
    assert_int_equal(write(go[1], "g", 1), 1);
    close(go[1]);

    uint32_t n = 0, last = 0;
    int exited = 0, status = 0, snapshots = 0;
    for (;;) {
        exited = waitpid(pid, &status, WNOHANG) == pid;
        rec_rtxn *t;
        assert_int_equal(rec_store_read_begin(s, &t), 0);
        assert_int_equal(check_snapshot(t, &n), 0);
        rec_store_read_end(t);
        assert_true(n >= last); /* never goes back in time */
        last = n;
        snapshots++;
        if (n == TH_BATCHES || exited)
            break;
    }
    if (!exited)
        assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(n, TH_BATCHES);
    assert_true(snapshots >= 1);

    /* The reader adopted the map the writer grew. */
    assert_int_equal(rec_store_stats_get(s, &st), 0);
    assert_true(st.map_size > first_map);
    assert_int_equal(st.entries[REC_DB_VECTORS], TH_BATCHES * TH_PER);
    rec_store_free(s);
}

/* rec_batch_find answers from the latest op on a key: indexed, and by a
 * scan while a del_prefix is in the batch. */
static void test_batch_find(void **state) {
    (void)state;
    rec_batch *b = rec_batch_new();
    assert_non_null(b);
    rec_val v;
    assert_int_equal(rec_batch_find(b, REC_DB_KV, "a", 1, &v), REC_BATCH_SILENT);
    char key[16], val[16];
    for (int i = 0; i < 5000; i++) { /* forces the index to grow */
        int kl = snprintf(key, sizeof key, "k%d", i);
        int vl = snprintf(val, sizeof val, "v%d", i);
        assert_int_equal(rec_batch_put(b, REC_DB_KV, key, (size_t)kl, val, (size_t)vl), 0);
    }
    assert_int_equal(rec_batch_put(b, REC_DB_KV, "k7", 2, "new", 3), 0);
    assert_int_equal(rec_batch_find(b, REC_DB_KV, "k7", 2, &v), 0);
    assert_int_equal(v.len, 3);
    assert_memory_equal(v.data, "new", 3);
    assert_int_equal(rec_batch_find(b, REC_DB_KV, "k4999", 5, &v), 0);
    assert_memory_equal(v.data, "v4999", 5);
    /* the same key in another database is another key */
    assert_int_equal(rec_batch_find(b, REC_DB_META, "k7", 2, &v), REC_BATCH_SILENT);
    assert_int_equal(rec_batch_del(b, REC_DB_KV, "k8", 2), 0);
    assert_int_equal(rec_batch_find(b, REC_DB_KV, "k8", 2, &v), REC_ENOTFOUND);
    assert_int_equal(rec_batch_put(b, REC_DB_KV, "k8", 2, "back", 4), 0);
    assert_int_equal(rec_batch_find(b, REC_DB_KV, "k8", 2, &v), 0);
    assert_memory_equal(v.data, "back", 4);
    /* a del_prefix: answered by scanning, in order */
    assert_int_equal(rec_batch_del_prefix(b, REC_DB_KV, "k1", 2), 0);
    assert_int_equal(rec_batch_find(b, REC_DB_KV, "k12", 3, &v), REC_ENOTFOUND);
    assert_int_equal(rec_batch_find(b, REC_DB_KV, "k2", 2, &v), 0);
    assert_int_equal(rec_batch_put(b, REC_DB_KV, "k12", 3, "x", 1), 0);
    assert_int_equal(rec_batch_find(b, REC_DB_KV, "k12", 3, &v), 0);
    rec_batch_clear(b);
    assert_int_equal(rec_batch_find(b, REC_DB_KV, "k2", 2, &v), REC_BATCH_SILENT);
    assert_int_equal(rec_batch_put(b, REC_DB_KV, "k2", 2, "y", 1), 0);
    assert_int_equal(rec_batch_find(b, REC_DB_KV, "k2", 2, &v), 0);
    assert_memory_equal(v.data, "y", 1);
    rec_batch_free(b);
}

#ifdef REC_FAULTS
/* ---- fault injection ------------------------------------------------- */

/* Commit one put of key k; the commit's result. */
static int commit_key(rec_store *s, const char *k) {
    rec_batch *b = rec_batch_new();
    assert_non_null(b);
    assert_int_equal(rec_batch_put(b, REC_DB_KV, k, strlen(k), "v", 1), 0);
    int rc = rec_store_commit(s, b);
    rec_batch_free(b);
    return rc;
}

static int has_key(rec_store *s, const char *k) {
    rec_buf out = REC_BUF_INIT;
    int rc = rec_store_get(s, REC_DB_KV, k, strlen(k), &out);
    rec_buf_free(&out);
    assert_true(rc == 0 || rc == REC_ENOTFOUND);
    return rc == 0;
}

/* The listed commits fail with the chosen code and write nothing; the
 * others, and empty batches (not counted), go through. */
static void test_fault_listed_commits(void **state) {
    rec_store_opts o = fast_opts();
    rec_store *s = open_ok(*state, &o);
    assert_int_equal(rec_store_fault_set("2,4"), 0);
    rec_batch *empty = rec_batch_new();
    assert_int_equal(rec_store_commit(s, empty), 0); /* not counted */
    rec_batch_free(empty);
    assert_int_equal(commit_key(s, "c1"), 0);
    assert_int_equal(commit_key(s, "c2"), REC_EIO);
    assert_non_null(strstr(rec_store_errmsg(s), "injected: commit 2"));
    assert_int_equal(commit_key(s, "c3"), 0);
    assert_int_equal(commit_key(s, "c4"), REC_EIO);
    assert_int_equal(commit_key(s, "c5"), 0);
    assert_true(has_key(s, "c1") && has_key(s, "c3") && has_key(s, "c5"));
    assert_false(has_key(s, "c2"));
    assert_false(has_key(s, "c4"));
    rec_store_stats st;
    assert_int_equal(rec_store_stats_get(s, &st), 0);
    assert_int_equal(st.commits, 3);

    /* the code named after the colon; a new plan restarts the count */
    assert_int_equal(rec_store_fault_set("1:enospc"), 0);
    assert_int_equal(commit_key(s, "d1"), REC_ENOSPACE);
    assert_int_equal(rec_store_fault_set("1:mapfull"), 0);
    assert_int_equal(commit_key(s, "d2"), REC_EFULL);
    assert_int_equal(rec_store_fault_set("1:eio"), 0);
    assert_int_equal(commit_key(s, "d3"), REC_EIO);
    assert_false(has_key(s, "d1") || has_key(s, "d2") || has_key(s, "d3"));

    /* every K-th */
    assert_int_equal(rec_store_fault_set("every=3:enospc"), 0);
    for (int i = 1; i <= 9; i++) {
        char k[16];
        snprintf(k, sizeof k, "e%d", i);
        assert_int_equal(commit_key(s, k), i % 3 ? 0 : REC_ENOSPACE);
        assert_int_equal(has_key(s, k), i % 3 != 0);
    }

    /* cleared: nothing fails */
    assert_int_equal(rec_store_fault_set(NULL), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(commit_key(s, "f"), 0);
    rec_store_free(s);
}

/* A malformed plan is refused and the plan in force stays. */
static void test_fault_bad_specs(void **state) {
    static const char *const bad[] = {
        "0", "x", "1,", ",1", "1,,2", "-1", "1:", "1:foo", "1:eio:x",
        "every=", "every=0", "every=x", "every=2,3", "1 ", "every=2:EIO",
        "99999999999999999999999",
    };
    rec_store_opts o = fast_opts();
    rec_store *s = open_ok(*state, &o);
    assert_int_equal(rec_store_fault_set("2"), 0);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (rec_store_fault_set(bad[i]) != REC_EINVAL)
            fail_msg("spec '%s' was accepted", bad[i]);
    assert_int_equal(rec_store_fault_set(""), 0); /* cleared */
    assert_int_equal(commit_key(s, "a"), 0);
    assert_int_equal(commit_key(s, "b"), 0);
    assert_int_equal(rec_store_fault_set("2"), 0);
    assert_int_equal(rec_store_fault_set("every=0"), REC_EINVAL);
    assert_int_equal(commit_key(s, "c"), 0);
    assert_int_equal(commit_key(s, "d"), REC_EIO); /* "2" still in force */
    assert_int_equal(rec_store_fault_set(NULL), 0);
    rec_store_free(s);
}

/* This program run again with RECD_FAULT_COMMIT set: the first open of
 * the process reads it. Exit 0 when the commits failed as planned. */
static int env_child(const char *dir) {
    rec_store_opts o = fast_opts();
    rec_store *s = NULL;
    char err[512];
    int rc = rec_store_open(&s, dir, &o, err, sizeof err);
    const char *spec = getenv("RECD_FAULT_COMMIT");
    if (strcmp(spec, "bogus") == 0)
        return rc == REC_EINVAL && strstr(err, "RECD_FAULT_COMMIT") ? 0 : 10;
    if (rc)
        return 11;
    int ok = commit_key(s, "x1") == 0 && commit_key(s, "x2") == REC_ENOSPACE &&
             commit_key(s, "x3") == 0 && !has_key(s, "x2") && has_key(s, "x3");
    rec_store_free(s);
    return ok ? 0 : 12;
}

static int run_env_child(const char *dir, const char *spec) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setenv("RECD_FAULT_COMMIT", spec, 1);
        execl("/proc/self/exe", "test_store", "--fault-env-child", dir, (char *)NULL);
        _exit(127);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void test_fault_env(void **state) {
    assert_int_equal(run_env_child(*state, "2:enospc"), 0);
    assert_int_equal(run_env_child(*state, "bogus"), 0);
}
#endif

int main(int argc, char **argv) {
#ifdef REC_FAULTS
    if (argc == 3 && strcmp(argv[1], "--fault-env-child") == 0)
        return env_child(argv[2]);
#else
    (void)argc;
    (void)argv;
#endif
#define T(f) cmocka_unit_test_setup_teardown(f, setup_dir, teardown_dir)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_find),
        T(test_open_create),
        T(test_put_get_del),
        T(test_dbs_independent),
        T(test_scan_prefix),
        T(test_scan_ff_prefix),
        T(test_scan_stop_and_error),
        T(test_append),
        T(test_del_prefix),
        T(test_batch_reuse),
        T(test_reopen_keeps_data),
        T(test_schema_newer_refused),
        T(test_map_growth),
        T(test_map_full),
        T(test_one_writer),
        T(test_read_only),
        T(test_open_failures),
        T(test_oversize_key),
        T(test_stats),
        T(test_rtxn_reuse_and_snapshot),
        T(test_grow_with_own_rtxn_busy),
        T(test_commit_while_other_thread_grows),
        T(test_reader_thread_during_growth),
        T(test_read_only_beside_writer_process),
#ifdef REC_FAULTS
        T(test_fault_listed_commits),
        T(test_fault_bad_specs),
        T(test_fault_env),
#endif
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
