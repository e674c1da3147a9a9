/* test_train.c - the training schedule through a worker hook the test
 * drives by hand: a training is queued, not run, until the test runs it
 * (as a worker thread would) and hands back its status (as the loop thread
 * would). Checks one training at a time, refused options, a worker that
 * cannot be reached, a shutdown or a cancelled job that installs nothing,
 * the schedule of rec_train_tick (timer, share, the end of a burst), and
 * callers that wait for a training, and the fold-ins events owe: solved
 * in a job or by a reader, equal to an eager fold-in after the last event,
 * and a training held to a share of a core.
 * Each test runs on its own mkdtemp folder. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ftw.h>
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine.h"
#include "err.h"
#include "graph.h"
#include "ials.h"
#include "idmap.h"
#include "learn.h"
#include "script.h"
#include "train.h"

/* ---- a worker hook the test runs by hand ------------------------------- */

typedef struct fake_worker {
    int refuse;          /* queue fails with this (0: accepts) */
    int queued;          /* jobs queued so far */
    rec_work_fn work;    /* the job waiting, or NULL */
    rec_work_done_fn done;
    void *arg;
} fake_worker;

static int fake_queue(void *ud, rec_work_fn work, rec_work_done_fn done, void *arg) {
    fake_worker *w = ud;
    if (w->refuse)
        return w->refuse;
    assert_null(w->work); /* one job at a time */
    w->queued++;
    w->work = work;
    w->done = done;
    w->arg = arg;
    return 0;
}

/* Run the waiting job (run: as a worker would; else cancelled) and hand
 * back its status. */
static void fake_finish(fake_worker *w, int run) {
    assert_non_null(w->work);
    rec_work_done_fn done = w->done;
    void *arg = w->arg;
    if (run)
        w->work(arg);
    w->work = NULL;
    done(arg, run ? 0 : -125);
}

/* ---- fixture: an engine with events ------------------------------------ */

typedef struct fx {
    char root[64];
    char data[96], policies[96];
    rec_engine *e;
    rec_script_rt *rt;
    fake_worker w;
    rec_train *t;
    char err[256];
} fx;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    return remove(path);
}

static void add_event(fx *f, int u, int i) {
    char us[16], is[16], uk[REC_ID_MAX], ik[REC_ID_MAX];
    snprintf(us, sizeof us, "u%d", u);
    snprintf(is, sizeof is, "i%d", i);
    rec_event ev;
    memset(&ev, 0, sizeof ev);
    ev.user = uk;
    ev.ulen = (size_t)rec_id_str(uk, us, strlen(us));
    ev.item = ik;
    ev.ilen = (size_t)rec_id_str(ik, is, strlen(is));
    ev.type = "view";
    ev.tlen = 4;
    ev.ts = 1.7e9 + u * 10 + i;
    rec_event_out out;
    assert_int_equal(rec_engine_event(f->e, &ev, &out), 0);
}

static int overs; /* calls of the `over` hook */
static double fake_now = 1000.0; /* the schedule's clock: tests move it */
static double fake_clock(void) { return fake_now; }
static void later(double s) { fake_now += s; }
static void on_over(void *ud) {
    (void)ud;
    overs++;
}

