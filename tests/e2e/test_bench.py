"""recd bench: it writes only into a server without data (unless --force),
under its own id prefix, and a test whose requests fail fails the run
with no figures."""
import subprocess

from conftest import RECD_BIN

TIMEOUT = 60.0                  # generous: sanitizer builds are slow


def bench(srv, *args):
    return subprocess.run([RECD_BIN, "bench", "-p", str(srv.port), "-c", "2", "-q", *args],
                          capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL)


def counts(c):
    info = c.call("sys.info")
    return info["items"], info["users"], info["events"]


def all_ids(c, method):
    ids, cursor = [], None
    while True:
        r = c.call(method, {"cursor": cursor} if cursor is not None else None)
        ids += r["ids"]
        cursor = r["cursor"]
        if cursor is None:
            return ids


def test_refuses_a_server_with_data(make_server):
    srv = make_server()
    with srv.connect() as c:
        c.call("event.add", {"user": "u1", "item": "i1", "type": "click"})
        before = counts(c)
        for tests in ("event", "recommend", "similar", "ping,event"):
            r = bench(srv, "-n", "50", "-t", tests)
            assert r.returncode == 1, (tests, r.stdout, r.stderr)
            assert "already holds data (1 items, 1 users, 1 events)" in r.stderr, r.stderr
            assert "--force" in r.stderr
            assert "requests per second" not in r.stdout and "BENCH" not in r.stdout
        # the load step writes too
        r = bench(srv, "-n", "10", "-t", "ping", "--load-items", "5")
        assert r.returncode == 1 and "already holds data" in r.stderr, r.stderr
        assert counts(c) == before
        # tests that store nothing run anywhere
        r = bench(srv, "-n", "50", "-t", "ping,get")
        assert r.returncode == 0, r.stderr
        assert "BENCH name=recd_ping_c2_P1 " in r.stdout
        assert counts(c) == before


def test_force_writes_anyway(make_server):
    srv = make_server()
    with srv.connect() as c:
        c.call("event.add", {"user": "u1", "item": "i1", "type": "click"})
        r = bench(srv, "-n", "40", "-t", "event", "--force", "--users", "3", "--items", "4")
        assert r.returncode == 0, r.stderr
        assert "BENCH name=recd_event_c2_P1 " in r.stdout
        assert counts(c)[2] == 41


def test_own_id_prefix(make_server):
    srv = make_server()
    with srv.connect() as c:
        c.call("item.put", {"id": "i1"})        # an item of the data: not touched
        r = bench(srv, "-n", "60", "-t", "event", "--users", "3", "--items", "2", "--force")
        assert r.returncode == 0, r.stderr
        assert sorted(all_ids(c, "item.list")) == ["bench-i1", "bench-i2", "i1"]
        assert sorted(all_ids(c, "user.list")) == ["bench-u1", "bench-u2", "bench-u3"]
    srv2 = make_server()
    r = bench(srv2, "-n", "20", "-t", "ping,event", "--prefix", "load-test/",
              "--users", "1", "--items", "1")
    assert r.returncode == 0, r.stderr
    with srv2.connect() as c:
        assert all_ids(c, "item.list") == ["load-test/i1"]
        assert all_ids(c, "user.list") == ["load-test/u1"]
    srv3 = make_server()
    r = bench(srv3, "-n", "20", "-t", "event", "--prefix", "", "--users", "1", "--items", "1",
              "--load-items", "2")
    assert r.returncode == 0, r.stderr
    with srv3.connect() as c:
        assert sorted(all_ids(c, "item.list")) == ["i1", "i2"]
        assert all_ids(c, "user.list") == ["u1"]
    r = bench(srv3, "-t", "ping", "--prefix", "x" * 65)
    assert r.returncode == 2 and "--prefix" in r.stderr


def test_failing_requests_fail_the_run(make_server):
    srv = make_server()
    # rec.similar of items that do not exist: every answer is an error
    r = bench(srv, "-n", "30", "-r", "2", "-t", "ping,similar")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "BENCH name=recd_ping_c2_P1 " in r.stdout      # the test that worked
    assert "similar:" not in r.stdout and "recd_similar" not in r.stdout
    assert ("recd bench: similar failed: 60 of 60 requests answered an error "
            "(first: not_found: unknown item)") in r.stderr, r.stderr
    # some failing among successes: still a failure, and no CSV row either
    with srv.connect() as c:
        c.call("item.put", {"id": "bench-i1", "vectors": {"content": [1.0, 0.0]}},
               {"id": "bench-i9", "vectors": {"content": [0.0, 1.0]}})
    r = bench(srv, "-n", "40", "-t", "similar", "--items", "2", "--csv", "--force")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout.splitlines()[1:] == [], r.stdout        # the header alone
    assert "recd bench: similar failed: " in r.stderr
    assert " of 40 requests answered an error (first: not_found: unknown item)" in r.stderr
    assert "similar failed: 40 of 40" not in r.stderr and "failed: 0 of" not in r.stderr
