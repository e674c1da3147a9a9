/* idmap.c - open-addressing hash from id keys to dense indexes.
 *
 * Slots hold index+1 so that 0 means empty; removals leave a tombstone so
 * probe chains stay intact, and the table is rebuilt when live entries plus
 * tombstones pass 70% of the slots.
 */
#include "idmap.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "hash.h"

#define TOMB UINT32_MAX

/* Ids come from clients: the keyed hash (hash.h), whose low bits pick the
 * slot and whose top 16 bits are the slot's tag. */
uint64_t rec_idmap_hash(const char *k, size_t n) { return rec_hash_keyed(k, n); }

/* Well-formed UTF-8 (no overlongs, no surrogates, at most U+10FFFF)? */
static int utf8_ok(const unsigned char *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
        if (!len || c > 0xf4 || i + len > n)
            return 0;
        for (size_t k = 1; k < len; k++)
            if ((p[i + k] & 0xc0) != 0x80)
                return 0;
        if ((c == 0xe0 && p[i + 1] < 0xa0) || (c == 0xed && p[i + 1] >= 0xa0) ||
            (c == 0xf0 && p[i + 1] < 0x90) || (c == 0xf4 && p[i + 1] >= 0x90))
            return 0;
        i += len;
    }
    return 1;
}

int rec_id_str(char *out, const char *s, size_t len) {
    if (len == 0 || !utf8_ok((const unsigned char *)s, len))
        return REC_EINVAL;
    if (len > REC_ID_MAX - 1)
        return REC_ETOOLARGE;
    out[0] = 's';
    memcpy(out + 1, s, len);
    return (int)len + 1;
}

int rec_id_int(char *out, int64_t v) {
    uint64_t u = (uint64_t)v ^ (1ull << 63);
    out[0] = 'i';
    for (int i = 0; i < 8; i++)
        out[1 + i] = (char)(u >> (56 - 8 * i));
    return 9;
}

int rec_id_decode(const char *key, size_t klen, int *is_int, int64_t *iv,
                  const char **s, size_t *len) {
    if (klen >= 2 && key[0] == 's') {
        *is_int = 0;
        *s = key + 1;
        *len = klen - 1;
        return 0;
    }
    if (klen == 9 && key[0] == 'i') {
        uint64_t u = 0;
        for (int i = 0; i < 8; i++)
            u = u << 8 | (unsigned char)key[1 + i];
        *is_int = 1;
        *iv = (int64_t)(u ^ (1ull << 63));
        return 0;
    }
    return REC_ECORRUPT;
}

void rec_idmap_init(rec_idmap *m) { memset(m, 0, sizeof *m); }

void rec_idmap_close(rec_idmap *m) {
    for (uint32_t i = 0; i < m->next; i++)
        free(m->keys[i]);
    free(m->keys);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static size_t stored_len(const char *stored) {
    return (size_t)(unsigned char)stored[0] << 8 | (unsigned char)stored[1];
}

static uint16_t slot_tag(uint64_t h) { return (uint16_t)(h >> 48); }
static uint8_t slot_len(size_t n) { return n < 255 ? (uint8_t)n : 255; }

/* Does slot sl (live) hold key? */
static int slot_eq(const rec_idmap *m, const rec_idslot *sl, const char *k,
                   size_t n, uint16_t tag) {
    if (sl->tag != tag || sl->len != slot_len(n))
        return 0;
    if (n <= REC_ID_INLINE)
        return memcmp(sl->inl, k, n) == 0;
    if (memcmp(sl->inl, k, REC_ID_INLINE) != 0)
        return 0;
    const char *stored = m->keys[sl->idx1 - 1];
    return stored_len(stored) == n && memcmp(stored + 2, k, n) == 0;
}

uint32_t rec_idmap_find_hashed(const rec_idmap *m, const char *key,
                               size_t klen, uint64_t h) {
    if (!m->nslots)
        return REC_IDX_NONE;
    size_t mask = m->nslots - 1;
    uint16_t tag = slot_tag(h);
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        const rec_idslot *sl = &m->slots[i];
        if (sl->idx1 == 0)
            return REC_IDX_NONE;
        if (sl->idx1 != TOMB && slot_eq(m, sl, key, klen, tag))
            return sl->idx1 - 1;
    }
}

uint32_t rec_idmap_find(const rec_idmap *m, const char *key, size_t klen) {
    return rec_idmap_find_hashed(m, key, klen, rec_idmap_hash(key, klen));
}

static void place(rec_idslot *slots, size_t nslots, const char *key,
                  size_t n, uint64_t h, uint32_t idx) {
    size_t mask = nslots - 1;
    size_t i = h & mask;
    while (slots[i].idx1 != 0)
        i = (i + 1) & mask;
    rec_idslot *sl = &slots[i];
    memset(sl, 0, sizeof *sl);
    sl->idx1 = idx + 1;
    sl->tag = slot_tag(h);
    sl->len = slot_len(n);
    memcpy(sl->inl, key, n < REC_ID_INLINE ? n : REC_ID_INLINE);
}

