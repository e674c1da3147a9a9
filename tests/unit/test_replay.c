/* test_replay.c - the engine's replay of the event log: after a failed
 * commit or a crash, the learned state (vectors, counters, learned kv, the
 * generator) becomes exactly what the live path built, each event learned
 * once, from the fields and the weight it was logged with. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "tmp_folder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "err.h"

/* What a kill -9 leaves: the data file as written so far, no lock file. */
static char *crash_copy(const char *dir) {
    char *to = rec_test_mkdir("replay");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp '%s/data.mdb' '%s/data.mdb'", dir, to);
    assert_int_equal(system(cmd), 0);
    return to;
}

/* Checkpoints only when asked (or at close); a small map when `small`. */
static rec_engine *open_engine(const char *dir, int small) {
    rec_engine_opts o;
    rec_engine_opts_default(&o);
    o.store.no_sync = 1;
    o.checkpoint_interval = 1e9;
    if (small) {
        o.store.map_size = 512 * 1024;
        o.store.map_max = 1024 * 1024;
    }
    rec_engine *e = NULL;
    char err[256];
    int rc = rec_engine_open(&e, dir, &o, err, sizeof err);
    if (rc)
        fail_msg("open: %s", err);
    return e;
}

/* A learner in the shape of the shipped policies: a decayed counter, an
 * online MF step (which draws from the engine's generator) and a learned
 * kv entry read, changed and written back per user. */
static int learn(void *ud, const rec_replay_event *ev) {
    rec_engine *e = ud;
    rec_counter *c;
    rec_space *s;
    int rc;
    if ((rc = rec_engine_counter_ensure(e, "pop", 3600, &c)) ||
        (rc = rec_counter_add(c, ev->item, ev->weight, ev->ts)) ||
        (rc = rec_engine_space_ensure(e, "mf", 8, &s)))
        return rc;
    if (ev->weight > 0 &&
        (rc = rec_engine_mf_update(e, s, ev->user, ev->item, ev->weight, NULL, NULL)))
        return rc;
    char key[32];
    int kl = snprintf(key, sizeof key, "n:%u", ev->user);
    rec_buf b = REC_BUF_INIT;
    uint32_t n = 0;
    if (rec_engine_kv_get(e, key, (size_t)kl, &b) == 0 && b.len == 5)
        n = rec_get_be32((const unsigned char *)b.data + 1);
    rec_buf_free(&b);
    unsigned char v[5] = {0xce};
    rec_be32(v + 1, n + 1);
    int was = rec_engine_learning(e, 1);
    rc = rec_engine_kv_put(e, key, (size_t)kl, v, sizeof v);
    rec_engine_learning(e, was);
    return rc;
}

/* Event i of a fixed sequence: 6 users, 9 items, views and clicks. */
static void event_i(rec_engine *e, int i, int learn_it) {
    char uk[REC_ID_MAX], ik[REC_ID_MAX], u[16], it[16];
    snprintf(u, sizeof u, "u%d", i * 7 % 6);
    snprintf(it, sizeof it, "i%d", i * 5 % 9);
    rec_event ev = {0};
    ev.user = uk;
    ev.ulen = (size_t)rec_id_str(uk, u, strlen(u));
    ev.item = ik;
    ev.ilen = (size_t)rec_id_str(ik, it, strlen(it));
    ev.type = i % 3 ? "view" : "click";
    ev.tlen = strlen(ev.type);
    ev.ts = 1790000000.0 + i * 17;
    rec_event_out out;
    assert_int_equal(rec_engine_event(e, &ev, &out), 0);
    if (!learn_it)
        return;
    rec_replay_event le = {.seq = out.seq, .ts = ev.ts, .user = out.user,
                           .item = out.item, .type = out.type, .weight = out.weight};
    assert_int_equal(learn(e, &le), 0);
}

static void events(rec_engine *e, int from, int to) {
    for (int i = from; i < to; i++)
        event_i(e, i, 1);
}

