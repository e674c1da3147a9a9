"""Partition owners and forwarded reads (make test-cluster, run from
tests/cluster/run.py):

- with three nodes the partitions are split among them, disjoint and
  covering all P, as the rendezvous hash of (partition, name) over the live
  names gives them (computed here too), and every node agrees;
- a read of a user through a node that does not own the user's partition
  is forwarded to the owner and answered exactly as through the owner
  (user.history, user.get, rec.recommend without recording), and so is a
  read with bad params (the same error);
- large pipelines of forwards, split in several messages each way, are
  answered as through the owner;
- feedback naming the rec_id of a list served through a non-owner is
  attributed on the owner (stats.get), which recorded the list;
- kill -9 of a node: the survivors come to own every partition, and
  rec.recommend answers for every user throughout (the reads the dead
  owner could not take are served where they came, and counted); the node
  started again takes its partitions back.
"""
import threading
import time

from recd_client import RecdError  # noqa: E402

P = 64
M64 = (1 << 64) - 1
FNV_INIT = 1469598103934665603


def _add(h, data):
    for x in data:
        h = ((h ^ x) * 1099511628211) & M64
    return h


def _end(h):
    h ^= h >> 33
    h = (h * 0xff51afd7ed558ccd) & M64
    h ^= h >> 33
    return h


def partition(user, p=P):
    """rec_cluster_partition of a string user id (its key: 's' + bytes)."""
    return _end(_add(FNV_INIT, b"s" + user.encode())) % p


def owners_map(names, p=P):
    """The rendezvous owner of each partition among names."""
    out = []
    for q in range(p):
        best, bs = None, -1
        for n in sorted(names):
            s = _end(_add(_add(FNV_INIT, n.encode()), q.to_bytes(4, "little")))
            if s > bs:
                best, bs = n, s
        out.append(best)
    return out


def users_owned(owner, names, count, prefix):
    m = owners_map(names)
    out, i = [], 0
    while len(out) < count:
        u = "%s%d" % (prefix, i)
        if m[partition(u)] == owner:
            out.append(u)
        i += 1
    return out


def one_user_per_partition(prefix):
    out, i = {}, 0
    while len(out) < P:
        u = "%s%d" % (prefix, i)
        out.setdefault(partition(u), u)
        i += 1
    return [out[q] for q in range(P)]


def wait_owners(nodes, timeout=60):
    """Until every node's `owned` is what the rendezvous map over their
    names gives it, each sees the others as peers, and all are at the same
    owners' epoch: the time it took."""
    want = owners_map([n.name for n in nodes])
    t0 = time.monotonic()
    while True:
        infos = [n.info()["cluster"] for n in nodes]
        ok = True
        for n, cl in zip(nodes, infos):
            mine = [q for q in range(P) if want[q] == n.name]
            peers = sorted(p["name"] for p in cl["peers"])
            if cl["owned"] != mine or peers != sorted(m.name for m in nodes if m is not n):
                ok = False
        if ok and len(set(cl["owners"] for cl in infos)) == 1:
            return time.monotonic() - t0, infos
        if time.monotonic() - t0 > timeout:
            raise AssertionError("owners did not settle: %r" % [
                (n.name, cl["owned"], cl["peers"]) for n, cl in zip(nodes, infos)])
        time.sleep(0.2)


def check_partitions_split(nodes):
    _, infos = wait_owners(nodes)
    owned = [set(cl["owned"]) for cl in infos]
    for i in range(len(owned)):
        for j in range(i + 1, len(owned)):
            assert not owned[i] & owned[j], (nodes[i].name, nodes[j].name)
    assert set().union(*owned) == set(range(P))
    assert all(len(o) > 0 for o in owned), [len(o) for o in owned]
    for cl in infos:
        assert cl["owners"] > 0, cl["owners"]
        for p in cl["peers"]:
            assert p["owned"] > 0 and 0 <= p["lease_age"] < 5, p
        for k in ("forwarded", "forward_served", "forward_fallbacks"):
            assert k in cl, k
    print("  owned: %s; owners' epoch %r" % (
        ", ".join("%s %d" % (n.name, len(o)) for n, o in zip(nodes, owned)),
        [cl["owners"] for cl in infos]))


def counters(node):
    cl = node.info()["cluster"]
    return cl["forwarded"], cl["forward_served"], cl["forward_fallbacks"]


def same(a, b):
    """The answers equal but for each list's rec_id (one per call)."""
    strip = lambda r: {k: v for k, v in r.items() if k != "rec_id"}  # noqa: E731
    return len(a) == len(b) and all(strip(x) == strip(y) for x, y in zip(a, b)) and \
        all(x["items"] for x in a if "rec_id" in x)