/* policy: NULL for no script runtime, else the source of policies/ials.lua */
static void fx_open3(fx *f, double every, double share, double quiet, const char *policy) {
    memset(f, 0, sizeof *f);
    strcpy(f->root, "/tmp/test_train_XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(f->data, sizeof f->data, "%s/data", f->root);
    snprintf(f->policies, sizeof f->policies, "%s/policies", f->root);
    assert_int_equal(mkdir(f->data, 0700), 0);
    char err[256];
    assert_int_equal(rec_engine_open(&f->e, f->data, NULL, err, sizeof err), 0);
    for (int u = 0; u < 6; u++)
        for (int i = 0; i < 8; i++)
            if ((u + i) % 3)
                add_event(f, u, i);
    assert_int_equal(rec_engine_commit(f->e), 0);
    if (policy) {
        assert_int_equal(mkdir(f->policies, 0700), 0);
        char path[128];
        snprintf(path, sizeof path, "%s/ials.lua", f->policies);
        FILE *fp = fopen(path, "wb");
        assert_non_null(fp);
        fputs(policy, fp);
        assert_int_equal(fclose(fp), 0);
        rec_script_opts so;
        rec_script_opts_default(&so);
        so.policies_dir = f->policies;
        assert_int_equal(rec_script_new(&f->rt, &so, NULL, NULL, err, sizeof err), 0);
    }
    rec_train_opts o = {.every = every, .share = share, .quiet = quiet,
                        .worker = {fake_queue, &f->w}, .over = on_over,
                        .clock = fake_clock};
    assert_int_equal(rec_train_new(&f->t, f->e, f->rt, &o), 0);
}

static void fx_open(fx *f, double every, const char *policy) {
    fx_open3(f, every, 0, 0, policy);
}

static void fx_close(fx *f) {
    assert_false(rec_train_running(f->t));
    rec_train_free(f->t);
    rec_script_free(f->rt);
    rec_engine_free(f->e);
    assert_int_equal(nftw(f->root, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
}

/* Unpack a msgpack map written as a Lua-like list of key, value pairs. */
static void opts_of(msgpack_sbuffer *sb, msgpack_unpacked *u, int n, ...) {
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, (size_t)n);
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        const char *k = va_arg(ap, const char *);
        msgpack_pack_str(&pk, strlen(k));
        msgpack_pack_str_body(&pk, k, strlen(k));
        const char *v = va_arg(ap, const char *);
        if (v[0] >= '0' && v[0] <= '9') {
            msgpack_pack_uint32(&pk, (uint32_t)atoi(v));
        } else {
            msgpack_pack_str(&pk, strlen(v));
            msgpack_pack_str_body(&pk, v, strlen(v));
        }
    }
    va_end(ap);
    msgpack_unpacked_init(u);
    assert_int_equal(msgpack_unpack_next(u, sb->data, sb->size, NULL), MSGPACK_UNPACK_SUCCESS);
}

/* ---- tests --------------------------------------------------------------- */

static void test_one_at_a_time(void **state) {
    (void)state;
    fx f;
    fx_open(&f, 0, NULL);
    assert_int_equal(rec_train_start(f.t, NULL, f.err, sizeof f.err), 0);
    assert_int_equal(f.w.queued, 1);
    assert_true(rec_train_running(f.t));
    /* nothing is installed before the job is back */
    assert_null(rec_engine_space(f.e, "ials"));
    assert_int_equal(rec_train_start(f.t, NULL, f.err, sizeof f.err), REC_EBUSY);
    assert_string_equal(f.err, "a training is already running");
    assert_int_equal(f.w.queued, 1);
    fake_finish(&f.w, 1);
    assert_false(rec_train_running(f.t));
    rec_space *s = rec_engine_space(f.e, "ials");
    assert_non_null(s);
    assert_int_equal(s->dim, 64);
    fx_close(&f);
}

static void test_options(void **state) {
    (void)state;
    fx f;
    fx_open(&f, 0, NULL);
    msgpack_sbuffer sb;
    msgpack_unpacked u;
    opts_of(&sb, &u, 1, "model", "svd");
    assert_int_equal(rec_train_start(f.t, &u.data, f.err, sizeof f.err), REC_EINVAL);
    assert_string_equal(f.err, "model must be \"ials\", \"ease\" or \"all\"");
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
    opts_of(&sb, &u, 1, "factors", "0");
    assert_true(rec_train_start(f.t, &u.data, f.err, sizeof f.err) < 0);
    assert_non_null(strstr(f.err, "ials: bad options"));
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
    assert_int_equal(f.w.queued, 0);
    assert_false(rec_train_running(f.t));
    /* model "ials" into a space of its own, 8 factors */
    opts_of(&sb, &u, 3, "model", "ials", "space", "mine", "factors", "8");
    assert_int_equal(rec_train_start(f.t, &u.data, f.err, sizeof f.err), 0);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
    fake_finish(&f.w, 1);
    assert_non_null(rec_engine_space(f.e, "mine"));
    assert_int_equal(rec_engine_space(f.e, "mine")->dim, 8);
    assert_null(rec_engine_space(f.e, "ials"));
    fx_close(&f);
}

static void test_worker_unreachable(void **state) {
    (void)state;
    fx f;
    fx_open(&f, 0, NULL);
    f.w.refuse = REC_EIO;
    assert_int_equal(rec_train_start(f.t, NULL, f.err, sizeof f.err), REC_EIO);
    assert_non_null(strstr(f.err, "cannot start a worker"));
    assert_false(rec_train_running(f.t));
    f.w.refuse = 0;
    assert_int_equal(rec_train_start(f.t, NULL, f.err, sizeof f.err), 0);
    fake_finish(&f.w, 1);
    assert_non_null(rec_engine_space(f.e, "ials"));
    fx_close(&f);
}

static void test_closed_or_cancelled_installs_nothing(void **state) {
    (void)state;
    fx f;
    fx_open(&f, 0, NULL);
    /* cancelled: the job never ran */
    assert_int_equal(rec_train_start(f.t, NULL, f.err, sizeof f.err), 0);
    fake_finish(&f.w, 0);
    assert_false(rec_train_running(f.t));
    assert_null(rec_engine_space(f.e, "ials"));
    /* ran, but the host shut down meanwhile */
    assert_int_equal(rec_train_start(f.t, NULL, f.err, sizeof f.err), 0);
    rec_train_close(f.t);
    fake_finish(&f.w, 1);
    assert_false(rec_train_running(f.t));
    assert_null(rec_engine_space(f.e, "ials"));
    fx_close(&f);
}

static void test_schedule(void **state) {
    (void)state;
    fx f;
    /* no script runtime: never scheduled */
    fx_open(&f, 1e-3, NULL);
    later(0.002);
    rec_train_tick(f.t);
    assert_int_equal(f.w.queued, 0);
    fx_close(&f);
    /* every 0: never */
    fx_open(&f, 0, "return {on_event = function(ev) end}\n");
    later(0.002);
    rec_train_tick(f.t);
    assert_int_equal(f.w.queued, 0);
    fx_close(&f);
    /* "ials" loaded but without on_event: not its model */
    fx_open(&f, 1e-3, "return {rerank = function(req, items) return items end}\n");
    later(0.002);
    rec_train_tick(f.t);
    assert_int_equal(f.w.queued, 0);
    fx_close(&f);
    /* due: a training; not again until events come in */
    fx_open(&f, 1e-3, "return {on_event = function(ev) end}\n");
    later(0.002);
    rec_train_tick(f.t);
    assert_int_equal(f.w.queued, 1);
    rec_train_tick(f.t); /* running: not twice */
    assert_int_equal(f.w.queued, 1);
    fake_finish(&f.w, 1);
    assert_non_null(rec_engine_space(f.e, "ials"));
    later(0.002);
    rec_train_tick(f.t);
    assert_int_equal(f.w.queued, 1);
    add_event(&f, 9, 1);
    rec_train_tick(f.t);
    assert_int_equal(f.w.queued, 2);
    fake_finish(&f.w, 1);
    /* closed: no more */
    rec_train_close(f.t);
    add_event(&f, 9, 2);
    later(0.002);
    rec_train_tick(f.t);
    assert_int_equal(f.w.queued, 2);
    fx_close(&f);
}

#define IALS_POLICY "return {on_event = function(ev) end}\n"

static void test_share(void **state) {
    (void)state;
    fx f;
    fx_open3(&f, 0, 0.5, 0, IALS_POLICY);
    /* 32 events, none trained on: due at once */
    rec_train_tick(f.t);
    assert_int_equal(f.w.queued, 1);
    fake_finish(&f.w, 1);
    rec_train_model m;
    rec_train_model_get(f.t, REC_TRAIN_IALS, &m);
    assert_int_equal(m.events, 32);
    assert_int_equal(m.trainings, 1);
    assert_true(m.trained_at > 1e9);
    assert_false(m.running);
    assert_false(m.pending);
    /* 16 more: half of 32, not more */
    for (int i = 0; i < 16; i++)
        add_event(&f, 20 + i, 1);
    rec_train_tick(f.t);
    assert_int_equal(f.w.queued, 1);
    add_event(&f, 40, 1);
    rec_train_model_get(f.t, REC_TRAIN_IALS, &m);
    assert_true(m.pending);
    rec_train_tick(f.t);
    assert_int_equal(f.w.queued, 2);
    rec_train_model_get(f.t, REC_TRAIN_IALS, &m);
    assert_true(m.running);
    fake_finish(&f.w, 1);
    rec_train_model_get(f.t, REC_TRAIN_IALS, &m);
    assert_int_equal(m.events, 49);
    assert_int_equal(m.trainings, 2);
    /* ease is not loaded: never trained, nothing planned */
    rec_train_model_get(f.t, REC_TRAIN_EASE, &m);
    assert_int_equal(m.trainings, 0);
    assert_false(m.pending);
    fx_close(&f);
}

static void test_quiet(void **state) {
    (void)state;
    fx f;
    fx_open3(&f, 0, 0.1, 0.05, IALS_POLICY);
    rec_train_tick(f.t); /* the 32 events of the log */
    assert_int_equal(f.w.queued, 1);
    fake_finish(&f.w, 1);
    /* a burst: a training begins in it (share), an event comes while it runs */
    later(0.06);
    for (int i = 0; i < 7; i++)
        add_event(&f, 50 + i, 2);
    rec_train_tick(f.t);
    assert_int_equal(f.w.queued, 2);
    add_event(&f, 60, 2);
    rec_train_tick(f.t);
    fake_finish(&f.w, 1);
    rec_train_tick(f.t); /* not quiet yet, and 1 event is under the share */
    assert_int_equal(f.w.queued, 2);
    rec_train_model m;
    rec_train_model_get(f.t, REC_TRAIN_IALS, &m);
    assert_int_equal(m.events, 39);
    assert_true(m.pending);
    /* quiet: once more, on all of it */
    later(0.06);
    rec_train_tick(f.t);
    assert_int_equal(f.w.queued, 3);
    fake_finish(&f.w, 1);
    rec_train_model_get(f.t, REC_TRAIN_IALS, &m);
    assert_int_equal(m.events, 40);
    assert_false(m.pending);
    later(0.06);
    rec_train_tick(f.t);
    assert_int_equal(f.w.queued, 3);
    /* a burst under the share that no training began in: nothing */
    add_event(&f, 61, 2);
    rec_train_tick(f.t);
    later(0.06);
    rec_train_tick(f.t);
    later(0.06);
    rec_train_tick(f.t);
    assert_int_equal(f.w.queued, 3);
    rec_train_model_get(f.t, REC_TRAIN_IALS, &m);
    assert_false(m.pending);
    /* quiet 0: a burst's end trains nothing */
    fx_close(&f);
    fx_open3(&f, 0, 0.1, 0, IALS_POLICY);
    rec_train_tick(f.t);
    for (int i = 0; i < 7; i++)
        add_event(&f, 50 + i, 2);
    fake_finish(&f.w, 1);
    later(0.02);
    rec_train_tick(f.t); /* 7 > 3.2: share */
    assert_int_equal(f.w.queued, 2);
    add_event(&f, 60, 2);
    fake_finish(&f.w, 1);
    later(0.02);
    rec_train_tick(f.t);
    assert_int_equal(f.w.queued, 2);
    fx_close(&f);
}

static void test_wait(void **state) {
    (void)state;
    fx f;
    fx_open(&f, 0, NULL);
    overs = 0;
    uint64_t t1 = 0, t2 = 0, t3 = 0;
    rec_train_result r;
    assert_int_equal(rec_train_start_wait(f.t, NULL, &t1, f.err, sizeof f.err), 0);
    assert_int_equal(rec_train_result_get(f.t, t1, &r), REC_PENDING);
    fake_finish(&f.w, 1);
    assert_int_equal(overs, 1);
    assert_int_equal(rec_train_result_get(f.t, t1, &r), 0);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.models, REC_TRAIN_IALS);
    assert_int_equal(r.events, 32);
    /* one running: a waiter waits for it, then for one on the events since */
    assert_int_equal(rec_train_start(f.t, NULL, f.err, sizeof f.err), 0);
    add_event(&f, 30, 1);
    assert_int_equal(rec_train_start_wait(f.t, NULL, &t2, f.err, sizeof f.err), 0);
    assert_int_equal(rec_train_start_wait(f.t, NULL, &t3, f.err, sizeof f.err), 0);
    assert_int_equal(t2, t3); /* joins it */
    assert_int_equal(f.w.queued, 2);
    /* bad options are refused at once, even when it would have to wait */
    msgpack_sbuffer sb;
    msgpack_unpacked u;
    opts_of(&sb, &u, 1, "iters", "5000");
    assert_int_equal(rec_train_start_wait(f.t, &u.data, &t3, f.err, sizeof f.err), REC_EINVAL);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
    fake_finish(&f.w, 1);
    assert_int_equal(f.w.queued, 3); /* the one asked for started */
    assert_int_equal(rec_train_result_get(f.t, t2, &r), REC_PENDING);
    add_event(&f, 31, 1); /* after its snapshot */
    fake_finish(&f.w, 1);
    assert_int_equal(overs, 3);
    assert_int_equal(rec_train_result_get(f.t, t2, &r), 0);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.events, 33);
    /* the host stops: the one asked to follow does not start */
    assert_int_equal(rec_train_start(f.t, NULL, f.err, sizeof f.err), 0);
    assert_int_equal(rec_train_start_wait(f.t, NULL, &t3, f.err, sizeof f.err), 0);
    rec_train_hold(f.t);
    assert_int_equal(rec_train_start(f.t, NULL, f.err, sizeof f.err), REC_EBUSY);
    fake_finish(&f.w, 1);
    assert_int_equal(f.w.queued, 4);
    assert_int_equal(rec_train_result_get(f.t, t3, &r), 0);
    assert_int_equal(r.rc, REC_EBUSY);
    assert_string_equal(r.err, "the server is stopping");
    fx_close(&f);
}


