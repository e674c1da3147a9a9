/* log.h - leveled log messages, handed to a handler the host sets.
 *
 * The engine ships inside the Lua module (recd.so) as well as the recd
 * binary, so it never writes to stderr by itself: until the host calls
 * rec_log_set_handler every message is dropped. The recd command line
 * sets rec_log_stderr (one line per message: time, level, text). Library
 * modules below the script host and the server never log: they return
 * errors. */
#ifndef REC_LOG_H
#define REC_LOG_H

typedef enum rec_log_level {
    REC_LOG_DEBUG = 0,
    REC_LOG_INFO = 1,
    REC_LOG_WARN = 2,
    REC_LOG_ERROR = 3,
} rec_log_level;

/* Receives each message at or above the level: msg is borrowed, valid
 * during the call, without a trailing newline. Called on whichever thread
 * logs, so it must be thread-safe (rec_log_stderr is: one fprintf a line). */
typedef void (*rec_log_fn)(rec_log_level level, const char *msg, void *ud);

/* Where messages go from now on; fn NULL: nowhere (the default). Set it
 * before any thread that logs starts. */
void rec_log_set_handler(rec_log_fn fn, void *ud);
/* The handler of the recd tools: "2026-01-02T03:04:05.678Z warn  msg" on
 * stderr. */
void rec_log_stderr(rec_log_level level, const char *msg, void *ud);

/* Parse "debug", "info", "warn", "error"; -1 when unknown. */
int rec_log_parse(const char *s);
void rec_log_set_level(rec_log_level l);
/* Whether a message at l would reach a handler (none set: never). */
int rec_log_enabled(rec_log_level l);
void rec_log(rec_log_level l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define REC_DEBUG(...) rec_log(REC_LOG_DEBUG, __VA_ARGS__)
#define REC_INFO(...) rec_log(REC_LOG_INFO, __VA_ARGS__)
#define REC_WARN(...) rec_log(REC_LOG_WARN, __VA_ARGS__)
#define REC_ERROR(...) rec_log(REC_LOG_ERROR, __VA_ARGS__)

#endif
