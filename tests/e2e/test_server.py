"""End-to-end tests of `recd serve` against docs/protocol.md.

Most tests share one server (session fixture) and use ids unique to the test;
the ones that restart, stop or configure a server get a private one.
"""
import itertools
import math
import os
import random
import signal
import socket
import stat
import struct
import threading
import time

import msgpack
import pytest

from recd_client import RecdError, f32

_seq = itertools.count(1)
RUN = "%x" % random.getrandbits(24)


def uid(prefix="x"):
    """An id no other test uses."""
    return "%s-%s-%d" % (prefix, RUN, next(_seq))


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def expect_error(c, name, method, *params):
    with pytest.raises(RecdError) as ei:
        c.call(method, *params)
    e = ei.value
    assert e.name == name, "expected %s, got %s" % (name, e)
    assert isinstance(e.code, int), "error code %r is not an int" % (e.code,)
    assert isinstance(e.message, str) and e.message, "error without a message"
    assert str(e) == "%s: %s" % (e.name, e.message)
    return e


def info(c):
    return c.call("sys.info")


def method_stat(inf, name):
    return inf["methods"].get(name, {"count": 0, "errors": 0})


def ids(answer):
    return [h["id"] for h in answer["items"]]


def check_rec_shape(answer, n):
    assert set(answer) >= {"rec_id", "pipeline", "items"}, answer
    assert answer["rec_id"] is not None
    assert isinstance(answer["pipeline"], str) and answer["pipeline"]
    assert isinstance(answer["items"], list) and len(answer["items"]) <= n
    scores = []
    for hit in answer["items"]:
        assert set(hit) >= {"id", "score"}, hit
        assert isinstance(hit["id"], (str, int))
        assert isinstance(hit["score"], (int, float)) and math.isfinite(hit["score"])
        scores.append(hit["score"])
    assert scores == sorted(scores, reverse=True), "hits not best first: %r" % scores
    assert len(set(map(repr, ids(answer)))) == len(answer["items"]), "duplicate hits"


def read_until_close(sock, timeout=10.0):
    """Read what the server sends until it closes the connection.
    Returns (messages, closed); a reset counts as closed."""
    sock.settimeout(timeout)
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    deadline = time.monotonic() + timeout
    msgs = []
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return msgs, True
        except socket.timeout:
            break
        if not data:
            return msgs, True
        unpacker.feed(data)
        msgs.extend(unpacker)
    return msgs, False


def assert_no_more_data(c, wait=0.3):
    """Nothing further arrives on the connection (e.g. no reply to a notification)."""
    c.sock.settimeout(wait)
    try:
        data = c.sock.recv(1)
    except socket.timeout:
        data = None
    finally:
        c.sock.settimeout(30)
    assert data is None, "unexpected bytes from the server: %r" % data


def assert_close_with_error(sock, names=("protocol_error", "too_large")):
    """The server sends at most one [2, "error", [err]] with one of `names`
    and closes the connection."""
    msgs, closed = read_until_close(sock)
    assert closed, "server kept the connection open; got %r" % msgs[:3]
    assert len(msgs) <= 1, "expected at most one notification, got %r" % msgs[:3]
    for m in msgs:
        assert isinstance(m, list) and len(m) == 3 and m[0] == 2 and m[1] == "error", m
        assert isinstance(m[2], list) and len(m[2]) == 1, m
        err = m[2][0]
        assert err.get("name") in names, err
        assert isinstance(err.get("code"), int) and isinstance(err.get("message"), str), err


def assert_server_up(server):
    assert server.alive(), "recd died:\n" + server.log()
    with server.connect() as c:
        assert c.call("sys.ping") == "pong"


# --------------------------------------------------------------------- sys

def test_ping(client):
    assert client.call("sys.ping") == "pong"


def test_hello_shape(client):
    h = client.call("sys.hello")
    assert h["server"] == "recd"
    assert isinstance(h["version"], str) and h["version"]
    assert h["api"] == 1
    assert isinstance(h["features"], list)
    assert all(isinstance(f, str) for f in h["features"])
    assert isinstance(h["nonce"], (str, bytes)) and h["nonce"]
    assert h["auth_required"] is False


def test_info_shape(client):
    inf = info(client)
    for key in ("version", "uptime_s", "connections", "items", "users", "events",
                "spaces", "memory", "store", "notification_errors", "methods"):
        assert key in inf, key
    assert isinstance(inf["version"], str)
    assert isinstance(inf["uptime_s"], (int, float)) and inf["uptime_s"] >= 0
    assert isinstance(inf["connections"], int) and inf["connections"] >= 1
    for key in ("items", "users", "events", "notification_errors"):
        assert isinstance(inf[key], int) and inf[key] >= 0, key
    assert isinstance(inf["spaces"], (int, list, dict))
    assert isinstance(inf["memory"]["rss_bytes"], int) and inf["memory"]["rss_bytes"] > 0
    for key in ("map_size", "map_used", "map_max", "commits"):
        assert isinstance(inf["store"][key], int) and inf["store"][key] >= 0, key
    assert isinstance(inf["methods"], dict)


def test_info_scans_and_bf16_search(client):
    """A space of 16k+ items is searched through its bf16 copy where the CPU
    has AVX512-BF16 (sys.info says whether), with the float scan's answer."""
    rnd = random.Random(11)
    space, n, tag = "bfs" + uid(""), 16500, uid("bf")
    vecs = [[rnd.uniform(-1, 1) for _ in range(4)] for _ in range(n)]
    for b in range(0, n, 1500):
        client.call("item.put", *[{"id": "%s-%d" % (tag, i), "vectors": {space: vecs[i]}}
                                  for i in range(b, min(n, b + 1500))])
    before = info(client)["scans"]
    assert isinstance(before["bf16"], bool)
    r = client.call("rec.similar", {"item": "%s-0" % tag, "n": 5, "space": space})
    after = info(client)["scans"]
    q = vecs[0]

    def cos(v):
        return sum(a * b for a, b in zip(q, v)) / (math.sqrt(sum(a * a for a in v)) *
                                                  math.sqrt(sum(a * a for a in q)))
    want = sorted(range(1, n), key=lambda i: -cos(vecs[i]))[:5]
    assert [h["id"] for h in r["items"]] == ["%s-%d" % (tag, i) for i in want]
    searched = (after["bf16_fast"] + after["bf16_fallback"]) - \
               (before["bf16_fast"] + before["bf16_fallback"])
    assert searched == (1 if after["bf16"] else 0), (before, after)


