#!/usr/bin/env bash
# Benchmark midge against Eclipse Mosquitto on this machine, in the same run.
#
#   scripts/bench.sh [--quick] [--only-mosquitto] [--no-build] [--reps N]
#                    [--mosquitto-port P] [--midge-port P] [--midge-bin PATH]
#                    [--broker-nodelay] [--midge-option 'KEY VALUE']...
#                    [--out FILE]
#
# Builds benches/loadgen (release) and midge (cargo build --release), starts
# Mosquitto and midge on loopback ports with the same config file, and for each
# broker measures: QoS 0/1 throughput 1->1, 1->100 (fan-out) and 4->4, QoS 1
# ping-pong latency (back to back, and paced: one message every 10 ms), idle
# RSS and RSS with 1,000 and 10,000 idle connections.
# Tests alternate between the brokers (broker A test 1, broker B test 1, ...)
# so that background load on the machine hits both alike; with --reps N each
# throughput/latency number is the median of N runs. Prints a markdown table
# and writes it to benches/results/latest.md (raw RESULT lines next to it).
#
# --broker-nodelay adds `set_tcp_nodelay true` to both brokers' config (the
# default, false, lets Nagle + delayed ACK stall deliveries for ~40 ms now
# and then, which makes QoS 1 numbers noisier).
# --midge-option adds a line to midge's config only (e.g. 'busy_poll_us 50');
# the report names it.
#
# Only loopback traffic. Every loop is bounded; processes this script started
# are stopped by PID on exit. Full run ~3-5 min, --quick ~1 min.
set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# port_busy, pick_port, wait_listening, stop_pid, rss_kib, kv, idle_rss,
# raise_nofile, STARTED_PIDS and bench_cleanup.
. "$ROOT/scripts/lib-bench.sh"
QUICK=0
ONLY_MOSQ=0
BUILD=1
REPS=""
MOSQ_PORT=18830
MIDGE_PORT=18831
MIDGE_BIN=""
OUT="$ROOT/benches/results/latest.md"
BROKER_NODELAY=0
MIDGE_OPTS=()

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --only-mosquitto) ONLY_MOSQ=1 ;;
        --no-build) BUILD=0 ;;
        --broker-nodelay) BROKER_NODELAY=1 ;;
        --midge-option) MIDGE_OPTS+=("$2"); shift ;;
        --reps) REPS="$2"; shift ;;
        --mosquitto-port) MOSQ_PORT="$2"; shift ;;
        --midge-port) MIDGE_PORT="$2"; shift ;;
        --midge-bin) MIDGE_BIN="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

# ---------------------------------------------------------------- sizes
# Throughput runs are time-bounded (publishers stop after DUR seconds) and
# flow-controlled: a publisher stays at most LEAD/publishers messages ahead of
# the slowest subscriber, so the broker is never overrun and the number is a
# sustainable rate (both brokers drop or queue without bound otherwise). QoS 1
# publishers keep WINDOW PUBACKs outstanding: 20 = max_inflight_messages,
# because midge disconnects 3.1.1 publishers with more in flight (the 64-window
# compatibility run below checks that separately).
if [ "$QUICK" = 1 ]; then
    : "${REPS:=1}"
    DUR=1.5
    LAT_COUNT=3000
    PACED_COUNT=500
else
    : "${REPS:=4}"
    DUR=3
    LAT_COUNT=10000
    PACED_COUNT=1000
fi
# Paced latency: one QoS 1 message every PACED_MS, the broker idle in
# between (a gateway's usual load), rather than back to back.
PACED_MS=10
LEAD=4000
WINDOW=20
CLK_TCK=$(getconf CLK_TCK)
BURST_MSGS=100000      # open-loop QoS 0 burst: as fast as possible, no flow control
COMPAT_MSGS=20000      # QoS 1 with 64 PUBACKs outstanding (pipelining 3.1.1 client)
IDLE_SMALL=1000
IDLE_BIG=10000
PAYLOAD=16
LG_TIMEOUT=60          # loadgen's own bound per run (seconds)
KILL_AFTER=$((LG_TIMEOUT + 30))


WORK=$(mktemp -d /tmp/midge-bench.XXXXXX)
RAW="$WORK/raw.txt"
NOTES="$WORK/notes.txt"
: > "$RAW"; : > "$NOTES"

