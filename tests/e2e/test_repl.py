"""`recd repl` and `recd console`: piped through stdin (one result a line,
JSON for the console) and driven through a pseudo-terminal (prompts, line
editing, completion, Ctrl-C)."""
import json
import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECD_BIN = os.path.abspath(os.environ.get("RECD_BIN") or str(ROOT / "recd"))
TIMEOUT = 30.0                  # generous: sanitizer builds are slow


def env_for(tmp_path):
    env = dict(os.environ)
    env.update(HOME=str(tmp_path), TERM="dumb", INPUTRC="/dev/null")
    env.pop("RECD_TOKEN", None)
    return env


def piped(tmp_path, args, lines):
    """Run recd ARGS with LINES on stdin; returns (exit code, stdout)."""
    p = subprocess.run([RECD_BIN] + args, input="\n".join(lines) + "\n",
                       capture_output=True, text=True, timeout=TIMEOUT,
                       cwd=str(ROOT), env=env_for(tmp_path))
    return p.returncode, p.stdout + p.stderr


def repl(tmp_path, lines):
    return piped(tmp_path, ["repl", str(tmp_path / "data")], lines)


def console(tmp_path, addr, lines, rc=0):
    """The JSON answers; piped, the exit code is 1 when any line failed."""
    code, out = piped(tmp_path, ["console", addr], lines)
    assert code == rc, out
    return [json.loads(l) for l in out.splitlines() if l.strip()]


# ---- repl through a pipe -----------------------------------------------------

def test_repl_put_and_get(tmp_path):
    rc, out = repl(tmp_path, [
        'db:item_put("m1", {title = "Heat", year = 1995})',
        'db:item_get("m1")',
        'db:item_get("nope")',
    ])
    assert rc == 0, out
    lines = out.splitlines()
    assert lines[0] == "true"
    assert 'title = "Heat"' in lines[1] and "year = 1995" in lines[1]
    assert lines[2] == "nil"


def test_repl_multiline_function(tmp_path):
    rc, out = repl(tmp_path, ["function twice(x)", "  return 2 * x", "end",
                              "twice(21)", "t = {a = 1,", "  b = 2}", "t.a + t.b"])
    assert rc == 0, out
    assert out.splitlines() == ["42", "3"]


def test_repl_errors_show_the_name(tmp_path):
    rc, out = repl(tmp_path, ['db:similar("missing")', "db:item_get(nil)",
                              "x = = 1", "1 + 1"])
    assert rc == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("error: not_found:"), out
    assert lines[1].startswith("error: invalid_params:"), out
    assert lines[2].startswith("error: stdin:1:"), out
    assert lines[3] == "2"          # carries on after errors


def test_repl_time_show_and_long_arrays(tmp_path):
    rc, out = repl(tmp_path, [
        'db:item_put("m1", {title = "Heat"})',
        'db:item_put("m2", {title = "Ronin", genre = "action"})',
        r"\time 6 * 7",
        'show({{id = "m1", score = 0.5}, {id = "m2", score = 0.25}})',
        'show({{id = "m2", score = 1}}, "genre")',
        "(function() local t = {} for i = 1, 20 do t[i] = i end return t end)()",
        r"\nosuch",
    ])
    assert rc == 0, out
    assert "42" in out and "ms" in out.split("42", 1)[1].splitlines()[1]
    assert "Heat" in out and "Ronin" in out and "action" in out
    assert "{1, 2, 3, 4, 5, 6, 7, 8, ... (12 more)}" in out
    assert "unknown command" in out


def test_repl_load_feed_run_pipeline(tmp_path):
    script = tmp_path / "catalog.lua"
    script.write_text(
        'for i = 1, 6 do db:item_put("m" .. i, {title = "Film " .. i}) end\n'
        "return db:stats().items\n")
    rc, out = repl(tmp_path, [
        r"\load " + str(script),
        'feed{user = "a", item = "m1", type = "click"}',
        'feed{user = "a", item = "m2", type = "click"}',
        'feed{user = "b", item = "m1", type = "click"}',
        'hits = pipeline("b", 3)',
        "#hits > 0",
        "show(hits)",
        '#run("popular", "c", 2)',
    ])
    assert rc == 0, out
    lines = out.splitlines()
    assert lines[0] == "6", out
    assert "error" not in out, out
    assert "true" in lines
    assert "Film 2" in out          # co-occurrence: b clicked m1, a clicked m1 and m2
    assert lines[-1] == "2", out


