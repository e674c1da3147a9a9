/* harness.c - an engine with the server's scripts and dispatcher on a
 * temporary database, or a server over the protocol, behind one call. */
#include "harness.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "idmap.h"
#include "learn.h"
#include "lua_api.h"

#define COMMIT_EVERY 4096

static void set_err(rec_harness *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(rec_harness *h, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->err, sizeof h->err, fmt, ap);
    va_end(ap);
}

static void install_rec(lua_State *L, void *ud) {
    rec_harness *h = ud;
    rec_lua_set_rec(L, h->e, &h->rec_ref);
}

static int rm_tree(const char *dir) {
    char cmd[600];
    if (strchr(dir, '\''))
        return -1;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

/* Over the protocol the tool trains where the in-process run would
 * (remote_train), so the server's own schedule is paused while it runs and
 * resumed after, when this run paused it. Refused over TCP without a
 * token: the schedule then runs, and remote_train says so. */
static void pause_schedule(rec_harness *h, int pause) {
    static const char off[] = "\x91\x81\xa4" "auto" "\xc2", on[] = "\x91\x81\xa4" "auto" "\xc3";
    if (rec_client_call(h->cl, "model.schedule", pause ? off : on, sizeof off - 1, &h->rep) == 0)
        h->paused = pause;
}

int rec_harness_open(rec_harness *h, const rec_harness_opts *o) {
    memset(h, 0, sizeof *h);
    h->prog = o->prog ? o->prog : "recd";
    rec_client_reply_init(&h->rep);
    msgpack_sbuffer_init(&h->sb);
    msgpack_unpacked_init(&h->up);
    if (o->connect) {
        char err[512] = "";
        int rc = rec_client_connect(&h->cl, o->connect, err, sizeof err);
        if (rc)
            set_err(h, "%s", err);
        h->has_ials = 1; /* ask the server to train where the library would */
        if (!rc)
            pause_schedule(h, 1);
        return rc;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(h->dir, sizeof h->dir, "%s/recd-run-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(h->dir)) {
        set_err(h, "cannot create a temporary folder in %s: %s", tmp && *tmp ? tmp : "/tmp",
                strerror(errno));
        h->dir[0] = 0;
        return REC_EIO;
    }
    rec_engine_opts eo;
    rec_engine_opts_default(&eo);
    eo.store.no_sync = 1;           /* a scratch database */
    eo.seed = o->seed;              /* walks, MF negatives */
    eo.checkpoint_interval = 1e300; /* learned state stays in memory */
    char err[512] = "";
    int rc = rec_engine_open(&h->e, h->dir, &eo, err, sizeof err);
    if (rc) {
        set_err(h, "engine: %s", err);
        return rc;
    }
    if (o->prepare && (rc = o->prepare(h->e, o->prepare_ud, err, sizeof err))) {
        set_err(h, "%s", err);
        return rc;
    }
    rec_script_opts so;
    rec_script_opts_default(&so);
    so.scripts_dir = o->scripts;
    so.policies_dir = o->policies;
    if ((rc = rec_script_new(&h->rt, &so, install_rec, h, err, sizeof err))) {
        set_err(h, "scripts: %s", err);
        return rc;
    }
    for (size_t i = 0; i < rec_script_count(h->rt); i++) {
        rec_script_info in;
        if (!rec_script_info_at(h->rt, i, &in) && in.error) {
            set_err(h, "%s '%s' does not load: %s",
                    in.kind == REC_SCRIPT_POLICY ? "policy" : "strategy", in.name, in.error);
            return REC_ESCRIPT;
        }
    }
    /* the scripts' math.random too, so that a run repeats exactly */
    lua_State *L = rec_script_lua(h->rt);
    lua_getglobal(L, "math");
    lua_getfield(L, -1, "randomseed");
    lua_pushinteger(L, (lua_Integer)(o->seed & 0x7fffffffffffffffull));
    if (lua_pcall(L, 1, 0, 0) != LUA_OK)
        lua_pop(L, 1);
    lua_pop(L, 1);
    rec_dispatch_opts dopt = {.auth_token = NULL, .version = "tool"};
    if ((rc = rec_dispatch_new(&h->d, h->e, &dopt)))
        return rc;
    char path[1100];
    snprintf(path, sizeof path, "%s/pipelines.lua", o->scripts ? o->scripts : ".");
    if ((rc = rec_dispatch_set_scripts(h->d, h->rt, o->scripts ? path : NULL, h->rec_ref))) {
        set_err(h, "%s: not a valid pipelines file", path);
        return rc;
    }
    h->sess.trusted = 1;
    h->has_ials = rec_script_has(h->rt, REC_SCRIPT_POLICY, "ials", "on_events") ||
                  rec_script_has(h->rt, REC_SCRIPT_POLICY, "ials", "on_event");
    h->has_ease = rec_script_has(h->rt, REC_SCRIPT_POLICY, "ease", "on_load");
    return 0;
}

void rec_harness_close(rec_harness *h) {
    if (h->paused)
        pause_schedule(h, 0);
    rec_dispatch_free(h->d);
    rec_script_free(h->rt);
    rec_engine_free(h->e);
    if (h->dir[0])
        rm_tree(h->dir);
    rec_buf_free(&h->out);
    rec_client_free(h->cl);
    rec_client_reply_close(&h->rep);
    msgpack_sbuffer_destroy(&h->sb);
    msgpack_unpacked_destroy(&h->up);
    memset(h, 0, sizeof *h);
}

int rec_harness_commit(rec_harness *h) {
    if (!h->e)
        return 0;
    int rc = rec_engine_commit(h->e);
    if (rc)
        set_err(h, "commit: %s", rec_engine_errmsg(h->e));
    return rc;
}

static int remote(rec_harness *h, const char *method, const void *params, size_t len) {
    int rc = rec_client_call(h->cl, method, params, len, &h->rep);
    if (rc)
        set_err(h, "%s: %s: %s", method, h->rep.err_name[0] ? h->rep.err_name : rec_err_name(rc),
                h->rep.err_message[0] ? h->rep.err_message : rec_strerror(rc));
    h->answer = h->rep.msg.body;
    h->answer_len = h->rep.msg.body_len;
    return rc;
}

int rec_harness_call(rec_harness *h, const char *method, const msgpack_object *params) {
    if (h->cl) {
        msgpack_packer pk;
        h->sb.size = 0;
        msgpack_packer_init(&pk, &h->sb, msgpack_sbuffer_write);
        if (msgpack_pack_object(&pk, *params))
            return REC_ENOMEM;
        return remote(h, method, h->sb.data, h->sb.size);
    }
    int m = rec_dispatch_find(h->d, method, strlen(method));
    if (m < 0) {
        set_err(h, "%s: unknown method", method);
        return REC_ENOTFOUND;
    }
    h->out.len = 0;
    char err[512] = "";
    int rc = rec_dispatch_call(h->d, m, params, &h->sess, &h->out, err, sizeof err);
    if (rc)
        set_err(h, "%s: %s: %s", method, rec_err_name(rc), err);
    if (!rc && ++h->ops % COMMIT_EVERY == 0)
        rc = rec_harness_commit(h);
    h->answer = h->out.data;
    h->answer_len = h->out.len;
    return rc;
}

int rec_harness_call_packed(rec_harness *h, const char *method, const void *params,
                            size_t len) {
    if (h->cl)
        return remote(h, method, params, len);
    size_t off = 0;
    if (msgpack_unpack_next(&h->up, params, len, &off) != MSGPACK_UNPACK_SUCCESS) {
        set_err(h, "%s: params do not unpack", method);
        return REC_EPROTOCOL;
    }
    return rec_harness_call(h, method, &h->up.data);
}

/* The "training" count of the server's sys.info answer, or -1. */
static int64_t remote_trainings(rec_harness *h) {
    if (rec_client_call(h->cl, "sys.info", NULL, 0, &h->rep))
        return -1;
    msgpack_unpacked m;
    msgpack_unpacked_init(&m);
    int64_t n = -1;
    if (msgpack_unpack_next(&m, h->rep.msg.body, h->rep.msg.body_len, NULL) ==
            MSGPACK_UNPACK_SUCCESS &&
        m.data.type == MSGPACK_OBJECT_MAP) {
        const msgpack_object_map *mp = &m.data.via.map;
        for (uint32_t i = 0; i < mp->size; i++) {
            const msgpack_object *k = &mp->ptr[i].key, *v = &mp->ptr[i].val;
            if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == 8 &&
                !memcmp(k->via.str.ptr, "training", 8) &&
                (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
                 v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER))
                n = v->via.i64;
        }
    }
    msgpack_unpacked_destroy(&m);
    return n;
}

/* The server trains in its worker: ask it to train the models of its
 * policies on what it holds now, and wait until that training is
 * installed, as the library trains in place. A training already running
 * (the server's own schedule) is waited for first: it holds an older
 * snapshot. Polls every 5 ms; gives up after 10 minutes. */
static void remote_train(rec_harness *h) {
    static const char opts[] = "\x91\x80"; /* [{}]: the models of its policies */
    const struct timespec pause = {0, 5 * 1000 * 1000};
    int started = 0;
    for (int i = 0; i < 120000; i++) {
        if (!started) {
            int rc = rec_client_call(h->cl, "model.train", opts, sizeof opts - 1, &h->rep);
            if (rc == 0) {
                started = 1;
            } else if (rc != REC_EBUSY) {
                /* admin methods need the Unix socket or a token: without
                 * them the server trains on its own schedule only */
                if (!h->train_refused && rc != REC_ENOTFOUND)
                    fprintf(stderr, "%s: the server did not train (%s: %s); its "
                            "batch models follow its own schedule (connect over its "
                            "Unix socket to train where the library would)\n", h->prog,
                            h->rep.err_name[0] ? h->rep.err_name : rec_err_name(rc),
                            h->rep.err_message[0] ? h->rep.err_message : rec_strerror(rc));
                h->train_refused = 1;
                return;
            }
        } else if (remote_trainings(h) <= 0) {
            return;
        }
        nanosleep(&pause, NULL);
    }
}

void rec_harness_train(rec_harness *h) {
    if (h->cl) {
        if (!h->train_refused)
            remote_train(h);
        return;
    }
    if (h->has_ials) {
        rec_learn_ials_opts o;
        rec_learn_ials_opts_default(&o);
        rec_learn_ials_job *j = NULL;
        if (!rec_learn_ials_job_new(h->e, &o, &j) && !rec_learn_ials_job_run(j))
            rec_learn_ials_job_install(h->e, j);
        rec_learn_ials_job_free(j);
    }
    if (h->has_ease) {
        rec_learn_ease_opts o;
        rec_learn_ease_opts_default(&o);
        rec_learn_ease_job *j = NULL;
        if (!rec_learn_ease_job_new(h->e, &o, &j) && !rec_learn_ease_job_run(j))
            rec_learn_ease_job_install(h->e, j);
        rec_learn_ease_job_free(j);
    }
}

msgpack_object rec_harness_str(const char *s, size_t n) {
    msgpack_object o = {.type = MSGPACK_OBJECT_STR};
    o.via.str.ptr = s;
    o.via.str.size = (uint32_t)n;
    return o;
}

msgpack_object rec_harness_id(const char *key, size_t kl) {
    int is_int;
    int64_t iv = 0;
    const char *s = NULL;
    size_t sl = 0;
    msgpack_object o = {.type = MSGPACK_OBJECT_NIL};
    if (rec_id_decode(key, kl, &is_int, &iv, &s, &sl))
        return o;
    if (!is_int)
        return rec_harness_str(s, sl);
    if (iv >= 0) {
        o.type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        o.via.u64 = (uint64_t)iv;
    } else {
        o.type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
        o.via.i64 = iv;
    }
    return o;
}
