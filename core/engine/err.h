/* err.h - recd error codes.
 *
 * Every fallible function in core/ returns 0 on success or a negative REC_E*
 * code (a few also give one of the positive REC_ results of rec_status). One X-macro gives the enum, the stable snake_case names that reach Lua
 * and the wire, and the messages, so the three never drift apart.
 */
#ifndef REC_ERR_H
#define REC_ERR_H

#define REC_ERRNO_MAP(XX)                                                     \
    XX(NOMEM, "no_memory", "out of memory")                                   \
    XX(INVAL, "invalid_params", "invalid argument")                           \
    XX(NOTFOUND, "not_found", "not found")                                    \
    XX(EXISTS, "exists", "already exists")                                    \
    XX(DIM, "dimension_mismatch", "vector dimension does not match the space")\
    XX(NONFINITE, "non_finite", "vector holds NaN or infinity")               \
    XX(RANGE, "out_of_range", "value out of range")                           \
    XX(TOOLARGE, "too_large", "too large")                                    \
    XX(FULL, "map_full", "database reached its maximum map size")             \
    XX(NOSPACE, "disk_full", "no space left on device")                       \
    XX(SCHEMA, "schema_too_new", "data folder written by a newer schema")     \
    XX(CORRUPT, "corrupt", "stored data is corrupt")                          \
    XX(READONLY, "read_only", "database is open read-only")                   \
    XX(IO, "io_error", "input/output error")                                  \
    XX(STORE, "store_error", "storage engine error")                          \
    XX(BUSY, "busy", "resource busy, try again")                              \
    XX(UNKNOWN_METHOD, "unknown_method", "unknown method")                    \
    XX(UNAUTHORIZED, "unauthorized", "not authorized")                        \
    XX(SCRIPT, "script_error", "script error")                                \
    XX(PROTOCOL, "protocol_error", "malformed message")

typedef enum rec_err {
    REC_OK = 0,
    REC__ERR_BASE = -1000, /* keep clear of -errno values */
#define REC_ERR_ENUM(code, name, msg) REC_E##code,
    REC_ERRNO_MAP(REC_ERR_ENUM)
#undef REC_ERR_ENUM
    REC__ERR_END
} rec_err;

/* Positive results: the answers, other than success and failure, that
 * some functions give. Each has its own value, from 1001 up (mirroring the
 * errors' band below -1000), so that none is mistaken for another, for a
 * stray `return 1`, for success (0) or for an error (negative). A
 * function's comment names the ones it may return; they never reach Lua
 * or the wire. */
typedef enum rec_status {
    REC__STATUS_BASE = 1000,
    REC_VALUE_PARTIAL,   /* value.h, rpc.h, client.h: the bytes end before the
                         object does; read more */
    REC_BATCH_SILENT, /* store.h: no operation of the batch touches the key */
    REC_NOT_LOADED,   /* dispatch.c: the default pipeline has no strategy
                         loaded; the built-in recommender answers instead */
    REC_PENDING,      /* train.h, dispatch.h: not yet; the result or the
                         answer comes later */
    REC__STATUS_END
} rec_status;

/* Stable snake_case name of an error ("not_found"); "unknown_error" for
 * codes outside the map. The string is static. */
const char *rec_err_name(int err);

/* Human-readable message for an error code. The string is static. */
const char *rec_strerror(int err);

#endif
