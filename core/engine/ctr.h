/* ctr.h - a click (or conversion) model learned online from outcomes:
 * logistic regression trained by FTRL-Proximal (per-coordinate learning
 * rates, L1 and L2), optionally with a factorization machine's pairwise
 * crosses (k factors per feature, AdaGrad), over hashed features.
 *
 * A feature is a weight index (a name, or a name and a value, hashed into
 * 2^bits buckets by rec_ctr_index: the same in every process) and a value
 * x (1 for a categorical feature). An example is a list of features and a
 * label; the bias is the model's own. Scoring many candidates that share
 * the request's features computes the shared part once (rec_ctr_score).
 *
 * Not thread-safe: one writer, or readers alone. */
#ifndef REC_CTR_H
#define REC_CTR_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define REC_CTR_MAX_K 32
#define REC_CTR_MAX_FEATS 1024 /* features per example */
#define REC_CTR_BITS_MIN 8
#define REC_CTR_BITS_MAX 26

typedef struct rec_ctr_feat {
    uint32_t idx; /* rec_ctr_index */
    float x;      /* finite */
} rec_ctr_feat;

typedef struct rec_ctr_opts {
    uint32_t bits;  /* 2^bits buckets; default 20 */
    uint32_t k;     /* factors per feature; 0 (default): logistic regression */
    float alpha;    /* FTRL step scale (0.1) */
    float beta;     /* FTRL smoothing (1) */
    float l1;       /* FTRL L1 (0.5): weights of rare features stay 0 */
    float l2;       /* FTRL L2 (1) */
    float fm_lr;    /* AdaGrad step of the factors (0.05) */
    float fm_reg;   /* L2 of the factors (1e-4) */
    float fm_init;  /* scale of the factors' random start (0.01) */
    uint64_t seed;  /* of that start (42) */
} rec_ctr_opts;

typedef struct rec_ctr rec_ctr;

typedef struct rec_ctr_stats {
    uint64_t examples;  /* learned */
    uint64_t positives; /* of them, with label > 0.5 */
    double logloss;     /* mean progressive log loss (predicted before
                           learning each example) */
} rec_ctr_stats;

void rec_ctr_opts_default(rec_ctr_opts *o);

/* REC_EINVAL for options out of range (bits, k, rates <= 0, negative
 * regularisation). */
int rec_ctr_new(rec_ctr **out, const rec_ctr_opts *o);
void rec_ctr_free(rec_ctr *m); /* NULL is a no-op */

const rec_ctr_opts *rec_ctr_options(const rec_ctr *m);
void rec_ctr_stats_get(const rec_ctr *m, rec_ctr_stats *out);

/* The bucket of feature `name` (with `value`, vl bytes, for a categorical
 * one; value NULL for a numeric one). */
uint32_t rec_ctr_index(const rec_ctr *m, const char *name, size_t nl, const char *value,
                       size_t vl);

/* The logit of one example. REC_EINVAL for a non-finite x or more than
 * REC_CTR_MAX_FEATS features. */
int rec_ctr_logit(const rec_ctr *m, const rec_ctr_feat *f, size_t n, double *logit);

/* Logits of ncand candidates: each has the shared features (the request's)
 * and its own, cand[off[c] .. off[c+1]). out gets ncand logits. */
int rec_ctr_score(const rec_ctr *m, const rec_ctr_feat *shared, size_t ns,
                  const rec_ctr_feat *cand, const uint32_t *off, size_t ncand,
                  double *out);

/* The uncertainty of a logit's linear part: a Laplace approximation with
 * the prior precision l2 + 1 and each bucket's accumulated squared
 * gradient n_i (an unbiased estimate of its sum of p (1 - p) x_i^2):
 *     sd = sqrt(sum_i x_i^2 / (1 + l2 + n_i))
 * for the shared and each candidate's features, as rec_ctr_score; out gets
 * ncand standard deviations. For Thompson sampling on the logit. */
int rec_ctr_score_sd(const rec_ctr *m, const rec_ctr_feat *shared, size_t ns,
                     const rec_ctr_feat *cand, const uint32_t *off, size_t ncand,
                     double *out);

/* Learn one example with label y in [0, 1]; *p (may be NULL) gets the
 * probability predicted before learning it. REC_EINVAL for a bad label,
 * x or length: nothing is learned then. */
int rec_ctr_learn(rec_ctr *m, const rec_ctr_feat *f, size_t n, double y, double *p);

double rec_ctr_sigmoid(double logit);

/* Rows learning changed since the last rec_ctr_dirty_clear: the next
 * bucket at or after *from (the bias is bucket 2^bits), or -1 when none. */
int64_t rec_ctr_dirty_next(const rec_ctr *m, uint64_t from);
void rec_ctr_dirty_clear(rec_ctr *m);
/* Bytes of one bucket's state, and copies of it out and in (a row that
 * rec_ctr_row_get wrote; REC_ERANGE for a bucket past the bias). */
size_t rec_ctr_row_bytes(const rec_ctr *m);
int rec_ctr_row_get(const rec_ctr *m, uint64_t bucket, void *out);
int rec_ctr_row_set(rec_ctr *m, uint64_t bucket, const void *row);
/* Forget what bucket learned: weight and state to 0, factors to their
 * random start. */
void rec_ctr_row_reset(rec_ctr *m, uint64_t bucket);
/* The statistics and options as bytes (rec_ctr_save's head), and a model
 * with those options, statistics and all rows at their start. */
int rec_ctr_save_head(const rec_ctr *m, rec_buf *out);
int rec_ctr_load_head(rec_ctr **out, const void *data, size_t len);

/* The whole model as bytes (options, statistics, weights), and back. */
int rec_ctr_save(const rec_ctr *m, rec_buf *out);
/* REC_ECORRUPT when data is not a model rec_ctr_save wrote. */
int rec_ctr_load(rec_ctr **out, const void *data, size_t len);

#endif
