/* bench_vec.c - single-thread speed of the top-k scan against the memory
 * bandwidth it is bound by, and against a plain C loop.
 *
 *   bench_vec           full run (~1.5 GB peak, well under a minute)
 *   bench_vec --quick   small sizes for smoke runs (also RECD_BENCH_QUICK=1)
 *   bench_vec --isa avx2|scalar|avx512   force the kernels' instruction set
 *
 * Every figure is a median of several repetitions and is printed twice: a
 * line for people and one `BENCH name=... value=... unit=...` line for
 * scripts. GB are 1e9 bytes; the bytes of a scan are the rows' used floats
 * (nrows * d * 4), which equals what is read when stride == d.
 */
#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vec.h"

#include "bench_common.h"

#define MAX_REPS 15

static uint64_t rng = 0x2545f4914f6cdd1dULL;

static float rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 40) / (double)(1u << 23) - 1.0);
}

static float *alloc_floats(size_t n) {
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    float *p = aligned_alloc(64, bytes);
    if (!p) {
        fprintf(stderr, "bench_vec: cannot allocate %zu bytes\n", bytes);
        exit(1);
    }
    return p;
}

/* ---- memory bandwidth ---------------------------------------------- */

/* Sequential sums with eight independent accumulators, so the adds never
 * wait on each other and the loop runs at whatever rate memory delivers.
 * pf > 0 also prefetches pf floats ahead: on this class of machine a plain
 * stream stalls at every 4 KiB page (the hardware prefetchers do not cross
 * pages) and software prefetch lifts single-thread bandwidth noticeably.
 * The reference is the better of the two, so the scan ratio is not
 * flattered by a weak baseline. n is a multiple of 128. */
__attribute__((target("avx512f"))) static float sum_avx512(const float *x,
                                                           size_t n,
                                                           size_t pf) {
    __m512 a[8];
    for (int k = 0; k < 8; k++)
        a[k] = _mm512_setzero_ps();
    for (size_t i = 0; i < n; i += 128) {
        if (pf && i + pf + 128 <= n)
            for (int k = 0; k < 8; k++)
                _mm_prefetch((const char *)(x + i + pf + 16 * k), _MM_HINT_T0);
        for (int k = 0; k < 8; k++)
            a[k] = _mm512_add_ps(a[k], _mm512_load_ps(x + i + 16 * k));
    }
    for (int k = 1; k < 8; k++)
        a[0] = _mm512_add_ps(a[0], a[k]);
    return _mm512_reduce_add_ps(a[0]);
}

__attribute__((target("avx2"))) static float sum_avx2(const float *x,
                                                      size_t n, size_t pf) {
    __m256 a[8];
    for (int k = 0; k < 8; k++)
        a[k] = _mm256_setzero_ps();
    for (size_t i = 0; i < n; i += 64) {
        if (pf && i + pf + 64 <= n)
            for (int k = 0; k < 4; k++)
                _mm_prefetch((const char *)(x + i + pf + 16 * k), _MM_HINT_T0);
        for (int k = 0; k < 8; k++)
            a[k] = _mm256_add_ps(a[k], _mm256_load_ps(x + i + 8 * k));
    }
    for (int k = 1; k < 8; k++)
        a[0] = _mm256_add_ps(a[0], a[k]);
    float t[8];
    _mm256_storeu_ps(t, a[0]);
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}

static float sum_scalar(const float *x, size_t n, size_t pf) {
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    for (size_t i = 0; i < n; i += 16) {
        if (pf && i + pf + 16 <= n)
            _mm_prefetch((const char *)(x + i + pf), _MM_HINT_T0);
        for (size_t j = i; j < i + 16; j += 4) {
            s0 += x[j];
            s1 += x[j + 1];
            s2 += x[j + 2];
            s3 += x[j + 3];
        }
    }
    return (s0 + s1) + (s2 + s3);
}

#define SUM_PF 2048 /* floats: 8 KiB ahead */

typedef float (*sum_fn)(const float *x, size_t n, size_t pf);

static sum_fn pick_sum(const char **how) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        *how = "avx512";
        return sum_avx512;
    }
    if (__builtin_cpu_supports("avx2")) {
        *how = "avx2";
        return sum_avx2;
    }
    *how = "scalar";
    return sum_scalar;
}

static double checksum; /* keeps every sum observable */

/* Seconds for one plain (pf == 0) or prefetching read of x[0, n). */
static double time_read(sum_fn sum, const float *x, size_t n, size_t pf) {
    n = n / 128 * 128;
    double t0 = now();
    checksum += (double)sum(x, n, pf);
    return now() - t0;
}

/* Best of the plain and the prefetching read, each a median of reps runs
 * interleaved with each other. */
