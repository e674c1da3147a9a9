/* space.c - vector matrices in RAM. */
#include "space.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "err.h"

int rec_space_name_ok(const char *name) {
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > REC_SPACE_NAME_MAX)
        return REC_EINVAL;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
            return REC_EINVAL;
    }
    return 0;
}

int rec_space_new(rec_space **out, const char *name, uint16_t id,
                  uint32_t dim) {
    *out = NULL;
    if (rec_space_name_ok(name))
        return REC_EINVAL;
    if (dim < 1 || dim > REC_DIM_MAX)
        return REC_ERANGE;
    rec_space *s = calloc(1, sizeof *s);
    if (!s)
        return REC_ENOMEM;
    strcpy(s->name, name);
    s->id = id;
    s->dim = dim;
    s->stride = (dim + 15) & ~15u;
    s->ann_min_rows = REC_ANN_MIN_ROWS;
    s->copy_step = REC_COPY_STEP_ROWS;
    s->ann_probe = REC_IVF_PROBE;
    *out = s;
    return 0;
}

/* Rows live in their own anonymous mapping, grown with mremap: the
 * kernel moves pages instead of copying them, growth never needs the old
 * and new matrices side by side, and new pages arrive zeroed. */
static size_t page_round(size_t n) {
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    return (n + pg - 1) / pg * pg;
}

/* Grow the mapping *p of *len bytes (none when NULL) to hold `bytes`. */
static int map_grow(void **p, size_t *len, size_t bytes) {
    bytes = page_round(bytes);
    void *q = *p ? mremap(*p, *len, bytes, MREMAP_MAYMOVE)
                 : mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (q == MAP_FAILED)
        return REC_ENOMEM;
    *p = q;
    *len = bytes;
    return 0;
}

static void shadow_drop(rec_matrix *m, int state) {
    if (m->rows16)
        munmap(m->rows16, m->rows16_bytes);
    if (m->rows16_meta)
        munmap(m->rows16_meta, m->rows16_meta_bytes);
    m->rows16 = NULL;
    m->rows16_meta = NULL;
    m->rows16_bytes = m->rows16_meta_bytes = 0;
    m->rows16_state = state;
}

/* Grow the shadow with the rows (or make it: from nothing). */
static int shadow_grow(rec_matrix *m, size_t stride, size_t cap) {
    void *r = m->rows16, *mt = m->rows16_meta;
    int rc = map_grow(&r, &m->rows16_bytes, cap * stride * sizeof(uint16_t));
    m->rows16 = r;
    if (!rc)
        rc = map_grow(&mt, &m->rows16_meta_bytes, cap * 2 * sizeof(float));
    m->rows16_meta = mt;
    return rc;
}

/* Keep the bf16 copy of row idx in step with the row (when kept, or
 * already copied by a build under way). */
static void shadow_row(const rec_space *s, rec_matrix *m, uint32_t idx) {
    if (m->rows16_state != 1 && !(m->rows16_state == 2 && idx < m->rows16_built))
        return;
    size_t off = (size_t)idx * s->stride;
    if (!rec_vec_bf16_row(m->rows + off, s->dim, m->rows16 + off,
                          m->rows16_meta + 2 * (size_t)idx))
        shadow_drop(m, -1);
}

/* Matrices with fewer rows are scanned in float: they fit in cache, and
 * the copy would cost memory for little. */
#define SHADOW_MIN_ROWS 16384

/* Make the bf16 copy of the rows, s->copy_step more at each call
 * (state 2 while under way, the scans staying in float); kept in step as
 * rows change (shadow_row), and used once every row is copied (state 1).
 * A row that does not fit bf16 refuses the shadow for good; no memory
 * leaves it for a later try. */
static void shadow_build(const rec_space *s, rec_matrix *m) {
    if (m->rows16_state == 0) {
        if (shadow_grow(m, s->stride, m->cap)) {
            shadow_drop(m, 0);
            return;
        }
        m->rows16_state = 2;
        m->rows16_built = 0;
    }
    uint32_t end = m->nrows - m->rows16_built > s->copy_step
                       ? m->rows16_built + s->copy_step : m->nrows;
    while (m->rows16_built < end && m->rows16_state == 2) {
        uint32_t r = m->rows16_built++; /* counted first: shadow_row copies it */
        shadow_row(s, m, r);
    }
    if (m->rows16_state == 2 && m->rows16_built >= m->nrows)
        m->rows16_state = 1;
}

static void matrix_free(rec_matrix *m) {
    rec_ivf_free(m->ivf);
    shadow_drop(m, 0);
    if (m->rows)
        munmap(m->rows, m->rows_bytes);
    free(m->inv_norms);
    free(m->present);
    free(m->dirty);
    free(m->dirty_list);
    free(m->learned);
    free(m->learned_list);
}

