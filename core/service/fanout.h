/* fanout.h - event fan-out: what an event teaches, handed to every loaded
 * policy's on_events (a batch) or on_event (one event) in name order, or,
 * when no policy has either, to the built-in learner (feedback.h); the
 * replay of the log through the same path after open or a failed commit;
 * a user's deletion handed to every policy's on_forget.
 *
 * Batches. Events for the policies are queued (the click model learns
 * each at once) and handed over by rec_fanout_flush: when
 * REC_FANOUT_BATCH are queued, before any commit or stage (the engine's
 * before-commit hook, so a checkpoint never claims events the policies
 * have not seen), and by the owner before anything reads what the
 * policies write (the dispatcher flushes before every call but
 * event.add). Each policy sees the events in log order whatever the
 * batch boundaries, so a replay learns what the live path learned.
 */
#ifndef REC_FANOUT_H
#define REC_FANOUT_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "engine.h"
#include "script.h"

/* Both borrowed; rt may be NULL (the built-in learner alone). */
#define REC_FANOUT_POLICIES 64
/* events queued before they are handed over regardless */
#define REC_FANOUT_BATCH 256

typedef struct rec_fanout {
    rec_engine *e;
    rec_script_rt *rt;
    /* the loaded policies with on_event, in name order, as of script
     * generation `gen` of runtime `of` (looked up again after any load or
     * removal); zero-initialised */
    const rec_script_rt *of;
    uint64_t gen;
    size_t npol;
    const char *pol[REC_FANOUT_POLICIES];
    uint8_t batched[REC_FANOUT_POLICIES]; /* pol[i] has on_events */
    /* events queued for the policies, their rec_id and context bytes in
     * `bytes` from off[i] (context right after rec_id); `rollbacks` is the
     * engine's count when the first was queued (a failed commit since
     * takes them back) */
    rec_replay_event *q;
    size_t *off;
    size_t nq, capq;
    rec_buf bytes;
    uint64_t rollbacks;
    int flushing;
} rec_fanout;

/* What an event teaches, live or replayed: the same function with the same
 * fields, so a replay after a crash or a failed commit learns what the live
 * path learned; for the policies it is queued (see Batches). A policy
 * that fails is logged (the event is already stored). fanout is a
 * rec_fanout (the signature of rec_replay_fn). Returns 0 or a negative
 * REC_E* (the built-in learner's, the click model's, out of memory). */
int rec_fanout_learn(void *fanout, const rec_replay_event *ev);
/* Hand the queued events to the policies now. */
void rec_fanout_flush(rec_fanout *f);
/* rec_fanout_flush for rec_engine_set_before_commit (ud: the fanout). */
void rec_fanout_flush_cb(void *fanout);
/* Free the queue (the fanout itself is the caller's). */
void rec_fanout_free(rec_fanout *f);
/* Learn again the logged events the engine's learned state does not hold
 * (rec_engine_replay); *replayed (may be NULL) gets the count. */
int rec_fanout_replay(rec_fanout *f, uint64_t *replayed);
/* Replay (logged) when rec_engine_replay_due says so; 0 when not due. */
int rec_fanout_catch_up(rec_fanout *f);
/* Every loaded policy's on_forget(user key), in name order; failures are
 * logged (the deletion goes on). Needs f->rt. */
void rec_fanout_forget(rec_fanout *f, const char *key, size_t kl);

#endif
