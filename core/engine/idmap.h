/* idmap.h - external ids <-> dense u32 indexes, in memory.
 *
 * An external id is a string or an integer; both are encoded as a key: a tag
 * byte ('s' or 'i') followed by the string bytes or the integer as 8 bytes
 * big-endian with the sign bit flipped (so keys of integers sort by value).
 * The string "42" and the integer 42 are different ids.
 *
 * Indexes are handed out densely and never reused: a removed id leaves a
 * hole, so an index named in an old record can never point at somebody new.
 */
#ifndef REC_IDMAP_H
#define REC_IDMAP_H

#include <stddef.h>
#include <stdint.h>

#include "prefetch.h"

#define REC_ID_MAX 256 /* longest encoded id, bytes (tag included) */
#define REC_IDX_NONE UINT32_MAX

/* One slot of the hash table, a quarter of a cache line. Keys of up to
 * REC_ID_INLINE bytes (integers, short strings) are compared in the slot
 * itself, so a lookup usually costs one cache miss; longer keys keep their
 * first bytes here and are confirmed against keys[]. */
#define REC_ID_INLINE 9
typedef struct rec_idslot {
    uint32_t idx1;     /* index + 1; 0 empty, UINT32_MAX tombstone */
    uint16_t tag;      /* high 16 bits of the key's hash */
    uint8_t len;       /* key length, 255 for 255 and longer */
    char inl[REC_ID_INLINE]; /* the key's first bytes, zero padded */
} rec_idslot;

typedef struct rec_idmap {
    rec_idslot *slots; /* open addressing, linear probing */
    size_t nslots;     /* power of two */
    size_t used;       /* live + tombstone slots */
    char **keys;       /* keys[idx]: owned, length-prefixed (2 bytes); NULL when removed */
    uint32_t next;     /* next index to hand out */
    uint32_t cap;      /* capacity of keys */
    uint32_t live;     /* ids present */
} rec_idmap;

/* Encode a string id into out (REC_ID_MAX bytes). Returns the key length, or
 * REC_EINVAL for an empty id or one that is not valid UTF-8, REC_ETOOLARGE
 * when longer than REC_ID_MAX-1. */
int rec_id_str(char *out, const char *s, size_t len);
/* Encode an integer id into out (9 bytes). Returns 9. */
int rec_id_int(char *out, int64_t v);
/* Decode a key: sets *is_int and either *iv or (*s, *len) (borrowed from
 * key). REC_ECORRUPT on a malformed key. */
int rec_id_decode(const char *key, size_t klen, int *is_int, int64_t *iv,
                  const char **s, size_t *len);

void rec_idmap_init(rec_idmap *m);
void rec_idmap_close(rec_idmap *m);

/* Index of key, or REC_IDX_NONE. O(1) expected. */
uint32_t rec_idmap_find(const rec_idmap *m, const char *key, size_t klen);
/* The hash lookups of key use (rec_hash_keyed: it differs from one process
 * to the next); with rec_idmap_prefetch, several lookups can have their
 * cache misses in flight at once. */
uint64_t rec_idmap_hash(const char *key, size_t klen);
static inline void rec_idmap_prefetch(const rec_idmap *m, uint64_t h) {
    if (m->nslots)
        rec_prefetch(&m->slots[h & (m->nslots - 1)]);
}
/* rec_idmap_find and rec_idmap_intern with h = rec_idmap_hash(key, klen)
 * already computed. */
uint32_t rec_idmap_find_hashed(const rec_idmap *m, const char *key,
                               size_t klen, uint64_t h);
int rec_idmap_intern_hashed(rec_idmap *m, const char *key, size_t klen,
                            uint64_t h, uint32_t *idx, int *created);
/* Insert key at a given index (used when loading from the store; idx may
 * leave holes). REC_EEXISTS if key or idx are taken, REC_ENOMEM. */
int rec_idmap_insert_at(rec_idmap *m, const char *key, size_t klen,
                        uint32_t idx);
/* Index of key, adding it with the next free index when absent. *created
 * tells which happened. REC_ERANGE when 2^32-1 indexes have been used. */
int rec_idmap_intern(rec_idmap *m, const char *key, size_t klen,
                     uint32_t *idx, int *created);
/* Remove key of idx (its index is not reused). No-op when absent. */
void rec_idmap_remove(rec_idmap *m, uint32_t idx);
/* Key of idx (borrowed until the id is removed), or NULL. */
const char *rec_idmap_key(const rec_idmap *m, uint32_t idx, size_t *klen);

static inline int rec_idmap_alive(const rec_idmap *m, uint32_t idx) {
    return idx < m->next && m->keys[idx] != NULL;
}

#endif
