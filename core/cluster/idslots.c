/* idslots.c - a table of records numbered in order; see idslots.h. */
#include "idslots.h"

#include <stdlib.h>
#include <string.h>

void rec_idslots_init(rec_idslots *t, size_t size, size_t first) {
    memset(t, 0, sizeof *t);
    t->size = size;
    t->first = first;
}

void rec_idslots_free(rec_idslots *t) {
    free(t->slots);
    t->slots = NULL;
    t->cap = 0;
}

uint64_t rec_idslots_id(const void *record) {
    uint64_t id;
    memcpy(&id, record, sizeof id);
    return id;
}

void *rec_idslots_at(const rec_idslots *t, size_t i) { return t->slots + i * t->size; }

void *rec_idslots_find(const rec_idslots *t, uint64_t id) {
    if (!id || !t->cap)
        return NULL;
    void *r = rec_idslots_at(t, id & (t->cap - 1));
    return rec_idslots_id(r) == id ? r : NULL;
}

static int grow(rec_idslots *t) {
    size_t cap = t->cap ? t->cap * 2 : t->first;
    unsigned char *ns = calloc(cap, t->size);
    if (!ns)
        return -1;
    for (size_t i = 0; i < t->cap; i++) {
        const unsigned char *r = t->slots + i * t->size;
        uint64_t id = rec_idslots_id(r);
        if (id)
            memcpy(ns + (id & (cap - 1)) * t->size, r, t->size);
    }
    free(t->slots);
    t->slots = ns;
    t->cap = cap;
    return 0;
}

void *rec_idslots_take(rec_idslots *t, uint64_t id) {
    while (!t->cap || rec_idslots_id(rec_idslots_at(t, id & (t->cap - 1))))
        if (grow(t))
            return NULL;
    void *r = rec_idslots_at(t, id & (t->cap - 1));
    memset(r, 0, t->size);
    memcpy(r, &id, sizeof id);
    return r;
}
