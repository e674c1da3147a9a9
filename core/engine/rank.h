/* rank.h - ranking primitives that strategies, policies and the built-in
 * recommender compose: reciprocal rank fusion of candidate lists and
 * maximal marginal relevance. Pure functions over item indexes, scores
 * and vectors: no Lua, no storage (lua_api.c binds them, db:mmr).
 */
#ifndef REC_RANK_H
#define REC_RANK_H

#include <stddef.h>
#include <stdint.h>

#include "vec.h"

/* Rank fusion: the candidate at 0-based position `rank` of a list with
 * weight w scores w / (REC_RANK_FUSE_K + rank), and an item's fused score
 * is the sum over the lists that propose it, so lists with scores on
 * different scales blend without calibration. */
#define REC_RANK_FUSE_K 10.0f

static inline float rec_rank_fused(float w, float rank) {
    return w / (REC_RANK_FUSE_K + rank);
}

/* A fusion accumulator over item indexes 0..cap-1: zero it with
 * {0}, free with rec_rank_fuse_free. Reused across requests: every score
 * is back at 0 after rec_rank_fuse_top or rec_rank_fuse_clear. */
typedef struct rec_rank_fuse {
    float *score;       /* by item index, 0 when untouched */
    uint32_t *touched;  /* indexes with a score, in order of first touch */
    uint32_t ntouched;
    uint32_t cap;       /* room for indexes below cap */
} rec_rank_fuse;

/* Make room for indexes below bound: 0 or REC_ENOMEM. */
int rec_rank_fuse_reserve(rec_rank_fuse *f, uint32_t bound);
/* Add the list h[0..n) (best first, indexes below the reserved bound) with
 * weight w. */
void rec_rank_fuse_add(rec_rank_fuse *f, const rec_hit *h, size_t n, float w);
/* The n best fused items into out (room for n), best first (ties: lower
 * index first, as rec_topk); returns how many. Empties the accumulator;
 * each touched item's bit is set in skip (may be NULL). */
size_t rec_rank_fuse_top(rec_rank_fuse *f, rec_hit *out, size_t n, uint64_t *skip);
/* Forget every score without ranking. */
void rec_rank_fuse_clear(rec_rank_fuse *f);
/* Free the buffers (the struct itself is the caller's); f is then {0}. */
void rec_rank_fuse_free(rec_rank_fuse *f);

/* A blend: rank fusion of lists from named sources in double precision,
 * remembering for each item the source that gave it the largest single
 * contribution (why) and the order in which items were first proposed
 * (ties rank the earlier first). Open-addressed by item index in memory
 * the caller provides (rec_rank_blend_bytes), so nothing is freed and a
 * Lua error cannot leak it. */
typedef struct rec_rank_blend_item {
    uint32_t idx;
    uint32_t why;   /* the source of the largest contribution */
    uint32_t ord;   /* position of first proposal */
    double score;   /* sum of w / (REC_RANK_FUSE_K + rank) over the lists */
    double best;    /* the largest single contribution */
} rec_rank_blend_item;

typedef struct rec_rank_blend {
    rec_rank_blend_item *item; /* cap, in order of first proposal */
    uint32_t *slot;            /* 2^bits positions in item, UINT32_MAX = empty */
    unsigned bits;
    uint32_t n, cap;
} rec_rank_blend;

/* Bytes of caller memory a blend of up to cap distinct items needs. */
size_t rec_rank_blend_bytes(size_t cap);
/* Set b up over mem (rec_rank_blend_bytes(cap) bytes, aligned for
 * doubles); cap > 0. */
void rec_rank_blend_init(rec_rank_blend *b, void *mem, size_t cap);
/* Add the list h[0..n) (best first) with weight w (> 0) from source src.
 * Items past the capacity are dropped (size it as the sum of the lists). */
void rec_rank_blend_add(rec_rank_blend *b, const rec_hit *h, size_t n, double w, uint32_t src);
/* Multiply item idx's score by f, when the blend holds it. */
void rec_rank_blend_scale(rec_rank_blend *b, uint32_t idx, double f);
/* The n best items (score descending, then first proposed first) into
 * b->item[0..) in that order; returns how many (n, or fewer when the blend
 * holds fewer). O(items + n log n). The blend takes no more adds. */
size_t rec_rank_blend_rank(rec_rank_blend *b, size_t n);

/* Items that maximal marginal relevance orders at most. */
#define REC_RANK_MMR_MAX 256

/* Maximal marginal relevance over m items (m <= REC_RANK_MMR_MAX): greedily
 * the item maximising lambda * relevance - (1 - lambda) * (max cosine to
 * the items already placed), relevance being score[i] scaled to [0, 1]
 * (divided by the highest when no score is negative, else min-max; all
 * equal: 1). rows[i] is item i's vector of dim floats with a nonzero norm,
 * or NULL: unlike everything. Ties go to the lower index. order gets the
 * m indexes in placing order. O(m^2 * dim). */
void rec_rank_mmr(const float *const *rows, const double *score, size_t m, uint32_t dim,
                  double lambda, uint32_t *order);

#endif
