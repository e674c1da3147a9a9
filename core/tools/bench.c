/* bench.c - `recd bench` (see bench.h).
 *
 * One libuv loop drives every connection, like redis-benchmark's single
 * thread: on a small machine a thread per connection would measure the
 * scheduler more than the server. Each connection keeps a FIFO ring of
 * its requests in flight (recd answers a connection's requests in order,
 * and the ring checks that it does), double-buffers its output so one
 * write is in flight while the next batch accumulates, and frames replies
 * with rec_client_parse (bounded by rec_value_scan).
 *
 * Requests are packed straight into the output buffer with msgpack-c;
 * random ids come from a seeded xorshift generator, so two runs with the
 * same options send the same requests. Latencies are kept one float per
 * request and sorted at the end: n = 10^7 costs 40 MB.
 *
 * The optional load step (--load-items, --load-users) uses the blocking
 * client before any test starts.
 */
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <msgpack.h>
#include <uv.h>

#include "buf.h"
#include "cli.h"
#include "client.h"
#include "err.h"

#define MAX_TESTS 16
#define MAX_RUNS 15
#define PREFIX_MAX 64 /* bytes of --prefix */

/* ---- options ------------------------------------------------------------- */

typedef struct bench_opts {
    const char *host;       /* TCP host (default 127.0.0.1) */
    int port;               /* TCP port (default 7700) */
    const char *unix_path;  /* Unix socket; wins over host/port */
    const char *auth;       /* token for sys.auth on each connection */
    int clients;            /* -c */
    long requests;          /* -n */
    int pipeline;           /* -P */
    int runs;               /* repetitions of each test; medians reported */
    const char *tests;      /* -t, comma list */
    int quiet;
    int csv;
    uint64_t seed;
    uint32_t users;         /* random user ids u1..uN */
    uint32_t items;         /* random item ids i1..iN */
    long load_items;        /* item.put i1..iN with vectors before the tests */
    long load_users;        /* user.put u1..uN with "mf" vectors */
    int dim;                /* dimension of loaded vectors */
    const char *load_spaces;/* spaces of loaded item vectors */
    const char *prefix;     /* before every id: <prefix>u1, <prefix>i1 */
    int force;              /* write into a server that holds data */
} bench_opts;

/* ---- random -------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s) { /* xorshift64* */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* Uniform in 1..n. */
static uint32_t rng_id(uint64_t *s, uint32_t n) {
    return 1 + (uint32_t)((rng_next(s) >> 32) * (uint64_t)n >> 32);
}

static float rng_float(uint64_t *s) { /* uniform in [-1, 1) */
    return (float)((double)(rng_next(s) >> 40) / (double)(1 << 23) - 1.0);
}

/* ---- request generators -------------------------------------------------- */

static int pk_str(msgpack_packer *pk, const char *s, size_t n) {
    return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n);
}
#define PK_LIT(pk, lit) pk_str(pk, lit, sizeof(lit) - 1)

/* The id <o->prefix><kind><n>, e.g. bench-u12. */
static int pk_id(msgpack_packer *pk, const bench_opts *o, char kind, uint32_t n) {
    char s[PREFIX_MAX + 16];
    int len = snprintf(s, sizeof s, "%s%c%u", o->prefix, kind, n);
    return pk_str(pk, s, (size_t)len);
}

typedef struct gen_ctx {
    uint64_t *rng;
    const bench_opts *o;
} gen_ctx;

typedef int (*gen_fn)(msgpack_packer *pk, gen_ctx *g);

static int gen_ping(msgpack_packer *pk, gen_ctx *g) {
    (void)g;
    return msgpack_pack_array(pk, 0);
}

static int gen_event(msgpack_packer *pk, gen_ctx *g) {
    return msgpack_pack_array(pk, 1) || msgpack_pack_map(pk, 3) ||
           PK_LIT(pk, "user") || pk_id(pk, g->o, 'u', rng_id(g->rng, g->o->users)) ||
           PK_LIT(pk, "item") || pk_id(pk, g->o, 'i', rng_id(g->rng, g->o->items)) ||
           PK_LIT(pk, "type") || PK_LIT(pk, "click");
}

static int gen_recommend(msgpack_packer *pk, gen_ctx *g) {
    return msgpack_pack_array(pk, 1) || msgpack_pack_map(pk, 2) ||
           PK_LIT(pk, "user") || pk_id(pk, g->o, 'u', rng_id(g->rng, g->o->users)) ||
           PK_LIT(pk, "n") || msgpack_pack_int(pk, 10);
}

static int gen_similar(msgpack_packer *pk, gen_ctx *g) {
    return msgpack_pack_array(pk, 1) || msgpack_pack_map(pk, 2) ||
           PK_LIT(pk, "item") || pk_id(pk, g->o, 'i', rng_id(g->rng, g->o->items)) ||
           PK_LIT(pk, "n") || msgpack_pack_int(pk, 10);
}

static int gen_get(msgpack_packer *pk, gen_ctx *g) {
    return msgpack_pack_array(pk, 1) ||
           pk_id(pk, g->o, 'i', rng_id(g->rng, g->o->items));
}

