/* rpc.c - msgpack-RPC framing. */
#include "rpc.h"

#include <string.h>

#include "err.h"

static int buf_write(void *data, const char *p, size_t n) {
    return rec_buf_append(data, p, n) ? -1 : 0;
}

void rec_rpc_packer(msgpack_packer *pk, rec_buf *out) {
    msgpack_packer_init(pk, out, buf_write);
}

void rec_rpc_limits_default(rec_rpc_limits *l) {
    l->max_bytes = (size_t)4 << 20;
    l->max_depth = REC_RPC_DEPTH_MAX;
    l->max_str = (uint32_t)1 << 20;
    l->max_items = 1000000;
    l->max_objects = (uint32_t)1 << 20;
}

/* ---- framing --------------------------------------------------------------
 * The same walk as rec_value_scan (value.c), with its state kept between calls
 * so that a message arriving in pieces is walked once, not once per piece,
 * and with the values counted. A value's header is read whole or not at
 * all: a partial header or string is looked at again from its first byte
 * (constant work), everything before it never again. Headers are read with
 * value.h's rec_value_classify, as rec_value_scan reads them. */

static int frame_fail(const char **why, const char *msg, int rc) {
    if (why)
        *why = msg;
    return rc;
}

int rec_rpc_frame(rec_rpc_scan *st, const char *buf, size_t len,
                  const rec_rpc_limits *lim, const char **why) {
    const unsigned char *p = (const unsigned char *)buf;
    uint32_t maxd = lim->max_depth < REC_RPC_DEPTH_MAX ? lim->max_depth
                                                       : REC_RPC_DEPTH_MAX;
    uint64_t max_bytes = lim->max_bytes;
    if (why)
        *why = NULL;
    if (st->pos == 0 && st->need == 0 && st->objects == 0)
        st->need = 1; /* a new message: one value to read */
    while (st->need > 0) {
        uint64_t pos = st->pos, need = st->need;
        /* What is left needs at least one byte and one object per value. */
        if (pos + need > max_bytes)
            return frame_fail(why, "message exceeds max_bytes", REC_ETOOLARGE);
        if (st->objects + need > lim->max_objects)
            return frame_fail(why, "message exceeds max_objects", REC_ETOOLARGE);
        if (pos >= len)
            return frame_fail(why, "message incomplete", REC_VALUE_PARTIAL);
        rec_value_head h = rec_value_classify(p[pos]);
        if (h.kind == REC_VALUE_RESERVED)
            return frame_fail(why, "reserved byte 0xc1", REC_EPROTOCOL);
        need--;
        uint64_t at = pos + 1;
        if (h.lenbytes) {
            at += h.lenbytes;
            if (at + need > max_bytes)
                return frame_fail(why, "message exceeds max_bytes", REC_ETOOLARGE);
            if (at > len)
                return frame_fail(why, "message incomplete", REC_VALUE_PARTIAL);
            h.n = rec_value_head_len(p + pos + 1, h.lenbytes);
        }
        if (h.kind == REC_VALUE_ARRAY || h.kind == REC_VALUE_MAP) {
            if (st->depth >= maxd)
                return frame_fail(why, "nesting exceeds max_depth", REC_ETOOLARGE);
            if (h.n > lim->max_items)
                return frame_fail(why, h.kind == REC_VALUE_ARRAY ? "array exceeds max_items"
                                                         : "map exceeds max_items",
                                  REC_ETOOLARGE);
            uint64_t elems = h.kind == REC_VALUE_MAP ? 2 * (uint64_t)h.n : h.n;
            need += elems;
            if (at + need > max_bytes)
                return frame_fail(why, "message exceeds max_bytes", REC_ETOOLARGE);
            if (st->objects + 1 + need > lim->max_objects)
                return frame_fail(why, "message exceeds max_objects", REC_ETOOLARGE);
            if (st->depth > 0)
                st->rem[st->depth - 1]--;
            if (elems)
                st->rem[st->depth++] = elems;
            st->pos = (size_t)at;
        } else {
            if (h.kind != REC_VALUE_SCALAR && h.n > lim->max_str)
                return frame_fail(why, h.kind == REC_VALUE_EXT ? "ext exceeds max_str"
                                               : "str or bin exceeds max_str",
                                  REC_ETOOLARGE);
            uint64_t end = at + h.extra + h.n;
            if (end + need > max_bytes)
                return frame_fail(why, "message exceeds max_bytes", REC_ETOOLARGE);
            if (end > len)
                return frame_fail(why, "message incomplete", REC_VALUE_PARTIAL);
            if (st->depth > 0)
                st->rem[st->depth - 1]--;
            st->pos = (size_t)end;
        }
        st->need = need;
        st->objects++;
        while (st->depth > 0 && st->rem[st->depth - 1] == 0)
            st->depth--;
    }
    return 0;
}

