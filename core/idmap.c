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

#define TOMB UINT32_MAX

static uint64_t hash_key(const char *k, size_t n) {
    /* FNV-1a, then a final mix so the low bits used for the slot are good. */
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 1099511628211ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

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
    free(m->tags);
    memset(m, 0, sizeof *m);
}

static int key_eq(const char *stored, const char *k, size_t n) {
    size_t sl = (size_t)(unsigned char)stored[0] << 8 | (unsigned char)stored[1];
    return sl == n && memcmp(stored + 2, k, n) == 0;
}

uint32_t rec_idmap_find(const rec_idmap *m, const char *key, size_t klen) {
    if (!m->nslots)
        return REC_IDX_NONE;
    size_t mask = m->nslots - 1;
    uint64_t h = hash_key(key, klen);
    uint32_t tag = (uint32_t)(h >> 32);
    /* The tag spares a cache miss on the stored key for most mismatches. */
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        uint32_t s = m->slots[i];
        if (s == 0)
            return REC_IDX_NONE;
        if (s != TOMB && m->tags[i] == tag && key_eq(m->keys[s - 1], key, klen))
            return s - 1;
    }
}

static void place(uint32_t *slots, uint32_t *tags, size_t nslots,
                  const char *stored, uint32_t idx) {
    size_t n = (size_t)(unsigned char)stored[0] << 8 | (unsigned char)stored[1];
    size_t mask = nslots - 1;
    uint64_t h = hash_key(stored + 2, n);
    size_t i = h & mask;
    while (slots[i] != 0)
        i = (i + 1) & mask;
    slots[i] = idx + 1;
    tags[i] = (uint32_t)(h >> 32);
}

static int rehash(rec_idmap *m, size_t want_live) {
    size_t n = 16;
    while (n * 7 / 10 <= want_live)
        n *= 2;
    uint32_t *slots = calloc(n, sizeof *slots);
    uint32_t *tags = malloc(n * sizeof *tags);
    if (!slots || !tags) {
        free(slots);
        free(tags);
        return REC_ENOMEM;
    }
    for (uint32_t i = 0; i < m->next; i++)
        if (m->keys[i])
            place(slots, tags, n, m->keys[i], i);
    free(m->slots);
    free(m->tags);
    m->slots = slots;
    m->tags = tags;
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

int rec_idmap_insert_at(rec_idmap *m, const char *key, size_t klen,
                        uint32_t idx) {
    if (klen == 0 || klen > REC_ID_MAX || idx >= UINT32_MAX - 1)
        return REC_EINVAL;
    if (rec_idmap_find(m, key, klen) != REC_IDX_NONE ||
        (idx < m->next && m->keys[idx]))
        return REC_EEXISTS;
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
    place(m->slots, m->tags, m->nslots, stored, idx);
    m->used++;
    m->live++;
    if (idx >= m->next)
        m->next = idx + 1;
    return 0;
}

int rec_idmap_intern(rec_idmap *m, const char *key, size_t klen,
                     uint32_t *idx, int *created) {
    uint32_t i = rec_idmap_find(m, key, klen);
    if (i != REC_IDX_NONE) {
        *idx = i;
        if (created)
            *created = 0;
        return 0;
    }
    /* Slots hold index + 1 and reserve UINT32_MAX for tombstones, so the
     * last usable index is UINT32_MAX - 2. */
    if (m->next >= UINT32_MAX - 1)
        return REC_ERANGE;
    uint32_t nidx = m->next;
    int rc = rec_idmap_insert_at(m, key, klen, nidx);
    if (rc)
        return rc;
    *idx = nidx;
    if (created)
        *created = 1;
    return 0;
}

void rec_idmap_remove(rec_idmap *m, uint32_t idx) {
    if (!rec_idmap_alive(m, idx))
        return;
    const char *stored = m->keys[idx];
    size_t n = (size_t)(unsigned char)stored[0] << 8 | (unsigned char)stored[1];
    size_t mask = m->nslots - 1;
    for (size_t i = hash_key(stored + 2, n) & mask;; i = (i + 1) & mask) {
        if (m->slots[i] == idx + 1) {
            m->slots[i] = TOMB;
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
    *klen = (size_t)(unsigned char)stored[0] << 8 | (unsigned char)stored[1];
    return stored + 2;
}