/* ---- owed fold-ins ------------------------------------------------------- */

static uint32_t user_idx(fx *f, int u) {
    char us[16], uk[REC_ID_MAX];
    snprintf(us, sizeof us, "u%d", u);
    size_t kl = (size_t)rec_id_str(uk, us, strlen(us));
    return rec_engine_lookup(f->e, REC_KIND_USER, uk, kl);
}

/* An ials job of 8 factors on the fixture's events, snapshotted now. */
static rec_learn_ials_job *ials_job(fx *f) {
    rec_learn_ials_opts o;
    rec_learn_ials_opts_default(&o);
    o.factors = 8;
    o.reg = 1.0f;
    rec_learn_ials_job *j;
    assert_int_equal(rec_learn_ials_job_new(f->e, &o, &j), 0);
    return j;
}

/* Train and install job j. */
static void ials_install(fx *f, rec_learn_ials_job *j) {
    assert_int_equal(rec_learn_ials_job_run(j), 0);
    assert_int_equal(rec_learn_ials_job_install(f->e, j), 0);
    rec_learn_ials_job_free(j);
}

/* Install an ials model trained on the fixture's events. */
static void train_ials(fx *f) { ials_install(f, ials_job(f)); }

/* A click of user u on item i, owing u's fold-in as policies/ials.lua does. */
static void click(fx *f, int u, int i) {
    add_event(f, u, i);
    assert_int_equal(rec_learn_fold_in_later(f->e, "ials", user_idx(f, u)), 0);
}

