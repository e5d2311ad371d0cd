#!/usr/bin/env bash
# HAProxy in front of a three-node midge cluster: failover without client
# cluster awareness.
#
#   scripts/test-haproxy.sh [--kills N] [--no-build]
#
# Starts three midge nodes on 127.0.0.1 (free ports, cluster_follower_mode
# closed, health_listener on each), then Debian's haproxy as a child of this
# script (`haproxy -f docs/examples/haproxy.cfg -db`, not the system service),
# TCP mode, `option httpchk GET /health` every 200 ms against each node's
# health port. A persistent-session QoS 1 subscriber and a QoS 1 publisher
# (python3 paho-mqtt, auto-reconnect) talk to HAProxy only. The leader is
# killed with SIGKILL N times (default 2) and restarted after each kill.
# Passes when: a new leader serves after every kill, publishing resumes
# through HAProxy, every publish that got a PUBACK reached the subscriber, and
# every subscriber reconnect found its session (session present = 1).
#
# Needs: haproxy, python3 + paho-mqtt (1.6 or 2.x), a midge release build
# (built unless --no-build or MIDGE_BIN is set).
#   apt-get install -y haproxy python3-paho-mqtt
# Loopback only; every wait is bounded; stops only the processes it started
# (by PID). Exit 0 = pass, 1 = fail, 2 = could not run. About 30 s.
set -u -o pipefail
HA_NAME=test-haproxy
. "$(dirname "$0")/lib-ha.sh"

KILLS=2
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --kills) KILLS="${2:-}"; shift ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) ha_log "unknown argument $1"; exit 2 ;;
    esac
    shift
done
case "$KILLS" in ''|*[!0-9]*) ha_log "--kills must be a number"; exit 2 ;; esac

ha_need haproxy haproxy
ha_pick_python paho
ha_workdir haproxy
PY_PID=""
cleanup() {
    [ -n "$PY_PID" ] && ha_stop_pid "$PY_PID"
    ha_kill_recorded
}
trap cleanup EXIT
trap 'ha_log "interrupted"; exit 130' INT TERM

ha_midge_bin "$BUILD"
ha_log "work dir: $WORK; $MIDGE_DESC; $(haproxy -v 2>/dev/null | head -1)"

HA_NAME=$HA_NAME timeout --kill-after=10 150 "$HA_PY" "$HA_ROOT/scripts/ha/haproxy_test.py" \
    --work "$WORK" --bin "$MIDGE_BIN" --haproxy-cfg "$HA_ROOT/docs/examples/haproxy.cfg" --kills "$KILLS" &
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
