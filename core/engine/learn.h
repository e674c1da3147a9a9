/* learn.h - batch models trained off the engine's thread: implicit ALS.
 *
 * A job is a snapshot of the positive interactions (each user's history,
 * weights summed per item) taken on the engine's thread, trained anywhere
 * (rec_learn_ials_job_run touches nothing but the job), and installed back on
 * the engine's thread as item and user rows of a vector space. Requests
 * are never blocked by training: only the snapshot (O(events)) and the
 * install (O((users + items) * factors)) run on the engine's thread.
 * Between trainings, rec_learn_fold_in re-solves one user against the
 * installed item factors, so the model still reacts to every click;
 * rec_learn_fold_in_later owes that fold-in instead, paid once per user by
 * whoever reads the row first, a fold job off the engine's thread, or a
 * checkpoint.
 */
#ifndef REC_LEARN_H
#define REC_LEARN_H

#include <stdint.h>

#include "engine.h"
#include "vec.h"

typedef struct rec_learn_ials_opts {
    char space[64];    /* default "ials" */
    uint32_t factors;  /* default 64 */
    uint32_t iters;    /* default 8 */
    float reg;         /* default 30 */
    float alpha;       /* confidence per unit of event weight; default 2 */
    uint64_t seed;     /* default 42 */
    double cpu;        /* the share of one core the training may take, in
                          (0, 1]: it sleeps between slices of work so that
                          its CPU time stays within cpu x the time since it
                          began (and takes about 1/cpu times as long);
                          default 1, unbounded */
} rec_learn_ials_opts;

void rec_learn_ials_opts_default(rec_learn_ials_opts *o);

typedef struct rec_learn_ials_job rec_learn_ials_job;

/* Snapshot the engine's positive interactions (a copy of each, on the
 * engine's thread). REC_EINVAL for bad options, REC_EDIM when the space
 * exists with another dimension. */
int rec_learn_ials_job_new(rec_engine *e, const rec_learn_ials_opts *o, rec_learn_ials_job **out);
/* Build the interactions both ways from the snapshot and train (any
 * thread), within the options' CPU share: the same factors whatever the
 * share. The errors of rec_ials_data_build and rec_ials_train; _pairs
 * counts from here on. */
int rec_learn_ials_job_run(rec_learn_ials_job *j);
/* Install the trained factors (engine thread): rows of users and items
 * still alive are set in the space (written at the next checkpoint) and
 * the item Gram matrix is kept for fold-ins. A user the model being
 * replaced marked after the job's snapshot is owed a fold-in against the
 * new one (the training did not see those events); the other debts are
 * paid by the training itself. */
int rec_learn_ials_job_install(rec_engine *e, rec_learn_ials_job *j);
void rec_learn_ials_job_free(rec_learn_ials_job *j); /* NULL is a no-op */
/* Seconds the training took, interactions it saw. */
double rec_learn_ials_job_seconds(const rec_learn_ials_job *j);
uint64_t rec_learn_ials_job_pairs(const rec_learn_ials_job *j);

/* Re-solve `user` in the installed model of space (from their whole
 * history) now. REC_ENOTFOUND when no model was installed for the space in
 * this process. O(n_u f^2 + f^3). */
int rec_learn_fold_in(rec_engine *e, const char *space, uint32_t user);

/* The same fold-in, owed instead of done: the user's row is marked stale,
 * once however many events mark it. Whoever reads the row settles it
 * first (rec_learn_settle), so a reader sees what an eager fold-in after
 * the last event would have left, whenever it is paid.
 *
 * Fold jobs pay the rest off the engine's thread, but only for a model
 * that something read in the last REC_LEARN_FOLD_READ_WINDOW seconds (a
 * rec_learn_settle naming it): a model nobody reads (the ials space of
 * a pipeline that never scans it) costs a mark per event and no solve.
 * A read after such a quiet spell queues every user then owed. At most
 * REC_LEARN_FOLD_BACKLOG users wait in the queue; past that a user is
 * owed unqueued until the queue has room again or a reader pays. The
 * engine's thread never solves for a writer. A checkpoint stores rows as
 * they are (an owed row is re-solved by the next training, which a
 * restarted server runs at once). REC_ENOTFOUND as rec_learn_fold_in.
 * O(1). */
#define REC_LEARN_FOLD_BACKLOG 8192
#define REC_LEARN_FOLD_READ_WINDOW 60.0
int rec_learn_fold_in_later(rec_engine *e, const char *space, uint32_t user);
/* The same for users[0..n) in order, the model looked up once; stops at
 * the first error. */
