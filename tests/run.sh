#!/bin/sh
# run.sh BUILD_DIR [SANITIZE] - run every suite, print "N passed, N failed".
build=$1
san=$2
passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

add() { passed=$((passed + $1)); failed=$((failed + $2)); }

export CMOCKA_MESSAGE_OUTPUT=STDOUT
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0

echo "== unit"
for t in "$build"/tests/test_*; do
    [ -x "$t" ] || continue
    timeout 300 "$t" >"$log" 2>&1
    rc=$?
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
    p=${p:-0}; f=${f:-0}
    if [ $rc -ne 0 ] && [ "$f" = 0 ]; then f=1; fi
    [ "$f" != 0 ] && cat "$log"
    echo "  $(basename "$t"): $p passed, $f failed"
    add "$p" "$f"
done

echo "== lua"
preload=""
case "$san" in *address*) preload=$(${CC:-cc} -print-file-name=libasan.so) ;; esac
for t in tests/lua/test_*.lua; do
    [ -f "$t" ] || continue
    LD_PRELOAD="$preload" ASAN_OPTIONS=detect_leaks=0 \
        LUA_CPATH="$build/lua/?.so" LUA_PATH="tests/lua/?.lua;;" \
        timeout 300 lua5.4 "$t" >"$log" 2>&1
    rc=$?
    p=$(sed -n 's/^RESULT passed=\([0-9]*\) failed=\([0-9]*\)$/\1/p' "$log" | tail -1)
    f=$(sed -n 's/^RESULT passed=\([0-9]*\) failed=\([0-9]*\)$/\2/p' "$log" | tail -1)
    p=${p:-0}; f=${f:-0}
    if [ $rc -ne 0 ] && [ "$f" = 0 ]; then f=1; fi
    [ "$f" != 0 ] && cat "$log"
    echo "  $(basename "$t"): $p passed, $f failed"
    add "$p" "$f"
done

echo "== e2e"
# The server under test is the binary of this build (sanitised or not);
# the memory tests measure the optimised one (ASan keeps what is freed).
LD_PRELOAD="" RECD_BIN="$build/recd" RECD_REL_BIN=build/rel/recd ASAN_OPTIONS=detect_leaks=1 \
    timeout 600 sh tests/e2e/run.sh "$build/recd" >"$log" 2>&1
rc=$?
p=$(sed -n 's/^RESULT passed=\([0-9]*\) failed=\([0-9]*\)$/\1/p' "$log" | tail -1)
f=$(sed -n 's/^RESULT passed=\([0-9]*\) failed=\([0-9]*\)$/\2/p' "$log" | tail -1)
p=${p:-0}; f=${f:-0}
if [ $rc -ne 0 ] && [ "$f" = 0 ]; then f=1; fi
[ "$f" != 0 ] && tail -60 "$log"
echo "  tests/e2e: $p passed, $f failed"
add "$p" "$f"

echo "== fuzz"
# libFuzzer targets (clang builds of their own, in build/fuzz), each run for
# RECD_FUZZ_SECONDS on a copy of its corpus.
timeout $((${RECD_FUZZ_SECONDS:-60} * 2 + 600)) \
    sh tests/fuzz/run.sh "${RECD_FUZZ_SECONDS:-60}" >"$log" 2>&1
rc=$?
p=$(sed -n 's/^RESULT passed=\([0-9]*\) failed=\([0-9]*\)$/\1/p' "$log" | tail -1)
f=$(sed -n 's/^RESULT passed=\([0-9]*\) failed=\([0-9]*\)$/\2/p' "$log" | tail -1)
p=${p:-0}; f=${f:-0}
if [ $rc -ne 0 ] && [ "$f" = 0 ]; then f=1; fi
[ "$f" != 0 ] && tail -60 "$log"
grep '^  fuzz_' "$log"
echo "  tests/fuzz: $p passed, $f failed"
add "$p" "$f"

echo "== valgrind"
# The unit tests of the plain build, once more under valgrind's memcheck
# (it has no AVX-512: the kernels fall back to AVX2 there). test_ivf is
# left to the sanitised run above: its k-means trainings over tens of
# thousands of rows take memcheck about six minutes, most of this target.
if command -v valgrind >/dev/null 2>&1; then
    for t in build/rel/tests/test_*; do
        case "$t" in *.d|*/test_ivf) continue ;; esac
        [ -x "$t" ] || continue
        ASAN_OPTIONS= timeout 600 valgrind -q --error-exitcode=99 --leak-check=full \
            --errors-for-leak-kinds=definite "$t" >"$log" 2>&1
        if [ $? -eq 0 ]; then
            add 1 0
            echo "  $(basename "$t"): clean"
        else
            add 0 1
            tail -30 "$log"
            echo "  $(basename "$t"): FAILED under valgrind"
        fi
    done
else
    echo "  valgrind is not installed"
    add 0 1
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
