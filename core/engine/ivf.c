/* ivf.c - inverted-file index for approximate cosine top-k (ivf.h). */
#include "ivf.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "prefetch.h"
#include "rng.h"

#define NONE UINT32_MAX
#define KMEANS_ITERS 10
#define SAMPLE_PER_LIST 64 /* k-means trains on at most this many rows a list */
#define CHECK_QUERIES 32   /* rows the self-check asks for their neighbours */
#define CHECK_K 30         /* neighbours it compares */
#define CHECK_RECALL 0.95  /* recall@CHECK_K it asks of a probe count */

/* A list keeps a copy of its rows side by side, so that a probe reads
 * them in one stream instead of gathering rows spread over the matrix. */
typedef struct ivf_list {
    uint32_t *ids; /* row numbers, in no order */
    float *vecs;   /* their rows, `stride` floats each, same order */
    float *inv;    /* their 1/|row| */
    uint32_t n, cap;
} ivf_list;

/* One training. Its input, a copy of the present rows with their
 * 1/|row|, is taken on the owner's thread a step at a time (rows below
 * `upto` when the training began, `cursor` the next to look at); then a
 * thread of its own makes the centroids and the lists, so that installing
 * them swaps pointers and places again only the rows changed meanwhile.
 * Owned by the index; the thread reads and writes nothing else. */
typedef struct job {
    pthread_t th;
    int threaded;      /* th was started and must be joined */
    atomic_int done;   /* set by the thread as its last write */
    atomic_int stop;   /* asks the thread to give up */
    float *rows;       /* n rows of dim floats, copied (freed by the
                          thread once the lists hold them) */
    float *inv;        /* their 1/|row| */
    uint32_t *ids;     /* their row numbers */
    uint32_t n, cap, dim, nlist;
    uint32_t cursor, upto;
    uint64_t seed;
    float *cent;       /* out: nlist unit centroids of dim floats */
    uint32_t *assign;  /* out: list of rows[i] */
    ivf_list *lists;   /* out: nlist lists of the copied rows */
    uint32_t *where, *pos; /* out: per row number below upto */
    size_t stride;     /* floats per row in the lists */
    uint32_t probe_need; /* out: lists to probe for CHECK_RECALL on the
                            self-check, 0 when more than an eighth */
    int rc;            /* out: 0 or REC_ENOMEM */
    int discard;       /* the owner could not track changes: drop the
                          result (the owner's field, never the thread's) */
} job;

/* Rows copied per rec_ivf_maintain while a training's copy is taken,
 * unless the view says: a few milliseconds of the caller's, however many
 * rows there are. */
#define COPY_STEP_ROWS 65536

struct rec_ivf {
    uint64_t seed;
    uint32_t dim, nlist;
    size_t stride;      /* floats per row copy in a list */
    float *cent;        /* nlist unit centroids of dim floats */
    ivf_list *lists;    /* nlist */
    uint32_t *where;    /* per row: its list, NONE when in none */
    uint32_t *pos;      /* per row: its position in that list */
    uint32_t cap;       /* rows where and pos hold */
    float *scores;      /* nlist, centroid scores of a query */
    float *buf;         /* scores of a list's rows, bufcap long */
    uint32_t bufcap;
    rec_hit *order;     /* nlist, probe order of a query */
    int ready;          /* a training is installed and every present row
                           is in a list */
    uint32_t probe_need; /* from the installed training (see job) */
    uint32_t indexed, trained_on, trainings, changed;
    uint64_t drift;
    job *job;           /* training under way, or NULL */
    uint64_t *chg;      /* while a job runs: rows set or removed since its
                           copy, to place again when it is installed */
    uint32_t *chg_list;
    uint32_t nchg, chg_cap;
};

int rec_ivf_new(rec_ivf **out, uint64_t seed) {
    *out = calloc(1, sizeof **out);
    if (!*out)
        return REC_ENOMEM;
    (*out)->seed = seed;
    return 0;
}

