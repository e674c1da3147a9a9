#!/bin/sh
# server_bench.sh RECD - the server end to end, against Redis on the same box.
#
# Starts `RECD serve` on a fresh data folder (TCP on a free loopback port,
# plus a Unix socket), drives it with `RECD bench`, then runs Debian's
# redis-server / redis-benchmark with the same clients and pipeline depth,
# and prints one `BENCH name=... value=... unit=...` line per figure,
# ending with recd/Redis ratios (> 1: recd is faster).
#
#   recd                        redis
#   sys.ping      -c50 -P16     PING          -c50 -P16
#   sys.ping      -c50 -P1      PING          -c50 -P1
#   event.add     -c50 -P32     EVAL LPUSH+INCR -c50 -P32, AOF fsync always
#                               (and again without persistence, for scale)
#   rec.recommend -c50 -P1 / -P16, 10,000 items d=64, 100,000 users
#   rec.similar   -c50 -P16
#
# Durability. recd answers event.add only once the event is committed to
# LMDB (group commit: one fsync'ed transaction per loop iteration). The
# Redis setting that promises the same is `appendonly yes` with
# `appendfsync always`: Redis then writes and fsyncs the AOF before it
# sends the replies of an event-loop iteration, which is also a group
# commit. So the headline ratio_event_recd_over_redis compares against that
# server. A second Redis without persistence (`--save '' --appendonly no`)
# gives the in-memory ceiling (ratio_event_recd_over_redis_nopersist);
# PING does not touch the disk and runs against that one. The EVAL stores
# one event (LPUSH a ~35-byte payload like recd's {user, item, type}, INCR
# a counter); both servers keep their files in the same temporary folder,
# so they share a filesystem (printed below: on tmpfs nobody really syncs).
#
# Every recd figure is the median of 3 runs (`recd bench -r 3`), every
# Redis figure the median of 3 redis-benchmark runs. RECD_BENCH_QUICK=1
# runs a tenth of the requests, once. RECD_BENCH_DIR picks the parent of
# the temporary folder (default $TMPDIR or /tmp). Needs redis-server and
# redis-benchmark for the comparison; without them only recd is measured.
set -u

RECD=${1:?usage: server_bench.sh PATH/TO/recd}
case $RECD in /*) ;; *) RECD=$(pwd)/$RECD ;; esac
[ -x "$RECD" ] || { echo "server_bench: $RECD is not executable" >&2; exit 2; }

quick=${RECD_BENCH_QUICK:-0}
[ "$quick" = 0 ] && quick=
if [ -n "$quick" ]; then runs=1; scale=10; else runs=3; scale=1; fi
n() { echo $(($1 / scale)); }   # request counts, scaled down when quick

tmp=$(mktemp -d "${RECD_BENCH_DIR:-${TMPDIR:-/tmp}}/recd-bench.XXXXXX") || exit 2
pids=""               # servers still running, killed on exit
forget() { pids=$(echo " $pids " | sed "s/ $1 / /"); }
cleanup() {
    for p in $pids; do
        kill "$p" 2>/dev/null
    done
    for p in $pids; do
        wait "$p" 2>/dev/null
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

status=0

# A loopback port nobody listens on (checked with ss when it exists; the
# servers are started with retries anyway, in case of a race).
free_port() {
    while :; do
        p=$(( $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 30000 + 20000 ))
        if command -v ss >/dev/null 2>&1; then
            [ -z "$(ss -Htln "sport = :$p" 2>/dev/null)" ] && break
        else
            break
        fi
    done
    echo "$p"
}

# wait_for CMD... : retry CMD for up to 10 s; 0 when it succeeded.
wait_for() {
    i=0
    while [ $i -lt 100 ]; do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

alive() { kill -0 "$1" 2>/dev/null; }

# median of the numbers on stdin
median() {
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# value NAME FILE: the value of BENCH line NAME in FILE (empty if none)
value() {
    sed -n "s/^BENCH name=$1 value=\([^ ]*\) .*/\1/p" "$2" | tail -1
}

