/* ctr.c - the online click model (ctr.h).
 *
 * Logistic part, FTRL-Proximal (McMahan et al., "Ad Click Prediction: a
 * View from the Trenches", KDD 2013), per bucket i: the accumulated
 * adjusted gradient z_i and squared gradient n_i define the weight
 *     w_i = 0                                   if |z_i| <= l1
 *     w_i = -(z_i - sgn(z_i) l1) / ((beta + sqrt(n_i)) / alpha + l2)
 * which is kept beside z and n (scoring reads it without a square root). After an
 * example with gradient g_i = (p - y) x_i:
 *     s = (sqrt(n_i + g_i^2) - sqrt(n_i)) / alpha
 *     z_i += g_i - s w_i;  n_i += g_i^2
 *
 * Crosses, a factorization machine (Rendle, ICDM 2010): with k factors v_i
 *     logit += 1/2 sum_f [(sum_i v_if x_i)^2 - sum_i v_if^2 x_i^2]
 * trained by AdaGrad with L2 on the factors; their start is drawn from
 * the seed, so two models made with the same options are the same.
 */
#include "ctr.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "hash.h"
#include "rng.h"

/* Per bucket, two rows: what scoring reads, the weight w then the k
 * factors (one cache line for k <= 15), and what learning adds, FTRL's z
 * and n then the factors' k squared gradients. The bias is a bucket of its
 * own past the last. */
struct rec_ctr {
    rec_ctr_opts o;
    uint32_t mask;
    uint32_t ss, ls;    /* floats per score row and per learn row */
    float *sc;          /* (2^bits + 1) score rows */
    float *ln;          /* (2^bits + 1) learn rows */
    uint64_t *dirty;    /* bit per row: learned since rec_ctr_dirty_clear */
    rec_ctr_stats st;
    double loss_sum;
};

/* Rows of k + fixed floats: packed for logistic regression alone, else
 * rounded up to 16-float (64-byte) lines. */
static uint32_t row_floats(uint32_t k, uint32_t fixed) {
    return k ? (k + fixed + 15) / 16 * 16 : fixed;
}

static size_t rows(const rec_ctr_opts *o) { return ((size_t)1 << o->bits) + 1; }

void rec_ctr_opts_default(rec_ctr_opts *o) {
    memset(o, 0, sizeof *o);
    o->bits = 20;
    o->k = 0;
    o->alpha = 0.1f;
    o->beta = 1.0f;
    o->l1 = 0.5f;
    o->l2 = 1.0f;
    o->fm_lr = 0.05f;
    o->fm_reg = 1e-4f;
    o->fm_init = 0.01f;
    o->seed = 42;
}

static int opts_ok(const rec_ctr_opts *o) {
    return o->bits >= REC_CTR_BITS_MIN && o->bits <= REC_CTR_BITS_MAX &&
           o->k <= REC_CTR_MAX_K && o->alpha > 0 && o->beta >= 0 && o->l1 >= 0 &&
           o->l2 >= 0 && o->fm_lr > 0 && o->fm_reg >= 0 && o->fm_init >= 0 &&
           isfinite(o->alpha) && isfinite(o->beta) && isfinite(o->l1) && isfinite(o->l2) &&
           isfinite(o->fm_lr) && isfinite(o->fm_reg) && isfinite(o->fm_init);
}

static rec_ctr *alloc_model(const rec_ctr_opts *o) {
    rec_ctr *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->o = *o;
    m->mask = (uint32_t)(((size_t)1 << o->bits) - 1);
    m->ss = row_floats(o->k, 1);
    m->ls = row_floats(o->k, 2);
    size_t sb = rows(o) * m->ss * sizeof(float), lb = rows(o) * m->ls * sizeof(float);
    m->sc = aligned_alloc(64, (sb + 63) / 64 * 64);
    m->ln = aligned_alloc(64, (lb + 63) / 64 * 64);
    m->dirty = calloc((rows(o) + 63) / 64, sizeof *m->dirty);
    if (!m->sc || !m->ln || !m->dirty) {
        rec_ctr_free(m);
        return NULL;
    }
    memset(m->sc, 0, sb);
    memset(m->ln, 0, lb);
    return m;
}

