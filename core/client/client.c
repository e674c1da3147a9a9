/* client.c - blocking msgpack-RPC client (see client.h).
 *
 * Reading: bytes accumulate in rbuf; each complete message is found with
 * rec_value_scan (which checks every size against the limits before trusting
 * it) and split with a small bounds-checked cursor, then copied into the
 * caller's reply. When a message is incomplete the next read asks for at
 * least as many bytes as are already buffered, so a large message costs
 * O(n log n) re-scanning rather than O(n^2).
 *
 * Writing: requests are encoded with msgpack-c's packer straight into wbuf;
 * params arrive already encoded and are appended as they are.
 *
 * Any transport or framing failure poisons the connection (broken = 1):
 * the stream can no longer be trusted to be at a message boundary.
 */
#include "client.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "err.h"

#define METHOD_MAX 255
#define WRITE_SOON ((size_t)64 << 10) /* queued bytes that trigger a write */
#define READ_MIN ((size_t)64 << 10)

struct rec_client {
    int fd;
    int broken;             /* 1 after a transport or framing failure */
    int timeout_ms;         /* <= 0: none */
    uint32_t next_msgid;
    size_t inflight;        /* requests sent, responses not yet read */
    rec_value_limits lim;      /* applied to each message read */
    rec_buf wbuf;           /* queued output; wpos bytes already written */
    size_t wpos;
    rec_buf rbuf;           /* input; rpos bytes already consumed */
    size_t rpos;
    char errmsg[256];
};

static void client_limits_default(rec_value_limits *l) {
    l->max_bytes = (size_t)64 << 20;
    l->max_depth = 40;
    l->max_str = (uint32_t)16 << 20;
    l->max_items = 16000000;
}

/* Limits for re-walking bytes already scanned with the real limits. */
static const rec_value_limits loose = {SIZE_MAX, 256, UINT32_MAX, UINT32_MAX};

/* ---- addresses ----------------------------------------------------------- */

int rec_client_parse_addr(const char *addr, rec_client_addr *out) {
    memset(out, 0, sizeof *out);
    if (!addr || !*addr)
        return REC_EINVAL;
    const char *path = NULL;
    if (strncmp(addr, "unix:", 5) == 0)
        path = addr + 5;
    else if (strchr(addr, '/'))
        path = addr;
    if (path) {
        size_t n = strlen(path);
        if (n == 0 || n >= sizeof out->path)
            return REC_EINVAL;
        out->kind = REC_ADDR_UNIX;
        memcpy(out->path, path, n + 1);
        return 0;
    }
    const char *host = addr, *hend, *colon;
    if (addr[0] == '[') {
        host = addr + 1;
        hend = strchr(host, ']');
        if (!hend || hend[1] != ':')
            goto bad;
        colon = hend + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon || memchr(addr, ':', (size_t)(colon - addr)))
            goto bad; /* bare IPv6 needs brackets */
        hend = colon;
    }
    size_t hl = (size_t)(hend - host);
    const char *port = colon + 1;
    size_t pl = strlen(port);
    if (hl == 0 || hl >= sizeof out->host || pl == 0 || pl > 5)
        goto bad;
    unsigned long pv = 0;
    for (size_t i = 0; i < pl; i++) {
        if (port[i] < '0' || port[i] > '9')
            goto bad;
        pv = pv * 10 + (unsigned long)(port[i] - '0');
    }
    if (pv < 1 || pv > 65535)
        goto bad;
    out->kind = REC_ADDR_TCP;
    memcpy(out->host, host, hl);
    snprintf(out->port, sizeof out->port, "%lu", pv);
    return 0;
bad:
    memset(out, 0, sizeof *out);
    return REC_EINVAL;
}

/* ---- reading msgpack: a bounds-checked cursor ---------------------------- */

typedef struct cur {
    const unsigned char *p;
    size_t len;
    size_t pos;
} cur;

static int need(const cur *c, size_t n) {
    return c->len - c->pos >= n ? 0 : REC_EPROTOCOL;
}

