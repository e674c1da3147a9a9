/* test_rpc.c - msgpack-RPC framing: resumable framing, the object limit,
 * decoding and releasing a message. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "rpc.h"
#include "value.h"

/* A request [0, 7, "sys.ping", [nil x n]] in *out (free it). */
static size_t nil_request(uint32_t n, char **out) {
    rec_buf b = REC_BUF_INIT;
    msgpack_packer pk;
    rec_rpc_packer(&pk, &b);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_uint8(&pk, 0);
    msgpack_pack_uint8(&pk, 7);
    msgpack_pack_str(&pk, 8);
    msgpack_pack_str_body(&pk, "sys.ping", 8);
    msgpack_pack_array(&pk, n);
    for (uint32_t i = 0; i < n; i++)
        msgpack_pack_nil(&pk);
    *out = b.data;
    return b.len;
}

/* A request whose params hold every kind of value, nested. */
static size_t mixed_request(char **out) {
    rec_buf b = REC_BUF_INIT;
    msgpack_packer pk;
    rec_rpc_packer(&pk, &b);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_uint8(&pk, 0);
    msgpack_pack_uint32(&pk, 70000);
    msgpack_pack_str(&pk, 9);
    msgpack_pack_str_body(&pk, "event.add", 9);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str(&pk, 4);
    msgpack_pack_str_body(&pk, "user", 4);
    msgpack_pack_int64(&pk, -123456789012LL);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "v", 1);
    msgpack_pack_array(&pk, 40);
    for (int i = 0; i < 40; i++)
        msgpack_pack_float(&pk, (float)i);
    msgpack_pack_str(&pk, 3);
    msgpack_pack_str_body(&pk, "bin", 3);
    char blob[300];
    memset(blob, 'x', sizeof blob);
    msgpack_pack_bin(&pk, sizeof blob);
    msgpack_pack_bin_body(&pk, blob, sizeof blob);
    msgpack_pack_ext(&pk, 2, 5);
    msgpack_pack_ext_body(&pk, "abcde", 2);
    msgpack_pack_array(&pk, 0);
    *out = b.data;
    return b.len;
}

/* Framing the bytes one at a time gives what framing them whole gives, and
 * agrees with rec_value_scan; each call resumes past what it already read. */
static void test_frame_pieces(void **state) {
    (void)state;
    char *msgs[2];
    size_t lens[2];
    lens[0] = mixed_request(&msgs[0]);
    lens[1] = nil_request(5000, &msgs[1]);
    rec_rpc_limits lim;
    rec_rpc_limits_default(&lim);
    for (int k = 0; k < 2; k++) {
        rec_rpc_scan whole;
        memset(&whole, 0, sizeof whole);
        assert_int_equal(rec_rpc_frame(&whole, msgs[k], lens[k], &lim, NULL), 0);
        assert_int_equal(whole.pos, lens[k]);
        size_t used = 0;
        assert_int_equal(rec_value_scan(msgs[k], lens[k], NULL, &used, NULL), 0);
        assert_int_equal(used, lens[k]);

        rec_rpc_scan st;
        memset(&st, 0, sizeof st);
        size_t before = 0;
        for (size_t n = 1; n < lens[k]; n++) {
            const char *why = NULL;
            assert_int_equal(rec_rpc_frame(&st, msgs[k], n, &lim, &why), REC_VALUE_PARTIAL);
            assert_non_null(why);
            /* What was read is never read again, and is all but the value
             * being received. */
            assert_true(st.pos >= before && st.pos <= n);
            before = st.pos;
        }
        assert_true(before + 301 >= lens[k] - 1); /* progress kept up */
        assert_int_equal(rec_rpc_frame(&st, msgs[k], lens[k], &lim, NULL), 0);
        assert_int_equal(st.pos, lens[k]);
        assert_int_equal(st.objects, whole.objects);
        free(msgs[k]);
    }
}

