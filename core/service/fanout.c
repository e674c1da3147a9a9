/* fanout.c - events handed to the policies, live and replayed (fanout.h). */
#include "fanout.h"

#include "click.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "feedback.h"
#include "log.h"
#include "lua_api.h"
#include "value.h"

typedef struct id_arg {
    const char *key;
    size_t kl;
} id_arg;

/* Push an id, protected (rec_script_pcall). [-0, +1, m] */
static int push_id_arg(lua_State *L) {
    const id_arg *a = lua_touserdata(L, 1);
    rec_lua_push_id(L, a->key, a->kl);
    return 1;
}

void rec_fanout_forget(rec_fanout *f, const char *key, size_t kl) {
    rec_fanout_flush(f);
    rec_script_info in;
    id_arg a = {key, kl};
    for (size_t i = 0; i < rec_script_count(f->rt); i++) {
        if (rec_script_info_at(f->rt, i, &in) || in.kind != REC_SCRIPT_POLICY ||
            !in.loaded || !rec_script_has(f->rt, REC_SCRIPT_POLICY, in.name, "on_forget"))
            continue;
        char err[512];
        if (rec_script_pcall(f->rt, push_id_arg, &a, 0, 1, 0, err, sizeof err)) {
            REC_WARN("on_forget: %s", err);
            continue;
        }
        if (rec_script_call(f->rt, REC_SCRIPT_POLICY, in.name, "on_forget", 1, 0, err,
                            sizeof err))
            REC_WARN("on_forget: %s", err);
    }
}

/* The loaded policies with on_event or on_events (f->pol, f->batched),
 * looked up again when a script was loaded or removed since. Those past
 * REC_FANOUT_POLICIES are left out, with a warning. */
static void policies_sync(rec_fanout *f) {
    if (f->of == f->rt && f->gen == rec_script_generation(f->rt))
        return;
    f->of = f->rt;
    f->gen = rec_script_generation(f->rt);
    f->npol = 0;
    rec_script_info in;
    for (size_t i = 0; i < rec_script_count(f->rt); i++) {
        if (rec_script_info_at(f->rt, i, &in) || in.kind != REC_SCRIPT_POLICY || !in.loaded)
            continue;
        int batched = rec_script_has(f->rt, REC_SCRIPT_POLICY, in.name, "on_events");
        if (!batched && !rec_script_has(f->rt, REC_SCRIPT_POLICY, in.name, "on_event"))
            continue;
        if (f->npol == REC_FANOUT_POLICIES) {
            REC_WARN("on_event: only the first %d policies get events", REC_FANOUT_POLICIES);
            break;
        }
        f->batched[f->npol] = (uint8_t)batched;
        f->pol[f->npol++] = in.name;
    }
}

/* Do loaded policies handle events? Then they replace the built-in
 * feedback. */
static int policies_learn(rec_fanout *f) {
    if (!f->rt)
        return 0;
    policies_sync(f);
    return f->npol > 0;
}

typedef struct batch_arg {
    rec_engine *e;
    const rec_replay_event *ev;
    size_t n, i;
} batch_arg;

/* Push the batch, protected (rec_script_pcall): the memory cap applies,
 * and a refusal fails this batch's hand-over only. [-0, +1, m] */
static int push_batch(lua_State *L) {
    const batch_arg *a = lua_touserdata(L, 1);
    rec_lua_push_events(L, a->e, a->ev, a->n);
    return 1;
}

/* Push event a->i of the batch below (the batch's table of it), protected.
 * [-1, +1, m] */
static int push_batch_event(lua_State *L) {
    const batch_arg *a = lua_touserdata(L, 1);
    rec_lua_events_get(L, 2, a->i + 1);
    return 1;
}

/* Hand the queued events to every policy, in name order: a policy with
 * on_events gets them as one batch, one with on_event one by one (each
 * event's table built once and shared). os.time() in a call is the
 * time of its event, or of the batch's last. A policy that fails is
 * logged and counted; the events themselves are already stored. */
static void policies_run(rec_fanout *f, const rec_replay_event *ev, size_t n) {
    lua_State *L = rec_script_lua(f->rt);
    batch_arg a = {f->e, ev, n, 0};
    char err[512];
    if (rec_script_pcall(f->rt, push_batch, &a, 0, 1, 0, err, sizeof err)) {
        REC_WARN("on_events: %s", err);
        return;
    }
    int b = lua_gettop(L);
    /* f->pol holds (no script loads from inside a call) */
    for (size_t p = 0; p < f->npol; p++) {
        if (f->batched[p]) {
            rec_clock_set(ev[n - 1].ts);
            lua_pushvalue(L, b);
            if (rec_script_call(f->rt, REC_SCRIPT_POLICY, f->pol[p], "on_events", 1, 0, err,
                                sizeof err))
                REC_WARN("on_events: %s", err);
            continue;
        }
        for (a.i = 0; a.i < n; a.i++) {
            rec_clock_set(ev[a.i].ts);
            lua_pushvalue(L, b);
            if (rec_script_pcall(f->rt, push_batch_event, &a, 1, 1, 0, err, sizeof err)) {
                REC_WARN("on_event: %s", err);
                continue;
            }
            if (rec_script_call(f->rt, REC_SCRIPT_POLICY, f->pol[p], "on_event", 1, 0, err,
                                sizeof err))
                REC_WARN("on_event: %s", err);
        }
    }
    rec_lua_events_close(L, b);
    lua_settop(L, b - 1);
}

