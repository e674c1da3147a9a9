/* learn.c - implicit ALS jobs over the engine. */
#include "learn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "ials.h"

struct rec_ials_job {
    rec_ials_opts o;
    rec_ials_data data;
    float *U, *V;
    float *VtV;      /* computed by the worker too: O(items f^2) */
    uint32_t nusers, nitems;
    uint64_t pairs;
    double seconds;
    int trained;
};

/* The installed model of one space, kept for fold-ins. */
typedef struct model {
    char space[64];
    uint32_t factors, nitems;
    float reg, alpha;
    float *VtV;
    struct model *next;
} model;

static void models_free(void *p) {
    for (model *m = p, *next; m; m = next) {
        next = m->next;
        free(m->VtV);
        free(m);
    }
}

void rec_ials_opts_default(rec_ials_opts *o) {
    memset(o, 0, sizeof *o);
    snprintf(o->space, sizeof o->space, "ials");
    o->factors = 64;
    o->iters = 8;
    o->reg = 0.1f;
    o->alpha = 1.0f;
    o->seed = 42;
}

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int rec_ials_job_new(rec_engine *e, const rec_ials_opts *o, rec_ials_job **out) {
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
    rec_ials_job *j = calloc(1, sizeof *j);
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
        rec_ials_job_free(j);
        return REC_ENOMEM;
    }
    *out = j;
    return 0;
}

int rec_ials_job_run(rec_ials_job *j) {
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

static model *find_model(rec_engine *e, const char *space) {
    for (model *m = rec_engine_attached(e); m; m = m->next)
        if (strcmp(m->space, space) == 0)
            return m;
    return NULL;
}

int rec_ials_job_install(rec_engine *e, rec_ials_job *j) {
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
    model *m = find_model(e, j->o.space);
    if (!m) {
        m = calloc(1, sizeof *m);
        if (!m)
            return REC_ENOMEM;
        snprintf(m->space, sizeof m->space, "%s", j->o.space);
        m->next = rec_engine_attached(e);
        rec_engine_attach(e, m, models_free);
    }
    free(m->VtV);
    m->VtV = j->VtV; /* the worker computed it */
    j->VtV = NULL;
    m->factors = f;
    m->nitems = j->nitems;
    m->reg = j->o.reg;
    m->alpha = j->o.alpha;
    return 0;
}

void rec_ials_job_free(rec_ials_job *j) {
    if (!j)
        return;
    rec_ials_data_free(&j->data);
    free(j->U);
    free(j->V);
    free(j->VtV);
    free(j);
}

double rec_ials_job_seconds(const rec_ials_job *j) { return j->seconds; }
uint64_t rec_ials_job_pairs(const rec_ials_job *j) { return j->pairs; }

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