void rec_space_free(rec_space *s) {
    if (!s)
        return;
    matrix_free(&s->m[0]);
    matrix_free(&s->m[1]);
    free(s);
}

static void *grow_zeroed(void *p, size_t old_bytes, size_t new_bytes) {
    char *q = realloc(p, new_bytes);
    if (q)
        memset(q + old_bytes, 0, new_bytes - old_bytes);
    return q;
}

/* Grow to hold row idx. Rows may move: callers holding row pointers must
 * fetch them again after any set. The side arrays grow first; when one
 * fails, those already grown are merely larger than cap says. */
static int matrix_reserve(rec_matrix *m, uint32_t stride, uint32_t idx) {
    if (idx < m->cap)
        return 0;
    if (idx == UINT32_MAX)
        return REC_ERANGE;
    uint64_t cap = m->cap ? m->cap : 64;
    while (cap <= idx)
        cap *= 2;
    if (cap > UINT32_MAX)
        cap = UINT32_MAX;
    size_t ow = ((size_t)m->cap + 63) / 64, nw = ((size_t)cap + 63) / 64;
    float *inv = grow_zeroed(m->inv_norms, m->cap * sizeof(float),
                             (size_t)cap * sizeof(float));
    if (!inv)
        return REC_ENOMEM;
    m->inv_norms = inv;
    uint64_t *pr = grow_zeroed(m->present, ow * 8, nw * 8);
    if (!pr)
        return REC_ENOMEM;
    m->present = pr;
    uint64_t *dt = grow_zeroed(m->dirty, ow * 8, nw * 8);
    if (!dt)
        return REC_ENOMEM;
    m->dirty = dt;
    uint32_t *dl = realloc(m->dirty_list, (size_t)cap * sizeof *dl);
    if (!dl)
        return REC_ENOMEM;
    m->dirty_list = dl;
    uint64_t *ld = grow_zeroed(m->learned, ow * 8, nw * 8);
    if (!ld)
        return REC_ENOMEM;
    m->learned = ld;
    uint32_t *ll = realloc(m->learned_list, (size_t)cap * sizeof *ll);
    if (!ll)
        return REC_ENOMEM;
    m->learned_list = ll;
    void *rows = m->rows;
    if (map_grow(&rows, &m->rows_bytes, (size_t)cap * stride * sizeof(float)))
        return REC_ENOMEM;
    m->rows = rows;
    if (m->rows16 && shadow_grow(m, stride, cap))
        shadow_drop(m, 0); /* made again at the next scan */
    m->cap = (uint32_t)cap;
    return 0;
}

static void mark_dirty(rec_matrix *m, uint32_t idx) {
    uint64_t bit = 1ull << (idx & 63);
    if (!(m->dirty[idx >> 6] & bit)) {
        m->dirty[idx >> 6] |= bit;
        m->dirty_list[m->ndirty++] = idx;
    }
}

static void mark_learned(rec_matrix *m, uint32_t idx) {
    uint64_t bit = 1ull << (idx & 63);
    if (!(m->learned[idx >> 6] & bit)) {
        m->learned[idx >> 6] |= bit;
        m->learned_list[m->nlearned++] = idx;
    }
}

/* What the index reads of matrix m. */
static rec_ivf_rows ivf_view(const rec_space *s, const rec_matrix *m) {
    return (rec_ivf_rows){.rows = m->rows, .stride = s->stride, .dim = s->dim,
                          .nrows = m->nrows, .count = m->count,
                          .inv_norms = m->inv_norms, .present = m->present,
                          .copy_step = s->copy_step};
}

static void update_norm(rec_space *s, rec_matrix *m, uint32_t idx) {
    float n2 = rec_vec_norm2(m->rows + (size_t)idx * s->stride, s->dim);
    m->inv_norms[idx] = n2 > 0.0f ? 1.0f / sqrtf(n2) : 0.0f;
}

int rec_space_set(rec_space *s, rec_kind k, uint32_t idx, const float *v,
                  int mark) {
    if (!rec_vec_all_finite(v, s->dim))
        return REC_ENONFINITE;
    rec_matrix *m = &s->m[k];
    int rc = matrix_reserve(m, s->stride, idx);
    if (rc)
        return rc;
    memcpy(m->rows + (size_t)idx * s->stride, v, s->dim * sizeof(float));
    if (!(m->present[idx >> 6] >> (idx & 63) & 1)) {
        m->present[idx >> 6] |= 1ull << (idx & 63);
        m->count++;
    }
    if (idx >= m->nrows)
        m->nrows = idx + 1;
    update_norm(s, m, idx);
    shadow_row(s, m, idx);
    if (m->ivf) {
        rec_ivf_rows view = ivf_view(s, m);
        (void)rec_ivf_row_set(m->ivf, &view, idx); /* on failure: exact scans */
    }
    if (mark == REC_SET_DIRTY)
        mark_dirty(m, idx);
    else if (mark == REC_SET_LEARNED)
        mark_learned(m, idx);
    return 0;
}

