/* click.c - the click and conversion model of the engine's own lists
 * (click.h).
 *
 * Waiting lists live in a ring in the order they were served, with a map
 * from rec_id to their place in it; only ids, times and two bit sets per
 * list are kept in memory: the features of each shown item are in the
 * list's record (the "recs" database), read back when an outcome or the
 * end of the window comes.
 */
#include "click.h"

#include <lauxlib.h>
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "counter.h"
#include "engine.h"
#include "graph.h"
#include "space.h"
#include "vec.h"
#include "err.h"
#include "hash.h"
#include "script.h"
#include "shown.h"
#include "store.h"
#include "value.h"

#define MAX_SLOTS 128         /* shown items per list (the server's n is at most 100) */
#define FEATS_PER_SLOT 255    /* a slot's features in a record (u8 count) */

typedef struct pending {
    uint64_t rid;
    double ts;
    uint32_t n;
    uint64_t clicked[MAX_SLOTS / 64];
    uint64_t converted[MAX_SLOTS / 64];
} pending;

/* The hashes of one property's values per item: 0 not read yet, 1 absent. */
typedef struct prop_cache {
    char name[REC_CLICK_NAME_MAX];
    uint64_t *h;
    uint32_t cap;
} prop_cache;

struct rec_click {
    int active;
    prop_cache pc[REC_CLICK_MAX_DECL];
    size_t npc;
    int8_t ci[REC_CLICK_MAX_DECL][2]; /* each declared feature's cache, -1 */
    rec_click_spec spec;
    rec_ctr *click, *conv;
    int replaced;             /* stored rows belong to an older model */
    int synced;               /* rt and generation below are those read */
    const rec_script_rt *rt;
    uint64_t generation;      /* rec_script_generation at the last sync */
    /* waiting lists: ring[head .. head + count) by serving order */
    pending *ring;
    size_t cap, head, count;
    uint64_t base;            /* absolute number of ring[head] */
    /* rec_id -> absolute number, open addressing (key 0 is empty) */
    uint64_t *keys, *vals;
    size_t mcap, mused;
    uint64_t served, clicks, conversions, negatives, late, unmatched;
    int changed;              /* since the last rec_click_clean */
};

/* ---- the declaration -------------------------------------------------------------- */

static const struct {
    const char *name;
    rec_click_fkind kind;
    int arg;
} fkinds[] = {
    {"item", REC_CF_ITEM, 0},       {"user", REC_CF_USER, 0},
    {"position", REC_CF_POSITION, 0}, {"strategy", REC_CF_STRATEGY, 0},
    {"score", REC_CF_SCORE, 0},     {"shown", REC_CF_SHOWN, 0},
    {"shows", REC_CF_SHOWS, 0},
    {"hour", REC_CF_HOUR, 0},       {"prop:", REC_CF_PROP, 1},
    {"ctx:", REC_CF_CTX, 1},        {"counter:", REC_CF_COUNTER, 1},
    {"taste:", REC_CF_TASTE, 1},    {"like:", REC_CF_LIKE, 1},
    {"ignored:", REC_CF_IGNORED, 1},
};

static int numeric(rec_click_fkind k) {
    return k == REC_CF_SCORE || k == REC_CF_SHOWN || k == REC_CF_SHOWS || k == REC_CF_COUNTER ||
           k == REC_CF_TASTE || k == REC_CF_LIKE || k == REC_CF_IGNORED;
}

/* Does the feature depend on the item (or its slot)? */
static int per_item(rec_click_fkind k) {
    return k == REC_CF_ITEM || k == REC_CF_STRATEGY || k == REC_CF_SCORE || k == REC_CF_SHOWN ||
           k == REC_CF_SHOWS ||
           k == REC_CF_PROP || k == REC_CF_COUNTER || k == REC_CF_POSITION ||
           k == REC_CF_TASTE || k == REC_CF_LIKE || k == REC_CF_IGNORED;
}

static int parse_one(const char *s, size_t len, uint8_t *kind, char *arg, char *err,
                     size_t errlen, const char *where) {
    for (size_t i = 0; i < sizeof fkinds / sizeof *fkinds; i++) {
        size_t nl = strlen(fkinds[i].name);
        if (fkinds[i].arg ? (len > nl && memcmp(s, fkinds[i].name, nl) == 0)
                          : (len == nl && memcmp(s, fkinds[i].name, nl) == 0)) {
            if (fkinds[i].arg && len - nl >= REC_CLICK_NAME_MAX) {
                snprintf(err, errlen, "%s: the name after '%s' is longer than %d bytes", where,
                         fkinds[i].name, REC_CLICK_NAME_MAX - 1);
                return REC_EINVAL;
            }
            *kind = (uint8_t)fkinds[i].kind;
            if (fkinds[i].arg) {
                memcpy(arg, s + nl, len - nl);
                arg[len - nl] = 0;
            } else {
                arg[0] = 0;
            }
            return 0;
        }
    }
    snprintf(err, errlen, "%s: unknown feature '%.*s' (item, user, position, strategy, score, "
             "shown, shows, hour, prop:NAME, ctx:NAME, counter:NAME, taste:NAME, ignored:NAME, like:SPACE)", where, (int)(len > 64 ? 64 : len), s);
    return REC_EINVAL;
}

static int read_num(lua_State *L, int t, const char *k, double lo, double hi, double *out,
                    char *err, size_t errlen) {
    int ty = lua_getfield(L, t, k);
    if (ty == LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    int ok = 0;
    double v = lua_tonumberx(L, -1, &ok);
    lua_pop(L, 1);
    if (ty != LUA_TNUMBER || !ok || !(v >= lo && v <= hi)) {
        snprintf(err, errlen, "model.%s must be a number in [%g, %g]", k, lo, hi);
        return REC_EINVAL;
    }
    *out = v;
    return 0;
}

static int read_types(lua_State *L, int t, const char *k, char (*out)[REC_CLICK_NAME_MAX],
                      size_t *n, char *err, size_t errlen) {
    int ty = lua_getfield(L, t, k);
    if (ty == LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    if (ty != LUA_TTABLE) {
        lua_pop(L, 1);
        snprintf(err, errlen, "model.%s must be an array of event types", k);
        return REC_EINVAL;
    }
    size_t len = lua_rawlen(L, -1);
    if (len > REC_CLICK_MAX_TYPES) {
        lua_pop(L, 1);
        snprintf(err, errlen, "model.%s: at most %d types", k, REC_CLICK_MAX_TYPES);
        return REC_EINVAL;
    }
    for (size_t i = 0; i < len; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i + 1);
        size_t sl;
        const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &sl) : NULL;
        if (!s || sl == 0 || sl >= REC_CLICK_NAME_MAX) {
            lua_pop(L, 2);
            snprintf(err, errlen, "model.%s[%zu] must be an event type (1..%d bytes)", k, i + 1,
                     REC_CLICK_NAME_MAX - 1);
            return REC_EINVAL;
        }
        memcpy(out[i], s, sl);
        out[i][sl] = 0;
        lua_pop(L, 1);
    }
    *n = len;
    lua_pop(L, 1);
    return 0;
}