def test_info_counts_items_users_events(client):
    before = info(client)
    u, i = uid("cu"), uid("ci")
    client.call("event.add", {"user": u, "item": i, "type": "view"})
    after = info(client)
    assert after["events"] == before["events"] + 1
    assert after["users"] == before["users"] + 1
    assert after["items"] == before["items"] + 1


def test_info_per_method_counts(client):
    before = info(client)
    for _ in range(3):
        client.call("sys.ping")
    client.call("item.get", uid("nope"))
    expect_error(client, "invalid_params", "item.get", [1, 2])
    after = info(client)
    for name, count, errors in (("sys.ping", 3, 0), ("item.get", 2, 1), ("sys.info", 1, 0)):
        b, a = method_stat(before, name), method_stat(after, name)
        assert a["count"] - b["count"] == count, (name, b, a)
        assert a["errors"] - b["errors"] == errors, (name, b, a)
    ping = after["methods"]["sys.ping"]
    for key in ("p50_us", "p99_us", "p999_us"):
        assert isinstance(ping[key], (int, float)) and ping[key] >= 0, key
    assert ping["p50_us"] <= ping["p99_us"] <= ping["p999_us"]


# -------------------------------------------------------------------- items

def test_item_put_get_roundtrip(client):
    a, b = uid("it"), uid("it")
    props = {"title": "Heat", "year": 1995, "rating": 7.5, "tags": ["crime", "la"],
             "cast": {"lead": "Pacino"}, "hd": True}
    n = client.call("item.put", {"id": a, "props": props, "vectors": {"content": [0.5, -1.0, 2.0]}},
                    {"id": b})
    assert n == 2
    got = client.call("item.get", a)
    assert got["id"] == a
    assert got["props"] == props
    assert got["active"] is True
    assert got["vectors"] == {"content": [0.5, -1.0, 2.0]}
    bare = client.call("item.get", b)
    assert bare["id"] == b and bare["active"] is True
    assert not bare["props"] and not bare["vectors"]


def test_item_props_replace_and_keep(client):
    a = uid("it")
    client.call("item.put", {"id": a, "props": {"x": 1}})
    client.call("item.put", {"id": a, "vectors": {"content": [1.0, 0.0, 0.0]}})
    got = client.call("item.get", a)
    assert got["props"] == {"x": 1}, "leaving props out must keep them"
    assert got["vectors"]["content"] == [1.0, 0.0, 0.0]
    client.call("item.put", {"id": a, "props": {"y": "two"}})
    got = client.call("item.get", a)
    assert got["props"] == {"y": "two"}, "props must replace what is stored"
    assert got["vectors"]["content"] == [1.0, 0.0, 0.0]


def test_item_active_flag(client):
    a = uid("it")
    client.call("item.put", {"id": a, "props": {"k": 1}, "active": False})
    got = client.call("item.get", a)
    assert got["active"] is False and got["props"] == {"k": 1}
    client.call("item.put", {"id": a, "active": True})
    assert client.call("item.get", a)["active"] is True


def test_item_delete(client):
    a, b = uid("it"), uid("it")
    client.call("item.put", {"id": a}, {"id": b})
    assert client.call("item.delete", a, uid("unknown"), b) == 2
    assert client.call("item.get", a) is None
    assert client.call("item.get", b) is None
    assert client.call("item.delete", a) == 0


def test_unknown_ids(client):
    unknown = uid("unknown")
    assert client.call("item.get", unknown) is None
    assert client.call("user.get", unknown) is None
    assert client.call("item.delete", unknown) == 0
    assert client.call("user.delete", unknown) == 0
    assert client.call("item.get", 987654321987) is None
    expect_error(client, "not_found", "rec.similar", {"item": unknown})


