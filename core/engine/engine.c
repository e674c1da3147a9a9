/* engine.c - the engine: in-memory state over the LMDB store.
 *
 * Key layouts (all integers big-endian so keys sort numerically):
 *   meta      "space/<name>"   -> id u16, dim u32
 *             "counter/<name>" -> id u16, half-life f64
 *             "type/<name>"    -> id u16, weight f32
 *   *_ids     encoded id       -> index u32
 *   *_keys    index u32        -> encoded id
 *   items     index u32        -> flags u8 (bit 0: inactive), msgpack props
 *   users     index u32        -> flags u8, msgpack props
 *   vectors   space u16, kind u8, index u32 -> float32[dim], host order
 *   events    sequence u64     -> ts f64, user u32, item u32, type u16,
 *                                  flags u8, [weight f32], [value f64],
 *                                  [rec_id: len u8, bytes], [context
 *                                  msgpack] (host order; weight: the type's
 *                                  weight in force, absent in older rows)
 *   counters  family u16, index u32 -> value f64, t f64 (host order)
 *   meta      "checkpoint"     -> sequence u64, generator state (32 bytes)
 *   kv        key              -> msgpack value
 *   recs      rec_id u64       -> user u32, msgpack record
 *
 * The log is keyed by arrival sequence rather than by the event's own
 * timestamp: clients send late events with past timestamps, and a key that
 * only grows lets every event be appended (MDB_APPEND) while replay order is
 * exactly arrival order. The timestamp lives in the record.
 *
 * The log is the write-ahead record. An event costs one appended row; each
 * user's history, the co-occurrence graph and the audiences are rebuilt
 * from the log on open. State learned from events (vectors changed by
 * rec_space_touch, counters) is written at checkpoints only, every
 * checkpoint_interval seconds, with the sequence of the last event it
 * includes; after a crash, rec_engine_replay hands the events past that
 * checkpoint back to whoever learns from them. Policy kv written in
 * learning mode (rec_engine_learning) is learned state too. After a failed
 * commit the state is reloaded from the store, which puts it back at the
 * checkpoint: the events logged since are replayed again before any new
 * event is learned (learned_seq tracks what memory holds, and only that is
 * ever written as checkpointed). Rows set by callers (imported vectors,
 * properties) are written with every commit.
 */
#include "engine.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "input.h"
#include "learn.h"
#include "shown.h"
#include "click.h"

typedef struct type_info {
    char name[REC_TYPE_NAME_MAX + 1];
    float weight;
} type_info;

/* Policy kv written in learning mode since the last checkpoint: open
 * addressing on the key's hash, no removal (a deleted key keeps its slot
 * with val NULL until the checkpoint empties the table). */
typedef struct kv_slot {
    uint64_t h;
    char *key; /* owned; NULL: empty slot */
    size_t klen;
    char *val; /* owned msgpack; NULL: deleted */
    size_t vlen;
} kv_slot;

typedef struct kv_overlay {
    kv_slot *slots;
    size_t cap, used;
} kv_overlay;

/* An MF space learned from batches of logged events (engine.h): the
 * events up to `paid` are stepped, those after it up to `owed_to` owed. */
typedef struct mf_step {
    uint64_t seq;
    uint32_t user, item;
    float w;            /* the step's weight (rec_mf_plan_weight) */
} mf_step;

typedef struct mf_owed {
    char space[REC_SPACE_NAME_MAX + 1];
    rec_mf_plan plan;   /* the latest batch's: owed steps are made so */
    uint32_t dim;
    uint64_t paid, owed_to;
    double read_at;     /* mono_now() of the last read; 0 none since open */
    /* The newest owed steps, oldest first (a ring of cap): every step of
     * an event from ring_from on is there; older ones are read back from
     * the log (where an event not committed yet waits for its commit). */
    mf_step *ring;
    uint32_t cap, head, n;
    uint64_t ring_from;
} mf_owed;

#define MF_RING_MAX 65536

struct rec_engine {
    rec_store *store;
    rec_engine_opts opts;
    rec_batch *batch;          /* pending writes */
    rec_batch *inflight;       /* staged, being committed elsewhere */
    rec_batch *spare;          /* a cleared batch to reuse */
    uint64_t rollbacks;        /* failed commits that rebuilt the state */
    rec_idmap ids[2];          /* by rec_kind */
    uint64_t *inactive;        /* items: bit set = inactive or deleted */
    size_t inactive_words;
    rec_space *spaces[REC_MAX_SPACES];
    size_t nspaces;
    rec_counter *counters[REC_MAX_COUNTERS];
    size_t ncounters;
    type_info types[REC_MAX_TYPES];
    size_t ntypes;
    rec_graph graph;
    rec_rng rng;
    uint64_t next_seq;         /* next event sequence */
    uint64_t nevents;          /* events in the log */
    uint64_t checkpoint_seq;   /* last event the stored learned state holds */
    uint64_t learned_seq;      /* last event the in-memory learned state
                                  holds (all before it too) */
    kv_overlay learned_kv;     /* learned policy kv, written at checkpoints */
    int learning;              /* kv writes go to learned_kv */
    rec_rng serve_rng;         /* draws of requests (walks) */
    double last_checkpoint;    /* rec_wall() of the last checkpoint */
    void (*before_commit)(void *); /* rec_engine_set_before_commit */
    void *before_ud;
    /* The event-time clock: the wall clock shifted by clock_off, the
     * distance between the newest event's time and the wall clock when it
     * arrived (see rec_engine_now). */
    double clock_off;
    int clock_set;             /* an event has set it */
    int clock_stored;          /* the folder holds a stored clock */
    double newest_ts;          /* the newest event time seen */
    rec_shown *shown;          /* what each person was shown (request state) */
    rec_click *click;          /* the click model of the served lists (learned) */
    rec_buf scratch;
    mf_owed mfo[REC_MF_OWED_MAX]; /* MF spaces learned from batches */
    size_t nmfo;
    void *attached;            /* state of core/learn, freed with the engine */
    void (*attached_free)(void *);
    char errmsg[256];
};

static const struct {
    const char *name;
    float weight;
} default_types[] = {
    {"view", 1.0f},  {"click", 2.0f}, {"add_to_cart", 4.0f},
    {"purchase", 8.0f}, {"skip", -1.0f}, {"dislike", -4.0f},
};

static const rec_dbi ids_db[2] = {REC_DB_ITEM_IDS, REC_DB_USER_IDS};
static const rec_dbi keys_db[2] = {REC_DB_ITEM_KEYS, REC_DB_USER_KEYS};
static const rec_dbi props_db[2] = {REC_DB_ITEMS, REC_DB_USERS};

static _Thread_local double clock_override;

void rec_clock_set(double t) { clock_override = t > 0 ? t : 0; }

double rec_clock_get(void) { return clock_override; }

double rec_now(void) {
    if (clock_override > 0)
        return clock_override;
    return rec_wall();
}

double rec_wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the event-time clock ---------------------------------------------- */

/* The engine's clock when the wall clock reads w. */
static double now_at(const rec_engine *e, double w) {
    if (clock_override > 0)
        return clock_override;
    return e->clock_set ? w + e->clock_off : w;
}

double rec_engine_now(const rec_engine *e) { return now_at(e, rec_wall()); }

/* An event of time ts arrived at wall time w: the clock moves forward to
 * it, never more than REC_CLOCK_AHEAD past the wall clock. An older event
 * (late, out of order) leaves it where it is. */
static void clock_advance(rec_engine *e, double ts, double w) {
    if (ts > e->newest_ts)
        e->newest_ts = ts;
    if (!e->clock_set || ts > w + e->clock_off) {
        double off = ts - w;
        e->clock_off = off < REC_CLOCK_AHEAD ? off : REC_CLOCK_AHEAD;
        e->clock_set = 1;
    }
}

void rec_engine_clock(const rec_engine *e, rec_clock_info *out) {
    out->wall = rec_wall();
    out->now = e->clock_set ? out->wall + e->clock_off : out->wall;
    out->offset = e->clock_set ? e->clock_off : 0.0;
    out->newest = e->newest_ts;
    out->set = e->clock_set;
}

static int fail(rec_engine *e, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(rec_engine *e, int rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->errmsg, sizeof e->errmsg, fmt, ap);
    va_end(ap);
    return rc;
}

const char *rec_engine_errmsg(const rec_engine *e) { return e->errmsg; }

uint64_t rec_engine_rollbacks(const rec_engine *e) { return e->rollbacks; }

void rec_engine_opts_default(rec_engine_opts *o) {
    memset(o, 0, sizeof *o);
    rec_store_opts_default(&o->store);
    o->seed = 42;
    o->cooc_window = 5;
    o->checkpoint_interval = 0.0;
    rec_mf_opts_default(&o->mf);
}

/* ---- in-memory state ------------------------------------------------- */

static void kv_overlay_clear(kv_overlay *o) {
    for (size_t i = 0; i < o->cap; i++) {
        free(o->slots[i].key);
        free(o->slots[i].val);
    }
    free(o->slots);
    memset(o, 0, sizeof *o);
}

/* The slot holding key, or the empty one it would take. */
static kv_slot *kv_overlay_slot(const kv_overlay *o, const char *k, size_t kl,
                                uint64_t h) {
    size_t mask = o->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        kv_slot *s = &o->slots[i];
        if (!s->key || (s->h == h && s->klen == kl && memcmp(s->key, k, kl) == 0))
            return s;
    }
}

static const kv_slot *kv_overlay_find(const kv_overlay *o, const char *k,
                                      size_t kl) {
    if (!o->used)
        return NULL;
    const kv_slot *s = kv_overlay_slot(o, k, kl, rec_idmap_hash(k, kl));
    return s->key ? s : NULL;
}

/* Set key to v (vl bytes), or mark it deleted when v is NULL. */
static int kv_overlay_set(kv_overlay *o, const char *k, size_t kl,
                          const void *v, size_t vl) {
    if ((o->used + 1) * 2 > o->cap) {
        size_t n = o->cap ? o->cap * 2 : 64;
        kv_slot *ns = calloc(n, sizeof *ns);
        if (!ns)
            return REC_ENOMEM;
        kv_overlay old = *o;
        o->slots = ns;
        o->cap = n;
        for (size_t i = 0; i < old.cap; i++)
            if (old.slots[i].key)
                *kv_overlay_slot(o, old.slots[i].key, old.slots[i].klen,
                                 old.slots[i].h) = old.slots[i];
        free(old.slots);
    }
    uint64_t h = rec_idmap_hash(k, kl);
    kv_slot *s = kv_overlay_slot(o, k, kl, h);
    char *nv = NULL;
    if (v && !(nv = malloc(vl ? vl : 1)))
        return REC_ENOMEM;
    if (v)
        memcpy(nv, v, vl);
    if (!s->key) {
        if (!(s->key = malloc(kl))) {
            free(nv);
            return REC_ENOMEM;
        }
        memcpy(s->key, k, kl);
        s->klen = kl;
        s->h = h;
        o->used++;
    }
    free(s->val);
    s->val = nv;
    s->vlen = v ? vl : 0;
    return 0;
}

