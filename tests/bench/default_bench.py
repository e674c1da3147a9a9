"""default_bench.py RECD [--quick] [--only PART,...] - the default configuration.

Measures what `make run` serves: `RECD serve` with the shipped scripts/ and
policies/ (the repository's, passed by path, which is what ./recd finds
beside itself), started on a fresh data folder with the flags `make run`
gives it and no others (TCP on a free loopback port; the Unix socket in the
data folder, where the server puts it when not told). `make run` also
passes `--init examples/demo_data.lua`; this bench does not: the demo file
loads its 240 items only into an empty folder, and its "content" vectors
are d = 8, which would fix that space's dimension before the fixture's d =
64 vectors come. The fixture is the catalogue instead.

The fixture (the full run): 100k items i1..i100000, each a "category" prop
(one of 50 clusters) and a d = 64 vector in "content" (its cluster's centre
plus noise); 1M events from 100k users u1..u100000, 10 each: 70% views,
25% clicks, 5% purchases; 80% on items of the user's own cluster, drawn
from a Pareto law (a few items of each cluster are popular), 20% on items
popular over the whole catalogue. Loaded over the protocol, then the bench
waits for the start-up training of the batch models (ials, EASE) on all of
it. Then, with `recd bench` as the client (plain ids u1.., i1..: --prefix ''):

  recommend   rec.recommend n=10, one client: p50, p99, requests/s
  concurrent  the same at -c 50: requests/s, p99
  feedback    feedback to effect: event.add (a click on the first item of
              the user's list) acknowledged, then the next rec.recommend,
              which must not hold the clicked item: p50, p99 of the two
              calls together (the Python client), and of each alone
  click       rec.recommend once the click model ranks: clicks sent back
              with the lists' rec_id until policies/click.lua's WARM
              examples are learned, then one client as in `recommend`
  event       durable event.add (clicks of the fixture's users on its items)
              at -c 50 -P 32: events/s, p99; between trainings (the
              schedule paused), in rounds alternating with the two Redis
              servers of the redis part, then once with the schedule on as
              shipped (a training starts each time the log grew by 10%);
              the click model ranks by then, as on a server that has run a
              while; then one sustained run of 1.5M events (about 10 s,
              holding a checkpoint and the fold-ins the events owe, which
              the pauses between the short runs absorb) against as many
              EVALs on the durable Redis
  train       on a server of its own loaded with the same fixture (1M
              events, the issue's size; on the main server the event part
              has tripled the log by then): model.train {model = "all"}
              (ials and EASE) on the idle server, then the same training
              while event.add runs at -c 50 -P 32: both durations and the
              events/s and p99 of the event chunks that ran entirely
              inside the training
  redis       Debian's redis-server, appendonly yes + appendfsync always,
              and one without persistence, each driven by redis-benchmark
              with EVAL (LPUSH + INCR, as tests/bench/server_bench.sh) at
              -c 50 -P 32, in the event part's rounds (recd, then each
              Redis, within seconds: the ratios are the medians of the
              rounds' ratios); the ratios of event.add between trainings
              and while training (against the same Redis figures, measured
              minutes before) to both
  scale       rec.recommend one client, p50 and p99, on fresh servers with
              10k, 100k and 1M items (100k users of 10 events) and with 10,
              100 and 1,000 events per user (1M events: 100k, 10k and 1k
              users, over 100k items); the 100k items / 10 events point is
              the main fixture (the `recommend` figures). A point whose
              requests answer an error prints the error and no figure.

Each freshly loaded server first answers 100 requests that are not
measured (the first scans after a load touch cold pages); an error among
them is printed.

The schedule of the batch models is paused (model.schedule {auto = false},
an admin call over the Unix socket) after the start-up training, so that a
scheduled training does not land in a measurement that does not ask for
one; the `event` part turns it on for its "as shipped" run and waits for
the trainings it started.

--quick or RECD_BENCH_QUICK=1: 5,000 items and 1,000 users of 10 events
(scale: 2k, 5k, 20k items; 10, 100, 1,000 events per user over 10k events),
fewer requests, one run each, a smoke run of every part in about a minute.
--only PART,...: only those parts (the main fixture is loaded when one of
its parts is named). --keep: leave the temporary folder. RECD_BENCH_DIR: its
parent (default $TMPDIR or /tmp). Without redis-server and redis-benchmark
the redis part is skipped with a message.

Prints every figure as `BENCH name=... value=... unit=...` and a table at
the end, with the targets of the default configuration beside the figures.
Needs Debian's python3-msgpack (run with /usr/bin/python3).
"""
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "examples", "python"))
import recd_client  # noqa: E402

