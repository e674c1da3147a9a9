/* test_engine.c - the engine over a real LMDB folder. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "tmp_folder.h"

#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "err.h"

static rec_engine *open_engine(const char *dir) {
    rec_engine_opts o;
    rec_engine_opts_default(&o);
    o.store.no_sync = 1;
    rec_engine *e = NULL;
    char err[256];
    int rc = rec_engine_open(&e, dir, &o, err, sizeof err);
    if (rc)
        fail_msg("open: %s", err);
    return e;
}

static size_t skey(char *out, const char *s) {
    return (size_t)rec_id_str(out, s, strlen(s));
}

static void add_event(rec_engine *e, const char *u, const char *i,
                      const char *type, double ts) {
    char uk[REC_ID_MAX], ik[REC_ID_MAX];
    rec_event ev = {0};
    ev.user = uk;
    ev.ulen = skey(uk, u);
    ev.item = ik;
    ev.ilen = skey(ik, i);
    ev.type = type;
    ev.tlen = strlen(type);
    ev.ts = ts;
    ev.rec_id = "rec-1";
    ev.rlen = 5;
    assert_int_equal(rec_engine_event(e, &ev, NULL), 0);
}

static int mem_has(const void *hay, size_t hl, const void *needle, size_t nl) {
    if (nl == 0 || hl < nl)
        return 0;
    for (size_t i = 0; i + nl <= hl; i++)
        if (memcmp((const char *)hay + i, needle, nl) == 0)
            return 1;
    return 0;
}

/* Scan every database of the folder with raw LMDB: no key or value may hold
 * the user's id; history and events must not name their index. */
static void assert_user_absent(const char *dir, const char *key, size_t klen,
                               uint32_t idx) {
    MDB_env *env;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
    assert_int_equal(mdb_env_open(env, dir, MDB_RDONLY, 0600), 0);
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    size_t checked = 0;
    for (int db = 0; db < REC_DB__COUNT; db++) {
        MDB_dbi dbi;
        if (mdb_dbi_open(txn, rec_store_db_name((rec_dbi)db), 0, &dbi))
            continue;
        MDB_cursor *c;
        assert_int_equal(mdb_cursor_open(txn, dbi, &c), 0);
        MDB_val k, v;
        int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
        while (rc == 0) {
            checked++;
            if (mem_has(k.mv_data, k.mv_size, key, klen) ||
                mem_has(v.mv_data, v.mv_size, key, klen))
                fail_msg("database %s still holds the user's id",
                         rec_store_db_name((rec_dbi)db));
            if (db == REC_DB_USERS || db == REC_DB_USER_KEYS) {
                assert_int_not_equal(rec_get_be32(k.mv_data), idx);
            }
            if (db == REC_DB_VECTORS) {
                const unsigned char *p = k.mv_data;
                assert_false(p[2] == REC_KIND_USER && rec_get_be32(p + 3) == idx);
            }
            if (db == REC_DB_EVENTS) {
                /* ts f64, then the user's index */
                uint32_t u;
                assert_true(v.mv_size >= 12);
                memcpy(&u, (const char *)v.mv_data + 8, 4);
                assert_int_not_equal(u, idx);
            }
            if (db == REC_DB_RECS) {
                assert_true(v.mv_size >= 4);
                assert_int_not_equal(rec_get_be32(v.mv_data), idx);
            }
            rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
        }
        mdb_cursor_close(c);
    }
    assert_true(checked > 0);
    mdb_txn_abort(txn);
    mdb_env_close(env);
}

