#!/usr/bin/env bash
# Broker CPU under a paced QoS 1 load, midge vs Mosquitto, in one run.
#
#   scripts/bench-cpu.sh [--rates '100 1000 5000'] [--duration S]
#                        [--busy-poll '0 50 100'] [--midge-bin PATH]
#
# For each rate (messages per second) and each setup (midge with each
# `busy_poll_us` value, then Mosquitto), starts the broker on 127.0.0.1
# (persistence false, allow_anonymous true), runs scripts/paced_qos1.py (a
# paho-mqtt publisher at that rate and a QoS 1 subscriber) for S seconds
# (default 5) and reports the broker's CPU time (user + system, from
# /proc/PID/stat) as % of one core over the run, and how many messages the
# subscriber received. This is what docs/CONFIG.md's `busy_poll_us` table
# measures. Needs python3-paho-mqtt (>= 2) and mosquitto.
#
# Only loopback. Every loop is bounded; processes this script started are
# stopped by PID.
set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# pick_port, wait_listening, stop_pid, STARTED_PIDS, bench_cleanup.
. "$ROOT/scripts/lib-bench.sh"
RATES="100 1000 5000"
DURATION=5
BUSY="0 50 100"
MIDGE_BIN="$ROOT/target/release/midge"

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --rates) RATES="$2"; shift ;;
        --duration) DURATION="$2"; shift ;;
        --busy-poll) BUSY="$2"; shift ;;
        --midge-bin) MIDGE_BIN="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-cpu.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
[ -x "$MIDGE_BIN" ] || { echo "bench-cpu.sh: no midge binary at $MIDGE_BIN (cargo build --release)" >&2; exit 1; }
MIDGE_BIN=$(realpath "$MIDGE_BIN")
command -v mosquitto > /dev/null || { echo "bench-cpu.sh: mosquitto not installed" >&2; exit 1; }
# paho-mqtt 2 (Debian's python3 has none): the tests' virtual environment,
# made when missing.
PYTHON=$(bash "$ROOT/scripts/python-env.sh") || { echo "bench-cpu.sh: no python with paho-mqtt 2" >&2; exit 1; }

WORK=$(mktemp -d /tmp/midge-bench-cpu.XXXXXX)
trap 'bench_cleanup; rm -rf "$WORK"' EXIT
TICKS=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run_one() { # label rate extra-config-line -> prints a table row
    local label=$1 rate=$2 extra=$3 port conf pid c0 c1 t0 t1 out pct
    port=$(pick_port 19600) || { echo "| $label | $rate | no free port | |"; return; }
    conf="$WORK/broker.conf"
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nconnection_messages false\n' "$port" > "$conf"
    [ -n "$extra" ] && echo "$extra" >> "$conf"
    if [ "$label" = mosquitto ]; then
        mosquitto -c "$conf" > "$WORK/broker.log" 2>&1 &
    else
        (cd "$WORK" && exec "$MIDGE_BIN" -c "$conf") > "$WORK/broker.log" 2>&1 &
    fi
    pid=$!
    STARTED_PIDS+=("$pid")
    if ! wait_listening "$pid" "$port"; then
        echo "| $label | $rate | did not start: $(tail -n 1 "$WORK/broker.log") | |"
        stop_pid "$pid"
        return
    fi
    c0=$(cpu_ticks "$pid"); t0=$(date +%s.%N)
    out=$(timeout $((DURATION + 30)) "$PYTHON" "$ROOT/scripts/paced_qos1.py" "$port" "$rate" "$DURATION" 5 2>&1 | tail -n 1)
    c1=$(cpu_ticks "$pid"); t1=$(date +%s.%N)
    pct=$(printf '%.1f' "$(echo "scale=3; ($c1 - $c0) * 100 / $TICKS / ($t1 - $t0)" | bc)")
    echo "| $label | $rate | $pct | $out |"
    stop_pid "$pid"
}

echo "# Broker CPU under a paced QoS 1 load"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg); $DURATION s per run"
echo "- midge: $MIDGE_BIN; mosquitto: $(mosquitto -h 2>/dev/null | head -n 1 | sed 's/mosquitto version //')"
echo
echo "| setup | msg/s | broker CPU, % of one core | client |"
echo "| --- | ---: | ---: | --- |"
for rate in $RATES; do
    for b in $BUSY; do
        run_one "midge busy_poll_us $b" "$rate" "busy_poll_us $b"
    done
    run_one mosquitto "$rate" ""
done
