/* movielens.h - a MovieLens folder (movies.csv, ratings.csv, tags.csv in
 * the ml-latest format) into an engine, as `recd serve --movielens DIR`
 * loads it.
 *
 * The mapping is the one documented in docs/movielens.md and shared by
 * examples/python/movielens.py and examples/node/movielens.js:
 *  - items "movie:<movieId>", props {title, genres = [...], year} (year
 *    when the title ends with "(YYYY)"), and a 36-dimension "content"
 *    vector: dims 0..19 one per genre of rec_movielens_genres (1 when the
 *    movie has it), dims 20..35 the tags' words (ASCII letter and digit
 *    runs, lower-cased) hashed with rec_hash_stable, h % 16 the dimension,
 *    the top bit of h the sign; the tag block scaled to length 1, then the
 *    whole vector to length 1; no vector when all dims are 0;
 *  - events of user "user:<userId>" on "movie:<movieId>", value = the
 *    rating, ts = the timestamp, sorted by (timestamp, userId, movieId,
 *    rating); the type by rating (rec_movielens_event_type).
 */
#ifndef REC_MOVIELENS_H
#define REC_MOVIELENS_H

#include <stddef.h>

#include "engine.h"

#define REC_MOVIELENS_GENRES 20
#define REC_MOVIELENS_TAG_DIMS 16
#define REC_MOVIELENS_DIM (REC_MOVIELENS_GENRES + REC_MOVIELENS_TAG_DIMS)

/* The genres of MovieLens (its README.txt), one dimension each, in order. */
extern const char *const rec_movielens_genres[REC_MOVIELENS_GENRES];

/* How ratings become event types. */
typedef enum rec_movielens_types {
    REC_MOVIELENS_GRADED, /* >= 4 "click", 2.5 .. 3.5 "view", <= 2 "dislike" (default) */
    REC_MOVIELENS_CLICK   /* every rating a "click", as recd eval replays them */
} rec_movielens_types;

/* "graded" or "click"; REC_EINVAL for anything else. */
int rec_movielens_types_parse(const char *name);

/* The event type of a rating under the mapping (a static string). */
const char *rec_movielens_event_type(double rating, rec_movielens_types types);

/* The year of a title ending in "(YYYY)" (spaces after it allowed), or 0. */
int rec_movielens_title_year(const char *title);

/* Add the words of one tag to a movie's tag block (REC_MOVIELENS_TAG_DIMS
 * floats): each word adds +1 or -1 to its hashed dimension. */
void rec_movielens_tag_add(float *tags, const char *tag);

/* The content vector of a movie from its genres field ("A|B|C") and its
 * tag block: writes REC_MOVIELENS_DIM floats to v; returns 1, or 0 when
 * every dimension is 0 (no vector). */
int rec_movielens_vector(const char *genres, const float *tags, float *v);

typedef struct rec_movielens_stats {
    size_t movies, with_vector, tags, ratings;
    size_t by_type[3]; /* click, view, dislike */
} rec_movielens_stats;

/* Load the folder dir into e: movies (and tags.csv when present) as items,
 * then every rating as an event, committed. st may be NULL. On error a
 * negative REC_E* code and a message naming the file and line in err. */
int rec_movielens_load(rec_engine *e, const char *dir, rec_movielens_types types,
                       rec_movielens_stats *st, char *err, size_t errlen);

#endif
