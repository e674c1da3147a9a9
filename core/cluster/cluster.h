/* cluster.h - a node over a NATS JetStream cluster (docs/cluster.md).
 *
 * The replicated stream RECD_EVENTS is the cluster's write-ahead log: in
 * cluster mode event.add publishes each event to it, on the subject
 * recd.ev.<partition> (partition: rec_hash_stable of the user's key mod P),
 * and the node consumes the stream in order through a durable pull consumer
 * named after it, applying each event through the server's normal event
 * path. The stream sequence of the last event applied is stored in the
 * node's LMDB with the events (rec_cluster_applied_key), so an event
 * delivered again after a crash or a restart is applied once.
 *
 * Catalogue writes go through the same stream: item.put and item.delete on
 * the subject recd.cat, user.put and user.delete on the user's partition,
 * each message naming its method in the header Recd-Op; one consumer
 * applies events and writes in the stream's total order. A read waits for
 * a read barrier (rec_cluster_barrier): the stream's last sequence, asked
 * after the read came, applied here.
 *
 * Every node consumes every partition (a full replica). Its name is held
 * as a lease in the KV bucket RECD_NODES (renewed every lease/5 seconds),
 * so a second live node of the same name is refused, while a node
 * restarted after a crash takes its name back once the lease lapsed. The
 * live nodes share the partitions as owners (owners.h): a read of one
 * user is served by the owner of the user's partition, forwarded there
 * by request-reply from whichever node took it.
 *
 * Threads: rec_cluster_open runs before the loop (blocking, at start-up).
 * Then the loop thread publishes (asynchronously: nothing waits for NATS
 * there), applies the batches a consumer thread fetched and hands over
 * (uv_async), and asks how its tickets stand. NATS's own threads receive
 * the publish acknowledgements; they retry a publish that timed out (the
 * stream drops the duplicate by its message id).
 */
#ifndef REC_CLUSTER_H
#define REC_CLUSTER_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"

#define REC_CLUSTER_STREAM "RECD_EVENTS"
#define REC_CLUSTER_BUCKET "RECD_NODES"
#define REC_CLUSTER_PARTITIONS 64  /* P when none is given */
#define REC_CLUSTER_MAX_PARTITIONS 65536
#define REC_CLUSTER_SLOTS 1024     /* rec_id slots: node names, ever */

typedef struct rec_cluster rec_cluster;

typedef struct rec_cluster_opts {
    const char *servers;   /* "nats://host:port[,nats://host:port...]";
                              copied */
    const char *node;      /* this node's name (letters, digits, '-', '_');
                              NULL or "": the host's name; copied */
    uint32_t partitions;   /* P; 0: the stream's, or 64 for a new stream */
    double lease;          /* seconds a crashed node's name stays taken; 5 */
    double connect_timeout; /* seconds to reach a server at start-up; 2 */
    int retain_given;      /* 1: set the stream's retention to `retain` */
    double retain;         /* seconds the stream keeps an event; 0 every
                              event (the default of a new stream) */
} rec_cluster_opts;

/* Apply one message of the stream on the loop thread: with op NULL, one
 * event (params: the msgpack map event.add was given, with its ts); else
 * the write op ("item.put", "item.delete", "user.put", "user.delete") with
 * its params (an array), *result set to what the call answers (a count).
 * 0; REC_PENDING when it cannot run now (a delete while a commit is in
 * flight: the host calls rec_cluster_resume once it can); or a negative
 * REC_E* code (the message is then counted as rejected and skipped: the
 * stream keeps it). Views valid for the call. */
typedef int (*rec_cluster_apply_fn)(void *ud, const char *op, const msgpack_object *params,
                                    uint64_t *result);
/* Serve a read another node forwarded here (or one this node forwarded
 * and its owner did not answer), on the loop thread, as a local call runs
 * it: method (mlen bytes) with params (an array); the result (one msgpack
 * object) appended to out, or a negative REC_E* code with err. Only the
 * methods that read one user (REC_M_READ_USER) are served so. */
