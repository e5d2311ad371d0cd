#!/usr/bin/env bash
# Network partition test of `cluster_mode dynsec_sync` (active-active).
#
#   scripts/test-partition-dynsec.sh [--no-build]
#
# Three midge nodes in the namespaces of scripts/lib-netns.sh (10.77.0.1-3,
# a client namespace 10.77.0.100; nothing in the root namespace), each with
# its own copy of the dynamic-security file `mosquitto_ctrl dynsec init`
# wrote. Node 3 is cut off from the bridge (netns_isolate 3), then:
#
#  * the isolated node keeps serving its clients: inside its own namespace
#    a client it knows logs in, subscribes and gets what another of its
#    clients publishes;
#  * a dynamic-security change through the isolated node gets the
#    "no quorum" error within 10 s and is not made there;
#  * the majority applies a change (createClient bob through node 1), and
#    bob logs in on node 2;
#  * after healing, node 3 has the change: bob logs in on node 3 and node
#    3's file lists bob.
#
# Needs root, iproute2, mosquitto-clients, curl, a midge release build
# (built unless --no-build or MIDGE_BIN is set). Namespaces are deleted on
# exit, also on failure. Exit 0 = pass, 1 = fail, 2 = could not run. About
# 20 s.
set -u -o pipefail
HA_NAME=test-partition-dynsec
. "$(dirname "$0")/lib-ha.sh"
. "$(dirname "$0")/lib-netns.sh"

BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) ha_log "unknown argument $1"; exit 2 ;;
    esac
    shift
done

ha_need_root
ha_need ip iproute2
ha_need mosquitto_ctrl mosquitto-clients
ha_need curl curl
ha_workdir partition-dynsec
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do ha_stop_pid "$p"; done
    netns_down
}
trap cleanup EXIT
trap 'ha_log "interrupted"; exit 130' INT TERM

ha_midge_bin "$BUILD"
ha_log "work dir: $WORK; $MIDGE_DESC"
netns_up 0 || { ha_log "could not create the network namespaces"; exit 2; }
NS=($MIDGE_NETNS_NODES)
CL=$MIDGE_NETNS_CLIENT

fail() { ha_log "FAILED: $*; logs kept in $WORK"; for i in 1 2 3; do echo "--- node $i"; tail -20 "$WORK/n$i.log"; done >&2; exit 1; }
# in_ns NS CMD...: run CMD in namespace NS, bounded to 15 s.
in_ns() { local ns=$1; shift; timeout --kill-after=5 15 ip netns exec "$ns" "$@"; }
ctrl() { local ns=$1 node=$2; shift 2; in_ns "$ns" mosquitto_ctrl -h "10.77.0.$node" -u admin -P adminpass dynsec "$@" 2>&1 | grep -v '^Warning: You are running\|^This means all of\|^$'; }
logs_in() { local ns=$1 node=$2 user=$3 pw=$4; in_ns "$ns" mosquitto_pub -h "10.77.0.$node" -u "$user" -P "$pw" -t x -m 1 >/dev/null 2>&1; }
eventually() {  # eventually SECONDS CMD...: CMD succeeds within SECONDS
    local end=$((SECONDS + $1)); shift
    until "$@"; do [ "$SECONDS" -lt "$end" ] || return 1; sleep 0.2; done
}

mosquitto_ctrl dynsec init "$WORK/ds1.json" admin adminpass >/dev/null || exit 2
cp "$WORK/ds1.json" "$WORK/ds2.json"
cp "$WORK/ds1.json" "$WORK/ds3.json"
for i in 1 2 3; do
    cat >"$WORK/n$i.conf" <<EOF
listener 1883 10.77.0.$i
health_listener 8081 10.77.0.$i
cluster_mode dynsec_sync
cluster_node_id $i
cluster_peer 1 10.77.0.1:7883
cluster_peer 2 10.77.0.2:7883
cluster_peer 3 10.77.0.3:7883
plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so
plugin_opt_config_file $WORK/ds$i.json
persistence_location $WORK/data$i
EOF
    ip netns exec "${NS[$((i - 1))]}" "$MIDGE_BIN" -c "$WORK/n$i.conf" >"$WORK/n$i.log" 2>&1 &
    PIDS+=($!)
done
serving() { [ "$(in_ns "$CL" curl -s -o /dev/null -w '%{http_code}' "http://10.77.0.$1:8081/health")" = 200 ]; }
for i in 1 2 3; do eventually 20 serving "$i" || fail "node $i does not serve"; done
ha_log "three nodes serve"

# The default access first: a node where alice logs in has applied it too.
# (The first change may reach the group before its leader imported the
# file: "not loaded yet, try again".)
first_change() { out=$(ctrl "$CL" 1 setDefaultACLAccess subscribe allow); [ -z "$out" ]; }
eventually 20 first_change || fail "setDefaultACLAccess: $out"
out=$(ctrl "$CL" 1 setDefaultACLAccess publishClientSend allow); [ -z "$out" ] || fail "setDefaultACLAccess: $out"
out=$(ctrl "$CL" 1 createClient alice -p apw); [ -z "$out" ] || fail "createClient alice: $out"
eventually 10 logs_in "$CL" 3 alice apw || fail "alice does not log in on node 3"

netns_isolate 3 || fail "cannot isolate node 3"
ha_log "node 3 isolated"

# The isolated node serves its clients (a client inside its namespace).
in_ns "${NS[2]}" mosquitto_sub -h 10.77.0.3 -u alice -P apw -i alice-sub -t 'plant/#' -C 1 -W 10 >"$WORK/sub.out" 2>&1 &
SUB=$!
sleep 1
in_ns "${NS[2]}" mosquitto_pub -h 10.77.0.3 -u alice -P apw -t plant/line1 -m during-partition || fail "alice cannot publish on the isolated node"
wait "$SUB" || fail "alice's subscriber on the isolated node got nothing: $(cat "$WORK/sub.out")"
grep -q during-partition "$WORK/sub.out" || fail "wrong message on the isolated node: $(cat "$WORK/sub.out")"
ha_log "the isolated node serves its clients"

# A change through the isolated node: an error within 10 s, not made.
start=$SECONDS
out=$(ctrl "${NS[2]}" 3 createClient carol -p cpw)
took=$((SECONDS - start))
echo "$out" | grep -q "createClient: Error: The cluster has no quorum" || fail "change through the isolated node: '$out'"
[ "$took" -le 10 ] || fail "the no-quorum answer took $took s"
! logs_in "${NS[2]}" 3 carol cpw || fail "carol was created on the isolated node alone"
ha_log "a change through the isolated node: refused after $took s"

# The majority applies a change.
out=$(ctrl "$CL" 1 createClient bob -p bpw); [ -z "$out" ] || fail "createClient bob through the majority: $out"
eventually 10 logs_in "$CL" 2 bob bpw || fail "bob does not log in on node 2"
! logs_in "${NS[2]}" 3 bob bpw || fail "the isolated node knows bob already"
ha_log "the majority applied a change"

netns_heal 3 || fail "cannot heal node 3"
eventually 20 logs_in "$CL" 3 bob bpw || fail "node 3 did not learn bob after healing"
eventually 5 grep -q '"bob"' "$WORK/ds3.json" || fail "node 3's file does not list bob"
ha_log "after healing node 3 has the change"
ha_log "PASS"
ha_pass_cleanup
exit 0
