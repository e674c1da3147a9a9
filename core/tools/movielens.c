/* movielens.c - a MovieLens folder into an engine (see movielens.h and
 * docs/movielens.md for the mapping). */
#include "movielens.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "err.h"
#include "hash.h"
#include "idmap.h"

const char *const rec_movielens_genres[REC_MOVIELENS_GENRES] = {
    "Action",  "Adventure", "Animation", "Children", "Comedy",  "Crime",    "Documentary",
    "Drama",   "Fantasy",   "Film-Noir", "Horror",   "IMAX",    "Musical",  "Mystery",
    "Romance", "Sci-Fi",    "Thriller",  "War",      "Western", "(no genres listed)"};

#define COMMIT_EVERY 4096
#define MAX_FIELDS 8

int rec_movielens_types_parse(const char *name) {
    if (!strcmp(name, "graded"))
        return REC_MOVIELENS_GRADED;
    if (!strcmp(name, "click"))
        return REC_MOVIELENS_CLICK;
    return REC_EINVAL;
}

const char *rec_movielens_event_type(double rating, rec_movielens_types types) {
    if (types == REC_MOVIELENS_CLICK || rating >= 4.0)
        return "click";
    return rating >= 2.5 ? "view" : "dislike";
}

int rec_movielens_title_year(const char *title) {
    size_t n = strlen(title);
    while (n > 0 && (title[n - 1] == ' ' || title[n - 1] == '\t'))
        n--;
    if (n < 6 || title[n - 1] != ')' || title[n - 6] != '(')
        return 0;
    int y = 0;
    for (size_t i = n - 5; i < n - 1; i++) {
        if (title[i] < '0' || title[i] > '9')
            return 0;
        y = y * 10 + (title[i] - '0');
    }
    return y;
}

static int is_alnum(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

void rec_movielens_tag_add(float *tags, const char *tag) {
    const char *p = tag;
    while (*p) {
        while (*p && !is_alnum(*p))
            p++;
        uint64_t h = REC_HASH_STABLE_INIT;
        const char *w = p;
        for (; is_alnum(*p); p++) {
            char c = (*p >= 'A' && *p <= 'Z') ? (char)(*p - 'A' + 'a') : *p;
            h = rec_hash_stable_add(h, &c, 1);
        }
        if (p > w) {
            h = rec_hash_stable_end(h);
            tags[h % REC_MOVIELENS_TAG_DIMS] += (h >> 63) ? -1.0f : 1.0f;
        }
    }
}

int rec_movielens_vector(const char *genres, const float *tags, float *v) {
    double d[REC_MOVIELENS_DIM] = {0}, norm = 0, tnorm = 0;
    const char *p = genres;
    while (*p) {
        const char *end = strchr(p, '|');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        for (int g = 0; g < REC_MOVIELENS_GENRES; g++)
            if (strlen(rec_movielens_genres[g]) == n && !memcmp(rec_movielens_genres[g], p, n))
                d[g] = 1.0;
        p += n + (end ? 1 : 0);
    }
    for (int t = 0; t < REC_MOVIELENS_TAG_DIMS; t++)
        tnorm += (double)tags[t] * (double)tags[t];
    if (tnorm > 0)
        for (int t = 0; t < REC_MOVIELENS_TAG_DIMS; t++)
            d[REC_MOVIELENS_GENRES + t] = (double)tags[t] / sqrt(tnorm);
    for (int i = 0; i < REC_MOVIELENS_DIM; i++)
        norm += d[i] * d[i];
    if (norm == 0)
        return 0;
    for (int i = 0; i < REC_MOVIELENS_DIM; i++)
        v[i] = (float)(d[i] / sqrt(norm));
    return 1;
}

/* ---- CSV files with a header line ------------------------------------------ */

typedef struct csvf {
    FILE *f;
    char *line;
    size_t cap;
    unsigned lineno;
    const char *path;
    char *err;
    size_t errlen;
} csvf;

static int fail(csvf *c, int rc, const char *fmt, ...) {
    va_list ap;
    int n = snprintf(c->err, c->errlen, "%s:%u: ", c->path, c->lineno);
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < c->errlen)
        vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return rc;
}

/* The fields of the next line, in place (quotes removed, "" as "); the
 * number of fields, 0 at the end, REC_EINVAL on an unterminated quote. */
