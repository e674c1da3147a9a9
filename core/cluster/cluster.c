/* cluster.c - publishing to and consuming from the JetStream stream.
 *
 * Tickets: each event.add call publishes its n events under one ticket, a
 * slot of a table indexed by ticket & (cap - 1). NATS's threads count the
 * acknowledgements down and keep the highest stream sequence; the loop
 * thread settles the ticket once no acknowledgement is awaited and the
 * events up to that sequence are applied. One mutex guards the table, the
 * hand-over of fetched batches and the counters that sys.info shows.
 *
 * Consumption: one thread binds the durable pull consumer (named after the
 * node) at the sequence after the one the engine stores, fetches batches,
 * and hands each to the loop thread (uv_async), waiting until it is
 * applied before fetching again: at most one batch is in memory. The
 * consumer is made again at every start (and after a rewind), so the
 * stored sequence alone decides where consumption resumes.
 */
#include "cluster.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>
#include <uv.h>

#include "err.h"
#include "hash.h"
#include "idmap.h"
#include "idslots.h"
#include "input.h"
#include "log.h"
#include "owners.h"
#include "value.h"

#define SUBJECT_PREFIX "recd.ev."
#define CATALOG_SUBJECT "recd.cat" /* item.put and item.delete */
#define OP_HEADER "Recd-Op"        /* a write other than event.add: its method */
#define SLOTS_BUCKET "RECD_SLOTS"   /* slot.<k>: the node name holding rec_id slot k */
#define LISTS_SUBJECT "recd.lists"  /* lists shown, core NATS: [origin, [record...]] */
#define LISTS_QUEUE_MAX 4096        /* messages of lists waiting for the loop thread */
#define INFO_API "$JS.API.STREAM.INFO." REC_CLUSTER_STREAM
#define BARRIER_RESEND_S 1.0       /* a read barrier's question unanswered: again */
#define BARRIER_GIVE_UP_S 15.0     /* a read still waiting this long: io_error */
#define EPOCHS 64                  /* answers kept, by question */
#define FETCH_BATCH 512
#define FETCH_WAIT_MS 1000
#define PUBLISH_WAIT_MS 4000   /* an acknowledgement not come by then: sent again */
#define PUBLISH_GIVE_UP_S 30.0 /* ... until this long after the first try */
#define OPEN_RETRY_S 15.0      /* start-up: how long a forming cluster is waited for */
#define APPLIED_KEY "_recd/cluster/applied_seq"

/* A publish to try again once `due` (mono seconds) is past. */
typedef struct retry {
    natsMsg *msg;
    double due;
    struct retry *next;
} retry;

typedef struct ticket {
    uint64_t id;        /* 0: free slot */
    uint32_t waiting;   /* acknowledgements not come yet */
    int rc;             /* 0, or why the call fails: a publish given up,
                           or an event refused when applied */
    int forgotten;      /* nobody asks: freed once settled */
    uint64_t max_seq;   /* highest stream sequence of its events */
    uint64_t result;    /* a catalogue write's answer: the sum of what its
                           messages' calls answered when applied here */
} ticket;

/* A read barrier: passed once a question about the stream's last
 * sequence, sent after the read came, was answered, and the node applied
 * up to that sequence. */
typedef struct barrier {
    uint64_t id;        /* 0: free slot */
    uint64_t epoch;     /* the first question that may answer it */
    int waited;         /* the node had not applied the answer yet */
    double first;       /* mono seconds: when the read came */
} barrier;

struct rec_cluster {
    char servers[1024];
    char node[64];
    char instance[192];     /* node@host:pid:time, the lease's value */
    uint32_t partitions;
    int replicas;
    double lease;
    natsConnection *nc;
    natsConnection *bnc;    /* the read barriers' questions (sent at once) */
    jsCtx *js;
    kvStore *kv;
    uint64_t lease_rev;     /* the lease's revision we wrote last */
    double lease_renewed;   /* mono seconds */
    jsPubOptions popts;
    rec_owners *owners;     /* partition owners and forwarded reads */

    pthread_mutex_t mu;
    /* tickets (mu) */
    rec_idslots tickets;
    size_t live;            /* slots in use, forgotten ones included */
    size_t unsettled;       /* not forgotten */
    uint64_t next_ticket;
    uint64_t msg_count;     /* message ids */
    uint64_t stream_last;   /* the stream's last sequence at start, then the
                               highest acknowledged or fetched */
    uint64_t stream_first;  /* the stream's first sequence at start: older
                               ones are gone (its retention) */
    double retain;          /* the stream's retention in seconds; 0 none */
    uint64_t published, publish_retries, publish_failures;
    char last_error[256];
    /* publishes to try again (mu), oldest first; their thread */
    retry *retry_head, *retry_tail;
    pthread_cond_t retry_cv;
    pthread_t retry_th;
    int retry_started;
    /* hand-over (mu) */
    pthread_cond_t cv;
    natsMsgList batch;
    int have_batch;         /* batch waits for the loop */
    int stop;
    atomic_int fenced;      /* another process took the name: stopping */
    int rebind;             /* the loop asks for a rewind */
    int rewound;            /* a rewind came while a batch was applied */
    uint64_t bind_from;     /* the sequence to consume from at the next bind */
    uint64_t lag;           /* messages after the last one fetched */
    int bound;
    int fresh;              /* the consumer was just made: its first
                               delivery may begin past a hole */

    /* loop thread */
    pthread_t th;
    pthread_t lease_th;     /* renews the name's lease */
    pthread_cond_t lease_cv; /* its wait, cut short by a stop */
    int lease_started;
    int started, stopped;
    uv_async_t async;
    rec_engine *e;
    rec_cluster_apply_fn apply;
    rec_cluster_progress_fn progress;
    void *ud;
    uint64_t applied;       /* sequence of the last event applied */
    uint64_t applied_events, rejected, duplicates;
    int batch_pos;          /* the batch's next message (a paused batch) */
    int paused;             /* the batch waits for rec_cluster_resume */
    int in_async;           /* on_async runs (no reentry) */
    /* the catalogue (mu for cat_last) */
    uint64_t cat_applied;   /* sequence of the last catalogue write applied */
    uint64_t cat_last;      /* the highest catalogue sequence known */
    uint64_t cat_writes;    /* catalogue writes applied */
    uint64_t records;       /* lists shown through other nodes, applied */
    uint64_t lists_dropped; /* ... not applied: the loop was too far behind */
    natsSubscription *lsub; /* LISTS_SUBJECT */
    natsMsg **lq;           /* lists received, for the loop thread (mu) */
    size_t nlq, lq_cap;
    rec_cluster_lists_fn lists_fn;
    uint32_t slot;          /* the node's rec_id slot (RECD_SLOTS) */
    /* read barriers (mu) */
    rec_idslots bslots;      /* barriers by id */
    uint64_t next_barrier;
    uint64_t barriers, barrier_waits, barrier_failures;
    double barrier_s;       /* seconds waited, over every barrier passed */
    double barrier_give_up; /* seconds: BARRIER_GIVE_UP_S */
    /* questions (mu): one in flight at a time; reads that come meanwhile
     * wait for the next, sent when it is answered */
    uint64_t epoch_sent;    /* the last question sent */
    uint64_t inflight;      /* the question awaiting its answer, or 0 */
    int want_next;          /* reads wait for inflight + 1 */
    double asked_at;        /* mono seconds the question in flight went */
    uint64_t answered;      /* the last question answered */
    uint64_t answered_seq;  /* ... its answer */
    struct { uint64_t epoch, seq; } answers[EPOCHS];
    uint64_t questions;     /* questions sent */
    char inbox[96];         /* their answers come to inbox.<epoch> */
    natsSubscription *bsub;
    msgpack_unpacked up;
    msgpack_sbuffer sb;
};

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* NATS's reason for status s: the last error's text when it has one. */
static const char *nats_why(natsStatus s) {
    natsStatus ls;
    const char *t = nats_GetLastError(&ls);
    return t && t[0] ? t : natsStatus_GetText(s);
}

uint32_t rec_cluster_partition(const char *key, size_t klen, uint32_t p) {
    return p ? (uint32_t)(rec_hash_stable(key, klen) % p) : 0;
}

/* ---- tickets (callers hold mu) ------------------------------------------ */

static ticket *ticket_find(rec_cluster *c, uint64_t id) {
    return rec_idslots_find(&c->tickets, id);
}

/* A new ticket awaiting n acknowledgements, or 0 (no memory). Tickets are
 * numbered in order, so two live ones share a slot only when the table
 * spans fewer than the live range: then it doubles. */
static uint64_t ticket_new(rec_cluster *c, uint32_t n) {
    uint64_t id = ++c->next_ticket;
    ticket *t = rec_idslots_take(&c->tickets, id);
    if (!t)
        return 0;
    t->waiting = n;
    c->live++;
    c->unsettled++;
    return id;
}

static void ticket_free(rec_cluster *c, ticket *t) {
    if (!t->forgotten)
        c->unsettled--;
    t->id = 0;
    c->live--;
}

/* A forgotten ticket is dropped once nothing of it is awaited. */
static void ticket_settle_forgotten(rec_cluster *c, ticket *t) {
    if (t->forgotten && t->waiting == 0)
        ticket_free(c, t);
}

/* ---- publishing ------------------------------------------------------- */

static void set_error(rec_cluster *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_error(rec_cluster *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->last_error, sizeof c->last_error, fmt, ap);
    va_end(ap);
}

static uint64_t msg_ticket(natsMsg *msg) {
    const char *tv = NULL;
    return natsMsgHeader_Get(msg, "Recd-Ticket", &tv) == NATS_OK && tv ? strtoull(tv, NULL, 10)
                                                                        : 0;
}

