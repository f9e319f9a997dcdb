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
#   benches/e2e.sh flood                1 client on "*" at 1000 ticks/s, alone and beside an HTTP flood
#
# flood measures what non-tick load does to the tick path: a bystander
# `feed-sim load --clients 1 --all` at the default rate, run alone
# (baseline) and then with `feed-sim flood` on the same core 1 for its
# whole window (50 keep-alive clients at 4,000 GET/s in all over /symbols,
# /metrics and a missing page, plus 20,000 connections opened and closed
# without a byte); the two alternate ROUNDS times (default 3), each on a
# fresh server, and a table compares the bystander's latency, gaps and
# ticks with what the flood achieved. Extra `feed-sim flood` flags can
# follow in FLOOD_FLAGS and override the scenario's (e.g. "--churn 0" for
# the HTTP flood alone, "--churn-mode partial", "--http-rate 0").
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

# With flood_flags set, run() also starts `feed-sim flood` with them on
# core 1 once the load's warm-up is over, for the load's window (DURATION
# s), writing $OUT/NAME.flood.json.
flood_flags=()

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
    rm -f "$OUT/$name.json" "$OUT/$name.flood.json"
    local during=()
    if [ ${#flood_flags[@]} -gt 0 ]; then
        # The load's window starts WARMUP s after it does (connecting
        # overlaps the warm-up); the flood covers the window.
        (
            sleep "$WARMUP"
            exec taskset -c 1 ./target/release/feed-sim flood --url "http://127.0.0.1:$PORT" \
                --duration "$DURATION" --json "$OUT/$name.flood.json" \
                "${flood_flags[@]}" ${FLOOD_FLAGS:-}
        ) >"$OUT/$name.flood.log" 2>&1 &
        during+=($!)
        echo "== $name: with feed-sim flood ${flood_flags[*]} ${FLOOD_FLAGS:-} in the window"
    fi
    echo "== $name: $rate ticks/s from $FEED, feed-sim $*"
    taskset -c 1 "${FEED_SIM:-./target/release/feed-sim}" load --url "ws://127.0.0.1:$PORT/ws" \
        --warmup "$WARMUP" --duration "$DURATION" --server-pid "$server" --no-progress \
        --json "$OUT/$name.json" --hgrm "$OUT/$name.hgrm" --plot "$OUT/$name.svg" \
        "$@" ${FEED_SIM_FLAGS:-} || true
    if [ ${#during[@]} -gt 0 ]; then
        wait "${during[@]}" || echo "feed-sim flood failed: see $OUT/$name.flood.log" >&2
    fi
    kill "$server" "${upstream[@]}" 2>/dev/null || true
    wait "$server" "${upstream[@]}" 2>/dev/null || true
}

# flood_table ROUNDS: the bystander's figures and the flood's, one row per
# run of the flood scenario.
flood_table() {
    local prefix=
    [ "$FEED" = nats ] && prefix=nats-
    echo
    echo "flood: bystander 1 client on \"*\" at 1000 ticks/s, ${DURATION} s windows; latency in µs"
    printf '%-5s %-8s %8s %8s %8s %5s %6s %7s %7s %9s %9s %8s\n' \
        round run p50 p99 max gaps lost ticks srv-cpu "flood-r/s" "churn-c/s" churned
    local r kind name p50 p99 max gaps lost ticks cpu rps cps churned
    for r in $(seq "$1"); do
        for kind in base flood; do
            name=${prefix}flood-$kind-$r
            if [ ! -s "$OUT/$name.json" ]; then
                printf '%-5s %-8s (no figures: see %s)\n' "$r" "$kind" "$OUT/$name.server.log"
                continue
            fi
            IFS=$'\t' read -r p50 p99 max gaps lost ticks cpu < <(jq -r '[.latency_us.p50,
                .latency_us.p99, .latency_us.max, .gaps.gap_events, .gaps.missing_ticks, .ticks,
                ((.server.cpu_percent // 0) | floor | tostring + "%")] | @tsv' "$OUT/$name.json")
            rps=- cps=- churned=-
            if [ -s "$OUT/$name.flood.json" ]; then
                IFS=$'\t' read -r rps cps churned < <(jq -r '[(.http.requests_per_second // 0
                    | floor), (.churn.connects_per_second // 0 | floor),
                    (.churn.connected // 0)] | @tsv' "$OUT/$name.flood.json")
            elif [ "$kind" = flood ]; then
                rps=failed cps=failed churned=failed
            fi
            printf '%-5s %-8s %8s %8s %8s %5s %6s %7s %7s %9s %9s %8s\n' "$r" "$kind" \
                "$p50" "$p99" "$max" "$gaps" "$lost" "$ticks" "$cpu" "$rps" "$cps" "$churned"
        done
    done
}

scenario=${1:?usage: benches/e2e.sh dashboard|firehose|ticks|idle|stalled|stalled-long|flood [RATE...]}
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
    flood)
        rounds=${ROUNDS:-3}
        for r in $(seq "$rounds"); do
            flood_flags=()
            run "flood-base-$r" 1000 --clients 1 --all
            flood_flags=(--http-clients 50 --http-rate 4000 --churn 20000)
            run "flood-flood-$r" 1000 --clients 1 --all
        done
        flood_flags=()
        flood_table "$rounds" ;;
    *) echo "unknown scenario $scenario: dashboard, firehose, ticks, idle, stalled, stalled-long or flood" >&2; exit 2 ;;
esac
