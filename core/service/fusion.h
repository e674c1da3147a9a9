/* fusion.h - the built-in recommender: what rec.recommend answers with the
 * pipeline "builtin", and when no strategy of the default pipeline is
 * loaded (a server without --scripts). Rank fusion (rank.h) of four
 * sources: the user's recent taste in the "content" space (weight 1),
 * items that co-occur with the last five they liked (1/k for the k-th
 * back), their online MF vector (0.7) and what is popular now (0.3), the
 * last two as the built-in learner (feedback.h) keeps them; then, with
 * nothing else to go on, the newest items of the catalogue. Never what the
 * user already interacted with.
 */
#ifndef REC_FUSION_H
#define REC_FUSION_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "rank.h"

/* Up to n items for user (an index, or REC_IDX_NONE) into out (room for
 * n), best first; *got gets how many. skip (words 64-bit words over the
 * item indexes) holds what must not be proposed; the user's history and
 * every proposed item are added to it. f is scratch (rank.h), empty again
 * on return. Returns 0 or REC_ENOMEM. */
int rec_fusion_recommend(rec_engine *e, rec_rank_fuse *f, uint32_t user, uint64_t *skip,
                         size_t words, uint32_t n, rec_hit *out, size_t *got);

#endif
