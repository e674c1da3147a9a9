"""pipeline_bench.py RECD - the shipped pipeline, in a lighter configuration.

A lighter configuration than the default one that default_bench.py
measures (100k items, 1M events from 100k users): the same server and
shipped scripts and policies, but only 2,000 users of 10 clicks, so its
figures are not those of what `make run` serves at scale. Kept for the
recommendation latency while the batch models train, and to compare with
earlier versions measured this way.

Starts `recd serve` with the project's scripts/ and policies/ on a
fresh folder, loads 100k items with d=64 vectors in "content" and 2,000
users with 10 interactions each, then measures with one client:
  - rec.recommend n=10 latency (p50, p99) and requests/s in steady state
    (after the start-up training of the batch models, as between two
    scheduled ones), then again while model.train retrains ials and EASE
    in the background;
  - feedback to effect: event.add acknowledged (durable) to the answer of
    the next rec.recommend that reflects it (the clicked item is gone and
    the list changed), p50 and p99;
  - rec.recommend once the click model ranks (policies/click.lua past its
    WARM examples: clicks sent back with the lists' rec_id): the pool
    widened by the person's taste and the catalogue, predicted and ranked.
Prints BENCH lines. Needs Debian's python3-msgpack (run with /usr/bin/python3).
"""
import gc
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples", "python"))
import recd_client  # noqa: E402