/* A publish given up: its ticket fails. Takes msg. */
static void publish_failed(rec_cluster *c, natsMsg *msg, const char *why) {
    uint64_t id = msg_ticket(msg);
    natsMsg_Destroy(msg);
    pthread_mutex_lock(&c->mu);
    if (c->publish_failures++ % 1000 == 0)
        REC_WARN("cluster: publishing to stream %s failed for %.0f s: %s (%" PRIu64
                 " failures so far)", REC_CLUSTER_STREAM, PUBLISH_GIVE_UP_S, why,
                 c->publish_failures);
    set_error(c, "publishing to stream %s failed for %.0f s: %s", REC_CLUSTER_STREAM,
              PUBLISH_GIVE_UP_S, why);
    ticket *t = ticket_find(c, id);
    if (t) {
        t->waiting--;
        if (!t->rc)
            t->rc = REC_EIO;
        ticket_settle_forgotten(c, t);
    }
    pthread_mutex_unlock(&c->mu);
}

/* On a NATS thread: the stream's answer to one publish. A failure (a
 * timeout, a stream without a leader while a server is away, no server
 * reachable) is tried again after a pause, with the same message id (the
 * stream drops a duplicate), until PUBLISH_GIVE_UP_S after the first try. */
static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *ud) {
    rec_cluster *c = ud;
    (void)js;
    if (pae) {
        const char *since = NULL, *tries = NULL;
        double first = natsMsgHeader_Get(msg, "Recd-Since", &since) == NATS_OK && since
                           ? atof(since) : mono_s();
        int n = natsMsgHeader_Get(msg, "Recd-Try", &tries) == NATS_OK && tries ? atoi(tries) : 1;
        double now = mono_s();
        int give_up = now - first > PUBLISH_GIVE_UP_S;
        retry *r = give_up ? NULL : malloc(sizeof *r);
        if (!r) {
            publish_failed(c, msg, pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err));
        } else {
            char b[32];
            snprintf(b, sizeof b, "%d", n + 1);
            natsMsgHeader_Set(msg, "Recd-Try", b);
            if (!since) {
                snprintf(b, sizeof b, "%.3f", first);
                natsMsgHeader_Set(msg, "Recd-Since", b);
            }
            double pause = 0.05 * (double)(1u << (n < 5 ? n : 5)); /* 0.1 .. 1.6 s */
            *r = (retry){.msg = msg, .due = now + pause};
            pthread_mutex_lock(&c->mu);
            if (c->retry_tail)
                c->retry_tail->next = r;
            else
                c->retry_head = r;
            c->retry_tail = r;
            c->publish_retries++;
            pthread_cond_signal(&c->retry_cv);
            pthread_mutex_unlock(&c->mu);
        }
        return;
    }
    uint64_t id = msg_ticket(msg);
    pthread_mutex_lock(&c->mu);
    c->published++;
    if (pa->Sequence > c->stream_last)
        c->stream_last = pa->Sequence;
    const char *subj = natsMsg_GetSubject(msg);
    if (subj && !strcmp(subj, CATALOG_SUBJECT) && pa->Sequence > c->cat_last)
        c->cat_last = pa->Sequence;
    ticket *t = ticket_find(c, id);
    if (t) {
        t->waiting--;
        if (pa->Sequence > t->max_seq)
            t->max_seq = pa->Sequence;
        ticket_settle_forgotten(c, t);
    }
    /* Under mu: rec_cluster_stop closes the handle under it. */
    if (c->started && !c->stopped)
        uv_async_send(&c->async);
    pthread_mutex_unlock(&c->mu);
    natsMsg_Destroy(msg);
}

/* The retry thread: sends again what is due, in order. */
static void *retry_main(void *arg) {
    rec_cluster *c = arg;
    pthread_mutex_lock(&c->mu);
    while (!c->stop) {
        retry *r = c->retry_head;
        double now = mono_s();
        if (!r || r->due > now) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50 * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&c->retry_cv, &c->mu, &ts);
            continue;
        }
        c->retry_head = r->next;
        if (!c->retry_head)
            c->retry_tail = NULL;
        pthread_mutex_unlock(&c->mu);
        natsMsg *m = r->msg;
        free(r);
        natsStatus s = js_PublishMsgAsync(c->js, &m, &c->popts);
        if (s != NATS_OK)
            publish_failed(c, m, nats_why(s));
        pthread_mutex_lock(&c->mu);
    }
    /* Stopping: what is left will not be sent. */
    retry *r = c->retry_head;
    c->retry_head = c->retry_tail = NULL;
    pthread_mutex_unlock(&c->mu);
    while (r) {
        retry *next = r->next;
        publish_failed(c, r->msg, "the node stopped");
        free(r);
        r = next;
    }
    return NULL;
}

/* The event as it goes to the stream: its fields, ts when it had none, and
 * strict = false. The publishing node decided (with its --strict) that the
 * event goes in; every node applies what the stream holds, whatever its
 * own --strict, so that all of them hold the same. */
static int pack_event(rec_cluster *c, const msgpack_object *o, double now) {
    msgpack_sbuffer_clear(&c->sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &c->sb, msgpack_sbuffer_write);
    int has_ts = rec_value_field(o, "ts") != NULL;
    int has_strict = rec_value_field(o, "strict") != NULL;
    uint32_t n = o->via.map.size;
    int rc = msgpack_pack_map(&pk, n + !has_ts + !has_strict);
    for (uint32_t i = 0; i < n && !rc; i++)
        rc = msgpack_pack_object(&pk, o->via.map.ptr[i].key) ||
             (rec_value_is_str(&o->via.map.ptr[i].key, "strict")
                  ? msgpack_pack_false(&pk)
                  : msgpack_pack_object(&pk, o->via.map.ptr[i].val));
    if (!has_ts && !rc)
        rc = rec_value_pack_str(&pk, "ts") || msgpack_pack_double(&pk, now);
    if (!has_strict && !rc)
        rc = rec_value_pack_str(&pk, "strict") || msgpack_pack_false(&pk);
    return rc ? REC_ENOMEM : 0;
}

/* Send what c->sb holds to subj as one message of ticket id (0: none),
 * with the message id mid and, for a write other than event.add, its
 * method op. 0, or REC_EIO with err. */
static int send_one(rec_cluster *c, const char *subj, const char *mid, uint64_t id,
                    const char *op, char *err, size_t errlen) {
    char tv[24];
    snprintf(tv, sizeof tv, "%" PRIu64, id);
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subj, NULL, c->sb.data, (int)c->sb.size);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Nats-Msg-Id", mid);
    if (s == NATS_OK && id)
        s = natsMsgHeader_Set(m, "Recd-Ticket", tv);
    if (s == NATS_OK && op)
        s = natsMsgHeader_Set(m, OP_HEADER, op);
    if (s == NATS_OK)
        s = js_PublishMsgAsync(c->js, &m, &c->popts);
    natsMsg_Destroy(m); /* NULL once the library took it */
    if (s != NATS_OK) {
        snprintf(err, errlen, "cannot publish to the cluster: %s", nats_why(s));
        return REC_EIO;
    }
    return 0;
}

/* A ticket for n messages (none when ticket_out is NULL) and the number of
 * the first message id: 0, or REC_ENOMEM. */
static int publish_begin(rec_cluster *c, uint32_t n, uint64_t *ticket_out, uint64_t *id,
                         uint64_t *first_msg, char *err, size_t errlen) {
    pthread_mutex_lock(&c->mu);
    *id = ticket_out ? ticket_new(c, n) : 0;
    *first_msg = c->msg_count;
    c->msg_count += n;
    pthread_mutex_unlock(&c->mu);
    if (ticket_out && !*id) {
        snprintf(err, errlen, "out of memory");
        return REC_ENOMEM;
    }
    return 0;
}

/* sent of the n messages went: the others are not awaited; on a failure
 * the ticket is dropped (those sent are still applied, but the call
 * answers the error). */
static int publish_end(rec_cluster *c, uint64_t id, uint32_t n, uint32_t sent, int rc,
                       uint64_t *ticket_out) {
    if (id) {
        pthread_mutex_lock(&c->mu);
        ticket *t = ticket_find(c, id);
        if (t) {
            t->waiting -= n - sent;
            if (rc) {
                t->forgotten = 1;
                c->unsettled--;
                ticket_settle_forgotten(c, t);
            }
        }
        pthread_mutex_unlock(&c->mu);
        if (!rc)
            *ticket_out = id;
    }
    return rc;
}

/* The partition subject of a user key given as o (checked before). */
static int user_subject(rec_cluster *c, const msgpack_object *o, char *subj, size_t sl,
                        char *err, size_t errlen) {
    char key[REC_ID_MAX], why[256];
    rec_field f;
    rec_value_input(o, &f);
    int kl = rec_input_id(&f, "user", key, why, sizeof why);
    if (kl < 0) {
        snprintf(err, errlen, "%s", why);
        return kl;
    }
    snprintf(subj, sl, SUBJECT_PREFIX "%u",
             rec_cluster_partition(key, (size_t)kl, c->partitions));
    return 0;
}

int rec_cluster_publish(rec_cluster *c, const msgpack_object *events, uint32_t n,
                        uint64_t *ticket_out, char *err, size_t errlen) {
    double now = rec_wall();
    uint64_t id, first_msg;
    int rc = publish_begin(c, n, ticket_out, &id, &first_msg, err, errlen);
    if (rc)
        return rc;
    char mid[224], subj[32], why[256];
    uint32_t sent = 0;
    for (uint32_t i = 0; i < n && !rc; i++) {
        const msgpack_object *o = &events[i];
        if ((rc = user_subject(c, rec_value_field(o, "user"), subj, sizeof subj, why,
                               sizeof why))) { /* checked before: cannot happen */
            snprintf(err, errlen, "params[%u]: %s", i, why);
            break;
        }
        snprintf(mid, sizeof mid, "%s:%" PRIu64, c->instance, first_msg + i);
        if ((rc = pack_event(c, o, now))) {
            snprintf(err, errlen, "out of memory");
            break;
        }
        if ((rc = send_one(c, subj, mid, id, NULL, err, errlen)))
            break;
        sent++;
    }
    return publish_end(c, id, n, sent, rc, ticket_out);
}

/* item.* go whole to the catalogue's subject; user.* one user a message,
 * each to its user's partition (with that user's events). */
static int op_per_user(const char *op) { return strncmp(op, "user.", 5) == 0; }
static int op_is_delete(const char *op) { return strstr(op, ".delete") != NULL; }