PARTS = ["recommend", "concurrent", "feedback", "click", "event", "train", "redis", "scale"]
MAIN_PARTS = {"recommend", "concurrent", "event", "feedback", "click"}
DIM, CLUSTERS = 64, 50
# The same Lua script and payload as tests/bench/server_bench.sh.
REDIS_SCRIPT = "redis.call('LPUSH', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[2])"
REDIS_PAYLOAD = "u:__rand_int__|i:__rand_int__|click"


class Config:
    def __init__(self, quick):
        self.quick = quick
        if quick:
            self.items, self.users, self.per_user = 5000, 1000, 10
            self.runs = 1
            self.n_rec, self.n_rec_c50, self.n_event, self.n_chunk = 300, 300, 5000, 1000
            self.n_sustained = 20000
            self.n_feedback = 50
            self.scale_items = [2000, 5000, 20000]
            self.scale_hist = [(10, 1000), (100, 100), (1000, 10)]   # (per user, users)
        else:
            self.items, self.users, self.per_user = 100000, 100000, 10
            self.runs = 3
            self.n_rec, self.n_rec_c50, self.n_event, self.n_chunk = 2000, 4000, 100000, 50000
            self.n_sustained = 1500000   # about 10 s: a checkpoint and the fold-ins it owes
            self.n_feedback = 500
            self.scale_items = [10000, 100000, 1000000]
            self.scale_hist = [(10, 100000), (100, 10000), (1000, 1000)]


# ---- output -------------------------------------------------------------------

FIGURES = {}    # name -> (value, unit)


def bench_line(name, value, unit):
    if value is None or value != value:    # not measured, or NaN
        return
    FIGURES[name] = (value, unit)
    fmt = "%.0f" if unit in ("req/s", "events/s") else "%.4g" if unit == "ratio" else "%.3f"
    print("BENCH name=%s value=%s unit=%s" % (name, fmt % value, unit), flush=True)


def say(msg):
    print(msg, flush=True)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    if not n:
        return float("nan")
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


# ---- servers ------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`recd serve` as `make run` starts it, on a fresh folder under tmp."""

    def __init__(self, recd, tmp, name):
        self.recd, self.data = recd, os.path.join(tmp, name)
        self.log = self.data + ".log"
        self.proc = self.port = None

    def start(self):
        for _ in range(5):
            self.port = free_port()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [self.recd, "serve", "--data", self.data, "--listen", "127.0.0.1:%d" % self.port,
                     "--scripts", os.path.join(ROOT, "scripts"),
                     "--policies", os.path.join(ROOT, "policies")],
                    stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            for _ in range(200):
                if self.proc.poll() is not None:
                    break
                try:
                    self.client().close()
                    return self
                except OSError:
                    time.sleep(0.05)
            self.stop()
        raise RuntimeError("recd serve did not come up; see %s" % self.log)

    def client(self, timeout=600.0):
        return recd_client.connect("127.0.0.1:%d" % self.port, timeout=timeout)

    def admin(self, timeout=600.0):
        return recd_client.connect(os.path.join(self.data, "recd.sock"), timeout=timeout)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def recd_bench(srv, cfg, *args, runs=None, tolerate=False):
    """`recd bench` against srv: {rps, p50, p99} (medians of the runs). A
    run with an error answer has no figures: an exception, or with
    tolerate {"error": its message}."""
    cmd = [srv.recd, "bench", "-p", str(srv.port), "-q", "--force", "--prefix", "",
           "-r", str(runs or cfg.runs)] + [str(a) for a in args]
    r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    m = re.search(r": ([0-9.]+) requests per second, p50=([0-9.]+) p99=([0-9.]+)", r.stdout)
    if r.returncode != 0 or not m:
        msg = "recd bench %s failed (exit %d): %s" % (" ".join(map(str, args)), r.returncode,
                                                      (r.stdout + r.stderr).strip())
        if tolerate:
            say("  " + msg)
            return {"error": msg}
        raise RuntimeError(msg)
    return {"rps": float(m.group(1)), "p50": float(m.group(2)), "p99": float(m.group(3))}


