/* owners.c - who owns which partition, and reads forwarded to the owner.
 *
 * The members' view (peers, holders, routes) is guarded by mu and written
 * by the watch thread; the loop thread reads a partition's route under mu
 * when it decides where a read runs. Forwards live in a table indexed by
 * id & (cap - 1) (as the cluster's tickets); NATS's threads only mark an
 * entry answered, under mu; entries are made, grown and freed on the loop
 * thread alone.
 */
#include "owners.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "err.h"
#include "hash.h"
#include "idmap.h"
#include "idslots.h"
#include "input.h"
#include "log.h"
#include "value.h"

#define MAX_PEERS 256
#define FORWARD_WAIT_S 1.0   /* an owner that has not answered by then: served here */
#define CLAIM_AGAIN_S 1.0    /* a claim that lost, tried again after this */
#define WATCH_MS 100         /* the watch thread's wait for an entry */
#define KV_WAIT_MS 1000      /* a claim (a KV write) not answered by then: later */
#define BATCH_BYTES (256u << 10) /* an outbox this full is sent at once */
#define REPLY_BYTES (512u << 10) /* answers this large go in a message of their own */

typedef struct peer {
    char name[64];
    double seen;   /* mono seconds of its last renewal */
    int gone;      /* its lease was deleted (a clean stop) */
} peer;

enum { F_QUEUED = 1, F_SENT, F_ANSWERED, F_FALLBACK, F_BARRIER };

typedef struct fwd {
    uint64_t id;       /* 0: free slot */
    int state;
    double deadline;   /* mono seconds: F_QUEUED, F_SENT fall back after it */
    uint64_t barrier;  /* F_BARRIER: the read barrier of the local run */
    rec_buf payload;   /* [method, params]: sent, and run here on a fallback */
    rec_buf answer;    /* the owner's answer (F_ANSWERED) */
} fwd;

/* The forwards to one owner made in this turn of the loop: sent together,
 * one message, when the turn ends (or when it grows past BATCH_BYTES).
 * Loop thread. */
typedef struct outbox {
    char peer[64];
    rec_buf body;      /* the items [id, [method, params]], back to back */
    uint64_t *ids;
    uint32_t n, cap;
} outbox;

/* A batch sent, until each of its forwards was answered or its deadline
 * passed (mu). */
typedef struct batch {
    uint64_t id;
    double deadline;
    uint64_t *ids;
    uint32_t n, left;
    struct batch *next;
} batch;

/* A message of requests another node forwarded here, waiting for its read
 * barrier. */
typedef struct served {
    natsMsg *msg;
    uint64_t barrier;
    int rc;            /* the barrier could not be made: answered with it */
    struct served *next;
} served;

struct rec_owners {
    natsConnection *nc;
    jsCtx *js;             /* its own: short waits (the watch thread must
                              not stop draining for long) */
    kvStore *nodes;
    kvStore *parts;
    char node[64];
    uint32_t partitions;
    int replicas;
    double lease;
    rec_cluster *cluster;

    pthread_mutex_t mu;
    /* the members' view (mu) */
    peer peers[MAX_PEERS];
    int npeers;
    int self;
    int16_t *holder;       /* per partition: the peer RECD_PARTS names, or -1 */
    uint64_t *hrev;        /* ... the revision of that entry */
    int16_t *want;         /* the rendezvous owner among the live peers */
    int16_t *route;        /* who serves: the holder while live, else want */
    unsigned char live[MAX_PEERS];
    uint64_t epoch;        /* the highest revision of RECD_PARTS seen */
    int ready;             /* both watches delivered their initial values */
    int mapped;            /* want was computed */
    int dirty;             /* an entry came since the last recompute */
    int stop;
    /* the watch thread's own */
    double *claimed_at;
    pthread_t th;
    int th_started;
    /* forwards (mu) */
    rec_idslots fwds;
    size_t cap;
    uint64_t next_id;
    size_t unsettled;
    uint64_t forwarded, served_n, fallbacks;
    /* requests forwarded here: come in (mu), wait for a barrier (loop) */
    served *in_head, *in_tail;
    served *waiting;
    batch *batches;        /* sent, not all answered (mu) */
    uint64_t next_batch;
    char inbox[96];
    natsSubscription *rsub, *asub;
    /* the outboxes of this turn (loop thread) */
    outbox *outs;
    int nouts, queued;
    uv_check_t check;      /* sends them at the turn's end */
    uv_idle_t idle;        /* ... without the poll sleeping before */

    /* loop thread */
    uv_async_t async;
    int started, stopped;
    int detached;          /* rec_owners_detach ran */
    rec_cluster_serve_fn serve;
    rec_cluster_progress_fn progress;
    void *ud;
    msgpack_unpacked up, bup;
    rec_buf res, tmp, item, ans;
};

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int buf_write(void *data, const char *p, size_t n) {
    return rec_buf_append(data, p, n) ? -1 : 0;
}

/* ---- members and owners ---------------------------------------------------- */

/* The peer named name (added when new), or -1 (the table is full). mu. */
static int peer_index(rec_owners *w, const char *name) {
    for (int i = 0; i < w->npeers; i++)
        if (!strcmp(w->peers[i].name, name))
            return i;
    if (w->npeers == MAX_PEERS || strlen(name) >= sizeof w->peers[0].name)
        return -1;
    peer *p = &w->peers[w->npeers];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->gone = 1;
    return w->npeers++;
}

/* The rendezvous score of partition p on the node named name. */
static uint64_t score(uint32_t p, const char *name) {
    unsigned char b[4] = {(unsigned char)p, (unsigned char)(p >> 8), (unsigned char)(p >> 16),
                          (unsigned char)(p >> 24)};
    uint64_t h = rec_hash_stable_add(REC_HASH_STABLE_INIT, name, strlen(name));
    return rec_hash_stable_end(rec_hash_stable_add(h, b, sizeof b));
}

