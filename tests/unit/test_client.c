/* test_client.c - the msgpack-RPC client without a server: addresses,
 * request bytes, reply splitting and errors, and a peer thread on a
 * socketpair (or a real listening socket) playing the server byte by byte. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "client.h"
#include "err.h"

/* ---- helpers ------------------------------------------------------------- */

static int buf_write(void *data, const char *p, size_t n) {
    return rec_buf_append(data, p, n) ? -1 : 0;
}

static void pack_str(msgpack_packer *pk, const char *s) {
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

/* Append [1, msgid, error, result] where error is nil when name is NULL,
 * else {code, name, message}; result is the string res (nil when NULL). */
static void put_response(rec_buf *b, uint32_t msgid, int code, const char *name,
                         const char *message, const char *res) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, buf_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_uint32(&pk, msgid);
    if (name) {
        msgpack_pack_map(&pk, 3);
        pack_str(&pk, "code");
        msgpack_pack_int(&pk, code);
        pack_str(&pk, "name");
        pack_str(&pk, name);
        pack_str(&pk, "message");
        pack_str(&pk, message);
    } else {
        msgpack_pack_nil(&pk);
    }
    if (res)
        pack_str(&pk, res);
    else
        msgpack_pack_nil(&pk);
}

/* Append [2, method, [{code, name, message}]] (or [2, method, []]). */
static void put_notification(rec_buf *b, const char *method, const char *name,
                             const char *message) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, buf_write);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_int(&pk, 2);
    pack_str(&pk, method);
    if (!name) {
        msgpack_pack_array(&pk, 0);
        return;
    }
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 3);
    pack_str(&pk, "code");
    msgpack_pack_int(&pk, rec_client_err_from_name(name, strlen(name)));
    pack_str(&pk, "name");
    pack_str(&pk, name);
    pack_str(&pk, "message");
    pack_str(&pk, message);
}

static void assert_body_str(const rec_client_msg *m, const char *want) {
    size_t n = strlen(want);
    assert_true(n < 32);
    assert_int_equal(m->body_len, n + 1);
    assert_int_equal(((const unsigned char *)m->body)[0], 0xa0 | n);
    assert_memory_equal((const char *)m->body + 1, want, n);
}

/* The far end of a socketpair, run on a thread: read `expect` bytes (the
 * requests), then write `out` in `chunk`-byte pieces, then close when
 * asked to. */
typedef struct peer {
    int fd;
    size_t expect;
    rec_buf in;
    const rec_buf *out;
    size_t chunk;
    int close_after;
    int linger_ms; /* wait before writing */
    pthread_t th;
} peer;

static void *peer_main(void *arg) {
    peer *p = arg;
    char tmp[4096];
    while (p->in.len < p->expect) {
        size_t want = p->expect - p->in.len;
        ssize_t n = read(p->fd, tmp, want < sizeof tmp ? want : sizeof tmp);
        if (n <= 0)
            break;
        rec_buf_append(&p->in, tmp, (size_t)n);
    }
    if (p->linger_ms)
        usleep((useconds_t)p->linger_ms * 1000);
    for (size_t at = 0; p->out && at < p->out->len;) {
        size_t n = p->out->len - at < p->chunk ? p->out->len - at : p->chunk;
        ssize_t w = write(p->fd, p->out->data + at, n);
        if (w <= 0)
            break;
        at += (size_t)w;
        if (p->chunk < 16)
            sched_yield();
    }
    if (p->close_after)
        shutdown(p->fd, SHUT_RDWR);
    return NULL;
}

/* A client on one end of a socketpair; the peer gets the other end. */
static rec_client *pair_client(peer *p) {
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    memset(p, 0, sizeof *p);
    p->fd = sv[1];
    p->chunk = 1;
    rec_client *c;
    assert_int_equal(rec_client_from_fd(&c, sv[0]), 0);
    return c;
}

static void peer_start(peer *p) {
    assert_int_equal(pthread_create(&p->th, NULL, peer_main, p), 0);
}

static void peer_join(peer *p) {
    pthread_join(p->th, NULL);
    close(p->fd);
    rec_buf_free(&p->in);
}

/* The bytes rec_client_encode_request gives. */
static size_t request_len(uint32_t msgid, const char *method, const void *params,
                          size_t len) {
    rec_buf b = REC_BUF_INIT;
    assert_int_equal(rec_client_encode_request(&b, msgid, method, params, len), 0);
    size_t n = b.len;
    rec_buf_free(&b);
    return n;
}

/* ---- addresses ----------------------------------------------------------- */

