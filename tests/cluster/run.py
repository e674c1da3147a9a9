"""make test-cluster: recd nodes over a 3-server NATS JetStream cluster (R3).

On loopback, with its own nats-servers (random ports, temporary stores):
- catalogue writes and read-your-writes through several nodes
  (replicas.py);
- clients write events (and catalogue writes) through three nodes,
  pipelined, while one node is killed with SIGKILL and restarted, and
  while one nats-server is killed with SIGKILL; afterwards every
  acknowledged event is in its user's history exactly once on every node,
  no event (acknowledged, refused or cut off) is there twice, and the
  catalogue is identical on every node;
- read-your-writes: a user's history read right after the answer to an
  event.add holds that event, and rec.recommend answers for that user;
- bad starts are refused with a clear message and a non-zero exit, and
  change nothing: an unreachable cluster, a partition count that
  disagrees with the stream's, a node name already in use;
- sys.info shows the cluster section; the Lua module has no cluster code;
- a node starts from a copy of another's folder and consumes only the
  stream past it; a folder the stream's retention left behind is refused
  (snapshots.py);
- a node stopped past its lease, whose name another process took, stops
  with exit 1 when it runs again and leaves the name to the other.

Prints "RESULT passed=N failed=M"; exits non-zero on a failure.
RECD_CLUSTER_EVENTS sets the number of events (100000).
"""
import os
import random
import subprocess
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import natsrig  # noqa: E402
import owners  # noqa: E402
import replicas  # noqa: E402
import snapshots  # noqa: E402
from recd_client import Client, RecdError  # noqa: E402

EVENTS = int(os.environ.get("RECD_CLUSTER_EVENTS", "100000"))
CLIENTS = 4
WINDOW = 16                     # calls in flight per client
USERS = 200
ITEMS = 300
TS0 = 1790000000.0              # an event's ts is TS0 + its token: unique


class Ledger:
    """What each token (one event) came to, by the client that sent it:
    tokens first .. first + count - 1."""

    def __init__(self, first=0, count=EVENTS):
        self.lock = threading.Lock()
        self.next_tok = first
        self.end = first + count
        self.acked, self.failed, self.unknown = set(), set(), set()
        self.user_of = {}
        self.bad = []

    def take(self, n):
        with self.lock:
            if self.next_tok >= self.end:
                return None
            n = min(n, self.end - self.next_tok)
            toks = list(range(self.next_tok, self.next_tok + n))
            self.next_tok += n
            return toks

    def count_acked(self):
        with self.lock:
            return len(self.acked)


def event(rng, tok, ledger, users=USERS):
    user = "u%d" % rng.randrange(users)
    ledger.user_of[tok] = user
    return {"user": user, "item": "i%d" % rng.randrange(ITEMS),
            "type": rng.choice(["view", "click", "purchase"]), "ts": TS0 + tok}


def client_loop(node, no, ledger, stop, users=USERS):
    """Pipelined event.add calls of 1-5 events until the tokens run out;
    reconnects when the node goes away (what was in flight is unknown)."""
    rng = random.Random(1000 + no)
    while not stop.is_set():
        try:
            c = Client(node.addr, timeout=60)
        except OSError:
            time.sleep(0.1)
            continue
        pending = {}
        done = False
        try:
            while True:
                while len(pending) < WINDOW and not done:
                    toks = ledger.take(rng.randint(1, 5))
                    if toks is None:
                        done = True
                        break
                    evs = [event(rng, t, ledger, users) for t in toks]
                    pending[c.send("event.add", *evs)] = toks
                if not pending:
                    return
                mid, err, result = c.recv()
                toks = pending.pop(mid)
                with ledger.lock:
                    if err is None:
                        if result != len(toks):
                            ledger.bad.append("event.add answered %r for %d" % (result, len(toks)))
                        ledger.acked.update(toks)
                    else:
                        ledger.failed.update(toks)
        except (OSError, ConnectionError, RecdError):
            with ledger.lock:
                for toks in pending.values():
                    ledger.unknown.update(toks)
            time.sleep(0.1)
        finally:
            c.close()


def history_tokens(node, users):
    """token -> how many times it is in the histories of users, as this
    node holds them (user.history would be served by each user's owner:
    admin.eval on the node's Unix socket reads its own state)."""
    seen = {}
    code = ("local out = {} for _, u in ipairs({%s}) do "
            "for _, h in ipairs(rec:history(u, 1000000)) do out[#out + 1] = h.ts end end "
            "return out" % ",".join('"%s"' % u for u in users))
    with Client(node.sock, timeout=60) as c:
        (ts,) = c.call("admin.eval", code)
    for x in ts:
        t = int(round(x - TS0))
        seen[t] = seen.get(t, 0) + 1
    return seen


