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
    float *P;        /* V (VtV + reg I)^-1, for short fold-ins: O(items f^2) */
    uint32_t nusers, nitems;
    uint64_t pairs;
    double seconds;
    int trained;
    uint64_t epoch0; /* the marks of the space's model at the snapshot */
    rec_ials_triple *t; /* the snapshot, until the worker builds data */
    size_t nt;
    uint32_t bound_users, bound_items;
};

/* What fold-ins solve against, for one or more users back to back: per
 * user, their distinct positive items that the model knows renumbered
 * 0..d-1 (idx), the summed confidences, the items' rows gathered into a
 * compact block (the Gram matrix of the whole model carries the rest) and
 * beside them the items' rows of P when the model has them. Kept and
 * reused: nothing is allocated once it is large enough. */
typedef struct fold_buf {
    uint32_t *idx;
    float *conf, *rows, *prows;
    size_t n, cap; /* entries used and allocated (rows: f floats each) */
    int has_p;
} fold_buf;

static void fold_buf_free(fold_buf *b) {
    free(b->idx);
    free(b->conf);
    free(b->rows);
    free(b->prows);
    memset(b, 0, sizeof *b);
}

static int fold_buf_reserve(fold_buf *b, size_t n, uint32_t f, int has_p) {
    if (n <= b->cap && (!has_p || b->prows))
        return 0;
    size_t cap = b->cap > n ? b->cap : n > 64 ? n : 64;
    while (cap < n)
        cap *= 2;
    uint32_t *idx = realloc(b->idx, cap * sizeof *idx);
    if (!idx)
        return REC_ENOMEM;
    b->idx = idx;
    float *conf = realloc(b->conf, cap * sizeof *conf);
    if (!conf)
        return REC_ENOMEM;
    b->conf = conf;
    float *rows = realloc(b->rows, cap * f * sizeof *rows);
    if (!rows)
        return REC_ENOMEM;
    b->rows = rows;
    if (has_p || b->prows) {
        float *prows = realloc(b->prows, cap * f * sizeof *prows);
        if (!prows)
            return REC_ENOMEM;
        b->prows = prows;
    }
    b->cap = cap;
    return 0;
}

/* A user's positive events on items the model knows, as fold-ins take
 * them: the item and the event's confidence, in history order. */
typedef struct fold_pair {
    uint32_t item, pos;
    float conf;
} fold_pair;

/* The item side of an installed ials model, what fold-ins solve against:
 * the trained item factors V, their Gram matrix VtV and P = V (VtV + reg
 * I)^-1 (NULL when it could not be made). Immutable once made, and shared
 * by the model and the fold jobs in flight, so a worker reads it while the
 * engine's thread goes on (an install swaps in a new one); refs are
 * counted on the engine's thread only. */
typedef struct fold_rows {
    float *V, *P, *VtV;
    uint32_t nitems, f;
    int refs;
} fold_rows;

static void rows_release(fold_rows *r) {
    if (r && --r->refs == 0) {
        free(r->V);
        free(r->P);
        free(r->VtV);
        free(r);
    }
}

/* An installed model: an ials space kept for fold-ins (rows), or an EASE
 * model (B over n items; item[] maps its rows to engine indexes and
 * local[] back, UINT32_MAX for items it does not cover). */
typedef struct model {
    char space[64];
    int ease;
    uint32_t factors, nitems;
    float reg, alpha;
    fold_rows *rows;     /* ials: NULL until installed */
    float *B;
    uint32_t n, *item, *local, nlocal;
    /* fold-ins owed (ials): users whose row is stale, in `flags`, and
     * those of them not yet taken by a fold job, in `queue` */
    uint8_t *flags;      /* per user: FOLD_STALE | FOLD_QUEUED */
    uint64_t *marked;    /* per user: the epoch of its last mark */
    uint32_t ncap;       /* users flags and marked cover */
    uint32_t *queue;
    size_t nqueue, qcap;
    size_t nstale;
    uint64_t epoch;      /* marks so far */
    uint32_t gen;        /* installs so far: a fold job of another is void */
    double read_at;      /* mono() of the last read (rec_learn_settle); 0 never */
    int unqueued;        /* users may be owed and not queued (sweep_owed) */
    fold_buf scratch;    /* for fold-ins on the engine's thread */
    fold_pair *pairs;    /* the same */
    size_t npairs_cap;
    struct model *next;
} model;

enum { FOLD_STALE = 1, FOLD_QUEUED = 2 };