int rec_learn_fold_in_later_n(rec_engine *e, const char *space, const uint32_t *users,
                              size_t n);
/* Fold in what is owed in space (NULL: every model) for user
 * (REC_IDX_NONE: every user): before reading a user row, or all rows. A
 * read: it keeps the models it names folded in the background (above),
 * and pays the MF steps owed in the space (rec_engine_mf_settle). The
 * first error, the rest still settled. O(1) when nothing is owed. */
int rec_learn_settle(rec_engine *e, const char *space, uint32_t user);
/* Fold in, in space (NULL: every model), the users owed whose row does
 * not exist yet: what a count of a space's users needs. Not a read.
 * O(users) when something is owed there. */
int rec_learn_settle_new(rec_engine *e, const char *space);
/* Users whose rows are owed a fold-in. */
size_t rec_learn_owed(rec_engine *e);
/* Does a fold job solve owed users now: was some model read in the last
 * REC_LEARN_FOLD_READ_WINDOW seconds? */
int rec_learn_folding(rec_engine *e);
/* Of those, the ones no fold job has taken yet. */
size_t rec_learn_queued(rec_engine *e);

/* A fold job: up to max_users queued users of one model, snapshotted on
 * the engine's thread (their distinct items, confidences and item rows,
 * and the model's Gram matrix), solved on any thread, installed back on
 * the engine's thread where each row is set unless the user was marked
 * again, folded in by a reader, or the model replaced meanwhile (those
 * are queued again). *out: a job to fill again (its memory reused), or
 * NULL for a new one; rec_learn_fold_job_users says how many users it
 * took (0 when none is queued). On REC_ENOMEM it holds those taken. */
typedef struct rec_learn_fold_job rec_learn_fold_job;
int rec_learn_fold_job_new(rec_engine *e, size_t max_users, rec_learn_fold_job **out);
void rec_learn_fold_job_run(rec_learn_fold_job *j);
int rec_learn_fold_job_install(rec_engine *e, rec_learn_fold_job *j);
size_t rec_learn_fold_job_users(const rec_learn_fold_job *j);
void rec_learn_fold_job_free(rec_learn_fold_job *j); /* NULL is a no-op */

/* ---- EASE (ease.h): item-item weights in closed form ------------------- */

typedef struct rec_learn_ease_opts {
    char name[64];      /* the model's name; default "ease" */
    float lambda;       /* L2 regularisation; default 250 */
    uint32_t max_items; /* the most engaged items modelled; default 3000 */
} rec_learn_ease_opts;

void rec_learn_ease_opts_default(rec_learn_ease_opts *o);

typedef struct rec_learn_ease_job rec_learn_ease_job;

/* Snapshot (engine thread, one pass over the histories): every user's
 * distinct positive active items and the users per item. REC_EINVAL for
 * bad options. */
int rec_learn_ease_job_new(rec_engine *e, const rec_learn_ease_opts *o, rec_learn_ease_job **out);
/* Any thread: keep the max_items items with the most users, then fit.
 * _items and _users count from here on. */
int rec_learn_ease_job_run(rec_learn_ease_job *j);
int rec_learn_ease_job_install(rec_engine *e, rec_learn_ease_job *j); /* engine thread */
void rec_learn_ease_job_free(rec_learn_ease_job *j);               /* NULL is a no-op */
double rec_learn_ease_job_seconds(const rec_learn_ease_job *j);
uint32_t rec_learn_ease_job_items(const rec_learn_ease_job *j);
uint32_t rec_learn_ease_job_users(const rec_learn_ease_job *j); /* with a modelled item */

/* The user's top k items under the installed model `name`: item j scores
 * the sum of B_ij over the distinct items i of the user's positive
 * history (read now, so the last click counts). Items with their bit set
 * in skip (words long; may be NULL) are left out, and so are items the
 * model does not cover. Returns the number of hits written, or
 * REC_ENOTFOUND when no model of that name was installed in this process.
 * O(history x modelled items). */
int rec_learn_ease_topk(rec_engine *e, const char *name, uint32_t user,
                        const uint64_t *skip, size_t words, size_t k,
                        rec_hit *out);
/* The same reading only the user's `recent` newest distinct positive
 * items (0: all), the newest weighing 1 and each older one `decay` times
 * the one after it (decay 1: equal weights). */
int rec_learn_ease_topk_recent(rec_engine *e, const char *name, uint32_t user,
                               uint32_t recent, float decay, const uint64_t *skip,
                               size_t words, size_t k, rec_hit *out);

#endif
