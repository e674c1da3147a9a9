/* buf.c - growable byte buffer. */
#include "buf.h"

#include <stdlib.h>

#include "err.h"

int rec_buf_reserve(rec_buf *b, size_t extra) {
    if (extra <= b->cap - b->len)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len)
        return REC_ENOMEM;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->len < extra)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p)
        return REC_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int rec_buf_append(rec_buf *b, const void *p, size_t n) {
    if (n == 0)
        return 0;
    int rc = rec_buf_reserve(b, n);
    if (rc)
        return rc;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int rec_buf_set(rec_buf *b, const void *p, size_t n) {
    b->len = 0;
    return rec_buf_append(b, p, n);
}

void rec_buf_free(rec_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
