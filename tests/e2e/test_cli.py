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