/* A renewal (or deletion) of a lease in RECD_NODES. */
static void node_entry(rec_owners *w, kvEntry *e) {
    const char *key = kvEntry_Key(e);
    if (!key)
        return;
    double age = 0;
    int64_t created = kvEntry_Created(e); /* nanoseconds, UTC */
    if (created > 0) {
        age = rec_wall() - (double)created / 1e9;
        if (age < 0)
            age = 0;
    }
    pthread_mutex_lock(&w->mu);
    int i = peer_index(w, key);
    if (i >= 0) {
        if (kvEntry_Operation(e) == kvOp_Put) {
            w->peers[i].seen = mono_s() - age;
            w->peers[i].gone = 0;
        } else {
            w->peers[i].gone = 1;
        }
        w->dirty = 1;
    }
    pthread_mutex_unlock(&w->mu);
}

/* A claim (or deletion) in RECD_PARTS: key p.<n>. */
static void part_entry(rec_owners *w, kvEntry *e) {
    const char *key = kvEntry_Key(e);
    if (!key || strncmp(key, "p.", 2) != 0)
        return;
    char *end = NULL;
    unsigned long p = strtoul(key + 2, &end, 10);
    if (!end || *end || p >= w->partitions)
        return;
    const char *v = kvEntry_ValueString(e);
    pthread_mutex_lock(&w->mu);
    uint64_t rev = kvEntry_Revision(e);
    if (rev >= w->hrev[p]) {
        w->holder[p] = kvEntry_Operation(e) == kvOp_Put && v ? (int16_t)peer_index(w, v) : -1;
        w->hrev[p] = rev;
    }
    if (rev > w->epoch)
        w->epoch = rev;
    w->dirty = 1;
    pthread_mutex_unlock(&w->mu);
}

/* Who is live now, the map, and who serves each partition. mu. */
static void recompute(rec_owners *w, double now) {
    unsigned char live[MAX_PEERS];
    int changed = w->dirty;
    for (int i = 0; i < w->npeers; i++) {
        live[i] = i == w->self ||
                  (!w->peers[i].gone && now - w->peers[i].seen <= w->lease);
        changed |= live[i] != w->live[i];
    }
    if (!changed)
        return;
    int members = !w->mapped || memcmp(live, w->live, (size_t)w->npeers) != 0;
    w->mapped = 1;
    memcpy(w->live, live, (size_t)w->npeers);
    w->dirty = 0;
    for (uint32_t p = 0; p < w->partitions; p++) {
        if (members) {
            int best = -1;
            uint64_t bs = 0;
            for (int i = 0; i < w->npeers; i++) {
                if (!live[i])
                    continue;
                uint64_t s = score(p, w->peers[i].name);
                if (best < 0 || s > bs || (s == bs && strcmp(w->peers[i].name,
                                                             w->peers[best].name) < 0)) {
                    best = i;
                    bs = s;
                }
            }
            w->want[p] = (int16_t)best;
        }
        int h = w->holder[p];
        w->route[p] = h >= 0 && live[h] ? (int16_t)h : w->want[p];
    }
}

/* Claim in RECD_PARTS the partitions the map gives this node and the
 * bucket does not (the watch thread). */
static void claim(rec_owners *w, double now) {
    uint32_t took = 0;
    for (uint32_t p = 0; p < w->partitions; p++) {
        pthread_mutex_lock(&w->mu);
        if (w->stop) {
            pthread_mutex_unlock(&w->mu);
            break;
        }
        int mine = w->want[p] == w->self && w->holder[p] != w->self &&
                   now - w->claimed_at[p] >= CLAIM_AGAIN_S;
        uint64_t last = w->hrev[p];
        pthread_mutex_unlock(&w->mu);
        if (!mine)
            continue;
        w->claimed_at[p] = now;
        char key[32];
        snprintf(key, sizeof key, "p.%u", p);
        uint64_t rev = 0;
        int len = (int)strlen(w->node);
        natsStatus s = last ? kvStore_Update(&rev, w->parts, key, w->node, len, last)
                            : kvStore_Create(&rev, w->parts, key, w->node, len);
        if (s == NATS_TIMEOUT || s == NATS_NO_RESPONDERS || s == NATS_CONNECTION_CLOSED)
            break; /* the bucket cannot be written now: the next round */
        if (s != NATS_OK)
            continue; /* another claim came first: the watch tells */
        pthread_mutex_lock(&w->mu);
        if (rev > w->hrev[p]) {
            w->holder[p] = (int16_t)w->self;
            w->hrev[p] = rev;
        }
        if (rev > w->epoch)
            w->epoch = rev;
        w->dirty = 1;
        pthread_mutex_unlock(&w->mu);
        took++;
    }
    if (took) {
        pthread_mutex_lock(&w->mu);
        recompute(w, mono_s());
        uint64_t epoch = w->epoch;
        pthread_mutex_unlock(&w->mu);
        REC_INFO("cluster: node %s took %u partitions (owners' epoch %" PRIu64 ")", w->node,
                 took, epoch);
    }
}

/* A KV watch, and when it last said something. */
typedef struct watch {
    kvWatcher *w;
    int ready;       /* its initial values are in */
    double made, last; /* mono seconds */
} watch;

/* Entries of one watch, the first waited for up to ms: 0, or -1 when the
 * watch failed (made again). */