static int cmp_kv_slot(const void *a, const void *b) {
    const kv_slot *x = *(const kv_slot *const *)a, *y = *(const kv_slot *const *)b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, n);
    return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

static void state_free(rec_engine *e) {
    rec_click_free(e->click);
    e->click = NULL;
    for (int k = 0; k < 2; k++)
        rec_idmap_close(&e->ids[k]);
    free(e->inactive);
    e->inactive = NULL;
    e->inactive_words = 0;
    for (size_t i = 0; i < e->nspaces; i++)
        rec_space_free(e->spaces[i]);
    e->nspaces = 0;
    for (size_t i = 0; i < e->ncounters; i++)
        rec_counter_free(e->counters[i]);
    e->ncounters = 0;
    e->ntypes = 0;
    rec_graph_close(&e->graph);
    kv_overlay_clear(&e->learned_kv);
    for (size_t i = 0; i < e->nmfo; i++)
        free(e->mfo[i].ring);
    e->nmfo = 0;
}

static int set_inactive(rec_engine *e, uint32_t idx, int inactive) {
    size_t w = (size_t)idx / 64 + 1;
    if (w > e->inactive_words) {
        size_t n = e->inactive_words ? e->inactive_words : 16;
        while (n < w)
            n *= 2;
        uint64_t *p = realloc(e->inactive, n * sizeof *p);
        if (!p)
            return REC_ENOMEM;
        memset(p + e->inactive_words, 0, (n - e->inactive_words) * sizeof *p);
        e->inactive = p;
        e->inactive_words = n;
    }
    if (inactive)
        e->inactive[idx >> 6] |= 1ull << (idx & 63);
    else
        e->inactive[idx >> 6] &= ~(1ull << (idx & 63));
    return 0;
}

