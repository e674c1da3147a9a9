/* ials.c - implicit ALS: CSR construction, Gram matrix, Cholesky, the
 * per-row solve, training and fold-in.
 *
 * Layout of the per-row system: A is f x f row-major and only its lower
 * triangle carries the matrix (the upper one is scratch). All arithmetic
 * goes through the vec kernels, arranged so that each call does as much
 * work as possible (at f = 64 call overhead, not flops, is the limit):
 *   - sum c y y^T, few interactions: rank-1 updates, axpy(c*y[k], y, A[k], k+1)
 *   - sum c y y^T, many: blocks of 64 interactions gathered transposed,
 *     one dot_rows per column of A (see solve_one)
 *   - Cholesky, left-looking: one dot_rows per column of L
 *   - forward solve  L z = b:  z[i] = (b[i] - dot(L[i], z, i)) / L[i][i]
 *   - back solve     L^T x = z: column-oriented, x[0..k) -= x[k] * L[k][0..k)
 * Everything is float; the loss alone accumulates in double.
 */
#include "ials.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "counter.h"
#include "mf.h"
#include "rng.h"
#include "vec.h"

/* Interactions gathered per block in solve_one (see REC_IALS_SCRATCH_FLOATS). */
#define CHUNK REC_IALS_CHUNK
/* Below this many interactions rank-1 updates beat the blocked path
 * (measured at f = 64: 85 vs 111 ms per ml100k iteration). */
#define SMALL_N 8

/* ---- data ------------------------------------------------------------ */

static int weight_kept(float w) { return w > 0.0f; } /* false for NaN */

int rec_ials_data_build(const rec_ials_triple *t, size_t n, uint32_t nusers,
                        uint32_t nitems, float alpha, rec_ials_data *out) {
    if (!out)
        return REC_EINVAL;
    memset(out, 0, sizeof *out);
    if ((!t && n > 0) || !(alpha > 0.0f) || isinf(alpha))
        return REC_EINVAL;
    if (n > UINT32_MAX)
        return REC_ETOOLARGE;

    /* Pass 1: which triples count, and the row counts. */
    uint64_t nu = nusers, ni = nitems;
    uint32_t m = 0;
    for (size_t k = 0; k < n; k++) {
        if (!weight_kept(t[k].weight))
            continue;
        if (isinf(t[k].weight))
            return REC_ENONFINITE;
        if ((uint64_t)t[k].user + 1 > nu)
            nu = (uint64_t)t[k].user + 1;
        if ((uint64_t)t[k].item + 1 > ni)
            ni = (uint64_t)t[k].item + 1;
        m++;
    }
    if (nu > UINT32_MAX || ni > UINT32_MAX)
        return REC_ETOOLARGE;

    /* Two stable counting sorts (by item, then by user) put the kept
     * triples in (user, item) order, so duplicates end up adjacent and
     * every user row comes out sorted by item. */
    int rc = REC_ENOMEM;
    uint32_t *icnt = calloc((size_t)ni + 1, sizeof *icnt);
    uint32_t *ucnt = calloc((size_t)nu + 1, sizeof *ucnt);
    uint32_t *by_item = malloc(((size_t)m + 1) * sizeof *by_item);
    uint32_t *by_user = malloc(((size_t)m + 1) * sizeof *by_user);
    if (!icnt || !ucnt || !by_item || !by_user)
        goto done;
    for (size_t k = 0; k < n; k++)
        if (weight_kept(t[k].weight)) {
            icnt[t[k].item + 1]++;
            ucnt[t[k].user + 1]++;
        }
    for (uint64_t i = 0; i < ni; i++)
        icnt[i + 1] += icnt[i];
    for (uint64_t u = 0; u < nu; u++)
        ucnt[u + 1] += ucnt[u];
    for (size_t k = 0; k < n; k++)
        if (weight_kept(t[k].weight))
            by_item[icnt[t[k].item]++] = (uint32_t)k;
    for (uint32_t j = 0; j < m; j++) {
        uint32_t k = by_item[j];
        by_user[ucnt[t[k].user]++] = k;
    }

    /* Distinct pairs. */
    uint32_t nnz = 0;
    for (uint32_t j = 0; j < m; j++) {
        const rec_ials_triple *a = &t[by_user[j]];
        if (j == 0 || a->user != t[by_user[j - 1]].user ||
            a->item != t[by_user[j - 1]].item)
            nnz++;
    }

    /* One block: the uint32 arrays, then the float arrays. */
    size_t words = ((size_t)nu + 1) + ((size_t)ni + 1) + 4 * (size_t)nnz;
    uint32_t *block = malloc(words * sizeof(uint32_t));
    if (!block)
        goto done;
    uint32_t *user_ptr = block;
    uint32_t *user_items = user_ptr + nu + 1;
    uint32_t *item_ptr = user_items + nnz;
    uint32_t *item_users = item_ptr + ni + 1;
    float *user_conf = (float *)(void *)(item_users + nnz);
    float *item_conf = user_conf + nnz;

    /* User CSR, merging runs of the same pair (sums in double). */
    uint32_t o = 0, j = 0;
    user_ptr[0] = 0;
    for (uint32_t u = 0; u < nu; u++) {
        while (j < m && t[by_user[j]].user == u) {
            uint32_t item = t[by_user[j]].item;
            double w = 0.0;
            for (; j < m && t[by_user[j]].user == u &&
                   t[by_user[j]].item == item;
                 j++)
                w += (double)t[by_user[j]].weight;
            float c = (float)((double)alpha * w);
            if (isinf(c)) {
                free(block);
                rc = REC_ENONFINITE;
                goto done;
            }
            user_items[o] = item;
            user_conf[o] = c;
            o++;
        }
        user_ptr[u + 1] = o;
    }

    /* Item CSR by transposition; walking users in order keeps each item
     * row sorted by user. icnt is reused as the fill cursor. */
    memset(icnt, 0, ((size_t)ni + 1) * sizeof *icnt);
    for (uint32_t k = 0; k < nnz; k++)
        icnt[user_items[k] + 1]++;
    for (uint64_t i = 0; i < ni; i++)
        icnt[i + 1] += icnt[i];
    memcpy(item_ptr, icnt, ((size_t)ni + 1) * sizeof *icnt);
    for (uint32_t u = 0; u < nu; u++)
        for (uint32_t k = user_ptr[u]; k < user_ptr[u + 1]; k++) {
            uint32_t dst = icnt[user_items[k]]++;
            item_users[dst] = u;
            item_conf[dst] = user_conf[k];
        }

    out->nusers = (uint32_t)nu;
    out->nitems = (uint32_t)ni;
    out->user_ptr = user_ptr;
    out->user_items = user_items;
    out->user_conf = user_conf;
    out->item_ptr = item_ptr;
    out->item_users = item_users;
    out->item_conf = item_conf;
    out->block = block;
    rc = 0;
done:
    free(icnt);
    free(ucnt);
    free(by_item);
    free(by_user);
    return rc;
}

