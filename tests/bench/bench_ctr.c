/* bench_ctr.c - the online click model, one thread: scoring 500 candidates
 * of 20 pre-hashed features (8 of them the request's, shared) by
 * rec_ctr_score, beside scoring each candidate alone (rec_ctr_logit on all
 * 20: the baseline), and learning examples of 20 features, for logistic
 * regression and a factorization machine with k = 8. Then the whole
 * prediction a policy asks for: the shipped policies/click.lua features
 * extracted in C from the engine (ids, properties, the person's history and
 * taste, what they were shown) and scored, for 500 candidates, called from C
 * (rec_click_predict) and from Lua (db:click_predict over 500 item tables).
 * Medians of 9 runs. */
#include <lauxlib.h>
#include <lualib.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "bench_common.h"
#include "click.h"
#include "ctr.h"
#include "engine.h"
#include "idmap.h"
#include "lua_api.h"
#include "rng.h"

#define NCAND 500
#define NFEAT 20
#define NSHARED 8
#define NLEARN 200000
#define RUNS 9

static void fill(rec_rng *r, rec_ctr_feat *f, size_t n) {
    for (size_t i = 0; i < n; i++) {
        f[i].idx = (uint32_t)rec_rng_next(r);
        f[i].x = i % 4 == 3 ? (float)rec_rng_unit(r) : 1.0f;
    }
}

static void bench(const char *name, uint32_t k) {
    rec_ctr_opts o;
    rec_ctr_opts_default(&o);
    o.k = k;
    o.bits = k ? 18 : 20;
    rec_ctr *m;
    if (rec_ctr_new(&m, &o)) {
        fprintf(stderr, "bench_ctr: cannot make the model\n");
        exit(1);
    }
    rec_rng r;
    rec_rng_seed(&r, 1);
    static rec_ctr_feat ex[NLEARN][NFEAT];
    for (size_t i = 0; i < NLEARN; i++)
        fill(&r, ex[i], NFEAT);
    /* learning: examples per second (the model warms up on the first run) */
    double t[RUNS];
    for (int run = 0; run < RUNS; run++) {
        double t0 = now();
        for (size_t i = 0; i < NLEARN; i++)
            rec_ctr_learn(m, ex[i], NFEAT, (double)(i % 7 == 0), NULL);
        t[run] = (double)NLEARN / (now() - t0);
    }
    double learn = median(t, RUNS);
    /* scoring: the request's 8 features shared, 12 per candidate */
    static rec_ctr_feat shared[NSHARED], cand[NCAND * (NFEAT - NSHARED)], all[NFEAT];
    static uint32_t off[NCAND + 1];
    fill(&r, shared, NSHARED);
    fill(&r, cand, NCAND * (NFEAT - NSHARED));
    for (int c = 0; c <= NCAND; c++)
        off[c] = (uint32_t)(c * (NFEAT - NSHARED));
    static double out[NCAND];
    double ts[RUNS], tb[RUNS], sink = 0;
    for (int run = 0; run < RUNS; run++) {
        double t0 = now();
        for (int rep = 0; rep < 100; rep++) {
            rec_ctr_score(m, shared, NSHARED, cand, off, NCAND, out);
            sink += out[rep % NCAND];
        }
        ts[run] = (now() - t0) / 100 * 1e6;
        t0 = now();
        for (int rep = 0; rep < 100; rep++)
            for (int c = 0; c < NCAND; c++) {
                memcpy(all, shared, sizeof shared);
                memcpy(all + NSHARED, cand + off[c], (NFEAT - NSHARED) * sizeof *all);
                double l;
                rec_ctr_logit(m, all, NFEAT, &l);
                sink += l;
            }
        tb[run] = (now() - t0) / 100 * 1e6;
    }
    double score = median(ts, RUNS), each = median(tb, RUNS);
    printf("%s: learn %.0f examples/s; score %d candidates x %d features %.1f us "
           "(each alone %.1f us: %.2fx)%s\n", name, learn, NCAND, NFEAT, score, each,
           each / score, isfinite(sink) ? "" : " ");
    char n1[64];
    snprintf(n1, sizeof n1, "ctr_%s_learn", name);
    report(n1, learn, "examples/s");
    snprintf(n1, sizeof n1, "ctr_%s_score_500x20", name);
    report(n1, score, "us");
    snprintf(n1, sizeof n1, "ctr_%s_score_vs_each", name);
    report(n1, each / score, "ratio");
    rec_ctr_free(m);
}

/* The shipped declaration (policies/click.lua's features), kind fm or lr. */
#define FEATURES "features = {'item', 'user', 'position', 'strategy', 'score', 'shows', " \
                 "'prop:category', {'prop:category', 'position'}, 'taste:category', " \
                 "'ignored:category', 'like:content'}"