static void test_addr_tcp(void **state) {
    (void)state;
    rec_client_addr a;
    assert_int_equal(rec_client_parse_addr("127.0.0.1:7700", &a), 0);
    assert_int_equal(a.kind, REC_ADDR_TCP);
    assert_string_equal(a.host, "127.0.0.1");
    assert_string_equal(a.port, "7700");
    assert_int_equal(rec_client_parse_addr("localhost:1", &a), 0);
    assert_string_equal(a.host, "localhost");
    assert_string_equal(a.port, "1");
    assert_int_equal(rec_client_parse_addr("[::1]:65535", &a), 0);
    assert_string_equal(a.host, "::1");
    assert_string_equal(a.port, "65535");
    assert_int_equal(rec_client_parse_addr("h:007", &a), 0);
    assert_string_equal(a.port, "7");
}

static void test_addr_unix(void **state) {
    (void)state;
    rec_client_addr a;
    assert_int_equal(rec_client_parse_addr("unix:/tmp/recd.sock", &a), 0);
    assert_int_equal(a.kind, REC_ADDR_UNIX);
    assert_string_equal(a.path, "/tmp/recd.sock");
    assert_int_equal(rec_client_parse_addr("unix:recd.sock", &a), 0);
    assert_string_equal(a.path, "recd.sock");
    assert_int_equal(rec_client_parse_addr("./data/recd.sock", &a), 0);
    assert_int_equal(a.kind, REC_ADDR_UNIX);
    assert_string_equal(a.path, "./data/recd.sock");
    /* a path wins over host:port reading */
    assert_int_equal(rec_client_parse_addr("/run/a:1", &a), 0);
    assert_int_equal(a.kind, REC_ADDR_UNIX);
}

static void test_addr_bad(void **state) {
    (void)state;
    static const char *const bad[] = {
        "", "host", "host:", ":7700", "host:0", "host:65536", "host:123456",
        "host:12a", "host:-1", "::1:7700", "[::1]7700", "[::1", "[]:1",
        "unix:",
    };
    rec_client_addr a;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(&a, 0x5a, sizeof a);
        if (rec_client_parse_addr(bad[i], &a) != REC_EINVAL)
            fail_msg("accepted '%s'", bad[i]);
        assert_int_equal(a.kind, 0);
    }
    assert_int_equal(rec_client_parse_addr(NULL, &a), REC_EINVAL);
    char longp[200];
    memset(longp, 'a', sizeof longp);
    longp[0] = '/';
    longp[sizeof longp - 1] = '\0';
    assert_int_equal(rec_client_parse_addr(longp, &a), REC_EINVAL);
    char longh[300];
    memset(longh, 'h', sizeof longh);
    memcpy(longh + sizeof longh - 4, ":80", 4);
    assert_int_equal(rec_client_parse_addr(longh, &a), REC_EINVAL);
}

/* ---- encoding ------------------------------------------------------------ */

static void test_encode_ping(void **state) {
    (void)state;
    rec_buf b = REC_BUF_INIT;
    assert_int_equal(rec_client_encode_request(&b, 1, "sys.ping", NULL, 0), 0);
    static const unsigned char want[] = {0x94, 0x00, 0x01, 0xa8, 's', 'y', 's',
                                         '.',  'p',  'i',  'n',  'g', 0x90};
    assert_int_equal(b.len, sizeof want);
    assert_memory_equal(b.data, want, sizeof want);
    rec_buf_free(&b);
}

static void test_encode_params_verbatim(void **state) {
    (void)state;
    rec_buf b = REC_BUF_INIT;
    /* [{"user": "u1", "n": 10}] */
    static const unsigned char params[] = {0x91, 0x82, 0xa4, 'u', 's', 'e', 'r',
                                           0xa2, 'u',  '1',  0xa1, 'n', 0x0a};
    assert_int_equal(rec_client_encode_request(&b, 70000, "rec.recommend", params,
                                               sizeof params),
                     0);
    static const unsigned char head[] = {0x94, 0x00, 0xce, 0x00, 0x01, 0x11,
                                         0x70, 0xad};
    assert_int_equal(b.len, sizeof head + 13 + sizeof params);
    assert_memory_equal(b.data, head, sizeof head);
    assert_memory_equal(b.data + sizeof head, "rec.recommend", 13);
    assert_memory_equal(b.data + sizeof head + 13, params, sizeof params);
    rec_buf_free(&b);
}

static void test_encode_notification(void **state) {
    (void)state;
    rec_buf b = REC_BUF_INIT;
    static const unsigned char params[] = {0x91, 0x01};
    assert_int_equal(rec_client_encode_notification(&b, "event.add", params,
                                                    sizeof params),
                     0);
    static const unsigned char want[] = {0x93, 0x02, 0xa9, 'e', 'v', 'e', 'n',
                                         't',  '.',  'a',  'd', 'd', 0x91, 0x01};
    assert_int_equal(b.len, sizeof want);
    assert_memory_equal(b.data, want, sizeof want);
    rec_buf_free(&b);
}

