/* err.c - names and messages of recd error codes, from REC_ERRNO_MAP. */
#include "err.h"

const char *rec_err_name(int err) {
    switch (err) {
    case REC_OK:
        return "ok";
#define REC_ERR_NAME(code, name, msg)                                         \
    case REC_E##code:                                                         \
        return name;
        REC_ERRNO_MAP(REC_ERR_NAME)
#undef REC_ERR_NAME
    default:
        return "unknown_error";
    }
}

const char *rec_strerror(int err) {
    switch (err) {
    case REC_OK:
        return "success";
#define REC_ERR_MSG(code, name, msg)                                          \
    case REC_E##code:                                                         \
        return msg;
        REC_ERRNO_MAP(REC_ERR_MSG)
#undef REC_ERR_MSG
    default:
        return "unknown error";
    }
}
