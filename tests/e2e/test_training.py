"""The training schedule of the batch models (ials, EASE) over the
protocol: an import ends with models trained on all of it, a retrain when
the events grow by the share, once more when a burst goes quiet, and
model.train {wait = true} answering once its training is over.

Deadlines are generous and nothing asserts how fast a training is.
"""
import os
import shutil
import time

import pytest

from recd_client import RecdError

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
DEADLINE = 120.0


@pytest.fixture
def trainer(make_server, tmp_path):
    """make(*args): a private server with the ials and ease policies."""
    def make(*args):
        sdir, pdir = tmp_path / "scripts", tmp_path / "policies"
        sdir.mkdir(exist_ok=True)
        pdir.mkdir(exist_ok=True)
        for p in ("ials.lua", "ease.lua"):
            shutil.copy(os.path.join(ROOT, "policies", p), str(pdir / p))
        return make_server(extra_args=["--scripts", str(sdir), "--policies", str(pdir)]
                           + list(args))
    return make


def events(n, start=0, users=60, items=40):
    return [{"user": "tu%d" % ((k * 7) % users), "item": "ti%d" % ((k * 13 + k // users) % items),
             "type": "click"} for k in range(start, start + n)]


def models(c):
    return c.call("sys.info")["models"]


def wait_trained(c, n, names=("ials", "ease"), deadline=DEADLINE):
    """Poll sys.info until every model in names is trained on n events and
    nothing runs or is pending; returns the models."""
    end = time.monotonic() + deadline
    while True:
        m = models(c)
        if all(m[x]["events"] == n and not m[x]["running"] and not m[x]["pending"]
               for x in names):
            return m
        assert time.monotonic() < end, "not trained on %d events: %r" % (n, m)
        time.sleep(0.1)


def test_sys_info_names_the_models_untrained(trainer):
    srv = trainer("--retrain-share", "0", "--retrain-quiet", "0", "--retrain-every", "0")
    with srv.connect() as c:
        m = models(c)
        assert set(m) == {"ials", "ease"}
        for x in m.values():
            assert {k: x[k] for k in x if k not in ("owed", "folding")} == {
                "events": 0, "trained_at": None, "seconds": 0.0, "trainings": 0,
                "running": False, "pending": False}
        # no model to fold against: nothing owed, nothing solved
        assert m["ials"]["owed"] == 0 and m["ials"]["folding"] is False
        assert "owed" not in m["ease"]


def test_an_import_ends_trained_on_all_of_it(trainer):
    srv = trainer()
    total = 6000
    with srv.connect() as c:
        for k in range(0, total, 200):
            c.call("event.add", *events(200, k))
        m = wait_trained(c, total)
        for x in m.values():
            assert x["trainings"] >= 1 and x["trained_at"] > 1e9 and x["seconds"] >= 0


def test_a_burst_that_went_quiet_is_trained_once_more(trainer):
    # the share (half) is not reached by what comes while the first
    # training runs and after it: only the burst's end retrains
    srv = trainer("--retrain-share", "0.5", "--retrain-quiet", "1", "--retrain-every", "0")
    with srv.connect() as c:
        c.call("event.add", *events(2000))
        n, end = 2000, time.monotonic() + DEADLINE
        while models(c)["ials"]["trainings"] == 0:   # events keep coming meanwhile
            assert time.monotonic() < end
            c.call("event.add", *events(1, n))
            n += 1
            time.sleep(0.1)
        for _ in range(3):
            c.call("event.add", *events(1, n))
            n += 1
            time.sleep(0.1)
        first = models(c)["ials"]["events"]
        assert first < n and n - first <= 0.5 * first
        m = wait_trained(c, n)
        assert m["ials"]["trainings"] >= 2


def test_share_triggers_a_retrain(trainer):
    srv = trainer("--retrain-share", "0.5", "--retrain-quiet", "0", "--retrain-every", "0")
    with srv.connect() as c:
        c.call("event.add", *events(400))
        wait_trained(c, 400)
        c.call("event.add", *events(150, 400))   # under half of 400
        time.sleep(2.5)                          # a few ticks: nothing is due
        m = models(c)
        assert m["ials"]["events"] == 400 and not m["ials"]["pending"], m
        c.call("event.add", *events(100, 550))   # 250 > 200
        m = wait_trained(c, 650)
        assert m["ials"]["trainings"] == 2 and m["ease"]["trainings"] == 2


def test_wait_answers_once_trained(trainer):
    srv = trainer("--retrain-share", "0", "--retrain-quiet", "0", "--retrain-every", "0")
    with srv.connect(unix=True) as c:
        c.call("event.add", *events(500))
        r = c.call("model.train", {"model": "all", "wait": True})
        assert r["started"] is True and sorted(r["models"]) == ["ease", "ials"]
        assert r["events"] == 500 and r["seconds"] >= 0
        m = models(c)   # installed before the answer
        assert m["ials"]["events"] == 500 and m["ease"]["events"] == 500
        assert m["ials"]["trainings"] == 1 and not m["ials"]["running"]
        # without wait: at once, as before
        assert c.call("model.train", {"wait": False}) == {"started": True}
        with pytest.raises(RecdError) as ei:
            c.call("model.train", {"wait": "yes"})
        assert ei.value.name == "invalid_params" and "wait" in str(ei.value)


def test_wait_while_a_training_runs(trainer):
    srv = trainer("--retrain-share", "0", "--retrain-quiet", "0", "--retrain-every", "0")
    with srv.connect(unix=True) as c, srv.connect(unix=True) as other:
        c.call("event.add", *events(3000))
        # in one write: a training starts, events come, a waiter asks; the
        # first is still running when the waiter's call runs
        calls = [("model.train", {"model": "all", "factors": 64, "iters": 50}),
                 ("event.add",) + tuple(events(10, 3000)),
                 ("model.train", {"model": "all"}),
                 ("model.train", {"model": "all", "wait": True})]
        data = b"".join(c._pack([0, 900 + i, m[0], list(m[1:])]) for i, m in enumerate(calls))
        c.send_raw(data)
        got = {}
        for _ in calls:
            msgid, err, result = c.recv()
            got[msgid] = err if err is not None else result
        started, added, busy, waited = (got[900 + i] for i in range(len(calls)))
        assert started == {"started": True}
        assert isinstance(busy, RecdError) and busy.name == "busy", busy
        # the waiter's answer is the training after the running one: on
        # every event, the 10 that came while the first ran too
        assert waited["events"] == 3010 and sorted(waited["models"]) == ["ease", "ials"]
        m = models(other)
        assert m["ials"]["events"] == 3010 and m["ials"]["trainings"] == 2
        # the connection goes on after the waited answer
        assert c.call("sys.info")["events"] == 3010


def test_waiters_on_two_connections(trainer):
    srv = trainer("--retrain-share", "0", "--retrain-quiet", "0", "--retrain-every", "0")
    with srv.connect(unix=True) as a, srv.connect(unix=True) as b:
        a.call("event.add", *events(1000))
        ia = a.send("model.train", {"wait": True})
        ib = b.send("model.train", {"wait": True})
        ra, rb = a.recv(), b.recv()
        assert ra[0] == ia and ra[1] is None and rb[0] == ib and rb[1] is None
        assert ra[2]["events"] == rb[2]["events"] == 1000
        # meanwhile the server answers others
        assert a.call("sys.info")["events"] == 1000


def test_retrain_options_are_checked(tmp_path):
    import subprocess
    from conftest import RECD_BIN
    for args, msg in ((["--retrain-share", "x"], "--retrain-share must be 0..100"),
                      (["--retrain_share=-1"], "--retrain-share must be 0..100"),
                      (["--retrain-quiet", "-2"], "--retrain-quiet must be 0..1000000"),
                      (["--retrain-every", "1e9"], "--retrain-every must be 0..1000000")):
        r = subprocess.run([RECD_BIN, "serve", "--data", str(tmp_path / "d")] + args,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and r.stderr.startswith("recd: " + msg), (args, r.stderr)
    assert "--retrain-share" in subprocess.run([RECD_BIN, "serve", "--help"], capture_output=True,
                                               text=True, timeout=30).stdout


def test_rules_turned_off_in_a_config_file(trainer, tmp_path):
    cfg = tmp_path / "recd.lua"
    cfg.write_text("return {retrain_share = 0, retrain_quiet = 0, retrain_every = 0}\n")
    srv = trainer("--config", str(cfg))
    with srv.connect() as c:
        c.call("event.add", *events(300))
        time.sleep(2.5)   # a few ticks: with the defaults, a training at the first
        m = models(c)
        assert m["ials"]["trainings"] == 0 and m["ease"]["trainings"] == 0, m
        assert not m["ials"]["pending"] and not m["ials"]["running"]


def test_an_owed_fold_in_is_read_at_once_and_recomputed_after_a_crash(trainer):
    """ials owes a newcomer's fold-in on their events; user.get folds them
    in first. After kill -9 the replay has no model to fold against (models
    live in the process) and the next training computes the user."""
    srv = trainer("--retrain-share", "0", "--retrain-quiet", "0", "--retrain-every", "0")
    with srv.connect(unix=True) as c:
        c.call("event.add", *events(400))
        c.call("model.train", {"wait": True})
        c.call("event.add", {"user": "nu", "item": "ti3", "type": "click"},
               {"user": "nu", "item": "ti5", "type": "click"})
        v1 = c.call("user.get", "nu")["vectors"].get("ials")
        assert v1 is not None and len(v1) == 64
    srv.kill()
    srv.start()
    with srv.connect(unix=True) as c:
        c.call("model.train", {"wait": True})
        v2 = c.call("user.get", "nu")["vectors"].get("ials")
        assert v2 is not None and len(v2) == 64
        dot = sum(a * b for a, b in zip(v1, v2))
        n1, n2 = sum(a * a for a in v1) ** 0.5, sum(b * b for b in v2) ** 0.5
        assert dot / (n1 * n2) > 0.5, "the trained user is far from the folded-in one"
