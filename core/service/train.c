/* train.c - the training schedule (train.h). */
#include "train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "ials.h"
#include "learn.h"
#include "log.h"
#include "script.h"
#include "space.h"
#include "value.h"

/* What one training trains, and with which options. */
typedef struct plan {
    unsigned models; /* REC_TRAIN_IALS | REC_TRAIN_EASE */
    rec_learn_ials_opts io;
    rec_learn_ease_opts eo;
} plan;

struct rec_train {
    rec_engine *e;
    rec_script_rt *rt;        /* which policies are loaded, or NULL */
    rec_train_opts o;
    rec_learn_ials_job *training;   /* the model being trained in a worker, or NULL */
    rec_learn_ease_job *ease_training; /* with it or alone */
    int busy;                 /* a training job is out */
    int closed;               /* the host is shutting down */
    int held;                 /* nothing new starts (the host is stopping) */
    int paused;               /* the schedule starts nothing (model.schedule) */
    int ease_rc;
    int train_rc;
    /* the training running (busy) or the last one started */
    double last_start;        /* monotonic seconds of its start (of rec_train_new
                                 before any) */
    uint64_t snap;            /* events in the log at that start */
    /* bursts, as the ticks see the event count */
    uint64_t seen;            /* the count at the last tick that saw it change */
    double seen_at;           /* that tick's monotonic time */
    uint64_t burst_base;      /* the count before the current burst began */
    int between;              /* no burst now (the last one ended) */
    int owed;                 /* a burst that a training began in went quiet
                                 with events past its snapshot */
    plan sched;               /* the options of scheduled trainings: those of
                                 the last model.train into the default spaces */
    /* waiters: trainings are numbered from 1 as they start */
    uint64_t started, ended;  /* the last started, the last over */
    int follow;               /* a training is asked for after the running one */
    plan follow_plan;
    rec_train_result last;    /* the result of training `ended` */
    rec_train_model m[2];     /* ials, ease; running and pending computed */
    /* owed fold-ins solved in workers, up to FOLD_JOBS jobs at once over
     * disjoint users (each kept between jobs for its memory) */
    struct fold_slot {
        rec_train *t;
        rec_learn_fold_job *job;
        int out;              /* in a worker */
    } fold[2];
    int folding;              /* jobs out */
};