def warm_up(srv, cfg, users):
    """100 requests before the figures of a freshly loaded server (the
    first scans after a load touch cold pages and build the scans' copies);
    an error answer is printed, not fatal."""
    t0 = time.perf_counter()
    r = recd_bench(srv, cfg, "-t", "recommend", "-c", 1, "-P", 1, "-n", 100, "--users", users,
                   runs=1, tolerate=True)
    say("  warm-up: 100 rec.recommend in %.1f s%s" % (time.perf_counter() - t0,
                                                       " (with an error)" if "error" in r else ""))


# ---- the fixture --------------------------------------------------------------

def load_fixture(srv, n_items, n_users, per_user, seed=18):
    """Items, then events, over the protocol; then the start-up training."""
    c = srv.client()
    rnd = random.Random(seed)
    t0 = time.perf_counter()
    centres = [[rnd.gauss(0, 1) for _ in range(DIM)] for _ in range(CLUSTERS)]
    # noise from two pools drawn once (a gauss per float of 1M items is too
    # slow in Python): 4096^2 distinct noises, each of spread ~0.5
    pool_a = [[rnd.gauss(0, 0.45) for _ in range(DIM)] for _ in range(4096)]
    pool_b = [[rnd.gauss(0, 0.2) for _ in range(DIM)] for _ in range(4096)]
    pack = struct.Struct("<%df" % DIM).pack
    inflight, batch = 0, []

    def flush(method):
        nonlocal inflight, batch
        if batch:
            c.send(method, *batch)
            inflight += 1
            batch = []
        while inflight >= (8 if method else 1):
            c.recv()
            inflight -= 1

    for i in range(1, n_items + 1):
        cl = i % CLUSTERS
        v = [x + a + b for x, a, b in zip(centres[cl], pool_a[rnd.getrandbits(12)],
                                          pool_b[rnd.getrandbits(12)])]
        batch.append({"id": "i%d" % i, "props": {"category": "c%d" % cl},
                      "vectors": {"content": pack(*v)}})
        if len(batch) == 1000:
            flush("item.put")
    flush("item.put")
    flush(None)
    t_items = time.perf_counter() - t0
    per_cluster = max(1, n_items // CLUSTERS)
    types = ["view"] * 14 + ["click"] * 5 + ["purchase"]
    pareto, rand = rnd.paretovariate, rnd.random
    t1 = time.perf_counter()
    for u in range(1, n_users + 1):
        cl, user = u % CLUSTERS, "u%d" % u
        for _ in range(per_user):
            if rand() < 0.8:    # the user's own cluster, a few of its items popular
                it = ((int(pareto(1.2)) - 1) % per_cluster) * CLUSTERS + cl
            else:               # popular over the whole catalogue
                it = (int(pareto(1.0)) - 1) % n_items
            batch.append({"user": user, "item": "i%d" % (it % n_items + 1),
                          "type": types[int(rand() * 20)]})
            if len(batch) == 2000:
                flush("event.add")
    flush("event.add")
    flush(None)
    t_events = time.perf_counter() - t1
    n_events = n_users * per_user
    t2 = time.perf_counter()
    wait_trained(c, n_events)
    t_train = time.perf_counter() - t2
    info = c.call("sys.info")
    c.close()
    say("loaded %d items in %.1f s, %d events from %d users in %.1f s (%.0f events/s); "
        "start-up training done %.1f s later (ials %.1f s, ease %.1f s on %d events)" %
        (n_items, t_items, n_events, n_users, t_events, n_events / t_events, t_train,
         info["models"]["ials"].get("seconds") or 0, info["models"]["ease"].get("seconds") or 0,
         info["models"]["ials"]["events"]))
    return {"items_s": t_items, "events_s": t_events, "train_s": t_train,
            "events_per_s": n_events / t_events}


def wait_trained(c, n_events, limit=1800):
    """Until no training runs or is pending and ials has learned n_events."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        info = c.call("sys.info")
        models = info["models"]
        if (info["training"] == 0 and models["ials"]["events"] >= n_events and
                not models["ials"].get("pending") and not models["ease"].get("pending")):
            return
        time.sleep(0.2)
    raise RuntimeError("the batch models did not finish their training in %d s" % limit)


def wait_idle(c, limit=1800):
    """Until no training runs (a scheduled one the run started)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        if c.call("sys.info")["training"] == 0:
            return
        time.sleep(0.2)
    raise RuntimeError("a training did not end in %d s" % limit)


def schedule(srv, auto):
    with srv.admin() as a:
        a.call("model.schedule", {"auto": auto})


# ---- the parts on the main fixture --------------------------------------------

def part_recommend(srv, cfg, res):
    r = recd_bench(srv, cfg, "-t", "recommend", "-c", 1, "-P", 1, "-n", cfg.n_rec,
                   "--users", cfg.users)
    res["recommend"] = r
    bench_line("default_recommend_c1_p50", r["p50"], "ms")
    bench_line("default_recommend_c1_p99", r["p99"], "ms")
    bench_line("default_recommend_c1", r["rps"], "req/s")


def part_concurrent(srv, cfg, res):
    r = recd_bench(srv, cfg, "-t", "recommend", "-c", 50, "-P", 1, "-n", cfg.n_rec_c50,
                   "--users", cfg.users, runs=1)
    res["concurrent"] = r
    bench_line("default_recommend_c50", r["rps"], "req/s")
    bench_line("default_recommend_c50_p50", r["p50"], "ms")
    bench_line("default_recommend_c50_p99", r["p99"], "ms")


def event_args(cfg, n):
    return ("-t", "event", "-c", 50, "-P", 32, "-n", n, "--users", cfg.users, "--items", cfg.items)


def part_event(srv, cfg, res):
    event_rounds(srv, res["tmp"], cfg, res, res["with_redis"])
    # as shipped: the schedule on, a training each time the log grew by 10%
    with srv.client() as c:
        before = trainings(c)
        schedule(srv, True)
        r = recd_bench(srv, cfg, *event_args(cfg, 2 * cfg.n_event), runs=1)
        schedule(srv, False)
        wait_idle(c)
        started = trainings(c) - before
    res["event_sched"] = r
    bench_line("default_event_c50_P32_schedule", r["rps"], "events/s")
    bench_line("default_event_c50_P32_schedule_p99", r["p99"], "ms")
    say("  (with the schedule on: %d training(s) of ials/ease ran or started during the %d events)"
        % (started, 2 * cfg.n_event))


def trainings(c):
    m = c.call("sys.info")["models"]
    return m["ials"]["trainings"] + m["ease"]["trainings"]


def train(srv):
    """model.train {model = "all", wait = true}: the server's seconds and the wall time."""
    t0 = time.perf_counter()
    with srv.admin(timeout=3600) as a:
        r = a.call("model.train", {"model": "all", "wait": True})
    return r.get("seconds", float("nan")), time.perf_counter() - t0, r.get("events")


def part_train(srv, cfg, res):
    with srv.client() as c:
        wait_idle(c)
    idle_s, idle_wall, idle_events = train(srv)
    say("  training on the idle server: %.2f s (%s events)" % (idle_s, idle_events))
    out = {}

    def run():
        try:
            out["r"] = train(srv)
        except Exception as e:      # noqa: BLE001 - reported below
            out["err"] = e
        out["end"] = time.perf_counter()

    th = threading.Thread(target=run)
    th.start()
    with srv.client() as c:
        t0 = time.perf_counter()
        while c.call("sys.info")["training"] == 0 and th.is_alive() and time.perf_counter() - t0 < 10:
            time.sleep(0.01)
    chunks = []     # (events, seconds, p99) of chunks that ended inside the training
    while th.is_alive():
        r = recd_bench(srv, cfg, *event_args(cfg, cfg.n_chunk), runs=1)
        if th.is_alive():
            chunks.append((cfg.n_chunk, cfg.n_chunk / r["rps"], r["p99"]))
    th.join()
    if "err" in out:
        raise out["err"]
    busy_s, _, busy_events = out["r"]
    say("  the same training under event.add -c 50 -P 32: %.2f s (%s events); %d chunk(s) of %d "
        "events inside it" % (busy_s, busy_events, len(chunks), cfg.n_chunk))
    if chunks:
        rate = sum(n for n, _, _ in chunks) / sum(s for _, s, _ in chunks)
        p99 = median([p for _, _, p in chunks])
    else:
        rate = p99 = float("nan")
        say("  (the training ended before one chunk of event.add did: no figure while training)")
    res["train"] = {"idle": idle_s, "busy": busy_s, "rate": rate, "p99": p99}
    bench_line("default_train_idle", idle_s, "s")
    bench_line("default_train_under_events", busy_s, "s")
    if idle_s > 0:
        bench_line("ratio_default_train_under_events_over_idle", busy_s / idle_s, "ratio")
    bench_line("default_event_c50_P32_training", rate, "events/s")
    bench_line("default_event_c50_P32_training_p99", p99, "ms")


def part_feedback(srv, cfg, res):
    rnd = random.Random(7)
    fb, ack, nxt, changed, came_back = [], [], [], 0, 0
    with srv.client() as c:
        for _ in range(cfg.n_feedback):
            user = "u%d" % rnd.randint(1, cfg.users)
            before = [x["id"] for x in c.call("rec.recommend", {"user": user, "n": 10})["items"]]
            if not before:
                continue
            t0 = time.perf_counter()
            c.call("event.add", {"user": user, "item": before[0], "type": "click"})
            t1 = time.perf_counter()
            after = [x["id"] for x in c.call("rec.recommend", {"user": user, "n": 10})["items"]]
            t2 = time.perf_counter()
            fb.append((t2 - t0) * 1000)
            ack.append((t1 - t0) * 1000)
            nxt.append((t2 - t1) * 1000)
            came_back += before[0] in after
            changed += after != before
    say("  feedback to effect: %d clicks; the list changed after %d, the clicked item came back "
        "in %d" % (len(fb), changed, came_back))
    if came_back:
        raise RuntimeError("the clicked item came back in %d of %d lists" % (came_back, len(fb)))
    res["feedback"] = {"p50": pct(fb, 0.5), "p99": pct(fb, 0.99), "n": len(fb),
                       "changed": changed}
    bench_line("default_feedback_to_effect_p50", pct(fb, 0.5), "ms")
    bench_line("default_feedback_to_effect_p99", pct(fb, 0.99), "ms")
    # its two halves: the durable event.add alone, and the list after it
    bench_line("default_feedback_event_ack_p50", pct(ack, 0.5), "ms")
    bench_line("default_feedback_event_ack_p99", pct(ack, 0.99), "ms")
    bench_line("default_feedback_next_list_p50", pct(nxt, 0.5), "ms")
    bench_line("default_feedback_next_list_p99", pct(nxt, 0.99), "ms")


def click_warm():
    with open(os.path.join(ROOT, "policies", "click.lua")) as f:
        m = re.search(r"^local WARM\s*=\s*(\d+)", f.read(), re.M)
    return int(m.group(1)) if m else 200


def part_click(srv, cfg, res):
    need = click_warm() + 50
    rnd = random.Random(11)
    sent = 0
    with srv.client() as c:
        t0 = time.perf_counter()
        while c.call("sys.info")["click"]["examples"] < need:
            if time.perf_counter() - t0 > 300:
                raise RuntimeError("the click model learned fewer than %d examples in 300 s" % need)
            for _ in range(20):
                user = "u%d" % rnd.randint(1, cfg.users)
                ans = c.call("rec.recommend", {"user": user, "n": 10})
                if ans["items"]:
                    c.call("event.add", {"user": user, "type": "click", "rec_id": ans["rec_id"],
                                         "item": rnd.choice(ans["items"])["id"]})
                    sent += 1
        examples = c.call("sys.info")["click"]["examples"]
    say("  the click model ranks: %d examples learned after %d clicks on served lists (WARM %d)"
        % (examples, sent, need - 50))
    r = recd_bench(srv, cfg, "-t", "recommend", "-c", 1, "-P", 1, "-n", cfg.n_rec,
                   "--users", cfg.users)
    res["click"] = r
    bench_line("default_recommend_click_model_c1_p50", r["p50"], "ms")
    bench_line("default_recommend_click_model_c1_p99", r["p99"], "ms")
    bench_line("default_recommend_click_model_c1", r["rps"], "req/s")


# ---- redis --------------------------------------------------------------------

class Redis:
    """A redis-server on a folder under tmp (the same filesystem as recd's)."""

    def __init__(self, tmp, name, args):
        self.dir = os.path.join(tmp, "redis-" + name)
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None
        for _ in range(5):
            self.port = free_port()
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                 "--daemonize", "no", "--save", ""] + args,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(100):
                if subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True,
                                  text=True).stdout.strip() == "PONG":
                    return
                time.sleep(0.1)
            self.stop()
        raise RuntimeError("redis-server did not come up")

    def bench(self, n):
        """redis-benchmark EVAL (LPUSH + INCR) at -c 50 -P 32: (rps, p99)."""
        r = subprocess.run(["redis-benchmark", "-p", str(self.port), "--csv", "-c", "50",
                            "-P", "32", "-n", str(n), "-r", "100000", "EVAL",
                            REDIS_SCRIPT, "2", "ev", "cnt", REDIS_PAYLOAD],
                           capture_output=True, text=True, check=True)
        # "test","rps","avg","min","p50","p95","p99","max": the last row
        row = r.stdout.strip().splitlines()[-1].strip('"').split('","')
        return float(row[1]), float(row[6])

    def stop(self):
        if self.proc is None:
            return
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"],
                       capture_output=True)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def have_redis():
    return bool(shutil.which("redis-server") and shutil.which("redis-benchmark"))


