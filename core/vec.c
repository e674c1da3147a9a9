/* vec.c - float32 kernels with run-time ISA dispatch, and exact top-k.
 *
 * Each kernel exists three times: portable C, AVX2+FMA and AVX-512F. The
 * SIMD versions are compiled through per-function target attributes, so the
 * file builds with plain -O2 and never executes an instruction the CPU lacks:
 * the first call picks a table of function pointers from what the CPU
 * reports, and every later call costs one load and an indirect call.
 *
 * Tails: AVX-512 finishes a length that is not a multiple of 16 with a
 * masked load (masked-out lanes are never touched, so reading past the end of
 * a buffer cannot fault); AVX2 has no cheap equivalent and finishes with a
 * scalar loop.
 *
 * The top-k scan is built to stay memory bound. Rows are scored 64 at a time
 * into a stack block (four rows share every load of q, and the four
 * horizontal sums are done together), and only scores that beat the heap's
 * current threshold reach the heap. Blocks line up with the 64-bit words of
 * the skip bitmap, so a fully skipped block costs one word test and no reads.
 *
 * At d <= 256 the kernels also prefetch rows ~8 KiB ahead (see PF_BYTES),
 * which is what keeps short rows at the bandwidth limit.
 *
 * Determinism: within one ISA a row's score does not depend on which other
 * rows share its group of four or on where the block starts, so identical
 * rows always score identically and ties are broken purely by index.
 */
#include "vec.h"

#include <assert.h>
#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "err.h"

#define TARGET_AVX2 __attribute__((target("avx2,fma")))
#define TARGET_AVX512 __attribute__((target("avx512f")))

/* Rows scored per step of the top-k scan: one word of the skip bitmap. A
 * 256-byte stack block, small enough for any thread stack. */
#define SCAN_BLOCK 64

struct kernels {
    rec_isa isa;
    const char *name;
    float (*dot)(const float *a, const float *b, size_t n);
    float (*norm2)(const float *a, size_t n);
    /* out = {dot(a,b), |a|^2, |b|^2} in one pass, for cosine */
    void (*dot3)(const float *a, const float *b, size_t n, float out[3]);
    void (*axpy)(float alpha, const float *x, float *y, size_t n);
    void (*scale)(float alpha, float *x, size_t n);
    int (*all_finite)(const float *x, size_t n);
    /* Rows [0, avail) may be read (avail >= nrows): the prefetch of rows
     * ahead may then look past the end of this call's batch. */
    void (*dot_rows)(const float *rows, size_t stride, size_t nrows,
                     size_t avail, const float *q, size_t d, float *out);
};

/* Software prefetch for the matrix scans. The hardware prefetchers stop at
 * every 4 KiB page boundary and restart slowly, which at d=64 (256-byte
 * rows, 16 per page) left a single-thread scan at ~70% of the read
 * bandwidth; asking for the rows ~8 KiB ahead keeps enough misses in flight
 * to stay at the bandwidth limit. Rows longer than PF_MAX_ROW bytes are long
 * sequential runs the hardware follows well by itself. */
#define PF_BYTES 8192
#define PF_MAX_ROW 1024

/* Rows to look ahead for a given stride, a multiple of 4 (one group); 0 to
 * leave prefetching to the hardware. */
static size_t prefetch_rows(size_t stride, size_t d) {
    size_t row = stride * sizeof(float);
    if (d == 0 || d * sizeof(float) > PF_MAX_ROW)
        return 0;
    size_t ahead = (PF_BYTES + row - 1) / row;
    return (ahead + 3) & ~(size_t)3;
}

/* Prefetch the used part of four rows (d floats each, `stride` apart):
 * every 64-byte line, plus the last byte in case the row straddles one
 * more line than its length suggests. always_inline is load-bearing: as an
 * ordinary function, GCC's early pure-const pass sees a body of prefetches
 * only, marks it side-effect free and deletes the call. */
__attribute__((always_inline)) static inline void prefetch4(const float *p, size_t stride, size_t d) {
    size_t bytes = d * sizeof(float);
    for (size_t i = 0; i < 4; i++) {
        const char *row = (const char *)(p + i * stride);
        for (size_t o = 0; o < bytes; o += 64)
            _mm_prefetch(row + o, _MM_HINT_T0);
        _mm_prefetch(row + bytes - 1, _MM_HINT_T0);
    }
}

