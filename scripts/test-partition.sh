#!/usr/bin/env bash
# Network partition test: the raft leader is cut off from the other two nodes.
#
#   scripts/test-partition.sh [--no-build] [--bound SECONDS] [--mode proxy|redirect|closed]
#
# Builds the namespaces of scripts/lib-netns.sh (PREFIX-n1..n3 with
# 10.77.0.1-3, a client namespace PREFIX-cl with 10.77.0.100, all on a Linux
# bridge in PREFIX-sw; nothing in the root namespace), runs one midge per node
# namespace (`ip netns exec`, listening on its namespace address) and drives
# the test from the client namespace (scripts/ha/partition_test.py):
#
#  * cut: the leader's bridge port goes down. Within --bound s (default 2.0;
#    election timeout is 300-600 ms) the old leader answers 503 on /health,
#    logs "is no longer the leader", ends its clients' sessions and refuses
#    new ones and publishes; the other two elect a leader that acknowledges
#    a QoS 1 (retained) publish.
#  * heal: the old leader rejoins as a follower and all three report the same
#    commit_index / applied_index; the retained values written before and
#    during the partition (not the one sent to the isolated node) are served
#    by the leader, and again after killing leaders (up to 3 rounds) so that
#    other nodes, ideally the formerly isolated one, take over.
#
# Needs root, iproute2 (ip), python3, a midge release build (built unless
# --no-build or MIDGE_BIN is set):  apt-get install -y iproute2 python3
# Namespaces are deleted on exit (trap), also on failure or Ctrl-C. Traffic
# stays inside these namespaces. Exit 0 = pass, 1 = fail, 2 = could not run.
# About 20-30 s.
set -u -o pipefail
HA_NAME=test-partition
. "$(dirname "$0")/lib-ha.sh"
. "$(dirname "$0")/lib-netns.sh"

BUILD=1
BOUND=2.0
MODE=proxy
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) BUILD=0 ;;
        --bound) BOUND="${2:-}"; shift ;;
        --mode) MODE="${2:-}"; shift ;;
        -h|--help) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) ha_log "unknown argument $1"; exit 2 ;;
    esac
    shift
done
case "$MODE" in proxy|redirect|closed) ;; *) ha_log "--mode must be proxy, redirect or closed"; exit 2 ;; esac

ha_need_root
ha_need ip iproute2
ha_pick_python
ha_workdir partition
PY_PID=""
cleanup() {
    [ -n "$PY_PID" ] && ha_stop_pid "$PY_PID"
    ha_kill_recorded
    netns_down
}
trap cleanup EXIT
trap 'ha_log "interrupted"; exit 130' INT TERM

ha_midge_bin "$BUILD"
ha_log "work dir: $WORK; $MIDGE_DESC"
netns_up 0 || { ha_log "could not create the network namespaces"; exit 2; }

HA_NAME=$HA_NAME timeout --kill-after=10 150 ip netns exec "$MIDGE_NETNS_CLIENT" "$HA_PY" \
    "$HA_ROOT/scripts/ha/partition_test.py" --work "$WORK" --bin "$MIDGE_BIN" \
    --sw-ns "$NETNS_PREFIX-sw" --bound "$BOUND" --mode "$MODE" &
PY_PID=$!
wait "$PY_PID"
rc=$?
PY_PID=""
if [ "$rc" != 0 ]; then
    ha_log "FAILED (exit $rc); logs kept in $WORK"
    exit 1
fi
ha_pass_cleanup
exit 0
