#!/usr/bin/python3
"""make_corpus.py - write the seed corpora of the msgpack fuzzers.

    /usr/bin/python3 tests/fuzz/make_corpus.py

Rewrites tests/fuzz/corpus/rpc/seed_* and tests/fuzz/corpus/lua/seed_*
(needs python3-msgpack). Files without the seed_ prefix are inputs the
fuzzers found (crashes turned regression tests): they are kept as they are.
"""
import os
import struct
import sys

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))


def pk(obj, **kw):
    return msgpack.packb(obj, use_bin_type=True, **kw)


def nest_array(depth, leaf=1):
    b = pk(leaf)
    return b"\x91" * depth + b


def nest_map(depth, leaf=1):
    """{"k": {"k": ... leaf}} with `depth` maps."""
    v = leaf
    for _ in range(depth):
        v = {"k": v}
    return pk(v)


# One value of every msgpack format, in the smallest and the widest forms.
EVERY_TYPE = b"".join([
    b"\xdc\x00\x10",  # array16 of the 16 elements below
    b"\x00", b"\x7f", b"\xe0", b"\xff",           # fixint
    b"\xc0", b"\xc2", b"\xc3",                    # nil false true
    b"\xcc\xff", b"\xcd\xff\xff", b"\xce\xff\xff\xff\xff",
    b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",      # uint64 max (becomes a float)
    b"\xd0\x80", b"\xd1\x80\x00", b"\xd2\x80\x00\x00\x00",
    b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00",      # int64 min
    b"\xca" + struct.pack(">f", 1.5),
])
EVERY_TYPE_2 = b"".join([
    b"\x9c",  # fixarray of 12 elements
    b"\xcb" + struct.pack(">d", -0.0),
    b"\xa3abc", b"\xd9\x03abc", b"\xda\x00\x03abc", b"\xdb\x00\x00\x00\x03abc",
    b"\xc4\x02\x00\xff", b"\xc5\x00\x02\x00\xff", b"\xc6\x00\x00\x00\x02\x00\xff",
    b"\xdc\x00\x01\x01", b"\xdd\x00\x00\x00\x01\x01",
    b"\xde\x00\x01\xa1a\x01", b"\xdf\x00\x00\x00\x01\xa1b\x02",
])
EXTS = b"".join([
    b"\x97",
    b"\xd4\x01\x00", b"\xd5\x01" + b"\x00" * 2, b"\xd6\xff" + b"\x00" * 4,
    b"\xd7\x01" + b"\x00" * 8, b"\xd8\x01" + b"\x00" * 16,
    b"\xc7\x01\x05\x00", b"\xc8\x00\x01\x05\x00",
])

# Headers msgpack-c would trust: each claims far more than is there.
HAZARDS = {
    "array32_4g": b"\xdd\xff\xff\xff\xff",
    "map32_4g": b"\xdf\xff\xff\xff\xff",
    "str32_4g": b"\xdb\xff\xff\xff\xffabc",
    "bin32_4g": b"\xc6\xff\xff\xff\xff\x00",
    "ext32_4g": b"\xc9\xff\xff\xff\xff\x01\x00",
    "reserved_c1": b"\xc1",
    "c1_in_array": b"\x93\x01\xc1\x02",
    "deep_300": b"\x91" * 300 + b"\x01",
    "deep_maps_40": b"\x81\x01" * 40 + b"\x01",
    "truncated_header": b"\xdd\x00\x00",
    "nested_claims": b"\x94\xdd\x7f\xff\xff\xff\xdf\x7f\xff\xff\xff",
}