static void test_encode_refuses(void **state) {
    (void)state;
    rec_buf b = REC_BUF_INIT;
    assert_int_equal(rec_buf_append(&b, "xy", 2), 0);
    static const unsigned char map[] = {0x80};
    static const unsigned char two[] = {0x90, 0x90};
    static const unsigned char cut[] = {0x92, 0x01};
    static const unsigned char bad[] = {0x91, 0xc1};
    static const unsigned char arr16[] = {0xdc, 0x00, 0x01, 0x05};
    assert_int_equal(rec_client_encode_request(&b, 1, "m", map, 1), REC_EINVAL);
    assert_int_equal(rec_client_encode_request(&b, 1, "m", two, 2), REC_EINVAL);
    assert_int_equal(rec_client_encode_request(&b, 1, "m", cut, 2), REC_EINVAL);
    assert_int_equal(rec_client_encode_request(&b, 1, "m", bad, 2), REC_EINVAL);
    assert_int_equal(rec_client_encode_request(&b, 1, "m", NULL, 3), REC_EINVAL);
    assert_int_equal(rec_client_encode_request(&b, 1, "", NULL, 0), REC_EINVAL);
    char longm[300];
    memset(longm, 'm', sizeof longm);
    longm[256] = '\0';
    assert_int_equal(rec_client_encode_request(&b, 1, longm, NULL, 0), REC_EINVAL);
    assert_int_equal(b.len, 2); /* untouched */
    longm[255] = '\0';
    assert_int_equal(rec_client_encode_request(&b, 1, longm, arr16, 4), 0);
    rec_buf_free(&b);
}

/* ---- splitting replies --------------------------------------------------- */

static void test_parse_response(void **state) {
    (void)state;
    rec_buf b = REC_BUF_INIT;
    put_response(&b, 7, 0, NULL, NULL, "pong");
    rec_client_msg m;
    size_t used;
    for (size_t cut = 0; cut < b.len; cut++) /* every prefix is partial */
        assert_int_equal(rec_client_parse(b.data, cut, NULL, &used, &m),
                         REC_VALUE_PARTIAL);
    assert_int_equal(rec_buf_append(&b, "\x94", 1), 0); /* next message starts */
    assert_int_equal(rec_client_parse(b.data, b.len, NULL, &used, &m), 0);
    assert_int_equal(used, b.len - 1);
    assert_int_equal(m.type, REC_MSG_RESPONSE);
    assert_int_equal(m.msgid, 7);
    assert_int_equal(m.error_len, 1);
    assert_int_equal(*(const unsigned char *)m.error, 0xc0);
    assert_body_str(&m, "pong");
    rec_buf_free(&b);

    /* big msgid, array16 header, error map */
    static const unsigned char big[] = {0xdc, 0x00, 0x04, 0x01, 0xce, 0xff, 0xff,
                                        0xff, 0xff, 0x81, 0xa1, 'x',  0x01, 0xc3};
    assert_int_equal(rec_client_parse(big, sizeof big, NULL, &used, &m), 0);
    assert_int_equal(m.msgid, UINT32_MAX);
    assert_int_equal(m.error_len, 4);
    assert_int_equal(m.body_len, 1);
    assert_int_equal(*(const unsigned char *)m.body, 0xc3);
}

static void test_parse_notification(void **state) {
    (void)state;
    rec_buf b = REC_BUF_INIT;
    put_notification(&b, "error", "too_large", "message over 4 MiB");
    rec_client_msg m;
    size_t used;
    assert_int_equal(rec_client_parse(b.data, b.len, NULL, &used, &m), 0);
    assert_int_equal(used, b.len);
    assert_int_equal(m.type, REC_MSG_NOTIFICATION);
    assert_int_equal(m.method_len, 5);
    assert_memory_equal(m.method, "error", 5);
    assert_int_equal(*(const unsigned char *)m.body, 0x91);
    assert_int_equal((const char *)m.body + m.body_len, b.data + b.len);
    rec_buf_free(&b);
}