/* The user's ials row (8 floats) into out; 0 when it has none. */
static int row_of(fx *f, int u, float *out) {
    const float *v = rec_space_get(rec_engine_space(f->e, "ials"), REC_KIND_USER, user_idx(f, u));
    if (v)
        memcpy(out, v, 8 * sizeof *out);
    return v != NULL;
}

/* The row an eager fold-in leaves now equals `got`, bit for bit. */
static void assert_eager(fx *f, int u, const float *got) {
    assert_int_equal(rec_learn_fold_in(f->e, "ials", user_idx(f, u)), 0);
    float want[8];
    assert_true(row_of(f, u, want));
    assert_memory_equal(got, want, sizeof want);
}

/* A reader settles u: nothing is owed after it, and u's row is what an
 * eager fold-in leaves. */
static void assert_settled(fx *f, int u) {
    float got[8];
    assert_int_equal(rec_learn_settle(f->e, "ials", user_idx(f, u)), 0);
    assert_int_equal(rec_learn_owed(f->e), 0);
    assert_true(row_of(f, u, got));
    assert_eager(f, u, got);
}

static void test_fold_owed(void **state) {
    (void)state;
    fx f;
    fx_open(&f, 0, NULL);
    uint32_t u1 = user_idx(&f, 1);
    /* no model: nothing is owed */
    assert_int_equal(rec_learn_fold_in_later(f.e, "ials", u1), REC_ENOTFOUND);
    train_ials(&f);
    float before[8], got[8];
    assert_true(row_of(&f, 1, before));
    /* two clicks owe one fold-in, not done yet; nothing read the model,
     * so no job solves it */
    click(&f, 1, 30);
    click(&f, 1, 2);
    assert_int_equal(rec_learn_owed(f.e), 1);
    assert_int_equal(rec_learn_queued(f.e), 0);
    rec_train_fold(f.t);
    assert_int_equal(f.w.queued, 0);
    assert_true(row_of(&f, 1, got));
    assert_memory_equal(got, before, sizeof got);
    /* a read of the model (another user's row) queues what it owes */
    assert_int_equal(rec_learn_settle(f.e, "other", user_idx(&f, 2)), 0);
    assert_int_equal(rec_learn_queued(f.e), 0);
    assert_int_equal(rec_learn_settle(f.e, "ials", user_idx(&f, 2)), 0);
    assert_int_equal(rec_learn_queued(f.e), 1);
    /* a job solves it off the thread; installed, it is an eager fold-in */
    rec_train_fold(f.t);
    assert_int_equal(f.w.queued, 1);
    rec_train_fold(f.t); /* one job at a time */
    assert_int_equal(f.w.queued, 1);
    fake_finish(&f.w, 1);
    assert_int_equal(rec_learn_owed(f.e), 0);
    assert_true(row_of(&f, 1, got));
    assert_true(memcmp(got, before, sizeof got) != 0);
    assert_eager(&f, 1, got);

    /* read lately, a click is queued at once */
    click(&f, 1, 3);
    assert_int_equal(rec_learn_queued(f.e), 1);
    rec_train_fold(f.t);
    fake_finish(&f.w, 1);
    assert_int_equal(rec_learn_owed(f.e), 0);

    /* a reader settles the user first: a newcomer gets their row */
    click(&f, 9, 1);
    click(&f, 9, 4);
    assert_false(row_of(&f, 9, got));
    assert_int_equal(rec_learn_settle(f.e, "other", REC_IDX_NONE), 0);
    assert_int_equal(rec_learn_owed(f.e), 1);
    assert_settled(&f, 9);

    /* counting users folds in the newcomers only */
    click(&f, 10, 1);
    click(&f, 1, 5);
    assert_int_equal(rec_learn_owed(f.e), 2);
    assert_int_equal(rec_learn_settle_new(f.e, "ials"), 0);
    assert_int_equal(rec_learn_owed(f.e), 1);
    assert_true(row_of(&f, 10, got));
    assert_eager(&f, 10, got);
    assert_int_equal(rec_learn_settle(f.e, "ials", u1), 0);
    assert_int_equal(rec_learn_owed(f.e), 0);

    /* an event after the job's snapshot: its result is dropped, the user
     * stays owed, and what is read equals a fold-in after that event */
    click(&f, 2, 3);
    rec_train_fold(f.t);
    assert_true(row_of(&f, 2, before));
    click(&f, 2, 31);
    fake_finish(&f.w, 1); /* installs nothing, queues the next job */
    assert_int_equal(rec_learn_owed(f.e), 1);
    assert_true(row_of(&f, 2, got));
    assert_memory_equal(got, before, sizeof got);
    fake_finish(&f.w, 1);
    assert_int_equal(rec_learn_owed(f.e), 0);
    assert_true(row_of(&f, 2, got));
    assert_eager(&f, 2, got);

    /* a cancelled job leaves the users owed; a checkpoint stores the row
     * as it is, and a reader settles it */
    click(&f, 3, 5);
    assert_true(row_of(&f, 3, before));
    rec_train_fold(f.t);
    fake_finish(&f.w, 0);
    assert_int_equal(rec_learn_owed(f.e), 1);
    assert_int_equal(rec_engine_checkpoint(f.e), 0);
    assert_int_equal(rec_learn_owed(f.e), 1);
    assert_true(row_of(&f, 3, got));
    assert_memory_equal(got, before, sizeof got);
    assert_settled(&f, 3);
    while (f.w.work)
        fake_finish(&f.w, 1);

    /* a new training pays what was owed before its snapshot; a user
     * marked after it is owed against the new factors */
    click(&f, 4, 6);
    rec_train_fold(f.t); /* out while the model is replaced */
    rec_learn_ials_job *j = ials_job(&f);
    click(&f, 5, 7);
    ials_install(&f, j);
    assert_int_equal(rec_learn_owed(f.e), 1);
    assert_true(row_of(&f, 4, before));
    fake_finish(&f.w, 1); /* solved against the old model: dropped */
    assert_true(row_of(&f, 4, got));
    assert_memory_equal(got, before, sizeof got);
    assert_settled(&f, 5);
    while (f.w.work)
        fake_finish(&f.w, 1);

    /* with REC_LEARN_FOLD_BACKLOG users queued, the next is owed and not
     * queued (never solved on this thread for a writer) until there is
     * room again */
    for (int u = 100; u < 100 + REC_LEARN_FOLD_BACKLOG + 1; u++)
        add_event(&f, u, u % 8);
    for (int u = 100; u < 100 + REC_LEARN_FOLD_BACKLOG; u++)
        assert_int_equal(rec_learn_fold_in_later(f.e, "ials", user_idx(&f, u)), 0);
    assert_int_equal(rec_learn_queued(f.e), REC_LEARN_FOLD_BACKLOG);
    int last = 100 + REC_LEARN_FOLD_BACKLOG;
    assert_int_equal(rec_learn_fold_in_later(f.e, "ials", user_idx(&f, last)), 0);
    assert_int_equal(rec_learn_owed(f.e), REC_LEARN_FOLD_BACKLOG + 1);
    assert_int_equal(rec_learn_queued(f.e), REC_LEARN_FOLD_BACKLOG);
    assert_false(row_of(&f, last, got));
    /* jobs of 512 drain the queue, then the next takes the one left */
    rec_learn_fold_job *fj = NULL;
    for (int k = 0; k < 64 && rec_learn_owed(f.e); k++) {
        assert_int_equal(rec_learn_fold_job_new(f.e, 512, &fj), 0);
        assert_true(rec_learn_fold_job_users(fj) > 0);
        rec_learn_fold_job_run(fj);
        assert_int_equal(rec_learn_fold_job_install(f.e, fj), 0);
    }
    rec_learn_fold_job_free(fj);
    assert_int_equal(rec_learn_owed(f.e), 0);
    assert_true(row_of(&f, last, got));
    assert_eager(&f, last, got);
    fx_close(&f);
}

