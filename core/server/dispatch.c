/* dispatch.c - msgpack-RPC methods over the engine and the services.
 *
 * The method table and the checks of every method's params; the work is
 * the engine's and the services' (core/service): pipelines of strategies
 * and policies (pipeline.h), event fan-out to policies and its replay
 * (fanout.h), the built-in learner (feedback.h) and recommender
 * (fusion.h), attribution and stats (stats.h), the training schedule
 * (train.h). Every batch method validates all of its elements before
 * applying any, so a request that fails changes nothing.
 */
#include "dispatch.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <lauxlib.h>

#include "err.h"
#include "shown.h"
#include "click.h"
#include "value.h"
#include "fanout.h"
#include "fusion.h"
#include "idmap.h"
#include "learn.h"
#include "log.h"
#include "lua_api.h"
#include "pipeline.h"
#include "rank.h"
#include "rpc.h"
#include "script.h"
#include "stats.h"
#include "vec.h"

#define MAX_N 1000
#define MAX_BATCH 100000
#define HIST_BUCKETS 256

typedef struct method_stats {
    uint64_t count;
    uint64_t errors;
    uint64_t hist[HIST_BUCKETS]; /* log-scaled latency buckets */
} method_stats;

typedef struct call_ctx call_ctx;
typedef int (*method_fn)(call_ctx *c);

typedef struct method_def {
    const char *name;
    method_fn fn;
    unsigned flags;
} method_def;

#define REC_LIST_MAX 10000 /* ids or events in one page of the listing methods */
#define NMETHODS 24 /* entries of methods[], defined at the end */

/* In a cluster, a click may come to a node before the list it names: the
 * list is sent on by the node that served it while the client already has
 * it. Such feedback waits here (the last LATE_MAX, for LATE_S seconds) and
 * is credited when the list comes. */
#define LATE_MAX 1024
#define LATE_S 60.0

typedef struct late_feedback {
    uint64_t rec_id;   /* 0: a free entry */
    char hex[17];      /* rec_id as the event named it */
    char type[REC_TYPE_NAME_MAX + 1];
    uint32_t item;
    double ts, at;     /* the event's time; when it came (rec_wall) */
} late_feedback;

struct rec_dispatch {
    rec_engine *e;
    size_t method_len[NMETHODS]; /* strlen of each method's name */
    char *token;
    char version[32];
    double started;
    uint32_t connections;
    uint64_t notification_errors;
    uint64_t rec_seq;
    uint64_t last_rec_id;
    rec_buf scratch;
    method_stats *stats; /* one per method */
    rec_rank_fuse fuse;  /* scratch of rec.recommend's rank fusion */
    rec_script_rt *rt;   /* strategies and policies, or NULL */
    rec_fanout fan;      /* events to the policies or the built-in learner */
    int rec_ref;         /* registry ref of the scripts' `rec` handle */
    rec_pipeline_live pipelines; /* the config in force, kept with pipelines.lua */
    rec_pipeline_state *pl;
    rec_stats metrics;     /* shown, clicked, converted: stats.get */
    int own_rt;          /* rt started by rec_dispatch_start, freed with d */
    rec_train *trainer;  /* model.train and the schedule, or NULL */
    uint32_t list_idx[REC_LIST_MAX]; /* scratch of item.list / user.list */
    int strict;          /* the server's default for event.add's strict */
    uint64_t items_by_events; /* items that an event created (sys.info) */
    uint64_t types_by_events; /* event types that an event created */
    rec_dispatch_record_fn record_fn; /* lists shown, to the cluster, or NULL */
    late_feedback late[LATE_MAX]; /* with record_fn: feedback before its list */
    uint32_t late_next, nlate;
    void *record_ud;
    uint32_t rec_slot;        /* the node's slot in its rec_ids (with record_fn) */
    const char *info_name;    /* sys.info's extra section, or NULL */
    int (*info_pack)(void *ud, msgpack_packer *pk);
    void *info_ud;
};

struct call_ctx {
    rec_dispatch *d;
    rec_engine *e;
    const msgpack_object *params;
    rec_session *s;
    msgpack_packer pk;
    rec_buf *out;
    char *err;
    size_t errlen;
};

static int fail(call_ctx *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(call_ctx *c, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
    return code;
}

static int engine_fail(call_ctx *c, int rc) {
    const char *m = rec_engine_errmsg(c->e);
    return fail(c, rc, "%s", m && m[0] ? m : rec_strerror(rc));
}

/* ---- msgpack helpers ---------------------------------------------------- */



static int is_number(const msgpack_object *o) {
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
           o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ||
           o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64;
}

static double number(const msgpack_object *o) {
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return (double)o->via.u64;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return (double)o->via.i64;
    default:
        return o->via.f64;
    }
}

/* Encode an id object into key; returns its length or a negative error
 * with the message naming `what`. */
static int id_key(call_ctx *c, const msgpack_object *o, char *key,
                  const char *what) {
    rec_field f;
    rec_value_input(o, &f);
    return rec_input_id(&f, what, key, c->err, c->errlen);
}

/* The key of an id object, or -1 when it is not one (no message). */
static int peek_key(const msgpack_object *o, char *key) {
    if (!o)
        return -1;
    if (o->type == MSGPACK_OBJECT_STR)
        return rec_id_str(key, o->via.str.ptr, o->via.str.size);
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX)
        return rec_id_int(key, (int64_t)o->via.u64);
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return rec_id_int(key, o->via.i64);
    return -1;
}

/* Ask the cache for what applying event o will look up first. */
static void prefetch_event(rec_engine *e, const msgpack_object *o) {
    char uk[REC_ID_MAX], ik[REC_ID_MAX];
    if (!o || o->type != MSGPACK_OBJECT_MAP)
        return;
    int ul = peek_key(rec_value_field(o, "user"), uk), il = peek_key(rec_value_field(o, "item"), ik);
    if (ul > 0 && il > 0)
        rec_engine_prefetch_ids(e, uk, (size_t)ul, ik, (size_t)il);
}

static int pack_key(msgpack_packer *pk, const char *key, size_t klen) {
    int is_int;
    int64_t iv;
    const char *s;
    size_t n;
    if (!key || rec_id_decode(key, klen, &is_int, &iv, &s, &n))
        return msgpack_pack_nil(pk);
    if (is_int)
        return msgpack_pack_int64(pk, iv);
    return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n);
}

static int pack_idx(call_ctx *c, rec_kind k, uint32_t idx) {
    size_t kl;
    const char *key = rec_engine_key(c->e, k, idx, &kl);
    return pack_key(&c->pk, key, kl);
}

/* Check a vector object (dims and finiteness) and, when v is not NULL,
 * decode it there; *dim gets its length. */
static int check_vec(call_ctx *c, const msgpack_object *o, const char *space,
                     float *v, uint32_t *dim) {
    rec_field f;
    rec_value_input(o, &f);
    return rec_input_vector(&f, rec_value_input_at, (void *)o, space, v, dim, c->err,
                            c->errlen);
}

static const msgpack_object *param(call_ctx *c, uint32_t i) {
    return i < c->params->via.array.size ? &c->params->via.array.ptr[i] : NULL;
}

/* ---- sys ---------------------------------------------------------------- */

static const method_def methods[NMETHODS];
static const size_t nmethods = NMETHODS;

/* sys.methods -> [{name, admin, write}]: every method, in table order. */
static int m_methods(call_ctx *c) {
    msgpack_packer *pk = &c->pk;
    if (msgpack_pack_array(pk, nmethods))
        return REC_ENOMEM;
    for (size_t i = 0; i < nmethods; i++) {
        unsigned f = methods[i].flags;
        if (msgpack_pack_map(pk, 3) || rec_value_pack_str(pk, "name") || rec_value_pack_str(pk, methods[i].name) ||
            rec_value_pack_str(pk, "admin") ||
            ((f & REC_M_ADMIN) ? msgpack_pack_true(pk) : msgpack_pack_false(pk)) ||
            rec_value_pack_str(pk, "write") ||
            ((f & REC_M_WRITE) ? msgpack_pack_true(pk) : msgpack_pack_false(pk)))
            return REC_ENOMEM;
    }
    return 0;
}

static int m_ping(call_ctx *c) { return rec_value_pack_str(&c->pk, "pong") ? REC_ENOMEM : 0; }

static int m_hello(call_ctx *c) {
    static const char *features[] = {"pipelining", "group_commit", "vectors_bin",
                                     "notifications", "auth"};
    /* Not from the engine's generator: replays must draw the same numbers. */
    char nonce[17];
    uint64_t x = (uint64_t)(rec_wall() * 1e6) ^ (++c->d->rec_seq * 0x9e3779b97f4a7c15ull);
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 29;
    snprintf(nonce, sizeof nonce, "%016llx", (unsigned long long)x);
    msgpack_packer *pk = &c->pk;
    int rc = msgpack_pack_map(pk, 6) || rec_value_pack_str(pk, "server") || rec_value_pack_str(pk, "recd") ||
             rec_value_pack_str(pk, "version") || rec_value_pack_str(pk, c->d->version) ||
             rec_value_pack_str(pk, "api") || msgpack_pack_int(pk, 1) ||
             rec_value_pack_str(pk, "features") || msgpack_pack_array(pk, 5);
    for (int i = 0; i < 5 && !rc; i++)
        rc = rec_value_pack_str(pk, features[i]);
    rc = rc || rec_value_pack_str(pk, "nonce") || rec_value_pack_str(pk, nonce) ||
         rec_value_pack_str(pk, "auth_required") ||
         (c->d->token && !c->s->trusted && !c->s->authed ? msgpack_pack_true(pk)
                                                          : msgpack_pack_false(pk));
    return rc ? REC_ENOMEM : 0;
}

/* Constant-time comparison: the time taken does not tell how much of a
 * guessed token was right. */
static int token_eq(const char *a, size_t al, const char *b, size_t bl) {
    unsigned char diff = (unsigned char)(al != bl);
    for (size_t i = 0; i < al; i++)
        diff |= (unsigned char)(a[i] ^ b[i % (bl ? bl : 1)]);
    return diff == 0;
}

static int m_auth(call_ctx *c) {
    const msgpack_object *t = param(c, 0);
    if (!t || t->type != MSGPACK_OBJECT_STR)
        return fail(c, REC_EINVAL, "params[0] (token) must be a string");
    if (!c->d->token) {
        c->s->authed = 1;
        return msgpack_pack_true(&c->pk) ? REC_ENOMEM : 0;
    }
    if (!token_eq(t->via.str.ptr, t->via.str.size, c->d->token, strlen(c->d->token))) {
        if (++c->s->auth_failures >= 3)
            c->s->close_after = 1;
        return fail(c, REC_EUNAUTHORIZED, "wrong token%s",
                    c->s->close_after ? "; closing the connection" : "");
    }
    c->s->authed = 1;
    return msgpack_pack_true(&c->pk) ? REC_ENOMEM : 0;
}

static double percentile(const method_stats *m, double q) {
    uint64_t total = 0;
    for (int i = 0; i < HIST_BUCKETS; i++)
        total += m->hist[i];
    if (!total)
        return 0;
    uint64_t want = (uint64_t)ceil(q * (double)total), seen = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += m->hist[i];
        if (seen >= want && m->hist[i])
            return exp2((double)(i + 1) / 8.0) - 1.0; /* bucket's upper bound */
    }
    return 0;
}

static long rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * 4096L;
}

/* sys.info's models: per batch model, its last training and what is
 * planned for it. */
static int pack_models(msgpack_packer *pk, const rec_train *t, rec_engine *e) {
    static const struct { const char *name; int id; } models[] = {
        {"ials", REC_TRAIN_IALS}, {"ease", REC_TRAIN_EASE}};
    if (msgpack_pack_map(pk, t ? 2 : 0))
        return -1;
    for (size_t i = 0; t && i < 2; i++) {
        rec_train_model m;
        rec_train_model_get(t, models[i].id, &m);
        int ials = models[i].id == REC_TRAIN_IALS;
        if (rec_value_pack_str(pk, models[i].name) || msgpack_pack_map(pk, ials ? 8 : 6) ||
            rec_value_pack_str(pk, "events") || msgpack_pack_uint64(pk, m.events) ||
            rec_value_pack_str(pk, "trained_at") ||
            (m.trainings ? msgpack_pack_double(pk, m.trained_at) : msgpack_pack_nil(pk)) ||
            rec_value_pack_str(pk, "seconds") || msgpack_pack_double(pk, m.seconds) ||
            rec_value_pack_str(pk, "trainings") || msgpack_pack_uint64(pk, m.trainings) ||
            rec_value_pack_str(pk, "running") ||
            (m.running ? msgpack_pack_true(pk) : msgpack_pack_false(pk)) ||
            rec_value_pack_str(pk, "pending") ||
            (m.pending ? msgpack_pack_true(pk) : msgpack_pack_false(pk)))
            return -1;
        /* the fold-ins owed, and whether workers solve them (learn.h) */
        if (ials && (rec_value_pack_str(pk, "owed") ||
                     msgpack_pack_uint64(pk, rec_learn_owed(e)) ||
                     rec_value_pack_str(pk, "folding") ||
                     (rec_learn_folding(e) ? msgpack_pack_true(pk) : msgpack_pack_false(pk))))
            return -1;
    }
    return 0;
}

