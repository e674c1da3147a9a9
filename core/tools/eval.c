/* eval.c - `recd eval`: prequential and holdout replays of interaction
 * logs through the engine, the scripts and the dispatcher the server uses.
 *
 * Every arm (a pipeline, one strategy alone, or a built-in baseline) runs
 * each protocol on its own temporary database; arms run in parallel
 * threads (--jobs), each with its own engine and Lua runtime, on the
 * log's clock (rec_clock_set is per thread). Scripted arms go through
 * rec_dispatch_call with the same msgpack requests a client would send,
 * so what is measured is what the server would answer.
 */
#include "eval.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>

#include "chart.h"
#include "cli.h"
#include "dispatch.h"
#include "err.h"
#include "harness.h"
#include "hash.h"
#include "log.h"
#include "pipeline.h"
#include "script.h"
#include "space.h"
#include "u64set.h"
#include "vec.h"

#define MAX_FIELDS 64
#define MAX_ARMS 32
#define CURVE_POINTS 20
#define COMMIT_EVERY 4096

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Room for one more element in a doubling array of n (first: the initial
 * capacity): the array, moved or not, or NULL (it is untouched then). */
static void *grow(void *arr, size_t *cap, size_t n, size_t elem, size_t first) {
    if (n < *cap)
        return arr;
    size_t nc = *cap ? *cap * 2 : first;
    void *p = realloc(arr, nc * elem);
    if (p)
        *cap = nc;
    return p;
}

/* splitmix64: the split and the random baseline, reproducible by seed. */
static uint64_t mix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---- CSV -------------------------------------------------------------------- */

int rec_eval_split(char *line, char sep, char **fields, int max) {
    int n = 0;
    char *p = line;
    for (;;) {
        if (n == max)
            return n;
        if (*p == '"') {
            char *w = ++p;
            fields[n++] = w;
            for (;;) {
                if (!*p)
                    return -1;
                if (*p == '"') {
                    if (p[1] == '"') {
                        *w++ = '"';
                        p += 2;
                        continue;
                    }
                    p++;
                    break;
                }
                *w++ = *p++;
            }
            /* anything between the closing quote and the separator is kept */
            while (*p && *p != sep)
                *w++ = *p++;
            int more = *p == sep;
            *w = 0;
            if (!more)
                return n;
            p++;
        } else {
            fields[n++] = p;
            char *q = strchr(p, sep);
            if (!q)
                return n;
            *q = 0;
            p = q + 1;
        }
    }
}

/* A whole record: quoted fields may hold newlines, so lines are joined
 * while a quote is open. Returns the length, 0 at the end, -1 on error. */
static ssize_t read_record(FILE *f, char **buf, size_t *cap, uint32_t *lineno) {
    ssize_t len = getline(buf, cap, f);
    if (len <= 0)
        return 0;
    ++*lineno;
    for (;;) {
        size_t quotes = 0;
        for (ssize_t i = 0; i < len; i++)
            quotes += (*buf)[i] == '"';
        if (quotes % 2 == 0)
            break;
        char *more = NULL;
        size_t mcap = 0;
        ssize_t ml = getline(&more, &mcap, f);
        if (ml <= 0) {
            free(more);
            break; /* the split reports the open quote */
        }
        ++*lineno;
        char *nb = realloc(*buf, (size_t)len + (size_t)ml + 1);
        if (!nb) {
            free(more);
            return -1;
        }
        memcpy(nb + len, more, (size_t)ml + 1);
        *buf = nb;
        *cap = (size_t)len + (size_t)ml + 1;
        len += ml;
        free(more);
    }
    while (len > 0 && ((*buf)[len - 1] == '\n' || (*buf)[len - 1] == '\r'))
        (*buf)[--len] = 0;
    return len;
}

static void trim(char **s) {
    while (**s == ' ')
        ++*s;
    size_t n = strlen(*s);
    while (n > 0 && (*s)[n - 1] == ' ')
        (*s)[--n] = 0;
}

/* Encode a field as an id: digits only (at most 18) an integer, else a
 * string. Returns the key length or a negative REC_E*. */
static int field_key(const char *s, char *key) {
    size_t n = strlen(s);
    int digits = n > 0 && n <= 18;
    for (size_t i = 0; digits && i < n; i++)
        digits = isdigit((unsigned char)s[i]) != 0;
    if (digits)
        return rec_id_int(key, strtoll(s, NULL, 10));
    return rec_id_str(key, s, n);
}

static int parse_num(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !isfinite(v))
        return -1;
    while (*end == ' ')
        end++;
    if (*end)
        return -1;
    *out = v;
    return 0;
}

enum { COL_USER, COL_ITEM, COL_RATING, COL_TS, COL_TYPE, NCOLS };
static const char *const col_name[NCOLS] = {"user", "item", "rating", "ts", "type"};

static int role_of(const char *h) {
    static const struct {
        const char *name;
        int role;
    } names[] = {
        {"user", COL_USER},      {"userid", COL_USER},     {"user_id", COL_USER},
        {"item", COL_ITEM},      {"itemid", COL_ITEM},     {"item_id", COL_ITEM},
        {"movieid", COL_ITEM},   {"movie_id", COL_ITEM},   {"product", COL_ITEM},
        {"product_id", COL_ITEM}, {"rating", COL_RATING},  {"value", COL_RATING},
        {"score", COL_RATING},   {"ts", COL_TS},           {"timestamp", COL_TS},
        {"time", COL_TS},        {"type", COL_TYPE},       {"event", COL_TYPE},
        {"event_type", COL_TYPE},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcasecmp(h, names[i].name))
            return names[i].role;
    return -1;
}

void rec_eval_read_opts_default(rec_eval_read_opts *o) {
    memset(o, 0, sizeof *o);
    o->min_rating = NAN;
    o->type = "click";
}

static int type_index(rec_eval_log *log, const char *name) {
    for (size_t i = 0; i < log->ntypes; i++)
        if (!strcmp(log->types[i], name))
            return (int)i;
    if (log->ntypes >= 1024)
        return REC_ERANGE;
    void *nt = realloc(log->types, (log->ntypes + 1) * sizeof *log->types);
    if (!nt)
        return REC_ENOMEM;
    log->types = nt;
    snprintf(log->types[log->ntypes], sizeof log->types[0], "%s", name);
    return (int)log->ntypes++;
}

/* "from=to,..." -> the name to use for a type read from the file. */
static const char *map_type(const char *map, const char *t, char *out, size_t cap) {
    size_t tl = strlen(t);
    for (const char *p = map; p && *p;) {
        const char *eq = strchr(p, '='), *comma = strchr(p, ',');
        if (!comma)
            comma = p + strlen(p);
        if (eq && eq < comma && (size_t)(eq - p) == tl && !memcmp(p, t, tl)) {
            snprintf(out, cap, "%.*s", (int)(comma - eq - 1), eq + 1);
            return out;
        }
        p = *comma ? comma + 1 : comma;
    }
    return t;
}

static int cmp_event(const void *a, const void *b) {
    const rec_eval_event *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return (x->line > y->line) - (x->line < y->line);
}