def check_forwarded_as_owner(nodes):
    """Reads through a non-owner answer exactly as through the owner; the
    non-owner counts them forwarded, the owner served."""
    names = [n.name for n in nodes]
    with nodes[0].connect() as c0:
        for j in range(30):       # others' clicks: the lists are not empty
            c0.call("event.add", *[{"user": "fwo%d" % j, "item": "fi%d" % ((j + i) % 12),
                                    "type": "click", "ts": 1550000000.0 + i} for i in range(4)])
        for k, owner in enumerate(nodes):
            for u in users_owned(owner.name, names, 2, "fw%d_" % k):
                for j in range(6):
                    assert c0.call("event.add", {"user": u, "item": "fi%d" % ((k + j) % 5),
                                                 "type": "click",
                                                 "ts": 1550000000.0 + j}) == 1
    reads = lambda u: [("user.history", [u, {"n": 10}]), ("user.get", [u, 5]),  # noqa: E731
                       ("rec.recommend", [{"user": u, "n": 5, "record": False}])]
    bad = lambda u: [("rec.recommend", [{"user": u, "n": "five"}]),  # noqa: E731
                     ("user.history", [u, {"n": 0}]),
                     ("rec.recommend", [{"user": u, "n": 5, "record": 1}])]
    for k, owner in enumerate(nodes):
        users = users_owned(owner.name, names, 2, "fw%d_" % k)
        others = [n for n in nodes if n is not owner]
        with owner.connect() as co:
            direct_bad = co.pipeline([c for u in users for c in bad(u)], raise_errors=False)
        assert all(isinstance(r, RecdError) for r in direct_bad), direct_bad
        before = {n.name: counters(n) for n in nodes}
        sent = {o.name: 0 for o in others}
        for o in others:
            with o.connect() as cx, owner.connect() as co:
                # A fold-in that lands between two reads changes the
                # user's vectors: compared when the owner's answers
                # before and after agree.
                for attempt in range(5):
                    direct = co.pipeline([c for u in users for c in reads(u)])
                    got = cx.pipeline([c for u in users for c in reads(u)])
                    sent[o.name] += len(got)
                    if same(co.pipeline([c for u in users for c in reads(u)]), direct):
                        break
                assert all(direct), direct
                assert same(got, direct), (o.name, owner.name, got, direct)
                got_bad = cx.pipeline([c for u in users for c in bad(u)], raise_errors=False)
                sent[o.name] += len(got_bad)
                assert [(e.name, str(e)) for e in got_bad] == \
                    [(e.name, str(e)) for e in direct_bad], (got_bad, direct_bad)
        after = {n.name: counters(n) for n in nodes}
        for o in others:
            assert after[o.name][0] - before[o.name][0] == sent[o.name], \
                (o.name, before, after)
        assert after[owner.name][1] - before[owner.name][1] == sum(sent.values()), \
            (owner.name, before, after)
        assert all(after[n][2] == before[n][2] for n in after), "fallbacks: %r" % after


def check_large_batches(nodes):
    """Forwards pipelined to one owner go in one message, answered in one;
    past a size they are split (requests over 256 KB, answers over 512 KB):
    large pipelines through a non-owner are answered as through the owner,
    none served in its place."""
    names = [n.name for n in nodes]
    owner, via = nodes[0], nodes[1]
    user = users_owned(owner.name, names, 1, "big")[0]
    big = "x" * 20000
    with via.connect() as cv, owner.connect() as co:
        assert cv.call("user.put", {"id": user, "props": {"s": big}}) == 1
        before = counters(via)
        gets = [("user.get", [user, 1])] * 60            # answers: 1.2 MB
        excl = ["ex%d" % i for i in range(2000)]          # requests: ~20 KB each
        recs = [("rec.recommend", [{"user": user, "n": 3, "record": False,
                                    "exclude": excl}])] * 30
        got = cv.pipeline(gets + recs, window=100)
        direct = co.pipeline(gets + recs, window=100)
        assert same(got, direct), "the large pipeline differs through %s" % via.name
        assert got[0]["props"]["s"] == big
        after = counters(via)
    assert after[0] - before[0] == len(gets) + len(recs), (before, after)
    assert after[2] == before[2], "served in the owner's place: %r" % ((before, after),)


def stats_totals(node):
    """(impressions, clicks) over the pipelines of node's stats.get."""
    with node.connect() as c:
        st = c.call("stats.get")
    tot = [m["total"] for m in st.get("pipelines", {}).values()]
    return sum(t["impressions"] for t in tot), sum(t["clicks"] for t in tot)


def wait_totals(nodes, want, timeout=10):
    """Until every node's stats_totals is want[name]; the last seen."""
    deadline = time.monotonic() + timeout
    while True:
        got = {n.name: stats_totals(n) for n in nodes}
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def settled_totals(nodes):
    """stats_totals of each node once the lists shown before have come
    (unchanged for 0.3 s; a node that was not running when a list was
    shown never gets it, so the nodes may differ)."""
    last = None
    for _ in range(100):
        got = {n.name: stats_totals(n) for n in nodes}
        if got == last:
            return got
        last = got
        time.sleep(0.3)
    raise AssertionError("the stats do not settle: %r" % last)


