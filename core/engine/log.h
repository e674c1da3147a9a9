/* log.h - leveled logging to stderr for the server and tools.
 * Library modules below the server never log: they return errors. */
#ifndef REC_LOG_H
#define REC_LOG_H

typedef enum rec_log_level {
    REC_LOG_DEBUG = 0,
    REC_LOG_INFO = 1,
    REC_LOG_WARN = 2,
    REC_LOG_ERROR = 3,
} rec_log_level;

/* Parse "debug", "info", "warn", "error"; -1 when unknown. */
int rec_log_parse(const char *s);
void rec_log_set_level(rec_log_level l);
int rec_log_enabled(rec_log_level l);
void rec_log(rec_log_level l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define REC_DEBUG(...) rec_log(REC_LOG_DEBUG, __VA_ARGS__)
#define REC_INFO(...) rec_log(REC_LOG_INFO, __VA_ARGS__)
#define REC_WARN(...) rec_log(REC_LOG_WARN, __VA_ARGS__)
#define REC_ERROR(...) rec_log(REC_LOG_ERROR, __VA_ARGS__)

#endif