int rec_eval_log_read(rec_eval_log *log, const char *path,
                      const rec_eval_read_opts *o, char *err, size_t errlen) {
    rec_idmap_init(&log->users);
    rec_idmap_init(&log->items);
    FILE *f = fopen(path, "r");
    if (!f) {
        set_err(err, errlen, "%s: %s", path, strerror(errno));
        return REC_EIO;
    }
    int col[NCOLS] = {-1, -1, -1, -1, -1};
    char *buf = NULL, *fields[MAX_FIELDS];
    size_t cap = 0;
    uint32_t lineno = 0;
    int rc = 0, nf;
    char sep = o->sep;
    ssize_t len = read_record(f, &buf, &cap, &lineno);
    if (len <= 0) {
        set_err(err, errlen, "%s: empty file", path);
        rc = REC_EINVAL;
        goto out;
    }
    if (!sep)
        sep = strchr(buf, '\t') ? '\t' : ',';
    if (o->columns) {
        char spec[512];
        snprintf(spec, sizeof spec, "%s", o->columns);
        nf = rec_eval_split(spec, ',', fields, MAX_FIELDS);
        for (int i = 0; i < nf; i++) {
            trim(&fields[i]);
            int r = -1;
            for (int c = 0; c < NCOLS; c++)
                if (!strcmp(fields[i], col_name[c]))
                    r = c;
            if (r < 0 && strcmp(fields[i], "-")) {
                set_err(err, errlen,
                        "--columns: unknown column '%s' (user, item, rating, ts, type or -)",
                        fields[i]);
                rc = REC_EINVAL;
                goto out;
            }
            if (r >= 0)
                col[r] = i;
        }
        if (o->header)
            len = read_record(f, &buf, &cap, &lineno);
    } else {
        nf = rec_eval_split(buf, sep, fields, MAX_FIELDS);
        for (int i = 0; i < nf; i++) {
            char *h = fields[i];
            trim(&h);
            int r = role_of(h);
            if (r >= 0 && col[r] < 0)
                col[r] = i;
        }
        len = read_record(f, &buf, &cap, &lineno);
    }
    if (col[COL_USER] < 0 || col[COL_ITEM] < 0) {
        set_err(err, errlen,
                "%s: no %s column (the header names none of %s; or give --columns)",
                path, col[COL_USER] < 0 ? "user" : "item",
                col[COL_USER] < 0 ? "user, userId, user_id"
                                  : "item, itemId, item_id, movieId, product_id");
        rc = REC_EINVAL;
        goto out;
    }
    int need = 0;
    for (int c = 0; c < NCOLS; c++)
        if (col[c] + 1 > need)
            need = col[c] + 1;
    int base_type = type_index(log, o->type ? o->type : "click");
    if (base_type < 0) {
        rc = base_type;
        goto out;
    }
    for (;; len = read_record(f, &buf, &cap, &lineno)) {
        if (len < 0) {
            set_err(err, errlen, "%s:%u: out of memory", path, lineno);
            rc = REC_ENOMEM;
            goto out;
        }
        if (len == 0 && feof(f))
            break;
        if (len == 0 || buf[0] == 0)
            continue;
        nf = rec_eval_split(buf, sep, fields, MAX_FIELDS);
        if (nf < 0) {
            set_err(err, errlen, "%s:%u: unterminated quote", path, lineno);
            rc = REC_EINVAL;
            goto out;
        }
        if (nf < need) {
            set_err(err, errlen, "%s:%u: %d fields, expected at least %d", path,
                    lineno, nf, need);
            rc = REC_EINVAL;
            goto out;
        }
        rec_eval_event ev = {.rating = 1.0f, .type = (uint16_t)base_type, .line = lineno};
        if (col[COL_TS] >= 0 && parse_num(fields[col[COL_TS]], &ev.ts)) {
            set_err(err, errlen, "%s:%u: timestamp '%s' is not a number", path,
                    lineno, fields[col[COL_TS]]);
            rc = REC_EINVAL;
            goto out;
        }
        if (col[COL_TS] < 0)
            ev.ts = (double)lineno; /* file order */
        if (col[COL_RATING] >= 0) {
            double r;
            if (parse_num(fields[col[COL_RATING]], &r)) {
                set_err(err, errlen, "%s:%u: rating '%s' is not a number", path,
                        lineno, fields[col[COL_RATING]]);
                rc = REC_EINVAL;
                goto out;
            }
            if (!isnan(o->min_rating) && r < o->min_rating) {
                log->skipped++;
                continue;
            }
            ev.rating = (float)r;
        }
        if (col[COL_TYPE] >= 0) {
            char mapped[64];
            const char *t = map_type(o->type_map, fields[col[COL_TYPE]], mapped, sizeof mapped);
            size_t tl = strlen(t);
            if (tl == 0 || tl > 63) {
                set_err(err, errlen, "%s:%u: event type must be 1..63 bytes", path, lineno);
                rc = REC_EINVAL;
                goto out;
            }
            int ti = type_index(log, t);
            if (ti < 0) {
                set_err(err, errlen, "%s:%u: more than 1024 event types", path, lineno);
                rc = REC_EINVAL;
                goto out;
            }
            ev.type = (uint16_t)ti;
        }
        char key[REC_ID_MAX];
        int created;
        for (int side = 0; side < 2; side++) {
            const char *v = fields[col[side ? COL_ITEM : COL_USER]];
            int kl = field_key(v, key);
            if (kl < 0) {
                set_err(err, errlen, "%s:%u: %s id '%.40s' is %s", path, lineno,
                        side ? "item" : "user", v,
                        kl == REC_ETOOLARGE ? "too long" : "empty or not UTF-8");
                rc = REC_EINVAL;
                goto out;
            }
            rc = rec_idmap_intern(side ? &log->items : &log->users, key, (size_t)kl,
                                  side ? &ev.item : &ev.user, &created);
            if (rc)
                goto out;
        }
        rec_eval_event *evs = grow(log->ev, &log->cap, log->n, sizeof *log->ev, 4096);
        if (!evs) {
            rc = REC_ENOMEM;
            goto out;
        }
        log->ev = evs;
        log->ev[log->n++] = ev;
        if (o->limit && log->n >= o->limit)
            break;
    }
    if (ferror(f)) {
        set_err(err, errlen, "%s: read error: %s", path, strerror(errno));
        rc = REC_EIO;
        goto out;
    }
    if (log->n == 0) {
        set_err(err, errlen, "%s: no events%s", path,
                log->skipped ? " above the rating threshold" : "");
        rc = REC_EINVAL;
        goto out;
    }
    qsort(log->ev, log->n, sizeof *log->ev, cmp_event);
out:
    free(buf);
    fclose(f);
    return rc;
}

void rec_eval_log_free(rec_eval_log *log) {
    if (!log)
        return;
    free(log->ev);
    free(log->types);
    rec_idmap_close(&log->users);
    rec_idmap_close(&log->items);
    memset(log, 0, sizeof *log);
}

/* ---- metrics ------------------------------------------------------------------ */

double rec_eval_rr(uint32_t rank) { return rank ? 1.0 / rank : 0.0; }

double rec_eval_ndcg(const uint8_t *hit, size_t k, size_t ntest) {
    if (!ntest)
        return 0.0;
    double dcg = 0, idcg = 0;
    for (size_t i = 0; i < k; i++) {
        double d = 1.0 / log2((double)i + 2.0);
        if (hit[i])
            dcg += d;
        if (i < ntest)
            idcg += d;
    }
    return idcg > 0 ? dcg / idcg : 0.0;
}

static size_t count_hits(const uint8_t *hit, size_t k) {
    size_t h = 0;
    for (size_t i = 0; i < k; i++)
        h += hit[i] != 0;
    return h;
}

double rec_eval_recall(const uint8_t *hit, size_t k, size_t ntest) {
    return ntest ? (double)count_hits(hit, k) / (double)ntest : 0.0;
}

double rec_eval_precision(const uint8_t *hit, size_t k) {
    return k ? (double)count_hits(hit, k) / (double)k : 0.0;
}

/* ---- catalogue ------------------------------------------------------------------ */

#define MAX_CATS 48
#define TAG_DIMS 16

typedef struct cat_item {
    char key[REC_ID_MAX];
    int klen;
    char *title;
    uint64_t cats;      /* bit i: category i */
    float tags[TAG_DIMS];
    float *vec;         /* from a vector column */
    uint32_t dim;
    uint32_t line;
} cat_item;

typedef struct catalogue {
    cat_item *it;
    size_t n, cap;
    rec_idmap ids;      /* key -> index into it */
    char cats[MAX_CATS][64];
    int ncats;
    int has_tags;
} catalogue;

static int find_col(char **h, int n, const char *const *names) {
    for (int i = 0; i < n; i++) {
        char *s = h[i];
        trim(&s);
        for (int j = 0; names[j]; j++)
            if (!strcasecmp(s, names[j]))
                return i;
    }
    return -1;
}

static const char *const item_cols[] = {"id", "item", "itemid", "item_id", "movieid",
                                        "movie_id", "product", "product_id", NULL};

/* A CSV/TSV file read record by record after its header. */
typedef struct csv {
    FILE *f;
    char *buf;
    size_t cap;
    uint32_t line; /* of the record last read */
    char sep;      /* a tab when the header holds one, else ',' */
} csv;

/* Open path and split its header into fields. Returns the header's field
 * count, or a negative REC_E* with a message (REC_EINVAL for an empty
 * file). csv_close is safe after a failure. */
static int csv_open(csv *c, const char *path, char **fields, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    if (!(c->f = fopen(path, "r"))) {
        set_err(err, errlen, "%s: %s", path, strerror(errno));
        return REC_EIO;
    }
    ssize_t len = read_record(c->f, &c->buf, &c->cap, &c->line);
    if (len <= 0) {
        set_err(err, errlen, "%s: %s", path, len < 0 ? "out of memory" : "empty file");
        return len < 0 ? REC_ENOMEM : REC_EINVAL;
    }
    c->sep = strchr(c->buf, '\t') ? '\t' : ',';
    return rec_eval_split(c->buf, c->sep, fields, MAX_FIELDS);
}

/* The next non-empty record split into fields: the field count (-1 for an
 * unterminated quote), 0 at the end, REC_ENOMEM. */
static int csv_next(csv *c, char **fields) {
    for (;;) {
        ssize_t len = read_record(c->f, &c->buf, &c->cap, &c->line);
        if (len < 0)
            return REC_ENOMEM;
        if (len > 0)
            return rec_eval_split(c->buf, c->sep, fields, MAX_FIELDS);
        if (feof(c->f))
            return 0;
    }
}

static void csv_close(csv *c) {
    free(c->buf);
    if (c->f)
        fclose(c->f);
}

/* The fixed hash (hash.h) of a word in lower case: a tag's dimension and
 * sign are the same in every run. */
static uint64_t word_hash(const char *s, size_t n) {
    uint64_t h = REC_HASH_STABLE_INIT;
    for (size_t i = 0; i < n; i++) {
        char c = (char)tolower((unsigned char)s[i]);
        h = rec_hash_stable_add(h, &c, 1);
    }
    return rec_hash_stable_end(h);
}