typedef struct bench_test {
    const char *name;   /* -t name */
    const char *method;
    gen_fn gen;
    int writes;         /* stores something: events, recorded lists */
} bench_test;

static const bench_test all_tests[] = {
    {"ping", "sys.ping", gen_ping, 0},
    {"event", "event.add", gen_event, 1},
    {"recommend", "rec.recommend", gen_recommend, 1},
    {"similar", "rec.similar", gen_similar, 1},
    {"get", "item.get", gen_get, 0},
};

/* ---- one run of one test ------------------------------------------------- */

typedef struct bench_run bench_run;

typedef struct bench_conn {
    union {
        uv_handle_t h;
        uv_stream_t s;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } u;
    bench_run *run;
    uv_connect_t creq;
    uv_write_t wreq;
    int open;           /* handle initialised and not yet closed */
    int ready;          /* connected (and authenticated) */
    int writing;        /* wreq in flight, writing `flight` */
    rec_buf pending;    /* requests queued for the next write */
    rec_buf flight;     /* bytes of the write in flight */
    rec_buf in;         /* input not yet consumed */
    uint64_t *sent_ns;  /* ring of P send times, in flight order */
    uint32_t *sent_id;  /* ... and their msgids */
    uint32_t head;      /* oldest entry */
    uint32_t count;     /* entries in flight */
    uint32_t next_id;
} bench_conn;

struct bench_run {
    uv_loop_t loop;
    const bench_opts *o;
    const bench_test *t;
    bench_conn *conns;
    int nconn;
    int ready;          /* connections ready to start */
    uint64_t issued, done, errors;
    uint64_t t0, t1;    /* uv_hrtime at start and at the last answer */
    float *lat_us;      /* one per answered request */
    int finished;       /* all answered, or failed */
    int failed;
    char failmsg[256];
    char first_err[256];
    uint64_t rng;
    gen_ctx g;
    struct sockaddr_storage sa;
};

static int buf_write(void *data, const char *p, size_t n) {
    return rec_buf_append(data, p, n) ? -1 : 0;
}

static void close_all(bench_run *r);

static void run_fail(bench_run *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void run_fail(bench_run *r, const char *fmt, ...) {
    if (!r->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->failmsg, sizeof r->failmsg, fmt, ap);
        va_end(ap);
        r->failed = 1;
    }
    close_all(r);
}

static void on_close(uv_handle_t *h) { (void)h; }

static void close_all(bench_run *r) {
    r->finished = 1;
    for (int i = 0; i < r->nconn; i++) {
        bench_conn *c = &r->conns[i];
        if (c->open) {
            c->open = 0;
            uv_close(&c->u.h, on_close);
        }
    }
}

static void flush(bench_conn *c);

static void on_write(uv_write_t *req, int status) {
    bench_conn *c = req->data;
    c->writing = 0;
    rec_buf_clear(&c->flight);
    if (status < 0) {
        if (status != UV_ECANCELED)
            run_fail(c->run, "write: %s", uv_strerror(status));
        return;
    }
    if (!c->run->finished)
        flush(c);
}

static void flush(bench_conn *c) {
    if (c->writing || c->pending.len == 0 || !c->open)
        return;
    rec_buf t = c->flight;
    c->flight = c->pending;
    c->pending = t;
    rec_buf_clear(&c->pending);
    uv_buf_t b = uv_buf_init(c->flight.data, (unsigned)c->flight.len);
    c->wreq.data = c;
    int rc = uv_write(&c->wreq, &c->u.s, &b, 1, on_write);
    if (rc)
        run_fail(c->run, "write: %s", uv_strerror(rc));
    else
        c->writing = 1;
}

/* Queue one request [0, id, method, params]; REC_ENOMEM on failure. */
static int queue_request(bench_conn *c, uint32_t id, const char *method,
                         gen_fn gen) {
    bench_run *r = c->run;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &c->pending, buf_write);
    size_t ml = strlen(method);
    if (msgpack_pack_array(&pk, 4) || msgpack_pack_int(&pk, 0) ||
        msgpack_pack_uint32(&pk, id) || pk_str(&pk, method, ml) ||
        gen(&pk, &r->g))
        return REC_ENOMEM;
    return 0;
}

/* Issue up to k more requests on c (fewer once n are issued). */
static void issue(bench_conn *c, uint32_t k, uint64_t now) {
    bench_run *r = c->run;
    uint32_t cap = (uint32_t)r->o->pipeline;
    while (k-- > 0 && r->issued < (uint64_t)r->o->requests && c->count < cap) {
        uint32_t id = c->next_id++;
        if (queue_request(c, id, r->t->method, r->t->gen)) {
            run_fail(r, "out of memory");
            return;
        }
        uint32_t slot = (c->head + c->count) % cap;
        c->sent_ns[slot] = now;
        c->sent_id[slot] = id;
        c->count++;
        r->issued++;
    }
    flush(c);
}

