/* train.c - the training schedule (train.h). */
#include "train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "err.h"
#include "ials.h"
#include "learn.h"
#include "log.h"
#include "script.h"

struct rec_train {
    rec_engine *e;
    rec_script_rt *rt;        /* which policies are loaded, or NULL */
    rec_train_opts o;
    rec_learn_ials_job *training;   /* the model being trained in a worker, or NULL */
    rec_learn_ease_job *ease_training; /* with it or alone */
    int busy;                 /* a training job is out */
    int closed;               /* the host is shutting down */
    int paused;               /* the schedule starts nothing (model.schedule) */
    int ease_rc;
    int train_rc;
    double last_train;        /* rec_wall() of the last training start */
    uint64_t train_events;    /* events in the log at that start */
};

int rec_train_new(rec_train **out, rec_engine *e, rec_script_rt *rt,
                  const rec_train_opts *o) {
    rec_train *t = calloc(1, sizeof *t);
    if (!t)
        return REC_ENOMEM;
    t->e = e;
    t->rt = rt;
    t->o = *o;
    *out = t;
    return 0;
}

void rec_train_free(rec_train *t) {
    if (!t)
        return;
    rec_learn_ials_job_free(t->training);
    rec_learn_ease_job_free(t->ease_training);
    free(t);
}

int rec_train_running(const rec_train *t) { return t->busy; }

void rec_train_close(rec_train *t) { t->closed = 1; }

void rec_train_pause(rec_train *t, int paused) { t->paused = paused != 0; }

int rec_train_paused(const rec_train *t) { return t->paused; }

static void train_work(void *arg) {
    rec_train *t = arg;
    /* Lower this worker thread's priority while it trains, so requests
     * on the loop thread win the CPU when cores are few. */
    pid_t tid = (pid_t)syscall(SYS_gettid);
    int old = getpriority(PRIO_PROCESS, (id_t)tid);
    setpriority(PRIO_PROCESS, (id_t)tid, 15);
    t->train_rc = t->training ? rec_learn_ials_job_run(t->training) : 0;
    t->ease_rc = t->ease_training ? rec_learn_ease_job_run(t->ease_training) : 0;
    setpriority(PRIO_PROCESS, (id_t)tid, old);
}

static void train_done(void *arg, int status) {
    rec_train *t = arg;
    rec_learn_ials_job *j = t->training;
    rec_learn_ease_job *ej = t->ease_training;
    t->training = NULL;
    t->ease_training = NULL;
    t->busy = 0;
    if (j) {
        int rc = status < 0 ? REC_EIO : t->train_rc;
        if (!rc && !t->closed)
            rc = rec_learn_ials_job_install(t->e, j);
        if (rc)
            REC_ERROR("ials training failed: %s", rec_strerror(rc));
        else
            REC_INFO("ials trained on %llu interactions in %.2f s",
                     (unsigned long long)rec_learn_ials_job_pairs(j), rec_learn_ials_job_seconds(j));
        rec_learn_ials_job_free(j);
    }
    if (ej) {
        int rc = status < 0 ? REC_EIO : t->ease_rc;
        if (!rc && !t->closed)
            rc = rec_learn_ease_job_install(t->e, ej);
        if (rc)
            REC_ERROR("ease training failed: %s", rec_strerror(rc));
        else
            REC_INFO("ease trained on %u items, %u users in %.2f s", rec_learn_ease_job_items(ej),
                     rec_learn_ease_job_users(ej), rec_learn_ease_job_seconds(ej));
        rec_learn_ease_job_free(ej);
    }
}

static int has_policy(const rec_train *t, const char *name, const char *fn) {
    return t->rt && rec_script_has(t->rt, REC_SCRIPT_POLICY, name, fn);
}

/* A model.train option's number, or -1 for anything else (so that the
 * job's own checks refuse it). */
static double opt_number(const msgpack_object *v) {
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return (double)v->via.u64;
    if (v->type == MSGPACK_OBJECT_FLOAT64 || v->type == MSGPACK_OBJECT_FLOAT32)
        return v->via.f64;
    return -1.0;
}

