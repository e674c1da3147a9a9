/* dispatch.h - the method table: validate params, call the engine, shape
 * the reply. Knows msgpack objects and the engine; knows nothing of
 * sockets (the server hands it one decoded request at a time).
 */
#ifndef REC_DISPATCH_H
#define REC_DISPATCH_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "engine.h"

/* Method flags. */
enum {
    REC_M_WRITE = 1,   /* answer only after the group commit holding it */
    REC_M_BARRIER = 2, /* run only when no commit is in flight */
    REC_M_NOAUTH = 4,  /* allowed before sys.auth */
    REC_M_ADMIN = 8,   /* the Unix socket, or TCP after sys.auth */
};

/* Per-connection state the methods may read or change. */
typedef struct rec_session {
    int trusted;        /* Unix socket: no auth needed */
    int authed;
    int auth_failures;
    int close_after;    /* set by a method: close once the reply is sent */
    int eval_ref;       /* admin.eval environment (0: none yet) */
} rec_session;

typedef struct rec_dispatch rec_dispatch;

typedef struct rec_dispatch_opts {
    const char *auth_token; /* NULL: no auth; copied */
    const char *version;
} rec_dispatch_opts;

/* The engine is borrowed and must outlive the dispatcher. */
int rec_dispatch_new(rec_dispatch **out, rec_engine *e,
                     const rec_dispatch_opts *o);
void rec_dispatch_free(rec_dispatch *d); /* NULL is a no-op */

/* Index of a method by name, or -1. */
int rec_dispatch_find(const rec_dispatch *d, const char *name, size_t len);
unsigned rec_dispatch_flags(const rec_dispatch *d, int method);
const char *rec_dispatch_name(const rec_dispatch *d, int method);

/* Run method with params; on success the result (one msgpack object) is
 * appended to out and 0 returned; on failure a negative REC_E* code is
 * returned with a message in errmsg and out is left as it was. */
int rec_dispatch_call(rec_dispatch *d, int method, const msgpack_object *params,
                      rec_session *s, rec_buf *out, char *errmsg,
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

/* How model.train starts a training in the background: returns 0, or
 * REC_EBUSY when one is running; opts is the method's params[0] (may be
 * NULL). Set by the server. */
typedef int (*rec_train_fn)(void *ud, const msgpack_object *opts, char *err,
                            size_t errlen);
void rec_dispatch_set_trainer(rec_dispatch *d, rec_train_fn fn, void *ud);

/* A connection ends: forget its admin.eval environment. */
void rec_dispatch_session_end(rec_dispatch *d, rec_session *s);

/* Server figures shown by sys.info: open connections, batch trainings
 * running (sys.info "training"). */
void rec_dispatch_set_connections(rec_dispatch *d, uint32_t n);
void rec_dispatch_set_trainings(rec_dispatch *d, int n);

#endif
