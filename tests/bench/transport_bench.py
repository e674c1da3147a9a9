#!/usr/bin/env python3
"""transport_bench.py RECD - the server's transport under awkward traffic.

1. Framing cost: a request of 1, 2 and 4 MiB (params: an array of floats)
   delivered whole, then in 1 KiB pieces each read on its own. The figure
   is the CPU time of the loop thread (/proc/PID/task/PID/schedstat) per
   message: the ratio pieces / whole at 4 MiB, and how the pieces' cost
   grows with the size (linear: x2 per doubling; a rescan from the start
   on every read would be x4).
2. Deletes under a steady pipelined event.add stream from 3 other clients:
   p50 / p99 / max latency of item.delete (target: p99 under 50 ms).
3. A write that lands in the check callback (two deletes and a put
   pipelined on an idle server: the second delete waits for the first's
   answer to be released, then the put is handled there): latency of the
   put's answer, which must not wait for the next 1 s tick.

Prints one `BENCH name=... value=... unit=...` line per figure.
"""
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import msgpack

RECD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/rel/recd")


def bench(name, value, unit):
    print("BENCH name=%s value=%.3f unit=%s" % (name, value, unit), flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tmp):
    port = free_port()
    log = open(os.path.join(tmp, "recd.log"), "wb")
    p = subprocess.Popen([RECD, "serve", "--data", os.path.join(tmp, "data"),
                          "--listen", "127.0.0.1:%d" % port, "--unix", "",
                          "--scripts", "", "--policies", "", "--log-level", "warn"],
                         stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p, port
        except OSError:
            if time.monotonic() > deadline or p.poll() is not None:
                raise SystemExit("recd did not start")
            time.sleep(0.05)


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=120)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def loop_cpu_ns(pid):
    with open("/proc/%d/task/%d/schedstat" % (pid, pid)) as f:
        return int(f.read().split()[0])


def answers(s, u, n):
    got = []
    while len(got) < n:
        data = s.recv(1 << 16)
        if not data:
            raise SystemExit("connection closed")
        u.feed(data)
        got.extend(m for m in u if m[0] == 1)
    return got


def framing(pid, port):
    s = connect(port)
    u = msgpack.Unpacker(raw=False)
    cost = {}
    msgid = 0
    for mib in (1, 2, 4):
        n = (mib << 20) // 9 - 8              # float64: 9 bytes each
        msg = msgpack.packb([0, 0, "sys.ping", [0.5] * n])
        for how in ("whole", "pieces"):
            runs = []
            for _ in range(3):
                msgid += 1
                m = msg[:2] + msgpack.packb(msgid) + msg[3:]   # [0, msgid, ...
                t0 = loop_cpu_ns(pid)
                if how == "whole":
                    s.sendall(m)
                else:
                    for off in range(0, len(m), 1024):
                        s.sendall(m[off:off + 1024])
                        time.sleep(0.0002)        # each piece read on its own
                assert answers(s, u, 1)[0][1] == msgid
                runs.append(loop_cpu_ns(pid) - t0)
            cost[(mib, how)] = statistics.median(runs) / 1e6
            bench("framing_%dmib_%s_loop_ms" % (mib, how), cost[(mib, how)], "ms")
    s.close()
    bench("framing_4mib_pieces_over_whole", cost[(4, "pieces")] / cost[(4, "whole")], "x")
    bench("framing_pieces_2mib_over_1mib", cost[(2, "pieces")] / cost[(1, "pieces")], "x")
    bench("framing_pieces_4mib_over_2mib", cost[(4, "pieces")] / cost[(2, "pieces")], "x")


def writer(port, k, stop, done):
    s = connect(port)
    block = b"".join(msgpack.packb([0, j, "event.add", [
        {"user": "bw-%d" % k, "item": "bi-%d" % (j % 50), "type": "view"}]])
        for j in range(256))
    sent = [0]

    def send():
        while not stop.is_set():
            s.sendall(block)
            sent[0] += 256

    t = threading.Thread(target=send)
    t.start()
    u = msgpack.Unpacker(raw=False)
    got = 0
    while t.is_alive() or got < sent[0]:
        data = s.recv(1 << 16)
        if not data:
            break
        u.feed(data)
        got += sum(1 for _ in u)
    t.join()
    done[k] = got
    s.close()


def deletes_under_writes(port, n=200):
    c = connect(port)
    u = msgpack.Unpacker(raw=False)
    c.sendall(msgpack.packb([0, 1, "item.put", [{"id": "bi-%d" % i} for i in range(50)] +
                             [{"id": "bd-%d" % i} for i in range(n)]]))
    answers(c, u, 1)
    stop = threading.Event()
    done = [0, 0, 0]
    ws = [threading.Thread(target=writer, args=(port, k, stop, done)) for k in range(3)]
    for w in ws:
        w.start()
    time.sleep(0.5)                               # the stream is flowing
    lat = []
    for i in range(n):
        t0 = time.monotonic()
        c.sendall(msgpack.packb([0, 10 + i, "item.delete", ["bd-%d" % i]]))
        r = answers(c, u, 1)[0]
        assert r[2] is None and r[3] == 1, r
        lat.append((time.monotonic() - t0) * 1e3)
    stop.set()
    for w in ws:
        w.join()
    c.close()
    lat.sort()
    bench("delete_under_writes_p50_ms", lat[len(lat) // 2], "ms")
    bench("delete_under_writes_p99_ms", lat[int(len(lat) * 0.99) - 1], "ms")
    bench("delete_under_writes_max_ms", lat[-1], "ms")
    bench("events_during_deletes", sum(done), "events")


def write_in_check(port, rounds=30):
    c = connect(port)
    u = msgpack.Unpacker(raw=False)
    lat = []
    for i in range(rounds):
        c.sendall(msgpack.packb([0, 1, "item.put", [{"id": "cx-%d" % i}, {"id": "cy-%d" % i}]]))
        answers(c, u, 1)
        time.sleep(0.05)                          # idle: nothing else wakes the loop
        t0 = time.monotonic()
        c.sendall(msgpack.packb([0, 2, "item.delete", ["cx-%d" % i]]) +
                  msgpack.packb([0, 3, "item.delete", ["cy-%d" % i]]) +
                  msgpack.packb([0, 4, "item.put", [{"id": "cz-%d" % i}]]))
        answers(c, u, 3)
        lat.append((time.monotonic() - t0) * 1e3)
    c.close()
    lat.sort()
    bench("write_after_deletes_idle_p50_ms", lat[len(lat) // 2], "ms")
    bench("write_after_deletes_idle_max_ms", lat[-1], "ms")


def main():
    tmp = tempfile.mkdtemp(prefix="recd-transport-")
    p = None
    try:
        p, port = start(tmp)
        framing(p.pid, port)
        deletes_under_writes(port)
        write_in_check(port)
    finally:
        if p:
            p.terminate()
            p.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