static void start_all(bench_run *r) {
    r->t0 = uv_hrtime();
    for (int i = 0; i < r->nconn && !r->finished; i++)
        issue(&r->conns[i], (uint32_t)r->o->pipeline, r->t0);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
    bench_conn *c = h->data;
    size_t want = hint > 65536 ? hint : 65536;
    if (rec_buf_reserve(&c->in, want)) {
        *buf = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS */
        return;
    }
    *buf = uv_buf_init(c->in.data + c->in.len, (unsigned)(c->in.cap - c->in.len));
}

/* Note an error reply. */
static void note_error(bench_run *r, const rec_client_msg *m) {
    r->errors++;
    if (r->first_err[0])
        return;
    char name[64], msg[160];
    rec_client_parse_error(m->error, m->error_len, NULL, name, sizeof name, msg,
                           sizeof msg);
    snprintf(r->first_err, sizeof r->first_err, "%s: %s", name, msg);
}

/* The answer to the auth request (msgid 0). */
static int on_auth_reply(bench_conn *c, const rec_client_msg *m) {
    bench_run *r = c->run;
    if (m->type != REC_MSG_RESPONSE || m->msgid != 0) {
        run_fail(r, "unexpected message before the sys.auth answer");
        return -1;
    }
    if (rec_client_parse_error(m->error, m->error_len, NULL, NULL, 0, NULL, 0)) {
        char name[64], msg[160];
        rec_client_parse_error(m->error, m->error_len, NULL, name, sizeof name,
                               msg, sizeof msg);
        run_fail(r, "sys.auth: %s: %s", name, msg);
        return -1;
    }
    c->ready = 1;
    if (++r->ready == r->nconn)
        start_all(r);
    return 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    bench_conn *c = s->data;
    bench_run *r = c->run;
    (void)buf;
    if (nread == 0 || r->finished)
        return;
    if (nread < 0) {
        run_fail(r, "%s", nread == UV_EOF ? "server closed the connection"
                          : nread == UV_ENOBUFS ? "out of memory"
                                                : uv_strerror((int)nread));
        return;
    }
    c->in.len += (size_t)nread;
    uint64_t now = uv_hrtime();
    size_t pos = 0;
    uint32_t answered = 0;
    while (pos < c->in.len) {
        rec_client_msg m;
        size_t used;
        int rc = rec_client_parse(c->in.data + pos, c->in.len - pos, NULL, &used, &m);
        if (rc == REC_VALUE_PARTIAL)
            break;
        if (rc) {
            run_fail(r, "bad message from server: %s", rec_err_name(rc));
            return;
        }
        pos += used;
        if (m.type == REC_MSG_NOTIFICATION) {
            if (m.method_len == 5 && memcmp(m.method, "error", 5) == 0) {
                char name[64] = "", msg[160] = "";
                const unsigned char *p = m.body;
                if (m.body_len > 1 && p[0] == 0x91) /* [error] */
                    rec_client_parse_error(p + 1, m.body_len - 1, NULL, name,
                                           sizeof name, msg, sizeof msg);
                run_fail(r, "server closed the connection: %s: %s", name, msg);
                return;
            }
            continue; /* other notifications do not answer anything */
        }
        if (!c->ready) {
            if (on_auth_reply(c, &m))
                return;
            continue;
        }
        uint32_t cap = (uint32_t)r->o->pipeline;
        if (c->count == 0 || c->sent_id[c->head] != m.msgid) {
            run_fail(r, "answer %u out of order (expected %u)", m.msgid,
                     c->count ? c->sent_id[c->head] : 0);
            return;
        }
        uint64_t sent = c->sent_ns[c->head];
        c->head = (c->head + 1) % cap;
        c->count--;
        if (m.error_len != 1 || *(const unsigned char *)m.error != 0xc0)
            note_error(r, &m);
        r->lat_us[r->done++] = (float)((double)(now - sent) / 1e3);
        answered++;
        if (r->done == (uint64_t)r->o->requests) {
            r->t1 = now;
            close_all(r);
            return;
        }
    }
    if (pos == c->in.len) {
        rec_buf_clear(&c->in);
    } else if (pos > 0) {
        memmove(c->in.data, c->in.data + pos, c->in.len - pos);
        c->in.len -= pos;
    }
    if (answered)
        issue(c, answered, now);
}

static void on_connect(uv_connect_t *req, int status) {
    bench_conn *c = req->data;
    bench_run *r = c->run;
    if (r->finished)
        return;
    if (status < 0) {
        run_fail(r, "connect: %s", uv_strerror(status));
        return;
    }
    if (c->u.h.type == UV_TCP)
        uv_tcp_nodelay(&c->u.tcp, 1);
    int rc = uv_read_start(&c->u.s, on_alloc, on_read);
    if (rc) {
        run_fail(r, "read: %s", uv_strerror(rc));
        return;
    }
    if (r->o->auth && !r->o->unix_path) {
        rec_buf params = REC_BUF_INIT;
        msgpack_packer pk;
        msgpack_packer_init(&pk, &params, buf_write);
        size_t tl = strlen(r->o->auth);
        if (msgpack_pack_array(&pk, 1) || pk_str(&pk, r->o->auth, tl) ||
            rec_client_encode_request(&c->pending, 0, "sys.auth", params.data,
                                      params.len)) {
            rec_buf_free(&params);
            run_fail(r, "out of memory");
            return;
        }
        rec_buf_free(&params);
        flush(c);
        return;
    }
    c->ready = 1;
    if (++r->ready == r->nconn)
        start_all(r);
}