def test_vectors_bin_float32(client):
    vec = [0.25, -1.5, 3.0, 1e-3]
    a, b = uid("vb"), uid("vb")
    space = uid("sp")
    assert client.call("item.put", {"id": a, "vectors": {space: f32(vec)}},
                       {"id": b, "vectors": {space: vec}}) == 2
    ga, gb = client.call("item.get", a), client.call("item.get", b)
    assert isinstance(ga["vectors"][space], list), "vectors come back as arrays of floats"
    assert ga["vectors"][space] == pytest.approx(vec, rel=1e-6)
    assert gb["vectors"][space] == pytest.approx(vec, rel=1e-6)
    sim = client.call("rec.similar", {"item": a, "space": space, "n": 5})
    assert ids(sim) == [b]
    assert sim["items"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_vector_bin_wrong_length_rejected(client):
    # a bin that is not a whole number of float32s is not a vector
    e = pytest.raises(RecdError, client.call, "item.put",
                      {"id": uid("vb"), "vectors": {uid("sp"): b"\x00\x00\x80\x3f\x00"}}).value
    assert e.name == "invalid_params", e


@pytest.mark.parametrize("int_id", [42, 0, 2 ** 40, -5])
def test_int_and_string_ids_distinct(client, int_id):
    sid = str(int_id)
    client.call("item.delete", int_id, sid)
    assert client.call("item.put", {"id": int_id, "props": {"k": "int"}},
                       {"id": sid, "props": {"k": "str"}}) == 2
    gi, gs = client.call("item.get", int_id), client.call("item.get", sid)
    assert gi["props"] == {"k": "int"} and gs["props"] == {"k": "str"}
    assert gi["id"] == int_id and type(gi["id"]) is int
    assert gs["id"] == sid and type(gs["id"]) is str
    assert client.call("item.delete", int_id) == 1
    assert client.call("item.get", int_id) is None
    assert client.call("item.get", sid)["props"] == {"k": "str"}
    client.call("item.delete", sid)


def test_int_and_string_user_ids_distinct(client):
    base = random.randrange(10 ** 9, 10 ** 12)
    it = uid("it")
    client.call("event.add", {"user": base, "item": it, "type": "click"})
    assert client.call("user.get", str(base)) is None
    hist = client.call("user.get", base)["history"]
    assert [h["item"] for h in hist] == [it]
    client.call("event.add", {"user": "u" + str(base), "item": base, "type": "view"})
    h2 = client.call("user.get", "u" + str(base))["history"]
    assert h2[0]["item"] == base and type(h2[0]["item"]) is int


# -------------------------------------------------------------------- users

def test_user_put_get(client):
    u = uid("us")
    assert client.call("user.put", {"id": u, "props": {"age": 31, "country": "fr"},
                                    "vectors": {uid("usp"): [1.0, 2.0]}}) == 1
    got = client.call("user.get", u)
    assert got["id"] == u
    assert got["props"] == {"age": 31, "country": "fr"}
    assert list(got["vectors"].values()) == [[1.0, 2.0]]
    assert got["history"] == []


def test_user_history_newest_first_and_n(client):
    u = uid("us")
    now = time.time()
    evs = [{"user": u, "item": uid("hi"), "type": "view", "ts": int(now) - 100 + k} for k in range(60)]
    assert client.call("event.add", *evs) == 60
    hist = client.call("user.get", u)["history"]
    assert len(hist) == 50, "default n is 50"
    assert [h["item"] for h in hist] == [e["item"] for e in reversed(evs)][:50]
    for h in hist:
        assert set(h) >= {"item", "type", "ts", "weight"}
    assert [h["item"] for h in client.call("user.get", u, 3)["history"]] == \
        [evs[59]["item"], evs[58]["item"], evs[57]["item"]]


def test_user_delete_forgets_everything(client):
    u, i = uid("us"), uid("it")
    client.call("user.put", {"id": u, "props": {"p": 1}})
    client.call("event.add", {"user": u, "item": i, "type": "click"},
                {"user": u, "item": i, "type": "purchase"})
    before = info(client)
    assert client.call("user.delete", u, uid("unknown")) == 1
    after = info(client)
    assert client.call("user.get", u) is None
    assert after["events"] == before["events"] - 2, "the user's events must be forgotten"
    assert after["users"] == before["users"] - 1
    client.call("event.add", {"user": u, "item": uid("it"), "type": "view"})
    assert len(client.call("user.get", u)["history"]) == 1
    assert client.call("user.get", u)["props"] in ({}, None, [])


# ------------------------------------------------------------------- events

def test_event_weights(client):
    u = uid("ew")
    weights = {"view": 1, "click": 2, "add_to_cart": 4, "purchase": 8,
               "skip": -1, "dislike": -4, "wishlist": 0}
    evs = [{"user": u, "item": uid("it"), "type": t} for t in weights]
    assert client.call("event.add", *evs) == len(evs)
    hist = client.call("user.get", u)["history"]
    assert {h["type"]: h["weight"] for h in hist} == weights


def test_event_ts_default_and_explicit(client):
    u = uid("ts")
    t0 = time.time()
    client.call("event.add", {"user": u, "item": "a", "type": "view", "ts": 1500000000},
                {"user": u, "item": "b", "type": "view", "ts": 1500000100.5})
    client.call("event.add", {"user": u, "item": "c", "type": "view"})
    t1 = time.time()
    hist = {h["item"]: h["ts"] for h in client.call("user.get", u)["history"]}
    assert hist["a"] == 1500000000
    assert hist["b"] == pytest.approx(1500000100.5, abs=1e-3)
    assert t0 - 2 <= hist["c"] <= t1 + 2, "ts defaults to the time of arrival"


@pytest.mark.parametrize("ts", [1e30, float("nan"), float("inf"), float("-inf")])
def test_event_ts_out_of_range(client, ts):
    u = uid("ts")
    e = expect_error(client, "out_of_range", "event.add", {"user": u, "item": uid("it"), "type": "view", "ts": ts})
    assert "ts" in e.message
    assert client.call("user.get", u) is None


def test_event_with_value_rec_id_context(client):
    u, i = uid("ev"), uid("it")
    rec = client.call("rec.recommend", {"user": u, "n": 3})
    n = client.call("event.add", {"user": u, "item": i, "type": "purchase", "value": 19.9,
                                  "rec_id": rec["rec_id"], "context": {"page": "home", "slot": 2}})
    assert n == 1
    assert client.call("user.get", u)["history"][0]["item"] == i


def test_event_creates_user_and_item(client):
    u, i = uid("ev"), uid("it")
    client.call("event.add", {"user": u, "item": i, "type": "click"})
    assert client.call("item.get", i)["id"] == i
    h = client.call("user.get", u)["history"]
    assert len(h) == 1 and h[0]["item"] == i and h[0]["type"] == "click" and h[0]["weight"] == 2


def test_cross_connection_read_after_write(server):
    i = uid("cc")
    with server.connect() as a, server.connect() as b:
        a.call("item.put", {"id": i, "props": {"v": 1}})
        assert b.call("item.get", i)["props"] == {"v": 1}


def test_read_sees_pipelined_write(client):
    i = uid("rw")
    m1 = client.send("item.put", {"id": i, "props": {"v": 2}})
    m2 = client.send("item.get", i)
    r1, r2 = client.recv(), client.recv()
    assert (r1[0], r1[1], r1[2]) == (m1, None, 1)
    assert r2[0] == m2 and r2[1] is None and r2[2]["props"] == {"v": 2}


# ---------------------------------------------------------------------- rec

def put_cluster(c, space, prefix, centre, count, jitter=0.05, seed=1):
    rnd = random.Random(seed)
    items = []
    for k in range(count):
        v = [x + rnd.uniform(-jitter, jitter) for x in centre]
        items.append({"id": "%s%d" % (prefix, k), "props": {"k": k}, "vectors": {space: v}})
    c.call("item.put", *items)
    return [it["id"] for it in items]


def test_similar_shape_and_order(client):
    space = uid("sim")
    p = uid("s") + "-"
    a = put_cluster(client, space, p + "a", [1, 0, 0, 0], 5)
    b = put_cluster(client, space, p + "b", [0, 1, 0, 0], 5)
    ans = client.call("rec.similar", {"item": a[0], "n": 4, "space": space})
    check_rec_shape(ans, 4)
    assert len(ans["items"]) == 4
    assert a[0] not in ids(ans), "the item itself is left out"
    assert set(ids(ans)) == set(a[1:])
    ans = client.call("rec.similar", {"item": b[0], "space": space})
    check_rec_shape(ans, 10)
    assert len(ans["items"]) == 9, "default n is 10, and 9 others exist"
    assert set(ids(ans)[:4]) == set(b[1:])


def test_similar_default_space_is_only_space(client):
    space = uid("only")
    p = uid("s") + "-"
    a = put_cluster(client, space, p, [0, 0, 1], 3)
    ans = client.call("rec.similar", {"item": a[0]})
    assert set(ids(ans)) == set(a[1:])


def test_similar_skips_inactive(client):
    space = uid("sim")
    a = put_cluster(client, space, uid("s") + "-", [1, 1, 0], 4)
    client.call("item.put", {"id": a[1], "active": False})
    assert a[1] not in ids(client.call("rec.similar", {"item": a[0], "space": space}))
    client.call("item.put", {"id": a[1], "active": True})
    assert a[1] in ids(client.call("rec.similar", {"item": a[0], "space": space}))


def test_recommend_shape(client):
    u = uid("ru")
    ans = client.call("rec.recommend", {"user": u})
    check_rec_shape(ans, 10)
    ans2 = client.call("rec.recommend", {"user": u, "n": 2, "explain": True,
                                         "context": {"page": "home"}})
    check_rec_shape(ans2, 2)
    assert ans2["rec_id"] != ans["rec_id"], "each recommendation has its own rec_id"


def test_recommend_excludes_seen_excluded_inactive(client):
    u = uid("ru")
    p = uid("r") + "-"
    items = ["%s%d" % (p, k) for k in range(8)]
    client.call("item.put", *[{"id": i} for i in items])
    # popular among other users, so candidates for u
    evs = [{"user": "%sfan%d" % (p, f), "item": i, "type": "purchase"}
           for f in range(5) for i in items]
    client.call("event.add", *evs)
    client.call("event.add", {"user": u, "item": items[0], "type": "click"},
                {"user": u, "item": items[1], "type": "dislike"})
    client.call("item.put", {"id": items[2], "active": False})
    ans = client.call("rec.recommend", {"user": u, "n": 1000, "exclude": [items[3]]})
    check_rec_shape(ans, 1000)
    got = set(map(repr, ids(ans)))
    for bad in items[:4]:
        assert repr(bad) not in got, "%s must not come back" % bad
    assert len(ans["items"]) > 0


@pytest.mark.parametrize("n", [1, 1000])
def test_recommend_n_bounds_accepted(client, n):
    check_rec_shape(client.call("rec.recommend", {"user": uid("ru"), "n": n}), n)


def test_feedback_on_next_request(make_server):
    """After clicks, the very next rec.recommend (pipelined right behind the
    event.add) excludes the clicked items and moves toward them."""
    srv = make_server()
    with srv.connect() as c:
        a = put_cluster(c, "content", "a", [1, 0, 0, 0], 6)
        b = put_cluster(c, "content", "b", [0, 0, 1, 0], 6)
        evs = []
        for f in range(12):                   # B is what everyone likes
            evs += [{"user": "bfan%d" % f, "item": i, "type": "purchase"} for i in b]
        for f in range(3):                    # a few users like all of A
            evs += [{"user": "afan%d" % f, "item": i, "type": "click"} for i in a]
        c.call("event.add", *evs)
        before = c.call("rec.recommend", {"user": "me", "n": 5})
        check_rec_shape(before, 5)
        clicked = a[:3]
        m1 = c.send("event.add", *[{"user": "me", "item": i, "type": "click",
                                    "rec_id": before["rec_id"]} for i in clicked])
        m2 = c.send("rec.recommend", {"user": "me", "n": 5})
        r1, r2 = c.recv(), c.recv()
        assert r1 == (m1, None, 3)
        assert r2[0] == m2 and r2[1] is None
        after = r2[2]
        check_rec_shape(after, 5)
        assert not set(clicked) & set(ids(after)), "clicked items came back: %r" % ids(after)
        assert set(a[3:]) & set(ids(after)), \
            "no item like the clicked ones: before %r, after %r" % (ids(before), ids(after))
        assert ids(after) != ids(before)


# ------------------------------------------------------------------- errors

def test_unknown_method(client):
    e = expect_error(client, "unknown_method", "no.such.method", 1)
    assert "no.such.method" in e.message
    assert "sys.methods lists them" in e.message and "did you mean" not in e.message
    e = expect_error(client, "unknown_method", "item.Get", "x")
    assert "did you mean 'item.get'?" in e.message, e.message
    e = expect_error(client, "unknown_method", "rec.recomend", {"user": "u"})
    assert "did you mean 'rec.recommend'?" in e.message, e.message
    e = expect_error(client, "unknown_method", "items.put", [])
    assert "did you mean 'item.put'?" in e.message, e.message
    e = expect_error(client, "unknown_method", "catalog.delete", "x")
    assert "did you mean 'item.delete'?" in e.message, e.message
    assert client.call("sys.ping") == "pong"


def test_methods_are_listed(client):
    listed = client.call("sys.methods")
    names = [m["name"] for m in listed]
    for name in ("sys.ping", "sys.methods", "item.put", "item.list", "user.history",
                 "event.add", "rec.recommend", "admin.eval"):
        assert name in names
    by = {m["name"]: m for m in listed}
    assert by["admin.eval"]["admin"] and not by["rec.recommend"]["admin"]
    assert by["event.add"]["write"] and not by["item.get"]["write"]
    # every listed method exists: none answers unknown_method
    for name in names:
        try:
            client.call(name) if name not in ("sys.auth",) else None
        except RecdError as e:
            assert e.name != "unknown_method", (name, e)


def test_empty_method_name(server):
    """[0, msgid, "", []] is well-formed msgpack-RPC naming no method: either
    unknown_method (connection kept), or protocol_error and the connection
    is closed, as protocol.md says of protocol_error."""
    s = server.raw()
    try:
        s.sendall(pack([0, 5, "", []]))
        unp = msgpack.Unpacker(raw=False, strict_map_key=False)
        unp.feed(s.recv(4096))
        msg = next(unp)
        if msg[0] == 1 and msg[2]["name"] == "unknown_method":
            s.sendall(pack([0, 6, "sys.ping", []]))
            unp.feed(s.recv(4096))
            assert next(unp) == [1, 6, None, "pong"]
        else:
            assert msg[0] == 2 and msg[2][0]["name"] == "protocol_error", msg
            assert_close_with_error(s)
    finally:
        s.close()
    assert_server_up(server)


def test_id_over_255_bytes(client):
    i = "x" * 256
    with pytest.raises(RecdError) as ei:
        client.call("item.put", {"id": i})
    assert ei.value.name in ("invalid_params", "too_large") and "id" in ei.value.message
    assert client.call("item.put", {"id": "y" * 255}) == 1
    assert client.call("item.get", "y" * 255)["id"] == "y" * 255


@pytest.mark.parametrize("method,params,field", [
    ("item.put", [{}], "id"),
    ("item.put", [{"id": ""}], "id"),
    ("item.get", [], "id"),
    ("user.get", [], "id"),
    ("user.put", [{"props": {}}], "id"),
    ("event.add", [{"item": "i", "type": "click"}], "user"),
    ("event.add", [{"user": "u", "type": "click"}], "item"),
    ("event.add", [{"user": "u", "item": "i"}], "type"),
    ("event.add", [{"user": "u", "item": "i", "type": ""}], "type"),
    ("event.add", [{"user": "u", "item": "i", "type": "t" * 64}], "type"),
    ("rec.recommend", [{}], "user"),
    ("rec.similar", [{}], "item"),
    ("item.put", [{"id": "x", "vectors": {"e2e-empty-vector": []}}], "vector"),
])
def test_invalid_params_names_field(client, method, params, field):
    e = expect_error(client, "invalid_params", method, *params)
    assert field in e.message, "message %r does not name %r" % (e.message, field)


@pytest.mark.parametrize("method,params", [
    ("item.get", [[1, 2]]),
    ("item.get", [1.5]),
    ("item.get", [True]),
    ("item.put", ["x"]),
    ("item.put", [{"id": "x", "props": 5}]),
    ("item.put", [{"id": "x", "vectors": [1.0, 2.0]}]),
    ("item.put", [{"id": "x", "vectors": {"content": [1.0, "a"]}}]),
    ("item.put", [{"id": "x", "vectors": {"content": "abcd"}}]),
    ("item.put", [{"id": "x", "active": "yes"}]),
    ("event.add", [{"user": "u", "item": "i", "type": 5}]),
    ("event.add", [{"user": "u", "item": "i", "type": "click", "ts": "now"}]),
    ("event.add", [{"user": {"a": 1}, "item": "i", "type": "click"}]),
    ("rec.recommend", ["u"]),
    ("rec.recommend", [{"user": "u", "n": "ten"}]),
    ("rec.recommend", [{"user": "u", "exclude": "i"}]),
    ("rec.recommend", [{"user": "u", "n": 2.5}]),
])
def test_wrong_type(client, method, params):
    expect_error(client, "invalid_params", method, *params)


def test_not_found_similar(client):
    expect_error(client, "not_found", "rec.similar", {"item": uid("ghost")})
    expect_error(client, "not_found", "rec.similar", {"item": 123456789012345})


def test_dimension_mismatch(client):
    space = uid("dim")
    client.call("item.put", {"id": uid("d"), "vectors": {space: [1.0, 2.0, 3.0]}})
    bad = uid("d")
    expect_error(client, "dimension_mismatch", "item.put", {"id": bad, "vectors": {space: [1.0, 2.0]}})
    expect_error(client, "dimension_mismatch", "item.put",
                 {"id": bad, "vectors": {space: f32([1.0, 2.0, 3.0, 4.0])}})
    expect_error(client, "dimension_mismatch", "user.put", {"id": uid("du"), "vectors": {space: [1.0]}})
    assert client.call("item.get", bad) is None


def test_dimension_mismatch_within_one_batch(client):
    space = uid("dim")
    a, b = uid("d"), uid("d")
    expect_error(client, "dimension_mismatch", "item.put",
                 {"id": a, "vectors": {space: [1.0, 2.0]}}, {"id": b, "vectors": {space: [1.0, 2.0, 3.0]}})
    assert client.call("item.get", a) is None and client.call("item.get", b) is None


@pytest.mark.parametrize("vec", [
    [1.0, float("nan"), 0.0],
    [float("inf"), 0.0, 0.0],
    [0.0, 0.0, float("-inf")],
    struct.pack("<3f", 1.0, float("nan"), 0.0),
    struct.pack("<3f", 1.0, 0.0, float("inf")),
    [1e300, 0.0, 0.0],          # finite as a double, infinite as float32
], ids=["nan", "inf", "-inf", "bin-nan", "bin-inf", "overflow-f32"])
def test_non_finite(client, vec):
    i = uid("nf")
    expect_error(client, "non_finite", "item.put", {"id": i, "vectors": {uid("nfs"): vec}})
    assert client.call("item.get", i) is None


@pytest.mark.parametrize("n", [-1, 0, 1001, 100000])
@pytest.mark.parametrize("method", ["rec.recommend", "rec.similar"])
def test_out_of_range(client, method, n):
    i = uid("or")
    client.call("item.put", {"id": i, "vectors": {uid("ors"): [1.0, 0.0]}})
    arg = {"user": uid("oru")} if method == "rec.recommend" else {"item": i}
    arg["n"] = n
    e = expect_error(client, "out_of_range", method, arg)
    assert "n" in e.message


def test_batch_item_put_one_bad_stores_nothing(client):
    space = uid("bt")
    good = [uid("bg") for _ in range(3)]
    items = [{"id": g, "props": {"ok": True}, "vectors": {space: [1.0, 0.0]}} for g in good]
    before = info(client)
    for bad in ({"id": uid("bb"), "vectors": {space: [float("nan"), 1.0]}},
                {"id": uid("bb"), "vectors": {space: [1.0, 2.0, 3.0]}},
                {"props": {"no": "id"}},
                {"id": uid("bb"), "props": "not a map"}):
        with pytest.raises(RecdError):
            client.call("item.put", *(items[:2] + [bad] + items[2:]))
        for g in good:
            assert client.call("item.get", g) is None, "batch was partly applied"
    assert info(client)["items"] == before["items"]
    assert client.call("item.put", *items) == 3


def test_batch_event_add_one_bad_stores_nothing(client):
    u = uid("be")
    before = info(client)
    expect_error(client, "invalid_params", "event.add",
                 {"user": u, "item": uid("it"), "type": "click"},
                 {"user": u, "item": uid("it")})
    assert client.call("user.get", u) is None
    after = info(client)
    assert (after["events"], after["users"], after["items"]) == \
        (before["events"], before["users"], before["items"])


# --------------------------------------------------------------- pipelining

def test_pipeline_1000_mixed(client):
    u = uid("pl")
    items = {}
    msgids = random.sample(range(1, 2 ** 32 - 1), 998) + [0, 2 ** 32 - 1]
    random.shuffle(msgids)
    expected, buf = [], []
    for k, mid in enumerate(msgids):
        if k % 3 == 0:
            buf.append(pack([0, mid, "sys.ping", []]))
            expected.append((mid, "pong"))
        elif k % 3 == 1:
            items[k] = "%s-i%d" % (u, k)
            buf.append(pack([0, mid, "event.add", [{"user": u, "item": items[k], "type": "view"}]]))
            expected.append((mid, 1))
        else:
            buf.append(pack([0, mid, "item.get", [items[k - 1]]]))
            expected.append((mid, ("item", items[k - 1])))
    sender = threading.Thread(target=client.send_raw, args=(b"".join(buf),))
    sender.start()
    replies = [client.recv() for _ in msgids]
    sender.join()
    got = {mid: (err, res) for mid, err, res in replies}
    assert len(got) == 1000, "duplicate or missing msgids"
    assert [r[0] for r in replies] == msgids, "responses must come in request order"
    for mid, want in expected:
        err, res = got[mid]
        assert err is None, err
        if isinstance(want, tuple):
            assert res is not None and res["id"] == want[1], "item.get did not see the event's item"
        else:
            assert res == want
    assert len(client.call("user.get", u, 400)["history"]) == 333


def test_client_pipeline_helper(client):
    i = uid("ph")
    res = client.pipeline([("item.put", [{"id": i}]), ("item.get", [i]), ("sys.ping", []),
                           ("no.such", []), ("item.delete", [i])], raise_errors=False)
    assert res[0] == 1 and res[1]["id"] == i and res[2] == "pong" and res[4] == 1
    assert isinstance(res[3], RecdError) and res[3].name == "unknown_method"
    with pytest.raises(RecdError):
        client.pipeline([("sys.ping", []), ("no.such", [])])


def test_pipeline_over_pending_limit(server):
    """More than 1,024 requests in one write: the server stops reading at
    1,024 waiting answers and must resume (including requests it has
    already buffered) once they are written."""
    with server.connect(timeout=10) as c:
        c.send_raw(b"".join(pack([0, k, "sys.ping", []]) for k in range(1100)))
        got = []
        try:
            for _ in range(1100):
                got.append(c.recv()[0])
        except socket.timeout:
            pytest.fail("only %d of 1100 pipelined requests answered" % len(got))
        assert got == list(range(1100))


def test_backpressure_unread_replies(server):
    """5,000 requests (about 10 MB of answers) sent while the client reads
    nothing for a while: the server pauses reading, nothing is lost."""
    client = server.connect(timeout=10)
    count = 5000
    data = b"".join(pack([0, k, "sys.info", []]) for k in range(count))
    sender = threading.Thread(target=client.send_raw, args=(data,))
    sender.start()
    time.sleep(1.0)
    got = []
    try:
        for _ in range(count):
            got.append(client.recv())
    except socket.timeout:
        pytest.fail("only %d of %d pipelined requests answered" % (len(got), count))
    finally:
        sender.join(30)
        client.close()
    assert [g[0] for g in got] == list(range(count))
    assert all(g[1] is None and "methods" in g[2] for g in got)


def test_max_message_flag(make_server):
    srv = make_server(["--max-message", "4096"])
    with srv.connect() as c:
        assert c.call("item.put", {"id": "small", "props": {"s": "x" * 3000}}) == 1
    s = srv.raw()
    try:
        s.sendall(pack([0, 1, "item.put", [{"id": "big", "props": {"s": "x" * 5000}}]]))
        assert_close_with_error(s, names=("too_large",))
    finally:
        s.close()
    assert_server_up(srv)
    with srv.connect() as c:
        assert c.call("item.get", "big") is None


def test_client_vanishes_mid_pipeline(server):
    """A client that sends a pile of requests and disconnects must not hurt
    the server (replies to a closed socket: EPIPE, not SIGPIPE)."""
    for _ in range(3):
        s = server.raw()
        s.sendall(b"".join(pack([0, k, "sys.info", []]) for k in range(500)))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    s = server.raw()
    s.sendall(pack([0, 1, "sys.ping", []])[:-3])     # half a message, then gone
    s.close()
    time.sleep(0.2)
    assert_server_up(server)


def test_many_connections(server):
    errors = []

    def worker(k):
        try:
            with server.connect() as c:
                res = c.pipeline([("sys.ping", [])] * 50 + [("item.get", [uid("mc")])])
                assert res[:50] == ["pong"] * 50 and res[50] is None
        except Exception as e:           # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]


# ------------------------------------------------------------ notifications

def test_notification_event_add_is_stored(client):
    u, i = uid("nu"), uid("ni")
    client.notify("event.add", {"user": u, "item": i, "type": "click"})
    got = client.call("user.get", u)
    assert got is not None and [h["item"] for h in got["history"]] == [i]


def test_failing_notification_no_reply(client):
    before = info(client)["notification_errors"]
    client.notify("event.add", {"user": uid("nu")})           # no item, no type
    client.notify("no.such.method", 1, 2)
    client.notify("item.put", {"id": uid("nn"), "vectors": {"v": [float("nan")]}})
    assert client.call("sys.ping") == "pong"
    assert_no_more_data(client)
    assert info(client)["notification_errors"] == before + 3
    assert client.call("sys.ping") == "pong"


# ---------------------------------------------------------------- malformed

def _deep(depth):
    v = []
    for _ in range(depth):
        v = [v]
    return v


MALFORMED = {
    "garbage": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + random.Random(7).randbytes(512),
    "byte-c1": b"\xc1",
    "c1-in-request": b"\x94\x00\x01\xa8sys.ping\x91\xc1",
    "array32-4e9": b"\xdd\xff\xff\xff\xff",
    "array32-4e9-params": b"\x94\x00\x01\xa8sys.ping\xdd\xff\xff\xff\xff",
    "map32-4e9": b"\x94\x00\x01\xa8item.put\x91\xdf\xff\xff\xff\xff",
    "str32-4e9": b"\x94\x00\x01\xdb\xff\xff\xff\xff",
    "not-an-array": pack({"method": "sys.ping"}),
    "bad-type": pack([9, 1, "sys.ping", []]),
    "msgid-string": pack([0, "one", "sys.ping", []]),
    "short-request": pack([0, 1, "sys.ping"]),
    "nesting-40": pack([0, 1, "item.put", _deep(40)]),
    "string-over-1mib": pack([0, 1, "item.put", [{"id": "big", "props": {"s": "x" * (1 << 20 | 16)}}]]),
    "message-over-4mib": pack([0, 1, "item.put", [{"id": "big", "props": {
        "b%d" % k: b"\0" * (900 << 10) for k in range(5)}}]]),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_stream(server, name):
    data = MALFORMED[name]
    with server.connect() as bystander:
        bystander.call("sys.ping")
        s = server.raw()
        try:
            # garbage after a valid request: the request is answered first
            s.sendall(pack([0, 77, "sys.ping", []]))
            assert msgpack.unpackb(s.recv(64)) == [1, 77, None, "pong"]
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass                   # closed before all of it was read: fine
            assert_close_with_error(s)
        finally:
            s.close()
        assert bystander.call("sys.ping") == "pong", "another connection was hurt"
    assert_server_up(server)


# -------------------------------------------------------------- unix socket

def test_unix_socket(server):
    st = os.stat(server.unix)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    i = uid("ux")
    with server.connect(unix=True) as c:
        assert c.call("sys.ping") == "pong"
        assert c.call("item.put", {"id": i, "props": {"via": "unix"}}) == 1
    with server.connect() as c:
        assert c.call("item.get", i)["props"] == {"via": "unix"}


# --------------------------------------------------------------------- auth

TOKEN = "s3cret-t0ken-for-e2e"


@pytest.fixture
def auth_server(make_server, tmp_path):
    tok = tmp_path / "token"
    tok.write_text(TOKEN)
    os.chmod(tok, 0o600)
    return make_server(["--auth-token", str(tok)])


def test_auth_required_over_tcp(auth_server):
    with auth_server.connect() as c:
        assert c.call("sys.ping") == "pong"
        h = c.call("sys.hello")
        assert h["auth_required"] is True and h["server"] == "recd"
        expect_error(c, "unauthorized", "item.get", "x")
        expect_error(c, "unauthorized", "event.add", {"user": "u", "item": "i", "type": "click"})
        expect_error(c, "unauthorized", "sys.info")
        expect_error(c, "unauthorized", "sys.auth", TOKEN + "x")
        assert c.call("sys.auth", TOKEN) is True
        assert c.call("item.get", "x") is None
        assert c.call("item.put", {"id": "x"}) == 1


def test_auth_third_wrong_token_closes(auth_server):
    with auth_server.connect() as c:
        expect_error(c, "unauthorized", "sys.auth", "wrong1")
        expect_error(c, "unauthorized", "sys.auth", "wrong2")
        c.send("sys.auth", "wrong3")
        msgs, closed = read_until_close(c.sock)
        assert closed, "third wrong token must close the connection (got %r)" % msgs
        for m in msgs:                 # an unauthorized answer before closing is fine
            assert m[0] in (1, 2) and "unauthorized" in repr(m), m
    with auth_server.connect() as c:   # a new connection starts afresh
        assert c.call("sys.auth", TOKEN) is True
        assert c.call("sys.ping") == "pong"


def test_auth_unix_socket_trusted(auth_server):
    with auth_server.connect(unix=True) as c:
        assert c.call("item.put", {"id": "u1"}) == 1
        assert c.call("item.get", "u1")["id"] == "u1"
        assert "methods" in c.call("sys.info")


# ----------------------------------------------------- restart and shutdown

def test_restart_keeps_data(make_server):
    srv = make_server()
    with srv.connect() as c:
        c.call("item.put", {"id": "m1", "props": {"t": "one"}, "vectors": {"content": [1.0, 0.0, 0.0]}},
               {"id": "m2", "props": {"t": "two"}, "vectors": {"content": [0.9, 0.1, 0.0]}},
               {"id": 3, "vectors": {"content": f32([0.0, 1.0, 0.0])}, "active": False})
        c.call("user.put", {"id": "alice", "props": {"age": 30}})
        c.call("event.add", {"user": "alice", "item": "m1", "type": "click", "ts": 1600000000},
               {"user": "alice", "item": "m2", "type": "purchase", "ts": 1600000100})
        c.notify("event.add", {"user": "bob", "item": "m1", "type": "view", "ts": 1600000200})
        c.call("sys.ping")
        items = [c.call("item.get", i) for i in ("m1", "m2", 3)]
        alice, bob = c.call("user.get", "alice"), c.call("user.get", "bob")
        counts = info(c)
    srv.restart()
    with srv.connect() as c:
        assert [c.call("item.get", i) for i in ("m1", "m2", 3)] == items
        assert c.call("item.get", 3)["active"] is False
        assert c.call("user.get", "alice") == alice
        assert [h["item"] for h in alice["history"]] == ["m2", "m1"]
        assert c.call("user.get", "bob") == bob and bob["history"][0]["item"] == "m1"
        again = info(c)
        for key in ("items", "users", "events"):
            assert again[key] == counts[key], key
        assert ids(c.call("rec.similar", {"item": "m1"})) == ["m2"]


def test_sigterm_during_pipelined_writes(make_server):
    srv = make_server()
    acked, failures = [], []
    started = threading.Event()

    def writer():
        try:
            with srv.connect(timeout=20) as c:
                pending = {}
                k = 0
                while True:
                    while len(pending) < 32:
                        pending[c.send("event.add", {"user": "gs-u%d" % k, "item": "gs-%d" % k,
                                                      "type": "click"})] = k
                        k += 1
                    mid, err, res = c.recv()
                    kk = pending.pop(mid)
                    if err is None and res == 1:
                        acked.append(kk)
                    if len(acked) >= 200:
                        started.set()
        except (OSError, RecdError) as e:
            failures.append(e)
        finally:
            started.set()

    t = threading.Thread(target=writer)
    t.start()
    assert started.wait(60), "no acknowledgements"
    srv.signal(signal.SIGTERM)
    try:
        rc = srv.proc.wait(10)
    except Exception:
        srv.kill()
        raise AssertionError("recd did not exit within 10 s of SIGTERM:\n" + srv.log())
    t.join(30)
    assert rc == 0, "exit code %r:\n%s" % (rc, srv.log())
    assert len(acked) >= 200, failures
    print("acked %d, writer ended with %r" % (len(acked), failures))
    srv.start()
    with srv.connect() as c:
        got = c.pipeline([("user.get", ["gs-u%d" % k]) for k in acked])
        missing = [k for k, g in zip(acked, got)
                   if g is None or [h["item"] for h in g["history"]] != ["gs-%d" % k]]
        assert not missing, "%d acknowledged events lost, e.g. %r" % (len(missing), missing[:5])
        assert info(c)["events"] >= len(acked)


def test_sigterm_with_idle_and_partial_connections(make_server):
    """Connections that say nothing, or stop halfway through a message, do
    not hold up a clean shutdown."""
    srv = make_server()
    idle = srv.connect()
    unix_idle = srv.connect(unix=True)
    partial = srv.raw()
    partial.sendall(pack([0, 1, "item.put", [{"id": "p", "props": {"s": "x" * 100}}]])[:40])
    t0 = time.monotonic()
    rc = srv.stop()
    assert rc == 0, "exit code %r:\n%s" % (rc, srv.log())
    assert time.monotonic() - t0 < 10
    for c in (idle, unix_idle):
        c.close()
    partial.close()
    srv.start()
    with srv.connect() as c:
        assert c.call("item.get", "p") is None


def test_preview_is_answered_but_not_recorded(make_server):
    """rec.recommend {record = false} on the built-in pipeline: the same
    answer shape, nothing counted as shown; a wrong type is refused."""
    srv = make_server()
    c = srv.connect()
    c.call("event.add", *[{"user": "pv%d" % u, "item": "pi%d" % (u + k), "type": "click"}
                          for u in range(5) for k in range(3)])

    def shown():
        pipes = c.call("stats.get")["pipelines"]
        return pipes.get("builtin", {}).get("total", {}).get("impressions", 0)

    r = c.call("rec.recommend", {"user": "pv1", "n": 3, "record": False})
    assert r["pipeline"] == "builtin" and len(r["items"]) == 3 and r["rec_id"]
    assert shown() == 0
    c.call("rec.recommend", {"user": "pv1", "n": 3})
    assert shown() == 3
    for bad in ("no", 0, [True]):  # nil means "not given", as everywhere
        with pytest.raises(RecdError) as ei:
            c.call("rec.recommend", {"user": "pv1", "record": bad})
        assert ei.value.name == "invalid_params" and "record" in str(ei.value)
    c.close()


def test_strict_events_refuse_typos_and_unknown_items(make_server):
    """A typo in an event type or an item id is stored silently unless the
    event (or the server, --strict) asks for strictness; sys.info counts
    what events created either way."""
    srv = make_server()
    with srv.connect() as c:
        c.call("item.put", {"id": "st-known"})
        before = c.call("sys.info")["created_by_events"]
        e = expect_error(c, "invalid_params", "event.add",
                         {"user": "su", "item": "st-known", "type": "clik", "strict": True})
        assert "'clik' is not a known event type" in e.message, e.message
        e = expect_error(c, "not_found", "event.add",
                         {"user": "su", "item": "st-nosuch", "type": "click", "strict": True})
        assert "params[0].item is not in the catalogue" in e.message, e.message
        e = expect_error(c, "invalid_params", "event.add",
                         {"user": "su", "item": "st-known", "type": "click", "strict": 1})
        assert "strict must be true or false" in e.message
        assert c.call("sys.info")["created_by_events"] == before
        # not strict: stored, and counted
        assert c.call("event.add", {"user": "su", "item": "st-new", "type": "clik"}) == 1
        after = c.call("sys.info")["created_by_events"]
        assert after == {"items": before["items"] + 1, "types": before["types"] + 1}
    srv.stop_ok()
    strict = make_server(extra_args=["--strict"])
    with strict.connect() as c:
        c.call("item.put", {"id": "st-known"})
        expect_error(c, "not_found", "event.add", {"user": "su", "item": "st-x", "type": "click"})
        assert c.call("event.add", {"user": "su", "item": "st-known", "type": "click"}) == 1
        # an event may opt out of the server's default
        assert c.call("event.add", {"user": "su", "item": "st-x", "type": "click",
                                    "strict": False}) == 1
        assert c.call("sys.info")["created_by_events"]["items"] == 1