static int csv_next(csvf *c, char **fl) {
    ssize_t len = getline(&c->line, &c->cap, c->f);
    if (len < 0)
        return 0;
    c->lineno++;
    while (len > 0 && (c->line[len - 1] == '\n' || c->line[len - 1] == '\r'))
        c->line[--len] = 0;
    char *p = c->line, *out = c->line;
    if (c->lineno == 1 && !memcmp(p, "\xef\xbb\xbf", 3))
        p += 3, out += 3;
    int nf = 0;
    for (;;) {
        char *start = out;
        if (*p == '"') {
            p++;
            for (;;) {
                if (!*p)
                    return fail(c, REC_EINVAL, "unterminated quote");
                if (*p == '"' && p[1] == '"')
                    *out++ = '"', p += 2;
                else if (*p == '"') {
                    p++;
                    break;
                } else
                    *out++ = *p++;
            }
        }
        while (*p && *p != ',')
            *out++ = *p++;
        int more = *p == ',';
        if (more)
            p++;
        *out++ = 0;
        if (nf < MAX_FIELDS)
            fl[nf++] = start;
        if (!more)
            return nf;
    }
}

/* Open path and find the columns named in names (NULL-ended) in its
 * header: col[i] their positions. A missing optional file: REC_ENOTFOUND. */
static int csv_open(csvf *c, const char *path, const char *const *names, int *col,
                    char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    c->path = path;
    c->err = err;
    c->errlen = errlen;
    if (!(c->f = fopen(path, "r"))) {
        int rc = errno == ENOENT ? REC_ENOTFOUND : REC_EIO;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return rc;
    }
    char *fl[MAX_FIELDS];
    int nf = csv_next(c, fl);
    if (nf == 0)
        return fail(c, REC_EINVAL, "empty file");
    if (nf < 0)
        return nf;
    for (int i = 0; names[i]; i++) {
        col[i] = -1;
        for (int k = 0; k < nf; k++)
            if (!strcmp(fl[k], names[i]))
                col[i] = k;
        if (col[i] < 0)
            return fail(c, REC_EINVAL, "no column %s in the header", names[i]);
    }
    return 0;
}

static void csv_close(csvf *c) {
    free(c->line);
    if (c->f)
        fclose(c->f);
}

/* A decimal id (digits only). */
static int parse_id(const char *s, uint64_t *out) {
    if (!*s)
        return -1;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return 0;
}

static int parse_num(const char *s, double *out) {
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    return end == s || *end || errno || !isfinite(*out) ? -1 : 0;
}

/* ---- the load ------------------------------------------------------------------- */

typedef struct movie {
    uint64_t id;
    char *title, *genres;
    float tags[REC_MOVIELENS_TAG_DIMS];
} movie;

typedef struct rating {
    int64_t ts;
    uint64_t user, movie;
    double rating;
} rating;

static int by_time(const void *a, const void *b) {
    const rating *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    if (x->user != y->user)
        return x->user < y->user ? -1 : 1;
    if (x->movie != y->movie)
        return x->movie < y->movie ? -1 : 1;
    return (x->rating > y->rating) - (x->rating < y->rating);
}

static int id_key(char *out, const char *prefix, uint64_t id) {
    char s[48];
    int n = snprintf(s, sizeof s, "%s:%llu", prefix, (unsigned long long)id);
    return rec_id_str(out, s, (size_t)n);
}

/* msgpack of {title, genres = [...], year} */
static int pack_props(const movie *m, msgpack_sbuffer *sb) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    int year = rec_movielens_title_year(m->title);
    size_t ng = 0;
    for (const char *p = m->genres; *p; p++)
        if (*p != '|' && (p == m->genres || p[-1] == '|'))
            ng++;
    int rc = msgpack_pack_map(&pk, year ? 3 : 2) ||
             msgpack_pack_str_with_body(&pk, "title", 5) ||
             msgpack_pack_str_with_body(&pk, m->title, strlen(m->title)) ||
             msgpack_pack_str_with_body(&pk, "genres", 6) || msgpack_pack_array(&pk, ng);
    for (const char *p = m->genres; *p && !rc;) {
        size_t n = strcspn(p, "|");
        if (n)
            rc = msgpack_pack_str_with_body(&pk, p, n);
        p += n + (p[n] ? 1 : 0);
    }
    if (year && !rc)
        rc = msgpack_pack_str_with_body(&pk, "year", 4) || msgpack_pack_int(&pk, year);
    return rc ? REC_ENOMEM : 0;
}

typedef struct load {
    movie *mv;
    size_t nmv, capmv;
    rec_idmap ids; /* movieId -> index into mv */
    rating *r;
    size_t nr, capr;
} load;

static void *grow(void *p, size_t *cap, size_t n, size_t size) {
    if (n < *cap)
        return p;
    size_t nc = *cap ? *cap * 2 : 1024;
    void *np = realloc(p, nc * size);
    if (np)
        *cap = nc;
    return np;
}