def event_rounds(srv, tmp, cfg, res, with_redis):
    """event.add on srv and EVAL on both Redis servers, round by round
    (each round: recd, Redis with appendfsync always, Redis without
    persistence), so that each ratio compares runs made within seconds of
    each other on the shared machine: the medians of the runs and of the
    rounds' ratios. Either side may be absent (srv None, or no Redis)."""
    redis = {}
    try:
        if with_redis:
            redis["aof"] = Redis(tmp, "aof", ["--appendonly", "yes", "--appendfsync", "always"])
            redis["nopersist"] = Redis(tmp, "nopersist", ["--appendonly", "no"])
        rounds = []
        for _ in range(cfg.runs):
            rnd = {}
            if srv is not None:
                r = recd_bench(srv, cfg, *event_args(cfg, cfg.n_event), runs=1)
                rnd["recd"] = (r["rps"], r["p99"])
            for name, rs in redis.items():
                rnd[name] = rs.bench(cfg.n_event)
            rounds.append(rnd)
        # Sustained: one run long enough to hold a checkpoint (every 10 s)
        # and the ials fold-ins owed by every event, against Redis with
        # appendfsync always for as many events. The short runs above leave
        # both to the pauses between runs.
        sustained = {}
        if srv is not None:
            r = recd_bench(srv, cfg, *event_args(cfg, cfg.n_sustained), runs=1)
            sustained["recd"] = (r["rps"], r["p99"])
        if "aof" in redis:
            sustained["aof"] = redis["aof"].bench(cfg.n_sustained)
    finally:
        for rs in redis.values():
            rs.stop()
    med = {k: (median([r[k][0] for r in rounds]), median([r[k][1] for r in rounds]))
           for k in rounds[0]}
    if "recd" in med:
        res["event"] = {"rps": med["recd"][0], "p99": med["recd"][1]}
        bench_line("default_event_c50_P32", med["recd"][0], "events/s")
        bench_line("default_event_c50_P32_p99", med["recd"][1], "ms")
    for name in redis:
        res["redis_" + name] = {"rps": med[name][0], "p99": med[name][1]}
        tail = "" if name == "aof" else "_nopersist"
        bench_line("default_redis_eval_event_c50_P32" + tail, med[name][0], "events/s")
        bench_line("default_redis_eval_event_c50_P32%s_p99" % tail, med[name][1], "ms")
        if "recd" in med:
            ratio = median([r["recd"][0] / r[name][0] for r in rounds])
            res["ratio_" + name] = ratio
            bench_line("ratio_default_event_over_redis" + tail, ratio, "ratio")
    if "recd" in sustained:
        res["event_sustained"] = {"rps": sustained["recd"][0], "p99": sustained["recd"][1],
                                  "n": cfg.n_sustained}
        bench_line("default_event_c50_P32_sustained", sustained["recd"][0], "events/s")
        bench_line("default_event_c50_P32_sustained_p99", sustained["recd"][1], "ms")
        say("  (sustained: %d events in one run)" % cfg.n_sustained)
    if "aof" in sustained:
        bench_line("default_redis_eval_event_c50_P32_sustained", sustained["aof"][0], "events/s")
        if "recd" in sustained:
            ratio = sustained["recd"][0] / sustained["aof"][0]
            res["ratio_aof_sustained"] = ratio
            bench_line("ratio_default_event_over_redis_sustained", ratio, "ratio")