static void test_parse_refuses(void **state) {
    (void)state;
    static const struct {
        const char *what;
        const char *bytes;
        size_t len;
        int rc;
    } cases[] = {
        {"scalar", "\x01", 1, REC_EPROTOCOL},
        {"map", "\x81\x01\x01", 3, REC_EPROTOCOL},
        {"request", "\x94\x00\x01\xa1m\x90", 6, REC_EPROTOCOL},
        {"type 3", "\x94\x03\x01\xc0\xc0", 5, REC_EPROTOCOL},
        {"response of 3", "\x93\x01\x01\xc0", 4, REC_EPROTOCOL},
        {"notification of 4", "\x94\x02\xa1m\x90\xc0", 6, REC_EPROTOCOL},
        {"negative msgid", "\x94\x01\xff\xc0\xc0", 5, REC_EPROTOCOL},
        {"msgid over u32", "\x94\x01\xcf\x00\x00\x00\x01\x00\x00\x00\x00\xc0\xc0",
         13, REC_EPROTOCOL},
        {"string msgid", "\x94\x01\xa1x\xc0\xc0", 6, REC_EPROTOCOL},
        {"float type", "\x94\xca\x3f\x80\x00\x00\x01\xc0\xc0", 9, REC_EPROTOCOL},
        {"method not str", "\x93\x02\x01\x90", 4, REC_EPROTOCOL},
        {"reserved byte", "\x94\x01\x01\xc1\xc0", 5, REC_EPROTOCOL},
        {"array32 of 4e9", "\xdd\xff\xff\xff\xff", 5, REC_ETOOLARGE},
        {"str32 of 4 GB", "\x94\x01\x01\xc0\xdb\xff\xff\xff\xff", 9,
         REC_ETOOLARGE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        rec_client_msg m;
        size_t used = 99;
        int rc = rec_client_parse(cases[i].bytes, cases[i].len, NULL, &used, &m);
        if (rc != cases[i].rc)
            fail_msg("%s: got %d (%s), want %s", cases[i].what, rc,
                     rec_err_name(rc), rec_err_name(cases[i].rc));
        assert_int_equal(used, 0);
        assert_int_equal(m.type, 0);
    }
    /* caller limits */
    rec_value_limits lim;
    rec_value_limits_default(&lim);
    lim.max_bytes = 8;
    rec_buf b = REC_BUF_INIT;
    put_response(&b, 1, 0, NULL, NULL, "pong");
    rec_client_msg m;
    size_t used;
    assert_int_equal(rec_client_parse(b.data, b.len, &lim, &used, &m), REC_ETOOLARGE);
    lim.max_bytes = b.len;
    assert_int_equal(rec_client_parse(b.data, b.len, &lim, &used, &m), 0);
    rec_buf_free(&b);
}

/* ---- errors -------------------------------------------------------------- */

static void test_parse_error_map(void **state) {
    (void)state;
    rec_buf b = REC_BUF_INIT;
    put_response(&b, 3, REC_ENOTFOUND, "not_found", "no user 'u9'", NULL);
    rec_client_msg m;
    size_t used;
    assert_int_equal(rec_client_parse(b.data, b.len, NULL, &used, &m), 0);
    int64_t code;
    char name[32], msg[64];
    assert_int_equal(rec_client_parse_error(m.error, m.error_len, &code, name,
                                            sizeof name, msg, sizeof msg),
                     REC_ENOTFOUND);
    assert_int_equal(code, REC_ENOTFOUND);
    assert_string_equal(name, "not_found");
    assert_string_equal(msg, "no user 'u9'");
    /* truncation */
    char tiny[5];
    assert_int_equal(rec_client_parse_error(m.error, m.error_len, NULL, NULL, 0,
                                            tiny, sizeof tiny),
                     REC_ENOTFOUND);
    assert_string_equal(tiny, "no u");
    rec_buf_free(&b);

    /* nil: no error */
    assert_int_equal(rec_client_parse_error("\xc0", 1, &code, name, sizeof name,
                                            msg, sizeof msg),
                     0);
    assert_string_equal(name, "");
}

static void test_parse_error_fallbacks(void **state) {
    (void)state;
    int64_t code;
    char name[32], msg[32];
    /* unknown name, known code (negative fixint can't hold it: int16) */
    rec_buf b = REC_BUF_INIT;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, buf_write);
    msgpack_pack_map(&pk, 4);
    msgpack_pack_int(&pk, 5); /* a key that is not a string: skipped */
    msgpack_pack_array(&pk, 0);
    pack_str(&pk, "name");
    pack_str(&pk, "brand_new_error");
    pack_str(&pk, "code");
    msgpack_pack_int(&pk, REC_EBUSY);
    pack_str(&pk, "extra");
    msgpack_pack_map(&pk, 1);
    pack_str(&pk, "k");
    msgpack_pack_nil(&pk);
    assert_int_equal(rec_client_parse_error(b.data, b.len, &code, name, sizeof name,
                                            msg, sizeof msg),
                     REC_EBUSY);
    assert_string_equal(name, "brand_new_error");
    assert_string_equal(msg, "");
    assert_int_equal(code, REC_EBUSY);
    /* neither known */
    rec_buf_clear(&b);
    msgpack_pack_map(&pk, 2);
    pack_str(&pk, "name");
    pack_str(&pk, "who_knows");
    pack_str(&pk, "code");
    msgpack_pack_int(&pk, 17);
    assert_int_equal(rec_client_parse_error(b.data, b.len, &code, name, sizeof name,
                                            msg, sizeof msg),
                     REC_EPROTOCOL);
    assert_int_equal(code, 17);
    /* not a map at all */
    assert_int_equal(rec_client_parse_error("\xa3" "abc", 4, &code, name,
                                            sizeof name, msg, sizeof msg),
                     REC_EPROTOCOL);
    /* name has the wrong type: skipped, code decides */
    rec_buf_clear(&b);
    msgpack_pack_map(&pk, 2);
    pack_str(&pk, "name");
    msgpack_pack_int(&pk, 3);
    pack_str(&pk, "code");
    msgpack_pack_int(&pk, REC_EDIM);
    assert_int_equal(rec_client_parse_error(b.data, b.len, &code, name, sizeof name,
                                            msg, sizeof msg),
                     REC_EDIM);
    rec_buf_free(&b);

    assert_int_equal(rec_client_err_from_name("not_found", 9), REC_ENOTFOUND);
    assert_int_equal(rec_client_err_from_name("not_foun", 8), 0);
}

