"""Access: who may call what, what the logs never show, what ids may be."""
import os
import signal
import socket
import subprocess
import time

import msgpack
import pytest

from conftest import RECD_BIN, free_port
from recd_client import RecdError


def test_non_loopback_needs_a_token_or_insecure(tmp_path):
    port = free_port()
    args = [RECD_BIN, "serve", "--data", str(tmp_path / "d"), "--listen", "0.0.0.0:%d" % port,
            "--unix", "", "--scripts", "", "--policies", ""]
    p = subprocess.run(args, capture_output=True, timeout=30)
    assert p.returncode != 0
    assert b"--auth-token" in p.stderr and b"--insecure" in p.stderr
    q = subprocess.Popen(args + ["--insecure"], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("--insecure server did not listen")
    finally:
        q.send_signal(signal.SIGTERM)
        assert q.wait(30) == 0


def test_tokens_never_reach_the_log(make_server, tmp_path):
    token = "s3cr3t-token-4f7a"
    tf = tmp_path / "token"
    tf.write_text(token + "\n")
    srv = make_server(extra_args=["--auth-token", str(tf), "--log-level", "debug"])
    with srv.connect() as c:
        with pytest.raises(RecdError) as ei:
            c.call("sys.auth", "wrong-guess-9d2e")
        assert ei.value.name == "unauthorized"
        with pytest.raises(RecdError) as ei:
            c.call("item.get", "x")
        assert ei.value.name == "unauthorized"
        assert c.call("sys.auth", token) is True
        assert c.call("item.get", "x") is None
    srv.stop_ok()
    log = open(srv.log_path, "rb").read()
    assert log, "the server logged nothing at debug level"
    assert token.encode() not in log
    assert b"wrong-guess-9d2e" not in log


def test_ids_must_be_valid_utf8(server):
    s = server.raw()
    up = msgpack.Unpacker(raw=False)
    for i, bad in enumerate([b"\xff", b"ok\x80", b"\xed\xa0\x80", b"\xc0\xaf"]):
        # str family with invalid bytes, sent by hand (msgpack libs refuse to)
        head = bytes([0xa0 | len(bad)])
        msg = (b"\x94\x00" + bytes([i]) + b"\xa8item.get" + b"\x91" + head + bad)
        s.sendall(msg)
        while True:
            got = next(up, None)
            if got is not None:
                break
            up.feed(s.recv(65536))
        assert got[1] == i and got[2]["name"] == "invalid_params", got
        assert "UTF-8" in got[2]["message"]
    s.close()