static uint64_t be(const unsigned char *p, unsigned n) {
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* A container header of either kind: *n elements (arrays) or pairs. */
static int rd_container(cur *c, int want_map, uint32_t *n) {
    if (need(c, 1))
        return REC_EPROTOCOL;
    unsigned char b = c->p[c->pos];
    unsigned fix_lo = want_map ? 0x80 : 0x90, b16 = want_map ? 0xde : 0xdc;
    if (b >= fix_lo && b <= fix_lo + 0x0f) {
        *n = b & 0x0fu;
        c->pos += 1;
        return 0;
    }
    unsigned w = b == b16 ? 2 : b == b16 + 1 ? 4 : 0;
    if (!w || need(c, 1 + w))
        return REC_EPROTOCOL;
    *n = (uint32_t)be(c->p + c->pos + 1, w);
    c->pos += 1 + w;
    return 0;
}

/* Any integer; *neg tells a negative one (then *v holds its int64 bits). */
static int rd_int(cur *c, uint64_t *v, int *neg) {
    if (need(c, 1))
        return REC_EPROTOCOL;
    unsigned char b = c->p[c->pos];
    *neg = 0;
    if (b <= 0x7f) {
        *v = b;
        c->pos += 1;
        return 0;
    }
    if (b >= 0xe0) {
        *v = (uint64_t)(int64_t)(int8_t)b;
        *neg = 1;
        c->pos += 1;
        return 0;
    }
    unsigned w;
    int sign;
    switch (b) {
    case 0xcc: w = 1; sign = 0; break;
    case 0xcd: w = 2; sign = 0; break;
    case 0xce: w = 4; sign = 0; break;
    case 0xcf: w = 8; sign = 0; break;
    case 0xd0: w = 1; sign = 1; break;
    case 0xd1: w = 2; sign = 1; break;
    case 0xd2: w = 4; sign = 1; break;
    case 0xd3: w = 8; sign = 1; break;
    default: return REC_EPROTOCOL;
    }
    if (need(c, 1 + w))
        return REC_EPROTOCOL;
    uint64_t x = be(c->p + c->pos + 1, w);
    if (sign && w < 8) { /* sign-extend */
        uint64_t m = (uint64_t)1 << (8 * w - 1);
        x = (x ^ m) - m;
    }
    *v = x;
    *neg = sign && (int64_t)x < 0;
    c->pos += 1 + w;
    return 0;
}

static int rd_str(cur *c, const char **s, size_t *n) {
    if (need(c, 1))
        return REC_EPROTOCOL;
    unsigned char b = c->p[c->pos];
    unsigned w;
    size_t len;
    if (b >= 0xa0 && b <= 0xbf) {
        w = 0;
        len = b & 0x1fu;
    } else if (b >= 0xd9 && b <= 0xdb) {
        w = 1u << (b - 0xd9);
        if (need(c, 1 + w))
            return REC_EPROTOCOL;
        len = (size_t)be(c->p + c->pos + 1, w);
    } else {
        return REC_EPROTOCOL;
    }
    if (need(c, 1 + w + len))
        return REC_EPROTOCOL;
    *s = (const char *)c->p + c->pos + 1 + w;
    *n = len;
    c->pos += 1 + w + len;
    return 0;
}

/* Step over one object; start and n (may be NULL) get its bytes. */
static int skip(cur *c, const void **start, size_t *n) {
    size_t used;
    int rc = rec_value_scan(c->p + c->pos, c->len - c->pos, &loose, &used, NULL);
    if (rc)
        return REC_EPROTOCOL; /* partial inside a complete object: malformed */
    if (start)
        *start = c->p + c->pos;
    if (n)
        *n = used;
    c->pos += used;
    return 0;
}

static void copy_trunc(char *dst, size_t cap, const char *s, size_t n) {
    if (!dst || cap == 0)
        return;
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, s, n);
    dst[n] = '\0';
}

/* ---- messages ------------------------------------------------------------ */

int rec_client_err_from_name(const char *name, size_t len) {
    for (int e = REC__ERR_BASE + 1; e < REC__ERR_END; e++) {
        const char *en = rec_err_name(e);
        if (strlen(en) == len && memcmp(en, name, len) == 0)
            return e;
    }
    return 0;
}