/* What an event teaches, live or replayed: the same function with the same
 * fields, so a replay after a crash or a failed commit learns what the live
 * path learned. */
/* The click model: lists whose window ended by the event's time give
 * their negatives, then the event's click or conversion its positive. */
static int click_learn(rec_fanout *f, const rec_replay_event *ev) {
    rec_click *m = rec_engine_click(f->e);
    if (!rec_click_sync(m, f->rt))
        return 0;
    int rc = rec_click_expire(m, f->e, ev->ts);
    const char *tn = rec_engine_type_name(f->e, ev->type);
    if (!rc && ev->rlen && tn)
        rc = rec_click_feedback(m, f->e, ev->rec_id, ev->rlen, ev->item, tn, strlen(tn), ev->ts);
    return rc;
}

/* Queue ev for the policies; its rec_id and context bytes are copied. */
static int enqueue(rec_fanout *f, const rec_replay_event *ev) {
    if (f->nq && f->rollbacks != rec_engine_rollbacks(f->e))
        f->nq = 0; /* a failed commit took them back: replayed from the log */
    if (!f->nq) {
        f->rollbacks = rec_engine_rollbacks(f->e);
        rec_buf_clear(&f->bytes);
    }
    if (f->nq == f->capq) {
        size_t cap = f->capq ? f->capq * 2 : 64;
        rec_replay_event *q = realloc(f->q, cap * sizeof *q);
        size_t *off = q ? realloc(f->off, cap * sizeof *off) : NULL;
        if (q)
            f->q = q;
        if (!off)
            return REC_ENOMEM;
        f->off = off;
        f->capq = cap;
    }
    f->off[f->nq] = f->bytes.len;
    if (rec_buf_append(&f->bytes, ev->rec_id, ev->rlen) ||
        rec_buf_append(&f->bytes, ev->context, ev->clen))
        return REC_ENOMEM;
    f->q[f->nq++] = *ev;
    return 0;
}

void rec_fanout_flush(rec_fanout *f) {
    if (!f->nq || f->flushing)
        return;
    size_t n = f->nq;
    f->nq = 0;
    if (f->rollbacks != rec_engine_rollbacks(f->e))
        return; /* a failed commit took them back: replayed from the log */
    f->flushing = 1;
    for (size_t i = 0; i < n; i++) {
        rec_replay_event *ev = &f->q[i];
        ev->rec_id = ev->rlen ? f->bytes.data + f->off[i] : NULL;
        ev->context = ev->clen ? f->bytes.data + f->off[i] + ev->rlen : NULL;
    }
    double clock = rec_clock_get();
    if (policies_learn(f)) {
        /* The policies' kv writes are learned state, written at checkpoints. */
        int was = rec_engine_learning(f->e, 1);
        policies_run(f, f->q, n);
        rec_engine_learning(f->e, was);
    } else { /* the policies went meanwhile: the built-in learner */
        for (size_t i = 0; i < n; i++)
            (void)rec_feedback_learn(f->e, f->q[i].user, f->q[i].item, f->q[i].weight,
                                     f->q[i].ts);
    }
    rec_clock_set(clock);
    f->flushing = 0;
}

void rec_fanout_flush_cb(void *fanout) { rec_fanout_flush(fanout); }

int rec_fanout_learn(void *fanout, const rec_replay_event *ev) {
    rec_fanout *f = fanout;
    int crc = click_learn(f, ev);
    if (crc)
        return crc;
    if (policies_learn(f)) {
        int rc = enqueue(f, ev);
        if (rc) { /* out of memory: what is queued goes now, this one too */
            rec_fanout_flush(f);
            if ((rc = enqueue(f, ev)))
                return rc;
        }
        if (f->nq >= REC_FANOUT_BATCH)
            rec_fanout_flush(f);
        return 0;
    }
    return rec_feedback_learn(f->e, ev->user, ev->item, ev->weight, ev->ts);
}

void rec_fanout_free(rec_fanout *f) {
    free(f->q);
    free(f->off);
    rec_buf_free(&f->bytes);
    f->q = NULL;
    f->off = NULL;
    f->nq = f->capq = 0;
}

int rec_fanout_replay(rec_fanout *f, uint64_t *replayed) {
    rec_fanout_flush(f);
    int rc = rec_engine_replay(f->e, rec_fanout_learn, f, replayed);
    rec_fanout_flush(f);
    return rc;
}

int rec_fanout_catch_up(rec_fanout *f) {
    if (!rec_engine_replay_due(f->e))
        return 0;
    uint64_t n = 0;
    int rc = rec_fanout_replay(f, &n);
    if (rc)
        REC_ERROR("replaying the log after checkpoint %llu failed: %s",
                  (unsigned long long)rec_engine_checkpoint_seq(f->e),
                  rec_engine_errmsg(f->e));
    else if (n)
        REC_INFO("replayed %llu events logged after the last checkpoint", (unsigned long long)n);
    return rc;
}
