/* tmp_folder.h - a fresh folder under /tmp for one test, and its removal,
 * for the unit tests that open real data folders. */
#ifndef REC_TEST_TMP_FOLDER_H
#define REC_TEST_TMP_FOLDER_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A new folder /tmp/recd-<what>-XXXXXX (the caller frees the path with
 * rec_test_rmdir). */
static inline char *rec_test_mkdir(const char *what) {
    char t[128];
    snprintf(t, sizeof t, "/tmp/recd-%s-XXXXXX", what);
    char *dir = strdup(t);
    assert_non_null(dir);
    assert_non_null(mkdtemp(dir));
    return dir;
}

/* Remove the folder and all below it; frees dir. */
static inline void rec_test_rmdir(char *dir) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(dir);
}

#endif
