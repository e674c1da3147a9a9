/* server.c - libuv loop, connections, backpressure, group commit.
 *
 * Generations: write answers are tagged with the generation of the batch
 * their writes went into (cur_gen). The check handle, which runs after
 * every poll, stages what is pending as generation cur_gen and commits it
 * in a worker job; when the job is done, every answer of a generation up
 * to it is released. Answers leave strictly in request order, so a read
 * answered at once still waits behind an earlier write's answer.
 *
 * In a cluster (cluster.h), an event.add is published to the stream and
 * its answer is held (HELD_GEN) with the cluster's ticket; once the
 * ticket's events are applied here, the answer is tagged cur_gen like any
 * write, and leaves after the commit that holds them. A read of a user
 * whose partition another node owns is forwarded there: its place in the
 * queue is held (HELD_GEN, empty) until the owner's answer comes, then
 * filled in.
 */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "dispatch.h"
#include "err.h"
#include "log.h"
#include "rpc.h"

typedef struct server server;
typedef struct conn conn;

/* An answer waiting in its connection's queue. The queue is an array of
 * these and one buffer holding their bytes back to back, in order: no
 * allocation per answer, and releasing a run of answers reads memory in
 * sequence. */
typedef struct reply {
    uint64_t gen;    /* releasable once durable_gen >= gen; 0 at once */
    double t0;       /* arrival, for latency */
    uint32_t msgid;
    uint32_t len;    /* bytes of the encoded response */
    int method;      /* for stats; -1 for none */
    int write;       /* answer to a write: turned into an error if its
                        commit fails */
    uint64_t ticket; /* held for this cluster ticket (gen HELD_GEN); 0 none */
    int patch;       /* its last 4 bytes take the ticket's result (a
                        catalogue write in a cluster) */
    uint64_t fwd;    /* held (empty, gen HELD_GEN) for the answer of this
                        read forwarded to its partition's owner; 0 none */
} reply;

/* Generations of answers that no commit releases: held for the cluster,
 * and failed there (about to become errors). */
#define HELD_GEN UINT64_MAX
#define FAILED_GEN (UINT64_MAX - 1)

struct conn {
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
        uv_stream_t stream;
        uv_handle_t handle;
    } h;
    server *srv;
    conn *prev, *next;
    rec_buf rbuf;       /* bytes read, not yet consumed from rpos: owned
                           (and counted in in_bytes), NULL when empty, or
                           the server's scratch while borrowed */
    size_t rpos;
    rec_rpc_scan scan;  /* framing of the message at rpos, so far */
    int borrowed;       /* rbuf is the scratch (inside on_read) */
    reply *rq;          /* queued answers: rq[rq_head .. rq_head + nreplies) */
    uint32_t rq_head, rq_cap;
    uint32_t nreplies;
    rec_buf qbuf;       /* their bytes, from qpos on */
    size_t qpos;
    size_t out_bytes;   /* handed to uv_write, not yet written */
    size_t queued_bytes; /* answers built, not yet handed to uv_write */
    double write_progress; /* mono_us() of the last write completed or
                              started while output was pending */
    rec_session sess;
    int reading;
    int closing;
    int close_after;    /* close once the queued answers are written */
    int blocked;        /* BLOCK_BARRIER, BLOCK_WRITE, BLOCK_ANSWER or
                           BLOCK_READ, else 0 */
    uint64_t barrier;   /* BLOCK_READ: the cluster's read barrier */
    int barrier_rc;     /* its outcome for the message it held: 1 passed,
                           a negative REC_E* code failed, 0 none */
    int covered;        /* a barrier passed since the last bytes came:
                           every message buffered came before it */
    uint64_t reads;     /* reads that brought bytes */
    uint64_t barrier_reads; /* reads when the barrier began */
    uint32_t forwards;  /* its reads forwarded, not answered yet */
    uint32_t wait_msgid; /* BLOCK_ANSWER: the request answered later */
    int wait_method;
    double wait_t0;
    int is_unix;
    int established;    /* a request done (with a token: authenticated) */
    int waiting;        /* in the queue for input memory */
    int admit;          /* over its address's share: not read yet */
    conn *wprev, *wnext;
    double t_open;      /* mono_us() at accept */
    double t_read;      /* mono_us() of the last bytes received */
    int family;         /* AF_INET, AF_INET6, or 0 */
    unsigned char addr[16]; /* the peer's address (TCP) */
    char peer[64];
};

/* Why a connection waits to run its next message. */
enum {
    BLOCK_BARRIER = 1, /* a barrier method, until no write is pending */
    BLOCK_WRITE = 2,   /* a write, until the barriers waiting have run */
    BLOCK_ANSWER = 3,  /* a request whose answer comes later (model.train
                          {wait = true}): until it is given */
    BLOCK_READ = 4,    /* a read in a cluster: until its read barrier
                          passed (cluster_progress) */
    BLOCK_FORWARD = 5, /* a write in a cluster behind reads forwarded to
                          their owner: until those are answered, so that
                          none of them sees it */
};

typedef struct write_req {
    uv_write_t req;
    conn *c;
    size_t len;
    char data[];
} write_req;

struct server {
    uv_loop_t *loop;
    rec_server_opts o;
    rec_engine *e;
    rec_dispatch *d;
    rec_rpc_limits lim;     /* for messages in general */
    rec_rpc_limits prelim;  /* before sys.auth, and for decoding ahead */
    msgpack_unpacked up[2]; /* the message running and the one decoded
                               ahead, of whichever connection: emptied
                               after each message */
    char *scratch;          /* reads of connections holding no bytes land
                               here, and are run from here */
    size_t in_bytes;        /* connections' own input buffers, together */
    conn *wait_head, *wait_tail; /* waiting for input memory, in order */
    conn *leader;           /* reads on over the budget, to finish its
                               message */
    uint32_t ntcp, nunix;
    uint32_t nadmit;        /* connections with admit set */
    uint32_t barriers;      /* connections blocked on BLOCK_BARRIER */
    uv_idle_t idle;         /* active while writes wait to be staged: the
                               loop does not sleep before the check */
    uv_tcp_t tcp;
    uv_pipe_t pipe;
    int has_tcp, has_pipe;
    uv_check_t check;
    rec_buf lists;          /* in a cluster: lists shown this turn, packed
                               records, sent at its end (publish_lists) */
    uint32_t nlists;
    uv_timer_t tick;       /* wakes the loop so checkpoints happen when idle */
    uv_timer_t lazy;       /* wakes the loop when writes no answer waits
                              for are due (LAZY_COMMIT_MS) */
    double lazy_since;     /* mono_us() when such writes began to wait;
                              0: none waits */
    uint32_t jobs;         /* the dispatcher's worker jobs out (queue_job) */
    uv_signal_t sigint, sigterm;
    uv_work_t work;
    rec_batch *committing; /* the staged batch in the worker, or NULL */
    int commit_rc;
    uint64_t cur_gen;      /* generation collecting writes now */
    uint64_t durable_gen;  /* every generation up to here is committed */
    uint64_t staged_gen;
    uint64_t waiters;      /* answers tagged cur_gen */
    uint64_t rollbacks;    /* rec_engine_rollbacks when last looked at */
    rec_buf result;        /* the answer being built (reused) */
    rec_cluster *cluster;  /* NULL: a node alone */
    int event_method;      /* event.add's index, for the cluster's events */
    rec_session cluster_sess; /* the session the cluster's events run in */
    rec_session fwd_sess;  /* ... and the reads other nodes forward here */
    conn *conns;
    uint32_t nconns;
    int stopping;
    int closed;
    char unix_path[512];
};

static double mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* ---- answers ------------------------------------------------------------ */

static void conn_close(conn *c);
static void process(conn *c);
static void cluster_progress(void *ud);
static void flush(conn *c);
static void stop_reading(conn *c);
static void wait_remove(conn *c);
static void budget_wake(server *s);
static void admit_waiting(server *s, int all);

/* Room for one more descriptor at the end of the queue. */
static int rq_reserve(conn *c) {
    if (c->rq_head + c->nreplies < c->rq_cap)
        return 0;
    if (c->rq_head > 0) { /* slide the live part to the front */
        memmove(c->rq, c->rq + c->rq_head, c->nreplies * sizeof *c->rq);
        c->rq_head = 0;
        return 0;
    }
    uint32_t cap = c->rq_cap ? c->rq_cap * 2 : 64;
    reply *q = realloc(c->rq, (size_t)cap * sizeof *q);
    if (!q)
        return REC_ENOMEM;
    c->rq = q;
    c->rq_cap = cap;
    return 0;
}

/* Queue an answer made of head[0..hl) then body[0..bl). */
static int enqueue2(conn *c, const void *head, size_t hl, const void *body,
                    size_t bl, uint32_t msgid, int method, uint64_t gen,
                    int write, double t0) {
    if (hl + bl > UINT32_MAX)
        return REC_ETOOLARGE;
    size_t mark = c->qbuf.len;
    if (rq_reserve(c) || rec_buf_append(&c->qbuf, head, hl) ||
        rec_buf_append(&c->qbuf, body, bl)) {
        c->qbuf.len = mark;
        return REC_ENOMEM;
    }
    c->rq[c->rq_head + c->nreplies++] = (reply){
        .gen = gen, .t0 = t0, .msgid = msgid, .len = (uint32_t)(hl + bl),
        .method = method, .write = write, .ticket = 0, .fwd = 0};
    c->queued_bytes += hl + bl;
    return 0;
}

/* Forget the first n queued answers, whose bytes (`bytes` in all) are
 * written or dropped. */
static void dequeue(conn *c, uint32_t n, size_t bytes) {
    c->rq_head += n;
    c->nreplies -= n;
    c->qpos += bytes;
    c->queued_bytes -= bytes;
    if (c->nreplies == 0)
        c->rq_head = 0;
    if (c->qpos == c->qbuf.len) {
        c->qbuf.len = c->qpos = 0;
        if (c->qbuf.cap > (1u << 20)) /* after a burst of large answers */
            rec_buf_free(&c->qbuf);
    } else if (c->qpos > 65536 && c->qpos * 2 > c->qbuf.len) {
        memmove(c->qbuf.data, c->qbuf.data + c->qpos, c->qbuf.len - c->qpos);
        c->qbuf.len -= c->qpos;
        c->qpos = 0;
    }
}