# ---- repl through a terminal ---------------------------------------------------

class Term:
    """A process on a pseudo-terminal; read() collects the screen output."""

    def __init__(self, argv, env, cwd):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        self.out = b""
        self.status = None          # the exit code once reaped

    def send(self, data):
        os.write(self.fd, data.encode() if isinstance(data, str) else data)

    def expect(self, text, timeout=TIMEOUT):
        """Wait until TEXT appears after what earlier expects consumed."""
        want = text.encode()
        deadline = time.monotonic() + timeout
        while want not in self.out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("%r not seen; output so far:\n%r" % (text, self.out))
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError("exited before %r:\n%r" % (text, self.out))
                self.out += chunk
        i = self.out.index(want) + len(want)
        seen, self.out = self.out[:i], self.out[i:]
        return seen.decode("utf-8", "replace")

    def alive(self):
        if self.status is not None:
            return False
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid:
            self.status = os.waitstatus_to_exitcode(status)
        return pid == 0

    def close(self):
        """Ctrl-D; returns the exit status (kills it after the timeout)."""
        try:
            self.send("\x04")
        except OSError:
            pass
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if select.select([self.fd], [], [], 0.02)[0]:
                try:
                    self.out += os.read(self.fd, 4096)   # keep the terminal drained
                except OSError:
                    pass
            if not self.alive():
                os.close(self.fd)
                return self.status
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        self.status = -signal.SIGKILL
        os.close(self.fd)
        return None


@pytest.fixture
def term(tmp_path):
    terms = []

    def start(*args, **env):
        t = Term([RECD_BIN] + list(args), dict(env_for(tmp_path), **env), str(ROOT))
        terms.append(t)
        return t

    yield start
    for t in terms:
        if t.alive():
            t.close()


def start_repl(term, tmp_path):
    t = term("repl", str(tmp_path / "data"))
    t.expect("recd> ")
    return t


def test_tty_expression(term, tmp_path):
    t = start_repl(term, tmp_path)
    t.send("6 * 7\r")
    assert "42" in t.expect("recd> ")
    t.send('{1, {x = "y"}}\r')
    assert '{1, {x = "y"}}' in t.expect("recd> ")
    assert t.close() == 0
    assert (tmp_path / ".recd_history").read_text().count("6 * 7") == 1


def test_tty_history_comes_back(term, tmp_path):
    (tmp_path / ".recd_history").write_text("6 * 7\n")    # a plain-text history file
    t = start_repl(term, tmp_path)
    t.send("\x10\r")                               # Ctrl-P: the last session's line
    t.expect("42\r\n")
    t.expect("recd> ")
    t.send("2 + 3\r")
    t.expect("recd> ")
    assert t.close() == 0
    assert (tmp_path / ".recd_history").read_text().splitlines() == ["6 * 7", "6 * 7", "2 + 3"]


def test_tty_multiline_prompt(term, tmp_path):
    t = start_repl(term, tmp_path)
    t.send("function f()\r")
    t.expect("...> ")
    t.send("return 'inside'\r")
    t.expect("...> ")
    t.send("end\r")
    t.expect("recd> ")
    t.send("f()\r")
    assert "inside" in t.expect("recd> ")
    assert t.close() == 0


def type_slowly(t, line, pause=0.05):
    """Type LINE a key at a time, as a person does, then Enter."""
    for ch in line:
        t.send(ch)
        time.sleep(pause)
    t.send("\r")


def test_tty_multiline_function_typed_with_pauses(term, tmp_path):
    # Inside tmux (TERM=screen) with a pause of about a second after each
    # line, keys one at a time: each line reaches the chunk as typed.
    t = term("repl", str(tmp_path / "data"), TERM="screen")
    t.expect("recd> ")
    for line in ["function twice(x)", "  return 2*x", "end"]:
        type_slowly(t, line)
        time.sleep(0.8)
    seen = t.expect("recd> ")
    assert "...> end" in seen and "error" not in seen, seen
    type_slowly(t, "return twice(21) + 1")
    seen = t.expect("recd> ")
    assert "43\r\n" in seen and "error" not in seen, seen
    assert t.close() == 0