/* Factor j of bucket b at its start: uniform in [-fm_init, fm_init], a
 * function of the seed, the bucket and j alone (a bucket can go back to
 * its start). */
static float start_value(const rec_ctr_opts *o, size_t b, uint32_t j) {
    uint64_t x = o->seed ^ ((uint64_t)b * REC_CTR_MAX_K + j) * 0x9E3779B97F4A7C15ull;
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    double u = (double)(x >> 11) * 0x1.0p-53;
    return (float)((u - 0.5) * 2.0 * (double)o->fm_init);
}

static void init_factors(rec_ctr *m) {
    const rec_ctr_opts *o = &m->o;
    for (size_t b = 0; o->k && b + 1 < rows(o); b++)
        for (uint32_t j = 0; j < o->k; j++)
            m->sc[b * m->ss + 1 + j] = start_value(o, b, j);
}

int rec_ctr_new(rec_ctr **out, const rec_ctr_opts *o) {
    *out = NULL;
    rec_ctr_opts d;
    if (!o) {
        rec_ctr_opts_default(&d);
        o = &d;
    }
    if (!opts_ok(o))
        return REC_EINVAL;
    rec_ctr *m = alloc_model(o);
    if (!m)
        return REC_ENOMEM;
    init_factors(m);
    *out = m;
    return 0;
}

void rec_ctr_free(rec_ctr *m) {
    if (!m)
        return;
    free(m->sc);
    free(m->ln);
    free(m->dirty);
    free(m);
}

const rec_ctr_opts *rec_ctr_options(const rec_ctr *m) { return &m->o; }

void rec_ctr_stats_get(const rec_ctr *m, rec_ctr_stats *out) {
    *out = m->st;
    out->logloss = m->st.examples ? m->loss_sum / (double)m->st.examples : 0.0;
}

uint32_t rec_ctr_index(const rec_ctr *m, const char *name, size_t nl, const char *value,
                       size_t vl) {
    uint64_t h = rec_hash_stable_add(REC_HASH_STABLE_INIT, name, nl);
    if (value) {
        h = rec_hash_stable_add(h, "\x1f", 1); /* name=value, not name+value */
        h = rec_hash_stable_add(h, value, vl);
    }
    h = rec_hash_stable_end(h);
    return (uint32_t)(h ^ (h >> 32)) & m->mask;
}

double rec_ctr_sigmoid(double logit) {
    if (logit >= 0)
        return 1.0 / (1.0 + exp(-logit));
    double e = exp(logit);
    return e / (1.0 + e);
}

static int feats_ok(const rec_ctr_feat *f, size_t n) {
    if (n > REC_CTR_MAX_FEATS)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(f[i].x))
            return 0;
    return 1;
}

/* The linear part and the factor sums of f: lin += sum w_i x_i, s[j] +=
 * sum_i v_ij x_i, q[j] += sum_i (v_ij x_i)^2. In float, per factor: a logit
 * needs no more, and the factor loop runs in vector registers. */
static void accumulate(const rec_ctr *m, const rec_ctr_feat *f, size_t n, float *lin,
                       float *restrict s, float *restrict q) {
    const uint32_t k = m->o.k, mask = m->mask;
    float l = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t b = f[i].idx & mask;
        float x = f[i].x;
        const float *restrict row = m->sc + (size_t)b * m->ss;
        l += row[0] * x;
        for (uint32_t j = 0; j < k; j++) {
            float t = row[1 + j] * x;
            s[j] += t;
            q[j] += t * t;
        }
    }
    *lin += l;
}

/* 1/2 sum_j (s_j^2 - q_j): the pairwise crosses. */
static float cross(const float *s, const float *q, uint32_t k) {
    float c = 0;
    for (uint32_t j = 0; j < k; j++)
        c += s[j] * s[j] - q[j];
    return 0.5f * c;
}

#define PREFETCH_AHEAD 4

static float bias_w(const rec_ctr *m) { return m->sc[((size_t)m->mask + 1) * m->ss]; }