static int read_items(catalogue *c, const char *path, char *err, size_t errlen) {
    csv in;
    char *fl[MAX_FIELDS];
    int rc = 0;
    int nf = csv_open(&in, path, fl, err, errlen);
    static const char *const title_cols[] = {"title", "name", NULL};
    static const char *const cat_cols[] = {"categories", "category", "genres", "genre", NULL};
    static const char *const vec_cols[] = {"vector", "embedding", NULL};
    int cid = find_col(fl, nf, item_cols), ctitle = find_col(fl, nf, title_cols),
        ccat = find_col(fl, nf, cat_cols), cvec = find_col(fl, nf, vec_cols);
    if (nf < 0 || cid < 0) {
        if (nf >= 0)
            set_err(err, errlen,
                    "%s: no id column (the header names none of id, item, movieId, ...)", path);
        rc = nf < 0 ? nf : REC_EINVAL;
        goto out;
    }
    while ((nf = csv_next(&in, fl)) != 0) {
        if (nf == REC_ENOMEM) {
            rc = REC_ENOMEM;
            goto out;
        }
        uint32_t lineno = in.line;
        if (nf <= cid || (ctitle >= 0 && nf <= ctitle) || (ccat >= 0 && nf <= ccat) ||
            (cvec >= 0 && nf <= cvec)) {
            set_err(err, errlen, "%s:%u: %s", path, lineno,
                    nf < 0 ? "unterminated quote" : "too few fields");
            rc = REC_EINVAL;
            goto out;
        }
        cat_item *items = grow(c->it, &c->cap, c->n, sizeof *c->it, 1024);
        if (!items) {
            rc = REC_ENOMEM;
            goto out;
        }
        c->it = items;
        cat_item *it = &c->it[c->n];
        memset(it, 0, sizeof *it);
        it->line = lineno;
        it->klen = field_key(fl[cid], it->key);
        if (it->klen < 0) {
            set_err(err, errlen, "%s:%u: item id '%.40s' is empty, too long or not UTF-8",
                    path, lineno, fl[cid]);
            rc = REC_EINVAL;
            goto out;
        }
        uint32_t idx;
        int created;
        if ((rc = rec_idmap_intern(&c->ids, it->key, (size_t)it->klen, &idx, &created)))
            goto out;
        if (!created) {
            set_err(err, errlen, "%s:%u: item '%.40s' listed twice", path, lineno, fl[cid]);
            rc = REC_EINVAL;
            goto out;
        }
        if (ctitle >= 0 && !(it->title = strdup(fl[ctitle]))) {
            rc = REC_ENOMEM;
            goto out;
        }
        c->n++;
        if (ccat >= 0) {
            char *save = NULL;
            for (char *t = strtok_r(fl[ccat], "|", &save); t; t = strtok_r(NULL, "|", &save)) {
                trim(&t);
                if (!*t)
                    continue;
                int k = 0;
                while (k < c->ncats && strcmp(c->cats[k], t))
                    k++;
                if (k == c->ncats && c->ncats < MAX_CATS)
                    snprintf(c->cats[c->ncats++], sizeof c->cats[0], "%s", t);
                if (k < c->ncats)
                    it->cats |= 1ull << k;
            }
        }
        if (cvec >= 0 && fl[cvec][0]) {
            char *p = fl[cvec], *end;
            uint32_t n = 0, capv = 0;
            for (;;) {
                errno = 0;
                float v = strtof(p, &end);
                if (end == p)
                    break;
                if (n == capv) {
                    capv = capv ? capv * 2 : 64;
                    float *nv = realloc(it->vec, capv * sizeof *nv);
                    if (!nv) {
                        rc = REC_ENOMEM;
                        goto out;
                    }
                    it->vec = nv;
                }
                it->vec[n++] = v;
                p = end;
            }
            while (*p == ' ')
                p++;
            if (*p || n == 0) {
                set_err(err, errlen, "%s:%u: vector is not numbers separated by spaces",
                        path, lineno);
                rc = REC_EINVAL;
                goto out;
            }
            it->dim = n;
        }
    }
out:
    csv_close(&in);
    return rc;
}

static int read_tags(catalogue *c, const char *path, char *err, size_t errlen) {
    csv in;
    char *fl[MAX_FIELDS];
    int rc = 0;
    int nf = csv_open(&in, path, fl, err, errlen);
    static const char *const tag_cols[] = {"tag", "tags", "label", NULL};
    int cid = find_col(fl, nf, item_cols), ctag = find_col(fl, nf, tag_cols);
    if (nf < 0 || cid < 0 || ctag < 0) {
        if (nf >= 0)
            set_err(err, errlen, "%s: the header needs an item id column and a tag column",
                    path);
        rc = nf < 0 ? nf : REC_EINVAL;
        goto out;
    }
    while ((nf = csv_next(&in, fl)) != 0) {
        if (nf == REC_ENOMEM) {
            rc = REC_ENOMEM;
            goto out;
        }
        if (nf <= cid || nf <= ctag) {
            set_err(err, errlen, "%s:%u: %s", path, in.line,
                    nf < 0 ? "unterminated quote" : "too few fields");
            rc = REC_EINVAL;
            goto out;
        }
        char key[REC_ID_MAX];
        int kl = field_key(fl[cid], key);
        uint32_t idx = kl > 0 ? rec_idmap_find(&c->ids, key, (size_t)kl) : REC_IDX_NONE;
        if (idx == REC_IDX_NONE)
            continue; /* a tag of an item the item file does not list */
        /* each word of the tag: one signed, hashed dimension */
        const char *p = fl[ctag];
        while (*p) {
            while (*p && !isalnum((unsigned char)*p))
                p++;
            const char *w = p;
            while (*p && isalnum((unsigned char)*p))
                p++;
            if (p > w) {
                uint64_t h = word_hash(w, (size_t)(p - w));
                c->it[idx].tags[h % TAG_DIMS] += (h >> 63) ? -1.0f : 1.0f;
                c->has_tags = 1;
            }
        }
    }
out:
    csv_close(&in);
    return rc;
}

/* msgpack of {title = ..., categories = [...]} */
static int item_props(const catalogue *c, const cat_item *it, msgpack_sbuffer *sb) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    int ncat = __builtin_popcountll(it->cats);
    int rc = msgpack_pack_map(&pk, (it->title ? 1u : 0u) + 1);
    if (it->title)
        rc = rc || msgpack_pack_str_with_body(&pk, "title", 5) ||
             msgpack_pack_str_with_body(&pk, it->title, strlen(it->title));
    rc = rc || msgpack_pack_str_with_body(&pk, "categories", 10) ||
         msgpack_pack_array(&pk, (size_t)ncat);
    for (int k = 0; k < c->ncats; k++)
        if (it->cats >> k & 1)
            rc = rc || msgpack_pack_str_with_body(&pk, c->cats[k], strlen(c->cats[k]));
    return rc ? REC_ENOMEM : 0;
}

int rec_eval_load_items(rec_engine *e, const char *items_path,
                        const char *tags_path, size_t *loaded, char *err,
                        size_t errlen) {
    catalogue c;
    memset(&c, 0, sizeof c);
    rec_idmap_init(&c.ids);
    int rc = read_items(&c, items_path, err, errlen);
    if (!rc && tags_path)
        rc = read_tags(&c, tags_path, err, errlen);
    uint32_t dim = (uint32_t)c.ncats + (c.has_tags ? TAG_DIMS : 0);
    float *v = calloc(dim ? dim : 1, sizeof *v);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    if (!v && !rc)
        rc = REC_ENOMEM;
    for (size_t i = 0; !rc && i < c.n; i++) {
        cat_item *it = &c.it[i];
        rec_vecarg va = {"content", NULL, 0};
        if (it->vec) {
            va.v = it->vec;
            va.dim = it->dim;
        } else if (dim) {
            double norm = 0, tnorm = 0;
            for (uint32_t d = 0; d < TAG_DIMS; d++)
                tnorm += (double)it->tags[d] * (double)it->tags[d];
            for (uint32_t d = 0; d < dim; d++) {
                if (d < (uint32_t)c.ncats)
                    v[d] = (it->cats >> d & 1) ? 1.0f : 0.0f;
                else /* tags together weigh as much as one category */
                    v[d] = tnorm > 0 ? (float)((double)it->tags[d - c.ncats] / sqrt(tnorm)) : 0.0f;
                norm += (double)v[d] * (double)v[d];
            }
            if (norm > 0) {
                for (uint32_t d = 0; d < dim; d++)
                    v[d] = (float)((double)v[d] / sqrt(norm));
                va.v = v;
                va.dim = dim;
            }
        }
        sb.size = 0;
        if ((rc = item_props(&c, it, &sb)))
            break;
        rc = rec_engine_put(e, REC_KIND_ITEM, it->key, (size_t)it->klen, sb.data, sb.size,
                            -1, &va, va.v ? 1 : 0, NULL);
        if (rc) {
            set_err(err, errlen, "%s:%u: %s", items_path, it->line,
                    rec_engine_errmsg(e)[0] ? rec_engine_errmsg(e) : rec_strerror(rc));
            break;
        }
        if ((i + 1) % COMMIT_EVERY == 0 && (rc = rec_engine_commit(e)))
            set_err(err, errlen, "commit: %s", rec_engine_errmsg(e));
    }
    if (!rc && (rc = rec_engine_commit(e)))
        set_err(err, errlen, "commit: %s", rec_engine_errmsg(e));
    if (!rc && loaded)
        *loaded = c.n;
    msgpack_sbuffer_destroy(&sb);
    free(v);
    for (size_t i = 0; i < c.n; i++) {
        free(c.it[i].title);
        free(c.it[i].vec);
    }
    free(c.it);
    rec_idmap_close(&c.ids);
    return rc;
}

/* ---- (user, item) pairs for the baselines ---------------------------------------------- */

/* A pair as one key of a rec_u64set. */
static uint64_t pair_key(uint32_t u, uint32_t i) { return (uint64_t)u << 32 | i; }

/* ---- arms, tasks, results -------------------------------------------------------------- */

typedef enum { ARM_PIPELINE, ARM_DEFAULT, ARM_STRATEGY, ARM_POPULAR, ARM_RANDOM } arm_kind;
enum { PROTO_PREQ = 1, PROTO_HOLD = 2 };

typedef struct arm {
    arm_kind kind;
    char name[64];  /* pipeline or strategy */
    char label[80]; /* as printed */
    int uses_ials;  /* its strategies or policies read the batch models */
    int uses_ease;  /* (set by check_arms before the log is read) */
} arm;

typedef struct result {
    atomic_int done;
    int failed;
    char err[512];
    double seconds;
    /* prequential */
    uint64_t scored, hits;
    double rr;
    uint64_t tenth_scored[10], tenth_hits[10];
    uint64_t curve_scored[CURVE_POINTS], curve_hits[CURVE_POINTS];
    size_t covered, catalogue;
    /* holdout */
    uint64_t users;
    double recall, ndcg, precision, hr;
    uint64_t fed;
    double feed_seconds;  /* feeding the training part */
    double train_seconds; /* the batch models after it */
    int trained_ials, trained_ease; /* trained at least once for the arm */
} result;

typedef struct eval_ctx {
    const rec_eval_log *log;
    uint32_t k;
    const char *scripts, *policies, *items, *tags;
    const char *connect;     /* replay against a running server, or NULL */
    int train_all;           /* train ials and ease for every arm (--train-all) */
    uint64_t train_every;
    uint64_t seed;
    uint8_t *is_test;        /* per event of the log, holdout */
    uint32_t *test_off;      /* per user: test items in test_items[off[u]..off[u+1]) */
    uint32_t *test_items;    /* sorted per user */
    double last_ts;
    atomic_size_t work_done;
} eval_ctx;

typedef struct task {
    const arm *a;
    int proto;
    result r;
} task;