int rec_client_parse_error(const void *err, size_t len, int64_t *code,
                           char *name, size_t namelen, char *message,
                           size_t msglen) {
    if (code)
        *code = 0;
    copy_trunc(name, namelen, "", 0);
    copy_trunc(message, msglen, "", 0);
    cur c = {err, len, 0};
    if (len >= 1 && c.p[0] == 0xc0)
        return 0;
    uint32_t pairs;
    if (rd_container(&c, 1, &pairs))
        return REC_EPROTOCOL;
    int by_name = 0, by_code = 0;
    for (uint32_t i = 0; i < pairs; i++) {
        const char *k, *s;
        size_t kl, sl;
        if (rd_str(&c, &k, &kl)) { /* a key we cannot name: skip the pair */
            if (skip(&c, NULL, NULL) || skip(&c, NULL, NULL))
                return REC_EPROTOCOL;
            continue;
        }
        size_t at = c.pos;
        if (kl == 4 && memcmp(k, "name", 4) == 0 && rd_str(&c, &s, &sl) == 0) {
            copy_trunc(name, namelen, s, sl);
            by_name = rec_client_err_from_name(s, sl);
        } else if (kl == 7 && memcmp(k, "message", 7) == 0 &&
                   rd_str(&c, &s, &sl) == 0) {
            copy_trunc(message, msglen, s, sl);
        } else if (kl == 4 && memcmp(k, "code", 4) == 0) {
            uint64_t v;
            int neg;
            if (rd_int(&c, &v, &neg) == 0) {
                if (code)
                    *code = (int64_t)v;
                if (neg && (int64_t)v > REC__ERR_BASE &&
                    (int64_t)v < REC__ERR_END)
                    by_code = (int)(int64_t)v;
            }
        }
        if (c.pos == at && skip(&c, NULL, NULL)) /* value not read above */
            return REC_EPROTOCOL;
    }
    return by_name ? by_name : by_code ? by_code : REC_EPROTOCOL;
}

int rec_client_parse(const void *data, size_t len, const rec_value_limits *lim,
                     size_t *used, rec_client_msg *msg) {
    rec_value_limits defl;
    if (!lim) {
        client_limits_default(&defl);
        lim = &defl;
    }
    memset(msg, 0, sizeof *msg);
    *used = 0;
    size_t n;
    int rc = rec_value_scan(data, len, lim, &n, NULL);
    if (rc)
        return rc; /* REC_VALUE_PARTIAL, REC_EPROTOCOL, REC_ETOOLARGE */
    cur c = {data, n, 0};
    uint32_t elems;
    uint64_t type, id;
    int neg;
    if (rd_container(&c, 0, &elems) || elems < 3 || elems > 4 ||
        rd_int(&c, &type, &neg) || neg)
        return REC_EPROTOCOL;
    if (type == REC_MSG_RESPONSE && elems == 4) {
        if (rd_int(&c, &id, &neg) || neg || id > UINT32_MAX ||
            skip(&c, &msg->error, &msg->error_len) ||
            skip(&c, &msg->body, &msg->body_len))
            goto bad;
        msg->msgid = (uint32_t)id;
    } else if (type == REC_MSG_NOTIFICATION && elems == 3) {
        if (rd_str(&c, &msg->method, &msg->method_len) ||
            skip(&c, &msg->body, &msg->body_len))
            goto bad;
    } else {
        goto bad;
    }
    msg->type = (int)type;
    *used = n;
    return 0;
bad:
    memset(msg, 0, sizeof *msg);
    return REC_EPROTOCOL;
}

/* msgpack-c packer output: append to a rec_buf. */
static int buf_write(void *data, const char *p, size_t n) {
    return rec_buf_append(data, p, n) ? -1 : 0;
}

static int check_call(const char *method, const void *params, size_t len) {
    size_t ml = method ? strlen(method) : 0;
    if (ml == 0 || ml > METHOD_MAX)
        return REC_EINVAL;
    if (len == 0)
        return 0;
    if (!params)
        return REC_EINVAL;
    unsigned char b = *(const unsigned char *)params;
    if (!((b >= 0x90 && b <= 0x9f) || b == 0xdc || b == 0xdd))
        return REC_EINVAL;
    size_t used;
    if (rec_value_scan(params, len, &loose, &used, NULL) || used != len)
        return REC_EINVAL;
    return 0;
}

