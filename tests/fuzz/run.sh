#!/bin/sh
# run.sh [SECONDS] - build the msgpack fuzzers with clang + libFuzzer and run
# each for SECONDS (default 60) on a copy of its seed corpus.
#
# Targets: fuzz_rpc (rec_rpc_next, rec_value_scan) and fuzz_lua
# (rec_value_push_lua, rec_value_pack_lua). Binaries go to build/fuzz/; a crashing
# input is saved as build/fuzz/artifacts/<target>-crash-*. To keep it as a
# regression test, copy it into tests/fuzz/corpus/<target>/ (without the
# seed_ prefix): tests/unit/test_fuzz_regress.c runs every corpus file.
# The checked-in corpus is never written to. Prints "RESULT passed=N
# failed=M" last, one test per target.
cd "$(dirname "$0")/../.." || exit 1
secs=${1:-60}
out=build/fuzz
CLANG=${CLANG:-clang}

fail_setup() {
    echo "fuzz: $1"
    echo "RESULT passed=0 failed=1"
    exit 1
}

command -v "$CLANG" >/dev/null 2>&1 ||
    fail_setup "$CLANG not found (Debian: apt-get install clang libclang-rt-14-dev)"
mkdir -p "$out/artifacts" || fail_setup "cannot create $out"
tmp=$(mktemp -d) || fail_setup "mktemp failed"
trap 'rm -rf "$tmp"' EXIT

# Does this clang have libFuzzer?
printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);' \
    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
    >"$tmp/probe.c"
"$CLANG" -fsanitize=fuzzer "$tmp/probe.c" -o "$tmp/probe" >"$tmp/probe.log" 2>&1 ||
    fail_setup "$CLANG cannot link -fsanitize=fuzzer (libFuzzer missing; Debian: apt-get install libclang-rt-14-dev): $(head -3 "$tmp/probe.log")"

pkg_cflags=$(pkg-config --cflags lua5.4 msgpack) &&
    pkg_libs=$(pkg-config --libs lua5.4 msgpack) ||
    fail_setup "pkg-config lua5.4 msgpack failed (liblua5.4-dev, libmsgpack-dev)"
cflags="-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
        -Wall -Wextra -Wno-unused-parameter -Icore/engine -Icore/server -Itests/fuzz $pkg_cflags"
core="core/engine/value.c core/server/rpc.c core/engine/buf.c core/engine/err.c"

passed=0
failed=0
for t in rpc lua; do
    bin=$out/fuzz_$t
    echo "== fuzz_$t: build"
    # shellcheck disable=SC2086
    if ! "$CLANG" $cflags -o "$bin" "tests/fuzz/fuzz_$t.c" $core $pkg_libs -lm \
        >"$tmp/build.log" 2>&1; then
        cat "$tmp/build.log"
        echo "  fuzz_$t: build failed"
        failed=$((failed + 1))
        continue
    fi
    [ -s "$tmp/build.log" ] && cat "$tmp/build.log"
    mkdir -p "$tmp/corpus_$t"
    cp tests/fuzz/corpus/$t/* "$tmp/corpus_$t/" 2>/dev/null
    echo "== fuzz_$t: ${secs}s on $(ls "$tmp/corpus_$t" | wc -l) corpus files"
    timeout $((secs + 120)) "$bin" -max_total_time="$secs" -max_len=65536 \
        -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$out/artifacts/$t-" "$tmp/corpus_$t" \
        >"$tmp/run.log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$tmp/run.log")
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$tmp/run.log")
    cov=$(grep -E '^#[0-9]+' "$tmp/run.log" | tail -1 | sed -n 's/.* cov: \([0-9]*\).* ft: \([0-9]*\).* corp: \([0-9/]*[a-zA-Z]*\).*/cov=\1 ft=\2 corpus=\3/p')
    if [ $rc -eq 0 ]; then
        passed=$((passed + 1))
        echo "  fuzz_$t: ok, ${runs:-?} runs, ${eps:-?} exec/s, $cov"
    else
        failed=$((failed + 1))
        tail -80 "$tmp/run.log"
        echo "  fuzz_$t: FAILED (exit $rc) after ${runs:-?} runs; inputs in $out/artifacts/"
        for a in "$out/artifacts/$t-"*; do [ -e "$a" ] && echo "    $a"; done
    fi
done
echo "RESULT passed=$passed failed=$failed"
[ "$failed" = 0 ]