typedef int (*rec_cluster_serve_fn)(void *ud, const char *method, size_t mlen,
                                    const msgpack_object *params, rec_buf *out, char *err,
                                    size_t errlen);
/* Tickets may have moved (acknowledgements came, events were applied):
 * the host asks rec_cluster_ticket about the answers it holds. Loop
 * thread. */
typedef void (*rec_cluster_progress_fn)(void *ud);

/* Check the options, connect, make sure the stream (and the KV bucket)
 * exist with this partition count, and take the node's name. Blocks (at
 * start-up, before the loop runs). 0, or a negative REC_E* code with the
 * reason in err: the cluster cannot be reached, its stream was made with
 * another partition count, the name is held by a live node. Nothing is
 * written to the data folder. */
int rec_cluster_open(rec_cluster **out, const rec_cluster_opts *o, char *err, size_t errlen);

/* Start consuming into e (borrowed: outlives the cluster's stop) from the
 * event after the sequence stored in e, on loop (borrowed). 0, or a
 * negative REC_E* code. */
struct uv_loop_s;
int rec_cluster_start(rec_cluster *c, struct uv_loop_s *loop, rec_engine *e,
                      rec_cluster_apply_fn apply, rec_cluster_progress_fn progress,
                      rec_cluster_serve_fn serve, void *ud);

/* Publish events[0..n) (msgpack maps, already checked) asynchronously;
 * *ticket (when ticket is not NULL) names the call for rec_cluster_ticket.
 * An event without ts gets the time of now, so that every node applies it
 * at the same time. 0, or a negative REC_E* code with err (nothing
 * published). Loop thread. */
int rec_cluster_publish(rec_cluster *c, const msgpack_object *events, uint32_t n,
                        uint64_t *ticket, char *err, size_t errlen);

/* Publish the catalogue write op (item.put, item.delete, user.put,
 * user.delete) with its params (an array, already checked)
 * asynchronously, as rec_cluster_publish does events: item writes whole
 * to the catalogue's subject recd.cat, user writes one user a message to
 * the user's partition. Loop thread. */
int rec_cluster_publish_op(rec_cluster *c, const char *op, const msgpack_object *params,
                           uint64_t *ticket, char *err, size_t errlen);

/* How a ticket stands: REC_PENDING; 0 once every message of it is in the
 * stream and applied here (its answer may go once those writes are
 * committed), with *result (when not NULL) the sum of what a catalogue
 * write's messages answered when applied; or a negative REC_E* code with
 * err (publishing failed, or a message was refused when applied). 0 and
 * errors forget the ticket. Loop thread. */
int rec_cluster_ticket(rec_cluster *c, uint64_t ticket, uint64_t *result, char *err,
                       size_t errlen);
/* The answer is not wanted any more (its connection closed); the events
 * still go to the stream and are applied. */
void rec_cluster_forget(rec_cluster *c, uint64_t ticket);
/* Tickets not yet settled (the host does not stop while some are). */
size_t rec_cluster_outstanding(const rec_cluster *c);

/* A batch paused by an apply that answered REC_PENDING goes on (no commit
 * is in flight any more). Loop thread; a no-op when none is paused. */
void rec_cluster_resume(rec_cluster *c);

/* A read barrier for a read that came now: passed once a question about
 * the stream's last sequence, sent after now, was answered by the
 * stream's leader and the node applied up to that sequence. One question
 * is out at a time: the reads that come meanwhile wait for the next, sent
 * when it is answered (so the questions per second stay one a round trip,
 * whatever the reads). *id names it for rec_cluster_barrier_check. Does
 * not block. 0, or a negative REC_E* code with err. Loop thread. */
int rec_cluster_barrier(rec_cluster *c, uint64_t *id, char *err, size_t errlen);
/* REC_PENDING until the barrier passed; then 0 (the read may run: it sees
 * every write acknowledged before it came). A negative REC_E* code with
 * err when the stream did not answer in time. 0 and errors forget the
 * barrier. Asks again what is unanswered: call it at least once a second.
 * Loop thread. */
