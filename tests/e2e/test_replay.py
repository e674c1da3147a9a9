"""Replay is the live path: after a failed commit or a kill -9, the events
logged past the last checkpoint are learned again through the same
on_event, with every field and the weight in force when they happened, and
nothing a policy learned is lost or counted twice. States are compared as
LMDB holds them after a clean stop (tests/e2e/recd_state.py)."""
import os
import shutil
import time

import pytest

import recd_state
from recd_client import RecdError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = ["--scripts", os.path.join(ROOT, "scripts"), "--policies", os.path.join(ROOT, "policies"),
           "--checkpoint-interval", "3600"]

TYPES = ["view", "click", "view", "purchase", "skip", "view", "click", "dislike"]


def event(i):
    """Event i of a fixed stream: 9 users, 25 items, every kind of feedback,
    values, rec_ids and contexts on some."""
    ev = {"user": "u%d" % (i * 7 % 9), "item": "i%d" % (i * 11 % 25),
          "type": TYPES[i % len(TYPES)], "ts": 1790000000 + 13 * i}
    if i % 3 == 0:
        ev["value"] = i / 4
    if i % 4 == 0:
        ev["rec_id"] = "%016x" % (1000 + i)
    if i % 5 == 0:
        ev["context"] = {"page": i % 3, "tags": ["a", "b"]}
    return ev


def learned(state):
    """What events taught: vectors (but the ials space, which a background
    training on a wall-clock schedule rewrites), counters, kv, generator."""
    vecs = {k: v for k, v in state["vectors"].items() if k[0] != "ials"}
    return vecs, state["counters"], state["kv"], state["checkpoint"]


def as_sent(ev):
    """A logged event as event.add takes it."""
    out = {k: ev[k] for k in ("user", "item", "type", "ts", "value", "rec_id", "context") if k in ev}
    return out


def twin_of(make_server, events, args=SHIPPED):
    """A server that never failed, fed the logged events live, in log order."""
    twin = make_server(args)
    with twin.connect() as c:
        for k in range(0, len(events), 10):
            chunk = [as_sent(e) for e in events[k:k + 10]]
            assert c.call("event.add", *chunk) == len(chunk)
    twin.stop_ok()
    return recd_state.read(twin.data_dir)


def assert_same_learning(a, b):
    va, ca, ka, pa = learned(a)
    vb, cb, kb, pb = learned(b)
    assert va.keys() == vb.keys()
    for k in va:
        assert va[k] == vb[k], "vector %r differs" % (k,)
    assert ca == cb, "counters differ"
    assert ka == kb, "policy kv differs"
    assert pa == pb, "checkpoint (last event, generator state) differs"


def test_failed_commit_replays_what_the_checkpoint_lacks(make_server, monkeypatch):
    srv = make_server(SHIPPED)
    with srv.connect() as c:
        for k in range(0, 40, 10):
            assert c.call("event.add", *[event(i) for i in range(k, k + 10)]) == 10
    srv.stop_ok()                               # a checkpoint after event 40
    # Commits of the next process: the 6th one carrying writes fails.
    monkeypatch.setenv("RECD_FAULT_COMMIT", "6:eio")
    srv.start()
    acked, failed = [], []
    with srv.connect() as c:
        for k in range(40, 160, 10):
            batch = [event(i) for i in range(k, k + 10)]
            try:
                assert c.call("event.add", *batch) == 10
                acked += batch
            except RecdError as e:              # the injected failure
                assert e.name == "io_error", e
                failed += batch
    if not failed:
        pytest.skip("this recd is built without fault injection (REC_FAULTS)")
    assert len(failed) == 10
    srv.stop_ok()
    monkeypatch.delenv("RECD_FAULT_COMMIT")
    a = recd_state.read(srv.data_dir)
    logged = [as_sent(e) for e in a["events"]]
    assert logged == [event(i) for i in range(40)] + acked, "the log is not what was acknowledged"
    assert a["checkpoint"][0] == len(logged)
    assert_same_learning(a, twin_of(make_server, a["events"]))


