/* ials.h - implicit-feedback alternating least squares (Hu, Koren and
 * Volinsky, "Collaborative Filtering for Implicit Feedback Datasets", 2008).
 *
 * Model: every (user u, item i) pair has a preference p_ui (1 when observed,
 * else 0) and a confidence c_ui = 1 + conf_ui (conf_ui = alpha * weight for
 * observed pairs, 0 otherwise). Training minimises
 *
 *   L(U, V) = sum_{u,i} c_ui (p_ui - u.v_i)^2 + reg (|U|^2 + |V|^2)
 *
 * over ALL pairs, by solving each user exactly with the items fixed and then
 * each item with the users fixed. Each half-step is an exact minimiser, so L
 * never increases (up to float rounding). The unobserved pairs are paid for
 * once per half-step through the Gram matrix VtV:
 *
 *   (VtV + sum_{i in I(u)} conf_ui v_i v_i^T + reg I) u = sum_{i in I(u)} (1 + conf_ui) v_i
 *
 * solved by Cholesky. Cost per user O(n_u f^2 + f^3) (n_u = the user's
 * interactions, f = factors), so one iteration is O(nnz f^2 + (nusers +
 * nitems) f^3); a row with n_u < f is solved by the Woodbury identity
 * instead, O(n_u^2 f + n_u^3), against rows of P = Y (YtY + reg I)^-1
 * computed once per half-step (O(rows f^2)). Memory beyond the caller's matrices: one f x f Gram matrix
 * plus REC_IALS_SCRATCH_FLOATS(f) floats per solving thread (33 KiB at
 * f = 64, 0.3 MiB at f = 256). At f = 64 the f^3 Cholesky (~6 us on one
 * AVX-512 core) dominates rows with few interactions, so an iteration
 * costs about 6 us * (nusers + nitems) plus the O(nnz f^2) accumulation.
 *
 * Everything here is a pure function over caller-owned buffers: no globals,
 * no engine access, safe to run concurrently on distinct outputs (e.g. in a
 * libuv worker on a snapshot). Results are deterministic for a given seed
 * and instruction set (see vec.h: AVX2 and AVX-512 kernels round slightly
 * differently).
 *
 * Rows with no interactions (users or items) get the zero vector: with
 * b = 0 the regularised system's solution is exactly 0, so they score 0
 * against everything.
 */
#ifndef REC_IALS_H
#define REC_IALS_H

#include <stddef.h>
#include <stdint.h>

#define REC_IALS_MAX_FACTORS 256

/* Interactions a row solve processes per block (fixes the scratch size). */
#define REC_IALS_CHUNK 64

/* Floats of scratch one rec_ials_solve_rows call needs: the f x f system,
 * an f x REC_IALS_CHUNK block of gathered rows and a few vectors. */
#define REC_IALS_SCRATCH_FLOATS(f)                                            \
    ((size_t)(f) * ((size_t)(f) + REC_IALS_CHUNK + 2) + 2 * REC_IALS_CHUNK)

/* One observed interaction for rec_ials_data_build. */
typedef struct rec_ials_triple {
    uint32_t user;
    uint32_t item;
    float weight; /* > 0 to count (<= 0 and NaN are ignored); summed
                     over duplicates of the same (user, item) */
} rec_ials_triple;

/* Interactions in both orientations (compressed sparse rows). Within a row
 * the column indexes are strictly increasing. conf holds c - 1 = alpha *
 * weight, finite and > 0 when built by rec_ials_data_build (hand-built data
 * may use >= 0). */
typedef struct rec_ials_data {
    uint32_t nusers, nitems;
    const uint32_t *user_ptr;   /* nusers + 1 offsets into user_items/conf */
    const uint32_t *user_items; /* item of each interaction, by user */
    const float *user_conf;     /* its confidence - 1 */
    const uint32_t *item_ptr;   /* nitems + 1 offsets into item_users/conf */
    const uint32_t *item_users; /* user of each interaction, by item */
    const float *item_conf;
    void *block; /* owned by rec_ials_data_build's single allocation; NULL
                    when the arrays belong to someone else */
} rec_ials_data;

/* Build both CSRs from n triples. Triples with weight <= 0 (or NaN) are
 * ignored, so a negative signal never cancels a positive one; duplicate
 * (user, item) pairs among the rest are merged by summing their weights,
 * and conf = alpha * sum. Counts are max(nusers, 1 + highest user kept)
 * and likewise for items, so 0 means "infer from the data"; rows beyond
 * the data are empty. t is borrowed for the call only. On success *out
 * owns one allocation: release it with rec_ials_data_free. O(n + nusers +
 * nitems) time; temporary memory 8 bytes per triple + 4 per row.
 * Errors: REC_EINVAL (NULL out, t NULL with n > 0, alpha not finite and
 * > 0), REC_ENONFINITE (a weight or alpha * sum is infinite),
 * REC_ETOOLARGE (more than 2^32 - 1 triples or rows), REC_ENOMEM. On error
 * *out is zeroed. */
int rec_ials_data_build(const rec_ials_triple *t, size_t n, uint32_t nusers,
                        uint32_t nitems, float alpha, rec_ials_data *out);

/* Free what rec_ials_data_build allocated and zero *d. NULL, a zeroed
 * struct, or one with block == NULL are no-ops for the memory. */
void rec_ials_data_free(rec_ials_data *d);

/* Check a (possibly hand-built) rec_ials_data: offsets monotone, both
 * orientations of equal size, indexes in range, conf finite and >= 0.
 * O(nnz + nusers + nitems). REC_EINVAL on the first problem found. */
