/* pipeline.c - pipeline config: parse, pick, experiment arms. */
#include "pipeline.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "input.h"
#include "hash.h"
#include "idmap.h"
#include "log.h"
#include "lua_api.h"
#include "rank.h"
#include "value.h"

static void set_name(char *dst, const char *src) {
    snprintf(dst, REC_PIPELINE_NAME_MAX + 1, "%s", src);
}

void rec_pipeline_config_default(rec_pipeline_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    rec_pipeline_pipeline *p = &cfg->pipelines[0];
    set_name(p->name, "default");
    set_name(p->strategies[0].name, "hybrid");
    p->strategies[0].weight = 1.0f;
    p->nstrategies = 1;
    p->all_policies = 1;
    cfg->npipelines = 1;
    set_name(cfg->default_name, "default");
}

static int name_ok(const char *s, size_t n) {
    if (n == 0 || n > REC_PIPELINE_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* Parse the pipeline table at the top of the stack. */
static int parse_pipeline(lua_State *L, rec_pipeline_pipeline *p, char *err,
                          size_t errlen) {
    lua_getfield(L, -1, "strategies");
    if (!lua_istable(L, -1)) {
        snprintf(err, errlen, "pipeline '%s': strategies must be a table "
                 "{name = weight, ...}", p->name);
        return REC_EINVAL;
    }
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        const char *sn = NULL;
        double w = 1.0;
        if (lua_type(L, -2) == LUA_TSTRING && lua_isnumber(L, -1)) {
            sn = lua_tostring(L, -2); /* {hybrid = 1.0} */
            w = lua_tonumber(L, -1);
        } else if (lua_type(L, -2) == LUA_TNUMBER && lua_type(L, -1) == LUA_TSTRING) {
            sn = lua_tostring(L, -1); /* {"hybrid"} */
        }
        if (!sn || !name_ok(sn, strlen(sn)) || !(w > 0 && w < 1e6) ||
            p->nstrategies == REC_PIPELINE_MAX_STRATEGIES) {
            snprintf(err, errlen, "pipeline '%s': strategies are {name = weight > 0} "
                     "(at most %d)", p->name, REC_PIPELINE_MAX_STRATEGIES);
            return REC_EINVAL;
        }
        set_name(p->strategies[p->nstrategies].name, sn);
        p->strategies[p->nstrategies++].weight = (float)w;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (p->nstrategies == 0) {
        snprintf(err, errlen, "pipeline '%s' has no strategy", p->name);
        return REC_EINVAL;
    }
    lua_getfield(L, -1, "policies");
    if (lua_isnil(L, -1)) {
        p->all_policies = 1;
    } else if (lua_istable(L, -1)) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            const char *pn = lua_tostring(L, -1);
            if (!pn || !name_ok(pn, strlen(pn)) || p->npolicies == REC_PIPELINE_MAX_POLICIES) {
                snprintf(err, errlen, "pipeline '%s': policies is a list of names",
                         p->name);
                return REC_EINVAL;
            }
            set_name(p->policies[p->npolicies++], pn);
            lua_pop(L, 1);
        }
    } else {
        snprintf(err, errlen, "pipeline '%s': policies must be a list", p->name);
        return REC_EINVAL;
    }
    lua_pop(L, 1);
    return 0;
}

static int find(const rec_pipeline_config *cfg, const char *name) {
    for (int i = 0; i < cfg->npipelines; i++)
        if (strcmp(cfg->pipelines[i].name, name) == 0)
            return i;
    return -1;
}

