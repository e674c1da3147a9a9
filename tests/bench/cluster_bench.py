#!/usr/bin/env python3
"""cluster_bench.py [RECD] - event.add and rec.recommend through a node over
a 3-server NATS JetStream cluster (R3, on this machine), against a node
alone, with the same client (`recd bench`) and the same loads:

- event.add, one event a call, 8 connections x 16 in flight (throughput);
- event.add, one connection, one call at a time (the answer's latency:
  alone, the group commit; in the cluster, publish + the stream's quorum +
  the node's fetch, apply and commit);
- rec.recommend after the events, through a second node that did not take
  them (8 x 16 for throughput, 1 x 1 for the latency: each call waits for
  its read barrier, one request to the stream's leader, against a node
  alone that has none; the users of the partitions the first node owns,
  about half, are forwarded there);
- rec.recommend forwarded against direct, in the cluster of two nodes:
  one call at a time from a Python client, for users the first node owns,
  through that node (direct: the read barrier) and through the other
  (forwarded: a request-reply to the owner, which runs the read barrier);
- item.put, one item a call, one call at a time, from a Python client
  (the answer's latency: alone the group commit; in the cluster publish,
  the stream's quorum, the apply and the commit).

Each load runs RUNS times (3) on a fresh folder, a fresh stream; medians.
ONLY=name,name runs only those loads. NODES=N runs N nodes for every load
(writes through the first, reads through the second).
Prints `BENCH name=cluster_... value=... unit=...` lines and the ratio of
each cluster figure to the alone one. Not part of `make bench` (it starts
three nats-servers); run with /usr/bin/python3 tests/bench/cluster_bench.py.
"""
import csv
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "cluster"))
if len(sys.argv) > 1:
    os.environ["RECD_BIN"] = os.path.abspath(sys.argv[1])
import natsrig  # noqa: E402

RUNS = int(os.environ.get("RUNS", "3"))
LOADS = [  # name, recd bench arguments
    ("event_c8_P16", ["-t", "event", "-c", "8", "-P", "16", "-n", "20000"]),
    ("event_c1_P1", ["-t", "event", "-c", "1", "-P", "1", "-n", "1000"]),
    ("recommend_c8_P16", ["-t", "recommend", "-c", "8", "-P", "16", "-n", "20000"]),
    ("recommend_c1_P1", ["-t", "recommend", "-c", "1", "-P", "1", "-n", "2000"]),
    ("item_put_c1_P1", None),   # Python client: tests/bench/cluster_bench.py put_latency
    ("recommend_fwd_c1_P1", None),  # Python client, cluster only: forward_latency
]
ONLY = [x for x in os.environ.get("ONLY", "").split(",") if x]
# NODES=N: N nodes in the cluster for every load (0: one for the writes, a
# second for the reads, as measured first)
NODES = int(os.environ.get("NODES", "0"))
PUTS = 500


def put_latency(port):
    """item.put of one item a call, one call at a time: (calls/s, p50 ms,
    p99 ms)."""
    import time
    from recd_client import Client
    lat = []
    with Client("127.0.0.1:%d" % port, timeout=60) as c:
        for k in range(PUTS):
            t = time.perf_counter()
            c.call("item.put", {"id": "put%d" % k, "props": {"k": k}})
            lat.append(time.perf_counter() - t)
    lat.sort()
    return (len(lat) / sum(lat), lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.99)] * 1e3)


FORWARDS = 2000


def forward_latency():
    """rec.recommend one call at a time, for users the node "bench" owns,
    through it and through "reader": (direct p50, p99, forwarded p50, p99)
    in ms."""
    import time
    import owners
    from recd_client import Client
    rig = natsrig.Rig().start()
    try:
        os.environ.setdefault("RECD_LOG_LEVEL", "warn")
        node = rig.node("bench").start()
        other = rig.node("reader", first=1).start()
        run_bench(node.port, ["-t", "event", "-c", "8", "-P", "16", "-n", "20000"])
        other.wait_caught_up()
        owners.wait_owners([node, other])
        m = owners.owners_map(["bench", "reader"])
        users = [u for u in ("u%d" % i for i in range(1, 2001))
                 if m[owners.partition(u)] == "bench"]
        out = []
        for n in (node, other):
            lat = []
            with Client(n.addr, timeout=60) as c:
                for k in range(FORWARDS):
                    u = users[k % len(users)]
                    t = time.perf_counter()
                    c.call("rec.recommend", {"user": u, "n": 10})
                    lat.append(time.perf_counter() - t)
            lat.sort()
            out += [lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.99)] * 1e3]
        assert other.info()["cluster"]["forwarded"] >= FORWARDS
        return out
    finally:
        rig.stop()


