/* log.c - leveled messages to the host's handler; rec_log_stderr, the
 * tools' handler, writes one line per message: time, level, text. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static rec_log_level min_level = REC_LOG_INFO;
static rec_log_fn handler;   /* NULL: messages are dropped */
static void *handler_ud;
static const char *const names[] = {"debug", "info", "warn", "error"};

int rec_log_parse(const char *s) {
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    if (strcmp(s, "warning") == 0)
        return REC_LOG_WARN;
    return -1;
}

void rec_log_set_level(rec_log_level l) { min_level = l; }

void rec_log_set_handler(rec_log_fn fn, void *ud) {
    handler = fn;
    handler_ud = ud;
}

int rec_log_enabled(rec_log_level l) { return handler && l >= min_level; }

void rec_log(rec_log_level l, const char *fmt, ...) {
    rec_log_fn fn = handler;
    if (!fn || l < min_level)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fn(l, msg, handler_ud);
}

void rec_log_stderr(rec_log_level l, const char *msg, void *ud) {
    (void)ud;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char line[1024];
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L,
                     (unsigned)l < 4 ? names[l] : "?");
    if (n > 0 && (size_t)n < sizeof line)
        snprintf(line + n, sizeof line - (size_t)n, "%s", msg);
    fprintf(stderr, "%s\n", line);
}