static int enqueue(conn *c, const rec_buf *b, uint32_t msgid, int method,
                   uint64_t gen, int write, double t0) {
    return enqueue2(c, NULL, 0, b->data, b->len, msgid, method, gen, write, t0);
}

static void on_write(uv_write_t *req, int status) {
    write_req *w = (write_req *)req;
    conn *c = w->c;
    c->out_bytes -= w->len;
    c->write_progress = mono_us();
    free(w);
    if (status < 0) {
        if (status != UV_ECANCELED)
            REC_DEBUG("%s: write failed: %s", c->peer, uv_strerror(status));
        conn_close(c);
        return;
    }
    if (c->closing)
        return;
    if (c->close_after && !c->nreplies && c->out_bytes == 0) {
        conn_close(c);
        return;
    }
    /* Output drained below the pause mark: read (and process) again. */
    if (!c->reading && c->out_bytes < c->srv->o.out_pause)
        process(c);
}

/* Write the answers that are released, in order, as one buffer. */
static void flush(conn *c) {
    server *s = c->srv;
    if (c->closing)
        return;
    size_t total = 0;
    uint32_t n = 0;
    const reply *q = c->rq + c->rq_head;
    while (n < c->nreplies && q[n].gen <= s->durable_gen)
        total += q[n++].len;
    if (n == 0) {
        if (c->close_after && !c->nreplies && c->out_bytes == 0)
            conn_close(c);
        return;
    }
    write_req *w = malloc(sizeof *w + total);
    if (!w) {
        REC_ERROR("%s: out of memory writing answers; closing", c->peer);
        conn_close(c);
        return;
    }
    memcpy(w->data, c->qbuf.data + c->qpos, total);
    double now = mono_us();
    for (uint32_t i = 0; i < n; i++)
        if (q[i].method >= 0)
            rec_dispatch_record(s->d, q[i].method, now - q[i].t0, 0);
    dequeue(c, n, total);
    w->c = c;
    w->len = total;
    if (c->out_bytes == 0)
        c->write_progress = mono_us();
    c->out_bytes += total;
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)total);
    int rc = uv_write(&w->req, &c->h.stream, &buf, 1, on_write);
    if (rc) {
        c->out_bytes -= total;
        free(w);
        REC_DEBUG("%s: write failed: %s", c->peer, uv_strerror(rc));
        conn_close(c);
        return;
    }
    if (c->out_bytes > s->o.out_max) {
        REC_WARN("%s: over %zu bytes of answers unread; closing", c->peer,
                 s->o.out_max);
        conn_close(c);
    }
}

/* Release answers everywhere; connections that stopped reading for their
 * backlog go on with what they have buffered. */
static void flush_all(server *s) {
    for (conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (!c->reading && !c->close_after && c->rpos < c->rbuf.len)
            process(c);
        else
            flush(c);
    }
}

#ifdef REC_FAULTS
/* Test builds: RECD_FAULT_ANSWER_OOM=1 makes every rewrite of answers into
 * errors fail as if memory ran out. */
static int rewrite_fails(void) {
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("RECD_FAULT_ANSWER_OOM");
        v = e && strcmp(e, "1") == 0;
    }
    return v;
}
#else
#define rewrite_fails() 0
#endif

/* Is answer r one that `only` turns into an error: a write not yet
 * durable (only 0), or one of generation `only`. */
static int answer_lost(const server *s, const reply *r, uint64_t only) {
    return only ? r->gen == only : r->write && r->gen > s->durable_gen && r->gen < FAILED_GEN;
}

/* A commit failed: every write answer not yet released becomes an error
 * (the engine dropped those writes when it rebuilt its memory); or, with
 * `only`, the answers of that generation. A connection whose answers
 * cannot be rewritten (short of memory) is closed: its client learns
 * nothing, rather than a success that is not true. */
static void fail_answers(server *s, int code, const char *msg, uint64_t only) {
    for (conn *c = s->conns; c; c = c->next) {
        if (c->closing)
            continue;
        uint32_t lost = 0;
        for (uint32_t i = 0; i < c->nreplies; i++) {
            const reply *r = &c->rq[c->rq_head + i];
            lost += answer_lost(s, r, only);
        }
        if (!lost)
            continue;
        /* The queue's bytes are rebuilt with errors in place of the answers
         * to the lost writes. */
        rec_buf nb = REC_BUF_INIT;
        uint32_t *lens = rewrite_fails() ? NULL : malloc(c->nreplies * sizeof *lens);
        int ok = lens != NULL;
        const char *old = c->qbuf.data + c->qpos;
        for (uint32_t i = 0; i < c->nreplies && ok; i++) {
            const reply *r = &c->rq[c->rq_head + i];
            size_t mark = nb.len;
            ok = answer_lost(s, r, only)
                     ? !rec_rpc_error(&nb, r->msgid, code, msg)
                     : !rec_buf_append(&nb, old, r->len);
            lens[i] = (uint32_t)(nb.len - mark);
            old += r->len;
        }
        for (uint32_t i = 0; i < c->nreplies; i++) {
            reply *r = &c->rq[c->rq_head + i];
            if (answer_lost(s, r, only)) {
                if (r->method >= 0)
                    rec_dispatch_record(s->d, r->method, 0, 1);
                r->method = -1;
                r->write = 0;
                if (ok)
                    r->gen = 0;
            }
            if (ok)
                r->len = lens[i];
        }
        free(lens);
        if (!ok) {
            rec_buf_free(&nb);
            REC_ERROR("%s: out of memory turning %u answers into errors after a "
                      "failed commit; closing", c->peer, (unsigned)lost);
            conn_close(c); /* nothing queued is written once closing */
            continue;
        }
        rec_buf_free(&c->qbuf);
        c->qbuf = nb;
        c->qpos = 0;
        c->queued_bytes = nb.len;
    }
}

static void fail_writes(server *s, int code, const char *msg) {
    fail_answers(s, code, msg, 0);
}

/* Writes dropped by a commit that failed outside the group commit (the
 * engine rebuilt its state): answers to them become errors as after a
 * failed group commit. Returns 1 when that happened since the last look. */
static int writes_lost(server *s, int code) {
    uint64_t n = rec_engine_rollbacks(s->e);
    if (n == s->rollbacks)
        return 0;
    s->rollbacks = n;
    const char *m = rec_engine_errmsg(s->e);
    fail_writes(s, code, m && m[0] ? m : rec_strerror(code));
    s->waiters = 0;
    s->cur_gen++;
    if (s->cluster) /* what the cluster's events applied went too */
        rec_cluster_rewind(s->cluster);
    return 1;
}

/* ---- group commit ------------------------------------------------------- */

static void commit_work(uv_work_t *req) {
    server *s = req->data;
    s->commit_rc = rec_store_commit(rec_engine_store(s->e), s->committing);
}

static void set_blocked(conn *c, int why) {
    server *s = c->srv;
    s->barriers -= c->blocked == BLOCK_BARRIER;
    s->barriers += why == BLOCK_BARRIER;
    c->blocked = why;
}

/* Barriers first: while one waits, writes wait behind it (they would keep
 * something pending forever under a steady stream), so it runs as soon as
 * what was pending before it is committed. */
static void resume_blocked(server *s) {
    for (conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->blocked == BLOCK_BARRIER) {
            set_blocked(c, 0);
            process(c);
        }
    }
    if (s->barriers)
        return;
    for (conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->blocked == BLOCK_WRITE) {
            set_blocked(c, 0);
            process(c);
        }
    }
}

static void on_idle(uv_idle_t *h) { (void)h; }

/* Writes that no answer waits for (the records of recommendations and
 * what a pipeline writes beside them, a cluster's events applied here for
 * other nodes) are committed with the next write that an answer waits
 * for, or this long after the first of them came. Committing each at once
 * would start a commit behind nearly every list served, and the
 * acknowledgement of a click that follows a list would wait for that
 * commit first. A crash loses at most this much of them; none of them was
 * promised durable (their answers do not wait for a commit). */
#define LAZY_COMMIT_MS 50

static void on_lazy(uv_timer_t *t) { (void)t; } /* the check after it stages */

/* 1 when what is pending may wait: no answer, barrier, shutdown or
 * checkpoint asks for a commit now. */
static int lazy_ok(server *s) {
    return !s->waiters && !s->barriers && !s->stopping && !s->closed &&
           !rec_engine_checkpoint_due(s->e);
}

/* Whether the check stages what is pending now; when it may wait, the
 * timer is armed for the moment it may not. */
static int stage_due(server *s) {
    int closing = uv_is_closing((uv_handle_t *)&s->lazy);
    if (!rec_engine_pending(s->e) || !lazy_ok(s)) {
        s->lazy_since = 0;
        if (!closing)
            uv_timer_stop(&s->lazy);
        return 1;
    }
    double now = mono_us();
    if (s->lazy_since == 0)
        s->lazy_since = now;
    double left_us = LAZY_COMMIT_MS * 1e3 - (now - s->lazy_since);
    if (left_us <= 0) {
        s->lazy_since = 0;
        if (!closing)
            uv_timer_stop(&s->lazy);
        return 1;
    }
    /* The timer counts in the loop's time, cached at the start of each
     * turn: it may fire a little before the wait is over by this clock,
     * so it is armed again for what is left whenever it is not running. */
    if (!closing && !uv_is_active((uv_handle_t *)&s->lazy))
        uv_timer_start(&s->lazy, on_lazy, (uint64_t)(left_us / 1e3) + 1, 0);
    return 0;
}

/* Writes handled outside the poll phase (in the check callback, or after
 * a commit) are staged by the next check: keep the loop from sleeping in
 * its poll until then; writes that may wait arm their timer instead. */
static void wake_for_writes(server *s) {
    if (s->closed || uv_is_closing((uv_handle_t *)&s->idle))
        return;
    if (!s->committing && (s->waiters || (rec_engine_pending(s->e) && stage_due(s))))
        uv_idle_start(&s->idle, on_idle);
    else
        uv_idle_stop(&s->idle);
}