const float *rec_space_get(const rec_space *s, rec_kind k, uint32_t idx) {
    if (!rec_space_has(s, k, idx))
        return NULL;
    return s->m[k].rows + (size_t)idx * s->stride;
}

float *rec_space_row(rec_space *s, rec_kind k, uint32_t idx) {
    if (!rec_space_has(s, k, idx))
        return NULL;
    return s->m[k].rows + (size_t)idx * s->stride;
}

void rec_space_touch(rec_space *s, rec_kind k, uint32_t idx) {
    if (!rec_space_has(s, k, idx))
        return;
    s->online = 1;
    update_norm(s, &s->m[k], idx);
    shadow_row(s, &s->m[k], idx);
    if (s->m[k].ivf) {
        rec_ivf_rows view = ivf_view(s, &s->m[k]);
        rec_ivf_row_touch(s->m[k].ivf, &view, idx);
    }
    mark_learned(&s->m[k], idx);
}

void rec_space_remove(rec_space *s, rec_kind k, uint32_t idx) {
    rec_matrix *m = &s->m[k];
    if (!rec_space_has(s, k, idx))
        return;
    m->present[idx >> 6] &= ~(1ull << (idx & 63));
    memset(m->rows + (size_t)idx * s->stride, 0, s->stride * sizeof(float));
    if (m->rows16) {
        memset(m->rows16 + (size_t)idx * s->stride, 0, s->stride * sizeof(uint16_t));
        m->rows16_meta[2 * (size_t)idx] = m->rows16_meta[2 * (size_t)idx + 1] = 0.0f;
    }
    m->inv_norms[idx] = 0.0f;
    m->count--;
    if (m->ivf)
        rec_ivf_row_remove(m->ivf, idx);
    mark_dirty(m, idx);
    while (m->nrows > 0 && !rec_space_has(s, k, m->nrows - 1))
        m->nrows--;
}

/* Few rows present among many indexes (a learned space holds only the
 * items that saw events): visit the present rows one by one instead of
 * scanning blocks that are mostly holes. O(nrows/64 + count * dim). */
static int sparse_topk(const rec_space *s, const rec_matrix *m, const float *q,
                       int cosine, const uint64_t *exclude, size_t exclude_words,
                       size_t topk, rec_hit *out) {
    float qn = 1.0f;
    if (cosine) {
        float n2 = rec_vec_norm2(q, s->dim);
        qn = n2 > 0.0f ? 1.0f / sqrtf(n2) : 0.0f;
    }
    rec_topk t;
    rec_topk_init(&t, out, topk);
    size_t words = ((size_t)m->nrows + 63) / 64;
    for (size_t w = 0; w < words; w++) {
        uint64_t bits = m->present[w];
        if (exclude && w < exclude_words)
            bits &= ~exclude[w];
        while (bits) {
            uint32_t r = (uint32_t)(w * 64 + (size_t)__builtin_ctzll(bits));
            bits &= bits - 1;
            float sc = rec_vec_dot(m->rows + (size_t)r * s->stride, q, s->dim);
            if (cosine)
                sc *= m->inv_norms[r] * qn;
            if (sc == sc) /* NaN never ranks */
                rec_topk_push(&t, r, sc);
        }
    }
    return (int)rec_topk_finish(&t);
}

/* Train indexes on the caller's thread (see rec_space_ann_sync). */
static int ann_sync;

void rec_space_ann_sync(int on) {
    ann_sync = on;
}

static int ann_make(const rec_space *s, rec_matrix *m) {
    if (m->ivf)
        return 0;
    return rec_ivf_new(&m->ivf, 0x1f0f0000u + s->id);
}

/* The index's answer, or REC_EBUSY when there is none yet (after making
 * the index or starting its training: the index is a cache of the rows,
 * made here at the first large cosine scan, hence the cast). */
static int ann_topk(const rec_space *s, rec_matrix *m, const float *q,
                    const uint64_t *exclude, size_t exclude_words,
                    size_t topk, uint32_t probe, rec_hit *out) {
    int rc = ann_make(s, m);
    rec_ivf_rows v = ivf_view(s, m);
    if (!rc)
        rc = rec_ivf_maintain(m->ivf, &v, ann_sync);
    if (rc || !rec_ivf_useful(m->ivf))
        return REC_EBUSY; /* not yet, not worth it, or no memory: exact */
    return rec_ivf_topk(m->ivf, &v, q, exclude, exclude_words,
                        probe ? probe : s->ann_probe, topk, out);
}

