/* graph.h - the user-item interaction graph in memory: per-user history,
 * per-item audiences, item co-occurrence, and random walks.
 *
 * All of it is derived from the event history, so the engine rebuilds it on
 * open from the history database instead of persisting it separately.
 *
 * Co-occurrence: when a user interacts positively (weight > 0) with item i,
 * each of the last `window` distinct items j != i the user interacted with
 * positively (taking each j's latest weight) gets
 * w(i,j) += min(weight_i, weight_j), symmetrically.
 */
#ifndef REC_GRAPH_H
#define REC_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include "prefetch.h"

#include "counter.h"
#include "mf.h"
#include "rng.h"
#include "vec.h"

typedef struct rec_hentry {
    double ts;       /* seconds since the epoch */
    uint64_t seq;    /* position of the event in the log */
    uint32_t item;
    float weight;    /* from the event type; <= 0 is negative feedback */
    uint16_t type;   /* interned event type */
} rec_hentry;

typedef struct rec_hlist {
    rec_hentry *e;   /* in arrival order */
    uint32_t n, cap;
} rec_hlist;

typedef struct rec_ulist {
    uint32_t *u;     /* users with a positive interaction, repeats kept */
    uint32_t n, cap;
} rec_ulist;

/* Raises of a ranked head's row kept for the next read (rec_cooc.pend). */
#define REC_GRAPH_TOP_PEND 3

/* One slot of a neighbour table: key and weight side by side, so a probe
 * costs one cache line. */
typedef struct rec_cooc_slot {
    uint32_t key;    /* neighbour index + 1; 0 empty */
    float w;
} rec_cooc_slot;

typedef struct rec_cooc {
    rec_cooc_slot *e;
    uint32_t n, cap; /* cap: power of two or 0 */
    /* The strongest neighbours in rank order, kept for rows of more than
     * REC_GRAPH_TOP_MIN entries once asked for (malloc'd,
     * REC_GRAPH_TOP_CAP long): rec_graph_neighbors reads them instead of
     * the whole row. Valid while `fresh`; any change of the row clears it. */
    rec_hit *top;
    uint32_t ntop;
    uint32_t fresh;
    rec_hit floor; /* top[ntop - 1] when the head is full: a raise that
                      ranks after it changes nothing, read without a
                      miss on top */
    /* Raises that may move the head, noted by the write (neighbour, and
     * its weight when the head last saw it) and put in place by the next
     * read; one more than fits drops the head instead (fresh 0), so a
     * burst of writes costs them no more than clearing a flag. */
    uint32_t npend;
    rec_hit pend[REC_GRAPH_TOP_PEND];
} rec_cooc;

/* Rows longer than this keep their strongest REC_GRAPH_TOP_CAP neighbours
 * ranked between changes, REC_GRAPH_TOP_ROWS rows at most (2 KiB each:
 * 32 MiB), the first asked for; the others are scanned whole. */
#define REC_GRAPH_TOP_MIN 64
#define REC_GRAPH_TOP_CAP 256
#define REC_GRAPH_TOP_ROWS 16384

/* Co-occurrence updates wait in a queue of this many events and are then
 * applied together, the cache misses of several events overlapping (see
 * rec_graph_settle). */
#define REC_GRAPH_PENDING 64

typedef struct rec_graph {
    uint32_t window;   /* co-occurrence window, items */
    rec_hlist *users;  /* indexed by user */
    uint32_t nusers;
    rec_ulist *aud;    /* item -> users */
    rec_cooc *cooc;    /* item -> neighbours */
    uint32_t nitems;
    uint64_t edges;    /* co-occurrence entries (directed) */
    uint64_t events;   /* history entries held */
    float *scratch;    /* walk visit counts, nitems long */
    uint32_t *touched; /* items with scratch != 0 */
    uint32_t scratch_cap;
    uint32_t top_rows; /* rows with a ranked head (rec_cooc.top) */
    uint32_t top_budget; /* at most this many (REC_GRAPH_TOP_ROWS) */
    /* positive events whose co-occurrence is not applied yet, in arrival
     * order: user, position in that user's history, item, weight */
    uint32_t pend_user[REC_GRAPH_PENDING], pend_pos[REC_GRAPH_PENDING];
    uint32_t pend_item[REC_GRAPH_PENDING];
    float pend_w[REC_GRAPH_PENDING];
    uint32_t npend;
    int pend_rc;       /* the first failure of a settle, until asked for */
} rec_graph;

