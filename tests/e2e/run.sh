#!/bin/sh
# run.sh [RECD_BIN] - the end-to-end suite against a real `recd serve`.
# Prints "RESULT passed=N failed=M" last (failed counts failures and errors).
if [ -n "$1" ]; then             # relative to the caller's directory
    case "$1" in /*) RECD_BIN=$1 ;; *) RECD_BIN=$(pwd)/$1 ;; esac
    export RECD_BIN
fi
cd "$(dirname "$0")/../.." || exit 1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/e2e 2>&1 | tee "$log"
summary=$(grep -E '(passed|failed|error|no tests ran)' "$log" | tail -1)
count() { echo "$summary" | grep -oE "[0-9]+ $1" | grep -oE '^[0-9]+' | head -1; }
passed=$(count passed); failed=$(count failed); errors=$(count 'errors?')
passed=${passed:-0}; failed=$(( ${failed:-0} + ${errors:-0} ))
[ "$passed" = 0 ] && [ "$failed" = 0 ] && failed=1   # nothing ran: the suite is broken
echo "RESULT passed=$passed failed=$failed"
[ "$failed" = 0 ]
