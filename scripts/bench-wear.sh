#!/usr/bin/env bash
# What persistence costs an SD card: bytes written to disk per QoS 1
# message (64-byte payload), midge one node, midge three nodes (per node)
# and Mosquitto with `persistence true`, side by side:
#
#   scripts/bench-wear.sh [--secs S] [--no-build] [--midge-bin PATH] [--out FILE]
#
# Rates 10, 100 and 1,000 msg/s from one client (loadgen latency with
# --interval-us: one message in flight, paced), 1,000 msg/s from 20 clients
# (20 such clients at 50 msg/s each, as many devices publish) and
# unthrottled (loadgen throughput, window 20),
# each for S seconds (default 10). Bytes: /proc/PID/io write_bytes of each
# broker process over the run (what reached the block layer, page cache
# writeback included: each run waits for the dirty pages first). Writes
# benches/results/wear.md with a table "msg/s -> GB a day -> years of a
# card rated 100 TBW". Loopback only; stops what it started, by PID.
set -u -o pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib-bench.sh"
SECS=10 BUILD=1 MIDGE_BIN="" OUT="$ROOT/benches/results/wear.md"
while [ $# -gt 0 ]; do
    case "$1" in
        --secs) SECS=$2; shift ;;
        --no-build) BUILD=0 ;;
        --midge-bin) MIDGE_BIN=$2; shift ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
    shift
done
command -v mosquitto >/dev/null || die "mosquitto is not installed"
LOADGEN="$ROOT/benches/loadgen/target/release/loadgen"
if [ "$BUILD" = 1 ]; then
    cargo build --release --quiet --manifest-path "$ROOT/benches/loadgen/Cargo.toml" || die "loadgen build failed"
fi
[ -x "$LOADGEN" ] || die "no loadgen at $LOADGEN (run without --no-build)"
if [ -z "$MIDGE_BIN" ]; then
    MIDGE_BIN="$ROOT/target/release/midge"
    [ "$BUILD" = 1 ] && { (cd "$ROOT" && cargo build --release --quiet) || die "midge does not build"; }
fi
[ -x "$MIDGE_BIN" ] || die "no midge binary at $MIDGE_BIN"
WORK=$(mktemp -d /tmp/midge-bench-wear.XXXXXX)
chmod 755 "$WORK"
cp "$MIDGE_BIN" "$WORK/midge"
PIDS=()
cleanup() { local p; for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null; done; rm -rf "$WORK"; }
trap cleanup EXIT

wb_of() { awk '/^write_bytes/ {print $2}' /proc/"$1"/io; }

declare -A PIDOF=() PORTOF=()
declare -A RAFT=([1]=$(free_port) [2]=$(free_port) [3]=$(free_port))
start_midge() { # name [node-id]
    local n=$1 d="$WORK/$1" p; mkdir -p "$d"; p=$(free_port); PORTOF[$n]=$p
    {
        echo "listener $p 127.0.0.1"
        echo "allow_anonymous true"
        echo "persistence_location $d"
        echo "connection_messages false"
        echo "max_inflight_messages 20"
        # The SD-card setting (docs/CONFIG.md; the default is 0).
        echo "persistence_batch_window_ms 5"
        if [ -n "${2:-}" ]; then
            echo "cluster_node_id $2"
            echo "cluster_follower_mode redirect"
            for i in 1 2 3; do echo "cluster_peer $i 127.0.0.1:${RAFT[$i]}"; done
        fi
    } > "$d/midge.conf"
    "$WORK/midge" -c "$d/midge.conf" > "$d/log" 2>&1 &
    PIDS+=("$!"); PIDOF[$n]=$!
}
start_midge m1
for i in 1 2 3; do start_midge "c$i" "$i"; done
mkdir -p "$WORK/mq"; chown mosquitto "$WORK/mq" 2>/dev/null || true
PORTOF[mq]=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nmax_inflight_messages 20\nlog_dest none\n' \
    "${PORTOF[mq]}" "$WORK/mq" > "$WORK/mq.conf"