/* ---- over a socket ------------------------------------------------------- */

static void test_call_chunked(void **state) {
    (void)state;
    peer p;
    rec_client *c = pair_client(&p);
    rec_buf out = REC_BUF_INIT;
    put_response(&out, 1, 0, NULL, NULL, "pong");
    p.out = &out;
    p.expect = request_len(1, "sys.ping", NULL, 0);
    p.chunk = 1;
    peer_start(&p);

    rec_client_reply r;
    rec_client_reply_init(&r);
    assert_int_equal(rec_client_call(c, "sys.ping", NULL, 0, &r), 0);
    assert_int_equal(r.msg.type, REC_MSG_RESPONSE);
    assert_int_equal(r.msg.msgid, 1);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.err_name, "");
    assert_int_equal(rec_client_inflight(c), 0);
    msgpack_object o;
    assert_int_equal(rec_client_reply_unpack(&r, &o), 0);
    assert_int_equal(o.type, MSGPACK_OBJECT_STR);
    assert_int_equal(o.via.str.size, 4);
    assert_memory_equal(o.via.str.ptr, "pong", 4);
    peer_join(&p);
    rec_client_reply_close(&r);
    rec_buf_free(&out);
    rec_client_free(c);
}

static void test_call_error_reply(void **state) {
    (void)state;
    peer p;
    rec_client *c = pair_client(&p);
    rec_buf out = REC_BUF_INIT;
    put_response(&out, 1, REC_EDIM, "dimension_mismatch",
                 "vectors.content: 3 floats, space has 64", NULL);
    p.out = &out;
    p.chunk = 3;
    static const unsigned char params[] = {0x91, 0x80};
    p.expect = request_len(1, "item.put", params, sizeof params);
    peer_start(&p);

    rec_client_reply r;
    rec_client_reply_init(&r);
    assert_int_equal(rec_client_call(c, "item.put", params, sizeof params, &r),
                     REC_EDIM);
    assert_int_equal(r.msg.type, REC_MSG_RESPONSE);
    assert_int_equal(r.status, REC_EDIM);
    assert_int_equal(r.err_code, REC_EDIM);
    assert_string_equal(r.err_name, "dimension_mismatch");
    assert_string_equal(r.err_message, "vectors.content: 3 floats, space has 64");
    assert_int_equal(*(const unsigned char *)r.msg.body, 0xc0);
    peer_join(&p);
    rec_client_reply_close(&r);
    rec_buf_free(&out);
    rec_client_free(c);
}

static void test_request_bytes_on_wire(void **state) {
    (void)state;
    peer p;
    rec_client *c = pair_client(&p);
    rec_buf out = REC_BUF_INIT;
    put_response(&out, 1, 0, NULL, NULL, "ok");
    p.out = &out;
    p.chunk = 64;
    static const unsigned char want[] = {0x94, 0x00, 0x01, 0xa8, 's', 'y', 's',
                                         '.',  'p',  'i',  'n',  'g', 0x90};
    p.expect = sizeof want;
    peer_start(&p);
    rec_client_reply r;
    rec_client_reply_init(&r);
    assert_int_equal(rec_client_call(c, "sys.ping", NULL, 0, &r), 0);
    pthread_join(p.th, NULL);
    assert_int_equal(p.in.len, sizeof want);
    assert_memory_equal(p.in.data, want, sizeof want);
    close(p.fd);
    rec_buf_free(&p.in);
    rec_client_reply_close(&r);
    rec_buf_free(&out);
    rec_client_free(c);
}

