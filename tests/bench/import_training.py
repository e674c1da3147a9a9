"""import_training.py RECD RATINGS.csv [WAIT_S [PACE_S]] - when the batch
models train during and after an import.

Starts `recd serve` with the project's scripts/ and policies/ (ials and
EASE loaded) on a fresh folder, feeds a MovieLens ratings.csv over the
protocol as click events in batches of 500 (sleeping PACE_S after each,
default 0: as fast as the server answers), then waits WAIT_S seconds
(default 30) without sending events. A second connection polls sys.info
every 50 ms and prints when trainings start and end, and, on servers
whose sys.info has `models`, what each model was trained on. Nothing is
asserted. Needs Debian's python3-msgpack (run with /usr/bin/python3).
"""
import csv
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "examples", "python"))
from recd_client import Client  # noqa: E402


def main():
    binary, path = os.path.abspath(sys.argv[1]), sys.argv[2]
    wait_s = float(sys.argv[3]) if len(sys.argv) > 3 else 30.0
    pace = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    d = tempfile.mkdtemp(prefix="import_training")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    log = open(os.path.join(d, "log"), "wb")
    proc = subprocess.Popen([binary, "serve", "--data", d + "/data",
                             "--listen", "127.0.0.1:%d" % port, "--unix", d + "/sock",
                             "--scripts", os.path.join(ROOT, "scripts"),
                             "--policies", os.path.join(ROOT, "policies"), "--log-level", "info"],
                            stdout=log, stderr=subprocess.STDOUT)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            break
        except OSError:
            time.sleep(0.05)
    with open(path) as f:
        rows = list(csv.reader(f))[1:]
    evs = [{"user": "u" + r[0], "item": "m" + r[1], "type": "click", "ts": float(r[3])}
           for r in rows]
    seen, stop = [], []
    t0 = time.monotonic()

    def poll():
        c = Client("127.0.0.1:%d" % port)
        running, last = 0, {}
        while not stop:
            info = c.call("sys.info")
            t = time.monotonic() - t0
            if info["training"] != running:
                seen.append((t, "training %s, the log holds %d events"
                             % ("starts" if info["training"] else "ends", info["events"])))
                running = info["training"]
            for name, m in sorted((info.get("models") or {}).items()):
                key = (m["trainings"], m["events"])
                if m["trainings"] and last.get(name) != key:
                    seen.append((t, "%s installed: trained on %d events in %.2f s"
                                 % (name, m["events"], m["seconds"])))
                last[name] = key
            time.sleep(0.05)

    th = threading.Thread(target=poll)
    th.start()
    c = Client("127.0.0.1:%d" % port)
    for k in range(0, len(evs), 500):
        c.call("event.add", *evs[k:k + 500])
        if pace:
            time.sleep(pace)
    seen.append((time.monotonic() - t0, "import done: %d events" % len(evs)))
    time.sleep(wait_s)
    stop.append(1)
    th.join()
    models = c.call("sys.info").get("models")
    proc.terminate()
    proc.wait()
    for t, what in sorted(seen):
        print("%7.2f s  %s" % (t, what))
    for name, m in sorted((models or {}).items()):
        print("final: %s trained on %d events (%d trainings)" % (name, m["events"], m["trainings"]))
    print("server log: %s" % os.path.join(d, "log"))


if __name__ == "__main__":
    main()