declare -A PID=()        # broker name -> pid we started
declare -A PORT=([mosquitto]=$MOSQ_PORT [midge]=$MIDGE_PORT)
declare -A VAL=()        # "metric|broker" -> value

trap bench_cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# Raise the fd limit for the brokers and loadgen (10k idle connections).
HARD=$(ulimit -Hn)
raise_nofile
NOFILE=$(ulimit -n)
if [ "$NOFILE" -lt $((IDLE_BIG + 200)) ]; then
    note "ulimit -n is $NOFILE (hard $HARD): idle test lowered from $IDLE_BIG connections"
    IDLE_BIG=$((NOFILE - 200))
fi

# ---------------------------------------------------------------- build
LOADGEN="$ROOT/benches/loadgen/target/release/loadgen"
if [ "$BUILD" = 1 ]; then
    log "building loadgen (release)"
    cargo build --release --quiet --manifest-path "$ROOT/benches/loadgen/Cargo.toml" || { log "loadgen build failed"; exit 1; }
fi
[ -x "$LOADGEN" ] || { log "no loadgen binary at $LOADGEN (run without --no-build)"; exit 1; }

BROKERS=(mosquitto)
if [ "$ONLY_MOSQ" = 0 ]; then
    if [ -z "$MIDGE_BIN" ]; then
        MIDGE_BIN="$ROOT/target/release/midge"
        if [ "$BUILD" = 1 ]; then
            log "building midge (cargo build --release)"
            (cd "$ROOT" && cargo build --release --quiet) || {
                log "midge does not build; use --only-mosquitto to benchmark Mosquitto alone"; exit 1; }
        fi
    fi
    [ -x "$MIDGE_BIN" ] || { log "no midge binary at $MIDGE_BIN"; exit 1; }
    BROKERS=(midge mosquitto)
fi
command -v mosquitto >/dev/null || { log "mosquitto is not installed (apt-get install mosquitto)"; exit 1; }

# ---------------------------------------------------------------- brokers
for b in "${BROKERS[@]}"; do
    p=$(pick_port "${PORT[$b]}") || { log "no free port found for $b"; exit 1; }
    PORT[$b]=$p
done

write_conf() { # broker -> config path
    local b=$1 f="$WORK/$1.conf"
    cat > "$f" <<EOF
listener ${PORT[$b]} 127.0.0.1
allow_anonymous true
max_queued_messages 100000
max_inflight_messages 20
persistence false
log_dest stderr
log_type error
log_type warning
log_type notice
connection_messages false
EOF
    [ "$BROKER_NODELAY" = 1 ] && echo "set_tcp_nodelay true" >> "$f"
    if [ "$b" = midge ]; then
        for o in ${MIDGE_OPTS[@]+"${MIDGE_OPTS[@]}"}; do echo "$o" >> "$f"; done
    fi
    echo "$f"
}

START_GEN=0
start_broker() { # broker
    local b=$1 conf pid log
    START_GEN=$((START_GEN + 1))
    log="$WORK/$b.$START_GEN.log"
    conf=$(write_conf "$b")
    if [ "$b" = mosquitto ]; then
        mosquitto -c "$conf" > "$log" 2>&1 &
        pid=$!
    else
        "$MIDGE_BIN" -c "$conf" > "$log" 2>&1 &
        pid=$!
    fi
    STARTED_PIDS+=("$pid")
    if ! wait_listening "$pid" "${PORT[$b]}"; then
        note "$b failed to start (see log below): $(tail -3 "$log" | tr '\n' ' ')"
        stop_broker_pid "$pid"
        PID[$b]=""
        return 1
    fi
    PID[$b]=$pid
    sleep 0.3   # settle before any RSS reading
}

stop_broker_pid() {
    stop_pid "$1"
    [ $? = 2 ] && note "broker pid $1 ignored SIGTERM for 5 s; sent SIGKILL"
    return 0
}

stop_broker() { stop_broker_pid "${PID[$1]:-}"; PID[$1]=""; }

restart_broker() { stop_broker "$1"; start_broker "$1"; }

alive() { [ -n "${PID[$1]:-}" ] && kill -0 "${PID[$1]}" 2>/dev/null; }

