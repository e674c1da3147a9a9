/* counter.h - families of exponentially decayed counters over dense indexes
 * (popularity, trends, impressions). */
#ifndef REC_COUNTER_H
#define REC_COUNTER_H

#include <stddef.h>
#include <stdint.h>

#include "prefetch.h"

#include "vec.h"

/* A family of exponentially decayed counters over dense indexes:
 * value(t) = sum of amounts a_k * 2^(-(t - t_k) / half_life). */
typedef struct rec_counter {
    char name[64];
    uint16_t id;          /* stable id used in store keys */
    double half_life;     /* seconds; 0 means no decay */
    double *val;          /* value as of t_last[i] */
    double *t_last;
    double *key;          /* log2(value) + t_last / half_life: orders items
                             by value at any time t without decaying each
                             (-inf when value <= 0) */
    uint64_t *dirty;      /* rows changed since the last flush */
    uint32_t *dirty_list;
    uint32_t ndirty;
    uint32_t cap;
    uint32_t n;           /* highest touched index + 1 */
    /* The REC_COUNTER_TOP largest keys, by key descending then index: kept
     * up to date as keys rise (an add), rebuilt by the next top-k query
     * after a key in it falls (a negative add, a remove, a load). While
     * valid, it holds every item with a positive value when it is not
     * full, so top-k queries answer from it without a scan. */
    uint32_t *top;
    uint32_t ntop;
    int top_valid;
    uint64_t *in_top;     /* bit per index: in top */
} rec_counter;

#define REC_COUNTER_TOP 256

/* Ask the cache for what rec_counter_add(c, idx, ...) reads. */
static inline void rec_counter_prefetch(const rec_counter *c, uint32_t idx) {
    if (idx < c->cap) {
        rec_prefetch(&c->val[idx]);
        rec_prefetch(&c->t_last[idx]);
        rec_prefetch(&c->key[idx]);
        rec_prefetch(&c->dirty[idx >> 6]);
        rec_prefetch(&c->in_top[idx >> 6]);
    }
}

/* REC_EINVAL for a bad name or negative/non-finite half-life. */
int rec_counter_new(rec_counter **out, const char *name, uint16_t id,
                    double half_life);
void rec_counter_free(rec_counter *c); /* NULL is a no-op */
/* Add amount at time t (seconds). Events older than the last one decay the
 * amount forward instead of moving the clock back. */
int rec_counter_add(rec_counter *c, uint32_t idx, double amount, double t);
/* Set the stored state (loading from the store; not marked dirty). */
int rec_counter_load(rec_counter *c, uint32_t idx, double val, double t);
/* Value of idx as of time t. */
double rec_counter_get(const rec_counter *c, uint32_t idx, double t);
/* Forget idx (marks it dirty so a flush deletes it). */
void rec_counter_remove(rec_counter *c, uint32_t idx);
/* Top-k indexes by value at time t, skipping bits set in skip (may be NULL,
 * of skip_words words) and values <= 0; equal values by index. Answered
 * from the top cache when its first entries hold k unskipped items (O(k +
 * skipped)), else by a scan: O(n log k) comparisons of stored keys, no
 * exponential per item (the cache is rebuilt by that scan when it was
 * invalid). Returns hits written. */
size_t rec_counter_topk(rec_counter *c, double t, const uint64_t *skip,
                        size_t skip_words, size_t k, rec_hit *out);
void rec_counter_clean(rec_counter *c);

#endif
