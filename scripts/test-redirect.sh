#!/usr/bin/env bash
# Redirect mode: MQTT 5 clients follow the Server Reference to the leader.
#
#   scripts/test-redirect.sh [--no-build]
#
# Three midge nodes on 127.0.0.1 (free ports) with
# `cluster_follower_mode redirect`. With python3 paho-mqtt (1.6 or 2.x)
# (scripts/ha/redirect_test.py):
#  * an MQTT 5 client on a follower gets CONNACK 0x9C "Use another server"
#    with the Server Reference property = the leader's host:port;
#  * it reconnects there, subscribes, publishes QoS 1, gets the PUBACK and
#    receives its message;
#  * an MQTT 3.1.1 client on a follower gets CONNACK return code 3;
#  * after the leader is killed, a follower's reference names the new
#    leader, and following it works again.
#
# Needs: python3 + paho-mqtt, a midge release build (built unless --no-build
# or MIDGE_BIN is set):  apt-get install -y python3-paho-mqtt
# Loopback only, bounded, stops only its own processes. Exit 0 = pass,
# 1 = fail, 2 = could not run. About 5 s.
set -u -o pipefail
HA_NAME=test-redirect
. "$(dirname "$0")/lib-ha.sh"

BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) ha_log "unknown argument $1"; exit 2 ;;
    esac
    shift
done

ha_pick_python paho
ha_workdir redirect
PY_PID=""
cleanup() {
    [ -n "$PY_PID" ] && ha_stop_pid "$PY_PID"
    ha_kill_recorded
}
trap cleanup EXIT
trap 'ha_log "interrupted"; exit 130' INT TERM

ha_midge_bin "$BUILD"
ha_log "work dir: $WORK; $MIDGE_DESC"

HA_NAME=$HA_NAME timeout --kill-after=10 120 "$HA_PY" "$HA_ROOT/scripts/ha/redirect_test.py" \
    --work "$WORK" --bin "$MIDGE_BIN" &
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
