/* owners.h - partition ownership among the live nodes, and the forwarding
 * of a user's reads to the node that owns the user's partition
 * (docs/cluster.md). Part of the cluster (cluster.c is its only user).
 *
 * Members: the keys of the KV bucket RECD_NODES that a node renewed within
 * the lease (watched; a deleted key leaves at once). Each partition p goes
 * to the live member with the highest rendezvous hash of (p, name), so
 * every node computes the same map once it sees the same members; a node
 * claims the partitions the map gives it in the KV bucket RECD_PARTS (key
 * p.<n>, value the node's name; a write conditioned on the revision it
 * saw), so the owner of every partition is visible and its changes
 * ordered: the bucket's revision is the owners' epoch. A partition is
 * served by the holder the bucket names while that holder is live, else
 * by the node the map names.
 *
 * Forwarding: a read naming a user whose partition another live node
 * holds is sent to recd.rpc.<owner> (NATS request-reply, asynchronously),
 * served there through the same dispatch as a local call, after a read
 * barrier, and its answer handed back to the loop thread. When the owner
 * does not answer (no responders, or after FORWARD_WAIT_S), the node
 * serves the read itself, after a read barrier, and counts it.
 *
 * Threads: a thread of its own watches both buckets and claims; NATS's
 * threads receive requests and answers; everything else runs on the loop
 * thread (a uv_async wakes it).
 */
#ifndef REC_OWNERS_H
#define REC_OWNERS_H

#include <msgpack.h>
#include <nats/nats.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "cluster.h"

#define REC_OWNERS_BUCKET "RECD_PARTS"
#define REC_OWNERS_SUBJECT "recd.rpc." /* + the node's name: its requests */

typedef struct rec_owners rec_owners;

typedef struct rec_owners_opts {
    natsConnection *nc;    /* sends at once; borrowed, outlives the owners */
    kvStore *nodes;        /* RECD_NODES, the leases; borrowed */
    const char *node;      /* this node's name; copied */
    uint32_t partitions;   /* P */
    int replicas;          /* of the bucket made */
    double lease;          /* seconds a member stays live after a renewal */
    rec_cluster *cluster;  /* read barriers; borrowed */
} rec_owners_opts;

/* The owners of this node; RECD_PARTS is opened (made when missing) by
 * the watch thread, which retries until it can: the node serves every read
 * itself until then. 0, or a negative REC_E* code with err. */
int rec_owners_open(rec_owners **out, const rec_owners_opts *o, char *err, size_t errlen);

/* Serve forwarded requests on loop (borrowed) through serve, and watch the
 * members; progress(ud) is called on the loop thread when answers came.
 * 0, or a negative REC_E* code. */
struct uv_loop_s;
int rec_owners_start(rec_owners *w, struct uv_loop_s *loop, rec_cluster_serve_fn serve,
                     rec_cluster_progress_fn progress, void *ud);

/* See rec_cluster_forward, rec_cluster_forward_take and
 * rec_cluster_forward_forget. Loop thread. */
int rec_owners_forward(rec_owners *w, const msgpack_object *user, const char *method,
                       const msgpack_object *params, uint64_t *id);
int rec_owners_take(rec_owners *w, uint64_t id, rec_buf *out, char *err, size_t errlen);
void rec_owners_forget(rec_owners *w, uint64_t id);
/* Serve the forwarded requests whose read barrier passed; notice the
 * forwards past their deadline. Loop thread, at least once a second. */
void rec_owners_poll(rec_owners *w);
/* Forwards not settled yet. */
size_t rec_owners_outstanding(rec_owners *w);

/* REC_OWNERS_INFO_KEYS key-value pairs of sys.info's cluster map: owned,
 * owners, peers, forwarded, forward_served, forward_fallbacks. */
#define REC_OWNERS_INFO_KEYS 6
int rec_owners_pack_info(rec_owners *w, msgpack_packer *pk);

/* Stop the thread and the subscriptions; close the loop handle. Loop
 * thread; idempotent. */
void rec_owners_stop(rec_owners *w);
/* Drop the NATS objects (subscriptions, the bucket), before the
 * connection closes; a callback already running may still touch w, which
 * stays until rec_owners_free. Idempotent. */
void rec_owners_detach(rec_owners *w);
/* NULL is a no-op; after rec_owners_stop, the loop's end and the end of
 * NATS's threads (nats_CloseAndWait); detaches first when not done. */
void rec_owners_free(rec_owners *w);

#endif