static void commit_done(uv_work_t *req, int status) {
    server *s = req->data;
    rec_batch *b = s->committing;
    s->committing = NULL;
    int rc = status < 0 ? REC_EIO : s->commit_rc;
    rec_engine_commit_done(s->e, b, rc);
    if (rc) {
        const char *m = rec_engine_errmsg(s->e);
        REC_ERROR("group commit failed: %s", m);
        fail_writes(s, rc, m && m[0] ? m : rec_strerror(rc));
        s->rollbacks = rec_engine_rollbacks(s->e);
        s->waiters = 0;
        s->cur_gen++;
        /* The state is back at its checkpoint: learn again what the log
         * holds past it, before anything new. */
        (void)rec_dispatch_catch_up(s->d);
        /* And what the stream holds past the sequence it stores. */
        if (s->cluster)
            rec_cluster_rewind(s->cluster);
    } else {
        s->durable_gen = s->staged_gen;
    }
    flush_all(s);
    resume_blocked(s);
    /* A delete of the stream waited for this commit. */
    if (s->cluster)
        rec_cluster_resume(s->cluster);
    wake_for_writes(s);
}

static void shutdown_now(server *s);

static void on_handle_closed(uv_handle_t *h);

/* A job the dispatcher runs on a worker thread (a training): counted, so
 * that the server stops only once none is out. */
typedef struct job {
    uv_work_t req;
    server *s;
    rec_work_fn work;
    rec_work_done_fn done;
    void *arg;
} job;

static void job_work(uv_work_t *req) {
    job *j = req->data;
    j->work(j->arg);
}

static void job_done(uv_work_t *req, int status) {
    job *j = req->data;
    j->s->jobs--;
    j->done(j->arg, status);
    free(j);
}

/* The worker hook the dispatcher is given (rec_worker). */
static int queue_job(void *ud, rec_work_fn work, rec_work_done_fn done, void *arg) {
    server *s = ud;
    job *j = malloc(sizeof *j);
    if (!j)
        return REC_ENOMEM;
    j->s = s;
    j->work = work;
    j->done = done;
    j->arg = arg;
    j->req.data = j;
    if (uv_queue_work(s->loop, &j->req, job_work, job_done)) {
        free(j);
        return REC_EIO;
    }
    s->jobs++;
    return 0;
}

/* Slots are not held for nothing: a TCP connection must complete a request
 * (with a token: sys.auth) within handshake_timeout of its accept, and
 * send something every idle_timeout once it has; no connection may stop
 * halfway through a message for handshake_timeout. */
static void check_timeouts(conn *c, double now_us) {
    server *s = c->srv;
    double hs = s->o.handshake_timeout * 1e6, idle = s->o.idle_timeout * 1e6;
    char why[96];
    why[0] = 0;
    if (!c->is_unix && !c->established && hs > 0 && now_us - c->t_open > hs)
        snprintf(why, sizeof why, "no request%s within %g s of connecting",
                 s->o.auth_token ? " authenticated" : "", s->o.handshake_timeout);
    else if (!c->is_unix && c->established && idle > 0 && now_us - c->t_read > idle &&
             !c->nreplies && c->out_bytes == 0 && !c->blocked && !c->rbuf.data)
        snprintf(why, sizeof why, "idle for %g s", s->o.idle_timeout);
    else if (c->rbuf.data && c->reading && hs > 0 && now_us - c->t_read > hs)
        snprintf(why, sizeof why, "a message stalled for %g s", s->o.handshake_timeout);
    if (!why[0])
        return;
    REC_INFO("%s: %s; closing", c->peer, why);
    rec_buf b = REC_BUF_INIT;
    if (!rec_rpc_notify_error(&b, REC_EBUSY, why))
        enqueue(c, &b, 0, -1, 0, 0, 0);
    rec_buf_free(&b);
    stop_reading(c);
    wait_remove(c);
    c->close_after = 1;
    if (s->leader == c) {
        s->leader = NULL;
        budget_wake(s);
    }
    flush(c);
}

/* Once a second: the check handle after this wake-up stages a checkpoint
 * when one is due; and the dispatcher's tick (the training schedule). */
static void on_tick(uv_timer_t *t) {
    server *s = t->data;
    /* A client that leaves its answers unread for write_timeout is not
     * coming back (when stopping, one second is enough). */
    double now_us = mono_us();
    double limit = s->closed ? 1e6 : s->o.write_timeout * 1e6;
    for (conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->out_bytes > 0 && !c->closing && now_us - c->write_progress > limit) {
            REC_WARN("%s: no answer read for %.0f s; closing", c->peer, limit / 1e6);
            conn_close(c);
        } else if (!c->closing && !c->close_after && !c->admit && !s->closed) {
            check_timeouts(c, now_us);
        }
    }
    if (s->nadmit)
        admit_waiting(s, 1);
    if (s->closed) {
        if (!s->conns && !uv_is_closing((uv_handle_t *)&s->tick))
            uv_close((uv_handle_t *)&s->tick, on_handle_closed);
        return;
    }
    if (!s->stopping)
        rec_dispatch_tick(s->d);
    if (s->cluster) /* read barriers ask again what is unanswered */
        cluster_progress(s);
}

static void publish_lists(server *s);

static void on_check(uv_check_t *h) {
    server *s = h->data;
    if (s->cluster)
        publish_lists(s);
    writes_lost(s, REC_ESTORE);
    rec_dispatch_flush(s->d);
    if (s->committing)
        return;
    if (!stage_due(s)) {
        uv_idle_stop(&s->idle);
        return;
    }
    rec_batch *b = NULL;
    int rc = rec_engine_stage(s->e, &b);
    if (rc) {
        REC_ERROR("staging writes failed: %s", rec_engine_errmsg(s->e));
        uv_idle_stop(&s->idle);
        return;
    }
    if (b) {
        s->committing = b;
        s->staged_gen = s->cur_gen++;
        s->waiters = 0;
        s->work.data = s;
        rc = uv_queue_work(s->loop, &s->work, commit_work, commit_done);
        if (rc) {
            /* Cannot reach a worker: commit here rather than lose it. */
            s->commit_rc = rec_store_commit(rec_engine_store(s->e), b);
            commit_done(&s->work, 0);
        }
        wake_for_writes(s);
        return;
    }
    if (s->waiters) {
        /* Writes that changed nothing on disk: durable as they are. */
        s->durable_gen = s->cur_gen++;
        s->waiters = 0;
        flush_all(s);
    }
    resume_blocked(s);
    wake_for_writes(s);
    if (s->stopping && !s->closed && !s->committing && !s->jobs &&
        !rec_engine_pending(s->e) && !(s->cluster && rec_cluster_outstanding(s->cluster)))
        shutdown_now(s);
}

/* ---- requests ----------------------------------------------------------- */

static void answer_error(conn *c, uint32_t msgid, int code, const char *msg,
                         int method, double t0) {
    rec_buf b = REC_BUF_INIT;
    if (rec_rpc_error(&b, msgid, code, msg) ||
        enqueue(c, &b, msgid, -1, 0, 0, t0)) {
        rec_buf_free(&b);
        conn_close(c);
        return;
    }
    rec_buf_free(&b);
    if (method >= 0)
        rec_dispatch_record(c->srv->d, method, mono_us() - t0, 1);
}

/* Tell the peer why its stream is refused, then close after the flush. */
static void protocol_fail(conn *c, int code, const char *why) {
    REC_WARN("%s: %s (%s); closing", c->peer, rec_strerror(code), why);
    rec_buf b = REC_BUF_INIT;
    if (!rec_rpc_notify_error(&b, code, why))
        enqueue(c, &b, 0, -1, 0, 0, 0);
    rec_buf_free(&b);
    c->close_after = 1;
    if (c->reading) {
        uv_read_stop(&c->h.stream);
        c->reading = 0;
    }
}

/* The result buffer keeps up to this much memory between requests. */
#define RESULT_KEEP (1u << 20)

static void shrink_result(server *s) {
    if (s->result.cap > RESULT_KEEP) /* after a huge answer */
        rec_buf_free(&s->result);
}

/* A notification (no answer) ran: counted, and logged when it failed. */
static void notified(conn *c, int method, int rc, const char *err, double t0) {
    server *s = c->srv;
    if (rc) {
        rec_dispatch_notification_failed(s->d);
        REC_WARN("%s: notification %s failed: %s: %s", c->peer,
                 rec_dispatch_name(s->d, method), rec_err_name(rc), err);
    }
    rec_dispatch_record(s->d, method, mono_us() - t0, rc != 0);
}

/* ---- the cluster ------------------------------------------------------- */

/* event.add in a cluster: checked here, published, and answered (the
 * count, as alone) once the cluster says its events are applied here
 * (cluster_progress). A notification publishes and waits for nothing. */
static int publish_events(conn *c, const rec_rpc_msg *m, int method, double t0) {
    server *s = c->srv;
    int notify = m->type == REC_RPC_NOTIFY;
    const msgpack_object *p = &m->params;
    char err[512];
    uint64_t ticket = 0;
    int again = c->barrier_rc;
    c->barrier_rc = 0;
    int rc = rec_dispatch_check_events(s->d, p, err, sizeof err);
    if (rc == REC_ENOTFOUND && !again && !c->covered && !notify) {
        /* Strict, and an item this node does not know: it may have been
         * put through another node, acknowledged but not applied here yet.
         * Checked again once the node caught up with the catalogue. */
        uint64_t id = 0;
        if (rec_cluster_barrier(s->cluster, &id, err, sizeof err) == 0) {
            c->barrier = id;
            c->barrier_reads = c->reads;
            set_blocked(c, BLOCK_READ);
            return 1;
        }
    }
    if (!rc)
        rc = rec_cluster_publish(s->cluster, p->via.array.ptr, p->via.array.size,
                                 notify ? NULL : &ticket, err, sizeof err);
    if (notify) {
        notified(c, method, rc, err, t0);
        return 0;
    }
    if (rc) {
        answer_error(c, m->msgid, rc, err, method, t0);
        return 0;
    }
    rec_buf *b = &s->result;
    rec_buf_clear(b);
    msgpack_packer pk;
    rec_rpc_packer(&pk, b);
    unsigned char head[REC_RPC_HEAD_MAX];
    size_t hl = rec_rpc_result_head(head, m->msgid);
    if (msgpack_pack_uint32(&pk, p->via.array.size) ||
        enqueue2(c, head, hl, b->data, b->len, m->msgid, method, HELD_GEN, 0, t0)) {
        rec_cluster_forget(s->cluster, ticket);
        REC_ERROR("%s: out of memory; closing", c->peer);
        conn_close(c);
        shrink_result(s);
        return -1;
    }
    c->rq[c->rq_head + c->nreplies - 1].ticket = ticket;
    shrink_result(s);
    return 0;
}

/* A catalogue write in a cluster (item.put, item.delete, user.put,
 * user.delete): checked here as alone, published, and answered once the
 * cluster says it is applied here, with what the call answered when
 * applied (a count: a uint32 written into the answer then). */