check_alive_after() { # broker test
    if ! alive "$1"; then
        local log
        log=$(ls -t "$WORK/$1".*.log 2>/dev/null | head -n 1)
        note "$1 DIED during '$2' (last log lines: $(tail -n 5 "$log" 2>/dev/null | tr '\n' ' '))"
        start_broker "$1" || true
    fi
}

# ------------------------------------------------------------- one test
LINE=""
run_lg() { # broker test-name loadgen-args... ; sets LINE to the RESULT line
    local b=$1 t=$2; shift 2
    local out="$WORK/lg.out" err="$WORK/lg.err" rc line
    LINE=""
    if ! alive "$b"; then return; fi
    timeout -k 5 "$KILL_AFTER" "$LOADGEN" "$@" --port "${PORT[$b]}" > "$out" 2> "$err"
    rc=$?
    line=$(grep '^RESULT ' "$out" | tail -n 1)
    echo "$b $t rc=$rc $line" >> "$RAW"
    if [ "$rc" != 0 ]; then
        note "$b '$t': loadgen exit $rc: $(grep -v '^$' "$err" | head -n 3 | tr '\n' ' ') | repro: $LOADGEN $* --port <port>"
    fi
    check_alive_after "$b" "$t"
    LINE=$line
}



tp_test() { # metric qos pubs subs [extra loadgen args]
    local m=$1 q=$2 np=$3 ns=$4 b line st rate lost c0 c1
    shift 4
    for b in "${BROKERS[@]}"; do
        log "$b: $m"
        c0=$(cpu_ticks "${PID[$b]}")
        run_lg "$b" "$m" throughput --qos "$q" --publishers "$np" --subscribers "$ns" \
            --payload $PAYLOAD --timeout-secs $LG_TIMEOUT "$@"
        line=$LINE
        c1=$(cpu_ticks "${PID[$b]}")
        if [ -z "$line" ]; then record "$m" "$b" "nan"; continue; fi
        record_cpu "$m" "$b" "$c0" "$c1" "$line"
        st=$(kv status "$line"); rate=$(kv deliver_rate "$line"); lost=$(kv lost "$line")
        case "$st" in ok|loss) record "$m" "$b" "$rate" ;; *) record "$m" "$b" "nan" ;; esac
        record "lost.$m" "$b" "$lost"
        record "expected.$m" "$b" "$(kv expected "$line")"
        record "pct.$m" "$b" "$(awk -v u="$(kv unique "$line")" -v e="$(kv expected "$line")" 'BEGIN { if (e > 0) printf "%.1f", 100 * u / e }')"
        if [ "$st" != ok ]; then
            note "$b '$m': status=$st, lost $lost of $(kv expected "$line") deliveries (delivered $(kv delivered "$line"), dups $(kv dups "$line"), published $(kv published "$line"), acked $(kv acked "$line")) | repro: $LOADGEN throughput --qos $q --publishers $np --subscribers $ns --payload $PAYLOAD $* --port <port>"
        fi
    done
}

flow_tp() { # metric qos pubs subs: the standard flow-controlled, timed run
    local m=$1 q=$2 np=$3 ns=$4
    tp_test "$m" "$q" "$np" "$ns" --duration-secs "$DUR" --max-lead $((LEAD / np)) --window $WINDOW
}

lat_test() {
    local m=lat_q1 b line
    for b in "${BROKERS[@]}"; do
        log "$b: QoS 1 ping-pong latency"
        run_lg "$b" "$m" latency --qos 1 --count "$LAT_COUNT" --payload $PAYLOAD --timeout-secs $LG_TIMEOUT
        line=$LINE
        [ -n "$line" ] || continue
        if [ "$(kv status "$line")" != ok ]; then note "$b latency: status=$(kv status "$line")"; fi
        record p50 "$b" "$(kv p50_us "$line")"
        record p99 "$b" "$(kv p99_us "$line")"
        record pmax "$b" "$(kv max_us "$line")"
    done
}

paced_test() {
    local m=paced_q1 b line
    for b in "${BROKERS[@]}"; do
        log "$b: QoS 1 latency, one message every $PACED_MS ms"
        run_lg "$b" "$m" latency --qos 1 --count "$PACED_COUNT" --warmup 20 --interval-us $((PACED_MS * 1000)) --payload $PAYLOAD --timeout-secs $LG_TIMEOUT
        line=$LINE
        [ -n "$line" ] || continue
        if [ "$(kv status "$line")" != ok ]; then note "$b paced latency: status=$(kv status "$line")"; fi
        record paced_p50 "$b" "$(kv p50_us "$line")"
        record paced_p99 "$b" "$(kv p99_us "$line")"
    done
}

