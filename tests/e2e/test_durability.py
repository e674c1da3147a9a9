"""An answer means durable, and a failed call changes nothing.

Commits are made to fail on purpose through the store's fault injection
(RECD_FAULT_COMMIT, compiled into the sanitised test build only: see
core/engine/store.h); those tests are skipped against a binary without it. After
each run the server is restarted without faults and every write is looked
up: a write answered with success must be there, a write answered with an
error must not.
"""
import os
import random
import threading

import pytest

from conftest import RECD_BIN
from recd_client import Client, RecdError


def has_faults():
    """Whether RECD_BIN carries the fault injection point."""
    with open(RECD_BIN, "rb") as f:
        return b"RECD_FAULT_COMMIT" in f.read()


needs_faults = pytest.mark.skipif(not has_faults(),
                                  reason="binary built without REC_FAULTS")


def start_with_faults(srv, monkeypatch, spec):
    """Restart srv (stopped cleanly first) with commits failing per spec:
    the ordinals count from this start."""
    srv.stop_ok()
    monkeypatch.setenv("RECD_FAULT_COMMIT", spec)
    srv.start()
    monkeypatch.delenv("RECD_FAULT_COMMIT")


def restart_without_faults(srv):
    """Stop (a final commit may fail under faults: exit code not checked)
    and start again on the same data, without faults."""
    srv.stop()
    assert "RECD_FAULT_COMMIT" not in os.environ
    srv.start()


def write(path, body):
    with open(path, "w") as f:
        f.write(body)


# ---- scripts on the server cannot commit around the group commit -------------

@needs_faults
def test_script_commit_does_not_release_other_answers(make_server, tmp_path, monkeypatch):
    """A policy calling rec:commit() in on_event used to commit the pending
    writes of every client on the spot; when that commit failed they were
    dropped and their answers still said success."""
    sdir, pdir = tmp_path / "scripts", tmp_path / "policies"
    sdir.mkdir()
    pdir.mkdir()
    write(str(pdir / "committer.lua"),
          'return { on_event = function(ev)\n'
          '  rec:kv_put("seen:" .. tostring(ev.user), 1)\n'
          '  rec:commit()\n'
          'end }\n')
    srv = make_server(extra_args=["--scripts", str(sdir), "--policies", str(pdir)])
    start_with_faults(srv, monkeypatch, "1")        # the first commit fails
    events = [{"user": "su%d" % i, "item": "si%d" % i, "type": "click"} for i in range(6)]
    answers = []
    with srv.connect() as a, srv.connect() as b:
        # two clients, pipelined: all in the loop before the first commit
        ids_a = [a.send("event.add", ev) for ev in events[:3]]
        ids_b = [b.send("event.add", ev) for ev in events[3:]]
        for c, ids in ((a, ids_a), (b, ids_b)):
            for msgid in ids:
                rid, err, _ = c.recv()
                assert rid == msgid
                answers.append(err)
        # later writes go through
        assert a.call("event.add", {"user": "su-late", "item": "si-late", "type": "click"}) == 1
    assert answers[0] is not None, "the write in the failed commit was acknowledged"
    assert all(e is None or e.name == "io_error" for e in answers), answers
    restart_without_faults(srv)
    with srv.connect() as c:
        for ev, err in zip(events, answers):
            hist = c.call("user.get", ev["user"])
            if err is None:
                assert hist and [h["item"] for h in hist["history"]] == [ev["item"]], ev
            else:
                assert hist is None, "%s answered %s but is stored" % (ev, err)
        assert c.call("user.get", "su-late")["history"][0]["item"] == "si-late"


@needs_faults
def test_script_writes_in_admin_eval_answer_after_their_commit(make_server, monkeypatch):
    """admin.eval that writes answers once its writes are durable (an error
    when their commit fails); rec:commit() there is a no-op."""
    srv = make_server()
    start_with_faults(srv, monkeypatch, "1")
    with srv.connect(unix=True) as c:
        with pytest.raises(RecdError) as ei:
            c.call("admin.eval", "rec:kv_put('ak', 1) return rec:commit()")
        assert ei.value.name == "io_error"
        assert c.call("admin.eval", "rec:kv_put('ak2', 2) return rec:commit()") == [True]
        assert c.call("admin.eval", "1 + 1") == [2]         # writes nothing
    restart_without_faults(srv)
    with srv.connect(unix=True) as c:
        assert c.call("admin.eval", "rec:kv_get('ak')") == [None]
        assert c.call("admin.eval", "rec:kv_get('ak2')") == [2]


def test_script_deletes_refused_on_the_server_handle(make_server):
    srv = make_server()
    with srv.connect(unix=True) as c:
        c.call("item.put", {"id": "dx"})
        c.call("user.put", {"id": "du"})
        for code in ("rec:item_delete('dx')", "rec:user_delete('du')"):
            with pytest.raises(RecdError) as ei:
                c.call("admin.eval", code)
            assert ei.value.name == "script_error"
            assert "item.delete" in ei.value.message or "user.delete" in ei.value.message
        assert c.call("item.get", "dx") is not None
        assert c.call("user.get", "du") is not None
        assert c.call("item.delete", "dx") == 1              # the method does it