static void lists_free(ivf_list *l, uint32_t n) {
    for (uint32_t i = 0; l && i < n; i++) {
        free(l[i].ids);
        free(l[i].vecs);
        free(l[i].inv);
    }
    free(l);
}

static void job_free(job *j) {
    if (!j)
        return;
    if (j->threaded) {
        atomic_store(&j->stop, 1);
        pthread_join(j->th, NULL);
    }
    free(j->rows);
    free(j->inv);
    free(j->ids);
    free(j->cent);
    free(j->assign);
    lists_free(j->lists, j->nlist);
    free(j->where);
    free(j->pos);
    free(j);
}

void rec_ivf_free(rec_ivf *ix) {
    if (!ix)
        return;
    job_free(ix->job);
    lists_free(ix->lists, ix->nlist);
    free(ix->cent);
    free(ix->where);
    free(ix->pos);
    free(ix->scores);
    free(ix->buf);
    free(ix->order);
    free(ix->chg);
    free(ix->chg_list);
    free(ix);
}

/* ---- training (on the job's thread) ---------------------------------- */

/* The centroid nearest to v's direction (largest dot: the same for v and
 * v / |v|; 0 for a zero row): its index. */
static uint32_t nearest(const float *cent, uint32_t nlist, uint32_t dim,
                        const float *v, float *sc) {
    rec_vec_dot_rows(cent, dim, nlist, v, dim, sc);
    uint32_t best = 0;
    for (uint32_t c = 1; c < nlist; c++)
        if (sc[c] > sc[best])
            best = c;
    return best;
}

static size_t overlap(const rec_hit *a, size_t na, const rec_hit *b,
                      size_t nb) {
    size_t same = 0;
    for (size_t i = 0; i < na; i++)
        for (size_t k = 0; k < nb; k++)
            if (a[i].idx == b[k].idx) {
                same++;
                break;
            }
    return same;
}

/* How many lists must a query probe? CHECK_QUERIES random copied rows ask
 * for their CHECK_K nearest: exactly, over every row, and through 1, 2, 4,
 * ... lists, best centroid first; probe_need is the first count whose
 * mean recall reaches CHECK_RECALL, or 0 when that takes more than an
 * eighth of the lists (or 4, in small indexes): rows without clusters to
 * find, where probing enough lists costs about what the exact scan does,
 * so scans stay exact. A row's dot with the query times its 1/|row|
 * ranks as the cosine does. 0 or REC_ENOMEM. */