/* Snapshot on the loop thread, train in a worker, install on return. */
int rec_train_start(rec_train *t, const msgpack_object *opts, char *err, size_t errlen) {
    if (t->busy) {
        snprintf(err, errlen, "a training is already running");
        return REC_EBUSY;
    }
    /* which models: opts.model ("ials", "ease" or "all"); without it, the
     * models whose policies are loaded, or ials alone */
    int want_ials = 1, want_ease = 0;
    const msgpack_object *model = NULL;
    for (uint32_t i = 0; opts && i < opts->via.map.size; i++) {
        const msgpack_object *k = &opts->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == 5 &&
            !memcmp(k->via.str.ptr, "model", 5))
            model = &opts->via.map.ptr[i].val;
    }
    if (model) {
        const char *m = model->type == MSGPACK_OBJECT_STR ? model->via.str.ptr : "";
        size_t ml = model->type == MSGPACK_OBJECT_STR ? model->via.str.size : 0;
        want_ials = (ml == 4 && !memcmp(m, "ials", 4)) || (ml == 3 && !memcmp(m, "all", 3));
        want_ease = (ml == 4 && !memcmp(m, "ease", 4)) || (ml == 3 && !memcmp(m, "all", 3));
        if (!want_ials && !want_ease) {
            snprintf(err, errlen, "model must be \"ials\", \"ease\" or \"all\"");
            return REC_EINVAL;
        }
    } else if (has_policy(t, "ease", "on_load")) {
        want_ease = 1;
        want_ials = has_policy(t, "ials", "on_event");
    }
    rec_learn_ials_opts o;
    rec_learn_ials_opts_default(&o);
    for (uint32_t i = 0; opts && i < opts->via.map.size; i++) {
        const msgpack_object *k = &opts->via.map.ptr[i].key, *v = &opts->via.map.ptr[i].val;
        if (k->type != MSGPACK_OBJECT_STR)
            continue;
        double x = opt_number(v);
        const char *kn = k->via.str.ptr;
        size_t kl = k->via.str.size;
        if (kl == 5 && !memcmp(kn, "space", 5)) { /* not a name: refused below */
            size_t n = v->type == MSGPACK_OBJECT_STR && v->via.str.size < sizeof o.space
                           ? v->via.str.size : 0;
            if (n)
                memcpy(o.space, v->via.str.ptr, n);
            o.space[n] = 0;
        } else if (kl == 7 && !memcmp(kn, "factors", 7)) { /* bad values: refused below */
            o.factors = x >= 1 && x <= REC_IALS_MAX_FACTORS ? (uint32_t)x : 0;
        } else if (kl == 5 && !memcmp(kn, "iters", 5)) {
            o.iters = x >= 0 && x <= 1000 ? (uint32_t)x : UINT32_MAX;
        } else if (kl == 3 && !memcmp(kn, "reg", 3)) {
            o.reg = (float)x;
        } else if (kl == 5 && !memcmp(kn, "alpha", 5)) {
            o.alpha = (float)x;
        }
    }
    int rc = want_ials ? rec_learn_ials_job_new(t->e, &o, &t->training) : 0;
    if (rc) {
        snprintf(err, errlen, "ials: %s", rc == REC_EDIM
                 ? "the space exists with another dimension than factors"
                 : "bad options (factors 1..256, iters 0..1000, reg and alpha > 0)");
        return rc;
    }
    if (want_ease) {
        rec_learn_ease_opts eo;
        rec_learn_ease_opts_default(&eo);
        for (uint32_t i = 0; opts && i < opts->via.map.size; i++) {
            const msgpack_object *k = &opts->via.map.ptr[i].key, *v = &opts->via.map.ptr[i].val;
            double x = opt_number(v);
            if (k->type != MSGPACK_OBJECT_STR)
                continue;
            /* a wrong type or range is refused by rec_learn_ease_job_new */
            if (k->via.str.size == 6 && !memcmp(k->via.str.ptr, "lambda", 6))
                eo.lambda = (float)x;
            else if (k->via.str.size == 9 && !memcmp(k->via.str.ptr, "max_items", 9))
                eo.max_items = x >= 1 && x <= 20000 ? (uint32_t)x : 0;
        }
        if ((rc = rec_learn_ease_job_new(t->e, &eo, &t->ease_training))) {
            rec_learn_ials_job_free(t->training);
            t->training = NULL;
            snprintf(err, errlen, "ease: %s", rc == REC_EINVAL
                     ? "bad options (lambda > 0, max_items 1..20000)" : rec_strerror(rc));
            return rc;
        }
    }
    t->busy = 1;
    t->last_train = rec_wall();
    t->train_events = rec_engine_events(t->e);
    if ((rc = t->o.worker.queue(t->o.worker.ud, train_work, train_done, t))) {
        rec_learn_ials_job_free(t->training);
        t->training = NULL;
        rec_learn_ease_job_free(t->ease_training);
        t->ease_training = NULL;
        t->busy = 0;
        snprintf(err, errlen, "cannot start a worker: %s", rec_strerror(rc));
        return REC_EIO;
    }
    return 0;
}

/* When the "ials" or "ease" policy is loaded, the models are retrained
 * every `every` seconds if events came in meanwhile. */
void rec_train_tick(rec_train *t) {
    if (t->o.every <= 0 || t->busy || t->closed || t->paused || !t->rt ||
        (!has_policy(t, "ials", "on_event") && !has_policy(t, "ease", "on_load")))
        return;
    if (rec_wall() - t->last_train < t->o.every ||
        rec_engine_events(t->e) == t->train_events)
        return;
    char err[256];
    if (rec_train_start(t, NULL, err, sizeof err))
        REC_WARN("scheduled training: %s", err);
}