/* sys.info's click: the click model of the served lists (click.h). */
static int pack_click(msgpack_packer *pk, const rec_click *m) {
    rec_click_info ci;
    rec_click_info_get(m, &ci);
    return msgpack_pack_map(pk, 12) || rec_value_pack_str(pk, "active") ||
           (ci.active ? msgpack_pack_true(pk) : msgpack_pack_false(pk)) ||
           rec_value_pack_str(pk, "served") || msgpack_pack_uint64(pk, ci.served) ||
           rec_value_pack_str(pk, "pending") || msgpack_pack_uint64(pk, ci.pending) ||
           rec_value_pack_str(pk, "clicks") || msgpack_pack_uint64(pk, ci.clicks) ||
           rec_value_pack_str(pk, "conversions") || msgpack_pack_uint64(pk, ci.conversions) ||
           rec_value_pack_str(pk, "negatives") || msgpack_pack_uint64(pk, ci.negatives) ||
           rec_value_pack_str(pk, "late") || msgpack_pack_uint64(pk, ci.late) ||
           rec_value_pack_str(pk, "unmatched") || msgpack_pack_uint64(pk, ci.unmatched) ||
           rec_value_pack_str(pk, "examples") || msgpack_pack_uint64(pk, ci.click.examples) ||
           rec_value_pack_str(pk, "logloss") || msgpack_pack_double(pk, ci.click.logloss) ||
           rec_value_pack_str(pk, "conversion_examples") ||
           msgpack_pack_uint64(pk, ci.conv.examples) ||
           rec_value_pack_str(pk, "conversion_logloss") || msgpack_pack_double(pk, ci.conv.logloss);
}

static int m_info(call_ctx *c) {
    rec_dispatch *d = c->d;
    rec_store_stats st;
    if (rec_store_stats_get(rec_engine_store(c->e), &st))
        memset(&st, 0, sizeof st);
    msgpack_packer *pk = &c->pk;
    uint64_t bf16_fast, bf16_fallback;
    rec_vec_bf16_counts(&bf16_fast, &bf16_fallback);
    rec_clock_info ck;
    rec_engine_clock(c->e, &ck);
    if (d->rt)
        (void)rec_click_sync(rec_engine_click(c->e), d->rt);
    int rc = msgpack_pack_map(pk, 18 + (d->info_pack != NULL)) || rec_value_pack_str(pk, "version") || rec_value_pack_str(pk, d->version) ||
             rec_value_pack_str(pk, "click") || pack_click(pk, rec_engine_click(c->e)) ||
             rec_value_pack_str(pk, "clock") || msgpack_pack_map(pk, 4) ||
             rec_value_pack_str(pk, "now") || msgpack_pack_double(pk, ck.now) ||
             rec_value_pack_str(pk, "wall") || msgpack_pack_double(pk, ck.wall) ||
             rec_value_pack_str(pk, "behind") || msgpack_pack_double(pk, -ck.offset) ||
             rec_value_pack_str(pk, "newest_event") || msgpack_pack_double(pk, ck.newest) ||
             rec_value_pack_str(pk, "created_by_events") || msgpack_pack_map(pk, 2) ||
             rec_value_pack_str(pk, "items") || msgpack_pack_uint64(pk, d->items_by_events) ||
             rec_value_pack_str(pk, "types") || msgpack_pack_uint64(pk, d->types_by_events) ||
             rec_value_pack_str(pk, "training") || msgpack_pack_int(pk, d->trainer ? rec_train_running(d->trainer) : 0) ||
             rec_value_pack_str(pk, "models") || pack_models(pk, d->trainer, c->e) ||
             rec_value_pack_str(pk, "uptime_s") || msgpack_pack_double(pk, rec_wall() - d->started) ||
             rec_value_pack_str(pk, "connections") || msgpack_pack_uint32(pk, d->connections) ||
             rec_value_pack_str(pk, "items") || msgpack_pack_uint32(pk, rec_engine_count(c->e, REC_KIND_ITEM)) ||
             rec_value_pack_str(pk, "users") || msgpack_pack_uint32(pk, rec_engine_count(c->e, REC_KIND_USER)) ||
             rec_value_pack_str(pk, "events") || msgpack_pack_uint64(pk, rec_engine_events(c->e)) ||
             rec_value_pack_str(pk, "isa") || rec_value_pack_str(pk, rec_vec_isa_name()) ||
             rec_value_pack_str(pk, "scans") || msgpack_pack_map(pk, 3) ||
             rec_value_pack_str(pk, "bf16") ||
             (rec_vec_bf16_scan_ok() ? msgpack_pack_true(pk) : msgpack_pack_false(pk)) ||
             rec_value_pack_str(pk, "bf16_fast") || msgpack_pack_uint64(pk, bf16_fast) ||
             rec_value_pack_str(pk, "bf16_fallback") || msgpack_pack_uint64(pk, bf16_fallback) ||
             rec_value_pack_str(pk, "spaces");
    size_t ns = rec_engine_space_count(c->e);
    rc = rc || msgpack_pack_array(pk, ns);
    for (size_t i = 0; i < ns && !rc; i++) {
        rec_space *s = rec_engine_space_at(c->e, i);
        rc = msgpack_pack_map(pk, 5) || rec_value_pack_str(pk, "name") || rec_value_pack_str(pk, s->name) ||
             rec_value_pack_str(pk, "dim") || msgpack_pack_uint32(pk, s->dim) ||
             rec_value_pack_str(pk, "items") || msgpack_pack_uint32(pk, s->m[REC_KIND_ITEM].count) ||
             rec_value_pack_str(pk, "users") || msgpack_pack_uint32(pk, s->m[REC_KIND_USER].count) ||
             rec_value_pack_str(pk, "mf_owed") ||
             msgpack_pack_uint64(pk, rec_engine_mf_owed(c->e, s->name));
    }
    rc = rc || rec_value_pack_str(pk, "memory") || msgpack_pack_map(pk, 1) ||
         rec_value_pack_str(pk, "rss_bytes") || msgpack_pack_int64(pk, rss_bytes()) ||
         rec_value_pack_str(pk, "store") || msgpack_pack_map(pk, 5) ||
         rec_value_pack_str(pk, "map_size") || msgpack_pack_uint64(pk, st.map_size) ||
         rec_value_pack_str(pk, "map_used") || msgpack_pack_uint64(pk, st.used_bytes) ||
         rec_value_pack_str(pk, "map_max") || msgpack_pack_uint64(pk, st.map_max) ||
         rec_value_pack_str(pk, "commits") || msgpack_pack_uint64(pk, st.commits) ||
         rec_value_pack_str(pk, "map_grows") || msgpack_pack_uint64(pk, st.map_grows) ||
         rec_value_pack_str(pk, "notification_errors") || msgpack_pack_uint64(pk, d->notification_errors) ||
         rec_value_pack_str(pk, "methods");
    uint32_t used = 0;
    for (size_t i = 0; i < nmethods; i++)
        used += d->stats[i].count > 0;
    rc = rc || msgpack_pack_map(pk, used);
    for (size_t i = 0; i < nmethods && !rc; i++) {
        const method_stats *m = &d->stats[i];
        if (!m->count)
            continue;
        rc = rec_value_pack_str(pk, methods[i].name) || msgpack_pack_map(pk, 5) ||
             rec_value_pack_str(pk, "count") || msgpack_pack_uint64(pk, m->count) ||
             rec_value_pack_str(pk, "errors") || msgpack_pack_uint64(pk, m->errors) ||
             rec_value_pack_str(pk, "p50_us") || msgpack_pack_double(pk, percentile(m, 0.5)) ||
             rec_value_pack_str(pk, "p99_us") || msgpack_pack_double(pk, percentile(m, 0.99)) ||
             rec_value_pack_str(pk, "p999_us") || msgpack_pack_double(pk, percentile(m, 0.999));
    }
    if (d->info_pack && !rc)
        rc = rec_value_pack_str(pk, d->info_name) || d->info_pack(d->info_ud, pk);
    return rc ? REC_ENOMEM : 0;
}

/* ---- items and users ---------------------------------------------------- */

/* Spaces created by earlier elements of the same batch: name and dim, so
 * a later element with another dimension is caught before anything runs. */
typedef struct new_space {
    const char *name;
    size_t len;
    uint32_t dim;
} new_space;

#define MAX_NEW_SPACES 16

/* A msgpack_packer sink that only counts the bytes. */
static int count_bytes(void *data, const char *buf, size_t len) {
    (void)buf;
    *(size_t *)data += len;
    return 0;
}

/* The bytes o takes as msgpack (what apply_* will store). */
static size_t packed_size(const msgpack_object *o) {
    size_t n = 0;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &n, count_bytes);
    msgpack_pack_object(&pk, *o);
    return n;
}

/* o packed into the dispatcher's scratch buffer (cleared first). */
static int pack_scratch(call_ctx *c, const msgpack_object *o) {
    rec_buf *b = &c->d->scratch;
    rec_buf_clear(b);
    msgpack_packer pk;
    rec_rpc_packer(&pk, b);
    return msgpack_pack_object(&pk, *o) ? fail(c, REC_ENOMEM, "out of memory") : 0;
}

/* Put "params[i]." before the message of a failure about a field. */
static int in_param(call_ctx *c, int rc, uint32_t i) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", c->err);
    snprintf(c->err, c->errlen, "params[%u].%s", i, msg);
    return rc;
}

/* Everything rec_engine_put would refuse, checked for one element before
 * any element is applied: a batch that fails changes nothing (apply can
 * then fail only for want of memory). */
static int check_entity(call_ctx *c, const msgpack_object *o, rec_kind kind,
                        uint32_t i, new_space *ns, size_t *nns) {
    char key[REC_ID_MAX];
    if (!o || o->type != MSGPACK_OBJECT_MAP)
        return fail(c, REC_EINVAL, "params[%u] must be a map {id, props?, vectors?%s}",
                    i, kind == REC_KIND_ITEM ? ", active?" : "");
    int rc = id_key(c, rec_value_field(o, "id"), key, "id");
    if (rc < 0)
        return in_param(c, rc, i);
    const msgpack_object *p = rec_value_field(o, "props");
    if (p && p->type != MSGPACK_OBJECT_MAP)
        return fail(c, REC_EINVAL, "params[%u].props must be a map", i);
    if (p) { /* the size apply_entity will store */
        size_t n = packed_size(p);
        if (n > REC_PROPS_MAX)
            return fail(c, REC_ETOOLARGE, "params[%u].props takes %zu bytes; at most %u",
                        i, n, REC_PROPS_MAX);
    }
    rec_field af;
    int active;
    rec_value_input(rec_value_field(o, "active"), &af);
    if ((rc = rec_input_active(&af, kind, &active, c->err, c->errlen)))
        return in_param(c, rc, i);
    const msgpack_object *v = rec_value_field(o, "vectors");
    if (!v)
        return 0;
    if (v->type != MSGPACK_OBJECT_MAP || v->via.map.size > 16)
        return fail(c, REC_EINVAL, "params[%u].vectors must be a map of up to 16 "
                    "space names to vectors", i);
    for (uint32_t j = 0; j < v->via.map.size; j++) {
        const msgpack_object *k = &v->via.map.ptr[j].key;
        if (k->type != MSGPACK_OBJECT_STR || k->via.str.size == 0 ||
            k->via.str.size > REC_SPACE_NAME_MAX)
            return fail(c, REC_EINVAL, "params[%u].vectors: space names are "
                        "strings of 1..63 bytes", i);
        char name[REC_SPACE_NAME_MAX + 1];
        memcpy(name, k->via.str.ptr, k->via.str.size);
        name[k->via.str.size] = 0;
        if (rec_space_name_ok(name))
            return fail(c, REC_EINVAL, "params[%u].vectors: space name '%s' may "
                        "use only A-Z a-z 0-9 _ - .", i, name);
        uint32_t dim = 0;
        if ((rc = check_vec(c, &v->via.map.ptr[j].val, name, NULL, &dim))) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", c->err);
            return fail(c, rc, "params[%u]: %s", i, msg);
        }
        rec_space *s = rec_engine_space(c->e, name);
        uint32_t want = s ? s->dim : 0;
        for (size_t q = 0; !want && q < *nns; q++)
            if (ns[q].len == k->via.str.size && memcmp(ns[q].name, name, ns[q].len) == 0)
                want = ns[q].dim;
        if (want && want != dim)
            return fail(c, REC_EDIM, "params[%u]: space '%s' has dimension %u, "
                        "got %u", i, name, want, dim);
        if (!want) {
            if (*nns == MAX_NEW_SPACES)
                return fail(c, REC_ETOOLARGE, "too many new spaces in one call");
            if (rec_engine_space_count(c->e) + *nns >= REC_MAX_SPACES)
                return fail(c, REC_ETOOLARGE, "params[%u]: new space '%s' would pass "
                            "the limit of %d spaces", i, name, REC_MAX_SPACES);
            ns[*nns].name = k->via.str.ptr;
            ns[*nns].len = k->via.str.size;
            ns[(*nns)++].dim = dim;
        }
    }
    return 0;
}

