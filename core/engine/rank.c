/* rank.c - ranking primitives: rank fusion and maximal marginal relevance. */
#include "rank.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

int rec_rank_fuse_reserve(rec_rank_fuse *f, uint32_t bound) {
    if (bound <= f->cap)
        return 0;
    float *s = realloc(f->score, (size_t)bound * sizeof *s);
    if (!s)
        return REC_ENOMEM;
    f->score = s;
    uint32_t *t = realloc(f->touched, (size_t)bound * sizeof *t);
    if (!t)
        return REC_ENOMEM;
    f->touched = t;
    memset(s + f->cap, 0, (size_t)(bound - f->cap) * sizeof *s);
    f->cap = bound;
    return 0;
}

void rec_rank_fuse_add(rec_rank_fuse *f, const rec_hit *h, size_t n, float w) {
    for (size_t r = 0; r < n; r++) {
        uint32_t i = h[r].idx;
        if (f->score[i] == 0.0f)
            f->touched[f->ntouched++] = i;
        f->score[i] += rec_rank_fused(w, (float)r);
    }
}

size_t rec_rank_fuse_top(rec_rank_fuse *f, rec_hit *out, size_t n, uint64_t *skip) {
    rec_topk best;
    rec_topk_init(&best, out, n);
    for (uint32_t i = 0; i < f->ntouched; i++) {
        uint32_t it = f->touched[i];
        rec_topk_push(&best, it, f->score[it]);
        f->score[it] = 0.0f;
        if (skip)
            skip[it >> 6] |= 1ull << (it & 63);
    }
    f->ntouched = 0;
    return rec_topk_finish(&best);
}

void rec_rank_fuse_clear(rec_rank_fuse *f) {
    for (uint32_t i = 0; i < f->ntouched; i++)
        f->score[f->touched[i]] = 0.0f;
    f->ntouched = 0;
}

void rec_rank_fuse_free(rec_rank_fuse *f) {
    free(f->score);
    free(f->touched);
    memset(f, 0, sizeof *f);
}

static unsigned blend_bits(size_t cap) {
    unsigned bits = 4;
    while (((size_t)1 << bits) < 2 * cap)
        bits++;
    return bits;
}

size_t rec_rank_blend_bytes(size_t cap) {
    return cap * sizeof(rec_rank_blend_item) + ((size_t)1 << blend_bits(cap)) * sizeof(uint32_t);
}

void rec_rank_blend_init(rec_rank_blend *b, void *mem, size_t cap) {
    b->item = mem;
    b->slot = (uint32_t *)(b->item + cap);
    b->bits = blend_bits(cap);
    b->n = 0;
    b->cap = (uint32_t)cap;
    memset(b->slot, 0xff, ((size_t)1 << b->bits) * sizeof(uint32_t));
}

/* The slot holding idx, or the empty one where it belongs (Fibonacci
 * hashing, linear probing; never full: 2^bits >= 2 cap). */
static uint32_t blend_slot(const rec_rank_blend *b, uint32_t idx) {
    uint32_t mask = (1u << b->bits) - 1;
    uint32_t p = (idx * 0x9E3779B1u) >> (32 - b->bits);
    while (b->slot[p] != UINT32_MAX && b->item[b->slot[p]].idx != idx)
        p = (p + 1) & mask;
    return p;
}

void rec_rank_blend_add(rec_rank_blend *b, const rec_hit *h, size_t n, double w, uint32_t src) {
    for (size_t r = 0; r < n; r++) {
        uint32_t p = blend_slot(b, h[r].idx);
        rec_rank_blend_item *it;
        if (b->slot[p] == UINT32_MAX) {
            if (b->n == b->cap)
                continue;
            b->slot[p] = b->n;
            it = &b->item[b->n++];
            *it = (rec_rank_blend_item){.idx = h[r].idx, .why = src, .ord = b->n - 1};
        } else {
            it = &b->item[b->slot[p]];
        }
        double s = w / ((double)REC_RANK_FUSE_K + (double)r);
        it->score += s;
        if (s > it->best) {
            it->best = s;
            it->why = src;
        }
    }
}