static void test_delete_user_leaves_no_trace(void **state) {
    (void)state;
    char *dir = rec_test_mkdir("engine");
    rec_engine *e = open_engine(dir);
    char k[REC_ID_MAX];
    size_t kl = skey(k, "victim-7f3a");
    float v[4] = {1, 2, 3, 4};
    rec_vecarg va = {"content", v, 4};
    uint32_t idx;
    assert_int_equal(rec_engine_put(e, REC_KIND_USER, k, kl, "\x81\xa1" "a\x01", 4,
                                    -1, &va, 1, &idx), 0);
    for (int i = 0; i < 20; i++) {
        char item[16];
        snprintf(item, sizeof item, "it%d", i);
        add_event(e, "victim-7f3a", item, "click", 100 + i);
        add_event(e, "bystander", item, "view", 100 + i);
    }
    rec_space *mf;
    assert_int_equal(rec_engine_space_ensure(e, "mf", 8, &mf), 0);
    assert_int_equal(rec_engine_mf_update(e, mf, idx, 0, 1.0f, NULL, NULL), 0);
    assert_int_equal(rec_engine_commit(e), 0);
    assert_int_equal(rec_engine_events(e), 40);

    assert_int_equal(rec_engine_delete(e, REC_KIND_USER, k, kl), 0);
    assert_int_equal(rec_engine_events(e), 20);
    assert_int_equal(rec_engine_lookup(e, REC_KIND_USER, k, kl), REC_IDX_NONE);
    assert_int_equal(rec_engine_delete(e, REC_KIND_USER, k, kl), REC_ENOTFOUND);
    assert_false(rec_space_has(mf, REC_KIND_USER, idx));
    assert_user_absent(dir, k, kl, idx);
    rec_engine_free(e);

    e = open_engine(dir);
    assert_int_equal(rec_engine_events(e), 20);
    assert_int_equal(rec_engine_count(e, REC_KIND_USER), 1);
    rec_engine_free(e);
    rec_test_rmdir(dir);
}

/* MF steps owed while nobody reads the space: kept across a restart,
 * paid by a read from the events in the store, as if made at once. */
static void mf_events(rec_engine *e, int from, int to) {
    for (int i = from; i <= to; i++) {
        char u[16], it[16];
        snprintf(u, sizeof u, "u%d", i % 3);
        snprintf(it, sizeof it, "i%d", i % 4);
        add_event(e, u, it, i % 5 ? "click" : "purchase", 100 + i);
    }
}

/* Events from..to as the log holds them, as a server's batch has them. */
static void mf_batch(rec_engine *e, int from, int to, rec_replay_event *ev) {
    for (int i = from; i <= to; i++) {
        char u[16], it[16], uk[REC_ID_MAX], ik[REC_ID_MAX];
        snprintf(u, sizeof u, "u%d", i % 3);
        snprintf(it, sizeof it, "i%d", i % 4);
        const char *type = i % 5 ? "click" : "purchase";
        rec_replay_event *x = &ev[i - from];
        memset(x, 0, sizeof *x);
        x->seq = (uint64_t)i;
        x->user = rec_engine_lookup(e, REC_KIND_USER, uk, skey(uk, u));
        x->item = rec_engine_lookup(e, REC_KIND_ITEM, ik, skey(ik, it));
        x->type = (uint16_t)rec_engine_type_find(e, type, strlen(type));
        x->weight = i % 5 ? 2.0f : 8.0f;
    }
}

static void mf_rows(rec_engine *e, float out[3][8]) {
    rec_space *s = rec_engine_space(e, "mf");
    assert_non_null(s);
    for (int u = 0; u < 3; u++) {
        char k[REC_ID_MAX], name[16];
        snprintf(name, sizeof name, "u%d", u);
        uint32_t idx = rec_engine_lookup(e, REC_KIND_USER, k, skey(k, name));
        const float *v = rec_space_get(s, REC_KIND_USER, idx);
        assert_non_null(v);
        memcpy(out[u], v, sizeof out[u]);
    }
}