def part_redis(tmp, cfg, res):
    """Redis alone (--only redis without event); with the event part, its
    rounds run there, interleaved with recd's."""
    if not have_redis():
        say("  redis-server/redis-benchmark not installed: no comparison")
        return
    if "redis_aof" not in res:
        event_rounds(None, tmp, cfg, res, True)
    tr = res.get("train")
    for name in ("aof", "nopersist"):
        r = res.get("redis_" + name)
        if r and tr and tr["rate"] == tr["rate"]:
            # the training's chunks ran minutes after the Redis rounds
            bench_line("ratio_default_event_training_over_redis" +
                       ("" if name == "aof" else "_nopersist"), tr["rate"] / r["rps"], "ratio")


# ---- scale --------------------------------------------------------------------

def part_scale(recd, tmp, cfg, res):
    base = (cfg.items, cfg.users, cfg.per_user)
    points = [("items", n, (n, cfg.users, cfg.per_user)) for n in cfg.scale_items]
    points += [("history", per, (cfg.items, users, per)) for per, users in cfg.scale_hist]
    done = {}
    if "recommend" in res:
        done[base] = res["recommend"]
    res["scale"] = []
    for axis, value, fx in points:
        if fx not in done:
            say("-- scale: %d items, %d users of %d events" % fx)
            srv = Server(recd, tmp, "scale-%d-%d-%d" % fx).start()
            try:
                load_fixture(srv, *fx)
                schedule(srv, False)
                warm_up(srv, cfg, fx[1])
                done[fx] = recd_bench(srv, cfg, "-t", "recommend", "-c", 1, "-P", 1,
                                      "-n", cfg.n_rec, "--users", fx[1], tolerate=True)
            finally:
                srv.stop()
                shutil.rmtree(srv.data, ignore_errors=True)
        r = done[fx]
        res["scale"].append((axis, value, fx, r))
        if "error" in r:
            continue
        bench_line("default_scale_%s%d_recommend_c1_p50" % (axis, value), r["p50"], "ms")
        bench_line("default_scale_%s%d_recommend_c1_p99" % (axis, value), r["p99"], "ms")


