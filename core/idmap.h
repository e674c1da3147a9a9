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

#define REC_ID_MAX 256 /* longest encoded id, bytes (tag included) */
#define REC_IDX_NONE UINT32_MAX

typedef struct rec_idmap {
    uint32_t *slots;   /* open addressing: index+1, 0 empty, UINT32_MAX tomb */
    uint32_t *tags;    /* high 32 bits of each slot's key hash */
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