static int parse_config(lua_State *L, rec_pipeline_config *cfg, char *err, size_t errlen) {
    if (!lua_istable(L, -1)) {
        snprintf(err, errlen, "pipelines.lua must return a table");
        return REC_EINVAL;
    }
    lua_getfield(L, -1, "pipelines");
    if (!lua_istable(L, -1)) {
        snprintf(err, errlen, "pipelines.lua: `pipelines` must be a table of "
                 "name = {strategies = ..., policies = ...}");
        return REC_EINVAL;
    }
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        const char *pn = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        if (!pn || !name_ok(pn, strlen(pn)) || !lua_istable(L, -1) ||
            cfg->npipelines == REC_PIPELINE_MAX_PIPELINES) {
            snprintf(err, errlen, "pipelines.lua: each pipeline is name = {...} "
                     "(at most %d)", REC_PIPELINE_MAX_PIPELINES);
            return REC_EINVAL;
        }
        rec_pipeline_pipeline *p = &cfg->pipelines[cfg->npipelines++];
        set_name(p->name, pn);
        int rc = parse_pipeline(L, p, err, errlen);
        if (rc)
            return rc;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (cfg->npipelines == 0) {
        snprintf(err, errlen, "pipelines.lua defines no pipeline");
        return REC_EINVAL;
    }
    lua_getfield(L, -1, "default");
    const char *def = lua_tostring(L, -1);
    set_name(cfg->default_name, def ? def : cfg->pipelines[0].name);
    lua_pop(L, 1);
    if (find(cfg, cfg->default_name) < 0) {
        snprintf(err, errlen, "pipelines.lua: default pipeline '%s' is not defined",
                 cfg->default_name);
        return REC_EINVAL;
    }
    lua_getfield(L, -1, "experiment");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "name");
        const char *xn = lua_tostring(L, -1);
        set_name(cfg->experiment, xn && name_ok(xn, strlen(xn)) ? xn : "experiment");
        lua_pop(L, 1);
        lua_getfield(L, -1, "arms");
        double total = 0;
        if (lua_istable(L, -1)) {
            lua_pushnil(L);
            while (lua_next(L, -2)) {
                const char *an = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
                double sh = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : -1;
                if (!an || find(cfg, an) < 0 || !(sh > 0 && sh <= 1) ||
                    cfg->narms == REC_PIPELINE_MAX_ARMS) {
                    snprintf(err, errlen, "experiment arms are {pipeline = share} with "
                             "defined pipelines and shares in (0, 1]");
                    return REC_EINVAL;
                }
                set_name(cfg->arms[cfg->narms].pipeline, an);
                cfg->arms[cfg->narms++].share = sh;
                total += sh;
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
        if (cfg->narms == 0 || total > 1.0 + 1e-9) {
            snprintf(err, errlen, "experiment '%s' needs arms whose shares sum to "
                     "at most 1", cfg->experiment);
            return REC_EINVAL;
        }
        /* Arms in name order so the split does not depend on table order. */
        for (int i = 1; i < cfg->narms; i++)
            for (int j = i; j > 0 && strcmp(cfg->arms[j - 1].pipeline,
                                            cfg->arms[j].pipeline) > 0; j--) {
                __typeof__(cfg->arms[0]) t = cfg->arms[j];
                cfg->arms[j] = cfg->arms[j - 1];
                cfg->arms[j - 1] = t;
            }
    } else if (!lua_isnil(L, -1)) {
        snprintf(err, errlen, "experiment must be a table {name, arms}");
        return REC_EINVAL;
    }
    lua_pop(L, 1);
    lua_getfield(L, -1, "event_weights");
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            size_t tl;
            const char *t = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &tl) : NULL;
            double w = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : (double)NAN;
            if (!t || !rec_event_type_ok(t, tl) || !isfinite((float)w) ||
                cfg->nweights == REC_PIPELINE_MAX_WEIGHTS) {
                snprintf(err, errlen, "event_weights are {type = number} (at most %d "
                         "types of 1..%d bytes)", REC_PIPELINE_MAX_WEIGHTS, REC_TYPE_NAME_MAX);
                return REC_EINVAL;
            }
            memcpy(cfg->weights[cfg->nweights].type, t, tl);
            cfg->weights[cfg->nweights].type[tl] = '\0';
            cfg->weights[cfg->nweights++].weight = (float)w;
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        snprintf(err, errlen, "event_weights are {type = number}");
        return REC_EINVAL;
    }
    lua_pop(L, 1);
    return 0;
}

