/* ease.h - EASE, an item-item model with a closed-form solution (Steck,
 * "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019).
 *
 * With X the binary user x item matrix and G = X^T X its Gram matrix, the
 * item-item weights are
 *
 *   P = (G + lambda I)^-1,   B_ij = -P_ij / P_jj  (i != j),   B_jj = 0
 *
 * and a user with items H scores item j as sum_{i in H} B_ij. The scores
 * read the user's history as it is now, so every click changes the next
 * answer without retraining; only B is trained in a batch.
 *
 * Cost: the Gram matrix O(sum_u n_u^2); the inverse O(n^3) for n items
 * (blocked Gauss-Jordan in double precision: about 0.6 s at n = 2,000 and
 * 5 s at n = 4,000 on one core); memory 8 n^2 bytes while training and
 * 4 n^2 bytes for B. Callers choose the n most engaged items.
 *
 * Pure functions over caller-owned buffers: no globals, safe on any
 * thread.
 */
#ifndef REC_EASE_H
#define REC_EASE_H

#include <stddef.h>
#include <stdint.h>

/* Invert the symmetric positive definite n x n matrix A (row-major) in
 * place. REC_ERANGE when a pivot is not positive (A is not positive
 * definite), with A left partly overwritten. */
int rec_ease_invert(double *A, uint32_t n);

/* B (n x n floats, row-major, row i = item i's weights towards every item)
 * from the users' item lists: users in CSR form (ptr has nusers + 1
 * entries; idx holds item numbers 0..n-1, distinct within a user).
 * lambda > 0. REC_EINVAL for bad arguments, REC_ENOMEM, REC_ERANGE. */
int rec_ease_fit(const uint32_t *ptr, const uint32_t *idx, uint32_t nusers,
                 uint32_t n, double lambda, float *B);

#endif
