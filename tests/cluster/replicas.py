"""Several nodes over one stream, each a full replica (make test-cluster,
run from tests/cluster/run.py):

- catalogue writes (item.put, item.delete, user.put, user.delete) go
  through the stream: written through one node, read at once through
  another, with the answers a node alone gives (deletes count what was
  there); a bad write is refused whole and publishes nothing;
- read-your-writes through any node: an event acknowledged by one node is
  in the user's history read at once through another; an item put
  through one node is there at once through another; an event naming an
  item acknowledged through another node is accepted by a --strict node;
- reads pipelined on one connection share a barrier;
- sys.info shows the catalogue's consumer and the read barriers;
- the catalogue ends identical on every node (every item, its props and
  flag, the item count), and each acknowledged catalogue write is there.
"""
import random
import threading
import time

from recd_client import Client, RecdError  # noqa: E402


def check_catalog_writes(a, b):
    """Writes through a, reads through b at once, and back."""
    with a.connect() as ca, b.connect() as cb:
        assert ca.call("item.put", {"id": "cat1", "props": {"t": "one"}},
                       {"id": "cat2", "active": False}) == 2
        assert cb.call("item.get", "cat1")["props"] == {"t": "one"}
        assert cb.call("item.get", "cat2")["active"] is False
        # a delete answers how many were there, as alone
        assert cb.call("item.delete", "cat1", "never-there") == 1
        assert ca.call("item.get", "cat1") is None
        assert ca.call("item.delete", "cat1") == 0
        assert ca.call("user.put", {"id": "cu1", "props": {"age": 30}},
                       {"id": "cu2", "props": {"age": 40}}) == 2
        assert cb.call("user.get", "cu1")["props"] == {"age": 30}
        assert cb.call("event.add", {"user": "cu2", "item": "cat2", "type": "click",
                                     "ts": 1700000000.0}) == 1
        assert len(ca.call("user.history", "cu2")["history"]) == 1
        assert ca.call("user.delete", "cu1", "cu2", "cu-none") == 2
        assert cb.call("user.get", "cu2") is None
        assert cb.call("user.history", "cu2")["history"] == []
        # a bad write is refused whole, as alone, and nothing is published
        before = b.info()["cluster"]["published"]
        for method, params in [("item.put", [{"id": "ok1"}, {"props": {}}]),
                               ("item.put", [{"id": "ok2", "props": 5}]),
                               ("user.put", []),
                               ("item.delete", [{"x": 1}])]:
            try:
                cb.call(method, *params)
                raise AssertionError("%s %r was accepted" % (method, params))
            except RecdError as e:
                assert e.name == "invalid_params", e
        assert b.info()["cluster"]["published"] == before
        assert ca.call("item.get", "ok1") is None
        # a call over the servers' max_payload (1 MB): io_error, nothing in
        big = "x" * 600000
        try:
            cb.call("item.put", {"id": "big1", "props": {"s": big}},
                    {"id": "big2", "props": {"s": big}})
            raise AssertionError("a message over max_payload was accepted")
        except RecdError as e:
            assert e.name == "io_error" and "payload" in str(e).lower(), e
        assert cb.call("item.put", {"id": "big3", "props": {"s": big}}) == 1
        assert ca.call("item.get", "big1") is None and cb.call("item.get", "big2") is None
        assert len(ca.call("item.get", "big3")["props"]["s"]) == len(big)


def check_read_your_writes_across(nodes, rounds=150):
    """Each write through one node, read at once through another."""
    rng = random.Random(11)
    conns = [n.connect() for n in nodes]
    try:
        for k in range(rounds):
            w, r = rng.sample(range(len(nodes)), 2)
            user = "xr%d" % rng.randrange(20)
            ts = 1600000000.0 + k
            assert conns[w].call("event.add", {"user": user, "item": "xi%d" % k,
                                               "type": "click", "ts": ts}) == 1
            hist = conns[r].call("user.history", user, {"n": 1})["history"]
            assert hist and hist[0]["ts"] == ts, (k, nodes[w].name, nodes[r].name, hist)
            got = conns[r].call("user.get", user, 1)
            assert got and got["history"][0]["ts"] == ts, (k, got)
            assert isinstance(conns[r].call("rec.recommend", {"user": user, "n": 3}), dict)
            conns[w].call("item.put", {"id": "xp%d" % k, "props": {"k": k}})
            it = conns[r].call("item.get", "xp%d" % k)
            assert it and it["props"] == {"k": k}, (k, it)
    finally:
        for c in conns:
            c.close()
    passed = 0
    for n in nodes:
        cl = n.info()["cluster"]
        bar = cl["barriers"]
        passed += bar["passed"]
        assert bar["failures"] == 0 and bar["mean_wait_ms"] > 0, (n.name, bar)
        assert 0 < bar["questions"] <= bar["passed"], (n.name, bar)
        assert cl["catalog"]["subject"] == "recd.cat", cl["catalog"]
    # each read above came alone on its connection: a barrier each
    assert passed >= 4 * rounds, passed


