#!/usr/bin/env bash
# The demo as a test: what README "Try the demo cluster" promises.
#
#   bash scripts/test-demo.sh        (MIDGE_BIN=PATH to skip the release build)
#
# Starts `bash scripts/demo-cluster.sh --seconds 120`, waits for its table,
# subscribes through one follower (mosquitto_sub -q 1 -c, a persistent
# session), publishes through the other follower and checks the message
# arrives; then kills the leader (SIGKILL, its PID from the table),
# publishes again through the surviving follower and checks the same
# subscriber receives that too. Needs mosquitto-clients. Loopback only;
# everything it starts is stopped by PID; the demo removes its data dir.
# About 10-20 s.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib.sh"
command -v mosquitto_sub >/dev/null || die "apt-get install -y mosquitto-clients"

OUT=$(mktemp -d /tmp/midge-test-demo.XXXXXX)
DEMO_PID="" SUB_PID=""
NODE_PIDS=""
cleanup() {
    local p _
    stop_pid "$SUB_PID"
    # SIGTERM: the demo stops its three nodes (up to 5 s) and removes its dir.
    if [ -n "$DEMO_PID" ]; then
        kill "$DEMO_PID" 2>/dev/null
        for _ in $(seq 1 150); do kill -0 "$DEMO_PID" 2>/dev/null || break; sleep 0.1; done
        stop_pid "$DEMO_PID"
    fi
    for p in $NODE_PIDS; do  # only if the demo could not stop them
        if tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -q 'midge-demo\.'; then kill -9 "$p" 2>/dev/null; fi
    done
    if [ "${PASSED:-0}" = 1 ]; then rm -rf "$OUT"; else log "output kept in $OUT"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bash "$ROOT/scripts/demo-cluster.sh" --seconds 120 >"$OUT/demo.out" 2>"$OUT/demo.err" &
DEMO_PID=$!
for _ in $(seq 1 1200); do   # up to 10 min: the first release build
    grep -qs 'Ctrl-C stops all three' "$OUT/demo.err" && break
    kill -0 "$DEMO_PID" 2>/dev/null || { tail -20 "$OUT/demo.err" >&2; die "the demo exited before printing its table"; }
    sleep 0.5
done
grep -q 'Ctrl-C stops all three' "$OUT/demo.err" || die "no table from the demo"
# "   node1  4711    127.0.0.1:1883  http://127.0.0.1:8081/health  leader"
TABLE=$(grep -E '^   node[123] +[0-9]+ +127\.0\.0\.1:[0-9]+ ' "$OUT/demo.err")
echo "$TABLE" >&2
NODE_PIDS=$(echo "$TABLE" | awk '{print $2}')
LEADER_PID=$(echo "$TABLE" | awk '$5 == "leader" {print $2}')
mapfile -t FOLLOWERS < <(echo "$TABLE" | awk '$5 == "follower" {split($3, a, ":"); print a[2]}')
[ -n "$LEADER_PID" ] && [ ${#FOLLOWERS[@]} = 2 ] || die "expected a leader and two followers in the table"
SUB_PORT=${FOLLOWERS[0]} PUB_PORT=${FOLLOWERS[1]}

mosquitto_sub -h 127.0.0.1 -p "$SUB_PORT" -t 'demo/#' -v -q 1 -c -i test-demo-sub >"$OUT/sub.out" 2>"$OUT/sub.err" &
SUB_PID=$!
received() {  # received LINE SECONDS
    for _ in $(seq 1 $(($2 * 10))); do
        grep -qxF "$1" "$OUT/sub.out" && return 0
        sleep 0.1
    done
    return 1
}
publish() {  # publish PORT TOPIC MSG SECONDS: retried until a QoS 1 publish is acknowledged
    for _ in $(seq 1 "$4"); do
        timeout 5 mosquitto_pub -h 127.0.0.1 -p "$1" -t "$2" -m "$3" -q 1 2>>"$OUT/pub.err" && return 0
        sleep 1
    done
    return 1
}
# The subscription may not be in place for the first publish: repeat a
# probe until one arrives, then send the real message.
probe_end=$((SECONDS + 20))
i=0
while [ "$SECONDS" -lt "$probe_end" ]; do
    i=$((i + 1))
    timeout 3 mosquitto_pub -h 127.0.0.1 -p "$PUB_PORT" -t demo/probe -m "p$i" -q 1 2>>"$OUT/pub.err"
    received "demo/probe p$i" 1 && break
done
grep -q '^demo/probe ' "$OUT/sub.out" || die "nothing arrived through the follower on $SUB_PORT (published via $PUB_PORT); see $OUT"
publish "$PUB_PORT" demo/hello before-failover 10 || die "publish via follower $PUB_PORT failed"
received "demo/hello before-failover" 10 || die "subscriber (via $SUB_PORT) did not get the message published via $PUB_PORT"
log "follower to follower: delivered"

kill -9 "$LEADER_PID"
log "killed the leader (pid $LEADER_PID)"
publish "$PUB_PORT" demo/hello after-failover 20 || die "publish via $PUB_PORT after the failover failed"
received "demo/hello after-failover" 20 || die "the persistent subscriber did not get the message published after the failover"
log "after the failover: delivered to the persistent subscriber"
PASSED=1
log "passed"
