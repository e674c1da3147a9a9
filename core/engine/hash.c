/* hash.c - SipHash-1-3 under a per-process key, and the one fixed hash.
 *
 * SipHash as the paper describes it: four 64-bit words initialised from
 * the key and the constants "somepseudorandomlygeneratedbytes"; the
 * message in 8-byte little-endian words, the last one padded with zeros
 * and the length mod 256 in its top byte; each word xored into v3, c
 * SipRounds, xored into v0; then 0xff into v2, d SipRounds, and the xor of
 * the four words. Here c = 1 and d = 3 (SipHash-1-3, the variant Python
 * and Rust hash their tables with). tests/unit/siphash_ref.py is a second
 * implementation, checked against the paper's SipHash-2-4 example and
 * against Python's own string hash; test_hash.c compares the two.
 */
#include "hash.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* ---- SipHash-1-3 ------------------------------------------------------------- */

static inline uint64_t rotl(uint64_t x, int b) { return x << b | x >> (64 - b); }

static inline uint64_t load64le(const unsigned char *p) {
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
           (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 |
           (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

#define SIPROUND                                                               \
    do {                                                                       \
        v0 += v1;                                                              \
        v1 = rotl(v1, 13);                                                     \
        v1 ^= v0;                                                              \
        v0 = rotl(v0, 32);                                                     \
        v2 += v3;                                                              \
        v3 = rotl(v3, 16);                                                     \
        v3 ^= v2;                                                              \
        v0 += v3;                                                              \
        v3 = rotl(v3, 21);                                                     \
        v3 ^= v0;                                                              \
        v2 += v1;                                                              \
        v1 = rotl(v1, 17);                                                     \
        v1 ^= v2;                                                              \
        v2 = rotl(v2, 32);                                                     \
    } while (0)

static uint64_t sip13(uint64_t k0, uint64_t k1, const void *data, size_t len) {
    const unsigned char *p = data;
    uint64_t v0 = k0 ^ 0x736f6d6570736575ull; /* "somepseu" */
    uint64_t v1 = k1 ^ 0x646f72616e646f6dull; /* "dorandom" */
    uint64_t v2 = k0 ^ 0x6c7967656e657261ull; /* "lygenera" */
    uint64_t v3 = k1 ^ 0x7465646279746573ull; /* "tedbytes" */
    const unsigned char *end = p + (len & ~(size_t)7);
    for (; p != end; p += 8) {
        uint64_t m = load64le(p);
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)(len & 0xff) << 56;
    switch (len & 7) {
    case 7: b |= (uint64_t)p[6] << 48; /* fall through */
    case 6: b |= (uint64_t)p[5] << 40; /* fall through */
    case 5: b |= (uint64_t)p[4] << 32; /* fall through */
    case 4: b |= (uint64_t)p[3] << 24; /* fall through */
    case 3: b |= (uint64_t)p[2] << 16; /* fall through */
    case 2: b |= (uint64_t)p[1] << 8;  /* fall through */
    case 1: b |= (uint64_t)p[0];       /* fall through */
    default: break;
    }
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t rec_hash_siphash13(const uint8_t key[16], const void *data, size_t len) {
    return sip13(load64le(key), load64le(key + 8), data, len);
}

/* ---- the process key ------------------------------------------------------------ */

static uint64_t key0, key1;     /* valid once `ready` reads 1 */
static atomic_int ready;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static int fill_random(unsigned char *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(buf + got, n - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    if (got == n)
        return 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    return got == n ? 0 : -1;
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void draw_key(void) {
    unsigned char b[16];
    if (fill_random(b, sizeof b) == 0) {
        key0 = load64le(b);
        key1 = load64le(b + 8);
    } else {
        /* No kernel randomness (no getrandom, no /dev/urandom): the clock,
         * the pid and where the stack and this code were placed. Weaker,
         * but still unknown to a remote peer. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t s = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
        s ^= (uint64_t)getpid() << 32 ^ (uint64_t)(uintptr_t)&ts ^
             (uint64_t)(uintptr_t)&draw_key;
        key0 = splitmix(&s);
        key1 = splitmix(&s);
    }
    atomic_store_explicit(&ready, 1, memory_order_release);
}

static inline void ensure_key(void) {
    if (!atomic_load_explicit(&ready, memory_order_acquire))
        pthread_once(&once, draw_key);
}

uint64_t rec_hash_keyed(const void *data, size_t len) {
    ensure_key();
    return sip13(key0, key1, data, len);
}

void rec_hash_seed_get(uint64_t *k0, uint64_t *k1) {
    ensure_key();
    *k0 = key0;
    *k1 = key1;
}

void rec_hash_seed_set(uint64_t k0, uint64_t k1) {
    ensure_key(); /* so that a later first use cannot draw over it */
    key0 = k0;
    key1 = k1;
}

/* ---- the fixed hash ------------------------------------------------------------- */

uint64_t rec_hash_stable_add(uint64_t h, const void *data, size_t len) {
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

uint64_t rec_hash_stable_end(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

uint64_t rec_hash_stable(const void *data, size_t len) {
    return rec_hash_stable_end(rec_hash_stable_add(REC_HASH_STABLE_INIT, data, len));
}