idle_test() { # broker n -> records rss_idle_n and kib/conn
    local b=$1 n=$2 base rss out="$WORK/idle.out" err="$WORK/idle.err" line rc
    restart_broker "$b" || return
    base=$(rss_kib "${PID[$b]}")
    record "rss_idle" "$b" "$base"
    idle_rss "$LOADGEN" "${PID[$b]}" "${PORT[$b]}" "$n" "$out" "$err"
    rss=$IDLE_RSS; line=$IDLE_LINE; rc=$IDLE_RC
    [ "$IDLE_TIMEOUT" = 1 ] && note "$b idle $n: loadgen did not finish in time"
    echo "$b idle$n rc=$rc $IDLE_READY $line base_kib=$base rss_kib=$rss" >> "$RAW"
    if [ "$(kv status "$line")" != ok ]; then
        note "$b idle $n: connected=$(kv connected "$line") alive=$(kv alive "$line") errors=$(kv errors "$line") $(head -n 2 "$err" | tr '\n' ' ') | repro: $LOADGEN idle --connections $n --hold-secs 2 --port <port>"
    fi
    check_alive_after "$b" "idle $n"
    if [ -n "$rss" ] && [ -n "$base" ] && [ "$(kv connected "$line")" = "$n" ]; then
        record "rss_$n" "$b" "$rss"
        record "kib_$n" "$b" "$(awk -v a="$rss" -v z="$base" -v n="$n" 'BEGIN {printf "%.3f", (a - z) / n}')"
    fi
}

# ---------------------------------------------------------------- run
T0=$(date +%s)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
LOADS=""
log "work dir $WORK; brokers: ${BROKERS[*]}; ports: $(for b in "${BROKERS[@]}"; do printf '%s=%s ' "$b" "${PORT[$b]}"; done)"

for b in "${BROKERS[@]}"; do start_broker "$b" || true; done

# Memory first, each on a freshly started broker.
for b in "${BROKERS[@]}"; do log "$b: $IDLE_SMALL idle connections"; idle_test "$b" $IDLE_SMALL; done
for b in "${BROKERS[@]}"; do log "$b: $IDLE_BIG idle connections"; idle_test "$b" $IDLE_BIG; done
# What each further connection costs, free of what the first ones set up
# (and of the fresh broker's RSS, which moves by ~100 KiB between starts).
for b in "${BROKERS[@]}"; do
    small=$(cat "$WORK/vals.rss_$IDLE_SMALL.$b" 2>/dev/null | head -n 1)
    big=$(cat "$WORK/vals.rss_$IDLE_BIG.$b" 2>/dev/null | head -n 1)
    if [ -n "$small" ] && [ -n "$big" ]; then
        record kib_slope "$b" "$(awk -v a="$big" -v z="$small" -v n=$((IDLE_BIG - IDLE_SMALL)) 'BEGIN {printf "%.3f", (a - z) / n}')"
    fi
done
for b in "${BROKERS[@]}"; do restart_broker "$b" || true; done

ORDER=("${BROKERS[@]}")
for r in $(seq 1 "$REPS"); do
    log "--- repetition $r of $REPS"
    # Alternate which broker goes first, so neither always runs right after
    # the other's load.
    if [ $((r % 2)) = 0 ]; then BROKERS=("${ORDER[@]}"); else mapfile -t BROKERS < <(printf '%s\n' "${ORDER[@]}" | tac); fi
    flow_tp q0_11  0 1 1
    flow_tp q1_11  1 1 1
    flow_tp q0_fan 0 1 100
    flow_tp q1_fan 1 1 100
    flow_tp q0_44  0 4 4
    flow_tp q1_44  1 4 4
    lat_test
    paced_test
    if [ "$r" = 1 ]; then
        # Once per run: behaviour outside the comfortable zone.
        tp_test burst_q0 0 1 1 --messages $BURST_MSGS --grace-ms 1000
        tp_test compat_q1w64 1 1 1 --messages $COMPAT_MSGS --window 64 --grace-ms 1000
    fi
    LOADS="$LOADS $(cut -d' ' -f1 /proc/loadavg)"
