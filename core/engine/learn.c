/* learn.c - implicit ALS jobs over the engine. */
#include "learn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "ease.h"
#include "ials.h"

struct rec_learn_ials_job {
    rec_learn_ials_opts o;
    rec_ials_data data;
    float *U, *V;
    float *VtV;      /* computed by the worker too: O(items f^2) */
    uint32_t nusers, nitems;
    uint64_t pairs;
    double seconds;
    int trained;
};

/* An installed model: an ials space kept for fold-ins (VtV), or an EASE
 * model (B over n items; item[] maps its rows to engine indexes and
 * local[] back, UINT32_MAX for items it does not cover). */
typedef struct model {
    char space[64];
    int ease;
    uint32_t factors, nitems;
    float reg, alpha;
    float *VtV;
    float *B;
    uint32_t n, *item, *local, nlocal;
    struct model *next;
} model;

static void models_free(void *p) {
    for (model *m = p, *next; m; m = next) {
        next = m->next;
        free(m->VtV);
        free(m->B);
        free(m->item);
        free(m->local);
        free(m);
    }
}

void rec_learn_ials_opts_default(rec_learn_ials_opts *o) {
    memset(o, 0, sizeof *o);
    snprintf(o->space, sizeof o->space, "ials");
    o->factors = 64;
    o->iters = 8;
    o->reg = 30.0f;  /* tuned by recd eval on MovieLens (BENCHMARKS.md) */
    o->alpha = 2.0f;
    o->seed = 42;
}

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int rec_learn_ials_job_new(rec_engine *e, const rec_learn_ials_opts *o, rec_learn_ials_job **out) {
    *out = NULL;
    if (rec_space_name_ok(o->space) || o->factors < 1 || o->factors > REC_IALS_MAX_FACTORS ||
        o->iters > 1000 || !(o->reg > 0.0f) || !isfinite(o->reg) || !(o->alpha > 0.0f) ||
        !isfinite(o->alpha))
        return REC_EINVAL;
    rec_space *s = rec_engine_space(e, o->space);
    if (s && s->dim != o->factors)
        return REC_EDIM;
    rec_graph *g = rec_engine_graph(e);
    uint32_t nu = rec_engine_bound(e, REC_KIND_USER), ni = rec_engine_bound(e, REC_KIND_ITEM);
    size_t n = 0;
    for (uint32_t u = 0; u < nu; u++) {
        uint32_t hn;
        const rec_hentry *h = rec_graph_history(g, u, &hn);
        for (uint32_t i = 0; i < hn; i++)
            n += h[i].weight > 0.0f;
    }
    rec_ials_triple *t = malloc((n ? n : 1) * sizeof *t);
    rec_learn_ials_job *j = calloc(1, sizeof *j);
    if (!t || !j) {
        free(t);
        free(j);
        return REC_ENOMEM;
    }
    size_t k = 0;
    for (uint32_t u = 0; u < nu; u++) {
        uint32_t hn;
        const rec_hentry *h = rec_graph_history(g, u, &hn);
        for (uint32_t i = 0; i < hn; i++)
            if (h[i].weight > 0.0f && rec_engine_is_active(e, h[i].item))
                t[k++] = (rec_ials_triple){u, h[i].item, h[i].weight};
    }
    j->o = *o;
    int rc = rec_ials_data_build(t, k, nu, ni, o->alpha, &j->data);
    free(t);
    if (rc) {
        free(j);
        return rc;
    }
    j->nusers = j->data.nusers;
    j->nitems = j->data.nitems;
    j->pairs = j->data.user_ptr[j->nusers];
    j->U = malloc(((size_t)j->nusers + 1) * o->factors * sizeof(float));
    j->V = malloc(((size_t)j->nitems + 1) * o->factors * sizeof(float));
    if (!j->U || !j->V) {
        rec_learn_ials_job_free(j);
        return REC_ENOMEM;
    }
    *out = j;
    return 0;
}

int rec_learn_ials_job_run(rec_learn_ials_job *j) {
    double t0 = mono();
    int rc = rec_ials_train(&j->data, j->o.factors, j->o.reg, j->o.iters, j->o.seed,
                            j->U, j->V, 1);
    if (!rc) {
        j->VtV = malloc((size_t)j->o.factors * j->o.factors * sizeof(float));
        if (!j->VtV)
            rc = REC_ENOMEM;
        else
            rec_ials_gram(j->V, j->nitems, j->o.factors, j->VtV);
    }
    j->seconds = mono() - t0;
    j->trained = rc == 0;
    return rc;
}

static model *find_kind(rec_engine *e, const char *space, int ease) {
    for (model *m = rec_engine_attached(e); m; m = m->next)
        if (m->ease == ease && strcmp(m->space, space) == 0)
            return m;
    return NULL;
}

