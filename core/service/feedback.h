/* feedback.h - the built-in learner: what an event teaches when no loaded
 * policy has on_event. A decayed "popularity" counter (one-day half-life)
 * and one online MF step in space "mf" (64 dimensions) per positive event;
 * the built-in recommender (fusion.h) reads both.
 */
#ifndef REC_FEEDBACK_H
#define REC_FEEDBACK_H

#include <stdint.h>

#include "engine.h"

#define REC_FEEDBACK_POP_COUNTER "popularity"
#define REC_FEEDBACK_POP_HALF_LIFE 86400.0
#define REC_FEEDBACK_MF_SPACE "mf"
#define REC_FEEDBACK_MF_DIM 64

/* Learn one event of weight w at ts (seconds) by user and item (indexes):
 * nothing for w <= 0. Deterministic given the engine's generator, so a
 * replay after a crash reproduces it. Returns 0 or a negative REC_E*. */
int rec_feedback_learn(rec_engine *e, uint32_t user, uint32_t item, float w, double ts);

#endif
