/* test_eval.c - what `recd eval` measures with: the metric functions on
 * hand-computed cases, the CSV splitter, the log reader (headers, column
 * maps, thresholds, type maps, time order) and its errors with line
 * numbers, the item loader's content vectors, and JSON strings from any
 * bytes.
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
#include <unistd.h>

#include "err.h"
#include "eval.h"

#define EPS 1e-9
#define assert_near(a, b, eps) assert_true(fabs((double)(a) - (double)(b)) < (eps))

static char tmpdir[] = "/tmp/recd-test-eval-XXXXXX";

static const char *write_file(const char *name, const char *text) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static int read_log(rec_eval_log *log, const char *text, const rec_eval_read_opts *o,
                    char *err, size_t errlen) {
    memset(log, 0, sizeof *log);
    rec_eval_read_opts def;
    rec_eval_read_opts_default(&def);
    return rec_eval_log_read(log, write_file("log.csv", text), o ? o : &def, err, errlen);
}

/* ---- metrics ---------------------------------------------------------- */

static void test_ndcg_by_hand(void **state) {
    (void)state;
    /* hits at ranks 1 and 3 of 5, two relevant items:
     * DCG = 1/log2(2) + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3) */
    uint8_t h[5] = {1, 0, 1, 0, 0};
    assert_near(rec_eval_ndcg(h, 5, 2), 1.5 / (1.0 + 1.0 / log2(3.0)), EPS);
    /* the ideal is over min(ntest, k) ranks: 10 relevant, k = 5, all hit */
    uint8_t all[5] = {1, 1, 1, 1, 1};
    assert_near(rec_eval_ndcg(all, 5, 10), 1.0, EPS);
    /* a single relevant item at rank 2: 1/log2(3) */
    uint8_t r2[3] = {0, 1, 0};
    assert_near(rec_eval_ndcg(r2, 3, 1), 1.0 / log2(3.0), EPS);
    uint8_t none[3] = {0, 0, 0};
    assert_near(rec_eval_ndcg(none, 3, 4), 0.0, EPS);
    assert_near(rec_eval_ndcg(all, 5, 0), 0.0, EPS);
}

static void test_recall_precision_rr(void **state) {
    (void)state;
    uint8_t h[4] = {0, 1, 1, 0};
    assert_near(rec_eval_recall(h, 4, 5), 2.0 / 5.0, EPS);
    assert_near(rec_eval_recall(h, 4, 0), 0.0, EPS);
    assert_near(rec_eval_precision(h, 4), 0.5, EPS);
    assert_near(rec_eval_rr(1), 1.0, EPS);
    assert_near(rec_eval_rr(4), 0.25, EPS);
    assert_near(rec_eval_rr(0), 0.0, EPS);
}

/* ---- CSV -------------------------------------------------------------- */

static void test_split(void **state) {
    (void)state;
    char line[] = "1,\"Heat, the \"\"movie\"\"\",Action|Crime,,x";
    char *f[8];
    assert_int_equal(rec_eval_split(line, ',', f, 8), 5);
    assert_string_equal(f[0], "1");
    assert_string_equal(f[1], "Heat, the \"movie\"");
    assert_string_equal(f[2], "Action|Crime");
    assert_string_equal(f[3], "");
    assert_string_equal(f[4], "x");
    char tsv[] = "a\tb c\t";
    assert_int_equal(rec_eval_split(tsv, '\t', f, 8), 3);
    assert_string_equal(f[1], "b c");
    assert_string_equal(f[2], "");
    char open[] = "1,\"unterminated";
    assert_int_equal(rec_eval_split(open, ',', f, 8), -1);
}

/* ---- logs ------------------------------------------------------------- */