/* Ask the cache for the rows of f's buckets. */
static void prefetch_rows(const rec_ctr *m, const rec_ctr_feat *f, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t b = f[i].idx & m->mask;
        __builtin_prefetch(m->sc + (size_t)b * m->ss);
    }
}

int rec_ctr_logit(const rec_ctr *m, const rec_ctr_feat *f, size_t n, double *logit) {
    if (!feats_ok(f, n))
        return REC_EINVAL;
    float s[REC_CTR_MAX_K] = {0}, q[REC_CTR_MAX_K] = {0};
    float lin = bias_w(m);
    accumulate(m, f, n, &lin, s, q);
    *logit = (double)(lin + cross(s, q, m->o.k));
    return 0;
}

int rec_ctr_score(const rec_ctr *m, const rec_ctr_feat *shared, size_t ns,
                  const rec_ctr_feat *cand, const uint32_t *off, size_t ncand,
                  double *out) {
    if (!feats_ok(shared, ns))
        return REC_EINVAL;
    for (size_t c = 0; c < ncand; c++)
        if (off[c + 1] < off[c] || !feats_ok(cand + off[c], off[c + 1] - off[c]) ||
            ns + (off[c + 1] - off[c]) > REC_CTR_MAX_FEATS)
            return REC_EINVAL;
    const uint32_t k = m->o.k;
    float s0[REC_CTR_MAX_K] = {0}, q0[REC_CTR_MAX_K] = {0};
    float lin0 = bias_w(m);
    accumulate(m, shared, ns, &lin0, s0, q0);
    for (size_t c = 0; c < ncand && c < PREFETCH_AHEAD; c++)
        prefetch_rows(m, cand + off[c], off[c + 1] - off[c]);
    for (size_t c = 0; c < ncand; c++) {
        if (c + PREFETCH_AHEAD < ncand) /* the rows a few candidates on */
            prefetch_rows(m, cand + off[c + PREFETCH_AHEAD],
                          off[c + PREFETCH_AHEAD + 1] - off[c + PREFETCH_AHEAD]);
        float s[REC_CTR_MAX_K], q[REC_CTR_MAX_K];
        memcpy(s, s0, k * sizeof *s);
        memcpy(q, q0, k * sizeof *q);
        float lin = lin0;
        accumulate(m, cand + off[c], off[c + 1] - off[c], &lin, s, q);
        out[c] = (double)(lin + cross(s, q, k));
    }
    return 0;
}

/* sum_i x_i^2 / (1 + l2 + n_i) over f. */
static double variance(const rec_ctr *m, const rec_ctr_feat *f, size_t n) {
    double v = 0, p = 1.0 + (double)m->o.l2;
    for (size_t i = 0; i < n; i++) {
        uint32_t b = f[i].idx & m->mask;
        double x = (double)f[i].x;
        v += x * x / (p + (double)m->ln[(size_t)b * m->ls + 1]);
    }
    return v;
}

int rec_ctr_score_sd(const rec_ctr *m, const rec_ctr_feat *shared, size_t ns,
                     const rec_ctr_feat *cand, const uint32_t *off, size_t ncand,
                     double *out) {
    if (!feats_ok(shared, ns))
        return REC_EINVAL;
    for (size_t c = 0; c < ncand; c++)
        if (off[c + 1] < off[c] || !feats_ok(cand + off[c], off[c + 1] - off[c]))
            return REC_EINVAL;
    size_t nb = (size_t)m->mask + 1;
    double v0 = variance(m, shared, ns) +
                1.0 / (1.0 + (double)m->o.l2 + (double)m->ln[nb * m->ls + 1]);
    for (size_t c = 0; c < ncand; c++)
        out[c] = sqrt(v0 + variance(m, cand + off[c], off[c + 1] - off[c]));
    return 0;
}