ratio() { # ratio NAME A B
    if [ -n "$2" ] && [ -n "$3" ]; then
        awk -v a="$2" -v b="$3" -v n="$1" \
            'BEGIN { if (b > 0) printf "BENCH name=%s value=%.3f unit=ratio\n", n, a / b }'
    else
        echo "server_bench: no figures for $1" >&2
    fi
}

# ---- recd ------------------------------------------------------------------

echo "== recd server: $tmp ($(stat -f -c %T "$tmp" 2>/dev/null || echo '?') filesystem), $(nproc 2>/dev/null || echo '?') cpus"
recd_pid=""
for _ in 1 2 3 4 5; do
    port=$(free_port)
    rm -rf "$tmp/data"
    "$RECD" serve --data "$tmp/data" --listen "127.0.0.1:$port" \
        --unix "$tmp/recd.sock" >"$tmp/recd.log" 2>&1 &
    recd_pid=$!
    pids="$pids $recd_pid"
    if wait_for "$RECD" bench -p "$port" -c 1 -n 1 -t ping -q; then
        break
    fi
    kill "$recd_pid" 2>/dev/null
    wait "$recd_pid" 2>/dev/null
    forget "$recd_pid"
    recd_pid=""
done
if [ -z "$recd_pid" ]; then
    echo "server_bench: recd serve did not come up; its log:" >&2
    cat "$tmp/recd.log" >&2
    exit 1
fi

out=$tmp/recd.out
: >"$out"
# bench ARGS...: run recd bench on the TCP port, show and keep its output.
# The server is this script's own, started above on a fresh folder; each
# test after the first writing one finds the previous tests' data there,
# hence --force. --prefix '': plain ids u1.., i1.. (up to 9 bytes, compared
# in the id map's slot), as in the published figures.
bench() {
    "$RECD" bench -p "$port" -r "$runs" -q --force --prefix '' "$@" >"$tmp/one.out" 2>&1
    rc=$?
    cat "$tmp/one.out"
    cat "$tmp/one.out" >>"$out"
    if [ $rc -ne 0 ] || ! alive "$recd_pid"; then
        echo "server_bench: recd bench $* failed (exit $rc)" >&2
        status=1
    fi
}

bench -t ping -c 50 -P 16 -n "$(n 1000000)"
bench -t ping -c 50 -P 1 -n "$(n 200000)"
bench -t event -c 50 -P 32 -n "$(n 100000)"
bench -t recommend -c 50 -P 1 -n "$(n 50000)" \
    --load-items 10000 --dim 64 --load-users 100000
bench -t recommend -c 50 -P 16 -n "$(n 100000)" --users 100000 --items 10000
bench -t similar -c 50 -P 16 -n "$(n 100000)" --items 10000
bench -t ping -c 50 -P 16 -n "$(n 1000000)" -s "$tmp/recd.sock"

if ! alive "$recd_pid"; then
    echo "server_bench: recd serve died; its log:" >&2
    tail -20 "$tmp/recd.log" >&2
    status=1
fi
kill "$recd_pid" 2>/dev/null
wait "$recd_pid" 2>/dev/null
forget "$recd_pid"

# ---- redis -----------------------------------------------------------------

if ! command -v redis-server >/dev/null 2>&1 ||
   ! command -v redis-benchmark >/dev/null 2>&1; then
    echo "server_bench: redis-server/redis-benchmark not installed; no comparison" >&2
    exit $status
fi

# start_redis NAME ARGS...: a redis-server in $tmp/NAME; sets rport, rpid
start_redis() {
    name=$1
    shift
    mkdir -p "$tmp/$name"
    rpid=""
    for _ in 1 2 3 4 5; do
        rport=$(free_port)
        redis-server --port "$rport" --bind 127.0.0.1 --dir "$tmp/$name" \
            --daemonize no --save '' "$@" >"$tmp/$name.log" 2>&1 &
        rpid=$!
        pids="$pids $rpid"
        if wait_for redis-cli -p "$rport" ping; then
            return 0
        fi
        kill "$rpid" 2>/dev/null
        wait "$rpid" 2>/dev/null
        forget "$rpid"
        rpid=""
    done
    echo "server_bench: redis-server did not come up; its log:" >&2
    cat "$tmp/$name.log" >&2
    return 1
}