def test_failed_delete_catches_up_before_serving(make_server, monkeypatch, tmp_path):
    srv = make_server(SHIPPED)
    with srv.connect() as c:
        assert c.call("event.add", *[event(i) for i in range(30)]) == 30
    srv.stop_ok()                               # a checkpoint after event 30
    # How many commits a start makes (config, on_load) on a copy of the
    # folder; then one per event.add below, then the delete's: that fails.
    probe = make_server(SHIPPED, data_dir=tmp_path / "probe")
    probe.kill()
    shutil.copy(os.path.join(srv.data_dir, "data.mdb"), os.path.join(probe.data_dir, "data.mdb"))
    probe.start()
    with probe.connect() as c:
        started = -1
        while started != c.call("sys.info")["store"]["commits"]:
            started = c.call("sys.info")["store"]["commits"]
            time.sleep(0.3)
    probe.stop_ok()
    monkeypatch.setenv("RECD_FAULT_COMMIT", "%d:eio" % (started + 5))
    srv.start()
    with srv.connect() as c:
        for k in range(30, 70, 10):
            assert c.call("event.add", *[event(i) for i in range(k, k + 10)]) == 10
        try:
            c.call("user.delete", "u3")
            pytest.skip("this recd is built without fault injection (REC_FAULTS)")
        except RecdError as e:
            assert e.name == "io_error", e
    srv.stop_ok()                               # no event after the failure
    monkeypatch.delenv("RECD_FAULT_COMMIT")
    a = recd_state.read(srv.data_dir)
    assert [as_sent(e) for e in a["events"]] == [event(i) for i in range(70)]
    assert a["checkpoint"][0] == 70
    assert_same_learning(a, twin_of(make_server, a["events"]))


PROBE = """
-- records what on_event receives, and counts the calls
local M = {}
function M.on_event(ev)
  local n = (rec:kv_get("count") or 0) + 1
  rec:kv_put("count", n)
  rec:kv_put("ev:" .. ev.seq, {type = ev.type, weight = ev.weight, value = ev.value,
                               rec_id = ev.rec_id, context = ev.context, ts = ev.ts,
                               user = ev.user, item = ev.item})
end
return M
"""


@pytest.fixture
def probe_args(tmp_path):
    pol = tmp_path / "policies"
    pol.mkdir()
    (pol / "probe.lua").write_text(PROBE)
    return ["--scripts", "", "--policies", str(pol), "--checkpoint-interval", "3600"]


def test_kill9_replays_every_field_with_the_weight_in_force(make_server, probe_args):
    srv = make_server(probe_args)
    sent = [{"user": "ann", "item": "book", "type": "click", "ts": 1790000001.5, "value": 3.5,
             "rec_id": "00000000000000ab", "context": {"page": 2, "q": "x"}},
            {"user": 42, "item": "pen", "type": "view", "ts": 1790000002}]
    with srv.connect() as c:
        assert c.call("event.add", *sent) == 2
    with srv.connect(unix=True) as c:           # a new weight, after those
        assert c.call("admin.eval", "rec:event_weight('click', 7)") == [7]
    with srv.connect() as c:
        assert c.call("event.add", {"user": "ann", "item": "cup", "type": "click",
                                    "ts": 1790000003}) == 1
    srv.kill()                                  # no checkpoint: all replayed
    srv.start()
    srv.stop_ok()
    kv = recd_state.read(srv.data_dir)["kv"]
    assert kv[b"count"] == 3, "an event was learned twice (or lost)"
    e1, e2, e3 = kv[b"ev:1"], kv[b"ev:2"], kv[b"ev:3"]
    assert e1 == {"type": "click", "weight": 2.0, "value": 3.5, "rec_id": "00000000000000ab",
                  "context": {"page": 2, "q": "x"}, "ts": 1790000001.5, "user": "ann",
                  "item": "book"}
    assert e2 == {"type": "view", "weight": 1.0, "ts": 1790000002, "user": 42, "item": "pen"}
    assert e3["weight"] == 7.0


def test_policy_kv_is_not_applied_twice(make_server, probe_args):
    srv = make_server(probe_args)
    with srv.connect() as c:
        for k in range(5):
            assert c.call("event.add", *[event(i) for i in range(10 * k, 10 * k + 10)]) == 10
    srv.restart()                               # a checkpoint after 50
    with srv.connect() as c:
        for k in range(5, 8):
            assert c.call("event.add", *[event(i) for i in range(10 * k, 10 * k + 10)]) == 10
    srv.kill()
    srv.start()
    with srv.connect() as c:                    # learning goes on from there
        assert c.call("event.add", event(80)) == 1
    srv.stop_ok()
    kv = recd_state.read(srv.data_dir)["kv"]
    assert kv[b"count"] == 81
    assert sorted(int(k[3:]) for k in kv if k.startswith(b"ev:")) == list(range(1, 82))