static int publish_write(conn *c, const rec_rpc_msg *m, int method, double t0) {
    server *s = c->srv;
    int notify = m->type == REC_RPC_NOTIFY;
    char err[512];
    uint64_t ticket = 0;
    int rc = rec_dispatch_check_write(s->d, method, &m->params, err, sizeof err);
    if (!rc)
        rc = rec_cluster_publish_op(s->cluster, rec_dispatch_name(s->d, method), &m->params,
                                    notify ? NULL : &ticket, err, sizeof err);
    if (notify) {
        notified(c, method, rc, err, t0);
        return 0;
    }
    if (rc) {
        answer_error(c, m->msgid, rc, err, method, t0);
        return 0;
    }
    unsigned char head[REC_RPC_HEAD_MAX];
    size_t hl = rec_rpc_result_head(head, m->msgid);
    static const unsigned char count[5] = {0xce, 0, 0, 0, 0}; /* uint32, set later */
    if (enqueue2(c, head, hl, count, sizeof count, m->msgid, method, HELD_GEN, 0, t0)) {
        rec_cluster_forget(s->cluster, ticket);
        REC_ERROR("%s: out of memory; closing", c->peer);
        conn_close(c);
        return -1;
    }
    c->rq[c->rq_head + c->nreplies - 1].ticket = ticket;
    c->rq[c->rq_head + c->nreplies - 1].patch = 1;
    return 0;
}

/* A read in a cluster runs once the node applied what the stream held
 * when it came: 1 (the connection waits for the barrier, the message
 * stays buffered, and the connection reads nothing more meanwhile), 0 (run
 * it now: its barrier passed, or one passed after it came), or 2 (answered
 * with an error). */
static int read_barrier(conn *c, const rec_rpc_msg *m, int method, double t0) {
    server *s = c->srv;
    char err[512];
    int was = c->barrier_rc;
    c->barrier_rc = 0;
    if (was == 1 || c->covered)
        return 0;
    if (was < 0) {
        snprintf(err, sizeof err, "read barrier: the stream did not say in time how far "
                 "it was written");
        answer_error(c, m->msgid, was, err, method, t0);
        return 2;
    }
    uint64_t id = 0;
    int rc = rec_cluster_barrier(s->cluster, &id, err, sizeof err);
    if (rc) {
        answer_error(c, m->msgid, rc, err, method, t0);
        return 2;
    }
    c->barrier = id;
    c->barrier_reads = c->reads;
    set_blocked(c, BLOCK_READ);
    return 1;
}

/* A read of one user whose partition another node owns goes there
 * (rec_cluster_forward): 1 with its place in the queue held, empty, until
 * the answer comes (cluster_progress); 0 when this node serves it; -1
 * when the connection closes. */
static int forward(conn *c, const rec_rpc_msg *m, int method, double t0) {
    server *s = c->srv;
    const msgpack_object *p = &m->params;
    const msgpack_object *p0 =
        p->type == MSGPACK_OBJECT_ARRAY && p->via.array.size ? &p->via.array.ptr[0] : NULL;
    const msgpack_object *who =
        p0 && p0->type == MSGPACK_OBJECT_MAP ? rec_value_field(p0, "user") : p0;
    uint64_t id = 0;
    if (!who || rec_cluster_forward(s->cluster, who, rec_dispatch_name(s->d, method), p, &id) ||
        !id)
        return 0;
    static const char none[1];
    if (enqueue2(c, NULL, 0, none, 0, m->msgid, method, HELD_GEN, 0, t0)) {
        rec_cluster_forward_forget(s->cluster, id);
        REC_ERROR("%s: out of memory; closing", c->peer);
        conn_close(c);
        return -1;
    }
    c->rq[c->rq_head + c->nreplies - 1].fwd = id;
    c->forwards++;
    return 1;
}

/* The held answer r, at byte off of its connection's queue, gets the
 * forward's answer once it came: 0, or REC_PENDING. */
static int settle_forward(conn *c, reply *r, size_t off) {
    server *s = c->srv;
    char err[512];
    rec_buf *b = &s->result;
    rec_buf_clear(b);
    int rc = rec_cluster_forward_take(s->cluster, r->fwd, b, err, sizeof err);
    if (rc == REC_PENDING)
        return rc;
    r->fwd = 0;
    c->forwards--;
    r->gen = 0;
    rec_buf a = REC_BUF_INIT;
    int bad;
    if (rc == 0) {
        unsigned char head[REC_RPC_HEAD_MAX];
        size_t hl = rec_rpc_result_head(head, r->msgid);
        bad = rec_buf_append(&a, head, hl) || rec_buf_append(&a, b->data, b->len);
    } else {
        bad = rec_rpc_error(&a, r->msgid, rc, err) != 0;
        if (r->method >= 0)
            rec_dispatch_record(s->d, r->method, mono_us() - r->t0, 1);
        r->method = -1;
    }
    /* Spliced in at its place: the answers after it move up. */
    if (!bad)
        bad = rec_buf_reserve(&c->qbuf, a.len) != 0;
    if (bad) {
        REC_ERROR("%s: out of memory; closing", c->peer);
        conn_close(c);
    } else {
        memmove(c->qbuf.data + off + a.len, c->qbuf.data + off, c->qbuf.len - off);
        memcpy(c->qbuf.data + off, a.data, a.len);
        c->qbuf.len += a.len;
        c->queued_bytes += a.len;
        r->len = (uint32_t)a.len;
    }
    rec_buf_free(&a);
    shrink_result(s);
    return 0;
}

/* The cluster's tickets moved: answers whose events are applied wait for
 * the commit of those writes like any write's; those whose publishing
 * failed become errors. Answers leave in order, so a connection is looked
 * at up to its first answer still pending: O(connections + answers
 * settled). Reads waiting for a barrier run once it passed. */
static void cluster_progress(void *ud) {
    server *s = ud;
    char err[512];
    int moved = 0;
    rec_cluster_poll(s->cluster); /* reads forwarded here */
    for (conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->closing || c->blocked != BLOCK_READ)
            continue;
        int rc = rec_cluster_barrier_check(s->cluster, c->barrier, err, sizeof err);
        if (rc == REC_PENDING)
            continue;
        c->barrier = 0;
        c->barrier_rc = rc ? rc : 1;
        /* What it holds came before the barrier's question, unless it
         * read meanwhile (blocked, it reads nothing, but for a wake-up of
         * the input memory's queue). */
        c->covered = rc == 0 && c->reads == c->barrier_reads;
        set_blocked(c, 0);
        process(c);
    }
    for (conn *c = s->conns; c; c = c->next) {
        if (c->closing)
            continue;
        size_t off = c->qpos;
        int stuck = 0; /* a ticket is pending: the later ones are too */
        for (uint32_t i = 0; i < c->nreplies; off += c->rq[c->rq_head + i].len, i++) {
            reply *r = &c->rq[c->rq_head + i];
            if (r->fwd) {
                /* Forwards are answered in any order (the queue keeps the
                 * connection's): each is looked at. */
                if (settle_forward(c, r, off) == 0)
                    moved = 1;
                if (c->closing)
                    break;
                continue;
            }
            if (!r->ticket || stuck)
                continue;
            uint64_t result = 0;
            int rc = rec_cluster_ticket(s->cluster, r->ticket, &result, err, sizeof err);
            if (rc == REC_PENDING) {
                if (!c->forwards)
                    break;
                stuck = 1;
                continue;
            }
            r->ticket = 0;
            moved = 1;
            if (rc == 0 && r->patch) {
                unsigned char *p = (unsigned char *)c->qbuf.data + off + r->len - 4;
                uint32_t v = result > UINT32_MAX ? UINT32_MAX : (uint32_t)result;
                p[0] = (unsigned char)(v >> 24);
                p[1] = (unsigned char)(v >> 16);
                p[2] = (unsigned char)(v >> 8);
                p[3] = (unsigned char)v;
            }
            if (rc == 0) {
                r->gen = s->cur_gen;
                r->write = 1;
                s->waiters++;
            } else {
                r->gen = FAILED_GEN;
                fail_answers(s, rc, err, FAILED_GEN);
            }
        }
        if (!c->closing && !c->forwards && c->blocked == BLOCK_FORWARD) {
            set_blocked(c, 0);
            process(c);
        }
    }
    if (moved) {
        flush_all(s);
        wake_for_writes(s);
    }
}

/* One message of the stream, applied as a live call applies it: an event
 * (op NULL) as event.add, a catalogue write as its method. A delete
 * commits on its own, so it waits (REC_PENDING) while a group commit is
 * in flight; commit_done resumes it. */