/* ---- portable C ------------------------------------------------------ */

/* Four partial sums break the add dependency chain; -O2 without fast-math
 * cannot reassociate a single accumulator by itself. */
static float dot_scalar(const float *a, const float *b, size_t n) {
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++)
        s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

static float norm2_scalar(const float *a, size_t n) {
    return dot_scalar(a, a, n);
}

static void dot3_scalar(const float *a, const float *b, size_t n,
                        float out[3]) {
    float ab = 0.0f, aa = 0.0f, bb = 0.0f;
    for (size_t i = 0; i < n; i++) {
        ab += a[i] * b[i];
        aa += a[i] * a[i];
        bb += b[i] * b[i];
    }
    out[0] = ab;
    out[1] = aa;
    out[2] = bb;
}

static void axpy_scalar(float alpha, const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++)
        y[i] += alpha * x[i];
}

static void scale_scalar(float alpha, float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        x[i] *= alpha;
}

/* Bit test rather than isfinite(): immune to -ffinite-math-only. */
static int all_finite_scalar(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        if ((u & 0x7f800000u) == 0x7f800000u)
            return 0;
    }
    return 1;
}

static void dot_rows_scalar(const float *rows, size_t stride, size_t nrows,
                            size_t avail, const float *q, size_t d,
                            float *out) {
    for (size_t r = 0; r < nrows; r++)
        out[r] = dot_scalar(rows + r * stride, q, d);
}

static const struct kernels kernels_scalar = {
    REC_ISA_SCALAR, "scalar", dot_scalar, norm2_scalar, dot3_scalar,
    axpy_scalar, scale_scalar, all_finite_scalar, dot_rows_scalar,
};

/* ---- AVX2 + FMA ------------------------------------------------------ */

TARGET_AVX2 static inline float hsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v),
                          _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Four horizontal sums at once: three hadds instead of four full trees.
 * Lane i of the result is the sum of v_i, with the same association for
 * every lane. */
TARGET_AVX2 static inline __m128 hsum4_avx2(__m256 a, __m256 b, __m256 c,
                                            __m256 e) {
    __m256 ab = _mm256_hadd_ps(a, b);
    __m256 ce = _mm256_hadd_ps(c, e);
    __m256 s = _mm256_hadd_ps(ab, ce);
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

TARGET_AVX2 static float dot_avx2(const float *a, const float *b, size_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8),
                             _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16),
                             _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24),
                             _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum_avx2(_mm256_add_ps(_mm256_add_ps(s0, s1),
                                      _mm256_add_ps(s2, s3)));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

TARGET_AVX2 static float norm2_avx2(const float *a, size_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 x0 = _mm256_loadu_ps(a + i), x1 = _mm256_loadu_ps(a + i + 8);
        s0 = _mm256_fmadd_ps(x0, x0, s0);
        s1 = _mm256_fmadd_ps(x1, x1, s1);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 x0 = _mm256_loadu_ps(a + i);
        s0 = _mm256_fmadd_ps(x0, x0, s0);
    }
    float s = hsum_avx2(_mm256_add_ps(s0, s1));
    for (; i < n; i++)
        s += a[i] * a[i];
    return s;
}

TARGET_AVX2 static void dot3_avx2(const float *a, const float *b, size_t n,
                                  float out[3]) {
    __m256 ab = _mm256_setzero_ps(), aa = _mm256_setzero_ps();
    __m256 bb = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(a + i), y = _mm256_loadu_ps(b + i);
        ab = _mm256_fmadd_ps(x, y, ab);
        aa = _mm256_fmadd_ps(x, x, aa);
        bb = _mm256_fmadd_ps(y, y, bb);
    }
    float sab = hsum_avx2(ab), saa = hsum_avx2(aa), sbb = hsum_avx2(bb);
    for (; i < n; i++) {
        sab += a[i] * b[i];
        saa += a[i] * a[i];
        sbb += b[i] * b[i];
    }
    out[0] = sab;
    out[1] = saa;
    out[2] = sbb;
}

