/* prefetch.h - ask the cache for a line ahead of its use.
 *
 * Paths that touch several rows spread over memory (an event's user, item
 * and negatives, its co-occurrence tables) issue these first so that the
 * misses overlap instead of queueing one behind the other. An asm
 * statement on x86-64: GCC's pure-const pass takes an inline function whose
 * body is only __builtin_prefetch calls for one without effect, and drops
 * its calls (see also prefetch4 in vec.c).
 */
#ifndef REC_PREFETCH_H
#define REC_PREFETCH_H

static inline void rec_prefetch(const void *p) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __asm__ volatile("prefetcht0 %0" : : "m"(*(const char *)p));
#else
    __builtin_prefetch(p, 0, 3);
#endif
}

#endif