static int self_check(job *j, rec_rng *r) {
    uint32_t n = j->n, d = j->dim, nl = j->nlist;
    uint32_t nq = n < CHECK_QUERIES ? n : CHECK_QUERIES;
    size_t k = n < CHECK_K ? n : CHECK_K;
    uint32_t cap = nl / 8 > 4 ? nl / 8 : (nl < 4 ? nl : 4), steps = 1;
    while ((2u << (steps - 1)) <= cap)
        steps++; /* probe counts 1, 2, 4, ..., at most cap */
    uint32_t *off = calloc((size_t)nl + 1, sizeof *off);
    uint32_t *members = malloc((size_t)n * sizeof *members);
    float *sc = malloc((size_t)(n > nl ? n : nl) * sizeof *sc);
    rec_hit *order = malloc((size_t)nl * sizeof *order);
    rec_hit *ex = malloc(k * sizeof *ex), *heap = malloc(k * sizeof *heap);
    rec_hit *tmp = malloc(k * sizeof *tmp);
    double *hit = calloc(steps, sizeof *hit);
    int rc = off && members && sc && order && ex && heap && tmp && hit ? 0 : REC_ENOMEM;
    if (!rc) {
        for (uint32_t i = 0; i < n; i++)
            off[j->assign[i] + 1]++;
        for (uint32_t c = 0; c < nl; c++)
            off[c + 1] += off[c];
        for (uint32_t i = 0; i < n; i++) /* off[c]: next free of list c */
            members[off[j->assign[i]]++] = i;
        for (uint32_t c = nl; c > 0; c--) /* back to the starts */
            off[c] = off[c - 1];
        off[0] = 0;
    }
    for (uint32_t qi = 0; !rc && qi < nq && !atomic_load(&j->stop); qi++) {
        const float *q = j->rows + (size_t)rec_rng_below(r, n) * d;
        rec_topk t;
        rec_topk_init(&t, ex, k);
        rec_vec_dot_rows(j->rows, d, n, q, d, sc);
        for (uint32_t i = 0; i < n; i++)
            rec_topk_push(&t, i, sc[i] * j->inv[i]);
        size_t nex = rec_topk_finish(&t);
        rec_topk_init(&t, order, nl);
        rec_vec_dot_rows(j->cent, d, nl, q, d, sc);
        for (uint32_t c = 0; c < nl; c++)
            rec_topk_push(&t, c, sc[c]);
        rec_topk_finish(&t);
        rec_topk a;
        rec_topk_init(&a, heap, k);
        uint32_t probed = 0;
        for (uint32_t s = 0; s < steps; s++) {
            uint32_t upto = 1u << s;
            for (; probed < upto && probed < nl; probed++) {
                uint32_t c = order[probed].idx;
                for (uint32_t m = off[c]; m < off[c + 1]; m++) {
                    uint32_t i = members[m];
                    rec_topk_push(&a, i, rec_vec_dot(j->rows + (size_t)i * d, q, d) * j->inv[i]);
                }
            }
            memcpy(tmp, heap, a.n * sizeof *tmp);
            hit[s] += nex ? (double)overlap(tmp, a.n, ex, nex) / (double)nex : 1.0;
        }
    }
    j->probe_need = 0;
    for (uint32_t s = 0; !rc && s < steps; s++)
        if (hit[s] >= CHECK_RECALL * nq) {
            uint32_t p = 1u << s;
            j->probe_need = p > nl ? nl : p;
            break;
        }
    free(off);
    free(members);
    free(sc);
    free(order);
    free(ex);
    free(heap);
    free(tmp);
    free(hit);
    return rc;
}

/* Spherical k-means on a sample of the copied rows, then every copied row
 * to its nearest centroid. */
static int list_grow(ivf_list *l, uint32_t cap, size_t stride);

/* The lists of the copied rows by their assignment, and each row's place
 * (where, pos over row numbers below upto); the copy is freed. */
static int build_lists(job *j) {
    uint32_t nl = j->nlist, d = j->dim;
    uint32_t *cnt = calloc(nl, sizeof *cnt);
    j->lists = calloc(nl, sizeof *j->lists);
    j->where = malloc((size_t)(j->upto ? j->upto : 1) * sizeof *j->where);
    j->pos = malloc((size_t)(j->upto ? j->upto : 1) * sizeof *j->pos);
    int rc = cnt && j->lists && j->where && j->pos ? 0 : REC_ENOMEM;
    for (uint32_t i = 0; !rc && i < j->n; i++)
        cnt[j->assign[i]]++;
    for (uint32_t c = 0; !rc && c < nl; c++)
        rc = list_grow(&j->lists[c], cnt[c] + cnt[c] / 8 + 4, j->stride);
    free(cnt);
    if (rc)
        return rc;
    for (uint32_t r = 0; r < j->upto; r++)
        j->where[r] = NONE;
    for (uint32_t i = 0; i < j->n; i++) {
        uint32_t c = j->assign[i], r = j->ids[i];
        ivf_list *l = &j->lists[c];
        memcpy(l->vecs + (size_t)l->n * j->stride, j->rows + (size_t)i * d, d * sizeof(float));
        l->inv[l->n] = j->inv[i];
        l->ids[l->n] = r;
        j->where[r] = c;
        j->pos[r] = l->n++;
    }
    free(j->rows);
    j->rows = NULL;
    return 0;
}

/* Spherical k-means on a sample of the copied rows' directions, every
 * copied row to its nearest centroid, the self-check, the lists. */
