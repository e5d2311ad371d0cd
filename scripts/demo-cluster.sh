#!/usr/bin/env bash
# A three-node midge cluster on this machine, for trying things out.
#
#   scripts/demo-cluster.sh [--seconds N] [--dir DIR]
#
# Starts three midge nodes on 127.0.0.1 with built-in defaults plus the
# cluster lines: MQTT on 1883, 1884, 1885 and health endpoints on 8081,
# 8082, 8083 (raft between them on 7883-7885); a port that is already taken
# is replaced by a free one. Any node accepts clients (followers forward
# them to the leader). Prints each node's client address and health URL,
# then shows the three logs (prefixed [node1] ...) until Ctrl-C, which stops
# all three. Try, in another terminal:
#
#   mosquitto_sub -h 127.0.0.1 -p 1884 -t 'demo/#' -v -q 1 -c -i sub1 &
#   mosquitto_pub -h 127.0.0.1 -p 1885 -t demo/hello -m hi -q 1
#   curl -s http://127.0.0.1:8081/health          (200 on the leader, 503 elsewhere)
#   kill -9 <the leader's pid>                     (another node takes over)
#
# Data lives in a fresh temp directory, removed at exit; with --dir DIR (or
# MIDGE_DEMO_DIR) it lives in DIR and is kept, so a later run continues it.
# The binary: $MIDGE_BIN, or target/release/midge (cargo build --release
# first, a no-op when it is up to date). --seconds N stops the cluster after N seconds (default: run until
# Ctrl-C, at most 12 hours).
set -u -o pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_MAX=43200
DIR=${MIDGE_DEMO_DIR:-}
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECONDS_MAX="${2:-}"; shift ;;
        --dir) DIR="${2:-}"; shift ;;
        -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "demo-cluster.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$SECONDS_MAX" in ''|*[!0-9]*) echo "demo-cluster.sh: --seconds needs a number" >&2; exit 2 ;; esac

say() { echo "demo-cluster: $*" >&2; }

if [ -n "${MIDGE_BIN:-}" ]; then
    BIN=$MIDGE_BIN
else
    BIN=$ROOT/target/release/midge
    if command -v cargo >/dev/null; then
        say "cargo build --release (a few minutes the first time, instant when up to date)"
        if ! (cd "$ROOT" && cargo build --release --bin midge); then
            [ -x "$BIN" ] || { say "build failed"; exit 2; }
            say "build failed: running the existing $BIN"
        fi
    fi
fi
[ -x "$BIN" ] || { say "no midge binary at $BIN; install Rust (https://rustup.rs) and run: cargo build --release"; exit 2; }

KEEP=1
if [ -z "$DIR" ]; then
    DIR=$(mktemp -d /tmp/midge-demo.XXXXXX)
    KEEP=0
fi
mkdir -p "$DIR"

# busy PORT: something on 127.0.0.1 accepts connections on PORT, or we
# already picked it.
PICKED=" "
busy() {
    case "$PICKED" in *" $1 "*) return 0 ;; esac
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
# pick PREFERRED: PREFERRED if free, else the first free of +10000, +20000, ...
pick() {
    local p=$1 k
    for k in 0 10000 20000 30000 40000 50000; do
        if [ $((p + k)) -le 65535 ] && ! busy $((p + k)); then
            PICKED="$PICKED$((p + k)) "
            echo $((p + k))
            return
        fi
    done
    for k in $(seq 1 100); do
        p=$((20000 + RANDOM % 40000))
        busy "$p" || { PICKED="$PICKED$p "; echo "$p"; return; }
    done
    say "no free port found"; exit 2
}
MQTT=() HEALTH=() RAFT=()
for i in 1 2 3; do
    MQTT[$i]=$(pick $((1882 + i)))
    HEALTH[$i]=$(pick $((8080 + i)))
    RAFT[$i]=$(pick $((7882 + i)))
done

PIDS=()
stop_all() {
    local p i
    trap - INT TERM EXIT
    echo >&2
    say "stopping the three nodes"
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill "$p" 2>/dev/null; done
    for i in $(seq 1 50); do
        local alive=0
        for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    if [ "$KEEP" = 0 ]; then rm -rf "$DIR"; else say "data kept in $DIR"; fi
    exit 0
}
trap stop_all INT TERM EXIT

for i in 1 2 3; do
    mkdir -p "$DIR/node$i"
    {
        echo "# demo node $i: built-in defaults plus the cluster lines (scripts/demo-cluster.sh)"
        echo "listener ${MQTT[$i]} 127.0.0.1"
        echo "health_listener ${HEALTH[$i]} 127.0.0.1"
        echo "persistence_location $DIR/node$i"
        echo "cluster_node_id $i"
        for j in 1 2 3; do echo "cluster_peer $j 127.0.0.1:${RAFT[$j]}"; done
    } >"$DIR/node$i.conf"
    "$BIN" -c "$DIR/node$i.conf" >/dev/null 2> >(tee -a "$DIR/node$i.log" | sed -u "s/^/[node$i] /" >&2) &
    PIDS[$i]=$!
done

health() {  # health PORT -> HTTP status code (bash only: no curl needed)
    timeout 1 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GET /health HTTP/1.0\r\n\r\n" >&3
        head -1 <&3' _ "$1" 2>/dev/null | cut -d' ' -f2
}
LEADER=""
for k in $(seq 1 100); do
    for i in 1 2 3; do
        [ "$(health "${HEALTH[$i]}")" = 200 ] && LEADER=$i
    done
    [ -n "$LEADER" ] && break
    for i in 1 2 3; do kill -0 "${PIDS[$i]}" 2>/dev/null || { say "node $i exited; see $DIR/node$i.log"; exit 1; }; done
    sleep 0.1
done

{
    echo
    echo "================================================================================"
    echo " midge demo cluster: 3 nodes on 127.0.0.1 (data: $DIR)"
    echo
    printf "   %-6s %-7s %-18s %-34s %s\n" node pid "mqtt" "health" "role"
    for i in 1 2 3; do
        role=follower; [ "$i" = "$LEADER" ] && role=leader
        [ -z "$LEADER" ] && role="?"
        printf "   %-6s %-7s %-18s %-34s %s\n" "node$i" "${PIDS[$i]}" "127.0.0.1:${MQTT[$i]}" \
            "http://127.0.0.1:${HEALTH[$i]}/health" "$role"
    done
    echo
    echo " Any node accepts MQTT clients (followers forward them to the leader):"
    echo "   mosquitto_sub -h 127.0.0.1 -p ${MQTT[2]} -t 'demo/#' -v -q 1 -c -i sub1"
    echo "   mosquitto_pub -h 127.0.0.1 -p ${MQTT[3]} -t demo/hello -m hi -q 1"
    [ -n "$LEADER" ] && echo " Kill the leader to watch a failover:  kill -9 ${PIDS[$LEADER]}"
    echo " Configs and logs: $DIR/node{1,2,3}.conf, .log    Ctrl-C stops all three."
    echo "================================================================================"
    echo
} >&2
[ -z "$LEADER" ] && say "no leader after 10 s; the logs below say why"

END=$((SECONDS + SECONDS_MAX))
while [ "$SECONDS" -lt "$END" ]; do
    alive=0
    for i in 1 2 3; do kill -0 "${PIDS[$i]}" 2>/dev/null && alive=1; done
    [ "$alive" = 1 ] || { say "all three nodes have exited"; break; }
    sleep 1
done
stop_all
