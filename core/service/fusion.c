/* fusion.c - the built-in recommender (fusion.h). */
#include "fusion.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "feedback.h"
#include "graph.h"

/* The user's taste in a vector space: recent positive items' vectors,
 * normalised, weighted by event weight and 0.85 per step back in time.
 * Returns 0 when none of the recent items has a vector. */
static int profile(rec_space *s, const rec_hentry *h, uint32_t hn, float *q) {
    memset(q, 0, s->dim * sizeof(float));
    float decay = 1.0f;
    int used = 0;
    for (uint32_t i = hn, seen = 0; i-- > 0 && seen < 20;) {
        if (h[i].weight <= 0.0f)
            continue;
        seen++;
        const float *v = rec_space_get(s, REC_KIND_ITEM, h[i].item);
        float inv = v ? s->m[REC_KIND_ITEM].inv_norms[h[i].item] : 0.0f;
        if (inv > 0.0f) {
            rec_vec_axpy(h[i].weight * decay * inv, v, q, s->dim);
            used = 1;
        }
        decay *= 0.85f;
    }
    return used;
}

int rec_fusion_recommend(rec_engine *e, rec_rank_fuse *f, uint32_t user, uint64_t *skip,
                         size_t words, uint32_t n, rec_hit *out, size_t *got) {
    rec_graph *g = rec_engine_graph(e);
    uint32_t hn = 0;
    const rec_hentry *h = user != REC_IDX_NONE ? rec_graph_history(g, user, &hn) : NULL;
    for (uint32_t i = 0; i < hn; i++)
        skip[h[i].item >> 6] |= 1ull << (h[i].item & 63);
    uint32_t m = n * 3 < 30 ? 30 : n * 3; /* candidates per source */
    rec_hit *hits = malloc((size_t)(m > 64 ? m : 64) * sizeof *hits);
    if (!hits || rec_rank_fuse_reserve(f, rec_engine_bound(e, REC_KIND_ITEM))) {
        free(hits);
        return REC_ENOMEM;
    }
    float q[REC_DIM_MAX];
    int k;
    /* 1. the user's recent taste in content vectors */
    rec_space *content = rec_engine_space(e, "content");
    if (content && h && profile(content, h, hn, q) &&
        (k = rec_space_topk(content, REC_KIND_ITEM, q, 1, skip, words, m, hits)) > 0)
        rec_rank_fuse_add(f, hits, (size_t)k, 1.0f);
    /* 2. items that co-occur with the last five they liked */
    for (uint32_t i = hn, seen = 0; i-- > 0 && seen < 5;) {
        if (h[i].weight <= 0.0f)
            continue;
        seen++;
        size_t nb = rec_graph_neighbors(g, h[i].item, skip, words, m / 2, hits);
        rec_rank_fuse_add(f, hits, nb, 1.0f / (float)seen);
    }
    /* 3. their online MF vector */
    rec_space *mf = rec_engine_space(e, REC_FEEDBACK_MF_SPACE);
    const float *uv = mf && user != REC_IDX_NONE ? rec_space_get(mf, REC_KIND_USER, user) : NULL;
    if (uv) {
        memcpy(q, uv, mf->dim * sizeof(float));
        if ((k = rec_space_topk(mf, REC_KIND_ITEM, q, 0, skip, words, m, hits)) > 0)
            rec_rank_fuse_add(f, hits, (size_t)k, 0.7f);
    }
    /* 4. what is popular now */
    rec_counter *pop = rec_engine_counter(e, REC_FEEDBACK_POP_COUNTER);
    if (pop)
        rec_rank_fuse_add(f, hits, rec_counter_topk(pop, rec_now(), skip, words, m, hits), 0.3f);
    size_t nout = rec_rank_fuse_top(f, out, n, skip);
    /* 5. nothing else to go on: the newest items of the catalogue */
    for (uint32_t i = rec_engine_bound(e, REC_KIND_ITEM); i-- > 0 && nout < n;)
        if (!(skip[i >> 6] >> (i & 63) & 1))
            out[nout++] = (rec_hit){i, 0.0f};
    free(hits);
    *got = nout;
    return 0;
}
