"""Crash recovery: the event log is the write-ahead record, learned state is
checkpointed, and after a SIGKILL the events past the checkpoint are replayed
so the learned state is exactly what it was."""
import random


def learned_state(c, users, items):
    """What online learning produced: MF vectors and the popularity order."""
    vecs = {u: c.call("user.get", u, 0)["vectors"].get("mf") for u in users}
    ivecs = {i: c.call("item.get", i)["vectors"].get("mf") for i in items}
    pop = [h["id"] for h in c.call("rec.recommend", {"user": "nobody-new", "n": 20})["items"]]
    return vecs, ivecs, pop


def test_kill9_replays_events_past_checkpoint(make_server):
    srv = make_server()
    rng = random.Random(11)
    users = ["ru%d" % i for i in range(12)]
    items = ["ri%d" % i for i in range(40)]
    with srv.connect() as c:
        for _ in range(6):
            batch = [{"user": rng.choice(users), "item": rng.choice(items),
                      "type": rng.choice(["view", "click", "purchase"]),
                      "ts": 1790000000 + rng.randint(0, 1000)} for _ in range(50)]
            assert c.call("event.add", *batch) == 50
        before = learned_state(c, users, items)
        info = c.call("sys.info")
        assert info["events"] == 300
    srv.kill()                       # no checkpoint after the last commit
    srv.start()
    with srv.connect() as c:
        assert c.call("sys.info")["events"] == 300
        after = learned_state(c, users, items)
    assert after[0] == before[0], "user vectors differ after replay"
    assert after[1] == before[1], "item vectors differ after replay"
    assert after[2] == before[2], "popularity order differs after replay"


def test_clean_restart_needs_no_replay(make_server):
    srv = make_server(extra_args=["--log-level", "info"])
    with srv.connect() as c:
        c.call("event.add", *[{"user": "cu", "item": "ci%d" % i, "type": "click"}
                              for i in range(20)])
        before = c.call("user.get", "cu", 0)["vectors"]["mf"]
    srv.restart()                    # SIGTERM: a final checkpoint
    assert "replayed" not in srv.log()
    with srv.connect() as c:
        assert c.call("user.get", "cu", 0)["vectors"]["mf"] == before


def test_list_record_committed_without_a_write(make_server):
    """A list's record waits for the next write's commit, but not forever:
    with no write after it, it is on disk within 50 ms, and a click on the
    list after a crash is still attributed to its pipeline."""
    import time
    srv = make_server()
    with srv.connect() as c:
        c.call("event.add", *[{"user": "lw%d" % (i % 5), "item": "li%d" % (i % 17),
                               "type": "click"} for i in range(60)])
        rec = c.call("rec.recommend", {"user": "lw-new", "n": 5})
        assert rec["items"]
        time.sleep(0.5)
    srv.kill()
    srv.start()
    with srv.connect() as c:
        def clicks():
            p = c.call("stats.get")["pipelines"].get(rec["pipeline"])
            return p["total"]["clicks"] if p else 0
        before = clicks()
        c.call("event.add", {"user": "lw-new", "item": rec["items"][0]["id"], "type": "click",
                             "rec_id": rec["rec_id"]})
        assert clicks() == before + 1, "the click on a list served before the crash was not credited"
