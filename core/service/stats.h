/* stats.h - attribution and live statistics of what was shown: per
 * pipeline, experiment arm ("variant") and strategy, impressions, clicks
 * and conversions since start and decayed with a one-hour half-life (the
 * recent window), with the CTR's 95% Wilson interval (stats.get).
 *
 * A click ("click") or a conversion ("purchase", "add_to_cart") that
 * carries the rec_id of a recorded recommendation is credited to the
 * pipeline, arm and strategy that placed its item there.
 */
#ifndef REC_STATS_H
#define REC_STATS_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "pipeline.h"

#define REC_STATS_HALF_LIFE 3600.0 /* seconds: the recent window */
#define REC_STATS_MAX 128          /* metrics kept; more are not counted */

typedef struct rec_stats_metric {
    char name[REC_PIPELINE_NAME_MAX + 8]; /* "pipeline:main", "strategy:hybrid" */
    double impressions, clicks, conversions;
    double r_impressions, r_clicks, r_conversions, r_t; /* decayed, as of r_t */
} rec_stats_metric;

/* Zero it ({0}) to start. */
typedef struct rec_stats {
    rec_stats_metric m[REC_STATS_MAX];
    int n;
} rec_stats;

/* Count imp impressions, clk clicks and conv conversions at t (seconds) for
 * kind ("pipeline", "variant" or "strategy") and name. */
void rec_stats_add(rec_stats *st, const char *kind, const char *name, double imp,
                   double clk, double conv, double t);
/* Credit an event of type (tlen bytes) on item (index) at ts to the
 * recommendation rec_id (rlen bytes: 16 hex digits) recorded in e; other
 * types, ids and items count nothing. Returns 1 when the event is a click
 * or a conversion naming a list that e does not hold (yet: in a cluster,
 * the list may still be on its way from the node that served it), else 0. */
int rec_stats_attribute(rec_stats *st, rec_engine *e, const char *rec_id, size_t rlen,
                         uint32_t item, const char *type, size_t tlen, double ts);
/* Pack stats.get's answer as of now: {recent_half_life_s, pipelines =
 * {name = m}, variants = {...}, strategies = {...}} where m = {total =
 * {...}, recent = {...}}. 0 or REC_ENOMEM. */
int rec_stats_pack(const rec_stats *st, msgpack_packer *pk, double now);
/* Wilson score interval of k successes in n trials at 95%: (lo, hi) in
 * [0, 1]; (0, 1) when n <= 0. */
void rec_stats_wilson(double k, double n, double *lo, double *hi);

#endif
