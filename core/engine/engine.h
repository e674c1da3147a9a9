/* engine.h - the recd engine: store + id maps + spaces + graph + counters.
 *
 * The engine is the one object the server, the Lua module and the tools
 * open. Mutations update the in-memory state at once and stage their LMDB
 * writes in a pending batch; rec_engine_commit makes them durable in one
 * write transaction. If a commit fails (map full past its maximum, disk
 * full) the in-memory state is rebuilt from the store, so memory never
 * claims what the disk does not hold.
 *
 * Ids are encoded keys (see idmap.h: rec_id_str / rec_id_int).
 * Not thread-safe: one thread owns an engine.
 */
#ifndef REC_ENGINE_H
#define REC_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "graph.h"
#include "idmap.h"
#include "counter.h"
#include "mf.h"
#include "rng.h"
#include "space.h"
#include "store.h"

#define REC_TYPE_NAME_MAX 63
#define REC_MAX_TYPES 1024
#define REC_MAX_SPACES 256
#define REC_MAX_COUNTERS 256
#define REC_PROPS_MAX (1u << 20) /* stored properties, bytes */

typedef struct rec_engine_opts {
    rec_store_opts store;
    uint64_t seed;        /* generator seed; default 42 */
    uint32_t cooc_window; /* co-occurrence window; default 5 */
    double checkpoint_interval; /* seconds between writes of learned state
                                   (online vectors, counters); 0 (default):
                                   with every commit */
    rec_mf_opts mf;
} rec_engine_opts;

void rec_engine_opts_default(rec_engine_opts *o);

typedef struct rec_engine rec_engine;

/* Open the data folder (created when missing) and rebuild the in-memory
 * state from it. errbuf receives a message on failure. */
int rec_engine_open(rec_engine **out, const char *dir,
                    const rec_engine_opts *o, char *errbuf, size_t errlen);
/* Commits what is pending (errors ignored: call commit first to see them)
 * and closes. NULL is a no-op. */
void rec_engine_free(rec_engine *e);

/* Message detail of the last failing call (valid until the next call). */
const char *rec_engine_errmsg(const rec_engine *e);

/* A vector argument: `dim` floats for space `space`. */
typedef struct rec_vecarg {
    const char *space;
    const float *v;
    uint32_t dim;
} rec_vecarg;

/* Create or update an item (kind ITEM) or user. props: msgpack bytes of a
 * map, or NULL to keep what is stored. active: 1, 0, or -1 to keep (new
 * items are active). Vectors name spaces that are created with the
 * vector's dimension when missing; a vector of another dimension than its
 * space's is REC_EDIM, with NaN/Inf REC_ENONFINITE; nothing is changed
 * when any argument is refused. *idx_out (may be NULL) gets the index. */
int rec_engine_put(rec_engine *e, rec_kind kind, const char *key,
                   size_t klen, const void *props, size_t plen, int active,
                   const rec_vecarg *vecs, size_t nvecs, uint32_t *idx_out);

/* Ask the cache for the id-map slots of an event's user and item keys,
 * ahead of rec_engine_event on them (a server decoding requests ahead
 * calls it for the next one while running the current). No effect else. */
void rec_engine_prefetch_ids(const rec_engine *e, const char *user,
                             size_t ulen, const char *item, size_t ilen);
/* Index of an id, or REC_IDX_NONE. */
uint32_t rec_engine_lookup(const rec_engine *e, rec_kind kind,
                           const char *key, size_t klen);
/* Ask the cache for the keys of the n hits (of kind `kind`) before
 * rec_engine_key is called on each: their pointers, then their bytes. */
void rec_engine_prefetch_keys(const rec_engine *e, rec_kind kind,
                              const rec_hit *h, size_t n);
/* Is idx a live id of that kind? */
int rec_engine_alive(const rec_engine *e, rec_kind kind, uint32_t idx);
/* Encoded key of an index (borrowed until the id is deleted), or NULL. */
const char *rec_engine_key(const rec_engine *e, rec_kind kind, uint32_t idx,
                           size_t *klen);
/* Number of live ids of a kind, and the index bound (highest + 1). */
uint32_t rec_engine_count(const rec_engine *e, rec_kind kind);
uint32_t rec_engine_bound(const rec_engine *e, rec_kind kind);

/* Stored properties (msgpack map; empty map when none) copied into props,
 * and the active flag. REC_ENOTFOUND for unknown ids. */
int rec_engine_get(rec_engine *e, rec_kind kind, uint32_t idx, rec_buf *props,
                   int *active);
int rec_engine_is_active(const rec_engine *e, uint32_t item);
/* Bitmap of inactive items (borrowed; bit set = inactive), and its words. */
const uint64_t *rec_engine_inactive(const rec_engine *e, size_t *words);

