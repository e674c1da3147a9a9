/* idslots.h - a table of records numbered in order (ids 1, 2, ...), each
 * found in O(1) at slot id mod the capacity.
 *
 * A record's first member is its uint64_t id; 0 marks a free slot. Since
 * ids are handed out in order, two live records share a slot only when the
 * table spans fewer ids than the oldest live one is behind: the table then
 * doubles. Not thread-safe: the owner's lock covers it.
 */
#ifndef REC_IDSLOTS_H
#define REC_IDSLOTS_H

#include <stddef.h>
#include <stdint.h>

typedef struct rec_idslots {
    unsigned char *slots; /* cap records of size bytes */
    size_t cap;           /* a power of two, or 0 before the first take */
    size_t size;          /* bytes per record, the id first */
    size_t first;         /* capacity of the first allocation */
} rec_idslots;

void rec_idslots_init(rec_idslots *t, size_t size, size_t first);
void rec_idslots_free(rec_idslots *t); /* the records go with it */

/* The record of id, or NULL when its slot is free or holds another id. */
void *rec_idslots_find(const rec_idslots *t, uint64_t id);

/* A zeroed record with its id set, at id's slot; the table doubles while
 * that slot holds a live record. NULL when out of memory (the table as it
 * was). Pointers to records are valid until the next take. */
void *rec_idslots_take(rec_idslots *t, uint64_t id);

/* Slot i (< cap) for a scan, free or not: its id is 0 when free. */
void *rec_idslots_at(const rec_idslots *t, size_t i);
uint64_t rec_idslots_id(const void *record);

#endif
