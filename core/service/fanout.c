/* fanout.c - events handed to the policies, live and replayed (fanout.h). */
#include "fanout.h"

#include "click.h"

#include <lauxlib.h>

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

/* The loaded policies with on_event (f->pol), looked up again when a
 * script was loaded or removed since. Those past REC_FANOUT_POLICIES are
 * left out, with a warning. */
static void policies_sync(rec_fanout *f) {
    if (f->of == f->rt && f->gen == rec_script_generation(f->rt))
        return;
    f->of = f->rt;
    f->gen = rec_script_generation(f->rt);
    f->npol = 0;
    rec_script_info in;
    for (size_t i = 0; i < rec_script_count(f->rt); i++) {
        if (rec_script_info_at(f->rt, i, &in) || in.kind != REC_SCRIPT_POLICY ||
            !in.loaded || !rec_script_has(f->rt, REC_SCRIPT_POLICY, in.name, "on_event"))
            continue;
        if (f->npol == REC_FANOUT_POLICIES) {
            REC_WARN("on_event: only the first %d policies get events", REC_FANOUT_POLICIES);
            break;
        }
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

/* An event as policies see it; built by push_event. */
typedef struct event_arg {
    const rec_fanout *f;
    uint32_t user, item;
    const char *type;
    float w;
    double ts;
    uint64_t seq;
    const char *rec_id;
    size_t rlen;
    const void *ctx;
    size_t clen;
    int has_value;
    double value;
} event_arg;

/* Push the event table, protected (rec_script_pcall): the memory cap
 * applies, and a refusal fails this event's hand-over only. [-0, +1, m] */
static int push_event(lua_State *L) {
    const event_arg *a = lua_touserdata(L, 1);
    lua_createtable(L, 0, 10);
    int ev = lua_gettop(L);
    size_t kl;
    const char *k = rec_engine_key(a->f->e, REC_KIND_USER, a->user, &kl);
    rec_lua_push_id(L, k, kl);
    lua_setfield(L, ev, "user");
    k = rec_engine_key(a->f->e, REC_KIND_ITEM, a->item, &kl);
    rec_lua_push_id(L, k, kl);
    lua_setfield(L, ev, "item");
    lua_pushstring(L, a->type);
    lua_setfield(L, ev, "type");
    lua_pushnumber(L, a->w);
    lua_setfield(L, ev, "weight");
    lua_pushnumber(L, a->ts);
    lua_setfield(L, ev, "ts");
    lua_pushinteger(L, (lua_Integer)a->seq);
    lua_setfield(L, ev, "seq");
    if (a->has_value) {
        lua_pushnumber(L, a->value);
        lua_setfield(L, ev, "value");
    }
    if (a->rlen) {
        lua_pushlstring(L, a->rec_id, a->rlen);
        lua_setfield(L, ev, "rec_id");
    }
    size_t used;
    if (a->clen && rec_value_push_lua(L, a->ctx, a->clen, &used) == 0)
        lua_setfield(L, ev, "context");
    return 1;
}

/* Hand one event to every policy's on_event, in name order. A policy
 * that fails is logged and counted; the event itself is already stored. */
static void policies_on_event(rec_fanout *f, uint32_t user, uint32_t item,
                              const char *type, float w, double ts, uint64_t seq,
                              const char *rec_id, size_t rlen, const void *ctx,
                              size_t clen, int has_value, double value) {
    lua_State *L = rec_script_lua(f->rt);
    /* One event table, handed to each policy in turn. */
    event_arg a = {f, user, item, type, w, ts, seq, rec_id, rlen, ctx, clen,
                   has_value, value};
    char perr[512];
    if (rec_script_pcall(f->rt, push_event, &a, 0, 1, 0, perr, sizeof perr)) {
        REC_WARN("on_event: %s", perr);
        return;
    }
    int ev = lua_gettop(L);
    /* f->pol holds (no script loads from inside a call) */
    for (size_t i = 0; i < f->npol; i++) {
        lua_pushvalue(L, ev);
        char err[512];
        if (rec_script_call(f->rt, REC_SCRIPT_POLICY, f->pol[i], "on_event", 1, 0, err,
                            sizeof err))
            REC_WARN("on_event: %s", err);
    }
    lua_settop(L, ev - 1);
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

int rec_fanout_learn(void *fanout, const rec_replay_event *ev) {
    rec_fanout *f = fanout;
    int crc = click_learn(f, ev);
    if (crc)
        return crc;
    if (policies_learn(f)) {
        const char *tn = rec_engine_type_name(f->e, ev->type);
        /* The policies' kv writes are learned state, written at checkpoints. */
        int was = rec_engine_learning(f->e, 1);
        /* on_event runs at the event's time (os.time() included), live
         * and replayed alike */
        double clock = rec_clock_get();
        rec_clock_set(ev->ts);
        policies_on_event(f, ev->user, ev->item, tn ? tn : "?", ev->weight, ev->ts, ev->seq,
                          ev->rec_id, ev->rlen, ev->context, ev->clen, ev->has_value, ev->value);
        rec_clock_set(clock);
        rec_engine_learning(f->e, was);
        return 0;
    }
    return rec_feedback_learn(f->e, ev->user, ev->item, ev->weight, ev->ts);
}

int rec_fanout_replay(rec_fanout *f, uint64_t *replayed) {
    return rec_engine_replay(f->e, rec_fanout_learn, f, replayed);
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