int rec_pipeline_config_read(lua_State *L) {
    rec_pipeline_config *cfg = lua_touserdata(L, 1);
    char err[256];
    memset(cfg, 0, sizeof *cfg);
    lua_settop(L, 2);
    if (parse_config(L, cfg, err, sizeof err)) {
        rec_pipeline_config_default(cfg);
        return luaL_error(L, "%s", err);
    }
    return 0;
}

int rec_pipeline_config_apply(const rec_pipeline_config *cfg, rec_engine *e, char *err,
                        size_t errlen) {
    int first = 0;
    for (int i = 0; i < cfg->nweights; i++) {
        const char *t = cfg->weights[i].type;
        int rc = rec_engine_set_type_weight(e, t, strlen(t), cfg->weights[i].weight);
        if (rc && !first) {
            first = rc;
            const char *m = rec_engine_errmsg(e);
            snprintf(err, errlen, "event weight of '%s': %s", t,
                     m && m[0] ? m : rec_strerror(rc));
        }
    }
    return first;
}

/* The fixed hash (hash.h) of a, a 0xff byte, then b: users keep their arm
 * across restarts, machines and versions. */
static uint64_t hash64(const char *a, size_t an, const char *b, size_t bn) {
    uint64_t h = rec_hash_stable_add(REC_HASH_STABLE_INIT, a, an);
    h = rec_hash_stable_add(h, "\xff", 1);
    return rec_hash_stable_end(rec_hash_stable_add(h, b, bn));
}

int rec_pipeline_arm(const rec_pipeline_config *cfg, const char *user_key,
               size_t user_len) {
    if (!cfg->narms)
        return -1;
    double x = (double)(hash64(cfg->experiment, strlen(cfg->experiment), user_key,
                               user_len) >> 11) * 0x1.0p-53;
    double acc = 0;
    for (int i = 0; i < cfg->narms; i++) {
        acc += cfg->arms[i].share;
        if (x < acc)
            return i;
    }
    return -1; /* shares below 1: the rest get the default */
}

const rec_pipeline_pipeline *rec_pipeline_pick(const rec_pipeline_config *cfg, const char *name,
                                   const char *user_key, size_t user_len,
                                   const char **arm_out) {
    if (arm_out)
        *arm_out = NULL;
    if (name) {
        int i = find(cfg, name);
        return i < 0 ? NULL : &cfg->pipelines[i];
    }
    int a = user_key ? rec_pipeline_arm(cfg, user_key, user_len) : -1;
    if (a >= 0) {
        if (arm_out)
            *arm_out = cfg->arms[a].pipeline;
        return &cfg->pipelines[find(cfg, cfg->arms[a].pipeline)];
    }
    return &cfg->pipelines[find(cfg, cfg->default_name)];
}

/* ---- the config in force ----------------------------------------------- */

/* Read pipelines.lua's table (at 2) into cfg_next, under the budgets.
 * [-0, +0, e] with the rec_pipeline_live at 1. */
static int config_read(lua_State *L) {
    rec_pipeline_live *d = lua_touserdata(L, 1);
    lua_pushlightuserdata(L, &d->cfg_next);
    lua_replace(L, 1);
    return rec_pipeline_config_read(L);
}

/* The script runtime read pipelines.lua whole into cfg_next (present), or
 * the file went away: the new config, and its event weights, take effect
 * only now. Called between requests (the folder watch, script.reload). */
