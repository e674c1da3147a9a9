/* rng.h - the engine's seeded generator. */
#ifndef REC_RNG_H
#define REC_RNG_H

#include <stddef.h>
#include <stdint.h>

/* xoshiro256** seeded through splitmix64: fast, reproducible per seed. */
typedef struct rec_rng {
    uint64_t s[4];
} rec_rng;

void rec_rng_seed(rec_rng *r, uint64_t seed);
uint64_t rec_rng_next(rec_rng *r);
/* Uniform in [0, n) without modulo bias; n > 0. */
uint32_t rec_rng_below(rec_rng *r, uint32_t n);
/* Uniform in [0, 1). */
double rec_rng_unit(rec_rng *r);

#endif