static double mono_clock(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The schedule's clock (intervals only). */
static double now_of(const rec_train *t) { return t->o.clock ? t->o.clock() : mono_clock(); }

static double wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int rec_train_new(rec_train **out, rec_engine *e, rec_script_rt *rt,
                  const rec_train_opts *o) {
    rec_train *t = calloc(1, sizeof *t);
    if (!t)
        return REC_ENOMEM;
    t->e = e;
    t->rt = rt;
    t->o = *o;
    t->last_start = t->seen_at = now_of(t);
    t->seen = t->burst_base = rec_engine_events(e);
    t->between = 1;
    rec_learn_ials_opts_default(&t->sched.io);
    rec_learn_ease_opts_default(&t->sched.eo);
    *out = t;
    return 0;
}

void rec_train_free(rec_train *t) {
    if (!t)
        return;
    rec_learn_ials_job_free(t->training);
    rec_learn_ease_job_free(t->ease_training);
    for (size_t i = 0; i < sizeof t->fold / sizeof *t->fold; i++)
        rec_learn_fold_job_free(t->fold[i].job);
    free(t);
}

int rec_train_running(const rec_train *t) { return t->busy; }

/* ---- owed fold-ins (rec_learn_fold_in_later) ----------------------------- */

/* Users per fold job: about 8 ms of solving at f = 64. A second job goes
 * out while more than a job's worth is owed, so that a burst of events
 * from many people is folded in on two cores before the backlog
 * (REC_LEARN_FOLD_BACKLOG) makes the loop thread fold them in itself. */
#define FOLD_USERS 512
#define FOLD_JOBS 2

static void fold_work(void *arg) {
    struct fold_slot *f = arg;
    rec_learn_fold_job_run(f->job);
}

static void fold_done_cb(void *arg, int status) {
    struct fold_slot *f = arg;
    rec_train *t = f->t;
    f->out = 0;
    t->folding--;
    /* not solved (status < 0): the users stay owed, and a reader, the
     * next job or the next checkpoint folds them in */
    int rc = status < 0 || t->closed ? 0 : rec_learn_fold_job_install(t->e, f->job);
    if (rc)
        REC_WARN("ials fold-in: %s", rec_strerror(rc));
    if (!t->closed)
        rec_train_fold(t);
}

void rec_train_fold(rec_train *t) {
    while (!t->closed && t->o.worker.queue && t->folding < FOLD_JOBS && rec_learn_owed(t->e) &&
           (!t->folding || rec_learn_queued(t->e) > FOLD_USERS)) {
        struct fold_slot *f = &t->fold[t->fold[0].out ? 1 : 0];
        f->t = t;
        /* the last job's memory is filled again */
        int rc = rec_learn_fold_job_new(t->e, FOLD_USERS, &f->job);
        if (rc)
            REC_WARN("ials fold-in: %s", rec_strerror(rc));
        if (!f->job || !rec_learn_fold_job_users(f->job))
            return;
        f->out = 1;
        t->folding++;
        if ((rc = t->o.worker.queue(t->o.worker.ud, fold_work, fold_done_cb, f))) {
            /* no worker: solve here rather than leave the users owed */
            fold_work(f);
            fold_done_cb(f, 0);
            return;
        }
    }
}

void rec_train_close(rec_train *t) { t->closed = t->held = 1; }

void rec_train_hold(rec_train *t) { t->held = 1; }

void rec_train_pause(rec_train *t, int paused) { t->paused = paused != 0; }

int rec_train_paused(const rec_train *t) { return t->paused; }

static void train_work(void *arg) {
    rec_train *t = arg;
    /* An ials training held to a share of a core (o.cpu) runs at the
     * loop's priority: the share bounds what it takes, and under load it
     * still gets its share. Unbounded, and for EASE (not sliced), this
     * worker thread's priority is lowered while it trains, so requests on
     * the loop thread win the CPU when cores are few. */
    pid_t tid = (pid_t)syscall(SYS_gettid);
    int old = getpriority(PRIO_PROCESS, (id_t)tid);
    int paced = t->o.cpu > 0.0 && t->o.cpu < 1.0;
    if (!paced)
        setpriority(PRIO_PROCESS, (id_t)tid, 15);
    t->train_rc = t->training ? rec_learn_ials_job_run(t->training) : 0;
    setpriority(PRIO_PROCESS, (id_t)tid, 15);
    t->ease_rc = t->ease_training ? rec_learn_ease_job_run(t->ease_training) : 0;
    setpriority(PRIO_PROCESS, (id_t)tid, old);
}

static void train_done_cb(void *arg, int status);

static int has_policy(const rec_train *t, const char *name, const char *fn) {
    return t->rt && rec_script_has(t->rt, REC_SCRIPT_POLICY, name, fn);
}

/* Does the policy learn from events (on_event or on_events)? */
static int has_events_policy(const rec_train *t, const char *name) {
    return has_policy(t, name, "on_events") || has_policy(t, name, "on_event");
}

/* The models of the loaded policies: the ones the schedule trains. */
static unsigned policy_models(const rec_train *t) {
    return (has_events_policy(t, "ials") ? REC_TRAIN_IALS : 0) |
           (has_policy(t, "ease", "on_load") ? REC_TRAIN_EASE : 0);
}

/* A model.train option's number, or -1 for anything else (so that the
 * checks refuse it). */
static double opt_number(const msgpack_object *v) {
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return (double)v->via.u64;
    if (v->type == MSGPACK_OBJECT_FLOAT64 || v->type == MSGPACK_OBJECT_FLOAT32)
        return v->via.f64;
    return -1.0;
}

/* model.train's options as a plan, checked as the jobs will check them
 * (so that a training asked to follow the running one is refused at
 * once). */
static int plan_of(const rec_train *t, const msgpack_object *opts, plan *p, char *err,
                   size_t errlen) {
    /* which models: opts.model ("ials", "ease" or "all"); without it, the
     * models whose policies are loaded, or ials alone */
    const msgpack_object *model = NULL;
    for (uint32_t i = 0; opts && i < opts->via.map.size; i++)
        if (rec_value_is_str(&opts->via.map.ptr[i].key, "model"))
            model = &opts->via.map.ptr[i].val;
    p->models = REC_TRAIN_IALS;
    if (model) {
        int all = model->type == MSGPACK_OBJECT_STR && rec_value_is_str(model, "all");
        p->models = (all || rec_value_is_str(model, "ials") ? REC_TRAIN_IALS : 0) |
                    (all || rec_value_is_str(model, "ease") ? REC_TRAIN_EASE : 0);
        if (!p->models) {
            snprintf(err, errlen, "model must be \"ials\", \"ease\" or \"all\"");
            return REC_EINVAL;
        }
    } else if (has_policy(t, "ease", "on_load")) {
        p->models = REC_TRAIN_EASE | (has_events_policy(t, "ials") ? REC_TRAIN_IALS : 0);
    }
    rec_learn_ials_opts *o = &p->io;
    rec_learn_ials_opts_default(o);
    rec_learn_ease_opts *eo = &p->eo;
    rec_learn_ease_opts_default(eo);
    for (uint32_t i = 0; opts && i < opts->via.map.size; i++) {
        const msgpack_object *k = &opts->via.map.ptr[i].key, *v = &opts->via.map.ptr[i].val;
        double x = opt_number(v);
        if (rec_value_is_str(k, "space")) { /* not a name: refused below */
            size_t n = v->type == MSGPACK_OBJECT_STR && v->via.str.size < sizeof o->space
                           ? v->via.str.size : 0;
            if (n)
                memcpy(o->space, v->via.str.ptr, n);
            o->space[n] = 0;
        } else if (rec_value_is_str(k, "factors")) { /* bad values: refused below */
            o->factors = x >= 1 && x <= REC_IALS_MAX_FACTORS ? (uint32_t)x : 0;
        } else if (rec_value_is_str(k, "iters")) {
            o->iters = x >= 0 && x <= 1000 ? (uint32_t)x : UINT32_MAX;
        } else if (rec_value_is_str(k, "reg")) {
            o->reg = (float)x;
        } else if (rec_value_is_str(k, "alpha")) {
            o->alpha = (float)x;
        } else if (rec_value_is_str(k, "lambda")) {
            eo->lambda = (float)x;
        } else if (rec_value_is_str(k, "max_items")) {
            eo->max_items = x >= 1 && x <= 20000 ? (uint32_t)x : 0;
        }
    }
    if (p->models & REC_TRAIN_IALS) {
        if (rec_space_name_ok(o->space) || o->factors < 1 || o->factors > REC_IALS_MAX_FACTORS ||
            o->iters > 1000 || !(o->reg > 0.0f) || !isfinite(o->reg) || !(o->alpha > 0.0f) ||
            !isfinite(o->alpha)) {
            snprintf(err, errlen, "ials: bad options (factors 1..256, iters 0..1000, reg and "
                     "alpha > 0)");
            return REC_EINVAL;
        }
        rec_space *s = rec_engine_space(t->e, o->space);
        if (s && s->dim != o->factors) {
            snprintf(err, errlen, "ials: the space exists with another dimension than factors");
            return REC_EDIM;
        }
    }
    if ((p->models & REC_TRAIN_EASE) &&
        (rec_space_name_ok(eo->name) || !(eo->lambda > 0.0f) || !isfinite(eo->lambda) ||
         eo->max_items < 1 || eo->max_items > 20000)) {
        snprintf(err, errlen, "ease: bad options (lambda > 0, max_items 1..20000)");
        return REC_EINVAL;
    }
    return 0;
}

/* Snapshot on the loop thread, train in a worker, install on return. */
static int launch(rec_train *t, const plan *p, char *err, size_t errlen) {
    rec_learn_ials_opts io = p->io;
    if (t->o.cpu > 0.0 && t->o.cpu < 1.0)
        io.cpu = t->o.cpu;
    int rc = (p->models & REC_TRAIN_IALS) ? rec_learn_ials_job_new(t->e, &io, &t->training)
                                           : 0;
    if (rc) {
        snprintf(err, errlen, "ials: %s", rc == REC_EDIM
                 ? "the space exists with another dimension than factors"
                 : rc == REC_EINVAL
                 ? "bad options (factors 1..256, iters 0..1000, reg and alpha > 0)"
                 : rec_strerror(rc));
        return rc;
    }
    if ((p->models & REC_TRAIN_EASE) &&
        (rc = rec_learn_ease_job_new(t->e, &p->eo, &t->ease_training))) {
        rec_learn_ials_job_free(t->training);
        t->training = NULL;
        snprintf(err, errlen, "ease: %s", rc == REC_EINVAL
                 ? "bad options (lambda > 0, max_items 1..20000)" : rec_strerror(rc));
        return rc;
    }
    t->busy = 1;
    if ((rc = t->o.worker.queue(t->o.worker.ud, train_work, train_done_cb, t))) {
        rec_learn_ials_job_free(t->training);
        t->training = NULL;
        rec_learn_ease_job_free(t->ease_training);
        t->ease_training = NULL;
        t->busy = 0;
        snprintf(err, errlen, "cannot start a worker: %s", rec_strerror(rc));
        return REC_EIO;
    }
    t->last_start = now_of(t);
    t->snap = rec_engine_events(t->e);
    t->owed = 0;
    t->started++;
    /* model.train into the default spaces: its options become the
     * schedule's */
    rec_learn_ials_opts dio;
    rec_learn_ials_opts_default(&dio);
    if ((p->models & REC_TRAIN_IALS) && !strcmp(p->io.space, dio.space))
        t->sched.io = p->io;
    rec_learn_ease_opts deo;
    rec_learn_ease_opts_default(&deo);
    if ((p->models & REC_TRAIN_EASE) && !strcmp(p->eo.name, deo.name))
        t->sched.eo = p->eo;
    return 0;
}

/* A training asked for that cannot start: it is over at once, failed. */
static void fail_next(rec_train *t, int rc, const char *why) {
    t->started++;
    t->ended = t->started;
    memset(&t->last, 0, sizeof t->last);
    t->last.rc = rc;
    snprintf(t->last.err, sizeof t->last.err, "%s", why);
}

/* Why the schedule would train now (NULL: it would not): a burst owed,
 * the share, or the timer. */
static const char *due(const rec_train *t, double now, uint64_t ev) {
    if (ev == t->snap)
        return NULL;
    if (t->owed)
        return "the events went quiet";
    if (t->o.share > 0 && ev > t->snap &&
        (double)(ev - t->snap) > t->o.share * (double)t->snap)
        return "the events grew by the share";
    if (t->o.every > 0 && now - t->last_start >= t->o.every)
        return "the timer";
    return NULL;
}

/* Start the scheduled training when due. */
static void schedule(rec_train *t) {
    unsigned models = policy_models(t);
    if (t->busy || t->held || t->paused || !models)
        return;
    double now = now_of(t);
    uint64_t ev = rec_engine_events(t->e);
    const char *why = due(t, now, ev);
    if (!why)
        return;
    plan p = t->sched;
    p.models = models;
    char err[256];
    if (launch(t, &p, err, sizeof err)) {
        REC_WARN("scheduled training: %s", err);
        /* not again before the next reason */
        t->last_start = now;
        t->snap = ev;
        t->owed = 0;
        return;
    }
    REC_INFO("training %s%s%s on %llu events (%s)", models & REC_TRAIN_IALS ? "ials" : "",
             models == (REC_TRAIN_IALS | REC_TRAIN_EASE) ? " and " : "",
             models & REC_TRAIN_EASE ? "ease" : "", (unsigned long long)ev, why);
}

static void train_done_cb(void *arg, int status) {
    rec_train *t = arg;
    rec_learn_ials_job *j = t->training;
    rec_learn_ease_job *ej = t->ease_training;
    t->training = NULL;
    t->ease_training = NULL;
    t->busy = 0;
    rec_train_result r;
    memset(&r, 0, sizeof r);
    r.events = t->snap;
    r.seconds = now_of(t) - t->last_start;
    double at = wall();
    if (j) {
        int rc = status < 0 ? REC_EIO : t->train_rc;
        if (!rc && !t->closed)
            rc = rec_learn_ials_job_install(t->e, j);
        if (rc) {
            REC_ERROR("ials training failed: %s", rec_strerror(rc));
            r.rc = rc;
            snprintf(r.err, sizeof r.err, "ials training failed: %s", rec_strerror(rc));
        } else if (t->closed) {
            r.rc = REC_EBUSY;
            snprintf(r.err, sizeof r.err, "the server is stopping: ials not installed");
        } else {
            REC_INFO("ials trained on %llu interactions in %.2f s",
                     (unsigned long long)rec_learn_ials_job_pairs(j), rec_learn_ials_job_seconds(j));
            r.models |= REC_TRAIN_IALS;
            rec_train_model *m = &t->m[0];
            m->events = t->snap;
            m->trained_at = at;
            m->seconds = rec_learn_ials_job_seconds(j);
            m->trainings++;
        }
        rec_learn_ials_job_free(j);
    }
    if (ej) {
        int rc = status < 0 ? REC_EIO : t->ease_rc;
        if (!rc && !t->closed)
            rc = rec_learn_ease_job_install(t->e, ej);
        if (rc) {
            REC_ERROR("ease training failed: %s", rec_strerror(rc));
            if (!r.rc) {
                r.rc = rc;
                snprintf(r.err, sizeof r.err, "ease training failed: %s", rec_strerror(rc));
            }
        } else if (t->closed) {
            r.rc = REC_EBUSY;
            snprintf(r.err, sizeof r.err, "the server is stopping: ease not installed");
        } else {
            REC_INFO("ease trained on %u items, %u users in %.2f s", rec_learn_ease_job_items(ej),
                     rec_learn_ease_job_users(ej), rec_learn_ease_job_seconds(ej));
            r.models |= REC_TRAIN_EASE;
            rec_train_model *m = &t->m[1];
            m->events = t->snap;
            m->trained_at = at;
            m->seconds = rec_learn_ease_job_seconds(ej);
            m->trainings++;
        }
        rec_learn_ease_job_free(ej);
    }
    t->ended = t->started;
    t->last = r;
    /* a training asked to follow starts now; the schedule's wait for
     * the next tick */
    if (t->follow) {
        t->follow = 0;
        char err[256];
        int rc = t->held ? REC_EBUSY : launch(t, &t->follow_plan, err, sizeof err);
        if (t->held)
            fail_next(t, rc, "the server is stopping");
        else if (rc)
            fail_next(t, rc, err);
    }
    if (t->o.over)
        t->o.over(t->o.over_ud);
}

int rec_train_start(rec_train *t, const msgpack_object *opts, char *err, size_t errlen) {
    if (t->held) {
        snprintf(err, errlen, "the server is stopping");
        return REC_EBUSY;
    }
    if (t->busy) {
        snprintf(err, errlen, "a training is already running");
        return REC_EBUSY;
    }
    plan p;
    int rc = plan_of(t, opts, &p, err, errlen);
    return rc ? rc : launch(t, &p, err, errlen);
}

int rec_train_start_wait(rec_train *t, const msgpack_object *opts, uint64_t *ticket,
                         char *err, size_t errlen) {
    plan p;
    int rc = plan_of(t, opts, &p, err, errlen);
    if (rc)
        return rc;
    if (t->held) {
        snprintf(err, errlen, "the server is stopping");
        return REC_EBUSY;
    }
    if (!t->busy) {
        if ((rc = launch(t, &p, err, errlen)))
            return rc;
        *ticket = t->started;
        return 0;
    }
    if (!t->follow) {
        t->follow = 1;
        t->follow_plan = p;
    }
    *ticket = t->started + 1;
    return 0;
}

int rec_train_result_get(const rec_train *t, uint64_t ticket, rec_train_result *out) {
    if (ticket > t->ended)
        return REC_PENDING;
    *out = t->last;
    return 0;
}

void rec_train_model_get(const rec_train *t, int model, rec_train_model *out) {
    unsigned bit = model == REC_TRAIN_EASE ? REC_TRAIN_EASE : REC_TRAIN_IALS;
    *out = t->m[bit == REC_TRAIN_EASE];
    out->running = t->busy && (bit == REC_TRAIN_EASE ? t->ease_training != NULL
                                                     : t->training != NULL);
    uint64_t ev = rec_engine_events(t->e);
    /* owed once quiet: a burst that a training began in has events past
     * its snapshot */
    int armed = t->o.quiet > 0 && t->snap > t->burst_base && t->seen != t->snap;
    int sched = !t->held && !t->paused && (policy_models(t) & bit) &&
                (armed || due(t, now_of(t), ev));
    out->pending = (t->follow && (t->follow_plan.models & bit)) || sched;
}

/* The ticks watch the event count: a tick that sees it unchanged
 * `quiet` seconds after the tick that last saw it change ends a burst
 * (so the events stopped `quiet` to `quiet` + one tick ago), and a
 * training is owed when one began in it and events came after its
 * snapshot; the next change begins a burst. */
void rec_train_tick(rec_train *t) {
    double now = now_of(t);
    uint64_t ev = rec_engine_events(t->e);
    if (ev == t->seen) {
        if (t->o.quiet > 0 && now - t->seen_at >= t->o.quiet) {
            t->between = 1;
            if (t->snap > t->burst_base && t->seen != t->snap)
                t->owed = 1;
        }
    } else {
        if (t->between)
            t->burst_base = t->seen;
        t->between = 0;
        t->seen = ev;
        t->seen_at = now;
    }
    schedule(t);
}
