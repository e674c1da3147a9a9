"""The examples and tutorials, run for real against private servers:
examples/python/quickstart.py, examples/node/quickstart.js (when `node` is
installed) and every code block of docs/policy-tutorial.md."""
import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from recd_client import RecdError

ROOT = Path(__file__).resolve().parents[2]
RECD_BIN = os.path.abspath(os.environ.get("RECD_BIN") or str(ROOT / "recd"))
PYTHON = "/usr/bin/python3"
NODE_DIR = ROOT / "examples" / "node"
TUTORIAL = ROOT / "docs" / "policy-tutorial.md"
POLICY = "boost_recent_category"
RUN_TIMEOUT = 60              # one example run; they take well under a second
NPM_TIMEOUT = 120


def run(cmd, timeout=RUN_TIMEOUT, **kw):
    if "input" not in kw:
        kw["stdin"] = subprocess.DEVNULL
    return subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True,
                          timeout=timeout, **kw)


def check(r, what):
    assert r.returncode == 0, "%s: exit code %s\n--- stdout\n%s\n--- stderr\n%s" % (
        what, r.returncode, r.stdout[-4000:], r.stderr[-4000:])
    return r.stdout


@pytest.fixture(params=["builtin", "scripts"])
def example_server(request, make_server):
    """A private server with the built-in pipeline, or the project's scripts."""
    if request.param == "builtin":
        return make_server()
    return make_server(extra_args=["--scripts", str(ROOT / "scripts"),
                                   "--policies", str(ROOT / "policies")])


# -- quickstarts ------------------------------------------------------------

def test_python_quickstart(example_server):
    out = check(run([PYTHON, "examples/python/quickstart.py", example_server.tcp]),
                "examples/python/quickstart.py")
    assert "connected to recd" in out
    assert "errors come back by name: not_found" in out