/* One arm on one temporary database. */
typedef struct runner {
    const eval_ctx *x;
    const arm *a;
    result *r;
    rec_harness h;       /* scripted arms: the engine, or the server */
    int opened;          /* h was opened (close it) */
    int has_ials, has_ease; /* the batch models to train for this arm */
    rec_idmap shown;     /* distinct items recommended */
    /* baselines */
    uint32_t *count, *order, *pos, *pool;
    size_t npool;
    rec_u64set seen;
    uint64_t rng;
    uint32_t *list;      /* k answers, log item indexes (UINT32_MAX: not in log) */
    uint32_t nlist;
} runner;

/* The catalogue (--items), put before the scripts load. */
static int load_catalogue(rec_engine *e, void *ud, char *err, size_t errlen) {
    const eval_ctx *x = ud;
    size_t n;
    return rec_eval_load_items(e, x->items, x->tags, &n, err, errlen);
}

static int runner_open(runner *u, const eval_ctx *x, const arm *a, result *r) {
    memset(u, 0, sizeof *u);
    u->x = x;
    u->a = a;
    u->r = r;
    u->rng = x->seed ^ 0x5bd1e995u;
    rec_idmap_init(&u->shown);
    if (!(u->list = calloc(x->k, sizeof *u->list)))
        return REC_ENOMEM;
    if (a->kind == ARM_POPULAR || a->kind == ARM_RANDOM) {
        uint32_t n = x->log->items.next;
        u->count = calloc(n, sizeof *u->count);
        u->order = malloc(n * sizeof *u->order);
        u->pos = malloc(n * sizeof *u->pos);
        u->pool = malloc(n * sizeof *u->pool);
        if (!u->count || !u->order || !u->pos || !u->pool)
            return REC_ENOMEM;
        for (uint32_t i = 0; i < n; i++)
            u->order[i] = u->pos[i] = i;
        return 0;
    }
    rec_harness_opts ho = {.prog = "recd eval", .scripts = x->scripts, .policies = x->policies,
                           .connect = x->connect, .seed = x->seed,
                           .prepare = x->items ? load_catalogue : NULL,
                           .prepare_ud = (void *)x};
    u->opened = 1;
    int rc = rec_harness_open(&u->h, &ho);
    if (rc) {
        set_err(r->err, sizeof r->err, "%s", u->h.err);
        return rc;
    }
    /* what the server's worker would train, for the arms that read it
     * (a server is asked to train where the library would) */
    u->has_ials = x->connect || (u->h.has_ials && (a->uses_ials || x->train_all));
    u->has_ease = !x->connect && u->h.has_ease && (a->uses_ease || x->train_all);
    return 0;
}

static void runner_close(runner *u) {
    if (u->opened)
        rec_harness_close(&u->h);
    rec_idmap_close(&u->shown);
    free(u->count);
    free(u->order);
    free(u->pos);
    free(u->pool);
    rec_u64set_close(&u->seen);
    free(u->list);
}

static int call(runner *u, const char *method, msgpack_object *map) {
    msgpack_object params = {.type = MSGPACK_OBJECT_ARRAY};
    params.via.array.size = 1;
    params.via.array.ptr = map;
    int rc = rec_harness_call(&u->h, method, &params);
    if (rc)
        set_err(u->r->err, sizeof u->r->err, "%s", u->h.err);
    return rc;
}

/* The batch models the loaded policies ask for, trained in place of the
 * server's background worker (over the protocol: the server, asked). */
static void train_models(runner *u) {
    int ials = u->h.has_ials, ease = u->h.has_ease;
    u->h.has_ials = u->has_ials;
    u->h.has_ease = u->has_ease;
    rec_harness_train(&u->h);
    u->h.has_ials = ials;
    u->h.has_ease = ease;
    if (!u->h.cl) {
        u->r->trained_ials |= u->has_ials;
        u->r->trained_ease |= u->has_ease;
    }
}

/* Pop up one place per count so order stays sorted by count, descending. */
static void pop_bump(runner *u, uint32_t item) {
    uint32_t c = ++u->count[item];
    if (c == 1)
        u->pool[u->npool++] = item;
    uint32_t p = u->pos[item];
    while (p > 0 && u->count[u->order[p - 1]] < c) {
        uint32_t o = u->order[p - 1];
        u->order[p] = o;
        u->pos[o] = p;
        p--;
    }
    u->order[p] = item;
    u->pos[item] = p;
}

static int feed(runner *u, const rec_eval_event *ev) {
    const rec_eval_log *log = u->x->log;
    if (u->count) {
        pop_bump(u, ev->item);
        return rec_u64set_add(&u->seen, pair_key(ev->user, ev->item));
    }
    size_t ul, il;
    const char *uk = rec_idmap_key(&log->users, ev->user, &ul);
    const char *ik = rec_idmap_key(&log->items, ev->item, &il);
    msgpack_object_kv kv[5] = {
        {rec_harness_str("user", 4), rec_harness_id(uk, ul)},
        {rec_harness_str("item", 4), rec_harness_id(ik, il)},
        {rec_harness_str("type", 4), rec_harness_str(log->types[ev->type], strlen(log->types[ev->type]))},
        {rec_harness_str("ts", 2), {.type = MSGPACK_OBJECT_FLOAT64, .via.f64 = ev->ts}},
        {rec_harness_str("value", 5), {.type = MSGPACK_OBJECT_FLOAT64, .via.f64 = (double)ev->rating}},
    };
    msgpack_object map = {.type = MSGPACK_OBJECT_MAP};
    map.via.map.size = 5;
    map.via.map.ptr = kv;
    return call(u, "event.add", &map);
}

static int note_shown(runner *u, const char *key, size_t kl) {
    uint32_t idx;
    int created;
    return rec_idmap_intern(&u->shown, key, kl, &idx, &created);
}