static int drain(rec_owners *w, watch *wt, void (*fn)(rec_owners *, kvEntry *), int64_t ms) {
    kvEntry *e = NULL;
    natsStatus s;
    while ((s = kvWatcher_Next(&e, wt->w, ms)) == NATS_OK) {
        wt->last = mono_s();
        if (e) {
            fn(w, e);
            kvEntry_Destroy(e);
            e = NULL;
        } else {
            wt->ready = 1;
        }
        ms = 1;
        pthread_mutex_lock(&w->mu);
        int stop = w->stop;
        pthread_mutex_unlock(&w->mu);
        if (stop)
            break;
    }
    return s == NATS_OK || s == NATS_TIMEOUT ? 0 : -1;
}

static void unwatch(watch *wt) {
    kvWatcher_Destroy(wt->w);
    memset(wt, 0, sizeof *wt);
}

static void watch_make(watch *wt, kvStore *kv) {
    memset(wt, 0, sizeof *wt);
    if (kvStore_WatchAll(&wt->w, kv, NULL) != NATS_OK)
        wt->w = NULL;
    wt->made = wt->last = mono_s();
}

/* RECD_PARTS, made when missing (the watch thread, until it is there:
 * the node serves its reads itself meanwhile). */
static int open_parts(rec_owners *w) {
    natsStatus s = js_KeyValue(&w->parts, w->js, REC_OWNERS_BUCKET);
    if (s == NATS_NOT_FOUND) {
        kvConfig kc;
        kvConfig_Init(&kc);
        kc.Bucket = REC_OWNERS_BUCKET;
        kc.Description = "recd partition owners: p.<n> = the node that serves it";
        kc.History = 1;
        kc.Replicas = w->replicas;
        s = js_CreateKeyValue(&w->parts, w->js, &kc);
        if (s != NATS_OK) /* another node made it meanwhile */
            s = js_KeyValue(&w->parts, w->js, REC_OWNERS_BUCKET);
    }
    if (s != NATS_OK) {
        w->parts = NULL;
        return -1;
    }
    return 0;
}

static void *watch_main(void *arg) {
    rec_owners *w = arg;
    watch wn = {0}, wp = {0};
    int failures = 0;
    /* A watch made while its stream has no leader (a bucket just made, a
     * server gone) can stay silent until its consumer's heartbeat resets
     * it, seconds later: it is made again sooner. The members' watch
     * hears this node's own renewals every lease/5 seconds. */
    double stall = 2 * w->lease / 5 + 0.5;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        int stop = w->stop;
        pthread_mutex_unlock(&w->mu);
        if (stop)
            break;
        if (!w->parts && open_parts(w)) {
            if (failures++ == 0)
                REC_WARN("cluster: KV bucket %s cannot be reached yet; this node serves "
                         "every read itself meanwhile", REC_OWNERS_BUCKET);
            struct timespec ts = {0, 250 * 1000000L};
            nanosleep(&ts, NULL);
            continue;
        }
        if (!wn.w)
            watch_make(&wn, w->nodes);
        if (!wp.w)
            watch_make(&wp, w->parts);
        if (!wn.w || !wp.w) {
            struct timespec ts = {0, WATCH_MS * 1000000L};
            nanosleep(&ts, NULL);
            continue;
        }
        if (drain(w, &wn, node_entry, WATCH_MS))
            unwatch(&wn);
        if (drain(w, &wp, part_entry, 1))
            unwatch(&wp);
        double now = mono_s();
        if (wn.w && now - wn.last > stall) {
            REC_DEBUG("cluster: the watch of %s went silent; watching again", REC_CLUSTER_BUCKET);
            unwatch(&wn);
            unwatch(&wp);
            continue;
        }
        if (wp.w && !wp.ready && now - wp.made > stall) {
            REC_DEBUG("cluster: the watch of %s went silent; watching again", REC_OWNERS_BUCKET);
            unwatch(&wp);
            continue;
        }
        pthread_mutex_lock(&w->mu);
        if (!w->ready && wn.ready && wp.ready) {
            w->ready = 1;
            w->dirty = 1;
        }
        int ready = w->ready;
        if (ready)
            recompute(w, now);
        pthread_mutex_unlock(&w->mu);
        if (ready)
            claim(w, now);
    }
    unwatch(&wn);
    unwatch(&wp);
    return NULL;
}

/* ---- forwards (this node asks) ------------------------------------------------ */

static fwd *fwd_find(rec_owners *w, uint64_t id) {
    return rec_idslots_find(&w->fwds, id);
}

/* A new entry (mu held), or NULL. */
static fwd *fwd_new(rec_owners *w) {
    fwd *f = rec_idslots_take(&w->fwds, ++w->next_id);
    if (f)
        w->unsettled++;
    return f;
}

/* mu held. */
static void fwd_free(rec_owners *w, fwd *f) {
    rec_buf_free(&f->payload);
    rec_buf_free(&f->answer);
    f->id = 0;
    w->unsettled--;
}

/* mu held: the batch id, unlinked, or NULL. */
static batch *batch_take(rec_owners *w, uint64_t id) {
    for (batch **pp = &w->batches, *b; (b = *pp); pp = &b->next)
        if (b->id == id) {
            *pp = b->next;
            return b;
        }
    return NULL;
}

static void batch_free(batch *b) {
    free(b->ids);
    free(b);
}

/* On a NATS thread: answers of a batch (the owner sends them in one
 * message, or several when large), or the server's word that nobody
 * listens on the owner's subject: the batch's forwards are served here. */
