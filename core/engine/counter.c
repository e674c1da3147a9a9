/* counter.c - families of exponentially decayed counters. */
#include "counter.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "space.h"

int rec_counter_new(rec_counter **out, const char *name, uint16_t id,
                    double half_life) {
    *out = NULL;
    if (rec_space_name_ok(name) || !(half_life >= 0.0) || isinf(half_life))
        return REC_EINVAL;
    rec_counter *c = calloc(1, sizeof *c);
    if (!c)
        return REC_ENOMEM;
    strcpy(c->name, name);
    c->id = id;
    c->half_life = half_life;
    *out = c;
    return 0;
}

void rec_counter_free(rec_counter *c) {
    if (!c)
        return;
    free(c->val);
    free(c->t_last);
    free(c->key);
    free(c->dirty);
    free(c->dirty_list);
    free(c->top);
    free(c->in_top);
    free(c);
}

static int counter_reserve(rec_counter *c, uint32_t idx) {
    if (idx < c->cap)
        return 0;
    if (idx == UINT32_MAX)
        return REC_ERANGE;
    uint64_t cap = c->cap ? c->cap : 256;
    while (cap <= idx)
        cap *= 2;
    if (cap > UINT32_MAX)
        cap = UINT32_MAX;
    size_t ow = ((size_t)c->cap + 63) / 64, nw = ((size_t)cap + 63) / 64;
    double *v = realloc(c->val, (size_t)cap * sizeof *v);
    if (!v)
        return REC_ENOMEM;
    c->val = v;
    double *t = realloc(c->t_last, (size_t)cap * sizeof *t);
    if (!t)
        return REC_ENOMEM;
    c->t_last = t;
    double *ky = realloc(c->key, (size_t)cap * sizeof *ky);
    if (!ky)
        return REC_ENOMEM;
    c->key = ky;
    for (uint64_t i = c->cap; i < cap; i++)
        ky[i] = -(double)INFINITY;
    uint64_t *d = realloc(c->dirty, nw * 8);
    if (!d)
        return REC_ENOMEM;
    c->dirty = d;
    uint64_t *it = realloc(c->in_top, nw * 8);
    if (!it)
        return REC_ENOMEM;
    c->in_top = it;
    memset(it + ow, 0, (nw - ow) * 8);
    uint32_t *dl = realloc(c->dirty_list, (size_t)cap * sizeof *dl);
    if (!dl)
        return REC_ENOMEM;
    c->dirty_list = dl;
    memset(v + c->cap, 0, (size_t)(cap - c->cap) * sizeof *v);
    memset(t + c->cap, 0, (size_t)(cap - c->cap) * sizeof *t);
    memset(d + ow, 0, (nw - ow) * 8);
    c->cap = (uint32_t)cap;
    return 0;
}

static double decay(const rec_counter *c, double dt) {
    return c->half_life > 0.0 ? exp2(-dt / c->half_life) : 1.0;
}

static void set_key(rec_counter *c, uint32_t idx) {
    double v = c->val[idx];
    c->key[idx] = v > 0.0 ? log2(v) + (c->half_life > 0.0 ? c->t_last[idx] / c->half_life
                                                           : 0.0)
                          : -(double)INFINITY;
}

/* Does a come before b in the top order (key descending, index)? */
static int top_before(const rec_counter *c, uint32_t a, uint32_t b) {
    return c->key[a] > c->key[b] || (c->key[a] == c->key[b] && a < b);
}

static void top_forget(rec_counter *c) {
    for (uint32_t i = 0; i < c->ntop; i++)
        c->in_top[c->top[i] >> 6] &= ~(1ull << (c->top[i] & 63));
    c->ntop = 0;
    c->top_valid = 0;
}

/* idx's key changed from old: keep the cache exact, or drop it. */
static void top_update(rec_counter *c, uint32_t idx, double old) {
    if (!c->top_valid)
        return;
    int member = (c->in_top[idx >> 6] >> (idx & 63)) & 1;
    double k = c->key[idx];
    if (k < old || isinf(k)) { /* fell: only the cache's own order suffers */
        if (member)
            top_forget(c);
        return;
    }
    uint32_t pos;
    if (member) {
        for (pos = 0; c->top[pos] != idx; pos++)
            ;
    } else if (c->ntop < REC_COUNTER_TOP) {
        pos = c->ntop++;       /* not full: it holds every positive item */
    } else if (top_before(c, idx, c->top[c->ntop - 1])) {
        uint32_t out = c->top[c->ntop - 1];
        c->in_top[out >> 6] &= ~(1ull << (out & 63));
        pos = c->ntop - 1;
    } else {
        return;
    }
    while (pos > 0 && top_before(c, idx, c->top[pos - 1])) {
        c->top[pos] = c->top[pos - 1];
        pos--;
    }
    c->top[pos] = idx;
    c->in_top[idx >> 6] |= 1ull << (idx & 63);
}

static void counter_mark(rec_counter *c, uint32_t idx) {
    uint64_t bit = 1ull << (idx & 63);
    if (!(c->dirty[idx >> 6] & bit)) {
        c->dirty[idx >> 6] |= bit;
        c->dirty_list[c->ndirty++] = idx;
    }
    if (idx >= c->n)
        c->n = idx + 1;
}