int rec_ials_data_check(const rec_ials_data *d);

/* VtV = V^T V (factors x factors, row-major, full symmetric) for nitems
 * rows of V (nitems x factors, row-major). O(nitems f^2 / 2). */
void rec_ials_gram(const float *V, uint32_t nitems, uint32_t factors,
                   float *VtV);

/* Solve the n x n symmetric positive definite system A x = b by Cholesky.
 * Reads only the lower triangle of A and overwrites it with L (A = L L^T);
 * the strict upper triangle is used as scratch and left undefined. b is
 * overwritten with x. O(n^3 / 6), n kernel calls for the factorisation.
 * REC_ERANGE when A is not positive definite to float precision (a pivot
 * <= 0 or not finite); A and b are then undefined. */
int rec_ials_cholesky_solve(float *A, float *b, uint32_t n);

/* Train U and V in place for `iters` iterations (users then items).
 *   U: nusers x factors, row-major; V: nitems x factors.
 *   init != 0: fill U and V with U(-0.1, 0.1) / sqrt(factors) from seed
 *   first; otherwise continue from the given V (U is only an output: the
 *   first half-step overwrites every user row). seed is unused when init
 *   is 0. iters may be 0 (then only the initialisation happens).
 * reg must be finite and > 0 (it keeps every system positive definite).
 * Allocates 2 f*f + REC_IALS_SCRATCH_FLOATS(f) floats and max(nusers,
 * nitems) x f for the rows of P (rec_ials_solve_rows: the short form of
 * rows with fewer interactions than factors). On error U and V may hold a
 * partial iteration.
 * Errors: REC_EINVAL (NULL pointers, bad data, reg), REC_ERANGE (factors
 * outside 1..256, or a system lost positive definiteness), REC_ENONFINITE
 * (a solved row is not finite), REC_ENOMEM. */
int rec_ials_train(const rec_ials_data *d, uint32_t factors, float reg,
                   uint32_t iters, uint64_t seed, float *U, float *V,
                   int init);

/* Binv = (YtY + reg I)^-1 (f x f), by f Cholesky solves; scratch: f x f
 * floats. O(f^4 / 6). REC_ERANGE when not positive definite. */
int rec_ials_reg_inverse(const float *YtY, uint32_t factors, float reg, float *Binv,
                         float *scratch);

/* P = Y Binv for rows [begin, end) of Y (the same rows of P): the rows the
 * short form of a row solve reads. O((end - begin) f^2). */
void rec_ials_short_rows(const float *Binv, const float *Y, uint32_t begin, uint32_t end,
                         uint32_t factors, float *P);

/* What a half-step against Y needs first: YtY = rec_ials_gram(Y) and
 * Binv = rec_ials_reg_inverse(YtY); scratch: f x f floats. */
int rec_ials_half_prepare(const float *Y, uint32_t ny, uint32_t factors, float reg, float *YtY,
                          float *Binv, float *scratch);

/* One half-step over rows [begin, end) of a CSR (ptr/idx/conf, e.g. the
 * user orientation): X[r] = argmin given the fixed other side Y (with
 * YtY = rec_ials_gram(Y)). The building block of rec_ials_train, exposed
 * so a caller can split one half-step over threads: each thread takes a
 * disjoint row range and its own scratch of REC_IALS_SCRATCH_FLOATS(f)
 * floats; Y, YtY and P are only read. With P (every row of Y times
 * (YtY + reg I)^-1, rec_ials_short_rows), a row of fewer interactions
 * than factors, all of positive confidence, is solved by the Woodbury
 * identity: the same x up to rounding, in O(n^2 f + n^3) instead of
 * O(n f^2 + f^3); NULL solves every row f x f. Rows are not validated
 * here (see rec_ials_data_check). Errors: REC_ERANGE, REC_ENONFINITE (as
 * train). */
int rec_ials_solve_rows(const float *Y, const float *YtY, const float *P, uint32_t factors,
                        float reg, const uint32_t *ptr, const uint32_t *idx,
                        const float *conf, uint32_t begin, uint32_t end,
                        float *X, float *scratch);

/* Closed-form user vector against fixed item factors: the user half-step
 * for one user, e.g. to react to a new event without retraining.
 *   V: nitems x factors; VtV: rec_ials_gram(V) (computed once per model).
 *   items/conf: the user's n interactions (conf = c - 1 >= 0, finite);
 *   items should be distinct: a repeated item counts its preference twice.
 *   u_out: factors floats; zero when n == 0.
 * Allocates REC_IALS_SCRATCH_FLOATS(f) floats per call (not on the
 * stack: 0.3 MiB at f = 256).
 * Cost O(n f^2 + f^3). Errors: REC_EINVAL (NULL pointers, reg, bad conf),
 * REC_ERANGE (factors, item >= nitems, not positive definite),
 * REC_ENONFINITE, REC_ENOMEM. */
int rec_ials_fold_in(const float *V, const float *VtV, uint32_t nitems,
                     uint32_t factors, float reg, const uint32_t *items,
                     const float *conf, size_t n, float *u_out);

/* The training objective L(U, V) above, computed in double without
 * visiting unobserved pairs: sum_u u^T VtV u plus a correction per
 * observed pair plus the regulariser. O(nnz f + (nusers + nitems) f^2).
 * Allocates f*f floats. Errors as rec_ials_train (no REC_ENONFINITE). */
int rec_ials_loss(const rec_ials_data *d, uint32_t factors, float reg,
                  const float *U, const float *V, double *loss);

#endif