static model *find_model(rec_engine *e, const char *space) { return find_kind(e, space, 0); }

/* The model of that name and kind, created empty when missing. */
static model *model_slot(rec_engine *e, const char *space, int ease) {
    model *m = find_kind(e, space, ease);
    if (m)
        return m;
    if (!(m = calloc(1, sizeof *m)))
        return NULL;
    snprintf(m->space, sizeof m->space, "%s", space);
    m->ease = ease;
    /* the list's head stays attached (attaching another would free it):
     * a new model goes second */
    model *head = rec_engine_attached(e);
    if (head) {
        m->next = head->next;
        head->next = m;
    } else {
        rec_engine_attach(e, m, models_free);
    }
    return m;
}

int rec_learn_ials_job_install(rec_engine *e, rec_learn_ials_job *j) {
    if (!j->trained)
        return REC_EINVAL;
    rec_space *s;
    int rc = rec_engine_space_ensure(e, j->o.space, j->o.factors, &s);
    if (rc)
        return rc;
    uint32_t f = j->o.factors;
    /* Items and users seen by the training that are still here; rows with
     * no interaction are zero and left out of the space. */
    for (uint32_t i = 0; i < j->nitems; i++) {
        const float *v = j->V + (size_t)i * f;
        if (j->data.item_ptr[i + 1] > j->data.item_ptr[i] && rec_engine_is_active(e, i) &&
            (rc = rec_space_set(s, REC_KIND_ITEM, i, v, REC_SET_LEARNED)))
            return rc;
    }
    for (uint32_t u = 0; u < j->nusers; u++) {
        size_t kl;
        const float *v = j->U + (size_t)u * f;
        if (j->data.user_ptr[u + 1] > j->data.user_ptr[u] &&
            rec_engine_key(e, REC_KIND_USER, u, &kl) &&
            (rc = rec_space_set(s, REC_KIND_USER, u, v, REC_SET_LEARNED)))
            return rc;
    }
    model *m = model_slot(e, j->o.space, 0);
    if (!m)
        return REC_ENOMEM;
    free(m->VtV);
    m->VtV = j->VtV; /* the worker computed it */
    j->VtV = NULL;
    m->factors = f;
    m->nitems = j->nitems;
    m->reg = j->o.reg;
    m->alpha = j->o.alpha;
    return 0;
}

void rec_learn_ials_job_free(rec_learn_ials_job *j) {
    if (!j)
        return;
    rec_ials_data_free(&j->data);
    free(j->U);
    free(j->V);
    free(j->VtV);
    free(j);
}

double rec_learn_ials_job_seconds(const rec_learn_ials_job *j) { return j->seconds; }
uint64_t rec_learn_ials_job_pairs(const rec_learn_ials_job *j) { return j->pairs; }

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int rec_learn_fold_in(rec_engine *e, const char *space, uint32_t user) {
    model *m = find_model(e, space);
    rec_space *s = rec_engine_space(e, space);
    if (!m || !s || s->dim != m->factors)
        return REC_ENOTFOUND;
    uint32_t hn;
    const rec_hentry *h = rec_graph_history(rec_engine_graph(e), user, &hn);
    if (!hn)
        return 0;
    /* Distinct items with summed positive weights, restricted to items
     * the model knows (V rows are the space's rows). */
    uint32_t *items = malloc((size_t)hn * sizeof *items);
    float *conf = malloc((size_t)hn * sizeof *conf);
    if (!items || !conf) {
        free(items);
        free(conf);
        return REC_ENOMEM;
    }
    size_t n = 0;
    for (uint32_t i = 0; i < hn; i++)
        if (h[i].weight > 0.0f && h[i].item < m->nitems &&
            rec_space_has(s, REC_KIND_ITEM, h[i].item))
            items[n++] = h[i].item;
    qsort(items, n, sizeof *items, cmp_u32);
    size_t d = 0;
    for (size_t i = 0; i < n; i++)
        if (!d || items[d - 1] != items[i])
            items[d++] = items[i];
    for (size_t i = 0; i < d; i++)
        conf[i] = 0.0f;
    for (uint32_t i = 0; i < hn; i++) {
        if (!(h[i].weight > 0.0f))
            continue;
        uint32_t *p = bsearch(&h[i].item, items, d, sizeof *items, cmp_u32);
        if (p)
            conf[p - items] += m->alpha * h[i].weight;
    }
    /* The item rows live in the space's matrix with its stride: gather the
     * d rows used into a compact block and renumber them 0..d-1 (the Gram
     * matrix of the whole model carries the rest). O(d f) extra memory. */
    uint32_t f = m->factors;
    float *V = malloc(((size_t)d + 1) * f * sizeof *V);
    float *u = malloc((size_t)f * sizeof *u);
    int rc = REC_ENOMEM;
    if (V && u) {
        for (size_t i = 0; i < d; i++) {
            memcpy(V + i * f, rec_space_get(s, REC_KIND_ITEM, items[i]), f * sizeof(float));
            items[i] = (uint32_t)i;
        }
        rc = rec_ials_fold_in(V, m->VtV, (uint32_t)d, f, m->reg, items, conf, d, u);
        if (!rc && d)
            rc = rec_space_set(s, REC_KIND_USER, user, u, REC_SET_LEARNED);
    }
    free(V);
    free(u);
    free(items);
    free(conf);
    return rc;
}

