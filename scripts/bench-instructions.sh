#!/usr/bin/env bash
# CPU work per message, midge and Mosquitto in one run, counted in
# instructions (valgrind's callgrind), not seconds: the count repeats to
# within a fraction of a percent whatever else the machine is doing, so a
# change of a few percent shows, where timings on a shared machine would
# drown it.
#
#   scripts/bench-instructions.sh [--count N] [--no-build] [--midge-bin PATH]
#                                 [--keep DIR]
#
# Each broker runs under callgrind, in memory (`persistence false`), while
# `loadgen latency --qos 1` does N QoS 1 round trips (publish, the
# subscriber receives and acknowledges, the publisher gets its PUBACK); a
# second run does 1 round trip and then waits as long as the first run
# took, and the difference divided by N - 1 is the broker's instructions
# (user space, all threads) per round trip: start-up, shutdown and the
# timers' work while the broker runs cancel out. --keep DIR keeps the callgrind files
# (`callgrind_annotate DIR/midge.out` shows where the instructions go).
#
# Needs valgrind and mosquitto. Mosquitto runs with `user root` so that it
# can write callgrind's file after dropping privileges. Only loopback
# traffic; every process this script starts is stopped by PID. About 1 min.
set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
COUNT=5000
BUILD=1
MIDGE_BIN=""
KEEP=""
usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --count) COUNT="$2"; shift ;;
        --no-build) BUILD=0 ;;
        --midge-bin) MIDGE_BIN="$2"; shift ;;
        --keep) KEEP="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-instructions.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
for tool in valgrind callgrind_annotate mosquitto; do
    command -v "$tool" > /dev/null || { echo "bench-instructions.sh: $tool is needed" >&2; exit 1; }
done
if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && cargo build --release --quiet) || exit 1
    cargo build --release --quiet --manifest-path "$ROOT/benches/loadgen/Cargo.toml" || exit 1
fi
: "${MIDGE_BIN:=$ROOT/target/release/midge}"
LOADGEN="$ROOT/benches/loadgen/target/release/loadgen"
for f in "$MIDGE_BIN" "$LOADGEN"; do
    [ -x "$f" ] || { echo "bench-instructions.sh: $f is missing (run without --no-build)" >&2; exit 1; }
done
WORK=$(mktemp -d /tmp/midge-instr.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null; done
    [ -n "$KEEP" ] || rm -rf "$WORK"
}
trap cleanup EXIT
PORT=18841

# total BROKER N [SECS]: callgrind's instruction total for a broker run
# with N round trips, lasting at least SECS seconds; sets ELAPSED.
total() {
    local b=$1 n=$2 secs=${3:-0} conf="$WORK/$1.conf" out="$WORK/$1-$2.out" pid i start
    start=$(date +%s.%N)
    printf 'listener %s 127.0.0.1\npersistence false\nallow_anonymous true\nconnection_messages false\n' "$PORT" > "$conf"
    if [ "$b" = mosquitto ]; then
        echo "user root" >> "$conf"
        valgrind --tool=callgrind --callgrind-out-file="$out" mosquitto -c "$conf" > "$WORK/$b-$n.log" 2>&1 &
    else
        valgrind --tool=callgrind --callgrind-out-file="$out" "$MIDGE_BIN" -c "$conf" > "$WORK/$b-$n.log" 2>&1 &
    fi
    pid=$!
    PIDS+=("$pid")
    for i in $(seq 1 100); do
        (exec 3<> "/dev/tcp/127.0.0.1/$PORT") 2> /dev/null && break
        sleep 0.1
    done
    if ! "$LOADGEN" latency --port "$PORT" --qos 1 --count "$n" --warmup 0 --timeout-secs 120 > "$WORK/$b-$n.lg" 2>&1; then
        echo "bench-instructions.sh: loadgen failed against $b: $(cat "$WORK/$b-$n.lg")" >&2
        exit 1
    fi
    sleep "$(awk -v s="$secs" -v a="$start" -v n="$(date +%s.%N)" 'BEGIN { r = s - (n - a); print (r > 0 ? r : 0) }')"
    ELAPSED=$(awk -v a="$start" -v n="$(date +%s.%N)" 'BEGIN { print n - a }')
    kill "$pid"
    wait "$pid" 2> /dev/null
    callgrind_annotate "$out" 2> /dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
    PORT=$((PORT + 1))
}

echo "| broker | instructions per QoS 1 round trip | ratio to Mosquitto |"
echo "| --- | ---: | ---: |"
declare -A PER
for b in midge mosquitto; do
    total "$b" "$COUNT" > "$WORK/big"
    big=$(cat "$WORK/big")
    total "$b" 1 "$ELAPSED" > "$WORK/small"
    small=$(cat "$WORK/small")
    if [ -z "$big" ] || [ -z "$small" ]; then
        echo "bench-instructions.sh: no callgrind total for $b (see $WORK)" >&2
        KEEP=1
        exit 1
    fi
    PER[$b]=$(( (big - small) / (COUNT - 1) ))
done
for b in midge mosquitto; do
    echo "| $b | ${PER[$b]} | $(awk -v a="${PER[$b]}" -v m="${PER[mosquitto]}" 'BEGIN { printf "%.2f", a / m }') |"
done
if [ -n "$KEEP" ]; then
    mkdir -p "$KEEP"
    cp "$WORK/midge-$COUNT.out" "$KEEP/midge.out"
    cp "$WORK/mosquitto-$COUNT.out" "$KEEP/mosquitto.out"
    echo "callgrind files: $KEEP/midge.out, $KEEP/mosquitto.out"
fi