int rec_click_spec_read(lua_State *L, int idx, rec_click_spec *s, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    idx = lua_absindex(L, idx);
    if (!lua_istable(L, idx)) {
        snprintf(err, errlen, "model must be a table");
        return REC_EINVAL;
    }
    lua_checkstack(L, 6);
    rec_ctr_opts_default(&s->opts);
    s->opts.bits = 18;
    s->window = 1800;
    s->conversion = 1;
    s->nclick = 1;
    strcpy(s->clicks[0], "click");
    s->nconv = 1;
    strcpy(s->convs[0], "purchase");
    int ty = lua_getfield(L, idx, "kind");
    size_t kl = 0;
    const char *kind = ty == LUA_TSTRING ? lua_tolstring(L, -1, &kl) : NULL;
    int fm = kind && kl == 2 && memcmp(kind, "fm", 2) == 0;
    int lr = kind && kl == 2 && memcmp(kind, "lr", 2) == 0;
    lua_pop(L, 1);
    if (ty != LUA_TNIL && !fm && !lr) {
        snprintf(err, errlen, "model.kind must be \"lr\" or \"fm\"");
        return REC_EINVAL;
    }
    double k = fm ? 8 : 0, bits = s->opts.bits, a = s->opts.alpha, b = s->opts.beta,
           l1 = s->opts.l1, l2 = s->opts.l2, flr = s->opts.fm_lr, fin = s->opts.fm_init;
    if (read_num(L, idx, "k", fm ? 1 : 0, fm ? REC_CTR_MAX_K : 0, &k, err, errlen) ||
        read_num(L, idx, "bits", REC_CTR_BITS_MIN, 24, &bits, err, errlen) ||
        read_num(L, idx, "alpha", 1e-6, 100, &a, err, errlen) ||
        read_num(L, idx, "beta", 0, 100, &b, err, errlen) ||
        read_num(L, idx, "l1", 0, 1e6, &l1, err, errlen) ||
        read_num(L, idx, "l2", 0, 1e6, &l2, err, errlen) ||
        read_num(L, idx, "fm_lr", 1e-6, 10, &flr, err, errlen) ||
        read_num(L, idx, "fm_init", 0, 1, &fin, err, errlen) ||
        read_num(L, idx, "window", 1, 30 * 86400.0, &s->window, err, errlen) ||
        read_types(L, idx, "clicks", s->clicks, &s->nclick, err, errlen) ||
        read_types(L, idx, "conversions", s->convs, &s->nconv, err, errlen))
        return REC_EINVAL;
    if (k != floor(k) || bits != floor(bits)) {
        snprintf(err, errlen, "model.k and model.bits must be integers");
        return REC_EINVAL;
    }
    s->opts.k = (uint32_t)k;
    s->opts.bits = (uint32_t)bits;
    s->opts.alpha = (float)a;
    s->opts.beta = (float)b;
    s->opts.l1 = (float)l1;
    s->opts.l2 = (float)l2;
    s->opts.fm_lr = (float)flr;
    s->opts.fm_init = (float)fin;
    s->conversion = s->nconv > 0;
    if (lua_getfield(L, idx, "conversion") == LUA_TBOOLEAN)
        s->conversion = s->conversion && lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, idx, "features") != LUA_TTABLE) {
        lua_pop(L, 1);
        snprintf(err, errlen, "model.features must be an array of features");
        return REC_EINVAL;
    }
    size_t nf = lua_rawlen(L, -1);
    if (nf == 0 || nf > REC_CLICK_MAX_DECL) {
        lua_pop(L, 1);
        snprintf(err, errlen, "model.features: 1 to %d features", REC_CLICK_MAX_DECL);
        return REC_EINVAL;
    }
    for (size_t i = 0; i < nf; i++) {
        rec_click_decl *d = &s->d[i];
        char where[48];
        snprintf(where, sizeof where, "model.features[%zu]", i + 1);
        d->kind[1] = REC_CF_NONE;
        lua_rawgeti(L, -1, (lua_Integer)i + 1);
        int rc = 0;
        if (lua_type(L, -1) == LUA_TSTRING) {
            size_t sl;
            const char *str = lua_tolstring(L, -1, &sl);
            rc = parse_one(str, sl, &d->kind[0], d->arg[0], err, errlen, where);
            if (!rc)
                snprintf(d->name, sizeof d->name, "%s", str);
        } else if (lua_istable(L, -1) && lua_rawlen(L, -1) == 2) {
            const char *part[2];
            size_t pl[2];
            for (int j = 0; j < 2 && !rc; j++) {
                lua_rawgeti(L, -1, j + 1);
                part[j] = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &pl[j]) : NULL;
                lua_pop(L, 1); /* the string stays in the table */
                if (!part[j]) {
                    snprintf(err, errlen, "%s[%d] must be a feature name", where, j + 1);
                    rc = REC_EINVAL;
                } else {
                    rc = parse_one(part[j], pl[j], &d->kind[j], d->arg[j], err, errlen, where);
                }
            }
            if (!rc && (d->kind[0] == REC_CF_USER || d->kind[1] == REC_CF_USER)) {
                snprintf(err, errlen, "%s: user may not be crossed (its factors cross it with "
                         "every feature, and erase with it)", where);
                rc = REC_EINVAL;
            }
            if (!rc && (numeric(d->kind[0]) || numeric(d->kind[1]))) {
                snprintf(err, errlen, "%s: a cross takes two categorical features", where);
                rc = REC_EINVAL;
            }
            if (!rc)
                snprintf(d->name, sizeof d->name, "%.*s x %.*s", (int)pl[0], part[0],
                         (int)pl[1], part[1]);
        } else {
            snprintf(err, errlen, "%s must be a feature name or a pair of them", where);
            rc = REC_EINVAL;
        }
        lua_pop(L, 1);
        if (rc) {
            lua_pop(L, 1);
            return rc;
        }
    }
    lua_pop(L, 1);
    s->n = nf;
    uint64_t h = rec_hash_stable_add(REC_HASH_STABLE_INIT, &s->opts, sizeof s->opts);
    for (size_t i = 0; i < nf; i++)
        h = rec_hash_stable_add(h, s->d[i].name, strlen(s->d[i].name) + 1);
    s->hash = rec_hash_stable_end(h);
    return 0;
}

/* ---- the model and its waiting lists ---------------------------------------------- */

static void caches_free(rec_click *m);