/* The learned state of a and b is the same, bit for bit, id by id. */
static void assert_same_learning(rec_engine *a, rec_engine *b) {
    assert_memory_equal(rec_engine_rng(a)->s, rec_engine_rng(b)->s, sizeof rec_engine_rng(a)->s);
    rec_space *sa = rec_engine_space(a, "mf"), *sb = rec_engine_space(b, "mf");
    rec_counter *ca = rec_engine_counter(a, "pop"), *cb = rec_engine_counter(b, "pop");
    assert_non_null(sa);
    assert_non_null(sb);
    assert_non_null(ca);
    assert_non_null(cb);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(rec_engine_count(a, (rec_kind)k), rec_engine_count(b, (rec_kind)k));
        for (uint32_t i = 0; i < rec_engine_bound(a, (rec_kind)k); i++) {
            size_t kl;
            const char *key = rec_engine_key(a, (rec_kind)k, i, &kl);
            if (!key)
                continue;
            uint32_t j = rec_engine_lookup(b, (rec_kind)k, key, kl);
            assert_int_not_equal(j, REC_IDX_NONE);
            const float *va = rec_space_get(sa, (rec_kind)k, i);
            const float *vb = rec_space_get(sb, (rec_kind)k, j);
            assert_true((va == NULL) == (vb == NULL));
            if (va)
                assert_memory_equal(va, vb, 8 * sizeof(float));
            if (k == REC_KIND_ITEM) {
                double x = i < ca->cap ? ca->val[i] : 0, y = j < cb->cap ? cb->val[j] : 0;
                double tx = i < ca->cap ? ca->t_last[i] : 0, ty = j < cb->cap ? cb->t_last[j] : 0;
                assert_memory_equal(&x, &y, sizeof x);
                assert_memory_equal(&tx, &ty, sizeof tx);
            } else {
                char ka[32], kb[32];
                int la = snprintf(ka, sizeof ka, "n:%u", i), lb = snprintf(kb, sizeof kb, "n:%u", j);
                rec_buf x = REC_BUF_INIT, y = REC_BUF_INIT;
                int ra = rec_engine_kv_get(a, ka, (size_t)la, &x);
                int rb = rec_engine_kv_get(b, kb, (size_t)lb, &y);
                assert_int_equal(ra, rb);
                if (!ra) {
                    assert_int_equal(x.len, y.len);
                    assert_memory_equal(x.data, y.data, x.len);
                }
                rec_buf_free(&x);
                rec_buf_free(&y);
            }
        }
    }
}

/* A batch no map of 1 MiB can hold: its commit fails with REC_EFULL. */
static void doom_pending(rec_engine *e) {
    static char props[60000];
    props[0] = (char)0x81;
    props[1] = (char)0xa1;
    props[2] = 'p';
    props[3] = (char)0xda;
    props[4] = (char)((sizeof props - 6) >> 8);
    props[5] = (char)((sizeof props - 6) & 0xff);
    memset(props + 6, 'x', sizeof props - 6);
    for (int i = 0; i < 40; i++) {
        char k[REC_ID_MAX], id[16];
        snprintf(id, sizeof id, "big%d", i);
        size_t kl = (size_t)rec_id_str(k, id, strlen(id));
        assert_int_equal(rec_engine_put(e, REC_KIND_ITEM, k, kl, props, sizeof props, -1,
                                        NULL, 0, NULL), 0);
    }
}

