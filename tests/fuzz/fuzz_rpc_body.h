/* fuzz_rpc_body.h - the msgpack-RPC framing harness, shared by the
 * libFuzzer target (fuzz_rpc.c) and the corpus regression test
 * (tests/unit/test_fuzz_regress.c).
 *
 * The includer may define FUZZ_CHECK(cond) before including; the default
 * prints the failed condition and aborts, which libFuzzer reports as a
 * crash.
 *
 * fuzz_rpc_one(data, size) walks the bytes the way the server does: one
 * message after another with the default limits, reusing one
 * msgpack_unpacked, until the bytes run out, end inside a message, or hold
 * something that cannot be skipped. Where rec_rpc_next refuses a
 * well-formed msgpack value that is not a request, it still reports the
 * value's size and the walk skips it (rpc.h allows callers to), so the bytes
 * after it are exercised too. Invariants checked at each message:
 *
 *   - used <= bytes left; a 0 return consumed > 0 bytes; an error names
 *     its rule (why != NULL);
 *   - a decoded message has type request/notification, a 1..64-byte method
 *     and array params, and every byte it borrows is readable (ASan);
 *   - rec_value_scan agrees with rec_rpc_next on the message size, and a
 *     prefix one byte short of a complete object is PARTIAL;
 *   - tight limits never accept what the defaults refuse: for any result
 *     other than "too large", the tight scan and the default scan give the
 *     same result and the same size.
 */
#ifndef REC_FUZZ_RPC_BODY_H
#define REC_FUZZ_RPC_BODY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "err.h"
#include "rpc.h"
#include "value.h"

#ifndef FUZZ_CHECK
#define FUZZ_CHECK(cond)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,  \
                    #cond);                                                   \
            abort();                                                          \
        }                                                                     \
    } while (0)
#endif

/* Read every byte a decoded object borrows, so ASan sees a dangling or
 * out-of-bounds pointer. Depth is bounded by the scan (32); the extra
 * margin only guards against a broken scan. Returns a checksum so the
 * reads are not optimised away. */
static unsigned fuzz_rpc_touch(const msgpack_object *o, int depth) {
    unsigned sum = (unsigned)o->type;
    FUZZ_CHECK(depth <= 40);
    switch (o->type) {
    case MSGPACK_OBJECT_STR:
        for (uint32_t i = 0; i < o->via.str.size; i++)
            sum += (unsigned char)o->via.str.ptr[i];
        break;
    case MSGPACK_OBJECT_BIN:
        for (uint32_t i = 0; i < o->via.bin.size; i++)
            sum += (unsigned char)o->via.bin.ptr[i];
        break;
    case MSGPACK_OBJECT_EXT:
        for (uint32_t i = 0; i < o->via.ext.size; i++)
            sum += (unsigned char)o->via.ext.ptr[i];
        break;
    case MSGPACK_OBJECT_ARRAY:
        for (uint32_t i = 0; i < o->via.array.size; i++)
            sum += fuzz_rpc_touch(&o->via.array.ptr[i], depth + 1);
        break;
    case MSGPACK_OBJECT_MAP:
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            sum += fuzz_rpc_touch(&o->via.map.ptr[i].key, depth + 1);
            sum += fuzz_rpc_touch(&o->via.map.ptr[i].val, depth + 1);
        }
        break;
    default:
        break;
    }
    return sum;
}