int rec_click_new(rec_click **out) {
    *out = calloc(1, sizeof **out);
    return *out ? 0 : REC_ENOMEM;
}

static void drop_pending(rec_click *m) {
    free(m->ring);
    free(m->keys);
    free(m->vals);
    m->ring = NULL;
    m->keys = m->vals = NULL;
    m->cap = m->head = m->count = 0;
    m->mcap = m->mused = 0;
}

void rec_click_free(rec_click *m) {
    if (!m)
        return;
    rec_ctr_free(m->click);
    rec_ctr_free(m->conv);
    drop_pending(m);
    caches_free(m);
    free(m);
}

int rec_click_active(const rec_click *m) { return m && m->active; }
const rec_click_spec *rec_click_spec_of(const rec_click *m) {
    return m && m->active ? &m->spec : NULL;
}

static size_t slot_of(const rec_click *m, uint64_t rid) {
    size_t i = (size_t)(rid * 0x9E3779B97F4A7C15ull >> 17) & (m->mcap - 1);
    while (m->keys[i] && m->keys[i] != rid)
        i = (i + 1) & (m->mcap - 1);
    return i;
}

static int map_grow(rec_click *m) {
    size_t nc = m->mcap ? m->mcap * 2 : 1024;
    uint64_t *ok = m->keys, *ov = m->vals;
    size_t oc = m->mcap;
    m->keys = calloc(nc, sizeof *m->keys);
    m->vals = calloc(nc, sizeof *m->vals);
    if (!m->keys || !m->vals) {
        free(m->keys);
        free(m->vals);
        m->keys = ok;
        m->vals = ov;
        return REC_ENOMEM;
    }
    m->mcap = nc;
    for (size_t i = 0; i < oc; i++)
        if (ok[i]) {
            size_t s = slot_of(m, ok[i]);
            m->keys[s] = ok[i];
            m->vals[s] = ov[i];
        }
    free(ok);
    free(ov);
    return 0;
}

/* Remove rid from the map (backward-shift deletion). */
static void map_del(rec_click *m, uint64_t rid) {
    if (!m->mcap)
        return;
    size_t i = slot_of(m, rid);
    if (!m->keys[i])
        return;
    m->keys[i] = 0;
    m->mused--;
    size_t j = i;
    for (;;) {
        j = (j + 1) & (m->mcap - 1);
        if (!m->keys[j])
            break;
        size_t home = (size_t)(m->keys[j] * 0x9E3779B97F4A7C15ull >> 17) & (m->mcap - 1);
        /* j's entry may move to i when its home is not in (i, j] */
        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            m->keys[i] = m->keys[j];
            m->vals[i] = m->vals[j];
            m->keys[j] = 0;
            i = j;
        }
    }
}

static pending *find_pending(const rec_click *m, uint64_t rid) {
    if (!m->mcap || !rid)
        return NULL;
    size_t s = slot_of(m, rid);
    if (!m->keys[s])
        return NULL;
    uint64_t abs = m->vals[s];
    if (abs < m->base || abs - m->base >= m->count)
        return NULL;
    return &m->ring[(m->head + (size_t)(abs - m->base)) % m->cap];
}

static int push_pending(rec_click *m, uint64_t rid, double ts, uint32_t n) {
    if (!rid)
        return REC_EINVAL;
    if (m->count == m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 256;
        pending *r = malloc(nc * sizeof *r);
        if (!r)
            return REC_ENOMEM;
        for (size_t i = 0; i < m->count; i++)
            r[i] = m->ring[(m->head + i) % m->cap];
        free(m->ring);
        m->ring = r;
        m->cap = nc;
        m->head = 0;
    }
    if ((m->mused + 1) * 4 > m->mcap * 3 && map_grow(m))
        return REC_ENOMEM;
    size_t s = slot_of(m, rid);
    if (m->keys[s]) /* the same id twice: the first stays */
        return 0;
    pending *p = &m->ring[(m->head + m->count) % m->cap];
    memset(p, 0, sizeof *p);
    p->rid = rid;
    p->ts = ts;
    p->n = n > MAX_SLOTS ? MAX_SLOTS : n;
    m->keys[s] = rid;
    m->vals[s] = m->base + m->count;
    m->mused++;
    m->count++;
    return 0;
}

static void pop_pending(rec_click *m) {
    map_del(m, m->ring[m->head].rid);
    m->head = (m->head + 1) % m->cap;
    m->count--;
    m->base++;
}

static int same_shape(const rec_ctr_opts *a, const rec_ctr_opts *b) {
    return a->bits == b->bits && a->k == b->k && a->alpha == b->alpha && a->beta == b->beta &&
           a->l1 == b->l1 && a->l2 == b->l2 && a->fm_lr == b->fm_lr && a->fm_init == b->fm_init;
}

static void caches_free(rec_click *m) {
    for (size_t i = 0; i < m->npc; i++)
        free(m->pc[i].h);
    memset(m->pc, 0, sizeof m->pc);
    m->npc = 0;
}

/* One cache per property the features read. */
static void caches_set(rec_click *m, const rec_click_spec *s) {
    caches_free(m);
    for (size_t i = 0; i < s->n; i++)
        for (int j = 0; j < 2; j++) {
            uint8_t k = s->d[i].kind[j];
            m->ci[i][j] = -1;
            if (k != REC_CF_PROP && k != REC_CF_TASTE && k != REC_CF_IGNORED)
                continue;
            size_t c = 0;
            while (c < m->npc && strcmp(m->pc[c].name, s->d[i].arg[j]))
                c++;
            if (c == m->npc)
                snprintf(m->pc[m->npc++].name, REC_CLICK_NAME_MAX, "%s", s->d[i].arg[j]);
            m->ci[i][j] = (int8_t)c;
        }
}

void rec_click_item_changed(rec_click *m, uint32_t idx) {
    if (!m)
        return;
    for (size_t i = 0; i < m->npc; i++)
        if (idx < m->pc[i].cap)
            m->pc[i].h[idx] = 0;
}

static int configure(rec_click *m, const rec_click_spec *s) {
    caches_set(m, s);
    if (m->click && same_shape(rec_ctr_options(m->click), &s->opts)) {
        if (s->conversion && !m->conv && rec_ctr_new(&m->conv, &s->opts))
            return REC_ENOMEM;
        m->spec = *s;
        m->active = 1;
        return 0;
    }
    rec_ctr *c = NULL, *v = NULL;
    if (rec_ctr_new(&c, &s->opts) || (s->conversion && rec_ctr_new(&v, &s->opts))) {
        rec_ctr_free(c);
        return REC_ENOMEM;
    }
    if (m->click)
        m->replaced = 1;
    rec_ctr_free(m->click);
    rec_ctr_free(m->conv);
    m->click = c;
    m->conv = v;
    m->spec = *s;
    m->active = 1;
    return 0;
}