/* Forget an item or user entirely: properties, ids, vectors, counters and,
 * for a user, history and their rows in the event log. REC_ENOTFOUND when
 * unknown. */
int rec_engine_delete(rec_engine *e, rec_kind kind, const char *key,
                      size_t klen);

/* One interaction. user/item are encoded keys; unknown ones are created
 * (an item as a bare id). type: 1..63 bytes. ts: seconds since the epoch,
 * 0 for now. rec_id, context (msgpack bytes) may be NULL. */
typedef struct rec_event {
    const char *user;
    size_t ulen;
    const char *item;
    size_t ilen;
    const char *type;
    size_t tlen;
    double value;       /* free numeric payload (rating, dwell time) */
    int has_value;
    double ts;
    const char *rec_id;
    size_t rlen;
    const void *context;
    size_t clen;
} rec_event;

/* What rec_engine_event did. */
typedef struct rec_event_out {
    uint64_t seq;        /* position in the log */
    double ts;           /* its time (the clock's when it had none) */
    float weight;        /* the type's weight (logged with the event) */
    uint32_t user, item; /* indexes (created when new) */
    uint16_t type;       /* the type's id (rec_engine_type_name) */
    uint8_t new_item;    /* 1 when this event created the item */
    uint8_t new_type;    /* 1 when this event created its type */
} rec_event_out;

/* Append the event to the log and update the graph. out may be NULL. */
int rec_engine_event(rec_engine *e, const rec_event *ev, rec_event_out *out);

/* Weight of an event type (0 for types never configured). Defaults: view 1,
 * click 2, add_to_cart 4, purchase 8, skip -1, dislike -4. */
float rec_engine_type_weight(rec_engine *e, const char *type, size_t tlen);
int rec_engine_set_type_weight(rec_engine *e, const char *type, size_t tlen,
                               float w);
/* Name of an interned type id, or NULL. */
const char *rec_engine_type_name(const rec_engine *e, uint16_t id);
/* Id of a type, or REC_ENOTFOUND when never seen (O(types)); and how many
 * types there are (at most REC_MAX_TYPES). */
int rec_engine_type_find(const rec_engine *e, const char *type, size_t tlen);
size_t rec_engine_type_count(const rec_engine *e);

/* Space by name, or NULL. */
rec_space *rec_engine_space(const rec_engine *e, const char *name);
/* Space by name, created with dim when missing. REC_EDIM when it exists
 * with another dimension. */
int rec_engine_space_ensure(rec_engine *e, const char *name, uint32_t dim,
                            rec_space **out);
size_t rec_engine_space_count(const rec_engine *e);
rec_space *rec_engine_space_at(const rec_engine *e, size_t i);
/* Set / remove one row (validated like put). */
int rec_engine_set_vector(rec_engine *e, rec_space *s, rec_kind kind,
                          uint32_t idx, const float *v, uint32_t dim);

/* One online MF step for (user, item) in space s (rows created with small
 * random vectors when missing); negatives sampled uniformly from items
 * with a row. *loss (may be NULL) gets the BPR loss before the step. */
int rec_engine_mf_update(rec_engine *e, rec_space *s, uint32_t user,
                         uint32_t item, float weight,
                         const rec_mf_opts *o, float *loss);

/* ---- Online MF steps owed while nobody reads the space ----------------
 *
 * A batch of logged events learned by MF (db:mf_update) is stepped at once
 * only while something reads its space: nothing is owed and the space
 * was read in the last REC_MF_READ_WINDOW seconds. Otherwise the batch's
 * steps are owed: the engine keeps the range of events they come from,
 * not the events (the log holds them), so a space nobody reads costs
 * O(1) per batch whatever the traffic. A read pays what is owed first, in
 * log order, as the steps would have been made at once (the generator of
 * MF draws is only MF's, so the rows come out the same; with several
 * MF spaces, whose draws then interleave otherwise, each is equally
 * trained but not bit for bit the same), up to
 * REC_MF_READ_PAY steps; the rest is paid by the next reads and by
 * rec_engine_mf_catch_up between requests. Only events in the store are
 * paid (those of a commit under way wait for it). What is owed is written
 * at checkpoints with the rows, so a restart or a replay after a crash
 * owes the same steps. At most REC_MF_OWED_MAX spaces are learned so;
 * others are stepped at once. */
#define REC_MF_READ_WINDOW 60.0
#define REC_MF_READ_PAY 65536
#define REC_MF_OWED_MAX 8

/* How the step of an event is made: MF's options and the event's weight
 * mapped: 1 + ln w above 1 when log_weight, then at most max_weight; only
 * events of weight > 0 and, when typed, of a type set in types. */
typedef struct rec_mf_plan {
    rec_mf_opts mf;
    int log_weight;
    float max_weight;   /* INFINITY: no cap */
    int typed;
    uint64_t types[(REC_MAX_TYPES + 63) / 64];
} rec_mf_plan;