static int cluster_apply(void *ud, const char *op, const msgpack_object *ev,
                         uint64_t *result) {
    server *s = ud;
    msgpack_object one = {.type = MSGPACK_OBJECT_ARRAY,
                          .via.array = {.size = 1, .ptr = (msgpack_object *)ev}};
    const msgpack_object *params = &one;
    int method = s->event_method;
    unsigned flags = 0;
    if (op) {
        method = rec_dispatch_find(s->d, op, strlen(op));
        flags = method >= 0 ? rec_dispatch_flags(s->d, method) : 0;
        if (!(flags & REC_M_CATALOG))
            return REC_EINVAL;
        if ((flags & REC_M_BARRIER) && s->committing)
            return REC_PENDING;
        params = ev;
    }
    char err[512];
    rec_buf *b = &s->result;
    rec_buf_clear(b);
    int rc = rec_dispatch_call(s->d, method, params, &s->cluster_sess, b, err, sizeof err);
    if (flags & REC_M_BARRIER) /* its own commit failed: the state went back */
        (void)writes_lost(s, REC_ESTORE);
    if (rc) {
        REC_WARN("cluster: %s of the stream was refused: %s", op ? op : "an event", err);
    } else if (op) {
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        if (msgpack_unpack_next(&up, b->data, b->len, NULL) == MSGPACK_UNPACK_SUCCESS &&
            up.data.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            *result = up.data.via.u64;
        msgpack_unpacked_destroy(&up);
    }
    shrink_result(s);
    return rc;
}

/* A read another node forwarded here (or one this node forwarded and its
 * owner did not answer): run as a local call runs it. */
static int cluster_serve(void *ud, const char *name, size_t nl, const msgpack_object *params,
                         rec_buf *out, char *err, size_t errlen) {
    server *s = ud;
    int method = rec_dispatch_find(s->d, name, nl);
    if (method < 0 || !(rec_dispatch_flags(s->d, method) & REC_M_READ_USER)) {
        snprintf(err, errlen, "'%.*s' is not a read another node forwards", (int)nl, name);
        return REC_EINVAL;
    }
    return rec_dispatch_call(s->d, method, params, &s->fwd_sess, out, err, errlen);
}

/* The lists shown in this turn of the loop, in one message (an array of
 * records) to the other nodes. */
static void publish_lists(server *s) {
    if (!s->nlists)
        return;
    unsigned char head[5] = {0xdd};  /* array 32 */
    rec_be32(head + 1, s->nlists);
    rec_buf all = REC_BUF_INIT;
    int rc = rec_buf_append(&all, head, sizeof head) ||
                     rec_buf_append(&all, s->lists.data, s->lists.len)
                 ? REC_ENOMEM : 0;
    if (!rc)
        rc = rec_cluster_share_lists(s->cluster, all.data, all.len);
    if (rc)
        REC_DEBUG("cluster: %u lists shown stay on this node: %s", s->nlists, rec_strerror(rc));
    rec_buf_free(&all);
    s->nlists = 0;
    s->lists.len = 0;
    if (s->lists.cap > ((size_t)1 << 20))
        rec_buf_free(&s->lists);
}

/* Lists another node showed (rec_cluster_on_lists). */
static void apply_lists(void *ud, const msgpack_object *lists) {
    server *s = ud;
    char err[512];
    if (rec_dispatch_apply_record(s->d, lists, err, sizeof err))
        REC_WARN("cluster: a list shown through another node was not recorded: %s", err);
}

/* The record hook (rec_dispatch_set_records): params[0] kept for the end
 * of the turn, or sent at once past 256 KB. */
static int publish_record(void *ud, const msgpack_object *params) {
    server *s = ud;
    msgpack_packer pk;
    rec_rpc_packer(&pk, &s->lists);
    if (params->type != MSGPACK_OBJECT_ARRAY || params->via.array.size != 1 ||
        msgpack_pack_object(&pk, params->via.array.ptr[0]))
        return REC_ENOMEM;
    s->nlists++;
    if (s->lists.len > ((size_t)256 << 10))
        publish_lists(s);
    return 0;
}

static int pack_cluster_info(void *ud, msgpack_packer *pk) {
    return rec_cluster_pack_info(ud, pk);
}

/* Handle one decoded message. Returns 0 to go on, 1 when the connection
 * must wait (barrier), -1 when it is closing. */
static int handle(conn *c, const rec_rpc_msg *m) {
    server *s = c->srv;
    double t0 = mono_us();
    int notify = m->type == REC_RPC_NOTIFY;
    int method = rec_dispatch_find(s->d, m->method, m->method_len);
    char err[512];
    if (method < 0) {
        const char *near = rec_dispatch_suggest(s->d, m->method, m->method_len);
        if (near)
            snprintf(err, sizeof err, "unknown method '%.*s'; did you mean '%s'? "
                     "(sys.methods lists them)", (int)m->method_len, m->method, near);
        else
            snprintf(err, sizeof err, "unknown method '%.*s' (sys.methods lists them)",
                     (int)m->method_len, m->method);
        if (notify) {
            rec_dispatch_notification_failed(s->d);
            REC_WARN("%s: notification failed: %s", c->peer, err);
        } else {
            answer_error(c, m->msgid, REC_EUNKNOWN_METHOD, err, -1, t0);
        }
        return 0;
    }
    unsigned flags = rec_dispatch_flags(s->d, method);
    if (s->o.auth_token && !c->sess.trusted && !c->sess.authed &&
        !(flags & REC_M_NOAUTH)) {
        if (notify) {
            rec_dispatch_notification_failed(s->d);
            REC_WARN("%s: notification before sys.auth refused", c->peer);
        } else {
            answer_error(c, m->msgid, REC_EUNAUTHORIZED,
                         "call sys.auth with the server's token first", method, t0);
        }
        return 0;
    }
    /* Admin methods (admin.eval, script.reload, model.train): the Unix
     * socket, or a TCP client that authenticated with the token. */
    if ((flags & REC_M_ADMIN) && !c->sess.trusted &&
        !(s->o.auth_token && c->sess.authed)) {
        if (notify) {
            rec_dispatch_notification_failed(s->d);
        } else {
            answer_error(c, m->msgid, REC_EUNAUTHORIZED,
                         "admin methods need the Unix socket, or sys.auth on a server "
                         "started with --auth-token", method, t0);
        }
        return 0;
    }
    /* In a cluster, catalogue writes go to the stream (applied in its
     * order, so a delete needs no barrier here), and reads wait for the
     * writes acknowledged before them (read_barrier). */
    if (s->cluster && c->forwards && (flags & (REC_M_CATALOG | REC_M_EVENTS))) {
        set_blocked(c, BLOCK_FORWARD);
        return 1;
    }
    if (s->cluster && (flags & REC_M_CATALOG))
        return publish_write(c, m, method, t0);
    if (s->cluster && (flags & REC_M_EVENTS))
        return publish_events(c, m, method, t0);
    /* A read of one user goes to the owner of the user's partition (not
     * when its barrier here passed: it was to run here). */
    if (s->cluster && !notify && (flags & REC_M_READ_USER) && !c->barrier_rc) {
        int fw = forward(c, m, method, t0);
        if (fw)
            return fw < 0 ? -1 : 0;
    }
    if (s->cluster && !notify && (flags & (REC_M_READ_USER | REC_M_READ_ITEMS))) {
        int rb = read_barrier(c, m, method, t0);
        if (rb)
            return rb == 1 ? 1 : 0;
    }
    /* Deletes commit on the loop thread: they wait until no write is
     * pending or being committed, so commits stay in order; meanwhile
     * other writes wait behind them (resume_blocked). */
    if ((flags & REC_M_BARRIER) && (s->committing || rec_engine_pending(s->e) ||
                                    s->waiters)) {
        set_blocked(c, BLOCK_BARRIER);
        return 1;
    }
    if ((flags & REC_M_WRITE) && !(flags & REC_M_BARRIER) && s->barriers) {
        set_blocked(c, BLOCK_WRITE);
        return 1;
    }

    /* The result goes to a buffer kept by the server (no allocation per
     * request once it has grown), then once into the queued answer. */
    rec_buf *b = &s->result;
    rec_buf_clear(b);
    size_t pending0 = (flags & REC_M_ADMIN) ? rec_engine_pending(s->e) : 0;
    int rc = rec_dispatch_call(s->d, method, &m->params, &c->sess, b, err, sizeof err);
    /* An admin call that wrote (admin.eval's script) is answered as a
     * write: after the commit of what it wrote. */
    int write = (flags & REC_M_WRITE) ||
                ((flags & REC_M_ADMIN) && rec_engine_pending(s->e) != pending0);
    if (writes_lost(s, rc ? rc : REC_ESTORE) && !rc && (write || (flags & REC_M_ADMIN))) {
        rc = REC_ESTORE;
        snprintf(err, sizeof err, "a commit failed while this call ran and dropped "
                 "its writes: %s", rec_engine_errmsg(s->e));
    }
    if (rc == REC_PENDING) {
        /* Answered later (answers_ready): nothing more of this
         * connection runs meanwhile, so its answers stay in order. A
         * notification does not wait. */
        if (notify) {
            c->sess.train_ticket = 0;
            rec_dispatch_record(s->d, method, mono_us() - t0, 0);
        } else {
            c->wait_msgid = m->msgid;
            c->wait_method = method;
            c->wait_t0 = t0;
            set_blocked(c, BLOCK_ANSWER);
        }
        shrink_result(s);
        return 0;
    }
    if (notify) {
        notified(c, method, rc, err, t0);
    } else if (rc) {
        answer_error(c, m->msgid, rc, err, method, t0);
    } else {
        uint64_t gen = 0;
        if (write) {
            gen = s->cur_gen;
            s->waiters++;
        }
        unsigned char head[REC_RPC_HEAD_MAX];
        size_t hl = rec_rpc_result_head(head, m->msgid);
        if (enqueue2(c, head, hl, b->data, b->len, m->msgid, method, gen, write, t0)) {
            REC_ERROR("%s: out of memory; closing", c->peer);
            conn_close(c);
            shrink_result(s);
            return -1;
        }
    }
    shrink_result(s);
    if (notify)
        return 0;
    if (c->sess.close_after) {
        c->close_after = 1;
        if (c->reading) {
            uv_read_stop(&c->h.stream);
            c->reading = 0;
        }
        return -1;
    }
    return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);

static void start_reading(conn *c) {
    if (c->reading || c->closing || c->close_after || c->waiting ||
        c->srv->stopping)
        return;
    if (uv_read_start(&c->h.stream, on_alloc, on_read) == 0)
        c->reading = 1;
}

static void stop_reading(conn *c) {
    if (c->reading) {
        uv_read_stop(&c->h.stream);
        c->reading = 0;
    }
}

/* ---- input memory ---------------------------------------------------------
 * A read lands in the server's scratch buffer when the connection holds no
 * bytes, and its whole messages run from there; only a message cut by the
 * end of a read is copied into a buffer of the connection's own, freed as
 * soon as it is consumed. So an idle connection holds no input memory and
 * a stream of small requests allocates none.
 *
 * Own buffers count against o.input_memory. Above it, a connection asking
 * for more gets none (UV_ENOBUFS: its bytes wait in the kernel) and queues;
 * the first in the queue becomes the leader and alone reads on, so that
 * half-received messages still complete; when memory is given back, the
 * queue reads again in order. The total stays under the budget plus one
 * message and one read. */

#define READ_CHUNK 65536

static void wait_remove(conn *c) {
    server *s = c->srv;
    if (!c->waiting)
        return;
    if (c->wprev)
        c->wprev->wnext = c->wnext;
    else
        s->wait_head = c->wnext;
    if (c->wnext)
        c->wnext->wprev = c->wprev;
    else
        s->wait_tail = c->wprev;
    c->wprev = c->wnext = NULL;
    c->waiting = 0;
}

/* Someone waits for input memory: the first in line becomes the leader
 * and reads on whatever the budget, so that a message half received by
 * everyone still completes. */
static void budget_lead(server *s) {
    if (s->leader || !s->wait_head || s->closed)
        return;
    conn *c = s->wait_head;
    wait_remove(c);
    s->leader = c;
    start_reading(c);
}

/* Memory was given back: waiting connections read again, in order, as
 * many as the free budget can take a read of (those whose next read still
 * does not fit queue again); and there is a leader if anyone waits. */
static void budget_wake(server *s) {
    if (!s->wait_head || s->closed)
        return;
    if (s->in_bytes < s->o.input_memory) {
        size_t n = (s->o.input_memory - s->in_bytes) / READ_CHUNK + 1;
        while (n-- > 0 && s->wait_head) {
            conn *c = s->wait_head;
            wait_remove(c);
            start_reading(c);
        }
    }
    budget_lead(s);
}

static void budget_wait(conn *c) {
    server *s = c->srv;
    stop_reading(c);
    if (s->leader == c)
        s->leader = NULL;
    if (!c->waiting && !c->closing) {
        c->waiting = 1;
        c->wprev = s->wait_tail;
        if (s->wait_tail)
            s->wait_tail->wnext = c;
        else
            s->wait_head = c;
        s->wait_tail = c;
    }
    budget_lead(s);
}

/* The connection's own input buffer, once consumed, goes back. */
static void rbuf_drop(conn *c) {
    server *s = c->srv;
    if (c->borrowed || !c->rbuf.data)
        return;
    s->in_bytes -= c->rbuf.cap;
    rec_buf_free(&c->rbuf);
    c->rpos = 0;
    if (s->leader == c)
        s->leader = NULL;
    budget_wake(s);
}

/* The limits a connection's next message is held to. */
static const rec_rpc_limits *limits_of(const conn *c) {
    const server *s = c->srv;
    return s->o.auth_token && !c->sess.trusted && !c->sess.authed ? &s->prelim
                                                                  : &s->lim;
}

/* Run every complete message buffered, within backpressure limits. */
static void process(conn *c) {
    server *s = c->srv;
    for (;;) {
        /* A small message following the one about to run is decoded ahead,
         * and the dispatcher told of it, so that what it will read (its
         * ids) is on its way to the cache while the current one runs. The
         * two live in the server's two zones, emptied after each message;
         * the one ahead is dropped whenever this loop stops (it is decoded
         * again next time). */
        int ahead = 0; /* m (at rpos) was decoded ahead, into up[cur] */
        int cur = 0;
        rec_rpc_msg m;
        size_t used = 0;
        /* Answers built but not yet written count too: a burst of large
         * answers stops being processed at the pause mark, not after. */
        while (!c->closing && !c->close_after && !c->blocked &&
               c->nreplies < s->o.max_pending &&
               c->out_bytes + c->queued_bytes < s->o.out_pause) {
            const char *buf = c->rbuf.data + c->rpos;
            size_t avail = c->rbuf.len - c->rpos;
            if (avail == 0)
                break;
            if (!ahead) {
                const char *why = NULL;
                int rc = rec_rpc_frame(&c->scan, buf, avail, limits_of(c), &why);
                if (rc == REC_VALUE_PARTIAL)
                    break;
                if (!rc) {
                    used = c->scan.pos;
                    rc = rec_rpc_decode(buf, used, &s->up[cur], &m, &why);
                }
                if (rc) {
                    protocol_fail(c, rc, why ? why : "malformed message");
                    break;
                }
            }
            rec_rpc_msg next;
            size_t next_used = 0;
            ahead = 0;
            if (used < avail) {
                rec_rpc_scan ns;
                memset(&ns, 0, sizeof ns);
                const char *nw = NULL;
                ahead = rec_rpc_frame(&ns, buf + used, avail - used, &s->prelim, &nw) == 0 &&
                        rec_rpc_decode(buf + used, ns.pos, &s->up[!cur], &next, &nw) == 0;
                next_used = ns.pos;
            }
            if (ahead)
                rec_dispatch_prefetch(s->d, rec_dispatch_find(s->d, next.method,
                                                              next.method_len),
                                      &next.params);
            /* A whole request received: past the handshake (with a token,
             * once authenticated). */
            if (!s->o.auth_token || c->sess.trusted)
                c->established = 1;
            int h = handle(c, &m);
            if (c->sess.authed)
                c->established = 1;
            if (h == 1)
                break; /* blocked: the message stays buffered */
            rec_rpc_release(&s->up[cur]);
            memset(&c->scan, 0, sizeof c->scan);
            c->rpos += used;
            if (h < 0)
                break;
            if (ahead) {
                m = next;
                used = next_used;
                cur = !cur;
            }
        }
        rec_rpc_release(&s->up[0]);
        rec_rpc_release(&s->up[1]);
        if (c->closing)
            return;
        if (!c->borrowed) {
            if (c->rpos == c->rbuf.len) {
                rbuf_drop(c);
            } else if (c->rpos > 65536) {
                memmove(c->rbuf.data, c->rbuf.data + c->rpos, c->rbuf.len - c->rpos);
                c->rbuf.len -= c->rpos;
                c->rpos = 0;
            }
        }
        uint32_t before = c->nreplies;
        flush(c);
        if (c->closing)
            return;
        /* Answers released by this flush make room for more requests
         * (also when this call ran none: it may have been called for
         * that release). */
        if (c->nreplies == before || c->rpos == c->rbuf.len)
            break;
    }
    if (!c->closing && !c->blocked && c->nreplies < s->o.max_pending &&
        c->out_bytes + c->queued_bytes < s->o.out_pause)
        start_reading(c);
    else
        stop_reading(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    conn *c = h->data;
    server *s = c->srv;
    (void)suggested;
    *buf = uv_buf_init(NULL, 0); /* none: on_read gets UV_ENOBUFS */
    int over = s->in_bytes >= s->o.input_memory && c != s->leader;
    if (!c->rbuf.data) {
        if (!over)
            *buf = uv_buf_init(s->scratch, READ_CHUNK);
        return;
    }
    if (c->rpos > 0) { /* what is left is the start of a message */
        memmove(c->rbuf.data, c->rbuf.data + c->rpos, c->rbuf.len - c->rpos);
        c->rbuf.len -= c->rpos;
        c->rpos = 0;
    }
    if (c->rbuf.cap - c->rbuf.len < READ_CHUNK / 4) {
        /* Grow by half (a message of n bytes holds at most 1.5 n), or to
         * what the framing knows the message needs at least. */
        size_t cap = c->rbuf.cap + c->rbuf.cap / 2;
        if (cap < c->rbuf.len + READ_CHUNK)
            cap = c->rbuf.len + READ_CHUNK;
        uint64_t least = (uint64_t)c->scan.pos + c->scan.need;
        if (least > cap && least <= limits_of(c)->max_bytes)
            cap = (size_t)least;
        size_t grow = cap - c->rbuf.cap;
        if (over || (s->in_bytes + grow > s->o.input_memory && c != s->leader))
            return;
        char *p = realloc(c->rbuf.data, cap);
        if (!p)
            return;
        s->in_bytes += grow;
        c->rbuf.data = p;
        c->rbuf.cap = cap;
    }
    *buf = uv_buf_init(c->rbuf.data + c->rbuf.len, (unsigned)(c->rbuf.cap - c->rbuf.len));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
    conn *c = st->data;
    server *s = c->srv;
    if (n == UV_ENOBUFS) { /* over the input budget: wait for memory */
        budget_wait(c);
        return;
    }
    if (n < 0) {
        if (n != UV_EOF)
            REC_DEBUG("%s: read error: %s", c->peer, uv_strerror((int)n));
        stop_reading(c);
        /* Answer what was asked, then close (half-closed peers still read). */
        c->close_after = 1;
        flush(c);
        if (!c->nreplies && c->out_bytes == 0)
            conn_close(c);
        return;
    }
    if (n == 0)
        return;
    c->t_read = mono_us();
    c->covered = 0; /* what comes now may follow a write acknowledged since */
    c->reads++;
    if (buf->base != s->scratch) {
        c->rbuf.len += (size_t)n;
        process(c);
        return;
    }
    /* Run the messages from the scratch; keep what is left. */
    c->rbuf = (rec_buf){s->scratch, (size_t)n, READ_CHUNK};
    c->rpos = 0;
    c->borrowed = 1;
    process(c);
    c->borrowed = 0;
    size_t left = c->rbuf.len - c->rpos;
    const char *from = c->rbuf.data + c->rpos;
    c->rbuf = (rec_buf)REC_BUF_INIT;
    c->rpos = 0;
    if (left && !c->closing && !c->close_after) {
        if (rec_buf_append(&c->rbuf, from, left)) {
            REC_ERROR("%s: out of memory for its input; closing", c->peer);
            conn_close(c);
            return;
        }
        s->in_bytes += c->rbuf.cap;
    }
    if (s->leader == c && !c->rbuf.data) {
        s->leader = NULL;
        budget_wake(s);
    }
}

/* ---- connections -------------------------------------------------------- */

static void on_closed(uv_handle_t *h) {
    conn *c = h->data;
    server *s = c->srv;
    /* Unsent answers are dropped; writes behind them still commit (and
     * events held for the cluster are still applied). */
    for (uint32_t i = 0; s->cluster && i < c->nreplies; i++)
        if (c->rq[c->rq_head + i].ticket)
            rec_cluster_forget(s->cluster, c->rq[c->rq_head + i].ticket);
        else if (c->rq[c->rq_head + i].fwd)
            rec_cluster_forward_forget(s->cluster, c->rq[c->rq_head + i].fwd);
    if (s->cluster && c->barrier)
        rec_cluster_barrier_forget(s->cluster, c->barrier);
    free(c->rq);
    rec_buf_free(&c->qbuf);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    if (c->is_unix)
        s->nunix--;
    else
        s->ntcp--;
    rec_dispatch_set_connections(s->d, s->nconns);
    rec_dispatch_session_end(s->d, &c->sess);
    set_blocked(c, 0);
    wait_remove(c);
    if (s->leader == c)
        s->leader = NULL;
    rbuf_drop(c);
    budget_wake(s);
    if (c->admit)
        s->nadmit--;
    else if (s->nadmit && c->family)
        admit_waiting(s, 0);
    REC_DEBUG("%s: closed", c->peer);
    free(c);
}

static void conn_close(conn *c) {
    if (c->closing)
        return;
    c->closing = 1;
    c->reading = 0;
    uv_close(&c->h.handle, on_closed);
}

/* Connections admitted from c's address, c included. O(connections). */
static uint32_t same_address(const server *s, const conn *c) {
    uint32_t n = 1;
    size_t len = c->family == AF_INET ? 4 : 16;
    for (const conn *o = s->conns; o; o = o->next)
        n += o != c && !o->admit && !o->closing && o->family == c->family &&
             !memcmp(o->addr, c->addr, len);
    return n;
}

/* Refuse a connection: a `busy` notification saying why, then close. */
static void refuse(conn *c, const char *why, uint32_t limit) {
    REC_WARN("%s: refused: %s (%u)", c->peer, why, limit);
    rec_buf b = REC_BUF_INIT;
    if (!rec_rpc_notify_error(&b, REC_EBUSY, why))
        enqueue(c, &b, 0, -1, 0, 0, 0);
    rec_buf_free(&b);
    c->close_after = 1;
    flush(c);
}

/* Connections over their address's share wait (unread) for one from that
 * address to close, at most until the next tick: a client that reconnects
 * at once is not refused because its old connections' ends were not read
 * yet. all: refuse those still over (the tick). */
static void admit_waiting(server *s, int all) {
    for (conn *c = s->conns, *next; c && s->nadmit; c = next) {
        next = c->next;
        if (!c->admit || c->closing)
            continue;
        if (same_address(s, c) <= s->o.max_per_address) {
            c->admit = 0;
            s->nadmit--;
            REC_DEBUG("%s: connected", c->peer);
            start_reading(c);
        } else if (all && mono_us() - c->t_open >= 5e5) {
            c->admit = 0;
            s->nadmit--;
            refuse(c, "too many connections from this address", s->o.max_per_address);
        }
    }
}

static void on_connection(uv_stream_t *srv_stream, int status) {
    server *s = srv_stream->data;
    if (status < 0) {
        REC_WARN("accept failed: %s", uv_strerror(status));
        return;
    }
    int is_unix = srv_stream == (uv_stream_t *)&s->pipe;
    conn *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->srv = s;
    c->is_unix = is_unix;
    c->t_open = c->t_read = mono_us();
    int rc = is_unix ? uv_pipe_init(s->loop, &c->h.pipe, 0)
                     : uv_tcp_init(s->loop, &c->h.tcp);
    if (rc) {
        free(c);
        return;
    }
    c->h.handle.data = c;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    if (is_unix)
        s->nunix++;
    else
        s->ntcp++;
    rec_dispatch_set_connections(s->d, s->nconns);
    if (uv_accept(srv_stream, &c->h.stream)) {
        conn_close(c);
        return;
    }
    c->sess.trusted = is_unix;
    if (is_unix) {
        snprintf(c->peer, sizeof c->peer, "unix#%u", s->nconns);
    } else {
        struct sockaddr_storage ss;
        int len = sizeof ss;
        char host[48] = "?";
        int port = 0;
        uv_tcp_nodelay(&c->h.tcp, 1);
        if (!uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &len)) {
            if (ss.ss_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
                uv_ip4_name(in, host, sizeof host);
                port = ntohs(in->sin_port);
                c->family = AF_INET;
                memcpy(c->addr, &in->sin_addr, 4);
            } else {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
                uv_ip6_name(in6, host, sizeof host);
                port = ntohs(in6->sin6_port);
                c->family = AF_INET6;
                memcpy(c->addr, &in6->sin6_addr, 16);
            }
        }
        snprintf(c->peer, sizeof c->peer, "%s:%d", host, port);
    }
    /* TCP and the Unix socket have slots of their own, and one address
     * cannot take all of TCP's. */
    const char *full = NULL;
    uint32_t limit = 0;
    if (s->stopping) {
        full = "too many connections";
    } else if (is_unix ? s->nunix > (limit = s->o.max_unix_connections)
                       : s->ntcp > (limit = s->o.max_connections)) {
        full = "too many connections";
    } else if (!is_unix && c->family && s->o.max_per_address &&
               same_address(s, c) > s->o.max_per_address) {
        c->admit = 1;
        s->nadmit++;
        return;
    }
    if (full) {
        refuse(c, full, limit);
        return;
    }
    REC_DEBUG("%s: connected", c->peer);
    start_reading(c);
}

/* ---- startup and shutdown ---------------------------------------------- */

static void on_handle_closed(uv_handle_t *h) { (void)h; }

static void shutdown_now(server *s) {
    s->closed = 1;
    for (conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        flush(c);
        if (!c->nreplies && c->out_bytes == 0)
            conn_close(c);
        else
            c->close_after = 1;
    }
    rec_dispatch_stop(s->d);
    if (s->cluster)
        publish_lists(s);
    rec_cluster_stop(s->cluster);
    uv_close((uv_handle_t *)&s->check, on_handle_closed);
    uv_close((uv_handle_t *)&s->idle, on_handle_closed);
    uv_close((uv_handle_t *)&s->lazy, on_handle_closed);
    /* The tick stays until every connection is gone: it closes those
     * whose answers are never read. */
    if (!s->conns)
        uv_close((uv_handle_t *)&s->tick, on_handle_closed);
    else
        uv_ref((uv_handle_t *)&s->tick);
    uv_close((uv_handle_t *)&s->sigint, on_handle_closed);
    uv_close((uv_handle_t *)&s->sigterm, on_handle_closed);
}

static void on_signal(uv_signal_t *h, int sig) {
    server *s = h->data;
    if (s->stopping) {
        REC_WARN("second signal: stopping at once");
        uv_stop(s->loop);
        return;
    }
    REC_INFO("signal %d: finishing what is in flight, then stopping", sig);
    s->stopping = 1;
    rec_dispatch_stopping(s->d);
    if (s->has_tcp)
        uv_close((uv_handle_t *)&s->tcp, on_handle_closed);
    if (s->has_pipe)
        uv_close((uv_handle_t *)&s->pipe, on_handle_closed);
    s->has_tcp = s->has_pipe = 0;
    for (conn *c = s->conns; c; c = c->next) {
        stop_reading(c);
        process(c); /* run what was already received */
    }
    /* Wake the loop so the check handle runs even if no I/O is pending. */
    on_check(&s->check);
}

static int is_loopback(const struct sockaddr *sa) {
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        static const unsigned char lo[16] = {0, 0, 0, 0, 0, 0, 0, 0,
                                             0, 0, 0, 0, 0, 0, 0, 1};
        return memcmp(&((const struct sockaddr_in6 *)sa)->sin6_addr, lo, 16) == 0;
    }
    return 0;
}

