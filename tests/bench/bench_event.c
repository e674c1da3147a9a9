/* bench_event.c - the loop thread's work for one event.add, in process.
 *
 *   bench_event           full run (5 runs of 100k events, under a minute)
 *   bench_event --quick   one run of 20k events (also RECD_BENCH_QUICK=1)
 *
 * The same requests as `recd bench -t event` (one event per call, users
 * drawn uniformly from 100,000 and items from 10,000, type click), handed
 * to rec_dispatch_call with the built-in feedback, as the server's loop
 * thread does after decoding a request: validation, id lookups, the log
 * record, history and co-occurrence, the popularity counter and one online
 * MF step (d=64, 4 negatives). Requests are decoded before the clock
 * starts; the engine commits every 1,600 events (the server's group size
 * at -c 50 -P 32), outside the timed calls, with syncing off.
 *
 * Runs follow each other on one engine, so the first meets mostly new
 * users and later ones mostly known users, as in the server benchmark.
 * Prints the time per event of each run, and the median, once for people
 * and once as `BENCH name=... value=... unit=...`.
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <ftw.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "dispatch.h"
#include "engine.h"
#include "counter.h"
#include "mf.h"
#include "rng.h"
#include "rpc.h"

#include "bench_common.h"

static int remove_one(const char *path, const struct stat *st, int flag,
                      struct FTW *f) {
    (void)st;
    (void)flag;
    (void)f;
    return remove(path);
}

static void die(const char *what, const char *detail) {
    fprintf(stderr, "bench_event: %s%s%s\n", what, detail ? ": " : "",
            detail ? detail : "");
    exit(1);
}

#define USERS 100000u
#define ITEMS 10000u
#define GROUP 1600u
#define MAX_RUNS 16

/* Pack the params of one request: [{user, item, type = "click"}]. */
static void pack_event(msgpack_packer *pk, uint32_t user, uint32_t item) {
    char u[16], i[16];
    int ul = snprintf(u, sizeof u, "u%u", user);
    int il = snprintf(i, sizeof i, "i%u", item);
    msgpack_pack_array(pk, 1);
    msgpack_pack_map(pk, 3);
    msgpack_pack_str_with_body(pk, "user", 4);
    msgpack_pack_str_with_body(pk, u, (size_t)ul);
    msgpack_pack_str_with_body(pk, "item", 4);
    msgpack_pack_str_with_body(pk, i, (size_t)il);
    msgpack_pack_str_with_body(pk, "type", 4);
    msgpack_pack_str_with_body(pk, "click", 5);
}

int main(int argc, char **argv) {
    const char *q = getenv("RECD_BENCH_QUICK");
    int quick = (argc > 1 && strcmp(argv[1], "--quick") == 0) ||
                (q && *q && strcmp(q, "0") != 0);
    int runs = quick ? 1 : 5;
    uint32_t per_run = quick ? 20000u : 100000u;

    const char *tmp = getenv("TMPDIR");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/recd-bench-event-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        die("cannot create a temporary folder", strerror(errno));

    rec_engine_opts eo;
    rec_engine_opts_default(&eo);
    eo.store.no_sync = 1;
    eo.checkpoint_interval = 10.0; /* as the server */
    char err[512] = "";
    rec_engine *e;
    if (rec_engine_open(&e, dir, &eo, err, sizeof err))
        die("engine", err);
    rec_dispatch *d;
    rec_dispatch_opts dopt = {.auth_token = NULL, .version = "bench"};
    if (rec_dispatch_new(&d, e, &dopt))
        die("dispatch", NULL);
    int method = rec_dispatch_find(d, "event.add", 9);
    rec_session sess;
    memset(&sess, 0, sizeof sess);
    sess.trusted = 1;

    /* Every request of one run, decoded up front into one zone. */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    size_t *off = malloc(((size_t)per_run + 1) * sizeof *off);
    msgpack_object *params = malloc((size_t)per_run * sizeof *params);
    if (!off || !params)
        die("out of memory", NULL);
    rec_rng r;
    rec_rng_seed(&r, 1);
    for (uint32_t i = 0; i < per_run; i++) {
        off[i] = sb.size;
        pack_event(&pk, 1 + rec_rng_below(&r, USERS), 1 + rec_rng_below(&r, ITEMS));
    }
    off[per_run] = sb.size;
    msgpack_zone zone;
    msgpack_zone_init(&zone, 1 << 20);
    for (uint32_t i = 0; i < per_run; i++) {
        size_t o = off[i];
        if (msgpack_unpack(sb.data, off[i + 1], &o, &zone, &params[i]) !=
            MSGPACK_UNPACK_SUCCESS)
            die("cannot decode a generated request", NULL);
    }

    double ns[MAX_RUNS];
    rec_buf out = REC_BUF_INIT;
    for (int run = 0; run < runs; run++) {
        double spent = 0;
        for (uint32_t i = 0; i < per_run; i += GROUP) {
            uint32_t end = i + GROUP < per_run ? i + GROUP : per_run;
            double t0 = now();
            for (uint32_t j = i; j < end; j++) {
                rec_buf_clear(&out);
                if (rec_dispatch_call(d, method, &params[j], &sess, &out, err, sizeof err))
                    die("event.add", err);
            }
            spent += now() - t0;
            if (rec_engine_commit(e))
                die("commit", rec_engine_errmsg(e));
        }
        ns[run] = spent * 1e9 / per_run;
        printf("run %d: %.0f ns per event (%.0f k events/s of loop-thread work)\n",
               run + 1, ns[run], 1e6 / ns[run]);
    }
    double sorted[MAX_RUNS];
    memcpy(sorted, ns, sizeof ns);
    double med = median(sorted, (size_t)runs);
    printf("event.add in process, %u users x %u items: median %.0f ns per event\n",
           USERS, ITEMS, med);
    printf("BENCH name=event_add_inproc value=%.4g unit=ns\n", med);
    printf("BENCH name=event_add_inproc_first_run value=%.4g unit=ns\n", ns[0]);

    rec_buf_free(&out);
    msgpack_zone_destroy(&zone);
    msgpack_sbuffer_destroy(&sb);
    free(off);
    free(params);
    rec_dispatch_free(d);
    rec_engine_free(e);
    if (nftw(dir, remove_one, 8, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "bench_event: could not remove %s\n", dir);
    return 0;
}
