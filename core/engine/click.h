/* click.h - the click and conversion model of the engine's own lists.
 *
 * A policy declares the model and its features in Lua (its module's
 * `model` table, read by rec_click_spec_read); the engine hashes the
 * features and learns (ctr.h: FTRL-Proximal logistic regression, or a
 * factorization machine with k factors):
 *   - when the server serves a list, the features of each shown item, as
 *     they are at that moment and with its position, are written into the
 *     list's record (rec_click_encode; the record is keyed by rec_id), and
 *     the list waits for its outcomes (rec_click_served);
 *   - an event naming the list's rec_id and one of its items is a click
 *     (a click type) or a conversion (a conversion type, which is a click
 *     too): the item's logged features are learned as a positive at once
 *     (rec_click_feedback);
 *   - once `window` seconds of event time have passed, each shown item
 *     without a click is learned as a negative, and each clicked one
 *     without a conversion as a negative of the conversion model
 *     (rec_click_expire);
 *   - policies rank by the prediction (rec_click_predict) at position 0:
 *     the position is a feature in training, and a fixed one in
 *     prediction, so the model's position bias does not rank.
 *
 * Features (each a name, or a pair {a, b} crossed):
 *   item, user          the ids (the user's weight and factors hold all
 *                       that is personal: erased with the user, so a user
 *                       may not appear in a cross)
 *   position            the slot (0 at the top)
 *   strategy            the strategy that proposed the item (or "policy")
 *   score               the strategies' fused score (numeric)
 *   shown               how much lists showed the item to the person
 *                       without engagement (shown.h's weight, numeric)
 *   shows               how many lists showed it to the person since they
 *                       last engaged with it (numeric)
 *   prop:NAME           the item's property NAME
 *   ctx:NAME            the request's context field NAME
 *   counter:NAME        log(1 + the item's counter NAME) (numeric)
 *   hour                the hour of the day (UTC) of the request
 *   taste:NAME          the share of the person's newest positive events
 *                       (up to 50, weighted by the event's weight) whose
 *                       item has the candidate's value of property NAME
 *                       (numeric, 0..1)
 *   ignored:NAME        the share of what lists showed the person without
 *                       engagement (shown.h's weights) whose item has the
 *                       candidate's value of property NAME (numeric, 0..1)
 *   like:SPACE          the cosine between the candidate's vector in SPACE
 *                       and the mean of the person's newest 20 positive
 *                       items' (numeric, -1..1; 0 without vectors)
 * A value missing for an item (no such property) leaves the feature out.
 *
 * Persistence: buckets changed since the last checkpoint are written with
 * it (the "models" database), with the statistics and the lists still
 * waiting for outcomes; events after the checkpoint are replayed into it
 * after a crash like every learned state. Lists served after the last
 * commit are lost with it, as the impressions counter's are.
 */
#ifndef REC_CLICK_H
#define REC_CLICK_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#include "buf.h"
#include "ctr.h"

#define REC_CLICK_MAX_DECL 32   /* declared features */
#define REC_CLICK_MAX_TYPES 8   /* click and conversion types each */
#define REC_CLICK_NAME_MAX 64

typedef enum rec_click_fkind {
    REC_CF_ITEM, REC_CF_USER, REC_CF_POSITION, REC_CF_STRATEGY, REC_CF_SCORE,
    REC_CF_SHOWN, REC_CF_SHOWS, REC_CF_PROP, REC_CF_CTX, REC_CF_COUNTER, REC_CF_HOUR, REC_CF_TASTE,
    REC_CF_LIKE, REC_CF_IGNORED, REC_CF_NONE
} rec_click_fkind;

typedef struct rec_click_decl {
    uint8_t kind[2];                  /* kind[1] REC_CF_NONE unless a cross */
    char arg[2][REC_CLICK_NAME_MAX];  /* NAME of prop:, ctx:, counter: */
    char name[2 * REC_CLICK_NAME_MAX + 24]; /* as hashed: "prop:category" */
} rec_click_decl;