@needs_faults
def test_delete_whose_commit_fails_keeps_the_item(make_server, monkeypatch):
    """item.delete and user.delete commit on the loop: when that commit
    fails they answer the error and the id stays, in memory and on disk."""
    srv = make_server()
    with srv.connect() as c:
        c.call("item.put", {"id": "kd", "props": {"a": 1}})
        c.call("event.add", {"user": "ku", "item": "kd", "type": "click"})
    start_with_faults(srv, monkeypatch, "1,2:enospc")
    with srv.connect() as c:
        for method, key in (("item.delete", "kd"), ("user.delete", "ku")):
            with pytest.raises(RecdError) as ei:
                c.call(method, key)
            assert ei.value.name == "disk_full"
        assert c.call("item.get", "kd")["props"] == {"a": 1}
        assert c.call("user.get", "ku")["history"][0]["item"] == "kd"
        assert c.call("item.put", {"id": "kd2"}) == 1        # commit 3 goes through
    restart_without_faults(srv)
    with srv.connect() as c:
        assert c.call("item.get", "kd")["props"] == {"a": 1}
        assert c.call("user.get", "ku")["history"][0]["item"] == "kd"
        assert c.call("item.get", "kd2") is not None


@needs_faults
def test_answers_that_cannot_become_errors_close_the_connection(make_server, monkeypatch):
    """Short of memory to turn the answers to dropped writes into errors,
    the server closes their connection rather than send the successes."""
    srv = make_server()
    monkeypatch.setenv("RECD_FAULT_ANSWER_OOM", "1")   # the rewrite fails
    start_with_faults(srv, monkeypatch, "1")
    monkeypatch.delenv("RECD_FAULT_ANSWER_OOM")
    got = []
    with srv.connect() as c:
        ids = [c.send("item.put", {"id": "oom%d" % i}) for i in range(5)]
        with pytest.raises((ConnectionError, OSError)):
            for _ in ids:
                got.append(c.recv())
    with srv.connect() as c:                              # the server carries on
        assert c.call("item.put", {"id": "oom-after"}) == 1
    restart_without_faults(srv)
    with srv.connect() as c:
        for msgid, err, _ in got:                         # what was answered holds
            i = ids.index(msgid)
            assert err is not None or c.call("item.get", "oom%d" % i) is not None
        assert c.call("item.get", "oom-after") is not None


# ---- chaos: failing commits under pipelined writes from several clients -------

CLIENTS = 4
ROUNDS = 12
WINDOW = 16


def client_run(srv, n, seed, out):
    """Pipelined writes of three kinds, each naming ids only it writes."""
    rng = random.Random(seed)
    log = []
    with srv.connect() as c:
        for r in range(ROUNDS):
            calls = []
            for w in range(WINDOW):
                k = "%d-%d-%d" % (n, r, w)
                kind = rng.choice(("event", "item", "user"))
                if kind == "event":
                    calls.append((kind, k, "event.add",
                                  [{"user": "eu" + k, "item": "ei" + k, "type": "view"}]))
                elif kind == "item":
                    calls.append((kind, k, "item.put",
                                  [{"id": "it" + k, "props": {"k": k},
                                    "vectors": {"v": [1.0, rng.random()]}}]))
                else:
                    calls.append((kind, k, "user.put", [{"id": "us" + k, "props": {"k": k}}]))
            res = c.pipeline([(m, p) for _, _, m, p in calls], raise_errors=False)
            for (kind, k, _, _), r in zip(calls, res):
                log.append((kind, k, r))
    out[n] = log