static int encode(rec_buf *out, int type, uint32_t msgid, const char *method,
                  const void *params, size_t len) {
    int rc = check_call(method, params, len);
    if (rc)
        return rc;
    size_t ml = strlen(method), at = out->len;
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, buf_write);
    int bad = msgpack_pack_array(&pk, type == REC_MSG_REQUEST ? 4 : 3) ||
              msgpack_pack_int(&pk, type);
    if (type == REC_MSG_REQUEST)
        bad = bad || msgpack_pack_uint32(&pk, msgid);
    bad = bad || msgpack_pack_str(&pk, ml) || msgpack_pack_str_body(&pk, method, ml);
    if (len)
        bad = bad || rec_buf_append(out, params, len);
    else
        bad = bad || msgpack_pack_array(&pk, 0);
    if (bad) {
        out->len = at;
        return REC_ENOMEM;
    }
    return 0;
}

int rec_client_encode_request(rec_buf *out, uint32_t msgid, const char *method,
                              const void *params, size_t len) {
    return encode(out, REC_MSG_REQUEST, msgid, method, params, len);
}

int rec_client_encode_notification(rec_buf *out, const char *method,
                                   const void *params, size_t len) {
    return encode(out, REC_MSG_NOTIFICATION, 0, method, params, len);
}

/* ---- replies ------------------------------------------------------------- */

void rec_client_reply_init(rec_client_reply *r) {
    memset(r, 0, sizeof *r);
    msgpack_unpacked_init(&r->unpacked);
}

void rec_client_reply_close(rec_client_reply *r) {
    msgpack_unpacked_destroy(&r->unpacked);
    rec_buf_free(&r->raw);
    memset(r, 0, sizeof *r);
}

static void reply_reset(rec_client_reply *r) {
    memset(&r->msg, 0, sizeof r->msg);
    r->status = 0;
    r->err_code = 0;
    r->err_name[0] = r->err_message[0] = '\0';
    rec_buf_clear(&r->raw);
}

int rec_client_reply_unpack(rec_client_reply *r, msgpack_object *out) {
    if (!r->msg.type || !r->msg.body)
        return REC_EINVAL;
    size_t off = 0;
    msgpack_unpack_return ur =
        msgpack_unpack_next(&r->unpacked, r->msg.body, r->msg.body_len, &off);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR)
        return REC_ENOMEM;
    if (ur != MSGPACK_UNPACK_SUCCESS || off != r->msg.body_len)
        return REC_EPROTOCOL;
    *out = r->unpacked.data;
    return 0;
}

/* Copy msg (views into src bytes) into r with its own bytes, and read the
 * error it carries. Returns r->status or REC_ENOMEM. */
static int reply_fill(rec_client_reply *r, const void *src, size_t n,
                      const rec_client_msg *msg) {
    reply_reset(r);
    if (rec_buf_set(&r->raw, src, n))
        return REC_ENOMEM;
    const char *base = r->raw.data, *s = src;
    r->msg = *msg;
#define REBASE(f) if (msg->f) r->msg.f = (const void *)(base + ((const char *)msg->f - s))
    REBASE(method);
    REBASE(error);
    REBASE(body);
#undef REBASE
    if (msg->type == REC_MSG_RESPONSE) {
        r->status = rec_client_parse_error(
            r->msg.error, r->msg.error_len, &r->err_code, r->err_name,
            sizeof r->err_name, r->err_message, sizeof r->err_message);
    } else if (msg->method_len == 5 && memcmp(msg->method, "error", 5) == 0) {
        /* [2, "error", [error]]: the server's last word before closing */
        cur c = {r->msg.body, r->msg.body_len, 0};
        uint32_t k;
        const void *e;
        size_t el;
        if (rd_container(&c, 0, &k) == 0 && k >= 1 && skip(&c, &e, &el) == 0)
            r->status = rec_client_parse_error(
                e, el, &r->err_code, r->err_name, sizeof r->err_name,
                r->err_message, sizeof r->err_message);
        else
            r->status = REC_EPROTOCOL;
        if (r->status == 0)
            r->status = REC_EPROTOCOL;
    }
    return r->status;
}