# ---- the table ----------------------------------------------------------------

def table(cfg, res):
    rows = []

    def row(what, value, target=""):
        rows.append((what, value, target))

    ms = lambda v: "%.2f ms" % v       # noqa: E731
    if "recommend" in res:
        r = res["recommend"]
        row("rec.recommend n=10, 1 client, p50", ms(r["p50"]), "<= 0.5 ms")
        row("  the same, p99", ms(r["p99"]), "<= 1 ms")
        row("  the same, requests/s", "%.0f" % r["rps"])
    if "concurrent" in res:
        r = res["concurrent"]
        row("rec.recommend -c 50, requests/s", "%.0f" % r["rps"], ">= 3,000")
        row("  the same, p99", ms(r["p99"]))
    if "event" in res:
        r = res["event"]
        row("durable event.add -c 50 -P 32, events/s", "%.0f" % r["rps"],
            ">= Redis EVAL, appendfsync always")
        row("  the same, p99", ms(r["p99"]))
        r = res["event_sched"]
        row("  the same with the training schedule on, events/s", "%.0f" % r["rps"])
    if "event_sustained" in res:
        r = res["event_sustained"]
        ratio = " (%.2fx Redis)" % res["ratio_aof_sustained"] if "ratio_aof_sustained" in res else ""
        row("  sustained over %s events, events/s" % format(r["n"], ","), "%.0f%s" % (r["rps"], ratio))
    if "train" in res:
        t = res["train"]
        row("event.add while ials + EASE train, events/s",
            "%.0f" % t["rate"] if t["rate"] == t["rate"] else "n/a", "the same")
        row("  the same, p99", ms(t["p99"]) if t["p99"] == t["p99"] else "n/a")
        row("model.train all: idle / under event.add", "%.1f s / %.1f s (%.2fx)" %
            (t["idle"], t["busy"], t["busy"] / t["idle"] if t["idle"] else float("nan")),
            "<= 2x")
    for name, label in (("redis_aof", "Redis EVAL (LPUSH+INCR), appendfsync always"),
                        ("redis_nopersist", "Redis EVAL, no persistence")):
        if name in res:
            r = res[name]
            ratio = ""
            if "ratio_" + name[6:] in res:
                ratio = "; recd %.2fx" % res["ratio_" + name[6:]]
                if "train" in res and res["train"]["rate"] == res["train"]["rate"]:
                    ratio += " (%.2fx training)" % (res["train"]["rate"] / r["rps"])
            row(label + ", -c 50 -P 32", "%.0f/s, p99 %.2f ms%s" % (r["rps"], r["p99"], ratio),
                ">= 1.0x" if name == "redis_aof" else "quoted")
    if "feedback" in res:
        f = res["feedback"]
        row("feedback to effect (click ack + next list), p50", ms(f["p50"]))
        row("  the same, p99", ms(f["p99"]), "<= 2 ms")
    if "click" in res:
        r = res["click"]
        row("rec.recommend once the click model ranks, p50", ms(r["p50"]))
        row("  the same, p99", ms(r["p99"]))
    if res.get("scale"):
        for axis, value, fx, r in res["scale"]:
            what = ("%s items" % format(value, ",") if axis == "items"
                    else "%s events/user" % format(value, ","))
            row("scale: %s (%s items, %s users x %d), p50 / p99" %
                (what, format(fx[0], ","), format(fx[1], ","), fx[2]),
                "an error answer" if "error" in r else "%.2f / %.2f ms" % (r["p50"], r["p99"]))
    if not rows:
        return
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    say("")
    say("The default configuration (make run)%s: %s items, %s events" %
        (" (quick)" if cfg.quick else "", format(cfg.items, ","),
         format(cfg.users * cfg.per_user, ",")))
    say("%-*s  %-*s  %s" % (w0, "figure", w1, "measured", "target"))
    for what, value, target in rows:
        say("%-*s  %-*s  %s" % (w0, what, w1, value, target))


