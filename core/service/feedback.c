/* feedback.c - the built-in learner (feedback.h). */
#include "feedback.h"

#include <math.h>

/* Built-in feedback until pipelines of Lua policies take over: decayed
 * popularity and one online MF step per positive event. Deterministic
 * given the engine's generator, so a replay after a crash reproduces it. */
int rec_feedback_learn(rec_engine *e, uint32_t user, uint32_t item, float w, double ts) {
    if (!(w > 0.0f))
        return 0;
    rec_counter *pop;
    rec_space *mf = rec_engine_space(e, REC_FEEDBACK_MF_SPACE);
    int rc;
    if ((rc = rec_engine_counter_ensure(e, REC_FEEDBACK_POP_COUNTER, REC_FEEDBACK_POP_HALF_LIFE, &pop)) ||
        (rc = rec_counter_add(pop, item, w, ts)))
        return rc;
    if (!mf && (rc = rec_engine_space_ensure(e, REC_FEEDBACK_MF_SPACE, REC_FEEDBACK_MF_DIM, &mf)))
        return rc;
    /* A purchase (8) should not step eight times as far as a view. */
    float step = w > 1.0f ? 1.0f + logf(w) : w;
    return rec_engine_mf_update(e, mf, user, item, step < 4.0f ? step : 4.0f, NULL, NULL);
}
