"""Script code the server runs outside strategies and policies: the
pipelines file and admin.eval results. Neither may hang or abort the
server; a bad pipelines file keeps the previous config (and its event
weights) in force and is reported with file and line."""
import os
import time

import pytest

from recd_client import RecdError

TIMEOUT = 10.0        # a hung server fails the call instead of the suite
TYPES = ["t%02d" % i for i in range(30)]


def write(path, body):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(body)
    os.rename(tmp, path)          # editors save by rename


def strategy_returning(item):
    return 'return { recommend = function(req) return { { id = "%s", score = 1.0 } } end }\n' % item


@pytest.fixture
def scripted(make_server, tmp_path):
    sdir, pdir = tmp_path / "scripts", tmp_path / "policies"
    sdir.mkdir()
    pdir.mkdir()
    srv = make_server(extra_args=["--scripts", str(sdir), "--policies", str(pdir)])
    return srv, str(sdir), str(pdir)


def wait(cond, what, limit=20.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def config_status(c):
    for s in c.call("script.status"):
        if s["name"] == "pipelines":
            return s
    return None


def weights(c):
    code = "return {" + ", ".join('rec:event_weight("%s")' % t for t in TYPES) + "}"
    return c.call("admin.eval", code)[0]


def pipeline_file(default, weight):
    return ('return { default = "%s", pipelines = {\n'
            '  a = { strategies = { one = 1 }, policies = {} },\n'
            '  b = { strategies = { two = 1 }, policies = {} } },\n'
            '  event_weights = { %s } }\n'
            % (default, ", ".join("%s = %d" % (t, weight) for t in TYPES)))


def top(c):
    r = c.call("rec.recommend", {"user": "pu", "n": 1})
    return r["pipeline"], r["items"][0]["id"]


def test_pipelines_file_is_sandboxed_budgeted_and_kept_when_bad(scripted):
    srv, sdir, _ = scripted
    path = os.path.join(sdir, "pipelines.lua")
    write(os.path.join(sdir, "one.lua"), strategy_returning("h1"))
    write(os.path.join(sdir, "two.lua"), strategy_returning("h2"))
    write(path, pipeline_file("a", 3))
    with srv.connect(unix=True, timeout=TIMEOUT) as c:
        c.call("item.put", {"id": "h1"}, {"id": "h2"})
        c.call("script.reload")
        assert top(c) == ("a", "h1")
        assert weights(c) == [3.0] * len(TYPES)
        st = config_status(c)
        assert st["kind"] == "config" and st["loaded"] and st["error"] is None

        # A loop at the top of the file: the watch loads it off the request
        # path, the budget stops it, the previous config stays.
        write(path, "while true do end\n")
        st = wait(lambda: (config_status(c) or {}).get("error") and config_status(c),
                  "the looping pipelines.lua to be refused")
        assert "scripts/pipelines.lua:1:" in st["error"], st["error"]
        assert "budget exceeded" in st["error"], st["error"]
        assert st["loaded"]                      # the previous version runs
        assert top(c) == ("a", "h1")
        with srv.connect(timeout=TIMEOUT) as c2:  # a new connection is served
            assert c2.call("sys.ping") is not None

        # The sandbox (no load, dofile, collectgarbage) and the memory cap;
        # errors name the file, and the line where there is one.
        for want, bad in (
                ("scripts/pipelines.lua:2: attempt to call a nil value (global 'load')",
                 "local x = 1\nreturn load('return 1')()\n"),
                ("scripts/pipelines.lua:1: attempt to call a nil value (global 'dofile')",
                 "dofile('/etc/passwd')\n"),
                ("scripts/pipelines.lua:1: attempt to call a nil value (global 'collectgarbage')",
                 "collectgarbage()\n"),
                # no engine either: a config cannot set weights on the side
                ("scripts/pipelines.lua:1: attempt to index a nil value (global 'rec')",
                 "rec:event_weight('t00', 9)\n" + pipeline_file("b", 9)),
                ("scripts/pipelines.lua: memory budget exceeded",
                 "local t, s = {}, ('x'):rep(1 << 20)\n"
                 "for i = 1, 1e9 do t[i] = s .. i end\n")):
            write(path, bad)
            wait(lambda: want in ((config_status(c) or {}).get("error") or ""),
                 "the error " + want)
            assert top(c) == ("a", "h1")
        assert weights(c) == [3.0] * len(TYPES)

        # Weights come with the config, whole or not at all: one bad entry
        # among valid ones changes no weight.
        write(path, pipeline_file("b", 7).replace("event_weights = {",
                                                 'event_weights = { ["x/y"] = 1, '))
        st = wait(lambda: "event_weights" in ((config_status(c) or {}).get("error") or "")
                  and config_status(c), "the bad event_weights to be refused")
        assert "scripts/pipelines.lua" in st["error"], st["error"]
        assert weights(c) == [3.0] * len(TYPES)
        assert top(c) == ("a", "h1")

        # Restoring a good file is picked up, weights and all.
        write(path, pipeline_file("b", 5))
        wait(lambda: (config_status(c) or {}).get("error") is None, "the good file to load")
        assert top(c) == ("b", "h2")
        assert weights(c) == [5.0] * len(TYPES)

        # Removing the file brings back the default pipeline (it blends
        # "hybrid"; with none loaded the built-in pipeline answers).
        os.unlink(path)
        wait(lambda: config_status(c) is None, "the removed file to leave the listing")
        assert c.call("rec.recommend", {"user": "pu", "n": 1})["pipeline"] == "builtin"
    assert srv.alive()


def test_server_starts_with_a_looping_pipelines_file(make_server, tmp_path):
    sdir, pdir = tmp_path / "scripts", tmp_path / "policies"
    sdir.mkdir()
    pdir.mkdir()
    write(str(sdir / "one.lua"), strategy_returning("h1"))
    write(str(sdir / "pipelines.lua"), "local n = 0\nwhile true do n = n + 1 end\n")
    srv = make_server(extra_args=["--scripts", str(sdir), "--policies", str(pdir)])
    with srv.connect(unix=True, timeout=TIMEOUT) as c:
        assert c.call("sys.ping") is not None
        st = config_status(c)
        assert st["kind"] == "config" and not st["loaded"]
        assert "scripts/pipelines.lua:2:" in st["error"], st["error"]
        c.call("item.put", {"id": "h1"})
        # the built-in default config: pipeline "default" blends hybrid
        assert c.call("rec.recommend", {"user": "u", "n": 1})["pipeline"] == "builtin"
        write(str(sdir / "pipelines.lua"),
              'return { default = "a", pipelines = { a = { strategies = { one = 1 } } } }\n')
        assert c.call("script.reload", "pipelines") is True
        assert config_status(c)["error"] is None
        assert top(c) == ("a", "h1")


def test_admin_eval_results_are_converted_under_the_budgets(scripted):
    srv, _, _ = scripted
    with srv.connect(unix=True, timeout=TIMEOUT) as c:
        cases = (
            ("setmetatable({f = print}, {__tostring = function() while true do end end})",
             "budget exceeded"),
            ("setmetatable({f = print}, {__tostring = function() error('boom') end})", "boom"),
            ("setmetatable({f = print}, {__tostring = function() return {} end})",
             "'__tostring' must return a string"),
        )
        for code, want in cases:
            with pytest.raises(RecdError) as ei:
                c.call("admin.eval", code)
            assert ei.value.name == "script_error", ei.value
            assert want in ei.value.message, ei.value.message
            with srv.connect(timeout=TIMEOUT) as c2:
                assert c2.call("sys.ping") is not None
            assert c.call("admin.eval", "1 + 1") == [2]
        # a __tostring that behaves still names the value
        assert c.call("admin.eval",
                      "1, setmetatable({f = print}, {__tostring = function() return 'obj' end})") == [1, "obj"]
        assert c.call("admin.eval", "print")[0].startswith("function")
    assert srv.alive()


def test_admin_eval_results_are_bounded_in_size(scripted):
    """A table holding one subtable twice at each of 30 levels (2^30
    leaves) is refused at the results' byte cap, not encoded whole."""
    srv, _, _ = scripted
    with srv.connect(unix=True, timeout=TIMEOUT) as c:
        with pytest.raises(RecdError) as ei:
            c.call("admin.eval", "local t = {1} for i = 1, 30 do t = {t, t} end return t")
        assert ei.value.name == "script_error", ei.value
        assert "bytes of msgpack" in ei.value.message, ei.value.message
        with srv.connect(timeout=TIMEOUT) as c2:
            assert c2.call("sys.ping") is not None
        # below the cap, a shared subtable is written out in full
        assert c.call("admin.eval", "local t = {1} for i = 1, 3 do t = {t, t} end return t") == \
            [[[[[1], [1]], [[1], [1]]], [[[1], [1]], [[1], [1]]]]]
    assert srv.alive()
