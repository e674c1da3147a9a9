/* server.h - the libuv server: listeners, connections, backpressure and
 * group commit. Knows sockets and the dispatcher; nothing of what the
 * methods mean.
 *
 * One loop thread owns the engine and every connection. Requests of a
 * connection run in arrival order and their answers leave in that order.
 * Writes accepted during one loop iteration are staged as one batch and
 * committed in a worker job; their answers wait for that commit, so an
 * answer to a write means it is durable.
 */
#ifndef REC_SERVER_H
#define REC_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "cluster.h"
#include "engine.h"

typedef struct rec_server_opts {
    const char *data_dir;      /* default "./data" */
    const char *listen;        /* "host:port"; NULL for the default
                                  127.0.0.1:7700, "" for no TCP */
    const char *unix_path;     /* NULL: <data_dir>/recd.sock; "" for none */
    const char *scripts_dir;   /* strategies (and pipelines.lua); NULL: none */
    const char *policies_dir;  /* policies; NULL: none */
    const char *auth_token;    /* TCP clients must sys.auth; NULL: none */
    int insecure;              /* allow a non-loopback listener without token */
    int strict;                /* event.add refuses unknown items and types */
    double train_every;        /* seconds between scheduled trainings when
                                  the "ials" or "ease" policy is loaded
                                  (the dispatcher's, train.h); 0 never;
                                  300 */
    double train_share;        /* and when the events since the last
                                  training began exceed this share of
                                  those it was trained on; 0 never; 0.1 */
    double train_quiet;        /* and once more when a burst of events
                                  that a training began in stops for this
                                  many seconds; 0 never; 2 */
    double train_cpu;          /* the share of one core a training of ials
                                  may take, (0, 1]; 0.5 */
    size_t max_message;        /* bytes; default 4 MiB */
    uint32_t max_connections;  /* TCP connections; default 1024 */
    uint32_t max_pending;      /* answers waiting per connection; 1024 */
    size_t out_pause;          /* stop reading above this much unread output */
    size_t out_max;            /* close a connection above this; 16 MiB */
    double write_timeout;      /* close a client that reads none of its
                                  answers for this long; 30 s */
    uint32_t max_objects;      /* values in one message (16 bytes each once
                                  decoded); default 1,048,576 */
    size_t input_memory;       /* input buffers of all connections together:
                                  above it, reading pauses (one connection
                                  at a time reads on to finish its
                                  message); default 32 MiB */
    size_t preauth_max_message; /* with auth_token, a TCP connection's
                                  messages before sys.auth; 64 KiB (and
                                  1,024 values) */
    uint32_t max_unix_connections; /* the Unix socket's own slots; 64 */
    uint32_t max_per_address;  /* TCP connections from one address; 64;
                                  0 for no limit */
    double handshake_timeout;  /* a TCP connection must complete a request
                                  (with auth_token: sys.auth) within this,
                                  and a message must not stall this long;
                                  10 s */
    double idle_timeout;       /* close a TCP connection that sends nothing
                                  for this long; 300 s; 0 never */
    rec_engine_opts engine;    /* checkpoint_interval defaults to 10 s */
    const rec_cluster_opts *cluster; /* NULL: a node alone; else event.add
                                  goes through the cluster's stream and
                                  is answered once this node applied and
                                  committed it (docs/cluster.md) */
    /* Called once the engine is open, before listening (loads initial
     * data); a nonzero return stops the server. May be NULL. */
    int (*on_open)(rec_engine *e, void *ud);
    void *on_open_ud;
} rec_server_opts;

void rec_server_opts_default(rec_server_opts *o);

/* Open the engine, listen, serve until SIGINT or SIGTERM, then finish what
 * is in flight, commit, close. Returns a process exit code (0 on a clean
 * shutdown) and logs why on failure. */
int rec_server_run(const rec_server_opts *o, const char *version);

#endif