/* ---- connections --------------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int rec_client_from_fd(rec_client **out, int fd) {
    rec_client *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        *out = NULL;
        return REC_ENOMEM;
    }
    c->fd = fd;
    c->next_msgid = 1;
    client_limits_default(&c->lim);
    *out = c;
    return 0;
}

static int connect_unix(const rec_client_addr *a, char *err, size_t errlen) {
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, a->path, strlen(a->path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        set_err(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        set_err(err, errlen, "%s: %s", a->path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int connect_tcp(const rec_client_addr *a, char *err, size_t errlen) {
    struct addrinfo hints, *res, *ai;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(a->host, a->port, &hints, &res);
    if (g) {
        set_err(err, errlen, "%s: %s", a->host, gai_strerror(g));
        return -1;
    }
    int fd = -1, e = 0;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            e = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        e = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        set_err(err, errlen, "%s:%s: %s", a->host, a->port, strerror(e));
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

int rec_client_connect(rec_client **out, const char *addr, char *err,
                       size_t errlen) {
    rec_client_addr a;
    *out = NULL;
    if (rec_client_parse_addr(addr, &a)) {
        set_err(err, errlen, "bad address '%s' (want host:port or a socket path)",
                addr ? addr : "");
        return REC_EINVAL;
    }
    int fd = a.kind == REC_ADDR_UNIX ? connect_unix(&a, err, errlen)
                                     : connect_tcp(&a, err, errlen);
    if (fd < 0)
        return REC_EIO;
    int rc = rec_client_from_fd(out, fd);
    if (rc)
        set_err(err, errlen, "out of memory");
    return rc;
}

void rec_client_free(rec_client *c) {
    if (!c)
        return;
    close(c->fd);
    rec_buf_free(&c->wbuf);
    rec_buf_free(&c->rbuf);
    free(c);
}

void rec_client_set_timeout(rec_client *c, int ms) { c->timeout_ms = ms; }

void rec_client_set_limits(rec_client *c, const rec_value_limits *l) {
    c->lim = *l;
}

const char *rec_client_errmsg(const rec_client *c) { return c->errmsg; }

size_t rec_client_inflight(const rec_client *c) { return c->inflight; }

/* Mark the connection unusable, with a reason; returns rc. */
static int fail(rec_client *c, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(rec_client *c, int rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
    va_end(ap);
    c->broken = 1;
    return rc;
}

static int check_usable(rec_client *c) {
    if (!c->broken)
        return 0;
    if (!c->errmsg[0])
        snprintf(c->errmsg, sizeof c->errmsg, "connection is unusable");
    return REC_EIO;
}

/* Wait until fd is ready for events; 0, or REC_EIO on timeout/failure. */
static int wait_fd(rec_client *c, short events) {
    if (c->timeout_ms <= 0)
        return 0;
    struct pollfd p = {c->fd, events, 0};
    for (;;) {
        int n = poll(&p, 1, c->timeout_ms);
        if (n > 0)
            return 0;
        if (n == 0)
            return fail(c, REC_EIO, "timed out");
        if (errno != EINTR)
            return fail(c, REC_EIO, "poll: %s", strerror(errno));
    }
}

int rec_client_flush(rec_client *c) {
    int rc = check_usable(c);
    if (rc)
        return rc;
    while (c->wpos < c->wbuf.len) {
        if ((rc = wait_fd(c, POLLOUT)))
            return rc;
        /* with a timeout, never block outside poll */
        int flags = MSG_NOSIGNAL | (c->timeout_ms > 0 ? MSG_DONTWAIT : 0);
        ssize_t n = send(c->fd, c->wbuf.data + c->wpos, c->wbuf.len - c->wpos,
                         flags);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            return fail(c, REC_EIO, "write: %s", strerror(errno));
        }
        c->wpos += (size_t)n;
    }
    rec_buf_clear(&c->wbuf);
    c->wpos = 0;
    return 0;
}

