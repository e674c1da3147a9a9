"""The README's 60-second tour, run as written against a server started
like `make run` (the project's scripts and policies, the demo catalogue
of examples/demo_data.lua): the Python session of its code blocks, then
the edit it suggests, made in a copy of the scripts, and its effect."""
import ast
import re
import shutil
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FENCE = re.compile(r"^```\n(.*?)^```$", re.S | re.M)
N_STABLE = 7        # of top()'s 8: the explore policy draws the last slot


def session(md):
    """The `>>>` session of the tour's code blocks, in order:
    [(source, expected output or None)]."""
    steps = []
    for block in FENCE.findall(md):
        if ">>> " not in block:
            continue
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            if not lines[i].startswith(">>> "):
                i += 1
                continue
            src = [lines[i][4:]]
            i += 1
            while i < len(lines) and lines[i].startswith("..."):
                src.append(lines[i][4:])
                i += 1
            out = None
            if i < len(lines) and not lines[i].startswith(">>> "):
                out = lines[i]
                i += 1
            steps.append(("\n".join(src), out))
    return steps


def run_step(src, ns):
    """Run one step as the interpreter would: the value of an expression."""
    tree = ast.parse(src)
    if len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr):
        return eval(compile(ast.Expression(tree.body[0].value), "<readme>", "eval"), ns)
    exec(compile(tree, "<readme>", "exec"), ns)
    return None


def genres(titles):
    return Counter(t.split(" #")[0] for t in titles)


def wait(cond, what, limit=30.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("not within %.0f s: %s" % (limit, what))


def test_readme_tour(make_server, tmp_path, monkeypatch):
    md = README.read_text()
    tour = md[md.index("## A 60-second tour"):md.index("## Clients")]
    steps = session(tour)
    assert len(steps) == 8, steps
    edit = re.search(r"in `((?:scripts|policies)/\w+\.lua)`, set\s+`(\w+) = ([\d.]+)` \(([\d.]+) before", tour)
    assert edit, "the tour's edit is not where it was"
    path, knob, value, old = edit.groups()
    log_line = re.search(r"first terminal logs\n\n    (info  .+)\n", tour).group(1)

    sdir, pdir = tmp_path / "scripts", tmp_path / "policies"
    shutil.copytree(str(ROOT / "scripts"), str(sdir))
    shutil.copytree(str(ROOT / "policies"), str(pdir))
    srv = make_server(extra_args=["--scripts", str(sdir), "--policies", str(pdir),
                                  "--log-level", "info",
                                  "--init", str(ROOT / "examples" / "demo_data.lua")])
    wait(lambda: "ease trained" in srv.log(100000), "the demo's EASE trained")
    monkeypatch.chdir(str(ROOT))            # "at the repository root"

    ns = {}
    edited = False
    tops = []
    for src, want in steps:
        src = src.replace('"127.0.0.1:7700"', repr(srv.tcp))
        if src.startswith("top(") and len(tops) == 2 and not edited:
            # the tour's edit comes before its third top("u1")
            target = tmp_path / path             # the copy of scripts/ or policies/
            text = target.read_text()
            line = "local %s = %s\n" % (knob, old)
            assert line in text, "%s has no line %r" % (path, line)
            tmp = str(target) + ".tmp"
            with open(tmp, "w") as f:
                f.write(text.replace(line, "local %s = %s\n" % (knob, value)))
            Path(tmp).rename(target)            # editors save by rename
            wait(lambda: log_line in srv.log(100000), "log line %r" % log_line, limit=5)
            edited = True
        got = run_step(src, ns)
        if want is None:
            assert got is None, (src, got)
            continue
        expected = ast.literal_eval(want)
        if isinstance(expected, list):
            assert len(got) == len(expected) == 8, (src, got)
            assert got[:N_STABLE] == expected[:N_STABLE], \
                "%s\n got    %r\n README %r" % (src, got, expected)
            tops.append(got)
        else:
            assert got == expected, (src, got, expected)
    assert edited and len(tops) == 3, (edited, tops)
    ns["c"].close()

    # what the text claims: the clicks turn u1 to scifi; the edit mixes
    # other genres back in
    before, clicked, mixed = (genres(t[:N_STABLE]) for t in tops)
    assert set(before) == {"comedy", "horror"}, before
    assert clicked["scifi"] >= 5 and len(clicked) <= 3, clicked
    assert mixed["scifi"] < clicked["scifi"] and len(mixed) >= len(clicked) + 2, (clicked, mixed)
