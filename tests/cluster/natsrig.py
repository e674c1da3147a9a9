"""Three nats-servers with JetStream, clustered on loopback, and recd nodes
over them: the rig of tests/cluster/run.py and tests/bench/cluster_bench.py.

Every server gets random free ports and a temporary store folder; `stop()`
(also run at exit, whatever happened) kills what is still running.
"""
import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "examples", "python"))

from recd_client import Client  # noqa: E402

RECD_BIN = os.path.abspath(os.environ.get("RECD_BIN") or os.path.join(ROOT, "recd"))
NATS_BIN = shutil.which("nats-server") or "/usr/bin/nats-server"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError("%s exited with %s while starting" % (what, proc.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("%s did not listen on %d within %ss" % (what, port, timeout))
            time.sleep(0.05)


class Rig:
    def __init__(self, n=3):
        self.dir = tempfile.mkdtemp(prefix="recd-cluster-")
        self.n = n
        self.client_ports = [free_port() for _ in range(n)]
        self.route_ports = [free_port() for _ in range(n)]
        self.nats = [None] * n
        self.nodes = []
        atexit.register(self.stop)

    def url(self, i):
        return "nats://127.0.0.1:%d" % self.client_ports[i]

    def urls(self, first=0):
        order = [(first + k) % self.n for k in range(self.n)]
        return ",".join(self.url(i) for i in order)

    def start_nats(self, i):
        routes = ",".join("nats://127.0.0.1:%d" % p for p in self.route_ports)
        store = os.path.join(self.dir, "nats%d" % i)
        log = open(os.path.join(self.dir, "nats%d.log" % i), "ab")
        cmd = [NATS_BIN, "-a", "127.0.0.1", "-p", str(self.client_ports[i]), "-n", "n%d" % i,
               "-js", "-sd", store, "--cluster_name", "recd",
               "--cluster", "nats://127.0.0.1:%d" % self.route_ports[i], "--routes", routes]
        self.nats[i] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT)
        log.close()
        wait_port(self.client_ports[i], self.nats[i], 10, "nats-server %d" % i)

    def start(self):
        for i in range(self.n):
            self.start_nats(i)
        return self

    def kill_nats(self, i):
        p = self.nats[i]
        if p and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait()

    def node(self, name, data=None, extra=(), first=0, env=None):
        n = Node(self, name, data or os.path.join(self.dir, "data-" + name), extra, first)
        n.env = env
        n.index = len(self.nodes)       # two nodes of one name keep logs of their own
        self.nodes.append(n)
        return n

    def stop(self):
        for n in self.nodes:
            n.kill()
        for i, p in enumerate(self.nats):
            if p and p.poll() is None:
                p.kill()
                p.wait()
        if os.environ.get("RECD_KEEP_RIG"):
            print("rig kept in", self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


class Node:
    """One `recd serve --cluster` process (restartable on its folder)."""

    def __init__(self, rig, name, data, extra, first):
        self.rig, self.name, self.data, self.extra, self.first = rig, name, data, list(extra), first
        self.proc = None
        self.port = None
        self.starts = 0
        self.index = 0
        self.env = None     # more environment for the process

    @property
    def sock(self):
        """Its Unix socket (admin.eval reads this node's own state)."""
        return self.data + ".sock"

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def command(self):
        return [RECD_BIN, "serve", "--data", self.data, "--listen", self.addr,
                "--unix", self.sock, "--scripts", "", "--policies", "", "--log-level",
                os.environ.get("RECD_LOG_LEVEL", "info"),
                "--cluster", self.rig.urls(self.first), "--node", self.name] + self.extra

    def launch(self):
        self.port = free_port()
        self.starts += 1
        self.log_path = os.path.join(self.rig.dir, "recd-%s-%d-%d.log"
                                     % (self.name, self.index, self.starts))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=ROOT,
                                         env=dict(os.environ, **(self.env or {})))
        return self

    def start(self, timeout=30):
        self.launch()
        try:
            wait_port(self.port, self.proc, timeout, "recd node %s" % self.name)
        except RuntimeError as e:
            raise RuntimeError("%s:\n%s" % (e, self.log()))
        return self

    def run_to_exit(self, timeout=60):
        """Start and wait for it to exit: (exit code, log)."""
        self.launch()
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = None
        return rc, self.log()

    def connect(self, timeout=30):
        return Client(self.addr, timeout=timeout)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout=30):
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def log(self, tail=4000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-tail:]
        except (OSError, AttributeError):
            return ""

    def info(self):
        with self.connect() as c:
            return c.call("sys.info")

    def wait_caught_up(self, timeout=60):
        """Until the node applied all the stream holds (lag 0, applied =
        the stream's last sequence it knows), twice in a row."""
        deadline = time.monotonic() + timeout
        calm = 0
        while True:
            cl = self.info()["cluster"]
            if cl["lag"] == 0 and cl["last_applied"] >= cl["stream_last"]:
                calm += 1
                if calm >= 2:
                    return cl
            else:
                calm = 0
            if time.monotonic() > deadline:
                raise AssertionError("node %s did not catch up: %r" % (self.name, cl))
            time.sleep(0.3)
