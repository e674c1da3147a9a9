"""Strategies and policies in Lua, served: hot reload under load, budgets,
pipelines, attribution and live metrics."""
import os
import threading
import time

import pytest

from recd_client import RecdError


def write(path, body):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(body)
    os.rename(tmp, path)          # editors save by rename


def strategy_returning(item, extra=""):
    return ('%s\nreturn { recommend = function(req) '
            'return { { id = "%s", score = 1.0 } } end }\n' % (extra, item))


@pytest.fixture
def scripted(make_server, tmp_path):
    sdir, pdir = tmp_path / "scripts", tmp_path / "policies"
    sdir.mkdir()
    pdir.mkdir()
    srv = make_server(extra_args=["--scripts", str(sdir), "--policies", str(pdir)])
    return srv, str(sdir), str(pdir)


def first_item(c, strategy, user="hr"):
    r = c.call("rec.recommend", {"user": user, "n": 1, "strategy": strategy})
    return r["items"][0]["id"] if r["items"] else None


def wait_for(c, strategy, item, limit=3.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        try:
            if first_item(c, strategy) == item:
                return time.monotonic() - t0
        except RecdError:
            pass
        time.sleep(0.01)
    return None


def test_hot_reload_under_load(scripted):
    srv, sdir, _ = scripted
    path = os.path.join(sdir, "probe.lua")
    with srv.connect(unix=True) as c:
        c.call("item.put", *[{"id": "x%d" % i} for i in range(8)])
        write(path, strategy_returning("x0"))
        assert wait_for(c, "probe", "x0") is not None
        failures, answered, stop = [], [0], threading.Event()

        def load():
            with srv.connect() as c2:
                while not stop.is_set():
                    calls = [("rec.recommend", [{"user": "hr", "n": 1, "strategy": "probe"}])] * 50
                    try:
                        res = c2.pipeline(calls)
                        answered[0] += len(res)
                    except RecdError as e:
                        failures.append(str(e))

        th = threading.Thread(target=load)
        th.start()
        try:
            for i in range(1, 6):
                write(path, strategy_returning("x%d" % i))
                seen = wait_for(c, "probe", "x%d" % i, 1.0)
                assert seen is not None, "rewrite %d not live within 1 s" % i
        finally:
            stop.set()
            th.join()
        assert not failures, failures[:3]
        assert answered[0] > 0
        # a syntax error keeps the old version, and says why
        write(path, "return { recommend = function(req) return {{ id = 'x9' ")
        time.sleep(0.4)
        assert first_item(c, "probe") == "x5"
        st = {s["name"]: s for s in c.call("script.status")}
        assert st["probe"]["loaded"] and "probe.lua" in (st["probe"]["error"] or "")


def test_infinite_loop_and_memory_bomb_fail_that_call_only(scripted):
    srv, sdir, _ = scripted
    write(os.path.join(sdir, "spin.lua"),
          'return { recommend = function(req) while true do end end }\n')
    write(os.path.join(sdir, "sneaky.lua"),
          'return { recommend = function(req) '
          'pcall(function() while true do end end) return {} end }\n')
    write(os.path.join(sdir, "bomb.lua"),
          'return { recommend = function(req) local t = {} '
          'for i = 1, 1e9 do t[i] = string.rep("x", 8000000) .. i end end }\n')
    write(os.path.join(sdir, "ok.lua"), strategy_returning("y1"))
    with srv.connect(unix=True) as c:
        c.call("item.put", {"id": "y1"})
        c.call("script.reload")
        for name, word in (("spin", "budget"), ("sneaky", "budget"), ("bomb", "memory")):
            with pytest.raises(RecdError) as ei:
                c.call("rec.recommend", {"user": "u", "strategy": name})
            assert ei.value.name == "script_error"
            assert name in ei.value.message and word in ei.value.message, ei.value.message
            assert first_item(c, "ok") == "y1"       # the server is unharmed


def test_pipelines_policies_attribution_and_stats(scripted):
    srv, sdir, pdir = scripted
    write(os.path.join(sdir, "first.lua"),
          'return { recommend = function(req) local out = {} '
          'for i = 1, 5 do out[i] = { id = "p" .. i, score = 10 - i } end return out end }\n')
    write(os.path.join(pdir, "reverse.lua"),
          'return { rerank = function(req, items) local out = {} '
          'for i = #items, 1, -1 do out[#out + 1] = items[i] end return out end,\n'
          '  on_event = function(ev) rec:kv_put("last:" .. tostring(ev.user), ev.item) end }\n')
    write(os.path.join(sdir, "pipelines.lua"),
          'return { default = "plain", pipelines = {\n'
          '  plain = { strategies = { first = 1 }, policies = {} },\n'
          '  rev = { strategies = { first = 1 }, policies = { "reverse" } } } }\n')
    with srv.connect(unix=True) as c:
        c.call("item.put", *[{"id": "p%d" % i} for i in range(1, 6)])
        c.call("script.reload")
        r = c.call("rec.recommend", {"user": "a", "n": 3})
        assert r["pipeline"] == "plain"
        assert [x["id"] for x in r["items"]] == ["p1", "p2", "p3"]
        r2 = c.call("rec.recommend", {"user": "a", "n": 3, "pipeline": "rev", "explain": True})
        assert [x["id"] for x in r2["items"]] == ["p5", "p4", "p3"]
        assert r2["items"][0]["explain"]["policies"] == ["reverse"]
        assert "first" in r2["items"][0]["explain"]["strategies"]
        # feedback credited to the recommendation that showed the item
        c.call("event.add", {"user": "a", "item": "p5", "type": "click", "rec_id": r2["rec_id"]})
        # the policy's on_event ran
        r3 = c.call("rec.recommend", {"user": "a", "n": 5, "pipeline": "rev"})
        assert "p5" not in [x["id"] for x in r3["items"]]     # seen
        st = c.call("stats.get")
        rev = st["pipelines"]["rev"]["total"]
        assert rev["clicks"] == 1 and rev["impressions"] == 3 + 4
        assert 0 < rev["ctr_low"] <= rev["ctr"] <= rev["ctr_high"] <= 1
        assert st["strategies"]["first"]["total"]["clicks"] == 1
        with pytest.raises(RecdError) as ei:
            c.call("rec.recommend", {"user": "a", "pipeline": "nope"})
        assert ei.value.name == "not_found"
        with pytest.raises(RecdError) as ei:
            c.call("rec.recommend", {"user": "a", "strategy": "nope"})
        assert ei.value.name == "not_found"


def test_explain_credits_a_policy_for_the_items_it_moved(scripted):
    """explain's policies name, for each item, the policies that added it or
    moved it out of the order they were given: not the items that merely
    shifted because a policy dropped, inserted or lifted others."""
    srv, sdir, pdir = scripted
    write(os.path.join(sdir, "ten.lua"),
          'return { recommend = function(req) local out = {} '
          'for i = 1, 10 do out[i] = { id = "q" .. i, score = 20 - i } end return out end }\n')
    write(os.path.join(pdir, "drop.lua"),       # a filter: q1 goes
          'return { rerank = function(req, items) local out = {} '
          'for _, it in ipairs(items) do if it.id ~= "q1" then out[#out + 1] = it end end '
          'return out end }\n')
    write(os.path.join(pdir, "lift.lua"),       # q6 to the front
          'return { rerank = function(req, items) local out, q6 = {}, nil '
          'for _, it in ipairs(items) do if it.id == "q6" then q6 = it else out[#out + 1] = it end end '
          'table.insert(out, 1, q6) return out end }\n')
    write(os.path.join(pdir, "add.lua"),        # qx in third place
          'return { rerank = function(req, items) '
          'table.insert(items, 3, { id = "qx", score = 0 }) return items end }\n')
    write(os.path.join(pdir, "swap.lua"),       # the first two change places
          'return { rerank = function(req, items) '
          'items[1], items[2] = items[2], items[1] return items end }\n')
    write(os.path.join(sdir, "pipelines.lua"),
          'return { default = "all", pipelines = {\n'
          '  all = { strategies = { ten = 1 }, policies = { "drop", "lift", "add" } },\n'
          '  swapped = { strategies = { ten = 1 }, policies = { "swap" } } } }\n')
    with srv.connect(unix=True) as c:
        c.call("item.put", *[{"id": "q%d" % i} for i in range(1, 11)], {"id": "qx"})
        c.call("script.reload")
        r = c.call("rec.recommend", {"user": "a", "n": 10, "explain": True})
        got = [(x["id"], x["explain"]["policies"]) for x in r["items"]]
        assert got == [("q6", ["lift"]), ("q2", []), ("qx", ["add"]), ("q3", []),
                       ("q4", []), ("q5", []), ("q7", []), ("q8", []), ("q9", []),
                       ("q10", [])], got
        r = c.call("rec.recommend", {"user": "a", "n": 3, "explain": True,
                                     "pipeline": "swapped"})
        got = [(x["id"], x["explain"]["policies"]) for x in r["items"]]
        # one of the two moved past the other: the one credited
        assert [i for i, _ in got] == ["q2", "q1", "q3"], got
        assert sorted(len(p) for _, p in got) == [0, 0, 1] and got[2][1] == [], got


def test_experiment_split_is_stable(scripted):
    srv, sdir, _ = scripted
    write(os.path.join(sdir, "one.lua"), strategy_returning("e1"))
    write(os.path.join(sdir, "two.lua"), strategy_returning("e2"))
    write(os.path.join(sdir, "pipelines.lua"),
          'return { default = "a", pipelines = { a = { strategies = { one = 1 } },\n'
          '  b = { strategies = { two = 1 } } },\n'
          '  experiment = { name = "ab", arms = { a = 0.5, b = 0.5 } } }\n')
    with srv.connect(unix=True) as c:
        c.call("item.put", {"id": "e1"}, {"id": "e2"})
        c.call("script.reload")
        arms = {}
        for u in range(200):
            r = c.call("rec.recommend", {"user": "xu%d" % u, "n": 1})
            arms[u] = r["variant"]
            assert r["items"][0]["id"] == ("e1" if r["variant"] == "a" else "e2")
        share = sum(1 for v in arms.values() if v == "a") / len(arms)
        assert 0.35 < share < 0.65
        for u in range(0, 200, 17):
            assert c.call("rec.recommend", {"user": "xu%d" % u, "n": 1})["variant"] == arms[u]


def test_ials_trains_in_the_background_and_folds_in(scripted):
    srv, sdir, pdir = scripted
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "policies", "ials.lua")) as f:
        write(os.path.join(pdir, "ials.lua"), f.read())
    with srv.connect(unix=True) as c:
        c.call("script.reload")
        evs = [{"user": "iu%d" % u, "item": "%s%d" % ("a" if u % 2 else "b", (u * 7 + k) % 10),
                "type": "click"} for u in range(60) for k in range(4)]
        c.call("event.add", *evs)
        assert c.call("model.train", {"factors": 8, "iters": 5})["started"] is True
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            spaces = {s["name"]: s for s in c.call("sys.info")["spaces"]}
            if "ials" in spaces and spaces["ials"]["users"] > 0:
                break
            time.sleep(0.05)
        assert spaces["ials"]["dim"] == 8 and spaces["ials"]["users"] == 60
        # owed and not solved while nothing reads the space
        c.call("event.add", {"user": "iu2", "item": "a1", "type": "click"})
        m = c.call("sys.info")["models"]["ials"]
        assert m["owed"] == 1 and m["folding"] is False, m
        before = c.call("user.get", "iu1", 0)["vectors"]["ials"]
        # a read: the workers solve what is owed from now on
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = c.call("sys.info")["models"]["ials"]
            if m["owed"] == 0:
                break
            time.sleep(0.05)
        assert m["owed"] == 0 and m["folding"] is True, m
        # a click is folded in at once by the ials policy
        c.call("event.add", {"user": "iu1", "item": "b3", "type": "purchase"})
        after = c.call("user.get", "iu1", 0)["vectors"]["ials"]
        assert after != before
        with pytest.raises(RecdError) as ei:
            c.call("model.train", {"factors": 16})
        assert ei.value.name == "dimension_mismatch"