void rec_ials_data_free(rec_ials_data *d) {
    if (!d)
        return;
    free(d->block);
    memset(d, 0, sizeof *d);
}

static int check_side(uint32_t nrows, uint32_t ncols, const uint32_t *ptr,
                      const uint32_t *idx, const float *conf) {
    if (!ptr || ptr[0] != 0)
        return REC_EINVAL;
    for (uint32_t r = 0; r < nrows; r++)
        if (ptr[r + 1] < ptr[r])
            return REC_EINVAL;
    uint32_t nnz = ptr[nrows];
    if (nnz > 0 && (!idx || !conf))
        return REC_EINVAL;
    for (uint32_t k = 0; k < nnz; k++)
        if (idx[k] >= ncols || !(conf[k] >= 0.0f) || isinf(conf[k]))
            return REC_EINVAL;
    return 0;
}

int rec_ials_data_check(const rec_ials_data *d) {
    if (!d)
        return REC_EINVAL;
    int rc = check_side(d->nusers, d->nitems, d->user_ptr, d->user_items,
                        d->user_conf);
    if (!rc)
        rc = check_side(d->nitems, d->nusers, d->item_ptr, d->item_users,
                        d->item_conf);
    if (!rc && d->user_ptr[d->nusers] != d->item_ptr[d->nitems])
        rc = REC_EINVAL;
    return rc;
}

/* ---- linear algebra -------------------------------------------------- */

void rec_ials_gram(const float *V, uint32_t nitems, uint32_t factors,
                   float *VtV) {
    size_t f = factors;
    memset(VtV, 0, f * f * sizeof *VtV);
    for (uint32_t i = 0; i < nitems; i++) {
        const float *v = V + (size_t)i * f;
        for (size_t k = 0; k < f; k++)
            rec_vec_axpy(v[k], v, VtV + k * f, k + 1);
    }
    for (size_t r = 0; r < f; r++)
        for (size_t c = r + 1; c < f; c++)
            VtV[r * f + c] = VtV[c * f + r];
}

