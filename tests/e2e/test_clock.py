"""The engine's clock is event time (docs/operations.md, "Time"): events move
it forward, it runs with the wall clock between them, requests are served
at it (or at a `now` they name), and events without a time take it. The
same in the server and in the Lua module."""
import subprocess
import time

import pytest

from conftest import RECD_BIN
from recd_client import RecdError

T2023 = 1672531200.0   # 2023-01-01 00:00:00 UTC


def clock(c):
    return c.call("sys.info")["clock"]


def history_ts(c, user):
    return [h["ts"] for h in c.call("user.history", user)["history"]]


def test_a_fresh_server_runs_on_the_wall_clock(make_server):
    srv = make_server()
    c = srv.connect()
    ck = clock(c)
    assert abs(ck["now"] - time.time()) < 60 and ck["behind"] == 0 and ck["newest_event"] == 0
    c.call("event.add", {"user": "u", "item": "i", "type": "view"})
    (ts,) = history_ts(c, "u")
    assert abs(ts - time.time()) < 60
    assert clock(c)["newest_event"] == ts
    c.close()


def test_a_backfill_runs_at_the_logs_time(make_server):
    srv = make_server()
    c = srv.connect()
    c.call("event.add", *[{"user": "u%d" % (k % 7), "item": "i%d" % k, "type": "view",
                           "ts": T2023 + 60 * k} for k in range(100)])
    newest = T2023 + 60 * 99
    ck = clock(c)
    assert ck["newest_event"] == newest
    # the clock stands at the newest event, plus the seconds since it came
    assert newest <= ck["now"] < newest + 60, ck
    assert ck["behind"] > 86400 * 300
    # an event without a time takes the clock's, after the newest
    c.call("event.add", {"user": "late-u", "item": "i1", "type": "click"})
    (ts,) = history_ts(c, "late-u")
    assert newest <= ts < newest + 60
    newest = ts
    # a late event keeps its own time and leaves the clock where it was
    c.call("event.add", {"user": "late-u", "item": "i2", "type": "click", "ts": T2023 - 86400})
    assert sorted(history_ts(c, "late-u")) == [T2023 - 86400, ts]
    assert clock(c)["newest_event"] == newest
    assert clock(c)["now"] < newest + 60
    # the shift survives a restart (it is stored with the checkpoint)
    srv.restart()
    c = srv.connect()
    ck = clock(c)
    assert newest <= ck["now"] < newest + 120 and ck["newest_event"] == newest, ck
    c.close()


def test_the_clock_never_runs_ahead_of_the_wall_clock_past_its_tolerance(make_server):
    srv = make_server()
    c = srv.connect()
    ahead = time.time() + 86400
    c.call("event.add", {"user": "u", "item": "i", "type": "view", "ts": ahead})
    ck = clock(c)
    assert ck["newest_event"] == ahead               # the event keeps its time
    assert ck["now"] <= ck["wall"] + 300 + 1e-6, ck  # the clock does not follow it
    assert ck["now"] > ck["wall"] + 250, ck
    c.close()


def test_a_request_may_name_its_moment(make_server):
    srv = make_server()
    c = srv.connect()
    for bad in (0, -1, "soon", 1e12):
        with pytest.raises(RecdError) as e:
            c.call("rec.recommend", {"user": "u", "n": 3, "now": bad})
        assert "now must be seconds since the epoch" in e.value.message
    c.call("event.add", *[{"user": "u%d" % k, "item": "pop", "type": "view",
                           "ts": T2023 + k} for k in range(5)])
    got = c.call("rec.recommend", {"user": "x", "n": 3, "now": T2023 + 10})
    assert [h["id"] for h in got["items"]] == ["pop"]
    c.close()


def test_the_lua_module_keeps_the_same_clock(tmp_path):
    script = tmp_path / "clock.lua"
    script.write_text("""
local recd = require "recd"
local db = recd.open(arg[1])
local T = %r
assert(math.abs(db:now() - os.time()) < 60, "a fresh folder is on the wall clock")
for k = 0, 9 do db:event{user = "u", item = "i" .. k, type = "view", ts = T + 60 * k} end
local newest = T + 540
assert(db:now() >= newest and db:now() < newest + 60, "clock " .. db:now())
db:event{user = "v", item = "i1", type = "click"}
local h = db:history("v")
assert(#h == 1 and h[1].ts >= newest and h[1].ts < newest + 60, "no-ts event at " .. h[1].ts)
db:event{user = "v", item = "i2", type = "click", ts = T - 1000}
assert(db:now() < newest + 60, "a late event moved the clock")
db:close()
db = recd.open(arg[1])
assert(db:now() >= newest and db:now() < newest + 120, "after reopening: " .. db:now())
print("ok")
""" % T2023)
    r = subprocess.run([RECD_BIN, "lua", str(script), str(tmp_path / "db")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
