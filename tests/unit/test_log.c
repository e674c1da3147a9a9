/* test_log.c - log messages reach the handler the host sets, at or above
 * the level, and nowhere before one is set; rec_log_stderr writes one
 * line per message: time, level, text. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

typedef struct seen {
    int calls;
    rec_log_level level;
    char msg[2048];
} seen;

static void remember(rec_log_level level, const char *msg, void *ud) {
    seen *s = ud;
    s->calls++;
    s->level = level;
    snprintf(s->msg, sizeof s->msg, "%s", msg);
}

static void test_silent_until_a_handler_is_set(void **state) {
    (void)state;
    rec_log_set_level(REC_LOG_DEBUG);
    assert_false(rec_log_enabled(REC_LOG_ERROR));
    REC_ERROR("dropped %d", 1); /* no handler: nothing happens */
    seen s = {0};
    rec_log_set_handler(remember, &s);
    assert_true(rec_log_enabled(REC_LOG_DEBUG));
    REC_WARN("policy '%s' failed: %d", "p", 42);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.level, REC_LOG_WARN);
    assert_string_equal(s.msg, "policy 'p' failed: 42");
    rec_log_set_handler(NULL, NULL);
    REC_ERROR("dropped again");
    assert_int_equal(s.calls, 1);
    assert_false(rec_log_enabled(REC_LOG_ERROR));
}

static void test_level_filters(void **state) {
    (void)state;
    seen s = {0};
    rec_log_set_handler(remember, &s);
    rec_log_set_level(REC_LOG_WARN);
    assert_false(rec_log_enabled(REC_LOG_INFO));
    REC_DEBUG("no");
    REC_INFO("no");
    assert_int_equal(s.calls, 0);
    REC_ERROR("yes");
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.level, REC_LOG_ERROR);
    /* a long message is cut, never overflows */
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    REC_WARN("%s", big);
    assert_int_equal(s.calls, 2);
    assert_true(strlen(s.msg) > 500 && strlen(s.msg) < sizeof big - 1);
    rec_log_set_handler(NULL, NULL);
    rec_log_set_level(REC_LOG_INFO);
}

static void test_stderr_handler_line(void **state) {
    (void)state;
    char path[] = "/tmp/recd-test-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    dup2(fd, 2);
    rec_log_set_handler(rec_log_stderr, NULL);
    REC_WARN("disk at %d%%", 91);
    REC_DEBUG("below the level");
    rec_log_set_handler(NULL, NULL);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char buf[256] = "";
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    unlink(path);
    assert_true(n > 0);
    buf[n] = 0;
    /* 2026-01-02T03:04:05.678Z warn  disk at 91% */
    assert_int_equal(strlen(buf), 24 + 1 + 5 + 1 + strlen("disk at 91%") + 1);
    assert_true(buf[4] == '-' && buf[10] == 'T' && buf[19] == '.' && buf[23] == 'Z');
    assert_string_equal(buf + 24, " warn  disk at 91%\n");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_silent_until_a_handler_is_set),
        cmocka_unit_test(test_level_filters),
        cmocka_unit_test(test_stderr_handler_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