/* HOST:PORT, [V6]:PORT or NAME:PORT into ss; a name is resolved here, at
 * start-up (the first address it has). -1 with why[] set when it cannot be. */
static int parse_listen(const char *spec, struct sockaddr_storage *ss, char *why,
                        size_t whylen) {
    char host[256];
    const char *colon = strrchr(spec, ':');
    if (!colon || colon == spec || (size_t)(colon - spec) >= sizeof host) {
        snprintf(why, whylen, "expected HOST:PORT (e.g. 127.0.0.1:7700 or localhost:7700)");
        return -1;
    }
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || port < 0 || port > 65535) {
        snprintf(why, whylen, "the port must be a number 0..65535");
        return -1;
    }
    if (host[0] == '[') {
        size_t n = strlen(host);
        if (n < 3 || host[n - 1] != ']' ||
            uv_ip6_addr((host[n - 1] = 0, host + 1), (int)port, (struct sockaddr_in6 *)ss)) {
            snprintf(why, whylen, "not an IPv6 address in brackets");
            return -1;
        }
        return 0;
    }
    if (!uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss))
        return 0;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_ADDRCONFIG}, *res = NULL;
    int gai = getaddrinfo(host, NULL, &hints, &res);
    if (gai || !res) {
        snprintf(why, whylen, "cannot resolve '%s': %s", host,
                 gai ? gai_strerror(gai) : "no address");
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return 0;
}