int rec_click_set(rec_click *m, const rec_click_spec *s) {
    if (!s) {
        m->active = 0;
        return 0;
    }
    return configure(m, s);
}

int rec_click_sync(rec_click *m, rec_script_rt *rt) {
    if (!rt)
        return m->active;
    /* per event and per request: only a load or a removal reads again */
    uint64_t gen = rec_script_generation(rt);
    if (m->synced && m->rt == rt && m->generation == gen)
        return m->active;
    m->synced = 1;
    m->rt = rt;
    m->generation = gen;
    rec_script_info in;
    lua_State *L = rec_script_lua(rt);
    int found = 0;
    for (size_t i = 0; i < rec_script_count(rt) && !found; i++) {
        if (rec_script_info_at(rt, i, &in) || in.kind != REC_SCRIPT_POLICY || !in.loaded)
            continue;
        if (!rec_script_push(rt, REC_SCRIPT_POLICY, in.name))
            continue;
        if (lua_getfield(L, -1, "model") == LUA_TTABLE) {
            rec_click_spec s;
            char err[256];
            /* checked when the policy loaded (rec_click_spec_read) */
            if (!rec_click_spec_read(L, -1, &s, err, sizeof err) && !configure(m, &s))
                found = 1;
        }
        lua_pop(L, 2);
    }
    if (!found)
        m->active = 0;
    return m->active;
}

/* ---- features ---------------------------------------------------------------------- */

#define TASTE_N 50
#define LIKE_N 20
#define LIKE_SPACES 4
#define SHOWN_SLOTS 512 /* > 2 x REC_SHOWN_PER_USER */
#define SHARE_SLOTS 512

static uint32_t mix32(uint64_t x) { return (uint32_t)((x * 0x9E3779B97F4A7C15ull) >> 32); }

typedef struct fctx {
    rec_click *m;
    /* the person's newest positive events, newest first */
    uint32_t hist[TASTE_N];
    float hw[TASTE_N];
    uint32_t nhist;
    /* their mean vectors per space (like:) */
    const rec_space *lsp[LIKE_SPACES];
    float *lvec[LIKE_SPACES];
    size_t nl;
    rec_engine *e;
    const rec_click_ask *a;
    msgpack_unpacked ctx;
    int has_ctx;
    const rec_shown_entry *shown;
    uint32_t nshown;
    uint16_t shown_at[SHOWN_SLOTS]; /* item -> 1 + its entry, by hash; 0 empty */
    /* taste: and ignored: per property cache, built on first use: value
     * hash -> summed weight, by hash (key 0 empty), and the total */
    struct share {
        int built;
        double total;
        uint64_t key[SHARE_SLOTS];
        double sum[SHARE_SLOTS];
    } *share[2][REC_CLICK_MAX_DECL];
    char hour[24];
    rec_buf props;
} fctx;

static void fctx_open(fctx *f, rec_click *m, rec_engine *e, const rec_click_ask *a) {
    memset(f, 0, sizeof *f);
    f->m = m;
    f->e = e;
    f->a = a;
    msgpack_unpacked_init(&f->ctx);
    size_t off = 0;
    f->has_ctx = a->context && a->clen &&
                 msgpack_unpack_next(&f->ctx, a->context, a->clen, &off) == MSGPACK_UNPACK_SUCCESS &&
                 f->ctx.data.type == MSGPACK_OBJECT_MAP;
    f->shown = rec_shown_list(rec_engine_shown(e), a->ukey, a->ulen, &f->nshown);
    if (f->nshown > REC_SHOWN_PER_USER)
        f->nshown = REC_SHOWN_PER_USER;
    for (uint32_t i = 0; i < f->nshown; i++) {
        uint32_t j = mix32(f->shown[i].item) & (SHOWN_SLOTS - 1);
        while (f->shown_at[j])
            j = (j + 1) & (SHOWN_SLOTS - 1);
        f->shown_at[j] = (uint16_t)(i + 1);
    }
    uint32_t user = rec_engine_lookup(e, REC_KIND_USER, a->ukey, a->ulen), hn = 0;
    const rec_hentry *h =
        user == REC_IDX_NONE ? NULL : rec_graph_history(rec_engine_graph(e), user, &hn);
    for (uint32_t i = hn; i-- > 0 && f->nhist < TASTE_N;)
        if (h[i].weight > 0 && h[i].ts <= a->now) {
            f->hist[f->nhist] = h[i].item;
            f->hw[f->nhist++] = h[i].weight;
        }
    int hr = (int)fmod(floor(a->now / 3600.0), 24.0);
    snprintf(f->hour, sizeof f->hour, "%d", hr < 0 ? hr + 24 : hr);
}

static void fctx_close(fctx *f) {
    for (size_t i = 0; i < f->nl; i++)
        free(f->lvec[i]);
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < REC_CLICK_MAX_DECL; i++)
            free(f->share[k][i]);
    msgpack_unpacked_destroy(&f->ctx);
    rec_buf_free(&f->props);
}

/* A categorical value of a msgpack object as bytes in buf; 0 when it has
 * none (nil, containers). */