/* ---- decoding ------------------------------------------------------------ */

/* msgpack-c's decoding of n framed bytes into up: 0, REC_ENOMEM, or
 * REC_EPROTOCOL when the decoder refuses them. */
static int unpack(const char *buf, size_t n, msgpack_unpacked *up,
                  const char **why) {
    /* One zone, emptied for each message: msgpack_unpack_next would
     * allocate and free an 8 KiB zone for every message. */
    if (!up->zone && !(up->zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE))) {
        *why = "out of memory";
        return REC_ENOMEM;
    }
    msgpack_zone_clear(up->zone);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack(buf, n, &off, up->zone, &up->data);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR) {
        *why = "out of memory";
        return REC_ENOMEM;
    }
    if (ur != MSGPACK_UNPACK_SUCCESS || off != n) {
        *why = "msgpack decoder refused the message";
        return REC_EPROTOCOL;
    }
    return 0;
}

/* Is the decoded value a request or notification? */
static int check_shape(const msgpack_unpacked *up, rec_rpc_msg *out,
                       const char **why) {
    const msgpack_object *o = &up->data;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 3) {
        *why = "a message is an array [type, ...]";
        return REC_EPROTOCOL;
    }
    const msgpack_object *a = o->via.array.ptr;
    if (a[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        *why = "message type must be 0 (request) or 2 (notification)";
        return REC_EPROTOCOL;
    }
    const msgpack_object *method, *params;
    if (a[0].via.u64 == REC_RPC_REQUEST &&
        a[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER && a[1].via.u64 <= UINT32_MAX)
        out->msgid = (uint32_t)a[1].via.u64; /* for an error answer */
    if (a[0].via.u64 == REC_RPC_REQUEST) {
        if (o->via.array.size != 4) {
            *why = "a request is [0, msgid, method, params]";
            return REC_EPROTOCOL;
        }
        if (a[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
            a[1].via.u64 > UINT32_MAX) {
            *why = "msgid must be an unsigned 32-bit integer";
            return REC_EPROTOCOL;
        }
        out->type = REC_RPC_REQUEST;
        out->msgid = (uint32_t)a[1].via.u64;
        method = &a[2];
        params = &a[3];
    } else if (a[0].via.u64 == REC_RPC_NOTIFY) {
        if (o->via.array.size != 3) {
            *why = "a notification is [2, method, params]";
            return REC_EPROTOCOL;
        }
        out->type = REC_RPC_NOTIFY;
        method = &a[1];
        params = &a[2];
    } else {
        *why = "message type must be 0 (request) or 2 (notification)";
        return REC_EPROTOCOL;
    }
    if (method->type != MSGPACK_OBJECT_STR || method->via.str.size == 0 ||
        method->via.str.size > REC_RPC_METHOD_MAX) {
        *why = "method must be a string of 1..64 bytes";
        return REC_EPROTOCOL;
    }
    if (params->type != MSGPACK_OBJECT_ARRAY) {
        *why = "params must be an array";
        return REC_EPROTOCOL;
    }
    out->method = method->via.str.ptr;
    out->method_len = method->via.str.size;
    out->params = *params;
    return 0;
}

int rec_rpc_decode(const char *buf, size_t n, msgpack_unpacked *up,
                   rec_rpc_msg *out, const char **why) {
    out->msgid = UINT32_MAX;
    int rc = unpack(buf, n, up, why);
    if (rc)
        return rc;
    return check_shape(up, out, why);
}

void rec_rpc_release(msgpack_unpacked *up) {
    if (up->zone)
        msgpack_zone_clear(up->zone);
}

int rec_rpc_next(const char *buf, size_t len, const rec_value_limits *lim,
                 msgpack_unpacked *up, rec_rpc_msg *out, size_t *used,
                 const char **why) {
    *used = 0;
    out->msgid = UINT32_MAX;
    rec_rpc_limits l;
    rec_rpc_limits_default(&l);
    if (lim) {
        l.max_bytes = lim->max_bytes;
        l.max_depth = lim->max_depth;
        l.max_str = lim->max_str;
        l.max_items = lim->max_items;
    }
    rec_rpc_scan st;
    memset(&st, 0, sizeof st);
    const char *w = NULL;
    int rc = rec_rpc_frame(&st, buf, len, &l, &w);
    if (rc == REC_VALUE_PARTIAL)
        return rc;
    if (rc) {
        *why = w ? w : "malformed msgpack";
        return rc;
    }
    if ((rc = unpack(buf, st.pos, up, why)))
        return rc;
    *used = st.pos; /* a well-formed value, request or not: skippable */
    return check_shape(up, out, why);
}

size_t rec_rpc_result_head(unsigned char out[REC_RPC_HEAD_MAX], uint32_t msgid) {
    size_t n = 0;
    out[n++] = 0x94; /* array of 4 */
    out[n++] = 0x01; /* response */
    if (msgid < 0x80) { /* msgid, in its shortest form */
        out[n++] = (unsigned char)msgid;
    } else if (msgid <= 0xff) {
        out[n++] = 0xcc;
        out[n++] = (unsigned char)msgid;
    } else if (msgid <= 0xffff) {
        out[n++] = 0xcd;
        out[n++] = (unsigned char)(msgid >> 8);
        out[n++] = (unsigned char)msgid;
    } else {
        out[n++] = 0xce;
        for (int i = 3; i >= 0; i--)
            out[n++] = (unsigned char)(msgid >> (8 * i));
    }
    out[n++] = 0xc0; /* no error */
    return n;
}

int rec_rpc_result(rec_buf *out, uint32_t msgid, const void *result,
                   size_t rlen) {
    unsigned char head[REC_RPC_HEAD_MAX];
    size_t hl = rec_rpc_result_head(head, msgid);
    size_t mark = out->len;
    if (rec_buf_append(out, head, hl) || rec_buf_append(out, result, rlen)) {
        out->len = mark;
        return REC_ENOMEM;
    }
    return 0;
}

int rec_rpc_pack_error(msgpack_packer *pk, int code, const char *message) {
    const char *name = rec_err_name(code);
    size_t nl = strlen(name), ml = strlen(message);
    return msgpack_pack_map(pk, 3) || msgpack_pack_str(pk, 4) ||
           msgpack_pack_str_body(pk, "code", 4) || msgpack_pack_int(pk, code) ||
           msgpack_pack_str(pk, 4) || msgpack_pack_str_body(pk, "name", 4) ||
           msgpack_pack_str(pk, nl) || msgpack_pack_str_body(pk, name, nl) ||
           msgpack_pack_str(pk, 7) || msgpack_pack_str_body(pk, "message", 7) ||
           msgpack_pack_str(pk, ml) || msgpack_pack_str_body(pk, message, ml)
               ? REC_ENOMEM
               : 0;
}

int rec_rpc_error(rec_buf *out, uint32_t msgid, int code,
                  const char *message) {
    msgpack_packer pk;
    rec_rpc_packer(&pk, out);
    size_t mark = out->len;
    if (msgpack_pack_array(&pk, 4) || msgpack_pack_uint8(&pk, 1) ||
        msgpack_pack_uint32(&pk, msgid) ||
        rec_rpc_pack_error(&pk, code, message) || msgpack_pack_nil(&pk)) {
        out->len = mark;
        return REC_ENOMEM;
    }
    return 0;
}

int rec_rpc_notify_error(rec_buf *out, int code, const char *message) {
    msgpack_packer pk;
    rec_rpc_packer(&pk, out);
    size_t mark = out->len;
    if (msgpack_pack_array(&pk, 3) || msgpack_pack_uint8(&pk, 2) ||
        msgpack_pack_str(&pk, 5) || msgpack_pack_str_body(&pk, "error", 5) ||
        msgpack_pack_array(&pk, 1) || rec_rpc_pack_error(&pk, code, message)) {
        out->len = mark;
        return REC_ENOMEM;
    }
    return 0;
}
