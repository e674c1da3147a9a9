#!/bin/sh
# eval_bench.sh RECD [DIR] - `recd eval` on a MovieLens folder (ratings.csv):
# prequential and holdout for the default pipeline, every shipped strategy
# alone and the two baselines, K = 10. DIR defaults to $RECD_MOVIELENS or
# ../shared/data/ml-latest-small beside the repository; without one the
# benchmark says so and is skipped. Prints the table, then BENCH lines.
recd=${1:?usage: eval_bench.sh RECD [DIR]}
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${2:-${RECD_MOVIELENS:-$root/../shared/data/ml-latest-small}}
if [ ! -f "$dir/ratings.csv" ]; then
    echo "eval bench skipped: no MovieLens ratings.csv in $dir (set RECD_MOVIELENS)"
    exit 0
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$recd" eval --scripts "$root/scripts" --policies "$root/policies" --strategies \
    --pipelines default,baseline:popular,baseline:random --quiet --json \
    "$dir/ratings.csv" >"$out" || exit 1
/usr/bin/python3 - "$out" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("%s: %d events, %d users, %d items, K=%d" % (d["log"], d["events"], d["users"], d["items"], d["k"]))
for r in d["results"]:
    name = r["pipeline"].replace(":", "_")
    if "error" in r:
        print("%-22s %-12s failed: %s" % (r["pipeline"], r["protocol"], r["error"]))
        continue
    if r["protocol"] == "prequential":
        print("%-22s prequential HR@10 %.4f MRR@10 %.4f coverage %.3f  %8.0f events/s"
              % (r["pipeline"], r["hr"], r["mrr"], r["coverage"], r["events_per_s"]))
        print("BENCH name=eval_preq_hr10_%s value=%.4f unit=ratio" % (name, r["hr"]))
        print("BENCH name=eval_preq_events_per_s_%s value=%.0f unit=events/s" % (name, r["events_per_s"]))
    else:
        print("%-22s holdout     NDCG@10 %.4f Recall@10 %.4f HR@10 %.4f  %8.0f feed events/s"
              % (r["pipeline"], r["ndcg"], r["recall"], r["hr"], r["feed_events_per_s"]))
        print("BENCH name=eval_holdout_ndcg10_%s value=%.4f unit=ratio" % (name, r["ndcg"]))
        print("BENCH name=eval_holdout_recall10_%s value=%.4f unit=ratio" % (name, r["recall"]))
PY
