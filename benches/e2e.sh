#!/usr/bin/env bash
# End-to-end scenarios of docs/BENCHMARKS.md, over loopback: the server
# pinned to core 0, feed-sim to core 1, one fresh server per run.
#
#   benches/e2e.sh dashboard [RATE]     10,000 clients x 10 of 100 symbols (default 1000 ticks/s)
#   benches/e2e.sh firehose RATE...     1,000 clients on "*", one run per rate
#   benches/e2e.sh ticks RATE...        1 client on "*", one run per rate: the ticks/s the feed path carries
#   benches/e2e.sh idle                 10,000 clients x 10 symbols at 10 ticks/s: memory per connection
#   benches/e2e.sh stalled              the dashboard with 100 clients that stop reading
#   benches/e2e.sh stalled-long         100 clients on "*" at 800 ticks/s, 50 stop reading for 60 s
#
# Extra feed-sim flags can follow in FEED_SIM_FLAGS. Results (JSON, .hgrm,
# SVG) land in ${OUT:-target/e2e}. TICKCAST=path runs another server binary
# (e.g. an older build, for a side-by-side comparison); FEED_SIM=path does
# the same for the load generator.
#
# FEED=nats runs the same scenario with the ticks coming through NATS
# instead of the built-in feed: a fresh nats-server and `feed-sim publish
# --nats` at the same rate, both on core 1 beside the load generator (they
# stand for the machines upstream of a node), the server started with
# --feed nats://... on core 0.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-target/e2e}
PORT=${PORT:-18200}
NATS_PORT=${NATS_PORT:-18222}
FEED=${FEED:-sim}
WARMUP=${WARMUP:-3}
DURATION=${DURATION:-10}
mkdir -p "$OUT"
cargo build --release -q -p tickcast -p feed-sim

# wait_for PORT [PATH]: poll until the port accepts connections (and, with
# PATH, until GET PATH answers 200), for at most 10 s.
wait_for() {
    for _ in $(seq 200); do
        if [ $# -gt 1 ]; then
            curl -sf -o /dev/null "http://127.0.0.1:$1$2" && return 0
        else
            (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        fi
        sleep 0.05
    done
    echo "127.0.0.1:$1 did not come up in 10 s" >&2
    return 1
}

# run NAME RATE FEED-SIM-FLAGS...: one fresh server, one load run.
run() {
    local name=$1 rate=$2 upstream=()
    shift 2
    local feed=(--rate "$rate")
    if [ "$FEED" = nats ]; then
        name=nats-$name
        taskset -c 1 nats-server -a 127.0.0.1 -p "$NATS_PORT" >"$OUT/$name.nats.log" 2>&1 &
        upstream+=($!)
        wait_for "$NATS_PORT"
        feed=(--feed "nats://127.0.0.1:$NATS_PORT")
    fi
    taskset -c 0 "${TICKCAST:-./target/release/tickcast}" --listen "127.0.0.1:$PORT" "${feed[@]}" \
        >"$OUT/$name.server.log" 2>&1 &
    local server=$!
    wait_for "$PORT" /healthz
    if [ "$FEED" = nats ]; then
        taskset -c 1 ./target/release/feed-sim publish --nats "nats://127.0.0.1:$NATS_PORT" \
            --rate "$rate" >"$OUT/$name.publish.log" 2>&1 &
        upstream+=($!)
    fi
    echo "== $name: $rate ticks/s from $FEED, feed-sim $*"
    taskset -c 1 "${FEED_SIM:-./target/release/feed-sim}" load --url "ws://127.0.0.1:$PORT/ws" \
        --warmup "$WARMUP" --duration "$DURATION" --server-pid "$server" --no-progress \
        --json "$OUT/$name.json" --hgrm "$OUT/$name.hgrm" --plot "$OUT/$name.svg" \
        "$@" ${FEED_SIM_FLAGS:-} || true
    kill "$server" "${upstream[@]}" 2>/dev/null || true
    wait "$server" "${upstream[@]}" 2>/dev/null || true
}

scenario=${1:?usage: benches/e2e.sh dashboard|firehose|ticks|idle|stalled|stalled-long [RATE...]}
shift
case "$scenario" in
    dashboard) rate=${1:-1000}; run "dashboard-$rate" "$rate" --clients 10000 --subs 10 ;;
    firehose)
        [ $# -gt 0 ] || set -- 1000 2000 3000 4000
        for rate in "$@"; do run "firehose-$rate" "$rate" --clients 1000 --all; done ;;
    ticks)
        [ $# -gt 0 ] || set -- 100000 200000 400000
        for rate in "$@"; do run "ticks-$rate" "$rate" --clients 1 --all; done ;;
    idle) run idle 10 --clients 10000 --subs 10 --idle ;;
    stalled) run stalled 1000 --clients 10000 --subs 10 --stall 100 ;;
    stalled-long) DURATION=60 run stalled-long 800 --clients 100 --all --stall 50 ;;
    *) echo "unknown scenario $scenario: dashboard, firehose, ticks, idle, stalled or stalled-long" >&2; exit 2 ;;
esac
