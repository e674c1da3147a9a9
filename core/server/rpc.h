/* rpc.h - msgpack-RPC framing: find, check and decode one message in a
 * byte buffer; encode responses and notifications.
 *
 * Pure functions over (buf, len): no sockets, no engine. A message is
 * pre-scanned against limits (value.h) before msgpack-c decodes it, so a
 * hostile header cannot make the decoder allocate what it claims.
 */
#ifndef REC_RPC_H
#define REC_RPC_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "value.h"

enum { REC_RPC_REQUEST = 0, REC_RPC_RESPONSE = 1, REC_RPC_NOTIFY = 2 };

#define REC_RPC_METHOD_MAX 64

typedef struct rec_rpc_msg {
    int type;                /* REC_RPC_REQUEST or REC_RPC_NOTIFY */
    uint32_t msgid;          /* requests only */
    const char *method;      /* borrowed from the unpacked zone, not NUL-terminated */
    size_t method_len;
    msgpack_object params;   /* an array; borrowed from the unpacked zone */
} rec_rpc_msg;

/* Limits of one message, held against its raw bytes before it is decoded.
 * Decoding makes one 16-byte object per value, so max_objects bounds the
 * memory a message costs once decoded (16 MiB at the default). */
typedef struct rec_rpc_limits {
    size_t max_bytes;     /* the whole message; default 4 MiB */
    uint32_t max_depth;   /* nesting of arrays/maps; default and at most 32 */
    uint32_t max_str;     /* one str/bin/ext payload; default 1 MiB */
    uint32_t max_items;   /* elements of one array, pairs of one map;
                             default 1,000,000 */
    uint32_t max_objects; /* values in the message, containers and map keys
                             included; default 1,048,576 */
} rec_rpc_limits;

#define REC_RPC_DEPTH_MAX 32

void rec_rpc_limits_default(rec_rpc_limits *l);

/* How far the framing of a message got: the bytes before `pos` are checked
 * and need not be looked at again when more arrive. A zeroed struct starts
 * a new message; zero it again after each message. */
typedef struct rec_rpc_scan {
    size_t pos;       /* bytes of the message checked so far; its size
                         once complete */
    uint64_t need;    /* values still to read (each at least one byte) */
    uint32_t objects; /* values read so far */
    uint32_t depth;   /* containers open */
    uint64_t rem[REC_RPC_DEPTH_MAX]; /* values left in each open container */
} rec_rpc_scan;

/* Frame the message that starts at buf[0], of which buf[0..len) has
 * arrived, resuming where st stopped (buf must start at the same message
 * with the same bytes as before; len may only grow). Returns 0 with
 * st->pos = the message's size; REC_VALUE_PARTIAL when more bytes are needed
 * (st keeps its progress: the work over all calls is linear in the
 * message's size); REC_ETOOLARGE or REC_EPROTOCOL with *why naming the
 * rule. A limit is refused as soon as a header claims past it, before its
 * payload arrives. No allocation. */
int rec_rpc_frame(rec_rpc_scan *st, const char *buf, size_t len,
                  const rec_rpc_limits *lim, const char **why);

/* Decode the n bytes of a framed message (rec_rpc_frame returned 0 with
 * st->pos == n) into up, whose zone is emptied first (the previous
 * message's objects end here) and created when missing. Returns 0, or
 * REC_ENOMEM / REC_EPROTOCOL with *why (out->msgid holds the request's
 * msgid when it could be read, else UINT32_MAX). out borrows from up's
 * zone and from buf. */
int rec_rpc_decode(const char *buf, size_t n, msgpack_unpacked *up,
                   rec_rpc_msg *out, const char **why);

/* Give back the memory of the message decoded into up (its zone keeps one
 * small chunk): what it decoded must no longer be used. */
void rec_rpc_release(msgpack_unpacked *up);

/* Decode the next message of buf[0..len) into up (which owns its memory;
 * msgpack_unpacked_init before, msgpack_unpacked_destroy after; its zone
 * is kept and cleared from one message to the next, so the previous
 * message's objects end here).
 * Returns 0 with *used = bytes consumed; REC_VALUE_PARTIAL when more bytes are
 * needed; REC_ETOOLARGE (over a limit) or REC_EPROTOCOL (not msgpack, or
 * not a request/notification of the right shape) with *why naming the rule
 * and *used = 0. When the message is a well-formed msgpack value but not a
 * valid request, *used is still set so the caller may skip it, and
 * out->msgid holds the request's msgid when one could be read (else
 * UINT32_MAX). The one-shot form of rec_rpc_frame and rec_rpc_decode, with
 * lim's limits and the default max_objects. */
int rec_rpc_next(const char *buf, size_t len, const rec_value_limits *lim,
                 msgpack_unpacked *up, rec_rpc_msg *out, size_t *used,
                 const char **why);

/* msgpack-c packer writing into a rec_buf. */
void rec_rpc_packer(msgpack_packer *pk, rec_buf *out);

/* The bytes of a response before its result, [1, msgid, nil, ...: at most
 * REC_RPC_HEAD_MAX. Returns their length. */
#define REC_RPC_HEAD_MAX 9
size_t rec_rpc_result_head(unsigned char out[REC_RPC_HEAD_MAX], uint32_t msgid);

/* Append [1, msgid, nil, <result>] where result is already packed msgpack
 * bytes (one object). 0 or REC_ENOMEM. */
int rec_rpc_result(rec_buf *out, uint32_t msgid, const void *result,
                   size_t rlen);

/* Pack an error map {code, name, message}. */
int rec_rpc_pack_error(msgpack_packer *pk, int code, const char *message);

/* Append [1, msgid, {code, name, message}, nil]. 0 or REC_ENOMEM. */
int rec_rpc_error(rec_buf *out, uint32_t msgid, int code,
                  const char *message);

/* Append the notification [2, "error", [{code, name, message}]]. */
int rec_rpc_notify_error(rec_buf *out, int code, const char *message);

#endif