static int apply_entity(call_ctx *c, const msgpack_object *o, rec_kind kind) {
    char key[REC_ID_MAX];
    int kl = id_key(c, rec_value_field(o, "id"), key, "id");
    if (kl < 0)
        return kl;
    rec_buf *props = &c->d->scratch;
    rec_buf_clear(props);
    const msgpack_object *p = rec_value_field(o, "props");
    if (p && pack_scratch(c, p))
        return REC_ENOMEM;
    const msgpack_object *a = rec_value_field(o, "active");
    int active = a ? a->via.boolean : -1;
    const msgpack_object *v = rec_value_field(o, "vectors");
    rec_vecarg args[16];
    char names[16][REC_SPACE_NAME_MAX + 1];
    size_t nv = v ? v->via.map.size : 0;
    float *store = NULL;
    size_t total = 0;
    for (size_t j = 0; j < nv; j++) {
        const msgpack_object *x = &v->via.map.ptr[j].val;
        total += x->type == MSGPACK_OBJECT_BIN ? x->via.bin.size / 4 : x->via.array.size;
    }
    if (total && !(store = malloc(total * sizeof(float))))
        return fail(c, REC_ENOMEM, "out of memory");
    size_t off = 0;
    for (size_t j = 0; j < nv; j++) {
        const msgpack_object *k = &v->via.map.ptr[j].key;
        const msgpack_object *x = &v->via.map.ptr[j].val;
        uint32_t dim = x->type == MSGPACK_OBJECT_BIN ? x->via.bin.size / 4 : x->via.array.size;
        memcpy(names[j], k->via.str.ptr, k->via.str.size);
        names[j][k->via.str.size] = 0;
        if (check_vec(c, x, names[j], store + off, &dim)) { /* checked before */
            free(store);
            return REC_EINVAL;
        }
        args[j] = (rec_vecarg){names[j], store + off, dim};
        off += dim;
    }
    int rc = rec_engine_put(c->e, kind, key, (size_t)kl, p ? props->data : NULL,
                            props->len, active, args, nv, NULL);
    free(store);
    return rc ? engine_fail(c, rc) : 0;
}

/* The checks of item.put / user.put, before anything is applied. */
static int put_check(call_ctx *c, rec_kind kind) {
    uint32_t n = c->params->via.array.size;
    if (n == 0)
        return fail(c, REC_EINVAL, "params must hold at least one %s",
                    kind == REC_KIND_ITEM ? "item" : "user");
    if (n > MAX_BATCH)
        return fail(c, REC_ETOOLARGE, "at most %d per call", MAX_BATCH);
    new_space ns[MAX_NEW_SPACES];
    size_t nns = 0;
    for (uint32_t i = 0; i < n; i++) {
        int rc = check_entity(c, param(c, i), kind, i, ns, &nns);
        if (rc)
            return rc;
    }
    return 0;
}

static int put_common(call_ctx *c, rec_kind kind) {
    uint32_t n = c->params->via.array.size;
    int rc0 = put_check(c, kind);
    if (rc0)
        return rc0;
    for (uint32_t i = 0; i < n; i++) {
        int rc = apply_entity(c, param(c, i), kind);
        if (rc)
            return rc;
    }
    return msgpack_pack_uint32(&c->pk, n) ? REC_ENOMEM : 0;
}

static int m_item_put(call_ctx *c) { return put_common(c, REC_KIND_ITEM); }
static int m_user_put(call_ctx *c) { return put_common(c, REC_KIND_USER); }

static int pack_vectors(call_ctx *c, rec_kind kind, uint32_t idx) {
    /* the user's owed fold-ins first (they may add a row), and the MF
     * steps owed */
    int rc = kind == REC_KIND_USER ? rec_learn_settle(c->e, NULL, idx)
                                   : rec_engine_mf_settle(c->e, NULL);
    if (rc)
        return rc;
    size_t ns = rec_engine_space_count(c->e), have = 0;
    for (size_t i = 0; i < ns; i++)
        have += rec_space_has(rec_engine_space_at(c->e, i), kind, idx);
    if (msgpack_pack_map(&c->pk, have))
        return REC_ENOMEM;
    for (size_t i = 0; i < ns; i++) {
        rec_space *s = rec_engine_space_at(c->e, i);
        const float *v = rec_space_get(s, kind, idx);
        if (!v)
            continue;
        if (rec_value_pack_str(&c->pk, s->name) || msgpack_pack_array(&c->pk, s->dim))
            return REC_ENOMEM;
        for (uint32_t j = 0; j < s->dim; j++)
            if (msgpack_pack_float(&c->pk, v[j]))
                return REC_ENOMEM;
    }
    return 0;
}

/* One history entry as {item, type, ts, weight}. */
static int pack_hentry(call_ctx *c, const rec_hentry *e) {
    msgpack_packer *pk = &c->pk;
    const char *tn = rec_engine_type_name(c->e, e->type);
    return msgpack_pack_map(pk, 4) || rec_value_pack_str(pk, "item") ||
           pack_idx(c, REC_KIND_ITEM, e->item) || rec_value_pack_str(pk, "type") ||
           rec_value_pack_str(pk, tn ? tn : "?") || rec_value_pack_str(pk, "ts") ||
           msgpack_pack_double(pk, e->ts) || rec_value_pack_str(pk, "weight") ||
           msgpack_pack_float(pk, e->weight);
}

static int get_common(call_ctx *c, rec_kind kind) {
    char key[REC_ID_MAX];
    int kl = id_key(c, param(c, 0), key, "params[0] (id)");
    if (kl < 0)
        return kl;
    int64_t hn = 50;
    const msgpack_object *no = param(c, 1);
    if (kind == REC_KIND_USER && no && no->type != MSGPACK_OBJECT_NIL) {
        if (no->type != MSGPACK_OBJECT_POSITIVE_INTEGER || no->via.u64 > 10000)
            return fail(c, REC_ERANGE, "params[1] (n) must be 0..10000");
        hn = (int64_t)no->via.u64;
    }
    uint32_t idx = rec_engine_lookup(c->e, kind, key, (size_t)kl);
    if (idx == REC_IDX_NONE)
        return msgpack_pack_nil(&c->pk) ? REC_ENOMEM : 0;
    rec_buf *props = &c->d->scratch;
    int active;
    int rc = rec_engine_get(c->e, kind, idx, props, &active);
    if (rc)
        return engine_fail(c, rc);
    msgpack_packer *pk = &c->pk;
    rc = msgpack_pack_map(pk, kind == REC_KIND_ITEM ? 4 : 4) || rec_value_pack_str(pk, "id") ||
         pack_key(pk, key, (size_t)kl) || rec_value_pack_str(pk, "props") ||
         rec_buf_append(c->out, props->data, props->len) || rec_value_pack_str(pk, "vectors") ||
         pack_vectors(c, kind, idx);
    if (rc)
        return REC_ENOMEM;
    if (kind == REC_KIND_ITEM)
        return rec_value_pack_str(pk, "active") || (active ? msgpack_pack_true(pk)
                                               : msgpack_pack_false(pk))
                   ? REC_ENOMEM : 0;
    uint32_t len;
    const rec_hentry *h = rec_graph_history(rec_engine_graph(c->e), idx, &len);
    uint32_t cnt = (int64_t)len < hn ? len : (uint32_t)hn;
    if (rec_value_pack_str(pk, "history") || msgpack_pack_array(pk, cnt))
        return REC_ENOMEM;
    for (uint32_t i = 0; i < cnt; i++) {
        const rec_hentry *e = &h[len - 1 - i];
        if (pack_hentry(c, e))
            return REC_ENOMEM;
    }
    return 0;
}

static int m_item_get(call_ctx *c) { return get_common(c, REC_KIND_ITEM); }
static int m_user_get(call_ctx *c) { return get_common(c, REC_KIND_USER); }

/* Options of the listing methods: params[at] nil or a map {cursor, n}. */
static int list_opts(call_ctx *c, uint32_t at, uint64_t *cursor, uint32_t *n,
                     const msgpack_object **opts) {
    *cursor = 0;
    *n = 100;
    const msgpack_object *o = param(c, at);
    *opts = NULL;
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (o->type != MSGPACK_OBJECT_MAP)
        return fail(c, REC_EINVAL, "params[%u] must be a map of options {cursor, n}", at);
    *opts = o;
    const msgpack_object *cur = rec_value_field(o, "cursor"), *no = rec_value_field(o, "n");
    if (cur) {
        if (cur->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return fail(c, REC_EINVAL, "cursor must be the cursor of an earlier answer");
        *cursor = cur->via.u64;
    }
    if (no) {
        if (no->type != MSGPACK_OBJECT_POSITIVE_INTEGER || no->via.u64 < 1 ||
            no->via.u64 > REC_LIST_MAX)
            return fail(c, REC_ERANGE, "n must be 1..%d", REC_LIST_MAX);
        *n = (uint32_t)no->via.u64;
    }
    return 0;
}

/* item.list / user.list [{cursor, n, active}] -> {ids, cursor}: the ids in
 * index order (the order they were first seen), n at a time (100, at most
 * REC_LIST_MAX); cursor is nil after the last page, else what to pass to
 * get the next one. Items may be filtered on their active flag. An id
 * added while paging appears on a later page; a deleted one disappears.
 * O(n + deleted ids skipped). */
static int list_common(call_ctx *c, rec_kind kind) {
    uint64_t cursor;
    uint32_t n;
    const msgpack_object *opts;
    int rc = list_opts(c, 0, &cursor, &n, &opts);
    if (rc)
        return rc;
    int want_active = -1;
    const msgpack_object *act = opts ? rec_value_field(opts, "active") : NULL;
    if (act) {
        if (kind != REC_KIND_ITEM || act->type != MSGPACK_OBJECT_BOOLEAN)
            return fail(c, REC_EINVAL, kind == REC_KIND_ITEM ? "active must be true or false"
                                                             : "users have no active flag");
        want_active = act->via.boolean;
    }
    uint32_t bound = rec_engine_bound(c->e, kind);
    if (cursor > bound)
        cursor = bound;
    /* the page's indexes first (the answer's array header needs the count) */
    uint32_t *take = c->d->list_idx;
    uint32_t got = 0, i = (uint32_t)cursor;
    for (; i < bound && got < n; i++) {
        size_t kl;
        if (!rec_engine_key(c->e, kind, i, &kl))
            continue;
        if (want_active >= 0 && rec_engine_is_active(c->e, i) != want_active)
            continue;
        take[got++] = i;
    }
    while (i < bound) { /* is anything left to list? */
        size_t kl;
        if (rec_engine_key(c->e, kind, i, &kl) &&
            (want_active < 0 || rec_engine_is_active(c->e, i) == want_active))
            break;
        i++;
    }
    msgpack_packer *pk = &c->pk;
    if (msgpack_pack_map(pk, 2) || rec_value_pack_str(pk, "ids") || msgpack_pack_array(pk, got))
        return REC_ENOMEM;
    for (uint32_t j = 0; j < got; j++)
        if (pack_idx(c, kind, take[j]))
            return REC_ENOMEM;
    if (rec_value_pack_str(pk, "cursor") || (i < bound ? msgpack_pack_uint32(pk, i) : msgpack_pack_nil(pk)))
        return REC_ENOMEM;
    return 0;
}

static int m_item_list(call_ctx *c) { return list_common(c, REC_KIND_ITEM); }
static int m_user_list(call_ctx *c) { return list_common(c, REC_KIND_USER); }

/* user.history [id, {cursor, n}] -> {history, cursor}: the user's events,
 * newest first, n at a time (100, at most REC_LIST_MAX), each {item, type,
 * ts, weight}; cursor (the count already read) is nil after the oldest. An
 * unknown user has an empty history. Events added while paging shift the
 * pages by as many. */
static int m_user_history(call_ctx *c) {
    char key[REC_ID_MAX];
    int kl = id_key(c, param(c, 0), key, "params[0] (user)");
    if (kl < 0)
        return kl;
    uint64_t cursor;
    uint32_t n;
    const msgpack_object *opts;
    int rc = list_opts(c, 1, &cursor, &n, &opts);
    if (rc)
        return rc;
    uint32_t idx = rec_engine_lookup(c->e, REC_KIND_USER, key, (size_t)kl);
    uint32_t len = 0;
    const rec_hentry *h =
        idx == REC_IDX_NONE ? NULL : rec_graph_history(rec_engine_graph(c->e), idx, &len);
    uint64_t from = cursor < len ? cursor : len;
    uint32_t cnt = (uint32_t)(len - from < n ? len - from : n);
    msgpack_packer *pk = &c->pk;
    if (msgpack_pack_map(pk, 2) || rec_value_pack_str(pk, "history") || msgpack_pack_array(pk, cnt))
        return REC_ENOMEM;
    for (uint32_t i = 0; i < cnt; i++) {
        const rec_hentry *e = &h[len - 1 - (from + i)];
        if (pack_hentry(c, e))
            return REC_ENOMEM;
    }
    uint64_t next = from + cnt;
    return rec_value_pack_str(pk, "cursor") || (next < len ? msgpack_pack_uint64(pk, next)
                                               : msgpack_pack_nil(pk))
               ? REC_ENOMEM
               : 0;
}

/* The checks of item.delete / user.delete, before anything is deleted. */
static int delete_check(call_ctx *c) {
    uint32_t n = c->params->via.array.size;
    if (n == 0)
        return fail(c, REC_EINVAL, "params must hold at least one id");
    if (n > MAX_BATCH)
        return fail(c, REC_ETOOLARGE, "at most %d per call", MAX_BATCH);
    char key[REC_ID_MAX];
    for (uint32_t i = 0; i < n; i++) {
        char what[32];
        snprintf(what, sizeof what, "params[%u]", i);
        int kl = id_key(c, param(c, i), key, what);
        if (kl < 0)
            return kl;
    }
    return 0;
}

static int delete_common(call_ctx *c, rec_kind kind) {
    uint32_t n = c->params->via.array.size;
    char key[REC_ID_MAX];
    int rc0 = delete_check(c);
    if (rc0)
        return rc0;
    uint32_t deleted = 0;
    for (uint32_t i = 0; i < n; i++) {
        int kl = id_key(c, param(c, i), key, "id");
        /* Policies forget what they keep about the user first (their kv
         * writes commit with the deletion). */
        if (kind == REC_KIND_USER && c->d->rt &&
            rec_engine_lookup(c->e, kind, key, (size_t)kl) != REC_IDX_NONE)
            rec_fanout_forget(&c->d->fan, key, (size_t)kl);
        int rc = rec_engine_delete(c->e, kind, key, (size_t)kl);
        if (rc == REC_ENOTFOUND)
            continue;
        if (rc)
            return engine_fail(c, rc);
        deleted++;
    }
    return msgpack_pack_uint32(&c->pk, deleted) ? REC_ENOMEM : 0;
}

static int m_item_delete(call_ctx *c) { return delete_common(c, REC_KIND_ITEM); }
static int m_user_delete(call_ctx *c) { return delete_common(c, REC_KIND_USER); }

/* ---- events ----------------------------------------------------------- */

/* The fields of event o, its context at REC_EVF_CONTEXT, in one pass. */
static void event_fields(const msgpack_object *o, const msgpack_object *v[REC_EVF_N + 1]) {
    rec_value_fields(o, rec_event_field_names, REC_EVF_N + 1, v);
}

/* Read event o, its fields v (its context packed as clen bytes at ctx;
 * ctx NULL when only the size is known), into in, checked as input.c
 * checks every event. */
static int read_event(call_ctx *c, const msgpack_object *const v[REC_EVF_N + 1],
                      const void *ctx, size_t clen, rec_event_input *in) {
    rec_field f[REC_EVF_N];
    for (int k = 0; k < REC_EVF_N; k++)
        rec_value_input(v[k], &f[k]);
    return rec_input_event(c->e, f, c->d->strict, ctx, clen, in, c->err, c->errlen);
}

static int not_event(call_ctx *c, uint32_t i) {
    return fail(c, REC_EINVAL, "params[%u] must be a map {user, item, type, ...}", i);
}

static int check_event(call_ctx *c, const msgpack_object *o, uint32_t i) {
    if (!o || o->type != MSGPACK_OBJECT_MAP)
        return not_event(c, i);
    const msgpack_object *v[REC_EVF_N + 1];
    event_fields(o, v);
    const msgpack_object *cx = v[REC_EVF_CONTEXT];
    size_t clen = cx ? packed_size(cx) : 0; /* the size apply_event will store */
    rec_event_input in;
    int rc = read_event(c, v, NULL, clen, &in);
    return rc ? in_param(c, rc, i) : 0;
}

/* Would the events of this call create more event types than the engine
 * keeps? Looked at only when the room left is smaller than the call (the
 * cost is then O(events x types)). */
static int check_new_types(call_ctx *c, uint32_t n) {
    size_t have = rec_engine_type_count(c->e);
    size_t room = have < REC_MAX_TYPES ? REC_MAX_TYPES - have : 0;
    if (n <= room)
        return 0;
    const msgpack_object *fresh[REC_MAX_TYPES];
    size_t nfresh = 0;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *t = rec_value_field(param(c, i), "type");
        if (!t || t->type != MSGPACK_OBJECT_STR) /* a lone event, read after this */
            continue;
        if (rec_engine_type_find(c->e, t->via.str.ptr, t->via.str.size) >= 0)
            continue;
        size_t q = 0;
        while (q < nfresh && !(fresh[q]->via.str.size == t->via.str.size &&
                               memcmp(fresh[q]->via.str.ptr, t->via.str.ptr,
                                      t->via.str.size) == 0))
            q++;
        if (q < nfresh)
            continue;
        if (nfresh == room)
            return fail(c, REC_ETOOLARGE, "params[%u]: new event type '%.*s' would pass "
                        "the limit of %d types", i, (int)t->via.str.size, t->via.str.ptr,
                        REC_MAX_TYPES);
        fresh[nfresh++] = t;
    }
    return 0;
}