# ---- the checks -------------------------------------------------------------

def check_unreachable(rig):
    """No server listens there: a clear error, exit non-zero, no folder."""
    data = os.path.join(rig.dir, "never")
    port = natsrig.free_port()
    cmd = [natsrig.RECD_BIN, "serve", "--data", data, "--listen", "127.0.0.1:%d" % natsrig.free_port(),
           "--unix", "", "--cluster", "nats://127.0.0.1:%d" % port, "--node", "lost"]
    p = subprocess.run(cmd, capture_output=True, timeout=60)
    err = p.stderr.decode()
    assert p.returncode != 0, "exit 0 against an unreachable cluster:\n" + err
    assert "cannot reach the NATS cluster" in err, err
    assert not os.path.exists(data), "the data folder was made"


def check_bad_options(rig):
    base = [natsrig.RECD_BIN, "serve", "--data", os.path.join(rig.dir, "never2"), "--unix", ""]
    for extra, said in [(["--node", "x"], "--node, --partitions and --retain need --cluster"),
                        (["--retain", "3600"], "need --cluster"),
                        (["--cluster", rig.url(0), "--retain", "30"], "at least 60 seconds"),
                        (["--cluster", rig.url(0), "--partitions", "0"], "--partitions must be"),
                        (["--cluster", rig.url(0), "--node", "a.b"], "a name is 1..63")]:
        p = subprocess.run(base + extra, capture_output=True, timeout=60)
        assert p.returncode != 0 and said in p.stderr.decode(), (extra, p.stderr.decode())
    assert not os.path.exists(os.path.join(rig.dir, "never2"))


def check_partitions_disagree(rig):
    n = rig.node("other", extra=["--partitions", "32"])
    rc, log = n.run_to_exit(timeout=60)
    assert rc not in (0, None), "started with a partition count the stream disagrees with"
    assert "--partitions 32 disagrees with stream RECD_EVENTS, made with 64" in log, log
    assert not os.path.exists(n.data)
    # The same keys in a --config file.
    conf = os.path.join(rig.dir, "other.lua")
    with open(conf, "w") as f:
        f.write('return {cluster = "%s", node = "other", partitions = 16}\n' % rig.urls())
    data = os.path.join(rig.dir, "data-conf")
    p = subprocess.run([natsrig.RECD_BIN, "serve", "--data", data, "--unix", "", "--listen",
                        "127.0.0.1:%d" % natsrig.free_port(), "--config", conf],
                       capture_output=True, timeout=60)
    err = p.stderr.decode()
    assert p.returncode != 0 and "--partitions 16 disagrees with stream" in err, err
    assert not os.path.exists(data)


def check_name_in_use(rig, live):
    n = rig.node(live.name, data=os.path.join(rig.dir, "data-twin"))
    t0 = time.monotonic()
    rc, log = n.run_to_exit(timeout=60)
    assert rc not in (0, None), "a second node took a live node's name"
    assert "node name %s is in use" % live.name in log, log
    assert not os.path.exists(n.data)
    assert live.proc.poll() is None, "the live node died"
    return time.monotonic() - t0


def check_read_your_writes(node, rounds=40):
    rng = random.Random(7)
    with node.connect() as c:
        for k in range(rounds):
            user = "ryw%d" % rng.randrange(5)
            ts = TS0 - 1000 - k      # outside the tokens' range
            assert c.call("event.add", {"user": user, "item": "i%d" % k, "type": "click",
                                        "ts": ts}) == 1
            hist = c.call("user.history", user, {"n": 5})["history"]
            assert hist and hist[0]["ts"] == ts and hist[0]["item"] == "i%d" % k, (k, hist)
            recs = c.call("rec.recommend", {"user": user, "n": 5})
            assert isinstance(recs, dict), recs


def check_bad_call_publishes_nothing(node):
    """A call with a bad event is refused whole, as on a node alone: its
    good events are not published either."""
    before = node.wait_caught_up()   # the lists shown before, sent on
    time.sleep(0.2)
    before = node.wait_caught_up()
    with node.connect() as c:
        try:
            c.call("event.add", {"user": "bad1", "item": "i1", "type": "click"},
                   {"user": "bad1", "type": "click"})
            raise AssertionError("a call with an event without item was accepted")
        except RecdError as e:
            assert e.name == "invalid_params" and "params[1].item" in str(e), e
        assert c.call("user.history", "bad1")["history"] == []
    after = node.info()["cluster"]
    assert after["published"] == before["published"], (before, after)


