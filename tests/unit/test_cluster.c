/* test_cluster.c - what the cluster module decides without a cluster: the
 * partition of a user (fixed for ever: it names the stream's subjects), the
 * options it refuses, an unreachable cluster, and the sequence a data
 * folder stores. The cluster itself is tested by make test-cluster
 * (tests/cluster/run.py), against real nats-servers. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ftw.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster.h"
#include "err.h"

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

/* The same key goes to the same partition on every machine and in every
 * version: these values must never change (a stream made by one version
 * is read by the next). */
static void test_partition_is_fixed(void **state) {
    (void)state;
    assert_int_equal(rec_cluster_partition("abc", 3, 64), 55);
    assert_int_equal(rec_cluster_partition("su1", 3, 64), 9);
    assert_int_equal(rec_cluster_partition("su4", 3, 64), 51);
    assert_int_equal(rec_cluster_partition("su1", 3, 7), 3);
    assert_int_equal(rec_cluster_partition("", 0, 64), 19);
    assert_int_equal(rec_cluster_partition("anything", 8, 1), 0);
}

/* Users spread over the partitions: each of 64 gets within 40% of its
 * share of 12,800 users. */
static void test_partition_spreads(void **state) {
    (void)state;
    unsigned count[64] = {0};
    for (int i = 0; i < 12800; i++) {
        char k[32];
        int n = snprintf(k, sizeof k, "suser-%d", i);
        uint32_t p = rec_cluster_partition(k, (size_t)n, 64);
        assert_true(p < 64);
        count[p]++;
    }
    for (int p = 0; p < 64; p++) {
        assert_true(count[p] > 120);
        assert_true(count[p] < 280);
    }
}

static void test_open_refuses_bad_options(void **state) {
    (void)state;
    rec_cluster *c = (rec_cluster *)1;
    char err[256];
    rec_cluster_opts o = {.servers = NULL};
    assert_int_equal(rec_cluster_open(&c, &o, err, sizeof err), REC_EINVAL);
    assert_null(c);
    assert_non_null(strstr(err, "--cluster needs nats://"));
    o.servers = "nats://127.0.0.1:1";
    o.node = "a.b";
    assert_int_equal(rec_cluster_open(&c, &o, err, sizeof err), REC_EINVAL);
    assert_non_null(strstr(err, "--node 'a.b'"));
    o.node = "a";
    o.partitions = REC_CLUSTER_MAX_PARTITIONS + 1;
    assert_int_equal(rec_cluster_open(&c, &o, err, sizeof err), REC_EINVAL);
    assert_non_null(strstr(err, "--partitions"));
}

/* A port nobody listens on: refused at once, with the address in the
 * message. */
static void test_open_unreachable(void **state) {
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd); /* the port is free and closed */
    char url[64], err[512];
    snprintf(url, sizeof url, "nats://127.0.0.1:%u", ntohs(a.sin_port));
    rec_cluster_opts o = {.servers = url, .node = "t", .connect_timeout = 1};
    rec_cluster *c = NULL;
    assert_int_equal(rec_cluster_open(&c, &o, err, sizeof err), REC_EIO);
    assert_null(c);
    assert_non_null(strstr(err, "cannot reach the NATS cluster at"));
    assert_non_null(strstr(err, url));
}

/* A folder that never was in a cluster stores sequence 0. */
static void test_stored_seq_of_a_new_folder(void **state) {
    (void)state;
    char root[] = "/tmp/test_cluster_XXXXXX";
    assert_non_null(mkdtemp(root));
    rec_engine *e;
    char err[256];
    assert_int_equal(rec_engine_open(&e, root, NULL, err, sizeof err), 0);
    assert_int_equal(rec_cluster_stored_seq(e), 0);
    rec_engine_free(e);
    assert_int_equal(nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_partition_is_fixed),
        cmocka_unit_test(test_partition_spreads),
        cmocka_unit_test(test_open_refuses_bad_options),
        cmocka_unit_test(test_open_unreachable),
        cmocka_unit_test(test_stored_seq_of_a_new_folder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
