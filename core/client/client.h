/* client.h - a small blocking msgpack-RPC client for recd.
 *
 * One rec_client is one connection (TCP or Unix socket) used by one thread.
 * Calls block; a timeout, when set, bounds each wait for the socket.
 *
 *   rec_client *c;
 *   rec_client_reply r;
 *   rec_client_reply_init(&r);
 *   if (rec_client_connect(&c, "127.0.0.1:7700", err, sizeof err) == 0) {
 *       int rc = rec_client_call(c, "sys.ping", NULL, 0, &r);
 *       ...                       rc: 0, the server's error, or a local one
 *       rec_client_free(c);
 *   }
 *   rec_client_reply_close(&r);
 *
 * Pipelining: rec_client_send queues requests (written once 64 KiB are
 * queued, or by rec_client_flush / rec_client_recv), rec_client_recv reads
 * the next message, whichever request it answers. recd answers the
 * requests of one connection in order. Keep fewer than 1,024 requests in
 * flight: past that the server stops reading, and a client that only
 * writes would wait forever.
 *
 * Replies are framed with rec_value_scan before anything is decoded, so a
 * hostile or broken server cannot make the client allocate more than the
 * limits allow (defaults below). The pure helpers at the end (encode a
 * request, split a message) need no connection; the benchmark uses them
 * with its own event loop.
 *
 * Parameters are the msgpack bytes of one array, packed by the caller
 * (msgpack-c's packer does it; examples/c/hello.c shows how). Functions
 * that can fail return 0 or a negative REC_E* code of err.h (include it to
 * compare codes; rec_err_name gives the stable name). Two things need
 * releasing: a rec_client (rec_client_free) and an init'ed
 * rec_client_reply (rec_client_reply_close); every other pointer handed
 * out is borrowed, for as long as its comment says.
 *
 * Building a program: compile with -Icore/client -Icore/engine and
 * `pkg-config --cflags lua5.4 msgpack` (value.h includes lua.h), link
 * build/rel/librecd.a before
 * `pkg-config --libs lua5.4 msgpack`; see examples/c/README.md.
 */
#ifndef REC_CLIENT_H
#define REC_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "buf.h"
#include "value.h"

/* ---- addresses ----------------------------------------------------------- */

enum { REC_ADDR_TCP = 1, REC_ADDR_UNIX = 2 };

typedef struct rec_client_addr {
    int kind;        /* REC_ADDR_TCP or REC_ADDR_UNIX */
    char host[256];  /* TCP: name or address, IPv6 brackets removed */
    char port[6];    /* TCP: decimal, 1..65535 */
    char path[108];  /* Unix: socket path (fits sockaddr_un.sun_path) */
} rec_client_addr;

/* Parse "host:port", "[v6addr]:port", "unix:PATH", or a PATH that holds a
 * '/' (a Unix socket). 0, or REC_EINVAL (empty host, port not in 1..65535,
 * path empty or too long, text too long) with *out zeroed. */
int rec_client_parse_addr(const char *addr, rec_client_addr *out);

/* ---- messages ------------------------------------------------------------ */

enum {
    REC_MSG_REQUEST = 0,
    REC_MSG_RESPONSE = 1,
    REC_MSG_NOTIFICATION = 2,
};

/* One message from the server, as views into the bytes it was split from
 * (borrowed: valid while those bytes are). */
typedef struct rec_client_msg {
    int type;              /* REC_MSG_RESPONSE or REC_MSG_NOTIFICATION; 0: none */
    uint32_t msgid;        /* response: the request's msgid */
    const char *method;    /* notification: method name, not NUL-terminated */
    size_t method_len;
    const void *error;     /* response: the raw error object (nil: 0xc0) */
    size_t error_len;
    const void *body;      /* raw result (response) or params (notification) */
    size_t body_len;
} rec_client_msg;

/* A message read by a client, with its bytes. Caller-allocated: init once,
 * reuse for any number of calls, close at the end. Each call that fills it
 * replaces what it held. */
typedef struct rec_client_reply {
    rec_client_msg msg;        /* views into raw */
    int status;                /* 0, or REC_E* of the error carried */
    int64_t err_code;          /* the error map's code (0 when absent) */
    char err_name[64];         /* the error's name, "" when none (truncated) */
    char err_message[256];     /* the error's message (truncated) */
    rec_buf raw;               /* the whole message; owned */
    msgpack_unpacked unpacked; /* owned; see rec_client_reply_unpack */
} rec_client_reply;

/* Prepare r (caller-allocated, e.g. on the stack) to hold replies: empty,
 * owning nothing yet. Cannot fail. */
void rec_client_reply_init(rec_client_reply *r);
/* Free what r holds (its bytes and any rec_client_reply_unpack result;
 * views into them become invalid). r is zeroed and may be init'ed again;
 * closing an init'ed reply that was never filled is fine. */
void rec_client_reply_close(rec_client_reply *r);

/* Decode the result (or notification params) of r with msgpack-c. *out
 * borrows from r: valid until r is filled again or closed. 0, REC_EINVAL
 * (r holds no message), REC_EPROTOCOL, REC_ENOMEM. */
int rec_client_reply_unpack(rec_client_reply *r, msgpack_object *out);

/* ---- connections --------------------------------------------------------- */

typedef struct rec_client rec_client;

/* Connect to addr (see rec_client_parse_addr). TCP connections set
 * TCP_NODELAY. 0 with *out set (the caller owns it: free with
 * rec_client_free); REC_EINVAL (bad address), REC_EIO (resolution or
 * connect failed), REC_ENOMEM, with *out NULL and a NUL-terminated message
 * in err[0..errlen) (err may be NULL). Blocks until connected: the timeout
 * of rec_client_set_timeout does not apply to the connect itself. */