static void job_run(job *j) {
    uint32_t n = j->n, d = j->dim, nl = j->nlist;
    uint32_t ns = n < nl * SAMPLE_PER_LIST ? n : nl * SAMPLE_PER_LIST;
    uint32_t *perm = malloc((size_t)(n ? n : 1) * sizeof *perm);
    float *sums = malloc((size_t)nl * d * sizeof *sums);
    uint32_t *cnt = malloc((size_t)nl * sizeof *cnt);
    float *sc = malloc((size_t)nl * sizeof *sc);
    j->cent = malloc((size_t)nl * d * sizeof *j->cent);
    j->assign = malloc((size_t)(n ? n : 1) * sizeof *j->assign);
    if (!perm || !sums || !cnt || !sc || !j->cent || !j->assign) {
        j->rc = REC_ENOMEM;
        goto out;
    }
    for (uint32_t i = 0; i < n; i++)
        perm[i] = i;
    rec_rng r;
    rec_rng_seed(&r, j->seed);
    for (uint32_t i = 0; i < ns; i++) { /* the sample: perm[0..ns) */
        uint32_t k = i + rec_rng_below(&r, n - i), t = perm[i];
        perm[i] = perm[k];
        perm[k] = t;
    }
    for (uint32_t c = 0; c < nl; c++) { /* unit rows of the sample start them */
        float *ce = j->cent + (size_t)c * d;
        memcpy(ce, j->rows + (size_t)perm[c] * d, d * sizeof(float));
        rec_vec_scale(j->inv[perm[c]], ce, d);
    }
    for (int it = 0; it < KMEANS_ITERS && !atomic_load(&j->stop); it++) {
        memset(sums, 0, (size_t)nl * d * sizeof *sums);
        memset(cnt, 0, (size_t)nl * sizeof *cnt);
        for (uint32_t i = 0; i < ns; i++) {
            uint32_t p = perm[i];
            const float *v = j->rows + (size_t)p * d;
            uint32_t c = nearest(j->cent, nl, d, v, sc);
            rec_vec_axpy(j->inv[p], v, sums + (size_t)c * d, d); /* its direction */
            cnt[c]++;
        }
        for (uint32_t c = 0; c < nl; c++) {
            float *ce = j->cent + (size_t)c * d;
            float n2 = cnt[c] ? rec_vec_norm2(sums + (size_t)c * d, d) : 0.0f;
            if (n2 > 0.0f) {
                memcpy(ce, sums + (size_t)c * d, d * sizeof(float));
                rec_vec_scale(1.0f / sqrtf(n2), ce, d);
            } else { /* empty: a random sample row starts it again */
                uint32_t p = perm[rec_rng_below(&r, ns)];
                memcpy(ce, j->rows + (size_t)p * d, d * sizeof(float));
                rec_vec_scale(j->inv[p], ce, d);
            }
        }
    }
    for (uint32_t i = 0; i < n; i++)
        j->assign[i] = nearest(j->cent, nl, d, j->rows + (size_t)i * d, sc);
    if (!atomic_load(&j->stop))
        j->rc = self_check(j, &r);
    if (!j->rc && !atomic_load(&j->stop))
        j->rc = build_lists(j);
out:
    free(perm);
    free(sums);
    free(cnt);
    free(sc);
}

static void *job_main(void *arg) {
    job *j = arg;
    job_run(j);
    atomic_store(&j->done, 1);
    return NULL;
}

/* ---- lists ----------------------------------------------------------- */

static int reserve_rows(rec_ivf *ix, uint32_t idx) {
    if (idx < ix->cap)
        return 0;
    uint64_t cap = ix->cap ? ix->cap : 1024;
    while (cap <= idx)
        cap *= 2;
    uint32_t *w = realloc(ix->where, (size_t)cap * sizeof *w);
    if (!w)
        return REC_ENOMEM;
    ix->where = w;
    for (uint64_t i = ix->cap; i < cap; i++)
        w[i] = NONE;
    uint32_t *p = realloc(ix->pos, (size_t)cap * sizeof *p);
    if (!p)
        return REC_ENOMEM;
    ix->pos = p;
    ix->cap = (uint32_t)cap;
    return 0;
}

