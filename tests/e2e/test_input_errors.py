"""One mistake, one message: the protocol and the Lua module read events,
ids, vectors and `active` through the same checks (core/engine/input.c), so
a bad value is refused in the same words by `event.add` over the socket and
by `db:event` in a script or the REPL. The protocol puts the position in
front ("params[0].item is missing")."""
import subprocess

import pytest

from conftest import RECD_BIN
from recd_client import RecdError

# (method, wire params[0], Lua call on db, error name, message)
CASES = [
    ("event.add", {"user": "u"}, "event",
     "invalid_params", "item is missing"),
    ("event.add", {"item": "i", "type": "view"}, "event",
     "invalid_params", "user is missing"),
    ("event.add", {"user": "u", "item": "i"}, "event",
     "invalid_params", "type is missing"),
    ("event.add", {"user": "u", "item": "i", "type": 3}, "event",
     "invalid_params", "type must be a string, got an integer"),
    ("event.add", {"user": "u", "item": "i", "type": "a/b"}, "event",
     "invalid_params", "type must be 1..63 bytes, without control characters or '/'"),
    ("event.add", {"user": "u", "item": "i", "type": "x" * 64}, "event",
     "invalid_params", "type must be 1..63 bytes, without control characters or '/'"),
    ("event.add", {"user": [1], "item": "i", "type": "view"}, "event",
     "invalid_params", None),   # an array / a table: the kind named differs
    ("event.add", {"user": "", "item": "i", "type": "view"}, "event",
     "invalid_params", "user must be a non-empty string of valid UTF-8"),
    ("event.add", {"user": "u" * 300, "item": "i", "type": "view"}, "event",
     "too_large", "user is longer than 255 bytes"),
    ("event.add", {"user": "u", "item": 1.5, "type": "view"}, "event",
     "invalid_params", "item must be a string or an integer, got a float"),
    ("event.add", {"user": "u", "item": "i", "type": "view", "value": "x"}, "event",
     "invalid_params", "value must be a finite number, got a string"),
    ("event.add", {"user": "u", "item": "i", "type": "view", "ts": -5}, "event",
     "out_of_range", "ts must be seconds since the epoch (0 < ts < 1e11)"),
    ("event.add", {"user": "u", "item": "i", "type": "view", "ts": "now"}, "event",
     "invalid_params", "ts must be a number, got a string"),
    ("event.add", {"user": "u", "item": "i", "type": "view", "rec_id": 7}, "event",
     "invalid_params", "rec_id must be a string of up to 255 bytes, got an integer"),
    ("event.add", {"user": "u", "item": "i", "type": "view", "rec_id": "r" * 256}, "event",
     "too_large", "rec_id must be a string of up to 255 bytes"),
    ("event.add", {"user": "u", "item": "i", "type": "view", "strict": 1}, "event",
     "invalid_params", "strict must be true or false, got an integer"),
    ("event.add", {"user": "u", "item": "nosuch", "type": "view", "strict": True}, "event",
     "not_found", "item is not in the catalogue (strict: item.put it first)"),
    ("event.add", {"user": "u", "item": "i", "type": "clik", "strict": True}, "event",
     "invalid_params", "type 'clik' is not a known event type (strict; known types are "
     "set in pipelines.lua's event_weights)"),
    ("user.put", {"id": "x", "active": True}, "user_put",
     "invalid_params", "active must be true or false (items only)"),
    ("item.put", {"id": "x", "active": "yes"}, "item_put",
     "invalid_params", "active must be true or false (items only)"),
    ("item.put", {"id": "x", "vectors": {"e": [1, "a"]}}, "item_put",
     "invalid_params", "vector for 'e': element 2 is not a number"),
    ("item.put", {"id": "x", "vectors": {"e": []}}, "item_put",
     "invalid_params", "vector for 'e' has 0 elements; 1..4096 allowed"),
]


def lua_literal(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"%s"' % v.replace("\\", "\\\\").replace('"', '\\"')
    if isinstance(v, list):
        return "{%s}" % ", ".join(lua_literal(x) for x in v)
    return "{%s}" % ", ".join("[%s] = %s" % (lua_literal(k), lua_literal(x))
                              for k, x in v.items())


def wire_error(client, method, param):
    with pytest.raises(RecdError) as e:
        client.call(method, param)
    return e.value.name, e.value.message


def lua_errors(tmp_path):
    """Each case through the Lua module: (name, message) per case."""
    lines = ['local recd = require "recd"',
             'local db = recd.open(arg[1])',
             'db:item_put{id = "i"}',
             'db:event{user = "seed", item = "i", type = "view"}']
    for _, param, fn, _, _ in CASES:
        lines.append('do local ok, err = pcall(db.%s, db, %s)\n'
                     '  assert(not ok, "accepted")\n'
                     '  io.write(err.name, "\\t", err.message, "\\n") end'
                     % (fn, lua_literal(param)))
    script = tmp_path / "cases.lua"
    script.write_text("\n".join(lines) + "\n")
    r = subprocess.run([RECD_BIN, "lua", str(script), str(tmp_path / "db")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = [tuple(l.split("\t", 1)) for l in r.stdout.splitlines()]
    assert len(out) == len(CASES), r.stdout
    return out


def test_the_protocol_and_the_lua_module_say_the_same(client, tmp_path):
    client.call("item.put", {"id": "i"})
    client.call("event.add", {"user": "seed", "item": "i", "type": "view"})
    from_lua = lua_errors(tmp_path)
    for (method, param, _, name, message), (lname, lmsg) in zip(CASES, from_lua):
        wname, wmsg = wire_error(client, method, param)
        assert wmsg.startswith(("params[0].", "params[0]: ")), (method, param, wmsg)
        wmsg = wmsg[len("params[0]."):].lstrip(" ")
        assert (wname, wmsg) == (lname, lmsg) or message is None, (param, wmsg, lmsg)
        assert wname == name == lname, (param, wname, lname)
        if message is not None:
            assert wmsg == message, (param, wmsg)
        else:  # the same sentence up to the name of the value's kind
            assert wmsg.rsplit(", got ", 1)[0] == lmsg.rsplit(", got ", 1)[0], (wmsg, lmsg)


def test_a_refused_event_is_not_stored(client):
    """The checks run before anything is applied: a batch with one bad
    event stores none of them."""
    before = client.call("user.get", "batch-u")
    with pytest.raises(RecdError) as e:
        client.call("event.add", {"user": "batch-u", "item": "i", "type": "view"},
                    {"user": "batch-u", "item": "i", "type": "view", "ts": 0})
    assert e.value.message.startswith("params[1].ts must be seconds since the epoch")
    assert client.call("user.get", "batch-u") == before