static size_t object_text(const msgpack_object *o, char *buf, size_t cap, const char **out) {
    int n;
    switch (o->type) {
    case MSGPACK_OBJECT_STR:
        *out = o->via.str.ptr;
        return o->via.str.size;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        n = snprintf(buf, cap, "%llu", (unsigned long long)o->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        n = snprintf(buf, cap, "%lld", (long long)o->via.i64);
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        n = snprintf(buf, cap, "%s", o->via.boolean ? "true" : "false");
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        n = snprintf(buf, cap, "%.9g", o->via.f64);
        break;
    default:
        return 0;
    }
    *out = buf;
    return n > 0 ? (size_t)n : 0;
}

/* Read item's properties into every cache (once per item until it
 * changes). */
static void cache_fill(fctx *f, uint32_t item) {
    rec_click *m = f->m;
    uint32_t bound = rec_engine_bound(f->e, REC_KIND_ITEM);
    for (size_t i = 0; i < m->npc; i++)
        if (m->pc[i].cap < bound) {
            uint32_t nc = bound + bound / 2 + 64;
            uint64_t *h = realloc(m->pc[i].h, (size_t)nc * sizeof *h);
            if (!h)
                return;
            memset(h + m->pc[i].cap, 0, (size_t)(nc - m->pc[i].cap) * sizeof *h);
            m->pc[i].h = h;
            m->pc[i].cap = nc;
        }
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    int active;
    size_t off = 0;
    rec_buf_clear(&f->props);
    int ok = !rec_engine_get(f->e, REC_KIND_ITEM, item, &f->props, &active) && f->props.len &&
             msgpack_unpack_next(&up, f->props.data, f->props.len, &off) ==
                 MSGPACK_UNPACK_SUCCESS &&
             up.data.type == MSGPACK_OBJECT_MAP;
    for (size_t i = 0; i < m->npc; i++) {
        const msgpack_object *o = ok ? rec_value_field(&up.data, m->pc[i].name) : NULL;
        char buf[48];
        const char *v;
        size_t len = o ? object_text(o, buf, sizeof buf, &v) : 0;
        uint64_t hv = len ? rec_hash_stable(v, len) : 1;
        m->pc[i].h[item] = hv < 2 ? hv + 2 : hv;
        if (!len)
            m->pc[i].h[item] = 1;
    }
    msgpack_unpacked_destroy(&up);
}

/* The hash of item's value of the property of cache c (0: none). */
static uint64_t prop_hash(fctx *f, uint32_t item, int c) {
    rec_click *m = f->m;
    if (c < 0 || (size_t)c >= m->npc)
        return 0;
    if (item >= m->pc[c].cap || m->pc[c].h[item] == 0)
        cache_fill(f, item);
    uint64_t h = item < m->pc[c].cap ? m->pc[c].h[item] : 1;
    return h == 1 || h == 0 ? 0 : h;
}

/* The person's shown entry of item, or NULL. */
static const rec_shown_entry *shown_of(const fctx *f, uint32_t item) {
    for (uint32_t j = mix32(item) & (SHOWN_SLOTS - 1); f->shown_at[j];
         j = (j + 1) & (SHOWN_SLOTS - 1))
        if (f->shown[f->shown_at[j] - 1].item == item)
            return &f->shown[f->shown_at[j] - 1];
    return NULL;
}

/* The share of the person's weight (ignored = 0: their newest positive
 * events; 1: what they were shown without engaging) on items whose value
 * of cache c's property hashes to h. */
static double share_of(fctx *f, int ignored, int c, uint64_t h) {
    if (c < 0)
        return 0;
    struct share *t = f->share[ignored][c];
    if (!t) {
        t = f->share[ignored][c] = calloc(1, sizeof *t);
        if (!t)
            return 0;
        uint32_t n = ignored ? f->nshown : f->nhist;
        for (uint32_t i = 0; i < n; i++) {
            double w = ignored ? (double)f->shown[i].weight : (double)f->hw[i];
            uint64_t v = prop_hash(f, ignored ? f->shown[i].item : f->hist[i], c);
            t->total += w;
            if (!v)
                continue;
            uint32_t j = mix32(v) & (SHARE_SLOTS - 1);
            while (t->key[j] && t->key[j] != v)
                j = (j + 1) & (SHARE_SLOTS - 1);
            t->key[j] = v;
            t->sum[j] += w;
        }
    }
    if (!h || !(t->total > 0))
        return 0;
    for (uint32_t j = mix32(h) & (SHARE_SLOTS - 1); t->key[j]; j = (j + 1) & (SHARE_SLOTS - 1))
        if (t->key[j] == h)
            return t->sum[j] / t->total;
    return 0;
}

static float vec_len(const float *v, uint32_t n) { return sqrtf(rec_vec_norm2(v, n)); }

/* The person's mean vector in space `name` (NULL when none). */
static const float *like_profile(fctx *f, const rec_space *sp) {
    for (size_t i = 0; i < f->nl; i++)
        if (f->lsp[i] == sp)
            return f->lvec[i];
    if (f->nl == LIKE_SPACES)
        return NULL;
    float *v = calloc(sp->dim, sizeof *v);
    if (!v)
        return NULL;
    int any = 0;
    for (uint32_t i = 0; i < f->nhist && i < LIKE_N; i++) {
        const float *r = rec_space_get(sp, REC_KIND_ITEM, f->hist[i]);
        if (!r)
            continue;
        float nr = vec_len(r, sp->dim);
        if (nr <= 0)
            continue;
        for (uint32_t d = 0; d < sp->dim; d++)
            v[d] += r[d] / nr;
        any = 1;
    }
    float nv = any ? vec_len(v, sp->dim) : 0;
    if (nv <= 0) {
        free(v);
        v = NULL;
    } else {
        for (uint32_t d = 0; d < sp->dim; d++)
            v[d] /= nv;
    }
    f->lsp[f->nl] = sp;
    f->lvec[f->nl++] = v;
    return v;
}

/* The value of one base feature: categorical (bytes into *v, length
 * returned, > 0), numeric (*x set, returns 0 with *v NULL), or absent (-1). */
static long base_value(fctx *f, const rec_click_cand *c, uint8_t kind, const char *arg,
                       int ci, char *buf, size_t cap, const char **v, float *x) {
    const msgpack_object *o;
    size_t len;
    *v = NULL;
    switch ((rec_click_fkind)kind) {
    case REC_CF_ITEM:
        *v = rec_engine_key(f->e, REC_KIND_ITEM, c->item, &len);
        return *v ? (long)len : -1;
    case REC_CF_USER:
        *v = f->a->ukey;
        return f->a->ulen ? (long)f->a->ulen : -1;
    case REC_CF_POSITION:
        *v = buf;
        return snprintf(buf, cap, "%u", c->position);
    case REC_CF_STRATEGY:
        *v = c->strategy ? c->strategy : "policy";
        return (long)strlen(*v);
    case REC_CF_HOUR:
        *v = f->hour;
        return (long)strlen(f->hour);
    case REC_CF_SCORE:
        *x = isfinite(c->score) ? (float)fmax(-1e3, fmin(1e3, c->score)) : 0.0f;
        return 0;
    case REC_CF_SHOWN:
    case REC_CF_SHOWS: {
        const rec_shown_entry *se = shown_of(f, c->item);
        *x = !se ? 0.0f : kind == REC_CF_SHOWN ? se->weight : (float)se->count;
        return 0;
    }
    case REC_CF_COUNTER: {
        rec_counter *ct = rec_engine_counter(f->e, arg);
        double val = ct ? rec_counter_get(ct, c->item, f->a->now) : 0.0;
        *x = (float)log1p(val > 0 ? val : 0.0);
        return 0;
    }
    case REC_CF_PROP: { /* the value's hash stands for it */
        uint64_t h = prop_hash(f, c->item, ci);
        if (!h || cap < 8)
            return -1;
        memcpy(buf, &h, 8);
        *v = buf;
        return 8;
    }
    case REC_CF_TASTE:
    case REC_CF_IGNORED:
        *x = (float)share_of(f, kind == REC_CF_IGNORED, ci, prop_hash(f, c->item, ci));
        return 0;
    case REC_CF_LIKE: {
        *x = 0.0f;
        const rec_space *sp = rec_engine_space(f->e, arg);
        const float *pv = sp ? like_profile(f, sp) : NULL;
        const float *r = pv ? rec_space_get(sp, REC_KIND_ITEM, c->item) : NULL;
        /* the row's 1 / norm, kept by the space (0 for a zero row) */
        float inr = r ? sp->m[REC_KIND_ITEM].inv_norms[c->item] : 0;
        if (inr > 0)
            *x = rec_vec_dot(pv, r, sp->dim) * inr;
        return 0;
    }
    case REC_CF_CTX:
        o = f->has_ctx ? rec_value_field(&f->ctx.data, arg) : NULL;
        if (!o)
            return -1;
        len = object_text(o, buf, cap, v);
        return len ? (long)len : -1;
    case REC_CF_NONE:
        break;
    }
    return -1;
}

/* The features of candidate c (all, or only the shared or only the
 * per-item ones: which = 0 all, 1 shared, 2 per item) into out. */
static size_t features(fctx *f, const rec_click_cand *c, int which, rec_ctr_feat *out) {
    const rec_click_spec *s = &f->m->spec;
    const rec_ctr *model = f->m->click;
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++) {
        const rec_click_decl *d = &s->d[i];
        int item_dep = per_item(d->kind[0]) || (d->kind[1] != REC_CF_NONE && per_item(d->kind[1]));
        if ((which == 1 && item_dep) || (which == 2 && !item_dep))
            continue;
        char b0[48], b1[48];
        const char *v0, *v1;
        float x = 1.0f;
        long l0 = base_value(f, c, d->kind[0], d->arg[0], f->m->ci[i][0], b0, sizeof b0, &v0, &x);
        if (l0 < 0)
            continue;
        size_t nl = strlen(d->name);
        if (d->kind[1] == REC_CF_NONE) {
            uint32_t idx = v0 ? rec_ctr_index(model, d->name, nl, v0, (size_t)l0)
                              : rec_ctr_index(model, d->name, nl, NULL, 0);
            out[n++] = (rec_ctr_feat){.idx = idx, .x = v0 ? 1.0f : x};
            continue;
        }
        long l1 = base_value(f, c, d->kind[1], d->arg[1], f->m->ci[i][1], b1, sizeof b1, &v1, &x);
        if (l1 < 0 || !v0 || !v1)
            continue;
        char pair[512];
        if ((size_t)l0 + (size_t)l1 + 1 > sizeof pair)
            continue;
        memcpy(pair, v0, (size_t)l0);
        pair[l0] = '\x1e';
        memcpy(pair + l0 + 1, v1, (size_t)l1);
        out[n++] = (rec_ctr_feat){
            .idx = rec_ctr_index(model, d->name, nl, pair, (size_t)(l0 + l1 + 1)), .x = 1.0f};
    }
    return n;
}