stop_redis() {
    redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || kill "$rpid" 2>/dev/null
    wait "$rpid" 2>/dev/null
    forget "$rpid"
}

rout=$tmp/redis.out
: >"$rout"
# rbench NAME -c C -P P -n N [-r R] CMD...: median req/s and p99 of runs
rbench() {
    name=$1
    shift
    : >"$tmp/rps" && : >"$tmp/p99"
    i=0
    while [ $i -lt $runs ]; do
        if ! redis-benchmark -p "$rport" --csv "$@" >"$tmp/r.csv" 2>"$tmp/r.err"; then
            echo "server_bench: redis-benchmark $name failed:" >&2
            cat "$tmp/r.err" >&2
            status=1
            return
        fi
        # "test","rps","avg","min","p50","p95","p99","max": the last row
        tail -1 "$tmp/r.csv" | awk -F'","' '{ print $2 }' >>"$tmp/rps"
        tail -1 "$tmp/r.csv" | awk -F'","' '{ print $7 }' >>"$tmp/p99"
        i=$((i + 1))
    done
    rps=$(median <"$tmp/rps")
    p99=$(median <"$tmp/p99")
    printf '%s: %s requests per second, p99=%s msec\n' "$name" "$rps" "$p99"
    {
        echo "BENCH name=$name value=$rps unit=req/s"
        echo "BENCH name=${name}_p99 value=$p99 unit=ms"
    } | tee -a "$rout"
}

SCRIPT="redis.call('LPUSH', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[2])"
PAYLOAD='u:__rand_int__|i:__rand_int__|click'

echo "== redis $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'), no persistence"
if start_redis mem --appendonly no; then
    rbench redis_ping_c50_P16 -c 50 -P 16 -n "$(n 2000000)" PING
    rbench redis_ping_c50_P1 -c 50 -P 1 -n "$(n 200000)" PING
    rbench redis_eval_event_c50_P32_nopersist -c 50 -P 32 -n "$(n 200000)" \
        -r 100000 EVAL "$SCRIPT" 2 ev cnt "$PAYLOAD"
    stop_redis
fi

echo "== redis, appendonly yes, appendfsync always"
if start_redis aof --appendonly yes --appendfsync always; then
    rbench redis_eval_event_c50_P32 -c 50 -P 32 -n "$(n 100000)" \
        -r 100000 EVAL "$SCRIPT" 2 ev cnt "$PAYLOAD"
    stop_redis
fi

# ---- ratios ----------------------------------------------------------------

echo "== recd / redis"
ratio ratio_ping_recd_over_redis \
    "$(value recd_ping_c50_P16 "$out")" "$(value redis_ping_c50_P16 "$rout")"
ratio ratio_ping_c50_P1_recd_over_redis \
    "$(value recd_ping_c50_P1 "$out")" "$(value redis_ping_c50_P1 "$rout")"
ratio ratio_event_recd_over_redis \
    "$(value recd_event_c50_P32 "$out")" "$(value redis_eval_event_c50_P32 "$rout")"
ratio ratio_event_recd_over_redis_nopersist \
    "$(value recd_event_c50_P32 "$out")" \
    "$(value redis_eval_event_c50_P32_nopersist "$rout")"
# p99 the other way round: > 1 means recd's tail is shorter
ratio ratio_ping_p99_redis_over_recd \
    "$(value redis_ping_c50_P16_p99 "$rout")" "$(value recd_ping_c50_P16_p99 "$out")"
ratio ratio_event_p99_redis_over_recd \
    "$(value redis_eval_event_c50_P32_p99 "$rout")" \
    "$(value recd_event_c50_P32_p99 "$out")"

exit $status
