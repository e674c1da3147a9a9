/* buf.h - a growable byte buffer and big-endian key helpers. */
#ifndef REC_BUF_H
#define REC_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct rec_buf {
    char *data; /* owned; NULL until the first append */
    size_t len;
    size_t cap;
} rec_buf;

#define REC_BUF_INIT {NULL, 0, 0}

/* Make room for at least `extra` more bytes. 0 or REC_ENOMEM. */
int rec_buf_reserve(rec_buf *b, size_t extra);
/* Append n bytes. 0 or REC_ENOMEM (b unchanged). */
int rec_buf_append(rec_buf *b, const void *p, size_t n);
/* Replace the contents with n bytes. 0 or REC_ENOMEM. */
int rec_buf_set(rec_buf *b, const void *p, size_t n);
static inline void rec_buf_clear(rec_buf *b) { b->len = 0; }
/* Release the memory; b is empty and reusable afterwards. */
void rec_buf_free(rec_buf *b);

static inline void rec_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}
static inline uint32_t rec_get_be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}
static inline void rec_be64(unsigned char *p, uint64_t v) {
    rec_be32(p, (uint32_t)(v >> 32));
    rec_be32(p + 4, (uint32_t)v);
}
static inline uint64_t rec_get_be64(const unsigned char *p) {
    return (uint64_t)rec_get_be32(p) << 32 | rec_get_be32(p + 4);
}

#endif