static void config_apply(void *ud, int present) {
    rec_pipeline_live *d = ud;
    if (!present) {
        rec_pipeline_config_default(&d->cfg);
        REC_INFO("pipelines: %d loaded from %s", d->cfg.npipelines, "the built-in default");
        return;
    }
    d->cfg = d->cfg_next;
    char err[512];
    if (rec_pipeline_config_apply(&d->cfg, d->e, err, sizeof err))
        REC_WARN("%s: %s", d->path, err);
    REC_INFO("pipelines: %d loaded from %s", d->cfg.npipelines, d->path);
    /* A name that matches no loaded script is most likely a typo. */
    for (int i = 0; i < d->cfg.npipelines; i++) {
        const rec_pipeline_pipeline *p = &d->cfg.pipelines[i];
        for (int k = 0; k < p->nstrategies; k++)
            if (!rec_script_has(d->rt, REC_SCRIPT_STRATEGY, p->strategies[k].name, "recommend"))
                REC_WARN("pipeline '%s': no strategy '%s' is loaded", p->name,
                         p->strategies[k].name);
        for (int k = 0; k < p->npolicies; k++)
            if (!rec_script_has(d->rt, REC_SCRIPT_POLICY, p->policies[k], "rerank"))
                REC_WARN("pipeline '%s': no policy '%s' with rerank is loaded", p->name,
                         p->policies[k]);
    }
}

int rec_pipeline_config_watch(rec_pipeline_live *d, rec_engine *e, rec_script_rt *rt, const char *path) {
    d->e = e;
    d->rt = rt;
    snprintf(d->path, sizeof d->path, "%s", path ? path : "");
    rec_pipeline_config_default(&d->cfg);
    if (!rt || !path) {
        REC_INFO("pipelines: %d loaded from %s", d->cfg.npipelines, "the built-in default");
        return 0;
    }
    rec_script_config rc = {.read = config_read, .apply = config_apply, .ud = d};
    char err[512];
    int r = rec_script_set_config(rt, &rc, err, sizeof err);
    if (r == REC_ENOMEM || r == REC_EBUSY)
        return r;
    if (r) /* recorded and listed by script.status like a script's error */
        REC_WARN("%s (keeping the built-in default)", err);
    return 0;
}

/* ---- running -------------------------------------------------------- */

#define POOL_MIN 50

struct rec_pipeline_state {
    int32_t *pos;     /* by item index: position in hits + 1, 0 when absent */
    int32_t *rank;    /* by item index: position in the policies' array */
    uint32_t cap;
    rec_pipeline_hit *hits; /* candidates */
    size_t nhits, hcap;
    /* what a policy returned, to tell the items it moved (credit) */
    struct pl_slot { uint32_t idx; int32_t prev, link; uint8_t kept; } *slots;
    int32_t *tails;   /* longest kept run: slot ending a run of each length */
    uint32_t *order;  /* the items of the last array, to clear their rank */
    size_t nslots, scap, norder;
};

rec_pipeline_state *rec_pipeline_state_new(void) { return calloc(1, sizeof(rec_pipeline_state)); }

void rec_pipeline_state_free(rec_pipeline_state *st) {
    if (!st)
        return;
    free(st->pos);
    free(st->rank);
    free(st->hits);
    free(st->slots);
    free(st->tails);
    free(st->order);
    free(st);
}

static int reserve(rec_pipeline_state *st, uint32_t bound) {
    if (bound > st->cap) {
        int32_t *p = realloc(st->pos, (size_t)bound * sizeof *p);
        if (!p)
            return REC_ENOMEM;
        memset(p + st->cap, 0, (size_t)(bound - st->cap) * sizeof *p);
        st->pos = p;
        int32_t *rk = realloc(st->rank, (size_t)bound * sizeof *rk);
        if (!rk)
            return REC_ENOMEM;
        memset(rk + st->cap, 0, (size_t)(bound - st->cap) * sizeof *rk);
        st->rank = rk;
        st->cap = bound;
    }
    return 0;
}

static void reset(rec_pipeline_state *st) {
    for (size_t i = 0; i < st->nhits; i++) {
        st->pos[st->hits[i].idx] = 0;
        st->rank[st->hits[i].idx] = 0;
    }
    st->nhits = 0;
    st->norder = 0;
}