static void list_drop(rec_ivf *ix, uint32_t idx) {
    if (idx >= ix->cap || ix->where[idx] == NONE)
        return;
    ivf_list *l = &ix->lists[ix->where[idx]];
    uint32_t p = ix->pos[idx], q = --l->n, last = l->ids[q];
    if (p != q) {
        l->ids[p] = last;
        memcpy(l->vecs + p * ix->stride, l->vecs + q * ix->stride,
               ix->dim * sizeof(float));
        l->inv[p] = l->inv[q];
        ix->pos[last] = p;
    }
    ix->where[idx] = NONE;
    ix->indexed--;
}

static int list_grow(ivf_list *l, uint32_t cap, size_t stride) {
    uint32_t *ids = realloc(l->ids, (size_t)cap * sizeof *ids);
    if (ids)
        l->ids = ids;
    float *inv = ids ? realloc(l->inv, (size_t)cap * sizeof *inv) : NULL;
    if (inv)
        l->inv = inv;
    /* Rows on cache-line boundaries, as in the matrix: no load straddles
     * two lines. */
    size_t bytes = ((size_t)cap * stride * sizeof(float) + 63) & ~(size_t)63;
    float *vecs = inv ? aligned_alloc(64, bytes) : NULL;
    if (!vecs)
        return REC_ENOMEM;
    if (l->n)
        memcpy(vecs, l->vecs, (size_t)l->n * stride * sizeof(float));
    free(l->vecs);
    l->vecs = vecs;
    l->cap = cap;
    return 0;
}

/* Copy row idx of m into its slot of its list. */
static void list_copy(rec_ivf *ix, const rec_ivf_rows *m, uint32_t idx) {
    ivf_list *l = &ix->lists[ix->where[idx]];
    uint32_t p = ix->pos[idx];
    memcpy(l->vecs + p * ix->stride, m->rows + (size_t)idx * m->stride,
           ix->dim * sizeof(float));
    l->inv[p] = m->inv_norms[idx];
}

static int list_put(rec_ivf *ix, const rec_ivf_rows *m, uint32_t idx,
                    uint32_t c) {
    ivf_list *l = &ix->lists[c];
    if (l->n == l->cap && list_grow(l, l->cap ? l->cap * 2 : 16, ix->stride))
        return REC_ENOMEM;
    ix->pos[idx] = l->n;
    l->ids[l->n++] = idx;
    ix->where[idx] = c;
    ix->indexed++;
    list_copy(ix, m, idx);
    return 0;
}

static int is_present(const rec_ivf_rows *m, uint32_t idx) {
    return idx < m->nrows && (m->present[idx >> 6] >> (idx & 63) & 1);
}

/* Row idx (present) into its nearest list. */
static int place(rec_ivf *ix, const rec_ivf_rows *m, uint32_t idx) {
    int rc = reserve_rows(ix, idx);
    if (rc)
        return rc;
    list_drop(ix, idx);
    uint32_t c = nearest(ix->cent, ix->nlist, ix->dim,
                         m->rows + (size_t)idx * m->stride, ix->scores);
    return list_put(ix, m, idx, c);
}

static void note_change(rec_ivf *ix, uint32_t idx) {
    ix->changed++;
    if (!ix->job || !ix->chg)
        return;
    if (idx >= ix->chg_cap) { /* a row beyond the copy: grow the map */
        uint32_t cap = ix->chg_cap;
        while (cap <= idx)
            cap = cap ? cap * 2 : 1024;
        size_t ow = ((size_t)ix->chg_cap + 63) / 64, nw = ((size_t)cap + 63) / 64;
        uint64_t *b = realloc(ix->chg, nw * 8);
        uint32_t *l = b ? realloc(ix->chg_list, (size_t)cap * sizeof *l) : NULL;
        if (b)
            ix->chg = b;
        if (!l) { /* cannot track: the job's result is thrown away */
            atomic_store(&ix->job->stop, 1);
            ix->job->discard = 1;
            return;
        }
        memset(b + ow, 0, (nw - ow) * 8);
        ix->chg_list = l;
        ix->chg_cap = cap;
    }
    uint64_t bit = 1ull << (idx & 63);
    if (!(ix->chg[idx >> 6] & bit)) {
        ix->chg[idx >> 6] |= bit;
        ix->chg_list[ix->nchg++] = idx;
    }
}

