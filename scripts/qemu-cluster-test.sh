#!/usr/bin/env bash
# Boot three aarch64 midge guests on one virtual LAN and check, from the host
# and between the guests, that each broker answers MQTT.
#
#   scripts/qemu-cluster-test.sh [BINARY] [--config FILE] [--cluster]
#                                [--ready REGEX] [--boot-timeout S] [--keep]
#
# Each guest (QEMU `virt`, Cortex-A72, 256 MB, clock started at 1970 and set
# from the kernel command line) has two NICs:
#   - user-mode networking, restrict=on, hostfwd 127.0.0.1:PORTi -> :1883
#     (the host's MQTT clients reach node i there);
#   - the cluster LAN 192.0.2.0/24 (node i = 192.0.2.1i, the addresses of the
#     commented cluster_peer examples in boards/*/midge.conf): a `dgram`
#     netdev on 127.0.0.1 to a small UDP hub (python3, this script's child)
#     that repeats every Ethernet frame to the other guests. All of it stays
#     on loopback; nothing is sent anywhere else.
# Checks: every node logs the ready line; a host mosquitto_pub/mosquitto_sub
# round trip works on every node; every node gets a CONNACK from both other
# nodes across the LAN (busybox nc from inside the guest).
# --cluster adds "cluster_node_id i" and "cluster_peer 1..3 192.0.2.1x:7883"
# to each node's config (for the replication release) and then also checks
# that a message published on node 1 arrives at a subscriber on node 2, then
# stops the leader's guest (SIGKILL to its QEMU) and checks that the other
# two still serve a retained message acknowledged before the stop and pass
# a new message from one to the other.
#
# Host tools and the guest kernel come from scripts/qemu-boot-test.sh
# --prepare (same cache). Only the QEMU and hub processes started here are
# stopped, by PID.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="" CONFIG="$REPO/boards/generic-arm64-gateway/midge.conf" CLUSTER=0 KEEP=0
READY=${MIDGE_READY_PATTERN:-listen socket on port 1883}
BOOT_TIMEOUT=${MIDGE_QEMU_BOOT_TIMEOUT:-150}
N=3
while (($#)); do
  case "$1" in
    --config) CONFIG=$2; shift 2 ;;
    --cluster) CLUSTER=1; shift ;;
    --ready) READY=$2; shift 2 ;;
    --boot-timeout) BOOT_TIMEOUT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    -*) echo "qemu-cluster-test: unknown option $1" >&2; exit 2 ;;
    *) BIN=$1; shift ;;
  esac
done
BIN=${BIN:-$REPO/dist/midge-aarch64-unknown-linux-musl}

T0=$(date +%s.%N)
log() { printf '[qemu-cluster-test %6.1fs] %s\n' "$(awk -v s="$T0" -v n="$(date +%s.%N)" 'BEGIN{print n-s}')" "$*"; }
die() { log "FAIL: $*"; exit 1; }
[[ -f $BIN ]] || die "no binary $BIN"
readelf -h "$BIN" | grep -q 'Machine:.*AArch64' || die "$BIN is not an aarch64 ELF"
readelf -l "$BIN" | grep -q 'Requesting program interpreter' && die "$BIN is dynamically linked: use the musl build"
[[ -f $CONFIG ]] || die "no config $CONFIG"
command -v python3 >/dev/null || die "python3 is needed for the LAN hub"

G=$("$REPO/scripts/qemu-boot-test.sh" --prepare | sed -n 's/^guest-dir: //p' | tail -1)
[[ -n $G && -f $G/ready ]] || die "qemu-boot-test.sh --prepare failed"
log "prepared: $(qemu-system-aarch64 --version | head -1); guest $(cat "$G/kernel")"

WORK=$(mktemp -d /tmp/midge-qemu-cluster.XXXXXX)
declare -a QPIDS=() SUBPIDS=()
HUB_PID=""
cleanup() {
  local rc=$? p
  for p in "${QPIDS[@]}" ${HUB_PID:+"$HUB_PID"} "${SUBPIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${QPIDS[@]}" ${HUB_PID:+"$HUB_PID"}; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  if [[ $rc -ne 0 ]]; then
    for i in $(seq 1 $N); do
      [[ -f $WORK/console$i.log ]] || continue
      echo "---- node $i console (last 40 lines) ----"; tail -n 40 "$WORK/console$i.log" | tr -d '\r'
    done
    echo "----"
  fi
  if [[ $KEEP == 1 || $rc -ne 0 ]]; then echo "qemu-cluster-test: work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {  # $1 = t (tcp) or u (udp)
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 40000))
    ss -Hl"$1"n "sport = :$p" 2>/dev/null | grep -q . && continue
    [[ " ${USED_PORTS:-} " == *" $p "* ]] && continue
    USED_PORTS="${USED_PORTS:-} $p"; echo "$p"; return
  done
  return 1
}