def test_tty_end_key_is_not_the_word_end(term, tmp_path):
    # `tmux send-keys end` sends the End key (ESC [ 4 ~), not the letters:
    # the line stays empty and the function stays open, as it should.
    # The word itself closes it, typed before or after an End key.
    t = term("repl", str(tmp_path / "data"), TERM="screen")
    t.expect("recd> ")
    type_slowly(t, "function twice(x)")
    t.expect("...> ")
    type_slowly(t, "  return 2*x")
    t.expect("...> ")
    t.send("\x1b[4~\r")
    t.expect("...> ")
    t.send("en\x1b[4~d\x1bOF\r")
    t.expect("recd> ")
    t.send("return twice(21) + 1\r")
    seen = t.expect("recd> ")
    assert "43\r\n" in seen and "error" not in seen, seen
    assert t.close() == 0


def test_tty_completes_db_methods(term, tmp_path):
    t = start_repl(term, tmp_path)
    t.send("db:sim\t")
    t.expect("db:similar")
    t.send('("x")\r')
    assert "not_found" in t.expect("recd> ")
    t.send("db:item_g\t")
    t.expect("db:item_get")
    t.send('("x")\r')
    assert "nil" in t.expect("recd> ")
    assert t.close() == 0


def test_tty_ctrl_c_clears_the_line(term, tmp_path):
    t = start_repl(term, tmp_path)
    t.send("this is not lua")
    t.expect("not lua")
    t.send("\x03")
    t.expect("recd> ")
    t.send("function g()\r")
    t.expect("...> ")
    t.send("\x03")                  # drops the unfinished chunk too
    t.expect("recd> ")
    t.send("1 + 2\r")
    seen = t.expect("recd> ")
    assert "3" in seen and "error" not in seen
    assert t.alive()
    t.send("while true do end\r")   # Ctrl-C interrupts running Lua as well
    time.sleep(0.3)
    t.send("\x03")
    assert "interrupted" in t.expect("recd> ")
    assert t.close() == 0


def test_tty_ctrl_c_while_a_file_loads(term, tmp_path):
    # A Ctrl-C pressed after Enter but before the chunk starts (here while
    # \load compiles a 12 MB file that ends in a loop) stops that chunk.
    big = tmp_path / "big.lua"
    big.write_text("x = 1\n" * 2000000 + "while true do end\n")
    t = start_repl(term, tmp_path)
    t.send("\\load %s\r" % big)
    t.expect("big.lua\r\n")
    t.send("\x03")
    assert "interrupted" in t.expect("recd> ")
    t.send("1 + 2\r")
    assert "3" in t.expect("recd> ")
    assert t.close() == 0


# ---- console -------------------------------------------------------------------

def test_console_calls(server, tmp_path):
    out = console(tmp_path, server.tcp, [
        "sys.ping",
        'item.put {id = "console-a", props = {title = "A"}}',
        'item.get "console-a"',
        'rec.recommend {user = "console-u",',
        "  n = 2}",
        "no.such_method",
        "item.put {id = function() end}",
        r"\info",
    ], rc=1)
    assert out[0] == "pong"
    assert out[1] == 1
    assert out[2]["props"] == {"title": "A"}
    assert "rec_id" in out[3] and isinstance(out[3]["items"], list)
    assert out[4]["error"]["name"] == "unknown_method"
    assert "no.such_method" in out[4]["error"]["message"]
    assert out[5]["error"]["name"] == "invalid_input"
    assert out[6]["version"] and "methods" in out[6]


def test_console_admin_commands(server, tmp_path):
    out = console(tmp_path, server.tcp, [r"\scripts", r"\stats", r"\reload", r"\nope"], rc=1)
    assert isinstance(out[0], list)
    assert isinstance(out[1], dict)
    assert out[2] is True or isinstance(out[2], (dict, list, int))
    assert out[3]["error"]["name"] == "invalid_input"


def test_console_unix_socket(server, tmp_path):
    assert console(tmp_path, server.unix, ["sys.ping"]) == ["pong"]
    assert console(tmp_path, "unix:" + server.unix, ["sys.ping"]) == ["pong"]