static void on_answer(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *ud) {
    rec_owners *w = ud;
    (void)nc;
    (void)sub;
    const char *subj = natsMsg_GetSubject(msg);
    size_t il = strlen(w->inbox);
    uint64_t id = subj && !strncmp(subj, w->inbox, il) && subj[il] == '.'
                      ? strtoull(subj + il + 1, NULL, 10) : 0;
    int len = natsMsg_GetDataLength(msg);
    int nobody = natsMsg_IsNoResponders(msg) || len <= 0;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    const msgpack_object *items = NULL;
    uint32_t n = 0;
    if (!nobody && msgpack_unpack_next(&up, natsMsg_GetData(msg), (size_t)len, NULL) ==
                       MSGPACK_UNPACK_SUCCESS &&
        up.data.type == MSGPACK_OBJECT_ARRAY) {
        items = up.data.via.array.ptr;
        n = up.data.via.array.size;
    }
    pthread_mutex_lock(&w->mu);
    batch *b = batch_take(w, id);
    if (b && nobody) {
        for (uint32_t i = 0; i < b->n; i++) {
            fwd *f = fwd_find(w, b->ids[i]);
            if (f && f->state == F_SENT)
                f->state = F_FALLBACK;
        }
        b->left = 0;
    }
    for (uint32_t i = 0; b && i < n; i++) {
        const msgpack_object *it = &items[i];
        if (it->type != MSGPACK_OBJECT_ARRAY || it->via.array.size != 2 ||
            it->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
            it->via.array.ptr[1].type != MSGPACK_OBJECT_BIN)
            continue;
        fwd *f = fwd_find(w, it->via.array.ptr[0].via.u64);
        if (!f || f->state != F_SENT)
            continue;
        const msgpack_object_bin *a = &it->via.array.ptr[1].via.bin;
        /* Short of memory: served here after the deadline. */
        if (rec_buf_set(&f->answer, a->ptr, a->size) == 0) {
            f->state = F_ANSWERED;
            if (b->left)
                b->left--;
        }
    }
    if (b) {
        if (b->left) { /* more to come */
            b->next = w->batches;
            w->batches = b;
        } else {
            batch_free(b);
        }
        if (w->started && !w->stopped)
            uv_async_send(&w->async);
    }
    pthread_mutex_unlock(&w->mu);
    msgpack_unpacked_destroy(&up);
    natsMsg_Destroy(msg);
}

/* Send what o holds as one message (loop thread); its forwards fall back
 * when it cannot go. */
static void outbox_send(rec_owners *w, outbox *o) {
    if (!o->n)
        return;
    double now = mono_s();
    batch *b = calloc(1, sizeof *b);
    uint64_t *ids = b ? malloc(o->n * sizeof *ids) : NULL;
    rec_buf_clear(&w->tmp);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &w->tmp, buf_write);
    int bad = !ids || msgpack_pack_array(&pk, o->n) ||
              rec_buf_append(&w->tmp, o->body.data, o->body.len);
    pthread_mutex_lock(&w->mu);
    if (!bad) {
        memcpy(ids, o->ids, o->n * sizeof *ids);
        *b = (batch){.id = ++w->next_batch, .deadline = now + FORWARD_WAIT_S, .ids = ids,
                     .n = o->n, .left = o->n, .next = w->batches};
        w->batches = b;
    }
    for (uint32_t i = 0; i < o->n; i++) {
        fwd *f = fwd_find(w, o->ids[i]);
        if (f && f->state == F_QUEUED)
            f->state = bad ? F_FALLBACK : F_SENT;
    }
    uint64_t bid = bad ? 0 : b->id;
    pthread_mutex_unlock(&w->mu);
    if (bad) {
        free(ids);
        free(b);
    } else {
        char subj[sizeof REC_OWNERS_SUBJECT + 64], reply[128];
        snprintf(subj, sizeof subj, REC_OWNERS_SUBJECT "%s", o->peer);
        snprintf(reply, sizeof reply, "%s.%" PRIu64, w->inbox, bid);
        /* Sent at once on this connection, without waiting for anything. */
        if (natsConnection_PublishRequest(w->nc, subj, reply, w->tmp.data,
                                          (int)w->tmp.len) != NATS_OK) {
            pthread_mutex_lock(&w->mu);
            b = batch_take(w, bid);
            for (uint32_t i = 0; b && i < b->n; i++) {
                fwd *f = fwd_find(w, b->ids[i]);
                if (f && f->state == F_SENT)
                    f->state = F_FALLBACK;
            }
            pthread_mutex_unlock(&w->mu);
            if (b)
                batch_free(b);
        }
    }
    if (w->tmp.cap > (1u << 20))
        rec_buf_free(&w->tmp);
    rec_buf_clear(&o->body);
    o->n = 0;
}

/* The turn of the loop ends: send the outboxes; forget the batches whose
 * deadline passed long ago (their forwards were served here). */
static void on_check(uv_check_t *h) {
    rec_owners *w = h->data;
    if (!w->queued)
        return;
    for (int i = 0; i < w->nouts; i++)
        outbox_send(w, &w->outs[i]);
    w->queued = 0;
    uv_idle_stop(&w->idle);
    double now = mono_s();
    pthread_mutex_lock(&w->mu);
    for (batch **pp = &w->batches, *b; (b = *pp);) {
        if (now - b->deadline > 2 * FORWARD_WAIT_S) {
            *pp = b->next;
            batch_free(b);
        } else {
            pp = &b->next;
        }
    }
    pthread_mutex_unlock(&w->mu);
}

static void on_idle(uv_idle_t *h) { (void)h; }

/* The outbox of the peer named name (loop thread), or NULL. */
static outbox *outbox_for(rec_owners *w, const char *name) {
    for (int i = 0; i < w->nouts; i++)
        if (!strcmp(w->outs[i].peer, name))
            return &w->outs[i];
    outbox *no = realloc(w->outs, (size_t)(w->nouts + 1) * sizeof *no);
    if (!no)
        return NULL;
    w->outs = no;
    outbox *o = &no[w->nouts++];
    memset(o, 0, sizeof *o);
    snprintf(o->peer, sizeof o->peer, "%s", name);
    return o;
}

