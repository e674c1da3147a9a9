/* One reading of what callers send: see input.h. */
#include "input.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "idmap.h"

static int say(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int say(char *err, size_t errlen, int code, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

const char *rec_field_kind_name(rec_field_kind k) {
    switch (k) {
    case REC_FIELD_ABSENT: return "nothing";
    case REC_FIELD_NIL: return "nil";
    case REC_FIELD_BOOL: return "a boolean";
    case REC_FIELD_INT: return "an integer";
    case REC_FIELD_FLOAT: return "a float";
    case REC_FIELD_STR: return "a string";
    case REC_FIELD_BIN: return "binary data";
    case REC_FIELD_ARRAY: return "an array";
    case REC_FIELD_MAP: return "a map";
    case REC_FIELD_TABLE: return "a table";
    default: return "a value of another kind";
    }
}

int rec_field_is_number(const rec_field *f) {
    return f->kind == REC_FIELD_INT || f->kind == REC_FIELD_FLOAT;
}

double rec_field_number(const rec_field *f) {
    if (f->kind == REC_FIELD_FLOAT)
        return f->v.f;
    return f->big ? (double)(uint64_t)f->v.i : (double)f->v.i;
}

static int given(const rec_field *f) {
    return f && f->kind != REC_FIELD_ABSENT && f->kind != REC_FIELD_NIL;
}

int rec_input_id(const rec_field *f, const char *what, char *key, char *err,
                 size_t errlen) {
    if (!given(f))
        return say(err, errlen, REC_EINVAL, "%s is missing", what);
    if (f->kind == REC_FIELD_STR) {
        int n = rec_id_str(key, f->v.s.p, f->v.s.n);
        if (n == REC_EINVAL)
            return say(err, errlen, REC_EINVAL,
                       "%s must be a non-empty string of valid UTF-8", what);
        if (n < 0)
            return say(err, errlen, REC_ETOOLARGE, "%s is longer than %d bytes", what,
                       REC_ID_MAX - 1);
        return n;
    }
    if (f->kind == REC_FIELD_INT) {
        if (f->big)
            return say(err, errlen, REC_ERANGE, "%s is beyond int64", what);
        return rec_id_int(key, f->v.i);
    }
    return say(err, errlen, REC_EINVAL, "%s must be a string or an integer, got %s",
               what, rec_field_kind_name(f->kind));
}

uint32_t rec_input_vector_dim(const rec_field *f) {
    if (f->kind == REC_FIELD_BIN)
        return f->v.s.n && f->v.s.n % 4 == 0 && f->v.s.n / 4 <= REC_DIM_MAX
                   ? (uint32_t)(f->v.s.n / 4) : 0;
    if (f->kind == REC_FIELD_ARRAY)
        return f->n && f->n <= REC_DIM_MAX ? (uint32_t)f->n : 0;
    return 0;
}

int rec_input_vector(const rec_field *f, rec_field_at at, void *src,
                     const char *space, float *out, uint32_t *dim, char *err,
                     size_t errlen) {
    if (f->kind == REC_FIELD_BIN) {
        size_t n = f->v.s.n;
        if (n == 0 || n % 4 || n / 4 > REC_DIM_MAX)
            return say(err, errlen, REC_EINVAL, "vector for '%s': packed float32 needs "
                       "4..%d bytes, a multiple of 4; got %zu", space, REC_DIM_MAX * 4, n);
        for (size_t i = 0; i < n / 4; i++) {
            float x;
            memcpy(&x, f->v.s.p + 4 * i, 4);
            if (!isfinite(x))
                return say(err, errlen, REC_ENONFINITE, "vector for '%s': element %zu "
                           "is NaN or infinite", space, i + 1);
            if (out)
                out[i] = x;
        }
        *dim = (uint32_t)(n / 4);
        return 0;
    }
    if (f->kind != REC_FIELD_ARRAY)
        return say(err, errlen, REC_EINVAL, "vector for '%s' must be an array of numbers "
                   "or packed float32, got %s", space, rec_field_kind_name(f->kind));
    if (f->n == 0 || f->n > REC_DIM_MAX)
        return say(err, errlen, REC_EINVAL, "vector for '%s' has %zu elements; 1..%d "
                   "allowed", space, f->n, REC_DIM_MAX);
    for (size_t i = 0; i < f->n; i++) {
        rec_field x;
        at(src, i, &x);
        if (!rec_field_is_number(&x))
            return say(err, errlen, REC_EINVAL, "vector for '%s': element %zu is not a "
                       "number", space, i + 1);
        float v = (float)rec_field_number(&x);
        if (!isfinite(v))
            return say(err, errlen, REC_ENONFINITE, "vector for '%s': element %zu is "
                       "NaN, infinite or beyond float range", space, i + 1);
        if (out)
            out[i] = v;
    }
    *dim = (uint32_t)f->n;
    return 0;
}

int rec_input_active(const rec_field *f, rec_kind kind, int *active, char *err,
                     size_t errlen) {
    *active = -1;
    if (!given(f))
        return 0;
    if (f->kind != REC_FIELD_BOOL || kind != REC_KIND_ITEM)
        return say(err, errlen, REC_EINVAL, "active must be true or false (items only)");
    *active = f->v.b != 0;
    return 0;
}

const char *const rec_event_field_names[REC_EVF_N + 1] = {
    "user", "item", "type", "value", "ts", "rec_id", "strict", "context",
};

int rec_event_type_ok(const char *t, size_t n) {
    if (n == 0 || n > REC_TYPE_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)t[i] < 0x20 || t[i] == '/')
            return 0;
    return 1;
}

int rec_event_check(const rec_event *ev, char *err, size_t errlen) {
    if (!rec_event_type_ok(ev->type, ev->tlen))
        return say(err, errlen, REC_EINVAL, "type must be 1..%d bytes, without control "
                   "characters or '/'", REC_TYPE_NAME_MAX);
    if (ev->has_value && !isfinite(ev->value))
        return say(err, errlen, REC_EINVAL, "value must be a finite number");
    if (ev->ts != 0.0 && !(ev->ts > 0.0 && ev->ts < 1e11))
        return say(err, errlen, REC_ERANGE, "ts must be seconds since the epoch "
                   "(0 < ts < 1e11)");
    if (ev->rlen > 255)
        return say(err, errlen, REC_ETOOLARGE, "rec_id must be a string of up to 255 bytes");
    if (ev->clen > REC_PROPS_MAX)
        return say(err, errlen, REC_ETOOLARGE, "context takes %zu bytes; at most %u",
                   ev->clen, REC_PROPS_MAX);
    return 0;
}

int rec_input_event(rec_engine *e, const rec_field f[REC_EVF_N], int strict_default,
                    const void *context, size_t clen, rec_event_input *in,
                    char *err, size_t errlen) {
    rec_event *ev = &in->ev;
    memset(ev, 0, sizeof *ev);
    int n = rec_input_id(&f[REC_EVF_USER], "user", in->ukey, err, errlen);
    if (n < 0)
        return n;
    ev->user = in->ukey;
    ev->ulen = (size_t)n;
    if ((n = rec_input_id(&f[REC_EVF_ITEM], "item", in->ikey, err, errlen)) < 0)
        return n;
    ev->item = in->ikey;
    ev->ilen = (size_t)n;
    const rec_field *t = &f[REC_EVF_TYPE];
    if (!given(t))
        return say(err, errlen, REC_EINVAL, "type is missing");
    if (t->kind != REC_FIELD_STR)
        return say(err, errlen, REC_EINVAL, "type must be a string, got %s",
                   rec_field_kind_name(t->kind));
    ev->type = t->v.s.p;
    ev->tlen = t->v.s.n;
    const rec_field *v = &f[REC_EVF_VALUE];
    if (given(v)) {
        if (!rec_field_is_number(v))
            return say(err, errlen, REC_EINVAL, "value must be a finite number, got %s",
                       rec_field_kind_name(v->kind));
        ev->value = rec_field_number(v);
        ev->has_value = 1;
    }
    const rec_field *ts = &f[REC_EVF_TS];
    if (given(ts)) {
        if (!rec_field_is_number(ts))
            return say(err, errlen, REC_EINVAL, "ts must be a number, got %s",
                       rec_field_kind_name(ts->kind));
        ev->ts = rec_field_number(ts);
        if (ev->ts == 0.0) /* 0 is "not given" to the engine */
            return say(err, errlen, REC_ERANGE, "ts must be seconds since the epoch "
                       "(0 < ts < 1e11)");
    }
    const rec_field *r = &f[REC_EVF_REC_ID];
    if (given(r)) {
        if (r->kind != REC_FIELD_STR)
            return say(err, errlen, REC_EINVAL, "rec_id must be a string of up to 255 "
                       "bytes, got %s", rec_field_kind_name(r->kind));
        ev->rec_id = r->v.s.p;
        ev->rlen = r->v.s.n;
    }
    int strict = strict_default;
    const rec_field *st = &f[REC_EVF_STRICT];
    if (given(st)) {
        if (st->kind != REC_FIELD_BOOL)
            return say(err, errlen, REC_EINVAL, "strict must be true or false, got %s",
                       rec_field_kind_name(st->kind));
        strict = st->v.b != 0;
    }
    ev->context = context;
    ev->clen = clen;
    int rc = rec_event_check(ev, err, errlen);
    if (rc)
        return rc;
    if (strict && e) {
        /* strict: a typo is an error, not a new item or a type of weight 0 */
        if (rec_engine_type_find(e, ev->type, ev->tlen) < 0)
            return say(err, errlen, REC_EINVAL, "type '%.*s' is not a known event type "
                       "(strict; known types are set in pipelines.lua's event_weights)",
                       (int)ev->tlen, ev->type);
        if (rec_engine_lookup(e, REC_KIND_ITEM, ev->item, ev->ilen) == REC_IDX_NONE)
            return say(err, errlen, REC_ENOTFOUND, "item is not in the catalogue (strict: "
                       "item.put it first)");
    }
    return 0;
}