/* The step weight of an event of type and weight w under p; 0: no step. */
float rec_mf_plan_weight(const rec_mf_plan *p, uint16_t type, float w);

struct rec_replay_event;
/* The logged events ev[0..n) (in log order, as the log holds them) are
 * to be learned in space (created with dim when missing) under p: *now =
 * 1 when the caller steps them at once and then calls
 * rec_engine_mf_stepped with the last one's seq, 0 when they are owed.
 * The newest 65,536 owed steps are kept in memory (24 bytes each), older
 * ones are read back from the log. REC_EINVAL for a bad name or events
 * out of order. O(n). */
int rec_engine_mf_owe(rec_engine *e, const char *space, uint32_t dim, const rec_mf_plan *p,
                      const struct rec_replay_event *ev, size_t n, int *now);
void rec_engine_mf_stepped(rec_engine *e, const char *space, uint64_t last);
/* A read of space (NULL: every space learned so): it pays up to
 * REC_MF_READ_PAY owed steps of each first. O(1) when nothing is owed. */
int rec_engine_mf_settle(rec_engine *e, const char *space);
/* Pay owed steps of the spaces read in the last REC_MF_READ_WINDOW
 * seconds for up to `seconds`: 1 when some remain to pay so, 0 when none,
 * or a negative REC_E* (rec_engine_errmsg says why). */
int rec_engine_mf_catch_up(rec_engine *e, double seconds);
/* Events whose steps are owed in space (NULL: all), an upper bound (some
 * may not step). */
uint64_t rec_engine_mf_owed(const rec_engine *e, const char *space);

/* Counter family by name, or NULL. */
rec_counter *rec_engine_counter(const rec_engine *e, const char *name);
/* Family created with half_life (seconds, 0 no decay) when missing; an
 * existing family keeps its half-life. */
int rec_engine_counter_ensure(rec_engine *e, const char *name,
                              double half_life, rec_counter **out);
size_t rec_engine_counter_count(const rec_engine *e);
rec_counter *rec_engine_counter_at(const rec_engine *e, size_t i);

rec_graph *rec_engine_graph(rec_engine *e);
/* One slot for state a higher module keeps per engine (core/learn):
 * free_fn(p) runs when the engine is freed or the slot replaced. */
void *rec_engine_attached(const rec_engine *e);
void rec_engine_attach(rec_engine *e, void *p, void (*free_fn)(void *));
rec_rng *rec_engine_rng(rec_engine *e);
rec_store *rec_engine_store(rec_engine *e);

/* Policy state: msgpack values under string keys (1..255 bytes). */
int rec_engine_kv_put(rec_engine *e, const char *k, size_t kl, const void *v,
                      size_t vl);
int rec_engine_kv_get(rec_engine *e, const char *k, size_t kl, rec_buf *out);
int rec_engine_kv_del(rec_engine *e, const char *k, size_t kl);

/* Record what a recommendation showed: value is msgpack, stored after the
 * user's index so that forgetting a user finds their records. rec_id must
 * grow (the log is appended). */
int rec_engine_rec_put(rec_engine *e, uint64_t rec_id, uint32_t user,
                       const void *v, size_t vl);

/* One event of the log, with every field the live path had: what the
 * event learners (the server's policies) get, live or replayed. The views
 * are borrowed for the duration of the callback. */
typedef struct rec_replay_event {
    uint64_t seq;
    double ts;
    uint32_t user, item;
    uint16_t type;
    float weight;        /* the type's weight when the event was logged */
    int has_value;
    double value;
    const char *rec_id;  /* NULL when none */
    size_t rlen;
    const void *context; /* msgpack bytes, NULL when none */
    size_t clen;
} rec_replay_event;

/* Return nonzero (a negative REC_E*) to stop the replay with that error. */
typedef int (*rec_replay_fn)(void *ud, const rec_replay_event *ev);

/* Hand every logged event the in-memory learned state does not hold yet
 * (those after the checkpoint it was loaded from) to fn, in log order, so
 * the owner of the learning policies re-applies them: after a crash or a
 * failed commit the learned state becomes what it would have been. The
 * generator state is restored from the checkpoint, so deterministic
 * policies reproduce it exactly. The log is read in chunks (no read
 * transaction is open while fn runs). Call it whenever
 * rec_engine_replay_due says so, before the learning of any new event.
 * *replayed (may be NULL) gets the count. O(events replayed). */
int rec_engine_replay(rec_engine *e, rec_replay_fn fn, void *ud,
                      uint64_t *replayed);
/* Nonzero when logged events are not in the learned state: after open
 * (events past the checkpoint) and after a failed commit reloaded the
 * state from the store. */
int rec_engine_replay_due(const rec_engine *e);
uint64_t rec_engine_checkpoint_seq(const rec_engine *e);

