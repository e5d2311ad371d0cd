#!/usr/bin/env bash
# Failover benchmark: how long QoS 1 publishing stops when the leader dies.
#
#   scripts/bench-failover.sh [--kills N] [--netem-ms MS] [--rate MSG_PER_S] [--window N]
#                             [--seed S] [--no-build] [--no-record] [--out FILE]
#
# Three midge nodes (follower mode proxy: any node forwards clients to the
# leader) under QoS 1 load from scripts/ha/bench_failover.py: a publisher
# with PUBACK tracking (--rate msg/s, default 500, at most --window
# outstanding, default 32) and a persistent-session subscriber, both
# reconnecting by trying each node's address in turn. The leader is killed
# with SIGKILL N times (default 10) and restarted each time.
#
# Reports per kill the unavailability = time from the last acknowledged
# publish before the kill to the first acknowledged publish (on a new
# connection) after it, as p50 / p99 / max, plus the time until another node
# serves (health endpoint), lost (acknowledged but never received by the
# subscriber), duplicated and unconfirmed (in flight at a drop) counts.
#
# Default: the nodes on 127.0.0.1. --netem-ms MS: each node in its own network
# namespace (scripts/lib-netns.sh), every frame a node sends delayed by MS
# (tc netem on each node's veth, or, when the kernel lacks sch_netem, the same
# delay from the userspace switch scripts/ha/delay_switch.py); clients run in
# their own namespace.
#
# Prints a markdown table and stores it (one section per variant, replacing
# that variant's previous run) in benches/results/failover.md unless
# --no-record or CI=true. Exit 1 when a message was lost, the subscriber's
# session was forgotten, a node died on its own, or failover did not finish.
# Needs root only for --netem-ms; python3; iproute2 for --netem-ms.
# 10 kills take about 1 minute.
set -u -o pipefail
HA_NAME=bench-failover
. "$(dirname "$0")/lib-ha.sh"
. "$(dirname "$0")/lib-netns.sh"

KILLS=10
NETEM=0
RATE=500
WINDOW=32
SEED=""
BUILD=1
RECORD=1
OUT="$HA_ROOT/benches/results/failover.md"
while [ $# -gt 0 ]; do
    case "$1" in
        --kills) KILLS="${2:-}"; shift ;;
        --netem-ms) NETEM="${2:-}"; shift ;;
        --rate) RATE="${2:-}"; shift ;;
        --window) WINDOW="${2:-}"; shift ;;
        --seed) SEED="${2:-}"; shift ;;
        --no-build) BUILD=0 ;;
        --no-record) RECORD=0 ;;
        --out) OUT="${2:-}"; shift ;;
        -h|--help) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) ha_log "unknown argument $1"; exit 2 ;;
    esac
    shift
done
for v in KILLS NETEM RATE WINDOW; do
    case "${!v}" in ''|*[!0-9.]*) ha_log "--$(echo "$v" | tr 'A-Z' 'a-z' | sed 's/netem/netem-ms/') must be a number"; exit 2 ;; esac
done
[ "$KILLS" -ge 1 ] && [ "$KILLS" -le 200 ] || { ha_log "--kills must be 1..200"; exit 2; }
[ -n "$SEED" ] || SEED=$(( $(date +%s) % 100000 ))
[ "${CI:-}" = true ] && RECORD=0

ha_pick_python
if [ "$NETEM" != 0 ]; then ha_need_root; ha_need ip iproute2; ha_need tc iproute2; fi
ha_workdir bench-failover
PY_PID=""
cleanup() {
    [ -n "$PY_PID" ] && ha_stop_pid "$PY_PID"
    ha_kill_recorded
    netns_down
}
trap cleanup EXIT
trap 'ha_log "interrupted"; exit 130' INT TERM

ha_midge_bin "$BUILD"
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
ha_log "work dir: $WORK; $MIDGE_DESC; kills $KILLS, seed $SEED, netem ${NETEM} ms"

ARGS=(--work "$WORK" --bin "$MIDGE_BIN" --kills "$KILLS" --rate "$RATE" --window "$WINDOW" --seed "$SEED"
      --json "$WORK/result.json")
T0=$(date +%s)
if [ "$NETEM" = 0 ]; then
    KEY=loopback
    LABEL="loopback (127.0.0.1)"
    HA_NAME=$HA_NAME timeout --kill-after=10 1500 "$HA_PY" "$HA_ROOT/scripts/ha/bench_failover.py" \
        "${ARGS[@]}" --label "$LABEL" &
else
    netns_up "$NETEM" || { ha_log "could not create the network namespaces"; exit 2; }
    KEY="delay-${NETEM}ms"
    if [ "$MIDGE_NETNS_DELAY_METHOD" = netem ]; then
        how="tc netem delay ${NETEM}ms on each node's veth"
    else
        how="scripts/ha/delay_switch.py delays every frame a node sends; this kernel has no sch_netem"
    fi
    LABEL="network namespaces, ${NETEM} ms one way between nodes: $how"
    HA_NAME=$HA_NAME timeout --kill-after=10 1500 ip netns exec "$MIDGE_NETNS_CLIENT" "$HA_PY" \
        "$HA_ROOT/scripts/ha/bench_failover.py" "${ARGS[@]}" --netns --label "$LABEL" &
fi
PY_PID=$!
wait "$PY_PID"
rc=$?
PY_PID=""
T1=$(date +%s)
[ -s "$WORK/result.json" ] || { ha_log "no result (exit $rc); logs in $WORK"; exit 1; }

META=("$(date -u '+%Y-%m-%d %H:%M UTC'), \`scripts/bench-failover.sh --kills $KILLS$([ "$NETEM" != 0 ] && echo " --netem-ms $NETEM") --seed $SEED\`"
      "midge: $MIDGE_DESC; cluster_tick_ms 50, cluster_election_ticks 6 (defaults), persistence with fsync"
      "machine: $(nproc) cores, load average at start $LOAD; wall time $((T1 - T0)) s; logs were in $WORK")
DEST=-
[ "$RECORD" = 1 ] && DEST=$OUT
echo
"$HA_PY" "$HA_ROOT/scripts/ha/bench_failover.py" render "$WORK/result.json" "$KEY" "$DEST" "${META[@]}"
[ "$RECORD" = 1 ] && ha_log "recorded in $OUT"
if [ "$rc" != 0 ]; then
    ha_log "FAILED (exit $rc); logs kept in $WORK"
    exit 1
fi
exit 0