# ------------------------------------------------------------ the LAN hub
HUB=$(free_port u)
declare -a LANPORT=() MQTTPORT=()
for i in $(seq 1 $N); do LANPORT[i]=$(free_port u); MQTTPORT[i]=$(free_port t); done
cat >"$WORK/hub.py" <<'EOF'
# Ethernet hub over UDP on 127.0.0.1: each datagram is one frame from a QEMU
# dgram netdev; repeat it to every other known guest port. Stops by itself.
import socket, sys, time
hub, lifetime, guests = int(sys.argv[1]), float(sys.argv[2]), [("127.0.0.1", int(p)) for p in sys.argv[3:]]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", hub))
s.settimeout(0.5)
end = time.time() + lifetime
frames = 0
while time.time() < end:
    try:
        data, src = s.recvfrom(65535)
    except socket.timeout:
        continue
    if src not in guests:
        continue
    frames += 1
    for g in guests:
        if g != src:
            try:
                s.sendto(data, g)
            except OSError:
                pass
print("hub: %d frames" % frames, flush=True)
EOF
HUB_LIFETIME=$((BOOT_TIMEOUT + 300))
python3 "$WORK/hub.py" "$HUB" "$HUB_LIFETIME" "${LANPORT[@]:1}" >"$WORK/hub.log" 2>&1 &
HUB_PID=$!
log "LAN hub pid $HUB_PID on 127.0.0.1:$HUB (udp), guests on ${LANPORT[*]:1}"

# ------------------------------------------------------- per-node initramfs
mk_initrd() {  # $1 = node number
  local i=$1 R peers="" j
  R=$WORK/root$i
  mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,proc,sys,dev,tmp,run,etc/midge,var/lib/midge,lib/modules}
  cp "$G/busybox" "$R/bin/busybox"
  cp "$G"/modules/*.ko "$G/load-order" "$R/lib/modules/"
  install -m 0755 "$BIN" "$R/usr/local/bin/midge"
  cp "$CONFIG" "$R/etc/midge/midge.conf"
  if ((CLUSTER)); then
    {
      echo; echo "# added by qemu-cluster-test.sh"
      echo "cluster_node_id $i"
      for j in $(seq 1 $N); do echo "cluster_peer $j 192.0.2.1$j:7883"; done
    } >>"$R/etc/midge/midge.conf"
  fi
  for j in $(seq 1 $N); do [[ $j == "$i" ]] || peers="$peers 192.0.2.1$j"; done
  echo "$i" >"$R/etc/midge/node"
  echo "$peers" >"$R/etc/midge/peers"
  echo "root:x:0:0:root:/root:/bin/sh" >"$R/etc/passwd"
  [[ $(id -u) -eq 0 ]] && mknod -m 600 "$R/dev/console" c 5 1
  cat >"$R/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec 0</dev/console 1>/dev/console 2>&1
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t tmpfs tmpfs /tmp
NODE=$(cat /etc/midge/node)
for a in $(cat /proc/cmdline); do case "$a" in midge.time=*) T=${a#midge.time=} ;; esac; done
[ -n "$T" ] && date -u -s "@$T" >/dev/null && echo "midge-qemu: clock set to $(date -u +%s)"
while read -r m; do insmod "/lib/modules/$m" || echo "midge-qemu: insmod $m failed"; done </lib/modules/load-order
ip link set lo up
# NICs by MAC: 52:54:00:12:00:xx = host side (user net), 52:54:00:12:01:xx = cluster LAN
i=0
while [ $i -lt 100 ]; do
  WAN=; LAN=
  for d in /sys/class/net/*; do
    case "$(cat "$d/address")" in 52:54:00:12:00:*) WAN=${d##*/} ;; 52:54:00:12:01:*) LAN=${d##*/} ;; esac
  done
  [ -n "$WAN" ] && [ -n "$LAN" ] && break
  sleep 0.1; i=$((i + 1))
done
ip link set "$WAN" up; ip addr add 10.0.2.15/24 dev "$WAN"; ip route add default via 10.0.2.2 dev "$WAN"
ip link set "$LAN" up; ip addr add "192.0.2.1$NODE/24" dev "$LAN"
echo "midge-qemu: node $NODE: $WAN 10.0.2.15, $LAN 192.0.2.1$NODE"
cd /var/lib/midge
/usr/local/bin/midge -c /etc/midge/midge.conf &
pid=$!
# Probe the other nodes' brokers across the LAN with a bare MQTT 3.1.1
# CONNECT (clean session, empty client id); expect CONNACK 20 02 00 00.
(
  for p in $(cat /etc/midge/peers); do
    n=0; ok=0
    while [ $n -lt 30 ]; do
      r=$( (printf '\020\014\000\004MQTT\004\002\000\074\000\000'; sleep 1) | timeout 5 nc -w 2 "$p" 1883 2>/dev/null | od -An -tx1 | tr -d ' \n')
      case "$r" in 20020000*) ok=1; break ;; esac
      n=$((n + 1)); sleep 1
    done
    if [ $ok = 1 ]; then echo "midge-qemu: peer $p:1883 CONNACK ok"; else echo "midge-qemu: peer $p:1883 unreachable"; fi
  done
) &
wait $pid
echo "midge-qemu: midge exited rc=$?"
poweroff -f
EOF
  chmod 0755 "$R/init"
  (cd "$R" && find . | cpio -o -H newc --quiet --owner=0:0 | gzip -1 >"$WORK/initrd$i.gz")
}
for i in $(seq 1 $N); do mk_initrd "$i"; done
log "initramfs x$N built"