static void test_read_header_and_time_order(void **state) {
    (void)state;
    rec_eval_log log;
    char err[256] = "";
    assert_int_equal(read_log(&log,
                              "userId,movieId,rating,timestamp\n"
                              "1,10,4.0,300\n"
                              "2,abc,2.5,100\n"
                              "\n"
                              "1,11,5,200\n",
                              NULL, err, sizeof err),
                     0);
    assert_int_equal(log.n, 3);
    assert_int_equal(log.users.live, 2);
    assert_int_equal(log.items.live, 3);
    /* sorted by time: lines 3 (ts 100), 5 (200), 2 (300) */
    assert_int_equal(log.ev[0].line, 3);
    assert_int_equal(log.ev[1].line, 5);
    assert_int_equal(log.ev[2].line, 2);
    assert_near(log.ev[0].ts, 100.0, EPS);
    assert_true(fabsf(log.ev[2].rating - 4.0f) < 1e-6f);
    assert_string_equal(log.types[log.ev[0].type], "click");
    /* "10" is the integer id 10, "abc" a string id */
    char key[REC_ID_MAX];
    int kl = rec_id_int(key, 10);
    assert_int_not_equal(rec_idmap_find(&log.items, key, (size_t)kl), REC_IDX_NONE);
    kl = rec_id_str(key, "abc", 3);
    assert_int_not_equal(rec_idmap_find(&log.items, key, (size_t)kl), REC_IDX_NONE);
    rec_eval_log_free(&log);
}

static void test_columns_threshold_types(void **state) {
    (void)state;
    rec_eval_read_opts o;
    rec_eval_read_opts_default(&o);
    o.columns = "ts,-,user,item,rating,type";
    o.sep = '\t';
    o.min_rating = 3.0;
    o.type_map = "buy=purchase,look=view";
    rec_eval_log log;
    char err[256] = "";
    assert_int_equal(read_log(&log,
                              "5\tz\tu1\ti1\t4\tbuy\n"
                              "6\tz\tu1\ti2\t1\tlook\n"
                              "7\tz\tu2\ti1\t3\tlook\n"
                              "8\tz\tu2\ti3\t5\tother\n",
                              &o, err, sizeof err),
                     0);
    assert_int_equal(log.n, 3);
    assert_int_equal(log.skipped, 1);
    assert_string_equal(log.types[log.ev[0].type], "purchase");
    assert_string_equal(log.types[log.ev[1].type], "view");
    assert_string_equal(log.types[log.ev[2].type], "other");
    rec_eval_log_free(&log);

    /* --header skips the first line of a file read by a column map */
    o.columns = "user,item";
    o.header = 1;
    o.sep = 0;
    o.min_rating = NAN;
    assert_int_equal(read_log(&log, "who,what\na,b\nc,d\n", &o, err, sizeof err), 0);
    assert_int_equal(log.n, 2);
    rec_eval_log_free(&log);
}

static void test_errors_name_the_line(void **state) {
    (void)state;
    rec_eval_log log;
    char err[256] = "";
    assert_int_equal(read_log(&log, "", NULL, err, sizeof err), REC_EINVAL);
    assert_non_null(strstr(err, "empty file"));
    rec_eval_log_free(&log);

    assert_int_equal(read_log(&log, "userId,rating\n1,4\n", NULL, err, sizeof err), REC_EINVAL);
    assert_non_null(strstr(err, "no item column"));
    rec_eval_log_free(&log);

    assert_int_equal(read_log(&log, "user,item,ts\n1,2,100\n1,3,yesterday\n", NULL, err,
                              sizeof err),
                     REC_EINVAL);
    assert_non_null(strstr(err, ":3: timestamp 'yesterday' is not a number"));
    rec_eval_log_free(&log);

    assert_int_equal(read_log(&log, "user,item,rating\n1,2,4\n1,3\n", NULL, err, sizeof err),
                     REC_EINVAL);
    assert_non_null(strstr(err, ":3: 2 fields, expected at least 3"));
    rec_eval_log_free(&log);

    assert_int_equal(read_log(&log, "user,item,rating\n1,2,good\n", NULL, err, sizeof err),
                     REC_EINVAL);
    assert_non_null(strstr(err, ":2: rating 'good' is not a number"));
    rec_eval_log_free(&log);

    assert_int_equal(read_log(&log, "user,item\n1,\"open\n", NULL, err, sizeof err), REC_EINVAL);
    assert_non_null(strstr(err, "unterminated quote"));
    rec_eval_log_free(&log);

    assert_int_equal(read_log(&log, "user,item\n", NULL, err, sizeof err), REC_EINVAL);
    assert_non_null(strstr(err, "no events"));
    rec_eval_log_free(&log);

    rec_eval_read_opts o;
    rec_eval_read_opts_default(&o);
    o.columns = "user,item,stars";
    assert_int_equal(read_log(&log, "1,2,3\n", &o, err, sizeof err), REC_EINVAL);
    assert_non_null(strstr(err, "unknown column 'stars'"));
    rec_eval_log_free(&log);

    memset(&log, 0, sizeof log);
    assert_int_equal(rec_eval_log_read(&log, "/nonexistent/x.csv", &o, err, sizeof err),
                     REC_EIO);
    rec_eval_log_free(&log);
}