int rec_ivf_row_set(rec_ivf *ix, const rec_ivf_rows *m, uint32_t idx) {
    note_change(ix, idx);
    if (!ix->ready)
        return 0;
    int rc = place(ix, m, idx);
    if (rc)
        ix->ready = 0; /* a row in no list: scan exactly until retrained */
    return rc;
}

void rec_ivf_row_touch(rec_ivf *ix, const rec_ivf_rows *m, uint32_t idx) {
    ix->drift++;
    if (ix->job) { /* the training's copy of it is stale now */
        uint32_t c = ix->changed;
        note_change(ix, idx);
        ix->changed = c;
    }
    if (idx < ix->cap && ix->where[idx] != NONE)
        list_copy(ix, m, idx);
}

void rec_ivf_row_remove(rec_ivf *ix, uint32_t idx) {
    note_change(ix, idx);
    list_drop(ix, idx);
}

/* ---- training: start and install ------------------------------------- */

/* The next step of the job's copy (all of it when `all`): rows changed
 * meanwhile are noted (note_change) and placed again at the install, so
 * a row copied before or after its change ends up right. Once copied, the
 * training starts on its thread, or here when `all` or no thread can be
 * had. */
static void job_copy(rec_ivf *ix, const rec_ivf_rows *m, int all) {
    job *j = ix->job;
    uint32_t upto = j->upto < m->nrows ? j->upto : m->nrows;
    uint32_t step = m->copy_step ? m->copy_step : COPY_STEP_ROWS;
    uint32_t end = all || upto - j->cursor <= step ? upto : j->cursor + step;
    uint32_t d = j->dim;
    for (uint32_t r = j->cursor; r < end && j->n < j->cap; r++)
        if (is_present(m, r)) {
            memcpy(j->rows + (size_t)j->n * d, m->rows + (size_t)r * m->stride,
                   d * sizeof(float));
            j->inv[j->n] = m->inv_norms[r];
            j->ids[j->n++] = r;
        }
    j->cursor = end;
    if (end < upto)
        return;
    j->cursor = j->upto; /* copied */
    uint32_t nl = (uint32_t)lround(sqrt((double)j->n));
    j->nlist = nl < 1 ? 1 : nl;
    if (!all && pthread_create(&j->th, NULL, job_main, j) == 0) {
        j->threaded = 1;
        return;
    }
    job_run(j); /* asked to wait, or no thread to be had */
    atomic_store(&j->done, 1);
}

static int copying(const rec_ivf *ix) {
    return ix->job && ix->job->cursor < ix->job->upto;
}

/* Start a training on the present rows: their copy begins here. */
static int job_start(rec_ivf *ix, const rec_ivf_rows *m, int wait) {
    job *j = calloc(1, sizeof *j);
    if (!j)
        return REC_ENOMEM;
    uint32_t n = m->count, d = m->dim;
    j->rows = malloc((size_t)(n ? n : 1) * d * sizeof(float));
    j->inv = malloc((size_t)(n ? n : 1) * sizeof(float));
    j->ids = malloc((size_t)(n ? n : 1) * sizeof(uint32_t));
    size_t words = ((size_t)m->nrows + 63) / 64;
    uint64_t *chg = calloc(words ? words : 1, 8);
    uint32_t *chg_list = malloc((size_t)(m->nrows ? m->nrows : 1) * sizeof *chg_list);
    if (!j->rows || !j->inv || !j->ids || !chg || !chg_list) {
        free(chg);
        free(chg_list);
        job_free(j);
        return REC_ENOMEM;
    }
    j->cap = n;
    j->dim = d;
    j->upto = m->nrows;
    j->stride = (d + 15) & ~(size_t)15;
    j->seed = ix->seed + ix->trainings;
    free(ix->chg);
    free(ix->chg_list);
    ix->chg = chg;
    ix->chg_list = chg_list;
    ix->nchg = 0;
    ix->chg_cap = m->nrows;
    ix->job = j;
    /* Counted from the start of the copy: what changes later may call for
     * the next. */
    ix->changed = 0;
    ix->drift = 0;
    job_copy(ix, m, wait);
    return 0;
}

