"""The recd command line: one version everywhere, --help for every command,
clear errors for missing values and unknown options, and `recd lua FILE
ARGS...` handing ARGS to the script untouched."""
import subprocess

from conftest import RECD_BIN

TIMEOUT = 30.0                  # generous: sanitizer builds are slow


def recd(*args, **kw):
    return subprocess.run([RECD_BIN, *args], capture_output=True, text=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL, **kw)


def lua(tmp_path, src, *args):
    f = tmp_path / "t.lua"
    f.write_text(src)
    return recd("lua", str(f), *args)


def test_one_version(client, tmp_path):
    r = recd("--version")
    assert r.returncode == 0, r.stderr
    version = r.stdout.split()[1]
    assert r.stdout.startswith("recd " + version + " (")
    assert recd("version").stdout == r.stdout
    assert client.call("sys.info")["version"] == version
    assert client.call("sys.hello")["version"] == version
    r = lua(tmp_path, "io.write(require('recd').version)")
    assert r.returncode == 0, r.stderr
    assert r.stdout == version


COMMANDS = ["serve", "bench", "lua", "eval", "sim", "repl", "console", "version"]


def test_help_of_each_command():
    top = recd("--help")
    assert top.returncode == 0 and top.stderr == ""
    assert recd("-h").stdout == top.stdout == recd("help").stdout
    for cmd in COMMANDS:
        assert "recd " + cmd in top.stdout, cmd
        for flag in ("--help", "-h"):
            r = recd(cmd, flag)
            assert r.returncode == 0, (cmd, flag, r.stderr)
            assert r.stderr == "", (cmd, flag)
            assert r.stdout.startswith("usage:"), (cmd, flag, r.stdout)
            assert "recd " + cmd in r.stdout, (cmd, flag, r.stdout)
            assert r.stdout != top.stdout, (cmd, flag)     # the command's own text
    assert "--max-connections" in recd("serve", "--help").stdout
    assert "--protocol" in recd("eval", "--help").stdout
    assert "--fatigue" in recd("sim", "--help").stdout
    # recd bench -h HOST: the host; -h alone is the help
    assert recd("bench", "-h").stdout == recd("bench", "--help").stdout


def test_missing_value_unknown_option_and_stray_argument():
    cases = [
        (["serve", "--data", "/nonexistent", "--listen"], "recd serve: --listen needs a value"),
        (["serve", "--nope", "1"], "recd serve: unknown option '--nope'"),
        (["serve", "--insecure=yes"], "recd serve: --insecure takes no value"),
        (["serve", "stray"], "recd serve: unexpected argument 'stray'"),
        (["eval", "LOG", "--k"], "recd eval: --k needs a value"),
        (["eval", "-k"], "recd eval: -k needs a value"),
        (["sim", "--seed"], "recd sim: --seed needs a value"),
        (["sim", "stray"], "recd sim: unexpected argument 'stray'"),
        (["bench", "-p"], "recd bench: -p needs a value"),
        (["bench", "-z"], "recd bench: unknown option '-z'"),
        (["repl", "--scripts"], "recd repl: --scripts needs a value"),
        (["console", "--token"], "recd console: --token needs a value"),
        (["console", "--tokn", "f"], "recd console: unknown option '--tokn'"),
        (["lua", "--nope"], "recd lua: unknown option '--nope'"),
        (["version", "--nope"], "recd version: unknown option '--nope'"),
        (["--nope"], "recd: unknown option '--nope'"),
        (["nosuch"], "recd: unknown command 'nosuch'"),
    ]
    for args, needle in cases:
        r = recd(*args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert r.stderr.startswith(needle + "\n"), (args, r.stderr)
        assert r.stdout == "", args
    r = recd("lua")
    assert r.returncode == 2 and "recd lua FILE" in r.stderr


def test_lua_arguments_are_untouched(tmp_path):
    src = "for i = 0, #arg do io.write(i, '=', arg[i], '\\n') end"
    args = ["--x", "y", "-h", "--help", "--", "-", "z", "--x=1"]
    r = lua(tmp_path, src, *args)
    assert r.returncode == 0, r.stderr
    want = ["0=" + str(tmp_path / "t.lua")] + ["%d=%s" % (i + 1, a) for i, a in enumerate(args)]
    assert r.stdout.splitlines() == want
    # "--" ends recd lua's own options: a file named like an option
    f = tmp_path / "-v.lua"
    f.write_text("io.write(#arg, ' ', arg[0], ' ', arg[1])")
    r = recd("lua", "--", "-v.lua", "--v", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "1 -v.lua --v"
    r = recd("lua", "-v.lua", cwd=str(tmp_path))
    assert r.returncode == 2 and r.stderr.startswith("recd lua: unknown option '-v'")


def test_serve_flags_in_both_spellings(tmp_path):
    # --flag VALUE, --flag=VALUE and the config file's --flag_name all parse
    for args in (["--max-connections", "0"], ["--max-connections=0"], ["--max_connections", "0"]):
        r = recd("serve", "--data", str(tmp_path / "d"), *args)
        assert r.returncode == 2, args
        assert r.stderr.startswith("recd: --max-connections must be 1..100000"), (args, r.stderr)


def test_train_cpu_share_refused_out_of_range_before_the_folder(tmp_path):
    for value in ("0", "1.5", "-1", "abc", "nan"):
        r = recd("serve", "--data", str(tmp_path / "d"), "--train-cpu", value)
        assert r.returncode == 2, (value, r.stderr)
        assert "--train-cpu must be 0.01..1" in r.stderr, (value, r.stderr)
        assert not (tmp_path / "d").exists(), value


def test_listen_takes_host_names_and_refuses_a_bad_one_before_the_folder(tmp_path):
    import socket
    import time
    from conftest import free_port
    # a port alone is refused at once, and no folder is made
    r = recd("serve", "--data", str(tmp_path / "d1"), "--listen", "7711")
    assert r.returncode == 2 and "expected HOST:PORT" in r.stderr, r.stderr
    assert not (tmp_path / "d1").exists()
    r = recd("serve", "--data", str(tmp_path / "d1"), "--listen", "localhost:99999")
    assert r.returncode == 2 and "port must be a number" in r.stderr, r.stderr
    assert not (tmp_path / "d1").exists()
    # a host name is resolved; "" turns the Unix socket off
    port = free_port()
    p = subprocess.Popen([RECD_BIN, "serve", "--data", str(tmp_path / "d2"), "--listen",
                          "localhost:%d" % port, "--unix", "", "--scripts", "", "--policies", ""],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert p.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        assert not (tmp_path / "d2" / "recd.sock").exists()
    finally:
        p.terminate()
        assert p.wait(TIMEOUT) == 0