def test_console_token(make_server, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret-token-123\n")
    srv = make_server(extra_args=["--auth-token", str(token)])
    assert console(tmp_path, srv.tcp, ["sys.info"], rc=1)[0]["error"]["name"] == "unauthorized"
    rc, out = piped(tmp_path, ["console", "--token", str(token), srv.tcp], ["sys.info"])
    assert rc == 0 and "version" in json.loads(out.splitlines()[0]), out


def test_console_unreachable(tmp_path):
    rc, out = piped(tmp_path, ["console", "unix:" + str(tmp_path / "none.sock")], ["sys.ping"])
    assert rc == 1
    assert "io_error" in out


def test_console_tty_errors(term, server):
    t = term("console", server.tcp)
    t.expect("> ")
    t.send("nope.nope\r")
    assert "error: unknown_method:" in t.expect("> ")
    t.send("sys.ping\r")
    assert "pong" in t.expect("> ")
    assert t.close() == 0


def test_console_lua_on_the_server(server, tmp_path):
    out = console(tmp_path, server.unix, [
        'item.put {id = "lua-a", props = {t = "x"}}',
        "k = 20",
        "k * 2 + 2",
        'rec:item_get("lua-a").props.t',
        "while true do end",
        "k, k + 1",
        "admin.eval [[return k]]",     # the method itself: its answer as is
    ], rc=1)
    assert out[0] == 1
    assert out[1] is None           # no result: null
    assert out[2] == 42             # one result: itself, not [42]
    assert out[3] == "x"
    assert out[4]["error"]["name"] == "script_error" and "budget" in out[4]["error"]["message"]
    assert out[5] == [20, 21]       # several: an array
    assert out[6] == [20]
    # over TCP without a token: not sent, and said why
    tcp = console(tmp_path, server.tcp, ["1 + 1"], rc=1)
    assert tcp[0]["error"]["name"] == "invalid_input"
    assert "Lua needs the Unix socket or a token" in tcp[0]["error"]["message"]


def test_console_multiline_lua(server, tmp_path):
    out = console(tmp_path, server.unix, [
        'item.put {id = "ml-1", props = {title = "One"}}, {id = "ml-2", props = {title = "Two"}}',
        "function titles(ids)",
        "  local t = {}",
        "  for i, id in ipairs(ids) do t[i] = rec:item_get(id).props.title end",
        "  return t",
        "end",
        'titles({"ml-1", "ml-2"})',
        "t = {a = 1,",
        "  b = 2}",
        "return t.a + t.b",            # `t.a ...` alone would read as a method
    ])
    assert out == [2, None, ["One", "Two"], None, 3]


def test_console_unfinished_lua_at_the_end(server, tmp_path):
    out = console(tmp_path, server.unix, ["sys.ping", "function f()"], rc=1)
    assert out[0] == "pong"
    assert "'end' expected" in out[1]["error"]["message"]


def test_console_tcp_lines_that_are_not_methods(server, tmp_path):
    # Over TCP without a token no line is sent as admin.eval: each says why.
    before = console(tmp_path, server.unix, ["admin.eval [[return 1]]"])
    out = console(tmp_path, server.tcp, ["clear", "x = = 1", "ping", "function f(x)",
                                         "rec.recomend {}", "sys.ping"], rc=1)
    for e in out[:3]:
        assert e["error"]["name"] != "unauthorized", out
    assert out[0]["error"]["name"] == "invalid_input"
    assert "Lua needs the Unix socket or a token" in out[0]["error"]["message"]
    assert out[1]["error"]["name"] == "invalid_input"
    assert out[2]["error"]["name"] == "unknown_method"
    assert "did you mean 'sys.ping'" in out[2]["error"]["message"]
    assert "Lua needs the Unix socket" in out[3]["error"]["message"]  # no continuation
    assert "did you mean 'rec.recommend'" in out[4]["error"]["message"]
    assert out[5] == "pong"
    stats = console(tmp_path, server.unix, ["stats.get", r"\info"])
    assert before and "admin.eval" in json.dumps(stats[1])


def test_console_piped_exit_code(server, tmp_path):
    assert console(tmp_path, server.tcp, ["sys.ping", "sys.ping"], rc=0) == ["pong", "pong"]
    out = console(tmp_path, server.tcp, ["sys.ping", "nope.nope", "sys.ping"], rc=1)
    assert out[0] == out[2] == "pong"
    assert out[1]["error"]["name"] == "unknown_method"


def start_console(term, addr):
    t = term("console", addr)
    t.expect("> ")
    return t


def test_console_tty_multiline_and_history(term, server, tmp_path):
    t = start_console(term, server.unix)
    t.send("function twice(x)\r")
    t.expect("...> ")
    t.send("  return 2 * x\r")
    t.expect("...> ")
    t.send("end\r")
    seen = t.expect("> ")
    assert "error" not in seen, seen
    t.send("twice(21)\r")
    seen = t.expect("> ")
    assert "42\r\n" in seen and "{42}" not in seen, seen
    t.send("\x10\x10\r")            # Ctrl-P twice: the whole function again
    t.send("twice(2)\r")
    seen = t.expect("4\r\n")
    assert "error" not in seen, seen
    t.expect("> ")
    assert t.close() == 0
    hist = (tmp_path / ".recd_console_history").read_bytes()
    assert b"function twice(x)\r\n  return 2 * x\r\nend\n" in hist, hist
    assert hist.count(b"function twice") == 2 and hist.count(b"\nend\n") == 2, hist


def test_console_tty_more_and_set_items(term, server):
    t = start_console(term, server.unix)
    t.send("(function() local t = {} for i = 1, 20 do t[i] = i end return t end)()\r")
    seen = t.expect("> ")
    assert "{1, 2, 3, 4, 5, 6, 7, 8, ... (12 more)}" in seen, seen
    assert "\\more" in seen
    t.send("\\more\r")
    seen = t.expect("> ")
    assert "18, 19, 20}" in seen and "more)" not in seen, seen
    t.send("\\set items 3\r")
    t.expect("> ")
    t.send("(function() local t = {} for i = 1, 20 do t[i] = i end return t end)()\r")
    assert "{1, 2, 3, ... (17 more)}" in t.expect("> ")
    t.send("\\set items all\r")
    t.expect("> ")
    t.send("(function() local t = {} for i = 1, 20 do t[i] = i end return t end)()\r")
    assert "18, 19, 20}" in t.expect("> ")
    assert t.close() == 0


def test_console_tty_completes_methods(term, server):
    t = start_console(term, server.unix)
    t.send("rec:sim\t")
    t.expect("rec:similar")
    t.send('("nope")\r')
    assert "not_found" in t.expect("> ")
    t.send("sys.meth\t")            # from sys.methods
    t.expect("sys.methods")
    t.send("\r")
    assert 'name = "sys.ping"' in t.expect("> ")
    assert t.close() == 0


def test_repl_tty_completes_every_db_method(term, tmp_path):
    t = start_repl(term, tmp_path)
    t.send("db:ease_tr\t")          # the list comes from the binding itself
    t.expect("db:ease_train")
    t.send("\x03")
    t.expect("recd> ")
    assert t.close() == 0


def test_repl_tty_history_keeps_a_chunk_whole(term, tmp_path):
    t = start_repl(term, tmp_path)
    for line in ["function f()", "return 'inside'", "end"]:
        t.send(line + "\r")
        t.expect("> ")
    assert t.close() == 0
    hist = (tmp_path / ".recd_history").read_bytes()
    assert hist == b"function f()\r\nreturn 'inside'\r\nend\n", hist
    t = start_repl(term, tmp_path)   # it comes back as one entry
    t.send("\x10\r")
    t.send("f()\r")
    assert "error" not in t.expect("\r\ninside\r\n")
    t.expect("recd> ")
    assert t.close() == 0


def test_tty_ctrl_c_while_running_gives_a_clean_line(term, tmp_path):
    t = start_repl(term, tmp_path)
    t.send("while true do end\r")
    t.expect("while true do end\r\n")   # read: Lua runs, the terminal is cooked
    t.send("\x03")
    seen = t.expect("recd> ")
    assert "^C\r\nerror: interrupted!" in seen, seen
    assert "^Cerror" not in seen and "^C^C" not in seen, seen
    assert t.close() == 0


def test_console_tty_ctrl_c_during_a_call(term, make_server, tmp_path):
    srv = make_server()
    t = start_console(term, srv.tcp)
    srv.signal(signal.SIGSTOP)          # the answer waits
    try:
        t.send("sys.ping\r")
        t.expect("sys.ping\r\n")
        t.send("\x03")
        t.expect("^C")
    finally:
        srv.signal(signal.SIGCONT)
    seen = t.expect("> ")
    assert seen.startswith("\r\npong\r\n"), seen   # not "^Cpong"
    assert t.close() == 0


def test_console_piped_more_and_set(server, tmp_path):
    out = console(tmp_path, server.unix, ["6 * 7", r"\more", r"\set", r"\set items 3",
                                          r"\set", r"\set items all", r"\set"])
    assert out == [42, 42, {"items": 8}, {"items": 3}, {"items": "all"}]
    out = console(tmp_path, server.unix, [r"\more", r"\set items 0", r"\set colour red"], rc=1)
    assert [e["error"]["name"] for e in out] == ["invalid_input"] * 3