int rec_ials_cholesky_solve(float *A, float *b, uint32_t n) {
    size_t N = n;
    /* Left-looking, one column of L per step: for rows i >= j,
     * L[i][j] = (A[i][j] - dot(L[i][0..j), L[j][0..j))) / L[j][j], i.e. one
     * matrix-vector product over the rows below. Its results go to row j's
     * upper part A[j][j..n), which is free scratch. */
    for (size_t j = 0; j < N; j++) {
        float *Lj = A + j * N;
        float ajj = Lj[j];
        rec_vec_dot_rows(Lj, N, N - j, Lj, j, Lj + j);
        float d = ajj - Lj[j];
        if (!(d > 0.0f) || isinf(d))
            return REC_ERANGE;
        float ljj = sqrtf(d), inv = 1.0f / ljj;
        Lj[j] = ljj;
        for (size_t i = j + 1; i < N; i++)
            A[i * N + j] = (A[i * N + j] - Lj[i]) * inv;
    }
    for (size_t i = 0; i < N; i++) {
        const float *Li = A + i * N;
        b[i] = (b[i] - rec_vec_dot(Li, b, i)) / Li[i];
    }
    for (size_t k = N; k-- > 0;) {
        const float *Lk = A + k * N;
        b[k] /= Lk[k];
        rec_vec_axpy(-b[k], Lk, b, k);
    }
    return 0;
}

int rec_ials_reg_inverse(const float *YtY, uint32_t factors, float reg, float *Binv,
                         float *scratch) {
    size_t f = factors;
    for (size_t c = 0; c < f; c++) {
        memcpy(scratch, YtY, f * f * sizeof *scratch);
        for (size_t k = 0; k < f; k++)
            scratch[k * f + k] += reg;
        float *col = Binv + c * f; /* B is symmetric: column c is row c */
        memset(col, 0, f * sizeof *col);
        col[c] = 1.0f;
        int rc = rec_ials_cholesky_solve(scratch, col, factors);
        if (rc)
            return rc;
    }
    return 0;
}

void rec_ials_short_rows(const float *Binv, const float *Y, uint32_t begin, uint32_t end,
                         uint32_t factors, float *P) {
    size_t f = factors;
    for (size_t r = begin; r < end; r++)
        rec_vec_dot_rows(Binv, f, f, Y + r * f, f, P + r * f);
}

/* The row solve below by the Woodbury identity, for n < f interactions of
 * positive confidence: with B = YtY + reg I and p_i = B^-1 y_i (rows of P),
 * (B + Yu^T C Yu) x = Yu^T (1 + c) is x = s - Pu^T z, s = sum (1 + c_i)
 * p_i, where (C^-1 + Yu Pu^T) z = Yu s: an n x n system instead of f x f,
 * O(n^2 f + n^3) instead of O(n f^2 + f^3). M: n x n + n floats. */
static int solve_short(const float *Y, const float *P, size_t f, const uint32_t *idx,
                       const float *conf, size_t n, float *x, float *M) {
    float *t = M + n * n;
    memset(x, 0, f * sizeof *x);
    for (size_t i = 0; i < n; i++)
        rec_vec_axpy(1.0f + conf[i], P + (size_t)idx[i] * f, x, f);
    for (size_t i = 0; i < n; i++) {
        const float *y = Y + (size_t)idx[i] * f;
        for (size_t j = 0; j <= i; j++) /* the lower triangle is read */
            M[i * n + j] = rec_vec_dot(y, P + (size_t)idx[j] * f, f);
        M[i * n + i] += 1.0f / conf[i];
        t[i] = rec_vec_dot(y, x, f);
    }
    int rc = rec_ials_cholesky_solve(M, t, (uint32_t)n);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++)
        rec_vec_axpy(-t[i], P + (size_t)idx[i] * f, x, f);
    return rec_vec_all_finite(x, f) ? 0 : REC_ENONFINITE;
}

/* Does row (conf[0..n)) take the short form? */
static int short_ok(const float *P, size_t f, const float *conf, size_t n) {
    if (!P || n >= f)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(conf[i] > 0.0f))
            return 0;
    return 1;
}

/* x = argmin for one row: (YtY + sum c y y^T + reg I) x = sum (1 + c) y.
 *
 * With SMALL_N or more interactions they go in chunks of up to CHUNK rows
 * gathered transposed into Zt (f x CHUNK), so that column l of
 * sum c y y^T is one matrix-vector product Zt[l..f) . (c o Zt[l]) and b
 * gains Zt . (1 + c): f + 1 kernel calls per chunk instead of f per
 * interaction. */