def test_ease_trains_in_the_background_and_reads_live_history(scripted):
    srv, sdir, pdir = scripted
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "policies", "ease.lua")) as f:
        write(os.path.join(pdir, "ease.lua"), f.read())
    write(os.path.join(sdir, "by_ease.lua"),
          "return { recommend = function(req)\n"
          "  return rec:ease(req.user, req.n) or {{id = 'untrained', score = 0}}\n"
          "end }\n")
    with srv.connect(unix=True) as c:
        c.call("script.reload")
        c.call("item.put", {"id": "untrained"})
        # items xa<k> and xb<k> always go together
        evs = [{"user": "eu%d" % u, "item": "x%s%d" % (side, (u + j) % 6), "type": "click"}
               for u in range(40) for j in (0, 2) for side in "ab"]
        c.call("event.add", *evs)
        for bad in ({"model": "bogus"}, {"model": 3}, {"model": "ease", "lambda": -1},
                    {"model": "ease", "lambda": "big"}, {"model": "ease", "max_items": 0},
                    {"model": "ease", "max_items": 10 ** 6}, {"model": "ials", "factors": "x"},
                    {"model": "ials", "iters": 5000}, {"model": "ials", "reg": 0},
                    {"model": "ials", "space": 7}):
            with pytest.raises(RecdError) as ei:
                c.call("model.train", bad)
            assert ei.value.name == "invalid_params", bad
        # a preview flag that is not a boolean
        with pytest.raises(RecdError) as ei:
            c.call("rec.recommend", {"user": "eu1", "n": 1, "record": "no"})
        assert ei.value.name == "invalid_params" and "record" in str(ei.value)
        first = c.call("rec.recommend", {"user": "fresh", "n": 1, "strategy": "by_ease"})
        assert [h["id"] for h in first["items"]] == ["untrained"]
        assert c.call("model.train", {"model": "ease", "lambda": 5})["started"] is True
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = c.call("rec.recommend", {"user": "eu1", "n": 1, "strategy": "by_ease"})
            if r["items"] and r["items"][0]["id"] != "untrained":
                break
            time.sleep(0.05)
        # a brand-new user: one click, and the partner comes first at once
        c.call("event.add", {"user": "fresh", "item": "xa4", "type": "click"})
        r = c.call("rec.recommend", {"user": "fresh", "n": 1, "strategy": "by_ease"})
        assert [h["id"] for h in r["items"]] == ["xb4"]


