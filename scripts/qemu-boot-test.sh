#!/usr/bin/env bash
# Boot an aarch64 midge binary in a QEMU `virt` guest (Cortex-A72, 256 MB,
# no RTC) and check, from the host, that MQTT publish -> subscribe works
# through a forwarded loopback port.
#
#   scripts/qemu-boot-test.sh [BINARY] [--config FILE|none] [--port N]
#                             [--boot-timeout S] [--keep] [--refresh]
#
# BINARY   static aarch64 midge (default: dist/midge-aarch64-unknown-linux-musl,
#          built by scripts/cross-build.sh)
# --config midge.conf copied to /etc/midge/midge.conf in the guest and passed
#          with -c (default: boards/generic-arm64-gateway/midge.conf);
#          "none" runs midge without -c
# --port   host port forwarded to the guest's 1883 (default: a free random
#          port on 127.0.0.1)
# --ready  extended regex for the guest console line that means "midge is
#          listening" (default: "listen socket on port 1883"; also
#          $MIDGE_READY_PATTERN). User-mode networking accepts the host's
#          connection before the guest listens, so we wait for this line.
# --keep   keep the work directory (console log, initramfs) for debugging
# --refresh  re-download the guest kernel and busybox
# --prepare  only install the host tools and fetch the guest kernel/busybox;
#          prints "guest-dir: DIR" last (used by qemu-cluster-test.sh)
#
# First run installs (idempotently, as root):
#   - qemu-system-arm (QEMU 10 from bookworm-backports) through a PRIVATE apt
#     configuration: this image's qemu-utils comes from backports, so plain
#     `apt-get install qemu-system-arm` from bookworm cannot be resolved;
#   - cpio and mosquitto-clients from the normal Debian sources, if missing;
#   - a Debian arm64 kernel + busybox-static, fetched with a second private
#     apt state for arm64 (no dpkg --add-architecture) into the cache
#     ($MIDGE_QEMU_CACHE, default /var/cache/midge-qemu as root, else
#     ~/.cache/midge-qemu).
#
# Network: the guest uses QEMU user-mode networking with restrict=on (it can
# reach nothing outside); the only traffic is host 127.0.0.1:PORT -> guest.
# Only the QEMU process started here is ever stopped (by its PID).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=""
CONFIG="$REPO/boards/generic-arm64-gateway/midge.conf"
PORT=""
BOOT_TIMEOUT=${MIDGE_QEMU_BOOT_TIMEOUT:-90}
READY=${MIDGE_READY_PATTERN:-listen socket on port 1883}
KEEP=0
REFRESH=0
PREPARE=0
while (($#)); do
  case "$1" in
    --config) CONFIG=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --boot-timeout) BOOT_TIMEOUT=$2; shift 2 ;;
    --ready) READY=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --refresh) REFRESH=1; shift ;;
    --prepare) PREPARE=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    -*) echo "qemu-boot-test: unknown option $1" >&2; exit 2 ;;
    *) BIN=$1; shift ;;
  esac
done
BIN=${BIN:-$REPO/dist/midge-aarch64-unknown-linux-musl}

if [[ -n ${MIDGE_QEMU_CACHE:-} ]]; then CACHE=$MIDGE_QEMU_CACHE
elif [[ $(id -u) -eq 0 ]]; then CACHE=/var/cache/midge-qemu
else CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/midge-qemu
fi
mkdir -p "$CACHE"

log() { printf '[qemu-boot-test %6.1fs] %s\n' "$(awk -v s="$T0" -v n="$(date +%s.%N)" 'BEGIN{print n-s}')" "$*"; }
die() { log "FAIL: $*"; exit 1; }
T0=$(date +%s.%N)
phase_start=$T0
declare -a TIMINGS=()
phase() {  # record the time since the previous phase() call
  local now; now=$(date +%s.%N)
  TIMINGS+=("$(awk -v a="$phase_start" -v b="$now" -v n="$1" 'BEGIN{printf "%-28s %6.1fs", n, b-a}')")
  phase_start=$now
}

if ((PREPARE == 0)); then
  [[ -f $BIN ]] || die "no binary $BIN (build it with scripts/cross-build.sh aarch64-unknown-linux-musl)"
  readelf -h "$BIN" | grep -q 'Machine:.*AArch64' || die "$BIN is not an aarch64 ELF"
  if readelf -l "$BIN" | grep -q 'Requesting program interpreter'; then
    die "$BIN is dynamically linked; the initramfs has no libc: use the aarch64-unknown-linux-musl build"
  fi
  if [[ $CONFIG != none ]]; then [[ -f $CONFIG ]] || die "no config $CONFIG"; fi