N_ITEMS, DIM, N_USERS, RUNS = 100000, 64, 2000, 2000


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    recd = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "./recd")
    tmp = tempfile.mkdtemp(prefix="recd-pl-")
    port = free_port()
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    proc = subprocess.Popen([recd, "serve", "--data", tmp + "/data", "--listen",
                             "127.0.0.1:%d" % port, "--unix", tmp + "/recd.sock", "--log-level", "warn",
                             "--scripts", root + "/scripts", "--policies", root + "/policies"])
    try:
        for _ in range(200):
            try:
                c = recd_client.connect("127.0.0.1:%d" % port)
                break
            except OSError:
                time.sleep(0.05)
        rnd = random.Random(5)
        clusters = 20
        centers = [[rnd.gauss(0, 1) for _ in range(DIM)] for _ in range(clusters)]
        batch = []
        for i in range(N_ITEMS):
            cen = centers[i % clusters]
            v = [x + rnd.gauss(0, 0.5) for x in cen]
            batch.append({"id": i, "props": {"cluster": i % clusters},
                          "vectors": {"content": struct.pack("<%df" % DIM, *v)}})
            if len(batch) == 2000:
                c.call("item.put", *batch)
                batch = []
        evs = []
        for u in range(N_USERS):
            cl = u % clusters
            for _ in range(10):
                evs.append({"user": "u%d" % u, "item": rnd.randrange(N_ITEMS // clusters) * clusters + cl,
                            "type": "click"})
        for i in range(0, len(evs), 5000):
            c.call("event.add", *evs[i:i + 5000])
        # steady state: the start-up training of the batch models (ials,
        # EASE) done, as between two scheduled ones
        t_wait = time.perf_counter()
        while time.perf_counter() - t_wait < 120:
            spaces = {s["name"]: s for s in c.call("sys.info")["spaces"]}
            if c.call("sys.info")["training"] == 0 and spaces.get("ials", {}).get("users"):
                break
            time.sleep(0.1)
        # The client's own garbage collector must not land inside the
        # measured calls: what the set-up built goes out of its reach.
        del evs, batch
        gc.collect()
        gc.freeze()
        lat = []
        t_all = time.perf_counter()
        for r in range(RUNS):
            t0 = time.perf_counter()
            c.call("rec.recommend", {"user": "u%d" % (r % N_USERS), "n": 10})
            lat.append((time.perf_counter() - t0) * 1000)
        rps = RUNS / (time.perf_counter() - t_all)
        # the same while a training of both models runs in the background
        admin = recd_client.connect(tmp + "/recd.sock")  # admin methods: the Unix socket
        admin.call("model.train", {"model": "all"})
        lat_tr, r = [], 0
        while c.call("sys.info")["training"] and r < 20 * RUNS:
            t0 = time.perf_counter()
            c.call("rec.recommend", {"user": "u%d" % (r % N_USERS), "n": 10})
            lat_tr.append((time.perf_counter() - t0) * 1000)
            r += 1
        if not lat_tr:  # the training ended before one request
            lat_tr = [float("nan")]
        fb, changed = [], 0
        for r in range(300):
            user = "u%d" % rnd.randrange(N_USERS)
            before = [x["id"] for x in c.call("rec.recommend", {"user": user, "n": 10})["items"]]
            item = before[0]
            t0 = time.perf_counter()
            c.call("event.add", {"user": user, "item": item, "type": "click"})
            after = [x["id"] for x in c.call("rec.recommend", {"user": user, "n": 10})["items"]]
            fb.append((time.perf_counter() - t0) * 1000)
            assert item not in after, "the clicked item came back"
            changed += after != before
        # the click model past its warm-up: clicks on served lists
        while c.call("sys.info")["click"]["examples"] < 250:
            user = "u%d" % rnd.randrange(N_USERS)
            ans = c.call("rec.recommend", {"user": user, "n": 10})
            if ans["items"]:
                c.call("event.add", {"user": user, "item": ans["items"][rnd.randrange(len(ans["items"]))]["id"],
                                     "type": "click", "rec_id": ans["rec_id"]})
        lat_cm = []
        for r in range(RUNS):
            t0 = time.perf_counter()
            c.call("rec.recommend", {"user": "u%d" % (r % N_USERS), "n": 10})
            lat_cm.append((time.perf_counter() - t0) * 1000)
        print("shipped pipeline (lighter configuration), %d items d=%d, %d users: "
              "rec.recommend n=10 p50 %.2f ms, "
              "p99 %.2f ms, %.0f req/s (1 client)" % (N_ITEMS, DIM, N_USERS, pct(lat, 0.5),
                                                    pct(lat, 0.99), rps))
        print("while ials and EASE train in the background (%d requests): p50 %.2f ms, "
              "p99 %.2f ms" % (len(lat_tr), pct(lat_tr, 0.5), pct(lat_tr, 0.99)))
        print("feedback to effect (event ack + next answer): p50 %.2f ms, p99 %.2f ms; "
              "list changed in %d/300" % (pct(fb, 0.5), pct(fb, 0.99), changed))
        print("once the click model ranks (after %d clicks on served lists): p50 %.2f ms, "
              "p99 %.2f ms" % (c.call("sys.info")["click"]["clicks"], pct(lat_cm, 0.5),
                               pct(lat_cm, 0.99)))
        print("BENCH name=pipeline_recommend_n100000_d64_p50 value=%.3f unit=ms" % pct(lat, 0.5))
        print("BENCH name=pipeline_recommend_click_model_p50 value=%.3f unit=ms" % pct(lat_cm, 0.5))
        print("BENCH name=pipeline_recommend_click_model_p99 value=%.3f unit=ms" % pct(lat_cm, 0.99))
        print("BENCH name=pipeline_recommend_n100000_d64_p99 value=%.3f unit=ms" % pct(lat, 0.99))
        print("BENCH name=pipeline_recommend_n100000_d64 value=%.0f unit=req/s" % rps)
        print("BENCH name=pipeline_recommend_training_p50 value=%.3f unit=ms" % pct(lat_tr, 0.5))
        print("BENCH name=pipeline_recommend_training_p99 value=%.3f unit=ms" % pct(lat_tr, 0.99))
        print("BENCH name=feedback_to_effect_p50 value=%.3f unit=ms" % pct(fb, 0.5))
        print("BENCH name=feedback_to_effect_p99 value=%.3f unit=ms" % pct(fb, 0.99))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