/* Learning mode: while on, rec_engine_kv_put and kv_del write policy
 * state that is learned (from events, or from what was shown): it stays in
 * memory and is written at checkpoints with the vectors and counters, so a
 * replay of the events after a checkpoint rebuilds it exactly instead of
 * applying them twice. A write made outside learning mode is written with
 * the next commit (and updates the learned copy of its key, if any).
 * Returns the previous mode. */
int rec_engine_learning(rec_engine *e, int on);

/* A generator for requests (random walks): never the one learning draws
 * from, so requests served between events do not change what a replay
 * reproduces. Not persisted. */
rec_rng *rec_engine_serve_rng(rec_engine *e);
/* What each person was shown and did not engage with (shown.h): the
 * server records its lists there, positive events clear it. */
struct rec_shown;
struct rec_shown *rec_engine_shown(const rec_engine *e);
/* The click model of the served lists (click.h): learned state, written
 * at checkpoints. */
struct rec_click;
struct rec_click *rec_engine_click(const rec_engine *e);

/* Commit, writing learned state too (a checkpoint). */
int rec_engine_checkpoint(rec_engine *e);

/* The record of a recommendation (user index, then msgpack), committed or
 * not. REC_ENOTFOUND when unknown. */
int rec_engine_rec_get(rec_engine *e, uint64_t rec_id, rec_buf *out);

/* fn(ud) runs first in every commit and stage (rec_engine_commit,
 * rec_engine_checkpoint, rec_engine_stage): a learner that holds events
 * back (the server's batches for the policies) hands them over there, so
 * no checkpoint claims events its learned state lacks. NULL: none. */
void rec_engine_set_before_commit(rec_engine *e, void (*fn)(void *ud), void *ud);

/* Make everything pending durable (see the file comment on failure). */
int rec_engine_commit(rec_engine *e);
/* Group commit on another thread, in three steps: rec_engine_stage hands
 * over the pending writes (dirty vectors and counters included) as a batch
 * (*out NULL when there is nothing to write); the caller commits it with
 * rec_store_commit on any thread; rec_engine_commit_done reports the
 * result on the engine's thread. Reads keep seeing the staged writes
 * meanwhile. One staged batch at a time (REC_EBUSY otherwise), and
 * rec_engine_commit, delete and free refuse to run while one is out. If
 * the commit failed, the in-memory state is rebuilt from the store and the
 * writes pending since staging are dropped too. */
int rec_engine_stage(rec_engine *e, rec_batch **out);
int rec_engine_commit_done(rec_engine *e, rec_batch *b, int rc);

/* Failed commits so far (each rebuilt the state and dropped what was
 * pending): an owner that answers writes compares it before and after
 * running anything that may commit, so that no answer claims a write that
 * a failed commit dropped. */
uint64_t rec_engine_rollbacks(const rec_engine *e);

/* Operations waiting for commit. */
size_t rec_engine_pending(const rec_engine *e);
/* 1 when the next stage or commit is a checkpoint: one is due and learned
 * state waits for it. */
int rec_engine_checkpoint_due(const rec_engine *e);

uint64_t rec_engine_events(const rec_engine *e); /* events in the log */

/* Wall-clock seconds since the epoch, or the clock set on this thread. */
double rec_now(void);
/* Wall-clock seconds since the epoch, whatever is set (timers, uptime). */
double rec_wall(void);
/* Replay tools (recd eval) run the engine on the log's own clock: after
 * rec_clock_set(t) with t > 0, rec_now and the scripts' os.time() on this
 * thread answer t; rec_clock_set(0) returns to the wall clock. */
void rec_clock_set(double t);
/* The clock set on this thread, 0 when none. */
double rec_clock_get(void);

/* The engine's clock is event time. Each event's time (its ts, or the
 * clock's when it has none) moves the clock forward to it, never more than
 * REC_CLOCK_AHEAD seconds past the wall clock; an older event (late or out
 * of order) is stored and learned with its own time and leaves the clock
 * where it is. Between events the clock runs with the wall clock: it is the
 * wall clock shifted by the distance between the newest event's time and
 * the wall clock when that event arrived. A deployment whose events carry
 * the current time (or none) is on the wall clock; a backfill of an old log
 * runs at the log's time. The shift is stored with each checkpoint. A
 * clock set on the thread (rec_clock_set: a replay) takes precedence. */
#define REC_CLOCK_AHEAD 300.0
double rec_engine_now(const rec_engine *e);

typedef struct rec_clock_info {
    double now;    /* rec_engine_now without a thread clock */
    double wall;   /* the wall clock */
    double offset; /* now - wall */
    double newest; /* the newest event time seen (0: none) */
    int set;       /* an event has set the clock */
} rec_clock_info;
void rec_engine_clock(const rec_engine *e, rec_clock_info *out);

#endif