def check_pipelined_reads_share_a_barrier(a, b, users, n=200):
    """An event acknowledged through a, then n reads pipelined through b
    (of users b owns: it serves them): each sees it, and they share a few
    barriers."""
    with a.connect() as ca, b.connect() as cb:
        for k in range(5):
            ts = 1650000000.0 + k
            assert ca.call("event.add", {"user": users[k], "item": "pi", "type": "click",
                                         "ts": ts}) == 1
            before = b.info()["cluster"]["barriers"]["passed"]
            res = cb.pipeline([("user.history", [users[k], {"n": 1}])] * n, window=n)
            assert all(r["history"][0]["ts"] == ts for r in res), (k, res[:3])
            used = b.info()["cluster"]["barriers"]["passed"] - before
            assert 1 <= used <= n // 4, (k, used)


def check_strict_order(rig, a):
    """An event naming an item acknowledged through another node is
    accepted by a --strict node: the check waits for the catalogue."""
    s = rig.node("strict", extra=["--strict"], first=2).start()
    try:
        s.wait_caught_up()
        with a.connect() as ca, s.connect() as cs:
            for k in range(20):
                assert ca.call("item.put", {"id": "st%d" % k}) == 1
                assert cs.call("event.add", {"user": "stu", "item": "st%d" % k,
                                             "type": "click", "ts": 1500000000.0 + k}) == 1
            try:
                cs.call("event.add", {"user": "stu", "item": "st-never", "type": "click"})
                raise AssertionError("a strict node took an unknown item")
            except RecdError as e:
                assert "not in the catalogue" in str(e), e
    finally:
        assert s.stop() == 0, s.log()


class CatalogLedger:
    """Catalogue writes by token: item "ck<token>" put with props {"k":
    token}; some deleted later by the client that put them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.put_acked, self.del_sent, self.del_acked = set(), set(), set()


def catalog_loop(node, no, ledger, stop, count):
    rng = random.Random(500 + no)
    toks = list(range(no * 100000, no * 100000 + count))
    i = 0
    while i < len(toks) and not stop.is_set():
        try:
            c = Client(node.addr, timeout=60)
        except OSError:
            time.sleep(0.1)
            continue
        try:
            while i < len(toks):
                t = toks[i]
                if c.call("item.put", {"id": "ck%d" % t, "props": {"k": t}}) == 1:
                    with ledger.lock:
                        ledger.put_acked.add(t)
                i += 1
                if i % 5 == 0:
                    d = toks[rng.randrange(i)]
                    with ledger.lock:
                        ledger.del_sent.add(d)
                    c.call("item.delete", "ck%d" % d)
                    with ledger.lock:
                        ledger.del_acked.add(d)
        except (OSError, ConnectionError, RecdError):
            i += 1              # that one's outcome is unknown: not checked
            time.sleep(0.1)
        finally:
            c.close()


def catalog_of(node):
    """item id -> (props, active), and sys.info's item count."""
    items = {}
    with node.connect(timeout=60) as c:
        cursor = 0
        while cursor is not None:
            r = c.call("item.list", {"cursor": cursor, "n": 10000})
            for i in r["ids"]:
                g = c.call("item.get", i)
                items[i] = (g["props"], g["active"])
            cursor = r["cursor"]
        count = c.call("sys.info")["items"]
    return items, count


