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
#include <stdlib.h>
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

/* Rows to look ahead for rows `row` bytes apart of which `used` bytes are
 * read, a multiple of 4 (one group); 0 to leave prefetching to the
 * hardware. */
static size_t prefetch_rows(size_t row, size_t used) {
    if (used == 0 || used > PF_MAX_ROW)
        return 0;
    size_t ahead = (PF_BYTES + row - 1) / row;
    return (ahead + 3) & ~(size_t)3;
}

/* Prefetch the used part of four rows (`used` bytes each, `row` bytes
 * apart): every 64-byte line, plus the last byte in case the row straddles
 * one more line than its length suggests. always_inline is load-bearing:
 * as an ordinary function, GCC's early pure-const pass sees a body of
 * prefetches only, marks it side-effect free and deletes the call. */
__attribute__((always_inline)) static inline void prefetch4(const void *p, size_t row,
                                                            size_t used) {
    for (size_t i = 0; i < 4; i++) {
        const char *r = (const char *)p + i * row;
        for (size_t o = 0; o < used; o += 64)
            _mm_prefetch(r + o, _MM_HINT_T0);
        _mm_prefetch(r + used - 1, _MM_HINT_T0);
    }
}

/* The row loop the SIMD kernels share: rows in groups of four through
 * DOT4, rows ~8 KiB ahead prefetched, and a last short group filled by
 * repeating the last row, with the same arithmetic as a full group, so a
 * row's score does not depend on its position. Rows [0, avail) may be
 * read. T is the element type (float, or uint16_t for bf16). */
#define DEFINE_DOT_ROWS(NAME, TARGET, T, DOT4)                                 \
    TARGET static void NAME(const T *rows, size_t stride, size_t nrows,       \
                            size_t avail, const T *q, size_t d, float *out) {  \
        size_t ahead = prefetch_rows(stride * sizeof(T), d * sizeof(T));     \
        size_t r = 0;                                                          \
        for (; r + 4 <= nrows; r += 4) {                                       \
            const T *p = rows + r * stride;                                    \
            if (ahead && r + ahead + 4 <= avail)                               \
                prefetch4(p + ahead * stride, stride * sizeof(T),              \
                          d * sizeof(T));                                      \
            DOT4(p, p + stride, p + 2 * stride, p + 3 * stride, q, d, out + r); \
        }                                                                      \
        if (r < nrows) {                                                       \
            const T *p[4];                                                     \
            float tmp[4];                                                      \
            for (size_t i = 0; i < 4; i++)                                     \
                p[i] = rows + (r + i < nrows ? r + i : nrows - 1) * stride;    \
            DOT4(p[0], p[1], p[2], p[3], q, d, tmp);                           \
            memcpy(out + r, tmp, (nrows - r) * sizeof *out);                   \
        }                                                                      \
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

DEFINE_DOT_ROWS(dot_rows_avx2, TARGET_AVX2, float, dot4_avx2)

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

DEFINE_DOT_ROWS(dot_rows_avx512, TARGET_AVX512, float, dot4_avx512)

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

/* ---- bf16 shadow scan ------------------------------------------------ */

/* bf16 values below the smallest normal: the dot-product instruction
 * reads them as zero, so conversions store them as zero (and the stored
 * error then accounts for them). */
#define BF16_TINY 0x0080u

uint16_t rec_vec_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40); /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);     /* round to nearest, ties even */
    uint16_t h = (uint16_t)(u >> 16);
    return (h & 0x7fffu) < BF16_TINY ? (uint16_t)(h & 0x8000u) : h;
}