/* Feedback naming a list this node does not hold yet (a cluster's). */
static void late_keep(rec_dispatch *d, const rec_event *ev, uint32_t item, double ts) {
    late_feedback *l = &d->late[d->late_next];
    d->late_next = (d->late_next + 1) % LATE_MAX;
    if (!l->rec_id)
        d->nlate++;
    memcpy(l->hex, ev->rec_id, 16);
    l->hex[16] = 0;
    l->rec_id = strtoull(l->hex, NULL, 16);
    if (!l->rec_id) {
        d->nlate--;
        return;
    }
    size_t tl = ev->tlen < REC_TYPE_NAME_MAX ? ev->tlen : REC_TYPE_NAME_MAX;
    memcpy(l->type, ev->type, tl);
    l->type[tl] = 0;
    l->item = item;
    l->ts = ts;
    l->at = rec_wall();
}

/* The list rec_id came: the feedback that waited for it is credited, to
 * stats.get and to the click model (its list now waits for outcomes). */
static void late_credit(rec_dispatch *d, uint64_t rec_id) {
    double now = rec_wall();
    rec_click *cm = rec_engine_click(d->e);
    for (uint32_t i = 0; i < LATE_MAX && d->nlate; i++) {
        late_feedback *l = &d->late[i];
        if (!l->rec_id || (l->rec_id != rec_id && now - l->at < LATE_S))
            continue;
        if (l->rec_id == rec_id) {
            size_t tl = strlen(l->type);
            (void)rec_stats_attribute(&d->metrics, d->e, l->hex, 16, l->item, l->type, tl,
                                      l->ts);
            if (rec_click_active(cm))
                (void)rec_click_feedback(cm, d->e, l->hex, 16, l->item, l->type, tl, l->ts);
        }
        l->rec_id = 0; /* credited, or too old */
        d->nlate--;
    }
}

/* Apply event i, o. A call of one event was not read before (its read
 * here refuses it before anything is applied); a longer one was. */
static int apply_event(call_ctx *c, const msgpack_object *o, uint32_t i) {
    if (!o || o->type != MSGPACK_OBJECT_MAP)
        return not_event(c, i);
    rec_buf *ctx = &c->d->scratch;
    rec_buf_clear(ctx);
    const msgpack_object *v[REC_EVF_N + 1];
    event_fields(o, v);
    const msgpack_object *cx = v[REC_EVF_CONTEXT];
    if (cx && pack_scratch(c, cx))
        return REC_ENOMEM;
    rec_event_input in;
    int rc = read_event(c, v, cx ? ctx->data : NULL, cx ? ctx->len : 0, &in);
    if (rc)
        return in_param(c, rc, i);
    rec_event ev = in.ev;
    rec_event_out out;
    rc = rec_dispatch_catch_up(c->d);
    if (!rc)
        rc = rec_engine_event(c->e, &ev, &out);
    if (rc)
        return engine_fail(c, rc);
    c->d->items_by_events += out.new_item;
    c->d->types_by_events += out.new_type;
    if (ev.rlen && rec_stats_attribute(&c->d->metrics, c->e, ev.rec_id, ev.rlen, out.item,
                                       ev.type, ev.tlen, out.ts) &&
        c->d->record_fn)
        late_keep(c->d, &ev, out.item, out.ts);
    /* The fields a replay reads back from the log. */
    rec_replay_event le = {
        .seq = out.seq, .ts = out.ts, .user = out.user, .item = out.item,
        .type = out.type, .weight = out.weight,
        .has_value = ev.has_value, .value = ev.value,
        .rec_id = ev.rec_id, .rlen = ev.rlen, .context = ev.context, .clen = ev.clen,
    };
    rc = rec_fanout_learn(&c->d->fan, &le);
    return rc ? engine_fail(c, rc) : 0;
}

/* Every event of the call checked, before any is applied; with
 * applied_next, an event alone is left to the apply that follows, which
 * makes the same checks as it reads it (a cluster's checks before the
 * stream are not followed by one). */
static int check_events(call_ctx *c, int applied_next) {
    uint32_t n = c->params->via.array.size;
    if (n == 0)
        return fail(c, REC_EINVAL, "params must hold at least one event");
    if (n > MAX_BATCH)
        return fail(c, REC_ETOOLARGE, "at most %d events per call", MAX_BATCH);
    for (uint32_t i = 0; i < n && !(applied_next && n == 1); i++) {
        int rc = check_event(c, param(c, i), i);
        if (rc)
            return rc;
    }
    return check_new_types(c, n);
}

static int m_event_add(call_ctx *c) {
    uint32_t n = c->params->via.array.size;
    int trc = check_events(c, 1);
    if (trc)
        return trc;
    for (uint32_t i = 0; i < n; i++) {
        if (i + 1 < n)
            prefetch_event(c->e, param(c, i + 1));
        int rc = apply_event(c, param(c, i), i);
        if (rc)
            return rc;
    }
    return msgpack_pack_uint32(&c->pk, n) ? REC_ENOMEM : 0;
}

/* ---- recommendations -------------------------------------------------- */

typedef struct rec_opts {
    uint32_t n;
    const msgpack_object *exclude;
    const char *pipeline;
} rec_opts;

static int parse_n(call_ctx *c, const msgpack_object *o, uint32_t *n) {
    const msgpack_object *no = rec_value_field(o, "n");
    *n = 10;
    if (!no)
        return 0;
    if (!is_number(no) || number(no) != floor(number(no)))
        return fail(c, REC_EINVAL, "n must be an integer");
    double x = number(no);
    if (x < 1 || x > MAX_N)
        return fail(c, REC_ERANGE, "n must be 1..%d", MAX_N);
    *n = (uint32_t)x;
    return 0;
}

/* Skip map over items: deleted, inactive, and each listed in `exclude`. */
static uint64_t *skip_map(call_ctx *c, const msgpack_object *exclude,
                          size_t *words, int *rc) {
    uint32_t bound = rec_engine_bound(c->e, REC_KIND_ITEM);
    *words = ((size_t)bound + 63) / 64 + 1;
    uint64_t *skip = calloc(*words, sizeof *skip);
    if (!skip) {
        *rc = fail(c, REC_ENOMEM, "out of memory");
        return NULL;
    }
    /* Inactive and deleted items: one word at a time. */
    size_t iw;
    const uint64_t *in = rec_engine_inactive(c->e, &iw);
    for (size_t i = 0; i < iw && i < *words; i++)
        skip[i] |= in[i];
    if (exclude) {
        if (exclude->type != MSGPACK_OBJECT_ARRAY) {
            free(skip);
            *rc = fail(c, REC_EINVAL, "exclude must be an array of item ids");
            return NULL;
        }
        for (uint32_t i = 0; i < exclude->via.array.size; i++) {
            char key[REC_ID_MAX];
            int kl = id_key(c, &exclude->via.array.ptr[i], key, "exclude[]");
            if (kl < 0) {
                free(skip);
                *rc = kl;
                return NULL;
            }
            uint32_t idx = rec_engine_lookup(c->e, REC_KIND_ITEM, key, (size_t)kl);
            if (idx != REC_IDX_NONE)
                skip[idx >> 6] |= 1ull << (idx & 63);
        }
    }
    *rc = 0;
    return skip;
}

/* In a cluster: milliseconds, the node's slot, then a counter. */
#define REC_ID_SLOT_SHIFT 12
#define REC_ID_MS_SHIFT 22

static uint64_t next_rec_id(rec_dispatch *d) {
    uint64_t ms = (uint64_t)(rec_wall() * 1000.0);
    uint64_t id;
    if (d->record_fn) {
        /* The slot keeps two nodes' ids apart; within the node they grow
         * (a full millisecond borrows the next), so its records are
         * appended. */
        uint64_t last_ms = d->last_rec_id >> REC_ID_MS_SHIFT, n = 0;
        if (ms <= last_ms) {
            ms = last_ms;
            n = (d->last_rec_id & ((1u << REC_ID_SLOT_SHIFT) - 1)) + 1;
            if (n >> REC_ID_SLOT_SHIFT) {
                ms++;
                n = 0;
            }
        }
        id = ms << REC_ID_MS_SHIFT | (uint64_t)d->rec_slot << REC_ID_SLOT_SHIFT | n;
    } else {
        /* Milliseconds in the high bits, a counter below: grows even when
         * two recommendations share a millisecond, so the records are
         * appended. */
        id = (ms << 16) | (d->rec_seq++ & 0xffff);
        if (id <= d->last_rec_id)
            id = d->last_rec_id + 1;
    }
    d->last_rec_id = id;
    return id;
}

/* Pack the record map rec, each item of its `items` through item(ud, pk,
 * o), the rest as it is. */
typedef int (*item_packer)(void *ud, msgpack_packer *pk, const msgpack_object *o);

static int pack_record(msgpack_packer *pk, const msgpack_object *rec, item_packer item,
                       void *ud) {
    int rc = msgpack_pack_map(pk, rec->via.map.size);
    for (uint32_t i = 0; !rc && i < rec->via.map.size; i++) {
        const msgpack_object_kv *kv = &rec->via.map.ptr[i];
        rc = msgpack_pack_object(pk, kv->key);
        if (rc || !rec_value_is_str(&kv->key, "items") || kv->val.type != MSGPACK_OBJECT_ARRAY) {
            rc = rc || msgpack_pack_object(pk, kv->val);
            continue;
        }
        rc = msgpack_pack_array(pk, kv->val.via.array.size);
        for (uint32_t j = 0; !rc && j < kv->val.via.array.size; j++)
            rc = item(ud, pk, &kv->val.via.array.ptr[j]);
    }
    return rc;
}

/* An item index (as this node stores it) as the item's id. */
static int item_id(void *ud, msgpack_packer *pk, const msgpack_object *o) {
    size_t kl;
    const char *key = rec_engine_key(ud, REC_KIND_ITEM, (uint32_t)o->via.u64, &kl);
    return pack_key(pk, key, kl);
}