int rec_cluster_barrier_check(rec_cluster *c, uint64_t id, char *err, size_t errlen);
/* The read is not wanted any more (its connection closed). */
void rec_cluster_barrier_forget(rec_cluster *c, uint64_t id);

/* Partition owners (owners.h). A read of one user (user: its id, as the
 * call gives it) whose partition another live node owns is forwarded
 * there: 0 with *id (rec_cluster_forward_take gives the answer); 0 with
 * *id 0 when this node serves it (it owns the partition, the owners are
 * not known yet, or the id is malformed: the local call says so); or a
 * negative REC_E* code. method and params are copied. Loop thread. */
int rec_cluster_forward(rec_cluster *c, const msgpack_object *user, const char *method,
                        const msgpack_object *params, uint64_t *id);
/* REC_PENDING until the forward's answer is in; then the call's code: 0
 * with its result (one msgpack object) appended to out, or a negative
 * REC_E* code with err. An owner that does not answer within a second
 * (or that nobody listens for) is not waited for: the read is served
 * here, after a read barrier. 0 and errors forget the forward. Ask at
 * least once a second. Loop thread. */
int rec_cluster_forward_take(rec_cluster *c, uint64_t id, rec_buf *out, char *err,
                             size_t errlen);
/* The answer is not wanted any more (its connection closed). */
void rec_cluster_forward_forget(rec_cluster *c, uint64_t id);
/* Serve the reads forwarded here whose read barrier passed (through the
 * serve hook). Loop thread: from the progress hook and once a second. */
void rec_cluster_poll(rec_cluster *c);

/* The stream sequence the engine's state holds is back at what e stores
 * (its commit failed and it reloaded): consume again from there. Loop
 * thread. */
void rec_cluster_rewind(rec_cluster *c);

/* sys.info's cluster section: one map. Loop thread. */
int rec_cluster_pack_info(rec_cluster *c, msgpack_packer *pk);

/* The stream sequence of the last event applied that e stores (0: none). */
uint64_t rec_cluster_stored_seq(rec_engine *e);

/* 1 once another process took this node's name (its lease lapsed): the
 * node stopped consuming and asked the process to stop (SIGTERM); its exit
 * says failure. */
int rec_cluster_fenced(const rec_cluster *c);

/* Stop the consumer thread, give up the name's lease, close the loop
 * handle (the loop must run after, before rec_cluster_free). Waits for
 * nothing else. Loop thread; idempotent. */
void rec_cluster_stop(rec_cluster *c);
/* NULL is a no-op. After rec_cluster_stop and the loop's end (or without
 * rec_cluster_start). */
void rec_cluster_free(rec_cluster *c);

/* The node's rec_id slot (0..REC_CLUSTER_SLOTS-1), its own among the
 * cluster's node names. */
uint32_t rec_cluster_slot(const rec_cluster *c);

/* Lists shown (docs/cluster.md, "Lists shown"): lists (len bytes, one
 * msgpack array of records: those of a turn of the loop) to every other
 * node, on core NATS (recd.lists), not the stream: fire and forget, so
 * that neither the stream nor the read barriers carry them. 0, or a
 * negative REC_E* code. Loop thread. */
int rec_cluster_share_lists(rec_cluster *c, const void *lists, size_t len);
/* fn(ud, lists) applies on the loop thread the array of records another
 * node shared (ud: rec_cluster_start's). Set before rec_cluster_start. */
typedef void (*rec_cluster_lists_fn)(void *ud, const msgpack_object *lists);
void rec_cluster_on_lists(rec_cluster *c, rec_cluster_lists_fn fn);

/* The partition of a user key (its encoded bytes), of p. */
uint32_t rec_cluster_partition(const char *key, size_t klen, uint32_t p);

#endif