int rec_owners_forward(rec_owners *w, const msgpack_object *user, const char *method,
                       const msgpack_object *params, uint64_t *id) {
    *id = 0;
    if (!w->started || w->stopped)
        return 0;
    char key[REC_ID_MAX], why[256];
    rec_field fl;
    rec_value_input(user, &fl);
    int kl = rec_input_id(&fl, "user", key, why, sizeof why);
    if (kl < 0)
        return 0; /* served here: the dispatch says what is wrong */
    uint32_t p = rec_cluster_partition(key, (size_t)kl, w->partitions);
    char to[64];
    pthread_mutex_lock(&w->mu);
    int r = w->ready ? w->route[p] : -1;
    if (r < 0 || r == w->self) {
        pthread_mutex_unlock(&w->mu);
        return 0;
    }
    snprintf(to, sizeof to, "%s", w->peers[r].name);
    fwd *f = fwd_new(w);
    if (!f) {
        pthread_mutex_unlock(&w->mu);
        return REC_ENOMEM;
    }
    f->state = F_QUEUED;
    f->deadline = mono_s() + FORWARD_WAIT_S;
    uint64_t fid = f->id;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &f->payload, buf_write);
    int rc = msgpack_pack_array(&pk, 2) || rec_value_pack_str(&pk, method) ||
             msgpack_pack_object(&pk, *params);
    if (rc) {
        fwd_free(w, f);
        pthread_mutex_unlock(&w->mu);
        return REC_ENOMEM;
    }
    pthread_mutex_unlock(&w->mu);
    /* f stays: only this thread frees or moves entries. */
    outbox *o = outbox_for(w, to);
    if (o && o->n == o->cap) {
        uint32_t cap = o->cap ? o->cap * 2 : 64;
        uint64_t *ni = realloc(o->ids, cap * sizeof *ni);
        if (ni) {
            o->ids = ni;
            o->cap = cap;
        }
    }
    if (o)
        msgpack_packer_init(&pk, &o->body, buf_write);
    size_t mark = o ? o->body.len : 0;
    if (!o || o->n == o->cap || msgpack_pack_array(&pk, 2) || msgpack_pack_uint64(&pk, fid) ||
        rec_buf_append(&o->body, f->payload.data, f->payload.len)) {
        if (o)
            o->body.len = mark;
        pthread_mutex_lock(&w->mu);
        f->state = F_FALLBACK; /* served here */
        pthread_mutex_unlock(&w->mu);
    } else {
        o->ids[o->n++] = fid;
        if (o->body.len >= BATCH_BYTES) {
            outbox_send(w, o);
        } else if (!w->queued) {
            w->queued = 1;
            uv_idle_start(&w->idle, on_idle);
        }
    }
    *id = fid;
    return 0;
}

/* The owner's answer: its code, then the result (0) or the message. */
static int parse_answer(rec_owners *w, const rec_buf *a, rec_buf *out, char *err,
                        size_t errlen) {
    size_t off = 0;
    if (msgpack_unpack_next(&w->up, a->data, a->len, &off) != MSGPACK_UNPACK_SUCCESS)
        goto bad;
    int64_t rc;
    if (w->up.data.type == MSGPACK_OBJECT_POSITIVE_INTEGER && w->up.data.via.u64 == 0)
        rc = 0;
    else if (w->up.data.type == MSGPACK_OBJECT_NEGATIVE_INTEGER &&
             w->up.data.via.i64 > REC__ERR_BASE && w->up.data.via.i64 < REC__ERR_END)
        rc = w->up.data.via.i64;
    else
        goto bad;
    if (rc == 0)
        return rec_buf_append(out, a->data + off, a->len - off) ? REC_ENOMEM : 0;
    if (msgpack_unpack_next(&w->up, a->data, a->len, &off) != MSGPACK_UNPACK_SUCCESS ||
        w->up.data.type != MSGPACK_OBJECT_STR)
        goto bad;
    snprintf(err, errlen, "%.*s", (int)w->up.data.via.str.size, w->up.data.via.str.ptr);
    return (int)rc;
bad:
    snprintf(err, errlen, "a malformed answer from the partition's owner");
    return REC_EIO;
}

/* Run [method, params] here: rc, the result in out or the message in
 * err. */
static int serve_here(rec_owners *w, const char *data, size_t len, rec_buf *out, char *err,
                      size_t errlen) {
    if (msgpack_unpack_next(&w->up, data, len, NULL) != MSGPACK_UNPACK_SUCCESS ||
        w->up.data.type != MSGPACK_OBJECT_ARRAY || w->up.data.via.array.size != 2 ||
        w->up.data.via.array.ptr[0].type != MSGPACK_OBJECT_STR ||
        w->up.data.via.array.ptr[1].type != MSGPACK_OBJECT_ARRAY) {
        snprintf(err, errlen, "a malformed forwarded request");
        return REC_EINVAL;
    }
    const msgpack_object *m = &w->up.data.via.array.ptr[0];
    int rc = w->serve(w->ud, m->via.str.ptr, m->via.str.size, &w->up.data.via.array.ptr[1],
                      out, err, errlen);
    if (rc > 0) { /* an answer for later: not of a read */
        snprintf(err, errlen, "the method answers later: not served for another node");
        rc = REC_EINVAL;
    }
    return rc;
}

