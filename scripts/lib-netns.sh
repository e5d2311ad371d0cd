# shellcheck shell=bash
# Network namespaces for midge's partition test and the delayed failover
# benchmark. Source it, then:
#
#   netns_up [DELAY_MS]   create the topology below (needs root, iproute2)
#   netns_isolate N       cut node N (1..3) off from everyone (bridge fabric)
#   netns_heal N          reconnect node N
#   netns_down            kill the delay switch, delete every namespace (trap it)
#
# Topology (names get a per-run prefix, e.g. mgha4711-n1, so parallel runs
# never collide; nothing is created in the root namespace):
#
#   PREFIX-n1  eth0 10.77.0.1/24  --+
#   PREFIX-n2  eth0 10.77.0.2/24  --+--  PREFIX-sw: bridge br0 (ports p1 p2 p3 pc)
#   PREFIX-n3  eth0 10.77.0.3/24  --+
#   PREFIX-cl  eth0 10.77.0.100/24 -+    (clients and the test driver run here)
#
# Each node namespace has its own loopback too. The 10.77.0.0/24 addresses
# exist only inside these namespaces: no route leads out of them, so test
# traffic cannot leave the machine.
#
# DELAY_MS > 0 delays every frame a node sends by DELAY_MS (node to node:
# DELAY_MS one way, 2*DELAY_MS round trip). With sch_netem in the kernel that
# is `tc qdisc add dev eth0 root netem delay DELAY_ms` in each node namespace;
# without it (e.g. minimal VM kernels) scripts/ha/delay_switch.py, a
# userspace switch with TAP ports, replaces the bridge and applies the same
# delay. MIDGE_NETNS_DELAY_METHOD says which one ran.
#
# Exports: MIDGE_NETNS_PREFIX, MIDGE_NETNS_NODES ("P-n1 P-n2 P-n3"),
# MIDGE_NETNS_ADDRS ("10.77.0.1 10.77.0.2 10.77.0.3"), MIDGE_NETNS_CLIENT,
# MIDGE_NETNS_CLIENT_ADDR, MIDGE_NETNS_FABRIC (bridge|switch),
# MIDGE_NETNS_DELAY_METHOD (none|netem|userspace-switch).

NETNS_PREFIX=${NETNS_PREFIX:-mgha$$}
NETNS_SUBNET=10.77.0
NETNS_SWITCH_PID=""
NETNS_CREATED=()

_nn_log() { if declare -F ha_log >/dev/null; then ha_log "$*"; else echo "[netns] $*" >&2; fi; }

_nn_add() {  # _nn_add NAME: create a namespace with loopback up
    ip netns add "$1" || return 1
    NETNS_CREATED+=("$1")
    ip -n "$1" link set lo up
}

# netns_have_netem: 0 when this kernel accepts a netem qdisc.
netns_have_netem() {
    local probe="${NETNS_PREFIX}-probe" ok=1
    _nn_add "$probe" || return 1
    if ip netns exec "$probe" tc qdisc add dev lo root netem delay 1ms 2>/dev/null; then ok=0; fi
    ip netns del "$probe" 2>/dev/null
    return $ok
}