int rec_cluster_publish_op(rec_cluster *c, const char *op, const msgpack_object *params,
                           uint64_t *ticket_out, char *err, size_t errlen) {
    int per_user = op_per_user(op);
    uint32_t n = per_user ? params->via.array.size : 1;
    uint64_t id, first_msg;
    int rc = publish_begin(c, n, ticket_out, &id, &first_msg, err, errlen);
    if (rc)
        return rc;
    char mid[224], subj[32], why[256];
    uint32_t sent = 0;
    for (uint32_t i = 0; i < n && !rc; i++) {
        msgpack_sbuffer_clear(&c->sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &c->sb, msgpack_sbuffer_write);
        if (per_user) {
            const msgpack_object *o = &params->via.array.ptr[i];
            const msgpack_object *who = o->type == MSGPACK_OBJECT_MAP ? rec_value_field(o, "id")
                                                                      : o;
            if ((rc = user_subject(c, who, subj, sizeof subj, why, sizeof why))) {
                snprintf(err, errlen, "params[%u]: %s", i, why);
                break;
            }
            rc = msgpack_pack_array(&pk, 1) || msgpack_pack_object(&pk, *o);
        } else {
            snprintf(subj, sizeof subj, CATALOG_SUBJECT);
            rc = msgpack_pack_object(&pk, *params);
        }
        if (rc) {
            rc = REC_ENOMEM;
            snprintf(err, errlen, "out of memory");
            break;
        }
        snprintf(mid, sizeof mid, "%s:%" PRIu64, c->instance, first_msg + i);
        if ((rc = send_one(c, subj, mid, id, op, err, errlen)))
            break;
        sent++;
    }
    return publish_end(c, id, n, sent, rc, ticket_out);
}