static void test_mf_owed_across_restart(void **state) {
    (void)state;
    rec_mf_plan p;
    memset(&p, 0, sizeof p);
    rec_mf_opts_default(&p.mf);
    p.log_weight = 1;
    p.max_weight = 4.0f;
    float owed_rows[3][8], at_once[3][8];
    int now = -1;
    /* owed, restarted, then read */
    rec_replay_event ev[12];
    /* owed, the first ones restarted (read back from the log), then read */
    char *dir = rec_test_mkdir("mfowed");
    rec_engine *e = open_engine(dir);
    mf_events(e, 1, 6);
    mf_batch(e, 1, 6, ev);
    assert_int_equal(rec_engine_mf_owe(e, "mf", 8, &p, ev, 6, &now), 0);
    assert_int_equal(now, 0);
    assert_int_equal(rec_engine_mf_owed(e, "mf"), 6);
    assert_int_equal(rec_engine_checkpoint(e), 0);
    rec_engine_free(e);
    e = open_engine(dir);
    assert_int_equal(rec_engine_mf_owed(e, "mf"), 6);
    mf_events(e, 7, 10); /* in memory, not committed yet */
    mf_batch(e, 7, 10, ev);
    assert_int_equal(rec_engine_mf_owe(e, "mf", 8, &p, ev, 4, &now), 0);
    assert_int_equal(now, 0);
    assert_int_equal(rec_engine_mf_owed(e, NULL), 10);
    assert_null(rec_engine_space(e, "mf") ? rec_space_get(rec_engine_space(e, "mf"),
                                                         REC_KIND_USER, 0) : NULL);
    assert_int_equal(rec_engine_mf_settle(e, "mf"), 0);
    assert_int_equal(rec_engine_mf_owed(e, "mf"), 0);
    mf_rows(e, owed_rows);
    /* read lately: the next events are stepped at once */
    mf_events(e, 11, 12);
    mf_batch(e, 11, 12, ev);
    assert_int_equal(rec_engine_mf_owe(e, "mf", 8, &p, ev, 2, &now), 0);
    assert_int_equal(now, 1);
    /* out of order: refused */
    ev[1].seq = ev[0].seq;
    assert_int_equal(rec_engine_mf_owe(e, "mf", 8, &p, ev, 2, &now), REC_EINVAL);
    rec_engine_free(e);
    rec_test_rmdir(dir);
    /* the same events stepped at once */
    dir = rec_test_mkdir("mfowed2");
    e = open_engine(dir);
    mf_events(e, 1, 10);
    rec_space *s;
    assert_int_equal(rec_engine_space_ensure(e, "mf", 8, &s), 0);
    for (int i = 1; i <= 10; i++) {
        char u[16], it[16], uk[REC_ID_MAX], ik[REC_ID_MAX];
        snprintf(u, sizeof u, "u%d", i % 3);
        snprintf(it, sizeof it, "i%d", i % 4);
        float w = rec_mf_plan_weight(&p, (uint16_t)rec_engine_type_find(e, i % 5 ? "click" : "purchase",
                                                                         i % 5 ? 5 : 8),
                                     i % 5 ? 2.0f : 8.0f);
        assert_int_equal(rec_engine_mf_update(e, s, rec_engine_lookup(e, REC_KIND_USER, uk, skey(uk, u)),
                                              rec_engine_lookup(e, REC_KIND_ITEM, ik, skey(ik, it)), w,
                                              &p.mf, NULL), 0);
    }
    mf_rows(e, at_once);
    assert_memory_equal(owed_rows, at_once, sizeof at_once);
    /* a bad name is refused */
    mf_batch(e, 1, 2, ev);
    assert_int_equal(rec_engine_mf_owe(e, "", 8, &p, ev, 2, &now), REC_EINVAL);
    rec_engine_free(e);
    rec_test_rmdir(dir);
}

static void test_newer_schema_refused(void **state) {
    (void)state;
    char *dir = rec_test_mkdir("engine");
    rec_engine *e = open_engine(dir);
    rec_batch *b = rec_batch_new();
    unsigned char v[4];
    rec_be32(v, REC_SCHEMA_VERSION + 1);
    assert_int_equal(rec_batch_put(b, REC_DB_META, "schema_version", 14, v, 4), 0);
    assert_int_equal(rec_store_commit(rec_engine_store(e), b), 0);
    rec_batch_free(b);
    rec_engine_free(e);
    rec_engine *e2 = NULL;
    char err[256] = "";
    assert_int_equal(rec_engine_open(&e2, dir, NULL, err, sizeof err), REC_ESCHEMA);
    assert_null(e2);
    assert_non_null(strstr(err, "schema"));
    rec_test_rmdir(dir);
}

