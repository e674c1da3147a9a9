/* dispatch.h - the method table: validate params, call the engine and the
 * services (core/service), shape the reply. Knows msgpack objects, the
 * engine and the services; knows nothing of sockets (the server hands it
 * one decoded request at a time, a worker hook and a tick).
 */
#ifndef REC_DISPATCH_H
#define REC_DISPATCH_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "engine.h"
#include "train.h"

/* Method flags. */
enum {
    REC_M_WRITE = 1,   /* answer only after the group commit holding it */
    REC_M_BARRIER = 2, /* run only when no commit is in flight */
    REC_M_NOAUTH = 4,  /* allowed before sys.auth */
    REC_M_ADMIN = 8,   /* the Unix socket, or TCP after sys.auth */
    REC_M_EVENTS = 16, /* event.add: in a cluster, its events go to the
                          stream (rec_dispatch_check_events) */
    REC_M_CATALOG = 32, /* item.put/delete, user.put/delete: in a cluster,
                           the call goes to the stream
                           (rec_dispatch_check_write) */
    REC_M_READ_USER = 64, /* reads a user (params[0], or params[0].user):
                             in a cluster, after a read barrier on the
                             user's partition */
    REC_M_READ_ITEMS = 128, /* reads the catalogue: in a cluster, after a
                               read barrier on the catalogue's subject */
};

/* Per-connection state the methods may read or change. */
typedef struct rec_session {
    int trusted;        /* Unix socket: no auth needed */
    int authed;
    int auth_failures;
    int close_after;    /* set by a method: close once the reply is sent */
    int eval_ref;       /* admin.eval environment (0: none yet) */
    uint64_t train_ticket; /* the training a call answered later waits for
                              (model.train {wait = true}); 0 none */
} rec_session;

typedef struct rec_dispatch rec_dispatch;

typedef struct rec_dispatch_opts {
    const char *auth_token; /* NULL: no auth; copied */
    const char *version;
    int strict;             /* event.add refuses unknown items and event types
                               unless an event says strict = false */
} rec_dispatch_opts;

/* The engine is borrowed and must outlive the dispatcher. */
int rec_dispatch_new(rec_dispatch **out, rec_engine *e,
                     const rec_dispatch_opts *o);
void rec_dispatch_free(rec_dispatch *d); /* NULL is a no-op */

/* Index of a method by name, or -1. */
int rec_dispatch_find(const rec_dispatch *d, const char *name, size_t len);
/* The method whose name is nearest an unknown one (at most two edits, or
 * the same verb in another namespace), for a "did you mean" hint; NULL
 * when none is near. Static storage. */
const char *rec_dispatch_suggest(const rec_dispatch *d, const char *name, size_t len);
/* The same rule over any list: the name in names[0..n) nearest
 * name[0..len), or NULL (a pointer into names). */
const char *rec_dispatch_nearest(const char *const *names, size_t n, const char *name,
                                 size_t len);
unsigned rec_dispatch_flags(const rec_dispatch *d, int method);
const char *rec_dispatch_name(const rec_dispatch *d, int method);

/* Run method with params; on success the result (one msgpack object) is
 * appended to out and 0 returned; on failure a negative REC_E* code is
 * returned with a message in errmsg and out is left as it was. REC_PENDING:
 * the answer comes later (model.train {wait = true}); the session waits
 * and rec_dispatch_answer gives it. */
int rec_dispatch_call(rec_dispatch *d, int method, const msgpack_object *params,
                      rec_session *s, rec_buf *out, char *errmsg,
                      size_t errlen);
/* The answer of the session's call that returned REC_PENDING, as
 * rec_dispatch_call gives answers: REC_PENDING while it is not ready (ask
 * again after the runtime's `trained` hook). */
int rec_dispatch_answer(rec_dispatch *d, rec_session *s, rec_buf *out, char *errmsg,
                        size_t errlen);

/* A hint that method will run with params soon (a server decoding one
 * message ahead gives it the next while running the current): the
 * dispatcher may ask the cache for what the call reads first. Reads only;
 * any method, any params. */
void rec_dispatch_prefetch(rec_dispatch *d, int method,
                           const msgpack_object *params);

/* Learn again, through the same code as a live event.add (the policies'
 * on_event, or the built-in feedback), the logged events the engine's
 * learned state does not hold: after open, the events past the last
 * checkpoint. */
int rec_dispatch_replay(rec_dispatch *d, uint64_t *replayed);
/* Replay (and log) what rec_engine_replay_due says the learned state is
 * missing: after a failed commit reloaded it from its checkpoint, before
 * any new event is learned. event.add calls it itself. */
int rec_dispatch_catch_up(rec_dispatch *d);

/* Count one finished call and its latency (microseconds). */
void rec_dispatch_record(rec_dispatch *d, int method, double us, int failed);
void rec_dispatch_notification_failed(rec_dispatch *d);

/* Strategies and policies (borrowed, may be NULL) with the pipelines file
 * in the scripts folder and the registry ref of the scripts' `rec`
 * handle. Loaded policies with on_event replace the built-in feedback. */
struct rec_script_rt;
int rec_dispatch_set_scripts(rec_dispatch *d, struct rec_script_rt *rt,
                             const char *pipelines_path, int rec_ref);