/* The arm's top-k for user into u->list. */
static int recommend(runner *u, uint32_t user) {
    const eval_ctx *x = u->x;
    const rec_eval_log *log = x->log;
    u->nlist = 0;
    if (u->a->kind == ARM_POPULAR) {
        for (uint32_t p = 0; p < log->items.next && u->nlist < x->k; p++) {
            uint32_t it = u->order[p];
            if (!u->count[it])
                break;
            if (!rec_u64set_has(&u->seen, pair_key(user, it)))
                u->list[u->nlist++] = it;
        }
    } else if (u->a->kind == ARM_RANDOM) {
        for (uint32_t tries = 0; tries < 20 * x->k && u->nlist < x->k && u->npool; tries++) {
            uint32_t it = u->pool[mix(&u->rng) % u->npool];
            int dup = rec_u64set_has(&u->seen, pair_key(user, it));
            for (uint32_t j = 0; j < u->nlist && !dup; j++)
                dup = u->list[j] == it;
            if (!dup)
                u->list[u->nlist++] = it;
        }
    } else {
        size_t ul;
        const char *uk = rec_idmap_key(&log->users, user, &ul);
        /* a preview: these lists were never shown, so nothing is recorded
         * and no policy counts them as impressions */
        /* served at the log's clock, in-process and over the protocol */
        msgpack_object_kv kv[5] = {
            {rec_harness_str("user", 4), rec_harness_id(uk, ul)},
            {rec_harness_str("n", 1), {.type = MSGPACK_OBJECT_POSITIVE_INTEGER, .via.u64 = x->k}},
            {rec_harness_str("record", 6), {.type = MSGPACK_OBJECT_BOOLEAN, .via.boolean = false}},
        };
        uint32_t nkv = 3;
        if (u->a->kind != ARM_DEFAULT)
            kv[nkv++] = (msgpack_object_kv){rec_harness_str(u->a->kind == ARM_STRATEGY ? "strategy" : "pipeline", 8),
                                            rec_harness_str(u->a->name, strlen(u->a->name))};
        if (rec_clock_get() > 0)
            kv[nkv++] = (msgpack_object_kv){rec_harness_str("now", 3),
                                            {.type = MSGPACK_OBJECT_FLOAT64, .via.f64 = rec_clock_get()}};
        msgpack_object map = {.type = MSGPACK_OBJECT_MAP};
        map.via.map.size = nkv;
        map.via.map.ptr = kv;
        int rc = call(u, "rec.recommend", &map);
        if (rc)
            return rc;
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        size_t off = 0;
        rc = msgpack_unpack_next(&up, u->h.answer, u->h.answer_len, &off) == MSGPACK_UNPACK_SUCCESS
                 ? 0 : REC_EPROTOCOL;
        const msgpack_object *items = NULL;
        if (!rc && up.data.type == MSGPACK_OBJECT_MAP)
            for (uint32_t i = 0; i < up.data.via.map.size; i++) {
                const msgpack_object_kv *p = &up.data.via.map.ptr[i];
                if (p->key.type == MSGPACK_OBJECT_STR && p->key.via.str.size == 5 &&
                    !memcmp(p->key.via.str.ptr, "items", 5) && p->val.type == MSGPACK_OBJECT_ARRAY)
                    items = &p->val;
            }
        for (uint32_t i = 0; !rc && items && i < items->via.array.size && u->nlist < x->k; i++) {
            const msgpack_object *h = &items->via.array.ptr[i];
            const msgpack_object *id = NULL;
            for (uint32_t j = 0; h->type == MSGPACK_OBJECT_MAP && j < h->via.map.size; j++)
                if (h->via.map.ptr[j].key.type == MSGPACK_OBJECT_STR &&
                    h->via.map.ptr[j].key.via.str.size == 2 &&
                    !memcmp(h->via.map.ptr[j].key.via.str.ptr, "id", 2))
                    id = &h->via.map.ptr[j].val;
            char key[REC_ID_MAX];
            int kl = -1;
            if (id && id->type == MSGPACK_OBJECT_POSITIVE_INTEGER && id->via.u64 <= INT64_MAX)
                kl = rec_id_int(key, (int64_t)id->via.u64);
            else if (id && id->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
                kl = rec_id_int(key, id->via.i64);
            else if (id && id->type == MSGPACK_OBJECT_STR)
                kl = rec_id_str(key, id->via.str.ptr, id->via.str.size);
            if (kl <= 0)
                continue;
            rc = note_shown(u, key, (size_t)kl);
            u->list[u->nlist++] = rec_idmap_find(&log->items, key, (size_t)kl);
        }
        msgpack_unpacked_destroy(&up);
        if (rc == REC_EPROTOCOL)
            set_err(u->r->err, sizeof u->r->err, "rec.recommend: unreadable answer");
        return rc;
    }
    for (uint32_t i = 0; i < u->nlist; i++) {
        size_t kl;
        const char *key = rec_idmap_key(&log->items, u->list[i], &kl);
        int rc = note_shown(u, key, kl);
        if (rc)
            return rc;
    }
    return 0;
}

static size_t catalogue_of(const runner *u) {
    if (u->h.cl)
        return u->x->log->items.live;
    return u->h.e ? rec_engine_count(u->h.e, REC_KIND_ITEM) : u->npool;
}

static void run_prequential(runner *u) {
    const eval_ctx *x = u->x;
    const rec_eval_log *log = x->log;
    result *r = u->r;
    uint32_t *uev = calloc(log->users.next ? log->users.next : 1, sizeof *uev);
    uint64_t every = x->train_every ? x->train_every : (log->n / 10 > 1000 ? log->n / 10 : 1000);
    int rc = uev ? 0 : REC_ENOMEM;
    double t0 = mono();
    for (size_t i = 0; !rc && i < log->n; i++) {
        const rec_eval_event *ev = &log->ev[i];
        rec_clock_set(ev->ts);
        if (uev[ev->user]) {
            if ((rc = recommend(u, ev->user)))
                break;
            uint32_t rank = 0;
            for (uint32_t j = 0; j < u->nlist && !rank; j++)
                if (u->list[j] == ev->item)
                    rank = j + 1;
            size_t tenth = i * 10 / log->n, cp = i * CURVE_POINTS / log->n;
            r->scored++;
            r->tenth_scored[tenth]++;
            r->curve_scored[cp]++;
            if (rank) {
                r->hits++;
                r->tenth_hits[tenth]++;
                r->curve_hits[cp]++;
                r->rr += rec_eval_rr(rank);
            }
        }
        if ((rc = feed(u, ev)))
            break;
        uev[ev->user]++;
        if ((u->has_ials || u->has_ease) && (i + 1) % every == 0)
            train_models(u);
        atomic_fetch_add_explicit((atomic_size_t *)&x->work_done, 1, memory_order_relaxed);
    }
    r->seconds = mono() - t0;
    r->covered = u->shown.live;
    r->catalogue = catalogue_of(u);
    if (rc == REC_ENOMEM && !r->err[0])
        set_err(r->err, sizeof r->err, "out of memory");
    r->failed = rc != 0;
    free(uev);
}

static int in_sorted(const uint32_t *a, size_t n, uint32_t v) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] == v)
            return 1;
        if (a[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

static void run_holdout(runner *u) {
    const eval_ctx *x = u->x;
    const rec_eval_log *log = x->log;
    result *r = u->r;
    int rc = 0;
    double t0 = mono();
    for (size_t i = 0; i < log->n; i++) {
        if (x->is_test[i])
            continue;
        rec_clock_set(log->ev[i].ts);
        if ((rc = feed(u, &log->ev[i])))
            break;
        r->fed++;
        atomic_fetch_add_explicit((atomic_size_t *)&x->work_done, 1, memory_order_relaxed);
    }
    r->feed_seconds = mono() - t0;
    double t1 = mono();
    if (!rc && (u->has_ials || u->has_ease))
        train_models(u);
    r->train_seconds = mono() - t1;
    rec_clock_set(x->last_ts);
    uint8_t *hit = calloc(x->k, 1);
    if (!hit)
        rc = REC_ENOMEM;
    for (uint32_t user = 0; !rc && user < log->users.next; user++) {
        size_t nt = x->test_off[user + 1] - x->test_off[user];
        if (!nt)
            continue;
        if ((rc = recommend(u, user)))
            break;
        memset(hit, 0, x->k);
        for (uint32_t j = 0; j < u->nlist; j++)
            hit[j] = u->list[j] != REC_IDX_NONE &&
                     in_sorted(x->test_items + x->test_off[user], nt, u->list[j]);
        r->users++;
        r->recall += rec_eval_recall(hit, x->k, nt);
        r->ndcg += rec_eval_ndcg(hit, x->k, nt);
        r->precision += rec_eval_precision(hit, x->k);
        r->hr += count_hits(hit, x->k) > 0;
        atomic_fetch_add_explicit((atomic_size_t *)&x->work_done, 1, memory_order_relaxed);
    }
    free(hit);
    r->seconds = mono() - t0;
    r->covered = u->shown.live;
    r->catalogue = catalogue_of(u);
    if (rc == REC_ENOMEM && !r->err[0])
        set_err(r->err, sizeof r->err, "out of memory");
    r->failed = rc != 0;
}

static void run_task(const eval_ctx *x, task *t) {
    runner u;
    int rc = runner_open(&u, x, t->a, &t->r);
    if (!rc) {
        if (t->proto == PROTO_PREQ)
            run_prequential(&u);
        else
            run_holdout(&u);
    } else {
        t->r.failed = 1;
        if (!t->r.err[0])
            set_err(t->r.err, sizeof t->r.err, "%s", rec_strerror(rc));
    }
    runner_close(&u);
    rec_clock_set(0);
    atomic_store(&t->r.done, 1);
}

/* ---- the holdout split ------------------------------------------------------------------ */

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Each user's events shuffled (Fisher-Yates, splitmix64 from seed), the
 * first round(share * n) of them test; users with one event keep it for
 * training. The test items of a user are the distinct items of their test
 * events they never met in training. */
static int make_split(eval_ctx *x, double share) {
    const rec_eval_log *log = x->log;
    uint32_t nu = log->users.next;
    uint32_t *off = calloc((size_t)nu + 1, sizeof *off), *idx = malloc(log->n * sizeof *idx),
             *fill = calloc((size_t)nu + 1, sizeof *fill);
    x->is_test = calloc(log->n, 1);
    x->test_off = calloc((size_t)nu + 1, sizeof *x->test_off);
    x->test_items = malloc(log->n * sizeof *x->test_items);
    rec_u64set train;
    rec_u64set_init(&train);
    int rc = off && idx && fill && x->is_test && x->test_off && x->test_items ? 0 : REC_ENOMEM;
    for (size_t i = 0; !rc && i < log->n; i++)
        off[log->ev[i].user + 1]++;
    for (uint32_t u = 0; !rc && u < nu; u++)
        off[u + 1] += off[u];
    for (size_t i = 0; !rc && i < log->n; i++) {
        uint32_t u = log->ev[i].user;
        idx[off[u] + fill[u]++] = (uint32_t)i;
    }
    uint64_t rng = x->seed;
    for (uint32_t u = 0; !rc && u < nu; u++) {
        uint32_t *e = idx + off[u], n = off[u + 1] - off[u];
        for (uint32_t i = n; i > 1; i--) {
            uint32_t j = (uint32_t)(mix(&rng) % i), t = e[i - 1];
            e[i - 1] = e[j];
            e[j] = t;
        }
        uint32_t nt = n > 1 ? (uint32_t)floor(share * n + 0.5) : 0;
        if (nt >= n)
            nt = n - 1;
        for (uint32_t i = 0; i < nt; i++)
            x->is_test[e[i]] = 1;
        for (uint32_t i = nt; i < n && !rc; i++)
            rc = rec_u64set_add(&train, pair_key(u, log->ev[e[i]].item));
    }
    size_t m = 0;
    for (uint32_t u = 0; !rc && u < nu; u++) {
        x->test_off[u] = (uint32_t)m;
        size_t start = m;
        for (uint32_t i = off[u]; i < off[u + 1]; i++) {
            uint32_t ev = idx[i];
            if (x->is_test[ev] && !rec_u64set_has(&train, pair_key(u, log->ev[ev].item)))
                x->test_items[m++] = log->ev[ev].item;
        }
        qsort(x->test_items + start, m - start, sizeof *x->test_items, cmp_u32);
        size_t w = start; /* distinct */
        for (size_t i = start; i < m; i++)
            if (w == start || x->test_items[w - 1] != x->test_items[i])
                x->test_items[w++] = x->test_items[i];
        m = w;
    }
    if (!rc)
        x->test_off[nu] = (uint32_t)m;
    free(off);
    free(idx);
    free(fill);
    rec_u64set_close(&train);
    return rc;
}

/* ---- running the tasks -------------------------------------------------------------------- */

typedef struct pool {
    const eval_ctx *x;
    task *t;
    size_t n;
    atomic_size_t next;
} pool;

static void *worker(void *p_) {
    pool *p = p_;
    for (;;) {
        size_t i = atomic_fetch_add(&p->next, 1);
        if (i >= p->n)
            return NULL;
        run_task(p->x, &p->t[i]);
    }
}

static void progress(const eval_ctx *x, size_t total, double t0, int final) {
    size_t done = atomic_load_explicit((atomic_size_t *)&x->work_done, memory_order_relaxed);
    double el = mono() - t0, f = total ? (double)done / (double)total : 1.0;
    int bar = (int)(f * 30);
    fprintf(stderr, "\r[%-30.*s] %3.0f%%  %.0f s elapsed", bar,
            "##############################", f * 100, el);
    if (f > 0.01 && !final)
        fprintf(stderr, ", about %.0f s left ", el / f - el);
    else
        fprintf(stderr, "%20s", "");
    if (final)
        fputc('\n', stderr);
    fflush(stderr);
}

/* ---- output ------------------------------------------------------------------------------- */

static double ratio(double a, double b) { return b > 0 ? a / b : 0.0; }

static void print_table(FILE *f, const char *path, const rec_eval_log *log,
                        const eval_ctx *x, task *t, size_t nt, double share) {
    fprintf(f, "%s: %zu events, %u users, %u items, K=%u%s\n", path, log->n,
            log->users.live, log->items.live, x->k,
            log->skipped ? "" : "");
    if (log->skipped)
        fprintf(f, "(%zu rows below the rating threshold left out)\n", log->skipped);
    int any = 0;
    for (size_t i = 0; i < nt; i++)
        any |= t[i].proto == PROTO_PREQ;
    if (any) {
        fprintf(f, "\nprequential (test-then-learn, events in time order)\n");
        fprintf(f, "%-24s %8s %8s %8s %9s %9s   HR@%u by tenth of the stream\n", "pipeline",
                "HR@K", "MRR@K", "coverage", "scored", "events/s", x->k);
        for (size_t i = 0; i < nt; i++) {
            const result *r = &t[i].r;
            if (t[i].proto != PROTO_PREQ)
                continue;
            if (r->failed) {
                fprintf(f, "%-24s failed: %s\n", t[i].a->label, r->err);
                continue;
            }
            fprintf(f, "%-24s %8.4f %8.4f %8.4f %9llu %9.0f  ", t[i].a->label,
                    ratio((double)r->hits, (double)r->scored), ratio(r->rr, (double)r->scored),
                    ratio((double)r->covered, (double)r->catalogue),
                    (unsigned long long)r->scored, ratio((double)log->n, r->seconds));
            for (int d = 0; d < 10; d++)
                fprintf(f, " %.3f", ratio((double)r->tenth_hits[d], (double)r->tenth_scored[d]));
            fputc('\n', f);
        }
    }
    any = 0;
    for (size_t i = 0; i < nt; i++)
        any |= t[i].proto == PROTO_HOLD;
    if (any) {
        fprintf(f, "\nholdout (per-user random split, %.0f%% test, seed %llu; full ranking)\n",
                share * 100, (unsigned long long)x->seed);
        fprintf(f, "%-24s %9s %9s %12s %8s %8s %6s %9s %7s\n", "pipeline", "Recall@K",
                "NDCG@K", "Precision@K", "HR@K", "coverage", "users", "feed ev/s", "train s");
        for (size_t i = 0; i < nt; i++) {
            const result *r = &t[i].r;
            if (t[i].proto != PROTO_HOLD)
                continue;
            if (r->failed) {
                fprintf(f, "%-24s failed: %s\n", t[i].a->label, r->err);
                continue;
            }
            double n = (double)r->users;
            fprintf(f, "%-24s %9.4f %9.4f %12.4f %8.4f %8.4f %6llu %9.0f %7.2f\n",
                    t[i].a->label, ratio(r->recall, n), ratio(r->ndcg, n),
                    ratio(r->precision, n), ratio(r->hr, n),
                    ratio((double)r->covered, (double)r->catalogue), (unsigned long long)r->users,
                    ratio((double)r->fed, r->feed_seconds), r->train_seconds);
        }
    }
}

/* The length of the well-formed UTF-8 sequence at s (1..4), or 0 when the
 * byte at s does not start one (RFC 3629's table: no overlong forms, no
 * surrogates, nothing past U+10FFFF). */
static int utf8_len(const unsigned char *s) {
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    int n;
    unsigned char lo = 0x80, hi = 0xbf; /* the second byte's range */
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (int i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf) /* the NUL ends the check too */
            return 0;
    return n;
}

void rec_eval_json_str(FILE *f, const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    fputc('"', f);
    while (*p) {
        int n = utf8_len(p);
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\u%04x", *p);
        else if (n == 0)
            fputs("\xef\xbf\xbd", f); /* U+FFFD for this byte */
        else
            fwrite(p, 1, (size_t)n, f);
        p += n ? n : 1;
    }
    fputc('"', f);
}

static void print_json(FILE *f, const char *path, const rec_eval_log *log, const eval_ctx *x,
                       task *t, size_t nt, double share) {
    fprintf(f, "{\"log\": ");
    rec_eval_json_str(f, path);
    fprintf(f, ", \"events\": %zu, \"users\": %u, \"items\": %u, \"skipped\": %zu, \"k\": %u, "
               "\"results\": [",
            log->n, log->users.live, log->items.live, log->skipped, x->k);
    for (size_t i = 0; i < nt; i++) {
        const result *r = &t[i].r;
        fprintf(f, "%s\n  {\"pipeline\": ", i ? "," : "");
        rec_eval_json_str(f, t[i].a->label);
        fprintf(f, ", \"protocol\": \"%s\"", t[i].proto == PROTO_PREQ ? "prequential" : "holdout");
        if (r->failed) {
            fprintf(f, ", \"error\": ");
            rec_eval_json_str(f, r->err);
            fputc('}', f);
            continue;
        }
        fprintf(f, ", \"coverage\": %.6f, \"seconds\": %.3f, \"trained\": [%s%s%s]",
                ratio((double)r->covered, (double)r->catalogue), r->seconds,
                r->trained_ials ? "\"ials\"" : "",
                r->trained_ials && r->trained_ease ? ", " : "",
                r->trained_ease ? "\"ease\"" : "");
        if (t[i].proto == PROTO_PREQ) {
            fprintf(f, ", \"scored\": %llu, \"hr\": %.6f, \"mrr\": %.6f, \"events_per_s\": %.1f, "
                       "\"tenths\": [",
                    (unsigned long long)r->scored, ratio((double)r->hits, (double)r->scored),
                    ratio(r->rr, (double)r->scored), ratio((double)log->n, r->seconds));
            for (int d = 0; d < 10; d++)
                fprintf(f, "%s%.6f", d ? ", " : "",
                        ratio((double)r->tenth_hits[d], (double)r->tenth_scored[d]));
            fprintf(f, "], \"curve\": [");
            for (int d = 0; d < CURVE_POINTS; d++)
                fprintf(f, "%s%.6f", d ? ", " : "",
                        ratio((double)r->curve_hits[d], (double)r->curve_scored[d]));
            fprintf(f, "]}");
        } else {
            double n = (double)r->users;
            fprintf(f, ", \"users\": %llu, \"test_share\": %.3f, \"seed\": %llu, \"recall\": %.6f, "
                       "\"ndcg\": %.6f, \"precision\": %.6f, \"hr\": %.6f, \"fed\": %llu, "
                       "\"feed_events_per_s\": %.1f, \"train_seconds\": %.3f}",
                    (unsigned long long)r->users, share, (unsigned long long)x->seed,
                    ratio(r->recall, n), ratio(r->ndcg, n), ratio(r->precision, n),
                    ratio(r->hr, n), (unsigned long long)r->fed,
                    ratio((double)r->fed, r->feed_seconds), r->train_seconds);
        }
    }
    fprintf(f, "\n]}\n");
}

/* The prequential learning curve: HR@K in each twentieth of the stream,
 * one line per arm. */
static int write_svg(const char *path, const eval_ctx *x, task *t, size_t nt) {
    rec_chart_line *lines = calloc(nt ? nt : 1, sizeof *lines);
    double *pts = calloc((nt ? nt : 1) * CURVE_POINTS, sizeof *pts);
    int rc = -1;
    if (lines && pts) {
        size_t n = 0;
        for (size_t i = 0; i < nt; i++) {
            if (t[i].proto != PROTO_PREQ || t[i].r.failed)
                continue;
            double *y = pts + n * CURVE_POINTS;
            for (int d = 0; d < CURVE_POINTS; d++)
                y[d] = ratio((double)t[i].r.curve_hits[d], (double)t[i].r.curve_scored[d]);
            lines[n] = (rec_chart_line){.label = t[i].a->label, .y = y, .n = CURVE_POINTS};
            snprintf(lines[n].suffix, sizeof lines[n].suffix, " %.3f",
                     ratio((double)t[i].r.hits, (double)t[i].r.scored));
            n++;
        }
        char title[128];
        snprintf(title, sizeof title, "Prequential HR@%u over the stream (each point: one "
                 "twentieth of the events)", x->k);
        rc = rec_chart_svg(path, title, "share of the stream replayed", lines, n);
    }
    free(lines);
    free(pts);
    return rc;
}

/* ---- the command ---------------------------------------------------------------------- */

static void eval_usage(FILE *f) {
    fprintf(f,
            "usage: recd eval [options] LOG\n"
            "\n"
            "Replay an interaction log (CSV or TSV) through the engine and the\n"
            "scripts, and measure each pipeline on it.\n"
            "\n"
            "  --protocol P       prequential, holdout or both (default both)\n"
            "  -k, --k N          list length K (default 10)\n"
            "  --pipelines LIST   what to compare, comma-separated: default (the\n"
            "                     default pipeline), a pipeline name,\n"
            "                     strategy:NAME (one strategy alone), baseline:popular\n"
            "                     (live counts), baseline:random\n"
            "                     (default: default,baseline:popular,baseline:random)\n"
            "  --strategies       also every strategy of the scripts folder alone\n"
            "  --scripts DIR      strategies and pipelines.lua (default: beside recd)\n"
            "  --policies DIR     policies (default: beside recd)\n"
            "  --columns LIST     the file's columns in order when it has no header:\n"
            "                     user,item,rating,ts,type or - (e.g. user,item,rating,ts)\n"
            "  --header           with --columns: skip the first line\n"
            "  --sep C            ',' or 'tab' (default: tab if the first line has one)\n"
            "  --min-rating X     leave out rows rated below X\n"
            "  --type NAME        event type of rows without a type column (click)\n"
            "  --type-map A=B,..  rename event types as read\n"
            "  --items FILE       an item file to load first (id, title, categories or\n"
            "                     genres separated by |, vector), with --tags FILE\n"
            "  --test-share F     holdout: share of each user's events held out (0.2)\n"
            "  --seed N           the holdout split, the random baseline, the engine's\n"
            "                     generator and the scripts' math.random (42)\n"
            "  --train-every N    prequential: retrain ials and ease every N events (n/10)\n"
            "  --train-all        train ials and ease for every arm, not only for those\n"
            "                     whose strategies or policies read them\n"
            "  --limit N          read only the first N events of the file\n"
            "  --connect ADDR     replay against a running server (host:port or a\n"
            "                     Unix socket) instead of temporary databases: one\n"
            "                     pipeline and one protocol; it keeps the events\n"
            "  --jobs N           arms run in parallel (default: online CPUs)\n"
            "  --json             results as JSON on stdout\n"
            "  --svg FILE         draw the prequential learning curve\n"
            "  --quiet            no progress bar\n");
}

static int add_arm(arm *arms, int *n, const char *spec) {
    if (*n >= MAX_ARMS) {
        fprintf(stderr, "recd eval: at most %d pipelines\n", MAX_ARMS);
        return -1;
    }
    arm *a = &arms[*n];
    memset(a, 0, sizeof *a);
    const char *name = spec;
    if (!strcmp(spec, "default")) {
        a->kind = ARM_DEFAULT;
    } else if (!strcmp(spec, "baseline:popular")) {
        a->kind = ARM_POPULAR;
    } else if (!strcmp(spec, "baseline:random")) {
        a->kind = ARM_RANDOM;
    } else if (!strncmp(spec, "strategy:", 9)) {
        a->kind = ARM_STRATEGY;
        name = spec + 9;
    } else if (!strncmp(spec, "baseline:", 9)) {
        fprintf(stderr, "recd eval: unknown baseline '%s' (popular or random)\n", spec + 9);
        return -1;
    } else {
        a->kind = ARM_PIPELINE;
    }
    if (!*name || strlen(name) >= sizeof a->name) {
        fprintf(stderr, "recd eval: bad pipeline name '%s'\n", spec);
        return -1;
    }
    snprintf(a->name, sizeof a->name, "%s", name);
    snprintf(a->label, sizeof a->label, "%s", spec);
    for (int i = 0; i < *n; i++)
        if (!strcmp(arms[i].label, a->label))
            return 0; /* named twice */
    ++*n;
    return 0;
}

static int add_strategies(arm *arms, int *n, const char *dir) {
    if (!dir) {
        fprintf(stderr, "recd eval: --strategies needs a scripts folder\n");
        return -1;
    }
    char cmd[1200];
    if (strchr(dir, '\'')) {
        fprintf(stderr, "recd eval: unusable scripts folder name\n");
        return -1;
    }
    snprintf(cmd, sizeof cmd, "ls '%s'", dir);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    char line[512];
    int rc = 0;
    while (!rc && fgets(line, sizeof line, p)) {
        size_t l = strcspn(line, "\n");
        line[l] = 0;
        if (l < 5 || strcmp(line + l - 4, ".lua") || !strcmp(line, "pipelines.lua"))
            continue;
        line[l - 4] = 0;
        char spec[600];
        snprintf(spec, sizeof spec, "strategy:%s", line);
        rc = add_arm(arms, n, spec);
    }
    pclose(p);
    return rc;
}

static int cmp_strp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Which batch models the script DIR/NAME.lua reads, from its text: EASE
 * when it names the method (db:ease(...), db.ease) or the model ("ease"),
 * iALS when it names the "ials" space. A file that cannot be read counts
 * as reading both. */
static void script_reads(const char *dir, const char *name, int *ials, int *ease) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s.lua", dir ? dir : ".", name);
    FILE *f = fopen(path, "rb");
    char *src = NULL;
    size_t len = 0;
    if (f) {
        size_t cap = 0;
        char buf[8192];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
            char *g = len + n + 1 > cap ? realloc(src, cap = 2 * (len + n + 1)) : src;
            if (!g) {
                free(src);
                src = NULL;
                break;
            }
            src = g;
            memcpy(src + len, buf, n);
            len += n;
        }
        if (ferror(f)) {
            free(src);
            src = NULL;
        }
        fclose(f);
    }
    if (!src) {
        *ials = *ease = 1;
        return;
    }
    src[len] = 0;
    /* db:ease(...), db.ease (handed to a helper), or the name as a string */
    for (const char *p = src; (p = strstr(p, "ease")); p += 4) {
        char next = p[4];
        if (p > src && (p[-1] == ':' || p[-1] == '.') && next != '_' && !isalnum((unsigned char)next))
            *ease = 1;
    }
    if (strstr(src, "\"ease\"") || strstr(src, "'ease'"))
        *ease = 1;
    if (strstr(src, "\"ials\"") || strstr(src, "'ials'"))
        *ials = 1;
    free(src);
}