static float bf16_float(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

int rec_vec_bf16_row(const float *x, size_t n, uint16_t *out, float meta[2]) {
    int ok = 1;
    double n2 = 0.0, e2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        out[i] = rec_vec_bf16(x[i]);
        ok &= (out[i] & 0x7f80u) != 0x7f80u; /* neither Inf nor NaN */
        double xi = (double)x[i], di = xi - (double)bf16_float(out[i]);
        n2 += xi * xi;
        e2 += di * di;
    }
    /* Rounded up, so bounds built on them stay bounds. */
    meta[0] = nextafterf((float)sqrt(n2), INFINITY);
    meta[1] = e2 > 0.0 ? nextafterf((float)sqrt(e2), INFINITY) : 0.0f;
    return ok && isfinite(meta[0]);
}

#define TARGET_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/* Four bf16 rows against a bf16 q, products exact and summed in float. */
TARGET_BF16 static void dot4_bf16(const uint16_t *r0, const uint16_t *r1,
                                  const uint16_t *r2, const uint16_t *r3,
                                  const uint16_t *q, size_t d, float out[4]) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    __m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    size_t j = 0;
    for (; j + 32 <= d; j += 32) {
        __m512bh qv = (__m512bh)_mm512_loadu_si512(q + j);
        a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(r0 + j), qv);
        a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(r1 + j), qv);
        a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_loadu_si512(r2 + j), qv);
        a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_loadu_si512(r3 + j), qv);
    }
    if (j < d) {
        __mmask32 m = (__mmask32)((1ull << (d - j)) - 1);
        __m512bh qv = (__m512bh)_mm512_maskz_loadu_epi16(m, q + j);
        a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_maskz_loadu_epi16(m, r0 + j), qv);
        a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_maskz_loadu_epi16(m, r1 + j), qv);
        a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_maskz_loadu_epi16(m, r2 + j), qv);
        a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_maskz_loadu_epi16(m, r3 + j), qv);
    }
    _mm_storeu_ps(out, hsum4_avx512(a0, a1, a2, a3));
}

DEFINE_DOT_ROWS(dot_rows_bf16, TARGET_BF16, uint16_t, dot4_bf16)

/* Float scores of the rows listed in idx, four at a time through the
 * float scan's own kernel: a row's score does not depend on its slot in
 * the group, so each equals what the full scan computes. */
TARGET_AVX512 static void dot_listed_avx512(const float *rows, size_t stride,
                              const uint32_t *idx, size_t n, const float *q,
                              size_t d, float *out) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        dot4_avx512(rows + idx[i] * stride, rows + idx[i + 1] * stride,
                    rows + idx[i + 2] * stride, rows + idx[i + 3] * stride,
                    q, d, out + i);
    if (i < n) {
        const float *p[4];
        float tmp[4];
        for (size_t j = 0; j < 4; j++)
            p[j] = rows + idx[i + j < n ? i + j : n - 1] * stride;
        dot4_avx512(p[0], p[1], p[2], p[3], q, d, tmp);
        memcpy(out + i, tmp, (n - i) * sizeof *out);
    }
}

int rec_vec_bf16_scan_ok(void) {
    __builtin_cpu_init();
    return kern()->isa == REC_ISA_AVX512 && __builtin_cpu_supports("avx512bf16");
}

/* Candidates kept for the exact pass before the scan gives up and scores
 * every row in float instead. */
#define BF16_MIN_CAND 4096

static _Atomic uint64_t bf16_fast, bf16_fallback;

void rec_vec_bf16_counts(uint64_t *fast, uint64_t *fallback) {
    *fast = atomic_load_explicit(&bf16_fast, memory_order_relaxed);
    *fallback = atomic_load_explicit(&bf16_fallback, memory_order_relaxed);
}

/* Pass 1 over one block: the interval of every live row's float score,
 * from its bf16 score a. The float score x.q differs from a by at most
 *   |x.dq| + |dx.q16| + summing  <=  |x| |dq| + |dx| (|q| + |dq|)
 *                                    + g (|x| + |dx|) (|q| + |dq|),
 * dx and dq being the rounding errors of the row and of q, and g bounding
 * the float sums of d products; cosine scales the interval by
 * (1/|q|)(1/|x|). */
