#!/usr/bin/env bash
# Hostile clients against midge and Mosquitto, side by side (issue 23).
#
#   scripts/attack.sh [--midge-bin PATH] [--cases 'slowloris big_claim ...']
#                     [--no-mosquitto]
#
# For each case, a fresh broker on 127.0.0.1 (midge: persistence false,
# memory_limit 64 MiB, client_out_buffer_bytes 64 KiB; Mosquitto 2.0.11:
# memory_limit 64 MiB, max_queued_messages 64, its nearest bound), then
# scripts/attack.py runs the case and prints what the broker did:
#
#   slowloris       50 connections trickle a CONNECT a byte every 0.5 s
#                   (15 s): how many the broker closed, and when
#   big_claim       a PUBLISH header claiming 268,435,455 bytes: time to
#                   close, RSS growth
#   subscribe_10k   one SUBSCRIBE with 10,000 filters: SUBACK time, codes
#                   granted/refused, RSS growth
#   retained_flood  20,000 retained 1 KiB messages, then 10 subscribers to
#                   # that never read: RSS before and after
#   ping_flood      a client that never reads sends PINGREQs for 3 s: bytes
#                   the broker took, RSS growth
#   deep_topic      a SUBSCRIBE and a PUBLISH with 10,000-level names: the
#                   SUBACK code, whether the publisher is disconnected
#   slow_consumer   a QoS 0 subscriber that never reads, 50,000 x 1 KiB
#                   published to it: RSS growth
#   session_churn   5,000 persistent sessions made and left, then one id
#                   taken over 5,000 times: RSS per session, growth after
#   idle_sockets    50 connections that never send a byte: closed when
#
# Traffic to 127.0.0.1 only; each case is bounded in time (under 40 s);
# the brokers this script started are stopped by PID. Needs python3 and
# mosquitto. Default midge binary: target/release/midge (cargo build
# --release), else target/debug/midge.
set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOG_NAME=attack
# pick_port, wait_listening, stop_pid, STARTED_PIDS, bench_cleanup.
. "$ROOT/scripts/lib-bench.sh"
CASES="slowloris big_claim subscribe_10k retained_flood ping_flood deep_topic slow_consumer session_churn idle_sockets"
MOSQUITTO=1
MIDGE_BIN="$ROOT/target/release/midge"
[ -x "$MIDGE_BIN" ] || MIDGE_BIN="$ROOT/target/debug/midge"

usage() { sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --midge-bin) MIDGE_BIN="$2"; shift ;;
        --cases) CASES="$2"; shift ;;
        --no-mosquitto) MOSQUITTO=0 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "attack.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
[ -x "$MIDGE_BIN" ] || die "no midge binary at $MIDGE_BIN"
MIDGE_BIN=$(realpath "$MIDGE_BIN")
command -v python3 >/dev/null || die "python3 is needed"

WORK=$(mktemp -d /tmp/midge-attack.XXXXXX)
trap 'bench_cleanup; rm -rf "$WORK"' EXIT
chmod 755 "$WORK"

# run_case BROKER CASE: starts the broker, runs the case, stops it.
run_case() {
    local broker=$1 case=$2 port pid conf out
    port=$(pick_port 18900) || die "no free port"
    conf="$WORK/$broker.conf"
    case $broker in
        midge)
            printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmemory_limit 67108864\nclient_out_buffer_bytes 65536\n' \
                "$port" > "$conf"
            (cd "$WORK" && exec "$MIDGE_BIN" -c "$conf" > "$WORK/$broker.$case.log" 2>&1) &
            ;;
        mosquitto)
            printf 'listener %s 127.0.0.1\nallow_anonymous true\nmemory_limit 67108864\nmax_queued_messages 64\n' \
                "$port" > "$conf"
            chmod 644 "$conf"
            mosquitto -c "$conf" > "$WORK/$broker.$case.log" 2>&1 &
            ;;
    esac
    pid=$!
    STARTED_PIDS+=("$pid")
    wait_listening "$pid" "$port" || { echo "$broker $case: did not start"; return; }
    out=$(timeout 60 python3 "$ROOT/scripts/attack.py" "$port" "$pid" "$case" | grep '^RESULT' | sed 's/^RESULT //')
    kill -0 "$pid" 2>/dev/null || out="$out (the broker DIED)"
    printf '%-10s %s\n' "$broker" "${out:-no result}"
    stop_pid "$pid"
}

echo "midge: $MIDGE_BIN (built $(date -u -r "$MIDGE_BIN" +%FT%TZ); tree at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null))"
command -v mosquitto >/dev/null && [ "$MOSQUITTO" = 1 ] && echo "mosquitto: $(mosquitto -h 2>/dev/null | head -n 1)"
for case in $CASES; do
    run_case midge "$case"
    [ "$MOSQUITTO" = 1 ] && run_case mosquitto "$case"
done
