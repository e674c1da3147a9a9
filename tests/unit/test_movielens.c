/* test_movielens.c - the MovieLens mapping of `recd serve --movielens`:
 * years from titles, event types by rating, hashed tag words (values
 * computed apart with rec_hash_stable in Python), content vectors by hand,
 * a folder loaded into an engine, and errors that name file and line.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "idmap.h"
#include "movielens.h"
#include "space.h"

#define assert_near(a, b) assert_true(fabs((double)(a) - (double)(b)) < 1e-6)

static char tmpdir[] = "/tmp/recd-test-movielens-XXXXXX";

static void write_file(const char *dir, const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_title_year(void **state) {
    (void)state;
    assert_int_equal(rec_movielens_title_year("Toy Story (1995)"), 1995);
    assert_int_equal(rec_movielens_title_year("Heat (1995) "), 1995);
    assert_int_equal(rec_movielens_title_year("(2001)"), 2001);
    assert_int_equal(rec_movielens_title_year("Babylon 5"), 0);
    assert_int_equal(rec_movielens_title_year("Odd (19a5)"), 0);
    assert_int_equal(rec_movielens_title_year("Short (995)"), 0);
    assert_int_equal(rec_movielens_title_year(""), 0);
}

static void test_event_types(void **state) {
    (void)state;
    assert_int_equal(rec_movielens_types_parse("graded"), REC_MOVIELENS_GRADED);
    assert_int_equal(rec_movielens_types_parse("click"), REC_MOVIELENS_CLICK);
    assert_int_equal(rec_movielens_types_parse("stars"), REC_EINVAL);
    static const struct {
        double r;
        const char *t;
    } graded[] = {{5, "click"}, {4, "click"}, {3.5, "view"}, {2.5, "view"},
                  {2, "dislike"}, {0.5, "dislike"}};
    for (size_t i = 0; i < sizeof graded / sizeof graded[0]; i++) {
        assert_string_equal(rec_movielens_event_type(graded[i].r, REC_MOVIELENS_GRADED),
                            graded[i].t);
        assert_string_equal(rec_movielens_event_type(graded[i].r, REC_MOVIELENS_CLICK), "click");
    }
}

static void test_tag_words(void **state) {
    (void)state;
    /* rec_hash_stable("pixar") = 0xb3769f8ed7d3767d: dim 13, top bit set;
     * "fun" = 0x12842ec670ea9efb: dim 11, +1; "caf" (of "café") dim 4, +1 */
    float t[REC_MOVIELENS_TAG_DIMS] = {0};
    rec_movielens_tag_add(t, "Pixar, PIXAR! fun");
    rec_movielens_tag_add(t, "café");
    for (int d = 0; d < REC_MOVIELENS_TAG_DIMS; d++)
        assert_near(t[d], d == 13 ? -2 : d == 11 || d == 4 ? 1 : 0);
}

static void test_vector(void **state) {
    (void)state;
    float t[REC_MOVIELENS_TAG_DIMS] = {0}, v[REC_MOVIELENS_DIM];
    /* Comedy (4) and Sci-Fi (15); a genre outside the list is left out */
    assert_int_equal(rec_movielens_vector("Comedy|Space Opera|Sci-Fi", t, v), 1);
    for (int d = 0; d < REC_MOVIELENS_DIM; d++)
        assert_near(v[d], d == 4 || d == 15 ? 1 / sqrt(2) : 0);
    assert_int_equal(rec_movielens_vector("(no genres listed)", t, v), 1);
    assert_near(v[19], 1);
    /* tags (-2, 1, 1 above) scaled to length 1, then the whole: |v| = sqrt(3) */
    t[13] = -2, t[11] = 1, t[4] = 1;
    assert_int_equal(rec_movielens_vector("Comedy|Sci-Fi", t, v), 1);
    double s3 = sqrt(3), s6 = sqrt(6);
    assert_near(v[4], 1 / s3);
    assert_near(v[15], 1 / s3);
    assert_near(v[20 + 13], -2 / s6 / s3);
    assert_near(v[20 + 11], 1 / s6 / s3);
    assert_near(v[20 + 4], 1 / s6 / s3);
    memset(t, 0, sizeof t);
    assert_int_equal(rec_movielens_vector("", t, v), 0);
    assert_int_equal(rec_movielens_vector("Unknown", t, v), 0);
}

static rec_engine *open_engine(const char *name) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, name);
    rec_engine_opts eo;
    rec_engine_opts_default(&eo);
    eo.store.no_sync = 1;
    rec_engine *e;
    char err[256] = "";
    assert_int_equal(rec_engine_open(&e, dir, &eo, err, sizeof err), 0);
    return e;
}

static uint32_t lookup(rec_engine *e, rec_kind kind, const char *id) {
    char key[REC_ID_MAX];
    int kl = rec_id_str(key, id, strlen(id));
    return rec_engine_lookup(e, kind, key, (size_t)kl);
}

