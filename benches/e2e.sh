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
#   benches/e2e.sh custom RATE FLAGS... one run at RATE ticks/s with these `feed-sim load` flags
#                                       (e.g. custom 1000 --clients 100 --subs 10: a quick check)
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
# PEER=path runs the scenario against tickcast and against that server
# alternately, e.g. the uWebSockets reference of benches/peers/uws/
# (`PEER=target/peers/uws-peer benches/e2e.sh dashboard 100`): each run
# of the scenario becomes a tickcast run and a peer run, one after the
# other, ROUNDS times (default 1; in flood, each of its rounds holds one
# pair), both pinned the same way, each on a fresh server. The peer is
# started as `PEER --port PORT --rate RATE` and waited for on its port
# alone (it serves nothing over HTTP but /ws; feed-sim learns its symbols
# from the `subscribed` reply to "*"). A table at the end gives each run's
# figures and tickcast ÷ peer: delivered msg/s, latency p50 and p99, the
# server's CPU and resident memory, and feed-sim's own CPU (near 100%, the
# load generator is what limits the run). Results are named
# NAME-tickcast-ROUND and NAME-peer-ROUND. The peer has only the
# built-in feed: FEED=nats is for tickcast alone.
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
if [ -n "${PEER:-}" ]; then
    if [ ! -x "$PEER" ]; then
        echo "PEER=$PEER is not an executable; give the path of a built peer server (see benches/peers/uws/README.md)" >&2
        exit 2
    fi
    if [ "$FEED" != sim ]; then
        echo "PEER= runs with the built-in feed only; unset FEED (or FEED=sim) to compare with a peer" >&2
        exit 2
    fi
fi
# Builds what it runs, unless both binaries are given.
if [ -z "${TICKCAST:-}" ] || [ -z "${FEED_SIM:-}" ]; then
    cargo build --release -q -p tickcast -p feed-sim
fi

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

# Pairs of runs each run() makes with PEER set, and the names it ran
# them under (for compare_table).
pair_rounds=${ROUNDS:-1}
compared=()

# run NAME RATE FEED-SIM-FLAGS...: one fresh tickcast and one load run;
# with PEER set, pair_rounds pairs of a tickcast run and a peer run.
run() {
    local name=$1 rate=$2 r
    shift 2
    if [ -z "${PEER:-}" ]; then
        run_one tickcast "$name" "$rate" "$@"
        return
    fi
    for r in $(seq "$pair_rounds"); do
        run_one tickcast "$name-tickcast-$r" "$rate" "$@"
        run_one peer "$name-peer-$r" "$rate" "$@"
    done
    compared+=("$name")
}

# run_one SERVER NAME RATE FEED-SIM-FLAGS...: one fresh server (tickcast
# or the PEER), one load run.
run_one() {
    local kind=$1 name=$2 rate=$3 upstream=()
    shift 3
    local feed=(--rate "$rate")
    if [ "$FEED" = nats ]; then
        name=nats-$name
        taskset -c 1 nats-server -a 127.0.0.1 -p "$NATS_PORT" >"$OUT/$name.nats.log" 2>&1 &
        upstream+=($!)
        wait_for "$NATS_PORT"
        feed=(--feed "nats://127.0.0.1:$NATS_PORT")
    fi
    local server
    if [ "$kind" = peer ]; then
        taskset -c 0 "$PEER" --port "$PORT" --rate "$rate" >"$OUT/$name.server.log" 2>&1 &
        server=$!
        wait_for "$PORT"
    else
        taskset -c 0 "${TICKCAST:-./target/release/tickcast}" --listen "127.0.0.1:$PORT" "${feed[@]}" \
            >"$OUT/$name.server.log" 2>&1 &
        server=$!
        wait_for "$PORT" /healthz
    fi
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
    local who=
    [ -n "${PEER:-}" ] && who="$kind, "
    echo "== $name: $who$rate ticks/s from $FEED, feed-sim $*"
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
# run of the flood scenario (per server, with PEER set).
flood_table() {
    local prefix= servers=("") server width=8
    [ "$FEED" = nats ] && prefix=nats-
    [ -n "${PEER:-}" ] && servers=(-tickcast-1 -peer-1) width=17
    echo
    echo "flood: bystander 1 client on \"*\" at 1000 ticks/s, ${DURATION} s windows; latency in µs"
    printf '%-5s %-*s %8s %8s %8s %5s %6s %7s %7s %9s %9s %8s\n' \
        round "$width" run p50 p99 max gaps lost ticks srv-cpu "flood-r/s" "churn-c/s" churned
    local r kind name p50 p99 max gaps lost ticks cpu rps cps churned
    for r in $(seq "$1"); do
        for kind in base flood; do
          for server in "${servers[@]}"; do
            name=${prefix}flood-$kind-$r$server
            if [ ! -s "$OUT/$name.json" ]; then
                printf '%-5s %-*s (no figures: see %s)\n' "$r" "$width" "$kind${server%-1}" "$OUT/$name.server.log"
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
            printf '%-5s %-*s %8s %8s %8s %5s %6s %7s %7s %9s %9s %8s\n' "$r" "$width" "$kind${server%-1}" \
                "$p50" "$p99" "$max" "$gaps" "$lost" "$ticks" "$cpu" "$rps" "$cps" "$churned"
          done
        done
    done
}

# figures FILE: what compare_table shows of one run, tab-separated, "-"
# where the run has no such figure.
figures() {
    jq -r '[.clients_connected,
            (if .window_seconds > 0 then .delivery.delivered / .window_seconds else null end),
            .latency_us.p50, .latency_us.p99, .server.cpu_percent,
            (if .server.rss_kib then .server.rss_kib / 1024 else null end),
            .own_cpu.cpu_percent]
           | map(if . == null then "-" else tostring end) | @tsv' "$1"
}