def check_catalogs_identical(nodes, ledger):
    first = None
    cats = []
    for n in nodes:
        cl = n.wait_caught_up()
        cats.append(cl["catalog"])
        assert cl["catalog"]["lag"] == 0, (n.name, cl["catalog"])
        items, count = catalog_of(n)
        assert count == len(items), (n.name, count, len(items))
        if first is None:
            first = (n.name, items)
        else:
            diff = [k for k in set(first[1]) | set(items) if first[1].get(k) != items.get(k)]
            assert not diff, "catalogue of %s differs from %s's: %r" % (n.name, first[0], diff[:10])
        for t in ledger.put_acked - ledger.del_sent:
            assert items.get("ck%d" % t) == ({"k": t}, True), (n.name, t, items.get("ck%d" % t))
        for t in ledger.del_acked:
            assert "ck%d" % t not in items, (n.name, t)
    # every node applied the same last item write
    assert len({c["last_applied"] for c in cats}) == 1 and cats[0]["last_applied"] > 0, cats
    return len(first[1])


def nats_request(port, subject, body, timeout=10):
    """One request over the NATS protocol itself (no client library):
    the JSON answer, or None when no server answered."""
    import json
    import socket
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        f = s.makefile("rb")
        f.readline()                                    # INFO
        data = json.dumps(body).encode()
        s.sendall(b'CONNECT {"verbose":false,"headers":true,"no_responders":true}\r\n'
                  b"SUB _INBOX.recdtest 1\r\n"
                  b"PUB %s _INBOX.recdtest %d\r\n%s\r\n" % (subject.encode(), len(data), data))
        while True:
            line = f.readline()
            if not line:
                return None
            if line.startswith(b"PING"):
                s.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG"):
                n = int(line.split()[-1])
                return json.loads(f.read(n + 2)[:-2])
            elif line.startswith(b"HMSG"):                # a status: no responders
                f.read(int(line.split()[-1]) + 2)
                return None
    finally:
        s.close()


def stream_subjects(rig):
    info = nats_request(rig.client_ports[0], "$JS.API.STREAM.INFO.RECD_EVENTS", {})
    return info["config"]["subjects"], info["config"]


def check_old_stream_takes_catalog(rig, node):
    """A stream made before the catalogue went through it (events'
    subjects only) gets the catalogue's subject from the next node that
    starts, and keeps what it holds."""
    assert not node.proc or node.proc.poll() is not None, "stop the node first"
    subjects, cfg = stream_subjects(rig)
    assert sorted(subjects) == ["recd.cat", "recd.ev.>"], subjects
    msgs = nats_request(rig.client_ports[0], "$JS.API.STREAM.INFO.RECD_EVENTS", {})
    held = msgs["state"]["messages"]
    cfg["subjects"] = ["recd.ev.>"]
    r = nats_request(rig.client_ports[0], "$JS.API.STREAM.UPDATE.RECD_EVENTS", cfg)
    assert r and "error" not in r, r
    assert stream_subjects(rig)[0] == ["recd.ev.>"]
    node.start()
    node.wait_caught_up()
    assert "takes the catalogue on recd.cat" in node.log(10 ** 6), node.log()
    assert sorted(stream_subjects(rig)[0]) == ["recd.cat", "recd.ev.>"]
    with node.connect() as c:
        assert c.call("item.put", {"id": "after-update"}) == 1
        assert c.call("item.get", "after-update")["id"] == "after-update"
    after = nats_request(rig.client_ports[0], "$JS.API.STREAM.INFO.RECD_EVENTS", {})
    assert after["state"]["messages"] == held + 1, (held, after["state"])


def check_barrier_gives_up(rig, node):
    """With two of the three servers gone the stream has no leader: a read
    waits for its barrier, then is answered io_error (after
    RECD_FAULT_BARRIER_GIVE_UP seconds in test builds, else 15), and
    sys.info counts it. Last: the cluster is left without a quorum."""
    with node.connect(timeout=60) as c:
        assert c.call("user.history", "nobody")["history"] == []
        rig.kill_nats(1)
        rig.kill_nats(2)
        try:
            r = c.call("user.history", "nobody")
            raise AssertionError("a read served without its barrier: %r" % (r,))
        except RecdError as e:
            assert e.name == "io_error" and "read barrier" in str(e), e
        # the connection goes on, and reads that need no barrier answer
        assert c.call("sys.ping") is not None
        bar = c.call("sys.info")["cluster"]["barriers"]
        assert bar["failures"] >= 1, bar