TARGET_AVX2 static void axpy_avx2(float alpha, const float *x, float *y,
                                  size_t n) {
    __m256 va = _mm256_set1_ps(alpha);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i),
                                                _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += alpha * x[i];
}

TARGET_AVX2 static void scale_avx2(float alpha, float *x, size_t n) {
    __m256 va = _mm256_set1_ps(alpha);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(va, _mm256_loadu_ps(x + i)));
    for (; i < n; i++)
        x[i] *= alpha;
}

/* x * 0 is 0 for finite x and NaN for NaN or +-Inf; NaN survives the
 * running sum, so one branch-free pass and one test at the end suffice. */
TARGET_AVX2 static int all_finite_avx2(const float *x, size_t n) {
    __m256 z = _mm256_setzero_ps(), acc = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 t0 = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), z),
                                  _mm256_mul_ps(_mm256_loadu_ps(x + i + 8), z));
        __m256 t1 =
            _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i + 16), z),
                          _mm256_mul_ps(_mm256_loadu_ps(x + i + 24), z));
        acc = _mm256_add_ps(acc, _mm256_add_ps(t0, t1));
    }
    for (; i + 8 <= n; i += 8)
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(x + i), z));
    if (_mm256_movemask_ps(_mm256_cmp_ps(acc, acc, _CMP_UNORD_Q)))
        return 0;
    return all_finite_scalar(x + i, n - i);
}

/* Four rows against q; the d % 8 tail is added per row after the reduction,
 * identically for every row. */
TARGET_AVX2 static void dot4_avx2(const float *r0, const float *r1,
                                  const float *r2, const float *r3,
                                  const float *q, size_t d, float out[4]) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    size_t j = 0;
    for (; j + 8 <= d; j += 8) {
        __m256 qv = _mm256_loadu_ps(q + j);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(r0 + j), qv, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(r1 + j), qv, a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(r2 + j), qv, a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(r3 + j), qv, a3);
    }
    _mm_storeu_ps(out, hsum4_avx2(a0, a1, a2, a3));
    for (; j < d; j++) {
        out[0] += r0[j] * q[j];
        out[1] += r1[j] * q[j];
        out[2] += r2[j] * q[j];
        out[3] += r3[j] * q[j];
    }
}

TARGET_AVX2 static void dot_rows_avx2(const float *rows, size_t stride,
                                      size_t nrows, size_t avail,
                                      const float *q, size_t d, float *out) {
    size_t ahead = prefetch_rows(stride, d);
    size_t r = 0;
    for (; r + 4 <= nrows; r += 4) {
        const float *p = rows + r * stride;
        if (ahead && r + ahead + 4 <= avail)
            prefetch4(p + ahead * stride, stride, d);
        dot4_avx2(p, p + stride, p + 2 * stride, p + 3 * stride, q, d,
                  out + r);
    }
    if (r < nrows) {
        /* Repeat the last row to fill the group: same arithmetic as above,
         * so a row's score does not depend on its position. */
        const float *p[4];
        float tmp[4];
        for (size_t i = 0; i < 4; i++)
            p[i] = rows + (r + i < nrows ? r + i : nrows - 1) * stride;
        dot4_avx2(p[0], p[1], p[2], p[3], q, d, tmp);
        memcpy(out + r, tmp, (nrows - r) * sizeof *out);
    }
}

static const struct kernels kernels_avx2 = {
    REC_ISA_AVX2, "avx2", dot_avx2, norm2_avx2, dot3_avx2,
    axpy_avx2, scale_avx2, all_finite_avx2, dot_rows_avx2,
};

/* ---- AVX-512F -------------------------------------------------------- */

/* Lanes [0, n) set; n < 16. */
static inline __mmask16 tail_mask(size_t n) {
    return (__mmask16)((1u << n) - 1u);
}

/* Upper 256 bits of a zmm using AVX-512F only (extractf32x8 needs DQ). */
TARGET_AVX512 static inline __m256 hi256(__m512 v) {
    return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
}