int rec_click_predict(rec_click *m, rec_engine *e, const rec_click_ask *a,
                      const rec_click_cand *c, size_t n, double *pclick, double *pconv,
                      double *sd) {
    if (!m->active)
        return REC_ENOTFOUND;
    if (!n)
        return 0;
    fctx f;
    fctx_open(&f, m, e, a);
    rec_ctr_feat shared[REC_CLICK_MAX_DECL];
    rec_click_cand c0 = c[0];
    c0.position = 0;
    size_t ns = features(&f, &c0, 1, shared);
    rec_ctr_feat *cand = malloc(n * REC_CLICK_MAX_DECL * sizeof *cand);
    uint32_t *off = malloc((n + 1) * sizeof *off);
    double *lg = malloc(n * sizeof *lg);
    int rc = cand && off && lg ? 0 : REC_ENOMEM;
    if (!rc) {
        off[0] = 0;
        for (size_t i = 0; i < n; i++) {
            rec_click_cand ci = c[i];
            ci.position = 0; /* predicted at the top: position bias does not rank */
            off[i + 1] = off[i] + (uint32_t)features(&f, &ci, 2, cand + off[i]);
        }
        rc = rec_ctr_score(m->click, shared, ns, cand, off, n, lg);
        for (size_t i = 0; i < n && !rc; i++)
            pclick[i] = rec_ctr_sigmoid(lg[i]);
        if (!rc && sd)
            rc = rec_ctr_score_sd(m->click, shared, ns, cand, off, n, sd);
        if (!rc && pconv) {
            if (m->conv) {
                rc = rec_ctr_score(m->conv, shared, ns, cand, off, n, lg);
                for (size_t i = 0; i < n && !rc; i++)
                    pconv[i] = rec_ctr_sigmoid(lg[i]);
            } else {
                for (size_t i = 0; i < n; i++)
                    pconv[i] = NAN;
            }
        }
    }
    free(cand);
    free(off);
    free(lg);
    fctx_close(&f);
    return rc;
}

/* Record bytes: "RC1", bits u8, k u8, then per slot a count u8 and that
 * many (bucket u32, x f32), little-endian as the machine's. */
#define ENC_MAGIC "RC1"

int rec_click_encode(rec_click *m, rec_engine *e, const rec_click_ask *a,
                     const rec_click_cand *c, size_t n, rec_buf *out) {
    if (!m->active)
        return REC_ENOTFOUND;
    fctx f;
    fctx_open(&f, m, e, a);
    const rec_ctr_opts *o = rec_ctr_options(m->click);
    unsigned char head[5] = {'R', 'C', '1', (unsigned char)o->bits, (unsigned char)o->k};
    int rc = rec_buf_append(out, head, sizeof head);
    for (size_t i = 0; i < n && i < MAX_SLOTS && !rc; i++) {
        rec_ctr_feat fs[REC_CLICK_MAX_DECL];
        size_t nf = features(&f, &c[i], 0, fs);
        unsigned char cnt = (unsigned char)nf;
        rc = rec_buf_append(out, &cnt, 1);
        for (size_t j = 0; j < nf && !rc; j++) {
            rc = rec_buf_append(out, &fs[j].idx, 4);
            if (!rc)
                rc = rec_buf_append(out, &fs[j].x, 4);
        }
    }
    fctx_close(&f);
    return rc;
}

int rec_click_served(rec_click *m, uint64_t rec_id, double ts, uint32_t n) {
    if (!m->active)
        return 0;
    int rc = push_pending(m, rec_id, ts, n);
    m->served += rc == 0;
    m->changed = 1;
    return rc;
}

/* A list's record: its items and the bytes rec_click_encode wrote. */
typedef struct record {
    rec_buf raw;
    msgpack_unpacked up;
    const msgpack_object *items;
    const char *f;
    size_t flen;
} record;