static int read_movies(load *L, const char *path, char *err, size_t errlen) {
    static const char *const cols[] = {"movieId", "title", "genres", NULL};
    int col[3], rc;
    csvf c;
    char *fl[MAX_FIELDS];
    if ((rc = csv_open(&c, path, cols, col, err, errlen)))
        goto out;
    int nf;
    while ((nf = csv_next(&c, fl)) > 0) {
        if (nf <= col[0] || nf <= col[1] || nf <= col[2]) {
            rc = fail(&c, REC_EINVAL, "too few fields");
            goto out;
        }
        uint64_t id;
        if (parse_id(fl[col[0]], &id)) {
            rc = fail(&c, REC_EINVAL, "movieId '%.40s' is not a number", fl[col[0]]);
            goto out;
        }
        char key[REC_ID_MAX];
        uint32_t idx;
        int created;
        if ((rc = rec_idmap_intern(&L->ids, key, (size_t)rec_id_int(key, (int64_t)id), &idx,
                                   &created)))
            goto out;
        if (!created) {
            rc = fail(&c, REC_EINVAL, "movie %llu listed twice", (unsigned long long)id);
            goto out;
        }
        movie *mv = grow(L->mv, &L->capmv, L->nmv, sizeof *mv);
        if (!mv) {
            rc = REC_ENOMEM;
            goto out;
        }
        L->mv = mv;
        movie *m = &L->mv[L->nmv];
        memset(m, 0, sizeof *m);
        m->id = id;
        m->title = strdup(fl[col[1]]);
        m->genres = strdup(fl[col[2]]);
        L->nmv++;
        if (!m->title || !m->genres) {
            rc = REC_ENOMEM;
            goto out;
        }
    }
    rc = nf < 0 ? nf : 0;
out:
    csv_close(&c);
    return rc;
}

static int read_tags(load *L, const char *path, size_t *ntags, char *err, size_t errlen) {
    static const char *const cols[] = {"movieId", "tag", NULL};
    int col[2], rc;
    csvf c;
    char *fl[MAX_FIELDS];
    if ((rc = csv_open(&c, path, cols, col, err, errlen)))
        goto out;
    int nf;
    while ((nf = csv_next(&c, fl)) > 0) {
        uint64_t id;
        if (nf <= col[0] || nf <= col[1]) {
            rc = fail(&c, REC_EINVAL, "too few fields");
            goto out;
        }
        if (parse_id(fl[col[0]], &id)) {
            rc = fail(&c, REC_EINVAL, "movieId '%.40s' is not a number", fl[col[0]]);
            goto out;
        }
        (*ntags)++;
        char key[REC_ID_MAX];
        uint32_t idx = rec_idmap_find(&L->ids, key, (size_t)rec_id_int(key, (int64_t)id));
        if (idx != REC_IDX_NONE) /* else a tag of a movie movies.csv does not list */
            rec_movielens_tag_add(L->mv[idx].tags, fl[col[1]]);
    }
    rc = nf < 0 ? nf : 0;
out:
    csv_close(&c);
    return rc;
}

static int read_ratings(load *L, const char *path, char *err, size_t errlen) {
    static const char *const cols[] = {"userId", "movieId", "rating", "timestamp", NULL};
    int col[4], rc;
    csvf c;
    char *fl[MAX_FIELDS];
    if ((rc = csv_open(&c, path, cols, col, err, errlen)))
        goto out;
    int nf;
    while ((nf = csv_next(&c, fl)) > 0) {
        rating r;
        double ts;
        if (nf <= col[0] || nf <= col[1] || nf <= col[2] || nf <= col[3]) {
            rc = fail(&c, REC_EINVAL, "too few fields");
            goto out;
        }
        if (parse_id(fl[col[0]], &r.user) || parse_id(fl[col[1]], &r.movie)) {
            rc = fail(&c, REC_EINVAL, "userId or movieId is not a number");
            goto out;
        }
        if (parse_num(fl[col[2]], &r.rating) || parse_num(fl[col[3]], &ts)) {
            rc = fail(&c, REC_EINVAL, "rating or timestamp is not a number");
            goto out;
        }
        r.ts = (int64_t)ts;
        rating *nr = grow(L->r, &L->capr, L->nr, sizeof *nr);
        if (!nr) {
            rc = REC_ENOMEM;
            goto out;
        }
        L->r = nr;
        L->r[L->nr++] = r;
    }
    rc = nf < 0 ? nf : 0;
out:
    csv_close(&c);
    return rc;
}