/* The pipelines config in force (pipeline.h), borrowed until the next
 * request or tick (a reload may replace it). */
struct rec_pipeline_config;
const struct rec_pipeline_config *rec_dispatch_pipelines(const rec_dispatch *d);

/* What a server runs the methods with: the script runtime, loaded from
 * the two folders (either may be NULL: the runtime exists without them,
 * for admin.eval, and rec.recommend falls back to the built-in
 * recommender), pipelines.lua in the scripts folder, the folders watched
 * on loop, and the training schedule (model.train, and while the "ials"
 * or "ease" policy is loaded: when the events grow by train_share, every
 * train_every seconds, and at the end of a burst; train.h) running its
 * trainings on the host's worker threads. */
struct uv_loop_s;
typedef struct rec_dispatch_runtime {
    const char *scripts_dir;  /* strategies and pipelines.lua, or NULL */
    const char *policies_dir; /* or NULL */
    double train_every;       /* seconds; 0 never */
    double train_share;       /* of the events trained on; 0 never */
    double train_quiet;       /* seconds without an event that end a
                                 burst; 0: no training at its end */
    double train_cpu;         /* the share of one core an ials training may
                                 take, (0, 1]; 0: 1 */
    rec_worker worker;        /* runs trainings off the loop thread */
    void (*trained)(void *ud); /* a training is over: answers that waited
                                  for it may be ready (rec_dispatch_answer);
                                  on the loop thread; may be NULL */
    void *trained_ud;
    struct uv_loop_s *loop;   /* borrowed: the folder watches live on it */
} rec_dispatch_runtime;

/* Start the runtime (owned by the dispatcher from then on): 0, or a
 * negative REC_E* code, logged. Once per dispatcher, instead of
 * rec_dispatch_set_scripts. */
int rec_dispatch_start(rec_dispatch *d, const rec_dispatch_runtime *r);
/* Hand the events queued for the policies over (fanout.h) and queue the
 * fold-ins they owe for a worker: on the loop thread after each round of
 * requests, before the group commit stages them. */
void rec_dispatch_flush(rec_dispatch *d);
/* About once a second on the loop thread, while the server runs (not once
 * it is stopping): starts the scheduled training when due. */
void rec_dispatch_tick(rec_dispatch *d);
/* The server is stopping (it finishes what is in flight): no training
 * starts from now on. */
void rec_dispatch_stopping(rec_dispatch *d);
/* The server is shutting down: stop watching the folders (their handles
 * close on the loop, which must run before rec_dispatch_free), and do not
 * install a training that finishes from now on. */
void rec_dispatch_stop(rec_dispatch *d);

/* A connection ends: forget its admin.eval environment. */
void rec_dispatch_session_end(rec_dispatch *d, rec_session *s);

/* The checks event.add makes before it applies anything, alone: 0, or a
 * negative REC_E* code with errmsg. For a server that sends the events on
 * (to a cluster's stream) rather than applying them here. */
int rec_dispatch_check_events(rec_dispatch *d, const msgpack_object *params, char *errmsg,
                              size_t errlen);

/* The checks a catalogue write (REC_M_CATALOG) makes before it applies
 * anything, alone: 0, or a negative REC_E* code with errmsg. For a server
 * that sends the call on to a cluster's stream. */
int rec_dispatch_check_write(rec_dispatch *d, int method, const msgpack_object *params,
                             char *errmsg, size_t errlen);

/* One more section of sys.info: `name` (borrowed, static) holding what
 * pack(ud, pk) packs, one object. NULL pack: none. */
void rec_dispatch_set_info(rec_dispatch *d, const char *name,
                           int (*pack)(void *ud, msgpack_packer *pk), void *ud);

/* Lists shown across a cluster (docs/cluster.md): every list recorded
 * here is also handed to fn(ud, params), params being what
 * rec_dispatch_apply_record takes on the other nodes (one map in an
 * array: {id = the user's id, rec_id, rec = the record with item ids}), for
 * the stream. rec_ids then hold the node's slot (0..1023, unique among the
 * cluster's nodes) so that no two nodes hand out the same. A list without
 * a user (rec.similar) stays where it was served. */
typedef int (*rec_dispatch_record_fn)(void *ud, const msgpack_object *params);
void rec_dispatch_set_records(rec_dispatch *d, uint32_t slot, rec_dispatch_record_fn fn,
                              void *ud);

/* Lists another node recorded (params: an array of what the record hook
 * was handed there, {id, rec_id, rec} each): each stored under its rec_id
 * with this node's indexes, and counted as
 * shown (stats.get, the impressions counter, what the person was shown,
 * the click model's wait for outcomes) as it was where it was served, so
 * that feedback naming it is attributed on every node. Item ids unknown
 * here keep their places and match no event. 0, or a negative REC_E* code
 * with errmsg. */
int rec_dispatch_apply_record(rec_dispatch *d, const msgpack_object *params, char *errmsg,
                              size_t errlen);

/* Server figures shown by sys.info: open connections. */
void rec_dispatch_set_connections(rec_dispatch *d, uint32_t n);

#endif