def test_admin_eval_sessions_and_access(scripted, tmp_path):
    srv, _, _ = scripted
    with srv.connect(unix=True) as c:
        c.call("item.put", {"id": "ea", "props": {"t": "x"}})
        assert c.call("admin.eval", "n = 41") == []
        assert c.call("admin.eval", "n + 1") == [42]                 # the session keeps globals
        assert c.call("admin.eval", "rec:item_get('ea').props.t") == ["x"]
        assert c.call("admin.eval", "1, 'two', {3}") == [1, "two", [3]]
        assert c.call("admin.eval", "print") != []                    # a function comes back as text
        for code, word in (("while true do end", "budget"), ("io.open('/etc/passwd')", "io"),
                           ("error('boom')", "boom")):
            with pytest.raises(RecdError) as ei:
                c.call("admin.eval", code)
            assert ei.value.name == "script_error" and word in ei.value.message
    with srv.connect(unix=True) as c2:
        assert c2.call("admin.eval", "n") == [None]                   # another session
    with srv.connect() as tcp:                                        # TCP without a token
        with pytest.raises(RecdError) as ei:
            tcp.call("admin.eval", "1")
        assert ei.value.name == "unauthorized"
        with pytest.raises(RecdError) as ei:
            tcp.call("script.reload")
        assert ei.value.name == "unauthorized"