static int record_read(rec_click *m, rec_engine *e, uint64_t rid, record *r) {
    memset(r, 0, sizeof *r);
    msgpack_unpacked_init(&r->up);
    if (rec_engine_rec_get(e, rid, &r->raw) || r->raw.len < 5)
        return REC_ENOTFOUND;
    size_t off = 0;
    if (msgpack_unpack_next(&r->up, r->raw.data + 4, r->raw.len - 4, &off) !=
            MSGPACK_UNPACK_SUCCESS ||
        r->up.data.type != MSGPACK_OBJECT_MAP)
        return REC_ECORRUPT;
    r->items = rec_value_field(&r->up.data, "items");
    const msgpack_object *fo = rec_value_field(&r->up.data, "f");
    const rec_ctr_opts *o = rec_ctr_options(m->click);
    if (!r->items || r->items->type != MSGPACK_OBJECT_ARRAY || !fo ||
        fo->type != MSGPACK_OBJECT_BIN || fo->via.bin.size < 5 ||
        memcmp(fo->via.bin.ptr, ENC_MAGIC, 3) ||
        (unsigned char)fo->via.bin.ptr[3] != o->bits || (unsigned char)fo->via.bin.ptr[4] != o->k)
        return REC_ENOTFOUND; /* not logged, or for another model's buckets */
    r->f = fo->via.bin.ptr + 5;
    r->flen = fo->via.bin.size - 5;
    return 0;
}

static void record_close(record *r) {
    msgpack_unpacked_destroy(&r->up);
    rec_buf_free(&r->raw);
}

/* The features of slot `slot` (copied into fs, count returned; -1 when
 * the bytes end early). */
static long slot_features(const record *r, uint32_t slot, rec_ctr_feat *fs) {
    size_t p = 0;
    for (uint32_t i = 0;; i++) {
        if (p >= r->flen)
            return -1;
        size_t cnt = (unsigned char)r->f[p++];
        if (p + cnt * 8 > r->flen)
            return -1;
        if (i == slot) {
            for (size_t j = 0; j < cnt; j++) {
                memcpy(&fs[j].idx, r->f + p + j * 8, 4);
                memcpy(&fs[j].x, r->f + p + j * 8 + 4, 4);
            }
            return (long)cnt;
        }
        p += cnt * 8;
    }
}

static int type_in(char (*list)[REC_CLICK_NAME_MAX], size_t n, const char *t, size_t tl) {
    for (size_t i = 0; i < n; i++)
        if (strlen(list[i]) == tl && memcmp(list[i], t, tl) == 0)
            return 1;
    return 0;
}

static uint64_t parse_rid(const char *s, size_t n) {
    if (n != 16)
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
        if (d < 0)
            return 0;
        v = v << 4 | (uint64_t)d;
    }
    return v;
}

int rec_click_feedback(rec_click *m, rec_engine *e, const char *rec_id, size_t rl,
                       uint32_t item, const char *type, size_t tl, double ts) {
    (void)ts;
    if (!m->active || !rl)
        return 0;
    int conv = type_in(m->spec.convs, m->spec.nconv, type, tl);
    if (!conv && !type_in(m->spec.clicks, m->spec.nclick, type, tl))
        return 0;
    uint64_t rid = parse_rid(rec_id, rl);
    pending *p = find_pending(m, rid);
    if (!p) {
        m->late++;
        return 0;
    }
    record r;
    int rc = record_read(m, e, rid, &r);
    if (rc) {
        record_close(&r);
        m->unmatched++;
        return rc == REC_ENOMEM ? rc : 0;
    }
    uint32_t slot = UINT32_MAX;
    for (uint32_t i = 0; i < r.items->via.array.size && i < p->n; i++)
        if (r.items->via.array.ptr[i].type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
            r.items->via.array.ptr[i].via.u64 == item) {
            slot = i;
            break;
        }
    rec_ctr_feat fs[FEATS_PER_SLOT];
    long nf = slot == UINT32_MAX ? -1 : slot_features(&r, slot, fs);
    if (nf < 0) {
        record_close(&r);
        m->unmatched++;
        return 0;
    }
    uint64_t bit = 1ull << (slot & 63);
    m->changed = 1;
    if (!(p->clicked[slot >> 6] & bit)) {
        p->clicked[slot >> 6] |= bit;
        rc = rec_ctr_learn(m->click, fs, (size_t)nf, 1.0, NULL);
        m->clicks += rc == 0;
    }
    if (!rc && conv && m->conv && !(p->converted[slot >> 6] & bit)) {
        p->converted[slot >> 6] |= bit;
        rc = rec_ctr_learn(m->conv, fs, (size_t)nf, 1.0, NULL);
        m->conversions += rc == 0;
    }
    record_close(&r);
    return rc == REC_EINVAL ? 0 : rc;
}

int rec_click_expire(rec_click *m, rec_engine *e, double now) {
    if (!m->active)
        return 0;
    while (m->count) {
        pending *p = &m->ring[m->head];
        if (!(p->ts + m->spec.window <= now))
            break;
        record r;
        if (!record_read(m, e, p->rid, &r)) {
            for (uint32_t i = 0; i < p->n; i++) {
                rec_ctr_feat fs[FEATS_PER_SLOT];
                long nf = slot_features(&r, i, fs);
                if (nf < 0)
                    break;
                uint64_t bit = 1ull << (i & 63);
                if (!(p->clicked[i >> 6] & bit)) {
                    m->negatives += rec_ctr_learn(m->click, fs, (size_t)nf, 0.0, NULL) == 0;
                } else if (m->conv && !(p->converted[i >> 6] & bit)) {
                    (void)rec_ctr_learn(m->conv, fs, (size_t)nf, 0.0, NULL);
                }
            }
        }
        record_close(&r);
        pop_pending(m);
        m->changed = 1;
    }
    return 0;
}

void rec_click_forget(rec_click *m, const char *ukey, size_t ulen) {
    if (!m->click)
        return;
    for (size_t i = 0; i < m->spec.n; i++)
        if (m->spec.d[i].kind[0] == REC_CF_USER && m->spec.d[i].kind[1] == REC_CF_NONE) {
            const char *nm = m->spec.d[i].name;
            m->changed = 1;
            rec_ctr_row_reset(m->click, rec_ctr_index(m->click, nm, strlen(nm), ukey, ulen));
            if (m->conv)
                rec_ctr_row_reset(m->conv, rec_ctr_index(m->conv, nm, strlen(nm), ukey, ulen));
        }
}

void rec_click_info_get(const rec_click *m, rec_click_info *out) {
    memset(out, 0, sizeof *out);
    out->active = m->active;
    out->served = m->served;
    out->pending = m->count;
    out->clicks = m->clicks;
    out->conversions = m->conversions;
    out->negatives = m->negatives;
    out->late = m->late;
    out->unmatched = m->unmatched;
    if (m->click)
        rec_ctr_stats_get(m->click, &out->click);
    if (m->conv)
        rec_ctr_stats_get(m->conv, &out->conv);
}

/* ---- persistence -------------------------------------------------------------------- */

