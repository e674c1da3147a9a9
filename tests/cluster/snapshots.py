"""Snapshots and retention (docs/cluster.md): a node started on a copy of
a live node's folder consumes only what the stream holds past the copy; a
folder the stream's retention left behind is refused with a clear error;
--retain sets the stream's retention."""
import os
import subprocess

from replicas import nats_request

INFO = "$JS.API.STREAM.INFO.RECD_EVENTS"
PURGE = "$JS.API.STREAM.PURGE.RECD_EVENTS"


def stream_info(rig):
    info = nats_request(rig.client_ports[0], INFO, {})
    assert info and "error" not in info, info
    return info


def copy_of(node, name):
    """A copy of node's folder, taken while it serves (the stream's head
    may be gone: a new folder would be refused)."""
    path = node.data + "-" + name
    os.makedirs(path)
    subprocess.run(["mdb_copy", "-c", node.data, path], check=True)
    return path


def histories(node, users):
    out = {}
    with node.connect() as c:
        for u in users:
            out[u] = sorted(h["ts"] for h in c.call("user.history", u, {"n": 10000})["history"])
    return out


def check_snapshot_start(rig, node):
    """mdb_copy of a serving node's folder, then events the copy does not
    hold; a node started on the copy applies only those, and holds the
    same histories as the node it was copied from."""
    node.start()
    node.wait_caught_up()
    snap = copy_of(node, "snapshot")
    users = ["snap%d" % i for i in range(10)]
    with node.connect() as c:
        for k in range(200):
            assert c.call("event.add", {"user": users[k % 10], "item": "i%d" % (k % 7),
                                        "type": "click", "ts": 1.7e9 + k}) == 1
    total = stream_info(rig)["state"]["last_seq"]
    copy = rig.node("from-snapshot", data=snap).start()
    try:
        cl = copy.wait_caught_up(timeout=120)
        assert cl["applied"] <= 200 + 10, (
            "the node on the copy applied %d events of a stream of %d: it did not start from "
            "the copy" % (cl["applied"], total))
        assert cl["applied"] >= 200, cl
        node.wait_caught_up()
        some = users + ["u%d" % i for i in range(0, 200, 9)]
        assert histories(copy, some) == histories(node, some)
    finally:
        assert copy.stop() == 0, copy.log()
    print("  the copy applied %d of the stream's %d messages" % (cl["applied"], total))
    return copy


def check_retention(rig, node, copy):
    """Events the stream no longer holds: a node on a new folder is refused
    (nothing to build its state from) and says what to do; a folder that
    applied past the gap starts. --retain sets the stream's MaxAge, a bad
    value is refused."""
    last = stream_info(rig)["state"]["last_seq"]
    r = nats_request(rig.client_ports[0], PURGE, {"seq": last - 3})   # what a MaxAge drops
    assert r and r.get("success"), r
    assert stream_info(rig)["state"]["first_seq"] == last - 3
    late = rig.node("late")
    rc, log = late.run_to_exit()
    assert rc not in (0, None), log
    assert "begins at sequence %d" % (last - 3) in log and "mdb_copy" in log, log
    # the node copied before the purge applied everything the stream had
    copy.start()
    copy.wait_caught_up()
    assert copy.stop() == 0, copy.log()
    for bad in ("-5", "soon"):
        copy.extra = ["--retain", bad]
        rc, log = copy.run_to_exit()
        assert rc == 2 and "--retain" in log, (bad, rc, log)
    copy.extra = ["--retain", "86400"]
    copy.start()
    cfg = stream_info(rig)["config"]
    assert cfg["max_age"] == 86400 * 10 ** 9, cfg
    assert copy.stop() == 0, copy.log()
    copy.extra = ["--retain", "0"]        # every event again, as the next checks expect
    copy.start()
    assert stream_info(rig)["config"]["max_age"] == 0
    assert copy.stop() == 0, copy.log()
    copy.extra = []
    assert node.stop() == 0, node.log()


def check_name_taken_while_stopped(rig, node):
    """A node stopped (SIGSTOP) for longer than its lease loses its name:
    another process takes it, on a copy of the first one's folder. When
    the first runs again it finds its name held by the other, stops
    consuming (the consumer named after the node is the other's now) and
    exits 1, leaving the name to the other, which goes on serving."""
    import base64
    import signal
    import time
    first = rig.node("twin", data=copy_of(node, "twin")).start()
    first.wait_caught_up(timeout=180)
    snap = copy_of(first, "copy")
    first.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(6.5)                     # the 5 s lease lapses
        second = rig.node("twin", data=snap).start(timeout=60)
    finally:
        first.proc.send_signal(signal.SIGCONT)
    rc = first.proc.wait(60)
    assert rc == 1, (rc, first.log())
    assert "was taken by" in first.log(10 ** 6), first.log()
    second.wait_caught_up()
    assert second.info()["cluster"]["node"] == "twin"
    r = nats_request(rig.client_ports[0], "$JS.API.STREAM.MSG.GET.KV_RECD_NODES",
                     {"last_by_subj": "$KV.RECD_NODES.twin"})
    holder = base64.b64decode(r["message"]["data"]).decode()
    assert ":%d:" % second.proc.pid in holder, (holder, second.proc.pid)
    assert second.stop() == 0, second.log()