int rec_owners_take(rec_owners *w, uint64_t id, rec_buf *out, char *err, size_t errlen) {
    pthread_mutex_lock(&w->mu);
    fwd *f = fwd_find(w, id);
    if (!f) {
        pthread_mutex_unlock(&w->mu);
        snprintf(err, errlen, "no such forward");
        return REC_ENOTFOUND;
    }
    if ((f->state == F_SENT || f->state == F_QUEUED) && mono_s() > f->deadline)
        f->state = F_FALLBACK;
    int state = f->state;
    pthread_mutex_unlock(&w->mu);
    /* From here only this thread touches f. */
    int rc;
    switch (state) {
    case F_QUEUED:
    case F_SENT:
        return REC_PENDING;
    case F_ANSWERED:
        rc = parse_answer(w, &f->answer, out, err, errlen);
        pthread_mutex_lock(&w->mu);
        w->forwarded++;
        fwd_free(w, f);
        pthread_mutex_unlock(&w->mu);
        return rc;
    case F_FALLBACK: {
        /* Served here, as any read: after a read barrier. */
        uint64_t b = 0;
        rc = rec_cluster_barrier(w->cluster, &b, err, errlen);
        pthread_mutex_lock(&w->mu);
        w->fallbacks++;
        f->barrier = b;
        f->state = F_BARRIER;
        pthread_mutex_unlock(&w->mu);
        if (rc)
            goto done;
    }
        /* fall through */
    case F_BARRIER:
        rc = rec_cluster_barrier_check(w->cluster, f->barrier, err, errlen);
        if (rc == REC_PENDING)
            return rc;
        if (rc == 0)
            rc = serve_here(w, f->payload.data, f->payload.len, out, err, errlen);
        goto done;
    default:
        snprintf(err, errlen, "no such forward");
        return REC_ENOTFOUND;
    }
done:
    pthread_mutex_lock(&w->mu);
    fwd_free(w, f);
    pthread_mutex_unlock(&w->mu);
    return rc;
}

void rec_owners_forget(rec_owners *w, uint64_t id) {
    pthread_mutex_lock(&w->mu);
    fwd *f = fwd_find(w, id);
    uint64_t b = f ? f->barrier : 0;
    if (f)
        fwd_free(w, f);
    pthread_mutex_unlock(&w->mu);
    if (b)
        rec_cluster_barrier_forget(w->cluster, b);
}

size_t rec_owners_outstanding(rec_owners *w) {
    pthread_mutex_lock(&w->mu);
    size_t n = w->unsettled;
    pthread_mutex_unlock(&w->mu);
    return n;
}

/* ---- requests forwarded here ------------------------------------------------- */

/* On a NATS thread: a read another node sends its owner. */
static void on_request(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *ud) {
    rec_owners *w = ud;
    (void)nc;
    (void)sub;
    served *r = calloc(1, sizeof *r);
    if (!r) {
        natsMsg_Destroy(msg); /* unanswered: the sender serves it itself */
        return;
    }
    r->msg = msg;
    pthread_mutex_lock(&w->mu);
    if (w->in_tail)
        w->in_tail->next = r;
    else
        w->in_head = r;
    w->in_tail = r;
    if (w->started && !w->stopped)
        uv_async_send(&w->async);
    pthread_mutex_unlock(&w->mu);
}

/* Send the k answers w->tmp holds to reply, as one message. */
static void send_answers(rec_owners *w, const char *reply, uint32_t k) {
    rec_buf_clear(&w->ans);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &w->ans, buf_write);
    if (!msgpack_pack_array(&pk, k) && !rec_buf_append(&w->ans, w->tmp.data, w->tmp.len))
        natsConnection_Publish(w->nc, reply, w->ans.data, (int)w->ans.len);
    rec_buf_clear(&w->tmp);
}

/* Serve the requests of r, a message another node forwarded (rc: its read
 * barrier's outcome, 0 passed), through the same dispatch as a local call,
 * and answer each: items [id, bin(code, then the result or the message)],
 * in messages of about REPLY_BYTES at most. A request that cannot be read
 * is not answered: its sender serves it itself after its deadline.
 * Returns the requests served. */
static uint32_t serve_batch(rec_owners *w, natsMsg *msg, int brc, const char *berr) {
    const char *reply = natsMsg_GetReply(msg);
    if (!reply || !reply[0] ||
        msgpack_unpack_next(&w->bup, natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg),
                            NULL) != MSGPACK_UNPACK_SUCCESS ||
        w->bup.data.type != MSGPACK_OBJECT_ARRAY)
        return 0;
    const msgpack_object *items = w->bup.data.via.array.ptr;
    uint32_t n = w->bup.data.via.array.size, k = 0, done = 0;
    char err[512];
    msgpack_packer pk;
    rec_buf_clear(&w->tmp);
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *it = &items[i], *rq;
        if (it->type != MSGPACK_OBJECT_ARRAY || it->via.array.size != 2 ||
            it->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            continue;
        rq = &it->via.array.ptr[1];
        int rc = brc;
        rec_buf_clear(&w->res);
        if (rc) {
            snprintf(err, sizeof err, "%s", berr);
        } else if (rq->type != MSGPACK_OBJECT_ARRAY || rq->via.array.size != 2 ||
                   rq->via.array.ptr[0].type != MSGPACK_OBJECT_STR ||
                   rq->via.array.ptr[1].type != MSGPACK_OBJECT_ARRAY) {
            snprintf(err, sizeof err, "a malformed forwarded request");
            rc = REC_EINVAL;
        } else {
            const msgpack_object *m = &rq->via.array.ptr[0];
            rc = w->serve(w->ud, m->via.str.ptr, m->via.str.size, &rq->via.array.ptr[1],
                          &w->res, err, sizeof err);
            if (rc > 0) { /* an answer for later: not of a read */
                snprintf(err, sizeof err, "the method answers later: not served for "
                         "another node");
                rc = REC_EINVAL;
            }
        }
        done++;
        rec_buf_clear(&w->item);
        msgpack_packer_init(&pk, &w->item, buf_write);
        int bad = msgpack_pack_int(&pk, rc) ||
                  (rc == 0 ? rec_buf_append(&w->item, w->res.data, w->res.len)
                           : rec_value_pack_str(&pk, err));
        msgpack_packer_init(&pk, &w->tmp, buf_write);
        bad = bad || msgpack_pack_array(&pk, 2) ||
              msgpack_pack_uint64(&pk, it->via.array.ptr[0].via.u64) ||
              msgpack_pack_bin(&pk, w->item.len) ||
              rec_buf_append(&w->tmp, w->item.data, w->item.len);
        if (bad) /* short of memory: the sender serves it itself */
            continue;
        if (++k && w->tmp.len >= REPLY_BYTES) {
            send_answers(w, reply, k);
            k = 0;
        }
    }
    if (k)
        send_answers(w, reply, k);
    rec_buf *bufs[] = {&w->res, &w->tmp, &w->item, &w->ans};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) /* after a large one */
        if (bufs[i]->cap > (1u << 20))
            rec_buf_free(bufs[i]);
    return done;
}

