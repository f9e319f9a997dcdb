#!/usr/bin/env bash
# End-to-end scenarios of docs/BENCHMARKS.md, over loopback: the server
# pinned to core 0, feed-sim to core 1, one fresh server per run.
#
#   benches/e2e.sh dashboard [RATE]     10,000 clients x 10 of 100 symbols (default 1000 ticks/s)
#   benches/e2e.sh firehose RATE...     1,000 clients on "*", one run per rate
#   benches/e2e.sh idle                 10,000 clients x 10 symbols at 10 ticks/s: memory per connection
#   benches/e2e.sh stalled              the dashboard with 100 clients that stop reading
#   benches/e2e.sh stalled-long         100 clients on "*" at 800 ticks/s, 50 stop reading for 60 s
#
# Extra feed-sim flags can follow in FEED_SIM_FLAGS. Results (JSON, .hgrm,
# SVG) land in ${OUT:-target/e2e}. TICKCAST=path runs another server binary
# (e.g. an older build, for a side-by-side comparison).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-target/e2e}
PORT=${PORT:-18200}
WARMUP=${WARMUP:-3}
DURATION=${DURATION:-10}
mkdir -p "$OUT"
cargo build --release -q -p tickcast -p feed-sim

# run NAME RATE FEED-SIM-FLAGS...: one fresh server, one load run.
run() {
    local name=$1 rate=$2
    shift 2
    taskset -c 0 "${TICKCAST:-./target/release/tickcast}" --listen "127.0.0.1:$PORT" --rate "$rate" \
        >"$OUT/$name.server.log" 2>&1 &
    local server=$!
    # Wait for the listener (no sleep-and-hope: poll the port, bounded).
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        sleep 0.05
    done
    echo "== $name: $rate ticks/s, feed-sim $*"
    taskset -c 1 ./target/release/feed-sim load --url "ws://127.0.0.1:$PORT/ws" \
        --warmup "$WARMUP" --duration "$DURATION" --server-pid "$server" --no-progress \
        --json "$OUT/$name.json" --hgrm "$OUT/$name.hgrm" --plot "$OUT/$name.svg" \
        "$@" ${FEED_SIM_FLAGS:-} || true
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
}

scenario=${1:?usage: benches/e2e.sh dashboard|firehose|idle|stalled|stalled-long [RATE...]}
shift
case "$scenario" in
    dashboard) rate=${1:-1000}; run "dashboard-$rate" "$rate" --clients 10000 --subs 10 ;;
    firehose)
        [ $# -gt 0 ] || set -- 1000 2000 3000 4000
        for rate in "$@"; do run "firehose-$rate" "$rate" --clients 1000 --all; done ;;
    idle) run idle 10 --clients 10000 --subs 10 --idle ;;
    stalled) run stalled 1000 --clients 10000 --subs 10 --stall 100 ;;
    stalled-long) DURATION=60 run stalled-long 800 --clients 100 --all --stall 50 ;;
    *) echo "unknown scenario $scenario: dashboard, firehose, idle, stalled or stalled-long" >&2; exit 2 ;;
esac