static int listen_tcp(server *s) {
    const char *spec = s->o.listen ? s->o.listen : "127.0.0.1:7700";
    if (!spec[0])
        return 0;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    char why[300];
    if (parse_listen(spec, &ss, why, sizeof why)) {
        REC_ERROR("--listen %s: %s", spec, why);
        return -1;
    }
    if (!is_loopback((struct sockaddr *)&ss) && !s->o.auth_token && !s->o.insecure) {
        REC_ERROR("refusing to listen on %s without --auth-token (use --insecure "
                  "to allow it anyway)", spec);
        return -1;
    }
    uv_tcp_init(s->loop, &s->tcp);
    s->tcp.data = s;
    s->has_tcp = 1;
    int rc = uv_tcp_bind(&s->tcp, (struct sockaddr *)&ss, 0);
    if (!rc)
        rc = uv_listen((uv_stream_t *)&s->tcp, 511, on_connection);
    if (rc) {
        REC_ERROR("cannot listen on %s: %s", spec, uv_strerror(rc));
        return -1;
    }
    REC_INFO("listening on %s", spec);
    return 0;
}

static int listen_unix(server *s) {
    if (s->o.unix_path && !s->o.unix_path[0])
        return 0;
    if (s->o.unix_path)
        snprintf(s->unix_path, sizeof s->unix_path, "%s", s->o.unix_path);
    else
        snprintf(s->unix_path, sizeof s->unix_path, "%s/recd.sock", s->o.data_dir);
    /* A socket file left by a server that died: nobody answers on it. */
    struct stat st;
    if (lstat(s->unix_path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            REC_ERROR("%s exists and is not a socket", s->unix_path);
            return -1;
        }
        unlink(s->unix_path);
    }
    uv_pipe_init(s->loop, &s->pipe, 0);
    s->pipe.data = s;
    s->has_pipe = 1;
    mode_t old = umask(0177);
    int rc = uv_pipe_bind(&s->pipe, s->unix_path);
    umask(old);
    if (!rc)
        rc = chmod(s->unix_path, 0600) ? uv_translate_sys_error(errno) : 0;
    if (!rc)
        rc = uv_listen((uv_stream_t *)&s->pipe, 511, on_connection);
    if (rc) {
        REC_ERROR("cannot listen on %s: %s", s->unix_path, uv_strerror(rc));
        return -1;
    }
    REC_INFO("listening on %s (mode 0600)", s->unix_path);
    return 0;
}

/* A training is over: the requests that waited for it get their answers,
 * and their connections go on. */
