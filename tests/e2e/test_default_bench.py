"""tests/bench/default_bench.py in its quick mode: every part runs against
the shipped scripts and policies and prints its figures as BENCH lines and
a table; --only runs single parts; a bad part is refused. No figure is
judged here (speed is for the benchmark to show, not for a test to time).

The bench measures the optimised build: RECD_REL_BIN when the suite runs
a sanitised one (tests/run.sh sets it), else RECD_BIN."""
import os
import re
import shutil
import subprocess
import sys

from conftest import RECD_BIN, ROOT

BENCH = str(ROOT / "tests" / "bench" / "default_bench.py")
BINARY = os.path.abspath(os.environ.get("RECD_REL_BIN") or RECD_BIN)
TIMEOUT = 300.0
LINE = re.compile(r"^BENCH name=(\S+) value=(-?[0-9.]+(?:e[-+]?[0-9]+)?) unit=(\S+)$", re.M)


def run(*args):
    env = dict(os.environ)
    env.pop("RECD_BENCH_QUICK", None)
    return subprocess.run([sys.executable, BENCH, BINARY, *args], capture_output=True, text=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL, env=env)


def figures(out):
    return {m.group(1): (float(m.group(2)), m.group(3)) for m in LINE.finditer(out)}


def test_quick_run_of_every_part():
    r = run("--quick")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    got = figures(r.stdout)
    want = {
        "default_recommend_c1_p50": "ms", "default_recommend_c1_p99": "ms",
        "default_recommend_c1": "req/s", "default_recommend_c50": "req/s",
        "default_recommend_c50_p99": "ms",
        "default_event_c50_P32": "events/s", "default_event_c50_P32_p99": "ms",
        "default_event_c50_P32_schedule": "events/s",
        "default_train_idle": "s", "default_train_under_events": "s",
        "ratio_default_train_under_events_over_idle": "ratio",
        "default_feedback_to_effect_p50": "ms", "default_feedback_to_effect_p99": "ms",
        "default_recommend_click_model_c1_p50": "ms",
        "default_recommend_click_model_c1_p99": "ms",
    }
    for axis, values in (("items", (2000, 5000, 20000)), ("history", (10, 100, 1000))):
        for v in values:
            want["default_scale_%s%d_recommend_c1_p50" % (axis, v)] = "ms"
            want["default_scale_%s%d_recommend_c1_p99" % (axis, v)] = "ms"
    if shutil.which("redis-server") and shutil.which("redis-benchmark"):
        want.update({"default_redis_eval_event_c50_P32": "events/s",
                     "default_redis_eval_event_c50_P32_nopersist": "events/s",
                     "ratio_default_event_over_redis": "ratio",
                     "ratio_default_event_over_redis_nopersist": "ratio"})
    for name, unit in want.items():
        assert name in got, (name, r.stdout[-3000:])
        assert got[name][1] == unit, (name, got[name])
        assert got[name][0] > 0, (name, got[name])
    # the ratio is the quotient of the two figures printed beside it
    if "ratio_default_event_over_redis" in want:
        q = got["default_event_c50_P32"][0] / got["default_redis_eval_event_c50_P32"][0]
        assert abs(got["ratio_default_event_over_redis"][0] - q) <= 0.01 * q + 1e-3
    # the 5,000-item point of the catalogue axis is the main fixture's figure
    assert got["default_scale_items5000_recommend_c1_p50"] == got["default_recommend_c1_p50"]
    # every feedback click changed the list and never came back
    m = re.search(r"feedback to effect: (\d+) clicks; the list changed after (\d+), the clicked "
                  r"item came back in 0", r.stdout)
    assert m and int(m.group(1)) > 0 and m.group(1) == m.group(2), r.stdout
    table = r.stdout[r.stdout.index("The default configuration (make run) (quick)"):]
    for row in ("rec.recommend n=10, 1 client, p50", "durable event.add -c 50 -P 32",
                "model.train all: idle / under event.add", "feedback to effect",
                "scale: 1,000 events/user"):
        assert row in table, table


def test_only_one_part():
    r = run("--quick", "--only", "recommend")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    names = set(figures(r.stdout))
    assert names == {"default_load_events", "default_startup_training",
                     "default_recommend_c1_p50", "default_recommend_c1_p99",
                     "default_recommend_c1"}, names


def test_unknown_part_is_refused():
    r = run("--quick", "--only", "recommend,nosuch")
    assert r.returncode != 0
    assert "unknown part(s) nosuch" in r.stderr
    assert "BENCH" not in r.stdout
