/* ivf.h - an approximate index for cosine top-k over a large matrix of
 * rows: an inverted file (IVF).
 *
 * A coarse quantiser of about sqrt(rows) centroids, trained by spherical
 * k-means on the rows' directions, splits the rows into lists, one per
 * centroid. A query scores the centroids, probes the lists of the best
 * `probe` of them, and scores every row of those lists exactly: each list
 * keeps a copy of its rows, side by side and kept in step with the live
 * rows, so a hit's score is the exact scan's. Lists are probed further,
 * best centroid first, until the filters (skip bits) leave at least k
 * hits, so a heavily filtered query still gets k answers.
 *
 * Kept up to date online by the owner of the rows: a row set or removed
 * moves to its nearest list (or leaves its list) at once, O(lists * dim);
 * a row changed in place by learning keeps its list (it is scored live;
 * its list may drift) and counts towards retraining. A training copies
 * the rows on the caller's thread, 65,536 rows at each rec_ivf_maintain
 * (a few milliseconds, however large the matrix), then runs on a thread of
 * its own, which also builds the new lists; a later rec_ivf_maintain
 * installs them (pointer swaps, and the rows changed since the copy began
 * placed again) and starts a new training when the rows grew or changed
 * enough since the last one.
 * Until the first training is installed the index is not ready and
 * callers scan exactly.
 *
 * The index is derived from the rows and cheap to train again, so it is
 * never persisted: the first large cosine scan after a start trains it.
 *
 * Not thread-safe: one thread (the rows' owner) calls everything; the
 * training thread touches only its own copy.
 */
#ifndef REC_IVF_H
#define REC_IVF_H

#include <stddef.h>
#include <stdint.h>

#include "vec.h"

/* What the index reads of the rows it indexes (borrowed for the call). */
typedef struct rec_ivf_rows {
    const float *rows;      /* nrows rows of `stride` floats */
    size_t stride;
    uint32_t dim;
    uint32_t nrows;         /* rows below this may be present */
    uint32_t count;         /* rows present */
    const float *inv_norms; /* 1/|row|, 0 for absent or zero rows */
    const uint64_t *present;/* bit r: row r holds a vector */
    uint32_t copy_step;     /* rows copied per maintain while a training's
                               copy is taken (0: 65536) */
} rec_ivf_rows;

typedef struct rec_ivf rec_ivf;

/* Training statistics, for tests and status. */
typedef struct rec_ivf_stats {
    uint32_t lists;      /* centroids of the installed training, 0: none */
    uint32_t indexed;    /* rows in some list */
    uint32_t trained_on; /* rows present when the installed training began */
    uint32_t trainings;  /* trainings installed so far */
    uint32_t probe_need; /* lists its self-check needed (see rec_ivf_topk),
                            0: none would do, scans stay exact */
    uint32_t changed;    /* rows set or removed since that training began */
    uint64_t drift;      /* in-place changes since then */
    int training;        /* a training is running */
    uint32_t copy_left;  /* rows its copy has still to look at (0: copied) */
} rec_ivf_stats;

/* REC_ENOMEM or 0. `seed` makes training reproducible. */
int rec_ivf_new(rec_ivf **out, uint64_t seed);
/* Waits for a running training (it stops at its next iteration). NULL is
 * a no-op. */
void rec_ivf_free(rec_ivf *ix);

/* Row idx was set (new or replaced): into its nearest list. REC_ENOMEM
 * leaves the index not ready until the next training. */
int rec_ivf_row_set(rec_ivf *ix, const rec_ivf_rows *m, uint32_t idx);
/* Row idx changed in place (online learning): it keeps its list, whose
 * copy of it is brought up to date. */
void rec_ivf_row_touch(rec_ivf *ix, const rec_ivf_rows *m, uint32_t idx);
/* Row idx was removed: out of its list. */
void rec_ivf_row_remove(rec_ivf *ix, uint32_t idx);

/* Install a finished training; start one when none is installed or the
 * rows grew (x2), shrank (/2), or were set, removed or changed in place
 * enough (half, and all of the rows present at the last training)
 * since. `wait`: train on this thread and install before returning
 * (tests, tools). 0 or REC_ENOMEM. */
int rec_ivf_maintain(rec_ivf *ix, const rec_ivf_rows *m, int wait);
/* Has a training been installed? */
int rec_ivf_ready(const rec_ivf *ix);
/* Ready, and its self-check found lists worth probing (see
 * rec_ivf_topk): when not, callers should scan exactly. */
int rec_ivf_useful(const rec_ivf *ix);
void rec_ivf_stats_get(const rec_ivf *ix, rec_ivf_stats *st);

/* Approximate cosine top-k of q over the indexed rows (see above): probe
 * at least `probe` lists (0: the default, REC_IVF_PROBE) and at least as
 * many as the training's self-check needed, more until k hits pass the
 * skip bits (exclude, may be NULL) or every list is probed. The
 * self-check: 32 rows ask for their 30 nearest, exactly and through 1, 2,
 * 4, ... lists; the first count with a mean recall of 0.95 is needed;
 * when that is more than an eighth of the lists (or 4 in small indexes;
 * rows without clusters,
 * uniformly random ones say) the index is not useful (rec_ivf_useful) and
 * its owner scans exactly. Writes up to k hits in rank order; returns
 * their count, REC_EBUSY when the index is not ready (the caller scans
 * exactly), or REC_ENOMEM. O(lists * dim + probed rows * dim). */
#define REC_IVF_PROBE 12
#define REC_IVF_DIM_MAX 4096
int rec_ivf_topk(rec_ivf *ix, const rec_ivf_rows *m, const float *q,
                 const uint64_t *exclude, size_t exclude_words,
                 uint32_t probe, size_t k, rec_hit *out);

#endif
