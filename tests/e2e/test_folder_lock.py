"""One server per data folder: a second `recd serve` on a folder in use is
refused with the pid of the one that holds it, and leaves the first
server's Unix socket alone; a read-only look (`recd lua` with the Lua
module's read-only open) works beside it; after a kill -9 the folder is
free again."""
import os
import signal
import subprocess

from conftest import RECD_BIN, ROOT, free_port


def test_second_server_on_a_folder_is_refused(make_server, tmp_path):
    srv = make_server()
    with srv.connect() as c:
        c.call("item.put", {"id": "lock-1"})
    r = subprocess.run([RECD_BIN, "serve", "--data", srv.data_dir,
                        "--listen", "127.0.0.1:%d" % free_port(), "--unix", srv.unix,
                        "--scripts", "", "--policies", ""],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode != 0
    msg = r.stdout + r.stderr
    assert "in use by process %d" % srv.proc.pid in msg, msg
    # the first server keeps its admin socket and its data
    assert os.path.exists(srv.unix)
    with srv.connect(unix=True) as c:
        assert c.call("item.get", "lock-1")["id"] == "lock-1"
    # a read-only open works beside the server
    script = tmp_path / "peek.lua"
    script.write_text('local recd = require "recd"\n'
                      'local db = assert(recd.open(arg[1], {read_only = true}))\n'
                      'print("items", db:stats().items)\n'
                      'local ok, err = pcall(recd.open, arg[1])\n'
                      'print("writable", ok, err)\n')
    r = subprocess.run([RECD_BIN, "lua", str(script), srv.data_dir], capture_output=True,
                       text=True, timeout=60, cwd=str(ROOT), stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "items\t1" in r.stdout, r.stdout
    # a writable open is refused like a second server
    assert "writable\tfalse" in r.stdout and "in use by process" in r.stdout, r.stdout
    # kill -9 frees the folder: the kernel drops the lock with the process
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    srv.start()
    with srv.connect() as c:
        assert c.call("item.get", "lock-1")["id"] == "lock-1"