/* ---- items ------------------------------------------------------------ */

static void test_items_content_vectors(void **state) {
    (void)state;
    const char *items = write_file("movies.csv",
                                   "movieId,title,genres\n"
                                   "1,\"Toy Story (1995)\",Animation|Comedy\n"
                                   "2,\"Heat, the movie\",Action|Crime\n"
                                   "3,Jumanji,Comedy\n"
                                   "4,Nothing,\n");
    char items_path[256];
    snprintf(items_path, sizeof items_path, "%s", items);
    const char *tags = write_file("tags.csv",
                                  "userId,movieId,tag,timestamp\n"
                                  "7,1,pixar,1\n7,1,\"fun, pixar\",2\n9,99,unknown item,3\n");
    char dir[300];
    snprintf(dir, sizeof dir, "%s/db", tmpdir);
    rec_engine_opts eo;
    rec_engine_opts_default(&eo);
    eo.store.no_sync = 1;
    rec_engine *e;
    char err[256] = "";
    assert_int_equal(rec_engine_open(&e, dir, &eo, err, sizeof err), 0);
    size_t n = 0;
    assert_int_equal(rec_eval_load_items(e, items_path, tags, &n, err, sizeof err), 0);
    assert_int_equal(n, 4);
    rec_space *s = rec_engine_space(e, "content");
    assert_non_null(s);
    /* 4 genres met (Animation, Comedy, Action, Crime) + 16 tag dims */
    assert_int_equal(s->dim, 4 + 16);
    char key[REC_ID_MAX];
    int kl = rec_id_int(key, 3);
    uint32_t jumanji = rec_engine_lookup(e, REC_KIND_ITEM, key, (size_t)kl);
    const float *v = rec_space_get(s, REC_KIND_ITEM, jumanji);
    assert_non_null(v);
    /* Comedy alone: the unit vector on dimension 1 */
    assert_true(fabsf(v[1] - 1.0f) < 1e-6f && fabsf(v[0]) < 1e-6f);
    kl = rec_id_int(key, 1);
    const float *toy = rec_space_get(s, REC_KIND_ITEM, rec_engine_lookup(e, REC_KIND_ITEM, key,
                                                                          (size_t)kl));
    double norm = 0, tagpart = 0;
    for (uint32_t d = 0; d < 20; d++) {
        norm += (double)toy[d] * (double)toy[d];
        if (d >= 4)
            tagpart += (double)toy[d] * (double)toy[d];
    }
    assert_true(fabs(norm - 1.0) < 1e-5);
    assert_true(tagpart > 0.05); /* the tags count */
    /* no genres, no tags: no vector */
    kl = rec_id_int(key, 4);
    assert_null(rec_space_get(s, REC_KIND_ITEM, rec_engine_lookup(e, REC_KIND_ITEM, key,
                                                                  (size_t)kl)));
    rec_buf props = REC_BUF_INIT;
    int active;
    kl = rec_id_int(key, 2);
    assert_int_equal(rec_engine_get(e, REC_KIND_ITEM,
                                    rec_engine_lookup(e, REC_KIND_ITEM, key, (size_t)kl),
                                    &props, &active),
                     0);
    assert_non_null(memmem(props.data, props.len, "Heat, the movie", 15));
    rec_buf_free(&props);

    /* a bad file names its line; nothing half loaded counts */
    const char *bad = write_file("bad.csv", "id,vector\n10,0.5 0.5\n11,0.1 zz\n");
    assert_int_equal(rec_eval_load_items(e, bad, NULL, &n, err, sizeof err), REC_EINVAL);
    assert_non_null(strstr(err, ":3: vector is not numbers"));
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

static char *json_of(const char *s) {
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    assert_non_null(f);
    rec_eval_json_str(f, s);
    assert_int_equal(fclose(f), 0);
    return out;
}

static void expect_json(const char *in, const char *want) {
    char *got = json_of(in);
    assert_string_equal(got, want);
    free(got);
}

/* An independent check of the output: a JSON string of printable ASCII
 * (quotes and backslashes escaped), \u00XX escapes and well-formed UTF-8
 * decoded by hand (shortest form, no surrogates, at most U+10FFFF). */
static int valid_json_string(const unsigned char *p) {
    if (*p++ != '"')
        return 0;
    while (*p != '"') {
        if (*p == 0 || *p < 0x20 || *p == 0x7f)
            return 0;
        if (*p == '\\') {
            if (p[1] == '"' || p[1] == '\\') {
                p += 2;
                continue;
            }
            if (p[1] != 'u' || p[2] != '0' || p[3] != '0')
                return 0;
            p += 6;
            continue;
        }
        if (*p < 0x80) {
            p++;
            continue;
        }
        int n = *p >= 0xf0 ? 4 : *p >= 0xe0 ? 3 : *p >= 0xc0 ? 2 : 0;
        if (!n || *p >= 0xf8)
            return 0;
        uint32_t cp = *p & (0x7f >> n);
        for (int i = 1; i < n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i] & 0x3f);
        }
        uint32_t min = n == 2 ? 0x80 : n == 3 ? 0x800 : 0x10000;
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        p += n;
    }
    return p[1] == 0;
}