void rec_graph_init(rec_graph *g, uint32_t window);
/* Ask the cache for what rec_graph_add(g, user, item, ...) reads first. */
static inline void rec_graph_prefetch(const rec_graph *g, uint32_t user,
                                      uint32_t item) {
    if (user < g->nusers)
        rec_prefetch(&g->users[user]);
    if (item < g->nitems) {
        rec_prefetch(&g->aud[item]);
        rec_prefetch(&g->cooc[item]);
    }
}
void rec_graph_close(rec_graph *g);
/* Ask the cache for user's history header (stage 0), or for the first
 * bytes of the history it points to (stage 1, once the header is in). */
static inline void rec_graph_prefetch_history(const rec_graph *g, uint32_t user, int stage) {
    if (user >= g->nusers)
        return;
    if (stage == 0) {
        rec_prefetch(&g->users[user]);
        return;
    }
    const rec_hlist *h = &g->users[user];
    for (uint32_t i = 0; i < h->n && i < 16; i += 64 / sizeof *h->e)
        rec_prefetch(&h->e[i]);
}

/* Record one interaction. O(1); a positive weight owes O(window)
 * co-occurrence updates, applied by the next settle: every function below
 * that reads or changes co-occurrence settles first, so what it sees is
 * the same as if each add had applied its own. */
int rec_graph_add(rec_graph *g, uint32_t user, uint32_t item, double ts,
                  float weight, uint16_t type, uint64_t seq);

/* Apply the co-occurrence updates owed, REC_GRAPH_PENDING events at a
 * time, in arrival order: each event's tables are asked of the cache a few
 * events before they are updated, so the misses of several events overlap
 * (one event alone waits for its history, then its neighbours' tables,
 * then their slots). Returns the first failure (REC_ENOMEM) since the last
 * call, which skipped that event's updates, or 0. */
int rec_graph_settle(rec_graph *g);

/* Directed co-occurrence entries, settled. */
uint64_t rec_graph_edges(rec_graph *g);

/* History of a user in arrival order (borrowed until the next add/forget
 * of that user), NULL with *n = 0 when none. */
const rec_hentry *rec_graph_history(const rec_graph *g, uint32_t user,
                                    uint32_t *n);

float rec_graph_cooc(rec_graph *g, uint32_t a, uint32_t b);

/* Strongest co-occurrence neighbours of item, skipping bits set in skip
 * (may be NULL). O(degree log k), or O(REC_GRAPH_TOP_CAP) for a long row
 * asked for again before it changed (ranked once, kept in the row; the
 * answer is the same). Returns hits written. */
size_t rec_graph_neighbors(rec_graph *g, uint32_t item,
                           const uint64_t *skip, size_t skip_words, size_t k,
                           rec_hit *out);

/* Pixie-style random walks over the bipartite graph. From seeds (items,
 * chosen in proportion to seed_w), each step goes item -> a random user who
 * liked it -> a random item that user liked; with probability `restart`
 * the walk jumps back to a seed. Visits are counted per item; the top k
 * items by visits (skipping bits in skip) are written to out. Forgotten
 * users have no history left and are never walked through. O(steps). Not
 * reentrant: uses g's scratch.
 * The steps are shared among up to 32 walkers that advance in lockstep, so
 * the cache misses of a step (audience, user, history entry, visit count)
 * overlap across walkers: about 3.5x faster than one chain at 100k items.
 * Each walker starts from a seed, which adds at most 31 starts to those
 * restarts make; otherwise the visits follow the same law as one chain. */
size_t rec_graph_walk(rec_graph *g, const uint32_t *seeds,
                      const float *seed_w, size_t nseeds, uint32_t steps,
                      double restart, rec_rng *rng, const uint64_t *skip,
                      size_t skip_words, size_t k, rec_hit *out);

/* Remove a user's history and take back its co-occurrence contributions. */
void rec_graph_forget_user(rec_graph *g, uint32_t user);
/* Remove an item from every structure (histories keep no entry of it). */
void rec_graph_forget_item(rec_graph *g, uint32_t item);

#endif
