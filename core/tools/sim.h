/* sim.h - `recd sim`: a closed-loop simulation of a population against
 * the engine. Simulated people ask for lists, look at the top slots more
 * than the bottom ones, click what matches their hidden taste and the
 * item's hidden quality, tire of items shown to them again, buy some of
 * what they click; the engine sees only ids, properties, noisy content
 * vectors and the events, exactly as a client sends them. docs/sim.md
 * describes the world and the report.
 */
#ifndef REC_SIM_H
#define REC_SIM_H

#include <stdint.h>

/* The world's parameters (the flags of `recd sim`). */
typedef struct rec_sim_world_opts {
    uint64_t seed;
    uint32_t users, items, topics;
    uint32_t n;             /* items per request */
    uint32_t requests;
    double new_items;       /* share of items arriving during the run, beyond `items` */
    double drift_share;     /* share of users whose taste changes ... */
    double drift_at;        /* ... at this share of the run */
    double organic;         /* organic clicks per request (no rec_id) */
    uint32_t warmup;        /* organic clicks before the first request */
    double exam_power;      /* examination at position p: 1/(1+p)^exam_power */
    double fatigue;         /* each earlier impression multiplies the click odds */
    double skew;            /* activity: user of rank r asks with weight 1/r^skew */
    double content_noise;   /* noise of the content vectors the engine gets */
    double bias, w_affinity, w_quality; /* relevance = logistic(bias + w_a a + w_q q) */
    double conv_bias, conv_affinity;    /* P(purchase | click) = logistic(cb + ca a) */
    double interval;        /* seconds of simulated time between requests */
    double start;           /* the first request's time (seconds since the epoch) */
    uint32_t train_every;   /* requests between batch trainings; 0: requests/10 */
} rec_sim_world_opts;

void rec_sim_world_opts_default(rec_sim_world_opts *o);

/* The examination probability of position p (0-based). */
double rec_sim_examination(const rec_sim_world_opts *o, uint32_t p);

/* `recd sim ARGS`: parse options, run, print. Returns the exit status. */
int rec_sim_main(int argc, char **argv, const char *default_scripts,
                 const char *default_policies);

#endif