/* One FTRL step of bucket b (weight w, state z and n) with gradient g. */
static void ftrl_step(const rec_ctr_opts *o, float *w, float *zn, double g) {
    double alpha = (double)o->alpha, l1 = (double)o->l1;
    double nn = (double)zn[1], s = (sqrt(nn + g * g) - sqrt(nn)) / alpha;
    double zz = (double)zn[0] + g - s * (double)*w;
    nn += g * g;
    zn[0] = (float)zz;
    zn[1] = (float)nn;
    *w = fabs(zz) <= l1 ? 0.0f
                        : (float)(-(zz - copysign(l1, zz)) /
                                  (((double)o->beta + sqrt(nn)) / alpha + (double)o->l2));
}

int rec_ctr_learn(rec_ctr *m, const rec_ctr_feat *f, size_t n, double y, double *p) {
    if (!(y >= 0.0 && y <= 1.0) || !feats_ok(f, n))
        return REC_EINVAL;
    const uint32_t k = m->o.k, mask = m->mask;
    /* the buckets are spread over memory: ask for all of them at once */
    for (size_t i = 0; i < n; i++) {
        uint32_t b = f[i].idx & mask;
        __builtin_prefetch(m->sc + (size_t)b * m->ss, 1);
        __builtin_prefetch(m->ln + (size_t)b * m->ls, 1);
    }
    float s[REC_CTR_MAX_K] = {0}, q[REC_CTR_MAX_K] = {0};
    float lin = bias_w(m);
    accumulate(m, f, n, &lin, s, q);
    double pr = rec_ctr_sigmoid((double)(lin + cross(s, q, k)));
    if (p)
        *p = pr;
    double pc = pr < 1e-12 ? 1e-12 : pr > 1 - 1e-12 ? 1 - 1e-12 : pr;
    m->loss_sum += -(y * log(pc) + (1 - y) * log(1 - pc));
    m->st.examples++;
    m->st.positives += y > 0.5;
    double g = pr - y;
    size_t nb = (size_t)mask + 1;
    ftrl_step(&m->o, m->sc + nb * m->ss, m->ln + nb * m->ls, g);
    m->dirty[nb >> 6] |= 1ull << (nb & 63);
    for (size_t i = 0; i < n; i++) {
        uint32_t b = f[i].idx & mask;
        m->dirty[b >> 6] |= 1ull << (b & 63);
        double x = (double)f[i].x;
        float *row = m->sc + (size_t)b * m->ss, *lrow = m->ln + (size_t)b * m->ls;
        ftrl_step(&m->o, row, lrow, g * x);
        if (!k || x == 0.0)
            continue;
        /* d logit / d v_bj = x (s_j - v_bj x), with s from before the step;
         * in float, so the k factors update in vector registers */
        float *v = row + 1, *gg = lrow + 2;
        const float gx = (float)(g * x), xf = (float)x;
        const float reg = m->o.fm_reg, lr = m->o.fm_lr;
        for (uint32_t j = 0; j < k; j++) {
            float d = gx * (s[j] - v[j] * xf) + reg * v[j];
            gg[j] += d * d;
            v[j] -= lr * d / sqrtf(gg[j] + 1e-8f);
        }
    }
    return 0;
}

/* ---- bytes --------------------------------------------------------------- */

#define CTR_MAGIC "recdctr3"

typedef struct ctr_head {
    char magic[8];
    rec_ctr_opts o;
    uint64_t examples, positives;
    double loss_sum;
} ctr_head;

static size_t sc_bytes(const rec_ctr_opts *o) {
    return rows(o) * row_floats(o->k, 1) * sizeof(float);
}

static size_t ln_bytes(const rec_ctr_opts *o) {
    return rows(o) * row_floats(o->k, 2) * sizeof(float);
}

int64_t rec_ctr_dirty_next(const rec_ctr *m, uint64_t from) {
    size_t nr = rows(&m->o);
    while (from < nr) {
        uint64_t w = m->dirty[from >> 6] >> (from & 63);
        if (w)
            return (int64_t)(from + (uint64_t)__builtin_ctzll(w));
        from = (from | 63) + 1;
    }
    return -1;
}

void rec_ctr_dirty_clear(rec_ctr *m) {
    memset(m->dirty, 0, (rows(&m->o) + 63) / 64 * sizeof *m->dirty);
}

size_t rec_ctr_row_bytes(const rec_ctr *m) { return ((size_t)m->ss + m->ls) * sizeof(float); }