static int solve_one(const float *Y, const float *YtY, const float *P, size_t f, float reg,
                     const uint32_t *idx, const float *conf, size_t n,
                     float *x, float *scratch) {
    if (n == 0) {
        memset(x, 0, f * sizeof *x);
        return 0;
    }
    if (short_ok(P, f, conf, n))
        return solve_short(Y, P, f, idx, conf, n, x, scratch);
    float *A = scratch;            /* f x f */
    float *Zt = A + f * f;         /* f x CHUNK */
    float *b = Zt + f * CHUNK;     /* f */
    float *tmp = b + f;            /* f */
    float *w = tmp + f;            /* CHUNK: 1 + c */
    float *q = w + CHUNK;          /* CHUNK */
    memcpy(A, YtY, f * f * sizeof *A);
    for (size_t k = 0; k < f; k++)
        A[k * f + k] += reg;
    memset(b, 0, f * sizeof *b);
    if (n < SMALL_N) {
        /* Few interactions: rank-1 updates of the lower triangle. */
        for (size_t j = 0; j < n; j++) {
            const float *y = Y + (size_t)idx[j] * f;
            float c = conf[j];
            rec_vec_axpy(1.0f + c, y, b, f);
            if (c != 0.0f)
                for (size_t k = 0; k < f; k++)
                    rec_vec_axpy(c * y[k], y, A + k * f, k + 1);
        }
    } else {
        for (size_t j0 = 0; j0 < n; j0 += CHUNK) {
            size_t m = n - j0 < CHUNK ? n - j0 : CHUNK;
            for (size_t jj = 0; jj < m; jj++) {
                const float *y = Y + (size_t)idx[j0 + jj] * f;
                w[jj] = 1.0f + conf[j0 + jj];
                for (size_t k = 0; k < f; k++)
                    Zt[k * CHUNK + jj] = y[k];
            }
            rec_vec_dot_rows(Zt, CHUNK, f, w, m, tmp);
            for (size_t k = 0; k < f; k++)
                b[k] += tmp[k];
            for (size_t l = 0; l < f; l++) {
                const float *zl = Zt + l * CHUNK;
                for (size_t jj = 0; jj < m; jj++)
                    q[jj] = conf[j0 + jj] * zl[jj];
                rec_vec_dot_rows(zl, CHUNK, f - l, q, m, tmp);
                for (size_t k = l; k < f; k++)
                    A[k * f + l] += tmp[k - l];
            }
        }
    }
    int rc = rec_ials_cholesky_solve(A, b, (uint32_t)f);
    if (rc)
        return rc;
    if (!rec_vec_all_finite(b, f))
        return REC_ENONFINITE;
    memcpy(x, b, f * sizeof *x);
    return 0;
}

int rec_ials_solve_rows(const float *Y, const float *YtY, const float *P, uint32_t factors,
                        float reg, const uint32_t *ptr, const uint32_t *idx,
                        const float *conf, uint32_t begin, uint32_t end,
                        float *X, float *scratch) {
    if (factors < 1 || factors > REC_IALS_MAX_FACTORS)
        return REC_ERANGE;
    size_t f = factors;
    for (uint32_t r = begin; r < end; r++) {
        uint32_t s = ptr[r], e = ptr[r + 1];
        int rc = solve_one(Y, YtY, P, f, reg, idx + s, conf + s, e - s,
                           X + (size_t)r * f, scratch);
        if (rc)
            return rc;
    }
    return 0;
}

static int check_reg(float reg) { return reg > 0.0f && !isinf(reg); }

int rec_ials_half_prepare(const float *Y, uint32_t ny, uint32_t factors, float reg, float *YtY,
                          float *Binv, float *scratch) {
    rec_ials_gram(Y, ny, factors, YtY);
    return rec_ials_reg_inverse(YtY, factors, reg, Binv, scratch);
}

/* ---- training -------------------------------------------------------- */