/* meta "click": "RCK1", has_conv u8, head sizes u32 x2, the heads, the
 * counts (6 x u64), then the waiting lists (count u64, each pending). */
#define META_KEY "click"

static int flush_rows(rec_ctr *c, unsigned char which, rec_batch *b, int all) {
    size_t rb = rec_ctr_row_bytes(c);
    unsigned char *row = malloc(rb), *zero = calloc(1, rb);
    int rc = row && zero ? 0 : REC_ENOMEM;
    const rec_ctr_opts *o = rec_ctr_options(c);
    uint64_t nrows = ((uint64_t)1 << o->bits) + 1;
    for (int64_t i = all ? 0 : rec_ctr_dirty_next(c, 0); !rc && i >= 0 && (uint64_t)i < nrows;
         i = all ? i + 1 : rec_ctr_dirty_next(c, (uint64_t)i + 1)) {
        unsigned char key[5];
        key[0] = which;
        rec_be32(key + 1, (uint32_t)i);
        rc = rec_ctr_row_get(c, (uint64_t)i, row);
        if (rc)
            break;
        rc = memcmp(row, zero, rb) == 0 ? rec_batch_del(b, REC_DB_MODELS, key, 5)
                                        : rec_batch_put(b, REC_DB_MODELS, key, 5, row, rb);
    }
    free(row);
    free(zero);
    return rc;
}

int rec_click_flush(rec_click *m, rec_batch *b) {
    if (!m->click)
        return 0;
    int rc = 0;
    if (m->replaced)
        rc = rec_batch_del_prefix(b, REC_DB_MODELS, NULL, 0);
    if (!rc)
        rc = flush_rows(m->click, 0, b, m->replaced);
    if (!rc && m->conv)
        rc = flush_rows(m->conv, 1, b, m->replaced);
    if (rc)
        return rc;
    rec_buf h = REC_BUF_INIT, hc = REC_BUF_INIT, hv = REC_BUF_INIT;
    rc = rec_ctr_save_head(m->click, &hc);
    if (!rc && m->conv)
        rc = rec_ctr_save_head(m->conv, &hv);
    uint32_t l1 = (uint32_t)hc.len, l2 = (uint32_t)hv.len;
    unsigned char has = m->conv != NULL;
    uint64_t counts[6] = {m->served, m->clicks, m->conversions, m->negatives, m->late,
                          m->unmatched};
    uint64_t np = m->count;
    rc = rc || rec_buf_append(&h, "RCK1", 4) || rec_buf_append(&h, &has, 1) ||
         rec_buf_append(&h, &l1, 4) || rec_buf_append(&h, &l2, 4) ||
         rec_buf_append(&h, hc.data, hc.len) || rec_buf_append(&h, hv.data, hv.len) ||
         rec_buf_append(&h, counts, sizeof counts) || rec_buf_append(&h, &np, 8);
    for (size_t i = 0; i < m->count && !rc; i++)
        rc = rec_buf_append(&h, &m->ring[(m->head + i) % m->cap], sizeof(pending));
    if (!rc)
        rc = rec_batch_put(b, REC_DB_META, META_KEY, strlen(META_KEY), h.data, h.len);
    rec_buf_free(&h);
    rec_buf_free(&hc);
    rec_buf_free(&hv);
    return rc;
}

int rec_click_dirty(const rec_click *m) { return m && (m->changed || m->replaced); }

void rec_click_clean(rec_click *m) {
    m->replaced = 0;
    m->changed = 0;
    if (m->click)
        rec_ctr_dirty_clear(m->click);
    if (m->conv)
        rec_ctr_dirty_clear(m->conv);
}

typedef struct load_ctx {
    rec_click *m;
    int rc;
} load_ctx;

static int load_row(void *ud, rec_val k, rec_val v) {
    load_ctx *c = ud;
    if (k.len != 5)
        return 0;
    const unsigned char *kp = k.data;
    rec_ctr *t = kp[0] == 0 ? c->m->click : kp[0] == 1 ? c->m->conv : NULL;
    if (!t || v.len != rec_ctr_row_bytes(t))
        return 0;
    uint32_t b = (uint32_t)kp[1] << 24 | (uint32_t)kp[2] << 16 | (uint32_t)kp[3] << 8 | kp[4];
    (void)rec_ctr_row_set(t, b, v.data);
    return 0;
}

int rec_click_load(rec_click *m, rec_store *s) {
    rec_buf h = REC_BUF_INIT;
    int rc = rec_store_get(s, REC_DB_META, META_KEY, strlen(META_KEY), &h);
    if (rc == REC_ENOTFOUND)
        return 0;
    if (rc)
        return rc;
    const char *p = h.data, *end = h.data + h.len;
    uint32_t l1, l2;
    unsigned char has;
    rc = REC_ECORRUPT;
    if (h.len < 13 || memcmp(p, "RCK1", 4))
        goto out;
    has = (unsigned char)p[4];
    memcpy(&l1, p + 5, 4);
    memcpy(&l2, p + 9, 4);
    p += 13;
    if ((size_t)(end - p) < (size_t)l1 + l2 + 56)
        goto out;
    rec_ctr *c = NULL, *v = NULL;
    if (rec_ctr_load_head(&c, p, l1) || (has && rec_ctr_load_head(&v, p + l1, l2))) {
        rec_ctr_free(c);
        goto out;
    }
    p += l1 + l2;
    rec_ctr_free(m->click);
    rec_ctr_free(m->conv);
    m->click = c;
    m->conv = v;
    uint64_t counts[6], np;
    memcpy(counts, p, sizeof counts);
    memcpy(&np, p + 48, 8);
    p += 56;
    m->served = counts[0];
    m->clicks = counts[1];
    m->conversions = counts[2];
    m->negatives = counts[3];
    m->late = counts[4];
    m->unmatched = counts[5];
    if ((size_t)(end - p) != np * sizeof(pending))
        goto out;
    drop_pending(m);
    for (uint64_t i = 0; i < np; i++) {
        pending pe;
        memcpy(&pe, p + i * sizeof pe, sizeof pe);
        if (push_pending(m, pe.rid, pe.ts, pe.n)) {
            rc = REC_ENOMEM;
            goto out;
        }
        m->ring[(m->head + m->count - 1) % m->cap] = pe;
    }
    rec_rtxn *t = NULL;
    rc = rec_store_read_begin(s, &t);
    if (!rc) {
        load_ctx lc = {m, 0};
        rc = rec_rtxn_scan(t, REC_DB_MODELS, NULL, 0, 0, load_row, &lc);
        rec_store_read_end(t);
    }
    if (!rc) {
        rec_ctr_dirty_clear(m->click);
        if (m->conv)
            rec_ctr_dirty_clear(m->conv);
    }
out:
    rec_buf_free(&h);
    return rc;
}
