/* train.h - the training schedule: batch models (implicit ALS, EASE)
 * trained off the loop thread and installed back on it.
 *
 * A training snapshots what it needs on the loop thread, runs in a worker
 * thread the host offers (rec_worker), and is installed when the worker is
 * done. model.train starts one with options; rec_train_tick starts one
 * every `every` seconds while the "ials" or "ease" policy is loaded and
 * events came in since the last. One training at a time.
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
    rec_worker worker;
} rec_train_opts;

/* The engine and the script runtime (which policies are loaded; may be
 * NULL) are borrowed and must outlive the schedule. */
int rec_train_new(rec_train **out, rec_engine *e, struct rec_script_rt *rt,
                  const rec_train_opts *o);
/* NULL is a no-op. No training may be out (rec_train_running). */
void rec_train_free(rec_train *t);

/* Start a training now: opts is model.train's map (may be NULL): model
 * ("ials", "ease" or "all"; without it the models whose policies are
 * loaded, or ials alone), space, factors, iters, reg, alpha (ials),
 * lambda, max_items (ease). Returns 0, REC_EBUSY when one is running,
 * REC_EINVAL (or the job's error) for bad options, REC_EIO when the worker
 * cannot be reached; err says why. */
int rec_train_start(rec_train *t, const msgpack_object *opts, char *err, size_t errlen);
/* Called about once a second: starts the scheduled training when due. */
void rec_train_tick(rec_train *t);
/* Pause the schedule (paused != 0: it starts nothing; rec_train_start
 * still does), or resume it. A replay that trains where it chooses pauses
 * it. */
void rec_train_pause(rec_train *t, int paused);
int rec_train_paused(const rec_train *t);
/* Trainings running now (0 or 1). */
int rec_train_running(const rec_train *t);
/* The host is shutting down: a training that finishes from now on is not
 * installed, and none is scheduled. */
void rec_train_close(rec_train *t);

#endif