static void answers_ready(void *ud) {
    server *s = ud;
    for (conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->closing || c->blocked != BLOCK_ANSWER)
            continue;
        char err[512];
        rec_buf *b = &s->result;
        rec_buf_clear(b);
        int rc = rec_dispatch_answer(s->d, &c->sess, b, err, sizeof err);
        if (rc == REC_PENDING)
            continue;
        set_blocked(c, 0);
        if (rc) {
            answer_error(c, c->wait_msgid, rc, err, c->wait_method, c->wait_t0);
        } else {
            unsigned char head[REC_RPC_HEAD_MAX];
            size_t hl = rec_rpc_result_head(head, c->wait_msgid);
            if (enqueue2(c, head, hl, b->data, b->len, c->wait_msgid, c->wait_method, 0, 0,
                         c->wait_t0)) {
                REC_ERROR("%s: out of memory; closing", c->peer);
                conn_close(c);
                continue;
            }
        }
        shrink_result(s);
        process(c);
    }
}

/* The dispatcher's runtime: scripts, pipelines, the training schedule on
 * this server's worker threads. */
static int start_scripts(server *s) {
    rec_dispatch_runtime r = {
        .scripts_dir = s->o.scripts_dir, .policies_dir = s->o.policies_dir,
        .train_every = s->o.train_every, .train_share = s->o.train_share,
        .train_quiet = s->o.train_quiet, .train_cpu = s->o.train_cpu,
        .worker = {queue_job, s}, .loop = s->loop,
        .trained = answers_ready, .trained_ud = s,
    };
    return rec_dispatch_start(s->d, &r) ? -1 : 0;
}

void rec_server_opts_default(rec_server_opts *o) {
    memset(o, 0, sizeof *o);
    o->data_dir = "./data";
    o->max_message = 4u << 20;
    o->max_connections = 1024;
    o->max_pending = 1024;
    o->out_pause = 4u << 20;
    o->out_max = 16u << 20;
    o->write_timeout = 30.0;
    o->max_objects = (uint32_t)1 << 20;
    o->input_memory = (size_t)32 << 20;
    o->preauth_max_message = (size_t)64 << 10;
    o->max_unix_connections = 64;
    o->max_per_address = 64;
    o->handshake_timeout = 10.0;
    o->idle_timeout = 300.0;
    rec_engine_opts_default(&o->engine);
    o->engine.checkpoint_interval = 10.0;
    o->train_every = 300.0;
    o->train_share = 0.1;
    o->train_quiet = 2.0;
    o->train_cpu = 0.25;
}

/* Every slot needs a descriptor: raise the soft limit toward the hard one,
 * and say so when even that is short. */
static void raise_fd_limit(const rec_server_opts *o) {
    struct rlimit rl;
    rlim_t want = (rlim_t)o->max_connections + o->max_unix_connections + 64;
    if (getrlimit(RLIMIT_NOFILE, &rl))
        return;
    if (rl.rlim_cur >= want)
        return;
    rlim_t cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
    if (cur > rl.rlim_cur) {
        rl.rlim_cur = cur;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (cur < want)
        REC_WARN("open files limited to %llu (ulimit -n): fewer than the %llu that "
                 "%u TCP and %u Unix connections need", (unsigned long long)cur,
                 (unsigned long long)want, o->max_connections, o->max_unix_connections);
}

int rec_server_run(const rec_server_opts *o, const char *version) {
    server *s = calloc(1, sizeof *s);
    if (!s)
        return 1;
    s->o = *o;
    s->cur_gen = 1;
    rec_rpc_limits_default(&s->lim);
    s->lim.max_bytes = o->max_message;
    s->lim.max_objects = o->max_objects;
    /* Before sys.auth only sys.hello, sys.ping and sys.auth run: small. */
    s->prelim = s->lim;
    s->prelim.max_bytes = o->preauth_max_message < o->max_message
                              ? o->preauth_max_message : o->max_message;
    s->prelim.max_objects = o->max_objects < 1024 ? o->max_objects : 1024;
    s->prelim.max_str = s->prelim.max_str < s->prelim.max_bytes
                            ? s->prelim.max_str : (uint32_t)s->prelim.max_bytes;
    if (!(s->scratch = malloc(READ_CHUNK))) {
        free(s);
        return 1;
    }
    msgpack_unpacked_init(&s->up[0]);
    msgpack_unpacked_init(&s->up[1]);
    raise_fd_limit(o);
#ifdef __GLIBC__
    /* Input buffers and decoded messages come and go in megabytes: map
     * what is large and give it back when freed, rather than let glibc
     * raise its thresholds and keep the freed memory. */
    mallopt(M_MMAP_THRESHOLD, 256 << 10);
    mallopt(M_TRIM_THRESHOLD, 4 << 20);
#endif
    int code = 1;
    char err[512] = "";
    /* A --listen that cannot work is refused before the data folder is
     * created or opened. */
    if (o->listen && o->listen[0]) {
        struct sockaddr_storage ss;
        if (parse_listen(o->listen, &ss, err, sizeof err)) {
            REC_ERROR("--listen %s: %s", o->listen, err);
            free(s->scratch);
            free(s);
            return 2;
        }
    }
    /* The cluster is reached, and the node's name taken, before the data
     * folder is opened: a node that cannot join touches nothing. */
    if (o->cluster && rec_cluster_open(&s->cluster, o->cluster, err, sizeof err)) {
        REC_ERROR("--cluster: %s", err);
        free(s->scratch);
        free(s);
        return 1;
    }
    double t0 = mono_us();
    int rc = rec_engine_open(&s->e, o->data_dir, &o->engine, err, sizeof err);
    if (rc) {
        REC_ERROR("cannot open %s: %s", o->data_dir, err);
        rec_cluster_free(s->cluster);
        free(s);
        return 1;
    }
    REC_INFO("opened %s: %u items, %u users, %llu events in %.1f ms", o->data_dir,
             rec_engine_count(s->e, REC_KIND_ITEM), rec_engine_count(s->e, REC_KIND_USER),
             (unsigned long long)rec_engine_events(s->e), (mono_us() - t0) / 1e3);
    if (o->on_open && o->on_open(s->e, o->on_open_ud)) {
        rec_engine_free(s->e);
        rec_cluster_free(s->cluster);
        free(s);
        return 1;
    }
    rec_dispatch_opts dopts = {.auth_token = o->auth_token, .version = version,
                               .strict = o->strict};
    if (rec_dispatch_new(&s->d, s->e, &dopts)) {
        rec_engine_free(s->e);
        rec_cluster_free(s->cluster);
        free(s);
        return 1;
    }
    s->loop = uv_default_loop();
    if (start_scripts(s)) {
        rec_dispatch_free(s->d);
        rec_engine_free(s->e);
        rec_cluster_free(s->cluster);
        free(s);
        return 1;
    }
    /* Learned state is checkpointed; what came after is in the log. */
    uint64_t replayed = 0;
    t0 = mono_us();
    if ((rc = rec_dispatch_replay(s->d, &replayed))) {
        REC_ERROR("replaying the log after checkpoint %llu failed: %s",
                  (unsigned long long)rec_engine_checkpoint_seq(s->e),
                  rec_engine_errmsg(s->e));
        rec_dispatch_free(s->d);
        rec_engine_free(s->e);
        rec_cluster_free(s->cluster);
        free(s);
        return 1;
    }
    if (replayed)
        REC_INFO("replayed %llu events logged after the last checkpoint in %.1f ms",
                 (unsigned long long)replayed, (mono_us() - t0) / 1e3);
    s->rollbacks = rec_engine_rollbacks(s->e); /* none answered yet */
    if (s->cluster) {
        s->event_method = rec_dispatch_find(s->d, "event.add", 9);
        s->cluster_sess.trusted = 1;
        s->fwd_sess.trusted = 1;
        rec_dispatch_set_info(s->d, "cluster", pack_cluster_info, s->cluster);
        rec_dispatch_set_records(s->d, rec_cluster_slot(s->cluster), publish_record, s);
        rec_cluster_on_lists(s->cluster, apply_lists);
        if (rec_cluster_start(s->cluster, s->loop, s->e, cluster_apply, cluster_progress,
                              cluster_serve, s)) {
            REC_ERROR("--cluster: cannot start consuming");
            rec_dispatch_free(s->d);
            rec_engine_free(s->e);
            rec_cluster_free(s->cluster);
            free(s);
            return 1;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    uv_check_init(s->loop, &s->check);
    s->check.data = s;
    uv_check_start(&s->check, on_check);
    uv_idle_init(s->loop, &s->idle);
    s->idle.data = s;
    uv_timer_init(s->loop, &s->tick);
    s->tick.data = s;
    uv_timer_start(&s->tick, on_tick, 1000, 1000);
    uv_unref((uv_handle_t *)&s->tick);
    uv_timer_init(s->loop, &s->lazy);
    s->lazy.data = s;
    uv_signal_init(s->loop, &s->sigint);
    uv_signal_init(s->loop, &s->sigterm);
    s->sigint.data = s->sigterm.data = s;
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    if (listen_tcp(s) == 0 && listen_unix(s) == 0) {
        if (!s->has_tcp && !s->has_pipe)
            REC_WARN("no listener configured");
        uv_run(s->loop, UV_RUN_DEFAULT);
        code = 0;
    } else {
        if (s->has_tcp)
            uv_close((uv_handle_t *)&s->tcp, on_handle_closed);
        if (s->has_pipe)
            uv_close((uv_handle_t *)&s->pipe, on_handle_closed);
        shutdown_now(s);
        uv_run(s->loop, UV_RUN_DEFAULT);
    }
    /* A second signal may have stopped the loop with a commit or a
     * training out: their workers touch the engine, wait for them. */
    while (s->committing || s->jobs)
        uv_run(s->loop, UV_RUN_ONCE);
    /* After a second signal the cluster's handle may still be open. */
    if (s->cluster) {
        rec_cluster_stop(s->cluster);
        uv_run(s->loop, UV_RUN_NOWAIT);
    }
    if (s->unix_path[0])
        unlink(s->unix_path);
    rc = rec_engine_commit(s->e);
    if (rc) {
        REC_ERROR("final commit failed: %s", rec_engine_errmsg(s->e));
        code = 1;
    }
    if (rec_cluster_fenced(s->cluster))
        code = 1;
    rec_cluster_free(s->cluster);
    rec_dispatch_free(s->d);
    rec_engine_free(s->e);
    rec_buf_free(&s->result);
    rec_buf_free(&s->lists);
    msgpack_unpacked_destroy(&s->up[0]);
    msgpack_unpacked_destroy(&s->up[1]);
    free(s->scratch);
    uv_loop_close(s->loop);
    REC_INFO("stopped");
    free(s);
    return code;
}