/* An item id as this node's index (REC_IDX_NONE when unknown), kept. */
typedef struct idx_list {
    rec_engine *e;
    uint32_t items[MAX_N];
    size_t n;
} idx_list;

static int item_idx(void *ud, msgpack_packer *pk, const msgpack_object *o) {
    idx_list *l = ud;
    char key[REC_ID_MAX];
    int kl = peek_key(o, key);
    uint32_t x = kl > 0 ? rec_engine_lookup(l->e, REC_KIND_ITEM, key, (size_t)kl) : REC_IDX_NONE;
    if (l->n < MAX_N)
        l->items[l->n++] = x;
    return msgpack_pack_uint32(pk, x);
}

/* The record just stored (rec, with item indexes) to the cluster's hook,
 * as rec_dispatch_apply_record takes it: {id, rec_id, rec} with the items
 * as ids. A failure is logged: the list stays attributed here alone. */
static void share_record(call_ctx *c, const char *key, size_t kl, uint64_t rid,
                         const char *rec, size_t len) {
    rec_dispatch *d = c->d;
    if (!d->record_fn || !key)
        return;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    rec_buf out = REC_BUF_INIT;
    msgpack_packer pk;
    rec_rpc_packer(&pk, &out);
    int rc = msgpack_unpack_next(&up, rec, len, NULL) == MSGPACK_UNPACK_SUCCESS &&
                     up.data.type == MSGPACK_OBJECT_MAP
                 ? 0 : REC_EINVAL;
    rc = rc || msgpack_pack_array(&pk, 1) || msgpack_pack_map(&pk, 3) ||
         rec_value_pack_str(&pk, "id") || pack_key(&pk, key, kl) ||
         rec_value_pack_str(&pk, "rec_id") || msgpack_pack_uint64(&pk, rid) ||
         rec_value_pack_str(&pk, "rec") || pack_record(&pk, &up.data, item_id, c->e);
    msgpack_unpacked_destroy(&up);
    msgpack_unpacked_init(&up);
    if (!rc)
        rc = msgpack_unpack_next(&up, out.data, out.len, NULL) == MSGPACK_UNPACK_SUCCESS
                 ? d->record_fn(d->record_ud, &up.data) : REC_ENOMEM;
    if (rc)
        REC_DEBUG("cluster: the list %016llx is attributed on this node alone: %s",
                 (unsigned long long)rid, rec_strerror(rc));
    msgpack_unpacked_destroy(&up);
    rec_buf_free(&out);
}

/* Count a list as shown to the person of ukey: to its pipeline (NULL: a
 * strategy asked alone), its variant (NULL: none), and item i to strategy
 * by[i]; the impressions counter; what the person was shown (for the
 * strategies' shown_by; a person not remembered for want of memory is
 * served as one never shown). */
static void count_shown(rec_dispatch *d, const char *ukey, size_t ulen, const char *pipeline,
                        const char *arm, const char *const *by, const uint32_t *items,
                        size_t n, double now) {
    if (pipeline)
        rec_stats_add(&d->metrics, "pipeline", pipeline, (double)n, 0, 0, now);
    if (arm)
        rec_stats_add(&d->metrics, "variant", arm, (double)n, 0, 0, now);
    rec_counter *imp = rec_engine_counter(d->e, "impressions");
    for (size_t i = 0; i < n; i++) {
        rec_stats_add(&d->metrics, "strategy", by[i], 1, 0, 0, now);
        if (imp)
            rec_counter_add(imp, items[i], 1.0, now);
    }
    (void)rec_shown_add(rec_engine_shown(d->e), ukey, ulen, items, n, now);
}

/* Pack {rec_id, pipeline, items = [{id, score}]} and record it. */
/* record 0: a preview (rec.recommend record = false), answered only. */
static int pack_recs(call_ctx *c, uint32_t user, const char *pipeline,
                     const rec_hit *h, size_t n, int record) {
    uint64_t rid = next_rec_id(c->d);
    char rs[24];
    snprintf(rs, sizeof rs, "%016llx", (unsigned long long)rid);
    msgpack_packer *pk = &c->pk;
    if (msgpack_pack_map(pk, 3) || rec_value_pack_str(pk, "rec_id") || rec_value_pack_str(pk, rs) ||
        rec_value_pack_str(pk, "pipeline") || rec_value_pack_str(pk, pipeline) || rec_value_pack_str(pk, "items") ||
        msgpack_pack_array(pk, n))
        return REC_ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (msgpack_pack_map(pk, 2) || rec_value_pack_str(pk, "id") ||
            pack_idx(c, REC_KIND_ITEM, h[i].idx) || rec_value_pack_str(pk, "score") ||
            msgpack_pack_float(pk, h[i].score))
            return REC_ENOMEM;
    if (!record)
        return 0;
    /* What was shown, to whom, by what: for attribution of later events. */
    rec_buf *b = &c->d->scratch;
    rec_buf_clear(b);
    msgpack_packer rp;
    rec_rpc_packer(&rp, b);
    int rc = msgpack_pack_map(&rp, 3) || rec_value_pack_str(&rp, "ts") ||
             msgpack_pack_double(&rp, rec_now()) || rec_value_pack_str(&rp, "pipeline") ||
             rec_value_pack_str(&rp, pipeline) || rec_value_pack_str(&rp, "items") || msgpack_pack_array(&rp, n);
    for (size_t i = 0; i < n && !rc; i++)
        rc = msgpack_pack_uint32(&rp, h[i].idx);
    if (rc)
        return REC_ENOMEM;
    if (!rec_store_read_only(rec_engine_store(c->e)) &&
        (rc = rec_engine_rec_put(c->e, rid, user, b->data, b->len)))
        return engine_fail(c, rc);
    if (user != REC_IDX_NONE) {
        size_t kl;
        const char *key = rec_engine_key(c->e, REC_KIND_USER, user, &kl);
        share_record(c, key, kl, rid, b->data, b->len);
    }
    if (strcmp(pipeline, "builtin") == 0)
        rec_stats_add(&c->d->metrics, "pipeline", pipeline, (double)n, 0, 0, rec_now());
    return 0;
}

static int skip_seen_of(rec_engine *e, uint32_t user, uint64_t *skip) {
    uint32_t hn = 0;
    const rec_hentry *h = user != REC_IDX_NONE
                              ? rec_graph_history(rec_engine_graph(e), user, &hn) : NULL;
    for (uint32_t i = 0; i < hn; i++)
        skip[h[i].item >> 6] |= 1ull << (h[i].item & 63);
    return 0;
}

static int pack_str_obj(msgpack_packer *pk, const msgpack_object *o, char *buf,
                        size_t cap) {
    size_t n = o->via.str.size < cap - 1 ? o->via.str.size : cap - 1;
    memcpy(buf, o->via.str.ptr, n);
    buf[n] = 0;
    (void)pk;
    return 0;
}

/* rec.recommend through strategies and policies: 0, a negative REC_E*, or
 * REC_NOT_LOADED when the default pipeline has no strategy loaded. */
static int recommend_scripts(call_ctx *c, const msgpack_object *o, const char *key,
                             size_t kl, uint32_t n, const msgpack_object *pl,
                             const msgpack_object *so, int record) {
    rec_dispatch *d = c->d;
    if (!d->rt)
        return fail(c, REC_ENOTFOUND, "no scripts are loaded (start with --scripts)");
    char pname[REC_PIPELINE_NAME_MAX + 1] = "", sname[REC_PIPELINE_NAME_MAX + 1] = "";
    if (pl)
        pack_str_obj(NULL, pl, pname, sizeof pname);
    if (so)
        pack_str_obj(NULL, so, sname, sizeof sname);
    const char *arm = NULL;
    const rec_pipeline_pipeline *p = NULL;
    if (!so) {
        p = rec_pipeline_pick(&d->pipelines.cfg, pl ? pname : NULL, key, kl, &arm);
        if (!p)
            return fail(c, REC_ENOTFOUND, "unknown pipeline '%s'", pname);
    } else if (!rec_script_has(d->rt, REC_SCRIPT_STRATEGY, sname, "recommend")) {
        return fail(c, REC_ENOTFOUND, "unknown strategy '%s'", sname);
    }
    /* Nothing loaded for the default pipeline: the built-in one answers. */
    if (p && !pl) {
        int any = 0;
        for (int i = 0; i < p->nstrategies; i++)
            any |= rec_script_has(d->rt, REC_SCRIPT_STRATEGY, p->strategies[i].name,
                                  "recommend");
        if (!any)
            return REC_NOT_LOADED;
    }
    /* No policy list: every loaded policy with rerank, in name order. */
    rec_pipeline_pipeline all;
    if (p && p->all_policies) {
        all = *p;
        all.npolicies = 0;
        rec_script_info in;
        for (size_t i = 0; i < rec_script_count(d->rt) && all.npolicies < REC_PIPELINE_MAX_POLICIES; i++)
            if (!rec_script_info_at(d->rt, i, &in) && in.kind == REC_SCRIPT_POLICY &&
                in.loaded && rec_script_has(d->rt, REC_SCRIPT_POLICY, in.name, "rerank"))
                snprintf(all.policies[all.npolicies++], REC_PIPELINE_NAME_MAX + 1, "%s", in.name);
        p = &all;
    }
    const msgpack_object *ao = rec_value_field(o, "allow_seen");
    const msgpack_object *eo = rec_value_field(o, "explain");
    int allow_seen = ao && ao->type == MSGPACK_OBJECT_BOOLEAN && ao->via.boolean;
    int explain = eo && eo->type == MSGPACK_OBJECT_BOOLEAN && eo->via.boolean;
    int rc;
    size_t words;
    uint64_t *skip = skip_map(c, rec_value_field(o, "exclude"), &words, &rc);
    if (!skip)
        return rc;
    uint32_t user = rec_engine_lookup(c->e, REC_KIND_USER, key, kl);
    if (!allow_seen)
        skip_seen_of(c->e, user, skip);
    rec_buf ctx = REC_BUF_INIT, exc = REC_BUF_INIT;
    msgpack_packer pk;
    const msgpack_object *cx = rec_value_field(o, "context"), *ex = rec_value_field(o, "exclude");
    if (cx) {
        rec_rpc_packer(&pk, &ctx);
        msgpack_pack_object(&pk, *cx);
    }
    if (ex) {
        rec_rpc_packer(&pk, &exc);
        msgpack_pack_object(&pk, *ex);
    }
    rec_pipeline_req r = {.p = p, .strategy = so ? sname : NULL, .user_key = key,
                    .user_len = kl, .n = n, .context = cx ? ctx.data : NULL,
                    .context_len = ctx.len, .exclude = ex ? exc.data : NULL,
                    .exclude_len = exc.len, .skip = skip, .words = words,
                    .allow_seen = allow_seen, .record = record, .rec_ref = d->rec_ref};
    rec_pipeline_hit *hits = malloc((size_t)n * sizeof *hits);
    size_t got = 0;
    /* What policies keep of what they showed (fatigue lists) is learned
     * state like the impressions counter: written at checkpoints. */
    int was = rec_engine_learning(c->e, 1);
    /* the click model: lists whose window ended give their negatives */
    rec_click *cm = rec_engine_click(c->e);
    if (rec_click_sync(cm, d->rt))
        (void)rec_click_expire(cm, c->e, rec_now());
    rc = hits ? rec_pipeline_run(d->pl, d->rt, c->e, &r, hits, &got, c->err, c->errlen)
              : REC_ENOMEM;
    rec_engine_learning(c->e, was);
    free(skip);
    rec_buf_free(&exc);
    if (rc) {
        free(hits);
        rec_buf_free(&ctx);
        return rc == REC_ENOMEM ? fail(c, rc, "out of memory") : rc;
    }
    const char *label = so ? sname : p->name;
    char shown[REC_PIPELINE_NAME_MAX + 16];
    snprintf(shown, sizeof shown, "%s%s", so ? "strategy:" : "", label);
    /* Answer, record and count what is shown. */
    uint64_t rid = next_rec_id(d);
    char rs[24];
    snprintf(rs, sizeof rs, "%016llx", (unsigned long long)rid);
    msgpack_packer *o_pk = &c->pk;
    int nstrat = p ? p->nstrategies : 1;
    rc = msgpack_pack_map(o_pk, arm ? 4 : 3) || rec_value_pack_str(o_pk, "rec_id") || rec_value_pack_str(o_pk, rs) ||
         rec_value_pack_str(o_pk, "pipeline") || rec_value_pack_str(o_pk, shown) ||
         (arm && (rec_value_pack_str(o_pk, "variant") || rec_value_pack_str(o_pk, arm))) ||
         rec_value_pack_str(o_pk, "items") || msgpack_pack_array(o_pk, got);
    for (size_t i = 0; i < got && !rc; i++) {
        rc = msgpack_pack_map(o_pk, explain ? 3 : 2) || rec_value_pack_str(o_pk, "id") ||
             pack_idx(c, REC_KIND_ITEM, hits[i].idx) || rec_value_pack_str(o_pk, "score") ||
             msgpack_pack_float(o_pk, hits[i].score);
        if (!rc && explain) {
            int moved = 0;
            for (int pi = 0; p && pi < p->npolicies; pi++)
                moved += (hits[i].moved >> (pi & 31)) & 1;
            rc = rec_value_pack_str(o_pk, "explain") || msgpack_pack_map(o_pk, 2) ||
                 rec_value_pack_str(o_pk, "strategies") || msgpack_pack_map(o_pk, (size_t)nstrat);
            for (int si = 0; si < nstrat && !rc; si++)
                rc = rec_value_pack_str(o_pk, p ? p->strategies[si].name : sname) ||
                     msgpack_pack_float(o_pk, hits[i].parts[si]);
            rc = rc || rec_value_pack_str(o_pk, "policies") || msgpack_pack_array(o_pk, (size_t)moved);
            for (int pi = 0; p && pi < p->npolicies && !rc; pi++)
                if ((hits[i].moved >> (pi & 31)) & 1)
                    rc = rec_value_pack_str(o_pk, p->policies[pi]);
        }
    }
    if (rc) {
        free(hits);
        rec_buf_free(&ctx);
        return REC_ENOMEM;
    }
    if (!record) { /* a preview: nothing stored, nothing counted as shown */
        free(hits);
        rec_buf_free(&ctx);
        return 0;
    }
    /* The click model's features of each shown item, as served. */
    rec_buf feats = REC_BUF_INIT;
    int logged = 0;
    if (rec_click_active(cm)) {
        rec_click_cand cand[MAX_N];
        size_t nc = got < MAX_N ? got : MAX_N;
        for (size_t i = 0; i < nc; i++)
            cand[i] = (rec_click_cand){
                .item = hits[i].idx, .position = (uint32_t)i,
                .strategy = !p ? sname : hits[i].by >= 0 ? p->strategies[hits[i].by].name : NULL,
                .score = hits[i].fused};
        rec_click_ask ask = {.ukey = key, .ulen = kl, .context = r.context,
                             .clen = r.context_len, .now = rec_now()};
        logged = rec_click_encode(cm, c->e, &ask, cand, nc, &feats) == 0;
    }
    rec_buf_free(&ctx);
    rec_buf *b = &d->scratch;
    rec_buf_clear(b);
    msgpack_packer rp;
    rec_rpc_packer(&rp, b);
    rc = msgpack_pack_map(&rp, logged ? 7 : 6) || rec_value_pack_str(&rp, "ts") || msgpack_pack_double(&rp, rec_now()) ||
         rec_value_pack_str(&rp, "pipeline") || rec_value_pack_str(&rp, shown) || rec_value_pack_str(&rp, "arm") ||
         (arm ? rec_value_pack_str(&rp, arm) : msgpack_pack_nil(&rp)) ||
         rec_value_pack_str(&rp, "strategies") || msgpack_pack_array(&rp, (size_t)nstrat);
    for (int si = 0; si < nstrat && !rc; si++)
        rc = rec_value_pack_str(&rp, p ? p->strategies[si].name : sname);
    rc = rc || rec_value_pack_str(&rp, "items") || msgpack_pack_array(&rp, got);
    for (size_t i = 0; i < got && !rc; i++)
        rc = msgpack_pack_uint32(&rp, hits[i].idx);
    rc = rc || rec_value_pack_str(&rp, "by") || msgpack_pack_array(&rp, got);
    for (size_t i = 0; i < got && !rc; i++)
        rc = msgpack_pack_int(&rp, hits[i].by < 0 ? 0 : hits[i].by);
    if (logged)
        rc = rc || rec_value_pack_str(&rp, "f") || msgpack_pack_bin(&rp, feats.len) ||
             msgpack_pack_bin_body(&rp, feats.data, feats.len);
    rec_buf_free(&feats);
    if (!rc && !rec_store_read_only(rec_engine_store(c->e)))
        rc = rec_engine_rec_put(c->e, rid, user, b->data, b->len);
    if (!rc && logged)
        rc = rec_click_served(cm, rid, rec_now(), (uint32_t)(got < MAX_N ? got : MAX_N));
    if (!rc)
        share_record(c, key, kl, rid, b->data, b->len);
    uint32_t idx[MAX_N];
    const char *by[MAX_N];
    size_t ns = got < MAX_N ? got : MAX_N;
    for (size_t i = 0; i < ns; i++) {
        idx[i] = hits[i].idx;
        by[i] = p ? p->strategies[hits[i].by < 0 ? 0 : hits[i].by].name : sname;
    }
    count_shown(d, key, kl, so ? NULL : label, arm, by, idx, ns, rec_now());
    free(hits);
    return rc ? engine_fail(c, rc) : 0;
}