fi

SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
exec 9>"$CACHE/.lock"
flock -w 600 9 || die "cache $CACHE is locked by another run"

# ---------------------------------------------------------------- apt sources
# One-line sources for Debian's own archives, read from the machine's apt
# configuration (deb822 .sources and/or sources.list), optionally with
# [arch=...] and the <codename>-backports suite added.
CODENAME=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
debian_sources() {  # $1 = arch or "", $2 = 1 to add backports
  local arch=$1 bp=$2 opt
  {
    for f in /etc/apt/sources.list.d/*.sources; do
      [[ -f $f ]] || continue
      awk '
        function flush(   n, m, i, j, u, s, sb) {
          if (v["types"] ~ /(^| )deb( |$)/ && v["uris"] ~ /debian/ && tolower(v["enabled"]) != "no") {
            n = split(v["uris"], u, " "); m = split(v["suites"], s, " ")
            sb = v["signed-by"]
            for (i = 1; i <= n; i++) for (j = 1; j <= m; j++)
              print u[i] "|" s[j] "|" v["components"] "|" sb
          }
          delete v
        }
        /^[ \t]*$/ { flush(); next }
        /^[ \t]*#/ { next }
        { k = tolower($1); sub(/:$/, "", k); $1 = ""; sub(/^ +/, ""); v[k] = $0 }
        END { flush() }' "$f"
    done
    if [[ -f /etc/apt/sources.list ]]; then
      sed -n 's/^[[:space:]]*deb[[:space:]]\+\(\[[^]]*\][[:space:]]*\)\{0,1\}\([^[:space:]]*debian[^[:space:]]*\)[[:space:]]\+\([^[:space:]]\+\)[[:space:]]\+\(.*\)$/\2|\3|\4|-/p' /etc/apt/sources.list
    fi
  } | sort -u | while IFS='|' read -r uri suite comps signed; do
    opt="signed-by=${signed}"
    [[ $signed == - || -z $signed ]] && opt="signed-by=/usr/share/keyrings/debian-archive-keyring.gpg"
    [[ -n $arch ]] && opt="arch=$arch $opt"
    echo "deb [$opt] $uri $suite $comps"
    if [[ $bp == 1 && $suite == "$CODENAME" ]]; then
      echo "deb [$opt] $uri $CODENAME-backports $comps"
    fi
  done
}

apt_private_opts() {  # $1 = state dir, $2 = arch or ""; prints one option per line
  local d=$1 arch=$2
  mkdir -p "$d/lists/partial" "$d/archives/partial" "$d/parts" "$d/prefs"
  printf '%s\n' -o "Dir::Etc::sourcelist=$d/sources.list" -o "Dir::Etc::sourceparts=$d/parts" \
    -o "Dir::State::lists=$d/lists" -o "Dir::Cache::archives=$d/archives" \
    -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "Acquire::Retries=3"
  if [[ -n $arch ]]; then
    : >>"$d/status"
    printf '%s\n' -o "APT::Architecture=$arch" -o "APT::Architectures=$arch" \
      -o "Dir::State::status=$d/status" -o "Dir::Etc::preferencesparts=$d/prefs" \
      -o "Dir::Etc::preferences=$d/prefs/none"
  fi
}

# ------------------------------------------------- host tools (idempotent)
export DEBIAN_FRONTEND=noninteractive
if ! command -v qemu-system-aarch64 >/dev/null; then
  log "installing qemu-system-arm from ${CODENAME}-backports (private apt config under $CACHE/apt-host)"
  debian_sources "" 1 >"$CACHE/apt-host.sources.list.new"
  mkdir -p "$CACHE/apt-host"; mv "$CACHE/apt-host.sources.list.new" "$CACHE/apt-host/sources.list"
  grep -q -- "-backports" "$CACHE/apt-host/sources.list" || die "could not derive backports source from /etc/apt"
  mapfile -t AH < <(apt_private_opts "$CACHE/apt-host" "")
  timeout 300 $SUDO apt-get "${AH[@]}" update -q || die "private apt-get update failed"
  timeout 600 $SUDO apt-get "${AH[@]}" install -y -q --no-install-recommends \
    "qemu-system-arm/${CODENAME}-backports" "qemu-system-common/${CODENAME}-backports" \
    "qemu-system-data/${CODENAME}-backports" || die "installing qemu-system-arm failed"
fi
missing=()
command -v cpio >/dev/null || missing+=(cpio)
command -v mosquitto_pub >/dev/null && command -v mosquitto_sub >/dev/null || missing+=(mosquitto-clients)
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  timeout 300 $SUDO apt-get update -q && timeout 300 $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" ||
    die "apt-get install ${missing[*]} failed"
fi
log "$(qemu-system-aarch64 --version | head -1)"
phase "host tools"

# ------------------------------------------ guest kernel + busybox (cached)
G=$CACHE/guest-arm64
if [[ $REFRESH == 1 ]]; then rm -rf "$G"; fi
if [[ ! -f $G/ready ]]; then
  rm -rf "$G"; mkdir -p "$G/debs" "$CACHE/apt-arm64"
  log "fetching Debian arm64 kernel + busybox-static (private apt state $CACHE/apt-arm64)"
  debian_sources arm64 0 >"$CACHE/apt-arm64/sources.list"
  mapfile -t AG < <(apt_private_opts "$CACHE/apt-arm64" arm64)
  timeout 300 apt-get "${AG[@]}" update -q || die "arm64 apt-get update failed"
  KPKG=$(apt-cache "${AG[@]}" depends linux-image-arm64 | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-arm64\)$/\1/p' | head -1)
  [[ -n $KPKG ]] || die "cannot resolve linux-image-arm64"
  log "kernel package: $KPKG"
  (cd "$G/debs" && timeout 600 apt-get "${AG[@]}" download "$KPKG" busybox-static) || die "apt-get download failed"
  x=$(mktemp -d "$CACHE/x.XXXXXX")
  dpkg-deb -x "$G"/debs/busybox-static_*.deb "$x/bb"
  install -m 0755 "$x/bb/bin/busybox" "$G/busybox"
  dpkg-deb -x "$G"/debs/linux-image-*.deb "$x/k"
  cp "$x"/k/boot/vmlinuz-* "$G/vmlinuz"
  MODDIR=$(echo "$x"/k/lib/modules/*)
  [[ -d $MODDIR ]] || MODDIR=$(echo "$x"/k/usr/lib/modules/*)
  KVER=$(basename "$MODDIR")
  # Modules for virtio-net on `virt`, with their dependencies in load order.
  # The .deb ships no modules.dep (depmod runs in postinst), so read each
  # module's "depends=" from its .modinfo section.
  : >"$G/load-order"; mkdir -p "$G/modules"
  declare -A seen=()
  add_mod() {  # $1 = module name (with _); adds its dependencies first
    local name=$1 f deps d
    [[ -n ${seen[$name]:-} ]] && return 0
    seen[$name]=1
    grep -Eq "/${name//_/[-_]}\.ko" "$MODDIR/modules.builtin" 2>/dev/null && return 0
    f=$(find "$MODDIR/kernel" -name "${name//_/[-_]}.ko*" | head -1)
    [[ -n $f ]] || die "module $name not in $KVER"
    case "$f" in
      *.ko) cp "$f" "$G/modules/$name.ko" ;;
      *.ko.xz) xz -dc "$f" >"$G/modules/$name.ko" ;;
      *.ko.zst) zstd -qdc "$f" >"$G/modules/$name.ko" ;;
      *.ko.gz) gzip -dc "$f" >"$G/modules/$name.ko" ;;
    esac
    deps=$(readelf -p .modinfo "$G/modules/$name.ko" | sed -n 's/.*depends=//p' | tr ',' ' ')
    for d in $deps; do add_mod "${d//-/_}"; done
    echo "$name.ko" >>"$G/load-order"
  }
  for m in virtio_mmio virtio_net; do add_mod "$m"; done
  echo "$KPKG $KVER" >"$G/kernel"
  rm -rf "$x" "$G/debs"
  touch "$G/ready"
fi
log "guest kernel: $(cat "$G/kernel"); modules: $(tr '\n' ' ' <"$G/load-order")"
phase "guest kernel + busybox"
if ((PREPARE)); then echo "guest-dir: $G"; exit 0; fi

# ------------------------------------------------------------- initramfs
WORK=$(mktemp -d /tmp/midge-qemu.XXXXXX)
QEMU_PID=""
cleanup() {
  local rc=$?
  if [[ -n $QEMU_PID ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
    kill -TERM "$QEMU_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$QEMU_PID" 2>/dev/null || true
  fi
  if [[ -n ${SUB_PID:-} ]]; then kill "$SUB_PID" 2>/dev/null || true; fi
  if [[ $rc -ne 0 && -f $WORK/console.log ]]; then
    echo "---- guest console (last 60 lines) ----"; tail -n 60 "$WORK/console.log" | tr -d '\r'; echo "----"
  fi
  if [[ $KEEP == 1 || $rc -ne 0 ]]; then echo "qemu-boot-test: work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

R=$WORK/root
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,proc,sys,dev,tmp,run,etc/midge,var/lib/midge,lib/modules}
cp "$G/busybox" "$R/bin/busybox"
cp "$G"/modules/*.ko "$G/load-order" "$R/lib/modules/"
install -m 0755 "$BIN" "$R/usr/local/bin/midge"
MIDGE_ARGS=""
if [[ $CONFIG != none ]]; then
  cp "$CONFIG" "$R/etc/midge/midge.conf"; MIDGE_ARGS="-c /etc/midge/midge.conf"
fi
echo "$MIDGE_ARGS" >"$R/etc/midge/args"
echo "root:x:0:0:root:/root:/bin/sh" >"$R/etc/passwd"
echo "root:x:0:" >"$R/etc/group"
[[ $(id -u) -eq 0 ]] && mknod -m 600 "$R/dev/console" c 5 1
cat >"$R/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec 0</dev/console 1>/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
echo "midge-qemu: init started, clock $(date -u +%s)"
# No RTC is assumed (like a Raspberry Pi): the host passes its clock in.
for a in $(cat /proc/cmdline); do
  case "$a" in midge.time=*) T=${a#midge.time=} ;; esac
done
if [ -n "$T" ]; then
  date -u -s "@$T" >/dev/null && echo "midge-qemu: clock set to $(date -u +%s) ($(date -u '+%Y-%m-%d %H:%M:%S') UTC)"
fi
while read -r m; do
  insmod "/lib/modules/$m" || echo "midge-qemu: insmod $m failed"
done </lib/modules/load-order
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "midge-qemu: network $(ip -4 -o addr show dev eth0 | awk '{print $4}')"
cd /var/lib/midge
/usr/local/bin/midge $(cat /etc/midge/args) &
pid=$!
echo "midge-qemu: started midge pid $pid"
# Resident memory of midge on the ARM guest, every 2 s (reported by the host).
(while kill -0 $pid 2>/dev/null; do sleep 2; echo "midge-qemu: rss $(grep VmRSS /proc/$pid/status | tr -s ' \t' ' ')"; done) &
wait $pid
echo "midge-qemu: midge exited rc=$?"
poweroff -f
EOF
chmod 0755 "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet --owner=0:0 | gzip -1 >"$WORK/initrd.gz")
log "initramfs $(stat -c %s "$WORK/initrd.gz") bytes (midge $(stat -c %s "$BIN") bytes)"
phase "initramfs"

# --------------------------------------------------------------- boot
free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 40000))
    ss -Hltn "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return; }
  done
  return 1
}
CONSOLE=$WORK/console.log
booted=0
for attempt in 1 2 3; do
  P=${PORT:-$(free_port)}
  : >"$CONSOLE"
  HOST_NOW=$(date -u +%s)
  # `virt` has a PL031 RTC (and Debian's kernel has its driver built in):
  # start it at 1970 so the guest, like a Pi without RTC, must be given the time.
  qemu-system-aarch64 -M virt -cpu cortex-a72 -m 256 -smp 1 -rtc base=1970-01-01T00:00:00 \
    -display none -monitor none -serial "file:$CONSOLE" -no-reboot \
    -kernel "$G/vmlinuz" -initrd "$WORK/initrd.gz" \
    -append "console=ttyAMA0 rdinit=/init panic=-1 loglevel=4 midge.time=$HOST_NOW" \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$P-:1883" \
    -device virtio-net-device,netdev=n0 \
    </dev/null >"$WORK/qemu.out" 2>&1 &
  QEMU_PID=$!
  log "qemu pid $QEMU_PID, host 127.0.0.1:$P -> guest :1883 (attempt $attempt)"
  deadline=$((SECONDS + BOOT_TIMEOUT))
  while ((SECONDS < deadline)); do
    if grep -Eq -- "$READY" "$CONSOLE" 2>/dev/null; then booted=1; break; fi
    if ! kill -0 "$QEMU_PID" 2>/dev/null; then break; fi
    if grep -q "midge-qemu: midge exited" "$CONSOLE" 2>/dev/null; then break; fi
    sleep 0.1
  done
  ((booted)) && break
  if ! kill -0 "$QEMU_PID" 2>/dev/null && grep -q "hostfwd\|Could not set up host forwarding" "$WORK/qemu.out" && [[ -z $PORT ]]; then
    log "port $P busy, retrying"; QEMU_PID=""; continue
  fi
  cat "$WORK/qemu.out" >&2 || true
  if grep -q "midge-qemu: midge exited" "$CONSOLE"; then
    die "midge exited in the guest before logging '$READY'"
  elif ! kill -0 "$QEMU_PID" 2>/dev/null; then
    die "qemu exited before midge logged '$READY'"
  fi
  die "midge did not log '$READY' within ${BOOT_TIMEOUT}s"
done
((booted)) || die "could not start qemu"
phase "boot to midge listening"
log "guest up: clock at init $(sed -n 's/.*init started, clock \([0-9]*\).*/\1/p' "$CONSOLE" | head -1), $(grep -o 'clock set to.*' "$CONSOLE" | tr -d '\r' || echo 'clock not set')"

# Guest clock must be the host's (not 1970) within a few minutes.
GUEST_T=$(sed -n 's/.*midge-qemu: clock set to \([0-9]*\).*/\1/p' "$CONSOLE" | head -1)
[[ -n $GUEST_T ]] || die "guest did not set its clock from midge.time"
(( GUEST_T >= HOST_NOW - 5 && GUEST_T <= HOST_NOW + 300 )) || die "guest clock $GUEST_T far from host $HOST_NOW"

# ------------------------------------------------------------ MQTT round trip
MSG="midge-qemu-$$-$RANDOM-$(date +%s%N)"
SUBLOG=$WORK/sub.log
: >"$SUBLOG"
timeout 40 stdbuf -oL -eL mosquitto_sub -h 127.0.0.1 -p "$P" -i "qbt-sub-$$" -t 'midge/qemu/#' -q 1 -C 1 -W 35 -d >"$SUBLOG" 2>&1 &
SUB_PID=$!
for _ in $(seq 300); do grep -qi "received SUBACK" "$SUBLOG" && break; kill -0 "$SUB_PID" 2>/dev/null || break; sleep 0.1; done
grep -qi "received SUBACK" "$SUBLOG" || { cat "$SUBLOG"; die "mosquitto_sub got no SUBACK from the guest"; }
timeout 30 mosquitto_pub -h 127.0.0.1 -p "$P" -i "qbt-pub-$$" -t midge/qemu/boot -q 1 -m "$MSG" ||
  die "mosquitto_pub to the guest failed"
sub_rc=0; wait "$SUB_PID" || sub_rc=$?; SUB_PID=""
grep -qx -- "$MSG" "$SUBLOG" || { cat "$SUBLOG"; die "message did not arrive (mosquitto_sub rc=$sub_rc)"; }
log "MQTT round trip through the guest OK: $MSG"
phase "MQTT pub/sub"
# The guest prints midge's VmRSS every 2 s: report the latest (busybox
# init, no other load; file-backed text pages count, as on a gateway).
for _ in $(seq 30); do grep -q "midge-qemu: rss" "$CONSOLE" && break; sleep 0.2; done
RSS_LINE=$(grep -a "midge-qemu: rss" "$CONSOLE" | tail -1 | tr -d '\r' | sed 's/.*midge-qemu: rss //')
log "midge RSS in the aarch64 guest after the round trip: ${RSS_LINE:-not reported}"

# --------------------------------------------------------------- shutdown
kill -TERM "$QEMU_PID"
for _ in $(seq 100); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$QEMU_PID" 2>/dev/null && die "qemu $QEMU_PID did not exit on SIGTERM"
wait "$QEMU_PID" 2>/dev/null || true
QEMU_PID=""
phase "shutdown"

echo "qemu-boot-test timings:"
printf '  %s\n' "${TIMINGS[@]}"
echo "qemu-boot-test: 1 passed, 0 failed"
