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

/* Decode the next message of buf[0..len) into up (which owns its memory;
 * msgpack_unpacked_init before, msgpack_unpacked_destroy after; its zone
 * is kept and cleared from one message to the next, so the previous
 * message's objects end here).
 * Returns 0 with *used = bytes consumed; REC_MP_PARTIAL when more bytes are
 * needed; REC_ETOOLARGE (over a limit) or REC_EPROTOCOL (not msgpack, or
 * not a request/notification of the right shape) with *why naming the rule
 * and *used = 0. When the message is a well-formed msgpack value but not a
 * valid request, *used is still set so the caller may skip it, and
 * out->msgid holds the request's msgid when one could be read (else
 * UINT32_MAX). */
int rec_rpc_next(const char *buf, size_t len, const rec_mp_limits *lim,
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