TARGET_AVX512 static inline float hsum_avx512(__m512 v) {
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), hi256(v));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8),
                          _mm256_extractf128_ps(s8, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Four horizontal sums: fold each zmm to 256 bits, then the hadd tree. */
TARGET_AVX512 static inline __m128 hsum4_avx512(__m512 a, __m512 b, __m512 c,
                                                __m512 e) {
    __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a), hi256(a));
    __m256 b8 = _mm256_add_ps(_mm512_castps512_ps256(b), hi256(b));
    __m256 c8 = _mm256_add_ps(_mm512_castps512_ps256(c), hi256(c));
    __m256 e8 = _mm256_add_ps(_mm512_castps512_ps256(e), hi256(e));
    __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a8, b8), _mm256_hadd_ps(c8, e8));
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

TARGET_AVX512 static float dot_avx512(const float *a, const float *b,
                                      size_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    __m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16),
                             _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32),
                             _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48),
                             _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16)
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i),
                             _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return hsum_avx512(_mm512_add_ps(_mm512_add_ps(s0, s1),
                                     _mm512_add_ps(s2, s3)));
}

TARGET_AVX512 static float norm2_avx512(const float *a, size_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 x0 = _mm512_loadu_ps(a + i), x1 = _mm512_loadu_ps(a + i + 16);
        s0 = _mm512_fmadd_ps(x0, x0, s0);
        s1 = _mm512_fmadd_ps(x1, x1, s1);
    }
    for (; i + 16 <= n; i += 16) {
        __m512 x0 = _mm512_loadu_ps(a + i);
        s0 = _mm512_fmadd_ps(x0, x0, s0);
    }
    if (i < n) {
        __m512 x1 = _mm512_maskz_loadu_ps(tail_mask(n - i), a + i);
        s1 = _mm512_fmadd_ps(x1, x1, s1);
    }
    return hsum_avx512(_mm512_add_ps(s0, s1));
}

TARGET_AVX512 static void dot3_avx512(const float *a, const float *b,
                                      size_t n, float out[3]) {
    __m512 ab = _mm512_setzero_ps(), aa = _mm512_setzero_ps();
    __m512 bb = _mm512_setzero_ps();
    size_t i = 0;
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : tail_mask(n - i);
        __m512 x = _mm512_maskz_loadu_ps(m, a + i);
        __m512 y = _mm512_maskz_loadu_ps(m, b + i);
        ab = _mm512_fmadd_ps(x, y, ab);
        aa = _mm512_fmadd_ps(x, x, aa);
        bb = _mm512_fmadd_ps(y, y, bb);
    }
    out[0] = hsum_avx512(ab);
    out[1] = hsum_avx512(aa);
    out[2] = hsum_avx512(bb);
}

TARGET_AVX512 static void axpy_avx512(float alpha, const float *x, float *y,
                                      size_t n) {
    __m512 va = _mm512_set1_ps(alpha);
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i),
                                                _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        __m512 r = _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i),
                                   _mm512_maskz_loadu_ps(m, y + i));
        _mm512_mask_storeu_ps(y + i, m, r);
    }
}

TARGET_AVX512 static void scale_avx512(float alpha, float *x, size_t n) {
    __m512 va = _mm512_set1_ps(alpha);
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(x + i, _mm512_mul_ps(va, _mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, m,
                              _mm512_mul_ps(va, _mm512_maskz_loadu_ps(m, x + i)));
    }
}

/* Same x * 0 trick as the AVX2 version; masked-out tail lanes load as 0. */
TARGET_AVX512 static int all_finite_avx512(const float *x, size_t n) {
    __m512 z = _mm512_setzero_ps(), acc = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512 t0 = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), z),
                                  _mm512_mul_ps(_mm512_loadu_ps(x + i + 16), z));
        __m512 t1 =
            _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i + 32), z),
                          _mm512_mul_ps(_mm512_loadu_ps(x + i + 48), z));
        acc = _mm512_add_ps(acc, _mm512_add_ps(t0, t1));
    }
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : tail_mask(n - i);
        acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), z));
    }
    return _mm512_cmp_ps_mask(acc, acc, _CMP_UNORD_Q) == 0;
}

/* Four rows against q: each load of q feeds four FMAs, and the four
 * horizontal sums share one reduction tree. */
