/* bench_common.h - what every bench_*.c program shares: a monotonic clock,
 * the median of repeated runs, and the `BENCH name=... value=...
 * unit=...` line that make bench and BENCHMARKS.md read. */
#ifndef REC_BENCH_COMMON_H
#define REC_BENCH_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n) (sorts v). */
static inline double median(double *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static inline void report(const char *name, double value, const char *unit) {
    printf("BENCH name=%s value=%.4g unit=%s\n", name, value, unit);
}

/* The options of a bench that takes only --quick (or RECD_BENCH_QUICK set
 * and not "0"): 1 quick, 0 full, -1 after printing the usage. */
static inline int bench_quick_args(int argc, char **argv) {
    const char *env = getenv("RECD_BENCH_QUICK");
    int quick = env && *env && strcmp(env, "0") != 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") != 0) {
            fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
            return -1;
        }
        quick = 1;
    }
    return quick;
}

#endif