int rec_ials_train(const rec_ials_data *d, uint32_t factors, float reg,
                   uint32_t iters, uint64_t seed, float *U, float *V,
                   int init) {
    if (factors < 1 || factors > REC_IALS_MAX_FACTORS)
        return REC_ERANGE;
    if (!d || !check_reg(reg) || (d->nusers && !U) || (d->nitems && !V))
        return REC_EINVAL;
    int rc = rec_ials_data_check(d);
    if (rc)
        return rc;
    size_t f = factors;

    if (init) {
        rec_rng r;
        rec_rng_seed(&r, seed);
        float s = 0.1f / sqrtf((float)f);
        for (size_t k = 0; k < (size_t)d->nitems * f; k++)
            V[k] = (float)(rec_rng_unit(&r) * 2.0 - 1.0) * s;
        for (size_t k = 0; k < (size_t)d->nusers * f; k++)
            U[k] = (float)(rec_rng_unit(&r) * 2.0 - 1.0) * s;
    }
    if (iters == 0)
        return 0;

    size_t nmax = d->nusers > d->nitems ? d->nusers : d->nitems;
    float *G = malloc((2 * f * f + REC_IALS_SCRATCH_FLOATS(f)) * sizeof *G);
    float *P = malloc((nmax + 1) * f * sizeof *P);
    if (!G || !P) {
        free(G);
        free(P);
        return REC_ENOMEM;
    }
    float *Binv = G + f * f, *scratch = Binv + f * f;
    for (uint32_t it = 0; it < iters && !rc; it++) {
        rc = rec_ials_half_prepare(V, d->nitems, factors, reg, G, Binv, scratch);
        if (!rc) {
            rec_ials_short_rows(Binv, V, 0, d->nitems, factors, P);
            rc = rec_ials_solve_rows(V, G, P, factors, reg, d->user_ptr, d->user_items,
                                     d->user_conf, 0, d->nusers, U, scratch);
        }
        if (!rc)
            rc = rec_ials_half_prepare(U, d->nusers, factors, reg, G, Binv, scratch);
        if (!rc) {
            rec_ials_short_rows(Binv, U, 0, d->nusers, factors, P);
            rc = rec_ials_solve_rows(U, G, P, factors, reg, d->item_ptr, d->item_users,
                                     d->item_conf, 0, d->nitems, V, scratch);
        }
    }
    free(G);
    free(P);
    return rc;
}

int rec_ials_fold_in(const float *V, const float *VtV, uint32_t nitems,
                     uint32_t factors, float reg, const uint32_t *items,
                     const float *conf, size_t n, float *u_out) {
    if (factors < 1 || factors > REC_IALS_MAX_FACTORS)
        return REC_ERANGE;
    if (!u_out || !check_reg(reg) || (n > 0 && (!V || !VtV || !items ||
                                                !conf)))
        return REC_EINVAL;
    for (size_t j = 0; j < n; j++) {
        if (items[j] >= nitems)
            return REC_ERANGE;
        if (!(conf[j] >= 0.0f) || isinf(conf[j]))
            return REC_EINVAL;
    }
    size_t f = factors;
    if (n == 0) {
        memset(u_out, 0, f * sizeof *u_out);
        return 0;
    }
    float *scratch = malloc(REC_IALS_SCRATCH_FLOATS(f) * sizeof *scratch);
    if (!scratch)
        return REC_ENOMEM;
    int rc = solve_one(V, VtV, NULL, f, reg, items, conf, n, u_out, scratch);
    free(scratch);
    return rc;
}

int rec_ials_loss(const rec_ials_data *d, uint32_t factors, float reg,
                  const float *U, const float *V, double *loss) {
    if (factors < 1 || factors > REC_IALS_MAX_FACTORS)
        return REC_ERANGE;
    if (!d || !loss || !check_reg(reg) || (d->nusers && !U) ||
        (d->nitems && !V))
        return REC_EINVAL;
    int rc = rec_ials_data_check(d);
    if (rc)
        return rc;
    size_t f = factors;
    float *G = malloc(f * f * sizeof *G);
    if (!G)
        return REC_ENOMEM;
    rec_ials_gram(V, d->nitems, factors, G);

    double sum = 0.0, norms = 0.0;
    for (uint32_t u = 0; u < d->nusers; u++) {
        const float *x = U + (size_t)u * f;
        /* Every pair as if unobserved: sum_i (u.v_i)^2 = u^T VtV u. */
        for (size_t k = 0; k < f; k++)
            sum += (double)x[k] * (double)rec_vec_dot(G + k * f, x, f);
        /* Observed pairs: replace s^2 by c (1 - s)^2. */
        for (uint32_t j = d->user_ptr[u]; j < d->user_ptr[u + 1]; j++) {
            double s = (double)rec_vec_dot(
                x, V + (size_t)d->user_items[j] * f, f);
            double c = 1.0 + (double)d->user_conf[j];
            sum += c * (1.0 - s) * (1.0 - s) - s * s;
        }
        norms += (double)rec_vec_norm2(x, f);
    }
    for (uint32_t i = 0; i < d->nitems; i++)
        norms += (double)rec_vec_norm2(V + (size_t)i * f, f);
    free(G);
    *loss = sum + (double)reg * norms;
    return 0;
}
