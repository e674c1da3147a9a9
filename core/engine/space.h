/* space.h - named vector spaces: item and user matrices held in RAM.
 *
 * Each space has one dimension (1..4096) and two matrices (items, users) of
 * 64-byte aligned rows with a stride rounded up to 16 floats, so the SIMD
 * scans read whole cache lines. Rows are indexed by the dense item or user
 * index. The space tracks which rows hold a vector, their inverse norms
 * (for cosine) and which rows changed since they were last written: rows
 * set or removed (the engine writes them with the next commit) apart from
 * rows changed by online learning (written at the next checkpoint).
 */
#ifndef REC_SPACE_H
#define REC_SPACE_H

#include <stddef.h>
#include <stdint.h>

#include "prefetch.h"

#include "ivf.h"
#include "vec.h"

#define REC_DIM_MAX 4096
#define REC_SPACE_NAME_MAX 63

typedef enum rec_kind { REC_KIND_ITEM = 0, REC_KIND_USER = 1 } rec_kind;

typedef struct rec_matrix {
    float *rows;        /* cap rows of `stride` floats, page aligned */
    size_t rows_bytes;  /* length of the rows' mapping */
    uint16_t *rows16;   /* bf16 copy of rows for top-k scans, or NULL:
                           made over the first scans of a large matrix
                           (a step of rows at each) on a CPU with
                           AVX512-BF16, then kept in step */
    size_t rows16_bytes;
    float *rows16_meta; /* per row {|row|, |row - bf16 row|} */
    size_t rows16_meta_bytes;
    int rows16_state;   /* 0 none yet, 2 being made (rows below
                           rows16_built copied), 1 kept, -1 refused (a
                           row too large for bf16, or no memory) */
    uint32_t rows16_built;
    float *inv_norms;   /* 1/|row|, 0 for absent or zero rows */
    uint64_t *present;  /* bit r: row r holds a vector */
    uint64_t *dirty;    /* bit r: row r set or removed since the last flush */
    uint32_t *dirty_list; /* rows whose dirty bit is set, in first-touch order */
    uint32_t ndirty;
    uint64_t *learned;  /* bit r: row r changed by learning (touch) since
                           the last checkpoint */
    uint32_t *learned_list;
    uint32_t nlearned;
    uint32_t cap;       /* rows allocated */
    uint32_t nrows;     /* highest present row + 1 (scan length) */
    uint32_t count;     /* rows present */
    rec_ivf *ivf;       /* approximate index for cosine scans, made at
                           the first such scan of ann_min_rows rows or
                           more, then kept in step; or NULL */
} rec_matrix;

typedef struct rec_space {
    char name[REC_SPACE_NAME_MAX + 1];
    uint16_t id;        /* stable id used in store keys */
    uint32_t dim;
    uint32_t stride;    /* dim rounded up to a multiple of 16 */
    rec_matrix m[2];    /* indexed by rec_kind */
    uint32_t ann_min_rows; /* cosine scans of this many rows or more use
                              the approximate index (REC_ANN_MIN_ROWS) */
    uint32_t ann_probe;    /* lists it probes at least (REC_IVF_PROBE) */
    uint32_t copy_step;    /* rows a scan adds to a copy under way: the
                              index's training copy, the bf16 copy
                              (REC_COPY_STEP_ROWS; tests take fewer) */
    uint8_t online;        /* 1 once learning wrote a row in place
                              (rec_space_touch): the rows of an event are
                              worth loading ahead of its learning */
} rec_space;

/* A few milliseconds of a request, however large the matrix. */
#define REC_COPY_STEP_ROWS 65536

/* Matrices with fewer rows are always scanned exactly. */
#define REC_ANN_MIN_ROWS 32768

/* Validate a space name: 1..63 bytes of [A-Za-z0-9_.-]. 0 or REC_EINVAL. */
int rec_space_name_ok(const char *name);

/* REC_EINVAL for a bad name, REC_ERANGE for dim outside 1..4096. */
int rec_space_new(rec_space **out, const char *name, uint16_t id,
                  uint32_t dim);
void rec_space_free(rec_space *s); /* NULL is a no-op */

/* How rec_space_set marks the row. */
enum {
    REC_SET_DIRTY = 0,   /* set by a caller: written with the next commit */
    REC_SET_CLEAN = 1,   /* loaded from the store: nothing to write */
    REC_SET_LEARNED = 2, /* created by learning: written at a checkpoint */
};