@pytest.fixture(scope="session")
def node():
    """`node`, with examples/node/node_modules in place (npm ci, once, if
    missing); skips when either cannot be had. A skip is cached for the
    session, so a failing npm ci is tried only once."""
    node_bin = shutil.which("node")
    if not node_bin:
        pytest.skip("node is not on PATH")
    if not (NODE_DIR / "node_modules" / "msgpack5rpc").is_dir():
        npm = shutil.which("npm")
        if not npm:
            pytest.skip("examples/node/node_modules is missing and npm is not on PATH")
        try:
            r = subprocess.run([npm, "ci", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"],
                               cwd=str(NODE_DIR), stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=NPM_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.skip("npm ci --prefix examples/node took over %d s" % NPM_TIMEOUT)
        if r.returncode != 0:
            pytest.skip("npm ci --prefix examples/node failed (exit %d): %s"
                        % (r.returncode, (r.stderr or r.stdout).strip()[-500:]))
    return node_bin


def test_node_quickstart(node, example_server):
    out = check(run([node, "examples/node/quickstart.js", example_server.tcp]),
                "examples/node/quickstart.js")
    assert "connected to recd" in out
    assert "errors come back by name: not_found" in out
    assert "stats.get:" in out and out.rstrip().endswith("done")


def test_node_quickstart_unix_socket_and_env(node, make_server):
    srv = make_server()
    env = dict(os.environ, RECD_ADDR=srv.unix)
    check(run([node, "examples/node/quickstart.js"], env=env), "quickstart.js via RECD_ADDR")


def test_node_quickstart_fails_without_server(node):
    with socket.socket() as s:          # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run([node, "examples/node/quickstart.js", "127.0.0.1:%d" % port])
    assert r.returncode != 0
    assert "ECONNREFUSED" in r.stderr


# -- docs/policy-tutorial.md ------------------------------------------------

FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)


def blocks(md, marker):
    """The fenced block following each line `<!-- marker -->`: [(lang, body)]."""
    out = []
    for m in re.finditer(r"^<!-- %s -->\n" % re.escape(marker), md, re.M):
        f = FENCE.search(md, m.end())
        assert f is not None, "no code block after <!-- %s -->" % marker
        assert md[m.end():f.start()].strip() == "", "<!-- %s --> not right before a block" % marker
        out.append((f.group(1), f.group(2)))
    return out


def write(path, body):
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        f.write(body)
    os.rename(tmp, str(path))     # editors save by rename


def wait(cond, what, limit=5.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("not within %.0f s: %s" % (limit, what))


def console(srv, block):
    """Run the commands typed in a tutorial console block (lines after a
    `ADDR> ` prompt) with `recd console` on srv; returns the JSON answers."""
    m = re.search(r"^\$ \./recd console ?(\S*)$", block, re.M)
    assert m, "console block without its `$ ./recd console` line:\n" + block
    addr = m.group(1) or "127.0.0.1:7700"
    cmds = re.findall(r"^%s> (.+)$" % re.escape(addr), block, re.M)
    assert cmds, "no commands in console block:\n" + block
    target = srv.unix if "/" in addr else srv.tcp
    r = run([RECD_BIN, "console", target], input="\n".join(cmds) + "\n", timeout=30)
    out = check(r, "recd console %s" % target)
    answers = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(answers) == len(cmds), (cmds, out)
    for cmd, a in zip(cmds, answers):
        assert not (isinstance(a, dict) and "error" in a), "%s -> %s" % (cmd, a)
    return dict(zip(cmds, answers))


def categories(c, hits):
    return [c.call("item.get", h["id"])["props"]["category"] for h in hits]


def shown(out, user):
    """Parse a `boost_demo.py show` line: (categories, moved count)."""
    m = re.search(r"^%s\s+([a-z ?]+?)\s+\((\d+) moved by %s\)$" % (user, POLICY), out, re.M)
    assert m, "no line for %s in:\n%s" % (user, out)
    return m.group(1).split(), int(m.group(2))


def test_policy_tutorial(make_server, tmp_path):
    md = TUTORIAL.read_text()
    (lang, policy), = blocks(md, "policy")
    assert lang == "lua" and policy.startswith("-- policies/%s.lua\n" % POLICY)
    (lang, pipelines), = blocks(md, "pipelines")
    assert lang == "lua" and '"%s"' % POLICY in pipelines
    (lang, demo), = blocks(md, "demo")
    assert lang == "python"
    logs = blocks(md, "log")
    consoles = blocks(md, "console")
    assert [b[0] for b in logs] == ["text", "text"] and len(consoles) == 3
    assert all(lang == "console" for lang, _ in consoles)

    # The project's scripts and policies, as under `make run`.
    sdir, pdir = tmp_path / "scripts", tmp_path / "policies"
    shutil.copytree(str(ROOT / "scripts"), str(sdir))
    shutil.copytree(str(ROOT / "policies"), str(pdir))
    if (pdir / (POLICY + ".lua")).exists():
        os.unlink(str(pdir / (POLICY + ".lua")))
    srv = make_server(extra_args=["--scripts", str(sdir), "--policies", str(pdir),
                                  "--log-level", "info"])
    demo_py = tmp_path / "boost_demo.py"
    demo_py.write_text(demo)

    with srv.connect(unix=True) as c:
        # 1-2: save the policy; the server loads it and says so.
        write(pdir / (POLICY + ".lua"), policy)

        def loaded():
            for s in c.call("script.status"):
                if s["name"] == POLICY and s["kind"] == "policy":
                    assert s["error"] is None, s["error"]
                    return s["loaded"]
            return False
        wait(loaded, "script.status shows %s loaded" % POLICY)
        want_log = logs[0][1].strip()
        wait(lambda: want_log in srv.log(100000), "log line %r" % want_log)
        st = console(srv, consoles[0][1])["script.status"]
        assert any(s["name"] == POLICY and s["loaded"] for s in st)

        # 3: the data; the policy records but is in no pipeline yet.
        out = check(run([PYTHON, str(demo_py), "load", srv.tcp]), "boost_demo.py load")
        assert "stored 2 clicks" in out
        out = check(run([PYTHON, str(demo_py), "show", srv.tcp]), "boost_demo.py show (before)")
        before, moved = shown(out, "tut-ann")
        assert moved == 0 and len(before) == 10
        assert shown(out, "tut-bob")[1] == 0
        kv = console(srv, consoles[1][1])
        (ann,), (bob,) = kv.values()
        assert list(ann) == ["jazz"] and list(bob) == ["folk"]
        assert ann["jazz"] - bob["folk"] == pytest.approx(7200, abs=60)

        # 4: the pipeline lists the policy; the server reloads it.
        n_pipelines = srv.log(100000).count("pipelines: 3 loaded from")
        write(sdir / "pipelines.lua", pipelines)
        want = logs[1][1].strip()
        assert want.startswith("info  pipelines: 3 loaded from ")
        assert (str(sdir / "pipelines.lua")).endswith(want.rsplit(" ", 1)[1])
        # pipelines.lua is looked at by rec.recommend, at most every 0.2 s.
        time.sleep(0.25)

        # 5: ann's recent jazz click now leads her list; bob's two-hour-old
        # folk click is past the window and changes nothing.
        r = c.call("rec.recommend", {"user": "tut-ann", "n": 10, "explain": True})
        wait(lambda: srv.log(100000).count("pipelines: 3 loaded from") > n_pipelines,
             "the pipelines reloaded (log line)")
        after = categories(c, r["items"])
        assert r["pipeline"] == "main"
        assert after[0] == "jazz", after
        assert after[:5].count("jazz") >= 3, after
        assert after[:5].count("jazz") > before[:5].count("jazz"), (before, after)
        assert any(POLICY in h["explain"]["policies"] for h in r["items"])
        top = r["items"][0]             # boosted well above its strategy score
        assert top["score"] > 2 * top["explain"]["strategies"]["hybrid"], top
        r = c.call("rec.recommend", {"user": "tut-bob", "n": 10, "explain": True})
        assert not any(POLICY in h["explain"]["policies"] for h in r["items"]), r["items"]

        out = check(run([PYTHON, str(demo_py), "show", srv.tcp]), "boost_demo.py show (after)")
        assert shown(out, "tut-ann")[1] > 0 and shown(out, "tut-bob")[1] == 0
        answers = console(srv, consoles[2][1])
        rec = next(v for k, v in answers.items() if k.startswith("rec.recommend"))
        assert rec["pipeline"] == "main" and len(rec["items"]) == 3
        stats = next(s for s in answers["\\scripts"] if s["name"] == POLICY)
        assert stats["calls"] > 0 and stats["errors"] == 0, stats

        # A rerank that fails is a script_error naming the policy, never a crash.
        write(pdir / (POLICY + ".lua"), policy.replace("if req.user == nil then",
                                                       "error('boom') if req.user == nil then"))
        wait(lambda: next(s for s in c.call("script.list") if s["name"] == POLICY)["version"] > 1,
             "the broken version loaded")
        with pytest.raises(RecdError) as e:
            c.call("rec.recommend", {"user": "tut-ann", "n": 3})
        assert e.value.name == "script_error" and POLICY in str(e.value)
