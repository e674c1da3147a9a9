/* eval.h - `recd eval`: replay interaction logs through the engine and
 * the same strategies and policies the server runs, and measure.
 *
 * Two protocols:
 *  - prequential (test-then-learn, Vinagre et al. 2014): the events in time
 *    order; for each event of a user seen before, the pipeline's top-K
 *    (the user's consumed items excluded) is asked first and scored (hit
 *    when the event's item is in it, reciprocal rank), then the event is
 *    fed, so every policy's on_event runs.
 *  - holdout: each user's events split at random (fixed seed) into a
 *    training and a test part; the training part is fed in time order,
 *    then each user's top-K over the whole catalogue (training items
 *    excluded) is scored against the test part.
 * Each pipeline runs in its own temporary database on the same stream,
 * with the engine's clock set to the log's timestamps (rec_clock_set).
 *
 * The log reader, the metric functions and the item loader are public so
 * that tests check them on hand-computed cases and `recd serve` can load
 * a catalogue the same way.
 */
#ifndef REC_EVAL_H
#define REC_EVAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "engine.h"
#include "idmap.h"

/* ---- logs ------------------------------------------------------------------ */

typedef struct rec_eval_event {
    uint32_t user, item; /* dense indexes into the log's id maps */
    double ts;
    float rating;        /* the rating column, or 1 */
    uint16_t type;       /* index into rec_eval_log.types */
    uint32_t line;       /* line number in the file (1-based) */
} rec_eval_event;

typedef struct rec_eval_log {
    rec_eval_event *ev;  /* sorted by (ts, line) after loading */
    size_t n, cap;
    rec_idmap users, items; /* encoded ids (idmap.h) */
    char (*types)[64];   /* event type names */
    size_t ntypes;
    size_t skipped;      /* rows below the rating threshold */
} rec_eval_log;

typedef struct rec_eval_read_opts {
    const char *columns;  /* "user,item,rating,ts": the file's columns in
                             order ("-" skips one); NULL: from the header */
    int header;           /* with columns: the first line is a header to skip */
    char sep;             /* ',' or '\t'; 0: tab when the first line has one */
    double min_rating;    /* rows rated below are left out; NAN: keep all */
    const char *type;     /* event type of rows without a type column;
                             default "click" */
    const char *type_map; /* "from=to,...": types renamed as read */
    size_t limit;         /* read at most this many events; 0: all */
} rec_eval_read_opts;

void rec_eval_read_opts_default(rec_eval_read_opts *o);

/* Read a CSV or TSV log into log (zeroed by the caller). Header names
 * recognised (any case): user, userid, user_id; item, itemid, item_id,
 * movieid, movie_id, product, product_id; rating, value, score; ts,
 * timestamp, time; type, event, event_type. Ids of digits only are
 * integer ids, others strings. Timestamps are seconds since the epoch
 * (fractions allowed). Returns 0, or REC_EINVAL / REC_EIO with a message
 * naming the file and line in err. */
int rec_eval_log_read(rec_eval_log *log, const char *path,
                      const rec_eval_read_opts *o, char *err, size_t errlen);
void rec_eval_log_free(rec_eval_log *log);

/* Split a CSV/TSV line in place: fields get NUL-terminated pointers into
 * line (quotes removed, "" unescaped). Returns the field count (at most
 * max), or -1 for an unterminated quote. */
int rec_eval_split(char *line, char sep, char **fields, int max);

/* ---- metrics (pure) --------------------------------------------------------- */

/* rank: 1-based rank of the relevant item in the top-K, 0 when absent. */
double rec_eval_rr(uint32_t rank);
/* hit[i] = 1 when the item at rank i+1 is relevant, k ranks, ntest
 * relevant items in all: binary gains, log2(rank + 1) discount, ideal
 * DCG over min(ntest, k) ranks. 0 when ntest is 0. */
double rec_eval_ndcg(const uint8_t *hit, size_t k, size_t ntest);
double rec_eval_recall(const uint8_t *hit, size_t k, size_t ntest);    /* hits / ntest */
double rec_eval_precision(const uint8_t *hit, size_t k);               /* hits / k */

/* ---- output ------------------------------------------------------------------- */

/* Write s (NUL-terminated, any bytes) to f as a JSON string: '"' and '\\'
 * escaped, control characters as \u00XX, well-formed UTF-8 as is, and each
 * byte that does not start a well-formed sequence (stray continuation
 * bytes, overlong forms, surrogates, beyond U+10FFFF, cut short) as U+FFFD,
 * so the output is valid JSON whatever the input. */
void rec_eval_json_str(FILE *f, const char *s);

/* ---- catalogue ---------------------------------------------------------------- */

/* Load an item file (CSV/TSV with a header: id; optional title, name;
 * categories or genres, '|'-separated; vector: floats separated by
 * spaces) and an optional tag file (item id, tag; user and timestamp
 * columns ignored) into the engine: properties {title, categories} and a
 * "content" vector. Given a vector column it is the content vector;
 * otherwise one is built: one dimension per category (the first 48 met),
 * plus 16 dimensions of hashed tag words, tags weighted by how often the
 * item got them, the whole L2-normalised. Items are committed. *loaded
 * gets the count. REC_EINVAL with file:line in err for a bad file. */
int rec_eval_load_items(rec_engine *e, const char *items_path,
                        const char *tags_path, size_t *loaded, char *err,
                        size_t errlen);

/* ---- the command ---------------------------------------------------------------- */

/* `recd eval ARGS`: parse options, run, print. Returns the exit status. */
int rec_eval_main(int argc, char **argv, const char *default_scripts,
                  const char *default_policies);

#endif
