/* fanout.h - event fan-out: what an event teaches, handed to every loaded
 * policy's on_event in name order (or, when none has on_event, to the
 * built-in learner, feedback.h), and the replay of the log through the
 * same path after open or a failed commit; a user's deletion handed to
 * every policy's on_forget.
 */
#ifndef REC_FANOUT_H
#define REC_FANOUT_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "script.h"

/* Both borrowed; rt may be NULL (the built-in learner alone). */
#define REC_FANOUT_POLICIES 64

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
} rec_fanout;

/* What an event teaches, live or replayed: the same function with the same
 * fields, so a replay after a crash or a failed commit learns what the live
 * path learned. A policy that fails is logged (the event is already
 * stored). fanout is a rec_fanout (the signature of rec_replay_fn). Returns
 * 0 or the built-in learner's negative REC_E*. */
int rec_fanout_learn(void *fanout, const rec_replay_event *ev);
/* Learn again the logged events the engine's learned state does not hold
 * (rec_engine_replay); *replayed (may be NULL) gets the count. */
int rec_fanout_replay(rec_fanout *f, uint64_t *replayed);
/* Replay (logged) when rec_engine_replay_due says so; 0 when not due. */
int rec_fanout_catch_up(rec_fanout *f);
/* Every loaded policy's on_forget(user key), in name order; failures are
 * logged (the deletion goes on). Needs f->rt. */
void rec_fanout_forget(rec_fanout *f, const char *key, size_t kl);

#endif