def test_user_delete_lets_policies_forget(scripted):
    srv, sdir, pdir = scripted
    write(os.path.join(pdir, "remember.lua"),
          'return { on_event = function(ev) rec:kv_put("mem:" .. ev.user, ev.item) end, '
          'on_forget = function(user) rec:kv_delete("mem:" .. user) end }\n')
    write(os.path.join(sdir, "all.lua"),
          'return { recommend = function(req) local out = {} '
          'for i = 1, 5 do out[i] = { id = "f" .. i, score = 10 - i } end return out end }\n')
    write(os.path.join(sdir, "pipelines.lua"),
          'return { default = "p", pipelines = { p = { strategies = { all = 1 }, '
          'policies = { "fatigue" } } } }\n')
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    with open(os.path.join(root, "policies", "fatigue.lua")) as f:
        write(os.path.join(pdir, "fatigue.lua"), f.read())
    with srv.connect(unix=True) as c:
        c.call("item.put", *[{"id": "f%d" % i} for i in range(1, 6)])
        c.call("script.reload")
        c.call("event.add", {"user": "fu", "item": "f5", "type": "view"})
        for _ in range(3):
            c.call("rec.recommend", {"user": "fu", "n": 3})
        assert c.call("admin.eval", 'rec:kv_get("mem:fu")') == ["f5"]
        # what the server showed is what fatigue reads: f1..f3 pushed down
        assert c.call("admin.eval", 'local n = 0 for _ in pairs(rec:shown("fu")) do '
                      'n = n + 1 end return n') == [4]
        assert c.call("user.delete", "fu") == 1
        assert c.call("admin.eval", 'rec:kv_get("mem:fu")') == [None]
        assert c.call("admin.eval", 'return next(rec:shown("fu")) == nil') == [True]


