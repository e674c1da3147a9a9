/* ease.c - EASE item-item weights: Gram matrix, blocked inverse, B. */
#include "ease.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

#define BLOCK 64
#define TILE 256

/* y[j] -= c0 x0[j] + c1 x1[j] + c2 x2[j] + c3 x3[j]: four rows of the
 * panel per pass over y, so y streams through memory a quarter as often.
 * Built for AVX-512, AVX2 and plain x86-64; the loader picks one. */
__attribute__((target_clones("avx512f", "avx2", "default"), optimize("O3")))
static void axpy4(double *restrict y, const double *restrict x0, const double *restrict x1,
                  const double *restrict x2, const double *restrict x3, double c0, double c1,
                  double c2, double c3, uint32_t n) {
    for (uint32_t j = 0; j < n; j++)
        y[j] -= c0 * x0[j] + c1 * x1[j] + c2 * x2[j] + c3 * x3[j];
}

__attribute__((target_clones("avx512f", "avx2", "default"), optimize("O3")))
static void axpy1(double *restrict y, const double *restrict x, double c, uint32_t n) {
    for (uint32_t j = 0; j < n; j++)
        y[j] -= c * x[j];
}

/* Gauss-Jordan on a small b x b block in place. */
static int invert_small(double *D, uint32_t b) {
    for (uint32_t k = 0; k < b; k++) {
        double p = D[(size_t)k * b + k];
        if (!(p > 0.0) || !isfinite(p))
            return REC_ERANGE;
        double inv = 1.0 / p;
        D[(size_t)k * b + k] = 1.0;
        for (uint32_t j = 0; j < b; j++)
            D[(size_t)k * b + j] *= inv;
        for (uint32_t i = 0; i < b; i++) {
            if (i == k)
                continue;
            double f = D[(size_t)i * b + k];
            D[(size_t)i * b + k] = 0.0;
            if (f != 0.0)
                axpy1(D + (size_t)i * b, D + (size_t)k * b, f, b);
        }
    }
    return 0;
}

/* Blocked Gauss-Jordan: for each block K of BLOCK pivots, with D = A_KK^-1,
 *   A_KK <- D,  A_Kj <- D A_Kj,  A_iK <- -A_iK D,  A_ij <- A_ij - A_iK D A_Kj
 * (i, j outside K) - the scalar algorithm applied a block at a time, so
 * the n x n matrix streams through memory n / BLOCK times instead of n. */
int rec_ease_invert(double *A, uint32_t n) {
    if (!A || !n)
        return REC_EINVAL;
    double *R = malloc((size_t)BLOCK * n * sizeof *R);
    double *C = malloc((size_t)n * BLOCK * sizeof *C);
    double *D = malloc((size_t)BLOCK * BLOCK * sizeof *D);
    int rc = R && C && D ? 0 : REC_ENOMEM;
    for (uint32_t kb = 0; !rc && kb < n; kb += BLOCK) {
        uint32_t b = n - kb < BLOCK ? n - kb : BLOCK;
        for (uint32_t r = 0; r < b; r++)
            memcpy(D + (size_t)r * b, A + (size_t)(kb + r) * n + kb, b * sizeof *D);
        if ((rc = invert_small(D, b)))
            break;
        /* R = D A_K. (every column; the block's own columns are replaced) */
        memset(R, 0, (size_t)b * n * sizeof *R);
        for (uint32_t r = 0; r < b; r++)
            for (uint32_t s = 0; s < b; s++) {
                double d = D[(size_t)r * b + s];
                if (d != 0.0)
                    axpy1(R + (size_t)r * n, A + (size_t)(kb + s) * n, -d, n);
            }
        for (uint32_t i = 0; i < n; i++)
            for (uint32_t s = 0; s < b; s++)
                C[(size_t)i * b + s] = A[(size_t)i * n + kb + s];
        /* A_ij -= C_i R_j, a strip of TILE columns at a time so that the
         * strip of R (BLOCK x TILE doubles) stays in cache for all rows */
        for (uint32_t j0 = 0; j0 < n; j0 += TILE) {
            uint32_t w = n - j0 < TILE ? n - j0 : TILE;
            for (uint32_t i = 0; i < n; i++) {
                if (i >= kb && i < kb + b)
                    continue;
                double *row = A + (size_t)i * n + j0;
                const double *c = C + (size_t)i * b, *Rj = R + j0;
                uint32_t s = 0;
                for (; s + 4 <= b; s += 4)
                    axpy4(row, Rj + (size_t)s * n, Rj + (size_t)(s + 1) * n,
                          Rj + (size_t)(s + 2) * n, Rj + (size_t)(s + 3) * n, c[s], c[s + 1],
                          c[s + 2], c[s + 3], w);
                for (; s < b; s++)
                    axpy1(row, Rj + (size_t)s * n, c[s], w);
            }
        }
        for (uint32_t i = 0; i < n; i++) {
            if (i >= kb && i < kb + b)
                continue;
            double *row = A + (size_t)i * n;
            const double *c = C + (size_t)i * b;
            /* the block's columns: -A_iK D */
            for (uint32_t t = 0; t < b; t++) {
                double v = 0.0;
                for (uint32_t q = 0; q < b; q++)
                    v -= c[q] * D[(size_t)q * b + t];
                row[kb + t] = v;
            }
        }
        for (uint32_t r = 0; r < b; r++) {
            double *row = A + (size_t)(kb + r) * n;
            memcpy(row, R + (size_t)r * n, n * sizeof *row);
            memcpy(row + kb, D + (size_t)r * b, b * sizeof *row);
        }
    }
    free(R);
    free(C);
    free(D);
    return rc;
}

int rec_ease_fit(const uint32_t *ptr, const uint32_t *idx, uint32_t nusers,
                 uint32_t n, double lambda, float *B) {
    if (!ptr || (!idx && ptr[nusers]) || !B || !n || !(lambda > 0.0) || !isfinite(lambda))
        return REC_EINVAL;
    for (uint64_t e = 0; e < ptr[nusers]; e++)
        if (idx[e] >= n)
            return REC_EINVAL;
    double *G = calloc((size_t)n * n, sizeof *G);
    if (!G)
        return REC_ENOMEM;
    for (uint32_t u = 0; u < nusers; u++)
        for (uint32_t a = ptr[u]; a < ptr[u + 1]; a++) {
            double *row = G + (size_t)idx[a] * n;
            for (uint32_t b = ptr[u]; b < ptr[u + 1]; b++)
                row[idx[b]] += 1.0;
        }
    for (uint32_t i = 0; i < n; i++)
        G[(size_t)i * n + i] += lambda;
    int rc = rec_ease_invert(G, n);
    if (!rc)
        for (uint32_t i = 0; i < n; i++)
            for (uint32_t j = 0; j < n; j++)
                B[(size_t)i * n + j] =
                    i == j ? 0.0f : (float)(-G[(size_t)i * n + j] / G[(size_t)j * n + j]);
    free(G);
    return rc;
}