/* A fold-in of fewer items than factors takes the short (Woodbury) form:
 * the same vector as the f x f solve of rec_ials_fold_in, up to rounding. */
/* got equals want (8 floats, not all zero) within 1e-4 of want's largest. */
static void assert_close(const float *got, const float *want) {
    float err = 0, norm = 0;
    for (int k = 0; k < 8; k++) {
        err = fmaxf(err, fabsf(got[k] - want[k]));
        norm = fmaxf(norm, fabsf(want[k]));
    }
    assert_true(norm > 0);
    assert_true(err <= 1e-4f * norm);
}

static void test_fold_short(void **state) {
    (void)state;
    fx f;
    fx_open(&f, 0, NULL);
    train_ials(&f);
    rec_space *s = rec_engine_space(f.e, "ials");
    uint32_t ni = rec_engine_bound(f.e, REC_KIND_ITEM);
    float V[64 * 8], G[64], got[8], want[8];
    assert_true(ni <= 64);
    memset(V, 0, sizeof V);
    for (uint32_t i = 0; i < ni; i++)
        if (rec_space_has(s, REC_KIND_ITEM, i))
            memcpy(V + i * 8, rec_space_get(s, REC_KIND_ITEM, i), 8 * sizeof(float));
    rec_ials_gram(V, ni, 8, G);
    rec_learn_ials_opts o;
    rec_learn_ials_opts_default(&o);
    int shorts = 0;
    for (int u = 0; u < 6; u++) {
        uint32_t ui = user_idx(&f, u), hn;
        const rec_hentry *h = rec_graph_history(rec_engine_graph(f.e), ui, &hn);
        uint32_t items[64];
        float conf[64];
        size_t d = 0;
        for (uint32_t k = 0; k < hn; k++) { /* distinct items in the fixture */
            items[d] = h[k].item;
            conf[d++] = o.alpha * h[k].weight;
        }
        shorts += d < 8;
        assert_int_equal(rec_learn_fold_in(f.e, "ials", ui), 0);
        assert_true(row_of(&f, u, got));
        assert_int_equal(rec_ials_fold_in(V, G, ni, 8, 1.0f, items, conf, d, want), 0);
        assert_close(got, want);
    }
    assert_true(shorts >= 4);
    /* Repeated items sum their confidences: a short history (20 events on
     * 7 items, the small solve) and a long one (100 events on the 8, the
     * full one), against the reference solve of the distinct items. */
    const int runs[2][3] = {{50, 20, 7}, {51, 100, 8}}; /* user, events, items */
    for (int r = 0; r < 2; r++) {
        int u = runs[r][0];
        for (int k = 0; k < runs[r][1]; k++)
            add_event(&f, u, (k * 3) % runs[r][2]);
        uint32_t ui = user_idx(&f, u), hn;
        const rec_hentry *h = rec_graph_history(rec_engine_graph(f.e), ui, &hn);
        assert_int_equal(hn, runs[r][1]);
        uint32_t items[64];
        float conf[64];
        size_t d = 0;
        for (uint32_t k = 0; k < hn; k++) {
            size_t j = 0;
            while (j < d && items[j] != h[k].item)
                j++;
            if (j == d) {
                items[d] = h[k].item;
                conf[d++] = 0.0f;
            }
            conf[j] += o.alpha * h[k].weight;
        }
        assert_int_equal(d, runs[r][2]);
        assert_int_equal(rec_learn_fold_in(f.e, "ials", ui), 0);
        assert_true(row_of(&f, u, got));
        assert_int_equal(rec_ials_fold_in(V, G, ni, 8, 1.0f, items, conf, d, want), 0);
        assert_close(got, want);
    }
    fx_close(&f);
}