static double read_gbs(sum_fn sum, const float *x, size_t n, int reps,
                       double *plain_out, double *pref_out) {
    double tp[MAX_REPS], tf[MAX_REPS];
    time_read(sum, x, n, 0); /* warm-up */
    for (int r = 0; r < reps; r++) {
        tp[r] = time_read(sum, x, n, 0);
        tf[r] = time_read(sum, x, n, SUM_PF);
    }
    double gb = (double)(n / 128 * 128 * sizeof(float)) / 1e9;
    double plain = gb / median(tp, reps), pref = gb / median(tf, reps);
    if (plain_out)
        *plain_out = plain;
    if (pref_out)
        *pref_out = pref;
    return plain > pref ? plain : pref;
}

static double mem_bandwidth(size_t bytes, int reps) {
    const char *how;
    sum_fn sum = pick_sum(&how);
    size_t n = bytes / sizeof(float);
    float *x = alloc_floats(n);
    for (size_t i = 0; i < n; i++) /* touch every page before timing */
        x[i] = (float)(i & 7);
    double plain, pref;
    double best = read_gbs(sum, x, n, reps, &plain, &pref);
    printf("memory bandwidth: %.2f GB/s plain, %.2f GB/s with software "
           "prefetch (sequential %s sum of %zu MiB, median of %d)\n",
           plain, pref, how, bytes >> 20, reps);
    report("mem_bandwidth_plain", plain, "GB/s");
    report("mem_bandwidth_prefetch", pref, "GB/s");
    free(x);
    return best;
}

/* ---- scans --------------------------------------------------------- */

/* What a user would write without this module: one dot per row in plain C,
 * compared with the running threshold. Built with the same -O2. */
static size_t plain_topk(const float *rows, size_t nrows, size_t d,
                         const float *q, size_t k, rec_hit *out) {
    rec_topk t;
    rec_topk_init(&t, out, k);
    float thr = rec_topk_threshold(&t);
    for (size_t r = 0; r < nrows; r++) {
        const float *row = rows + r * d;
        float s = 0.0f;
        for (size_t j = 0; j < d; j++)
            s += row[j] * q[j];
        if (s > thr) {
            rec_topk_push(&t, (uint32_t)r, s);
            thr = rec_topk_threshold(&t);
        }
    }
    return rec_topk_finish(&t);
}

/* Top-10 by dot over nrows x d random rows (stride d, 64-byte aligned).
 * The scan's repetitions alternate with a sequential read of the same
 * buffer, so the scan/bandwidth ratio compares the same bytes under the
 * same machine conditions (this VM's bandwidth drifts by 10-20% over
 * seconds). */
/* The same scan through a bf16 copy of the rows (what rec_space_topk does
 * for large matrices on CPUs with AVX512-BF16), timed side by side with
 * the float scan; the answers must be identical. */
static void bench_bf16(const rec_scan *s, const float *q, int reps) {
    enum { K = 10 };
    uint16_t *r16 = malloc(s->nrows * s->stride * sizeof *r16);
    float *meta = malloc(2 * s->nrows * sizeof *meta);
    if (!r16 || !meta) {
        fprintf(stderr, "bench_vec: out of memory\n");
        exit(1);
    }
    for (size_t r = 0; r < s->nrows; r++)
        rec_vec_bf16_row(s->rows + r * s->stride, s->d, r16 + r * s->stride,
                         meta + 2 * r);
    rec_hit a[K], b[K];
    double tf[MAX_REPS], tb[MAX_REPS];
    rec_vec_topk_bf16(s, r16, meta, q, K, b); /* warm-up */
    int same = 1;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        size_t na = rec_vec_topk(s, q, K, a);
        double t1 = now();
        size_t nb = rec_vec_topk_bf16(s, r16, meta, q, K, b);
        tb[r] = now() - t1;
        tf[r] = t1 - t0;
        same &= na == nb && memcmp(a, b, na * sizeof *a) == 0;
    }
    double f = median(tf, reps), h = median(tb, reps);
    printf("  bf16 copy of the rows: %.2f ms against %.2f ms in float side by side "
           "(%.2fx), answers %s\n", h * 1e3, f * 1e3, f / h,
           same ? "identical" : "DIFFERENT");
    char name[96];
    snprintf(name, sizeof name, "scan_bf16_n%zu_d%zu", s->nrows, s->d);
    report(name, h * 1e3, "ms");
    snprintf(name, sizeof name, "scan_bf16_vs_float_n%zu_d%zu", s->nrows, s->d);
    report(name, f / h, "x");
    free(r16);
    free(meta);
    if (!same)
        exit(1);
}