def check_feedback_on_owner(nodes):
    """A list served through a non-owner is served by the owner, which
    records it and sends the record on the user's partition: every node
    holds it. A click naming its rec_id, sent through a third node, is
    credited on every node (the list's impressions too), so it still is
    once the owner is gone. The nodes' rec_ids carry slots of their own."""
    names = [n.name for n in nodes]
    owner, via, sender = nodes[1], nodes[0], nodes[2]
    user = users_owned(owner.name, names, 1, "fb")[0]
    slots = [n.info()["cluster"]["rec_id_slot"] for n in nodes]
    assert len(set(slots)) == len(slots), slots
    with sender.connect() as cs:
        for j in range(5):
            cs.call("event.add", {"user": "fbo%d" % j, "item": "fbi%d" % j, "type": "click"})
            cs.call("event.add", {"user": user, "item": "fbi%d" % ((j + 1) % 5),
                                  "type": "view"})
    before = settled_totals(nodes)
    applied = {n.name: n.info()["cluster"]["lists_applied"] for n in nodes}
    with via.connect() as cv:
        recs = cv.call("rec.recommend", {"user": user, "n": 5})
    assert recs.get("rec_id") and recs["items"], recs
    rid = int(recs["rec_id"], 16)
    assert (rid >> 12) & 1023 == slots[1], (recs["rec_id"], slots)   # the owner's slot
    shown = len(recs["items"])
    want = {k: (v[0] + shown, v[1]) for k, v in before.items()}
    got = wait_totals(nodes, want)
    assert got == want, ("the list counted as shown on every node", before, got)
    item = recs["items"][0]["id"] if isinstance(recs["items"][0], dict) else recs["items"][0]
    with sender.connect() as cs:
        assert cs.call("event.add", {"user": user, "item": item, "type": "click",
                                     "rec_id": recs["rec_id"]}) == 1
    with owner.connect() as co:   # the owner's own read: it applied the click
        assert co.call("user.history", user, {"n": 1})["history"][0]["item"] == item
    want = {k: (v[0], v[1] + 1) for k, v in want.items()}
    got = wait_totals(nodes, want)
    assert got == want, ("the click credited on every node", before, got)
    for n in nodes:
        a = n.info()["cluster"]["lists_applied"]
        assert a == applied[n.name] + (0 if n is owner else 1), (n.name, applied, a)


def check_failover(nodes, victim):
    """kill -9 of victim: the survivors own every partition (the time it
    took is printed), a click on a list victim showed before it died is
    credited on each survivor, rec.recommend answers for every user throughout
    (those of the dead owner's partitions served where they came, counted
    as fallbacks), and the node started again takes its share back."""
    survivors = [n for n in nodes if n is not victim]
    users = one_user_per_partition("fo")
    with survivors[0].connect() as c:
        c.pipeline([("event.add", [{"user": u, "item": "foi%d" % (k % 7), "type": "click"}])
                    for k, u in enumerate(users)])
    stop = threading.Event()
    failures, answered = [], [0]

    def reader(node):
        with node.connect() as c:
            while not stop.is_set():
                res = c.pipeline([("rec.recommend", [{"user": u, "n": 3, "record": False}])
                                  for u in users], raise_errors=False)
                bad = [r for r in res if not isinstance(r, dict)]
                failures.extend(bad)
                answered[0] += len(res) - len(bad)

    # a list the victim shows, whose click comes after its death
    mine = users_owned(victim.name, [n.name for n in nodes], 1, "fo")[0]
    totals = settled_totals(survivors)
    with victim.connect() as c:
        shown = c.call("rec.recommend", {"user": mine, "n": 3})
    assert shown["items"], shown
    for n in survivors:     # the list on every node before the kill
        want = {n.name: (totals[n.name][0] + len(shown["items"]), totals[n.name][1])}
        assert wait_totals([n], want) == want, (n.name, totals)
    before = {n.name: counters(n) for n in survivors}
    threads = [threading.Thread(target=reader, args=(n,), daemon=True) for n in survivors]
    for t in threads:
        t.start()
    time.sleep(0.5)
    victim.kill()
    took, _ = wait_owners(survivors)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(60)
    assert not failures, failures[:5]
    with survivors[0].connect() as c:
        assert c.call("event.add", {"user": mine, "item": shown["items"][0]["id"],
                                    "type": "click", "rec_id": shown["rec_id"]}) == 1
    for n in survivors:     # credited on each survivor: the list outlived its node
        clicks = stats_totals(n)[1]
        want = {n.name: (stats_totals(n)[0], totals[n.name][1] + 1)}
        assert wait_totals([n], want) == want, (n.name, totals[n.name], clicks)
    after = {n.name: counters(n) for n in survivors}
    fallbacks = sum(after[n][2] - before[n][2] for n in after)
    assert fallbacks > 0, (before, after)
    print("  survivors own every partition %.1f s after the kill; %d rec.recommend "
          "answered meanwhile, none failed; %d served where they came (owner dead)"
          % (took, answered[0], fallbacks))
    victim.start(timeout=60)
    took, _ = wait_owners(nodes)
    with victim.connect() as c:
        for u in users_owned(victim.name, [n.name for n in nodes], 3, "fo"):
            assert isinstance(c.call("rec.recommend", {"user": u, "n": 3}), dict)
    print("  the node started again owns its share %.1f s after it listens" % took)