/* ---- EASE ---------------------------------------------------------------- */

struct rec_learn_ease_job {
    rec_learn_ease_opts o;
    uint32_t n, nusers, nlocal;
    uint32_t nactive; /* users with at least one modelled item */
    uint32_t *item;   /* local -> engine index */
    uint32_t *local;  /* engine index -> local, UINT32_MAX */
    uint32_t *ptr, *idx;
    float *B;
    double seconds;
    int trained;
};

void rec_learn_ease_opts_default(rec_learn_ease_opts *o) {
    memset(o, 0, sizeof *o);
    snprintf(o->name, sizeof o->name, "ease");
    o->lambda = 250.0f;
    o->max_items = 3000;
}

void rec_learn_ease_job_free(rec_learn_ease_job *j) {
    if (!j)
        return;
    free(j->item);
    free(j->local);
    free(j->ptr);
    free(j->idx);
    free(j->B);
    free(j);
}

static int cmp_by_count(const void *a, const void *b, void *ctx) {
    const uint32_t *count = ctx;
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    if (count[x] != count[y])
        return count[x] > count[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* Each user's distinct positive items that the job models, as local
 * numbers: written into idx with j->ptr filled (idx not NULL), or only
 * counted. mark (ni + 1 entries) is scratch. Returns the count. */
static size_t user_rows(rec_learn_ease_job *j, rec_graph *g, uint32_t *mark, uint32_t ni,
                        uint32_t *idx) {
    memset(mark, 0, ((size_t)ni + 1) * sizeof *mark);
    size_t k = 0;
    for (uint32_t u = 0; u < j->nusers; u++) {
        if (idx)
            j->ptr[u] = (uint32_t)k;
        uint32_t hn;
        const rec_hentry *h = rec_graph_history(g, u, &hn);
        for (uint32_t i = 0; i < hn; i++)
            if (h[i].weight > 0.0f && j->local[h[i].item] != UINT32_MAX &&
                mark[h[i].item] != u + 1) {
                mark[h[i].item] = u + 1;
                if (idx)
                    idx[k] = j->local[h[i].item];
                k++;
            }
    }
    if (idx)
        j->ptr[j->nusers] = (uint32_t)k;
    return k;
}

int rec_learn_ease_job_new(rec_engine *e, const rec_learn_ease_opts *o, rec_learn_ease_job **out) {
    *out = NULL;
    if (rec_space_name_ok(o->name) || !(o->lambda > 0.0f) || !isfinite(o->lambda) ||
        o->max_items < 1 || o->max_items > 20000)
        return REC_EINVAL;
    rec_graph *g = rec_engine_graph(e);
    uint32_t nu = rec_engine_bound(e, REC_KIND_USER), ni = rec_engine_bound(e, REC_KIND_ITEM);
    rec_learn_ease_job *j = calloc(1, sizeof *j);
    uint32_t *count = calloc((size_t)ni + 1, sizeof *count);
    uint32_t *order = malloc(((size_t)ni + 1) * sizeof *order);
    uint32_t *mark = calloc((size_t)ni + 1, sizeof *mark); /* user + 1 who last counted it */
    if (!j || !count || !order || !mark)
        goto nomem;
    j->o = *o;
    j->nlocal = ni;
    /* users per item: each user's distinct positive items, active only */
    for (uint32_t u = 0; u < nu; u++) {
        uint32_t hn;
        const rec_hentry *h = rec_graph_history(g, u, &hn);
        for (uint32_t i = 0; i < hn; i++)
            if (h[i].weight > 0.0f && mark[h[i].item] != u + 1 &&
                rec_engine_is_active(e, h[i].item)) {
                mark[h[i].item] = u + 1;
                count[h[i].item]++;
            }
    }
    uint32_t m = 0;
    for (uint32_t i = 0; i < ni; i++)
        if (count[i])
            order[m++] = i;
    qsort_r(order, m, sizeof *order, cmp_by_count, count);
    j->n = m < o->max_items ? m : o->max_items;
    j->item = malloc(((size_t)j->n + 1) * sizeof *j->item);
    j->local = malloc(((size_t)ni + 1) * sizeof *j->local);
    if (!j->item || !j->local)
        goto nomem;
    for (uint32_t i = 0; i < ni; i++)
        j->local[i] = UINT32_MAX;
    for (uint32_t i = 0; i < j->n; i++) {
        j->item[i] = order[i];
        j->local[order[i]] = i;
    }
    /* the users' rows over the modelled items: counted, then written */
    j->nusers = nu;
    size_t nnz = user_rows(j, g, mark, ni, NULL);
    j->ptr = malloc(((size_t)nu + 1) * sizeof *j->ptr);
    j->idx = malloc((nnz ? nnz : 1) * sizeof *j->idx);
    if (!j->ptr || !j->idx)
        goto nomem;
    user_rows(j, g, mark, ni, j->idx);
    for (uint32_t u = 0; u < nu; u++)
        j->nactive += j->ptr[u + 1] > j->ptr[u];
    free(count);
    free(order);
    free(mark);
    *out = j;
    return 0;
nomem:
    free(count);
    free(order);
    free(mark);
    rec_learn_ease_job_free(j);
    return REC_ENOMEM;
}

int rec_learn_ease_job_run(rec_learn_ease_job *j) {
    double t0 = mono();
    int rc = 0;
    if (j->n) {
        j->B = malloc((size_t)j->n * j->n * sizeof *j->B);
        rc = j->B ? rec_ease_fit(j->ptr, j->idx, j->nusers, j->n, j->o.lambda, j->B)
                  : REC_ENOMEM;
    }
    j->seconds = mono() - t0;
    j->trained = rc == 0;
    return rc;
}

int rec_learn_ease_job_install(rec_engine *e, rec_learn_ease_job *j) {
    if (!j->trained)
        return REC_EINVAL;
    model *m = model_slot(e, j->o.name, 1);
    if (!m)
        return REC_ENOMEM;
    free(m->B);
    free(m->item);
    free(m->local);
    m->B = j->B;
    m->item = j->item;
    m->local = j->local;
    m->n = j->n;
    m->nlocal = j->nlocal;
    j->B = NULL;
    j->item = j->local = NULL;
    return 0;
}

double rec_learn_ease_job_seconds(const rec_learn_ease_job *j) { return j->seconds; }
uint32_t rec_learn_ease_job_items(const rec_learn_ease_job *j) { return j->n; }
uint32_t rec_learn_ease_job_users(const rec_learn_ease_job *j) { return j->nactive; }

int rec_learn_ease_topk(rec_engine *e, const char *name, uint32_t user,
                        const uint64_t *skip, size_t words, size_t k, rec_hit *out) {
    return rec_learn_ease_topk_recent(e, name, user, 0, 1.0f, skip, words, k, out);
}

int rec_learn_ease_topk_recent(rec_engine *e, const char *name, uint32_t user,
                               uint32_t recent, float decay, const uint64_t *skip,
                               size_t words, size_t k, rec_hit *out) {
    model *m = find_kind(e, name, 1);
    if (!m)
        return REC_ENOTFOUND;
    if (!k || !m->n)
        return 0;
    uint32_t hn = 0;
    const rec_hentry *h = user != REC_IDX_NONE
                              ? rec_graph_history(rec_engine_graph(e), user, &hn) : NULL;
    float *s = calloc(m->n, sizeof *s);
    uint64_t *used = calloc(((size_t)m->n + 63) / 64, sizeof *used);
    if (!s || !used) {
        free(s);
        free(used);
        return REC_ENOMEM;
    }
    /* the distinct positive items of the history that the model covers,
     * newest first */
    size_t nu = 0;
    float w = 1.0f;
    for (uint32_t i = hn; i-- > 0 && (!recent || nu < recent);) {
        uint32_t it = h[i].item;
        if (!(h[i].weight > 0.0f) || it >= m->nlocal || m->local[it] == UINT32_MAX)
            continue;
        uint32_t l = m->local[it];
        if (used[l >> 6] >> (l & 63) & 1)
            continue;
        used[l >> 6] |= 1ull << (l & 63);
        nu++;
        rec_vec_axpy(w, m->B + (size_t)l * m->n, s, m->n);
        w *= decay;
    }
    if (!nu) { /* nothing to go on: no guess */
        free(s);
        free(used);
        return 0;
    }
    rec_topk t;
    rec_topk_init(&t, out, k);
    for (uint32_t l = 0; l < m->n; l++) {
        uint32_t it = m->item[l];
        if (skip && (size_t)(it >> 6) < words && (skip[it >> 6] >> (it & 63) & 1))
            continue;
        if (!rec_engine_is_active(e, it))
            continue;
        rec_topk_push(&t, it, s[l]);
    }
    free(s);
    free(used);
    return (int)rec_topk_finish(&t);
}
