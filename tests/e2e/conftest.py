"""Fixtures for the end-to-end suite: real `recd serve` processes.

RECD_BIN names the binary (default: ./recd at the repository root). Each
server gets a free loopback port and a temporary data directory holding its
Unix socket; teardown sends SIGTERM and requires exit code 0 within 10 s.
"""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "python"))

from recd_client import Client  # noqa: E402

RECD_BIN = os.path.abspath(os.environ.get("RECD_BIN") or str(ROOT / "recd"))
START_TIMEOUT = float(os.environ.get("RECD_START_TIMEOUT", "10"))
STOP_TIMEOUT = float(os.environ.get("RECD_STOP_TIMEOUT", "10"))
CLIENT_TIMEOUT = 30.0           # generous: sanitizer builds are slow


def free_port():
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `recd serve` process on DATA_DIR (restartable on the same dir)."""

    def __init__(self, data_dir, log_dir, extra_args=()):
        self.data_dir = str(data_dir)
        self.log_dir = str(log_dir)
        self.extra_args = list(extra_args)
        self.unix = os.path.join(self.data_dir, "recd.sock")
        self.binary = RECD_BIN   # another build may be chosen before start()
        self.proc = None
        self.port = None
        self.starts = 0
        self.log_path = None
        os.makedirs(self.data_dir, exist_ok=True)

    @property
    def tcp(self):
        return "127.0.0.1:%d" % self.port

    def start(self):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.port = free_port()
        self.starts += 1
        self.log_path = os.path.join(self.log_dir, "recd-%d-%d.log" % (self.port, self.starts))
        # The built-in pipeline unless a test brings its own scripts.
        scripts = [] if "--scripts" in self.extra_args else ["--scripts", "", "--policies", ""]
        cmd = [self.binary, "serve", "--data", self.data_dir, "--listen", self.tcp,
               "--unix", self.unix, "--log-level", os.environ.get("RECD_LOG_LEVEL", "warn")] + scripts + self.extra_args
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=str(ROOT))
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("recd exited with %s while starting:\n%s"
                                   % (self.proc.returncode, self.log()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError("recd did not accept on %s within %ss:\n%s"
                                       % (self.tcp, START_TIMEOUT, self.log()))
                time.sleep(0.05)

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM and wait; returns the exit code (None if it hung: killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def stop_ok(self):
        rc = self.stop()
        assert rc == 0, "recd exit code %r after SIGTERM:\n%s" % (rc, self.log())

    def restart(self):
        self.stop_ok()
        return self.start()

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self, tail=6000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-tail:]
        except (OSError, TypeError):
            return ""

    def connect(self, unix=False, timeout=CLIENT_TIMEOUT):
        return Client(self.unix if unix else self.tcp, timeout=timeout)

    def raw(self, timeout=CLIENT_TIMEOUT):
        """A plain TCP socket to the server."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The shared server most tests talk to (tests use unique ids)."""
    if not os.access(RECD_BIN, os.X_OK):
        pytest.exit("recd binary not found: %s (set RECD_BIN)" % RECD_BIN, returncode=2)
    srv = Server(tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("logs"))
    srv.start()
    yield srv
    srv.stop_ok()


@pytest.fixture
def client(server):
    """A fresh TCP connection to the shared server."""
    assert server.alive(), "the shared server died:\n" + server.log()
    with server.connect() as c:
        yield c


@pytest.fixture
def make_server(tmp_path_factory):
    """Factory for private servers: make_server(extra_args=(), data_dir=None).
    Every server still running at teardown must stop with exit code 0."""
    made = []

    def make(extra_args=(), data_dir=None):
        srv = Server(data_dir or tmp_path_factory.mktemp("data"),
                     tmp_path_factory.mktemp("logs"), extra_args)
        made.append(srv)
        return srv.start()

    yield make
    bad = []
    for srv in made:
        rc = srv.stop()
        if rc != 0:
            bad.append("recd on %s: exit code %r after SIGTERM:\n%s" % (srv.data_dir, rc, srv.log()))
    assert not bad, "\n".join(bad)