# compare_table NAME: each tickcast and peer run of NAME, and tickcast ÷
# peer per round (and their median over the rounds).
compare_table() {
    local name=$1 r server file
    echo
    echo "$name: tickcast and $(basename "$PEER") alternately; msg/s delivered to all" \
        "clients, latency in µs; ratio = tickcast ÷ peer"
    for r in $(seq "$pair_rounds"); do
        for server in tickcast peer; do
            file=$OUT/$name-$server-$r.json
            if [ -s "$file" ]; then
                printf '%s\t%s\t%s\n' "$r" "$server" "$(figures "$file")"
            else
                printf '%s\t%s\t(no figures: see %s)\n' "$r" "$server" "$OUT/$name-$server-$r.server.log"
            fi
        done
    done | awk -F'\t' -v rounds="$pair_rounds" '
        function num(x) { return x != "-" && x != "" }
        function show(x, decimals) { return num(x) ? sprintf("%." decimals "f", x) : "-" }
        function median(list, n,    i, j, t, a) {
            if (n == 0) return "-"
            for (i = 1; i <= n; i++) a[i] = list[i]
            for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        BEGIN {
            printf "%-5s %-8s %6s %10s %8s %8s %8s %8s %8s\n", "round", "server", "conn", "msg/s", "p50", "p99", "srv-cpu%", "rss-MiB", "fs-cpu%"
        }
        NF < 9 { printf "%-5s %-8s %s\n", $1, $2, $3; have[$1, $2] = 0; next }
        {
            printf "%-5s %-8s %6s %10s %8s %8s %8s %8s %8s\n", $1, $2, $3, show($4, 0), $5, $6, show($7, 1), show($8, 1), show($9, 1)
            have[$1, $2] = 1
            for (i = 4; i <= 9; i++) value[$1, $2, i] = $i
            if ($2 != "peer" || !have[$1, "tickcast"]) next
            printf "%-5s %-8s %6s", $1, "ratio", ""
            for (i = 4; i <= 9; i++) {
                t = value[$1, "tickcast", i]; p = value[$1, "peer", i]
                if (num(t) && num(p) && p != 0) { ratio = t / p; printf " %*.2f", i == 4 ? 10 : 8, ratio; ratios[i, ++count[i]] = ratio }
                else printf " %*s", i == 4 ? 10 : 8, "-"
            }
            printf "\n"
        }
        END {
            if (rounds < 2) exit
            printf "%-5s %-8s %6s", "all", "median", ""
            for (i = 4; i <= 9; i++) {
                n = count[i]; delete list
                for (k = 1; k <= n; k++) list[k] = ratios[i, k]
                m = median(list, n)
                printf " %*s", i == 4 ? 10 : 8, m == "-" ? "-" : sprintf("%.2f", m)
            }
            printf "\n"
        }'
}

scenario=${1:?usage: benches/e2e.sh dashboard|firehose|ticks|idle|stalled|stalled-long|flood [RATE...] | custom RATE FEED-SIM-FLAGS...}
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
        pair_rounds=1
        for r in $(seq "$rounds"); do
            flood_flags=()
            run "flood-base-$r" 1000 --clients 1 --all
            flood_flags=(--http-clients 50 --http-rate 4000 --churn 20000)
            run "flood-flood-$r" 1000 --clients 1 --all
        done
        flood_flags=()
        flood_table "$rounds" ;;
    custom)
        rate=${1:?usage: benches/e2e.sh custom RATE FEED-SIM-FLAGS... (e.g. custom 1000 --clients 100 --subs 10)}
        shift
        [ $# -gt 0 ] || { echo "custom needs feed-sim load flags after the rate, e.g. --clients 100 --subs 10" >&2; exit 2; }
        run "custom-$rate" "$rate" "$@" ;;
    *) echo "unknown scenario $scenario: dashboard, firehose, ticks, idle, stalled, stalled-long, flood or custom" >&2; exit 2 ;;
esac
for name in "${compared[@]}"; do compare_table "$name"; done