# ------------------------------------------------------------------ boot
HOST_NOW=$(date -u +%s)
for i in $(seq 1 $N); do
  : >"$WORK/console$i.log"
  qemu-system-aarch64 -M virt -cpu cortex-a72 -m 256 -smp 1 -rtc base=1970-01-01T00:00:00 \
    -display none -monitor none -serial "file:$WORK/console$i.log" -no-reboot \
    -kernel "$G/vmlinuz" -initrd "$WORK/initrd$i.gz" \
    -append "console=ttyAMA0 rdinit=/init panic=-1 loglevel=4 midge.time=$HOST_NOW" \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:${MQTTPORT[i]}-:1883" \
    -device "virtio-net-device,netdev=n0,mac=52:54:00:12:00:0$i" \
    -netdev "dgram,id=c0,local.type=inet,local.host=127.0.0.1,local.port=${LANPORT[i]},remote.type=inet,remote.host=127.0.0.1,remote.port=$HUB" \
    -device "virtio-net-device,netdev=c0,mac=52:54:00:12:01:0$i" \
    </dev/null >"$WORK/qemu$i.out" 2>&1 &
  QPIDS+=($!)
  log "node $i: qemu pid $!, MQTT 127.0.0.1:${MQTTPORT[i]}, LAN 192.0.2.1$i"
done

deadline=$((SECONDS + BOOT_TIMEOUT))
for i in $(seq 1 $N); do
  until grep -Eq -- "$READY" "$WORK/console$i.log"; do
    kill -0 "${QPIDS[i - 1]}" 2>/dev/null || { cat "$WORK/qemu$i.out"; die "node $i: qemu exited"; }
    grep -q "midge-qemu: midge exited" "$WORK/console$i.log" && die "node $i: midge exited"
    ((SECONDS < deadline)) || die "node $i: no '$READY' within ${BOOT_TIMEOUT}s"
    sleep 0.2
  done
  log "node $i: midge listening"
done
passed=0