/* What a pipeline's strategies and rerank policies read (script_reads). */
static void pipeline_reads(const rec_pipeline_pipeline *p, rec_script_rt *rt, const eval_ctx *x,
                           int *ials, int *ease) {
    for (int i = 0; i < p->nstrategies; i++)
        if (rec_script_has(rt, REC_SCRIPT_STRATEGY, p->strategies[i].name, "recommend"))
            script_reads(x->scripts, p->strategies[i].name, ials, ease);
    rec_script_info in;
    for (size_t i = 0; i < rec_script_count(rt); i++) {
        if (rec_script_info_at(rt, i, &in) || in.kind != REC_SCRIPT_POLICY || !in.loaded ||
            !rec_script_has(rt, REC_SCRIPT_POLICY, in.name, "rerank"))
            continue;
        int listed = p->all_policies;
        for (int k = 0; k < p->npolicies && !listed; k++)
            listed = !strcmp(p->policies[k], in.name);
        if (listed)
            script_reads(x->policies, in.name, ials, ease);
    }
}

/* Before the log is read: load the scripts once, check every arm's name
 * (an unknown one is reported with the names known, exit status 2) and
 * note which batch models each arm reads, so that ials and ease train
 * only for those (every arm with --train-all). 0, or the exit status
 * after a message on stderr. */
