/* train.h - the training schedule: batch models (implicit ALS, EASE)
 * trained off the loop thread and installed back on it.
 *
 * A training snapshots what it needs on the loop thread, runs in a worker
 * thread the host offers (rec_worker), and is installed when the worker is
 * done. model.train starts one with options. While the "ials" or "ease"
 * policy is loaded, rec_train_tick starts one on its own when the events
 * that came in since the last training began exceed `share` of those it
 * snapshotted, when `every` seconds passed since it began and events came
 * in, or when a burst of events that a training began in goes quiet for
 * `quiet` seconds with events past that training's snapshot (the end of
 * an import). One training at a time; a caller may wait for one to end
 * (rec_train_start_wait, rec_train_result_get).
 */
#ifndef REC_TRAIN_H
#define REC_TRAIN_H

#include <msgpack.h>
#include <stddef.h>

#include "engine.h"

struct rec_script_rt;

/* Run work(arg) on a worker thread, then done(arg, status) on the loop
 * thread (status < 0: the work did not run). queue returns 0, or a
 * negative REC_E* code when nothing was queued (done is then never
 * called). */
typedef void (*rec_work_fn)(void *arg);
typedef void (*rec_work_done_fn)(void *arg, int status);
typedef struct rec_worker {
    int (*queue)(void *ud, rec_work_fn work, rec_work_done_fn done, void *arg);
    void *ud;
} rec_worker;

typedef struct rec_train rec_train;

typedef struct rec_train_opts {
    double every;       /* seconds between scheduled trainings; 0 never */
    double share;       /* retrain when the events since the last training
                           began exceed this share of its snapshot; 0 never */
    double quiet;       /* seconds without an event that end a burst; 0:
                           no training at the end of a burst */
    double cpu;         /* the share of one core an ials training may take
                           (rec_learn_ials_opts.cpu), (0, 1]; 0: 1 */
    rec_worker worker;
    /* Called on the loop thread after each training is over (installed,
     * failed or dropped), once the training asked to follow it (if any)
     * has started: the host answers those waiting (rec_train_result_get).
     * May be NULL. */
    void (*over)(void *ud);
    void *over_ud;
    double (*clock)(void); /* seconds, for intervals; NULL: CLOCK_MONOTONIC */
} rec_train_opts;

/* The batch models, as sys.info and the answers name them. */
enum { REC_TRAIN_IALS = 1, REC_TRAIN_EASE = 2 };

/* One model's last training and what is planned for it. */
typedef struct rec_train_model {
    uint64_t events;    /* events in the log at the snapshot it was trained
                           on (the last training installed); 0 never */
    double trained_at;  /* wall clock (seconds) when that training ended */
    double seconds;     /* how long that training took */
    uint64_t trainings; /* installed since start */
    int running;        /* in the training running now */
    int pending;        /* a training of it will start without a request
                           (due, or owed once events go quiet, or asked for
                           after the running one) */
} rec_train_model;

/* What one training did: what a waiter is answered. */
typedef struct rec_train_result {
    int rc;             /* 0, or why it failed (err) */
    char err[256];
    unsigned models;    /* REC_TRAIN_IALS | REC_TRAIN_EASE trained */
    uint64_t events;    /* events in the log at its snapshot */
    double seconds;     /* from its start to its end */
} rec_train_result;

/* The engine and the script runtime (which policies are loaded; may be
 * NULL) are borrowed and must outlive the schedule. */
int rec_train_new(rec_train **out, rec_engine *e, struct rec_script_rt *rt,
                  const rec_train_opts *o);
/* NULL is a no-op. No training may be out (rec_train_running). */
void rec_train_free(rec_train *t);

/* Start a training now: opts is model.train's map (may be NULL): model
 * ("ials", "ease" or "all"; without it the models whose policies are
 * loaded, or ials alone), space, factors, iters, reg, alpha (ials),
 * lambda, max_items (ease); other keys are ignored. Returns 0, REC_EBUSY
 * when one is running, REC_EINVAL (or the job's error) for bad options,
 * REC_EIO when the worker cannot be reached; err says why. */
int rec_train_start(rec_train *t, const msgpack_object *opts, char *err, size_t errlen);
/* The same for a caller that waits: when one is running, the training
 * asked for starts as soon as it ends (on the events of then; a second
 * caller meanwhile joins it, and the options of the first are used).
 * *ticket names the training to wait for (rec_train_result). Errors as
 * rec_train_start, but never REC_EBUSY. */
int rec_train_start_wait(rec_train *t, const msgpack_object *opts, uint64_t *ticket,
                         char *err, size_t errlen);
/* The training named by ticket: REC_PENDING while it has not ended, else
 * 0 with *out filled (out->rc says whether it failed; a later training's
 * result when that one's was not kept). */
int rec_train_result_get(const rec_train *t, uint64_t ticket, rec_train_result *out);
/* One model's state (REC_TRAIN_IALS or REC_TRAIN_EASE). */
void rec_train_model_get(const rec_train *t, int model, rec_train_model *out);
/* Called about once a second: watches the event count (bursts and quiet
 * are seen at this resolution) and starts the scheduled training when
 * due. */
void rec_train_tick(rec_train *t);
/* Pause the schedule (paused != 0: it starts nothing; rec_train_start
 * still does), or resume it. A replay that trains where it chooses pauses
 * it. */
void rec_train_pause(rec_train *t, int paused);
int rec_train_paused(const rec_train *t);
/* Start solving the fold-ins owed (rec_learn_fold_in_later) in a worker,
 * unless a fold job is out already; when it is done it is installed and
 * the next one starts while any are owed. Called after events are
 * learned. Without a worker, solves them here. */
void rec_train_fold(rec_train *t);
/* Trainings running now (0 or 1). */
int rec_train_running(const rec_train *t);
/* The host is stopping: nothing new starts (scheduled, asked for, or
 * asked to follow the running one: its waiters get REC_EBUSY); the running
 * training is still installed. */
void rec_train_hold(rec_train *t);
/* The host is shutting down: a training that finishes from now on is not
 * installed, none is scheduled, and one asked to follow the running one
 * does not start (its waiters get REC_EBUSY). */
void rec_train_close(rec_train *t);

#endif