static int queue(rec_client *c, int type, const char *method,
                 const void *params, size_t len, uint32_t *msgid) {
    int rc = check_usable(c);
    if (rc)
        return rc;
    uint32_t id = c->next_msgid;
    rc = encode(&c->wbuf, type, id, method, params, len);
    if (rc) {
        snprintf(c->errmsg, sizeof c->errmsg, "%s",
                 rc == REC_EINVAL ? "bad method name or params" : "out of memory");
        return rc;
    }
    if (type == REC_MSG_REQUEST) {
        c->next_msgid++;
        c->inflight++;
        if (msgid)
            *msgid = id;
    }
    return c->wbuf.len - c->wpos >= WRITE_SOON ? rec_client_flush(c) : 0;
}

int rec_client_send(rec_client *c, const char *method, const void *params,
                    size_t len, uint32_t *msgid) {
    return queue(c, REC_MSG_REQUEST, method, params, len, msgid);
}

int rec_client_notify(rec_client *c, const char *method, const void *params,
                      size_t len) {
    return queue(c, REC_MSG_NOTIFICATION, method, params, len, NULL);
}

/* Read at least one more byte into rbuf. */
static int fill(rec_client *c) {
    if (c->rpos > 0) { /* compact */
        memmove(c->rbuf.data, c->rbuf.data + c->rpos, c->rbuf.len - c->rpos);
        c->rbuf.len -= c->rpos;
        c->rpos = 0;
    }
    size_t want = c->rbuf.len > READ_MIN ? c->rbuf.len : READ_MIN;
    if (rec_buf_reserve(&c->rbuf, want))
        return fail(c, REC_ENOMEM, "out of memory");
    for (;;) {
        int rc = wait_fd(c, POLLIN);
        if (rc)
            return rc;
        ssize_t n = recv(c->fd, c->rbuf.data + c->rbuf.len,
                         c->rbuf.cap - c->rbuf.len,
                         c->timeout_ms > 0 ? MSG_DONTWAIT : 0);
        if (n > 0) {
            c->rbuf.len += (size_t)n;
            return 0;
        }
        if (n == 0)
            return fail(c, REC_EIO, "connection closed by server");
        if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
            return fail(c, REC_EIO, "read: %s", strerror(errno));
    }
}

int rec_client_recv(rec_client *c, rec_client_reply *out) {
    reply_reset(out);
    int rc = rec_client_flush(c);
    if (rc)
        return rc;
    for (;;) {
        rec_client_msg msg;
        size_t used;
        const char *at = c->rbuf.data ? c->rbuf.data + c->rpos : NULL;
        rc = rec_client_parse(at, c->rbuf.len - c->rpos, &c->lim, &used, &msg);
        if (rc == REC_VALUE_PARTIAL) {
            if ((rc = fill(c)))
                return rc;
            continue;
        }
        if (rc)
            return fail(c, rc, "%s from server",
                        rc == REC_ETOOLARGE ? "message over the limits"
                                            : "malformed message");
        c->rpos += used;
        if (c->rpos == c->rbuf.len) {
            rec_buf_clear(&c->rbuf);
            c->rpos = 0;
        }
        if (msg.type == REC_MSG_RESPONSE && c->inflight > 0)
            c->inflight--;
        rc = reply_fill(out, at, used, &msg);
        if (rc == REC_ENOMEM && !out->msg.type)
            return fail(c, rc, "out of memory");
        if (msg.type == REC_MSG_NOTIFICATION && out->status)
            fail(c, 0, "server closed the connection: %s: %s", out->err_name,
                 out->err_message); /* the server closes after this */
        return rc;
    }
}

int rec_client_call(rec_client *c, const char *method, const void *params,
                    size_t len, rec_client_reply *out) {
    reply_reset(out);
    int rc = check_usable(c);
    if (rc)
        return rc;
    if (c->inflight) {
        snprintf(c->errmsg, sizeof c->errmsg, "pipelined requests in flight");
        return REC_EBUSY;
    }
    uint32_t id;
    rc = rec_client_send(c, method, params, len, &id);
    if (rc)
        return rc;
    for (;;) {
        rc = rec_client_recv(c, out);
        if (!out->msg.type)
            return rc; /* transport failure */
        if (out->msg.type == REC_MSG_RESPONSE) {
            if (out->msg.msgid == id)
                return rc;
            continue; /* not ours: a stray answer */
        }
        if (out->msg.method_len == 5 && memcmp(out->msg.method, "error", 5) == 0)
            return rc;
    }
}