void rec_rank_blend_scale(rec_rank_blend *b, uint32_t idx, double f) {
    uint32_t p = blend_slot(b, idx);
    if (b->slot[p] != UINT32_MAX)
        b->item[b->slot[p]].score *= f;
}

static int blend_cmp(const void *pa, const void *pb) {
    const rec_rank_blend_item *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return a->ord < b->ord ? -1 : a->ord > b->ord;
}

static void blend_swap(rec_rank_blend_item *a, rec_rank_blend_item *b) {
    rec_rank_blend_item t = *a;
    *a = *b;
    *b = t;
}

/* Reorder it[0..m) so that its first n are the n best, in any order
 * (Hoare's selection, median-of-three pivots: O(m) expected). */
static void blend_select(rec_rank_blend_item *it, size_t m, size_t n) {
    size_t lo = 0, hi = m; /* the n-th best lies in [lo, hi) */
    while (hi - lo > 16) {
        size_t mid = lo + (hi - lo) / 2;
        if (blend_cmp(&it[mid], &it[lo]) < 0)
            blend_swap(&it[mid], &it[lo]);
        if (blend_cmp(&it[hi - 1], &it[lo]) < 0)
            blend_swap(&it[hi - 1], &it[lo]);
        if (blend_cmp(&it[hi - 1], &it[mid]) < 0)
            blend_swap(&it[hi - 1], &it[mid]);
        rec_rank_blend_item pivot = it[mid];
        size_t i = lo, j = hi - 1;
        for (;;) {
            while (blend_cmp(&it[i], &pivot) < 0)
                i++;
            while (blend_cmp(&pivot, &it[j]) < 0)
                j--;
            if (i >= j)
                break;
            blend_swap(&it[i], &it[j]);
            i++;
            j--;
        }
        /* it[lo..j] rank at or before the pivot, it[j+1..hi) at or after */
        if (n <= j + 1)
            hi = j + 1;
        else
            lo = j + 1;
    }
    qsort(it + lo, hi - lo, sizeof *it, blend_cmp);
}

size_t rec_rank_blend_rank(rec_rank_blend *b, size_t n) {
    if (n >= b->n) {
        qsort(b->item, b->n, sizeof *b->item, blend_cmp);
        return b->n;
    }
    blend_select(b->item, b->n, n);
    qsort(b->item, n, sizeof *b->item, blend_cmp);
    return n;
}

void rec_rank_mmr(const float *const *rows, const double *score, size_t m, uint32_t dim,
                  double lambda, uint32_t *order) {
    double rel[REC_RANK_MMR_MAX], maxsim[REC_RANK_MMR_MAX];
    int taken[REC_RANK_MMR_MAX];
    double lo = HUGE_VAL, hi = -HUGE_VAL;
    for (size_t i = 0; i < m; i++) {
        rel[i] = score[i];
        lo = rel[i] < lo ? rel[i] : lo;
        hi = rel[i] > hi ? rel[i] : hi;
        maxsim[i] = 0.0;
        taken[i] = 0;
    }
    for (size_t i = 0; i < m; i++)
        rel[i] = lo >= 0 ? (hi > 0 ? rel[i] / hi : 1.0)
                         : (hi > lo ? (rel[i] - lo) / (hi - lo) : 1.0);
    for (size_t placed = 0; placed < m; placed++) {
        size_t best = SIZE_MAX;
        double bestv = 0;
        for (size_t i = 0; i < m; i++) {
            if (taken[i])
                continue;
            double v = lambda * rel[i] - (1 - lambda) * maxsim[i];
            if (best == SIZE_MAX || v > bestv) {
                best = i;
                bestv = v;
            }
        }
        taken[best] = 1;
        order[placed] = (uint32_t)best;
        if (!rows[best])
            continue;
        for (size_t i = 0; i < m; i++) {
            if (taken[i] || !rows[i])
                continue;
            double c = (double)rec_vec_cosine(rows[best], rows[i], dim);
            if (c > maxsim[i])
                maxsim[i] = c;
        }
    }
}
