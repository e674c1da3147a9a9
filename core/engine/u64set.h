/* u64set.h - a set of 64-bit integers, in memory.
 *
 * Open addressing with linear probing, kept at most half full, grown by
 * doubling; the empty slot is 0, and the key 0 is held by a flag beside the
 * table. For keys the process derives itself (dense indexes, pairs of them
 * packed into 64 bits): the slot comes from a fixed bit mixer, not from the
 * keyed hash of hash.h, so never key it directly by what clients send. No
 * iteration: only membership, so nothing depends on the order of slots.
 *
 * The engine's other hash tables keep their own form for what they hold:
 * the id maps (idmap.h: 16-byte slots comparing short keys in place, keyed
 * hash), the store's batch index (store.c: client byte keys that live in
 * the batch's records, keyed hash) and the graph's co-occurrence tables
 * (graph.c: item -> weight, walked in slot order, so a fixed hash keeps
 * their results the same in every process).
 */
#ifndef REC_U64SET_H
#define REC_U64SET_H

#include <stddef.h>
#include <stdint.h>

typedef struct rec_u64set {
    uint64_t *slot; /* owned; NULL until the first add; 0 = empty */
    size_t mask;    /* slots - 1 (slots a power of two) */
    size_t used;    /* nonzero keys held */
    int has_zero;   /* the key 0 is held */
} rec_u64set;

/* An empty set (a zeroed struct is one too). */
void rec_u64set_init(rec_u64set *s);
/* Free the slots; s is empty and usable again. */
void rec_u64set_close(rec_u64set *s);
/* Add k (a no-op when present). 0, or REC_ENOMEM with s unchanged.
 * O(1) expected, O(n) when the table doubles. */
int rec_u64set_add(rec_u64set *s, uint64_t k);
/* Is k in s? */
int rec_u64set_has(const rec_u64set *s, uint64_t k);
/* Keys held. */
size_t rec_u64set_count(const rec_u64set *s);

#endif