static int check_arms(const eval_ctx *x, arm *arms, int narms) {
    int scripted = 0;
    for (int i = 0; i < narms; i++)
        scripted += arms[i].kind != ARM_POPULAR && arms[i].kind != ARM_RANDOM;
    if (!scripted)
        return 0;
    eval_ctx px = *x;
    px.items = px.tags = NULL; /* the names alone: no catalogue */
    px.connect = NULL;
    arm probe = {.kind = ARM_DEFAULT};
    result r;
    memset(&r, 0, sizeof r);
    runner u;
    if (runner_open(&u, &px, &probe, &r)) {
        fprintf(stderr, "recd eval: %s\n", r.err[0] ? r.err : "cannot load the scripts");
        runner_close(&u);
        return 1;
    }
    const rec_pipeline_config *cfg = rec_dispatch_pipelines(u.h.d);
    int status = 0;
    for (int i = 0; i < narms && !status; i++) {
        arm *a = &arms[i];
        const rec_pipeline_pipeline *p = NULL;
        if (a->kind == ARM_DEFAULT) {
            p = rec_pipeline_pick(cfg, cfg->default_name, "", 0, NULL);
            /* with an experiment, any of its arms */
            for (int k = 0; k < cfg->narms; k++) {
                const rec_pipeline_pipeline *q = rec_pipeline_pick(cfg, cfg->arms[k].pipeline, "", 0, NULL);
                if (q)
                    pipeline_reads(q, u.h.rt, x, &a->uses_ials, &a->uses_ease);
            }
        } else if (a->kind == ARM_PIPELINE && strcmp(a->name, "builtin")) {
            if (!(p = rec_pipeline_pick(cfg, a->name, "", 0, NULL)))
                status = 2;
        } else if (a->kind == ARM_STRATEGY) {
            if (rec_script_has(u.h.rt, REC_SCRIPT_STRATEGY, a->name, "recommend"))
                script_reads(x->scripts, a->name, &a->uses_ials, &a->uses_ease);
            else
                status = 2;
        }
        if (p)
            pipeline_reads(p, u.h.rt, x, &a->uses_ials, &a->uses_ease);
        if (!status)
            continue;
        fprintf(stderr, "recd eval: unknown %s '%s'; known: default, builtin",
                a->kind == ARM_STRATEGY ? "strategy" : "pipeline", a->name);
        const char *names[REC_PIPELINE_MAX_PIPELINES];
        for (int k = 0; k < cfg->npipelines; k++)
            names[k] = cfg->pipelines[k].name;
        qsort(names, (size_t)cfg->npipelines, sizeof *names, cmp_strp);
        for (int k = 0; k < cfg->npipelines; k++)
            fprintf(stderr, ", %s", names[k]);
        rec_script_info in;
        for (size_t k = 0; k < rec_script_count(u.h.rt); k++)
            if (!rec_script_info_at(u.h.rt, k, &in) && in.kind == REC_SCRIPT_STRATEGY &&
                rec_script_has(u.h.rt, REC_SCRIPT_STRATEGY, in.name, "recommend"))
                fprintf(stderr, ", strategy:%s", in.name);
        fprintf(stderr, ", baseline:popular, baseline:random (pipelines from %s/pipelines.lua, "
                        "strategies from %s)\n", x->scripts, x->scripts);
    }
    runner_close(&u);
    return status;
}

