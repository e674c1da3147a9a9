/* mf.h - online matrix factorisation for implicit feedback, one event at a
 * time. A mechanism: when and how hard to apply it is the policies' choice. */
#ifndef REC_MF_H
#define REC_MF_H

#include <stddef.h>
#include <stdint.h>

#include "rng.h"
#include "space.h"

/* Matrix factorisation trained one event at a time with BPR-style SGD. */
typedef struct rec_mf_opts {
    float lr;         /* learning rate; default 0.05 */
    float reg;        /* L2 regularisation; default 0.01 */
    uint32_t negatives; /* sampled negatives per step; default 4 */
    float init_scale; /* new vectors ~ U(-s, s) / sqrt(dim); default 0.1 */
    float max_norm;   /* rows are scaled back to this norm after a step, so
                         coupled user/item growth cannot diverge; default 5 */
} rec_mf_opts;

void rec_mf_opts_default(rec_mf_opts *o);

/* Fill v (dim floats) with a small random vector for a new user or item. */
void rec_mf_init_vector(rec_rng *r, const rec_mf_opts *o, float *v,
                        uint32_t dim);

/* One SGD step on (user, pos) with weight w > 0 (scales the step) against
 * the given negative items: for each negative j, the BPR gradient of
 * ln sigmoid(u.(p - n_j)) moves u, p and n_j. All rows must exist in `s`
 * (negatives equal to pos are skipped). Marks touched rows dirty. Returns
 * the mean BPR loss over the negatives before the update (0 when none).
 * Cost O((1 + negs) * dim). */
float rec_mf_step(rec_space *s, uint32_t user, uint32_t pos, float w,
                  const uint32_t *negs, size_t nnegs, const rec_mf_opts *o);

#endif