def run_bench(port, args):
    if args is None:
        return put_latency(port)
    out = subprocess.run([natsrig.RECD_BIN, "bench", "-p", str(port), "--csv", "--force",
                          "--users", "2000", "--items", "2000"] + args,
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError("recd bench failed:\n" + out.stdout + out.stderr)
    row = list(csv.DictReader(io.StringIO(out.stdout)))[0]
    return float(row["rps"]), float(row["p50_latency_ms"]), float(row["p99_latency_ms"])


def alone(args):
    d = tempfile.mkdtemp(prefix="recd-alone-")
    port = natsrig.free_port()
    p = subprocess.Popen([natsrig.RECD_BIN, "serve", "--data", d, "--listen", "127.0.0.1:%d" % port,
                          "--unix", "", "--scripts", "", "--policies", "", "--log-level", "warn"],
                         stdin=subprocess.DEVNULL)
    try:
        natsrig.wait_port(port, p, 10, "recd")
        if args and "recommend" in args[1]:
            run_bench(port, ["-t", "event", "-c", "8", "-P", "16", "-n", "20000"])
        return run_bench(port, args)
    finally:
        p.terminate()
        p.wait()
        shutil.rmtree(d, ignore_errors=True)


def clustered(args):
    rig = natsrig.Rig().start()
    try:
        os.environ.setdefault("RECD_LOG_LEVEL", "warn")
        node = rig.node("bench").start()
        if NODES:
            # NODES nodes for every load: the writes through the first,
            # the reads through the second, every node applying every event.
            others = [rig.node("n%d" % k, first=k % 3).start() for k in range(1, NODES)]
            import owners
            owners.wait_owners([node] + others)
            if args and "recommend" in args[1]:
                run_bench(node.port, ["-t", "event", "-c", "8", "-P", "16", "-n", "20000"])
                for o in others:
                    o.wait_caught_up()
                return run_bench(others[0].port, args)
            return run_bench(node.port, args)
        if args and "recommend" in args[1]:
            # The events through this node; the reads through another.
            other = rig.node("reader", first=1).start()
            run_bench(node.port, ["-t", "event", "-c", "8", "-P", "16", "-n", "20000"])
            other.wait_caught_up()
            return run_bench(other.port, args)
        return run_bench(node.port, args)
    finally:
        rig.stop()


def bench(name, value, unit):
    print("BENCH name=%s value=%.3f unit=%s" % (name, value, unit), flush=True)


def main():
    for name, args in LOADS:
        if ONLY and name not in ONLY:
            continue
        if name == "recommend_fwd_c1_P1":
            runs = [forward_latency() for _ in range(RUNS)]
            med = [statistics.median(r[k] for r in runs) for k in range(4)]
            bench("cluster_recommend_direct_c1_P1_p50", med[0], "ms")
            bench("cluster_recommend_direct_c1_P1_p99", med[1], "ms")
            bench("cluster_recommend_forwarded_c1_P1_p50", med[2], "ms")
            bench("cluster_recommend_forwarded_c1_P1_p99", med[3], "ms")
            print("  %s: forwarded/direct p50 latency %.2fx (+%.3f ms)" %
                  (name, med[2] / med[0], med[2] - med[0]), flush=True)
            continue
        res = {}
        for mode, fn in (("alone", alone), ("cluster", clustered)):
            runs = [fn(args) for _ in range(RUNS)]
            res[mode] = [statistics.median(r[k] for r in runs) for k in range(3)]
            rps, p50, p99 = res[mode]
            bench("%s_%s" % (mode, name), rps, "req/s")
            bench("%s_%s_p50" % (mode, name), p50, "ms")
            bench("%s_%s_p99" % (mode, name), p99, "ms")
        print("  %s: cluster/alone throughput %.2f, p50 latency %.2fx" %
              (name, res["cluster"][0] / res["alone"][0], res["cluster"][1] / res["alone"][1]),
              flush=True)


if __name__ == "__main__":
    main()