static void models_free(void *p) {
    for (model *m = p, *next; m; m = next) {
        next = m->next;
        rows_release(m->rows);
        free(m->B);
        free(m->item);
        free(m->local);
        free(m->flags);
        free(m->marked);
        free(m->queue);
        fold_buf_free(&m->scratch);
        free(m->pairs);
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
    o->cpu = 1.0;
}

static model *find_model(rec_engine *e, const char *space);

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int rec_learn_ials_job_new(rec_engine *e, const rec_learn_ials_opts *o, rec_learn_ials_job **out) {
    *out = NULL;
    if (rec_space_name_ok(o->space) || o->factors < 1 || o->factors > REC_IALS_MAX_FACTORS ||
        o->iters > 1000 || !(o->reg > 0.0f) || !isfinite(o->reg) || !(o->alpha > 0.0f) ||
        !isfinite(o->alpha) || !(o->cpu > 0.0 && o->cpu <= 1.0))
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
    const model *m = find_model(e, o->space);
    j->epoch0 = m ? m->epoch : 0;
    /* the rest (both orientations, merged pairs) is the worker's */
    j->t = t;
    j->nt = k;
    j->bound_users = nu;
    j->bound_items = ni;
    *out = j;
    return 0;
}

/* The job's data from its snapshot, and room for the factors. */
static int job_data(rec_learn_ials_job *j) {
    int rc = rec_ials_data_build(j->t, j->nt, j->bound_users, j->bound_items, j->o.alpha,
                                 &j->data);
    free(j->t);
    j->t = NULL;
    if (rc)
        return rc;
    j->nusers = j->data.nusers;
    j->nitems = j->data.nitems;
    j->pairs = j->data.user_ptr[j->nusers];
    j->U = malloc(((size_t)j->nusers + 1) * j->o.factors * sizeof(float));
    j->V = malloc(((size_t)j->nitems + 1) * j->o.factors * sizeof(float));
    return j->U && j->V ? 0 : REC_ENOMEM;
}

/* P = V B^-1 with B = VtV + reg I, one row per item: what a fold-in of
 * few items solves against (fold_short). O(items f^2). */
static int short_rows(const float *V, const float *VtV, uint32_t nitems, uint32_t factors,
                      float reg, float **out) {
    size_t f = factors;
    float *Binv = malloc(2 * f * f * sizeof *Binv);
    float *P = malloc(((size_t)nitems + 1) * f * sizeof *P);
    int rc = Binv && P ? rec_ials_reg_inverse(VtV, factors, reg, Binv, Binv + f * f)
                       : REC_ENOMEM;
    if (!rc)
        rec_ials_short_rows(Binv, V, 0, nitems, factors, P);
    free(Binv);
    if (rc) {
        free(P);
        P = NULL;
    }
    *out = P;
    return rc;
}

/* ---- a bounded CPU share ----------------------------------------------- */

static double thread_cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct pace {
    double share, wall0, cpu0;
} pace;

static void pace_start(pace *p, double share) {
    p->share = share;
    p->wall0 = mono();
    p->cpu0 = thread_cpu();
}

/* Between slices of work: sleep while this thread's CPU time since the
 * start is ahead of share x the time since the start. */
static void pace_step(const pace *p) {
    if (p->share >= 1.0)
        return;
    double ahead = (thread_cpu() - p->cpu0) / p->share - (mono() - p->wall0);
    if (ahead > 1e-3) {
        struct timespec ts = {(time_t)ahead, (long)((ahead - floor(ahead)) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

/* Rows per slice of a half-step: a few milliseconds of work. */
#define PACE_ROWS 1024

/* One half-step of rec_ials_train (X from Y: its Gram matrix in G, the
 * inverse after it, the rows of P in P) in slices, pacing between them. */
static int half_step(const float *Y, uint32_t ny, float *G, float *P, uint32_t f, float reg,
                     const uint32_t *ptr, const uint32_t *idx, const float *conf, uint32_t nx,
                     float *X, float *scratch, const pace *p) {
    float *Binv = G + (size_t)f * f;
    int rc = rec_ials_half_prepare(Y, ny, f, reg, G, Binv, scratch);
    pace_step(p);
    for (uint32_t b = 0; !rc && b < ny; b += PACE_ROWS) {
        rec_ials_short_rows(Binv, Y, b, ny - b < PACE_ROWS ? ny : b + PACE_ROWS, f, P);
        pace_step(p);
    }
    for (uint32_t b = 0; !rc && b < nx; b += PACE_ROWS) {
        uint32_t e = nx - b < PACE_ROWS ? nx : b + PACE_ROWS;
        rc = rec_ials_solve_rows(Y, G, P, f, reg, ptr, idx, conf, b, e, X, scratch);
        pace_step(p);
    }
    return rc;
}

/* rec_ials_train's iterations, sliced and paced: the same factors. */
static int train_paced(rec_learn_ials_job *j) {
    const rec_ials_data *d = &j->data;
    uint32_t f = j->o.factors;
    int rc = rec_ials_train(d, f, j->o.reg, 0, j->o.seed, j->U, j->V, 1); /* checks, init */
    if (rc || !j->o.iters)
        return rc;
    size_t nmax = d->nusers > d->nitems ? d->nusers : d->nitems;
    float *G = malloc((2 * (size_t)f * f + REC_IALS_SCRATCH_FLOATS(f)) * sizeof *G);
    float *P = malloc((nmax + 1) * f * sizeof *P);
    if (!G || !P) {
        free(G);
        free(P);
        return REC_ENOMEM;
    }
    float *scratch = G + 2 * (size_t)f * f;
    pace p;
    pace_start(&p, j->o.cpu);
    for (uint32_t it = 0; it < j->o.iters && !rc; it++) {
        rc = half_step(j->V, d->nitems, G, P, f, j->o.reg, d->user_ptr, d->user_items,
                       d->user_conf, d->nusers, j->U, scratch, &p);
        if (!rc)
            rc = half_step(j->U, d->nusers, G, P, f, j->o.reg, d->item_ptr, d->item_users,
                           d->item_conf, d->nitems, j->V, scratch, &p);
    }
    free(G);
    free(P);
    return rc;
}

int rec_learn_ials_job_run(rec_learn_ials_job *j) {
    double t0 = mono();
    int rc = j->t ? job_data(j) : REC_EINVAL;
    if (!rc)
        rc = j->o.cpu < 1.0 ? train_paced(j)
                            : rec_ials_train(&j->data, j->o.factors, j->o.reg, j->o.iters,
                                             j->o.seed, j->U, j->V, 1);
    if (!rc) {
        j->VtV = malloc((size_t)j->o.factors * j->o.factors * sizeof(float));
        if (!j->VtV)
            rc = REC_ENOMEM;
        else
            rec_ials_gram(j->V, j->nitems, j->o.factors, j->VtV);
    }
    if (!rc)
        rc = short_rows(j->V, j->VtV, j->nitems, j->o.factors, j->o.reg, &j->P);
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

static model *find_model(rec_engine *e, const char *space) {
    return find_kind(e, space, 0);
}

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

/* The debts a new training leaves in m: a user marked after its snapshot
 * (epoch0) is owed against the new factors, whatever was paid before;
 * the training paid the others. O(users). */
static void rebase_owed(model *m, uint64_t epoch0) {
    for (uint32_t u = 0; u < m->ncap; u++) {
        uint8_t *fl = &m->flags[u];
        if (m->marked[u] > epoch0) {
            if (!(*fl & FOLD_STALE)) {
                *fl |= FOLD_STALE;
                m->nstale++;
            }
            m->unqueued |= !(*fl & FOLD_QUEUED);
        } else if (*fl & FOLD_STALE) {
            *fl &= (uint8_t)~FOLD_STALE; /* a queued entry is skipped */
            m->nstale--;
        }
    }
}

int rec_learn_ials_job_install(rec_engine *e, rec_learn_ials_job *j) {
    if (!j->trained)
        return REC_EINVAL;
    rec_space *s;
    int rc;
    if ((rc = rec_engine_space_ensure(e, j->o.space, j->o.factors, &s)))
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
    fold_rows *r = m ? calloc(1, sizeof *r) : NULL;
    if (!r)
        return REC_ENOMEM;
    /* the worker computed VtV and P; the job's factors are the model's */
    r->V = j->V;
    r->P = j->P;
    r->VtV = j->VtV;
    j->V = j->P = j->VtV = NULL;
    r->nitems = j->nitems;
    r->f = f;
    r->refs = 1;
    rows_release(m->rows);
    m->rows = r;
    m->factors = f;
    m->nitems = j->nitems;
    m->gen++;
    m->reg = j->o.reg;
    m->alpha = j->o.alpha;
    rebase_owed(m, j->epoch0);
    return 0;
}

void rec_learn_ials_job_free(rec_learn_ials_job *j) {
    if (!j)
        return;
    rec_ials_data_free(&j->data);
    free(j->t);
    free(j->U);
    free(j->V);
    free(j->VtV);
    free(j->P);
    free(j);
}

double rec_learn_ials_job_seconds(const rec_learn_ials_job *j) { return j->seconds; }
uint64_t rec_learn_ials_job_pairs(const rec_learn_ials_job *j) { return j->pairs; }

static int pair_cmp(const void *a, const void *b) {
    const fold_pair *x = a, *y = b;
    if (x->item != y->item)
        return x->item < y->item ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Sort pairs by item then position. collect writes them in history
 * order, so a stable sort by item gives that order: insertion sort for a
 * short history (most), qsort past it. */
static void pairs_sort(fold_pair *pr, size_t n) {
    if (n > 64) {
        qsort(pr, n, sizeof *pr, pair_cmp);
        return;
    }
    for (size_t i = 1; i < n; i++) {
        fold_pair x = pr[i];
        size_t j = i;
        for (; j > 0 && (pr[j - 1].item > x.item ||
                         (pr[j - 1].item == x.item && pr[j - 1].pos > x.pos)); j--)
            pr[j] = pr[j - 1];
        pr[j] = x;
    }
}

/* Room for n more pairs after the first *len of *p (capacity *cap). */
static int pairs_reserve(fold_pair **p, size_t *cap, size_t len, size_t n) {
    if (len + n <= *cap)
        return 0;
    size_t c = *cap ? *cap : 256;
    while (c < len + n)
        c *= 2;
    fold_pair *q = realloc(*p, c * sizeof *q);
    if (!q)
        return REC_ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

/* The user's pairs, appended at out[0..]: on the engine's thread, which
 * owns the history and the space (an item deleted since the training has
 * no row and is left out). Returns how many. O(history). */
static size_t collect(rec_engine *e, const model *m, const rec_space *s, uint32_t user,
                      fold_pair *out, size_t room) {
    uint32_t hn;
    const rec_hentry *h = rec_graph_history(rec_engine_graph(e), user, &hn);
    size_t n = 0;
    for (uint32_t i = 0; i < hn && n < room; i++)
        if (h[i].weight > 0.0f && h[i].item < m->rows->nitems &&
            rec_space_has(s, REC_KIND_ITEM, h[i].item))
            out[n++] = (fold_pair){h[i].item, i, m->alpha * h[i].weight};
    return n;
}

/* What a fold-in solves from a user's n pairs (sorted here): their
 * distinct items' confidences summed in history order, and those items'
 * rows of V and P copied into b, renumbered 0..d-1 (see fold_buf). Reads
 * only r: a worker may run it. Returns d, or REC_ENOMEM (b unchanged). */
static long prepare(const fold_rows *r, fold_pair *pr, size_t n, fold_buf *b) {
    uint32_t f = r->f;
    b->n = 0;
    if (fold_buf_reserve(b, n, f, r->P != NULL))
        return REC_ENOMEM;
    b->has_p = r->P != NULL;
    pairs_sort(pr, n);
    size_t d = 0;
    for (size_t i = 0; i < n; i++) {
        if (d && b->idx[d - 1] == pr[i].item) {
            b->conf[d - 1] += pr[i].conf;
            continue;
        }
        b->idx[d] = pr[i].item;
        b->conf[d++] = pr[i].conf;
    }
    for (size_t i = 0; i < d; i++) {
        size_t it = b->idx[i];
        memcpy(b->rows + i * f, r->V + it * f, f * sizeof(float));
        if (b->has_p)
            memcpy(b->prows + i * f, r->P + it * f, f * sizeof(float));
        b->idx[i] = (uint32_t)i;
    }
    b->n = d;
    return (long)d;
}

/* The fold-in of d < f items by the Woodbury identity: with B = VtV +
 * reg I and P = V B^-1 (rows p_i), the user's system (B + Vu^T C Vu) x =
 * Vu^T (1 + c) is solved as y = sum (1 + c_i) p_i, x = y - Pu^T z with
 * (C^-1 + Vu Pu^T) z = Vu y: a d x d system instead of f x f. The same
 * solution as rec_ials_fold_in up to rounding; O(d^2 f + d^3) instead of
 * O(d f^2 + f^3). */
static int fold_short(const float *V, const float *P, const float *conf, size_t d,
                      uint32_t factors, float *x) {
    size_t f = factors;
    float *M = malloc((d * d + d + 1) * sizeof *M);
    if (!M)
        return REC_ENOMEM;
    float *t = M + d * d;
    memset(x, 0, f * sizeof *x);
    for (size_t i = 0; i < d; i++)
        rec_vec_axpy(1.0f + conf[i], P + i * f, x, f);
    for (size_t i = 0; i < d; i++) {
        rec_vec_dot_rows(P, f, i + 1, V + i * f, f, M + i * d); /* v_i . p_j, j <= i */
        for (size_t j = 0; j < i; j++)
            M[j * d + i] = M[i * d + j];
        M[i * d + i] += 1.0f / conf[i];
        t[i] = rec_vec_dot(V + i * f, x, f);
    }
    int rc = rec_ials_cholesky_solve(M, t, (uint32_t)d);
    if (!rc) {
        for (size_t i = 0; i < d; i++)
            rec_vec_axpy(-t[i], P + i * f, x, f);
        if (!rec_vec_all_finite(x, f))
            rc = REC_ENONFINITE;
    }
    free(M);
    return rc;
}

/* One fold-in over what gather collected: the short form while it is
 * cheaper (d < f) and every confidence is positive, else the f x f
 * solve. */
static int fold_solve(const float *V, const float *P, const float *VtV, const uint32_t *idx,
                      const float *conf, size_t d, uint32_t f, float reg, float *x) {
    int short_ok = P && d > 0 && d < f;
    for (size_t i = 0; short_ok && i < d; i++)
        short_ok = conf[i] > 0.0f && isfinite(conf[i]);
    if (short_ok)
        return fold_short(V, P, conf, d, f, x);
    return rec_ials_fold_in(V, VtV, (uint32_t)d, f, reg, idx, conf, d, x);
}

/* Re-solve the user now and clear what was owed for them. */
static int fold_now(rec_engine *e, model *m, rec_space *s, uint32_t user) {
    if (user < m->ncap && (m->flags[user] & FOLD_STALE)) {
        m->flags[user] &= (uint8_t)~FOLD_STALE;
        m->nstale--;
    }
    uint32_t hn;
    rec_graph_history(rec_engine_graph(e), user, &hn);
    if (pairs_reserve(&m->pairs, &m->npairs_cap, 0, hn))
        return REC_ENOMEM;
    size_t n = collect(e, m, s, user, m->pairs, hn);
    fold_buf *b = &m->scratch;
    long d = prepare(m->rows, m->pairs, n, b);
    if (d < 0)
        return (int)d;
    const fold_rows *r = m->rows;
    float u[REC_IALS_MAX_FACTORS];
    int rc = fold_solve(b->rows, b->has_p ? b->prows : NULL, r->VtV, b->idx, b->conf,
                        (size_t)d, r->f, m->reg, u);
    if (!rc && d)
        rc = rec_space_set(s, REC_KIND_USER, user, u, REC_SET_LEARNED);
    return rc;
}

/* The installed ials model of space with its space, or REC_ENOTFOUND. */
static int fold_model(rec_engine *e, const char *space, model **m, rec_space **s) {
    *m = find_model(e, space);
    *s = rec_engine_space(e, space);
    if (!*m || !*s || (*m)->ease || !(*m)->rows || (*s)->dim != (*m)->factors)
        return REC_ENOTFOUND;
    return 0;
}

int rec_learn_fold_in(rec_engine *e, const char *space, uint32_t user) {
    model *m;
    rec_space *s;
    int rc = fold_model(e, space, &m, &s);
    return rc ? rc : fold_now(e, m, s, user);
}

/* Per-user state covering users 0..n-1. */
static int fold_cover(model *m, uint32_t n) {
    if (n <= m->ncap)
        return 0;
    uint32_t cap = m->ncap ? m->ncap : 1024;
    while (cap < n)
        cap = cap > UINT32_MAX / 2 ? n : cap * 2;
    uint8_t *fl = realloc(m->flags, cap);
    if (!fl)
        return REC_ENOMEM;
    m->flags = fl;
    uint64_t *mk = realloc(m->marked, (size_t)cap * sizeof *mk);
    if (!mk)
        return REC_ENOMEM;
    m->marked = mk;
    memset(fl + m->ncap, 0, cap - m->ncap);
    memset(mk + m->ncap, 0, (size_t)(cap - m->ncap) * sizeof *mk);
    m->ncap = cap;
    return 0;
}

/* Was m read lately (rec_learn_fold_in_later)? */
static int read_lately(const model *m, double now) {
    return m->read_at > 0.0 && now - m->read_at < REC_LEARN_FOLD_READ_WINDOW;
}

/* Queue user, stale and not queued, for a fold job when there is room. */
static int enqueue(model *m, uint32_t user) {
    if (m->nqueue >= REC_LEARN_FOLD_BACKLOG) {
        m->unqueued = 1;
        return 0;
    }
    if (m->nqueue == m->qcap) {
        size_t cap = m->qcap ? m->qcap * 2 : 256;
        uint32_t *q = realloc(m->queue, cap * sizeof *q);
        if (!q)
            return REC_ENOMEM;
        m->queue = q;
        m->qcap = cap;
    }
    m->queue[m->nqueue++] = user;
    m->flags[user] |= FOLD_QUEUED;
    return 0;
}

/* Queue the users owed and not queued, in user order, while there is
 * room (a quiet model read again, or a backlog with room again). */
static int sweep_owed(model *m) {
    m->unqueued = 0;
    for (uint32_t u = 0; u < m->ncap && m->nstale; u++)
        if ((m->flags[u] & (FOLD_STALE | FOLD_QUEUED)) == FOLD_STALE) {
            int rc = enqueue(m, u);
            if (rc || m->unqueued)
                return rc;
        }
    return 0;
}

/* Owe user's fold-in to model m (see rec_learn_fold_in_later); queued
 * when background is set (m was read lately). */
static int owe(model *m, uint32_t user, int background) {
    int rc = fold_cover(m, user + 1);
    if (rc)
        return rc;
    uint8_t *fl = &m->flags[user];
    if (!(*fl & FOLD_STALE)) {
        *fl |= FOLD_STALE;
        m->nstale++;
    }
    m->marked[user] = ++m->epoch;
    if (*fl & FOLD_QUEUED)
        return 0;
    if (!background) {
        m->unqueued = 1;
        return 0;
    }
    return enqueue(m, user);
}

int rec_learn_fold_in_later(rec_engine *e, const char *space, uint32_t user) {
    return rec_learn_fold_in_later_n(e, space, &user, 1);
}

int rec_learn_fold_in_later_n(rec_engine *e, const char *space, const uint32_t *users,
                              size_t n) {
    model *m;
    rec_space *s;
    int rc = fold_model(e, space, &m, &s);
    int background = !rc && read_lately(m, mono());
    for (size_t i = 0; i < n && !rc; i++)
        rc = owe(m, users[i], background);
    return rc;
}

/* Fold in what model m owes: user's, or every one (REC_IDX_NONE). */
static int settle_model(rec_engine *e, model *m, uint32_t user) {
    if (m->ease || !m->nstale)
        return 0;
    rec_space *s = rec_engine_space(e, m->space);
    if (!s || s->dim != m->factors || !m->rows) { /* nothing to fold against */
        memset(m->flags, 0, m->ncap);
        m->nstale = m->nqueue = 0;
        m->unqueued = 0;
        return 0;
    }
    if (user != REC_IDX_NONE)
        return user < m->ncap && (m->flags[user] & FOLD_STALE) ? fold_now(e, m, s, user) : 0;
    int rc = 0;
    for (uint32_t u = 0; u < m->ncap && m->nstale; u++)
        if (m->flags[u] & FOLD_STALE) {
            int r = fold_now(e, m, s, u);
            rc = rc ? rc : r;
        }
    return rc;
}

int rec_learn_settle(rec_engine *e, const char *space, uint32_t user) {
    int rc = rec_engine_mf_settle(e, space); /* MF steps owed there, too */
    double now = 0.0;
    for (model *m = rec_engine_attached(e); m; m = m->next) {
        if (m->ease || (space && strcmp(m->space, space) != 0))
            continue;
        now = now > 0.0 ? now : mono();
        int woke = !read_lately(m, now);
        m->read_at = now;
        if (!m->nstale)
            continue;
        int r = settle_model(e, m, user);
        if (!r && woke && m->unqueued) /* the rest in the background again */
            r = sweep_owed(m);
        rc = rc ? rc : r;
    }
    return rc;
}

int rec_learn_settle_new(rec_engine *e, const char *space) {
    int rc = 0;
    for (model *m = rec_engine_attached(e); m; m = m->next) {
        if (m->ease || !m->nstale || (space && strcmp(m->space, space) != 0))
            continue;
        model *fm;
        rec_space *s;
        if (fold_model(e, m->space, &fm, &s)) {
            settle_model(e, m, REC_IDX_NONE); /* nothing to fold against: dropped */
            continue;
        }
        for (uint32_t u = 0; u < m->ncap && m->nstale; u++)
            if ((m->flags[u] & FOLD_STALE) && !rec_space_has(s, REC_KIND_USER, u)) {
                int r = fold_now(e, m, s, u);
                rc = rc ? rc : r;
            }
    }
    return rc;
}

size_t rec_learn_owed(rec_engine *e) {
    size_t n = 0;
    for (model *m = rec_engine_attached(e); m; m = m->next)
        n += m->nstale;
    return n;
}

int rec_learn_folding(rec_engine *e) {
    double now = mono();
    for (model *m = rec_engine_attached(e); m; m = m->next)
        if (!m->ease && read_lately(m, now))
            return 1;
    return 0;
}

size_t rec_learn_queued(rec_engine *e) {
    size_t n = 0;
    for (model *m = rec_engine_attached(e); m; m = m->next)
        n += m->nqueue;
    return n;
}

/* ---- fold jobs: owed fold-ins solved off the engine's thread ------------ */

struct rec_learn_fold_job {
    char space[64];
    uint32_t f, gen;
    float reg;
    uint64_t epoch;   /* the model's marks at the snapshot */
    fold_rows *rows;  /* a reference: an install may replace the model's */
    size_t n, cap;    /* users, allocated */
    uint32_t *users;
    size_t *off;      /* n + 1: user j's pairs are off[j]..off[j+1] */
    fold_pair *pairs;
    size_t pcap;
    fold_buf b;       /* one user at a time, on the worker */
    float *out;       /* n x f */
    int *rc;
};

void rec_learn_fold_job_free(rec_learn_fold_job *j) {
    if (!j)
        return;
    rows_release(j->rows);
    free(j->users);
    free(j->off);
    free(j->pairs);
    fold_buf_free(&j->b);
    free(j->out);
    free(j->rc);
    free(j);
}

/* Room for n users of f factors in j. */
static int job_reserve(rec_learn_fold_job *j, size_t n, uint32_t f) {
    if (j->f != f) { /* another model's sizes: start over */
        free(j->out);
        j->out = NULL;
        j->cap = 0;
        fold_buf_free(&j->b);
    }
    j->f = f;
    if (n <= j->cap)
        return 0;
    uint32_t *users = realloc(j->users, n * sizeof *users);
    if (!users)
        return REC_ENOMEM;
    j->users = users;
    size_t *off = realloc(j->off, (n + 1) * sizeof *off);
    if (!off)
        return REC_ENOMEM;
    j->off = off;
    float *out = realloc(j->out, n * f * sizeof *out);
    if (!out)
        return REC_ENOMEM;
    j->out = out;
    int *rc = realloc(j->rc, n * sizeof *rc);
    if (!rc)
        return REC_ENOMEM;
    j->rc = rc;
    j->cap = n;
    return 0;
}

int rec_learn_fold_job_new(rec_engine *e, size_t max_users, rec_learn_fold_job **out) {
    model *m = rec_engine_attached(e);
    rec_space *s = NULL;
    double now = mono();
    for (; m; m = m->next) {
        if (!m->ease && !m->nqueue && m->unqueued && read_lately(m, now) &&
            sweep_owed(m))
            return REC_ENOMEM;
        if (!m->ease && m->nqueue) {
            if (fold_model(e, m->space, &m, &s) == 0)
                break;
            settle_model(e, m, REC_IDX_NONE); /* the space is gone: drops the debt */
        }
    }
    rec_learn_fold_job *j = *out;
    if (j) {
        j->n = 0;
        rows_release(j->rows); /* the last job's */
        j->rows = NULL;
    }
    if (!m || !max_users)
        return 0;
    if (!j && !(j = *out = calloc(1, sizeof *j)))
        return REC_ENOMEM;
    size_t take = m->nqueue < max_users ? m->nqueue : max_users;
    uint32_t f = m->factors;
    if (job_reserve(j, take, f))
        return REC_ENOMEM;
    snprintf(j->space, sizeof j->space, "%s", m->space);
    j->rows = m->rows;
    j->rows->refs++;
    j->gen = m->gen;
    j->reg = m->reg;
    j->epoch = m->epoch;
    j->off[0] = 0;
    /* the oldest queued first; the rest move up */
    size_t q = 0, np = 0;
    int rc = 0;
    const rec_graph *g = rec_engine_graph(e);
    for (; q < m->nqueue && j->n < take; q++) {
        if (q + 4 < m->nqueue) /* the histories of users ahead load meanwhile */
            rec_graph_prefetch_history(g, m->queue[q + 4], 0);
        if (q + 2 < m->nqueue)
            rec_graph_prefetch_history(g, m->queue[q + 2], 1);
        uint32_t u = m->queue[q];
        if (!(m->flags[u] & FOLD_STALE)) {
            m->flags[u] &= (uint8_t)~FOLD_QUEUED;
            continue; /* folded in meanwhile by a reader */
        }
        uint32_t hn;
        rec_graph_history(rec_engine_graph(e), u, &hn);
        if ((rc = pairs_reserve(&j->pairs, &j->pcap, np, hn)))
            break; /* u and the rest stay queued */
        np += collect(e, m, s, u, j->pairs + np, hn);
        m->flags[u] &= (uint8_t)~FOLD_QUEUED;
        j->users[j->n++] = u;
        j->off[j->n] = np;
    }
    memmove(m->queue, m->queue + q, (m->nqueue - q) * sizeof *m->queue);
    m->nqueue -= q;
    return rc;
}

void rec_learn_fold_job_run(rec_learn_fold_job *j) {
    size_t f = j->f;
    for (size_t k = 0; k < j->n; k++) {
        size_t a = j->off[k];
        long d = prepare(j->rows, j->pairs + a, j->off[k + 1] - a, &j->b);
        j->rc[k] = d < 0 ? (int)d
                         : fold_solve(j->b.rows, j->b.has_p ? j->b.prows : NULL, j->rows->VtV,
                                      j->b.idx, j->b.conf, (size_t)d, j->f, j->reg,
                                      j->out + k * f);
    }
}

size_t rec_learn_fold_job_users(const rec_learn_fold_job *j) { return j->n; }

int rec_learn_fold_job_install(rec_engine *e, rec_learn_fold_job *j) {
    model *m;
    rec_space *s;
    int rc = fold_model(e, j->space, &m, &s);
    if (rc)
        return 0; /* the model or its space went away: nothing is owed */
    int first = 0;
    for (size_t k = 0; k < j->n; k++) {
        uint32_t u = j->users[k];
        if (!(m->flags[u] & FOLD_STALE))
            continue; /* a reader folded it in meanwhile */
        size_t kl;
        if (m->gen != j->gen || m->marked[u] > j->epoch || !rec_engine_key(e, REC_KIND_USER, u, &kl)) {
            /* another model, or an event since: solved again later */
            if (!(m->flags[u] & FOLD_QUEUED) && rec_engine_key(e, REC_KIND_USER, u, &kl) &&
                (rc = rec_learn_fold_in_later(e, j->space, u)))
                first = first ? first : rc;
            else if (!rec_engine_key(e, REC_KIND_USER, u, &kl)) {
                m->flags[u] &= (uint8_t)~FOLD_STALE;
                m->nstale--;
            }
            continue;
        }
        m->flags[u] &= (uint8_t)~FOLD_STALE;
        m->nstale--;
        rc = j->rc[k];
        if (!rc && j->off[k + 1] > j->off[k]) /* a user with items */
            rc = rec_space_set(s, REC_KIND_USER, u, j->out + k * j->f, REC_SET_LEARNED);
        first = first ? first : rc;
    }
    return first;
}

/* ---- EASE ---------------------------------------------------------------- */

struct rec_learn_ease_job {
    rec_learn_ease_opts o;
    uint32_t n, nusers, nlocal;
    uint32_t nactive; /* users with at least one modelled item */
    uint32_t *item;   /* local -> engine index */
    uint32_t *local;  /* engine index -> local, UINT32_MAX */
    uint32_t *ptr, *idx;
    uint32_t *count;  /* users per item, until the worker picks the items */
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
    free(j->count);
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

int rec_learn_ease_job_new(rec_engine *e, const rec_learn_ease_opts *o, rec_learn_ease_job **out) {
    *out = NULL;
    if (rec_space_name_ok(o->name) || !(o->lambda > 0.0f) || !isfinite(o->lambda) ||
        o->max_items < 1 || o->max_items > 20000)
        return REC_EINVAL;
    rec_graph *g = rec_engine_graph(e);
    uint32_t nu = rec_engine_bound(e, REC_KIND_USER), ni = rec_engine_bound(e, REC_KIND_ITEM);
    rec_learn_ease_job *j = calloc(1, sizeof *j);
    uint32_t *mark = calloc((size_t)ni + 1, sizeof *mark); /* user + 1 who last took it */
    if (!j || !mark)
        goto nomem;
    j->o = *o;
    j->nlocal = ni;
    j->nusers = nu;
    j->count = calloc((size_t)ni + 1, sizeof *j->count);
    j->ptr = malloc(((size_t)nu + 1) * sizeof *j->ptr);
    size_t cap = 1024, k = 0;
    j->idx = malloc(cap * sizeof *j->idx);
    if (!j->count || !j->ptr || !j->idx)
        goto nomem;
    /* The snapshot: each user's distinct positive items, active only, in
     * history order, and the users per item. The worker picks the items
     * it models and keeps only those (rec_learn_ease_job_run). */
    for (uint32_t u = 0; u < nu; u++) {
        j->ptr[u] = (uint32_t)k;
        uint32_t hn;
        const rec_hentry *h = rec_graph_history(g, u, &hn);
        if (k + hn > cap) {
            while (k + hn > cap)
                cap *= 2;
            uint32_t *idx = realloc(j->idx, cap * sizeof *idx);
            if (!idx)
                goto nomem;
            j->idx = idx;
        }
        for (uint32_t i = 0; i < hn; i++)
            if (h[i].weight > 0.0f && mark[h[i].item] != u + 1 &&
                rec_engine_is_active(e, h[i].item)) {
                mark[h[i].item] = u + 1;
                j->count[h[i].item]++;
                j->idx[k++] = h[i].item;
            }
    }
    j->ptr[nu] = (uint32_t)k;
    free(mark);
    *out = j;
    return 0;
nomem:
    free(mark);
    rec_learn_ease_job_free(j);
    return REC_ENOMEM;
}

/* The max_items items most users engaged with, and the users' rows over
 * them renumbered 0..n-1, from the snapshot (in place). */
static int ease_rows(rec_learn_ease_job *j) {
    uint32_t ni = j->nlocal;
    uint32_t *order = malloc(((size_t)ni + 1) * sizeof *order);
    if (!order)
        return REC_ENOMEM;
    uint32_t m = 0;
    for (uint32_t i = 0; i < ni; i++)
        if (j->count[i])
            order[m++] = i;
    qsort_r(order, m, sizeof *order, cmp_by_count, j->count);
    j->n = m < j->o.max_items ? m : j->o.max_items;
    j->item = malloc(((size_t)j->n + 1) * sizeof *j->item);
    j->local = malloc(((size_t)ni + 1) * sizeof *j->local);
    if (!j->item || !j->local) {
        free(order);
        return REC_ENOMEM;
    }
    for (uint32_t i = 0; i < ni; i++)
        j->local[i] = UINT32_MAX;
    for (uint32_t i = 0; i < j->n; i++) {
        j->item[i] = order[i];
        j->local[order[i]] = i;
    }
    free(order);
    size_t k = 0;
    for (uint32_t u = 0; u < j->nusers; u++) {
        uint32_t a = j->ptr[u], b = j->ptr[u + 1];
        j->ptr[u] = (uint32_t)k;
        for (uint32_t x = a; x < b; x++)
            if (j->local[j->idx[x]] != UINT32_MAX)
                j->idx[k++] = j->local[j->idx[x]];
        j->nactive += k > j->ptr[u];
    }
    j->ptr[j->nusers] = (uint32_t)k;
    free(j->count);
    j->count = NULL;
    return 0;
}

int rec_learn_ease_job_run(rec_learn_ease_job *j) {
    double t0 = mono();
    int rc = j->count ? ease_rows(j) : REC_EINVAL;
    if (!rc && j->n) {
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