done
BROKERS=("${ORDER[@]}")
# Memory left behind once the load is gone (midge hands freed heap back to
# the OS every 10 s): sampled 11 s after the last run, for both brokers.
sleep 11
for b in "${BROKERS[@]}"; do
    if alive "$b"; then record rss_after "$b" "$(rss_kib "${PID[$b]}")"; fi
    if grep -q "dropped" "$WORK/$b".*.log 2>/dev/null; then
        note "$b log: $(grep -h "dropped" "$WORK/$b".*.log | wc -l) 'messages being dropped' lines"
    fi
done
for b in "${BROKERS[@]}"; do stop_broker "$b"; done
T1=$(date +%s)

# ---------------------------------------------------------------- table

sum_file() { [ -s "$1" ] && awk '{s += $1} END {print s}' "$1" || echo ""; }

row() { # label metric better(higher|lower|client) [sum]
    local label=$1 m=$2 better=$3 how=${4:-median} a="" z="" ratio="—" win="—"
    if [ "$how" = sum ]; then
        a=$(sum_file "$WORK/vals.$m.midge"); z=$(sum_file "$WORK/vals.$m.mosquitto")
    else
        a=$(median "$WORK/vals.$m.midge"); z=$(median "$WORK/vals.$m.mosquitto")
    fi
    if [ "$a" = FAIL ] && [ -n "$z" ] && [ "$z" != FAIL ]; then
        win="mosquitto (midge failed)"
    elif [ "$z" = FAIL ] && [ -n "$a" ] && [ "$a" != FAIL ]; then
        win="**midge** (mosquitto failed)"
    elif [ -n "$a" ] && [ -n "$z" ] && [ "$a" != FAIL ] && [ "$z" != FAIL ]; then
        ratio=$(awk -v a="$a" -v z="$z" 'BEGIN { if (z + 0 == 0) print (a + 0 == 0 ? "1.00" : "∞"); else printf "%.2f", a / z }')
        win=$(awk -v a="$a" -v z="$z" -v b="$better" 'BEGIN {
            if (a + 0 == z + 0) print "tie";
            else if (z + 0 != 0 && a / z > 0.95 && a / z < 1.05) print "≈ (within 5%)";
            else if ((b == "higher") == (a + 0 > z + 0)) print "**midge**"; else print "mosquitto" }')
    fi
    # The load generator's own figures: no winner.
    [ "$better" = client ] && win="(the client)"
    printf '| %s | %s | %s | %s | %s |\n' "$label" "$(fmt "$a")" "$(fmt "$z")" "$ratio" "$win"
}

for b in "${BROKERS[@]}"; do
    cat "$WORK"/vals.lost.q0_*."$b" > "$WORK/vals.lostall_q0.$b" 2>/dev/null
    cat "$WORK"/vals.lost.q1_*."$b" > "$WORK/vals.lostall_q1.$b" 2>/dev/null
done