/* The finished job's lists, then the rows changed since its copy began:
 * O(lists + changed rows) here, the rest was the job's. */
static int install(rec_ivf *ix, const rec_ivf_rows *m) {
    job *j = ix->job;
    uint32_t nl = j->nlist;
    float *scores = malloc((size_t)nl * sizeof *scores);
    rec_hit *order = malloc((size_t)nl * sizeof *order);
    if (!scores || !order) {
        free(scores);
        free(order);
        return REC_ENOMEM;
    }
    lists_free(ix->lists, ix->nlist);
    free(ix->cent);
    free(ix->scores);
    free(ix->order);
    free(ix->where);
    free(ix->pos);
    ix->lists = j->lists;
    ix->cent = j->cent;
    ix->where = j->where;
    ix->pos = j->pos;
    ix->cap = j->upto;
    j->lists = NULL;
    j->cent = NULL;
    j->where = j->pos = NULL;
    ix->scores = scores;
    ix->order = order;
    ix->nlist = nl;
    ix->dim = j->dim;
    ix->stride = j->stride;
    ix->indexed = j->n;
    ix->ready = 1;
    int rc = 0;
    for (uint32_t i = 0; i < ix->nchg && !rc; i++) {
        uint32_t r = ix->chg_list[i];
        if (is_present(m, r))
            rc = place(ix, m, r);
        else
            list_drop(ix, r);
    }
    if (rc)
        ix->ready = 0;
    ix->trained_on = j->n;
    ix->probe_need = j->probe_need;
    ix->trainings++;
    return rc;
}

static void job_end(rec_ivf *ix) {
    job_free(ix->job);
    ix->job = NULL;
    free(ix->chg);
    free(ix->chg_list);
    ix->chg = NULL;
    ix->chg_list = NULL;
    ix->nchg = ix->chg_cap = 0;
}

int rec_ivf_maintain(rec_ivf *ix, const rec_ivf_rows *m, int wait) {
    int rc = 0;
    if (copying(ix)) {
        job_copy(ix, m, wait);
        if (copying(ix))
            return 0;
    }
    if (ix->job && (wait || atomic_load(&ix->job->done))) {
        if (ix->job->threaded) {
            pthread_join(ix->job->th, NULL);
            ix->job->threaded = 0;
        }
        if (!ix->job->rc && !ix->job->discard && m->dim == ix->job->dim)
            rc = install(ix, m);
        job_end(ix);
        if (rc)
            return rc;
    }
    if (ix->job || !m->count)
        return 0;
    uint64_t t = ix->trained_on;
    int need = !ix->ready || m->count > 2 * t || 2 * (uint64_t)m->count < t ||
               2 * (uint64_t)ix->changed > t || ix->drift > t;
    if (!need)
        return 0;
    rc = job_start(ix, m, wait);
    if (!rc && wait) {
        rc = ix->job->rc;
        if (!rc && !ix->job->discard)
            rc = install(ix, m);
        job_end(ix);
    }
    return rc;
}

int rec_ivf_ready(const rec_ivf *ix) {
    return ix->ready;
}

int rec_ivf_useful(const rec_ivf *ix) {
    return ix->ready && ix->probe_need > 0;
}