static void test_failed_commit_replays_what_the_log_holds(void **state) {
    (void)state;
    char *da = rec_test_mkdir("replay"), *db = rec_test_mkdir("replay");
    rec_engine *a = open_engine(da, 1), *b = open_engine(db, 1);
    events(a, 0, 10);
    assert_int_equal(rec_engine_checkpoint(a), 0);
    events(a, 10, 20); /* logged, not checkpointed */
    assert_int_equal(rec_engine_commit(a), 0);
    events(a, 20, 25); /* dropped with the failed commit */
    doom_pending(a);
    assert_int_equal(rec_engine_commit(a), REC_EFULL);
    assert_int_equal(rec_engine_events(a), 20);
    /* Memory went back to the checkpoint: events 10..19 must be learned
     * again, and are, once. */
    assert_true(rec_engine_replay_due(a));
    uint64_t n = 0;
    assert_int_equal(rec_engine_replay(a, learn, a, &n), 0);
    assert_int_equal(n, 10);
    assert_false(rec_engine_replay_due(a));
    assert_int_equal(rec_engine_replay(a, learn, a, &n), 0);
    assert_int_equal(n, 0);
    /* The twin never failed. */
    events(b, 0, 20);
    assert_same_learning(a, b);
    /* Both go on alike, and what a checkpoint writes reloads the same. */
    events(a, 20, 30);
    events(b, 20, 30);
    assert_same_learning(a, b);
    assert_int_equal(rec_engine_checkpoint(a), 0);
    rec_engine_free(a);
    a = open_engine(da, 1);
    assert_false(rec_engine_replay_due(a));
    assert_same_learning(a, b);
    rec_engine_free(a);
    rec_engine_free(b);
    rec_test_rmdir(da);
    rec_test_rmdir(db);
}

/* A checkpoint written after a failed commit, before any replay, claims
 * only what memory holds: the events past the old checkpoint stay due. */
static void test_checkpoint_after_rollback_claims_no_unlearned_event(void **state) {
    (void)state;
    char *da = rec_test_mkdir("replay"), *db = rec_test_mkdir("replay");
    rec_engine *a = open_engine(da, 1), *b = open_engine(db, 1);
    events(a, 0, 6);
    assert_int_equal(rec_engine_checkpoint(a), 0);
    events(a, 6, 14);
    assert_int_equal(rec_engine_commit(a), 0);
    doom_pending(a);
    assert_int_equal(rec_engine_commit(a), REC_EFULL);
    assert_int_equal(rec_engine_checkpoint(a), 0);
    assert_int_equal(rec_engine_checkpoint_seq(a), 6);
    rec_engine_free(a);
    a = open_engine(da, 1);
    assert_int_equal(rec_engine_checkpoint_seq(a), 6);
    uint64_t n = 0;
    assert_int_equal(rec_engine_replay(a, learn, a, &n), 0);
    assert_int_equal(n, 8);
    events(b, 0, 14);
    assert_same_learning(a, b);
    rec_engine_free(a);
    rec_engine_free(b);
    rec_test_rmdir(da);
    rec_test_rmdir(db);
}

/* What the replay hands on, recorded. */
typedef struct seen_ev {
    rec_replay_event ev[4];
    char rec_id[4][32];
    unsigned char ctx[4][32];
    int n;
} seen_ev;

static int record(void *ud, const rec_replay_event *ev) {
    seen_ev *s = ud;
    assert_true(s->n < 4);
    s->ev[s->n] = *ev;
    assert_true(ev->rlen < sizeof s->rec_id[0] && ev->clen <= sizeof s->ctx[0]);
    memcpy(s->rec_id[s->n], ev->rec_id ? ev->rec_id : "", ev->rlen);
    memcpy(s->ctx[s->n], ev->context ? ev->context : "", ev->clen);
    s->n++;
    return 0;
}