static void bench_scan(size_t nrows, size_t d, int reps, int plain_reps) {
    enum { K = 10 };
    const char *how;
    sum_fn sum = pick_sum(&how);
    float *rows = alloc_floats(nrows * d);
    float *q = alloc_floats(d);
    for (size_t i = 0; i < nrows * d; i++)
        rows[i] = rnd();
    for (size_t j = 0; j < d; j++)
        q[j] = rnd();
    rec_scan s = {rows, d, nrows, d, NULL, NULL};
    rec_hit hits[K], plain[K];
    double ts_[MAX_REPS], tp_[MAX_REPS], tr0[MAX_REPS], tr1[MAX_REPS];
    double bytes = (double)nrows * (double)d * sizeof(float);
    double rbytes = (double)(nrows * d / 128 * 128) * sizeof(float);

    rec_vec_topk(&s, q, K, hits); /* warm-up */
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        rec_vec_topk(&s, q, K, hits);
        ts_[r] = now() - t0;
        tr0[r] = time_read(sum, rows, nrows * d, 0);
        tr1[r] = time_read(sum, rows, nrows * d, SUM_PF);
    }
    double ts = median(ts_, reps);
    double rd0 = rbytes / median(tr0, reps) / 1e9;
    double rd1 = rbytes / median(tr1, reps) / 1e9;
    double rd = rd0 > rd1 ? rd0 : rd1;

    for (int r = 0; r < plain_reps; r++) {
        double t0 = now();
        plain_topk(rows, nrows, d, q, K, plain);
        tp_[r] = now() - t0;
    }
    double tp = median(tp_, plain_reps);

    /* Same rows should win; summation order may only swap near-ties. */
    int same = 0;
    for (int i = 0; i < K; i++)
        for (int j = 0; j < K; j++)
            same += hits[i].idx == plain[j].idx;

    char name[96];
    double gbs = bytes / ts / 1e9;
    printf("scan n=%zu d=%zu k=%d (%s): %.2f ms, %.2f GB/s, %.1f Mitems/s; "
           "plain C loop %.2f ms, %.2f GB/s; speed-up %.2fx; "
           "top-%d overlap %d/%d\n",
           nrows, d, K, rec_vec_isa_name(), ts * 1e3, gbs,
           (double)nrows / ts / 1e6, tp * 1e3, bytes / tp / 1e9, tp / ts, K,
           same, K);
    printf("  same buffer, interleaved: sequential %s sum %.2f GB/s plain, "
           "%.2f GB/s prefetched; scan at %.1f%% of the better%s\n",
           how, rd0, rd1, 100.0 * gbs / rd,
           bytes < 64e6 ? " (data fits in cache: not a memory figure)" : "");
    snprintf(name, sizeof name, "scan_ip_n%zu_d%zu", nrows, d);
    report(name, gbs, "GB/s");
    snprintf(name, sizeof name, "scan_ip_n%zu_d%zu_items", nrows, d);
    report(name, (double)nrows / ts / 1e6, "Mitems/s");
    snprintf(name, sizeof name, "plain_ip_n%zu_d%zu", nrows, d);
    report(name, bytes / tp / 1e9, "GB/s");
    snprintf(name, sizeof name, "plain_ip_n%zu_d%zu_items", nrows, d);
    report(name, (double)nrows / tp / 1e6, "Mitems/s");
    snprintf(name, sizeof name, "simd_vs_plain_n%zu_d%zu", nrows, d);
    report(name, tp / ts, "x");
    snprintf(name, sizeof name, "read_n%zu_d%zu", nrows, d);
    report(name, rd, "GB/s");
    snprintf(name, sizeof name, "scan_vs_bandwidth_n%zu_d%zu", nrows, d);
    report(name, gbs / rd, "ratio");

    if (rec_vec_bf16_scan_ok())
        bench_bf16(&s, q, reps);
    free(rows);
    free(q);
}

int main(int argc, char **argv) {
    int quick = getenv("RECD_BENCH_QUICK") && *getenv("RECD_BENCH_QUICK") &&
                strcmp(getenv("RECD_BENCH_QUICK"), "0") != 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = 1;
        } else if (strcmp(argv[i], "--isa") == 0 && i + 1 < argc) {
            const char *name = argv[++i];
            rec_isa isa;
            if (strcmp(name, "scalar") == 0) {
                isa = REC_ISA_SCALAR;
            } else if (strcmp(name, "avx2") == 0) {
                isa = REC_ISA_AVX2;
            } else if (strcmp(name, "avx512") == 0) {
                isa = REC_ISA_AVX512;
            } else {
                fprintf(stderr, "bench_vec: unknown isa %s\n", name);
                return 2;
            }
            if (rec_vec_set_isa(isa) != 0) {
                fprintf(stderr, "bench_vec: this CPU lacks %s\n", name);
                return 2;
            }
        } else {
            fprintf(stderr, "usage: %s [--quick] [--isa scalar|avx2|avx512]\n",
                    argv[0]);
            return 2;
        }
    }
    printf("bench_vec: isa %s, %s mode, single thread\n", rec_vec_isa_name(),
           quick ? "quick" : "full");

    double bw = mem_bandwidth(quick ? (size_t)256 << 20 : (size_t)1 << 30,
                              quick ? 5 : 7);
    printf("memory bandwidth (better of the two): %.2f GB/s\n", bw);
    report("mem_bandwidth", bw, "GB/s");

    static const size_t ns[] = {100000, 1000000};
    static const size_t ds[] = {64, 384};
    for (size_t ni = 0; ni < (quick ? 1u : 2u); ni++)
        for (size_t di = 0; di < 2; di++)
            bench_scan(ns[ni], ds[di], quick ? 5 : 11, 5);
    printf("checksum %g\n", checksum);
    return 0;
}