TARGET_AVX512 static void dot4_avx512(const float *r0, const float *r1,
                                      const float *r2, const float *r3,
                                      const float *q, size_t d,
                                      float out[4]) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    __m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    size_t j = 0;
    for (; j + 16 <= d; j += 16) {
        __m512 qv = _mm512_loadu_ps(q + j);
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(r0 + j), qv, a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(r1 + j), qv, a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(r2 + j), qv, a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(r3 + j), qv, a3);
    }
    if (j < d) {
        __mmask16 m = tail_mask(d - j);
        __m512 qv = _mm512_maskz_loadu_ps(m, q + j);
        a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, r0 + j), qv, a0);
        a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, r1 + j), qv, a1);
        a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, r2 + j), qv, a2);
        a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, r3 + j), qv, a3);
    }
    _mm_storeu_ps(out, hsum4_avx512(a0, a1, a2, a3));
}

TARGET_AVX512 static void dot_rows_avx512(const float *rows, size_t stride,
                                          size_t nrows, size_t avail,
                                          const float *q, size_t d,
                                          float *out) {
    size_t ahead = prefetch_rows(stride, d);
    size_t r = 0;
    for (; r + 4 <= nrows; r += 4) {
        const float *p = rows + r * stride;
        if (ahead && r + ahead + 4 <= avail)
            prefetch4(p + ahead * stride, stride, d);
        dot4_avx512(p, p + stride, p + 2 * stride, p + 3 * stride, q, d,
                    out + r);
    }
    if (r < nrows) {
        const float *p[4];
        float tmp[4];
        for (size_t i = 0; i < 4; i++)
            p[i] = rows + (r + i < nrows ? r + i : nrows - 1) * stride;
        dot4_avx512(p[0], p[1], p[2], p[3], q, d, tmp);
        memcpy(out + r, tmp, (nrows - r) * sizeof *out);
    }
}

static const struct kernels kernels_avx512 = {
    REC_ISA_AVX512, "avx512", dot_avx512, norm2_avx512, dot3_avx512,
    axpy_avx512, scale_avx512, all_finite_avx512, dot_rows_avx512,
};

/* ---- dispatch -------------------------------------------------------- */

/* NULL until first use. Every thread that races on the first call computes
 * the same answer and stores the same pointer, so initialisation is
 * idempotent; the tables themselves are constant. */
static const struct kernels *_Atomic active;

static int cpu_has(rec_isa isa) {
    __builtin_cpu_init();
    switch (isa) {
    case REC_ISA_SCALAR:
        return 1;
    case REC_ISA_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case REC_ISA_AVX512:
        /* The AVX-512 kernels use AVX/SSE3 for their final reductions;
         * every AVX-512F CPU has those. */
        return __builtin_cpu_supports("avx512f");
    }
    return 0;
}

static const struct kernels *table_for(rec_isa isa) {
    switch (isa) {
    case REC_ISA_AVX512:
        return &kernels_avx512;
    case REC_ISA_AVX2:
        return &kernels_avx2;
    case REC_ISA_SCALAR:
        break;
    }
    return &kernels_scalar;
}

static const struct kernels *kern(void) {
    const struct kernels *k = atomic_load_explicit(&active,
                                                   memory_order_relaxed);
    if (k)
        return k;
    rec_isa isa = cpu_has(REC_ISA_AVX512) ? REC_ISA_AVX512
                  : cpu_has(REC_ISA_AVX2) ? REC_ISA_AVX2
                                          : REC_ISA_SCALAR;
    k = table_for(isa);
    atomic_store_explicit(&active, k, memory_order_relaxed);
    return k;
}

const char *rec_vec_isa_name(void) { return kern()->name; }

rec_isa rec_vec_isa(void) { return kern()->isa; }

int rec_vec_set_isa(rec_isa isa) {
    if (isa != REC_ISA_SCALAR && isa != REC_ISA_AVX2 && isa != REC_ISA_AVX512)
        return REC_EINVAL;
    if (!cpu_has(isa))
        return REC_ERANGE;
    atomic_store_explicit(&active, table_for(isa), memory_order_relaxed);
    return 0;
}

/* ---- kernels --------------------------------------------------------- */