/* The scan invariants at one message start. */
static void fuzz_rpc_scan(const uint8_t *p, size_t len,
                          const rec_value_limits *defl) {
    static const rec_value_limits tight = {
        .max_bytes = 1024, .max_depth = 8, .max_items = 100, .max_str = 256};
    size_t du = 0, tu = 0;
    const char *dw = NULL, *tw = NULL;
    int drc = rec_value_scan(p, len, defl, &du, &dw);
    int trc = rec_value_scan(p, len, &tight, &tu, &tw);
    FUZZ_CHECK(du <= len && tu <= len);
    FUZZ_CHECK(drc == 0 || drc == REC_VALUE_PARTIAL || drc == REC_EPROTOCOL ||
               drc == REC_ETOOLARGE);
    FUZZ_CHECK(trc == 0 || trc == REC_VALUE_PARTIAL || trc == REC_EPROTOCOL ||
               trc == REC_ETOOLARGE);
    FUZZ_CHECK(drc == 0 ? du > 0 : du == 0);
    FUZZ_CHECK(drc == 0 || dw != NULL);
    FUZZ_CHECK(trc == 0 || tw != NULL);
    if (trc != REC_ETOOLARGE) { /* the tight walk met no limit */
        FUZZ_CHECK(drc == trc);
        FUZZ_CHECK(du == tu);
    }
    if (drc == 0) {
        size_t u2 = 0;
        /* The object alone, and the object cut one byte short. */
        FUZZ_CHECK(rec_value_scan(p, du, defl, &u2, NULL) == 0 && u2 == du);
        FUZZ_CHECK(rec_value_scan(p, du - 1, defl, &u2, NULL) == REC_VALUE_PARTIAL);
    }
}

/* Framing resumed after a cut gives what framing the bytes whole gives. */
static void fuzz_rpc_frame(const uint8_t *p, size_t len) {
    rec_rpc_limits lim;
    rec_rpc_limits_default(&lim);
    rec_rpc_scan whole, cut;
    memset(&whole, 0, sizeof whole);
    memset(&cut, 0, sizeof cut);
    int wrc = rec_rpc_frame(&whole, (const char *)p, len, &lim, NULL);
    size_t at = len ? (p[0] * 31u + len) % (len + 1) : 0;
    int crc = rec_rpc_frame(&cut, (const char *)p, at, &lim, NULL);
    if (crc == REC_VALUE_PARTIAL) {
        FUZZ_CHECK(cut.pos <= at);
        crc = rec_rpc_frame(&cut, (const char *)p, len, &lim, NULL);
    }
    FUZZ_CHECK(crc == wrc);
    if (wrc == 0) {
        FUZZ_CHECK(cut.pos == whole.pos && cut.objects == whole.objects);
        FUZZ_CHECK(whole.pos > 0 && whole.pos <= len);
    }
}

/* [the harness] Never fails on any input; checks fire FUZZ_CHECK. */
static void fuzz_rpc_one(const uint8_t *data, size_t size) {
    rec_value_limits lim;
    rec_value_limits_default(&lim);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    volatile unsigned sink = 0;
    while (off < size) {
        const char *buf = (const char *)data + off;
        size_t left = size - off;
        fuzz_rpc_scan(data + off, left, &lim);
        fuzz_rpc_frame(data + off, left);
        rec_rpc_msg m;
        size_t used = (size_t)-1;
        const char *why = NULL;
        int rc = rec_rpc_next(buf, left, &lim, &up, &m, &used, &why);
        FUZZ_CHECK(used <= left);
        if (rc == REC_VALUE_PARTIAL) {
            FUZZ_CHECK(used == 0);
            break;
        }
        if (rc == 0) {
            FUZZ_CHECK(used > 0);
            FUZZ_CHECK(m.type == REC_RPC_REQUEST || m.type == REC_RPC_NOTIFY);
            FUZZ_CHECK(m.type == REC_RPC_REQUEST || m.msgid == UINT32_MAX);
            FUZZ_CHECK(m.method != NULL && m.method_len >= 1 &&
                       m.method_len <= REC_RPC_METHOD_MAX);
            FUZZ_CHECK(m.params.type == MSGPACK_OBJECT_ARRAY);
            for (size_t i = 0; i < m.method_len; i++)
                sink += (unsigned char)m.method[i];
            sink += fuzz_rpc_touch(&m.params, 1);
            sink += fuzz_rpc_touch(&up.data, 0);
            off += used;
            continue;
        }
        FUZZ_CHECK(rc == REC_EPROTOCOL || rc == REC_ETOOLARGE);
        FUZZ_CHECK(why != NULL);
        if (used == 0)
            break; /* the server closes the connection here */
        /* A well-formed value that is not a request: skippable. */
        FUZZ_CHECK(rc == REC_EPROTOCOL);
        off += used;
    }
    msgpack_unpacked_destroy(&up);
    (void)sink;
}

#endif