typedef struct bf16_bound {
    float A, B;      /* e(row) = (err A + norm B) * slack */
    float cos_qinv;  /* 1/|q| for cosine, 0 for dot */
} bf16_bound;

/* The bound's own float rounding. */
#define BF16_SLACK (1.0f + 0x1p-10f)

/* Intervals [lo, hi] of the nb rows of one block from their bf16 scores
 * a, meta {norm, err} pairs and (cosine) 1/|row|; returns the mask of rows
 * whose hi is not below thr (NaN included). Sixteen rows per step. */
TARGET_BF16 static uint64_t bounds_bf16(const float *a, const float *meta,
                                        const float *inv, const bf16_bound *bd,
                                        size_t nb, float thr, float *lo,
                                        float *hi) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18,
                                           20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512 A = _mm512_set1_ps(bd->A), B = _mm512_set1_ps(bd->B);
    const __m512 slack = _mm512_set1_ps(BF16_SLACK), t = _mm512_set1_ps(thr);
    const __m512 cq = _mm512_set1_ps(bd->cos_qinv);
    uint64_t keep = 0;
    for (size_t i = 0; i < nb; i += 16) {
        size_t n = nb - i < 16 ? nb - i : 16;
        __mmask16 m = n == 16 ? (__mmask16)0xffff : tail_mask(n);
        __mmask16 m0 = n >= 8 ? (__mmask16)0xffff : tail_mask(2 * n);
        __mmask16 m1 = n > 8 ? (n == 16 ? (__mmask16)0xffff : tail_mask(2 * n - 16))
                             : (__mmask16)0;
        __m512 x0 = _mm512_maskz_loadu_ps(m0, meta + 2 * i);
        __m512 x1 = _mm512_maskz_loadu_ps(m1, meta + 2 * i + 16);
        __m512 nrm = _mm512_permutex2var_ps(x0, even, x1);
        __m512 err = _mm512_permutex2var_ps(x0, odd, x1);
        __m512 e = _mm512_mul_ps(_mm512_fmadd_ps(err, A, _mm512_mul_ps(nrm, B)), slack);
        __m512 s = _mm512_maskz_loadu_ps(m, a + i);
        __m512 l = _mm512_sub_ps(s, e), h = _mm512_add_ps(s, e);
        if (inv) {
            __m512 sc = _mm512_mul_ps(cq, _mm512_maskz_loadu_ps(m, inv + i));
            l = _mm512_mul_ps(l, sc);
            h = _mm512_mul_ps(h, sc);
        }
        _mm512_mask_storeu_ps(lo + i, m, l);
        _mm512_mask_storeu_ps(hi + i, m, h);
        __mmask16 k = _mm512_mask_cmp_ps_mask(m, h, t, _CMP_NLT_UQ);
        keep |= (uint64_t)k << i;
    }
    return keep;
}