static rec_pipeline_hit *candidate(rec_pipeline_state *st, uint32_t idx) {
    if (st->pos[idx])
        return &st->hits[st->pos[idx] - 1];
    if (st->nhits == st->hcap) {
        size_t cap = st->hcap ? st->hcap * 2 : 256;
        rec_pipeline_hit *h = realloc(st->hits, cap * sizeof *h);
        if (!h)
            return NULL;
        st->hits = h;
        st->hcap = cap;
    }
    rec_pipeline_hit *h = &st->hits[st->nhits++];
    memset(h, 0, sizeof *h);
    h->idx = idx;
    h->by = -1;
    st->pos[idx] = (int32_t)st->nhits;
    return h;
}

static int skipped(const rec_pipeline_req *r, uint32_t idx) {
    return (size_t)(idx >> 6) < r->words && (r->skip[idx >> 6] >> (idx & 63) & 1);
}

/* Push t[k] of the table at idx without metamethods: what scripts return
 * is read raw, so no script code runs outside its budgets. [-0, +1, m] */
static void raw_field(lua_State *L, int idx, const char *k) {
    idx = lua_absindex(L, idx);
    lua_pushstring(L, k);
    lua_rawget(L, idx);
}

/* Item index of the id at stack index i (a string or an integer), or
 * REC_IDX_NONE. */
static uint32_t id_at(lua_State *L, int i, rec_engine *e) {
    char key[REC_ID_MAX];
    int kl = -1;
    if (lua_type(L, i) == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, i, &n);
        kl = rec_id_str(key, s, n);
    } else if (lua_isinteger(L, i)) {
        kl = rec_id_int(key, (int64_t)lua_tointeger(L, i));
    }
    return kl > 0 ? rec_engine_lookup(e, REC_KIND_ITEM, key, (size_t)kl) : REC_IDX_NONE;
}

static void push_item_id(lua_State *L, rec_engine *e, uint32_t idx) {
    size_t kl;
    const char *key = rec_engine_key(e, REC_KIND_ITEM, idx, &kl);
    rec_lua_push_id(L, key, kl);
}

/* Push the request table scripts receive. */
static int push_req(lua_State *L, rec_engine *e, const rec_pipeline_req *r,
                    uint32_t want) {
    lua_createtable(L, 0, 8);
    rec_lua_push_id(L, r->user_key, r->user_len);
    lua_setfield(L, -2, "user");
    lua_pushinteger(L, want);
    lua_setfield(L, -2, "n");
    lua_pushnumber(L, rec_now());
    lua_setfield(L, -2, "now");
    lua_pushboolean(L, r->allow_seen);
    lua_setfield(L, -2, "allow_seen");
    lua_pushboolean(L, r->record);
    lua_setfield(L, -2, "record");
    size_t used;
    if (r->context && rec_value_push_lua(L, r->context, r->context_len, &used) == 0)
        lua_setfield(L, -2, "context");
    if (r->exclude && rec_value_push_lua(L, r->exclude, r->exclude_len, &used) == 0)
        lua_setfield(L, -2, "exclude");
    if (r->rec_ref > 0) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, r->rec_ref);
        lua_setfield(L, -2, "rec");
    }
    (void)e;
    return 0;
}

/* Read the candidate array on top of the stack (popped) from strategy si,
 * adding rank-fused (or, alone, raw) scores. */