int rec_cluster_ticket(rec_cluster *c, uint64_t id, uint64_t *result, char *err,
                       size_t errlen) {
    pthread_mutex_lock(&c->mu);
    ticket *t = ticket_find(c, id);
    int rc;
    if (!t) {
        snprintf(err, errlen, "no such ticket");
        rc = REC_ENOTFOUND;
    } else if (t->waiting) {
        rc = REC_PENDING;
    } else if (t->rc) {
        rc = t->rc;
        snprintf(err, errlen, "%s", c->last_error[0] ? c->last_error : rec_strerror(rc));
        ticket_free(c, t);
    } else if (t->max_seq > c->applied) {
        rc = REC_PENDING;
    } else {
        rc = 0;
        if (result)
            *result = t->result;
        ticket_free(c, t);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

void rec_cluster_forget(rec_cluster *c, uint64_t id) {
    pthread_mutex_lock(&c->mu);
    ticket *t = ticket_find(c, id);
    if (t && !t->forgotten) {
        t->forgotten = 1;
        c->unsettled--;
        ticket_settle_forgotten(c, t);
    }
    pthread_mutex_unlock(&c->mu);
}

size_t rec_cluster_outstanding(const rec_cluster *c) {
    pthread_mutex_lock((pthread_mutex_t *)&c->mu);
    size_t n = c->unsettled;
    pthread_mutex_unlock((pthread_mutex_t *)&c->mu);
    return n + (c->owners ? rec_owners_outstanding(c->owners) : 0);
}

/* ---- partition owners and forwarded reads (owners.c) -------------------- */

int rec_cluster_forward(rec_cluster *c, const msgpack_object *user, const char *method,
                        const msgpack_object *params, uint64_t *id) {
    *id = 0;
    return c->owners ? rec_owners_forward(c->owners, user, method, params, id) : 0;
}

int rec_cluster_forward_take(rec_cluster *c, uint64_t id, rec_buf *out, char *err,
                             size_t errlen) {
    if (!c->owners) {
        snprintf(err, errlen, "no such forward");
        return REC_ENOTFOUND;
    }
    return rec_owners_take(c->owners, id, out, err, errlen);
}

void rec_cluster_forward_forget(rec_cluster *c, uint64_t id) {
    if (c->owners)
        rec_owners_forget(c->owners, id);
}

void rec_cluster_poll(rec_cluster *c) {
    if (c->owners)
        rec_owners_poll(c->owners);
}

/* ---- read barriers ---------------------------------------------------- */

/* Callers hold mu. */
static barrier *barrier_find(rec_cluster *c, uint64_t id) {
    return rec_idslots_find(&c->bslots, id);
}

static barrier *barrier_new(rec_cluster *c) {
    return rec_idslots_take(&c->bslots, ++c->next_barrier);
}

/* Ask the stream's leader for the stream's state (its last sequence):
 * the answer comes to inbox.<epoch> (on_barrier_answer). Does not block:
 * the request is buffered for NATS's thread. */
static void barrier_ask(rec_cluster *c, uint64_t epoch) {
    char reply[128];
    snprintf(reply, sizeof reply, "%s.%" PRIu64, c->inbox, epoch);
    natsStatus s = natsConnection_PublishRequestString(c->bnc, INFO_API, reply, "");
    if (s != NATS_OK)
        REC_DEBUG("cluster: read barrier question: %s", nats_why(s));
}

/* A new question (mu held): its epoch, to send once mu is released. */
static uint64_t question_new(rec_cluster *c, double now) {
    c->inflight = ++c->epoch_sent;
    c->asked_at = now;
    c->want_next = 0;
    c->questions++;
    return c->inflight;
}

/* The stream's last sequence in a STREAM.INFO answer: 0 with *seq, or -1
 * (an error: asked again). */
static int parse_last(const char *data, int len, uint64_t *seq) {
    *seq = 0;
    const char *end = data + len, *p = data;
    static const char key[] = "\"last_seq\":";
    if (len <= 0 || memmem(data, (size_t)len, "\"error\"", 7))
        return -1;
    while ((p = memmem(p, (size_t)(end - p), key, sizeof key - 1))) {
        p += sizeof key - 1;
        char num[24];
        size_t n = 0;
        while (p < end && n < sizeof num - 1 && *p >= '0' && *p <= '9')
            num[n++] = *p++;
        num[n] = 0;
        *seq = strtoull(num, NULL, 10);
        return 0; /* the state's: the first in the answer */
    }
    return -1;
}

/* On a NATS thread: the answer to a question. The reads that came while
 * it was out wait for the next, sent now. */
static void on_barrier_answer(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                              void *ud) {
    rec_cluster *c = ud;
    (void)nc;
    (void)sub;
    const char *subj = natsMsg_GetSubject(msg);
    size_t il = strlen(c->inbox);
    uint64_t epoch = 0, seq = 0;
    int ok = -1;
    if (subj && strncmp(subj, c->inbox, il) == 0 && subj[il] == '.') {
        epoch = strtoull(subj + il + 1, NULL, 10);
        ok = parse_last(natsMsg_GetData(msg), natsMsg_GetDataLength(msg), &seq);
    }
    natsMsg_Destroy(msg);
    if (ok < 0 || !epoch)
        return; /* the question in flight is asked again after a while */
    uint64_t next = 0;
    pthread_mutex_lock(&c->mu);
    c->answers[epoch % EPOCHS].epoch = epoch;
    c->answers[epoch % EPOCHS].seq = seq;
    if (epoch > c->answered) {
        c->answered = epoch;
        c->answered_seq = seq;
    }
    if (seq > c->stream_last)
        c->stream_last = seq;
    if (c->inflight && epoch >= c->inflight) {
        c->inflight = 0;
        if (c->want_next)
            next = question_new(c, mono_s());
    }
    if (c->started && !c->stopped)
        uv_async_send(&c->async);
    pthread_mutex_unlock(&c->mu);
    if (next)
        barrier_ask(c, next);
}

int rec_cluster_barrier(rec_cluster *c, uint64_t *id_out, char *err, size_t errlen) {
    double now = mono_s();
    uint64_t ask = 0;
    pthread_mutex_lock(&c->mu);
    barrier *b = barrier_new(c);
    uint64_t id = b ? b->id : 0;
    if (b) {
        b->first = now;
        if (!c->inflight) {
            ask = question_new(c, now);
            b->epoch = ask;
        } else { /* the one out may have been sent before this read came */
            b->epoch = c->inflight + 1;
            c->want_next = 1;
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (!id) {
        snprintf(err, errlen, "out of memory");
        return REC_ENOMEM;
    }
    if (ask)
        barrier_ask(c, ask);
    *id_out = id;
    return 0;
}

int rec_cluster_barrier_check(rec_cluster *c, uint64_t id, char *err, size_t errlen) {
    double now = mono_s();
    uint64_t ask = 0;
    pthread_mutex_lock(&c->mu);
    barrier *b = barrier_find(c, id);
    if (!b) {
        pthread_mutex_unlock(&c->mu);
        snprintf(err, errlen, "no such read barrier");
        return REC_ENOTFOUND;
    }
    if (c->answered >= b->epoch) {
        /* Its own question's answer, or (that one lost) a later one's. */
        uint64_t target = c->answers[b->epoch % EPOCHS].epoch == b->epoch
                              ? c->answers[b->epoch % EPOCHS].seq
                              : c->answered_seq;
        if (target > c->applied) {
            b->waited = 1;
            pthread_mutex_unlock(&c->mu);
            return REC_PENDING;
        }
        c->barriers++;
        c->barrier_waits += b->waited;
        c->barrier_s += now - b->first;
        b->id = 0;
        pthread_mutex_unlock(&c->mu);
        return 0;
    }
    if (now - b->first > c->barrier_give_up) {
        c->barrier_failures++;
        b->id = 0;
        pthread_mutex_unlock(&c->mu);
        snprintf(err, errlen, "read barrier: stream %s did not say within %.0f s how far "
                 "it was written (has the cluster lost its quorum?)", REC_CLUSTER_STREAM,
                 c->barrier_give_up);
        return REC_EIO;
    }
    /* The question out went unanswered (a server went away, the stream
     * has no leader): another, which answers every read waiting. */
    if (c->inflight ? now - c->asked_at > BARRIER_RESEND_S : c->answered < b->epoch)
        ask = question_new(c, now);
    pthread_mutex_unlock(&c->mu);
    if (ask)
        barrier_ask(c, ask);
    return REC_PENDING;
}

void rec_cluster_barrier_forget(rec_cluster *c, uint64_t id) {
    pthread_mutex_lock(&c->mu);
    barrier *b = barrier_find(c, id);
    if (b)
        b->id = 0;
    pthread_mutex_unlock(&c->mu);
}

/* ---- the stored sequence ----------------------------------------------- */

uint64_t rec_cluster_stored_seq(rec_engine *e) {
    rec_buf b = REC_BUF_INIT;
    uint64_t seq = 0;
    if (rec_engine_kv_get(e, APPLIED_KEY, sizeof APPLIED_KEY - 1, &b) == 0) {
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        if (msgpack_unpack_next(&up, b.data, b.len, NULL) == MSGPACK_UNPACK_SUCCESS &&
            up.data.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            seq = up.data.via.u64;
        msgpack_unpacked_destroy(&up);
    }
    rec_buf_free(&b);
    return seq;
}

/* Written with the events it follows: the same group commit. */
static int store_seq(rec_engine *e, uint64_t seq) {
    unsigned char v[9] = {0xcf};
    for (int i = 0; i < 8; i++)
        v[1 + i] = (unsigned char)(seq >> (56 - 8 * i));
    int was = rec_engine_learning(e, 0);
    int rc = rec_engine_kv_put(e, APPLIED_KEY, sizeof APPLIED_KEY - 1, v, sizeof v);
    rec_engine_learning(e, was);
    return rc;
}

/* ---- consuming -------------------------------------------------------- */

/* Make the durable consumer anew at sequence `from` and subscribe to it. */
static int bind_consumer(rec_cluster *c, uint64_t from, natsSubscription **sub) {
    jsErrCode jerr = 0;
    natsStatus s = js_DeleteConsumer(c->js, REC_CLUSTER_STREAM, c->node, NULL, &jerr);
    if (s != NATS_OK && jerr != JSConsumerNotFoundErr && s != NATS_NOT_FOUND) {
        REC_DEBUG("cluster: removing consumer %s: %s", c->node, nats_why(s));
        return -1;
    }
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = c->node;
    cc.Description = "a recd node: consumes the events it applies";
    cc.AckPolicy = js_AckAll;
    cc.AckWait = (int64_t)60 * 1000000000;
    cc.MaxAckPending = 4 * FETCH_BATCH;
    if (from > 1) {
        cc.DeliverPolicy = js_DeliverByStartSequence;
        cc.OptStartSeq = from;
    } else {
        cc.DeliverPolicy = js_DeliverAll;
    }
    jsConsumerInfo *ci = NULL;
    s = js_AddConsumer(&ci, c->js, REC_CLUSTER_STREAM, &cc, NULL, &jerr);
    jsConsumerInfo_Destroy(ci);
    if (s != NATS_OK) {
        REC_DEBUG("cluster: making consumer %s: %s", c->node, nats_why(s));
        return -1;
    }
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = REC_CLUSTER_STREAM;
    so.Consumer = c->node;
    s = js_PullSubscribe(sub, c->js, SUBJECT_PREFIX ">", c->node, NULL, &so, &jerr);
    if (s != NATS_OK) {
        REC_DEBUG("cluster: subscribing to consumer %s: %s", c->node, nats_why(s));
        *sub = NULL;
        return -1;
    }
    return 0;
}

/* Renew the name's lease (its thread). */
static void renew_lease(rec_cluster *c) {
    double now = mono_s();
    uint64_t rev = 0;
    natsStatus s = kvStore_UpdateString(&rev, c->kv, c->node, c->instance, c->lease_rev);
    if (s == NATS_OK) {
        c->lease_rev = rev;
        c->lease_renewed = now;
        return;
    }
    /* An update that went through but whose answer was lost: ours still. */
    kvEntry *en = NULL;
    if (kvStore_Get(&en, c->kv, c->node) == NATS_OK) {
        if (kvEntry_ValueString(en) && !strcmp(kvEntry_ValueString(en), c->instance)) {
            c->lease_rev = kvEntry_Revision(en);
        } else if (kvEntry_ValueString(en) && !atomic_exchange(&c->fenced, 1)) {
            /* Its lease lapsed (the process was stopped, or cut off from
             * the cluster) and another process took the name, and with it
             * the consumer named after it: two of them would split its
             * deliveries. This one stops. */
            REC_ERROR("cluster: the name %s was taken by %s while this node could not renew "
                      "its lease; stopping (exit 1)", c->node, kvEntry_ValueString(en));
            kill(getpid(), SIGTERM);
        }
        kvEntry_Destroy(en);
    } else if (s != NATS_TIMEOUT) {
        /* Expired while the cluster could not be reached: take it again. */
        if (kvStore_CreateString(&rev, c->kv, c->node, c->instance) == NATS_OK) {
            c->lease_rev = rev;
            c->lease_renewed = now;
        }
    }
}

/* The catalogue's last sequence in the stream, for sys.info's lag (the
 * lease's thread, once a renewal). */
static void refresh_catalog_last(rec_cluster *c) {
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 1000;
    if (js_GetLastMsg(&m, c->js, REC_CLUSTER_STREAM, CATALOG_SUBJECT, &jo, &jerr) != NATS_OK)
        return;
    uint64_t seq = natsMsg_GetSequence(m);
    natsMsg_Destroy(m);
    pthread_mutex_lock(&c->mu);
    if (seq > c->cat_last)
        c->cat_last = seq;
    pthread_mutex_unlock(&c->mu);
}

/* The lease's thread: a renewal every fifth of the lease, on its own so
 * that nothing the consumer waits for delays it. */
static void *lease_main(void *arg) {
    rec_cluster *c = arg;
    pthread_mutex_lock(&c->mu);
    while (!c->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double t = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 + c->lease / 5;
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&c->lease_cv, &c->mu, &ts);
        if (c->stop)
            break;
        pthread_mutex_unlock(&c->mu);
        renew_lease(c);
        refresh_catalog_last(c);
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static void *consume_main(void *arg) {
    rec_cluster *c = arg;
    natsSubscription *sub = NULL;
    int failures = 0;
    /* Idle, one message is waited for (a long poll that returns as soon as
     * it comes); then what is there is taken in batches without waiting,
     * until a batch comes back empty. */
    int idle = 1;
    int stalls = 0;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        int stop = c->stop, rebind = c->rebind;
        uint64_t from = c->bind_from;
        c->rebind = 0;
        pthread_mutex_unlock(&c->mu);
        if (stop)
            break;
        if (atomic_load(&c->fenced)) { /* the consumer is another's now */
            sleep_s(0.05);
            continue;
        }
        if (rebind && sub) {
            natsSubscription_Destroy(sub);
            sub = NULL;
        }
        if (!sub) {
            if (bind_consumer(c, from, &sub)) {
                if (failures++ == 0)
                    REC_WARN("cluster: cannot bind consumer %s yet; retrying", c->node);
                sleep_s(0.25);
                continue;
            }
            if (failures)
                REC_INFO("cluster: consumer %s bound at sequence %" PRIu64, c->node, from);
            failures = 0;
            pthread_mutex_lock(&c->mu);
            c->bound = 1;
            c->fresh = 1;
            pthread_mutex_unlock(&c->mu);
        }
        natsMsgList list = {0};
        jsFetchRequest fr;
        jsFetchRequest_Init(&fr);
        fr.Batch = idle ? 1 : FETCH_BATCH;
        fr.NoWait = !idle;
        fr.Expires = (int64_t)FETCH_WAIT_MS * 1000000;
        natsStatus s = natsSubscription_FetchRequest(&list, sub, &fr);
        if ((s == NATS_TIMEOUT || s == NATS_NOT_FOUND || s == NATS_OK) && list.Count == 0) {
            /* Nothing comes while the stream holds more than is applied:
             * deliveries were lost on the way (a server went away) and the
             * consumer waits for their acknowledgement. Made again, it
             * delivers from what is applied on. */
            pthread_mutex_lock(&c->mu);
            c->lag = 0;
            int behind = c->stream_last > c->applied;
            pthread_mutex_unlock(&c->mu);
            stalls = behind ? stalls + 1 : 0;
            if (stalls >= 2) {
                REC_INFO("cluster: consumer %s delivers nothing while the stream holds "
                         "more; making it again", c->node);
                natsSubscription_Destroy(sub);
                sub = NULL;
                stalls = 0;
            }
            idle = 1;
            continue;
        }
        stalls = 0;
        if (list.Count == 0) {
            /* The server went away or the consumer did: after a few
             * failures, the consumer is made again from what is applied. */
            natsMsgList_Destroy(&list);
            if (++failures == 1)
                REC_WARN("cluster: fetching from %s: %s", REC_CLUSTER_STREAM, nats_why(s));
            if (failures % 8 == 0) {
                natsSubscription_Destroy(sub);
                sub = NULL;
                pthread_mutex_lock(&c->mu);
                c->bound = 0;
                pthread_mutex_unlock(&c->mu);
            }
            sleep_s(0.25);
            continue;
        }
        failures = 0;
        idle = 0;
        pthread_mutex_lock(&c->mu);
        c->batch = list;
        c->have_batch = 1;
        pthread_mutex_unlock(&c->mu);
        uv_async_send(&c->async);
        pthread_mutex_lock(&c->mu);
        while (c->have_batch && !c->stop)
            pthread_cond_wait(&c->cv, &c->mu);
        int taken = !c->have_batch;
        c->have_batch = 0;
        pthread_mutex_unlock(&c->mu);
        /* Acknowledge up to the last (the consumer acknowledges all before
         * it): what it delivers next is what follows. */
        if (taken)
            natsMsg_Ack(list.Msgs[list.Count - 1], NULL);
        natsMsgList_Destroy(&list);
    }
    if (sub)
        natsSubscription_Destroy(sub);
    return NULL;
}

/* The ticket of a message this process published, or 0. */
static uint64_t own_ticket(rec_cluster *c, natsMsg *msg) {
    const char *mid = NULL;
    size_t il = strlen(c->instance);
    if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &mid) != NATS_OK || !mid ||
        strncmp(mid, c->instance, il) != 0 || mid[il] != ':')
        return 0;
    return msg_ticket(msg);
}

/* A message of this process's was refused when applied: the call that
 * sent it is answered with the error, not as stored. */
static void refused(rec_cluster *c, natsMsg *msg, int rc) {
    uint64_t id = own_ticket(c, msg);
    if (!id)
        return;
    pthread_mutex_lock(&c->mu);
    ticket *t = ticket_find(c, id);
    if (t && !t->rc) {
        t->rc = rc;
        set_error(c, "a write of the call was refused when applied: %s", rec_strerror(rc));
    }
    pthread_mutex_unlock(&c->mu);
}

/* A catalogue write of this process's was applied, answering result. */
static void credit(rec_cluster *c, natsMsg *msg, uint64_t result) {
    uint64_t id = own_ticket(c, msg);
    if (!id)
        return;
    pthread_mutex_lock(&c->mu);
    ticket *t = ticket_find(c, id);
    if (t)
        t->result += result;
    pthread_mutex_unlock(&c->mu);
}

/* Loop thread: apply the batch handed over (from where a pause left it),
 * then let the host look at its tickets and barriers. */
/* Loop thread: the lists other nodes showed, to the host. */
static void apply_lists(rec_cluster *c) {
    pthread_mutex_lock(&c->mu);
    natsMsg **q = c->lq;
    size_t n = c->nlq;
    c->lq = NULL;
    c->nlq = c->lq_cap = 0;
    pthread_mutex_unlock(&c->mu);
    for (size_t i = 0; i < n; i++) {
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        const char *data = natsMsg_GetData(q[i]);
        int len = natsMsg_GetDataLength(q[i]);
        if (c->lists_fn && msgpack_unpack_next(&up, data, (size_t)len, NULL) == MSGPACK_UNPACK_SUCCESS &&
            up.data.type == MSGPACK_OBJECT_ARRAY && up.data.via.array.size == 2 &&
            up.data.via.array.ptr[1].type == MSGPACK_OBJECT_ARRAY) {
            c->lists_fn(c->ud, &up.data.via.array.ptr[1]);
            c->records += up.data.via.array.ptr[1].via.array.size;
        }
        msgpack_unpacked_destroy(&up);
        natsMsg_Destroy(q[i]);
    }
    free(q);
}

static void on_async(uv_async_t *h) {
    rec_cluster *c = h->data;
    apply_lists(c);
    if (c->in_async)
        return;
    c->in_async = 1;
    pthread_mutex_lock(&c->mu);
    int have = c->have_batch;
    natsMsgList list = c->batch;
    pthread_mutex_unlock(&c->mu);
    if (have) {
        uint64_t last = c->applied, lag = 0;
        pthread_mutex_lock(&c->mu);
        int fresh = c->fresh;
        c->fresh = 0;
        c->rewound = 0;
        pthread_mutex_unlock(&c->mu);
        int gap = 0, rewound = 0;
        c->paused = 0;
        for (int i = c->batch_pos; i < list.Count && !gap; i++) {
            jsMsgMetaData *meta = NULL;
            uint64_t seq = 0;
            if (natsMsg_GetMetaData(&meta, list.Msgs[i]) == NATS_OK) {
                seq = meta->Sequence.Stream;
                lag = meta->NumPending;
                jsMsgMetaData_Destroy(meta);
            }
            if (seq && seq <= last) {
                c->duplicates++;
                continue;
            }
            /* The sequences are applied without a hole: the stream's are
             * contiguous, and a delivery lost on the way (a server went
             * away) is not sent again until much later. A hole makes the
             * consumer start again after what is applied. Only a consumer
             * made just now may begin past it: the stream no longer holds
             * what lies between. */
            if (!seq || (seq > last + 1 && !(fresh && i == 0))) {
                REC_INFO("cluster: delivery skipped from sequence %" PRIu64 " to %" PRIu64
                         "; consuming again from %" PRIu64, last + 1, seq, last + 1);
                gap = 1;
                break;
            }
            if (seq > last + 1)
                REC_WARN("cluster: the stream no longer holds sequences %" PRIu64 "..%" PRIu64
                         "; going on from %" PRIu64, last + 1, seq - 1, seq);
            const char *op = NULL;
            if (natsMsgHeader_Get(list.Msgs[i], OP_HEADER, &op) != NATS_OK)
                op = NULL;
            /* A delete commits on its own (rec_engine_delete): what is
             * applied before it commits with it, sequence included. Applied
             * again after a crash before the next commit, it deletes
             * nothing more. */
            if (op && op_is_delete(op) && last > c->applied)
                (void)store_seq(c->e, last);
            const char *data = natsMsg_GetData(list.Msgs[i]);
            int len = natsMsg_GetDataLength(list.Msgs[i]);
            int rc = REC_EINVAL;
            uint64_t result = 0;
            if (msgpack_unpack_next(&c->up, data, (size_t)len, NULL) == MSGPACK_UNPACK_SUCCESS &&
                c->up.data.type == (op ? MSGPACK_OBJECT_ARRAY : MSGPACK_OBJECT_MAP))
                rc = c->apply(c->ud, op, &c->up.data, &result);
            if (rc == REC_PENDING) {
                /* A delete while a commit is in flight: the batch waits
                 * here for rec_cluster_resume. */
                c->paused = 1;
                c->batch_pos = i;
                break;
            }
            pthread_mutex_lock(&c->mu);
            rewound = c->rewound; /* the apply's own commit failed */
            pthread_mutex_unlock(&c->mu);
            if (rewound)
                break;
            if (rc) {
                c->rejected++;
                REC_WARN("cluster: %s %" PRIu64 " of %s not applied: %s",
                         op ? op : "event", seq, REC_CLUSTER_STREAM, rec_strerror(rc));
                refused(c, list.Msgs[i], rc);
            } else if (op) {
                c->cat_writes++;
                credit(c, list.Msgs[i], result);
            } else {
                c->applied_events++;
            }
            if (op && !op_per_user(op))
                c->cat_applied = seq;
            last = seq;
        }
        if (rewound) {
            /* rec_cluster_rewind set where consumption starts again; the
             * batch is dropped. */
            pthread_mutex_lock(&c->mu);
            c->batch_pos = 0;
            c->have_batch = 0;
            pthread_cond_signal(&c->cv);
            pthread_mutex_unlock(&c->mu);
            c->in_async = 0;
            c->progress(c->ud);
            return;
        }
        if (last > c->applied) {
            int rc = store_seq(c->e, last);
            if (rc)
                REC_ERROR("cluster: storing the applied sequence: %s", rec_strerror(rc));
        }
        pthread_mutex_lock(&c->mu);
        c->applied = last;
        c->bind_from = last + 1;
        if (last > c->stream_last)
            c->stream_last = last;
        if (c->cat_applied > c->cat_last)
            c->cat_last = c->cat_applied;
        c->lag = lag;
        if (!c->paused) {
            c->rebind |= gap;
            c->batch_pos = 0;
            c->have_batch = 0;
            pthread_cond_signal(&c->cv);
        }
        pthread_mutex_unlock(&c->mu);
    }
    c->in_async = 0;
    c->progress(c->ud);
}

void rec_cluster_resume(rec_cluster *c) {
    if (c && c->started && !c->stopped && c->paused)
        on_async(&c->async);
}

void rec_cluster_rewind(rec_cluster *c) {
    uint64_t seq = rec_cluster_stored_seq(c->e);
    pthread_mutex_lock(&c->mu);
    if (seq < c->applied || c->in_async) {
        if (seq < c->applied)
            REC_WARN("cluster: consuming again from sequence %" PRIu64 " (the state lost %"
                     PRIu64 " applied events)", seq + 1, c->applied - seq);
        c->applied = seq;
        c->bind_from = seq + 1;
        c->rebind = 1;
        c->rewound = 1;
    }
    pthread_mutex_unlock(&c->mu);
}

/* NATS's thread: lists another node showed, queued for the loop thread
 * (this node's own, which the server echoes back, are dropped). */
static void on_lists(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
    rec_cluster *c = closure;
    (void)nc;
    (void)sub;
    const char *data = natsMsg_GetData(msg);
    int len = natsMsg_GetDataLength(msg);
    size_t il = strlen(c->instance);
    /* [origin, lists], the origin a str8 (rec_cluster_share_lists) */
    int own = len > 3 && (size_t)len > il + 3 && (unsigned char)data[1] == 0xd9 &&
              (unsigned char)data[2] == il && !memcmp(data + 3, c->instance, il);
    if (own) {
        natsMsg_Destroy(msg);
        return;
    }
    pthread_mutex_lock(&c->mu);
    if (!c->started || c->stopped) {
        natsMsg_Destroy(msg);
    } else if (c->nlq >= LISTS_QUEUE_MAX) {
        c->lists_dropped++;
        natsMsg_Destroy(msg);
    } else {
        if (c->nlq == c->lq_cap) {
            size_t cap = c->lq_cap ? 2 * c->lq_cap : 16;
            natsMsg **q = realloc(c->lq, cap * sizeof *q);
            if (q) {
                c->lq = q;
                c->lq_cap = cap;
            }
        }
        if (c->nlq < c->lq_cap) {
            c->lq[c->nlq++] = msg;
        } else {
            c->lists_dropped++;
            natsMsg_Destroy(msg);
        }
        /* Under mu: rec_cluster_stop closes the handle under it. */
        uv_async_send(&c->async);
    }
    pthread_mutex_unlock(&c->mu);
}

void rec_cluster_on_lists(rec_cluster *c, rec_cluster_lists_fn fn) { c->lists_fn = fn; }

int rec_cluster_share_lists(rec_cluster *c, const void *lists, size_t len) {
    /* [origin, lists]: the origin a str8, as on_lists reads it */
    size_t il = strlen(c->instance);
    unsigned char head[3] = {0x92, 0xd9, (unsigned char)il};
    rec_buf b = REC_BUF_INIT;
    int rc = rec_buf_append(&b, head, sizeof head) || rec_buf_append(&b, c->instance, il) ||
                     rec_buf_append(&b, lists, len)
                 ? REC_ENOMEM : 0;
    if (!rc && natsConnection_Publish(c->bnc, LISTS_SUBJECT, b.data, (int)b.len) != NATS_OK)
        rc = REC_EIO;
    rec_buf_free(&b);
    return rc;
}

int rec_cluster_start(rec_cluster *c, uv_loop_t *loop, rec_engine *e,
                      rec_cluster_apply_fn apply, rec_cluster_progress_fn progress,
                      rec_cluster_serve_fn serve, void *ud) {
    c->e = e;
    c->apply = apply;
    c->progress = progress;
    c->ud = ud;
    c->applied = rec_cluster_stored_seq(e);
    c->bind_from = c->applied + 1;
    if (c->stream_last > c->applied && c->stream_first > c->applied + 1) {
        /* The stream's retention dropped events this folder never
         * applied: consuming on would build a state with a hole. */
        REC_ERROR("cluster: stream %s begins at sequence %" PRIu64 " (it keeps events %.0f s),"
                  " but this data folder has applied the stream only up to %" PRIu64 ": the "
                  "events between are gone. Start the node on a copy of a live node's folder "
                  "(mdb_copy -c; docs/cluster.md, Snapshots and retention)", REC_CLUSTER_STREAM,
                  c->stream_first, c->retain, c->applied);
        return REC_EINVAL;
    }
    if (uv_async_init(loop, &c->async, on_async))
        return REC_EIO;
    c->async.data = c;
    natsInbox *ib = NULL;
    if (natsInbox_Create(&ib) == NATS_OK) {
        snprintf(c->inbox, sizeof c->inbox, "%s", (const char *)ib);
        natsInbox_Destroy(ib);
    }
    char wild[128];
    snprintf(wild, sizeof wild, "%s.*", c->inbox);
    if (!c->inbox[0] ||
        natsConnection_Subscribe(&c->bsub, c->bnc, wild, on_barrier_answer, c) != NATS_OK ||
        natsConnection_Subscribe(&c->lsub, c->nc, LISTS_SUBJECT, on_lists, c) != NATS_OK) {
        uv_close((uv_handle_t *)&c->async, NULL);
        return REC_EIO;
    }
    c->started = 1;
    if (pthread_create(&c->th, NULL, consume_main, c)) {
        c->stopped = 1;
        uv_close((uv_handle_t *)&c->async, NULL);
        return REC_EIO;
    }
    if (pthread_create(&c->retry_th, NULL, retry_main, c) == 0)
        c->retry_started = 1;
    if (pthread_create(&c->lease_th, NULL, lease_main, c) == 0)
        c->lease_started = 1;
    if (rec_owners_start(c->owners, loop, serve, progress, ud))
        REC_ERROR("cluster: cannot serve reads forwarded to node %s; the others serve them "
                  "themselves", c->node);
    REC_INFO("cluster: node %s consumes %s from sequence %" PRIu64 " (every partition, "
             "0..%u); it serves the reads of the partitions it owns", c->node,
             REC_CLUSTER_STREAM, c->bind_from, c->partitions - 1);
    return 0;
}

void rec_cluster_stop(rec_cluster *c) {
    if (!c || !c->started || c->stopped)
        return;
    rec_owners_stop(c->owners);
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_cond_broadcast(&c->retry_cv);
    pthread_cond_broadcast(&c->lease_cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->th, NULL);
    if (c->retry_started)
        pthread_join(c->retry_th, NULL);
    if (c->lease_started)
        pthread_join(c->lease_th, NULL);
    if (c->bsub)
        natsSubscription_Unsubscribe(c->bsub);
    if (c->lsub)
        natsSubscription_Unsubscribe(c->lsub);
    pthread_mutex_lock(&c->mu);
    c->stopped = 1;
    pthread_mutex_unlock(&c->mu);
    uv_close((uv_handle_t *)&c->async, NULL);
}

/* ---- sys.info ---------------------------------------------------------- */

int rec_cluster_pack_info(rec_cluster *c, msgpack_packer *pk) {
    char url[256] = "";
    natsConnection_GetConnectedUrl(c->nc, url, sizeof url);
    pthread_mutex_lock(&c->mu);
    uint64_t stream_last = c->stream_last, lag = c->lag, published = c->published,
             retries = c->publish_retries, failures = c->publish_failures;
    size_t waiting = c->unsettled;
    uint64_t lists_dropped = c->lists_dropped;
    int bound = c->bound;
    uint64_t cat_last = c->cat_last, nb = c->barriers, bw = c->barrier_waits,
             bf = c->barrier_failures, nq = c->questions;
    double bs = c->barrier_s;
    char last_error[256];
    snprintf(last_error, sizeof last_error, "%s", c->last_error);
    pthread_mutex_unlock(&c->mu);
    int connected = natsConnection_Status(c->nc) == NATS_CONN_STATUS_CONNECTED;
    int rc = msgpack_pack_map(pk, 23 + REC_OWNERS_INFO_KEYS) ||
             rec_value_pack_str(pk, "servers") || rec_value_pack_str(pk, c->servers) ||
             rec_value_pack_str(pk, "connected") || rec_value_pack_str(pk, connected ? url : "") ||
             rec_value_pack_str(pk, "node") || rec_value_pack_str(pk, c->node) ||
             rec_value_pack_str(pk, "stream") || rec_value_pack_str(pk, REC_CLUSTER_STREAM) ||
             rec_value_pack_str(pk, "replicas") || msgpack_pack_int(pk, c->replicas) ||
             rec_value_pack_str(pk, "partitions") || msgpack_pack_uint32(pk, c->partitions) ||
             rec_owners_pack_info(c->owners, pk) ||
             rec_value_pack_str(pk, "consumer_bound") || (bound ? msgpack_pack_true(pk) : msgpack_pack_false(pk)) ||
             rec_value_pack_str(pk, "last_applied") || msgpack_pack_uint64(pk, c->applied) ||
             rec_value_pack_str(pk, "stream_last") || msgpack_pack_uint64(pk, stream_last) ||
             rec_value_pack_str(pk, "lag") || msgpack_pack_uint64(pk, lag) ||
             rec_value_pack_str(pk, "applied") || msgpack_pack_uint64(pk, c->applied_events) ||
             rec_value_pack_str(pk, "rejected") || msgpack_pack_uint64(pk, c->rejected) ||
             rec_value_pack_str(pk, "lists_applied") || msgpack_pack_uint64(pk, c->records) ||
             rec_value_pack_str(pk, "lists_dropped") || msgpack_pack_uint64(pk, lists_dropped) ||
             rec_value_pack_str(pk, "rec_id_slot") || msgpack_pack_uint32(pk, c->slot) ||
             rec_value_pack_str(pk, "duplicates") || msgpack_pack_uint64(pk, c->duplicates) ||
             rec_value_pack_str(pk, "published") || msgpack_pack_uint64(pk, published) ||
             rec_value_pack_str(pk, "publish_retries") || msgpack_pack_uint64(pk, retries) ||
             rec_value_pack_str(pk, "publish_failures") || msgpack_pack_uint64(pk, failures) ||
             rec_value_pack_str(pk, "calls_waiting") || msgpack_pack_uint64(pk, waiting) ||
             rec_value_pack_str(pk, "last_error") || rec_value_pack_str(pk, last_error) ||
             rec_value_pack_str(pk, "catalog") || msgpack_pack_map(pk, 5) ||
             rec_value_pack_str(pk, "subject") || rec_value_pack_str(pk, CATALOG_SUBJECT) ||
             rec_value_pack_str(pk, "last_applied") || msgpack_pack_uint64(pk, c->cat_applied) ||
             rec_value_pack_str(pk, "stream_last") || msgpack_pack_uint64(pk, cat_last) ||
             rec_value_pack_str(pk, "lag") ||
             msgpack_pack_uint64(pk, cat_last > c->cat_applied ? cat_last - c->cat_applied : 0) ||
             rec_value_pack_str(pk, "applied") || msgpack_pack_uint64(pk, c->cat_writes) ||
             rec_value_pack_str(pk, "barriers") || msgpack_pack_map(pk, 5) ||
             rec_value_pack_str(pk, "passed") || msgpack_pack_uint64(pk, nb) ||
             rec_value_pack_str(pk, "questions") || msgpack_pack_uint64(pk, nq) ||
             rec_value_pack_str(pk, "waits") || msgpack_pack_uint64(pk, bw) ||
             rec_value_pack_str(pk, "mean_wait_ms") ||
             msgpack_pack_double(pk, nb ? bs * 1e3 / (double)nb : 0.0) ||
             rec_value_pack_str(pk, "failures") || msgpack_pack_uint64(pk, bf);
    return rc ? REC_ENOMEM : 0;
}

/* ---- start-up ---------------------------------------------------------- */

static int name_ok(const char *s) {
    if (!s[0] || strlen(s) >= 64)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_'))
            return 0;
    return 1;
}

/* Errors worth waiting out while a cluster forms or elects a leader. */
static int transient(natsStatus s, jsErrCode jerr) {
    return s == NATS_TIMEOUT || s == NATS_NO_RESPONDERS || jerr == JSClusterNotAvailErr ||
           jerr == JSClusterNoPeersErr || jerr == JSInsufficientResourcesErr;
}

/* The partition count written in the stream's description. */
static uint32_t described_partitions(const char *d) {
    const char *p = d ? strstr(d, "partitions=") : NULL;
    return p ? (uint32_t)strtoul(p + 11, NULL, 10) : 0;
}

/* The stream drops a message whose id it saw within this window: a
 * publish retried after a lost acknowledgement is stored once. */
#define DUPLICATES_S 120

/* MaxAge of a stream that keeps events `retain` seconds (0: for ever). */
static int64_t max_age_ns(double retain) { return retain > 0 ? (int64_t)(retain * 1e9) : 0; }

/* Set the retention of the stream described by si to o's; 0 or REC_EIO. */
static int set_retention(rec_cluster *c, jsStreamInfo *si, const rec_cluster_opts *o,
                         char *err, size_t errlen) {
    int64_t was = si->Config->MaxAge, dup = si->Config->Duplicates;
    si->Config->MaxAge = max_age_ns(o->retain);
    /* JetStream's rule: no window of duplicates longer than the age */
    int64_t window = (int64_t)DUPLICATES_S * 1000000000;
    si->Config->Duplicates = si->Config->MaxAge && si->Config->MaxAge < window
                                 ? si->Config->MaxAge : window;
    jsStreamInfo *ui = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_UpdateStream(&ui, c->js, si->Config, NULL, &jerr);
    jsStreamInfo_Destroy(ui);
    si->Config->MaxAge = was;
    si->Config->Duplicates = dup;
    if (s != NATS_OK) {
        snprintf(err, errlen, "setting the retention of stream %s: %s", REC_CLUSTER_STREAM,
                 nats_why(s));
        return REC_EIO;
    }
    REC_INFO("cluster: stream %s keeps %s from now on", REC_CLUSTER_STREAM,
             o->retain > 0 ? "events for --retain seconds" : "every event");
    return 0;
}

static int ensure_stream(rec_cluster *c, const rec_cluster_opts *o, char *err,
                         size_t errlen) {
    uint32_t want = o->partitions;
    double until = mono_s() + OPEN_RETRY_S;
    for (;;) {
        jsStreamInfo *si = NULL;
        jsErrCode jerr = 0;
        natsStatus s = js_GetStreamInfo(&si, c->js, REC_CLUSTER_STREAM, NULL, &jerr);
        if (s == NATS_OK) {
            uint32_t have = described_partitions(si->Config->Description);
            c->replicas = (int)si->Config->Replicas;
            c->stream_last = si->State.LastSeq; /* what the node has to catch up to */
            c->stream_first = si->State.FirstSeq;
            c->retain = (double)si->Config->MaxAge / 1e9;
            if (have && o->retain_given && si->Config->MaxAge != max_age_ns(o->retain)) {
                int rc = set_retention(c, si, o, err, errlen);
                jsStreamInfo_Destroy(si);
                if (rc)
                    return rc;
                continue;
            }
            int has_cat = 0;
            for (int k = 0; k < si->Config->SubjectsLen; k++)
                has_cat |= !strcmp(si->Config->Subjects[k], CATALOG_SUBJECT);
            if (have && !has_cat) {
                /* A stream made before the catalogue went through it. */
                const char *subjects[] = {SUBJECT_PREFIX ">", CATALOG_SUBJECT};
                const char **was = si->Config->Subjects;
                int wasn = si->Config->SubjectsLen;
                si->Config->Subjects = subjects;
                si->Config->SubjectsLen = 2;
                jsStreamInfo *ui = NULL;
                s = js_UpdateStream(&ui, c->js, si->Config, NULL, &jerr);
                jsStreamInfo_Destroy(ui);
                si->Config->Subjects = was;
                si->Config->SubjectsLen = wasn;
                jsStreamInfo_Destroy(si);
                if (s != NATS_OK) {
                    snprintf(err, errlen, "adding subject %s to stream %s: %s",
                             CATALOG_SUBJECT, REC_CLUSTER_STREAM, nats_why(s));
                    return REC_EIO;
                }
                REC_INFO("cluster: stream %s takes the catalogue on %s from now on",
                         REC_CLUSTER_STREAM, CATALOG_SUBJECT);
                continue;
            }
            jsStreamInfo_Destroy(si);
            if (!have) {
                snprintf(err, errlen, "stream %s exists but was not made by recd (its "
                         "description names no partition count)", REC_CLUSTER_STREAM);
                return REC_EINVAL;
            }
            if (want && want != have) {
                snprintf(err, errlen, "--partitions %u disagrees with stream %s, made with "
                         "%u partitions (every node must use the stream's count)",
                         want, REC_CLUSTER_STREAM, have);
                return REC_EINVAL;
            }
            c->partitions = have;
            return 0;
        }
        if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
            char desc[96];
            c->partitions = want ? want : REC_CLUSTER_PARTITIONS;
            snprintf(desc, sizeof desc, "recd events; partitions=%u", c->partitions);
            const char *subjects[] = {SUBJECT_PREFIX ">", CATALOG_SUBJECT};
            jsStreamConfig sc;
            jsStreamConfig_Init(&sc);
            sc.Name = REC_CLUSTER_STREAM;
            sc.Description = desc;
            sc.Subjects = subjects;
            sc.SubjectsLen = 2;
            sc.Storage = js_FileStorage;
            sc.Replicas = c->replicas;
            sc.Duplicates = (int64_t)DUPLICATES_S * 1000000000; /* retries are dropped */
            sc.MaxAge = o->retain_given ? max_age_ns(o->retain) : 0;
            if (sc.MaxAge && sc.MaxAge < sc.Duplicates)
                sc.Duplicates = sc.MaxAge; /* JetStream's rule */
            s = js_AddStream(&si, c->js, &sc, NULL, &jerr);
            jsStreamInfo_Destroy(si);
            if (s == NATS_OK) {
                REC_INFO("cluster: made stream %s (%u partitions, %d replicas)",
                         REC_CLUSTER_STREAM, c->partitions, c->replicas);
                return 0;
            }
            /* Another node made it meanwhile: look again. */
        }
        if (!transient(s, jerr) && s != NATS_ERR && s != NATS_NOT_FOUND) {
            snprintf(err, errlen, "stream %s: %s", REC_CLUSTER_STREAM, nats_why(s));
            return REC_EIO;
        }
        if (mono_s() > until) {
            snprintf(err, errlen, "JetStream did not answer for stream %s within %.0f s: %s "
                     "(is JetStream enabled, and does the cluster have a quorum?)",
                     REC_CLUSTER_STREAM, OPEN_RETRY_S, nats_why(s));
            return REC_EIO;
        }
        sleep_s(0.25);
    }
}

/* The KV bucket `name`, made (History 1, ttl_s seconds of TTL, 0 none)
 * when missing; a forming cluster is waited for. */
static int open_bucket(rec_cluster *c, kvStore **kv, const char *name, const char *desc,
                       double ttl_s, char *err, size_t errlen) {
    double until = mono_s() + OPEN_RETRY_S;
    for (;;) {
        natsStatus s = js_KeyValue(kv, c->js, name);
        if (s == NATS_NOT_FOUND) {
            kvConfig kc;
            kvConfig_Init(&kc);
            kc.Bucket = name;
            kc.Description = desc;
            kc.History = 1;
            kc.TTL = (int64_t)(ttl_s * 1e9);
            kc.Replicas = c->replicas;
            s = js_CreateKeyValue(kv, c->js, &kc);
        }
        if (s == NATS_OK)
            return 0;
        if (mono_s() > until || !(s == NATS_TIMEOUT || s == NATS_NO_RESPONDERS || s == NATS_ERR)) {
            snprintf(err, errlen, "KV bucket %s: %s", name, nats_why(s));
            return REC_EIO;
        }
        sleep_s(0.25);
    }
}

static int ensure_bucket(rec_cluster *c, char *err, size_t errlen) {
    return open_bucket(c, &c->kv, REC_CLUSTER_BUCKET, "recd node names, each held by a lease",
                       c->lease, err, errlen);
}

/* Take the node's name: free, or held by a lease that lapsed (a node that
 * crashed). A lease renewed within the last lease seconds is watched for
 * one more lease: renewed again, the name is in use. */
static int take_name(rec_cluster *c, char *err, size_t errlen) {
    uint64_t rev = 0;
    for (int attempt = 0; attempt < 3; attempt++) {
        natsStatus s = kvStore_CreateString(&rev, c->kv, c->node, c->instance);
        if (s == NATS_OK) {
            c->lease_rev = rev;
            c->lease_renewed = mono_s();
            return 0;
        }
        kvEntry *en = NULL;
        s = kvStore_Get(&en, c->kv, c->node);
        if (s == NATS_NOT_FOUND)
            continue; /* expired meanwhile */
        if (s != NATS_OK) {
            snprintf(err, errlen, "reading the lease of node %s: %s", c->node, nats_why(s));
            return REC_EIO;
        }
        uint64_t seen = kvEntry_Revision(en);
        char holder[128];
        snprintf(holder, sizeof holder, "%s", kvEntry_ValueString(en) ? kvEntry_ValueString(en) : "?");
        kvEntry_Destroy(en);
        REC_INFO("cluster: the name %s is held by %s; waiting %.0f s to see whether it is "
                 "alive", c->node, holder, c->lease);
        sleep_s(c->lease + 1.0);
        en = NULL;
        s = kvStore_Get(&en, c->kv, c->node);
        if (s == NATS_NOT_FOUND)
            continue;
        if (s != NATS_OK) {
            snprintf(err, errlen, "reading the lease of node %s: %s", c->node, nats_why(s));
            return REC_EIO;
        }
        uint64_t now_rev = kvEntry_Revision(en);
        kvEntry_Destroy(en);
        if (now_rev != seen) {
            snprintf(err, errlen, "node name %s is in use: %s renews its lease (start "
                     "this node with another --node)", c->node, holder);
            return REC_EEXISTS;
        }
        s = kvStore_UpdateString(&rev, c->kv, c->node, c->instance, seen);
        if (s == NATS_OK) {
            REC_INFO("cluster: took over the name %s from %s, whose lease lapsed", c->node,
                     holder);
            c->lease_rev = rev;
            c->lease_renewed = mono_s();
            return 0;
        }
    }
    snprintf(err, errlen, "node name %s: the lease changes hands too often", c->node);
    return REC_EBUSY;
}

/* The node's rec_id slot: RECD_SLOTS maps slot.<k> to the name that took
 * it, for good (no TTL: a name keeps its slot across restarts and stops,
 * and two names never share one). The search starts at the name's hash;
 * a create is conditional, so two nodes starting at once cannot both take
 * a slot. */
static int take_slot(rec_cluster *c, char *err, size_t errlen) {
    kvStore *kv = NULL;
    int rc = open_bucket(c, &kv, SLOTS_BUCKET,
                         "recd rec_id slots, each held by a node name for good", 0, err, errlen);
    if (rc)
        return rc;
    natsStatus s;
    uint32_t h = (uint32_t)(rec_hash_stable(c->node, strlen(c->node)) % REC_CLUSTER_SLOTS);
    rc = 1; /* 1: still looking */
    for (uint32_t i = 0; i < REC_CLUSTER_SLOTS && rc == 1; i++) {
        uint32_t k = (h + i) % REC_CLUSTER_SLOTS;
        char key[32];
        snprintf(key, sizeof key, "slot.%u", k);
        for (int attempt = 0; attempt < 2; attempt++) {
            kvEntry *en = NULL;
            s = kvStore_Get(&en, kv, key);
            if (s == NATS_OK) {
                const char *v = kvEntry_ValueString(en);
                int mine = v && !strcmp(v, c->node);
                kvEntry_Destroy(en);
                if (mine) {
                    c->slot = k;
                    rc = 0;
                }
                break;
            }
            uint64_t rev = 0;
            if (s == NATS_NOT_FOUND && kvStore_CreateString(&rev, kv, key, c->node) == NATS_OK) {
                c->slot = k;
                rc = 0;
                break;
            }
            if (s != NATS_NOT_FOUND) {
                snprintf(err, errlen, "reading %s in %s: %s", key, SLOTS_BUCKET, nats_why(s));
                rc = REC_EIO;
                break;
            }
            /* taken meanwhile: read whose it is */
        }
    }
    kvStore_Destroy(kv);
    if (rc == 1) {
        snprintf(err, errlen, "every one of the %d rec_id slots in %s is held by another node "
                 "name (delete the names no longer used with `nats kv del %s slot.K`)",
                 REC_CLUSTER_SLOTS, SLOTS_BUCKET, SLOTS_BUCKET);
        rc = REC_EBUSY;
    }
    return rc;
}

uint32_t rec_cluster_slot(const rec_cluster *c) { return c->slot; }

int rec_cluster_open(rec_cluster **out, const rec_cluster_opts *o, char *err, size_t errlen) {
    *out = NULL;
    err[0] = 0;
    if (!o->servers || !o->servers[0]) {
        snprintf(err, errlen, "--cluster needs nats://HOST:PORT[,...]");
        return REC_EINVAL;
    }
    if (o->partitions > REC_CLUSTER_MAX_PARTITIONS) {
        snprintf(err, errlen, "--partitions must be 1..%d", REC_CLUSTER_MAX_PARTITIONS);
        return REC_EINVAL;
    }
    rec_cluster *c = calloc(1, sizeof *c);
    if (c) {
        rec_idslots_init(&c->tickets, sizeof(ticket), 1024);
        rec_idslots_init(&c->bslots, sizeof(barrier), 256);
    }
    if (!c)
        return REC_ENOMEM;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    pthread_cond_init(&c->retry_cv, NULL);
    pthread_cond_init(&c->lease_cv, NULL);
    msgpack_unpacked_init(&c->up);
    msgpack_sbuffer_init(&c->sb);
    c->lease = o->lease > 0 ? o->lease : 5.0;
    c->barrier_give_up = BARRIER_GIVE_UP_S;
#ifdef REC_FAULTS
    /* Test builds: RECD_FAULT_BARRIER_GIVE_UP=S gives a read barrier up
     * after S seconds. */
    const char *gu = getenv("RECD_FAULT_BARRIER_GIVE_UP");
    if (gu && atof(gu) > 0)
        c->barrier_give_up = atof(gu);
#endif
    snprintf(c->servers, sizeof c->servers, "%s", o->servers);
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    if (o->node && o->node[0]) {
        snprintf(c->node, sizeof c->node, "%s", o->node);
    } else {
        snprintf(c->node, sizeof c->node, "%s", host);
        for (char *p = c->node; *p; p++)
            if (!name_ok((char[]){*p, 0}))
                *p = '_';
    }
    int rc = 0;
    if (!name_ok(c->node)) {
        snprintf(err, errlen, "--node '%s': a name is 1..63 letters, digits, '-' or '_'",
                 c->node);
        rc = REC_EINVAL;
        goto fail;
    }
    snprintf(c->instance, sizeof c->instance, "%s@%s:%ld:%lld", c->node, host, (long)getpid(),
             (long long)(rec_wall() * 1e3));
    /* The list as NATS wants it: an array of URLs. */
    char list[1024];
    snprintf(list, sizeof list, "%s", o->servers);
    const char *urls[64];
    int nurls = 0;
    for (char *save = NULL, *t = strtok_r(list, ",", &save); t && nurls < 64;
         t = strtok_r(NULL, ",", &save))
        if (t[0])
            urls[nurls++] = t;
    natsOptions *no = NULL;
    natsStatus s = natsOptions_Create(&no);
    char name[96];
    snprintf(name, sizeof name, "recd %s", c->node);
    if (s == NATS_OK)
        s = natsOptions_SetServers(no, urls, nurls);
    if (s != NATS_OK) {
        snprintf(err, errlen, "--cluster %s: %s", o->servers, nats_why(s));
        natsOptions_Destroy(no);
        rc = REC_EINVAL;
        goto fail;
    }
    natsOptions_SetName(no, name);
    natsOptions_SetNoRandomize(no, true);
    natsOptions_SetTimeout(no, (int64_t)((o->connect_timeout > 0 ? o->connect_timeout : 2.0) * 1e3));
    natsOptions_SetMaxReconnect(no, -1);
    natsOptions_SetReconnectWait(no, 250);
    natsOptions_SetReconnectBufSize(no, 64 << 20);
    s = natsConnection_Connect(&c->nc, no);
    if (s == NATS_OK) {
        /* The read barriers' questions go on a connection of their own
         * that sends at once (one question is out at a time): the main
         * one buffers its publishes for throughput. */
        snprintf(name, sizeof name, "recd %s reads", c->node);
        natsOptions_SetName(no, name);
        natsOptions_SetSendAsap(no, true);
        s = natsConnection_Connect(&c->bnc, no);
    }
    natsOptions_Destroy(no);
    if (s != NATS_OK) {
        snprintf(err, errlen, "cannot reach the NATS cluster at %s: %s", o->servers,
                 nats_why(s));
        rc = REC_EIO;
        goto fail;
    }
    /* Replicas: min(3, the servers the cluster announces). */
    char **known = NULL;
    int nknown = 0;
    if (natsConnection_GetServers(c->nc, &known, &nknown) == NATS_OK) {
        for (int i = 0; i < nknown; i++)
            free(known[i]);
        free(known);
    }
    if (nknown < nurls)
        nknown = nurls;
    c->replicas = nknown >= 3 ? 3 : nknown < 1 ? 1 : nknown;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 5000;
    jo.PublishAsync.AckHandler = on_ack;
    jo.PublishAsync.AckHandlerClosure = c;
    if ((s = natsConnection_JetStream(&c->js, c->nc, &jo)) != NATS_OK) {
        snprintf(err, errlen, "JetStream: %s", nats_why(s));
        rc = REC_EIO;
        goto fail;
    }
    jsPubOptions_Init(&c->popts);
    c->popts.MaxWait = PUBLISH_WAIT_MS;
    if ((rc = ensure_stream(c, o, err, errlen)) ||
        (rc = ensure_bucket(c, err, errlen)) || (rc = take_name(c, err, errlen)) ||
        (rc = take_slot(c, err, errlen)))
        goto fail;
    rec_owners_opts oo = {.nc = c->bnc, .nodes = c->kv, .node = c->node,
                          .partitions = c->partitions, .replicas = c->replicas,
                          .lease = c->lease, .cluster = c};
    if ((rc = rec_owners_open(&c->owners, &oo, err, errlen)))
        goto fail;
    REC_INFO("cluster: node %s on %s, stream %s (%u partitions, %d replicas)", c->node,
             o->servers, REC_CLUSTER_STREAM, c->partitions, c->replicas);
    *out = c;
    return 0;
fail:
    rec_cluster_free(c);
    return rc;
}

int rec_cluster_fenced(const rec_cluster *c) {
    return c && atomic_load(&((rec_cluster *)c)->fenced);
}

void rec_cluster_free(rec_cluster *c) {
    if (!c)
        return;
    rec_cluster_stop(c);
    if (c->js)
        js_PublishAsyncComplete(c->js, &(jsPubOptions){.MaxWait = 2000});
    /* The name is free at once for the next start; unless another
     * process holds it now. */
    if (c->kv && c->lease_rev && !atomic_load(&c->fenced)) {
        kvEntry *en = NULL;
        if (kvStore_Get(&en, c->kv, c->node) == NATS_OK && kvEntry_ValueString(en) &&
            !strcmp(kvEntry_ValueString(en), c->instance))
            kvStore_Delete(c->kv, c->node);
        kvEntry_Destroy(en);
    }
    for (retry *r = c->retry_head, *next; r; r = next) {
        next = r->next;
        natsMsg_Destroy(r->msg);
        free(r);
    }
    rec_owners_detach(c->owners);
    natsSubscription_Destroy(c->bsub);
    natsSubscription_Destroy(c->lsub);
    for (size_t i = 0; i < c->nlq; i++)
        natsMsg_Destroy(c->lq[i]);
    free(c->lq);
    kvStore_Destroy(c->kv);
    jsCtx_Destroy(c->js);
    if (c->bnc) {
        natsConnection_Close(c->bnc);
        natsConnection_Destroy(c->bnc);
    }
    if (c->nc) {
        natsConnection_Close(c->nc);
        natsConnection_Destroy(c->nc);
    }
    /* NATS's threads (which call on_ack) are over before c goes. */
    nats_CloseAndWait(5000);
    rec_owners_free(c->owners);
    rec_idslots_free(&c->tickets);
    rec_idslots_free(&c->bslots);
    msgpack_unpacked_destroy(&c->up);
    msgpack_sbuffer_destroy(&c->sb);
    pthread_cond_destroy(&c->cv);
    pthread_cond_destroy(&c->retry_cv);
    pthread_cond_destroy(&c->lease_cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}