int rec_client_connect(rec_client **out, const char *addr, char *err,
                       size_t errlen);

/* Wrap a connected stream socket; takes ownership of fd (closed by
 * rec_client_free, and also on failure). 0 with *out set (free with
 * rec_client_free), or REC_ENOMEM with *out NULL. */
int rec_client_from_fd(rec_client **out, int fd);

/* Close the connection and free c. NULL is a no-op. Unsent requests are
 * dropped, and answers not yet read are lost. Replies filled from c stay
 * valid: they own their bytes. */
void rec_client_free(rec_client *c);

/* Bound every wait for the socket to ms milliseconds (<= 0: no bound, the
 * default). A wait that times out fails with REC_EIO and leaves the
 * connection unusable, since its answer may still come. */
void rec_client_set_timeout(rec_client *c, int ms);

/* Limits applied to each message read (*l is copied). Defaults: 64 MiB per
 * message, depth 40, 16 MiB per string, 16,000,000 elements per
 * container. A message over them fails rec_client_recv with
 * REC_ETOOLARGE. */
void rec_client_set_limits(rec_client *c, const rec_value_limits *l);

/* Why the last failing call failed ("connection closed by server",
 * "timed out", a strerror). Static or owned by c: valid until the next
 * call on c. */
const char *rec_client_errmsg(const rec_client *c);

/* Requests sent (queued or written) whose responses have not been read. */
size_t rec_client_inflight(const rec_client *c);

/* Queue the request [0, msgid, method, params]. params: the msgpack bytes
 * of one array (copied: the caller may reuse them at once), or len 0 for
 * []. *msgid (may be NULL) gets the id chosen (1, 2, 3, ... per
 * connection). Writes when 64 KiB are queued. 0, REC_EINVAL (params not
 * exactly one array, method empty or over 255 bytes; nothing queued),
 * REC_ENOMEM, or REC_EIO (a write failed, or the connection is already
 * unusable). */
int rec_client_send(rec_client *c, const char *method, const void *params,
                    size_t len, uint32_t *msgid);

/* Queue the notification [2, method, params]; never answered, and not
 * counted in rec_client_inflight. Same rules and returns as
 * rec_client_send. */
int rec_client_notify(rec_client *c, const char *method, const void *params,
                      size_t len);

/* Write everything queued. 0 or REC_EIO. */
int rec_client_flush(rec_client *c);

/* Write what is queued, then read the next message (a response to any
 * request, or a notification; recd sends [2, "error", [error]] before it
 * closes a connection it refuses). out (init'ed) is emptied first, then
 * filled; it owns the message's bytes, and out->msg points into them until
 * out is filled again or closed. Returns:
 *   0            a message without error, in out
 *   < 0 with out->msg.type != 0
 *                the message carries an error (a response's error, or an
 *                "error" notification's): the code of its name (of its code
 *                when the name is not one of err.h's; REC_EPROTOCOL when
 *                neither is), also in out->status, with err_name/err_message
 *   < 0 with out->msg.type == 0
 *                REC_EIO (connection closed, write/read failure, timeout),
 *                REC_EPROTOCOL (not msgpack-RPC), REC_ETOOLARGE (over the
 *                limits), REC_ENOMEM; the connection is then unusable and
 *                every later call fails with REC_EIO.
 * Calling it with nothing in flight waits for a notification. */
int rec_client_recv(rec_client *c, rec_client_reply *out);

/* Send one request and wait for its response, in out as for
 * rec_client_recv. Notifications that arrive meanwhile are skipped, except
 * an "error" notification, which is returned (the server is about to
 * close). Returns as rec_client_recv (a server error: < 0 with
 * out->msg.type != 0 and out->err_name set); also as rec_client_send when
 * the request cannot be queued (out->msg.type == 0), and REC_EBUSY
 * (nothing sent) while pipelined requests are in flight. */
int rec_client_call(rec_client *c, const char *method, const void *params,
                    size_t len, rec_client_reply *out);

/* ---- pure helpers -------------------------------------------------------- */

/* Append [0, msgid, method, params] to out (params as for
 * rec_client_send). 0, REC_EINVAL, or REC_ENOMEM; out unchanged on error. */
int rec_client_encode_request(rec_buf *out, uint32_t msgid, const char *method,
                              const void *params, size_t len);

/* Append [2, method, params] to out. As rec_client_encode_request. */
int rec_client_encode_notification(rec_buf *out, const char *method,
                                   const void *params, size_t len);

/* Split the message at the start of data[0..len): 0 with *used its size
 * and *msg views into data; REC_VALUE_PARTIAL when the bytes end before it
 * does; REC_EPROTOCOL when it is not a response or notification
 * (requests from a server are refused too); REC_ETOOLARGE over lim
 * (NULL: the client defaults). Pure, no allocation. */
int rec_client_parse(const void *data, size_t len, const rec_value_limits *lim,
                     size_t *used, rec_client_msg *msg);

/* Read the error map {code, name, message} in err[0..len) (a raw msgpack
 * object; nil means no error): returns 0 for nil, else the REC_E* of the
 * name (of the code when the name is unknown, REC_EPROTOCOL when neither
 * is known or err is not a map), filling the outputs that are not NULL
 * (strings truncated and NUL-terminated). Pure, no allocation. */
int rec_client_parse_error(const void *err, size_t len, int64_t *code,
                           char *name, size_t namelen, char *message,
                           size_t msglen);

/* The REC_E* whose stable name is name[0..len), or 0 when none is. */
int rec_client_err_from_name(const char *name, size_t len);

#endif