int rec_counter_add(rec_counter *c, uint32_t idx, double amount, double t) {
    if (!isfinite(amount) || !isfinite(t))
        return REC_EINVAL;
    int rc = counter_reserve(c, idx);
    if (rc)
        return rc;
    double last = c->t_last[idx], old = c->key[idx];
    if (c->val[idx] == 0.0 || t >= last) {
        c->val[idx] = (c->val[idx] == 0.0 ? 0.0 : c->val[idx] * decay(c, t - last)) + amount;
        c->t_last[idx] = t;
    } else {
        c->val[idx] += amount * decay(c, last - t);
    }
    set_key(c, idx);
    top_update(c, idx, old);
    counter_mark(c, idx);
    return 0;
}

int rec_counter_load(rec_counter *c, uint32_t idx, double val, double t) {
    int rc = counter_reserve(c, idx);
    if (rc)
        return rc;
    double old = c->key[idx];
    c->val[idx] = val;
    c->t_last[idx] = t;
    set_key(c, idx);
    top_update(c, idx, old);
    if (idx >= c->n)
        c->n = idx + 1;
    return 0;
}

double rec_counter_get(const rec_counter *c, uint32_t idx, double t) {
    if (idx >= c->n || c->val[idx] == 0.0)
        return 0.0;
    return c->val[idx] * decay(c, t - c->t_last[idx]);
}

void rec_counter_remove(rec_counter *c, uint32_t idx) {
    if (idx >= c->n)
        return;
    double old = c->key[idx];
    c->val[idx] = 0.0;
    c->t_last[idx] = 0.0;
    c->key[idx] = -(double)INFINITY;
    top_update(c, idx, old);
    counter_mark(c, idx);
}

static int skipped(const uint64_t *skip, size_t words, uint32_t i) {
    return skip && (size_t)(i >> 6) < words && (skip[i >> 6] >> (i & 63) & 1);
}

static int cmp_top(const void *a, const void *b, void *ctx) {
    const rec_counter *c = ctx;
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return top_before(c, x, y) ? -1 : top_before(c, y, x) ? 1 : 0;
}

/* The cache from scratch in one pass: the first REC_COUNTER_TOP keys
 * sorted, then each better one inserted in place (few, on a long tail). */
static int top_rebuild(rec_counter *c) {
    if (!c->top && !(c->top = malloc(REC_COUNTER_TOP * sizeof *c->top)))
        return REC_ENOMEM;
    top_forget(c);
    uint32_t m = 0;
    for (uint32_t i = 0; i < c->n; i++) {
        if (isinf(c->key[i]))
            continue;
        if (m < REC_COUNTER_TOP) {
            c->top[m++] = i;
            if (m == REC_COUNTER_TOP)
                qsort_r(c->top, m, sizeof *c->top, cmp_top, c);
        } else if (top_before(c, i, c->top[m - 1])) {
            uint32_t pos = m - 1;
            while (pos > 0 && top_before(c, i, c->top[pos - 1])) {
                c->top[pos] = c->top[pos - 1];
                pos--;
            }
            c->top[pos] = i;
        }
    }
    if (m < REC_COUNTER_TOP)
        qsort_r(c->top, m, sizeof *c->top, cmp_top, c);
    c->ntop = m;
    for (uint32_t i = 0; i < m; i++)
        c->in_top[c->top[i] >> 6] |= 1ull << (c->top[i] & 63);
    c->top_valid = 1;
    return 0;
}

size_t rec_counter_topk(rec_counter *c, double t, const uint64_t *skip,
                        size_t skip_words, size_t k, rec_hit *out) {
    /* value(t) = 2^(key - t/half_life): the order of keys is the order of
     * values at any t, so rank on keys and decay only the k winners. */
    if (k == 0)
        return 0;
    if (!c->top_valid && c->in_top)
        top_rebuild(c); /* on failure, the scan below answers */
    if (c->top_valid) {
        size_t n = 0;
        for (uint32_t i = 0; i < c->ntop && n < k; i++)
            if (!skipped(skip, skip_words, c->top[i]))
                out[n++] = (rec_hit){c->top[i], 0.0f};
        if (n == k || c->ntop < REC_COUNTER_TOP) {
            for (size_t i = 0; i < n; i++)
                out[i].score = (float)rec_counter_get(c, out[i].idx, t);
            return n;
        }
    }
    rec_topk tk;
    rec_topk_init(&tk, out, k);
    double now = c->half_life > 0.0 ? t / c->half_life : 0.0;
    for (uint32_t i = 0; i < c->n; i++) {
        if (isinf(c->key[i]) || skipped(skip, skip_words, i))
            continue;
        rec_topk_push(&tk, i, (float)(c->key[i] - now));
    }
    size_t n = rec_topk_finish(&tk);
    for (size_t i = 0; i < n; i++)
        out[i].score = (float)rec_counter_get(c, out[i].idx, t);
    return n;
}

void rec_counter_clean(rec_counter *c) {
    for (uint32_t i = 0; i < c->ndirty; i++) {
        uint32_t r = c->dirty_list[i];
        c->dirty[r >> 6] &= ~(1ull << (r & 63));
    }
    c->ndirty = 0;
}