static void test_pipeline(void **state) {
    (void)state;
    peer p;
    rec_client *c = pair_client(&p);
    rec_buf out = REC_BUF_INIT;
    put_response(&out, 1, 0, NULL, NULL, "a");
    put_notification(&out, "log", NULL, NULL); /* surfaced by recv */
    put_response(&out, 2, REC_ENOTFOUND, "not_found", "nope", NULL);
    put_response(&out, 3, 0, NULL, NULL, "c");
    p.out = &out;
    p.chunk = 5;
    p.expect = 3 * request_len(1, "sys.ping", NULL, 0);
    peer_start(&p);

    uint32_t ids[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(rec_client_send(c, "sys.ping", NULL, 0, &ids[i]), 0);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[2], 3);
    assert_int_equal(rec_client_inflight(c), 3);
    rec_client_reply r;
    rec_client_reply_init(&r);
    assert_int_equal(rec_client_call(c, "sys.ping", NULL, 0, &r), REC_EBUSY);

    assert_int_equal(rec_client_recv(c, &r), 0);
    assert_int_equal(r.msg.msgid, 1);
    assert_body_str(&r.msg, "a");
    assert_int_equal(rec_client_recv(c, &r), 0);
    assert_int_equal(r.msg.type, REC_MSG_NOTIFICATION);
    assert_int_equal(r.msg.method_len, 3);
    assert_memory_equal(r.msg.method, "log", 3);
    assert_int_equal(rec_client_inflight(c), 2);
    assert_int_equal(rec_client_recv(c, &r), REC_ENOTFOUND);
    assert_int_equal(r.msg.msgid, 2);
    assert_string_equal(r.err_message, "nope");
    assert_int_equal(rec_client_recv(c, &r), 0);
    assert_int_equal(r.msg.msgid, 3);
    assert_string_equal(r.err_name, "");
    assert_body_str(&r.msg, "c");
    assert_int_equal(rec_client_inflight(c), 0);
    peer_join(&p);
    rec_client_reply_close(&r);
    rec_buf_free(&out);
    rec_client_free(c);
}

static void test_call_skips_notification(void **state) {
    (void)state;
    peer p;
    rec_client *c = pair_client(&p);
    rec_buf out = REC_BUF_INIT;
    put_notification(&out, "log", NULL, NULL);
    put_response(&out, 1, 0, NULL, NULL, "pong");
    p.out = &out;
    p.chunk = 2;
    p.expect = request_len(1, "sys.ping", NULL, 0);
    peer_start(&p);
    rec_client_reply r;
    rec_client_reply_init(&r);
    assert_int_equal(rec_client_call(c, "sys.ping", NULL, 0, &r), 0);
    assert_int_equal(r.msg.type, REC_MSG_RESPONSE);
    assert_body_str(&r.msg, "pong");
    peer_join(&p);
    rec_client_reply_close(&r);
    rec_buf_free(&out);
    rec_client_free(c);
}

static void test_error_notification_closes(void **state) {
    (void)state;
    peer p;
    rec_client *c = pair_client(&p);
    rec_buf out = REC_BUF_INIT;
    put_notification(&out, "error", "too_large", "message over 4 MiB");
    p.out = &out;
    p.chunk = 7;
    p.close_after = 1;
    p.expect = request_len(1, "item.put", NULL, 0);
    peer_start(&p);
    rec_client_reply r;
    rec_client_reply_init(&r);
    assert_int_equal(rec_client_call(c, "item.put", NULL, 0, &r), REC_ETOOLARGE);
    assert_int_equal(r.msg.type, REC_MSG_NOTIFICATION);
    assert_string_equal(r.err_name, "too_large");
    assert_string_equal(r.err_message, "message over 4 MiB");
    /* the connection is done */
    assert_int_equal(rec_client_call(c, "sys.ping", NULL, 0, &r), REC_EIO);
    assert_int_equal(r.msg.type, 0);
    assert_non_null(strstr(rec_client_errmsg(c), "too_large"));
    peer_join(&p);
    rec_client_reply_close(&r);
    rec_buf_free(&out);
    rec_client_free(c);
}