/* The shared head of rec.recommend and rec.similar: params[0] is a map
 * whose field `who` is an id (encoded into key, its length returned) and
 * whose n is 1..MAX_N. Returns the length, or a negative error. */
static int parse_rec_request(call_ctx *c, const char *who, const char *shape,
                       const msgpack_object **o, char *key, uint32_t *n) {
    *o = param(c, 0);
    if (!*o || (*o)->type != MSGPACK_OBJECT_MAP)
        return fail(c, REC_EINVAL, "params[0] must be a map %s", shape);
    char what[32];
    snprintf(what, sizeof what, "params[0].%s", who);
    int kl = id_key(c, rec_value_field(*o, who), key, what);
    if (kl < 0)
        return kl;
    int rc = parse_n(c, *o, n);
    return rc ? rc : kl;
}

static int m_recommend(call_ctx *c) {
    const msgpack_object *o;
    char key[REC_ID_MAX];
    uint32_t n;
    int kl = parse_rec_request(c, "user", "{user, n?, exclude?, ...}", &o, key, &n);
    if (kl < 0)
        return kl;
    int rc;
    const msgpack_object *pl = rec_value_field(o, "pipeline");
    const msgpack_object *so = rec_value_field(o, "strategy");
    if ((pl && pl->type != MSGPACK_OBJECT_STR) || (so && so->type != MSGPACK_OBJECT_STR))
        return fail(c, REC_EINVAL, "pipeline and strategy must be strings");
    /* record = false: a preview, neither stored nor counted as shown */
    const msgpack_object *ro = rec_value_field(o, "record");
    if (ro && ro->type != MSGPACK_OBJECT_BOOLEAN)
        return fail(c, REC_EINVAL, "params[0].record must be a boolean");
    int record = !ro || ro->via.boolean;
    /* now: the moment to serve at (a replay's), instead of the clock's */
    const msgpack_object *no = rec_value_field(o, "now");
    if (no) {
        if (!is_number(no) || !(number(no) > 0 && number(no) < 1e11))
            return fail(c, REC_ERANGE, "params[0].now must be seconds since the epoch "
                        "(0 < now < 1e11)");
        rec_clock_set(number(no));
    }
    int builtin = pl && pl->via.str.size == 7 && memcmp(pl->via.str.ptr, "builtin", 7) == 0;
    if (!builtin && (so || c->d->rt)) {
        rc = recommend_scripts(c, o, key, (size_t)kl, n, pl, so, record);
        if (rc != REC_NOT_LOADED)
            return rc;
        /* the default pipeline has nothing loaded: the built-in answers */
    }
    if (pl && !builtin)
        return fail(c, REC_ENOTFOUND, "unknown pipeline (this server has \"builtin\")");
    size_t words;
    uint64_t *skip = skip_map(c, rec_value_field(o, "exclude"), &words, &rc);
    if (!skip)
        return rc;
    uint32_t user = rec_engine_lookup(c->e, REC_KIND_USER, key, (size_t)kl);
    rec_hit *out = malloc((size_t)n * sizeof *out);
    size_t got = 0;
    rc = out ? rec_fusion_recommend(c->e, &c->d->fuse, user, skip, words, n, out, &got)
             : REC_ENOMEM;
    free(skip);
    if (rc) {
        free(out);
        return fail(c, REC_ENOMEM, "out of memory");
    }
    rc = pack_recs(c, user, "builtin", out, got, record);
    free(out);
    return rc;
}

static int m_similar(call_ctx *c) {
    const msgpack_object *o;
    char key[REC_ID_MAX];
    uint32_t n;
    int kl = parse_rec_request(c, "item", "{item, n?, space?}", &o, key, &n);
    if (kl < 0)
        return kl;
    int rc;
    uint32_t idx = rec_engine_lookup(c->e, REC_KIND_ITEM, key, (size_t)kl);
    if (idx == REC_IDX_NONE)
        return fail(c, REC_ENOTFOUND, "unknown item");
    const msgpack_object *so = rec_value_field(o, "space");
    rec_space *s = NULL;
    if (so) {
        if (so->type != MSGPACK_OBJECT_STR || so->via.str.size > REC_SPACE_NAME_MAX)
            return fail(c, REC_EINVAL, "space must be a string");
        char name[REC_SPACE_NAME_MAX + 1];
        memcpy(name, so->via.str.ptr, so->via.str.size);
        name[so->via.str.size] = 0;
        if (!(s = rec_engine_space(c->e, name)))
            return fail(c, REC_ENOTFOUND, "unknown space '%s'", name);
    } else {
        /* "content" when the item has it, else its first space. */
        for (size_t i = 0; i < rec_engine_space_count(c->e); i++) {
            rec_space *x = rec_engine_space_at(c->e, i);
            if (rec_space_has(x, REC_KIND_ITEM, idx) &&
                (!s || strcmp(x->name, "content") == 0))
                s = x;
        }
    }
    if (s && (rc = rec_engine_mf_settle(c->e, s->name))) /* a read: MF steps owed first */
        return engine_fail(c, rc);
    size_t words;
    uint64_t *skip = skip_map(c, rec_value_field(o, "exclude"), &words, &rc);
    if (!skip)
        return rc;
    skip[idx >> 6] |= 1ull << (idx & 63);
    rec_hit *hits = malloc((size_t)n * sizeof *hits);
    if (!hits) {
        free(skip);
        return fail(c, REC_ENOMEM, "out of memory");
    }
    size_t got = 0;
    const float *v = s ? rec_space_get(s, REC_KIND_ITEM, idx) : NULL;
    if (v) {
        float q[REC_DIM_MAX];
        memcpy(q, v, s->dim * sizeof(float));
        int k = rec_space_topk(s, REC_KIND_ITEM, q, 1, skip, words, n, hits);
        got = k > 0 ? (size_t)k : 0;
    } else {
        /* No vector: items bought or clicked together with it. */
        got = rec_graph_neighbors(rec_engine_graph(c->e), idx, skip, words, n, hits);
    }
    free(skip);
    rc = pack_recs(c, REC_IDX_NONE, v ? s->name : "cooccurrence", hits, got, 1);
    free(hits);
    return rc;
}

/* ---- scripts and stats --------------------------------------------------- */

static int pack_scripts(call_ctx *c, int status_only) {
    msgpack_packer *pk = &c->pk;
    if (!c->d->rt)
        return msgpack_pack_array(pk, 0) ? REC_ENOMEM : 0;
    size_t n = rec_script_count(c->d->rt);
    if (msgpack_pack_array(pk, n))
        return REC_ENOMEM;
    rec_script_info in;
    for (size_t i = 0; i < n; i++) {
        if (rec_script_info_at(c->d->rt, i, &in))
            return REC_ENOMEM;
        int rc = msgpack_pack_map(pk, status_only ? 5 : 7) || rec_value_pack_str(pk, "name") ||
                 rec_value_pack_str(pk, in.name) || rec_value_pack_str(pk, "kind") ||
                 rec_value_pack_str(pk, rec_script_kind_name(in.kind)) ||
                 rec_value_pack_str(pk, "loaded") ||
                 (in.loaded ? msgpack_pack_true(pk) : msgpack_pack_false(pk)) ||
                 rec_value_pack_str(pk, "error") ||
                 (in.error ? rec_value_pack_str(pk, in.error) : msgpack_pack_nil(pk)) ||
                 rec_value_pack_str(pk, "version") || msgpack_pack_uint64(pk, in.version);
        if (!rc && !status_only)
            rc = rec_value_pack_str(pk, "calls") || msgpack_pack_uint64(pk, in.calls) ||
                 rec_value_pack_str(pk, "errors") || msgpack_pack_uint64(pk, in.errors);
        if (rc)
            return REC_ENOMEM;
    }
    return 0;
}

static int m_script_list(call_ctx *c) { return pack_scripts(c, 0); }
static int m_script_status(call_ctx *c) { return pack_scripts(c, 1); }

static int m_script_reload(call_ctx *c) {
    if (!c->d->rt)
        return fail(c, REC_ENOTFOUND, "no scripts are loaded (start with --scripts)");
    const msgpack_object *no = param(c, 0);
    char name[REC_PIPELINE_NAME_MAX + 1];
    if (no && no->type != MSGPACK_OBJECT_NIL) {
        if (no->type != MSGPACK_OBJECT_STR || no->via.str.size == 0 ||
            no->via.str.size > REC_PIPELINE_NAME_MAX)
            return fail(c, REC_EINVAL, "params[0] (name) must be a script name");
        memcpy(name, no->via.str.ptr, no->via.str.size);
        name[no->via.str.size] = 0;
    }
    int rc = rec_script_reload(c->d->rt, no && no->type == MSGPACK_OBJECT_STR ? name : NULL,
                               c->err, c->errlen);
    if (rc)
        return rc;
    return msgpack_pack_true(&c->pk) ? REC_ENOMEM : 0;
}

/* model.train's answer once the training is over: what it trained. */
static int pack_trained(msgpack_packer *pk, const rec_train_result *r) {
    int n = !!(r->models & REC_TRAIN_IALS) + !!(r->models & REC_TRAIN_EASE);
    return msgpack_pack_map(pk, 4) || rec_value_pack_str(pk, "started") ||
                   msgpack_pack_true(pk) || rec_value_pack_str(pk, "models") ||
                   msgpack_pack_array(pk, (size_t)n) ||
                   ((r->models & REC_TRAIN_IALS) && rec_value_pack_str(pk, "ials")) ||
                   ((r->models & REC_TRAIN_EASE) && rec_value_pack_str(pk, "ease")) ||
                   rec_value_pack_str(pk, "events") || msgpack_pack_uint64(pk, r->events) ||
                   rec_value_pack_str(pk, "seconds") || msgpack_pack_double(pk, r->seconds)
               ? REC_ENOMEM
               : 0;
}