int rec_space_ann_build(rec_space *s, rec_kind k) {
    rec_matrix *m = &s->m[k];
    if (!m->count)
        return REC_EINVAL;
    int rc = ann_make(s, m);
    rec_ivf_rows v = ivf_view(s, m);
    if (rc)
        return rc;
    /* Install one under way, then train afresh unless it is current. */
    if ((rc = rec_ivf_maintain(m->ivf, &v, 1)))
        return rc;
    rec_ivf_stats st;
    rec_ivf_stats_get(m->ivf, &st);
    if (st.changed || st.drift || st.trained_on != m->count) {
        rec_ivf_free(m->ivf);
        m->ivf = NULL;
        if ((rc = ann_make(s, m)))
            return rc;
        rc = rec_ivf_maintain(m->ivf, &v, 1);
    }
    return rc;
}

void rec_space_ann_stats(const rec_space *s, rec_kind k, rec_ivf_stats *st) {
    memset(st, 0, sizeof *st);
    if (s->m[k].ivf)
        rec_ivf_stats_get(s->m[k].ivf, st);
}

int rec_space_topk(const rec_space *s, rec_kind k, const float *q,
                   int cosine, const uint64_t *exclude, size_t exclude_words,
                   size_t topk, rec_hit *out) {
    return rec_space_topk_how(s, k, q, cosine, exclude, exclude_words, topk,
                              NULL, out);
}

int rec_space_topk_how(const rec_space *s, rec_kind k, const float *q,
                       int cosine, const uint64_t *exclude,
                       size_t exclude_words, size_t topk,
                       const rec_topk_how *how, rec_hit *out) {
    const rec_matrix *m = &s->m[k];
    if (m->nrows == 0 || topk == 0)
        return 0;
    if (cosine && k == REC_KIND_ITEM && (!how || !how->exact) &&
        m->count >= s->ann_min_rows) {
        int n = ann_topk(s, (rec_matrix *)m, q, exclude, exclude_words, topk,
                         how ? how->probe : 0, out);
        if (n != REC_EBUSY)
            return n;
    }
    if ((uint64_t)m->count * 4 < m->nrows)
        return sparse_topk(s, m, q, cosine, exclude, exclude_words, topk, out);
    /* The skip map is absent rows OR excluded rows: O(nrows/64) words,
     * small next to the O(nrows*dim) scan. */
    size_t words = ((size_t)m->nrows + 63) / 64;
    uint64_t *skip = malloc(words * sizeof *skip);
    if (!skip)
        return REC_ENOMEM;
    for (size_t w = 0; w < words; w++) {
        uint64_t x = ~m->present[w];
        if (exclude && w < exclude_words)
            x |= exclude[w];
        skip[w] = x;
    }
    rec_scan sc = {
        .rows = m->rows,
        .stride = s->stride,
        .nrows = m->nrows,
        .d = s->dim,
        .inv_norms = cosine ? m->inv_norms : NULL,
        .skip = skip,
    };
    /* Large matrices are scanned through their bf16 copy, with the same
     * answer (see rec_vec_topk_bf16). The copy is a cache of the rows,
     * made here a step at each scan from the first: hence the cast. */
    rec_matrix *mm = (rec_matrix *)m;
    if (m->nrows >= SHADOW_MIN_ROWS && (m->rows16_state == 0 || m->rows16_state == 2) &&
        rec_vec_bf16_scan_ok())
        shadow_build(s, mm);
    size_t n = m->rows16_state == 1
                   ? rec_vec_topk_bf16(&sc, m->rows16, m->rows16_meta, q, topk, out)
                   : rec_vec_topk(&sc, q, topk, out);
    free(skip);
    return (int)n;
}

void rec_space_clean(rec_space *s, rec_kind k) {
    rec_matrix *m = &s->m[k];
    for (uint32_t i = 0; i < m->ndirty; i++) {
        uint32_t r = m->dirty_list[i];
        m->dirty[r >> 6] &= ~(1ull << (r & 63));
    }
    m->ndirty = 0;
}

void rec_space_clean_learned(rec_space *s, rec_kind k) {
    rec_matrix *m = &s->m[k];
    for (uint32_t i = 0; i < m->nlearned; i++) {
        uint32_t r = m->learned_list[i];
        m->learned[r >> 6] &= ~(1ull << (r & 63));
    }
    m->nlearned = 0;
}