static int resolve(const bench_opts *o, struct sockaddr_storage *sa, char *err,
                   size_t errlen) {
    struct addrinfo hints, *res;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    char port[8];
    snprintf(port, sizeof port, "%d", o->port);
    int g = getaddrinfo(o->host, port, &hints, &res);
    if (g) {
        snprintf(err, errlen, "%s: %s", o->host, gai_strerror(g));
        return -1;
    }
    memcpy(sa, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

/* Everything measured in one run. */
typedef struct run_result {
    double rps;
    double secs;
    double avg_ms, min_ms, p50_ms, p95_ms, p99_ms, p999_ms, max_ms;
    uint64_t errors;
} run_result;

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static double pct(const float *sorted, uint64_t n, double p) {
    if (n == 0)
        return 0;
    uint64_t i = (uint64_t)ceil(p * (double)n);
    i = i == 0 ? 0 : i - 1;
    if (i >= n)
        i = n - 1;
    return (double)sorted[i] / 1e3;
}

/* Run test t once. 0, or -1 with a message in err. */
static int run_once(const bench_opts *o, const bench_test *t, int index,
                    run_result *out, char *first_err, size_t felen, char *err,
                    size_t errlen) {
    bench_run *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = -1;
    r->o = o;
    r->t = t;
    r->nconn = o->clients;
    r->rng = o->seed * 0x9e3779b97f4a7c15ull + (uint64_t)index + 1;
    r->g.rng = &r->rng;
    r->g.o = o;
    r->conns = calloc((size_t)o->clients, sizeof *r->conns);
    r->lat_us = malloc((size_t)o->requests * sizeof *r->lat_us);
    if (!r->conns || !r->lat_us || uv_loop_init(&r->loop)) {
        snprintf(err, errlen, "out of memory");
        free(r->conns);
        free(r->lat_us);
        free(r);
        return -1;
    }
    if (!o->unix_path && resolve(o, &r->sa, err, errlen))
        goto out;
    for (int i = 0; i < r->nconn; i++) {
        bench_conn *c = &r->conns[i];
        c->run = r;
        c->sent_ns = calloc((size_t)o->pipeline, sizeof *c->sent_ns);
        c->sent_id = calloc((size_t)o->pipeline, sizeof *c->sent_id);
        if (!c->sent_ns || !c->sent_id) {
            run_fail(r, "out of memory");
            break;
        }
        c->next_id = 1;
        c->creq.data = c;
        int e = o->unix_path ? uv_pipe_init(&r->loop, &c->u.pipe, 0)
                             : uv_tcp_init(&r->loop, &c->u.tcp);
        if (e) {
            run_fail(r, "socket: %s", uv_strerror(e));
            break;
        }
        c->open = 1;
        c->u.h.data = c;
        if (o->unix_path) {
            uv_pipe_connect(&c->creq, &c->u.pipe, o->unix_path, on_connect);
        } else if ((e = uv_tcp_connect(&c->creq, &c->u.tcp,
                                       (const struct sockaddr *)&r->sa,
                                       on_connect))) {
            run_fail(r, "connect: %s", uv_strerror(e));
            break;
        }
    }
    uv_run(&r->loop, UV_RUN_DEFAULT);
    if (r->failed) {
        snprintf(err, errlen, "%s", r->failmsg);
        goto out;
    }
    if (r->done != (uint64_t)o->requests) {
        snprintf(err, errlen, "stopped after %llu of %ld answers",
                 (unsigned long long)r->done, o->requests);
        goto out;
    }
    qsort(r->lat_us, r->done, sizeof *r->lat_us, cmp_float);
    double sum = 0;
    for (uint64_t i = 0; i < r->done; i++)
        sum += (double)r->lat_us[i];
    out->secs = (double)(r->t1 - r->t0) / 1e9;
    out->rps = out->secs > 0 ? (double)r->done / out->secs : 0;
    out->avg_ms = sum / (double)r->done / 1e3;
    out->min_ms = (double)r->lat_us[0] / 1e3;
    out->p50_ms = pct(r->lat_us, r->done, 0.50);
    out->p95_ms = pct(r->lat_us, r->done, 0.95);
    out->p99_ms = pct(r->lat_us, r->done, 0.99);
    out->p999_ms = pct(r->lat_us, r->done, 0.999);
    out->max_ms = (double)r->lat_us[r->done - 1] / 1e3;
    out->errors = r->errors;
    if (r->errors && !first_err[0])
        snprintf(first_err, felen, "%s", r->first_err);
    rc = 0;
out:
    if (!r->finished) {
        close_all(r);
    }
    uv_run(&r->loop, UV_RUN_DEFAULT); /* let the closes finish */
    uv_loop_close(&r->loop);
    for (int i = 0; i < r->nconn; i++) {
        bench_conn *c = &r->conns[i];
        free(c->sent_ns);
        free(c->sent_id);
        rec_buf_free(&c->pending);
        rec_buf_free(&c->flight);
        rec_buf_free(&c->in);
    }
    free(r->conns);
    free(r->lat_us);
    free(r);
    return rc;
}

/* ---- load step ----------------------------------------------------------- */

static int pk_vec(msgpack_packer *pk, uint64_t *rng, int dim, float scale) {
    float v[4096];
    for (int i = 0; i < dim; i++)
        v[i] = rng_float(rng) * scale;
    /* bin of little-endian float32 */
    unsigned char b[4 * 4096];
    for (int i = 0; i < dim; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        b[4 * i] = (unsigned char)u;
        b[4 * i + 1] = (unsigned char)(u >> 8);
        b[4 * i + 2] = (unsigned char)(u >> 16);
        b[4 * i + 3] = (unsigned char)(u >> 24);
    }
    return msgpack_pack_bin(pk, (size_t)dim * 4) ||
           msgpack_pack_bin_body(pk, b, (size_t)dim * 4);
}

/* Split a comma list into up to max names (pointers into copy). */
static int split_list(char *copy, char **names, int max) {
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (!*tok)
            continue;
        if (n == max)
            return -1;
        names[n++] = tok;
    }
    return n;
}

/* item.put (kind 'i') or user.put (kind 'u') of ids 1..count in batches
 * of 1000, each with random vectors in the listed spaces. */
static int load(rec_client *cl, const bench_opts *o, char kind, long count,
                char **spaces, int nspaces) {
    const char *method = kind == 'i' ? "item.put" : "user.put";
    uint64_t rng = o->seed * 31 + (uint64_t)kind;
    rec_buf params = REC_BUF_INIT;
    rec_client_reply rep;
    rec_client_reply_init(&rep);
    int rc = 0;
    for (long at = 1; at <= count && rc == 0; at += 1000) {
        long end = at + 999 < count ? at + 999 : count;
        rec_buf_clear(&params);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &params, buf_write);
        int bad = msgpack_pack_array(&pk, (size_t)(end - at + 1));
        for (long id = at; id <= end && !bad; id++) {
            bad = msgpack_pack_map(&pk, 2) || PK_LIT(&pk, "id") ||
                  pk_id(&pk, o, kind, (uint32_t)id) || PK_LIT(&pk, "vectors") ||
                  msgpack_pack_map(&pk, (size_t)nspaces);
            for (int s = 0; s < nspaces && !bad; s++)
                bad = pk_str(&pk, spaces[s], strlen(spaces[s])) ||
                      pk_vec(&pk, &rng, o->dim, strcmp(spaces[s], "mf") ? 1.0f : 0.1f);
        }
        if (bad) {
            fprintf(stderr, "recd bench: out of memory\n");
            rc = -1;
            break;
        }
        int e = rec_client_call(cl, method, params.data, params.len, &rep);
        if (e) {
            if (rep.msg.type)
                fprintf(stderr, "recd bench: %s: %s: %s\n", method, rep.err_name,
                        rep.err_message);
            else
                fprintf(stderr, "recd bench: %s: %s\n", method,
                        rec_client_errmsg(cl));
            rc = -1;
        }
    }
    rec_buf_free(&params);
    rec_client_reply_close(&rep);
    return rc;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The server's address as rec_client_connect reads it. */
static void server_addr(const bench_opts *o, char *addr, size_t cap) {
    if (o->unix_path)
        snprintf(addr, cap, "unix:%s", o->unix_path);
    else if (strchr(o->host, ':'))
        snprintf(addr, cap, "[%s]:%d", o->host, o->port);
    else
        snprintf(addr, cap, "%s:%d", o->host, o->port);
}

/* A blocking connection, authenticated when -a is given; NULL after a
 * message on stderr. */
static rec_client *connect_blocking(const bench_opts *o) {
    char addr[512], err[256];
    server_addr(o, addr, sizeof addr);
    rec_client *cl;
    if (rec_client_connect(&cl, addr, err, sizeof err)) {
        fprintf(stderr, "recd bench: %s\n", err);
        return NULL;
    }
    if (o->auth && !o->unix_path) {
        rec_client_reply rep;
        rec_client_reply_init(&rep);
        rec_buf p = REC_BUF_INIT;
        msgpack_packer pk;
        msgpack_packer_init(&pk, &p, buf_write);
        int bad = msgpack_pack_array(&pk, 1) || pk_str(&pk, o->auth, strlen(o->auth));
        if (bad || rec_client_call(cl, "sys.auth", p.data, p.len, &rep)) {
            fprintf(stderr, "recd bench: sys.auth: %s %s\n",
                    bad ? "out of memory" : rep.err_name, rep.err_message);
            rec_client_free(cl);
            cl = NULL;
        }
        rec_buf_free(&p);
        rec_client_reply_close(&rep);
    }
    return cl;
}

/* The unsigned integer under key in map m, 0 when absent. */
static uint64_t map_u64(const msgpack_object *m, const char *key) {
    size_t kl = strlen(key);
    for (uint32_t i = 0; m->type == MSGPACK_OBJECT_MAP && i < m->via.map.size; i++) {
        const msgpack_object_kv *kv = &m->via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == kl &&
            !memcmp(kv->key.via.str.ptr, key, kl) &&
            kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            return kv->val.via.u64;
    }
    return 0;
}

/* A run that stores something goes to a server without data (sys.info's
 * items, users and events all 0) unless --force: 0 to go on, -1 after a
 * message on stderr. */
static int check_empty(rec_client *cl, const bench_opts *o) {
    rec_client_reply rep;
    rec_client_reply_init(&rep);
    msgpack_object info;
    int rc = rec_client_call(cl, "sys.info", "\x90", 1, &rep);
    if (rc == 0)
        rc = rec_client_reply_unpack(&rep, &info);
    if (rc) {
        fprintf(stderr, "recd bench: sys.info: %s\n",
                rep.err_name[0] ? rep.err_message : rec_client_errmsg(cl));
        rec_client_reply_close(&rep);
        return -1;
    }
    uint64_t items = map_u64(&info, "items"), users = map_u64(&info, "users"),
             events = map_u64(&info, "events");
    rec_client_reply_close(&rep);
    if (!items && !users && !events)
        return 0;
    char addr[512];
    server_addr(o, addr, sizeof addr);
    fprintf(stderr,
            "recd bench: %s already holds data (%llu items, %llu users, %llu events);\n"
            "  the tests store events and recommendations (ids %su1.., %si1..) and\n"
            "  would mix them into it. Point recd bench at a server on a fresh data\n"
            "  folder, or pass --force to write into this one anyway.\n",
            addr, (unsigned long long)items, (unsigned long long)users,
            (unsigned long long)events, o->prefix, o->prefix);
    return -1;
}

/* Before the tests: refuse a server that holds data (see check_empty),
 * then the optional load step. 0, or -1 after a message. */
static int prepare(const bench_opts *o, int writes) {
    if (!(writes && !o->force) && o->load_items <= 0 && o->load_users <= 0)
        return 0;
    rec_client *cl = connect_blocking(o);
    if (!cl)
        return -1;
    int rc = writes && !o->force ? check_empty(cl, o) : 0;
    char *copy = NULL, *spaces[16];
    int nspaces = 0;
    if (rc == 0 && o->load_items > 0) {
        copy = strdup(o->load_spaces);
        nspaces = copy ? split_list(copy, spaces, 16) : -1;
        if (nspaces <= 0) {
            fprintf(stderr, "recd bench: --load-spaces: 1..16 names\n");
            rc = -1;
        }
    }
    static char mf_name[] = "mf";
    char *mf[1] = {mf_name};
    double t = now_s();
    if (rc == 0 && o->load_items > 0 &&
        (rc = load(cl, o, 'i', o->load_items, spaces, nspaces)) == 0 && !o->quiet && !o->csv)
        printf("loaded %ld items (spaces %s, d=%d) in %.2f s\n", o->load_items,
               o->load_spaces, o->dim, now_s() - t);
    t = now_s();
    if (rc == 0 && o->load_users > 0 &&
        (rc = load(cl, o, 'u', o->load_users, mf, 1)) == 0 && !o->quiet && !o->csv)
        printf("loaded %ld users (space mf, d=%d) in %.2f s\n", o->load_users,
               o->dim, now_s() - t);
    free(copy);
    rec_client_free(cl);
    return rc;
}

/* ---- reporting ----------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The median of each figure over the runs. */
static run_result summarize(const run_result *runs, int n) {
    double v[MAX_RUNS];
    run_result m;
    memset(&m, 0, sizeof m);
#define MED(f)                                                                \
    do {                                                                      \
        for (int i = 0; i < n; i++)                                           \
            v[i] = runs[i].f;                                                 \
        m.f = median(v, n);                                                   \
    } while (0)
    MED(rps);
    MED(secs);
    MED(avg_ms);
    MED(min_ms);
    MED(p50_ms);
    MED(p95_ms);
    MED(p99_ms);
    MED(p999_ms);
    MED(max_ms);
#undef MED
    for (int i = 0; i < n; i++)
        m.errors += runs[i].errors;
    return m;
}

static void report(const bench_opts *o, const bench_test *t,
                   const run_result *runs, int nruns, const char *first_err) {
    run_result m = summarize(runs, nruns);
    if (m.errors) {
        /* the figures of failing requests mean nothing: none are printed */
        fprintf(stderr, "recd bench: %s failed: %llu of %llu requests answered an "
                "error (first: %s)\n", t->name, (unsigned long long)m.errors,
                (unsigned long long)o->requests * (unsigned long long)nruns, first_err);
        return;
    }
    if (o->csv) {
        printf("\"%s\",\"%.2f\",\"%.3f\",\"%.3f\",\"%.3f\",\"%.3f\",\"%.3f\","
               "\"%.3f\",\"%.3f\"\n",
               t->name, m.rps, m.avg_ms, m.min_ms, m.p50_ms, m.p95_ms, m.p99_ms,
               m.max_ms, m.p999_ms);
    } else if (o->quiet) {
        printf("%s: %.2f requests per second, p50=%.3f p99=%.3f p99.9=%.3f msec\n",
               t->name, m.rps, m.p50_ms, m.p99_ms, m.p999_ms);
    } else {
        printf("====== %s (%s) ======\n", t->name, t->method);
        for (int i = 0; nruns > 1 && i < nruns; i++)
            printf("  run %d: %.2f requests per second, p99 %.3f ms\n", i + 1,
                   runs[i].rps, runs[i].p99_ms);
        printf("  %ld requests completed in %.2f seconds%s\n", o->requests, m.secs,
               nruns > 1 ? " (median run)" : "");
        printf("  %d parallel clients, pipeline %d, %s\n", o->clients, o->pipeline,
               o->unix_path ? "unix socket" : "tcp");
        printf("  latency (msec): avg %.3f  min %.3f  p50 %.3f  p99 %.3f  "
               "p99.9 %.3f  max %.3f\n",
               m.avg_ms, m.min_ms, m.p50_ms, m.p99_ms, m.p999_ms, m.max_ms);
        printf("  %.2f requests per second\n\n", m.rps);
    }
    char name[128];
    snprintf(name, sizeof name, "recd_%s%s_c%d_P%d", o->unix_path ? "unix_" : "",
             t->name, o->clients, o->pipeline);
    FILE *f = o->csv ? stderr : stdout; /* keep CSV output pure */
    fprintf(f, "BENCH name=%s value=%.2f unit=req/s\n", name, m.rps);
    fprintf(f, "BENCH name=%s_p99 value=%.4f unit=ms\n", name, m.p99_ms);
    fflush(f);
}

/* ---- command line -------------------------------------------------------- */

static void usage(FILE *f) {
    fprintf(f,
        "usage: recd bench [options]\n"
        "  -h HOST            server host (127.0.0.1); -h alone: this text\n"
        "  -p PORT            server port (7700)\n"
        "  -s PATH            Unix socket (instead of host/port)\n"
        "  -a TOKEN           sys.auth token for TCP connections\n"
        "  -c CLIENTS         parallel connections (50)\n"
        "  -n REQUESTS        requests per test (100000)\n"
        "  -P PIPELINE        requests in flight per connection (1; max 1024)\n"
        "  -t TESTS           comma list of ping,event,recommend,similar,get\n"
        "                     (ping,event,recommend,similar)\n"
        "  -r RUNS            runs per test; medians are reported (1)\n"
        "  -q                 quiet: one line per test\n"
        "  --csv              CSV (redis-benchmark's columns, then p99.9)\n"
        "  --seed N           random seed (1)\n"
        "  --prefix P         put P before every id: Pu1.., Pi1.. (bench-; at most\n"
        "                     64 bytes; '' for plain u1.., i1..)\n"
        "  --users N          random users Pu1..PuN (100000, or --load-users)\n"
        "  --items N          random items Pi1..PiN (10000, or --load-items)\n"
        "  --load-items N     item.put Pi1..PiN with random vectors first\n"
        "  --load-users N     user.put Pu1..PuN with random \"mf\" vectors first\n"
        "  --dim D            dimension of loaded vectors (64)\n"
        "  --load-spaces L    spaces of the items' vectors (content,mf)\n"
        "  --force            write into a server that already holds data\n"
        "  --help             this text\n"
        "The tests event, recommend and similar and the load step store data\n"
        "(events, recorded lists, items, users): recd bench runs them only\n"
        "against a server whose sys.info counts no items, users or events,\n"
        "unless --force. A test with any error answer fails the run (exit 1)\n"
        "and prints no figures: the number of failed requests and the first\n"
        "error instead.\n"
        "Tests: ping = sys.ping []; event = event.add [{user, item, type =\n"
        "\"click\"}] (answered once durable); recommend = rec.recommend\n"
        "[{user, n = 10}]; similar = rec.similar [{item, n = 10}]; get =\n"
        "item.get [item]. Each test that succeeds prints BENCH lines for scripts (to stderr\n"
        "with --csv):\n"
        "  BENCH name=recd_<test>_c<C>_P<P> value=<req/s> unit=req/s\n"
        "  BENCH name=recd_<test>_c<C>_P<P>_p99 value=<ms> unit=ms\n");
}

static int parse_long(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int rec_bench_main(int argc, char **argv) {
    bench_opts o = {
        .host = "127.0.0.1", .port = 7700, .clients = 50, .requests = 100000,
        .pipeline = 1, .runs = 1, .tests = "ping,event,recommend,similar",
        .seed = 1, .users = 0, .items = 0, .dim = 64,
        .load_spaces = "content,mf", .prefix = "bench-",
    };
    enum { O_CSV = 256, O_SEED, O_USERS, O_ITEMS, O_LITEMS, O_LUSERS, O_DIM,
           O_LSPACES, O_PREFIX, O_FORCE, O_HELP };
    static const struct option longopts[] = {
        {"csv", no_argument, NULL, O_CSV},
        {"seed", required_argument, NULL, O_SEED},
        {"users", required_argument, NULL, O_USERS},
        {"items", required_argument, NULL, O_ITEMS},
        {"load-items", required_argument, NULL, O_LITEMS},
        {"load-users", required_argument, NULL, O_LUSERS},
        {"dim", required_argument, NULL, O_DIM},
        {"load-spaces", required_argument, NULL, O_LSPACES},
        {"prefix", required_argument, NULL, O_PREFIX},
        {"force", no_argument, NULL, O_FORCE},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    rec_cli cli;
    rec_cli_init(&cli, "recd bench", argc, argv, "h:p:s:a:c:n:P:t:r:q", longopts);
    int ch;
    long v;
    while ((ch = rec_cli_next(&cli)) != REC_CLI_DONE) {
        const char *bad = NULL;
        const char *arg = cli.arg;
        switch (ch) {
        case 'h':
            if (!arg) { /* -h alone: the help */
                usage(stdout);
                return 0;
            }
            o.host = arg;
            break;
        case 'p': if (parse_long(arg, 1, 65535, &v)) bad = "-p"; else o.port = (int)v; break;
        case 's': o.unix_path = arg; break;
        case 'a': o.auth = arg; break;
        case 'c': if (parse_long(arg, 1, 100000, &v)) bad = "-c"; else o.clients = (int)v; break;
        case 'n': if (parse_long(arg, 1, 1000000000, &v)) bad = "-n"; else o.requests = v; break;
        case 'P': if (parse_long(arg, 1, 1024, &v)) bad = "-P"; else o.pipeline = (int)v; break;
        case 't': o.tests = arg; break;
        case 'r': if (parse_long(arg, 1, MAX_RUNS, &v)) bad = "-r"; else o.runs = (int)v; break;
        case 'q': o.quiet = 1; break;
        case O_CSV: o.csv = 1; break;
        case O_SEED: if (parse_long(arg, 0, 0x7fffffff, &v)) bad = "--seed"; else o.seed = (uint64_t)v; break;
        case O_USERS: if (parse_long(arg, 1, 0x7fffffff, &v)) bad = "--users"; else o.users = (uint32_t)v; break;
        case O_ITEMS: if (parse_long(arg, 1, 0x7fffffff, &v)) bad = "--items"; else o.items = (uint32_t)v; break;
        case O_LITEMS: if (parse_long(arg, 0, 0x7fffffff, &v)) bad = "--load-items"; else o.load_items = v; break;
        case O_LUSERS: if (parse_long(arg, 0, 0x7fffffff, &v)) bad = "--load-users"; else o.load_users = v; break;
        case O_DIM: if (parse_long(arg, 1, 4096, &v)) bad = "--dim"; else o.dim = (int)v; break;
        case O_LSPACES: o.load_spaces = arg; break;
        case O_PREFIX: if (strlen(arg) > PREFIX_MAX) bad = "--prefix"; else o.prefix = arg; break;
        case O_FORCE: o.force = 1; break;
        case O_HELP: usage(stdout); return 0;
        case REC_CLI_OPERAND:
            fprintf(stderr, "recd bench: unexpected argument '%s'\n", arg);
            usage(stderr);
            return 2;
        default: return 2; /* REC_CLI_ERROR: said */
        }
        if (bad) {
            fprintf(stderr, "recd bench: bad value for %s: '%s'\n", bad, arg);
            return 2;
        }
    }
    if (!o.users)
        o.users = o.load_users > 0 ? (uint32_t)o.load_users : 100000;
    if (!o.items)
        o.items = o.load_items > 0 ? (uint32_t)o.load_items : 10000;

    const bench_test *tests[MAX_TESTS];
    int ntests = 0;
    char *copy = strdup(o.tests), *names[MAX_TESTS];
    int nn = copy ? split_list(copy, names, MAX_TESTS) : -1;
    for (int i = 0; i < nn; i++) {
        const bench_test *t = NULL;
        for (size_t k = 0; k < sizeof all_tests / sizeof *all_tests; k++)
            if (strcmp(names[i], all_tests[k].name) == 0)
                t = &all_tests[k];
        if (!t) {
            fprintf(stderr, "recd bench: unknown test '%s'\n", names[i]);
            free(copy);
            return 2;
        }
        tests[ntests++] = t;
    }
    free(copy);
    if (ntests <= 0) {
        fprintf(stderr, "recd bench: -t needs 1..%d tests\n", MAX_TESTS);
        return 2;
    }

    int writes = o.load_items > 0 || o.load_users > 0;
    for (int i = 0; i < ntests; i++)
        writes |= tests[i]->writes;
    if (prepare(&o, writes))
        return 1;

    if (o.csv)
        /* redis-benchmark's columns, then p99.9 */
        printf("\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\","
               "\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\","
               "\"max_latency_ms\",\"p999_latency_ms\"\n");
    int status = 0;
    for (int i = 0; i < ntests; i++) {
        run_result runs[MAX_RUNS];
        char first_err[256] = "", err[256];
        int r;
        for (r = 0; r < o.runs; r++)
            if (run_once(&o, tests[i], i * MAX_RUNS + r, &runs[r], first_err,
                         sizeof first_err, err, sizeof err))
                break;
        if (r < o.runs) {
            fprintf(stderr, "recd bench: %s: %s\n", tests[i]->name, err);
            status = 1;
            continue;
        }
        report(&o, tests[i], runs, o.runs, first_err);
        if (first_err[0])
            status = 1;
    }
    return status;
}
