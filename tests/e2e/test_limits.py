"""Memory and connection slots under hostile clients.

The memory tests measure the server's resident memory (/proc/PID/status)
and run the optimised build (ASan keeps freed memory in quarantine):
RECD_REL_BIN, or build/rel/recd; they are skipped, saying so, when neither
exists. The connection tests run whichever binary RECD_BIN names.
"""
import os
import resource
import selectors
import socket
import threading
import time

import msgpack
import pytest

from conftest import ROOT, Server
from recd_client import Client, RecdError

REL_BIN = os.path.abspath(os.environ.get("RECD_REL_BIN") or str(ROOT / "build" / "rel" / "recd"))
TOKEN = "s3cret-token-for-limits"
MB = 1 << 20


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def rss(pid, field="VmRSS"):
    """Resident memory of a process in bytes (VmHWM: its peak)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no %s for %d" % (field, pid))


@pytest.fixture
def rel_server(tmp_path_factory):
    """Private servers of the optimised build: rel_server(extra_args)."""
    if not os.access(REL_BIN, os.X_OK):
        pytest.skip("optimised build not found at %s (make, or set RECD_REL_BIN)" % REL_BIN)
    made = []

    def make(extra_args=()):
        srv = Server(tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("logs"),
                     extra_args)
        srv.binary = REL_BIN
        made.append(srv)
        return srv.start()

    yield make
    for srv in made:
        rc = srv.stop()
        assert rc == 0, "recd exit code %r:\n%s" % (rc, srv.log())


def open_socket(srv, unix, source=None):
    if unix:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(srv.unix)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if source:                      # 127/8 is all loopback
            s.bind((source, 0))
        s.connect(("127.0.0.1", srv.port))
    s.settimeout(30)
    return s


def call_on(s, msgid, method, params):
    """One blocking call on a raw socket; returns (error, result)."""
    s.sendall(pack([0, msgid, method, params]))
    u = msgpack.Unpacker(raw=False)
    while True:
        data = s.recv(65536)
        assert data, "connection closed while waiting for %s" % method
        u.feed(data)
        for msg in u:
            if msg[0] == 1 and msg[1] == msgid:
                return msg[2], msg[3]


def flood(srv, conns=200, unix=False, auth=False):
    """`conns` connections each send one 1 MB request (params: 999,999
    nils), all at once, until each has its answer or is closed. Returns the
    sockets and what each got: the result, or the error's name."""
    msg = pack([0, 1, "sys.ping", [None] * 999999])
    assert len(msg) > 999999
    socks = []
    for k in range(conns):
        # from 8 addresses: under the limit of connections per address
        s = open_socket(srv, unix, "127.0.0.%d" % (10 + k % 8))
        if auth:
            err, res = call_on(s, 0, "sys.auth", [TOKEN])
            assert err is None and res is True, err
        s.setblocking(False)
        socks.append(s)
    sel = selectors.DefaultSelector()
    state = {}
    for s in socks:
        state[s] = {"sent": 0, "outcome": None, "unpacker": msgpack.Unpacker(raw=False)}
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    view = memoryview(msg)
    left = len(socks)
    deadline = time.monotonic() + 300
    while left:
        assert time.monotonic() < deadline, "the flood did not finish in 300 s"
        for key, ev in sel.select(timeout=1):
            s = key.fileobj
            st = state[s]
            if ev & selectors.EVENT_WRITE and st["sent"] < len(msg):
                try:
                    st["sent"] += s.send(view[st["sent"]:st["sent"] + 262144])
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:          # refused and closed by the server
                    st["sent"] = len(msg)
                if st["sent"] >= len(msg):
                    sel.modify(s, selectors.EVENT_READ)
            if ev & selectors.EVENT_READ:
                try:
                    data = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                finished = not data
                st["unpacker"].feed(data)
                for m in st["unpacker"]:
                    if m[0] == 1:
                        st["outcome"] = m[3] if m[2] is None else m[2]["name"]
                    elif m[0] == 2:
                        st["outcome"] = m[2][0]["name"]
                    finished = True
                if finished:
                    sel.unregister(s)
                    left -= 1
    sel.close()
    return socks, [state[s]["outcome"] for s in socks]