def check_info(node):
    cl = node.info()["cluster"]
    for k in ("servers", "connected", "node", "stream", "replicas", "partitions", "owned",
              "last_applied", "stream_last", "lag", "applied", "published"):
        assert k in cl, (k, cl)
    assert cl["node"] == node.name and cl["stream"] == "RECD_EVENTS"
    assert cl["partitions"] == 64 and cl["replicas"] == 3
    # alone, the node owns every partition
    assert cl["owned"] == list(range(64)) and cl["peers"] == [], cl
    return cl


def check_clean_restart(node):
    node.wait_caught_up()   # its own lists shown, in the stream and applied
    before = node.info()
    rc = node.stop()
    assert rc == 0, "exit code %r on SIGTERM:\n%s" % (rc, node.log())
    t0 = time.monotonic()
    node.start()
    assert "waiting" not in node.log(), node.log()   # no lease to wait out
    cl = node.wait_caught_up()
    after = node.info()
    assert cl["last_applied"] == before["cluster"]["last_applied"], (cl, before["cluster"])
    assert cl["applied"] == 0 and cl["duplicates"] == 0, cl
    assert after["events"] == before["events"], (after["events"], before["events"])
    rc = node.stop()
    assert rc == 0, "exit code %r on SIGTERM:\n%s" % (rc, node.log())