netns_up() {
    local delay=${1:-0} i ns
    command -v ip >/dev/null || { _nn_log "missing 'ip': apt-get install -y iproute2"; return 2; }
    [ "$(id -u)" = 0 ] || { _nn_log "network namespaces need root"; return 2; }
    MIDGE_NETNS_PREFIX=$NETNS_PREFIX
    MIDGE_NETNS_NODES="$NETNS_PREFIX-n1 $NETNS_PREFIX-n2 $NETNS_PREFIX-n3"
    MIDGE_NETNS_ADDRS="$NETNS_SUBNET.1 $NETNS_SUBNET.2 $NETNS_SUBNET.3"
    MIDGE_NETNS_CLIENT="$NETNS_PREFIX-cl"
    MIDGE_NETNS_CLIENT_ADDR="$NETNS_SUBNET.100"
    MIDGE_NETNS_DELAY_METHOD=none
    MIDGE_NETNS_FABRIC=bridge
    if [ "$delay" != 0 ]; then
        command -v tc >/dev/null || { _nn_log "missing 'tc': apt-get install -y iproute2"; return 2; }
        if netns_have_netem; then
            MIDGE_NETNS_DELAY_METHOD=netem
        else
            MIDGE_NETNS_DELAY_METHOD=userspace-switch
            MIDGE_NETNS_FABRIC=switch
            _nn_log "kernel has no sch_netem (tc netem): using scripts/ha/delay_switch.py for the ${delay} ms delay"
        fi
    fi
    export MIDGE_NETNS_PREFIX MIDGE_NETNS_NODES MIDGE_NETNS_ADDRS MIDGE_NETNS_CLIENT MIDGE_NETNS_CLIENT_ADDR \
        MIDGE_NETNS_FABRIC MIDGE_NETNS_DELAY_METHOD

    _nn_add "$NETNS_PREFIX-sw" || return 1
    for ns in $MIDGE_NETNS_NODES $MIDGE_NETNS_CLIENT; do _nn_add "$ns" || return 1; done

    if [ "$MIDGE_NETNS_FABRIC" = bridge ]; then
        ip -n "$NETNS_PREFIX-sw" link add br0 type bridge || return 1
        ip -n "$NETNS_PREFIX-sw" link set br0 up
        for i in 1 2 3 c; do
            if [ "$i" = c ]; then ns=$MIDGE_NETNS_CLIENT; else ns="$NETNS_PREFIX-n$i"; fi
            ip -n "$NETNS_PREFIX-sw" link add "p$i" type veth peer name eth0 netns "$ns" || return 1
            ip -n "$NETNS_PREFIX-sw" link set "p$i" master br0
            ip -n "$NETNS_PREFIX-sw" link set "p$i" up
        done
    else
        local ready="/tmp/$NETNS_PREFIX-switch.ready" py=${HA_PY:-python3}
        rm -f "$ready"
        ip netns exec "$NETNS_PREFIX-sw" "$py" "$(dirname "${BASH_SOURCE[0]}")/ha/delay_switch.py" \
            --ports n1,n2,n3,cl --delay-ms "$delay" --delay-from n1,n2,n3 --ready "$ready" \
            --max-seconds 1800 2>"/tmp/$NETNS_PREFIX-switch.log" &
        NETNS_SWITCH_PID=$!
        for _ in $(seq 1 100); do [ -s "$ready" ] && break; sleep 0.05; done
        [ -s "$ready" ] || { _nn_log "delay switch did not start: $(cat "/tmp/$NETNS_PREFIX-switch.log")"; return 1; }
        rm -f "$ready"
        for i in 1 2 3 cl; do
            if [ "$i" = cl ]; then ns=$MIDGE_NETNS_CLIENT; else ns="$NETNS_PREFIX-n$i"; fi
            local tap="t-n$i"; [ "$i" = cl ] && tap="t-cl"
            ip -n "$NETNS_PREFIX-sw" link set "$tap" netns "$ns" || return 1
            ip -n "$ns" link set "$tap" name eth0 || return 1
        done
    fi
    for i in 1 2 3; do
        ns="$NETNS_PREFIX-n$i"
        ip -n "$ns" addr add "$NETNS_SUBNET.$i/24" dev eth0 || return 1
        ip -n "$ns" link set eth0 up
        if [ "$MIDGE_NETNS_DELAY_METHOD" = netem ]; then
            ip netns exec "$ns" tc qdisc add dev eth0 root netem delay "${delay}ms" limit 100000 || return 1
        fi
    done
    ip -n "$MIDGE_NETNS_CLIENT" addr add "$MIDGE_NETNS_CLIENT_ADDR/24" dev eth0 || return 1
    ip -n "$MIDGE_NETNS_CLIENT" link set eth0 up
    # Wait until the client namespace reaches every node (duplicate address
    # detection is IPv6 only; IPv4 works as soon as the links are up).
    local ok
    for i in $(seq 1 50); do
        ok=1
        for a in $MIDGE_NETNS_ADDRS; do
            ip netns exec "$MIDGE_NETNS_CLIENT" "${HA_PY:-python3}" -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(0.3)
try:
    s.connect((sys.argv[1], 9))
except ConnectionRefusedError:
    sys.exit(0)  # the host answered (RST): reachable
except OSError:
    sys.exit(1)
' "$a" || { ok=0; break; }
        done
        [ "$ok" = 1 ] && break
        sleep 0.1
    done
    [ "$ok" = 1 ] || { _nn_log "namespaces set up but nodes unreachable from $MIDGE_NETNS_CLIENT"; return 1; }
    _nn_log "namespaces ${NETNS_PREFIX}-{sw,n1,n2,n3,cl} up ($MIDGE_NETNS_FABRIC fabric, delay ${delay} ms via $MIDGE_NETNS_DELAY_METHOD)"
    return 0
}

netns_isolate() {
    [ "${MIDGE_NETNS_FABRIC:-bridge}" = bridge ] || { _nn_log "netns_isolate needs the bridge fabric"; return 1; }
    ip -n "$NETNS_PREFIX-sw" link set "p$1" down
}

netns_heal() {
    [ "${MIDGE_NETNS_FABRIC:-bridge}" = bridge ] || { _nn_log "netns_heal needs the bridge fabric"; return 1; }
    ip -n "$NETNS_PREFIX-sw" link set "p$1" up
}

netns_down() {
    local ns i
    if [ -n "$NETNS_SWITCH_PID" ]; then
        kill "$NETNS_SWITCH_PID" 2>/dev/null
        for i in $(seq 1 30); do kill -0 "$NETNS_SWITCH_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$NETNS_SWITCH_PID" 2>/dev/null
        wait "$NETNS_SWITCH_PID" 2>/dev/null
        [ -s "/tmp/$NETNS_PREFIX-switch.log" ] && _nn_log "$(tail -1 "/tmp/$NETNS_PREFIX-switch.log")"
        rm -f "/tmp/$NETNS_PREFIX-switch.log"
        NETNS_SWITCH_PID=""
    fi
    for ns in "${NETNS_CREATED[@]+"${NETNS_CREATED[@]}"}"; do
        ip netns del "$ns" 2>/dev/null
    done
    NETNS_CREATED=()
    return 0
}
