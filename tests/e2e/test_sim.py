"""`recd sim` end to end: a small seeded world run against the project's
scripts and the sim's own learners. The oracle's expected CTR beats every
arm's in every tenth; a uniform random list's measured clicks match their
closed form; runs repeat exactly; the JSON and the SVG are well formed;
--connect gives the in-process figures; bad options exit 2."""
import json
import math
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECD_BIN = os.path.abspath(os.environ.get("RECD_BIN") or str(ROOT / "recd"))
SCRIPTS = ["--scripts", str(ROOT / "scripts"), "--policies", str(ROOT / "policies")]
TIMEOUT = 300
# a small world: each run takes seconds
SMALL = ["--users", "100", "--items", "200", "--requests", "1500", "--warmup", "200",
         "--seed", "5"]
FIGURES = ("requests", "ctr", "expected_ctr", "random_ctr", "oracle_ctr", "conversion_rate",
           "value_per_impression", "repeated", "fill", "clicks", "conversions")


def run_sim(*args, check=True):
    r = subprocess.run([RECD_BIN, "sim", "--quiet", *args], capture_output=True, text=True,
                       timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    if check:
        assert r.returncode == 0, "exit %s\n%s\n%s" % (r.returncode, r.stdout, r.stderr)
    return r


def arms(out):
    d = json.loads(out)
    return d, {a["pipeline"]: a for a in d["arms"]}


def test_oracle_beats_every_arm_in_every_tenth(tmp_path):
    svg = tmp_path / "ctr.svg"
    r = run_sim(*SCRIPTS, *SMALL, "--json", "--svg", str(svg), "--pipelines",
                "default,strategy:popular,baseline:random,baseline:popular,"
                "baseline:profile_ts,baseline:linucb")
    d, by = arms(r.stdout)
    assert len(by) == 6
    for name, a in by.items():
        assert "error" not in a, a
        assert len(a["tenths"]) == 10
        for t in a["tenths"]:
            assert t["requests"] == 150
            assert t["oracle_ctr"] > t["expected_ctr"], (name, t)
            assert t["oracle_ctr"] > t["random_ctr"], (name, t)
            assert 0 <= t["repeated"] <= 1 and 0 < t["coverage"] <= 1
    # the warm-up gives the scripts something to show
    assert by["default"]["fill"] > 0.9
    # the learners learn something in a world with structure
    assert by["baseline:profile_ts weight=0.1 prior=20"]["ctr"] > \
        by["baseline:random"]["ctr"]
    # the SVG: one line per arm and two references, labelled
    root = ET.parse(svg).getroot()
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 6 + 2
    labels = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert "oracle" in labels and "strategy:popular" in labels


def test_random_list_matches_its_closed_form():
    """Over a long run, the clicks on uniform random lists are the sum of
    independent (or negatively correlated) Bernoulli draws whose mean the
    closed form gives: within four standard deviations, sd <= sqrt(mean).
    A small catalogue, so that fatigue weighs (most slots repeat)."""
    r = run_sim("--users", "50", "--items", "60", "--new-items", "0", "--requests", "30000",
                "--json", "--pipelines", "baseline:random")
    _, by = arms(r.stdout)
    a = by["baseline:random"]
    assert a["repeated"] > 0.5  # fatigue is in play
    slots = a["requests"] * 10
    expected = a["random_ctr"] * slots
    assert abs(a["clicks"] - expected) <= 4 * math.sqrt(expected), (a["clicks"], expected)
    # and the lists' own expectation agrees with the closed form
    assert abs(a["expected_ctr"] - a["random_ctr"]) <= 4 * math.sqrt(expected) / slots


def test_same_seed_same_json():
    args = (*SCRIPTS, *SMALL, "--json", "--pipelines", "default,baseline:profile_ts")
    one, two = (json.loads(run_sim(*args).stdout) for _ in range(2))
    one.pop("seconds")
    two.pop("seconds")
    assert one == two
    other = json.loads(run_sim(*SCRIPTS, *SMALL[:-1], "6", "--json", "--pipelines",
                               "default,baseline:profile_ts").stdout)
    other.pop("seconds")
    assert other != one


def test_json_fields():
    r = run_sim(*SMALL, "--json", "--pipelines", "baseline:random", "--organic", "0.5")
    d, by = arms(r.stdout)
    for k in ("seed", "users", "items", "new_items", "topics", "n", "requests", "drift_share",
              "drift_at", "organic", "warmup", "examination", "fatigue", "relevance"):
        assert k in d["world"], k
    a = by["baseline:random"]
    for k in FIGURES + ("organic_clicks", "last3", "tenths"):
        assert k in a, k
    for k in FIGURES + ("coverage", "catalogue"):
        assert k in a["tenths"][0], k
    assert 600 <= a["organic_clicks"] - 200 <= 900  # 0.5 per request, besides the warm-up
    # items arrive over the run: the catalogue grows to 200 + 10%
    assert a["tenths"][0]["catalogue"] < a["tenths"][-1]["catalogue"] == 220
    assert isinstance(d["seconds"], float)


def test_table_and_help():
    r = run_sim(*SMALL, "--pipelines", "baseline:random,baseline:linucb", "--grid")
    assert "tenth" in r.stdout and "oracle" in r.stdout
    assert "best of the grid: baseline:linucb alpha=" in r.stdout
    assert r.stdout.count("baseline:linucb alpha=") >= 4 + 1
    d, by = arms(run_sim(*SMALL, "--pipelines", "baseline:profile_ts", "--grid", "--json").stdout)
    assert len(by) == 4 * 3
    best, = d["best_of_grid"]
    assert best in by and by[best]["ctr"] == max(a["ctr"] for a in by.values())
    h = run_sim("--help")
    for flag in ("--pipelines", "--connect", "--fatigue", "--examination", "--drift-share",
                 "--organic", "--json", "--svg", "--grid"):
        assert flag in h.stdout, flag


def test_connect_runs_over_the_protocol(make_server):
    """The same world against a running server: the figures of the
    in-process run, within the play of the scripts' own randomness."""
    srv = make_server(extra_args=SCRIPTS)
    world = ["--users", "150", "--items", "300", "--requests", "3000", "--warmup", "300",
             "--seed", "11", "--json", "--pipelines", "default,baseline:random"]
    r = run_sim("--connect", srv.unix, *world)
    assert "did not train" not in r.stderr, r.stderr
    _, served = arms(r.stdout)
    _, local = arms(run_sim(*SCRIPTS, *world).stdout)
    s, l = served["default"], local["default"]
    assert s["fill"] == l["fill"] == 1.0
    assert abs(s["expected_ctr"] - l["expected_ctr"]) <= 0.25 * l["expected_ctr"], (s, l)
    assert abs(s["repeated"] - l["repeated"]) <= 0.1
    # the world and the baseline beside it are the same people
    assert served["baseline:random"] == local["baseline:random"]
    with srv.connect() as c:
        info = c.call("sys.info")
        assert info["items"] == 330
        # warm-up clicks, clicks and purchases, all stored
        assert info["events"] == s["clicks"] + s["conversions"] + s["organic_clicks"]
        stats = c.call("stats.get")
        shown = sum(m["total"]["impressions"] for m in stats["pipelines"].values())
        assert shown == 3000 * 10
    # a second run would mix with the first: refused, nothing run
    r = run_sim("--connect", srv.unix, *world, check=False)
    assert r.returncode == 1
    _, again = arms(r.stdout)
    assert "already holds 330 items" in again["default"]["error"]
    assert again["baseline:random"] == local["baseline:random"]


def test_drift_changes_tastes_at_its_point():
    """The same world with and without drift: identical until the drift
    point, different after it (the people's hidden tastes changed)."""
    base = ["--users", "80", "--items", "100", "--new-items", "0", "--requests", "2000",
            "--json", "--pipelines", "baseline:random", "--drift-at", "0.5"]
    _, still = arms(run_sim(*base, "--drift-share", "0").stdout)
    _, moved = arms(run_sim(*base, "--drift-share", "1").stdout)
    a, b = still["baseline:random"]["tenths"], moved["baseline:random"]["tenths"]
    assert a[:5] == b[:5]
    for k in range(5, 10):
        assert a[k]["oracle_ctr"] != b[k]["oracle_ctr"], k


def test_bad_options_exit_2():
    cases = [
        (["--users", "0"], "--users"),
        (["--fatigue", "2"], "--fatigue"),
        (["-n", "0"], "--n"),
        (["--requests", "5"], "--requests"),
        (["--items", "5"], "--items"),
        (["--drift-at", "x"], "--drift-at"),
        (["--nope"], "unknown option"),
        (["extra"], "unexpected argument"),
        (["--pipelines", "baseline:nope"], "unknown baseline"),
        (["--pipelines", "nosuch", *SCRIPTS], "unknown pipeline 'nosuch'"),
        (["--pipelines", "strategy:nosuch", *SCRIPTS], "unknown strategy 'nosuch'"),
        (["--pipelines", "default,strategy:popular", "--connect", "127.0.0.1:1"],
         "one scripted arm"),
        (["--users", "100000", "--items", "10000"], "at most"),
    ]
    for args, said in cases:
        r = run_sim(*args, check=False)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert said in r.stderr, (args, r.stderr)
        assert r.stdout == "", args


def test_default_learns_from_its_own_lists():
    """From an empty history the default pipeline's click model learns from
    what it showed: well above a random list over the run, rising to the end,
    few slots spent again on what a person was shown. (Deterministic for the
    seed; before the click model the default stayed near a random list.)"""
    r = run_sim(*SCRIPTS, "--users", "300", "--items", "600", "--requests", "3000",
                "--seed", "5", "--json", "--pipelines", "default")
    (a,) = json.loads(r.stdout)["arms"]
    assert a["fill"] > 0.999  # a person who saw nearly all 600 may get one fewer
    assert a["expected_ctr"] > 1.4 * a["random_ctr"], a
    first, last3 = a["tenths"][0], a["last3"]
    assert last3["expected_ctr"] / last3["random_ctr"] > \
        first["expected_ctr"] / first["random_ctr"], a["tenths"]
    assert a["repeated"] < 0.3, a
