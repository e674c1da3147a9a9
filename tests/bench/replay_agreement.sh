#!/bin/sh
# replay_agreement.sh RECD [DIR [LIMIT]] - the same MovieLens replay of the
# default pipeline in-process (`recd eval`) and over the protocol against a
# fresh `recd serve` (`recd eval --connect` on its Unix socket), for both
# protocols, with the log's timestamps and with them removed (file order).
# Prints both figures and their ratio, then BENCH lines. LIMIT (default
# 30000; 0: the whole log) bounds the events read: prequential over the
# protocol asks one list per event. DIR as in eval_bench.sh; skipped
# without the data.
recd=${1:?usage: replay_agreement.sh RECD [DIR [LIMIT]]}
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${2:-${RECD_MOVIELENS:-$root/../shared/data/ml-latest-small}}
limit=${3:-30000}
if [ ! -f "$dir/ratings.csv" ]; then
    echo "replay agreement skipped: no MovieLens ratings.csv in $dir (set RECD_MOVIELENS)"
    exit 0
fi
tmp=$(mktemp -d)
pid=
trap 'test -n "$pid" && kill $pid 2>/dev/null; rm -rf "$tmp"' EXIT
cut -d, -f1-3 "$dir/ratings.csv" >"$tmp/nots.csv"
for log in "$dir/ratings.csv" "$tmp/nots.csv"; do
    for p in holdout prequential; do
        "$recd" eval --scripts "$root/scripts" --policies "$root/policies" --protocol $p \
            --pipelines default --limit "$limit" --quiet --json "$log" >"$tmp/local.json" || exit 1
        rm -rf "$tmp/data"
        "$recd" serve --data "$tmp/data" --listen "" --unix "$tmp/s.sock" \
            --scripts "$root/scripts" --policies "$root/policies" --log-level warn \
            >"$tmp/serve.log" 2>&1 &
        pid=$!
        i=0
        while [ ! -S "$tmp/s.sock" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        "$recd" eval --connect "$tmp/s.sock" --protocol $p --pipelines default \
            --limit "$limit" --quiet --json "$log" >"$tmp/served.json" || exit 1
        kill $pid; wait $pid; pid=
        /usr/bin/python3 - "$tmp/local.json" "$tmp/served.json" "$log" "$p" <<'PY'
import json, sys
local, served = (json.load(open(f))["results"][0] for f in sys.argv[1:3])
ts = "nots" if sys.argv[3].endswith("nots.csv") else "ts"
for m in (("hr", "ndcg") if sys.argv[4] == "holdout" else ("hr", "mrr")):
    ratio = served[m] / local[m] if local[m] else float("nan")
    print("%-11s %-4s %-4s in-process %.4f  over the protocol %.4f  ratio %.4f"
          % (sys.argv[4], ts, m, local[m], served[m], ratio))
    print("BENCH name=replay_%s_%s_%s_ratio value=%.4f unit=ratio" % (sys.argv[4], ts, m, ratio))
PY
    done
done
