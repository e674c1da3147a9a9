"""The click model of the served lists, over the protocol: the server logs
what it shows with the features a policy declares, learns a click at
once, the negatives when the window ends, keeps it across a restart, and
refuses a broken declaration with the file and the field."""
import os
import time

from conftest import ROOT

SCRIPTS = ["--scripts", str(ROOT / "scripts"), "--policies", str(ROOT / "policies")]


def click_info(c):
    return c.call("sys.info")["click"]


def test_learns_from_what_it_served(make_server):
    srv = make_server(extra_args=SCRIPTS)
    c = srv.connect(unix=True)
    c.call("item.put", *[{"id": "k%d" % k, "props": {"category": "c%d" % (k % 3)}}
                         for k in range(30)])
    info = click_info(c)
    assert info["active"] and info["served"] == 0
    # a preview is shown to nobody: not logged
    c.call("rec.recommend", {"user": "cu", "n": 5, "record": False})
    assert click_info(c)["served"] == 0
    # a list served two hours ago (a replay's moment), then a click on it
    past = time.time() - 7200
    ans = c.call("rec.recommend", {"user": "cu", "n": 5, "now": past})
    shown = [h["id"] for h in ans["items"]]
    assert len(shown) == 5
    info = click_info(c)
    assert info["served"] == 1 and info["pending"] == 1
    c.call("event.add", {"user": "cu", "item": shown[1], "type": "click",
                         "rec_id": ans["rec_id"], "ts": past + 10})
    info = click_info(c)
    assert info["clicks"] == 1 and info["examples"] == 1
    # an event of now ends the list's window (30 minutes): four negatives
    c.call("event.add", {"user": "other", "item": "k0", "type": "view", "ts": time.time()})
    info = click_info(c)
    assert info["pending"] == 0 and info["negatives"] == 4 and info["examples"] == 5
    # a purchase on a list teaches the conversion model too
    ans = c.call("rec.recommend", {"user": "cv", "n": 3, "now": past})
    item = ans["items"][0]["id"]
    c.call("event.add", {"user": "cv", "item": item, "type": "purchase",
                         "rec_id": ans["rec_id"], "ts": past + 5})
    info = click_info(c)
    assert info["conversions"] == 1 and info["clicks"] == 2
    # what policies read: a prediction per item
    (pred,) = c.call("admin.eval", 'local items = {{id = "k1"}, {id = "k2"}, {id = "nope"}} '
                     'local _, n = rec:click_predict({user = "cu"}, items) '
                     'return {p1 = items[1].p_click, sd2 = items[2].click_sd, '
                     'p3 = items[3].p_click, n = n}')
    assert 0 < pred["p1"] < 1 and pred["sd2"] > 0 and "p3" not in pred
    assert pred["n"] == info["examples"]
    c.close()
    # a restart keeps what was learned
    srv.restart()
    c = srv.connect(unix=True)
    after = click_info(c)
    for k in ("clicks", "conversions", "negatives", "examples", "served"):
        assert after[k] == info[k], (k, after, info)
    # user.delete erases the user's part of the model with the rest
    assert c.call("user.delete", "cu") == 1
    c.close()


def test_a_broken_declaration_names_file_and_field(make_server, tmp_path):
    sdir, pdir = tmp_path / "s", tmp_path / "p"
    sdir.mkdir()
    pdir.mkdir()
    (sdir / "all.lua").write_text(
        'return { recommend = function(req) return {{id = "a", score = 1}} end }\n')
    (sdir / "pipelines.lua").write_text(
        'return { default = "p", pipelines = { p = { strategies = { all = 1 }, '
        'policies = { "ranker" } } } }\n')
    (pdir / "ranker.lua").write_text(
        'return { model = { features = { "item", "colour" } }, '
        'rerank = function(req, items) return items end }\n')
    srv = make_server(extra_args=["--scripts", str(sdir), "--policies", str(pdir)])
    with srv.connect(unix=True) as c:
        c.call("item.put", {"id": "a"})
        st = {s["name"]: s for s in c.call("script.status")}
        err = st["ranker"]["error"]
        assert "policies/ranker.lua" in err and "model.features[2]: unknown feature 'colour'" in err
        assert not click_info(c)["active"]
        assert [h["id"] for h in c.call("rec.recommend", {"user": "u", "n": 1})["items"]] == ["a"]
        # fixed and reloaded: the model is in force
        (pdir / "ranker.lua").write_text(
            'return { model = { kind = "lr", features = { "item", "position" } }, '
            'rerank = function(req, items) return items end }\n')
        c.call("script.reload")
        assert click_info(c)["active"]
        c.call("rec.recommend", {"user": "u", "n": 1})
        assert click_info(c)["served"] == 1
        # no declaration any more: nothing is logged
        (pdir / "ranker.lua").write_text(
            'return { rerank = function(req, items) return items end }\n')
        c.call("script.reload")
        c.call("rec.recommend", {"user": "u", "n": 1})
        info = click_info(c)
        assert not info["active"] and info["served"] == 1
    assert os.path.isdir(srv.data_dir)


def test_a_click_logged_before_a_crash_is_learned_by_the_replay(make_server):
    """The waiting list is checkpointed with the model; a click logged after
    the checkpoint is replayed into it after kill -9, once."""
    srv = make_server(extra_args=SCRIPTS + ["--checkpoint-interval", "3600"])
    c = srv.connect(unix=True)
    c.call("item.put", *[{"id": "r%d" % k, "props": {"category": "c%d" % (k % 2)}}
                         for k in range(12)])
    past = time.time() - 600
    ans = c.call("rec.recommend", {"user": "ru", "n": 4, "now": past})
    c.close()
    srv.restart()                       # a clean stop checkpoints the waiting list
    c = srv.connect(unix=True)
    assert click_info(c)["pending"] == 1
    c.call("event.add", {"user": "ru", "item": ans["items"][2]["id"], "type": "click",
                         "rec_id": ans["rec_id"], "ts": past + 30})
    before = click_info(c)
    assert before["clicks"] == 1 and before["examples"] == 1
    c.close()
    srv.kill()                          # the click is logged, not checkpointed
    srv.start()
    c = srv.connect(unix=True)
    after = click_info(c)
    assert after["clicks"] == 1 and after["examples"] == 1 and after["pending"] == 1, after
    c.close()
