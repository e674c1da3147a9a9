"""An answer means durable, and a failed call changes nothing.

Commits are made to fail on purpose through the store's fault injection
(RECD_FAULT_COMMIT, compiled into the sanitised test build only: see
core/store.h); those tests are skipped against a binary without it. After
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