def test_builtin_pipeline_counts_impressions(server):
    with server.connect() as c:
        c.call("item.put", *[{"id": "bi%d" % i} for i in range(4)])
        c.call("event.add", {"user": "bo", "item": "bi0", "type": "click"})
        before = c.call("stats.get")["pipelines"].get("builtin", {"total": {"impressions": 0}})
        r = c.call("rec.recommend", {"user": "bu-new", "n": 2})
        after = c.call("stats.get")["pipelines"]["builtin"]["total"]
        assert after["impressions"] == before["total"]["impressions"] + len(r["items"])


def test_a_policy_failing_at_run_time_is_logged(scripted):
    """The request fails with the script's error, and the server's log says
    which script and line, once a second at most however often it fails."""
    srv, sdir, pdir = scripted
    write(os.path.join(sdir, "one.lua"), strategy_returning("lg1"))
    write(os.path.join(sdir, "pipelines.lua"),
          'return { default = "p", pipelines = { p = { strategies = { one = 1 }, '
          'policies = { "broken" } } } }\n')
    write(os.path.join(pdir, "broken.lua"),
          'return { rerank = function(req, items)\n  error("no such field")\nend }\n')
    with srv.connect(unix=True) as c:
        c.call("item.put", {"id": "lg1"})
        c.call("script.reload")
        for _ in range(20):
            with pytest.raises(RecdError) as ei:
                c.call("rec.recommend", {"user": "u", "n": 1})
            assert ei.value.name == "script_error"
            assert "broken.lua:2" in ei.value.message, ei.value.message
    deadline = time.monotonic() + 10
    while "rec.recommend failed" not in srv.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [l for l in srv.log().splitlines() if "rec.recommend failed" in l]
    assert lines and "broken.lua:2" in lines[0], srv.log()
    assert len(lines) < 20      # not one line per failure


def test_policies_loaded_or_removed_between_events_get_them_or_not(scripted):
    srv, sdir, pdir = scripted
    write(os.path.join(pdir, "a.lua"),
          'return { on_event = function(ev) rec:kv_put("a:" .. ev.user, ev.item) end }\n')
    with srv.connect(unix=True) as c:
        c.call("script.reload")
        c.call("event.add", {"user": "pu", "item": "q1", "type": "view"})
        assert c.call("admin.eval", 'rec:kv_get("a:pu")') == ["q1"]
        # a second policy loaded: both get the next event
        write(os.path.join(pdir, "b.lua"),
              'return { on_event = function(ev) rec:kv_put("b:" .. ev.user, ev.item) end }\n')
        c.call("script.reload")
        c.call("event.add", {"user": "pu", "item": "q2", "type": "view"})
        assert c.call("admin.eval", 'rec:kv_get("a:pu")') == ["q2"]
        assert c.call("admin.eval", 'rec:kv_get("b:pu")') == ["q2"]
        # the first removed: only the second gets the next one
        os.remove(os.path.join(pdir, "a.lua"))
        c.call("script.reload")
        c.call("event.add", {"user": "pu", "item": "q3", "type": "view"})
        assert c.call("admin.eval", 'rec:kv_get("a:pu")') == ["q2"]
        assert c.call("admin.eval", 'rec:kv_get("b:pu")') == ["q3"]


