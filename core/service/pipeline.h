/* pipeline.h - strategies -> blend -> policies -> answer, with pipelines
 * and experiments from a Lua config file.
 *
 * A pipeline names the strategies it blends (with weights) and the
 * policies it runs in order; an experiment splits users between pipelines
 * by a stable hash of their id, with shares. The config is
 * `<scripts>/pipelines.lua`, returning
 *
 *   {
 *     default = "main",
 *     pipelines = {
 *       main = {strategies = {hybrid = 1.0}, policies = {"seen", "rules"}},
 *       pop  = {strategies = {popular = 1.0}},
 *     },
 *     experiment = {name = "hybrid_vs_pop", arms = {main = 0.5, pop = 0.5}},
 *     event_weights = {view = 1, click = 2, like = 3},
 *   }
 *
 * It is loaded, watched and reloaded with the scripts (script.h: a script
 * of kind REC_SCRIPT_CONFIG, sandboxed and budgeted like the others),
 * read by rec_pipeline_config_read; a file that fails keeps the previous config
 * and its event weights. Without it, a default pipeline blends the
 * strategy "hybrid" and runs every loaded policy that defines rerank.
 * Policies' on_event runs for every loaded policy, once per event.
 */
#ifndef REC_PIPELINE_H
#define REC_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "script.h"

#define REC_PIPELINE_NAME_MAX 63
#define REC_PIPELINE_MAX_STRATEGIES 16
#define REC_PIPELINE_MAX_POLICIES 32
#define REC_PIPELINE_MAX_PIPELINES 32
#define REC_PIPELINE_MAX_ARMS 8
#define REC_PIPELINE_MAX_WEIGHTS 64

typedef struct rec_pipeline_strategy {
    char name[REC_PIPELINE_NAME_MAX + 1];
    float weight;
} rec_pipeline_strategy;

typedef struct rec_pipeline_pipeline {
    char name[REC_PIPELINE_NAME_MAX + 1];
    rec_pipeline_strategy strategies[REC_PIPELINE_MAX_STRATEGIES];
    int nstrategies;
    char policies[REC_PIPELINE_MAX_POLICIES][REC_PIPELINE_NAME_MAX + 1];
    int npolicies;
    int all_policies; /* no list given: every loaded policy with rerank */
} rec_pipeline_pipeline;

typedef struct rec_pipeline_config {
    rec_pipeline_pipeline pipelines[REC_PIPELINE_MAX_PIPELINES];
    int npipelines;
    char default_name[REC_PIPELINE_NAME_MAX + 1];
    char experiment[REC_PIPELINE_NAME_MAX + 1]; /* "" when none */
    struct {
        char pipeline[REC_PIPELINE_NAME_MAX + 1];
        double share;
    } arms[REC_PIPELINE_MAX_ARMS];
    int narms;
    struct {
        char type[REC_TYPE_NAME_MAX + 1];
        float weight;
    } weights[REC_PIPELINE_MAX_WEIGHTS]; /* event_weights, applied with the config */
    int nweights;
} rec_pipeline_config;

/* The built-in default: pipeline "default" blending "hybrid", every
 * policy with rerank, no weights. */
void rec_pipeline_config_default(rec_pipeline_config *cfg);

/* The reader of pipelines.lua (a rec_script_config read function): reads
 * the table at index 2 into the rec_pipeline_config at 1 (a light userdata),
 * touching nothing else; raises with a message for a table that does not
 * describe pipelines (cfg is then the default). [-0, +0, e] */
int rec_pipeline_config_read(lua_State *L);

/* Apply cfg's event weights to the engine. Returns 0, or the first error
 * with a message in err (the other weights are still applied). */
int rec_pipeline_config_apply(const rec_pipeline_config *cfg, rec_engine *e, char *err,
                        size_t errlen);

/* The config in force, kept with pipelines.lua. Zero it, then
 * rec_pipeline_config_watch; the engine and the runtime are borrowed. */
typedef struct rec_pipeline_live {
    rec_pipeline_config cfg;      /* in force */
    rec_pipeline_config cfg_next; /* pipelines.lua being read; in force once applied */
    char path[1024];
    rec_engine *e;
    rec_script_rt *rt;
} rec_pipeline_live;

/* Put the built-in default in force; with rt and path, hand pipelines.lua
 * to the runtime (loaded, watched and reloaded with the scripts): each
 * complete read is put in force between requests with its event weights,
 * a name that matches no loaded script is logged, and a file that goes
 * away brings back the default. Returns 0, REC_ENOMEM or REC_EBUSY; a file
 * that fails is logged and listed by script.status, keeping the default. */
int rec_pipeline_config_watch(rec_pipeline_live *l, rec_engine *e, rec_script_rt *rt, const char *path);

/* The pipeline for a request: `name` when given, else the user's arm of
 * the experiment, else the default. NULL when the name is unknown. */
const rec_pipeline_pipeline *rec_pipeline_pick(const rec_pipeline_config *cfg, const char *name,
                                   const char *user_key, size_t user_len,
                                   const char **arm_out);

/* Arm of a user in the experiment, stable across restarts and machines:
 * a 64-bit hash of the experiment name and the user's key mapped to [0,1)
 * against the cumulative shares. */
int rec_pipeline_arm(const rec_pipeline_config *cfg, const char *user_key,
               size_t user_len);

/* One recommended item, with what produced it. */
typedef struct rec_pipeline_hit {
    uint32_t idx;
    float score;
    float fused;     /* the strategies' fused score, before the policies */
    int by;          /* index of the strategy that contributed most, -1 */
    float parts[REC_PIPELINE_MAX_STRATEGIES]; /* each strategy's contribution */
    uint32_t moved;  /* bit i: policy i added or moved the item */
} rec_pipeline_hit;

typedef struct rec_pipeline_req {
    const rec_pipeline_pipeline *p; /* the pipeline, or NULL to run `strategy` alone */
    const char *strategy;
    const char *user_key;     /* encoded id (idmap.h) */
    size_t user_len;
    uint32_t n;
    const void *context;      /* msgpack map, or NULL */
    size_t context_len;
    const void *exclude;      /* msgpack array of ids, or NULL */
    size_t exclude_len;
    const uint64_t *skip;     /* items never returned (seen, excluded, hidden) */
    size_t words;
    int allow_seen;
    int record;               /* 0: a preview, not shown (req.record = false) */
    int rec_ref;              /* registry ref of the `rec` handle for req.rec */
} rec_pipeline_req;

typedef struct rec_pipeline_state rec_pipeline_state; /* scratch reused across runs */
rec_pipeline_state *rec_pipeline_state_new(void);
void rec_pipeline_state_free(rec_pipeline_state *st);

/* Run the strategies (blended by rank fusion, each weighted: an item
 * scores sum(w / (10 + rank)); a strategy alone keeps its own scores),
 * then the pipeline's policies' rerank in order, and write up to n hits
 * into out (caller-sized for n). Items a script names that do not exist,
 * are hidden, excluded or (unless allow_seen) seen are dropped. Returns
 * 0, REC_ENOTFOUND (strategy not loaded), or REC_ESCRIPT with the failing
 * script and line in err. */
int rec_pipeline_run(rec_pipeline_state *st, rec_script_rt *rt, rec_engine *e,
               const rec_pipeline_req *r, rec_pipeline_hit *out, size_t *nout, char *err,
               size_t errlen);

#endif