#define NITEMS 5000

/* A catalogue of NITEMS items (category, 16-d content) and a person with 50
 * clicks and 10 lists shown, in Lua through the module; leaves `db`, `req`,
 * `items` (500 tables) as globals. */
static const char *const SETUP =
    "db:batch(function()\n"
    "  for i = 1, %d do\n"
    "    local v = {} for d = 1, 16 do v[d] = math.sin(i * d) end\n"
    "    db:item_put('i' .. i, {category = 'c' .. (i %% 16)}, {content = v})\n"
    "  end\n"
    "  for k = 1, 50 do db:event{user = 'u', item = 'i' .. (k * 7), type = 'click'} end\n"
    "end)\n"
    "for l = 1, 10 do local s = {} for j = 1, 10 do s[j] = 'i' .. (l * 10 + j) end "
    "db:mark_shown('u', s) end\n"
    "db:click_model{kind = '%s', %s}\n"
    "req = {user = 'u'}\n"
    "items = {}\n"
    "for c = 1, 500 do items[c] = {id = 'i' .. (c * 9 %% %d + 1), score = 1 / c, "
    "strategy = 'hybrid'} end\n";

static void bench_predict(const char *kind) {
    char dir[] = "/tmp/recd-bench-ctr-XXXXXX";
    if (!mkdtemp(dir)) {
        fprintf(stderr, "bench_ctr: no temporary folder\n");
        exit(1);
    }
    rec_engine_opts eo;
    rec_engine_opts_default(&eo);
    eo.store.no_sync = 1;
    rec_engine *e;
    char err[256];
    if (rec_engine_open(&e, dir, &eo, err, sizeof err)) {
        fprintf(stderr, "bench_ctr: %s\n", err);
        exit(1);
    }
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "recd", luaopen_recd, 1);
    lua_pop(L, 1);
    rec_lua_push_engine(L, e, 1);
    lua_setglobal(L, "db");
    char src[2048];
    snprintf(src, sizeof src, SETUP, NITEMS, kind, FEATURES, NITEMS);
    if (luaL_dostring(L, src)) {
        fprintf(stderr, "bench_ctr: setup: %s\n", lua_tostring(L, -1));
        exit(1);
    }
    /* from Lua: the call a policy makes */
    if (luaL_dostring(L, "local t = {} for run = 1, 9 do local t0 = os.clock() "
                         "for rep = 1, 50 do db:click_predict(req, items) end "
                         "t[run] = (os.clock() - t0) / 50 * 1e6 end table.sort(t) return t[5]")) {
        fprintf(stderr, "bench_ctr: %s\n", lua_tostring(L, -1));
        exit(1);
    }
    double lua_us = lua_tonumber(L, -1);
    lua_pop(L, 1);
    /* from C on the same engine: extraction and scoring alone */
    rec_click *m = rec_engine_click(e);
    static rec_click_cand cand[500];
    char key[REC_ID_MAX];
    for (int c = 0; c < 500; c++) {
        char id[32];
        snprintf(id, sizeof id, "i%d", c * 9 % NITEMS + 1);
        cand[c] = (rec_click_cand){
            .item = rec_engine_lookup(e, REC_KIND_ITEM, key, (size_t)rec_id_str(key, id, strlen(id))),
            .strategy = "hybrid", .score = 1.0 / (c + 1)};
    }
    size_t kl = (size_t)rec_id_str(key, "u", 1);
    rec_click_ask a = {.ukey = key, .ulen = kl, .now = rec_engine_now(e)};
    static double p[500], sd[500], pv[500];
    double t[RUNS];
    for (int run = 0; run < RUNS; run++) {
        double t0 = now();
        for (int rep = 0; rep < 50; rep++)
            rec_click_predict(m, e, &a, cand, 500, p, pv, sd);
        t[run] = (now() - t0) / 50 * 1e6;
    }
    double c_us = median(t, RUNS);
    printf("click model (%s, 11 declared features, %d items): predict 500 candidates "
           "%.0f us from C (extraction + both models + uncertainty), %.0f us from Lua "
           "(db:click_predict on 500 item tables)\n", kind, NITEMS, c_us, lua_us);
    char n1[64];
    snprintf(n1, sizeof n1, "click_%s_predict_500_c", kind);
    report(n1, c_us, "us");
    snprintf(n1, sizeof n1, "click_%s_predict_500_lua", kind);
    report(n1, lua_us, "us");
    lua_close(L);
    rec_engine_free(e);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) {
    }
}

int main(void) {
    bench("lr", 0);
    bench("fm8", 8);
    bench_predict("lr");
    bench_predict("fm");
    return 0;
}