int rec_ctr_row_get(const rec_ctr *m, uint64_t bucket, void *out) {
    if (bucket >= rows(&m->o))
        return REC_ERANGE;
    memcpy(out, m->sc + bucket * m->ss, m->ss * sizeof(float));
    memcpy((char *)out + m->ss * sizeof(float), m->ln + bucket * m->ls, m->ls * sizeof(float));
    return 0;
}

int rec_ctr_row_set(rec_ctr *m, uint64_t bucket, const void *row) {
    if (bucket >= rows(&m->o))
        return REC_ERANGE;
    memcpy(m->sc + bucket * m->ss, row, m->ss * sizeof(float));
    memcpy(m->ln + bucket * m->ls, (const char *)row + m->ss * sizeof(float),
           m->ls * sizeof(float));
    return 0;
}

void rec_ctr_row_reset(rec_ctr *m, uint64_t bucket) {
    if (bucket >= rows(&m->o))
        return;
    memset(m->sc + bucket * m->ss, 0, m->ss * sizeof(float));
    memset(m->ln + bucket * m->ls, 0, m->ls * sizeof(float));
    for (uint32_t j = 0; bucket + 1 < rows(&m->o) && j < m->o.k; j++)
        m->sc[bucket * m->ss + 1 + j] = start_value(&m->o, bucket, j);
    m->dirty[bucket >> 6] |= 1ull << (bucket & 63);
}

static void fill_head(const rec_ctr *m, ctr_head *h) {
    memset(h, 0, sizeof *h);
    memcpy(h->magic, CTR_MAGIC, 8);
    h->o = m->o;
    h->examples = m->st.examples;
    h->positives = m->st.positives;
    h->loss_sum = m->loss_sum;
}

int rec_ctr_save_head(const rec_ctr *m, rec_buf *out) {
    ctr_head h;
    fill_head(m, &h);
    return rec_buf_append(out, &h, sizeof h);
}

int rec_ctr_load_head(rec_ctr **out, const void *data, size_t len) {
    *out = NULL;
    ctr_head h;
    if (len != sizeof h)
        return REC_ECORRUPT;
    memcpy(&h, data, sizeof h);
    if (memcmp(h.magic, CTR_MAGIC, 8) || !opts_ok(&h.o))
        return REC_ECORRUPT;
    rec_ctr *m = alloc_model(&h.o);
    if (!m)
        return REC_ENOMEM;
    init_factors(m);
    m->st.examples = h.examples;
    m->st.positives = h.positives;
    m->loss_sum = h.loss_sum;
    *out = m;
    return 0;
}

int rec_ctr_save(const rec_ctr *m, rec_buf *out) {
    ctr_head h;
    fill_head(m, &h);
    int rc = rec_buf_reserve(out, sizeof h + sc_bytes(&m->o) + ln_bytes(&m->o));
    if (!rc)
        rc = rec_buf_append(out, &h, sizeof h);
    if (!rc)
        rc = rec_buf_append(out, m->sc, sc_bytes(&m->o));
    if (!rc)
        rc = rec_buf_append(out, m->ln, ln_bytes(&m->o));
    return rc;
}

int rec_ctr_load(rec_ctr **out, const void *data, size_t len) {
    *out = NULL;
    ctr_head h;
    if (len < sizeof h)
        return REC_ECORRUPT;
    memcpy(&h, data, sizeof h);
    if (memcmp(h.magic, CTR_MAGIC, 8) || !opts_ok(&h.o) ||
        len != sizeof h + sc_bytes(&h.o) + ln_bytes(&h.o))
        return REC_ECORRUPT;
    rec_ctr *m = alloc_model(&h.o);
    if (!m)
        return REC_ENOMEM;
    m->st.examples = h.examples;
    m->st.positives = h.positives;
    m->loss_sum = h.loss_sum;
    const char *p = (const char *)data + sizeof h;
    memcpy(m->sc, p, sc_bytes(&h.o));
    memcpy(m->ln, p + sc_bytes(&h.o), ln_bytes(&h.o));
    *out = m;
    return 0;
}
