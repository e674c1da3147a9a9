/* learn.h - batch models trained off the engine's thread: implicit ALS.
 *
 * A job is a snapshot of the positive interactions (each user's history,
 * weights summed per item) taken on the engine's thread, trained anywhere
 * (rec_ials_job_run touches nothing but the job), and installed back on
 * the engine's thread as item and user rows of a vector space. Requests
 * are never blocked by training: only the snapshot (O(events)) and the
 * install (O((users + items) * factors)) run on the engine's thread.
 * Between trainings, rec_learn_fold_in re-solves one user against the
 * installed item factors, so the model still reacts to every click.
 */
#ifndef REC_LEARN_H
#define REC_LEARN_H

#include <stdint.h>

#include "engine.h"

typedef struct rec_ials_opts {
    char space[64];    /* default "ials" */
    uint32_t factors;  /* default 64 */
    uint32_t iters;    /* default 8 */
    float reg;         /* default 0.1 */
    float alpha;       /* confidence per unit of event weight; default 1 */
    uint64_t seed;     /* default 42 */
} rec_ials_opts;

void rec_ials_opts_default(rec_ials_opts *o);

typedef struct rec_ials_job rec_ials_job;

/* Snapshot the engine's positive interactions. REC_EINVAL for bad options,
 * REC_EDIM when the space exists with another dimension. */
int rec_ials_job_new(rec_engine *e, const rec_ials_opts *o, rec_ials_job **out);
/* Train (any thread). */
int rec_ials_job_run(rec_ials_job *j);
/* Install the trained factors (engine thread): rows of users and items
 * still alive are set in the space (written at the next checkpoint) and
 * the item Gram matrix is kept for fold-ins. */
int rec_ials_job_install(rec_engine *e, rec_ials_job *j);
void rec_ials_job_free(rec_ials_job *j); /* NULL is a no-op */
/* Seconds the training took, interactions it saw. */
double rec_ials_job_seconds(const rec_ials_job *j);
uint64_t rec_ials_job_pairs(const rec_ials_job *j);

/* Re-solve `user` in the installed model of space (from their whole
 * history). REC_ENOTFOUND when no model was installed for the space in
 * this process. O(n_u f^2 + f^3). */
int rec_learn_fold_in(rec_engine *e, const char *space, uint32_t user);

#endif