static void test_put_validates_before_changing(void **state) {
    (void)state;
    char *dir = rec_test_mkdir("engine");
    rec_engine *e = open_engine(dir);
    char k[REC_ID_MAX];
    size_t kl = skey(k, "a");
    float good[3] = {1, 0, 0}, bad[3] = {1, 0, 0};
    rec_vecarg va[2] = {{"s", good, 3}, {"t", bad, 3}};
    bad[1] = 0.0f / 0.0f;
    assert_int_equal(rec_engine_put(e, REC_KIND_ITEM, k, kl, NULL, 0, -1, va, 2, NULL),
                     REC_ENONFINITE);
    assert_int_equal(rec_engine_lookup(e, REC_KIND_ITEM, k, kl), REC_IDX_NONE);
    assert_null(rec_engine_space(e, "s"));
    assert_int_equal(rec_engine_pending(e), 0);
    assert_int_equal(rec_engine_put(e, REC_KIND_ITEM, k, kl, "\x91\x01", 2, -1, NULL, 0, NULL),
                     REC_EINVAL);
    va[1].v = good;
    va[1].dim = 2;
    assert_int_equal(rec_engine_put(e, REC_KIND_ITEM, k, kl, NULL, 0, -1, va, 2, NULL), 0);
    assert_int_equal(rec_engine_put(e, REC_KIND_ITEM, k, kl, NULL, 0, -1, &va[0], 1, NULL), 0);
    va[0].dim = 2;
    assert_int_equal(rec_engine_put(e, REC_KIND_ITEM, k, kl, NULL, 0, -1, va, 1, NULL),
                     REC_EDIM);
    assert_non_null(strstr(rec_engine_errmsg(e), "dimension"));
    rec_engine_free(e);
    rec_test_rmdir(dir);
}

static void test_failed_commit_rolls_memory_back(void **state) {
    (void)state;
    char *dir = rec_test_mkdir("engine");
    rec_engine_opts o;
    rec_engine_opts_default(&o);
    o.store.no_sync = 1;
    o.store.map_size = 256 * 1024;
    o.store.map_max = 512 * 1024;
    rec_engine *e = NULL;
    char err[256];
    assert_int_equal(rec_engine_open(&e, dir, &o, err, sizeof err), 0);
    char k[REC_ID_MAX];
    size_t kl = skey(k, "keep");
    assert_int_equal(rec_engine_put(e, REC_KIND_ITEM, k, kl, NULL, 0, -1, NULL, 0, NULL), 0);
    assert_int_equal(rec_engine_commit(e), 0);
    /* One batch far larger than the map can ever hold. */
    static char props[60000];
    props[0] = (char)0x81;
    props[1] = (char)0xa1;
    props[2] = 'p';
    props[3] = (char)0xda;
    props[4] = (char)((sizeof props - 6) >> 8);
    props[5] = (char)((sizeof props - 6) & 0xff);
    memset(props + 6, 'x', sizeof props - 6);
    for (int i = 0; i < 20; i++) {
        char id[16];
        snprintf(id, sizeof id, "big%d", i);
        kl = skey(k, id);
        assert_int_equal(rec_engine_put(e, REC_KIND_ITEM, k, kl, props, sizeof props,
                                        -1, NULL, 0, NULL), 0);
    }
    assert_int_equal(rec_engine_count(e, REC_KIND_ITEM), 21);
    uint64_t rollbacks = rec_engine_rollbacks(e);
    assert_int_equal(rec_engine_commit(e), REC_EFULL);
    assert_non_null(strstr(rec_engine_errmsg(e), "commit failed"));
    assert_int_equal(rec_engine_rollbacks(e), rollbacks + 1); /* counted */
    assert_int_equal(rec_engine_count(e, REC_KIND_ITEM), 1);
    kl = skey(k, "big3");
    assert_int_equal(rec_engine_lookup(e, REC_KIND_ITEM, k, kl), REC_IDX_NONE);
    kl = skey(k, "keep");
    assert_int_not_equal(rec_engine_lookup(e, REC_KIND_ITEM, k, kl), REC_IDX_NONE);
    /* Still usable for writes that fit. */
    kl = skey(k, "small");
    assert_int_equal(rec_engine_put(e, REC_KIND_ITEM, k, kl, NULL, 0, -1, NULL, 0, NULL), 0);
    assert_int_equal(rec_engine_commit(e), 0);
    rec_engine_free(e);
    rec_test_rmdir(dir);
}

static void test_integer_and_string_ids(void **state) {
    (void)state;
    char *dir = rec_test_mkdir("engine");
    rec_engine *e = open_engine(dir);
    char a[REC_ID_MAX], b[REC_ID_MAX];
    size_t al = (size_t)rec_id_int(a, 42), bl = skey(b, "42");
    uint32_t ia, ib;
    assert_int_equal(rec_engine_put(e, REC_KIND_ITEM, a, al, NULL, 0, -1, NULL, 0, &ia), 0);
    assert_int_equal(rec_engine_put(e, REC_KIND_ITEM, b, bl, NULL, 0, -1, NULL, 0, &ib), 0);
    assert_int_not_equal(ia, ib);
    size_t kl;
    const char *key = rec_engine_key(e, REC_KIND_ITEM, ia, &kl);
    assert_int_equal(kl, al);
    assert_memory_equal(key, a, al);
    rec_engine_free(e);
    rec_test_rmdir(dir);
}

