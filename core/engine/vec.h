/* vec.h - float32 vector kernels and exact top-k.
 *
 * Kernels are chosen once at run time from what the CPU supports (AVX-512F,
 * AVX2+FMA, scalar); the build never needs -march=native. All functions
 * accept unaligned pointers and any length; rows handed to the matrix scans
 * are faster when 64-byte aligned with a stride that is a multiple of 16.
 */
#ifndef REC_VEC_H
#define REC_VEC_H

#include <stddef.h>
#include <stdint.h>

typedef enum rec_isa {
    REC_ISA_SCALAR = 0,
    REC_ISA_AVX2 = 1,   /* AVX2 + FMA */
    REC_ISA_AVX512 = 2, /* AVX-512F */
} rec_isa;

/* The instruction set in use ("scalar", "avx2", "avx512"). */
const char *rec_vec_isa_name(void);
rec_isa rec_vec_isa(void);

/* Force an instruction set (tests, benchmarks). Returns REC_ERANGE when the
 * CPU lacks it, leaving the current choice in place. Not thread-safe: call
 * before other threads use the kernels. */
int rec_vec_set_isa(rec_isa isa);

float rec_vec_dot(const float *a, const float *b, size_t n);
/* Squared L2 norm. */
float rec_vec_norm2(const float *a, size_t n);
/* Cosine similarity; 0 when either vector is all zero. */
float rec_vec_cosine(const float *a, const float *b, size_t n);
/* y += alpha * x */
void rec_vec_axpy(float alpha, const float *x, float *y, size_t n);
/* x *= alpha */
void rec_vec_scale(float alpha, float *x, size_t n);
/* Scale x to unit length in place; returns the original norm. A zero vector
 * is left as is and 0 is returned. */
float rec_vec_normalize(float *x, size_t n);
/* 1 when every element is finite (no NaN, no +-Inf), else 0. */
int rec_vec_all_finite(const float *x, size_t n);

/* out[r] = dot(rows + r*stride, q) for r in [0, nrows). O(nrows*d). */
void rec_vec_dot_rows(const float *rows, size_t stride, size_t nrows,
                      const float *q, size_t d, float *out);

/* One candidate of a top-k result. */
typedef struct rec_hit {
    uint32_t idx; /* row index */
    float score;
} rec_hit;

/* Order of results: higher score first; equal scores by lower idx first.
 * Returns <0 when a ranks before b, >0 after, 0 when identical. */
int rec_hit_cmp(const rec_hit *a, const rec_hit *b);

/* Bounded heap keeping the k best hits seen (caller-allocated storage). */
typedef struct rec_topk {
    rec_hit *heap; /* borrowed, capacity k; min-heap on rank order */
    size_t k;      /* capacity */
    size_t n;      /* hits held */
} rec_topk;

/* heap must hold k entries and outlive t. k may be 0 (then nothing is kept). */
void rec_topk_init(rec_topk *t, rec_hit *heap, size_t k);
/* Offer one hit; O(log k) when it enters, O(1) when it does not. */
void rec_topk_push(rec_topk *t, uint32_t idx, float score);
/* Score a hit must beat to enter (-INFINITY while not full). */
float rec_topk_threshold(const rec_topk *t);
/* Sort the held hits into rank order in place (t->heap[0] is the best);
 * returns the count. The heap is no longer a heap afterwards. */
size_t rec_topk_finish(rec_topk *t);

/* Filter for scans: row r is skipped when bit r of skip is set
 * (skip[r >> 6] >> (r & 63) & 1). skip may be NULL. */
typedef struct rec_scan {
    const float *rows;      /* nrows rows of `stride` floats, first d used */
    size_t stride;
    size_t nrows;
    size_t d;
    const float *inv_norms; /* per-row 1/|row| for cosine, or NULL for dot */
    const uint64_t *skip;   /* rows to leave out, or NULL */
} rec_scan;

/* Exact top-k of rows against q by dot product, or by cosine when
 * s->inv_norms is set (q is then normalised internally; a zero q scores 0).
 * Rows whose score is NaN are never returned. Writes up to k hits into out
 * in rank order and returns how many. Allocates nothing beyond a bounded
 * stack block. O(nrows*d + nrows*log k). */
size_t rec_vec_topk(const rec_scan *s, const float *q, size_t k, rec_hit *out);

/* bfloat16: the top 16 bits of a float, rounded to nearest (ties even);
 * values below bf16's smallest normal become zero. */
uint16_t rec_vec_bf16(float f);
/* A row's bf16 copy for rec_vec_topk_bf16: out[i] = bf16 of x[i], and
 * meta = {|x|, |x - out|}, both rounded up. 0 when some element became Inf
 * or NaN (a float too large for bf16 rounds up to Inf). */
int rec_vec_bf16_row(const float *x, size_t n, uint16_t *out, float meta[2]);
/* Can rec_vec_topk_bf16 use its fast path here (AVX-512 kernels in use and
 * a CPU with AVX512-BF16)? */
int rec_vec_bf16_scan_ok(void);

/* rec_vec_topk's answer, found by scanning a bf16 copy of the rows
 * (rows16: the same layout, s->stride elements of 2 bytes per row; half
 * the bytes to read, twice the products per instruction) and scoring in
 * float only the rows whose bf16 score, widened by a bound on its error
 * (from meta: two floats per row, from rec_vec_bf16_row), could reach the
 * k-th best. Float rescoring uses the float scan's kernel in index order,
 * so the hits and scores are exactly rec_vec_topk's. Falls back to
 * rec_vec_topk when the fast path is unavailable, q is zero or not
 * finite, or too many rows stay in doubt. */
size_t rec_vec_topk_bf16(const rec_scan *s, const uint16_t *rows16,
                         const float *meta, const float *q, size_t k,
                         rec_hit *out);
/* Scans by rec_vec_topk_bf16 so far (all threads) that ended on the fast
 * path, and that fell back to the float scan after a first pass. */
void rec_vec_bf16_counts(uint64_t *fast, uint64_t *fallback);

#endif