# ---- main ---------------------------------------------------------------------

def main(argv):
    args = argv[1:]
    quick = os.environ.get("RECD_BENCH_QUICK", "0") not in ("", "0")
    only, keep, recd = None, False, None
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--quick":
            quick = True
        elif a == "--keep":
            keep = True
        elif a == "--only" or a.startswith("--only="):
            if a == "--only":
                i += 1
                if i == len(args):
                    sys.exit("default_bench: --only needs PART[,PART...]")
                val = args[i]
            else:
                val = a.split("=", 1)[1]
            only = [p for p in val.split(",") if p]
            bad = [p for p in only if p not in PARTS]
            if bad or not only:
                sys.exit("default_bench: unknown part(s) %s; parts: %s" %
                         (",".join(bad), ",".join(PARTS)))
        elif a in ("-h", "--help"):
            print(__doc__)
            return 0
        elif recd is None and not a.startswith("-"):
            recd = a
        else:
            sys.exit("usage: default_bench.py RECD [--quick] [--only PART,...] [--keep]")
        i += 1
    recd = os.path.abspath(recd or os.path.join(ROOT, "recd"))
    if not os.access(recd, os.X_OK):
        sys.exit("default_bench: %s is not executable" % recd)
    cfg = Config(quick)
    parts = [p for p in PARTS if only is None or p in only]
    tmp = tempfile.mkdtemp(prefix="recd-default.",
                           dir=os.environ.get("RECD_BENCH_DIR") or tempfile.gettempdir())
    fs = subprocess.run(["stat", "-f", "-c", "%T", tmp], capture_output=True, text=True).stdout
    say("== the default configuration: %s serve, scripts/ and policies/ of %s; %s (%s), %s cpus, "
        "load average %.2f%s" % (recd, ROOT, tmp, fs.strip() or "?", os.cpu_count(),
                                 os.getloadavg()[0], ", quick" if quick else ""))
    res = {"tmp": tmp, "with_redis": "redis" in parts and have_redis()}
    srv = None
    try:
        if MAIN_PARTS & set(parts):
            say("-- fixture: %d items (d=%d content, category), %d users of %d events" %
                (cfg.items, DIM, cfg.users, cfg.per_user))
            srv = Server(recd, tmp, "main").start()
            ld = load_fixture(srv, cfg.items, cfg.users, cfg.per_user)
            bench_line("default_load_events", ld["events_per_s"], "events/s")
            bench_line("default_startup_training", ld["train_s"], "s")
            schedule(srv, False)
            warm_up(srv, cfg, cfg.users)
            for p in parts:
                if p in MAIN_PARTS:
                    say("-- %s" % p)
                    globals()["part_" + p](srv, cfg, res)
                    if not srv.alive():
                        raise RuntimeError("recd serve died; see %s" % srv.log)
            srv.stop()
            srv = None
        if "train" in parts:
            say("-- train (a server of its own: %d items, %d users of %d events)" %
                (cfg.items, cfg.users, cfg.per_user))
            srv = Server(recd, tmp, "train").start()
            load_fixture(srv, cfg.items, cfg.users, cfg.per_user)
            schedule(srv, False)
            warm_up(srv, cfg, cfg.users)
            part_train(srv, cfg, res)
            if not srv.alive():
                raise RuntimeError("recd serve died; see %s" % srv.log)
            srv.stop()
            srv = None
        if "redis" in parts:
            say("-- redis")
            part_redis(tmp, cfg, res)
        if "scale" in parts:
            say("-- scale")
            part_scale(recd, tmp, cfg, res)
        table(cfg, res)
        say("(load average at the end: %.2f %.2f %.2f; the figures share the machine with it)"
            % os.getloadavg())
    finally:
        if srv is not None:
            srv.stop()
        if keep:
            say("kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