/* model.train [opts?] -> {started = true}: implicit ALS and/or EASE in a
 * worker; opts as db:ials_train and db:ease_train, and wait = true: answer
 * once the training is over, {started, models, events, seconds}
 * (rec_dispatch_answer), after the running one and one more when a
 * training is running. */
static int m_model_train(call_ctx *c) {
    if (!c->d->trainer)
        return fail(c, REC_ENOTFOUND, "this server cannot train in the background");
    const msgpack_object *o = param(c, 0);
    if (o && o->type != MSGPACK_OBJECT_MAP && o->type != MSGPACK_OBJECT_NIL)
        return fail(c, REC_EINVAL, "params[0] must be a map of options");
    if (o && o->type != MSGPACK_OBJECT_MAP)
        o = NULL;
    const msgpack_object *w = o ? rec_value_field(o, "wait") : NULL;
    if (w && w->type != MSGPACK_OBJECT_BOOLEAN)
        return fail(c, REC_EINVAL, "wait must be a boolean");
    if (w && w->via.boolean) {
        uint64_t ticket = 0;
        int rc = rec_train_start_wait(c->d->trainer, o, &ticket, c->err, c->errlen);
        if (rc)
            return rc;
        c->s->train_ticket = ticket;
        return REC_PENDING;
    }
    int rc = rec_train_start(c->d->trainer, o, c->err, c->errlen);
    if (rc)
        return rc;
    return msgpack_pack_map(&c->pk, 1) || rec_value_pack_str(&c->pk, "started") ||
                   msgpack_pack_true(&c->pk)
               ? REC_ENOMEM
               : 0;
}

int rec_dispatch_answer(rec_dispatch *d, rec_session *s, rec_buf *out, char *errmsg,
                        size_t errlen) {
    errmsg[0] = 0;
    rec_train_result r;
    if (!d->trainer || !s->train_ticket) {
        snprintf(errmsg, errlen, "no answer is waited for");
        return REC_EINVAL;
    }
    if (rec_train_result_get(d->trainer, s->train_ticket, &r) == REC_PENDING)
        return REC_PENDING;
    s->train_ticket = 0;
    if (r.rc) {
        snprintf(errmsg, errlen, "%s", r.err[0] ? r.err : rec_strerror(r.rc));
        return r.rc;
    }
    msgpack_packer pk;
    rec_rpc_packer(&pk, out);
    size_t mark = out->len;
    int rc = pack_trained(&pk, &r);
    if (rc) {
        out->len = mark;
        snprintf(errmsg, errlen, "%s", rec_strerror(rc));
    }
    return rc;
}

/* model.schedule [{auto?}] -> {auto}: whether the server trains its batch
 * models on its own schedule; auto = false pauses it (model.train still
 * trains), as a replay that trains where it chooses does. */
static int m_model_schedule(call_ctx *c) {
    if (!c->d->trainer)
        return fail(c, REC_ENOTFOUND, "this server cannot train in the background");
    const msgpack_object *o = param(c, 0);
    if (o && o->type != MSGPACK_OBJECT_MAP && o->type != MSGPACK_OBJECT_NIL)
        return fail(c, REC_EINVAL, "params[0] must be a map {auto?}");
    const msgpack_object *a = o && o->type == MSGPACK_OBJECT_MAP ? rec_value_field(o, "auto")
                                                                  : NULL;
    if (a && a->type != MSGPACK_OBJECT_BOOLEAN)
        return fail(c, REC_EINVAL, "params[0].auto must be true or false");
    if (a)
        rec_train_pause(c->d->trainer, !a->via.boolean);
    int on = !rec_train_paused(c->d->trainer);
    return msgpack_pack_map(&c->pk, 1) || rec_value_pack_str(&c->pk, "auto") ||
                   (on ? msgpack_pack_true(&c->pk) : msgpack_pack_false(&c->pk))
               ? REC_ENOMEM
               : 0;
}

/* Bytes of msgpack that admin.eval's results may take together: the
 * encoding stops there, so a table that holds one subtable many times over
 * (2^depth leaves) costs no more than this. */
#define EVAL_RESULT_MAX (4u << 20)

/* Pack admin.eval's results (the values after the call context at 1) as
 * one array: each as msgpack when it can be, else as its tostring, which
 * may run a script's __tostring, so this runs protected and budgeted.
 * [-n, +0, e] */
static int pack_eval_results(lua_State *L) {
    call_ctx *c = lua_touserdata(L, 1);
    int n = lua_gettop(L) - 1;
    if (msgpack_pack_array(&c->pk, (size_t)n))
        return luaL_error(L, "out of memory");
    size_t start = c->out->len;
    for (int i = 2; i <= n + 1; i++) {
        char perr[128];
        size_t used = c->out->len - start;
        size_t room = used < EVAL_RESULT_MAX ? EVAL_RESULT_MAX - used : 0;
        int rc = rec_value_pack_lua_max(L, i, c->out, room, perr, sizeof perr);
        if (rc == REC_ETOOLARGE)
            return luaL_error(L, "admin.eval results take more than %d bytes of msgpack",
                              (int)EVAL_RESULT_MAX);
        if (rc) {
            size_t len;
            const char *s = luaL_tolstring(L, i, &len);
            if (msgpack_pack_str(&c->pk, len) || msgpack_pack_str_body(&c->pk, s, len))
                return luaL_error(L, "out of memory");
            lua_pop(L, 1);
        }
    }
    return 0;
}

/* admin.eval [code] -> [results...]: Lua evaluated on the server in this
 * connection's session (globals persist until it closes), sandboxed like
 * the scripts, with `rec` and the same budgets. Results that msgpack
 * cannot carry come back as their tostring (computed under the budgets:
 * a __tostring that fails or runs too long fails the call). */
static int m_admin_eval(call_ctx *c) {
    if (!c->d->rt)
        return fail(c, REC_ENOTFOUND, "no Lua runtime (start with --scripts)");
    const msgpack_object *code = param(c, 0);
    if (!code || code->type != MSGPACK_OBJECT_STR)
        return fail(c, REC_EINVAL, "params[0] (code) must be a string");
    int nres = 0;
    int rc = rec_script_eval(c->d->rt, &c->s->eval_ref, code->via.str.ptr,
                             code->via.str.size, &nres, c->err, c->errlen);
    if (rc)
        return rc;
    return rec_script_pcall(c->d->rt, pack_eval_results, c, nres, 0, 1, c->err, c->errlen);
}

void rec_dispatch_session_end(rec_dispatch *d, rec_session *s) {
    if (d->rt && s->eval_ref)
        rec_script_eval_end(d->rt, s->eval_ref);
    s->eval_ref = 0;
}

/* stats.get [] -> {pipelines = {name = m}, variants = {...}, strategies =
 * {...}} where m = {total = {...}, recent = {...}} */
static int m_stats_get(call_ctx *c) {
    return rec_stats_pack(&c->d->metrics, &c->pk, rec_now());
}

/* ---- table ---------------------------------------------------------------- */

static const method_def methods[NMETHODS] = {
    {"sys.ping", m_ping, REC_M_NOAUTH},
    {"sys.hello", m_hello, REC_M_NOAUTH},
    {"sys.auth", m_auth, REC_M_NOAUTH},
    {"sys.info", m_info, 0},
    {"sys.methods", m_methods, 0},
    {"item.put", m_item_put, REC_M_WRITE | REC_M_CATALOG},
    {"item.get", m_item_get, REC_M_READ_ITEMS},
    {"item.delete", m_item_delete, REC_M_WRITE | REC_M_BARRIER | REC_M_CATALOG},
    {"user.put", m_user_put, REC_M_WRITE | REC_M_CATALOG},
    {"user.get", m_user_get, REC_M_READ_USER},
    {"user.delete", m_user_delete, REC_M_WRITE | REC_M_BARRIER | REC_M_CATALOG},
    {"item.list", m_item_list, REC_M_READ_ITEMS},
    {"user.list", m_user_list, 0},
    {"user.history", m_user_history, REC_M_READ_USER},
    {"event.add", m_event_add, REC_M_WRITE | REC_M_EVENTS},
    {"rec.recommend", m_recommend, REC_M_READ_USER | REC_M_READ_ITEMS},
    {"rec.similar", m_similar, REC_M_READ_ITEMS},
    {"script.list", m_script_list, 0},
    {"script.status", m_script_status, 0},
    {"script.reload", m_script_reload, REC_M_ADMIN},
    {"stats.get", m_stats_get, 0},
    {"model.train", m_model_train, REC_M_ADMIN},
    {"model.schedule", m_model_schedule, REC_M_ADMIN},
    {"admin.eval", m_admin_eval, REC_M_ADMIN},
};

int rec_dispatch_new(rec_dispatch **out, rec_engine *e,
                     const rec_dispatch_opts *o) {
    rec_dispatch *d = calloc(1, sizeof *d);
    if (!d)
        return REC_ENOMEM;
    d->stats = calloc(nmethods, sizeof *d->stats);
    if (!d->stats || (o && o->auth_token && !(d->token = strdup(o->auth_token)))) {
        rec_dispatch_free(d);
        return REC_ENOMEM;
    }
    d->e = e;
    d->fan.e = e;
    rec_engine_set_before_commit(e, rec_fanout_flush_cb, &d->fan);
    for (size_t i = 0; i < nmethods; i++)
        d->method_len[i] = strlen(methods[i].name);
    snprintf(d->version, sizeof d->version, "%s", o && o->version ? o->version : "0");
    d->strict = o && o->strict;
    d->started = rec_wall();
    *out = d;
    return 0;
}

void rec_dispatch_free(rec_dispatch *d) {
    if (!d)
        return;
    if (d->token) {
        memset(d->token, 0, strlen(d->token));
        free(d->token);
    }
    if (d->fan.e) { /* the engine may outlive the dispatcher */
        if (d->rt)
            rec_fanout_flush(&d->fan);
        rec_engine_set_before_commit(d->fan.e, NULL, NULL);
    }
    rec_fanout_free(&d->fan);
    free(d->stats);
    rec_rank_fuse_free(&d->fuse);
    rec_pipeline_state_free(d->pl);
    rec_buf_free(&d->scratch);
    rec_train_free(d->trainer);
    if (d->own_rt)
        rec_script_free(d->rt);
    free(d);
}

int rec_dispatch_find(const rec_dispatch *d, const char *name, size_t len) {
    for (size_t i = 0; i < nmethods; i++)
        if (d->method_len[i] == len && memcmp(methods[i].name, name, len) == 0)
            return (int)i;
    return -1;
}

/* Edit distance of a and b (lengths < 64), stopping above 3. */
static unsigned edits(const char *a, size_t al, const char *b, size_t bl) {
    unsigned row[64];
    if (al >= 64 || bl >= 64)
        return 99;
    for (size_t j = 0; j <= bl; j++)
        row[j] = (unsigned)j;
    for (size_t i = 1; i <= al; i++) {
        unsigned diag = row[0], best = row[0] = (unsigned)i;
        for (size_t j = 1; j <= bl; j++) {
            unsigned up = row[j];
            unsigned v = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < v)
                v = up + 1;
            if (row[j - 1] + 1 < v)
                v = row[j - 1] + 1;
            row[j] = v;
            diag = up;
            if (v < best)
                best = v;
        }
        if (best > 3)
            return 99;
    }
    return row[bl];
}

const char *rec_dispatch_nearest(const char *const *names, size_t n, const char *name,
                                 size_t len) {
    const char *best = NULL;
    unsigned bd = 3; /* at most 2 edits, or the same verb in another namespace */
    for (size_t i = 0; i < n; i++) {
        unsigned e = edits(name, len, names[i], strlen(names[i]));
        if (e < bd) {
            bd = e;
            best = names[i];
        }
    }
    if (best)
        return best;
    const char *dot = memchr(name, '.', len);
    for (size_t i = 0; dot && i < n; i++) {
        const char *md = strchr(names[i], '.');
        size_t vl = len - (size_t)(dot - name);
        if (md && strlen(md) == vl && !memcmp(md, dot, vl))
            return names[i];
    }
    return NULL;
}

const char *rec_dispatch_suggest(const rec_dispatch *d, const char *name, size_t len) {
    static const char *names[NMETHODS];
    (void)d;
    for (size_t i = 0; i < nmethods; i++)
        names[i] = methods[i].name;
    return rec_dispatch_nearest(names, nmethods, name, len);
}

unsigned rec_dispatch_flags(const rec_dispatch *d, int method) {
    (void)d;
    return methods[method].flags;
}

const char *rec_dispatch_name(const rec_dispatch *d, int method) {
    (void)d;
    return methods[method].name;
}

void rec_dispatch_prefetch(rec_dispatch *d, int method,
                           const msgpack_object *params) {
    if (method >= 0 && methods[method].fn == m_event_add &&
        params->type == MSGPACK_OBJECT_ARRAY && params->via.array.size > 0)
        prefetch_event(d->e, &params->via.array.ptr[0]);
}