void rec_ivf_stats_get(const rec_ivf *ix, rec_ivf_stats *st) {
    st->lists = ix->ready ? ix->nlist : 0;
    st->indexed = ix->indexed;
    st->trained_on = ix->trained_on;
    st->trainings = ix->trainings;
    st->probe_need = ix->ready ? ix->probe_need : 0;
    st->changed = ix->changed;
    st->drift = ix->drift;
    st->training = ix->job != NULL;
    st->copy_left = copying(ix) ? ix->job->upto - ix->job->cursor : 0;
}

/* ---- queries --------------------------------------------------------- */

static int skipped(const uint64_t *skip, size_t words, uint32_t i) {
    return skip && (size_t)(i >> 6) < words && (skip[i >> 6] >> (i & 63) & 1);
}

/* Score every row of list c (its copies, in one stream), then offer
 * those not skipped. 0 or REC_ENOMEM. */
static int probe_list(rec_ivf *ix, uint32_t c, const float *q,
                      const uint64_t *exclude, size_t words, rec_topk *t) {
    const ivf_list *l = &ix->lists[c];
    if (l->n > ix->bufcap) {
        float *b = realloc(ix->buf, (size_t)l->n * 2 * sizeof *b);
        if (!b)
            return REC_ENOMEM;
        ix->buf = b;
        ix->bufcap = l->n * 2;
    }
    rec_vec_dot_rows(l->vecs, ix->stride, l->n, q, ix->dim, ix->buf);
    /* Most rows do not beat the k-th best once the heap is full: test
     * that here, before the skip bits and the heap. Ties at the threshold
     * go to the heap, which orders them by index. */
    float thr = rec_topk_threshold(t);
    for (uint32_t j = 0; j < l->n; j++) {
        float s = ix->buf[j] * l->inv[j];
        if (!(s >= thr)) /* NaN never ranks */
            continue;
        uint32_t r = l->ids[j];
        if (skipped(exclude, words, r))
            continue;
        rec_topk_push(t, r, s);
        thr = rec_topk_threshold(t);
    }
    return 0;
}

int rec_ivf_topk(rec_ivf *ix, const rec_ivf_rows *m, const float *q,
                 const uint64_t *exclude, size_t exclude_words,
                 uint32_t probe, size_t k, rec_hit *out) {
    if (!ix->ready || m->dim != ix->dim)
        return REC_EBUSY;
    rec_topk t;
    rec_topk_init(&t, out, k);
    if (!k)
        return 0;
    float qn[REC_IVF_DIM_MAX];
    float n2 = rec_vec_norm2(q, m->dim);
    if (!(n2 > 0.0f) || m->dim > REC_IVF_DIM_MAX)
        return REC_EBUSY; /* zero or odd query: the exact scan answers */
    memcpy(qn, q, m->dim * sizeof(float));
    rec_vec_scale(1.0f / sqrtf(n2), qn, m->dim);
    uint32_t nl = ix->nlist;
    rec_vec_dot_rows(ix->cent, ix->dim, nl, qn, ix->dim, ix->scores);
    uint32_t want = probe ? probe : REC_IVF_PROBE;
    if (want < ix->probe_need)
        want = ix->probe_need;
    if (want > nl)
        want = nl;
    rec_topk ct;
    rec_topk_init(&ct, ix->order, want);
    for (uint32_t c = 0; c < nl; c++)
        rec_topk_push(&ct, c, ix->scores[c]);
    size_t nord = rec_topk_finish(&ct), c = 0;
    int rc = 0;
    for (; c < nord && !rc; c++)
        rc = probe_list(ix, ix->order[c].idx, qn, exclude, exclude_words, &t);
    if (t.n < k && nord < nl) {
        /* Filters left too few: the other lists, best first. The ranking
         * is total, so its first nord entries are those probed. */
        rec_topk_init(&ct, ix->order, nl);
        for (uint32_t i = 0; i < nl; i++)
            rec_topk_push(&ct, i, ix->scores[i]);
        nord = rec_topk_finish(&ct);
        for (; c < nord && t.n < k && !rc; c++)
            rc = probe_list(ix, ix->order[c].idx, qn, exclude, exclude_words, &t);
    }
    return rc ? rc : (int)rec_topk_finish(&t);
}