size_t rec_vec_topk_bf16(const rec_scan *s, const uint16_t *rows16,
                         const float *meta, const float *q, size_t k,
                         rec_hit *out) {
    size_t nrows = s->nrows, d = s->d;
    if (k == 0 || nrows == 0 || !rec_vec_bf16_scan_ok() || !rec_vec_all_finite(q, d))
        return rec_vec_topk(s, q, k, out);
    const struct kernels *kr = kern();
    float qinv = s->inv_norms ? inv_norm(kr, q, d) : 1.0f;
    size_t cap = 64 * k > BF16_MIN_CAND ? 64 * k : BF16_MIN_CAND;
    if (cap > nrows)
        cap = nrows;
    uint16_t *q16 = malloc(d * sizeof *q16);
    uint32_t *cand = malloc(cap * sizeof *cand);
    float *cand_ub = malloc(cap * sizeof *cand_ub);
    rec_hit *lbh = malloc(k * sizeof *lbh);
    float qmeta[2];
    int gave_up = !q16 || !cand || !cand_ub || !lbh ||
                  !rec_vec_bf16_row(q, d, q16, qmeta) || qinv == 0.0f;
    bf16_bound bd = {0};
    if (!gave_up) {
        double qn = qmeta[0], eq = qmeta[1];
        double g = ((double)d / 16.0 + 8.0) * 0x1p-24;
        bd.A = (float)((qn + eq) * (1.0 + g));
        bd.B = (float)(eq + g * (qn + eq));
        bd.cos_qinv = s->inv_norms ? qinv : 0.0f;
    }
    size_t n = 0;
    rec_topk lb;
    float buf[SCAN_BLOCK];
    if (!gave_up)
        rec_topk_init(&lb, lbh, k);
    for (size_t r0 = 0; r0 < nrows && !gave_up; r0 += SCAN_BLOCK) {
        size_t nb = nrows - r0 < SCAN_BLOCK ? nrows - r0 : SCAN_BLOCK;
        uint64_t live = live_mask(s, r0, nb);
        if (!live)
            continue;
        /* The per-row bound data of a block ahead, like its rows. */
        if (r0 + 3 * SCAN_BLOCK <= nrows) {
            const char *mp = (const char *)(meta + 2 * (r0 + 2 * SCAN_BLOCK));
            for (size_t o = 0; o < 2 * SCAN_BLOCK * sizeof(float); o += 64)
                _mm_prefetch(mp + o, _MM_HINT_T0);
            if (s->inv_norms)
                for (size_t o = 0; o < SCAN_BLOCK * sizeof(float); o += 64)
                    _mm_prefetch((const char *)(s->inv_norms + r0 + 2 * SCAN_BLOCK) + o,
                                 _MM_HINT_T0);
        }
        dot_rows_bf16(rows16 + r0 * s->stride, s->stride, nb, nrows - r0, q16, d, buf);
        float thr = rec_topk_threshold(&lb);
        float lo_b[SCAN_BLOCK], hi_b[SCAN_BLOCK];
        live &= bounds_bf16(buf, meta + 2 * r0, s->inv_norms ? s->inv_norms + r0 : NULL,
                            &bd, nb, thr, lo_b, hi_b);
        for (; live; live &= live - 1) {
            size_t i = (size_t)__builtin_ctzll(live);
            float lo = lo_b[i], hi = hi_b[i];
            if (hi < thr) /* NaN goes on, to be scored in float */
                continue;
            if (n == cap) { /* too many rows in doubt: score in float */
                gave_up = 1;
                break;
            }
            cand[n] = (uint32_t)(r0 + i);
            cand_ub[n++] = hi;
            if (lo > thr || lb.n < k) {
                rec_topk_push(&lb, (uint32_t)(r0 + i), lo);
                thr = rec_topk_threshold(&lb);
            }
        }
    }
    size_t got;
    if (gave_up) {
        atomic_fetch_add_explicit(&bf16_fallback, 1, memory_order_relaxed);
        got = rec_vec_topk(s, q, k, out);
    } else {
        atomic_fetch_add_explicit(&bf16_fast, 1, memory_order_relaxed);
        /* Pass 2: the rows still in doubt, scored in float by the float
         * scan's kernel and offered in index order, as that scan does. */
        float thr = rec_topk_threshold(&lb);
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (!(cand_ub[i] < thr))
                cand[m++] = cand[i];
        float *sc = cand_ub; /* reused for the scores */
        dot_listed_avx512(s->rows, s->stride, cand, m, q, d, sc);
        rec_topk t;
        rec_topk_init(&t, out, k);
        for (size_t i = 0; i < m; i++)
            rec_topk_push(&t, cand[i], s->inv_norms ? sc[i] * (qinv * s->inv_norms[cand[i]])
                                                   : sc[i]);
        got = rec_topk_finish(&t);
    }
    free(q16);
    free(cand);
    free(cand_ub);
    free(lbh);
    return got;
}