def test_batched_policy_learns_before_the_next_call(scripted):
    """Events pipelined in one write reach a policy's on_events in batches
    (far fewer calls than events), and the call right after them in the
    same write already sees what the policy learned from every one."""
    srv, sdir, pdir = scripted
    write(os.path.join(pdir, "count.lua"),
          'local calls = 0\n'
          'return { on_events = function(b)\n'
          '  calls = calls + 1\n'
          '  rec:kv_put("n", (rec:kv_get("n") or 0) + #b)\n'
          '  rec:kv_put("calls", calls)\n'
          'end }\n')
    with srv.connect(unix=True) as c:
        c.call("script.reload")
        n = 200
        buf = b"".join(c._pack([0, 1000 + i, "event.add",
                                [{"user": "u%d" % (i % 7), "item": "i%d" % i, "type": "click"}]])
                       for i in range(n))
        buf += c._pack([0, 9000, "admin.eval", ['rec:kv_get("n"), rec:kv_get("calls")']])
        c.send_raw(buf)
        replies = {}
        while len(replies) < n + 1:
            msgid, err, res = c.recv()
            assert err is None, err
            replies[msgid] = res
        assert all(replies[1000 + i] == 1 for i in range(n))
        learned, calls = replies[9000]
        assert learned == n
        assert 1 <= calls < n
        # and so does a list asked right after one more event
        buf = c._pack([0, 9001, "event.add", [{"user": "u1", "item": "i1", "type": "click"}]])
        buf += c._pack([0, 9002, "admin.eval", ['rec:kv_get("n")']])
        c.send_raw(buf)
        got = dict((m, r) for m, _, r in (c.recv(), c.recv()))
        assert got[9002] == [n + 1]


def test_online_mf_steps_wait_for_a_read(make_server, tmp_path):
    """With nobody reading the mf space, online MF's steps are owed (the
    range of logged events), across a restart; the first read pays them
    in log order, so the vectors are those of steps made at once."""
    import random
    import shutil
    pdir = tmp_path / "policies"
    pdir.mkdir()
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    shutil.copy(os.path.join(root, "policies", "online_mf.lua"), str(pdir))
    args = ["--scripts", "", "--policies", str(pdir)]
    rng = random.Random(5)
    users, items = ["mu%d" % i for i in range(6)], ["mi%d" % i for i in range(15)]

    def batch():
        return [{"user": rng.choice(users), "item": rng.choice(items),
                 "type": rng.choice(["view", "click", "purchase"])} for _ in range(40)]
    first, second = batch(), batch()

    def owed(c):
        return {s["name"]: s["mf_owed"] for s in c.call("sys.info")["spaces"]}.get("mf")

    def vectors(c):
        return ([c.call("user.get", u, 0)["vectors"]["mf"] for u in users] +
                [c.call("item.get", i)["vectors"].get("mf") for i in items])

    lazy, eager = make_server(args), make_server(args)
    with lazy.connect() as c:
        assert c.call("event.add", *first) == 40
        assert owed(c) == 40, "nobody read mf: every step owed"
        assert c.call("event.add", *second) == 40
        assert owed(c) == 80
    lazy.restart()
    with lazy.connect() as c:
        assert owed(c) == 80, "what is owed outlives a restart"
        paid = vectors(c)
        assert owed(c) == 0, "a read pays what is owed"
    with eager.connect() as c:
        assert c.call("event.add", *first) == 40
        c.call("user.get", users[0], 0)          # a read: from here on at once
        assert owed(c) == 0
        assert c.call("event.add", *second) == 40
        assert owed(c) == 0, "read lately: stepped at once"
        at_once = vectors(c)
    assert paid == at_once