/* Event types are found by name and counted; new ones count once. */
static void test_type_find_and_count(void **state) {
    (void)state;
    char *dir = rec_test_mkdir("engine");
    rec_engine *e = open_engine(dir);
    size_t n = rec_engine_type_count(e);
    assert_true(n >= 6); /* the default types */
    int id = rec_engine_type_find(e, "click", 5);
    assert_true(id >= 0);
    assert_string_equal(rec_engine_type_name(e, (uint16_t)id), "click");
    assert_int_equal(rec_engine_type_find(e, "share", 5), REC_ENOTFOUND);
    add_event(e, "u", "i", "share", 1700000000.0);
    add_event(e, "u", "j", "share", 1700000001.0);
    assert_int_equal(rec_engine_type_count(e), n + 1);
    assert_int_equal(rec_engine_type_find(e, "share", 5), (int)n);
    rec_engine_free(e);
    rec_test_rmdir(dir);
}

/* The clock is event time: events move it forward (not past the wall
 * clock's tolerance), late ones leave it, events without ts take it, a
 * thread clock overrides it, and a reopened folder keeps its shift. */
static void test_event_time_clock(void **state) {
    (void)state;
    char *dir = rec_test_mkdir("engine");
    rec_engine *e = open_engine(dir);
    rec_clock_info ck;
    rec_engine_clock(e, &ck);
    assert_false(ck.set);
    assert_true(ck.now == ck.wall && ck.newest == 0.0);
    const double t0 = 1500000000.0;
    add_event(e, "u", "a", "click", t0);
    add_event(e, "u", "b", "click", t0 + 100);
    double now = rec_engine_now(e);
    assert_true(now >= t0 + 100 && now < t0 + 160);
    add_event(e, "u", "c", "click", t0 - 5000); /* late */
    assert_true(rec_engine_now(e) < t0 + 160);
    rec_engine_clock(e, &ck);
    assert_true(ck.newest == t0 + 100 && ck.set);
    /* without ts: the clock's time, after the newest */
    char uk[REC_ID_MAX], ik[REC_ID_MAX];
    rec_event ev = {0};
    ev.user = uk;
    ev.ulen = skey(uk, "v");
    ev.item = ik;
    ev.ilen = skey(ik, "a");
    ev.type = "view";
    ev.tlen = 4;
    rec_event_out out;
    assert_int_equal(rec_engine_event(e, &ev, &out), 0);
    assert_true(out.ts >= t0 + 100 && out.ts < t0 + 160);
    /* a thread clock (a replay's) takes precedence */
    rec_clock_set(t0 + 7);
    assert_true(rec_engine_now(e) == t0 + 7);
    assert_int_equal(rec_engine_event(e, &ev, &out), 0);
    assert_true(out.ts == t0 + 7);
    rec_clock_set(0);
    /* far ahead: stored with its time, the clock stops at the tolerance */
    double ahead = ck.wall + 86400.0;
    add_event(e, "u", "d", "click", ahead);
    rec_engine_clock(e, &ck);
    assert_true(ck.newest == ahead);
    assert_true(ck.now <= ck.wall + REC_CLOCK_AHEAD + 1e-6 && ck.now > ck.wall);
    /* back at t0: the shift is stored with the checkpoint and reopened */
    rec_engine_free(e);
    rec_test_rmdir(dir);
    dir = rec_test_mkdir("engine");
    e = open_engine(dir);
    add_event(e, "u", "a", "click", t0);
    assert_int_equal(rec_engine_commit(e), 0);
    rec_engine_free(e);
    e = open_engine(dir);
    now = rec_engine_now(e);
    assert_true(now >= t0 && now < t0 + 120);
    rec_engine_free(e);
    rec_test_rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_time_clock),
        cmocka_unit_test(test_type_find_and_count),
        cmocka_unit_test(test_delete_user_leaves_no_trace),
        cmocka_unit_test(test_newer_schema_refused),
        cmocka_unit_test(test_mf_owed_across_restart),
        cmocka_unit_test(test_put_validates_before_changing),
        cmocka_unit_test(test_failed_commit_rolls_memory_back),
        cmocka_unit_test(test_integer_and_string_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
