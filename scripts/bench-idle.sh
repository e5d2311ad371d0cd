#!/usr/bin/env bash
# What an idle broker costs: midge (one node; three nodes) and Mosquitto,
# each with N idle MQTT clients connected (keep-alive 60 s, nothing sent
# after CONNECT), measured over the same window side by side:
#   context switches (all threads, voluntary + involuntary), CPU time
#   (utime + stime), bytes written to disk (/proc/PID/io write_bytes).
#
#   scripts/bench-idle.sh [--clients N] [--secs S] [--no-build] [--midge-bin PATH] [--out FILE]
#
# Defaults: 100 clients, 60 s. Writes benches/results/idle.md. Loopback only;
# every process it starts is stopped by PID.
set -u -o pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib-bench.sh"
CLIENTS=100 SECS=60 BUILD=1 MIDGE_BIN="" OUT="$ROOT/benches/results/idle.md"
while [ $# -gt 0 ]; do
    case "$1" in
        --clients) CLIENTS=$2; shift ;;
        --secs) SECS=$2; shift ;;
        --no-build) BUILD=0 ;;
        --midge-bin) MIDGE_BIN=$2; shift ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
    shift
done
command -v mosquitto >/dev/null || die "mosquitto is not installed (apt-get install mosquitto)"
if [ -z "$MIDGE_BIN" ]; then
    MIDGE_BIN="$ROOT/target/release/midge"
    [ "$BUILD" = 1 ] && { (cd "$ROOT" && cargo build --release --quiet) || die "midge does not build"; }
fi
[ -x "$MIDGE_BIN" ] || die "no midge binary at $MIDGE_BIN"
WORK=$(mktemp -d /tmp/midge-bench-idle.XXXXXX)
chmod 755 "$WORK"
cp "$MIDGE_BIN" "$WORK/midge"
PIDS=()
cleanup() { local p; for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null; done; rm -rf "$WORK"; }
trap cleanup EXIT


# N raw MQTT 3.1.1 clients (CONNECT, wait for CONNACK, then nothing) on a
# port, held open until this process is killed. A cheap client: one Python
# process that sleeps.
hold_clients() { # port tag
    python3 - "$1" "$CLIENTS" "$2" <<'EOF' &
import socket, sys, time
port, n, tag = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
socks = []
for i in range(n):
    cid = f"idle-{tag}-{i}".encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(bytes([0x10, len(body)]) + body)
    if s.recv(4)[:2] != b"\x20\x02":
        sys.exit(f"client {i}: no CONNACK")
    socks.append(s)
print("connected", flush=True)
time.sleep(3600)
EOF
    PIDS+=("$!")
}

ctx_of() { # pid -> voluntary+involuntary switches of all its threads
    cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s + 0}'
}
cpu_of() { # pid -> utime+stime in clock ticks
    awk '{print $14 + $15}' /proc/"$1"/stat
}
wb_of() { awk '/^write_bytes/ {print $2}' /proc/"$1"/io; }

declare -A PIDOF=()
start_midge() { # name [cluster-node-id]
    local n=$1 p d="$WORK/$1"; mkdir -p "$d"
    p=$(free_port); echo "$p" > "$d/port"
    {
        echo "listener $p 127.0.0.1"
        echo "allow_anonymous true"
        echo "persistence_location $d"
        echo "connection_messages false"
        if [ -n "${2:-}" ]; then
            echo "cluster_node_id $2"
            echo "cluster_follower_mode redirect"
            for i in 1 2 3; do echo "cluster_peer $i 127.0.0.1:${RAFT[$i]}"; done
        fi
    } > "$d/midge.conf"
    "$WORK/midge" -c "$d/midge.conf" > "$d/log" 2>&1 &
    PIDS+=("$!"); PIDOF[$n]=$!
}