static void test_replay_hands_every_field_and_the_weight_in_force(void **state) {
    (void)state;
    char *dir = rec_test_mkdir("replay");
    rec_engine *e = open_engine(dir, 0);
    char uk[REC_ID_MAX], ik[REC_ID_MAX];
    static const unsigned char ctx[] = {0x81, 0xa4, 'p', 'a', 'g', 'e', 0x03};
    rec_event ev = {0};
    ev.user = uk;
    ev.ulen = (size_t)rec_id_str(uk, "ann", 3);
    ev.item = ik;
    ev.ilen = (size_t)rec_id_str(ik, "book", 4);
    ev.type = "click";
    ev.tlen = 5;
    ev.ts = 1790000123.5;
    ev.value = 4.25;
    ev.has_value = 1;
    ev.rec_id = "00000000000000a1";
    ev.rlen = 16;
    ev.context = ctx;
    ev.clen = sizeof ctx;
    rec_event_out out;
    assert_int_equal(rec_engine_event(e, &ev, &out), 0);
    assert_true(out.weight == 2.0f);
    rec_event bare = ev;
    bare.has_value = 0;
    bare.value = 0;
    bare.rec_id = NULL;
    bare.rlen = 0;
    bare.context = NULL;
    bare.clen = 0;
    bare.ts = 1790000200.0;
    assert_int_equal(rec_engine_event(e, &bare, NULL), 0);
    /* The weight changes after the events were logged. */
    assert_int_equal(rec_engine_set_type_weight(e, "click", 5, 7.0f), 0);
    assert_int_equal(rec_engine_commit(e), 0);
    char *crashed = crash_copy(dir);
    rec_engine_free(e);

    e = open_engine(crashed, 0);
    assert_true(rec_engine_type_weight(e, "click", 5) == 7.0f);
    seen_ev s = {0};
    uint64_t n = 0;
    assert_true(rec_engine_replay_due(e));
    assert_int_equal(rec_engine_replay(e, record, &s, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.ev[0].seq, 1);
    assert_true(s.ev[0].ts == ev.ts);
    assert_true(s.ev[0].weight == 2.0f);
    assert_string_equal(rec_engine_type_name(e, s.ev[0].type), "click");
    assert_int_equal(s.ev[0].has_value, 1);
    assert_true(s.ev[0].value == 4.25);
    assert_int_equal(s.ev[0].rlen, 16);
    assert_memory_equal(s.rec_id[0], "00000000000000a1", 16);
    assert_int_equal(s.ev[0].clen, sizeof ctx);
    assert_memory_equal(s.ctx[0], ctx, sizeof ctx);
    assert_int_equal(s.ev[1].has_value, 0);
    assert_int_equal(s.ev[1].rlen, 0);
    assert_null(s.ev[1].rec_id);
    assert_int_equal(s.ev[1].clen, 0);
    assert_null(s.ev[1].context);
    assert_true(s.ev[1].weight == 2.0f);
    /* The graph rebuilt from the log carries the weight in force too. */
    uint32_t hn;
    const rec_hentry *h = rec_graph_history(rec_engine_graph(e), s.ev[0].user, &hn);
    assert_int_equal(hn, 2);
    assert_true(h[0].weight == 2.0f && h[1].weight == 2.0f);
    rec_engine_free(e);
    rec_test_rmdir(crashed);
    rec_test_rmdir(dir);
}

static int kv_count(rec_engine *e, const char *key) {
    rec_buf b = REC_BUF_INIT;
    int rc = rec_engine_kv_get(e, key, strlen(key), &b);
    int n = rc == REC_ENOTFOUND ? 0 : rc ? -1 : b.len == 5 ? (int)rec_get_be32((const unsigned char *)b.data + 1) : -2;
    rec_buf_free(&b);
    return n;
}

/* Learned kv is written at checkpoints only: a replay after a crash
 * applies each event once, never on top of its own earlier effect. */
static void test_learned_kv_is_not_applied_twice(void **state) {
    (void)state;
    char *dir = rec_test_mkdir("replay");
    rec_engine *e = open_engine(dir, 0);
    events(e, 0, 6);        /* user u0 gets events 0 and 6: one here */
    assert_int_equal(kv_count(e, "n:0"), 1);
    assert_int_equal(rec_engine_checkpoint(e), 0);
    events(e, 6, 18);       /* u0: events 6 and 12 */
    assert_int_equal(kv_count(e, "n:0"), 3);
    /* A kv write outside learning mode is durable with the commit. */
    assert_int_equal(rec_engine_kv_put(e, "cfg", 3, "\xc3", 1), 0);
    assert_int_equal(rec_engine_commit(e), 0);
    char *crashed = crash_copy(dir);
    rec_engine_free(e);

    e = open_engine(crashed, 0);
    assert_int_equal(kv_count(e, "n:0"), 1); /* as of the checkpoint */
    rec_buf b = REC_BUF_INIT;
    assert_int_equal(rec_engine_kv_get(e, "cfg", 3, &b), 0);
    rec_buf_free(&b);
    uint64_t n = 0;
    assert_int_equal(rec_engine_replay(e, learn, e, &n), 0);
    assert_int_equal(n, 12);
    assert_int_equal(kv_count(e, "n:0"), 3);
    /* A write outside learning mode is seen over the learned copy, and a
     * learned delete hides the stored value. */
    unsigned char v[5] = {0xce, 0, 0, 0, 9};
    assert_int_equal(rec_engine_kv_put(e, "n:0", 3, v, 5), 0);
    assert_int_equal(kv_count(e, "n:0"), 9);
    int was = rec_engine_learning(e, 1);
    assert_int_equal(rec_engine_kv_del(e, "cfg", 3), 0);
    rec_engine_learning(e, was);
    assert_int_equal(rec_engine_kv_get(e, "cfg", 3, &b), REC_ENOTFOUND);
    assert_int_equal(rec_engine_checkpoint(e), 0);
    rec_engine_free(e);
    e = open_engine(crashed, 0);
    assert_int_equal(kv_count(e, "n:0"), 9);
    assert_int_equal(rec_engine_kv_get(e, "cfg", 3, &b), REC_ENOTFOUND);
    assert_false(rec_engine_replay_due(e));
    rec_buf_free(&b);
    rec_engine_free(e);
    rec_test_rmdir(crashed);
    rec_test_rmdir(dir);
}

/* Forgetting the user whose events end the log must not make new events
 * reuse sequences the checkpoint already claims (they would never be
 * replayed). */
static void test_new_events_never_hide_behind_the_checkpoint(void **state) {
    (void)state;
    char *dir = rec_test_mkdir("replay");
    rec_engine *e = open_engine(dir, 0);
    events(e, 0, 6);
    char uk[REC_ID_MAX], ik[REC_ID_MAX];
    rec_event ev = {0};
    ev.user = uk;
    ev.ulen = (size_t)rec_id_str(uk, "last", 4);
    ev.item = ik;
    ev.ilen = (size_t)rec_id_str(ik, "i1", 2);
    ev.type = "click";
    ev.tlen = 5;
    ev.ts = 1790009999;
    for (int i = 0; i < 3; i++)
        assert_int_equal(rec_engine_event(e, &ev, NULL), 0);
    assert_int_equal(rec_engine_checkpoint(e), 0);
    assert_int_equal(rec_engine_checkpoint_seq(e), 9);
    assert_int_equal(rec_engine_delete(e, REC_KIND_USER, uk, ev.ulen), 0);
    char *c1 = crash_copy(dir);
    rec_engine_free(e);
    e = open_engine(c1, 0);
    events(e, 6, 9);            /* learned live */
    assert_int_equal(rec_engine_commit(e), 0);
    char *c2 = crash_copy(c1);
    rec_engine_free(e);
    e = open_engine(c2, 0);
    uint64_t n = 0;
    assert_int_equal(rec_engine_replay(e, learn, e, &n), 0);
    assert_int_equal(n, 3);
    rec_engine_free(e);
    rec_test_rmdir(c2);
    rec_test_rmdir(c1);
    rec_test_rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failed_commit_replays_what_the_log_holds),
        cmocka_unit_test(test_checkpoint_after_rollback_claims_no_unlearned_event),
        cmocka_unit_test(test_replay_hands_every_field_and_the_weight_in_force),
        cmocka_unit_test(test_learned_kv_is_not_applied_twice),
        cmocka_unit_test(test_new_events_never_hide_behind_the_checkpoint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
