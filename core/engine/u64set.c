/* u64set.c - a set of 64-bit integers: open addressing, linear probing. */
#include "u64set.h"

#include <stdlib.h>

#include "err.h"

/* The 64-bit finaliser of MurmurHash3's first half: spreads keys that
 * differ only in high bits (a pair's first half) over the low bits. */
static size_t mix(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (size_t)k;
}

void rec_u64set_init(rec_u64set *s) {
    s->slot = NULL;
    s->mask = 0;
    s->used = 0;
    s->has_zero = 0;
}

void rec_u64set_close(rec_u64set *s) {
    free(s->slot);
    rec_u64set_init(s);
}

/* The slot holding k (nonzero), or the empty slot where it belongs. */
static size_t probe(const uint64_t *slot, size_t mask, uint64_t k) {
    size_t h = mix(k) & mask;
    while (slot[h] && slot[h] != k)
        h = (h + 1) & mask;
    return h;
}

static int grow(rec_u64set *s) {
    size_t n = s->slot ? (s->mask + 1) * 2 : 16;
    uint64_t *ns = calloc(n, sizeof *ns);
    if (!ns)
        return REC_ENOMEM;
    for (size_t j = 0; s->slot && j <= s->mask; j++)
        if (s->slot[j])
            ns[probe(ns, n - 1, s->slot[j])] = s->slot[j];
    free(s->slot);
    s->slot = ns;
    s->mask = n - 1;
    return 0;
}

int rec_u64set_add(rec_u64set *s, uint64_t k) {
    if (k == 0) {
        s->has_zero = 1;
        return 0;
    }
    if (s->slot) {
        size_t h = probe(s->slot, s->mask, k);
        if (s->slot[h])
            return 0;
    }
    if (!s->slot || (s->used + 1) * 2 > s->mask + 1) {
        int rc = grow(s);
        if (rc)
            return rc;
    }
    s->slot[probe(s->slot, s->mask, k)] = k;
    s->used++;
    return 0;
}

int rec_u64set_has(const rec_u64set *s, uint64_t k) {
    if (k == 0)
        return s->has_zero;
    return s->slot && s->slot[probe(s->slot, s->mask, k)] == k;
}

size_t rec_u64set_count(const rec_u64set *s) {
    return s->used + (s->has_zero ? 1 : 0);
}