float rec_vec_dot(const float *a, const float *b, size_t n) {
    return kern()->dot(a, b, n);
}

float rec_vec_norm2(const float *a, size_t n) { return kern()->norm2(a, n); }

/* A float sum of squares is only trusted inside the normal range: below it
 * small vectors underflow to 0 (and would read as "zero"), above it large
 * ones overflow. Those rare cases are redone in double, which holds any
 * float squared without loss of range. */
static int normal_range(float s) { return s >= FLT_MIN && s <= FLT_MAX; }

static double norm2_double(const float *x, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)x[i] * (double)x[i];
    return s;
}

float rec_vec_cosine(const float *a, const float *b, size_t n) {
    float r[3];
    kern()->dot3(a, b, n, r);
    double ab = (double)r[0], aa = (double)r[1], bb = (double)r[2];
    if (!normal_range(r[1]) || !normal_range(r[2])) {
        ab = 0.0;
        for (size_t i = 0; i < n; i++)
            ab += (double)a[i] * (double)b[i];
        aa = norm2_double(a, n);
        bb = norm2_double(b, n);
    }
    if (aa == 0.0 || bb == 0.0)
        return 0.0f;
    double c = ab / (sqrt(aa) * sqrt(bb));
    /* Rounding can land a hair outside [-1, 1]; NaN passes through. */
    if (c > 1.0)
        c = 1.0;
    else if (c < -1.0)
        c = -1.0;
    return (float)c;
}

void rec_vec_axpy(float alpha, const float *x, float *y, size_t n) {
    kern()->axpy(alpha, x, y, n);
}

void rec_vec_scale(float alpha, float *x, size_t n) {
    kern()->scale(alpha, x, n);
}

/* Returns the norm as a float; a vector whose norm exceeds FLT_MAX is still
 * scaled correctly but reports +Inf. NaN or Inf elements leave x as is and
 * return NaN or Inf. */
float rec_vec_normalize(float *x, size_t n) {
    const struct kernels *k = kern();
    float s = k->norm2(x, n);
    if (normal_range(s)) {
        float nrm = sqrtf(s);
        k->scale(1.0f / nrm, x, n);
        return nrm;
    }
    double nrm = sqrt(norm2_double(x, n));
    if (nrm == 0.0 || !isfinite(nrm))
        return (float)nrm;
    for (size_t i = 0; i < n; i++)
        x[i] = (float)((double)x[i] / nrm);
    return (float)nrm;
}

int rec_vec_all_finite(const float *x, size_t n) {
    return kern()->all_finite(x, n);
}

void rec_vec_dot_rows(const float *rows, size_t stride, size_t nrows,
                      const float *q, size_t d, float *out) {
    kern()->dot_rows(rows, stride, nrows, nrows, q, d, out);
}

/* ---- top-k ----------------------------------------------------------- */

/* NaN ranks after every number, so a comparison never lies even if one
 * slips in; rec_topk_push keeps NaN out anyway. */
static inline int hit_cmp(const rec_hit *a, const rec_hit *b) {
    if (a->score > b->score)
        return -1;
    if (a->score < b->score)
        return 1;
    int an = isnan(a->score), bn = isnan(b->score);
    if (an != bn)
        return an ? 1 : -1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

int rec_hit_cmp(const rec_hit *a, const rec_hit *b) { return hit_cmp(a, b); }

void rec_topk_init(rec_topk *t, rec_hit *heap, size_t k) {
    t->heap = heap;
    t->k = k;
    t->n = 0;
}

/* The heap keeps the worst held hit at the root: parent ranks after child. */
static void sift_down(rec_hit *h, size_t n, size_t i, rec_hit x) {
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && hit_cmp(&h[c + 1], &h[c]) > 0)
            c++;
        if (hit_cmp(&h[c], &x) <= 0)
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

void rec_topk_push(rec_topk *t, uint32_t idx, float score) {
    if (isnan(score) || t->k == 0)
        return;
    rec_hit x = {idx, score};
    rec_hit *h = t->heap;
    if (t->n < t->k) {
        size_t i = t->n++;
        while (i > 0) {
            size_t p = (i - 1) / 2;
            if (hit_cmp(&h[p], &x) >= 0)
                break;
            h[i] = h[p];
            i = p;
        }
        h[i] = x;
    } else if (hit_cmp(&x, &h[0]) < 0) {
        sift_down(h, t->n, 0, x);
    }
}

float rec_topk_threshold(const rec_topk *t) {
    if (t->k == 0)
        return INFINITY;
    return t->n < t->k ? -INFINITY : t->heap[0].score;
}

/* Heapsort: moving the root (worst) to the back each step leaves the best
 * hit at index 0. O(n log n). */
size_t rec_topk_finish(rec_topk *t) {
    rec_hit *h = t->heap;
    for (size_t n = t->n; n > 1; n--) {
        rec_hit last = h[n - 1];
        h[n - 1] = h[0];
        sift_down(h, n - 1, 0, last);
    }
    return t->n;
}

/* Live rows of the block starting at r0 (a multiple of 64): in range and
 * not skipped. */
static uint64_t live_mask(const rec_scan *s, size_t r0, size_t nb) {
    uint64_t live = nb >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << nb) - 1;
    if (s->skip)
        live &= ~s->skip[r0 >> 6];
    return live;
}