int rec_dispatch_call(rec_dispatch *d, int method, const msgpack_object *params,
                      rec_session *s, rec_buf *out, char *errmsg,
                      size_t errlen) {
    call_ctx c = {.d = d, .e = d->e, .params = params, .s = s, .out = out,
                  .err = errmsg, .errlen = errlen};
    errmsg[0] = 0;
    rec_rpc_packer(&c.pk, out);
    size_t mark = out->len;
    /* Every call but event.add (whose events move the clock as they come)
     * runs at the engine's clock, event time; rec.recommend may name its
     * own (`now`, a replay's). */
    int timed = methods[method].fn != m_event_add;
    /* Every call but event.add sees what the policies learned from the
     * events before it: the queued ones are handed over first. */
    if (timed)
        rec_fanout_flush(&d->fan);
    double clock = rec_clock_get(); /* a replay's, kept */
    if (timed)
        rec_clock_set(rec_engine_now(d->e));
    int rc = methods[method].fn(&c);
    rec_clock_set(clock);
    /* A commit the method made itself (a delete) failed: learn again what
     * the reloaded state lacks before anything else is served. */
    if (rec_engine_replay_due(d->e))
        (void)rec_dispatch_catch_up(d);
    if (rc == REC_PENDING) {
        out->len = mark;
    } else if (rc) {
        out->len = mark;
        if (!errmsg[0])
            snprintf(errmsg, errlen, "%s", rec_strerror(rc));
    }
    return rc;
}

void rec_dispatch_record(rec_dispatch *d, int method, double us, int failed) {
    method_stats *m = &d->stats[method];
    m->count++;
    m->errors += (uint64_t)(failed != 0);
    int b = us > 0 ? (int)(log2(us + 1.0) * 8.0) : 0;
    if (b >= HIST_BUCKETS)
        b = HIST_BUCKETS - 1;
    m->hist[b]++;
}

int rec_dispatch_replay(rec_dispatch *d, uint64_t *replayed) {
    return rec_fanout_replay(&d->fan, replayed);
}

int rec_dispatch_catch_up(rec_dispatch *d) { return rec_fanout_catch_up(&d->fan); }

void rec_dispatch_notification_failed(rec_dispatch *d) { d->notification_errors++; }

int rec_dispatch_check_events(rec_dispatch *d, const msgpack_object *params, char *errmsg,
                              size_t errlen) {
    call_ctx c = {.d = d, .e = d->e, .params = params, .err = errmsg, .errlen = errlen};
    errmsg[0] = 0;
    int rc = check_events(&c, 0);
    if (rc && !errmsg[0])
        snprintf(errmsg, errlen, "%s", rec_strerror(rc));
    return rc;
}

int rec_dispatch_check_write(rec_dispatch *d, int method, const msgpack_object *params,
                             char *errmsg, size_t errlen) {
    call_ctx c = {.d = d, .e = d->e, .params = params, .err = errmsg, .errlen = errlen};
    errmsg[0] = 0;
    int rc;
    if (!params || params->type != MSGPACK_OBJECT_ARRAY) {
        snprintf(errmsg, errlen, "params must be an array");
        return REC_EINVAL;
    }
    if (methods[method].fn == m_item_put)
        rc = put_check(&c, REC_KIND_ITEM);
    else if (methods[method].fn == m_user_put)
        rc = put_check(&c, REC_KIND_USER);
    else if (methods[method].fn == m_item_delete || methods[method].fn == m_user_delete)
        rc = delete_check(&c);
    else
        rc = fail(&c, REC_EINVAL, "%s is not a catalogue write", methods[method].name);
    if (rc && !errmsg[0])
        snprintf(errmsg, errlen, "%s", rec_strerror(rc));
    return rc;
}

void rec_dispatch_set_info(rec_dispatch *d, const char *name,
                           int (*pack)(void *ud, msgpack_packer *pk), void *ud) {
    d->info_name = name;
    d->info_pack = pack;
    d->info_ud = ud;
}

void rec_dispatch_set_connections(rec_dispatch *d, uint32_t n) { d->connections = n; }

void rec_dispatch_set_records(rec_dispatch *d, uint32_t slot, rec_dispatch_record_fn fn,
                              void *ud) {
    d->rec_slot = slot & ((1u << (REC_ID_MS_SHIFT - REC_ID_SLOT_SHIFT)) - 1);
    d->record_fn = fn;
    d->record_ud = ud;
}

/* A string field of a record into buf (empty when absent); 1 when there. */
static int record_str(const msgpack_object *rec, const char *name, char *buf, size_t cap) {
    const msgpack_object *o = rec_value_field(rec, name);
    buf[0] = 0;
    if (!o || o->type != MSGPACK_OBJECT_STR)
        return 0;
    pack_str_obj(NULL, o, buf, cap);
    return 1;
}

/* Store and count a list another node recorded: rec its record (map),
 * items[0..n) its items as this node's indexes (REC_IDX_NONE unknown), b
 * the record to store. */
static int account_record(rec_dispatch *d, const msgpack_object *rec, uint64_t rid,
                          uint32_t user, const char *key, size_t kl, uint32_t *items, size_t n,
                          const rec_buf *b, char *errmsg, size_t errlen) {
    rec_engine *e = d->e;
    int rc;
    if (!rec_store_read_only(rec_engine_store(e)) &&
        (rc = rec_engine_rec_put(e, rid, user, b->data, b->len))) {
        snprintf(errmsg, errlen, "%s", rec_engine_errmsg(e));
        return rc;
    }
    char pipeline[REC_PIPELINE_NAME_MAX + 16], arm[REC_PIPELINE_NAME_MAX + 1];
    record_str(rec, "pipeline", pipeline, sizeof pipeline);
    int has_arm = record_str(rec, "arm", arm, sizeof arm);
    int strategy_alone = !strncmp(pipeline, "strategy:", 9);
    double now = rec_now();
    const msgpack_object *strats = rec_value_field(rec, "strategies");
    const msgpack_object *byo = rec_value_field(rec, "by");
    if (!strats || strats->type != MSGPACK_OBJECT_ARRAY || !strats->via.array.size ||
        !byo || byo->type != MSGPACK_OBJECT_ARRAY) {
        /* The built-in pipeline's: counted to its pipeline alone. */
        if (pipeline[0] && !strategy_alone)
            rec_stats_add(&d->metrics, "pipeline", pipeline, (double)n, 0, 0, now);
    } else {
        /* Strategy names by place, the unknown items left out of the counts. */
        char names[REC_PIPELINE_MAX_STRATEGIES][REC_PIPELINE_NAME_MAX + 1];
        uint32_t ns = strats->via.array.size < REC_PIPELINE_MAX_STRATEGIES
                          ? strats->via.array.size : REC_PIPELINE_MAX_STRATEGIES;
        for (uint32_t i = 0; i < ns; i++) {
            const msgpack_object *so = &strats->via.array.ptr[i];
            snprintf(names[i], sizeof names[i], "%.*s",
                     so->type == MSGPACK_OBJECT_STR ? (int)so->via.str.size : 1,
                     so->type == MSGPACK_OBJECT_STR ? so->via.str.ptr : "?");
        }
        const char *by[MAX_N];
        size_t known = 0;
        for (size_t i = 0; i < n; i++) {
            if (items[i] == REC_IDX_NONE)
                continue;
            uint64_t si = i < byo->via.array.size &&
                                  byo->via.array.ptr[i].type == MSGPACK_OBJECT_POSITIVE_INTEGER
                              ? byo->via.array.ptr[i].via.u64 : 0;
            by[known] = names[si < ns ? si : 0];
            items[known++] = items[i];
        }
        count_shown(d, key, kl, strategy_alone ? NULL : pipeline, has_arm ? arm : NULL, by,
                    items, known, now);
        rec_click *cm = rec_engine_click(e);
        if (rec_value_field(rec, "f") && rec_click_active(cm))
            (void)rec_click_served(cm, rid, now, (uint32_t)n);
    }
    if (d->nlate)
        late_credit(d, rid);
    return 0;
}

static int apply_one_record(rec_dispatch *d, const msgpack_object *o, char *errmsg,
                            size_t errlen) {
    int map = o->type == MSGPACK_OBJECT_MAP;
    const msgpack_object *rid = map ? rec_value_field(o, "rec_id") : NULL;
    const msgpack_object *rec = map ? rec_value_field(o, "rec") : NULL;
    char key[REC_ID_MAX];
    int kl = map ? peek_key(rec_value_field(o, "id"), key) : -1;
    if (kl <= 0 || !rid || rid->type != MSGPACK_OBJECT_POSITIVE_INTEGER || !rec ||
        rec->type != MSGPACK_OBJECT_MAP) {
        snprintf(errmsg, errlen, "a shown list must be {id, rec_id, rec}");
        return REC_EINVAL;
    }
    /* The record as this node stores its own: item indexes, places kept. */
    idx_list *l = malloc(sizeof *l);
    if (!l) {
        snprintf(errmsg, errlen, "out of memory");
        return REC_ENOMEM;
    }
    l->e = d->e;
    l->n = 0;
    rec_buf *b = &d->scratch;
    rec_buf_clear(b);
    msgpack_packer rp;
    rec_rpc_packer(&rp, b);
    int rc;
    if (pack_record(&rp, rec, item_idx, l)) {
        snprintf(errmsg, errlen, "out of memory");
        rc = REC_ENOMEM;
    } else {
        uint32_t user = rec_engine_lookup(d->e, REC_KIND_USER, key, (size_t)kl);
        rc = account_record(d, rec, rid->via.u64, user, key, (size_t)kl, l->items, l->n, b,
                            errmsg, errlen);
    }
    free(l);
    return rc;
}

int rec_dispatch_apply_record(rec_dispatch *d, const msgpack_object *params, char *errmsg,
                              size_t errlen) {
    if (params->type != MSGPACK_OBJECT_ARRAY || !params->via.array.size) {
        snprintf(errmsg, errlen, "shown lists must be an array of {id, rec_id, rec}");
        return REC_EINVAL;
    }
    /* A bad one is skipped: the others are still recorded. */
    int first = 0;
    for (uint32_t i = 0; i < params->via.array.size; i++) {
        char why[256];
        int rc = apply_one_record(d, &params->via.array.ptr[i], why, sizeof why);
        if (rc && !first) {
            first = rc;
            snprintf(errmsg, errlen, "list %u of %u: %s", i, params->via.array.size, why);
        }
    }
    return first;
}

int rec_dispatch_set_scripts(rec_dispatch *d, rec_script_rt *rt,
                             const char *pipelines_path, int rec_ref) {
    d->rt = rt;
    d->fan.rt = rt;
    d->rec_ref = rec_ref;
    if (!d->pl && !(d->pl = rec_pipeline_state_new()))
        return REC_ENOMEM;
    return rec_pipeline_config_watch(&d->pipelines, d->e, rt, pipelines_path);
}

const rec_pipeline_config *rec_dispatch_pipelines(const rec_dispatch *d) {
    return &d->pipelines.cfg;
}

/* Every script environment gets `rec`: one handle on the engine whose
 * writes wait for the group commit. */
static void install_rec(lua_State *L, void *ud) {
    rec_dispatch *d = ud;
    rec_lua_set_rec(L, d->e, &d->rec_ref);
}

int rec_dispatch_start(rec_dispatch *d, const rec_dispatch_runtime *r) {
    rec_script_opts so;
    rec_script_opts_default(&so);
    so.scripts_dir = r->scripts_dir;
    so.policies_dir = r->policies_dir;
    char err[512] = "";
    rec_script_rt *rt;
    int rc = rec_script_new(&rt, &so, install_rec, d, err, sizeof err);
    if (rc) {
        REC_ERROR("scripts: %s", err);
        return rc;
    }
    d->rt = rt;
    d->own_rt = 1;
    rec_script_info in;
    size_t ok = 0, bad = 0;
    for (size_t i = 0; i < rec_script_count(rt); i++)
        if (!rec_script_info_at(rt, i, &in)) {
            ok += in.loaded != 0;
            bad += in.error != NULL;
        }
    REC_INFO("scripts: %zu loaded, %zu failed (%s, %s)", ok, bad,
             r->scripts_dir ? r->scripts_dir : "-", r->policies_dir ? r->policies_dir : "-");
    char path[1100];
    snprintf(path, sizeof path, "%s/pipelines.lua", r->scripts_dir ? r->scripts_dir : ".");
    if ((rc = rec_dispatch_set_scripts(d, rt, r->scripts_dir ? path : NULL, d->rec_ref)))
        return rc;
    rec_train_opts to = {.every = r->train_every, .share = r->train_share,
                         .quiet = r->train_quiet, .cpu = r->train_cpu, .worker = r->worker,
                         .over = r->trained, .over_ud = r->trained_ud};
    if ((rc = rec_train_new(&d->trainer, d->e, rt, &to)))
        return rc;
    if (rec_script_watch(rt, r->loop))
        REC_WARN("scripts: cannot watch the folders; use script.reload");
    return 0;
}

/* Of a loop turn, what MF steps owed in a space being read may take:
 * they catch up a turn at a time (engine.h). */
#define MF_CATCH_UP_S 0.002

void rec_dispatch_flush(rec_dispatch *d) {
    rec_fanout_flush(&d->fan);
    if (d->trainer) /* the fold-ins the events owe, off this thread */
        rec_train_fold(d->trainer);
    if (rec_engine_mf_catch_up(d->e, MF_CATCH_UP_S) < 0)
        REC_WARN("online MF: %s", rec_engine_errmsg(d->e));
}

void rec_dispatch_tick(rec_dispatch *d) {
    if (d->trainer) {
        rec_train_tick(d->trainer);
        rec_train_fold(d->trainer);
    }
}

void rec_dispatch_stopping(rec_dispatch *d) {
    if (d->trainer)
        rec_train_hold(d->trainer);
}

void rec_dispatch_stop(rec_dispatch *d) {
    if (d->rt)
        rec_script_unwatch(d->rt);
    if (d->trainer)
        rec_train_close(d->trainer);
}