static void test_load(void **state) {
    (void)state;
    char ml[300];
    snprintf(ml, sizeof ml, "%s/ml", tmpdir);
    assert_int_equal(mkdir(ml, 0700), 0);
    write_file(ml, "movies.csv",
               "movieId,title,genres\n"
               "1,Toy Story (1995),Animation|Comedy\r\n"
               "2,\"Heat, \"\"the\"\" movie\",Action|Crime\n"
               "3,Nothing,\n");
    write_file(ml, "ratings.csv",
               "userId,movieId,rating,timestamp\n"
               "7,2,0.5,300\n7,1,4.0,100\n8,1,3.0,200\n");
    rec_engine *e = open_engine("db");
    char err[256] = "";
    rec_movielens_stats st;
    assert_int_equal(rec_movielens_load(e, ml, REC_MOVIELENS_GRADED, &st, err, sizeof err), 0);
    assert_int_equal(st.movies, 3);
    assert_int_equal(st.with_vector, 2); /* "Nothing": no genres, no tags */
    assert_int_equal(st.tags, 0);        /* no tags.csv: no tags */
    assert_int_equal(st.ratings, 3);
    assert_int_equal(st.by_type[0], 1);
    assert_int_equal(st.by_type[1], 1);
    assert_int_equal(st.by_type[2], 1);
    assert_int_equal(rec_engine_count(e, REC_KIND_ITEM), 3);
    assert_int_equal(rec_engine_count(e, REC_KIND_USER), 2);
    uint32_t heat = lookup(e, REC_KIND_ITEM, "movie:2");
    assert_int_not_equal(heat, REC_IDX_NONE);
    assert_int_not_equal(lookup(e, REC_KIND_USER, "user:7"), REC_IDX_NONE);
    char key[REC_ID_MAX];
    assert_int_equal(rec_engine_lookup(e, REC_KIND_ITEM, key, (size_t)rec_id_int(key, 2)),
                     REC_IDX_NONE); /* string ids only */
    rec_buf props = REC_BUF_INIT;
    int active;
    assert_int_equal(rec_engine_get(e, REC_KIND_ITEM, heat, &props, &active), 0);
    assert_non_null(memmem(props.data, props.len, "Heat, \"the\" movie", 17));
    assert_non_null(memmem(props.data, props.len, "genres", 6));
    assert_null(memmem(props.data, props.len, "year", 4));
    rec_buf_free(&props);
    assert_int_equal(rec_engine_get(e, REC_KIND_ITEM, lookup(e, REC_KIND_ITEM, "movie:1"),
                                    &props, &active), 0);
    assert_non_null(memmem(props.data, props.len, "year", 4));
    rec_buf_free(&props);
    rec_space *s = rec_engine_space(e, "content");
    assert_non_null(s);
    assert_int_equal(s->dim, REC_MOVIELENS_DIM);
    rec_engine_free(e);

    /* every rating a click */
    e = open_engine("db2");
    assert_int_equal(rec_movielens_load(e, ml, REC_MOVIELENS_CLICK, &st, err, sizeof err), 0);
    assert_int_equal(st.by_type[0], 3);

    /* errors name the file and the line */
    write_file(ml, "tags.csv", "userId,movieId,tag,timestamp\n7,x1,funny,1\n");
    assert_int_equal(rec_movielens_load(e, ml, REC_MOVIELENS_GRADED, &st, err, sizeof err),
                     REC_EINVAL);
    assert_non_null(strstr(err, "tags.csv:2: movieId 'x1' is not a number"));
    write_file(ml, "tags.csv", "userId,movieId,tag,timestamp\n7,1,\"funny,1\n");
    assert_int_equal(rec_movielens_load(e, ml, REC_MOVIELENS_GRADED, &st, err, sizeof err),
                     REC_EINVAL);
    assert_non_null(strstr(err, "tags.csv:2: unterminated quote"));
    write_file(ml, "tags.csv", "userId,movieId,tag,timestamp\n");
    write_file(ml, "ratings.csv", "userId,movieId,stars,timestamp\n7,1,4,1\n");
    assert_int_equal(rec_movielens_load(e, ml, REC_MOVIELENS_GRADED, &st, err, sizeof err),
                     REC_EINVAL);
    assert_non_null(strstr(err, "ratings.csv:1: no column rating"));
    write_file(ml, "ratings.csv", "userId,movieId,rating,timestamp\n7,1,4,1\n7,1,four,2\n");
    assert_int_equal(rec_movielens_load(e, ml, REC_MOVIELENS_GRADED, &st, err, sizeof err),
                     REC_EINVAL);
    assert_non_null(strstr(err, "ratings.csv:3: rating or timestamp is not a number"));
    char nowhere[320];
    snprintf(nowhere, sizeof nowhere, "%s/nowhere", tmpdir);
    assert_int_equal(rec_movielens_load(e, nowhere, REC_MOVIELENS_GRADED, &st, err, sizeof err),
                     REC_ENOTFOUND);
    assert_non_null(strstr(err, "nowhere/movies.csv"));
    rec_engine_free(e);
}

static int setup(void **state) {
    (void)state;
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_title_year),
        cmocka_unit_test(test_event_types),
        cmocka_unit_test(test_tag_words),
        cmocka_unit_test(test_vector),
        cmocka_unit_test(test_load),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