static uint16_t get_be16(const unsigned char *p) {
    return (uint16_t)(p[0] << 8 | p[1]);
}
static void be16(unsigned char *p, uint16_t v) {
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

typedef struct load_ctx {
    rec_engine *e;
    int kind;
} load_ctx;

static int load_ids(void *ud, rec_val k, rec_val v) {
    load_ctx *c = ud;
    if (k.len != 4 || v.len == 0 || v.len > REC_ID_MAX)
        return REC_ECORRUPT;
    return rec_idmap_insert_at(&c->e->ids[c->kind], v.data, v.len,
                               rec_get_be32(k.data));
}

static int load_items(void *ud, rec_val k, rec_val v) {
    rec_engine *e = ud;
    if (k.len != 4 || v.len < 1)
        return REC_ECORRUPT;
    if (*(const unsigned char *)v.data & 1)
        return set_inactive(e, rec_get_be32(k.data), 1);
    return 0;
}

/* ---- what MF owes, as stored: "mfowed/<space>" -> version 1, paid,
 * owed_to, dim, lr, reg, negatives, init_scale, max_norm, log_weight,
 * max_weight, typed, the types' bits (little-endian words) */
#define MFO_PREFIX "mfowed/"
#define MFO_PREFIX_LEN 7
#define MFO_BYTES (1 + 8 + 8 + 4 + 5 * 4 + 1 + 4 + 1 + (REC_MAX_TYPES / 8))

static size_t mfo_pack(const mf_owed *m, unsigned char *b) {
    const rec_mf_plan *p = &m->plan;
    size_t o = 0;
    b[o++] = 1;
    memcpy(b + o, &m->paid, 8), o += 8;
    memcpy(b + o, &m->owed_to, 8), o += 8;
    memcpy(b + o, &m->dim, 4), o += 4;
    const float f[4] = {p->mf.lr, p->mf.reg, p->mf.init_scale, p->mf.max_norm};
    memcpy(b + o, &f[0], 4), o += 4;
    memcpy(b + o, &f[1], 4), o += 4;
    memcpy(b + o, &p->mf.negatives, 4), o += 4;
    memcpy(b + o, &f[2], 4), o += 4;
    memcpy(b + o, &f[3], 4), o += 4;
    b[o++] = (unsigned char)(p->log_weight != 0);
    memcpy(b + o, &p->max_weight, 4), o += 4;
    b[o++] = (unsigned char)(p->typed != 0);
    memcpy(b + o, p->types, REC_MAX_TYPES / 8), o += REC_MAX_TYPES / 8;
    return o;
}

static int mfo_load(rec_engine *e, const char *name, size_t nl, const unsigned char *b,
                    size_t n) {
    if (nl > REC_SPACE_NAME_MAX || n != MFO_BYTES || b[0] != 1)
        return REC_ECORRUPT;
    if (e->nmfo == REC_MF_OWED_MAX)
        return 0; /* written by a build that kept more: stepped at once from here */
    mf_owed *m = &e->mfo[e->nmfo];
    memset(m, 0, sizeof *m);
    memcpy(m->space, name, nl);
    rec_mf_plan *p = &m->plan;
    size_t o = 1;
    memcpy(&m->paid, b + o, 8), o += 8;
    memcpy(&m->owed_to, b + o, 8), o += 8;
    memcpy(&m->dim, b + o, 4), o += 4;
    memcpy(&p->mf.lr, b + o, 4), o += 4;
    memcpy(&p->mf.reg, b + o, 4), o += 4;
    memcpy(&p->mf.negatives, b + o, 4), o += 4;
    memcpy(&p->mf.init_scale, b + o, 4), o += 4;
    memcpy(&p->mf.max_norm, b + o, 4), o += 4;
    p->log_weight = b[o++];
    memcpy(&p->max_weight, b + o, 4), o += 4;
    p->typed = b[o++];
    memcpy(p->types, b + o, REC_MAX_TYPES / 8);
    if (m->paid > m->owed_to || m->dim < 1 || m->dim > REC_DIM_MAX)
        return REC_ECORRUPT;
    m->ring_from = m->owed_to + 1; /* the rest is in the log */
    e->nmfo++;
    return 0;
}

static int load_meta(void *ud, rec_val k, rec_val v) {
    rec_engine *e = ud;
    const char *key = k.data;
    const unsigned char *val = v.data;
    char name[REC_TYPE_NAME_MAX + 1];
    size_t plen;
    if (k.len > 6 && memcmp(key, "space/", 6) == 0) {
        plen = 6;
    } else if (k.len > 8 && memcmp(key, "counter/", 8) == 0) {
        plen = 8;
    } else if (k.len > 5 && memcmp(key, "type/", 5) == 0) {
        plen = 5;
    } else if (k.len == 5 && memcmp(key, "clock", 5) == 0) {
        if (v.len != 9)
            return REC_ECORRUPT;
        e->clock_set = val[0] != 0;
        memcpy(&e->clock_off, val + 1, 8);
        e->clock_stored = 1;
        return 0;
    } else if (k.len > MFO_PREFIX_LEN && memcmp(key, MFO_PREFIX, MFO_PREFIX_LEN) == 0) {
        return mfo_load(e, key + MFO_PREFIX_LEN, k.len - MFO_PREFIX_LEN, val, v.len);
    } else if (k.len == 10 && memcmp(key, "checkpoint", 10) == 0) {
        if (v.len != 8 + sizeof e->rng.s)
            return REC_ECORRUPT;
        e->checkpoint_seq = rec_get_be64(val);
        memcpy(e->rng.s, val + 8, sizeof e->rng.s);
        return 0;
    } else {
        return 0;
    }
    if (k.len - plen > REC_TYPE_NAME_MAX)
        return REC_ECORRUPT;
    memcpy(name, key + plen, k.len - plen);
    name[k.len - plen] = 0;
    if (plen == 6) {
        if (v.len != 6 || e->nspaces == REC_MAX_SPACES)
            return REC_ECORRUPT;
        rec_space *s;
        int rc = rec_space_new(&s, name, get_be16(val), rec_get_be32(val + 2));
        if (rc)
            return REC_ECORRUPT;
        e->spaces[e->nspaces++] = s;
    } else if (plen == 8) {
        double hl;
        if (v.len != 10 || e->ncounters == REC_MAX_COUNTERS)
            return REC_ECORRUPT;
        memcpy(&hl, val + 2, sizeof hl);
        rec_counter *c;
        if (rec_counter_new(&c, name, get_be16(val), hl))
            return REC_ECORRUPT;
        e->counters[e->ncounters++] = c;
    } else {
        uint16_t id;
        float w;
        if (v.len != 6)
            return REC_ECORRUPT;
        id = get_be16(val);
        if (id >= REC_MAX_TYPES)
            return REC_ECORRUPT;
        memcpy(&w, val + 2, sizeof w);
        strcpy(e->types[id].name, name);
        e->types[id].weight = w;
        if (id >= e->ntypes)
            e->ntypes = (size_t)id + 1;
    }
    return 0;
}

static rec_space *space_by_id(const rec_engine *e, uint16_t id) {
    for (size_t i = 0; i < e->nspaces; i++)
        if (e->spaces[i]->id == id)
            return e->spaces[i];
    return NULL;
}

static rec_counter *counter_by_id(const rec_engine *e, uint16_t id) {
    for (size_t i = 0; i < e->ncounters; i++)
        if (e->counters[i]->id == id)
            return e->counters[i];
    return NULL;
}

static int load_vectors(void *ud, rec_val k, rec_val v) {
    rec_engine *e = ud;
    const unsigned char *p = k.data;
    if (k.len != 7 || p[2] > 1)
        return REC_ECORRUPT;
    rec_space *s = space_by_id(e, get_be16(p));
    if (!s || v.len != (size_t)s->dim * sizeof(float))
        return REC_ECORRUPT;
    uint32_t idx = rec_get_be32(p + 3);
    if (!rec_idmap_alive(&e->ids[p[2]], idx))
        return 0; /* orphan row of a deleted id: ignore */
    const float *row = v.data;
    float tmp[REC_DIM_MAX];
    if ((uintptr_t)row % sizeof(float)) {
        memcpy(tmp, v.data, v.len);
        row = tmp;
    }
    int rc = rec_space_set(s, (rec_kind)p[2], idx, row, REC_SET_CLEAN);
    /* A non-finite row (written by an older version whose learning
     * diverged) is dropped: learning recreates it. */
    return rc == REC_ENONFINITE ? 0 : rc;
}

static int load_counters(void *ud, rec_val k, rec_val v) {
    rec_engine *e = ud;
    const unsigned char *p = k.data;
    if (k.len != 6 || v.len != 16)
        return REC_ECORRUPT;
    rec_counter *c = counter_by_id(e, get_be16(p));
    if (!c)
        return REC_ECORRUPT;
    double val, t;
    memcpy(&val, v.data, 8);
    memcpy(&t, (const char *)v.data + 8, 8);
    return rec_counter_load(c, rec_get_be32(p + 2), val, t);
}

/* Fixed head of an event record. */
#define EV_HEAD 19
#define EV_HAS_VALUE 1
#define EV_HAS_REC 2
#define EV_HAS_CONTEXT 4
#define EV_HAS_WEIGHT 8

typedef struct ev_head {
    double ts;
    uint32_t user, item;
    uint16_t type;
    uint8_t flags;
} ev_head;

static int ev_decode(const void *p, size_t n, ev_head *h) {
    if (n < EV_HEAD)
        return REC_ECORRUPT;
    const char *c = p;
    memcpy(&h->ts, c, 8);
    memcpy(&h->user, c + 8, 4);
    memcpy(&h->item, c + 12, 4);
    memcpy(&h->type, c + 16, 2);
    h->flags = (uint8_t)c[18];
    return 0;
}

/* A whole event record; views into the record's bytes. */
typedef struct ev_rec {
    ev_head h;
    int has_weight;
    float weight;
    int has_value;
    double value;
    const char *rec_id;
    size_t rlen;
    const void *context;
    size_t clen;
} ev_rec;

static int ev_parse(const void *p, size_t n, ev_rec *r) {
    memset(r, 0, sizeof *r);
    if (ev_decode(p, n, &r->h))
        return REC_ECORRUPT;
    const char *c = p;
    size_t off = EV_HEAD;
    if (r->h.flags & EV_HAS_WEIGHT) {
        if (n - off < 4)
            return REC_ECORRUPT;
        memcpy(&r->weight, c + off, 4);
        r->has_weight = 1;
        off += 4;
    }
    if (r->h.flags & EV_HAS_VALUE) {
        if (n - off < 8)
            return REC_ECORRUPT;
        memcpy(&r->value, c + off, 8);
        r->has_value = 1;
        off += 8;
    }
    if (r->h.flags & EV_HAS_REC) {
        if (n - off < 1 || n - off - 1 < (unsigned char)c[off])
            return REC_ECORRUPT;
        r->rlen = (unsigned char)c[off];
        r->rec_id = c + off + 1;
        off += 1 + r->rlen;
    }
    if (r->h.flags & EV_HAS_CONTEXT) {
        r->context = c + off;
        r->clen = n - off;
    } else if (off != n) {
        return REC_ECORRUPT;
    }
    return 0;
}

/* The weight an event was learned with: the one logged with it, or for
 * rows of older versions, which did not log it, the type's weight now. */
static float ev_weight(const rec_engine *e, const ev_rec *r) {
    if (r->has_weight)
        return r->weight;
    return r->h.type < e->ntypes ? e->types[r->h.type].weight : 0.0f;
}

/* Rebuild histories and the graph from the log, in arrival order. */
static int load_event(void *ud, rec_val k, rec_val v) {
    rec_engine *e = ud;
    ev_rec r;
    if (k.len != 8 || ev_parse(v.data, v.len, &r))
        return REC_ECORRUPT;
    uint64_t seq = rec_get_be64(k.data);
    e->next_seq = seq + 1;
    /* Events past the stored clock (after its checkpoint) move it as they
     * did when they arrived; a folder written before the clock was stored
     * starts on the wall clock. */
    if (e->clock_stored)
        clock_advance(e, r.h.ts, e->last_checkpoint);
    else if (r.h.ts > e->newest_ts)
        e->newest_ts = r.h.ts;
    if (!rec_idmap_alive(&e->ids[REC_KIND_USER], r.h.user) ||
        !rec_idmap_alive(&e->ids[REC_KIND_ITEM], r.h.item))
        return 0; /* the item was deleted since */
    return rec_graph_add(&e->graph, r.h.user, r.h.item, r.h.ts, ev_weight(e, &r),
                         r.h.type, seq);
}

static int intern_type(rec_engine *e, const char *t, size_t n, uint16_t *id,
                       int create);
static void rollback(rec_engine *e, int rc);
static int commit_now(rec_engine *e, int force_checkpoint);

/* Rebuild every in-memory structure from the store. O(stored data). */
static int state_load(rec_engine *e) {
    rec_graph_init(&e->graph, e->opts.cooc_window);
    rec_rng_seed(&e->rng, e->opts.seed);
    e->nmfo = 0;
    for (int k = 0; k < 2; k++)
        rec_idmap_init(&e->ids[k]);
    e->next_seq = 1;
    e->checkpoint_seq = 0;
    e->clock_set = e->clock_stored = 0;
    e->clock_off = e->newest_ts = 0.0;
    e->last_checkpoint = rec_wall(); /* the load's wall clock, for clock_advance */
    rec_rtxn *t;
    int rc = rec_store_read_begin(e->store, &t);
    if (rc)
        return fail(e, rc, "%s", rec_store_errmsg(e->store));
    load_ctx ci = {e, REC_KIND_ITEM}, cu = {e, REC_KIND_USER};
    size_t nev = 0;
    static const struct {
        rec_dbi db;
        rec_scan_cb cb;
    } steps[] = {
        {REC_DB_META, load_meta},         {REC_DB_ITEM_KEYS, load_ids},
        {REC_DB_USER_KEYS, load_ids},     {REC_DB_ITEMS, load_items},
        {REC_DB_VECTORS, load_vectors},   {REC_DB_COUNTERS, load_counters},
        {REC_DB_EVENTS, load_event},
    };
    size_t step = 0;
    for (; step < sizeof steps / sizeof *steps && !rc; step++) {
        void *ud = steps[step].db == REC_DB_ITEM_KEYS ? (void *)&ci
                 : steps[step].db == REC_DB_USER_KEYS ? (void *)&cu : (void *)e;
        rc = rec_rtxn_scan(t, steps[step].db, NULL, 0, 0, steps[step].cb, ud);
    }
    if (!rc)
        rc = rec_rtxn_count(t, REC_DB_EVENTS, &nev);
    rec_store_read_end(t);
    if (rc)
        return fail(e, rc, "loading the data folder failed in database '%s': %s",
                    rec_store_db_name(steps[step ? step - 1 : 0].db), rec_strerror(rc));
    if ((rc = rec_click_new(&e->click)) || (rc = rec_click_load(e->click, e->store)))
        return fail(e, rc, "loading the click model failed: %s", rec_strerror(rc));
    e->nevents = nev;
    e->last_checkpoint = rec_wall();
    /* A forgotten user's rows may have ended the log before the
     * checkpoint: new events never reuse a sequence it claims. */
    if (e->next_seq <= e->checkpoint_seq)
        e->next_seq = e->checkpoint_seq + 1;
    /* Memory holds what the checkpoint holds; the rest waits for replay. */
    e->learned_seq = e->checkpoint_seq;
    /* Deleted items leave holes in the index range: hide them. */
    for (uint32_t i = 0; i < e->ids[REC_KIND_ITEM].next; i++)
        if (!rec_idmap_alive(&e->ids[REC_KIND_ITEM], i) && (rc = set_inactive(e, i, 1)))
            return fail(e, rc, "out of memory");
    /* Default event types exist from the start so their weights apply. */
    if (!rec_store_read_only(e->store)) {
        for (size_t i = 0; i < sizeof default_types / sizeof *default_types; i++) {
            uint16_t id;
            const char *n = default_types[i].name;
            if ((rc = intern_type(e, n, strlen(n), &id, 1)))
                return rc;
        }
        if (rec_batch_count(e->batch) && (rc = rec_engine_commit(e)))
            return rc;
    }
    return 0;
}

int rec_engine_open(rec_engine **out, const char *dir,
                    const rec_engine_opts *o, char *errbuf, size_t errlen) {
    *out = NULL;
    rec_engine *e = calloc(1, sizeof *e);
    if (!e) {
        if (errbuf)
            snprintf(errbuf, errlen, "out of memory");
        return REC_ENOMEM;
    }
    if (o)
        e->opts = *o;
    else
        rec_engine_opts_default(&e->opts);
    int rc = rec_store_open(&e->store, dir, &e->opts.store, errbuf, errlen);
    if (rc) {
        free(e);
        return rc;
    }
    rec_rng_seed(&e->serve_rng, e->opts.seed ^ 0x5e7e5e7e5e7e5e7eull);
    e->batch = rec_batch_new();
    if (rec_shown_new(&e->shown)) {
        rec_batch_free(e->batch);
        rec_store_free(e->store);
        free(e);
        if (errbuf)
            snprintf(errbuf, errlen, "out of memory");
        return REC_ENOMEM;
    }
    if (!e->batch) {
        rec_store_free(e->store);
        free(e);
        if (errbuf)
            snprintf(errbuf, errlen, "out of memory");
        return REC_ENOMEM;
    }
    if ((rc = state_load(e))) {
        if (errbuf)
            snprintf(errbuf, errlen, "%s: %s", dir, e->errmsg);
        state_free(e);
        rec_batch_free(e->batch);
        rec_store_free(e->store);
        free(e);
        return rc;
    }
    *out = e;
    return 0;
}

void rec_engine_free(rec_engine *e) {
    if (!e)
        return;
    if (!rec_store_read_only(e->store) && !e->inflight)
        (void)commit_now(e, 1);
    state_free(e);
    if (e->attached_free)
        e->attached_free(e->attached);
    rec_batch_free(e->batch);
    rec_batch_free(e->inflight);
    rec_batch_free(e->spare);
    rec_shown_free(e->shown);
    rec_buf_free(&e->scratch);
    rec_store_free(e->store);
    free(e);
}

/* ---- commit ------------------------------------------------------------ */

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Write the rows of list (sorted first, so the puts walk the tree in key
 * order: ~1M puts/s instead of ~40k/s for scattered keys). */
static int flush_rows(rec_engine *e, rec_space *s, int k, uint32_t *list,
                      uint32_t n) {
    if (n > 1)
        qsort(list, n, sizeof *list, cmp_u32);
    for (uint32_t d = 0; d < n; d++) {
        uint32_t idx = list[d];
        unsigned char key[7];
        be16(key, s->id);
        key[2] = (unsigned char)k;
        rec_be32(key + 3, idx);
        const float *row = rec_space_get(s, (rec_kind)k, idx);
        int rc = row ? rec_batch_put_unread(e->batch, REC_DB_VECTORS, key, 7, row,
                                            s->dim * sizeof(float))
                     : rec_batch_del_unread(e->batch, REC_DB_VECTORS, key, 7);
        if (rc)
            return rc;
    }
    return 0;
}

static int checkpoint_due(const rec_engine *e) {
    return e->opts.checkpoint_interval <= 0.0 ||
           rec_wall() - e->last_checkpoint >= e->opts.checkpoint_interval;
}

/* Stage dirty rows into the batch: rows set or removed always, learned
 * rows and counters (with the checkpoint record) when `checkpoint`. */
static int flush_spaces(rec_engine *e, int checkpoint) {
    /* rows owed an ials fold-in are stored as they are: a restarted
     * server has no model to fold against until its first training, which
     * solves every user again (learn.h) */
    for (size_t i = 0; i < e->nspaces; i++) {
        rec_space *s = e->spaces[i];
        for (int k = 0; k < 2; k++) {
            rec_matrix *m = &s->m[k];
            int rc = flush_rows(e, s, k, m->dirty_list, m->ndirty);
            if (!rc && checkpoint)
                rc = flush_rows(e, s, k, m->learned_list, m->nlearned);
            if (rc)
                return rc;
        }
    }
    if (!checkpoint)
        return 0;
    for (size_t i = 0; i < e->ncounters; i++) {
        rec_counter *c = e->counters[i];
        if (c->ndirty > 1)
            qsort(c->dirty_list, c->ndirty, sizeof *c->dirty_list, cmp_u32);
        for (uint32_t d = 0; d < c->ndirty; d++) {
            uint32_t idx = c->dirty_list[d];
            unsigned char key[6], val[16];
            be16(key, c->id);
            rec_be32(key + 2, idx);
            int rc;
            if (c->val[idx] == 0.0 && c->t_last[idx] == 0.0) {
                rc = rec_batch_del_unread(e->batch, REC_DB_COUNTERS, key, 6);
            } else {
                memcpy(val, &c->val[idx], 8);
                memcpy(val + 8, &c->t_last[idx], 8);
                rc = rec_batch_put_unread(e->batch, REC_DB_COUNTERS, key, 6, val, 16);
            }
            if (rc)
                return rc;
        }
    }
    if (e->learned_kv.used) {
        /* In key order, like the rows above. */
        kv_overlay *o = &e->learned_kv;
        kv_slot **list = malloc(o->used * sizeof *list);
        if (!list)
            return REC_ENOMEM;
        size_t n = 0;
        for (size_t i = 0; i < o->cap; i++)
            if (o->slots[i].key)
                list[n++] = &o->slots[i];
        qsort(list, n, sizeof *list, cmp_kv_slot);
        int rc = 0;
        for (size_t i = 0; i < n && !rc; i++)
            rc = list[i]->val ? rec_batch_put(e->batch, REC_DB_KV, list[i]->key,
                                              list[i]->klen, list[i]->val, list[i]->vlen)
                              : rec_batch_del(e->batch, REC_DB_KV, list[i]->key,
                                              list[i]->klen);
        free(list);
        if (rc)
            return rc;
    }
    int crc = rec_click_flush(e->click, e->batch);
    if (crc)
        return crc;
    unsigned char ck[9];
    ck[0] = (unsigned char)e->clock_set;
    memcpy(ck + 1, &e->clock_off, 8);
    int rc = rec_batch_put(e->batch, REC_DB_META, "clock", 5, ck, sizeof ck);
    if (rc)
        return rc;
    e->clock_stored = 1;
    for (size_t i = 0; i < e->nmfo; i++) {
        char key[MFO_PREFIX_LEN + REC_SPACE_NAME_MAX + 1];
        unsigned char val[MFO_BYTES];
        size_t kl = (size_t)snprintf(key, sizeof key, MFO_PREFIX "%s", e->mfo[i].space);
        if ((rc = rec_batch_put(e->batch, REC_DB_META, key, kl, val, mfo_pack(&e->mfo[i], val))))
            return rc;
    }
    unsigned char cp[8 + sizeof e->rng.s];
    rec_be64(cp, e->learned_seq);
    memcpy(cp + 8, e->rng.s, sizeof e->rng.s);
    return rec_batch_put(e->batch, REC_DB_META, "checkpoint", 10, cp, sizeof cp);
}

static int learned_pending(const rec_engine *e) {
    for (size_t i = 0; i < e->nspaces; i++)
        if (e->spaces[i]->m[0].nlearned || e->spaces[i]->m[1].nlearned)
            return 1;
    for (size_t i = 0; i < e->ncounters; i++)
        if (e->counters[i]->ndirty)
            return 1;
    return e->learned_kv.used || e->checkpoint_seq < e->learned_seq ||
           rec_click_dirty(e->click);
}

static void clean_all(rec_engine *e, int checkpoint) {
    for (size_t i = 0; i < e->nspaces; i++) {
        rec_space_clean(e->spaces[i], REC_KIND_ITEM);
        rec_space_clean(e->spaces[i], REC_KIND_USER);
        if (checkpoint) {
            rec_space_clean_learned(e->spaces[i], REC_KIND_ITEM);
            rec_space_clean_learned(e->spaces[i], REC_KIND_USER);
        }
    }
    if (checkpoint) {
        for (size_t i = 0; i < e->ncounters; i++)
            rec_counter_clean(e->counters[i]);
        kv_overlay_clear(&e->learned_kv);
        rec_click_clean(e->click);
        e->checkpoint_seq = e->learned_seq;
        e->last_checkpoint = rec_wall();
    }
}

int rec_engine_checkpoint_due(const rec_engine *e) {
    return checkpoint_due(e) && learned_pending(e);
}

size_t rec_engine_pending(const rec_engine *e) {
    size_t n = rec_batch_count(e->batch);
    for (size_t i = 0; i < e->nspaces; i++)
        n += e->spaces[i]->m[0].ndirty + e->spaces[i]->m[1].ndirty;
    return n;
}

/* One commit, synchronous; a checkpoint when forced or due. */
static int commit_now(rec_engine *e, int force_checkpoint) {
    if (e->before_commit)
        e->before_commit(e->before_ud);
    if (e->inflight)
        return fail(e, REC_EBUSY, "a staged commit is still running");
    if (rec_store_read_only(e->store)) {
        if (rec_engine_pending(e))
            return fail(e, REC_EREADONLY, "the data folder is open read-only");
        return 0;
    }
    int cp = (force_checkpoint || checkpoint_due(e)) && learned_pending(e);
    int rc = flush_spaces(e, cp);
    if (!rc && rec_batch_count(e->batch) == 0)
        return 0;
    if (!rc)
        rc = rec_store_commit(e->store, e->batch);
    rec_batch_clear(e->batch);
    if (!rc) {
        clean_all(e, cp);
        return 0;
    }
    /* Memory is ahead of the disk: rebuild it from what the store holds. */
    rollback(e, rc);
    return rc;
}

int rec_engine_checkpoint(rec_engine *e) { return commit_now(e, 1); }

void rec_engine_set_before_commit(rec_engine *e, void (*fn)(void *ud), void *ud) {
    e->before_commit = fn;
    e->before_ud = ud;
}

int rec_engine_commit(rec_engine *e) { return commit_now(e, 0); }

/* Rebuild memory from the store after a failed commit; pending writes go
 * with it (they may build on what failed). */
static void rollback(rec_engine *e, int rc) {
    char msg[sizeof e->errmsg];
    snprintf(msg, sizeof msg, "commit failed: %s", rec_store_errmsg(e->store)[0]
             ? rec_store_errmsg(e->store) : rec_strerror(rc));
    e->rollbacks++;
    rec_batch_clear(e->batch);
    state_free(e);
    int lrc = state_load(e);
    snprintf(e->errmsg, sizeof e->errmsg, "%.200s%s", msg,
             lrc ? "; reload failed" : "");
}

int rec_engine_stage(rec_engine *e, rec_batch **out) {
    *out = NULL;
    if (e->before_commit)
        e->before_commit(e->before_ud);
    if (e->inflight)
        return fail(e, REC_EBUSY, "a staged commit is still running");
    if (rec_store_read_only(e->store))
        return 0;
    int cp = checkpoint_due(e) && learned_pending(e);
    int rc = flush_spaces(e, cp);
    if (rc)
        return fail(e, rc, "staging failed: %s", rec_strerror(rc));
    clean_all(e, cp);
    if (rec_batch_count(e->batch) == 0)
        return 0;
    rec_batch *next = e->spare ? e->spare : rec_batch_new();
    if (!next)
        return fail(e, REC_ENOMEM, "out of memory");
    e->spare = NULL;
    e->inflight = e->batch;
    e->batch = next;
    *out = e->inflight;
    return 0;
}

int rec_engine_commit_done(rec_engine *e, rec_batch *b, int rc) {
    if (b != e->inflight)
        return REC_EINVAL;
    e->inflight = NULL;
    rec_batch_clear(b);
    if (e->spare)
        rec_batch_free(b);
    else
        e->spare = b;
    if (rc)
        rollback(e, rc);
    return rc;
}

/* ---- types ------------------------------------------------------------- */

static int find_type(const rec_engine *e, const char *t, size_t n) {
    for (size_t i = 0; i < e->ntypes; i++)
        if (strlen(e->types[i].name) == n && memcmp(e->types[i].name, t, n) == 0)
            return (int)i;
    return -1;
}

static int put_type_meta(rec_engine *e, uint16_t id) {
    char key[5 + REC_TYPE_NAME_MAX];
    size_t n = strlen(e->types[id].name);
    memcpy(key, "type/", 5);
    memcpy(key + 5, e->types[id].name, n);
    unsigned char val[6];
    be16(val, id);
    memcpy(val + 2, &e->types[id].weight, 4);
    return rec_batch_put(e->batch, REC_DB_META, key, 5 + n, val, 6);
}

static int intern_type(rec_engine *e, const char *t, size_t n, uint16_t *id,
                       int create) {
    if (!rec_event_type_ok(t, n))
        return fail(e, REC_EINVAL, "type must be 1..%d bytes, without control "
                    "characters or '/'", REC_TYPE_NAME_MAX);
    int i = find_type(e, t, n);
    if (i >= 0) {
        *id = (uint16_t)i;
        return 0;
    }
    if (!create)
        return REC_ENOTFOUND;
    if (e->ntypes == REC_MAX_TYPES)
        return fail(e, REC_ETOOLARGE, "more than %d event types",
                    REC_MAX_TYPES);
    type_info *ti = &e->types[e->ntypes];
    memcpy(ti->name, t, n);
    ti->name[n] = 0;
    ti->weight = 0.0f;
    for (size_t d = 0; d < sizeof default_types / sizeof *default_types; d++)
        if (strcmp(default_types[d].name, ti->name) == 0)
            ti->weight = default_types[d].weight;
    int rc = put_type_meta(e, (uint16_t)e->ntypes);
    if (rc)
        return rc;
    *id = (uint16_t)e->ntypes++;
    return 0;
}

float rec_engine_type_weight(rec_engine *e, const char *type, size_t tlen) {
    int i = find_type(e, type, tlen);
    return i < 0 ? 0.0f : e->types[i].weight;
}

int rec_engine_set_type_weight(rec_engine *e, const char *type, size_t tlen,
                               float w) {
    if (!isfinite(w))
        return fail(e, REC_EINVAL, "weight must be finite");
    uint16_t id;
    int rc = intern_type(e, type, tlen, &id, 1);
    if (rc)
        return rc;
    e->types[id].weight = w;
    return put_type_meta(e, id);
}

const char *rec_engine_type_name(const rec_engine *e, uint16_t id) {
    return id < e->ntypes ? e->types[id].name : NULL;
}

int rec_engine_type_find(const rec_engine *e, const char *type, size_t tlen) {
    int i = find_type(e, type, tlen);
    return i < 0 ? REC_ENOTFOUND : i;
}

size_t rec_engine_type_count(const rec_engine *e) { return e->ntypes; }

/* ---- spaces and counters ---------------------------------------------- */

rec_space *rec_engine_space(const rec_engine *e, const char *name) {
    for (size_t i = 0; i < e->nspaces; i++)
        if (strcmp(e->spaces[i]->name, name) == 0)
            return e->spaces[i];
    return NULL;
}

int rec_engine_space_ensure(rec_engine *e, const char *name, uint32_t dim,
                            rec_space **out) {
    rec_space *s = rec_engine_space(e, name);
    if (s) {
        if (s->dim != dim)
            return fail(e, REC_EDIM, "space '%s' has dimension %u, got %u",
                        name, s->dim, dim);
        *out = s;
        return 0;
    }
    if (rec_space_name_ok(name))
        return fail(e, REC_EINVAL,
                    "space name must be 1..63 characters of A-Z a-z 0-9 _ - .");
    if (dim < 1 || dim > REC_DIM_MAX)
        return fail(e, REC_ERANGE, "space '%s': dimension %u outside 1..%d",
                    name, dim, REC_DIM_MAX);
    if (e->nspaces == REC_MAX_SPACES)
        return fail(e, REC_ETOOLARGE, "more than %d spaces", REC_MAX_SPACES);
    uint16_t id = 0;
    for (size_t i = 0; i < e->nspaces; i++)
        if (e->spaces[i]->id >= id)
            id = (uint16_t)(e->spaces[i]->id + 1);
    int rc = rec_space_new(&s, name, id, dim);
    if (rc)
        return fail(e, rc, "space '%s': %s", name, rec_strerror(rc));
    char key[6 + REC_SPACE_NAME_MAX];
    size_t n = strlen(name);
    memcpy(key, "space/", 6);
    memcpy(key + 6, name, n);
    unsigned char val[6];
    be16(val, id);
    rec_be32(val + 2, dim);
    if ((rc = rec_batch_put(e->batch, REC_DB_META, key, 6 + n, val, 6))) {
        rec_space_free(s);
        return rc;
    }
    e->spaces[e->nspaces++] = s;
    *out = s;
    return 0;
}

size_t rec_engine_space_count(const rec_engine *e) { return e->nspaces; }
rec_space *rec_engine_space_at(const rec_engine *e, size_t i) {
    return i < e->nspaces ? e->spaces[i] : NULL;
}

rec_counter *rec_engine_counter(const rec_engine *e, const char *name) {
    for (size_t i = 0; i < e->ncounters; i++)
        if (strcmp(e->counters[i]->name, name) == 0)
            return e->counters[i];
    return NULL;
}

int rec_engine_counter_ensure(rec_engine *e, const char *name,
                              double half_life, rec_counter **out) {
    rec_counter *c = rec_engine_counter(e, name);
    if (c) {
        *out = c;
        return 0;
    }
    if (e->ncounters == REC_MAX_COUNTERS)
        return fail(e, REC_ETOOLARGE, "more than %d counters",
                    REC_MAX_COUNTERS);
    uint16_t id = 0;
    for (size_t i = 0; i < e->ncounters; i++)
        if (e->counters[i]->id >= id)
            id = (uint16_t)(e->counters[i]->id + 1);
    int rc = rec_counter_new(&c, name, id, half_life);
    if (rc)
        return fail(e, rc,
                    "counter '%s': name must be 1..63 of A-Z a-z 0-9 _ - . "
                    "and half_life a finite number >= 0", name);
    char key[8 + REC_SPACE_NAME_MAX];
    size_t n = strlen(name);
    memcpy(key, "counter/", 8);
    memcpy(key + 8, name, n);
    unsigned char val[10];
    be16(val, id);
    memcpy(val + 2, &half_life, 8);
    if ((rc = rec_batch_put(e->batch, REC_DB_META, key, 8 + n, val, 10))) {
        rec_counter_free(c);
        return rc;
    }
    e->counters[e->ncounters++] = c;
    *out = c;
    return 0;
}

size_t rec_engine_counter_count(const rec_engine *e) { return e->ncounters; }
rec_counter *rec_engine_counter_at(const rec_engine *e, size_t i) {
    return i < e->ncounters ? e->counters[i] : NULL;
}

/* ---- items and users --------------------------------------------------- */

void rec_engine_prefetch_ids(const rec_engine *e, const char *user,
                             size_t ulen, const char *item, size_t ilen) {
    rec_idmap_prefetch(&e->ids[REC_KIND_USER], rec_idmap_hash(user, ulen));
    rec_idmap_prefetch(&e->ids[REC_KIND_ITEM], rec_idmap_hash(item, ilen));
}

uint32_t rec_engine_lookup(const rec_engine *e, rec_kind kind,
                           const char *key, size_t klen) {
    return rec_idmap_find(&e->ids[kind], key, klen);
}

void rec_engine_prefetch_keys(const rec_engine *e, rec_kind kind,
                              const rec_hit *h, size_t n) {
    const rec_idmap *m = &e->ids[kind];
    for (size_t i = 0; i < n; i++)
        if (h[i].idx < m->next)
            rec_prefetch(&m->keys[h[i].idx]);
    for (size_t i = 0; i < n; i++)
        if (h[i].idx < m->next && m->keys[h[i].idx])
            rec_prefetch(m->keys[h[i].idx]);
}

int rec_engine_alive(const rec_engine *e, rec_kind kind, uint32_t idx) {
    return rec_idmap_alive(&e->ids[kind], idx);
}

const char *rec_engine_key(const rec_engine *e, rec_kind kind, uint32_t idx,
                           size_t *klen) {
    return rec_idmap_key(&e->ids[kind], idx, klen);
}

uint32_t rec_engine_count(const rec_engine *e, rec_kind kind) {
    return e->ids[kind].live;
}
uint32_t rec_engine_bound(const rec_engine *e, rec_kind kind) {
    return e->ids[kind].next;
}

int rec_engine_is_active(const rec_engine *e, uint32_t item) {
    if (!rec_idmap_alive(&e->ids[REC_KIND_ITEM], item))
        return 0;
    return !((size_t)(item >> 6) < e->inactive_words &&
             (e->inactive[item >> 6] >> (item & 63) & 1));
}

const uint64_t *rec_engine_inactive(const rec_engine *e, size_t *words) {
    *words = e->inactive_words;
    return e->inactive;
}

/* Intern an id, staging the id-map rows when it is new. */
/* Index of key, creating the id when new; h = rec_idmap_hash(key, klen). */
static int intern_id(rec_engine *e, rec_kind kind, const char *key,
                     size_t klen, uint64_t h, uint32_t *idx, int *created) {
    int made = 0;
    int rc = rec_idmap_intern_hashed(&e->ids[kind], key, klen, h, idx, &made);
    if (rc)
        return fail(e, rc, "cannot add %s id: %s",
                    kind == REC_KIND_ITEM ? "item" : "user", rec_strerror(rc));
    if (created)
        *created = made;
    if (!made)
        return 0;
    unsigned char ib[4];
    rec_be32(ib, *idx);
    /* Only index -> key is stored: the map from keys is rebuilt from it at
     * open, and a second, key-ordered row cost a random B-tree write for
     * every new id. New indexes only grow, so the row is appended. */
    if ((rc = rec_batch_append(e->batch, keys_db[kind], ib, 4, key, klen))) {
        rec_idmap_remove(&e->ids[kind], *idx);
        return rc;
    }
    if (kind == REC_KIND_ITEM) {
        /* A bare record so the item exists (active, no properties). */
        unsigned char rec[2] = {0, 0x80};
        rc = rec_batch_put(e->batch, REC_DB_ITEMS, ib, 4, rec, 2);
        if (!rc)
            rc = set_inactive(e, *idx, 0);
    }
    return rc;
}

static int check_key(rec_engine *e, const char *key, size_t klen) {
    int is_int;
    int64_t iv;
    const char *s;
    size_t n;
    if (!key || klen == 0 || klen > REC_ID_MAX ||
        rec_id_decode(key, klen, &is_int, &iv, &s, &n))
        return fail(e, REC_EINVAL, "id must be a non-empty string of at most "
                    "%d bytes or an integer", REC_ID_MAX - 1);
    return 0;
}

int rec_engine_put(rec_engine *e, rec_kind kind, const char *key,
                   size_t klen, const void *props, size_t plen, int active,
                   const rec_vecarg *vecs, size_t nvecs, uint32_t *idx_out) {
    int rc = check_key(e, key, klen);
    if (rc)
        return rc;
    if (rec_store_read_only(e->store))
        return fail(e, REC_EREADONLY, "the data folder is open read-only");
    if (props && (plen == 0 || plen > REC_PROPS_MAX))
        return fail(e, REC_ETOOLARGE, "properties must be 1..%u bytes of msgpack",
                    REC_PROPS_MAX);
    if (props) {
        unsigned char t = *(const unsigned char *)props;
        if (!((t & 0xf0) == 0x80 || t == 0xde || t == 0xdf))
            return fail(e, REC_EINVAL, "properties must be a map");
    }
    /* Validate every vector before changing anything. */
    for (size_t i = 0; i < nvecs; i++) {
        rec_space *s = rec_engine_space(e, vecs[i].space);
        if (s && s->dim != vecs[i].dim)
            return fail(e, REC_EDIM, "space '%s' has dimension %u, got %u",
                        s->name, s->dim, vecs[i].dim);
        if (!s && rec_space_name_ok(vecs[i].space))
            return fail(e, REC_EINVAL, "bad space name");
        if (vecs[i].dim < 1 || vecs[i].dim > REC_DIM_MAX)
            return fail(e, REC_ERANGE, "space '%s': dimension %u outside 1..%d",
                        vecs[i].space, vecs[i].dim, REC_DIM_MAX);
        if (!rec_vec_all_finite(vecs[i].v, vecs[i].dim))
            return fail(e, REC_ENONFINITE, "vector for space '%s' holds NaN or "
                        "infinity", vecs[i].space);
    }
    uint32_t idx;
    if ((rc = intern_id(e, kind, key, klen, rec_idmap_hash(key, klen), &idx,
                        NULL)))
        return rc;
    if (kind == REC_KIND_ITEM && props)
        rec_click_item_changed(e->click, idx);
    unsigned char ib[4];
    rec_be32(ib, idx);
    if (props || active >= 0) {
        int inactive;
        rec_buf *b = &e->scratch;
        rec_buf_clear(b);
        if (!props) {
            /* Keep stored properties, change the flag only. */
            rc = rec_engine_get(e, kind, idx, b, &inactive);
            if (rc)
                return rc;
            props = NULL;
        }
        inactive = kind == REC_KIND_ITEM ? active == 0 ||
                   (active < 0 && !rec_engine_is_active(e, idx)) : 0;
        unsigned char flag = (unsigned char)inactive;
        rec_buf rec = REC_BUF_INIT;
        if ((rc = rec_buf_append(&rec, &flag, 1)) ||
            (rc = rec_buf_append(&rec, props ? props : b->data,
                                 props ? plen : b->len)) ||
            (rc = rec_batch_put(e->batch, props_db[kind], ib, 4, rec.data,
                                rec.len))) {
            rec_buf_free(&rec);
            return rc;
        }
        rec_buf_free(&rec);
        if (kind == REC_KIND_ITEM && (rc = set_inactive(e, idx, inactive)))
            return rc;
    } else if (kind == REC_KIND_USER) {
        /* Make sure a user record exists. */
        rec_buf *b = &e->scratch;
        int act;
        if (rec_engine_get(e, kind, idx, b, &act) == REC_ENOTFOUND) {
            unsigned char rec[2] = {0, 0x80};
            if ((rc = rec_batch_put(e->batch, REC_DB_USERS, ib, 4, rec, 2)))
                return rc;
        }
    }
    for (size_t i = 0; i < nvecs; i++) {
        rec_space *s;
        if ((rc = rec_engine_space_ensure(e, vecs[i].space, vecs[i].dim, &s)) ||
            (rc = rec_space_set(s, kind, idx, vecs[i].v, REC_SET_DIRTY)))
            return rc;
    }
    if (idx_out)
        *idx_out = idx;
    return 0;
}

/* What the pending, then the in-flight batch say of a key. */
static int batch_lookup(const rec_engine *e, rec_dbi db, const void *k,
                        size_t kl, rec_val *out) {
    int rc = rec_batch_find(e->batch, db, k, kl, out);
    if (rc == REC_BATCH_SILENT && e->inflight)
        rc = rec_batch_find(e->inflight, db, k, kl, out);
    return rc;
}

int rec_engine_get(rec_engine *e, rec_kind kind, uint32_t idx, rec_buf *props,
                   int *active) {
    if (!rec_idmap_alive(&e->ids[kind], idx))
        return fail(e, REC_ENOTFOUND, "no such %s",
                    kind == REC_KIND_ITEM ? "item" : "user");
    unsigned char ib[4];
    rec_be32(ib, idx);
    /* Writes not yet committed are newer than the store. */
    rec_val pv;
    int prc = batch_lookup(e, props_db[kind], ib, 4, &pv);
    if (prc == 0 || prc == REC_ENOTFOUND) {
        rec_buf_clear(props);
        if (active)
            *active = kind == REC_KIND_ITEM ? rec_engine_is_active(e, idx) : 1;
        if (prc == REC_ENOTFOUND || pv.len < 1)
            return rec_buf_append(props, "\x80", 1);
        return rec_buf_append(props, (const char *)pv.data + 1, pv.len - 1);
    }
    rec_rtxn *t;
    int rc = rec_store_read_begin(e->store, &t);
    if (rc)
        return fail(e, rc, "%s", rec_store_errmsg(e->store));
    rec_val v;
    rc = rec_rtxn_get(t, props_db[kind], ib, 4, &v);
    if (rc == REC_ENOTFOUND) {
        rec_store_read_end(t);
        rec_buf_clear(props);
        rc = rec_buf_append(props, "\x80", 1);
        if (active)
            *active = kind == REC_KIND_ITEM ? rec_engine_is_active(e, idx) : 1;
        return rc;
    }
    if (!rc && v.len < 1)
        rc = REC_ECORRUPT;
    if (!rc) {
        rec_buf_clear(props);
        rc = rec_buf_append(props, (const char *)v.data + 1, v.len - 1);
    }
    rec_store_read_end(t);
    if (active)
        *active = kind == REC_KIND_ITEM ? rec_engine_is_active(e, idx) : 1;
    return rc;
}

typedef struct seq_ctx {
    rec_engine *e;
    uint64_t rows;
    uint32_t user;
} seq_ctx;

static int del_rec_row(void *ud, rec_val k, rec_val v) {
    seq_ctx *c = ud;
    if (v.len >= 4 && rec_get_be32(v.data) == c->user)
        return rec_batch_del(c->e->batch, REC_DB_RECS, k.data, k.len);
    return 0;
}

int rec_engine_delete(rec_engine *e, rec_kind kind, const char *key,
                      size_t klen) {
    int rc = check_key(e, key, klen);
    if (rc)
        return rc;
    if (rec_store_read_only(e->store))
        return fail(e, REC_EREADONLY, "the data folder is open read-only");
    uint32_t idx = rec_idmap_find(&e->ids[kind], key, klen);
    if (idx == REC_IDX_NONE)
        return fail(e, REC_ENOTFOUND, "no such %s",
                    kind == REC_KIND_ITEM ? "item" : "user");
    /* The log rows of a user are found through their history, which must
     * hold everything: make what is pending durable first. */
    if ((rc = rec_engine_commit(e)))
        return rc;
    unsigned char ib[4];
    rec_be32(ib, idx);
    if (kind == REC_KIND_USER) {
        rec_rtxn *t;
        if ((rc = rec_store_read_begin(e->store, &t)))
            return fail(e, rc, "%s", rec_store_errmsg(e->store));
        seq_ctx c = {e, 0, idx};
        /* Recommendation records name their user: O(records kept). */
        rc = rec_rtxn_scan(t, REC_DB_RECS, NULL, 0, 0, del_rec_row, &c);
        rec_store_read_end(t);
        /* Their rows in the log, found through their history. */
        uint32_t hn;
        const rec_hentry *h = rec_graph_history(&e->graph, idx, &hn);
        for (uint32_t i = 0; i < hn && !rc; i++) {
            unsigned char sk[8];
            rec_be64(sk, h[i].seq);
            rc = rec_batch_del(e->batch, REC_DB_EVENTS, sk, 8);
            c.rows++;
        }
        if (rc) {
            rec_batch_clear(e->batch);
            return fail(e, rc, "deleting the user's events: %s", rec_strerror(rc));
        }
        rec_graph_forget_user(&e->graph, idx);
        rec_shown_forget(e->shown, key, klen);
        rec_click_forget(e->click, key, klen);
        e->nevents -= c.rows < e->nevents ? c.rows : e->nevents;
    } else {
        rec_graph_forget_item(&e->graph, idx);
        for (size_t i = 0; i < e->ncounters; i++)
            rec_counter_remove(e->counters[i], idx);
        (void)set_inactive(e, idx, 1); /* hidden for good: the id is gone */
    }
    for (size_t i = 0; i < e->nspaces; i++)
        rec_space_remove(e->spaces[i], kind, idx);
    if ((rc = rec_batch_del(e->batch, props_db[kind], ib, 4)) ||
        (rc = rec_batch_del(e->batch, ids_db[kind], key, klen)) || /* older folders */
        (rc = rec_batch_del(e->batch, keys_db[kind], ib, 4)))
        return rc;
    rec_idmap_remove(&e->ids[kind], idx);
    return rec_engine_commit(e);
}

/* What learning from an event of (user, item) reads next: their rows in
 * each space that online learning writes (not those only a training or a
 * caller sets: loading them would only crowd the cache), the item's
 * counters, their places in the graph. */
static void prefetch_pair(const rec_engine *e, uint32_t user, uint32_t item) {
    rec_prefetch(&e->ids[REC_KIND_USER].keys[user]); /* alive checks */
    rec_prefetch(&e->ids[REC_KIND_ITEM].keys[item]);
    for (size_t i = 0; i < e->nspaces; i++) {
        if (!e->spaces[i]->online)
            continue;
        rec_space_prefetch(e->spaces[i], REC_KIND_USER, user);
        rec_space_prefetch(e->spaces[i], REC_KIND_ITEM, item);
    }
    for (size_t i = 0; i < e->ncounters; i++) {
        const rec_counter *c = e->counters[i];
        if (item < c->cap) {
            rec_prefetch(&c->val[item]);
            rec_prefetch(&c->t_last[item]);
            rec_prefetch(&c->key[item]);
        }
    }
    rec_graph_prefetch(&e->graph, user, item);
}

int rec_engine_event(rec_engine *e, const rec_event *ev, rec_event_out *out) {
    int rc;
    if ((rc = check_key(e, ev->user, ev->ulen)) ||
        (rc = check_key(e, ev->item, ev->ilen)))
        return rc;
    if (rec_store_read_only(e->store))
        return fail(e, REC_EREADONLY, "the data folder is open read-only");
    if ((rc = rec_event_check(ev, e->errmsg, sizeof e->errmsg)))
        return rc;
    /* An event without a time takes the clock's. */
    double wall = rec_wall();
    double ts = ev->ts != 0.0 ? ev->ts : now_at(e, wall);
    uint16_t type;
    uint32_t user, item;
    /* Users and items are spread over memory: both id lookups, then the
     * state of the pair, are asked of the cache before any is used. */
    uint64_t hu = rec_idmap_hash(ev->user, ev->ulen);
    uint64_t hi = rec_idmap_hash(ev->item, ev->ilen);
    rec_idmap_prefetch(&e->ids[REC_KIND_USER], hu);
    rec_idmap_prefetch(&e->ids[REC_KIND_ITEM], hi);
    size_t ntypes = e->ntypes;
    int new_item = 0;
    if ((rc = intern_type(e, ev->type, ev->tlen, &type, 1)) ||
        (rc = intern_id(e, REC_KIND_USER, ev->user, ev->ulen, hu, &user, NULL)) ||
        (rc = intern_id(e, REC_KIND_ITEM, ev->item, ev->ilen, hi, &item, &new_item)))
        return rc;
    prefetch_pair(e, user, item);
    float w = e->types[type].weight;
    uint64_t s = e->next_seq;

    rec_buf *b = &e->scratch;
    rec_buf_clear(b);
    unsigned char head[EV_HEAD + 4 + 8 + 1];
    uint8_t flags = (uint8_t)(EV_HAS_WEIGHT | (ev->has_value ? EV_HAS_VALUE : 0) |
                              (ev->rlen ? EV_HAS_REC : 0) |
                              (ev->clen ? EV_HAS_CONTEXT : 0));
    memcpy(head, &ts, 8);
    memcpy(head + 8, &user, 4);
    memcpy(head + 12, &item, 4);
    memcpy(head + 16, &type, 2);
    head[18] = flags;
    size_t hl = EV_HEAD;
    /* The weight in force is logged: a replay learns what the live path
     * learned even when the type's weight changed since. */
    memcpy(head + hl, &w, 4);
    hl += 4;
    if (ev->has_value) {
        memcpy(head + hl, &ev->value, 8);
        hl += 8;
    }
    if (ev->rlen)
        head[hl++] = (unsigned char)ev->rlen;
    unsigned char sk[8];
    rec_be64(sk, s);
    if ((rc = rec_buf_append(b, head, hl)) ||
        (rc = rec_buf_append(b, ev->rec_id, ev->rlen)) ||
        (rc = rec_buf_append(b, ev->context, ev->clen)) ||
        (rc = rec_batch_log(e->batch, REC_DB_EVENTS, sk, 8, b->data, b->len)))
        return fail(e, rc, "out of memory");
    if ((rc = rec_graph_add(&e->graph, user, item, ts, w, type, s)))
        return fail(e, rc, "out of memory");
    e->next_seq++;
    e->nevents++;
    /* Its learning follows at once (the caller's); with events waiting for
     * replay, it waits behind them. */
    if (e->learned_seq + 1 == s)
        e->learned_seq = s;
    clock_advance(e, ts, wall);
    if (w > 0) /* engaged: what was shown without engagement starts again */
        rec_shown_clear(e->shown, ev->user, ev->ulen, item);
    if (out) {
        out->seq = s;
        out->ts = ts;
        out->weight = w;
        out->user = user;
        out->item = item;
        out->type = type;
        out->new_item = (uint8_t)new_item;
        out->new_type = e->ntypes > ntypes;
    }
    return 0;
}

uint64_t rec_engine_events(const rec_engine *e) { return e->nevents; }

/* Events are read from the log in chunks of REPLAY_CHUNK, copied, and
 * handed on with no read transaction open: the learners may read and
 * write the store, and a long replay pins no old pages. */
#define REPLAY_CHUNK 1024

typedef struct replay_ctx {
    rec_engine *e;
    rec_buf recs;   /* copied records: seq u64, len u32, bytes */
    size_t n;       /* records in recs */
    int more;       /* the chunk filled up: the log goes on */
} replay_ctx;

static int replay_copy(void *ud, rec_val k, rec_val v) {
    replay_ctx *c = ud;
    if (k.len != 8)
        return REC_ECORRUPT;
    if (c->n == REPLAY_CHUNK) {
        c->more = 1;
        return 1;
    }
    uint64_t seq = rec_get_be64(k.data);
    uint32_t len = (uint32_t)v.len;
    int rc;
    if ((rc = rec_buf_append(&c->recs, &seq, 8)) ||
        (rc = rec_buf_append(&c->recs, &len, 4)) ||
        (rc = rec_buf_append(&c->recs, v.data, v.len)))
        return rc;
    c->n++;
    return 0;
}

int rec_engine_replay_due(const rec_engine *e) {
    return e->learned_seq + 1 < e->next_seq;
}

int rec_engine_replay(rec_engine *e, rec_replay_fn fn, void *ud,
                      uint64_t *replayed) {
    replay_ctx c = {e, REC_BUF_INIT, 0, 1};
    uint64_t n = 0;
    int rc = 0;
    if (replayed)
        *replayed = 0;
    while (!rc && c.more && rec_engine_replay_due(e)) {
        rec_rtxn *t;
        if ((rc = rec_store_read_begin(e->store, &t))) {
            rc = fail(e, rc, "%s", rec_store_errmsg(e->store));
            break;
        }
        unsigned char from[8];
        rec_be64(from, e->learned_seq + 1);
        rec_buf_clear(&c.recs);
        c.n = 0;
        c.more = 0;
        rc = rec_rtxn_scan_from(t, REC_DB_EVENTS, from, 8, replay_copy, &c);
        rec_store_read_end(t);
        for (size_t off = 0, i = 0; i < c.n && !rc; i++) {
            uint64_t seq;
            uint32_t len;
            memcpy(&seq, c.recs.data + off, 8);
            memcpy(&len, c.recs.data + off + 8, 4);
            const char *p = c.recs.data + off + 12;
            off += 12 + len;
            ev_rec r;
            if (ev_parse(p, len, &r)) {
                rc = fail(e, REC_ECORRUPT, "event %llu of the log is corrupt",
                          (unsigned long long)seq);
                break;
            }
            e->learned_seq = seq;
            if (!rec_idmap_alive(&e->ids[REC_KIND_USER], r.h.user) ||
                !rec_idmap_alive(&e->ids[REC_KIND_ITEM], r.h.item))
                continue;
            rec_replay_event re = {
                .seq = seq, .ts = r.h.ts, .user = r.h.user, .item = r.h.item,
                .type = r.h.type, .weight = ev_weight(e, &r),
                .has_value = r.has_value, .value = r.value,
                .rec_id = r.rec_id, .rlen = r.rlen,
                .context = r.context, .clen = r.clen,
            };
            n++;
            rc = fn(ud, &re);
        }
    }
    /* Events past the last stored one (pending, not committed) were
     * learned live or wait for a later replay. */
    if (!rc && !c.more && rec_engine_replay_due(e) && !rec_batch_count(e->batch) &&
        !e->inflight)
        e->learned_seq = e->next_seq - 1;
    rec_buf_free(&c.recs);
    if (replayed)
        *replayed = n;
    return rc;
}

uint64_t rec_engine_checkpoint_seq(const rec_engine *e) { return e->checkpoint_seq; }

int rec_engine_set_vector(rec_engine *e, rec_space *s, rec_kind kind,
                          uint32_t idx, const float *v, uint32_t dim) {
    if (rec_store_read_only(e->store))
        return fail(e, REC_EREADONLY, "the data folder is open read-only");
    if (!rec_idmap_alive(&e->ids[kind], idx))
        return fail(e, REC_ENOTFOUND, "no such %s",
                    kind == REC_KIND_ITEM ? "item" : "user");
    if (dim != s->dim)
        return fail(e, REC_EDIM, "space '%s' has dimension %u, got %u",
                    s->name, s->dim, dim);
    int rc = rec_space_set(s, kind, idx, v, REC_SET_DIRTY);
    if (rc == REC_ENONFINITE)
        return fail(e, rc, "vector for space '%s' holds NaN or infinity",
                    s->name);
    return rc;
}

static int ensure_row(rec_engine *e, rec_space *s, rec_kind kind,
                      uint32_t idx) {
    if (rec_space_has(s, kind, idx))
        return 0;
    float v[REC_DIM_MAX];
    rec_mf_init_vector(&e->rng, &e->opts.mf, v, s->dim);
    /* Replayed after a crash from the same generator state. */
    return rec_space_set(s, kind, idx, v, REC_SET_LEARNED);
}

#define MF_MAX_NEG 64

int rec_engine_mf_update(rec_engine *e, rec_space *s, uint32_t user,
                         uint32_t item, float weight,
                         const rec_mf_opts *o, float *loss) {
    if (!o)
        o = &e->opts.mf;
    if (rec_store_read_only(e->store))
        return fail(e, REC_EREADONLY, "the data folder is open read-only");
    if (!rec_idmap_alive(&e->ids[REC_KIND_USER], user) ||
        !rec_idmap_alive(&e->ids[REC_KIND_ITEM], item))
        return fail(e, REC_ENOTFOUND, "unknown user or item");
    if (!(weight > 0.0f) || !isfinite(weight))
        return fail(e, REC_EINVAL, "weight must be a positive number");
    if (o->negatives > MF_MAX_NEG)
        return fail(e, REC_ERANGE, "at most %d negatives", MF_MAX_NEG);
    int rc;
    if ((rc = ensure_row(e, s, REC_KIND_USER, user)) ||
        (rc = ensure_row(e, s, REC_KIND_ITEM, item)))
        return rc;
    /* Uniform negatives among items that have a row in the space; a few
     * rejections keep it O(negatives) on dense spaces. */
    uint32_t negs[MF_MAX_NEG];
    size_t n = 0;
    const rec_matrix *m = &s->m[REC_KIND_ITEM];
    if (m->count > 1) {
        for (uint32_t tries = 0; n < o->negatives && tries < o->negatives * 8;
             tries++) {
            uint32_t j = rec_rng_below(&e->rng, m->nrows);
            if (j != item && rec_space_has(s, REC_KIND_ITEM, j))
                negs[n++] = j;
        }
    }
    float l = rec_mf_step(s, user, item, weight, negs, n, o);
    if (loss)
        *loss = l;
    return 0;
}

/* ---- online MF steps owed while nobody reads the space (engine.h) ---- */

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

float rec_mf_plan_weight(const rec_mf_plan *p, uint16_t type, float w) {
    if (!(w > 0.0f) || (p->typed && !(p->types[type >> 6] >> (type & 63) & 1)))
        return 0.0f;
    if (p->log_weight && w > 1.0f)
        w = 1.0f + logf(w);
    return w < p->max_weight ? w : p->max_weight;
}

static mf_owed *mfo_find(rec_engine *e, const char *space) {
    for (size_t i = 0; i < e->nmfo; i++)
        if (strcmp(e->mfo[i].space, space) == 0)
            return &e->mfo[i];
    return NULL;
}

static int mfo_reading(const mf_owed *m, double now) {
    return m->read_at > 0.0 && now - m->read_at < REC_MF_READ_WINDOW;
}

/* Keep step st as the newest owed one; past MF_RING_MAX (or out of
 * memory) the oldest is left to the log. */
static void mfo_keep(mf_owed *m, const mf_step *st) {
    if (m->n == m->cap && m->cap < MF_RING_MAX) {
        uint32_t cap = m->cap ? m->cap * 2 : 256;
        mf_step *r = malloc((size_t)cap * sizeof *r);
        if (r) {
            for (uint32_t i = 0; i < m->n; i++)
                r[i] = m->ring[(m->head + i) % m->cap];
            free(m->ring);
            m->ring = r;
            m->cap = cap;
            m->head = 0;
        }
    }
    if (!m->cap) { /* no memory at all: the log keeps it */
        m->ring_from = st->seq + 1;
        return;
    }
    if (m->n == m->cap) { /* the oldest goes to the log's keeping */
        m->ring_from = m->ring[m->head].seq + 1;
        m->head = (m->head + 1) % m->cap;
        m->n--;
    }
    m->ring[(m->head + m->n) % m->cap] = *st;
    m->n++;
}

int rec_engine_mf_owe(rec_engine *e, const char *space, uint32_t dim, const rec_mf_plan *p,
                      const rec_replay_event *ev, size_t n, int *now) {
    *now = 1;
    if (rec_space_name_ok(space) || n == 0 || ev[0].seq == 0 || dim < 1 ||
        dim > REC_DIM_MAX)
        return fail(e, REC_EINVAL, "bad space or batch of events to learn");
    for (size_t i = 1; i < n; i++)
        if (ev[i].seq <= ev[i - 1].seq)
            return fail(e, REC_EINVAL, "the events to learn are not in log order");
    uint64_t first = ev[0].seq, last = ev[n - 1].seq;
    mf_owed *m = mfo_find(e, space);
    if (!m) {
        if (e->nmfo == REC_MF_OWED_MAX)
            return 0; /* stepped at once */
        m = &e->mfo[e->nmfo++];
        memset(m, 0, sizeof *m);
        snprintf(m->space, sizeof m->space, "%s", space);
        m->paid = m->owed_to = first - 1;
        m->ring_from = first;
    }
    m->plan = *p;
    m->dim = dim;
    if (last <= m->owed_to) /* handed over before (a replay): done */
        return *now = 0, 0;
    if (m->paid == m->owed_to && mfo_reading(m, mono_now()))
        return 0;
    *now = 0;
    if (m->paid == m->owed_to && m->n == 0) /* a new debt: all in the ring */
        m->ring_from = first;
    for (size_t i = 0; i < n; i++) {
        if (ev[i].seq <= m->owed_to)
            continue;
        mf_step st = {ev[i].seq, ev[i].user, ev[i].item,
                      rec_mf_plan_weight(p, ev[i].type, ev[i].weight)};
        if (st.w > 0.0f)
            mfo_keep(m, &st);
    }
    m->owed_to = last;
    return 0;
}

void rec_engine_mf_stepped(rec_engine *e, const char *space, uint64_t last) {
    mf_owed *m = mfo_find(e, space);
    if (m && last > m->owed_to)
        m->paid = m->owed_to = last;
}

typedef struct mfo_pay_ctx {
    rec_engine *e;
    mf_owed *m;
    rec_space *s;
    uint64_t left;      /* steps this call may still make */
    double deadline;    /* mono_now(); 0: none */
    int reached;        /* the scan met the ring's first event (or passed it) */
    int rc;
} mfo_pay_ctx;

static int mfo_out_of_time(const mfo_pay_ctx *c) {
    return !c->left || (c->deadline > 0 && (c->left & 255) == 0 && mono_now() > c->deadline);
}

static int mfo_step(mfo_pay_ctx *c, uint32_t user, uint32_t item, float w) {
    rec_engine *e = c->e;
    if (!(w > 0.0f) || !rec_idmap_alive(&e->ids[REC_KIND_USER], user) ||
        !rec_idmap_alive(&e->ids[REC_KIND_ITEM], item))
        return 0;
    c->left--;
    return rec_engine_mf_update(e, c->s, user, item, w, &c->m->plan.mf, NULL);
}

/* One logged event before the ring's first, in order: its step. */
static int mfo_pay_logged(void *ud, rec_val k, rec_val v) {
    mfo_pay_ctx *c = ud;
    mf_owed *m = c->m;
    if (k.len != 8)
        return c->rc = REC_ECORRUPT;
    uint64_t seq = rec_get_be64(k.data);
    if (seq >= m->ring_from) {
        c->reached = 1;
        return 1;
    }
    if (mfo_out_of_time(c))
        return 1;
    ev_rec r;
    if (ev_parse(v.data, v.len, &r))
        return c->rc = fail(c->e, REC_ECORRUPT, "event %llu of the log is corrupt",
                            (unsigned long long)seq);
    if ((c->rc = mfo_step(c, r.h.user, r.h.item,
                          rec_mf_plan_weight(&m->plan, r.h.type, ev_weight(c->e, &r)))))
        return c->rc;
    m->paid = seq;
    return 0;
}

/* Pay m's owed steps in log order, up to max of them and until deadline
 * (0: none): those before the ring from the log (an event there not
 * committed yet stops the payment until it is), then the ring's. */
static int mfo_pay(rec_engine *e, mf_owed *m, uint64_t max, double deadline) {
    if (m->paid >= m->owed_to)
        return 0;
    rec_space *s = rec_engine_space(e, m->space);
    int rc = s ? 0 : rec_engine_space_ensure(e, m->space, m->dim, &s);
    if (rc)
        return rc;
    if (s->dim != m->dim) /* the space was made again with another size */
        return fail(e, REC_EDIM, "space '%s' has dimension %u, its MF steps %u", m->space,
                    s->dim, m->dim);
    mfo_pay_ctx c = {e, m, s, max, deadline, 0, 0};
    while (!c.rc && m->paid + 1 < m->ring_from && !mfo_out_of_time(&c)) {
        uint64_t before = m->paid;
        c.reached = 0;
        rec_rtxn *t;
        if ((rc = rec_store_read_begin(e->store, &t)))
            return fail(e, rc, "%s", rec_store_errmsg(e->store));
        unsigned char from[8];
        rec_be64(from, m->paid + 1);
        rc = rec_rtxn_scan_from(t, REC_DB_EVENTS, from, 8, mfo_pay_logged, &c);
        rec_store_read_end(t);
        if (rc < 0 && !c.rc)
            c.rc = rc;
        if (c.rc || m->paid + 1 >= m->ring_from)
            break;
        if (c.reached || (!rec_batch_count(e->batch) && !e->inflight))
            m->paid = m->ring_from - 1; /* the rest there: deleted since */
        else if (m->paid == before || !mfo_out_of_time(&c))
            return 0; /* the rest waits for its commit */
    }
    while (!c.rc && m->n && m->paid + 1 >= m->ring_from && !mfo_out_of_time(&c)) {
        const mf_step *st = &m->ring[m->head];
        c.rc = mfo_step(&c, st->user, st->item, st->w);
        m->paid = st->seq;
        m->head = (m->head + 1) % m->cap;
        m->n--;
    }
    if (!c.rc && !m->n && m->paid + 1 >= m->ring_from) {
        m->paid = m->owed_to; /* the ring held every step after it */
        m->ring_from = m->owed_to + 1;
    }
    return c.rc;
}

int rec_engine_mf_settle(rec_engine *e, const char *space) {
    int rc = 0;
    double now = 0.0;
    for (size_t i = 0; i < e->nmfo; i++) {
        mf_owed *m = &e->mfo[i];
        if (space && strcmp(m->space, space) != 0)
            continue;
        m->read_at = now > 0.0 ? now : (now = mono_now());
        int rc1 = mfo_pay(e, m, REC_MF_READ_PAY, 0.0);
        if (rc1 && !rc)
            rc = rc1;
    }
    return rc;
}

int rec_engine_mf_catch_up(rec_engine *e, double seconds) {
    if (!e->nmfo)
        return 0;
    double now = mono_now(), deadline = now + seconds;
    int more = 0;
    for (size_t i = 0; i < e->nmfo; i++) {
        mf_owed *m = &e->mfo[i];
        if (m->paid >= m->owed_to || !mfo_reading(m, now))
            continue;
        int rc = mfo_pay(e, m, UINT64_MAX, deadline);
        if (rc)
            return rc;
        more |= m->paid < m->owed_to;
    }
    return more;
}

uint64_t rec_engine_mf_owed(const rec_engine *e, const char *space) {
    uint64_t n = 0;
    for (size_t i = 0; i < e->nmfo; i++)
        if (!space || strcmp(e->mfo[i].space, space) == 0)
            n += e->mfo[i].owed_to - e->mfo[i].paid;
    return n;
}

rec_graph *rec_engine_graph(rec_engine *e) { return &e->graph; }

void *rec_engine_attached(const rec_engine *e) { return e->attached; }

void rec_engine_attach(rec_engine *e, void *p, void (*free_fn)(void *)) {
    if (e->attached_free && e->attached != p)
        e->attached_free(e->attached);
    e->attached = p;
    e->attached_free = free_fn;
}
rec_rng *rec_engine_rng(rec_engine *e) { return &e->rng; }
rec_rng *rec_engine_serve_rng(rec_engine *e) { return &e->serve_rng; }

rec_shown *rec_engine_shown(const rec_engine *e) { return e->shown; }

rec_click *rec_engine_click(const rec_engine *e) { return e->click; }

int rec_engine_learning(rec_engine *e, int on) {
    int was = e->learning;
    e->learning = on != 0;
    return was;
}
rec_store *rec_engine_store(rec_engine *e) { return e->store; }

static int kv_key_ok(rec_engine *e, size_t kl) {
    if (kl == 0 || kl > 255)
        return fail(e, REC_EINVAL, "kv keys are 1..255 bytes");
    return 0;
}

int rec_engine_kv_put(rec_engine *e, const char *k, size_t kl, const void *v,
                      size_t vl) {
    int rc = kv_key_ok(e, kl);
    if (rc)
        return rc;
    if (rec_store_read_only(e->store))
        return fail(e, REC_EREADONLY, "the data folder is open read-only");
    if (vl == 0 || vl > REC_PROPS_MAX)
        return fail(e, REC_ETOOLARGE, "kv values are 1..%u bytes", REC_PROPS_MAX);
    if (e->learning)
        return kv_overlay_set(&e->learned_kv, k, kl, v, vl);
    if ((rc = rec_batch_put(e->batch, REC_DB_KV, k, kl, v, vl)))
        return rc;
    /* The learned copy is read first: it must not hide this write. */
    return kv_overlay_find(&e->learned_kv, k, kl)
               ? kv_overlay_set(&e->learned_kv, k, kl, v, vl) : 0;
}

int rec_engine_kv_get(rec_engine *e, const char *k, size_t kl, rec_buf *out) {
    int rc = kv_key_ok(e, kl);
    if (rc)
        return rc;
    const kv_slot *ls = kv_overlay_find(&e->learned_kv, k, kl);
    if (ls)
        return ls->val ? rec_buf_set(out, ls->val, ls->vlen) : REC_ENOTFOUND;
    rec_val pv;
    rc = batch_lookup(e, REC_DB_KV, k, kl, &pv);
    if (rc == 0)
        return rec_buf_set(out, pv.data, pv.len);
    if (rc == REC_ENOTFOUND)
        return rc;
    rc = rec_store_get(e->store, REC_DB_KV, k, kl, out);
    return rc;
}

int rec_engine_rec_put(rec_engine *e, uint64_t rec_id, uint32_t user,
                       const void *v, size_t vl) {
    if (rec_store_read_only(e->store))
        return fail(e, REC_EREADONLY, "the data folder is open read-only");
    unsigned char k[8];
    rec_be64(k, rec_id);
    rec_buf *b = &e->scratch;
    rec_buf_clear(b);
    unsigned char u[4];
    rec_be32(u, user);
    int rc = rec_buf_append(b, u, 4);
    if (!rc)
        rc = rec_buf_append(b, v, vl);
    if (!rc)
        rc = rec_batch_append(e->batch, REC_DB_RECS, k, 8, b->data, b->len);
    return rc;
}

int rec_engine_rec_get(rec_engine *e, uint64_t rec_id, rec_buf *out) {
    unsigned char k[8];
    rec_be64(k, rec_id);
    rec_val pv;
    int rc = batch_lookup(e, REC_DB_RECS, k, 8, &pv);
    if (rc == 0)
        return rec_buf_set(out, pv.data, pv.len);
    if (rc == REC_ENOTFOUND)
        return rc;
    return rec_store_get(e->store, REC_DB_RECS, k, 8, out);
}

int rec_engine_kv_del(rec_engine *e, const char *k, size_t kl) {
    int rc = kv_key_ok(e, kl);
    if (rc)
        return rc;
    if (rec_store_read_only(e->store))
        return fail(e, REC_EREADONLY, "the data folder is open read-only");
    if (e->learning)
        return kv_overlay_set(&e->learned_kv, k, kl, NULL, 0);
    if ((rc = rec_batch_del(e->batch, REC_DB_KV, k, kl)))
        return rc;
    return kv_overlay_find(&e->learned_kv, k, kl)
               ? kv_overlay_set(&e->learned_kv, k, kl, NULL, 0) : 0;
}