static int take_candidates(lua_State *L, rec_pipeline_state *st, rec_engine *e,
                           const rec_pipeline_req *r, int si, float w, int alone,
                           const char *name, char *err, size_t errlen) {
    if (!lua_istable(L, -1)) {
        snprintf(err, errlen, "strategy '%s': recommend must return an array of "
                 "{id =, score =}", name);
        lua_pop(L, 1);
        return REC_ESCRIPT;
    }
    lua_Integer len = (lua_Integer)lua_rawlen(L, -1), rank = 0;
    for (lua_Integer i = 1; i <= len; i++) {
        lua_rawgeti(L, -1, i);
        if (lua_istable(L, -1)) {
            raw_field(L, -1, "id");
            uint32_t idx = id_at(L, -1, e);
            raw_field(L, -2, "score");
            float sc = (float)lua_tonumber(L, -1);
            lua_pop(L, 2);
            if (idx != REC_IDX_NONE && !(skipped(r, idx)) && isfinite(sc)) {
                rec_pipeline_hit *h = candidate(st, idx);
                if (!h) {
                    lua_pop(L, 2);
                    return REC_ENOMEM;
                }
                float part = alone ? sc : rec_rank_fused(w, (float)rank);
                if (alone && h->parts[si] != 0.0f)
                    part = 0.0f; /* a repeated id counts once */
                h->parts[si] += part;
                h->score += part;
                rank++;
            }
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return 0;
}

/* Room for m slots (and the order of an array of m). */
static int slots_reserve(rec_pipeline_state *st, size_t m) {
    if (m <= st->scap)
        return 0;
    size_t cap = m < 64 ? 64 : m;
    struct pl_slot *sl = realloc(st->slots, cap * sizeof *sl);
    if (!sl)
        return REC_ENOMEM;
    st->slots = sl;
    int32_t *t = realloc(st->tails, cap * sizeof *t);
    if (!t)
        return REC_ENOMEM;
    st->tails = t;
    uint32_t *o = realloc(st->order, cap * sizeof *o);
    if (!o)
        return REC_ENOMEM;
    st->order = o;
    st->scap = cap;
    return 0;
}

/* Credit policy pi (bit pi & 31 of moved) for what it did to the array it
 * returned (on top of the stack): the items it added, and the items it
 * moved, that is every item outside a longest run of items that kept
 * their previous relative order (a longest increasing subsequence of the
 * previous positions, O(m log m)). An item that only shifted because
 * others were dropped, inserted or moved past it is not credited. Then
 * each item's rank becomes its position in this array, 0 off it. */
static int credit(lua_State *L, rec_pipeline_state *st, rec_engine *e, int pi) {
    size_t m = (size_t)lua_rawlen(L, -1), n = 0, len = 0;
    if (slots_reserve(st, m))
        return REC_ENOMEM;
    for (size_t i = 1; i <= m; i++) {
        uint32_t idx = REC_IDX_NONE;
        lua_rawgeti(L, -1, (lua_Integer)i);
        if (lua_istable(L, -1)) {
            raw_field(L, -1, "id");
            idx = id_at(L, -1, e);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
        if (idx == REC_IDX_NONE)
            continue;
        struct pl_slot *s = &st->slots[n++];
        s->idx = idx;
        s->prev = st->rank[idx];
        s->link = -1;
        s->kept = 0;
    }
    for (size_t i = 0; i < n; i++) {
        int32_t v = st->slots[i].prev;
        if (v <= 0)
            continue; /* added by this policy */
        size_t lo = 0, hi = len; /* the first run whose end is >= v */
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (st->slots[st->tails[mid]].prev < v)
                lo = mid + 1;
            else
                hi = mid;
        }
        st->slots[i].link = lo ? st->tails[lo - 1] : -1;
        st->tails[lo] = (int32_t)i;
        if (lo == len)
            len++;
    }
    for (int32_t k = len ? st->tails[len - 1] : -1; k >= 0; k = st->slots[k].link)
        st->slots[k].kept = 1;
    for (size_t j = 0; j < st->norder; j++)
        st->rank[st->order[j]] = 0;
    st->norder = 0;
    for (size_t i = 0; i < n; i++) {
        struct pl_slot *s = &st->slots[i];
        rec_pipeline_hit *h = candidate(st, s->idx);
        if (!h)
            return REC_ENOMEM;
        if (!s->kept)
            h->moved |= 1u << (pi & 31);
        if (!st->rank[s->idx]) { /* a repeated id keeps its first place */
            st->rank[s->idx] = (int32_t)i + 1;
            st->order[st->norder++] = s->idx;
        }
    }
    return 0;
}

static int hit_cmp(const void *a, const void *b) {
    const rec_pipeline_hit *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* One run, inside a protected call (run_body): every Lua value built here
 * is subject to the VM's memory cap, and a refusal fails this run only. */
/* A strategy or policy that fails at run time fails the request; the log
 * says so too, at most once a second per thread (a script failing on every
 * request would drown the log), with the count of failures not shown. */
static void log_failure(const char *err) {
    static _Thread_local double last;
    static _Thread_local unsigned long quiet;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double now = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    if (last > 0 && now - last < 1.0) {
        quiet++;
        return;
    }
    if (quiet)
        REC_WARN("rec.recommend failed: %s (and %lu more failures in the last second)",
                 err, quiet);
    else
        REC_WARN("rec.recommend failed: %s", err);
    last = now;
    quiet = 0;
}

static int run(rec_pipeline_state *st, rec_script_rt *rt, rec_engine *e,
               const rec_pipeline_req *r, rec_pipeline_hit *out, size_t *nout, char *err,
               size_t errlen) {
    lua_State *L = rec_script_lua(rt);
    int top = lua_gettop(L);
    int nstrat = r->p ? r->p->nstrategies : 1;
    int rc = 0;
    /* Strategies propose a pool larger than n when policies follow, so
     * filters and re-rankers have room; policies see the n to show. */
    int npol = r->p ? r->p->npolicies : 0;
    uint32_t pool = npol ? (r->n * 3 > POOL_MIN ? r->n * 3 : POOL_MIN) : r->n;
    lua_checkstack(L, 8);
    for (int si = 0; si < nstrat && !rc; si++) {
        const char *name = r->p ? r->p->strategies[si].name : r->strategy;
        float w = r->p ? r->p->strategies[si].weight : 1.0f;
        push_req(L, e, r, pool);
        rc = rec_script_call(rt, REC_SCRIPT_STRATEGY, name, "recommend", 1, 1, err, errlen);
        if (rc == REC_ENOTFOUND)
            snprintf(err, errlen, "strategy '%s' is not loaded", name);
        if (!rc)
            rc = take_candidates(L, st, e, r, si, w, nstrat == 1, name, err, errlen);
    }
    if (rc) {
        log_failure(err);
        lua_settop(L, top);
        reset(st);
        return rc;
    }
    for (size_t i = 0; i < st->nhits; i++) {
        rec_pipeline_hit *h = &st->hits[i];
        float best = 0.0f;
        for (int si = 0; si < nstrat; si++)
            if (h->parts[si] > best || h->by < 0) {
                best = h->parts[si];
                h->by = si;
            }
    }
    if (st->nhits) /* hits is NULL until the first candidate */
        qsort(st->hits, st->nhits, sizeof *st->hits, hit_cmp);
    for (size_t i = 0; i < st->nhits; i++)
        st->pos[st->hits[i].idx] = (int32_t)i + 1;
    if ((size_t)pool > st->nhits)
        pool = (uint32_t)st->nhits;
    if (r->p && npol > 0) {
        /* the policies' array starts as the pool, ranked */
        if (slots_reserve(st, pool)) {
            lua_settop(L, top);
            reset(st);
            return REC_ENOMEM;
        }
        for (size_t i = 0; i < pool; i++) {
            st->rank[st->hits[i].idx] = (int32_t)i + 1;
            st->order[i] = st->hits[i].idx;
        }
        st->norder = pool;
        push_req(L, e, r, r->n);
        int req = lua_gettop(L);
        lua_createtable(L, (int)pool, 0);
        for (size_t i = 0; i < pool; i++) {
            lua_createtable(L, 0, 3);
            push_item_id(L, e, st->hits[i].idx);
            lua_setfield(L, -2, "id");
            lua_pushnumber(L, st->hits[i].score);
            lua_setfield(L, -2, "score");
            if (st->hits[i].by >= 0) { /* for features of the proposer */
                lua_pushstring(L, r->p->strategies[st->hits[i].by].name);
                lua_setfield(L, -2, "strategy");
            }
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        for (int pi = 0; pi < npol && !rc; pi++) {
            const char *pn = r->p->policies[pi];
            if (!rec_script_has(rt, REC_SCRIPT_POLICY, pn, "rerank"))
                continue;
            lua_pushvalue(L, req);
            lua_insert(L, -2);
            rc = rec_script_call(rt, REC_SCRIPT_POLICY, pn, "rerank", 2, 1, err, errlen);
            if (rc)
                break;
            if (!lua_istable(L, -1)) {
                snprintf(err, errlen, "policy '%s': rerank must return the items", pn);
                rc = REC_ESCRIPT;
                break;
            }
            rc = credit(L, st, e, pi);
        }
        if (rc) {
            log_failure(err);
            lua_settop(L, top);
            reset(st);
            return rc;
        }
        /* The final order is the last policy's array. */
        lua_Integer nlen = (lua_Integer)lua_rawlen(L, -1);
        for (lua_Integer i = 1; i <= nlen && *nout < r->n; i++) {
            lua_rawgeti(L, -1, i);
            if (lua_istable(L, -1)) {
                raw_field(L, -1, "id");
                uint32_t idx = id_at(L, -1, e);
                raw_field(L, -2, "score");
                float sc = (float)lua_tonumber(L, -1);
                lua_pop(L, 2);
                int dup = 0;
                for (size_t j = 0; j < *nout && !dup; j++)
                    dup = out[j].idx == idx;
                if (idx != REC_IDX_NONE && !dup && !skipped(r, idx) &&
                    rec_engine_is_active(e, idx)) {
                    rec_pipeline_hit *h = candidate(st, idx);
                    if (h) {
                        out[*nout] = *h;
                        out[*nout].fused = h->score;
                        out[*nout].score = isfinite(sc) ? sc : h->score;
                        (*nout)++;
                    }
                }
            }
            lua_pop(L, 1);
        }
    } else {
        for (size_t i = 0; i < st->nhits && *nout < r->n; i++)
            if (rec_engine_is_active(e, st->hits[i].idx)) {
                out[*nout] = st->hits[i];
                out[(*nout)++].fused = st->hits[i].score;
            }
    }
    lua_settop(L, top);
    reset(st);
    return 0;
}

typedef struct run_ctx {
    rec_pipeline_state *st;
    rec_script_rt *rt;
    rec_engine *e;
    const rec_pipeline_req *r;
    rec_pipeline_hit *out;
    size_t *nout;
    char *err;
    size_t errlen;
    int rc;
} run_ctx;

/* [-0, +0, m] with the run_ctx at 1. */
static int run_body(lua_State *L) {
    run_ctx *x = lua_touserdata(L, 1);
    x->rc = run(x->st, x->rt, x->e, x->r, x->out, x->nout, x->err, x->errlen);
    return 0;
}

int rec_pipeline_run(rec_pipeline_state *st, rec_script_rt *rt, rec_engine *e,
               const rec_pipeline_req *r, rec_pipeline_hit *out, size_t *nout, char *err,
               size_t errlen) {
    *nout = 0;
    if (reserve(st, rec_engine_bound(e, REC_KIND_ITEM)))
        return REC_ENOMEM;
    reset(st);
    run_ctx x = {st, rt, e, r, out, nout, err, errlen, 0};
    char perr[256];
    int rc = rec_script_pcall(rt, run_body, &x, 0, 0, 0, perr, sizeof perr);
    if (rc) { /* Lua ran out of memory building or reading values */
        reset(st);
        *nout = 0;
        snprintf(err, errlen, "pipeline: %s", perr);
        return rc;
    }
    return x.rc;
}