# One node, and Mosquitto with persistence as midge has it by default.
start_midge m1
MQP=$(free_port); mkdir -p "$WORK/mq"; chown mosquitto "$WORK/mq" 2>/dev/null || true
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nconnection_messages false\nlog_dest none\n' "$MQP" "$WORK/mq" > "$WORK/mq.conf"
mosquitto -c "$WORK/mq.conf" > "$WORK/mq.log" 2>&1 &
PIDS+=("$!"); PIDOF[mq]=$!
# Three nodes: clients on the leader (found by a CONNECT answered 0).
declare -A RAFT=([1]=$(free_port) [2]=$(free_port) [3]=$(free_port))
for i in 1 2 3; do start_midge "c$i" "$i"; done
wait_listening "${PIDOF[m1]}" "$(cat "$WORK/m1/port")" || die "midge did not start: $(tail -3 "$WORK/m1/log")"
wait_listening "${PIDOF[mq]}" "$MQP" || die "mosquitto did not start: $(tail -3 "$WORK/mq.log")"
LEADER=$(mqtt_leader c1="$(cat "$WORK/c1/port")" c2="$(cat "$WORK/c2/port")" c3="$(cat "$WORK/c3/port")") ||
    die "the three nodes elected no leader"
log "clients: $CLIENTS each on midge 1 node, mosquitto, midge 3 nodes (leader $LEADER)"
hold_clients "$(cat "$WORK/m1/port")" m1
hold_clients "$MQP" mq
hold_clients "$(cat "$WORK/$LEADER/port")" c
sleep 8   # connects done, keep-alive and park timers settled
SETS=(m1 mq c1 c2 c3)
declare -A C0 U0 W0
for s in "${SETS[@]}"; do C0[$s]=$(ctx_of "${PIDOF[$s]}"); U0[$s]=$(cpu_of "${PIDOF[$s]}"); W0[$s]=$(wb_of "${PIDOF[$s]}"); done
log "measuring ${SECS} s of idleness"
sleep "$SECS"
HZ=$(getconf CLK_TCK)
declare -A C U W
for s in "${SETS[@]}"; do
    kill -0 "${PIDOF[$s]}" 2>/dev/null || die "$s exited during the run"
    C[$s]=$(( $(ctx_of "${PIDOF[$s]}") - C0[$s] ))
    U[$s]=$(( $(cpu_of "${PIDOF[$s]}") - U0[$s] ))
    W[$s]=$(( $(wb_of "${PIDOF[$s]}") - W0[$s] ))
done
per_min() { awk -v c="$1" -v s="$SECS" 'BEGIN {printf "%.0f", c * 60 / s}'; }
ms() { awk -v t="$1" -v hz="$HZ" 'BEGIN {printf "%.0f", t * 1000 / hz}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b == 0) print (a == 0 ? "1.00" : "∞"); else printf "%.2f", a / b}'; }
C3=$(( C[c1] + C[c2] + C[c3] )); U3=$(( U[c1] + U[c2] + U[c3] )); W3=$(( W[c1] + W[c2] + W[c3] ))
{
    echo "# Idle: $CLIENTS connected clients, nothing sent, ${SECS} s"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); midge $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet HEAD -- src 2>/dev/null || echo ' +uncommitted'); mosquitto $(mosquitto -h 2>/dev/null | head -n 1 | sed 's/mosquitto version //')"
    echo "- both with persistence on (midge's default: raft log in redb; Mosquitto persistence true); clients keep-alive 60 s"
    echo "- \`scripts/bench-idle.sh --clients $CLIENTS --secs $SECS\`; CPU from /proc/PID/stat in ${HZ} Hz ticks"
    echo
    echo "| | midge 1 node | mosquitto | midge 3 nodes (sum) | 1 node / mosquitto |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    echo "| context switches per minute | $(per_min "${C[m1]}") | $(per_min "${C[mq]}") | $(per_min "$C3") | $(ratio "${C[m1]}" "${C[mq]}") |"
    echo "| CPU time (ms) | $(ms "${U[m1]}") | $(ms "${U[mq]}") | $(ms "$U3") | $(ratio "${U[m1]}" "${U[mq]}") |"
    echo "| bytes written to disk | ${W[m1]} | ${W[mq]} | $W3 | |"
} > "$WORK/table.md"
cat "$WORK/table.md"
cp "$WORK/table.md" "$OUT"
log "wrote $OUT"
