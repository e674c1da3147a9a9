"""make install / make uninstall honour PREFIX and DESTDIR; an installed
recd serves the shipped scripts and policies from PREFIX/share/recd."""
import os
import subprocess

from conftest import ROOT, free_port
from recd_client import Client


def make(*args):
    r = subprocess.run(["make", "--no-print-directory", "SANITIZE=", *args], cwd=str(ROOT),
                       capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def files_under(root):
    out = set()
    for d, _, fs in os.walk(root):
        out.update(os.path.relpath(os.path.join(d, f), root) for f in fs)
    return out


def test_install_uninstall_prefix_destdir(tmp_path):
    dest, prefix = tmp_path / "stage", "/opt/recd-test"
    make("install", "PREFIX=" + prefix, "DESTDIR=" + str(dest))
    root = str(dest) + prefix
    got = files_under(root)
    scripts = sorted(f for f in os.listdir(ROOT / "scripts") if f.endswith(".lua"))
    policies = sorted(f for f in os.listdir(ROOT / "policies") if f.endswith(".lua"))
    want = {"bin/recd", "lib/lua/5.4/recd.so", "share/man/man1/recd.1"}
    want |= {"share/recd/scripts/" + f for f in scripts}
    want |= {"share/recd/policies/" + f for f in policies}
    assert got == want
    assert not os.path.exists("/opt/recd-test")     # DESTDIR kept it staged

    # the installed binary finds its scripts and policies
    data, port = tmp_path / "data", free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as f:
        p = subprocess.Popen([os.path.join(root, "bin", "recd"), "serve", "--data", str(data),
                              "--listen", "127.0.0.1:%d" % port, "--log-level", "info"],
                             stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        import time
        deadline = time.monotonic() + 30
        while True:
            try:
                c = Client("127.0.0.1:%d" % port, timeout=10)
                break
            except OSError:
                assert p.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        with c:
            names = {s["name"] for s in c.call("script.status")}
        assert {f[:-4] for f in scripts + policies} <= names
    finally:
        p.terminate()
        assert p.wait(30) == 0
    text = log.read_text()
    assert "scripts: %d loaded, 0 failed (%s/share/recd/scripts" % (
        len(scripts) - 1 + len(policies), root) in text, text

    make("uninstall", "PREFIX=" + prefix, "DESTDIR=" + str(dest))
    assert files_under(root) == set()
    assert not os.path.exists(os.path.join(root, "share", "recd"))