def check_fresh_node_and_failed_commits(rig, seen_a):
    """A node on a new folder is a view of the whole stream: it builds the
    same histories as the first node. It runs with commits failing now and
    then (RECD_FAULT_COMMIT, in test builds): what a failed commit dropped
    is consumed again from the sequence the folder stores, and what it
    acknowledges is there once."""
    node = rig.node("fresh", env={"RECD_FAULT_COMMIT": "every=4:eio"}).start()
    node.wait_caught_up(timeout=120)
    seen = history_tokens(node, ["u%d" % i for i in range(USERS)])
    assert seen == seen_a, "the fresh node differs: %d tokens against %d" % (len(seen), len(seen_a))
    first = 10 ** 6
    ledger = Ledger(first, 3000)
    stop = threading.Event()
    threads = [threading.Thread(target=client_loop, args=(node, 10 + i, ledger, stop, 20),
                                daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    stop.set()
    assert not ledger.bad, ledger.bad[:5]
    node.wait_caught_up()
    seen = history_tokens(node, ["u%d" % i for i in range(20)])
    mine = {t: n for t, n in seen.items() if t >= first}
    assert all(n == 1 for n in mine.values()), "applied twice"
    missing = [t for t in ledger.acked if t not in mine]
    assert not missing, "acknowledged events missing: %r" % missing[:10]
    failures = node.log(10 ** 7).count("group commit failed")
    cl = node.info()["cluster"]
    rc = node.stop()
    assert rc == 0, node.log()
    print("  %d acknowledged, %d refused; %d failed commits; node: %r" % (
        len(ledger.acked), len(ledger.failed), failures,
        {k: cl[k] for k in ("last_applied", "duplicates", "applied")}))
    if not failures:
        print("  (this binary has no fault points: the commits did not fail)")


MAX_TYPES = 1024                # REC_MAX_TYPES


def check_refused_at_apply(node):
    """More new event types than the engine keeps, pipelined: each call is
    checked against the types that exist when it comes, so some pass the
    check and are refused when applied. Each answer tells the truth: an
    event answered as stored is in the history, one answered with an error
    is not."""
    node.start()
    node.wait_caught_up()
    n = MAX_TYPES + 76
    ts = [TS0 - 10 ** 6 - k for k in range(n)]
    with node.connect() as c:
        calls = [("event.add", [{"user": "typed", "item": "i1", "type": "t%d" % k,
                                 "ts": ts[k]}]) for k in range(n)]
        res = c.pipeline(calls, window=512, raise_errors=False)
        hist = set()
        cursor = 0
        while cursor is not None:
            r = c.call("user.history", "typed", {"cursor": cursor, "n": 10000})
            hist.update(h["ts"] for h in r["history"])
            cursor = r["cursor"]
    errors = [k for k, r in enumerate(res) if isinstance(r, RecdError)]
    assert len(errors) >= n - MAX_TYPES, len(errors)
    for k, r in enumerate(res):
        if isinstance(r, RecdError):
            assert ts[k] not in hist, (k, r)
        else:
            assert r == 1 and ts[k] in hist, (k, r)
    at_apply = sum(1 for k in errors if "refused when applied" in str(res[k]))
    print("  %d stored, %d refused (%d of them when applied)" % (n - len(errors), len(errors),
                                                                 at_apply))
    rc = node.stop()
    assert rc == 0, node.log()


def check_module_has_no_cluster():
    so = os.path.join(os.path.dirname(natsrig.RECD_BIN), "lua", "recd.so")
    if not os.path.exists(so):
        return
    out = subprocess.run(["nm", "-D", so], capture_output=True, text=True).stdout
    bad = [l for l in out.splitlines() if "rec_cluster" in l or "nats" in l.lower()]
    assert not bad, bad


def check_load_with_kills(rig, nodes):
    """The writes through every node (events, and catalogue writes), with
    one node killed and restarted, then a nats-server killed, each once a
    share of the events is acknowledged; every node then holds each
    acknowledged event once, and the same catalogue."""
    node, victim_node = nodes[0], nodes[-1]
    ledger = Ledger()
    cat = replicas.CatalogLedger()
    stop = threading.Event()
    threads = [threading.Thread(target=client_loop, args=(nodes[i % len(nodes)], i, ledger, stop),
                                daemon=True) for i in range(CLIENTS)]
    threads += [threading.Thread(target=replicas.catalog_loop,
                                 args=(n, k, cat, stop, 300), daemon=True)
                for k, n in enumerate(nodes)]
    t0 = time.monotonic()
    for t in threads:
        t.start()

    def wait_acked(n, what):
        deadline = time.monotonic() + 120
        while ledger.count_acked() < n:
            if time.monotonic() > deadline:
                raise AssertionError("stuck before %s: %d acknowledged\n%s"
                                     % (what, ledger.count_acked(), node.log()))
            if not any(t.is_alive() for t in threads):
                break
            time.sleep(0.02)

    wait_acked(EVENTS * 3 // 10, "the node's kill")
    victim_node.kill()
    at_kills = [ledger.count_acked()]
    wait_acked(EVENTS * 6 // 10, "the nats-server's kill")
    # The first node is connected to the first server of its list.
    connected = node.info()["cluster"]["connected"]
    victim = [i for i in range(rig.n) if rig.url(i) == connected]
    assert victim, connected
    rig.kill_nats(victim[0])
    at_kills.append(ledger.count_acked())
    # The killed node comes back (after its lease) with a server missing.
    victim_node.start(timeout=60)
    at_kills.append(ledger.count_acked())
    for t in threads:
        t.join(240)
    stop.set()
    assert not any(t.is_alive() for t in threads), "clients still running"
    elapsed = time.monotonic() - t0
    assert not ledger.bad, ledger.bad[:5]
    first_seen = None
    for n in nodes:
        cl = n.wait_caught_up()
        seen = history_tokens(n, ["u%d" % i for i in range(USERS)])
        twice = [t for t, k in seen.items() if k > 1]
        assert not twice, "%s: events applied twice: %r" % (n.name, twice[:10])
        missing = [t for t in ledger.acked if t not in seen]
        assert not missing, "%s: acknowledged events missing: %d, e.g. %r" % (
            n.name, len(missing), missing[:10])
        stray = [t for t in seen if t not in ledger.acked and t not in ledger.failed
                 and t not in ledger.unknown]
        assert not stray, "%s: events never sent: %r" % (n.name, stray[:10])
        if first_seen is None:
            first_seen = seen
        assert seen == first_seen, "%s holds other events than %s" % (n.name, nodes[0].name)
    seen = first_seen
    cl = node.info()["cluster"]
    items = replicas.check_catalogs_identical(nodes, cat)
    assert len(cat.put_acked) > 600, "too few catalogue writes acknowledged"
    # Each token's user: an event is where its user's history is.
    print("  acknowledged at the node's kill, the server's kill, the node's restart: %r"
          % at_kills)
    print("  %d events acknowledged, %d refused, %d cut off by the kill; %d applied in "
          "%.1f s; %d catalogue puts and %d deletes acknowledged, %d items on each of %d "
          "nodes; node: %r" % (len(ledger.acked), len(ledger.failed), len(ledger.unknown),
                               len(seen), elapsed, len(cat.put_acked), len(cat.del_acked), items,
                               len(nodes), {k: cl[k] for k in ("last_applied", "duplicates",
                                                               "publish_retries")}))
    assert len(ledger.acked) > EVENTS * 0.9, "too few acknowledged"
    # The killed server comes back on its store and rejoins.
    rig.start_nats(victim[0])
    return seen


def main():
    passed, failed = 0, 0
    rig = natsrig.Rig()
    os.environ.setdefault("RECD_FAULT_BARRIER_GIVE_UP", "2")

    def run(name, fn, *args):
        nonlocal passed, failed
        t = time.monotonic()
        try:
            fn(*args)
            passed += 1
            print("ok   %s (%.1f s)" % (name, time.monotonic() - t))
        except Exception:
            failed += 1
            print("FAIL %s\n%s" % (name, traceback.format_exc()))

    try:
        run("the Lua module holds no cluster code", check_module_has_no_cluster)
        rig.start()
        run("an unreachable cluster: clear error, no data folder", check_unreachable, rig)
        run("bad cluster options are refused", check_bad_options, rig)
        node = rig.node("a").start()
        run("sys.info shows the cluster", check_info, node)
        run("read-your-writes through the node", check_read_your_writes, node)
        run("a call with a bad event publishes nothing", check_bad_call_publishes_nothing, node)
        others = [rig.node("b", first=1).start(), rig.node("c", first=2).start()]
        nodes = [node] + others
        run("three nodes split the partitions among them", owners.check_partitions_split,
            nodes)
        run("catalogue writes through the stream, read through another node",
            replicas.check_catalog_writes, node, others[0])
        run("read-your-writes through any node", replicas.check_read_your_writes_across, nodes)
        run("reads pipelined on a connection share a barrier",
            replicas.check_pipelined_reads_share_a_barrier, node, others[0],
            owners.users_owned(others[0].name, [n.name for n in nodes], 5, "pipe"))
        run("a strict node takes an item put through another node",
            replicas.check_strict_order, rig, node)
        run("a read through a non-owner is answered as through the owner",
            owners.check_forwarded_as_owner, nodes)
        run("large pipelines of forwarded reads, in several messages each way",
            owners.check_large_batches, nodes)
        run("a list served through a non-owner is on every node; feedback on it is "
            "credited on every node, also when it comes before the list",
            owners.check_feedback_on_owner, nodes)
        run("kill -9 of a node: the survivors own its partitions, lists come for every "
            "user, a click on a list the dead node showed is credited; the node started "
            "again takes its share back", owners.check_failover,
            nodes, others[1])
        seen_a = {}
        t = time.monotonic()
        try:
            seen_a = check_load_with_kills(rig, nodes)
            passed += 1
            print("ok   %d events and catalogue writes through 3 nodes, kill -9 of a node and "
                  "of a nats-server: each acknowledged event once on every node, the same "
                  "catalogue (%.1f s)" % (EVENTS, time.monotonic() - t))
        except Exception:
            failed += 1
            print("FAIL the load with kills\n%s" % traceback.format_exc())
        for n in others:
            n.stop()
        run("a partition count that disagrees with the stream's", check_partitions_disagree, rig)
        run("a node name in use", check_name_in_use, rig, node)
        run("read-your-writes after the kills", check_read_your_writes, node, 10)
        run("a clean stop gives the name up; the restart applies nothing again",
            check_clean_restart, node)
        if seen_a:
            run("a node on a new folder builds the same state from the stream, through "
                "failed commits", check_fresh_node_and_failed_commits, rig, seen_a)
        snap = {}
        run("a node started on a copy of a serving node's folder applies only the stream "
            "past the copy", lambda: snap.update(copy=snapshots.check_snapshot_start(rig, node)))
        if snap:
            run("a folder the stream's retention left behind is refused; --retain sets it",
                snapshots.check_retention, rig, node, snap["copy"])
        else:
            node.stop()
        run("an event refused when applied is answered as refused", check_refused_at_apply,
            node)
        run("a stream made with the events' subjects only takes the catalogue's",
            replicas.check_old_stream_takes_catalog, rig, node)
        run("a node stopped past its lease whose name another took stops with exit 1 and "
            "leaves the name to it", snapshots.check_name_taken_while_stopped, rig, node)
        run("a read barrier the stream cannot answer gives up with io_error",
            replicas.check_barrier_gives_up, rig, node)
    finally:
        rig.stop()
    print("RESULT passed=%d failed=%d" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