static int rehash(rec_idmap *m, size_t want_live) {
    size_t n = 16;
    while (n * 7 / 10 <= want_live)
        n *= 2;
    rec_idslot *slots = calloc(n, sizeof *slots);
    if (!slots)
        return REC_ENOMEM;
    for (uint32_t i = 0; i < m->next; i++) {
        const char *k = m->keys[i];
        if (k)
            place(slots, n, k + 2, stored_len(k),
                  rec_idmap_hash(k + 2, stored_len(k)), i);
    }
    free(m->slots);
    m->slots = slots;
    m->nslots = n;
    m->used = m->live;
    return 0;
}

static int grow_keys(rec_idmap *m, uint32_t need) {
    if (need <= m->cap)
        return 0;
    uint32_t cap = m->cap ? m->cap : 64;
    while (cap < need)
        cap = cap > UINT32_MAX / 2 ? UINT32_MAX : cap * 2;
    char **k = realloc(m->keys, (size_t)cap * sizeof *k);
    if (!k)
        return REC_ENOMEM;
    memset(k + m->cap, 0, (size_t)(cap - m->cap) * sizeof *k);
    m->keys = k;
    m->cap = cap;
    return 0;
}

static int insert_hashed(rec_idmap *m, const char *key, size_t klen,
                         uint64_t h, uint32_t idx) {
    int rc = grow_keys(m, idx + 1);
    if (rc)
        return rc;
    if ((m->used + 1) * 10 >= m->nslots * 7 && (rc = rehash(m, m->live + 1)))
        return rc;
    char *stored = malloc(klen + 2);
    if (!stored)
        return REC_ENOMEM;
    stored[0] = (char)(klen >> 8);
    stored[1] = (char)klen;
    memcpy(stored + 2, key, klen);
    m->keys[idx] = stored;
    place(m->slots, m->nslots, key, klen, h, idx);
    m->used++;
    m->live++;
    if (idx >= m->next)
        m->next = idx + 1;
    return 0;
}

int rec_idmap_insert_at(rec_idmap *m, const char *key, size_t klen,
                        uint32_t idx) {
    if (klen == 0 || klen > REC_ID_MAX || idx >= UINT32_MAX - 1)
        return REC_EINVAL;
    uint64_t h = rec_idmap_hash(key, klen);
    if (rec_idmap_find_hashed(m, key, klen, h) != REC_IDX_NONE ||
        (idx < m->next && m->keys[idx]))
        return REC_EEXISTS;
    return insert_hashed(m, key, klen, h, idx);
}

int rec_idmap_intern_hashed(rec_idmap *m, const char *key, size_t klen,
                            uint64_t h, uint32_t *idx, int *created) {
    uint32_t i = rec_idmap_find_hashed(m, key, klen, h);
    if (i != REC_IDX_NONE) {
        *idx = i;
        if (created)
            *created = 0;
        return 0;
    }
    if (klen == 0 || klen > REC_ID_MAX)
        return REC_EINVAL;
    /* Slots hold index + 1 and reserve UINT32_MAX for tombstones, so the
     * last usable index is UINT32_MAX - 2. */
    if (m->next >= UINT32_MAX - 1)
        return REC_ERANGE;
    uint32_t nidx = m->next;
    int rc = insert_hashed(m, key, klen, h, nidx);
    if (rc)
        return rc;
    *idx = nidx;
    if (created)
        *created = 1;
    return 0;
}

int rec_idmap_intern(rec_idmap *m, const char *key, size_t klen,
                     uint32_t *idx, int *created) {
    return rec_idmap_intern_hashed(m, key, klen, rec_idmap_hash(key, klen),
                                   idx, created);
}

void rec_idmap_remove(rec_idmap *m, uint32_t idx) {
    if (!rec_idmap_alive(m, idx))
        return;
    const char *stored = m->keys[idx];
    size_t mask = m->nslots - 1;
    for (size_t i = rec_idmap_hash(stored + 2, stored_len(stored)) & mask;;
         i = (i + 1) & mask) {
        if (m->slots[i].idx1 == idx + 1) {
            m->slots[i].idx1 = TOMB;
            break;
        }
    }
    free(m->keys[idx]);
    m->keys[idx] = NULL;
    m->live--;
}

const char *rec_idmap_key(const rec_idmap *m, uint32_t idx, size_t *klen) {
    if (!rec_idmap_alive(m, idx))
        return NULL;
    const char *stored = m->keys[idx];
    *klen = stored_len(stored);
    return stored + 2;
}