def measure_flood(srv, **kw):
    with srv.connect() as c:                    # warm: one request of each kind
        assert c.call("sys.ping") == "pong"
    before = rss(srv.proc.pid)
    socks, outcomes = flood(srv, **kw)
    while_open = rss(srv.proc.pid)
    # Before sys.auth the request is refused at its header (the refusal may
    # be lost to the reset of a socket closed with bytes unread: None);
    # after it, or over the Unix socket, every one is served (memory
    # waits, not errors).
    if kw.get("auth") or kw.get("unix"):
        assert outcomes == ["pong"] * len(socks), sorted(set(map(str, outcomes)))
    else:
        assert set(outcomes) <= {"too_large", None}, sorted(set(map(str, outcomes)))
        assert "too_large" in outcomes
    for s in socks:
        s.close()
    time.sleep(0.5)
    with srv.connect() as c:                    # the server is still there
        assert c.call("sys.ping") == "pong"
    after = rss(srv.proc.pid)
    return before, while_open, after, rss(srv.proc.pid, "VmHWM")


def assert_bounded(srv, before, while_open, after, peak):
    limit = 64 * MB
    assert while_open - before < limit, "RSS %d MB -> %d MB while open\n%s" % (
        before // MB, while_open // MB, srv.log())
    assert after - before < limit, "RSS %d MB -> %d MB after closing\n%s" % (
        before // MB, after // MB, srv.log())
    assert peak - before < limit, "RSS %d MB -> peak %d MB\n%s" % (
        before // MB, peak // MB, srv.log())


def large_request_works(srv, unix=False, auth=False):
    """A legitimate large batch (item.put, ~3 MB, ~0.33M values) is served."""
    s = open_socket(srv, unix)
    try:
        if auth:
            assert call_on(s, 0, "sys.auth", [TOKEN]) == (None, True)
        items = [{"id": "big-%d" % i, "vectors": {"v": [0.25] * 512}} for i in range(640)]
        err, res = call_on(s, 1, "item.put", items)
        assert err is None and res == 640, err
        err, res = call_on(s, 2, "item.get", ["big-639"])
        assert err is None and res["id"] == "big-639", (err, res)
    finally:
        s.close()


def test_flood_before_auth(rel_server, tmp_path):
    tok = tmp_path / "token"
    tok.write_text(TOKEN + "\n")
    srv = rel_server(["--auth-token", str(tok)])
    assert_bounded(srv, *measure_flood(srv))
    large_request_works(srv, auth=True)


def test_flood_after_auth(rel_server, tmp_path):
    tok = tmp_path / "token"
    tok.write_text(TOKEN + "\n")
    srv = rel_server(["--auth-token", str(tok)])
    assert_bounded(srv, *measure_flood(srv, auth=True))
    large_request_works(srv, auth=True)


def test_flood_unix_socket(rel_server):
    srv = rel_server(["--max-unix-connections", "256"])
    assert_bounded(srv, *measure_flood(srv, unix=True))
    large_request_works(srv, unix=True)


def test_before_auth_small_messages_only(make_server, tmp_path):
    """Before sys.auth a message may not be larger than 64 KiB; after, the
    usual 4 MiB."""
    tok = tmp_path / "token"
    tok.write_text(TOKEN + "\n")
    srv = make_server(["--auth-token", str(tok)])
    s = srv.raw()
    s.sendall(pack([0, 1, "sys.ping", ["x" * 70000]])[:1000])  # refused at its header
    u = msgpack.Unpacker(raw=False)
    got = []
    while True:
        data = s.recv(65536)
        if not data:
            break
        u.feed(data)
        got.extend(u)
    s.close()
    assert got and got[0][0] == 2 and got[0][2][0]["name"] == "too_large", got
    s = srv.raw()
    assert call_on(s, 0, "sys.auth", [TOKEN]) == (None, True)
    assert call_on(s, 1, "sys.ping", ["x" * 70000]) == (None, "pong")
    s.close()


# ---- connection slots -------------------------------------------------------

def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= n:
        return
    if hard != resource.RLIM_INFINITY and hard < n:
        pytest.skip("this test needs %d open files; the hard limit is %d" % (n, hard))
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def closed_by_server(s):
    """Wait (blocking, the socket's timeout) for the server to close s;
    returns the messages it sent first."""
    u = msgpack.Unpacker(raw=False)
    got = []
    while True:
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            return got
        if not data:
            return got
        u.feed(data)
        got.extend(u)


def test_idle_connections_do_not_take_every_slot(make_server):
    """1,100 TCP connections that send nothing, from 22 addresses: the Unix
    socket answers at once, and a new TCP client gets in once the silent ones
    time out."""
    raise_nofile(4096)
    srv = make_server(["--handshake-timeout", "2"])
    idle = []
    try:
        for k in range(1100):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.%d" % (10 + k % 22), 0))
            s.connect(("127.0.0.1", srv.port))
            idle.append(s)
        # The Unix socket has slots of its own.
        with Client(srv.unix, timeout=10) as c:
            assert c.call("sys.ping") == "pong"
        # A new TCP client: refused while the slots are full, served once
        # the silent connections are closed.
        attempts = 0
        deadline = time.monotonic() + 120
        while True:
            attempts += 1
            assert time.monotonic() < deadline, "no TCP slot after %d attempts" % attempts
            try:
                with Client(srv.tcp, timeout=10) as c:
                    pong = c.call("sys.ping")
            except (OSError, RecdError):           # busy notification, reset
                time.sleep(0.5)
                continue
            assert pong == "pong"
            break
        # The silent ones were closed by the server.
        for s in idle[:5]:
            s.settimeout(30)
            closed_by_server(s)
    finally:
        for s in idle:
            s.close()
    with srv.connect() as c:
        assert c.call("sys.ping") == "pong"


def test_per_address_limit(make_server):
    srv = make_server(["--max-per-address", "8"])
    time.sleep(0.5)                 # the start-up probe's connection is gone
    held = [srv.raw() for _ in range(8)]
    try:
        for s in held:                                  # they are served
            assert call_on(s, 1, "sys.ping", []) == (None, "pong")
        s = srv.raw()
        got = closed_by_server(s)
        s.close()
        assert got and got[0][0] == 2 and got[0][2][0]["name"] == "busy", got
        assert "address" in got[0][2][0]["message"]
        # Another address still gets in.
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.2", 0))
        s.connect(("127.0.0.1", srv.port))
        s.settimeout(30)
        assert call_on(s, 1, "sys.ping", []) == (None, "pong")
        s.close()
        # A client that closes its connections and reconnects at once is
        # not refused for the old ones the server has not seen close yet.
        for s in held:
            s.close()
        held = [srv.raw() for _ in range(8)]
        for s in held:
            assert call_on(s, 1, "sys.ping", []) == (None, "pong")
    finally:
        for s in held:
            s.close()


def test_unauthenticated_connection_times_out(make_server, tmp_path):
    """On a server with a token, requests do not keep an unauthenticated
    connection open past the handshake timeout."""
    tok = tmp_path / "token"
    tok.write_text(TOKEN + "\n")
    srv = make_server(["--auth-token", str(tok), "--handshake-timeout", "1"])
    s = srv.raw()
    assert call_on(s, 1, "sys.ping", []) == (None, "pong")
    got = closed_by_server(s)
    s.close()
    assert got and got[-1][0] == 2 and got[-1][2][0]["name"] == "busy", got
    # Authenticated: stays.
    s = srv.raw()
    assert call_on(s, 1, "sys.auth", [TOKEN]) == (None, True)
    time.sleep(2.5)
    assert call_on(s, 2, "sys.ping", []) == (None, "pong")
    s.close()


def test_idle_timeout(make_server):
    srv = make_server(["--idle-timeout", "1"])
    s = srv.raw()
    assert call_on(s, 1, "sys.ping", []) == (None, "pong")
    got = closed_by_server(s)
    s.close()
    assert got and got[-1][0] == 2 and "idle" in got[-1][2][0]["message"], got
    # The Unix socket has no idle timeout.
    with srv.connect(unix=True) as c:
        time.sleep(2.5)
        assert c.call("sys.ping") == "pong"


def test_stalled_message_times_out(make_server):
    srv = make_server(["--handshake-timeout", "1"])
    s = srv.raw()
    assert call_on(s, 1, "sys.ping", []) == (None, "pong")
    s.sendall(pack([0, 2, "sys.ping", ["x" * 1000]])[:500])   # half a message
    got = closed_by_server(s)
    s.close()
    assert got and "stalled" in got[-1][2][0]["message"], got


def test_input_budget_lets_every_message_finish(make_server):
    """Eight connections each hold half of a 2 MB request, four times the
    input budget between them: reading pauses, one at a time finishes its
    message, and every request is served."""
    srv = make_server(["--max-input-memory", "1M"])
    msg = pack([0, 1, "sys.ping", [0.5] * 230000])
    half = len(msg) // 2
    socks = [srv.raw() for _ in range(8)]
    for s in socks:
        s.settimeout(60)
        s.sendall(msg[:half])
    senders = []
    for s in socks:       # the rest, each from its own thread (the server paces them)
        t = threading.Thread(target=s.sendall, args=(msg[half:],))
        t.start()
        senders.append(t)
    for s in socks:
        u = msgpack.Unpacker(raw=False)
        got = None
        while got is None:
            data = s.recv(65536)
            assert data, "closed before its answer:\n" + srv.log()
            u.feed(data)
            for m in u:
                got = m
        assert got[0] == 1 and got[2] is None and got[3] == "pong", got
    for t in senders:
        t.join(60)
    for s in socks:
        s.close()
    with srv.connect() as c:
        assert c.call("sys.ping") == "pong"