/* Copy v (dim floats) into row idx, growing the matrix. Refuses NaN/Inf
 * with REC_ENONFINITE. `mark` is one of REC_SET_*. */
int rec_space_set(rec_space *s, rec_kind k, uint32_t idx, const float *v,
                  int mark);
/* The row of idx (borrowed until the next set/remove/grow), or NULL. */
const float *rec_space_get(const rec_space *s, rec_kind k, uint32_t idx);
/* Writable row for in-place updates; call rec_space_touch after writing. */
float *rec_space_row(rec_space *s, rec_kind k, uint32_t idx);
/* Recompute the row's norm and mark it learned-dirty after an in-place
 * update by online learning. */
void rec_space_touch(rec_space *s, rec_kind k, uint32_t idx);
/* Forget row idx; it is marked dirty so a flush deletes it. */
void rec_space_remove(rec_space *s, rec_kind k, uint32_t idx);

static inline int rec_space_has(const rec_space *s, rec_kind k,
                                uint32_t idx) {
    const rec_matrix *m = &s->m[k];
    return idx < m->nrows && (m->present[idx >> 6] >> (idx & 63) & 1);
}

/* Ask the cache for row idx ahead of an update that will read and write
 * it, so the misses of several rows overlap instead of queueing. */
static inline void rec_space_prefetch(const rec_space *s, rec_kind k,
                                      uint32_t idx) {
    const rec_matrix *m = &s->m[k];
    if (idx >= m->cap)
        return;
    const char *p = (const char *)(m->rows + (size_t)idx * s->stride);
    for (size_t o = 0; o < (size_t)s->stride * sizeof(float); o += 64)
        rec_prefetch(p + o);
}

/* Top-k rows of kind k against q (dim floats) by dot, or cosine when
 * `cosine`. Rows absent, or set in `exclude` (a bitmap over indexes, may be
 * NULL, of exclude_words 64-bit words) are skipped. Returns the number of
 * hits written to out (at most k), or REC_ENOMEM. O(nrows * dim), or
 * through the approximate index for large cosine scans of items (see
 * rec_space_topk_how). */
int rec_space_topk(const rec_space *s, rec_kind k, const float *q,
                   int cosine, const uint64_t *exclude, size_t exclude_words,
                   size_t topk, rec_hit *out);

/* How a top-k scan may answer. */
typedef struct rec_topk_how {
    int exact;      /* 1: the exact scan, whatever the size */
    uint32_t probe; /* lists the index probes at least; 0: ann_probe */
} rec_topk_how;

/* rec_space_topk, told how (how may be NULL: the defaults). A cosine scan
 * of the items of a space holding ann_min_rows items or more goes through
 * the items' approximate index (ivf.h) once it is trained: the hits are
 * exact scores of the rows in the lists probed, and skip the same rows as
 * the exact scan; the first such scan starts the training in the
 * background and scans exactly until it is installed. Dot-product scans
 * are always exact (the index groups rows by direction), and so are scans
 * of users. */
int rec_space_topk_how(const rec_space *s, rec_kind k, const float *q,
                       int cosine, const uint64_t *exclude,
                       size_t exclude_words, size_t topk,
                       const rec_topk_how *how, rec_hit *out);

/* Train the approximate index of kind k now, on this thread, and install
 * it (tests, tools, warm-up); later changes keep it in step as usual.
 * 0, REC_ENOMEM, or REC_EINVAL when the matrix holds no rows. */
int rec_space_ann_build(rec_space *s, rec_kind k);
/* on: every index trains on the thread that needs it, at once, instead
 * of in the background, so that what a scan answers does not depend on
 * how fast a training thread runs (replays that must repeat exactly:
 * recd eval, recd sim). Process-wide; call before threads use spaces. */
void rec_space_ann_sync(int on);
/* The index's state (all zero when there is none). */
void rec_space_ann_stats(const rec_space *s, rec_kind k, rec_ivf_stats *st);

/* Clear the dirty set of kind k after a flush. */
void rec_space_clean(rec_space *s, rec_kind k);
/* Clear the learned-dirty set of kind k after a checkpoint. */
void rec_space_clean_learned(rec_space *s, rec_kind k);

#endif