static int put_movies(rec_engine *e, load *L, rec_movielens_stats *st, char *err,
                      size_t errlen) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int rc = 0;
    for (size_t i = 0; i < L->nmv && !rc; i++) {
        movie *m = &L->mv[i];
        float v[REC_MOVIELENS_DIM];
        rec_vecarg va = {"content", v, REC_MOVIELENS_DIM};
        int has = rec_movielens_vector(m->genres, m->tags, v);
        st->with_vector += (size_t)has;
        sb.size = 0;
        char key[REC_ID_MAX];
        int kl = id_key(key, "movie", m->id);
        if ((rc = pack_props(m, &sb)))
            break;
        rc = kl < 0 ? kl
                    : rec_engine_put(e, REC_KIND_ITEM, key, (size_t)kl, sb.data, sb.size, -1,
                                     &va, has ? 1 : 0, NULL);
        if (!rc && (i + 1) % COMMIT_EVERY == 0)
            rc = rec_engine_commit(e);
        if (rc)
            snprintf(err, errlen, "movie:%llu: %s", (unsigned long long)m->id,
                     rec_engine_errmsg(e)[0] ? rec_engine_errmsg(e) : rec_strerror(rc));
    }
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static int add_ratings(rec_engine *e, load *L, rec_movielens_types types,
                       rec_movielens_stats *st, char *err, size_t errlen) {
    qsort(L->r, L->nr, sizeof *L->r, by_time);
    int rc = 0;
    for (size_t i = 0; i < L->nr && !rc; i++) {
        const rating *r = &L->r[i];
        char uk[REC_ID_MAX], ik[REC_ID_MAX];
        int ul = id_key(uk, "user", r->user), il = id_key(ik, "movie", r->movie);
        const char *type = rec_movielens_event_type(r->rating, types);
        st->by_type[type[0] == 'c' ? 0 : type[0] == 'v' ? 1 : 2]++;
        rec_event ev = {.user = uk, .ulen = (size_t)ul, .item = ik, .ilen = (size_t)il,
                        .type = type, .tlen = strlen(type), .value = r->rating,
                        .has_value = 1, .ts = (double)r->ts};
        rc = ul < 0 ? ul : il < 0 ? il : rec_engine_event(e, &ev, NULL);
        if (!rc && (i + 1) % COMMIT_EVERY == 0)
            rc = rec_engine_commit(e);
        if (rc)
            snprintf(err, errlen, "rating %zu (user:%llu, movie:%llu): %s", i + 1,
                     (unsigned long long)r->user, (unsigned long long)r->movie,
                     rec_engine_errmsg(e)[0] ? rec_engine_errmsg(e) : rec_strerror(rc));
    }
    st->ratings = L->nr;
    return rc;
}

int rec_movielens_load(rec_engine *e, const char *dir, rec_movielens_types types,
                       rec_movielens_stats *st, char *err, size_t errlen) {
    rec_movielens_stats dummy;
    if (errlen)
        err[0] = 0;
    if (!st)
        st = &dummy;
    memset(st, 0, sizeof *st);
    load L;
    memset(&L, 0, sizeof L);
    rec_idmap_init(&L.ids);
    size_t plen = strlen(dir) + 16;
    char *path = malloc(plen);
    int rc = path ? 0 : REC_ENOMEM;
    if (!rc) {
        snprintf(path, plen, "%s/movies.csv", dir);
        rc = read_movies(&L, path, err, errlen);
    }
    if (!rc) {
        snprintf(path, plen, "%s/tags.csv", dir);
        rc = read_tags(&L, path, &st->tags, err, errlen);
        if (rc == REC_ENOTFOUND) /* tags.csv is optional */
            rc = 0;
    }
    if (!rc) {
        snprintf(path, plen, "%s/ratings.csv", dir);
        rc = read_ratings(&L, path, err, errlen);
    }
    st->movies = L.nmv;
    if (!rc)
        rc = put_movies(e, &L, st, err, errlen);
    if (!rc)
        rc = add_ratings(e, &L, types, st, err, errlen);
    if (!rc && (rc = rec_engine_commit(e)))
        snprintf(err, errlen, "commit: %s", rec_engine_errmsg(e));
    if (rc == REC_ENOMEM && !err[0])
        snprintf(err, errlen, "out of memory");
    for (size_t i = 0; i < L.nmv; i++) {
        free(L.mv[i].title);
        free(L.mv[i].genres);
    }
    free(L.mv);
    free(L.r);
    free(path);
    rec_idmap_close(&L.ids);
    return rc;
}