mosquitto -c "$WORK/mq.conf" > "$WORK/mq.log" 2>&1 &
PIDS+=("$!"); PIDOF[mq]=$!
wait_listening "${PIDOF[m1]}" "${PORTOF[m1]}" && wait_listening "${PIDOF[mq]}" "${PORTOF[mq]}" || die "a broker did not start"
LEADER=$(mqtt_leader c1="${PORTOF[c1]}" c2="${PORTOF[c2]}" c3="${PORTOF[c3]}") || die "the three nodes elected no leader"
PORTOF[c]=${PORTOF[$LEADER]}
log "work dir $WORK; three-node leader $LEADER"

declare -A RES=()
# run SETUP RATE: messages sent and bytes written per process
run() {
    local s=$1 r=$2 procs n out sent w0 w1 bytes=0 maxnode=0 p b
    case "$s" in m1) procs="m1" ;; mq) procs="mq" ;; c) procs="c1 c2 c3" ;; esac
    sync; sleep 1   # older dirty pages are not this run's
    declare -A start=()
    for p in $procs; do start[$p]=$(wb_of "${PIDOF[$p]}"); done
    if [ "${r#max}" != "$r" ]; then
        # max: one publisher, 20 in flight; max4: four of them.
        out=$(timeout 120 "$LOADGEN" throughput --port "${PORTOF[$s]}" --qos 1 --publishers "${r#max}" --subscribers 1 \
            --payload 64 --duration-secs "$SECS" --window 20 --max-lead 4000 --timeout-secs 60 2>/dev/null | grep '^RESULT')
        sent=$(kv published "$out")
    else
        # RATE or RATExCLIENTS: CLIENTS publishers (each one message in
        # flight, paced at RATE/CLIENTS) in parallel, as many devices are.
        local rate=${r%x*} clients=1 c cpids=()
        [ "$r" != "$rate" ] && clients=${r#*x}
        n=$((rate * SECS / clients))
        for c in $(seq 1 "$clients"); do
            timeout 120 "$LOADGEN" latency --port "${PORTOF[$s]}" --qos 1 --count "$n" --warmup 0 --payload 64 \
                --interval-us $((1000000 * clients / rate)) --timeout-secs 60 > "$WORK/lat.$c" 2>/dev/null &
            cpids+=("$!")
        done
        sent=0
        for c in $(seq 1 "$clients"); do
            wait "${cpids[$((c - 1))]}"
            grep -q '^RESULT' "$WORK/lat.$c" && sent=$((sent + n))
        done
    fi
    sync; sleep 1   # the run's page-cache writes reach the disk
    for p in $procs; do
        b=$(( $(wb_of "${PIDOF[$p]}") - start[$p] ))
        bytes=$((bytes + b)); [ "$b" -gt "$maxnode" ] && maxnode=$b
    done
    RES[$s.$r.sent]=${sent:-0}; RES[$s.$r.bytes]=$bytes; RES[$s.$r.maxnode]=$maxnode
    log "$s at $r msg/s: ${sent:-0} messages, $bytes bytes written (busiest process $maxnode)"
}
RATES=(10 100 1000 1000x20 max1 max4)
for r in "${RATES[@]}"; do for s in m1 mq c; do run "$s" "$r"; done; done