static void test_closed_mid_message(void **state) {
    (void)state;
    peer p;
    rec_client *c = pair_client(&p);
    rec_buf out = REC_BUF_INIT;
    put_response(&out, 1, 0, NULL, NULL, "pong");
    out.len -= 2; /* the peer dies before the end */
    p.out = &out;
    p.chunk = 1;
    p.close_after = 1;
    p.expect = request_len(1, "sys.ping", NULL, 0);
    peer_start(&p);
    rec_client_reply r;
    rec_client_reply_init(&r);
    assert_int_equal(rec_client_call(c, "sys.ping", NULL, 0, &r), REC_EIO);
    assert_int_equal(r.msg.type, 0);
    assert_string_equal(rec_client_errmsg(c), "connection closed by server");
    assert_int_equal(rec_client_send(c, "sys.ping", NULL, 0, NULL), REC_EIO);
    msgpack_object o;
    assert_int_equal(rec_client_reply_unpack(&r, &o), REC_EINVAL);
    peer_join(&p);
    rec_client_reply_close(&r);
    rec_buf_free(&out);
    rec_client_free(c);
}

static void test_malformed_reply(void **state) {
    (void)state;
    peer p;
    rec_client *c = pair_client(&p);
    rec_buf out = REC_BUF_INIT;
    assert_int_equal(rec_buf_append(&out, "\x94\x01\x01\xc1\xc0", 5), 0);
    p.out = &out;
    p.chunk = 5;
    p.expect = request_len(1, "sys.ping", NULL, 0);
    peer_start(&p);
    rec_client_reply r;
    rec_client_reply_init(&r);
    assert_int_equal(rec_client_call(c, "sys.ping", NULL, 0, &r), REC_EPROTOCOL);
    assert_int_equal(r.msg.type, 0);
    assert_int_equal(rec_client_recv(c, &r), REC_EIO);
    peer_join(&p);
    rec_client_reply_close(&r);
    rec_buf_free(&out);
    rec_client_free(c);
}

static void test_reply_over_limits(void **state) {
    (void)state;
    peer p;
    rec_client *c = pair_client(&p);
    rec_value_limits lim;
    rec_value_limits_default(&lim);
    lim.max_str = 8;
    rec_client_set_limits(c, &lim);
    rec_buf out = REC_BUF_INIT;
    put_response(&out, 1, 0, NULL, NULL, "a string longer than eight");
    p.out = &out;
    p.chunk = 4;
    p.expect = request_len(1, "sys.ping", NULL, 0);
    peer_start(&p);
    rec_client_reply r;
    rec_client_reply_init(&r);
    assert_int_equal(rec_client_call(c, "sys.ping", NULL, 0, &r), REC_ETOOLARGE);
    assert_int_equal(r.msg.type, 0);
    peer_join(&p);
    rec_client_reply_close(&r);
    rec_buf_free(&out);
    rec_client_free(c);
}

static void test_large_reply(void **state) {
    (void)state;
    peer p;
    rec_client *c = pair_client(&p);
    size_t n = (size_t)5 << 20;
    char *s = malloc(n + 1);
    assert_non_null(s);
    for (size_t i = 0; i < n; i++)
        s[i] = (char)('a' + i % 26);
    s[n] = '\0';
    rec_buf out = REC_BUF_INIT;
    put_response(&out, 1, 0, NULL, NULL, s);
    put_response(&out, 2, 0, NULL, NULL, "after");
    p.out = &out;
    p.chunk = 3000; /* many reads, several buffer growths */
    p.expect = 2 * request_len(1, "item.get", NULL, 0);
    peer_start(&p);
    assert_int_equal(rec_client_send(c, "item.get", NULL, 0, NULL), 0);
    assert_int_equal(rec_client_send(c, "item.get", NULL, 0, NULL), 0);
    rec_client_reply r;
    rec_client_reply_init(&r);
    assert_int_equal(rec_client_recv(c, &r), 0);
    msgpack_object o;
    assert_int_equal(rec_client_reply_unpack(&r, &o), 0);
    assert_int_equal(o.type, MSGPACK_OBJECT_STR);
    assert_int_equal(o.via.str.size, n);
    assert_memory_equal(o.via.str.ptr, s, n);
    assert_int_equal(rec_client_recv(c, &r), 0);
    assert_int_equal(r.msg.msgid, 2);
    assert_body_str(&r.msg, "after");
    peer_join(&p);
    free(s);
    rec_client_reply_close(&r);
    rec_buf_free(&out);
    rec_client_free(c);
}