{
    echo "# midge vs Mosquitto benchmark"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); mode: $([ "$QUICK" = 1 ] && echo quick || echo full); repetitions: $REPS (throughput/latency = median); runtime $((T1 - T0)) s"
    echo "- machine: $(nproc) cores, load average at start $LOAD0, after each repetition:$LOADS (shared machine: absolute numbers are noisy, compare the ratios)"
    echo "- mosquitto: $(mosquitto -h 2>/dev/null | head -n 1 | sed 's/mosquitto version //'); midge: $([ "$ONLY_MOSQ" = 1 ] && echo 'not run (--only-mosquitto)' || (cd "$ROOT" && echo "$(git rev-parse --short HEAD 2>/dev/null || echo 'no commit')$(git diff --quiet HEAD 2>/dev/null || echo ' +uncommitted')"))"
    echo "- both brokers: same config (listener on 127.0.0.1, allow_anonymous true, max_queued_messages 100000, max_inflight_messages 20, persistence false$([ "$BROKER_NODELAY" = 1 ] && echo ', set_tcp_nodelay true')); payload $PAYLOAD B; loadgen sockets use TCP_NODELAY"
    if [ ${#MIDGE_OPTS[@]} -gt 0 ]; then echo "- midge only: $(printf '`%s` ' "${MIDGE_OPTS[@]}")"; fi
    echo "- throughput = unique messages delivered to subscribers / (first publish → last delivery); publishers run ${DUR} s, each at most $LEAD/publishers messages ahead of the slowest subscriber; QoS 1 window $WINDOW PUBACKs"
    echo "- CPU per delivery: the broker's user + system time over each throughput run (/proc/PID/stat, $CLK_TCK ticks a second) and loadgen's own (its getrusage), each over the run's unique deliveries: the client must cost less than the broker it measures"
    echo
    echo "| metric | midge | mosquitto | ratio midge/mosquitto | better |"
    echo "| --- | ---: | ---: | ---: | --- |"
    row "QoS 0 throughput 1→1 (msg/s, higher is better)" q0_11 higher
    row "QoS 1 throughput 1→1 (msg/s, higher is better)" q1_11 higher
    row "QoS 0 fan-out 1→100 (deliveries/s, higher is better)" q0_fan higher
    row "QoS 1 fan-out 1→100 (deliveries/s, higher is better)" q1_fan higher
    row "QoS 0 throughput 4→4 (deliveries/s, higher is better)" q0_44 higher
    row "QoS 1 throughput 4→4 (deliveries/s, higher is better)" q1_44 higher
    row "CPU per delivery, QoS 1 1→1: broker (µs, lower is better)" bcpu.q1_11 lower
    row "CPU per delivery, QoS 1 1→1: loadgen (µs)" ccpu.q1_11 client
    row "CPU per delivery, QoS 1 4→4: broker (µs, lower is better)" bcpu.q1_44 lower
    row "CPU per delivery, QoS 1 4→4: loadgen (µs)" ccpu.q1_44 client
    row "CPU per delivery, QoS 0 4→4: broker (µs, lower is better)" bcpu.q0_44 lower
    row "CPU per delivery, QoS 0 4→4: loadgen (µs)" ccpu.q0_44 client
    row "QoS 1 ping-pong latency p50 (µs, lower is better)" p50 lower
    row "QoS 1 ping-pong latency p99 (µs, lower is better)" p99 lower
    row "QoS 1 ping-pong latency max (µs, lower is better)" pmax lower
    row "QoS 1 latency, one message every $PACED_MS ms, p50 (µs, lower is better)" paced_p50 lower
    row "QoS 1 latency, one message every $PACED_MS ms, p99 (µs, lower is better)" paced_p99 lower
    row "RSS idle, fresh broker (KiB, lower is better)" rss_idle lower
    row "RSS with $IDLE_SMALL idle connections (KiB, lower is better)" "rss_$IDLE_SMALL" lower
    row "per connection at $IDLE_SMALL (KiB, lower is better)" "kib_$IDLE_SMALL" lower
    row "RSS with $IDLE_BIG idle connections (KiB, lower is better)" "rss_$IDLE_BIG" lower
    row "per connection at $IDLE_BIG (KiB, lower is better)" "kib_$IDLE_BIG" lower
    row "per further connection, $IDLE_SMALL → $IDLE_BIG (KiB, lower is better)" kib_slope lower
    row "RSS 11 s after all throughput runs (KiB, lower is better)" rss_after lower
    row "QoS 1 messages lost, all QoS 1 runs (lower is better)" lostall_q1 lower sum
    row "  of which 1→100 fan-out" lost.q1_fan lower sum
    row "  of which 4→4" lost.q1_44 lower sum
    row "QoS 0 messages dropped, all QoS 0 runs (lower is better)" lostall_q0 lower sum
    row "QoS 0 burst 1→1, $BURST_MSGS msgs unthrottled: % delivered (higher is better)" pct.burst_q0 higher
    row "QoS 0 burst 1→1: delivery rate (msg/s, higher is better)" burst_q0 higher
    row "QoS 1 1→1, 64 PUBACKs outstanding (3.1.1 pipelining): % delivered (higher is better)" pct.compat_q1w64 higher
    echo
    echo "Per-run values (all repetitions):"
    echo
    per_run_values BROKERS "" q0_11 q1_11 q0_fan q1_fan q0_44 q1_44 bcpu.q1_11 ccpu.q1_11 bcpu.q1_44 ccpu.q1_44 bcpu.q0_44 ccpu.q0_44 p50 p99 paced_p50 paced_p99
    notes_section
} > "$WORK/table.md"

publish_results "$OUT"
log "wrote $OUT and ${OUT%.md}-raw.txt (broker logs in $WORK)"