static void test_json_strings(void **state) {
    (void)state;
    expect_json("plain", "\"plain\"");
    expect_json("a\"b\\c\n\x01\x7f", "\"a\\\"b\\\\c\\u000a\\u0001\\u007f\"");
    /* well-formed: 2, 3 and 4 bytes, and the extremes U+0080, U+10FFFF */
    expect_json("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xc2\x80 \xf4\x8f\xbf\xbf",
                "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xc2\x80 \xf4\x8f\xbf\xbf\"");
#define FFFD "\xef\xbf\xbd"
    expect_json("\xff", "\"" FFFD "\"");                     /* never in UTF-8 */
    expect_json("a\x80" "b", "\"a" FFFD "b\"");            /* stray continuation */
    expect_json("\xc0\xaf", "\"" FFFD FFFD "\"");            /* overlong '/' */
    expect_json("\xe0\x80\xaf", "\"" FFFD FFFD FFFD "\"");  /* overlong, 3 bytes */
    expect_json("\xed\xa0\x80", "\"" FFFD FFFD FFFD "\"");  /* a surrogate */
    expect_json("\xf4\x90\x80\x80", "\"" FFFD FFFD FFFD FFFD "\""); /* > U+10FFFF */
    expect_json("\xe2\x82", "\"" FFFD FFFD "\"");            /* cut short at the end */
    expect_json("\xe2\x82\"", "\"" FFFD FFFD "\\\"\"");     /* cut short by a quote */
#undef FFFD
    /* any bytes at all give a valid JSON string */
    uint64_t x = 88172645463325252ull;
    for (int round = 0; round < 2000; round++) {
        unsigned char in[24];
        for (size_t i = 0; i + 1 < sizeof in; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            in[i] = (unsigned char)(x % 255 + 1);
            if (round % 2 && in[i] < 0x80) /* half the rounds: mostly high bytes */
                in[i] |= 0x80;
        }
        in[sizeof in - 1] = 0;
        char *got = json_of((const char *)in);
        assert_true(valid_json_string((const unsigned char *)got));
        free(got);
    }
    assert_true(valid_json_string((const unsigned char *)"\"ok\""));
    assert_false(valid_json_string((const unsigned char *)"\"\xff\""));
    assert_false(valid_json_string((const unsigned char *)"\"\xed\xa0\x80\""));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ndcg_by_hand),
        cmocka_unit_test(test_recall_precision_rr),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_read_header_and_time_order),
        cmocka_unit_test(test_columns_threshold_types),
        cmocka_unit_test(test_errors_name_the_line),
        cmocka_unit_test(test_items_content_vectors),
        cmocka_unit_test(test_json_strings),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