static void test_timeout(void **state) {
    (void)state;
    peer p;
    rec_client *c = pair_client(&p);
    rec_client_set_timeout(c, 50);
    p.expect = request_len(1, "sys.ping", NULL, 0);
    peer_start(&p); /* reads, never answers */
    rec_client_reply r;
    rec_client_reply_init(&r);
    assert_int_equal(rec_client_call(c, "sys.ping", NULL, 0, &r), REC_EIO);
    assert_string_equal(rec_client_errmsg(c), "timed out");
    peer_join(&p);
    rec_client_reply_close(&r);
    rec_client_free(c);
}

/* ---- real sockets -------------------------------------------------------- */

typedef struct acceptor {
    int lfd;
    rec_buf out;
    size_t expect;
    pthread_t th;
} acceptor;

static void *acceptor_main(void *arg) {
    acceptor *a = arg;
    int fd = accept(a->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    peer p;
    memset(&p, 0, sizeof p);
    p.fd = fd;
    p.expect = a->expect;
    p.out = &a->out;
    p.chunk = 1 << 16;
    peer_main(&p);
    close(fd);
    rec_buf_free(&p.in);
    return NULL;
}

static void ping_through(const char *addr, acceptor *a) {
    put_response(&a->out, 1, 0, NULL, NULL, "pong");
    a->expect = request_len(1, "sys.ping", NULL, 0);
    assert_int_equal(pthread_create(&a->th, NULL, acceptor_main, a), 0);
    rec_client *c;
    char err[128];
    int rc = rec_client_connect(&c, addr, err, sizeof err);
    if (rc)
        fail_msg("connect %s: %s", addr, err);
    rec_client_set_timeout(c, 5000);
    rec_client_reply r;
    rec_client_reply_init(&r);
    assert_int_equal(rec_client_call(c, "sys.ping", NULL, 0, &r), 0);
    assert_body_str(&r.msg, "pong");
    rec_client_reply_close(&r);
    rec_client_free(c);
    pthread_join(a->th, NULL);
    close(a->lfd);
    rec_buf_free(&a->out);
}

static void test_connect_tcp(void **state) {
    (void)state;
    acceptor a;
    memset(&a, 0, sizeof a);
    a.lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(a.lfd >= 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(a.lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(a.lfd, 4), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(a.lfd, (struct sockaddr *)&sa, &sl), 0);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", ntohs(sa.sin_port));
    ping_through(addr, &a);
}

static void test_connect_unix(void **state) {
    (void)state;
    char dir[] = "/tmp/test_client.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[96], addr[112];
    snprintf(path, sizeof path, "%s/s.sock", dir);
    snprintf(addr, sizeof addr, "unix:%s", path);
    acceptor a;
    memset(&a, 0, sizeof a);
    a.lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un su;
    memset(&su, 0, sizeof su);
    su.sun_family = AF_UNIX;
    snprintf(su.sun_path, sizeof su.sun_path, "%s", path);
    assert_int_equal(bind(a.lfd, (struct sockaddr *)&su, sizeof su), 0);
    assert_int_equal(listen(a.lfd, 4), 0);
    ping_through(addr, &a);
    unlink(path);

    /* nobody listening any more */
    rec_client *c = (rec_client *)&a; /* must be reset to NULL */
    char err[128];
    assert_int_equal(rec_client_connect(&c, path, err, sizeof err), REC_EIO);
    assert_null(c);
    assert_non_null(strstr(err, "s.sock"));
    assert_int_equal(rec_client_connect(&c, "nowhere", err, sizeof err), REC_EINVAL);
    assert_non_null(strstr(err, "bad address"));
    rmdir(dir);
    rec_client_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addr_tcp),
        cmocka_unit_test(test_addr_unix),
        cmocka_unit_test(test_addr_bad),
        cmocka_unit_test(test_encode_ping),
        cmocka_unit_test(test_encode_params_verbatim),
        cmocka_unit_test(test_encode_notification),
        cmocka_unit_test(test_encode_refuses),
        cmocka_unit_test(test_parse_response),
        cmocka_unit_test(test_parse_notification),
        cmocka_unit_test(test_parse_refuses),
        cmocka_unit_test(test_parse_error_map),
        cmocka_unit_test(test_parse_error_fallbacks),
        cmocka_unit_test(test_call_chunked),
        cmocka_unit_test(test_call_error_reply),
        cmocka_unit_test(test_request_bytes_on_wire),
        cmocka_unit_test(test_pipeline),
        cmocka_unit_test(test_call_skips_notification),
        cmocka_unit_test(test_error_notification_closes),
        cmocka_unit_test(test_closed_mid_message),
        cmocka_unit_test(test_malformed_reply),
        cmocka_unit_test(test_reply_over_limits),
        cmocka_unit_test(test_large_reply),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_connect_tcp),
        cmocka_unit_test(test_connect_unix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
