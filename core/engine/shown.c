/* shown.c - what each person was shown (shown.h). Open addressing on the
 * keyed hash of the user's key; a person's entries in a small array, the
 * one shown longest ago giving way when it is full. */
#include "shown.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "hash.h"

typedef struct slot {
    uint64_t h;
    char *key;              /* owned; NULL: empty */
    uint32_t klen;
    uint32_t n, cap;        /* entries held, and room (up to REC_SHOWN_PER_USER) */
    rec_shown_entry *e;     /* owned */
} slot;

#define FIRST_ROOM 16

struct rec_shown {
    slot *slots;
    size_t cap, used;
    uint64_t dropped;
};

int rec_shown_new(rec_shown **out) {
    rec_shown *s = calloc(1, sizeof *s);
    if (!s)
        return REC_ENOMEM;
    *out = s;
    return 0;
}

void rec_shown_free(rec_shown *s) {
    if (!s)
        return;
    for (size_t i = 0; i < s->cap; i++) {
        free(s->slots[i].key);
        free(s->slots[i].e);
    }
    free(s->slots);
    free(s);
}

static slot *find(const rec_shown *s, const char *k, size_t kl, uint64_t h) {
    if (!s->cap)
        return NULL;
    for (size_t i = h & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        slot *x = &s->slots[i];
        if (!x->key)
            return NULL;
        if (x->h == h && x->klen == kl && memcmp(x->key, k, kl) == 0)
            return x;
    }
}

static int grow(rec_shown *s) {
    size_t cap = s->cap ? s->cap * 2 : 1024;
    slot *ns = calloc(cap, sizeof *ns);
    if (!ns)
        return REC_ENOMEM;
    for (size_t i = 0; i < s->cap; i++) {
        if (!s->slots[i].key)
            continue;
        size_t j = s->slots[i].h & (cap - 1);
        while (ns[j].key)
            j = (j + 1) & (cap - 1);
        ns[j] = s->slots[i];
    }
    free(s->slots);
    s->slots = ns;
    s->cap = cap;
    return 0;
}

int rec_shown_add(rec_shown *s, const char *ukey, size_t ulen, const uint32_t *items, size_t n,
                  double ts) {
    uint64_t h = rec_hash_keyed(ukey, ulen);
    slot *x = find(s, ukey, ulen, h);
    if (!x) {
        if (s->used >= REC_SHOWN_MAX_USERS) {
            s->dropped++;
            return 0;
        }
        if ((s->used + 1) * 4 > s->cap * 3 && grow(s))
            return REC_ENOMEM;
        char *k = malloc(ulen ? ulen : 1);
        rec_shown_entry *e = malloc(FIRST_ROOM * sizeof *e);
        if (!k || !e) {
            free(k);
            free(e);
            return REC_ENOMEM;
        }
        memcpy(k, ukey, ulen);
        size_t i = h & (s->cap - 1);
        while (s->slots[i].key)
            i = (i + 1) & (s->cap - 1);
        x = &s->slots[i];
        *x = (slot){.h = h, .key = k, .klen = (uint32_t)ulen, .n = 0, .cap = FIRST_ROOM, .e = e};
        s->used++;
    }
    for (size_t i = 0; i < n; i++) {
        float w = (float)(1.0 / log2(2.0 + (double)i));
        uint32_t j = 0;
        while (j < x->n && x->e[j].item != items[i])
            j++;
        if (j < x->n) {
            x->e[j].count++;
            x->e[j].weight += w;
            x->e[j].ts = ts;
            continue;
        }
        if (x->n == x->cap && x->cap < REC_SHOWN_PER_USER) {
            uint32_t nc = x->cap * 2 < REC_SHOWN_PER_USER ? x->cap * 2 : REC_SHOWN_PER_USER;
            rec_shown_entry *ne = realloc(x->e, nc * sizeof *ne);
            if (!ne)
                return REC_ENOMEM;
            x->e = ne;
            x->cap = nc;
        }
        if (x->n == x->cap) { /* the one shown longest ago goes */
            j = 0;
            for (uint32_t q = 1; q < x->n; q++)
                if (x->e[q].ts < x->e[j].ts)
                    j = q;
        } else {
            j = x->n++;
        }
        x->e[j] = (rec_shown_entry){.item = items[i], .count = 1, .weight = w, .ts = ts};
    }
    return 0;
}

void rec_shown_clear(rec_shown *s, const char *ukey, size_t ulen, uint32_t item) {
    if (!s->used) /* no list served yet: nothing to hash for */
        return;
    slot *x = find(s, ukey, ulen, rec_hash_keyed(ukey, ulen));
    if (!x)
        return;
    for (uint32_t j = 0; j < x->n; j++)
        if (x->e[j].item == item) {
            x->e[j] = x->e[--x->n];
            return;
        }
}

void rec_shown_forget(rec_shown *s, const char *ukey, size_t ulen) {
    slot *x = find(s, ukey, ulen, rec_hash_keyed(ukey, ulen));
    if (x)
        x->n = 0; /* the slot stays (open addressing keeps its chain) */
}

const rec_shown_entry *rec_shown_list(const rec_shown *s, const char *ukey, size_t ulen,
                                      uint32_t *n) {
    const slot *x = find(s, ukey, ulen, rec_hash_keyed(ukey, ulen));
    *n = x ? x->n : 0;
    return x && x->n ? x->e : NULL;
}

void rec_shown_counts(const rec_shown *s, size_t *users, uint64_t *dropped) {
    *users = s->used;
    *dropped = s->dropped;
}
