/* hello.c - a first conversation with recd from C, with the client library
 * of core/client/client.h (build/rel/librecd.a).
 *
 *     make                                   # also builds build/rel/examples/hello
 *     ./recd serve --data /tmp/hello &
 *     build/rel/examples/hello [ADDRESS]     # default 127.0.0.1:7700
 *
 * ADDRESS is "host:port", "[v6addr]:port" or a Unix socket path. The
 * program puts six items, sends a batch of events pipelined (every request
 * written before the first answer is read), asks rec.recommend, and shows
 * an error coming back by name. Parameters are packed with msgpack-c;
 * results are decoded with rec_client_reply_unpack. Exits 0 when every
 * step worked. examples/c/README.md says how to build your own program.
 */
#include <stdio.h>
#include <string.h>

#include <msgpack.h>

#include "client.h"

static void pack_str(msgpack_packer *pk, const char *s) {
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

/* The value under key in a msgpack map, or NULL. */
static const msgpack_object *get(const msgpack_object *map, const char *key) {
    if (map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
            memcmp(k->via.str.ptr, key, k->via.str.size) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

/* method(params), one call at a time; params NULL sends []. On success
 * *result borrows from r (valid until r is used again). On failure, says
 * why: the server's error by name, or what went wrong with the connection. */
static int call(rec_client *c, const char *method, const msgpack_sbuffer *params,
                rec_client_reply *r, msgpack_object *result) {
    int rc = rec_client_call(c, method, params ? params->data : NULL,
                             params ? params->size : 0, r);
    if (rc == 0)
        rc = rec_client_reply_unpack(r, result);
    else if (r->msg.type) /* the server answered with an error */
        fprintf(stderr, "%s: %s: %s\n", method, r->err_name, r->err_message);
    else
        fprintf(stderr, "%s: %s\n", method, rec_client_errmsg(c));
    return rc;
}

int main(int argc, char **argv) {
    const char *addr = argc > 1 ? argv[1] : "127.0.0.1:7700";
    static const char *titles[] = {"Laugh Track", "Pratfall", "Slapstick II",
                                   "Quiet Rooms", "Long Winter", "Grey Sea"};
    char err[256], id[16];
    rec_client *c;
    if (rec_client_connect(&c, addr, err, sizeof err) != 0) {
        fprintf(stderr, "hello: %s (is recd running? ./recd serve)\n", err);
        return 1;
    }
    rec_client_set_timeout(c, 10000); /* no wait for the socket over 10 s */
    rec_client_reply r;               /* one reply, reused for every call */
    rec_client_reply_init(&r);
    msgpack_sbuffer params;           /* the params array of each request */
    msgpack_sbuffer_init(&params);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &params, msgpack_sbuffer_write);
    msgpack_object res;
    int status = 1;

    /* 1. sys.hello [] */
    if (call(c, "sys.hello", NULL, &r, &res))
        goto out;
    const msgpack_object *v = get(&res, "version");
    int known = v && v->type == MSGPACK_OBJECT_STR;
    printf("connected to recd %.*s at %s\n", known ? (int)v->via.str.size : 1,
           known ? v->via.str.ptr : "?", addr);

    /* 2. item.put [{id, props = {title, genre}}, ...]: three comedies, three
     * dramas. (Vectors would go in "vectors" = {space = [floats]}.) */
    msgpack_pack_array(&pk, 6);
    for (int i = 0; i < 6; i++) {
        snprintf(id, sizeof id, "c-m%d", i + 1);
        msgpack_pack_map(&pk, 2);
        pack_str(&pk, "id"), pack_str(&pk, id);
        pack_str(&pk, "props"), msgpack_pack_map(&pk, 2);
        pack_str(&pk, "title"), pack_str(&pk, titles[i]);
        pack_str(&pk, "genre"), pack_str(&pk, i < 3 ? "comedy" : "drama");
    }
    if (call(c, "item.put", &params, &r, &res))
        goto out;
    printf("items written: %llu\n", (unsigned long long)res.via.u64);

    /* 3. A batch of events, pipelined: one event.add request per event, all
     * queued with rec_client_send (written 64 KiB at a time), then every
     * answer read with rec_client_recv, in the order sent. Keep under 1,024
     * requests in flight (client.h). Each answer comes once the event is
     * durable. */
    int sent = 13, stored = 0;
    for (int k = 0; k < sent; k++) {
        char user[16] = "c-ann";         /* k = 12: c-ann clicks c-m1 */
        if (k < 12)                      /* c-fan0..3 click c-m1..3 */
            snprintf(user, sizeof user, "c-fan%d", k / 3);
        snprintf(id, sizeof id, "c-m%d", k % 3 + 1);
        msgpack_sbuffer_clear(&params);
        msgpack_pack_array(&pk, 1);
        msgpack_pack_map(&pk, 3);
        pack_str(&pk, "user"), pack_str(&pk, user);
        pack_str(&pk, "item"), pack_str(&pk, id);
        pack_str(&pk, "type"), pack_str(&pk, "click");
        if (rec_client_send(c, "event.add", params.data, params.size, NULL)) {
            fprintf(stderr, "event.add: %s\n", rec_client_errmsg(c));
            goto out;
        }
    }
    printf("%d event.add requests in flight\n", (int)rec_client_inflight(c));
    while (rec_client_inflight(c) > 0) {
        if (rec_client_recv(c, &r) != 0) {
            fprintf(stderr, "event.add: %s\n", r.msg.type ? r.err_name : rec_client_errmsg(c));
            goto out;
        }
        if (rec_client_reply_unpack(&r, &res) == 0 && res.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            stored += (int)res.via.u64;
    }
    printf("events stored: %d of %d, durable\n", stored, sent);

    /* 4. rec.recommend [{user, n}]: {rec_id, pipeline, items = [{id, score}]} */
    msgpack_sbuffer_clear(&params);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 2);
    pack_str(&pk, "user"), pack_str(&pk, "c-ann");
    pack_str(&pk, "n"), msgpack_pack_int(&pk, 3);
    if (call(c, "rec.recommend", &params, &r, &res))
        goto out;
    const msgpack_object *items = get(&res, "items");
    printf("recommended for c-ann:\n");
    for (uint32_t i = 0; items && items->type == MSGPACK_OBJECT_ARRAY && i < items->via.array.size; i++) {
        const msgpack_object *hid = get(&items->via.array.ptr[i], "id");
        const msgpack_object *score = get(&items->via.array.ptr[i], "score");
        if (hid && hid->type == MSGPACK_OBJECT_STR && score)
            printf("  %u. %.*s  %.3f\n", i + 1, (int)hid->via.str.size, hid->via.str.ptr,
                   score->type == MSGPACK_OBJECT_FLOAT32 || score->type == MSGPACK_OBJECT_FLOAT64
                       ? score->via.f64 : 0.0);
    }

    /* 5. Errors come back by name. item.get of an unknown id is not one: it
     * answers nil. rec.similar needs the item, so it answers not_found. */
    msgpack_sbuffer_clear(&params);
    msgpack_pack_array(&pk, 1);
    pack_str(&pk, "c-nope");
    if (call(c, "item.get", &params, &r, &res))
        goto out;
    printf("item.get c-nope: %s\n", res.type == MSGPACK_OBJECT_NIL ? "nil" : "an item?");
    msgpack_sbuffer_clear(&params);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 1);
    pack_str(&pk, "item"), pack_str(&pk, "c-nope");
    int rc = rec_client_call(c, "rec.similar", params.data, params.size, &r);
    if (rc == 0 || !r.msg.type) {     /* no error, or no answer at all */
        fprintf(stderr, "rec.similar c-nope: %s\n", rc ? rec_client_errmsg(c) : "no error?");
        goto out;
    }
    printf("rec.similar c-nope: error %s (%s), code %lld\n", r.err_name, r.err_message,
           (long long)r.err_code);
    status = 0;
out:
    msgpack_sbuffer_destroy(&params);
    rec_client_reply_close(&r);
    rec_client_free(c);
    return status;
}
