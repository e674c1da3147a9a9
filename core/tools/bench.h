/* bench.h - `recd bench`: load generator for a running recd server.
 *
 * Shaped like redis-benchmark: c connections on one libuv loop, each
 * keeping P requests in flight until n requests have been answered; the
 * latency of a request runs from the moment it is queued for writing to the
 * moment its response has been read. Prints requests/s and latency
 * percentiles per test, and one machine line per figure:
 *
 *   BENCH name=recd_<test>_c<C>_P<P> value=<req/s> unit=req/s
 *   BENCH name=recd_<test>_c<C>_P<P>_p99 value=<ms> unit=ms
 *
 * (recd_unix_<test>_... when connected through a Unix socket).
 *
 * Ids are <prefix>u<n> and <prefix>i<n> (--prefix, default "bench-"). A
 * run with a test that stores data (event, recommend, similar) or a load
 * step first asks sys.info and refuses a server that counts items, users
 * or events, unless --force. A test with any error answer prints no
 * figures: the number of failed requests and the first error instead.
 */
#ifndef REC_BENCH_H
#define REC_BENCH_H

/* Run the benchmark; argv[0] is the command name ("bench"), options follow
 * (`recd bench --help` lists them). Prints to stdout (results) and stderr
 * (problems). Returns the process exit status: 0 when every request of
 * every test succeeded, 1 when a test failed, got error replies or the
 * server holds data (without --force), 2 on a usage error. */
int rec_bench_main(int argc, char **argv);

#endif