void rec_owners_poll(rec_owners *w) {
    if (!w || !w->started || w->stopped)
        return;
    pthread_mutex_lock(&w->mu);
    served *in = w->in_head;
    w->in_head = w->in_tail = NULL;
    pthread_mutex_unlock(&w->mu);
    char err[512];
    /* The barrier is asked now: after the request came to the node that
     * forwarded it, so the read sees what was acknowledged before. */
    while (in) {
        served *next = in->next;
        in->rc = rec_cluster_barrier(w->cluster, &in->barrier, err, sizeof err);
        in->next = w->waiting;
        w->waiting = in;
        in = next;
    }
    for (served **pp = &w->waiting, *r; (r = *pp);) {
        int rc = r->rc ? r->rc : rec_cluster_barrier_check(w->cluster, r->barrier, err,
                                                              sizeof err);
        if (rc == REC_PENDING) {
            pp = &r->next;
            continue;
        }
        *pp = r->next;
        uint32_t done = serve_batch(w, r->msg, rc, err);
        natsMsg_Destroy(r->msg);
        free(r);
        pthread_mutex_lock(&w->mu);
        w->served_n += done;
        pthread_mutex_unlock(&w->mu);
    }
}

static void on_async(uv_async_t *h) {
    rec_owners *w = h->data;
    rec_owners_poll(w);
    w->progress(w->ud);
}

/* ---- sys.info ----------------------------------------------------------------- */

int rec_owners_pack_info(rec_owners *w, msgpack_packer *pk) {
    pthread_mutex_lock(&w->mu);
    double now = mono_s();
    uint32_t mine = 0;
    uint32_t counts[MAX_PEERS] = {0};
    for (uint32_t p = 0; p < w->partitions; p++) {
        int r = w->ready ? w->route[p] : w->self;
        if (r >= 0)
            counts[r]++;
    }
    mine = counts[w->self];
    int rc = rec_value_pack_str(pk, "owned") || msgpack_pack_array(pk, mine);
    for (uint32_t p = 0; p < w->partitions && !rc; p++)
        if ((w->ready ? w->route[p] : w->self) == w->self)
            rc = msgpack_pack_uint32(pk, p);
    uint32_t npeers = 0;
    for (int i = 0; i < w->npeers; i++)
        npeers += i != w->self && w->live[i];
    rc = rc || rec_value_pack_str(pk, "owners") || msgpack_pack_uint64(pk, w->epoch) ||
         rec_value_pack_str(pk, "peers") || msgpack_pack_array(pk, npeers);
    for (int i = 0; i < w->npeers && !rc; i++) {
        if (i == w->self || !w->live[i])
            continue;
        rc = msgpack_pack_map(pk, 3) || rec_value_pack_str(pk, "name") ||
             rec_value_pack_str(pk, w->peers[i].name) || rec_value_pack_str(pk, "owned") ||
             msgpack_pack_uint32(pk, counts[i]) || rec_value_pack_str(pk, "lease_age") ||
             msgpack_pack_double(pk, now - w->peers[i].seen);
    }
    rc = rc || rec_value_pack_str(pk, "forwarded") || msgpack_pack_uint64(pk, w->forwarded) ||
         rec_value_pack_str(pk, "forward_served") || msgpack_pack_uint64(pk, w->served_n) ||
         rec_value_pack_str(pk, "forward_fallbacks") || msgpack_pack_uint64(pk, w->fallbacks);
    pthread_mutex_unlock(&w->mu);
    return rc ? REC_ENOMEM : 0;
}

/* ---- start-up and stop ------------------------------------------------------------ */

