/* harness.h - what the measuring tools (recd eval, recd sim) run requests
 * against: either an engine on a temporary database with the scripts, the
 * policies and the dispatcher the server uses, or a running server over
 * the protocol (the C client). Either way a request is a method name and
 * its params, exactly as a client sends them, so what is measured
 * in-process is what the server would answer.
 *
 *   rec_harness h;
 *   rec_harness_opts o = {.prog = "recd sim", .scripts = ..., .seed = 42};
 *   if (rec_harness_open(&h, &o)) ... h.err ...
 *   rec_harness_call(&h, "event.add", params_object);   (h.answer: its result)
 *   rec_harness_close(&h);
 *
 * One harness belongs to one thread (the engine's clock, rec_clock_set, is
 * per thread).
 */
#ifndef REC_HARNESS_H
#define REC_HARNESS_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "client.h"
#include "dispatch.h"
#include "engine.h"
#include "script.h"

typedef struct rec_harness_opts {
    const char *prog;     /* "recd sim": names the tool in messages */
    const char *scripts;  /* strategies and pipelines.lua, or NULL; borrowed */
    const char *policies; /* or NULL; borrowed */
    const char *connect;  /* a running server's address instead, or NULL */
    uint64_t seed;        /* the engine's generator and the scripts' math.random */
    /* In-process, once the engine is open and before the scripts load
     * (a catalogue to put first), or NULL: 0, or a negative REC_E* with a
     * message in err that fails the open. */
    int (*prepare)(rec_engine *e, void *ud, char *err, size_t errlen);
    void *prepare_ud;
} rec_harness_opts;

typedef struct rec_harness {
    const char *prog;
    char dir[256];        /* the temporary database ("" when none) */
    rec_engine *e;        /* in-process: the engine, runtime and dispatcher */
    rec_script_rt *rt;
    rec_dispatch *d;
    int rec_ref;
    rec_session sess;
    rec_buf out;
    uint64_t ops;         /* calls since open: a commit every 4,096 */
    rec_client *cl;       /* --connect: the server answers instead */
    rec_client_reply rep;
    msgpack_sbuffer sb;
    msgpack_unpacked up;  /* the params of a packed call, in-process */
    int train_refused;    /* the server refused model.train (said once) */
    int paused;           /* this run paused the server's training schedule */
    int has_ials, has_ease; /* in-process: the policies that want training */
    const void *answer;   /* the last call's result (msgpack), borrowed until
                             the next call */
    size_t answer_len;
    char err[512];        /* why the last call or the open failed */
} rec_harness;

/* Open an engine on a fresh temporary database (in $TMPDIR or /tmp) with
 * the scripts and policies, or connect to o->connect. 0, or a negative
 * REC_E* with h->err set; rec_harness_close is needed either way. */
int rec_harness_open(rec_harness *h, const rec_harness_opts *o);
/* Free everything and remove the temporary database. */
void rec_harness_close(rec_harness *h);

/* Call method with params (a msgpack array, as on the wire). 0 with the
 * result in h->answer, or a negative REC_E* with "method: name: message"
 * in h->err. In-process, what the calls wrote is committed every 4,096
 * calls (a scratch database needs no more). */
int rec_harness_call(rec_harness *h, const char *method, const msgpack_object *params);
/* The same with params as packed msgpack bytes. */
int rec_harness_call_packed(rec_harness *h, const char *method, const void *params,
                            size_t len);

/* Train the batch models (iALS, EASE) the loaded policies ask for, where
 * the server's worker would: in-process in place, blocking; over the
 * protocol model.train, waiting until the training is installed. */
void rec_harness_train(rec_harness *h);

/* Commit what in-process calls wrote (a no-op over the protocol). */
int rec_harness_commit(rec_harness *h);

/* msgpack objects for params built by hand: a string (borrowed) and an
 * encoded id (idmap.h) as a client would send it. */
msgpack_object rec_harness_str(const char *s, size_t n);
msgpack_object rec_harness_id(const char *key, size_t kl);

#endif