typedef struct rec_click_spec {
    rec_ctr_opts opts;
    double window;                    /* seconds of event time (1800) */
    int conversion;                   /* learn P(conversion | click) too (1) */
    size_t nclick, nconv;
    char clicks[REC_CLICK_MAX_TYPES][REC_CLICK_NAME_MAX]; /* {"click"} */
    char convs[REC_CLICK_MAX_TYPES][REC_CLICK_NAME_MAX];  /* {"purchase"} */
    size_t n;
    rec_click_decl d[REC_CLICK_MAX_DECL];
    uint64_t hash;                    /* of the features and options */
} rec_click_spec;

/* Read the table at idx (a policy's `model`). REC_EINVAL with a message
 * naming the field. */
int rec_click_spec_read(lua_State *L, int idx, rec_click_spec *s, char *err, size_t errlen);

typedef struct rec_click rec_click;
struct rec_engine;
struct rec_script_rt;
struct rec_batch;
struct rec_store;

int rec_click_new(rec_click **out);
void rec_click_free(rec_click *m); /* NULL is a no-op */

/* Take the model declared by the loaded policies (the first in name order
 * with a `model` table), when they changed since the last call: a model
 * with the same options keeps what it learned, other options start a new
 * one. No declaration: no model (nothing is logged or learned). Returns
 * whether a model is in force. */
int rec_click_sync(rec_click *m, struct rec_script_rt *rt);
int rec_click_active(const rec_click *m);
/* Put spec in force (as rec_click_sync does for a declaration), or none
 * with NULL. REC_ENOMEM leaves the previous model. */
int rec_click_set(rec_click *m, const rec_click_spec *s);
const rec_click_spec *rec_click_spec_of(const rec_click *m); /* NULL: none */

/* A request, and its candidates (items at their positions). */
typedef struct rec_click_ask {
    const char *ukey;       /* encoded user id */
    size_t ulen;
    const void *context;    /* msgpack map, or NULL */
    size_t clen;
    double now;
} rec_click_ask;

typedef struct rec_click_cand {
    uint32_t item;
    uint32_t position;
    const char *strategy;   /* NULL: "policy" */
    double score;
} rec_click_cand;

/* P(click) at position 0 into pclick; P(conversion | click) into pconv
 * (NULL, or NaN each when no conversion model); the standard deviation of
 * the click logit's linear part into sd (NULL allowed). REC_ENOTFOUND with
 * no model. */
int rec_click_predict(rec_click *m, struct rec_engine *e, const rec_click_ask *a,
                      const rec_click_cand *c, size_t n, double *pclick, double *pconv,
                      double *sd);

/* The features of the shown items, at their positions, as bytes for the
 * list's record (appended to out). */
int rec_click_encode(rec_click *m, struct rec_engine *e, const rec_click_ask *a,
                     const rec_click_cand *c, size_t n, rec_buf *out);

/* A list with n shown items was served at ts under rec_id: it waits for
 * outcomes until ts + window. */
int rec_click_served(rec_click *m, uint64_t rec_id, double ts, uint32_t n);

/* An event with a rec_id (16 hex digits) on item of type (tl bytes) at
 * ts: a click or a conversion of that list's item is learned. Other
 * events, unknown or expired lists and items not in the list: nothing. */
int rec_click_feedback(rec_click *m, struct rec_engine *e, const char *rec_id, size_t rl,
                       uint32_t item, const char *type, size_t tl, double ts);

/* Lists whose window ended by now: their negatives are learned. */
int rec_click_expire(rec_click *m, struct rec_engine *e, double now);

/* Item idx's properties changed: what was read of them is read again. */
void rec_click_item_changed(rec_click *m, uint32_t idx);

/* The user's weight and factors go back to their start. */
void rec_click_forget(rec_click *m, const char *ukey, size_t ulen);

typedef struct rec_click_info {
    int active;
    uint64_t served, pending, clicks, conversions, negatives, late, unmatched;
    rec_ctr_stats click, conv;
} rec_click_info;
void rec_click_info_get(const rec_click *m, rec_click_info *out);

/* Persistence: stage the changed buckets, the statistics and the waiting
 * lists into b (at a checkpoint); then, once committed, rec_click_clean.
 * rec_click_load reads them back when the engine opens. */
int rec_click_flush(rec_click *m, struct rec_batch *b);
void rec_click_clean(rec_click *m);
/* Anything to write since the last rec_click_clean? */
int rec_click_dirty(const rec_click *m);
int rec_click_load(rec_click *m, struct rec_store *s);

#endif
