/* One reading of what callers send: ids, vectors and events checked once,
 * with one wording, whether they arrive as msgpack over the protocol or as
 * Lua values in a script or the REPL.
 *
 * Each front end describes a value it was given as a rec_field (what kind
 * of value, and its scalar or bytes) and calls the functions here; they
 * build the engine's structures or write the reason into err. Messages name
 * the field ("item is missing", "ts must be seconds since the epoch"); the
 * protocol puts the position in front ("params[2].item is missing"). */
#ifndef REC_INPUT_H
#define REC_INPUT_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"

typedef enum rec_field_kind {
    REC_FIELD_ABSENT = 0, /* not given */
    REC_FIELD_NIL,
    REC_FIELD_BOOL,
    REC_FIELD_INT,        /* v.i; `big` when a positive integer beyond int64 */
    REC_FIELD_FLOAT,      /* v.f */
    REC_FIELD_STR,        /* v.s */
    REC_FIELD_BIN,        /* v.s: raw bytes (msgpack bin, a Lua string read as bytes) */
    REC_FIELD_ARRAY,      /* n elements */
    REC_FIELD_MAP,
    REC_FIELD_TABLE,      /* a Lua table */
    REC_FIELD_OTHER       /* anything else (a function, userdata, ext) */
} rec_field_kind;

typedef struct rec_field {
    rec_field_kind kind;
    int big;
    size_t n; /* ARRAY: element count */
    union {
        int b;
        int64_t i;
        double f;
        struct {
            const char *p;
            size_t n;
        } s;
    } v;
} rec_field;

/* "a string", "an array", ...: for "got ..." in messages. */
const char *rec_field_kind_name(rec_field_kind k);

/* Is the field a number (integer or float)? Its value as a double. */
int rec_field_is_number(const rec_field *f);
double rec_field_number(const rec_field *f);

/* Encode the id in f into key (REC_ID_MAX bytes). Returns the key length,
 * or a negative error with the reason, naming `what`, in err. */
int rec_input_id(const rec_field *f, const char *what, char *key, char *err,
                 size_t errlen);

/* Element i of an ARRAY field, as a field. */
typedef void (*rec_field_at)(void *src, size_t i, rec_field *out);

/* Check the vector in f (an ARRAY of numbers read through at/src, or BIN of
 * little-endian float32) for `space`: *dim gets its length; when out is not
 * NULL (room for REC_DIM_MAX floats, or *dim known beforehand from
 * rec_input_vector_dim) the values are written there. */
int rec_input_vector(const rec_field *f, rec_field_at at, void *src,
                     const char *space, float *out, uint32_t *dim, char *err,
                     size_t errlen);

/* The length a vector field will have, or 0 when it cannot be one (the
 * check then says why). */
uint32_t rec_input_vector_dim(const rec_field *f);

/* item.put / user.put's `active`: -1 when absent, 0 or 1, or an error. */
int rec_input_active(const rec_field *f, rec_kind kind, int *active, char *err,
                     size_t errlen);

/* The fields of an event, in this order. */
enum {
    REC_EVF_USER,
    REC_EVF_ITEM,
    REC_EVF_TYPE,
    REC_EVF_VALUE,
    REC_EVF_TS,
    REC_EVF_REC_ID,
    REC_EVF_STRICT,
    REC_EVF_N
};
/* Their names, then "context" (REC_EVF_CONTEXT): the event's context,
 * handed to rec_input_event as msgpack bytes. */
#define REC_EVF_CONTEXT REC_EVF_N
extern const char *const rec_event_field_names[REC_EVF_N + 1];

/* An event read from fields, with room for its keys. */
typedef struct rec_event_input {
    rec_event ev;
    char ukey[REC_ID_MAX];
    char ikey[REC_ID_MAX];
} rec_event_input;

/* Read and check an event: f holds the fields named above, context (msgpack
 * bytes, clen of them; data may be NULL when only the size is known yet) is
 * the event's context. strict_default applies when the event has no
 * `strict`: a strict event must name a known type and a catalogued item.
 * e may be NULL (no strict checks). Fills in->ev (ts 0 when not given). */
int rec_input_event(rec_engine *e, const rec_field f[REC_EVF_N], int strict_default,
                    const void *context, size_t clen, rec_event_input *in,
                    char *err, size_t errlen);

/* Is t (n bytes) a valid event type name? */
int rec_event_type_ok(const char *t, size_t n);

/* What rec_engine_event refuses in an event it is handed, in the same
 * words (ids are checked when they are looked up). */
int rec_event_check(const rec_event *ev, char *err, size_t errlen);

#endif
