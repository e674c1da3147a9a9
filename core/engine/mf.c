/* mf.c - online matrix factorisation (BPR-style SGD). */
#include "mf.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

void rec_mf_opts_default(rec_mf_opts *o) {
    o->lr = 0.05f;
    o->reg = 0.01f;
    o->negatives = 4;
    o->init_scale = 0.1f;
    o->max_norm = 5.0f;
}

void rec_mf_init_vector(rec_rng *r, const rec_mf_opts *o, float *v,
                        uint32_t dim) {
    float s = o->init_scale / sqrtf((float)dim);
    for (uint32_t i = 0; i < dim; i++)
        v[i] = (float)(rec_rng_unit(r) * 2.0 - 1.0) * s;
}

/* Largest dimension handled with stack scratch; spaces are capped at
 * REC_DIM_MAX so this always holds. */
#define MF_SCRATCH REC_DIM_MAX

/* Scale v back to norm max when it is longer (max <= 0: no limit). */
static void clip_norm(float *v, uint32_t d, float max) {
    if (!(max > 0.0f))
        return;
    float n2 = rec_vec_norm2(v, d);
    if (n2 > max * max)
        rec_vec_scale(max / sqrtf(n2), v, d);
}

float rec_mf_step(rec_space *s, uint32_t user, uint32_t pos, float w,
                  const uint32_t *negs, size_t nnegs, const rec_mf_opts *o) {
    float *u = rec_space_row(s, REC_KIND_USER, user);
    float *p = rec_space_row(s, REC_KIND_ITEM, pos);
    if (!u || !p || nnegs == 0 || !(w > 0.0f))
        return 0.0f;
    uint32_t d = s->dim;
    /* Every row of the step is a likely cache miss (users and negatives
     * are spread over the matrix): start them all loading at once. */
    rec_space_prefetch(s, REC_KIND_ITEM, pos);
    for (size_t k = 0; k < nnegs; k++)
        rec_space_prefetch(s, REC_KIND_ITEM, negs[k]);
    float gu[MF_SCRATCH]; /* accumulated user gradient, applied at the end */
    float u0[MF_SCRATCH]; /* user vector before the step */
    memcpy(u0, u, d * sizeof(float));
    memset(gu, 0, d * sizeof(float));
    float lr = o->lr * w, reg = o->reg, loss = 0.0f;
    size_t used = 0;
    for (size_t k = 0; k < nnegs; k++) {
        if (negs[k] == pos)
            continue;
        float *n = rec_space_row(s, REC_KIND_ITEM, negs[k]);
        if (!n)
            continue;
        /* x = u.(p - n); d/dx ln sigmoid(x) = sigmoid(-x) */
        float x = rec_vec_dot(u0, p, d) - rec_vec_dot(u0, n, d);
        if (!isfinite(x))
            continue;
        /* g = sigmoid(-x); loss = ln(1 + e^-x) = ln(1 + e^x) - x, with
         * the tails where that form cancels or overflows taken apart. */
        float ex = expf(x), g = 1.0f / (1.0f + ex);
        loss += x > 15.0f ? 1.0f / ex : x < -15.0f ? -x : logf(1.0f + ex) - x;
        /* gu += g (p - n) with the old p and n, then
         * p = (1 - lr reg) p + lr g u0,  n = (1 - lr reg) n - lr g u0. */
        rec_vec_axpy(g, p, gu, d);
        rec_vec_axpy(-g, n, gu, d);
        rec_vec_scale(1.0f - lr * reg, p, d);
        rec_vec_axpy(lr * g, u0, p, d);
        rec_vec_scale(1.0f - lr * reg, n, d);
        rec_vec_axpy(-lr * g, u0, n, d);
        clip_norm(n, d, o->max_norm);
        rec_space_touch(s, REC_KIND_ITEM, negs[k]);
        used++;
    }
    if (!used)
        return 0.0f;
    /* u = (1 - lr reg used) u0 + lr gu */
    rec_vec_scale(1.0f - lr * reg * (float)used, u, d);
    rec_vec_axpy(lr, gu, u, d);
    clip_norm(u, d, o->max_norm);
    clip_norm(p, d, o->max_norm);
    rec_space_touch(s, REC_KIND_USER, user);
    rec_space_touch(s, REC_KIND_ITEM, pos);
    return loss / (float)used;
}