/* A training held to a share of a core sleeps between slices of rows and
 * ends with the same factors; a share outside (0, 1] is refused. */
static void test_paced_training(void **state) {
    (void)state;
    fx f;
    fx_open(&f, 0, NULL);
    rec_learn_ials_opts o;
    rec_learn_ials_opts_default(&o);
    assert_true(o.cpu == 1.0);
    o.factors = 8;
    rec_learn_ials_job *j;
    o.cpu = 0.0;
    assert_int_equal(rec_learn_ials_job_new(f.e, &o, &j), REC_EINVAL);
    o.cpu = 1.5;
    assert_int_equal(rec_learn_ials_job_new(f.e, &o, &j), REC_EINVAL);
    float rows[2][6][8];
    double cpu[2] = {1.0, 0.3};
    for (int r = 0; r < 2; r++) {
        o.cpu = cpu[r];
        assert_int_equal(rec_learn_ials_job_new(f.e, &o, &j), 0);
        assert_int_equal(rec_learn_ials_job_run(j), 0);
        assert_int_equal(rec_learn_ials_job_install(f.e, j), 0);
        rec_learn_ials_job_free(j);
        for (int u = 0; u < 6; u++)
            assert_true(row_of(&f, u, rows[r][u]));
    }
    assert_memory_equal(rows[0], rows[1], sizeof rows[0]);
    fx_close(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_at_a_time),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_worker_unreachable),
        cmocka_unit_test(test_closed_or_cancelled_installs_nothing),
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_share),
        cmocka_unit_test(test_quiet),
        cmocka_unit_test(test_wait),
        cmocka_unit_test(test_fold_owed),
        cmocka_unit_test(test_fold_short),
        cmocka_unit_test(test_paced_training),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
