/* bench_idmap.c - the id map: hashing a key, adding ids, finding them.
 *
 *   bench_idmap           full run (1M ids, 5 runs of each figure)
 *   bench_idmap --quick   100k ids, 3 runs (also RECD_BENCH_QUICK=1)
 *
 * Ids are the strings "u<n>" of the server benchmark (3 to 8 bytes, kept
 * in the slot) and 24-byte strings (confirmed against the stored key).
 * Figures: the hash of an id alone, rec_idmap_intern of new ids into an
 * empty map (growth included), rec_idmap_find of present ids in a random
 * order one after the other, and the same lookups as the engine makes
 * them on the event path: the hashes of a group of 16 first, their slots
 * prefetched, then the finds. Each the median of its runs, printed for
 * people and as `BENCH name=... value=... unit=...`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idmap.h"
#include "counter.h"
#include "mf.h"
#include "rng.h"

#include "bench_common.h"

#define MAX_RUNS 8

typedef struct keyset {
    char *data;   /* keys back to back */
    size_t *off;  /* key i is data[off[i] .. off[i+1]) */
    uint32_t n;
} keyset;

static void die(const char *what) {
    fprintf(stderr, "bench_idmap: %s\n", what);
    exit(1);
}

static void make_keys(keyset *ks, uint32_t n, int long_keys) {
    ks->n = n;
    ks->data = malloc((size_t)n * 32);
    ks->off = malloc(((size_t)n + 1) * sizeof *ks->off);
    if (!ks->data || !ks->off)
        die("out of memory");
    size_t at = 0;
    for (uint32_t i = 0; i < n; i++) {
        char s[40];
        int l = long_keys ? snprintf(s, sizeof s, "customer-%014u", i)
                          : snprintf(s, sizeof s, "u%u", i);
        ks->off[i] = at;
        at += (size_t)rec_id_str(ks->data + at, s, (size_t)l);
    }
    ks->off[n] = at;
}

static const char *key(const keyset *ks, uint32_t i, size_t *len) {
    *len = ks->off[i + 1] - ks->off[i];
    return ks->data + ks->off[i];
}

static void bench(const char *label, uint32_t n, int runs, int long_keys) {
    keyset ks;
    make_keys(&ks, n, long_keys);
    uint32_t *order = malloc((size_t)n * sizeof *order);
    if (!order)
        die("out of memory");
    for (uint32_t i = 0; i < n; i++)
        order[i] = i;
    rec_rng r;
    rec_rng_seed(&r, 7);
    for (uint32_t i = n - 1; i > 0; i--) {
        uint32_t j = rec_rng_below(&r, i + 1);
        uint32_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }

    /* The same keys in that order, back to back, so that the lookups
     * read their keys sequentially and time the map alone. */
    keyset sh = {malloc(ks.off[n]), malloc(((size_t)n + 1) * sizeof *sh.off), n};
    if (!sh.data || !sh.off)
        die("out of memory");
    size_t at = 0;
    for (uint32_t i = 0; i < n; i++) {
        size_t l;
        const char *k = key(&ks, order[i], &l);
        sh.off[i] = at;
        memcpy(sh.data + at, k, l);
        at += l;
    }
    sh.off[n] = at;

    double th[MAX_RUNS], ti[MAX_RUNS], tf[MAX_RUNS], tb[MAX_RUNS];
    volatile uint64_t sink = 0;
    for (int run = 0; run < runs; run++) {
        double t0 = now();
        uint64_t acc = 0;
        for (uint32_t i = 0; i < n; i++) {
            size_t l;
            const char *k = key(&ks, i, &l);
            acc += rec_idmap_hash(k, l);
        }
        th[run] = (now() - t0) * 1e9 / n;
        sink += acc;

        rec_idmap m;
        rec_idmap_init(&m);
        t0 = now();
        for (uint32_t i = 0; i < n; i++) {
            size_t l;
            const char *k = key(&ks, i, &l);
            uint32_t idx;
            if (rec_idmap_intern(&m, k, l, &idx, NULL))
                die("intern failed");
        }
        ti[run] = (now() - t0) * 1e9 / n;

        t0 = now();
        acc = 0;
        for (uint32_t i = 0; i < n; i++) {
            size_t l;
            const char *k = key(&sh, i, &l);
            acc += rec_idmap_find(&m, k, l);
        }
        tf[run] = (now() - t0) * 1e9 / n;
        sink += acc;
        if (acc != (uint64_t)n * (n - 1) / 2)
            die("a present id was not found");

        t0 = now();
        acc = 0;
        for (uint32_t i = 0; i < n; i += 16) {
            uint32_t end = i + 16 < n ? i + 16 : n;
            uint64_t h[16];
            for (uint32_t j = i; j < end; j++) {
                size_t l;
                const char *k = key(&sh, j, &l);
                h[j - i] = rec_idmap_hash(k, l);
                rec_idmap_prefetch(&m, h[j - i]);
            }
            for (uint32_t j = i; j < end; j++) {
                size_t l;
                const char *k = key(&sh, j, &l);
                acc += rec_idmap_find_hashed(&m, k, l, h[j - i]);
            }
        }
        tb[run] = (now() - t0) * 1e9 / n;
        sink += acc;
        if (acc != (uint64_t)n * (n - 1) / 2)
            die("a present id was not found");
        rec_idmap_close(&m);
    }
    double h = median(th, (size_t)runs), in = median(ti, (size_t)runs),
           f = median(tf, (size_t)runs), fb = median(tb, (size_t)runs);
    printf("idmap, %u %s ids: hash %.1f ns, intern %.0f ns, find %.0f ns, "
           "find prefetched %.0f ns (medians of %d runs)\n", n, label, h, in, f,
           fb, runs);
    char name[64];
    snprintf(name, sizeof name, "idmap_hash_%s", label);
    report(name, h, "ns");
    snprintf(name, sizeof name, "idmap_intern_%s", label);
    report(name, in, "ns");
    snprintf(name, sizeof name, "idmap_find_%s", label);
    report(name, f, "ns");
    snprintf(name, sizeof name, "idmap_find_prefetched_%s", label);
    report(name, fb, "ns");
    (void)sink;
    free(order);
    free(sh.data);
    free(sh.off);
    free(ks.data);
    free(ks.off);
}

int main(int argc, char **argv) {
    const char *q = getenv("RECD_BENCH_QUICK");
    int quick = (argc > 1 && strcmp(argv[1], "--quick") == 0) ||
                (q && *q && strcmp(q, "0") != 0);
    uint32_t n = quick ? 100000u : 1000000u;
    int runs = quick ? 3 : 5;
    bench("short", n, runs, 0);
    bench("long", n, runs, 1);
    return 0;
}