static int parse_u64(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

int rec_eval_main(int argc, char **argv, const char *default_scripts,
                  const char *default_policies) {
    rec_eval_read_opts ro;
    rec_eval_read_opts_default(&ro);
    const char *path = NULL, *protocol = "both", *pipelines = NULL, *svg = NULL;
    const char *scripts = default_scripts, *policies = default_policies;
    const char *items = NULL, *tags = NULL, *connect = NULL;
    uint64_t k = 10, seed = 42, train_every = 0, limit = 0, jobs = 0;
    double share = 0.2;
    int json = 0, quiet = 0, strategies = 0, train_all = 0;
    enum { O_PROTOCOL = 256, O_PIPELINES, O_SCRIPTS, O_POLICIES, O_COLUMNS, O_SEP,
           O_MIN_RATING, O_TYPE, O_TYPE_MAP, O_ITEMS, O_TAGS, O_TEST_SHARE, O_SEED,
           O_TRAIN_EVERY, O_LIMIT, O_JOBS, O_SVG, O_CONNECT, O_JSON, O_QUIET, O_HEADER,
           O_STRATEGIES, O_TRAIN_ALL };
    static const struct option opts[] = {
        {"protocol", required_argument, NULL, O_PROTOCOL},
        {"k", required_argument, NULL, 'k'},
        {"pipelines", required_argument, NULL, O_PIPELINES},
        {"strategies", no_argument, NULL, O_STRATEGIES},
        {"scripts", required_argument, NULL, O_SCRIPTS},
        {"policies", required_argument, NULL, O_POLICIES},
        {"columns", required_argument, NULL, O_COLUMNS},
        {"header", no_argument, NULL, O_HEADER},
        {"sep", required_argument, NULL, O_SEP},
        {"min-rating", required_argument, NULL, O_MIN_RATING},
        {"type", required_argument, NULL, O_TYPE},
        {"type-map", required_argument, NULL, O_TYPE_MAP},
        {"items", required_argument, NULL, O_ITEMS},
        {"tags", required_argument, NULL, O_TAGS},
        {"test-share", required_argument, NULL, O_TEST_SHARE},
        {"seed", required_argument, NULL, O_SEED},
        {"train-every", required_argument, NULL, O_TRAIN_EVERY},
        {"train-all", no_argument, NULL, O_TRAIN_ALL},
        {"limit", required_argument, NULL, O_LIMIT},
        {"connect", required_argument, NULL, O_CONNECT},
        {"jobs", required_argument, NULL, O_JOBS},
        {"json", no_argument, NULL, O_JSON},
        {"svg", required_argument, NULL, O_SVG},
        {"quiet", no_argument, NULL, O_QUIET},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    rec_cli cli;
    rec_cli_init(&cli, "recd eval", argc, argv, "hk:", opts);
    for (int ch; (ch = rec_cli_next(&cli)) != REC_CLI_DONE;) {
        const char *v = cli.arg;
        int bad = 0;
        switch (ch) {
        case REC_CLI_ERROR:
            return 2;
        case 'h':
            eval_usage(stdout);
            return 0;
        case REC_CLI_OPERAND:
            if (path) {
                fprintf(stderr, "recd eval: one log at a time ('%s' and '%s')\n", path, v);
                return 2;
            }
            path = v;
            break;
        case O_JSON: json = 1; break;
        case O_QUIET: quiet = 1; break;
        case O_HEADER: ro.header = 1; break;
        case O_STRATEGIES: strategies = 1; break;
        case O_TRAIN_ALL: train_all = 1; break;
        case O_PROTOCOL: protocol = v; break;
        case 'k': bad = parse_u64(v, &k) || k == 0 || k > 1000; break;
        case O_PIPELINES: pipelines = v; break;
        case O_SCRIPTS: scripts = *v ? v : NULL; break;
        case O_POLICIES: policies = *v ? v : NULL; break;
        case O_COLUMNS: ro.columns = v; break;
        case O_SEP:
            ro.sep = !strcmp(v, "tab") || !strcmp(v, "\\t") || !strcmp(v, "\t") ? '\t'
                     : strlen(v) == 1                                          ? v[0]
                                                                               : 0;
            bad = ro.sep == 0 || ro.sep == '"';
            break;
        case O_MIN_RATING: bad = parse_num(v, &ro.min_rating); break;
        case O_TYPE:
            ro.type = v;
            bad = !*v || strlen(v) > 63;
            break;
        case O_TYPE_MAP: ro.type_map = v; break;
        case O_ITEMS: items = v; break;
        case O_TAGS: tags = v; break;
        case O_TEST_SHARE: bad = parse_num(v, &share) || !(share > 0 && share < 1); break;
        case O_SEED: bad = parse_u64(v, &seed); break;
        case O_TRAIN_EVERY: bad = parse_u64(v, &train_every); break;
        case O_LIMIT: bad = parse_u64(v, &limit); break;
        case O_JOBS: bad = parse_u64(v, &jobs) || jobs == 0 || jobs > 64; break;
        case O_SVG: svg = v; break;
        case O_CONNECT: connect = v; break;
        default: return 2; /* not reached: every option has its case */
        }
        if (bad) {
            const char *name = "?";
            for (const struct option *o = opts; o->name && *name == '?'; o++)
                if (o->val == ch)
                    name = o->name;
            fprintf(stderr, "recd eval: bad value '%s' for --%s\n", v, name);
            return 2;
        }
    }
    if (!path) {
        eval_usage(stderr);
        return 2;
    }
    int protos = !strcmp(protocol, "both")           ? PROTO_PREQ | PROTO_HOLD
                 : !strcmp(protocol, "prequential") ? PROTO_PREQ
                 : !strcmp(protocol, "holdout")     ? PROTO_HOLD
                                                    : 0;
    if (!protos) {
        fprintf(stderr, "recd eval: --protocol is prequential, holdout or both\n");
        return 2;
    }
    if (tags && !items) {
        fprintf(stderr, "recd eval: --tags needs --items\n");
        return 2;
    }
    arm arms[MAX_ARMS];
    int narms = 0;
    char list[2048];
    snprintf(list, sizeof list, "%s",
             pipelines ? pipelines : "default,baseline:popular,baseline:random");
    char *save = NULL;
    for (char *s = strtok_r(list, ",", &save); s; s = strtok_r(NULL, ",", &save)) {
        trim(&s);
        if (*s && add_arm(arms, &narms, s))
            return 2;
    }
    if (strategies && add_strategies(arms, &narms, scripts))
        return 2;
    if (!narms) {
        fprintf(stderr, "recd eval: nothing to compare\n");
        return 2;
    }
    if (connect) {
        int scripted = 0;
        for (int i = 0; i < narms; i++)
            scripted += arms[i].kind != ARM_POPULAR && arms[i].kind != ARM_RANDOM;
        if (scripted > 1 || protos == (PROTO_PREQ | PROTO_HOLD) || items) {
            fprintf(stderr, "recd eval: --connect replays into one server's data: give one "
                            "pipeline (baselines aside), one --protocol, and load the "
                            "catalogue into the server instead of --items\n");
            return 2;
        }
    }
    for (int i = 0; i < narms && !connect; i++)
        if (arms[i].kind != ARM_POPULAR && arms[i].kind != ARM_RANDOM && !scripts) {
            fprintf(stderr, "recd eval: '%s' needs a scripts folder (--scripts DIR)\n",
                    arms[i].label);
            return 2;
        }
    ro.limit = (size_t)limit;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        size_t pl = strlen(path);
        fprintf(stderr, "recd eval: %s is a folder; give the ratings file (e.g. %s%sratings.csv)\n",
                path, path, pl && path[pl - 1] == '/' ? "" : "/");
        return 2;
    }

    rec_log_set_level(REC_LOG_ERROR); /* the scripts' own chatter */
    eval_ctx x;
    memset(&x, 0, sizeof x);
    x.k = (uint32_t)k;
    x.scripts = scripts;
    x.policies = policies;
    x.items = items;
    x.tags = tags;
    x.connect = connect;
    x.train_all = train_all;
    x.train_every = train_every;
    x.seed = seed;
    /* names and the models each arm reads, before a long read and replay */
    int checked = connect ? 0 : check_arms(&x, arms, narms);
    if (checked)
        return checked;
    rec_eval_log log;
    memset(&log, 0, sizeof log);
    char err[1024] = "";
    double t0 = mono();
    if (rec_eval_log_read(&log, path, &ro, err, sizeof err)) {
        fprintf(stderr, "recd eval: %s\n", err[0] ? err : "cannot read the log");
        rec_eval_log_free(&log);
        return 1;
    }
    double read_s = mono() - t0;
    x.log = &log;
    x.last_ts = log.ev[log.n - 1].ts;
    atomic_init(&x.work_done, 0);
    int code = 1;
    task *t = calloc((size_t)narms * 2, sizeof *t);
    size_t nt = 0, total = 0;
    if (!t || ((protos & PROTO_HOLD) && make_split(&x, share))) {
        fprintf(stderr, "recd eval: out of memory\n");
        goto out;
    }
    /* the long runs first, so the pool ends together */
    for (int p = PROTO_PREQ; p <= PROTO_HOLD; p <<= 1)
        for (int i = 0; i < narms; i++)
            if (protos & p) {
                t[nt].a = &arms[i];
                t[nt].proto = p;
                nt++;
            }
    size_t held = 0, users_t = 0;
    if (protos & PROTO_HOLD) {
        for (size_t i = 0; i < log.n; i++)
            held += x.is_test[i];
        for (uint32_t u = 0; u < log.users.next; u++)
            users_t += x.test_off[u + 1] > x.test_off[u];
    }
    for (size_t i = 0; i < nt; i++)
        total += t[i].proto == PROTO_PREQ ? log.n : log.n - held + users_t;
    if (!jobs) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        jobs = c > 0 ? (uint64_t)c : 1;
    }
    if (jobs > nt)
        jobs = nt;
    (void)rec_vec_isa_name(); /* kernels chosen before the threads start */
    rec_space_ann_sync(1);      /* answers that do not depend on timing */
    pool pl = {.x = &x, .t = t, .n = nt};
    atomic_init(&pl.next, 0);
    pthread_t th[64];
    size_t started = 0;
    for (; started < jobs; started++)
        if (pthread_create(&th[started], NULL, worker, &pl))
            break;
    if (!started)
        worker(&pl);
    int tty = !quiet && isatty(2);
    double ts0 = mono();
    for (;;) {
        int all = 1;
        for (size_t i = 0; i < nt; i++)
            all &= atomic_load(&t[i].r.done) != 0;
        if (all)
            break;
        if (tty)
            progress(&x, total, ts0, 0);
        struct timespec ns = {0, 200 * 1000 * 1000};
        nanosleep(&ns, NULL);
    }
    for (size_t i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    if (tty)
        progress(&x, total, ts0, 1);
    if (json)
        print_json(stdout, path, &log, &x, t, nt, share);
    else {
        print_table(stdout, path, &log, &x, t, nt, share);
        printf("\nread in %.2f s; replayed in %.1f s on %llu threads\n", read_s,
               mono() - ts0, (unsigned long long)jobs);
    }
    code = 0;
    for (size_t i = 0; i < nt; i++)
        if (t[i].r.failed)
            code = 1;
    if (svg) {
        if (!(protos & PROTO_PREQ))
            fprintf(stderr, "recd eval: --svg draws the prequential curve; no prequential run\n");
        else if (write_svg(svg, &x, t, nt)) {
            fprintf(stderr, "recd eval: cannot write %s: %s\n", svg, strerror(errno));
            code = 1;
        }
    }
out:
    free(t);
    free(x.is_test);
    free(x.test_off);
    free(x.test_items);
    rec_eval_log_free(&log);
    return code;
}