@needs_faults
@pytest.mark.parametrize("spec", ["every=3", "every=4:enospc", "2,3,5,8,13,21:mapfull"])
def test_failed_commits_never_acknowledged(make_server, monkeypatch, spec):
    srv = make_server()
    start_with_faults(srv, monkeypatch, spec)
    out = {}
    threads = [threading.Thread(target=client_run, args=(srv, n, 100 + n, out))
               for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == CLIENTS, "a client failed:\n" + srv.log()
    want = {"every=3": "io_error", "every=4:enospc": "disk_full"}.get(spec, "map_full")
    log = [x for n in range(CLIENTS) for x in out[n]]
    errors = [r for _, _, r in log if isinstance(r, RecdError)]
    assert errors, "no commit failed"
    assert len(errors) < len(log), "no commit went through"
    assert all(e.name == want for e in errors), {e.name for e in errors}
    restart_without_faults(srv)
    lost, kept = [], []
    with srv.connect() as c:
        for kind, k, r in log:
            ok = not isinstance(r, RecdError)
            if ok:
                assert r == 1
            if kind == "event":
                got = c.call("user.get", "eu" + k)
                there = got is not None and [h["item"] for h in got["history"]] == ["ei" + k]
            elif kind == "item":
                got = c.call("item.get", "it" + k)
                there = got is not None and got["props"] == {"k": k} and "v" in got["vectors"]
            else:
                got = c.call("user.get", "us" + k)
                there = got is not None and got["props"] == {"k": k}
            if ok and not there:
                lost.append((kind, k))
            if not ok and got is not None:
                kept.append((kind, k))
    assert not lost, "acknowledged but not on disk: %s" % lost[:10]
    assert not kept, "answered an error but stored: %s" % kept[:10]
    print("FAULTS spec=%s writes=%d failed=%d" % (spec, len(log), len(errors)))


# ---- a failed batch changes nothing -------------------------------------------

def test_batch_with_oversized_last_element_changes_nothing(client):
    # properties over REC_PROPS_MAX (1 MiB), each string within the 1 MiB limit
    big = {"a": "x" * (600 << 10), "b": "y" * (600 << 10)}
    for method, prefix in (("item.put", "bo-i"), ("user.put", "bo-u")):
        batch = [{"id": "%s%d" % (prefix, i), "props": {"n": i}} for i in range(3)]
        batch.append({"id": prefix + "3", "props": big})
        with pytest.raises(RecdError) as ei:
            client.call(method, *batch)
        get = "item.get" if method == "item.put" else "user.get"
        for i in range(4):
            assert client.call(get, "%s%d" % (prefix, i)) is None, (method, i)
        assert ei.value.name == "too_large"
        assert "params[3].props" in ei.value.message, ei.value.message


def test_batch_over_the_spaces_limit_changes_nothing(make_server):
    srv = make_server()
    with srv.connect() as c:
        have = len(c.call("sys.info")["spaces"])
        # fill up to 250 spaces, 10 per call
        n = have
        while n < 250:
            step = min(10, 250 - n)
            c.call("item.put", {"id": "fill%d" % n,
                                "vectors": {"s%d" % (n + j): [1.0] for j in range(step)}})
            n += step
        assert len(c.call("sys.info")["spaces"]) == 250
        # 6 more spaces fit (256), the seventh does not: nothing of the batch stays
        for method, prefix in (("item.put", "sl-i"), ("user.put", "sl-u")):
            batch = [{"id": "%s%d" % (prefix, i), "vectors": {"new%d" % i: [1.0, 2.0]}}
                     for i in range(7)]
            with pytest.raises(RecdError) as ei:
                c.call(method, *batch)
            get = "item.get" if method == "item.put" else "user.get"
            for i in range(7):
                assert c.call(get, "%s%d" % (prefix, i)) is None, (method, i)
            assert len(c.call("sys.info")["spaces"]) == 250
            assert ei.value.name == "too_large"
            assert "params[6]" in ei.value.message and "256" in ei.value.message
        # within the limit the same batch goes through
        assert c.call("item.put", *[{"id": "sl-ok%d" % i, "vectors": {"ok%d" % i: [1.0]}}
                                    for i in range(6)]) == 6
        assert len(c.call("sys.info")["spaces"]) == 256


def test_event_batch_with_oversized_context_changes_nothing(client):
    big = {"a": "x" * (600 << 10), "b": "y" * (600 << 10)}
    batch = [{"user": "bc-u%d" % i, "item": "bc-i", "type": "view"} for i in range(3)]
    batch.append({"user": "bc-u3", "item": "bc-i", "type": "view", "context": big})
    with pytest.raises(RecdError) as ei:
        client.call("event.add", *batch)
    for i in range(4):
        assert client.call("user.get", "bc-u%d" % i) is None, i
    assert ei.value.name == "too_large"
    assert "params[3].context" in ei.value.message, ei.value.message


def test_event_batch_over_the_types_limit_changes_nothing(make_server):
    srv = make_server()
    with srv.connect() as c:
        # new types in batches of 100 until one would pass the limit (1,024),
        # then one at a time: a batch refused leaves none of its events
        made, step, tries = 0, 100, 0
        while step:
            batch = [{"user": "tl-u%d" % (made + j), "item": "tl-i", "type": "t%d" % (made + j)}
                     for j in range(step)]
            try:
                assert c.call("event.add", *batch) == step
                made += step
            except RecdError as e:
                assert e.name == "too_large" and "1024" in e.message, e
                for j in range(step):
                    assert c.call("user.get", "tl-u%d" % (made + j)) is None
                step = 1 if step > 1 else 0
            tries += 1
            assert tries < 200
        assert made > 900
        # at the limit: a known type goes through, a batch ending in a new one does not
        batch = [{"user": "tl-x%d" % i, "item": "tl-i", "type": "view"} for i in range(3)]
        with pytest.raises(RecdError) as ei:
            c.call("event.add", *(batch + [{"user": "tl-x3", "item": "tl-i", "type": "brand-new"}]))
        assert "params[3]" in ei.value.message and "brand-new" in ei.value.message
        for i in range(4):
            assert c.call("user.get", "tl-x%d" % i) is None, i
        assert c.call("event.add", *batch) == 3