# The data directories after all that (the store only: midge.redb and raft-log/).
store_bytes() { du -sb "$WORK/$1/midge.redb" "$WORK/$1/raft-log" 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
DIR_M1=$(store_bytes m1); DIR_C=0
for i in 1 2 3; do b=$(store_bytes "c$i"); [ "$b" -gt "$DIR_C" ] && DIR_C=$b; done
# RSS after a restart on that data directory, next to a fresh node's.
rss_of() { awk '/^VmRSS/ {print $2}' /proc/"$1"/status; }
kill -TERM "${PIDOF[m1]}"; wait "${PIDOF[m1]}" 2>/dev/null
"$WORK/midge" -c "$WORK/m1/midge.conf" >> "$WORK/m1/log" 2>&1 &
PIDS+=("$!"); PIDOF[m1]=$!
start_midge fresh
wait_listening "${PIDOF[m1]}" "${PORTOF[m1]}" && wait_listening "${PIDOF[fresh]}" "${PORTOF[fresh]}" || die "a restart failed"
sleep 12   # past the first return of freed heap (every 10 s)
RSS_RESTART=$(rss_of "${PIDOF[m1]}"); RSS_FRESH=$(rss_of "${PIDOF[fresh]}")
log "store after the runs: 1 node $DIR_M1 B, 3 nodes (largest) $DIR_C B; RSS restarted $RSS_RESTART KiB, fresh $RSS_FRESH KiB"

per() { awk -v b="$1" -v n="$2" 'BEGIN {if (n > 0) printf "%.0f", b / n; else print "—"}'; }
gbday() { awk -v bpm="$1" -v r="$2" 'BEGIN {if (bpm == "—") print "—"; else printf "%.1f", bpm * r * 86400 / 1e9}'; }
years() { awk -v g="$1" 'BEGIN {if (g == "—" || g + 0 == 0) print "—"; else printf "%.1f", 100000 / g / 365}'; }
{
    echo "# Bytes written per QoS 1 message (64 B payload)"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); midge $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null); mosquitto $(mosquitto -h 2>/dev/null | head -n 1 | sed 's/mosquitto version //'); disk: $(df -T "$WORK" | awk 'NR==2 {print $2}')"
    echo "- \`scripts/bench-wear.sh --secs $SECS\`: write_bytes of each broker process (/proc/PID/io) over each run; paced rates: each client sends one message at a time (loadgen latency --interval-us), \"from 20 clients\" runs 20 of them in parallel, \"unthrottled\" is loadgen throughput with 1 or 4 publishers (window 20 each) and 1 subscriber"
    echo "- midge: persistence on (defaults: raft log appended to segment files, one fdatasync per write batch, PUBACK after the write) with persistence_batch_window_ms 5 (the SD-card setting; the default is 0); Mosquitto: persistence true (writes its database every autosave_interval, 1800 s, and at exit: PUBACK does not wait for the disk, and a crash loses what came since)"
    echo
    echo "| rate (msg/s) | midge 1 node B/msg | midge 3 nodes B/msg, busiest node | mosquitto B/msg | midge 1 node GB/day | years of a 100 TBW card |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    for r in "${RATES[@]}"; do
        a=$(per "${RES[m1.$r.bytes]}" "${RES[m1.$r.sent]}")
        c=$(per "${RES[c.$r.maxnode]}" "${RES[c.$r.sent]}")
        z=$(per "${RES[mq.$r.bytes]}" "${RES[mq.$r.sent]}")
        rate=${r%x*}; [ "${r#max}" != "$r" ] && rate=$(awk -v n="${RES[m1.$r.sent]}" -v s="$SECS" 'BEGIN {printf "%.0f", n / s}')
        g=$(gbday "$a" "$rate")
        label=$r
        case "$r" in
            max1) label="unthrottled, 1 publisher (~$rate)" ;;
            max4) label="unthrottled, 4 publishers (~$rate)" ;;
            *x*) label="$rate from ${r#*x} clients" ;;
            *) label="$r from 1 client" ;;
        esac
        echo "| $label | $a | $c | $z | $g | $(years "$g") |"
    done
    echo
    echo "- the store (midge.redb and raft-log/) after these runs: $(awk -v b="$DIR_M1" 'BEGIN {printf "%.1f", b / 1048576}') MiB on the one node, $(awk -v b="$DIR_C" 'BEGIN {printf "%.1f", b / 1048576}') MiB on the largest of the three"
    echo "- RSS of the one node restarted on that store: $RSS_RESTART KiB; of a fresh node: $RSS_FRESH KiB (both idle, 12 s after start)"
} > "$WORK/table.md"
cat "$WORK/table.md"
cp "$WORK/table.md" "$OUT"
log "wrote $OUT"
