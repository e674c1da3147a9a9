"""Library calls cannot hold the server: one call into the string, table or
utf8 library is charged to the script's budget (core/engine/sandbox.c), so
admin.eval of a pathological pattern fails with a budget error and other
clients are answered meanwhile. With the stock library the first case held
the loop thread for minutes and sys.ping went unanswered."""
import pytest

from recd_client import RecdError

EXAMPLE = 'local s = string.rep("a", 20000) return string.find(s, ".-.-.-b")'

# (code, a word the error must contain): each the worst input of one function
WORST = [
    (EXAMPLE, "budget exceeded"),
    ('local s = ("a"):rep(20000) return s:match(".-.-.-b")', "budget exceeded"),
    ('local s = ("a"):rep(20000) for _ in s:gmatch(".-.-.-b") do end', "budget exceeded"),
    ('local s = ("a"):rep(20000) return (s:gsub(".-.-.-b", ""))', "budget exceeded"),
    ('local s = ("("):rep(100000) return s:find("%b()")', "budget exceeded"),
    ('return #string.rep("x", 2e9)', "memory budget exceeded"),
    ('local s = ("x"):rep(1e6) return #string.format(("%s"):rep(99), '
     + ", ".join(["s"] * 99) + ")", "memory budget exceeded"),
    ('return table.move({}, 1, 1 << 40, 1)', "budget exceeded"),
    ('local t = setmetatable({}, {__index = function() return "" end}) '
     'return #table.concat(t, ("-"):rep(100), 1, 1e8)', "memory budget exceeded"),
    ('local t = {} for i = 1, 100 do t[i] = i % 3 end '
     'table.sort(t, function(a, b) return true end)', "invalid order function"),
    ('local s = ("\\x80"):rep(1 << 22) local f = utf8.codes("a") '
     'for i = 1, 1e6 do f(s, 0) end', "budget exceeded"),
    ('local s = ("a"):rep(1 << 22) while true do local u = s:upper() end', "budget exceeded"),
    ('local s = ("a"):rep(3e7) while true do local t = s .. "x" end', "budget exceeded"),
]


def test_admin_eval_pattern_bomb_fails_fast_and_others_are_answered(make_server):
    srv = make_server()
    with srv.connect(unix=True) as admin, srv.connect() as other:
        msgid = admin.send("admin.eval", EXAMPLE)
        # answered while (or right after) the eval runs: the loop is not held
        assert other.call("sys.ping") is not None
        rid, err, _ = admin.recv()
        assert rid == msgid
        assert err is not None and err.name == "script_error"
        assert "budget exceeded" in err.message, err.message
        assert "console:1:" in err.message
        # the session and the server keep working
        assert admin.call("admin.eval", 'return ("k=v"):match("^(%w+)=(%w+)$")') == ["k", "v"]


@pytest.mark.parametrize("code,word", WORST)
def test_library_worst_inputs_fail_with_budget_errors(make_server, code, word):
    srv = make_server()
    with srv.connect(unix=True) as admin, srv.connect() as other:
        with pytest.raises(RecdError) as ei:
            admin.call("admin.eval", code)
        assert ei.value.name == "script_error"
        assert word in ei.value.message, ei.value.message
        assert other.call("sys.ping") is not None
        assert admin.call("admin.eval", "1 + 1") == [2]