/* 1/|q| for cosine, computed in double so that tiny or huge q neither
 * underflows to "zero" nor overflows (a double holds any sum of float
 * squares, so an infinite n2 means an Inf element). 0 for a zero q; NaN for
 * a q holding NaN or Inf, so that every score is NaN and nothing returns. */
static float inv_norm(const struct kernels *k, const float *q, size_t d) {
    float s = k->norm2(q, d);
    double n2 = normal_range(s) ? (double)s : norm2_double(q, d);
    if (n2 == 0.0)
        return 0.0f;
    if (!isfinite(n2))
        return NAN;
    return (float)(1.0 / sqrt(n2));
}

size_t rec_vec_topk(const rec_scan *s, const float *q, size_t k,
                    rec_hit *out) {
    const struct kernels *kr = kern();
    rec_topk t;
    float buf[SCAN_BLOCK];
    size_t nrows = s->nrows;

    assert(nrows <= (size_t)UINT32_MAX + 1);
    rec_topk_init(&t, out, k);
    if (k == 0 || nrows == 0)
        return 0;

    float qinv = 1.0f;
    int zero_q = 0;
    if (s->inv_norms) {
        qinv = inv_norm(kr, q, s->d);
        zero_q = qinv == 0.0f;
    }

    for (size_t r0 = 0; r0 < nrows; r0 += SCAN_BLOCK) {
        size_t nb = nrows - r0 < SCAN_BLOCK ? nrows - r0 : SCAN_BLOCK;
        uint64_t live = live_mask(s, r0, nb);
        if (!live)
            continue;

        if (zero_q) {
            /* Every row scores 0: the first k live rows win on index. */
            for (size_t i = 0; i < nb && t.n < k; i++)
                if (live >> i & 1)
                    rec_topk_push(&t, (uint32_t)(r0 + i), 0.0f);
            if (t.n == k)
                break;
            continue;
        }

        kr->dot_rows(s->rows + r0 * s->stride, s->stride, nb, nrows - r0, q,
                     s->d, buf);
        if (s->inv_norms) {
            const float *inv = s->inv_norms + r0;
            for (size_t i = 0; i < nb; i++)
                buf[i] *= qinv * inv[i];
        }

        if (t.n < k) {
            /* Filling: every live, non-NaN score enters. */
            for (size_t i = 0; i < nb; i++)
                if (live >> i & 1)
                    rec_topk_push(&t, (uint32_t)(r0 + i), buf[i]);
            continue;
        }
        /* Full: rows arrive in index order, so a later row must beat the
         * threshold strictly to rank ahead (ties go to the lower index). NaN
         * fails the comparison and never enters. This loop is the only
         * per-row work outside the dot products. */
        float thr = t.heap[0].score;
        for (size_t i = 0; i < nb; i++) {
            if (buf[i] > thr && (live >> i & 1)) {
                rec_topk_push(&t, (uint32_t)(r0 + i), buf[i]);
                thr = t.heap[0].score;
            }
        }
    }
    return rec_topk_finish(&t);
}