/* Values are counted: 4 for the envelope, 1 for params, one per element. */
static void test_frame_objects(void **state) {
    (void)state;
    char *m;
    size_t len = nil_request(999999, &m);
    rec_rpc_limits lim;
    rec_rpc_limits_default(&lim);
    rec_rpc_scan st;
    memset(&st, 0, sizeof st);
    assert_int_equal(rec_rpc_frame(&st, m, len, &lim, NULL), 0);
    assert_int_equal(st.objects, 1000004);
    /* Over max_objects: refused at the array header, before its elements
     * arrive. */
    lim.max_objects = 4096;
    memset(&st, 0, sizeof st);
    const char *why = NULL;
    assert_int_equal(rec_rpc_frame(&st, m, 20, &lim, &why), REC_ETOOLARGE);
    assert_string_equal(why, "message exceeds max_objects");
    lim.max_objects = 1000004;
    memset(&st, 0, sizeof st);
    assert_int_equal(rec_rpc_frame(&st, m, len, &lim, NULL), 0);
    lim.max_objects = 1000003;
    memset(&st, 0, sizeof st);
    assert_int_equal(rec_rpc_frame(&st, m, 20, &lim, NULL), REC_ETOOLARGE);
    /* A message claiming more bytes than max_bytes: refused at its header. */
    rec_rpc_limits_default(&lim);
    lim.max_bytes = 65536;
    memset(&st, 0, sizeof st);
    assert_int_equal(rec_rpc_frame(&st, m, 20, &lim, &why), REC_ETOOLARGE);
    assert_string_equal(why, "message exceeds max_bytes");
    free(m);
}

/* The other limits are those of rec_value_scan. */
static void test_frame_limits(void **state) {
    (void)state;
    rec_rpc_limits lim;
    rec_rpc_limits_default(&lim);
    rec_rpc_scan st;
    const char *why;
    /* array32 claiming four billion elements */
    const char huge[] = "\x94\x00\x01\xa1m\xdd\xff\xff\xff\xff";
    memset(&st, 0, sizeof st);
    assert_int_equal(rec_rpc_frame(&st, huge, sizeof huge - 1, &lim, &why), REC_ETOOLARGE);
    /* nesting 33 deep */
    char deep[40];
    memset(deep, 0x91, sizeof deep);
    memset(&st, 0, sizeof st);
    assert_int_equal(rec_rpc_frame(&st, deep, sizeof deep, &lim, &why), REC_ETOOLARGE);
    assert_string_equal(why, "nesting exceeds max_depth");
    /* str32 of 2 MiB */
    const char str[] = "\xdb\x00\x20\x00\x00";
    memset(&st, 0, sizeof st);
    assert_int_equal(rec_rpc_frame(&st, str, 5, &lim, &why), REC_ETOOLARGE);
    /* reserved byte */
    memset(&st, 0, sizeof st);
    assert_int_equal(rec_rpc_frame(&st, "\xc1", 1, &lim, &why), REC_EPROTOCOL);
}

/* Decoding a framed message, then releasing it; rec_rpc_next still walks a
 * stream of messages. */
static void test_decode_release(void **state) {
    (void)state;
    char *m;
    size_t len = nil_request(100000, &m);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    rec_rpc_msg msg;
    const char *why = NULL;
    assert_int_equal(rec_rpc_decode(m, len, &up, &msg, &why), 0);
    assert_int_equal(msg.type, REC_RPC_REQUEST);
    assert_int_equal(msg.msgid, 7);
    assert_int_equal(msg.params.via.array.size, 100000);
    rec_rpc_release(&up);
    assert_non_null(up.zone);
    size_t used = 0;
    assert_int_equal(rec_rpc_next(m, len, NULL, &up, &msg, &used, &why), 0);
    assert_int_equal(used, len);
    assert_int_equal(rec_rpc_next(m, len - 1, NULL, &up, &msg, &used, &why), REC_VALUE_PARTIAL);
    assert_int_equal(used, 0);
    /* a well-formed value that is no request: skippable */
    assert_int_equal(rec_rpc_next("\x93\x05\x01\x02", 4, NULL, &up, &msg, &used, &why),
                     REC_EPROTOCOL);
    assert_int_equal(used, 4);
    msgpack_unpacked_destroy(&up);
    free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_pieces),
        cmocka_unit_test(test_frame_objects),
        cmocka_unit_test(test_frame_limits),
        cmocka_unit_test(test_decode_release),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