int rec_owners_open(rec_owners **out, const rec_owners_opts *o, char *err, size_t errlen) {
    *out = NULL;
    rec_owners *w = calloc(1, sizeof *w);
    if (w)
        rec_idslots_init(&w->fwds, sizeof(fwd), 256);
    if (!w)
        return REC_ENOMEM;
    pthread_mutex_init(&w->mu, NULL);
    msgpack_unpacked_init(&w->up);
    msgpack_unpacked_init(&w->bup);
    w->nc = o->nc;
    w->nodes = o->nodes;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = KV_WAIT_MS;
    if (natsConnection_JetStream(&w->js, w->nc, &jo) != NATS_OK) {
        snprintf(err, errlen, "JetStream on the second connection");
        rec_owners_free(w);
        return REC_EIO;
    }
    w->partitions = o->partitions;
    w->replicas = o->replicas;
    w->lease = o->lease;
    w->cluster = o->cluster;
    snprintf(w->node, sizeof w->node, "%s", o->node);
    size_t p = w->partitions;
    w->holder = malloc(p * sizeof *w->holder);
    w->hrev = calloc(p, sizeof *w->hrev);
    w->want = malloc(p * sizeof *w->want);
    w->route = malloc(p * sizeof *w->route);
    w->claimed_at = malloc(p * sizeof *w->claimed_at);
    if (!w->holder || !w->hrev || !w->want || !w->route || !w->claimed_at) {
        rec_owners_free(w);
        return REC_ENOMEM;
    }
    for (size_t i = 0; i < p; i++) {
        w->holder[i] = -1;
        w->want[i] = -1;
        w->route[i] = -1;
        w->claimed_at[i] = -1e9;
    }
    w->self = peer_index(w, w->node);
    w->peers[w->self].gone = 0;
    *out = w;
    return 0;
}

int rec_owners_start(rec_owners *w, uv_loop_t *loop, rec_cluster_serve_fn serve,
                     rec_cluster_progress_fn progress, void *ud) {
    w->serve = serve;
    w->progress = progress;
    w->ud = ud;
    if (uv_async_init(loop, &w->async, on_async))
        return REC_EIO;
    w->async.data = w;
    uv_check_init(loop, &w->check);
    w->check.data = w;
    uv_check_start(&w->check, on_check);
    uv_idle_init(loop, &w->idle);
    w->idle.data = w;
    /* Neither keeps the loop running. */
    uv_unref((uv_handle_t *)&w->check);
    uv_unref((uv_handle_t *)&w->idle);
    natsInbox *ib = NULL;
    if (natsInbox_Create(&ib) == NATS_OK) {
        snprintf(w->inbox, sizeof w->inbox, "%s", (const char *)ib);
        natsInbox_Destroy(ib);
    }
    char subj[sizeof REC_OWNERS_SUBJECT + 64], wild[128];
    snprintf(subj, sizeof subj, REC_OWNERS_SUBJECT "%s", w->node);
    snprintf(wild, sizeof wild, "%s.*", w->inbox);
    pthread_mutex_lock(&w->mu);
    w->started = 1;
    pthread_mutex_unlock(&w->mu);
    if (!w->inbox[0] ||
        natsConnection_Subscribe(&w->asub, w->nc, wild, on_answer, w) != NATS_OK ||
        natsConnection_Subscribe(&w->rsub, w->nc, subj, on_request, w) != NATS_OK ||
        pthread_create(&w->th, NULL, watch_main, w)) {
        rec_owners_stop(w);
        return REC_EIO;
    }
    w->th_started = 1;
    return 0;
}

void rec_owners_stop(rec_owners *w) {
    if (!w || !w->started || w->stopped)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_mutex_unlock(&w->mu);
    if (w->th_started)
        pthread_join(w->th, NULL);
    w->th_started = 0;
    /* No callback runs once these return. */
    if (w->rsub)
        natsSubscription_Unsubscribe(w->rsub);
    if (w->asub)
        natsSubscription_Unsubscribe(w->asub);
    pthread_mutex_lock(&w->mu);
    w->stopped = 1;
    pthread_mutex_unlock(&w->mu);
    uv_close((uv_handle_t *)&w->async, NULL);
    uv_close((uv_handle_t *)&w->check, NULL);
    uv_close((uv_handle_t *)&w->idle, NULL);
}

/* The requests forwarded here not answered: their senders serve them. */
static void drop_served(rec_owners *w) {
    pthread_mutex_lock(&w->mu);
    served *in = w->in_head;
    w->in_head = w->in_tail = NULL;
    pthread_mutex_unlock(&w->mu);
    for (served *r = in, *next; r; r = next) {
        next = r->next;
        natsMsg_Destroy(r->msg);
        free(r);
    }
    for (served *r = w->waiting, *next; r; r = next) {
        next = r->next;
        natsMsg_Destroy(r->msg);
        free(r);
    }
    w->waiting = NULL;
}

void rec_owners_detach(rec_owners *w) {
    if (!w || w->detached)
        return;
    w->detached = 1;
    natsSubscription_Destroy(w->rsub);
    natsSubscription_Destroy(w->asub);
    w->rsub = w->asub = NULL;
    kvStore_Destroy(w->parts);
    w->parts = NULL;
    jsCtx_Destroy(w->js);
    w->js = NULL;
    drop_served(w);
}

void rec_owners_free(rec_owners *w) {
    if (!w)
        return;
    rec_owners_detach(w);
    drop_served(w);
    for (size_t i = 0; i < w->fwds.cap; i++) {
        fwd *f = rec_idslots_at(&w->fwds, i);
        if (f->id)
            fwd_free(w, f);
    }
    rec_idslots_free(&w->fwds);
    free(w->holder);
    free(w->hrev);
    free(w->want);
    free(w->route);
    free(w->claimed_at);
    msgpack_unpacked_destroy(&w->up);
    msgpack_unpacked_destroy(&w->bup);
    for (int i = 0; i < w->nouts; i++) {
        rec_buf_free(&w->outs[i].body);
        free(w->outs[i].ids);
    }
    free(w->outs);
    for (batch *b = w->batches, *next; b; b = next) {
        next = b->next;
        batch_free(b);
    }
    rec_buf_free(&w->res);
    rec_buf_free(&w->tmp);
    rec_buf_free(&w->item);
    rec_buf_free(&w->ans);
    pthread_mutex_destroy(&w->mu);
    free(w);
}