def rpc_seeds():
    s = {}
    req = lambda i, m, p: pk([0, i, m, p])
    s["ping"] = req(1, "sys.ping", [])
    s["item_put"] = req(4, "item.put", [
        {"id": "i1", "props": {"title": "A", "tags": ["x", "y"], "price": 9.5},
         "active": True, "vectors": {"emb": [0.1, 0.2, 0.3, 0.4]}},
        {"id": 42, "props": {}}])
    s["item_get"] = req(5, "item.get", ["i1", 42])
    s["event_add"] = req(7, "event.add", [
        {"user": "u1", "item": "i1", "type": "view", "value": 1.0,
         "ts": 1700000000, "rec_id": "r1"}])
    s["recommend"] = req(8, "rec.recommend", ["u1", 10, {"seen_by": "u1"}])
    s["eval"] = req(10, "admin.eval", ["return 1 + 1"])
    s["stats"] = req(4294967295, "stats.get", [])
    s["notify"] = pk([2, "event.add", [{"user": "u", "item": "i", "type": "buy"}]])
    # Several messages in one read, the last one cut short.
    s["pipeline"] = (req(11, "sys.ping", []) + pk([2, "sys.ping", []]) +
                     req(12, "item.get", ["i1"]) + req(13, "sys.ping", [])[:-1])
    # Refused shapes, each followed by a valid request (skippable refusals).
    s["response_then_req"] = pk([1, 1, None, "x"]) + req(14, "sys.ping", [])
    s["not_array_then_req"] = pk({"a": 1}) + req(15, "sys.ping", [])
    s["short_request"] = pk([0, 1, "sys.ping"]) + req(16, "sys.ping", [])
    s["msgid_too_big"] = pk([0, 1 << 32, "sys.ping", []])
    s["empty_method"] = pk([0, 1, "", []])
    s["long_method"] = pk([0, 1, "m" * 65, []])
    s["method_bin"] = pk([0, 1, b"sys.ping", []])
    s["params_map"] = pk([0, 1, "sys.ping", {"a": 1}])
    s["type_3"] = pk([3, 1, "sys.ping", []])
    # [0, msgid, "item.put", [...]] around raw bytes python cannot pack.
    put = lambda i, n: b"\x94" + pk(i) + pk("item.put") + bytes([0x90 + n])
    s["every_type"] = put(17, 2) + EVERY_TYPE + EVERY_TYPE_2
    s["exts"] = put(18, 1) + EXTS
    # The message and params arrays are two levels: 30 maps reach the
    # default max_depth of 32, 31 maps exceed it.
    s["nested_depth_32"] = put(19, 1) + nest_map(30)
    s["nested_depth_33"] = put(20, 1) + nest_map(31)
    for name, h in HAZARDS.items():
        s["hazard_" + name] = h
    # The same hazards as params of a request.
    s["req_array32_4g"] = b"\x94\x00\x01\xa8sys.ping" + HAZARDS["array32_4g"]
    s["req_str32_4g"] = b"\x94\x00\x01\xa8sys.ping\x91" + HAZARDS["str32_4g"]
    return s


def lua_seeds():
    s = {}
    s["every_type"] = EVERY_TYPE
    s["every_type_2"] = EVERY_TYPE_2
    s["exts"] = EXTS
    s["map_mixed_keys"] = pk({"s": 1, 2: "two", -3: [1, 2], 1.5: True,
                              True: None, False: {"x": b"\x00bin"}})
    s["array_holes"] = pk([1, None, 3, None])
    s["empty"] = b"\x90\x80"  # empty array, then trailing bytes
    s["table_key"] = b"\x81\x80\x01"
    s["nested_table_key"] = b"\x82\xa1a\x81\x92\x01\x02\xc3\xa1b\x90"
    s["nil_key"] = b"\x81\xc0\x01"
    s["nan_key"] = b"\x81\xcb" + struct.pack(">d", float("nan")) + b"\x01"
    s["float_int_key"] = b"\x82\xcb" + struct.pack(">d", 2.0) + b"\x01\x02\x02"
    s["neg_zero_key"] = b"\x81\xcb" + struct.pack(">d", -0.0) + b"\xa1z"
    s["inf_values"] = pk([float("inf"), float("-inf"), 1e308, 5e-324])
    s["int_bounds"] = pk([2**63 - 1, -2**63, 2**64 - 1, 2**32, -2**31 - 1])
    s["strings"] = pk(["", "x" * 31, "y" * 32, "z" * 300, b"", b"\xff" * 256])
    s["depth_32"] = nest_array(31, [1])
    s["depth_33"] = nest_array(32, [1])
    s["maps_depth_32"] = nest_map(32)
    s["trailing"] = pk(1) + pk(2)
    s["truncated"] = pk({"a": [1, 2, 3]})[:-1]
    for name in ("array32_4g", "map32_4g", "str32_4g", "ext32_4g",
                 "deep_300"):
        s["hazard_" + name] = HAZARDS[name]
    return s


def write(dirname, seeds):
    d = os.path.join(HERE, "corpus", dirname)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if f.startswith("seed_"):
            os.remove(os.path.join(d, f))
    for name, data in sorted(seeds.items()):
        assert len(data) < 4096, name
        with open(os.path.join(d, "seed_" + name), "wb") as fh:
            fh.write(data)
    return len(seeds)


def main():
    n = write("rpc", rpc_seeds()) + write("lua", lua_seeds())
    print("wrote %d seeds" % n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