# relay SUB_NODE PUB_NODE TOPIC WHAT [TRIES]: a QoS 1 message published on
# node PUB_NODE reaches a subscriber on node SUB_NODE (host clients through
# the forwarded ports). The publish is tried TRIES times, 1 s apart (while a
# new leader is elected); dies naming WHAT on failure.
relay() {
  local s=$1 p=$2 topic=$3 what=$4 tries=${5:-1} per=30 ok=0 msg sublog
  ((tries > 1)) && per=10
  msg="${topic//\//-}-$$-$RANDOM" sublog="$WORK/relay-$s-$p-${topic//\//_}.log"
  # A node refuses clients (CONNACK 3) until the cluster has a leader that
  # serves: the subscriber tries again, for up to 30 s.
  local deadline=$((SECONDS + 30))
  while :; do
    : >"$sublog"
    timeout 40 stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "${MQTTPORT[s]}" -t "$topic/#" -q 1 -C 1 -W 35 -d >"$sublog" 2>&1 &
    SUBPIDS+=($!)
    for _ in $(seq 300); do
      grep -qi "received SUBACK" "$sublog" && break
      kill -0 "${SUBPIDS[-1]}" 2>/dev/null || break
      sleep 0.1
    done
    grep -qi "received SUBACK" "$sublog" && break
    ((SECONDS < deadline)) && ! kill -0 "${SUBPIDS[-1]}" 2>/dev/null || { cat "$sublog"; die "$what: no SUBACK from node $s"; }
    log "$what: node $s refused the subscriber ($(grep -io 'connection refused[^.]*' "$sublog" | head -n 1)); trying again"
    sleep 1
  done
  for _ in $(seq "$tries"); do
    if timeout "$per" mosquitto_pub -h 127.0.0.1 -p "${MQTTPORT[p]}" -t "$topic/x" -q 1 -m "$msg"; then ok=1; break; fi
    sleep 1
  done
  ((ok)) || die "$what: publish on node $p failed"
  wait "${SUBPIDS[-1]}" || true
  grep -qx -- "$msg" "$sublog" || { cat "$sublog"; die "$what: message published on node $p did not reach node $s"; }
}

# --------------------------------------------- host -> each node round trip
for i in $(seq 1 $N); do
  relay "$i" "$i" midge/cluster "node $i: host round trip"
  passed=$((passed + 1))
  log "node $i: host MQTT round trip ok"
done

# ------------------------------------------------ guest <-> guest over the LAN
deadline=$((SECONDS + 75))
for i in $(seq 1 $N); do
  until [[ $(grep -c "midge-qemu: peer .* CONNACK ok\|midge-qemu: peer .* unreachable" "$WORK/console$i.log") -ge $((N - 1)) ]]; do
    ((SECONDS < deadline)) || die "node $i: peer probes did not finish"
    sleep 0.5
  done
  grep -q "unreachable" "$WORK/console$i.log" && die "node $i: $(grep -o 'peer .* unreachable' "$WORK/console$i.log" | tr -d '\r' | tr '\n' ' ')"
  passed=$((passed + 1))
  log "node $i: CONNACK from both other nodes over 192.0.2.0/24"
done

# ------------------------------------- replication (--cluster only)
if ((CLUSTER)); then
  relay 2 1 midge/repl "replication"
  passed=$((passed + 1))
  log "published on node 1, received on node 2"

  # ------------------------------------- the leader's guest stopped
  # A retained message acknowledged before the stop must be there after it,
  # and new messages must flow between the two survivors. They elect a new
  # leader (cluster_election_ticks x tick, ~1-2 s with the board config), so
  # clients retry for a bounded time.
  L=$(grep -aho "Node [0-9] is the leader for term [0-9]*" "$WORK"/console*.log | sort -k8,8n | tail -1 | cut -d' ' -f2)
  [[ $L =~ ^[1-3]$ ]] || die "no leader in the guests' logs"
  others=()
  for i in 1 2 3; do [[ $i == "$L" ]] || others+=("$i"); done
  A=${others[0]} B=${others[1]}
  RET="kept-$$-$RANDOM"
  timeout 30 mosquitto_pub -h 127.0.0.1 -p "${MQTTPORT[A]}" -t midge/keep/x -q 1 -r -m "$RET" ||
    die "retained publish on node $A failed"
  kill -KILL "${QPIDS[L - 1]}"
  wait "${QPIDS[L - 1]}" 2>/dev/null || true
  t_stop=$SECONDS
  log "node $L (the leader): guest stopped (SIGKILL to its QEMU: a power cut)"
  got="" deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)); do
    got=$(timeout 10 mosquitto_sub -h 127.0.0.1 -p "${MQTTPORT[B]}" -t midge/keep/x -q 1 -C 1 -W 5 2>/dev/null || true)
    [[ $got == "$RET" ]] && break
    sleep 0.5
  done
  [[ $got == "$RET" ]] || die "leader stopped: node $B did not serve the retained message acknowledged before (got '$got')"
  passed=$((passed + 1))
  log "leader stopped: node $B serves the retained message acknowledged before ($((SECONDS - t_stop)) s after the stop, client retries included)"
  relay "$B" "$A" midge/after "leader stopped" 10
  passed=$((passed + 1))
  log "leader stopped: published on node $A, received on node $B"
fi

echo "qemu-cluster-test: $passed passed, 0 failed"
