#!/usr/bin/env bash
# Install midge on a gateway over ssh/scp, or into a local directory tree.
#
#   scripts/deploy.sh HOST [--target T] [--board B] [--config FILE]
#                          [--service FILE] [--binary FILE] [--dry-run]
#   scripts/deploy.sh [HOST] --root DIR [...]
#
# HOST        ssh destination ([user@]host). The user must be root or have
#             passwordless sudo. Extra ssh/scp options: $MIDGE_SSH_OPTS
#             (e.g. MIDGE_SSH_OPTS="-p 2222 -i ~/.ssh/gw").
# --target T  aarch64-unknown-linux-musl (default), aarch64-unknown-linux-gnu,
#             armv7-unknown-linux-gnueabihf, armv7-unknown-linux-musleabihf
# --board B   boards/B/{midge.conf,midge.service} (default from the target:
#             aarch64-*-musl -> generic-arm64-gateway, aarch64-*-gnu ->
#             rpi4-rpi5-arm64, armv7-* -> generic-armv7-gateway)
# --config F  use F as /etc/midge/midge.conf instead of the board's
# --service F use F as the systemd unit instead of the board's
# --binary F  use F instead of dist/midge-<target> (built by cross-build.sh)
# --dry-run   print what would run, change nothing
# --root DIR  install under DIR (DIR/usr/local/bin/midge, DIR/etc/midge/...,
#             DIR/etc/systemd/system/midge.service) instead of over ssh;
#             `systemctl --root=DIR enable midge` replaces
#             daemon-reload + enable --now
#
# On the gateway: install -m 0755 the binary to /usr/local/bin/midge, the
# config (0644) to /etc/midge/midge.conf (a changed existing config is kept
# as midge.conf.bak-<time>), the unit (0644) to
# /etc/systemd/system/midge.service, then
# `systemctl daemon-reload && systemctl enable --now midge` (plus a restart if
# midge was already running, so an upgrade takes effect).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOST="" TARGET=aarch64-unknown-linux-musl BOARD="" CONFIG="" SERVICE="" BIN="" DRY=0 ROOT=""
usage() { awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$0"; }
while (($#)); do
  case "$1" in
    --target) TARGET=$2; shift 2 ;;
    --board) BOARD=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --service) SERVICE=$2; shift 2 ;;
    --binary) BIN=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --root) ROOT=$2; shift 2 ;;
    --target=*|--board=*|--config=*|--service=*|--binary=*|--root=*)
      k=${1%%=*}; v=${1#*=}; shift; set -- "$k" "$v" "$@" ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "deploy: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) [[ -z $HOST ]] || { echo "deploy: more than one HOST" >&2; exit 2; }; HOST=$1; shift ;;
  esac
done
[[ -n $HOST || -n $ROOT ]] || { echo "deploy: need HOST or --root DIR" >&2; usage >&2; exit 2; }

case "$TARGET" in
  aarch64-unknown-linux-musl) DEF_BOARD=generic-arm64-gateway MACH=AArch64 ;;
  aarch64-unknown-linux-gnu) DEF_BOARD=rpi4-rpi5-arm64 MACH=AArch64 ;;
  armv7-unknown-linux-gnueabihf|armv7-unknown-linux-musleabihf) DEF_BOARD=generic-armv7-gateway MACH=ARM ;;
  *) echo "deploy: unknown target $TARGET" >&2; exit 2 ;;
esac
BOARD=${BOARD:-$DEF_BOARD}
[[ -d $REPO/boards/$BOARD ]] || { echo "deploy: no board boards/$BOARD" >&2; exit 2; }
CONFIG=${CONFIG:-$REPO/boards/$BOARD/midge.conf}
SERVICE=${SERVICE:-$REPO/boards/$BOARD/midge.service}
BIN=${BIN:-${MIDGE_DIST:-$REPO/dist}/midge-$TARGET}

fail() { echo "deploy: $*" >&2; exit 1; }
for f in "$BIN" "$CONFIG" "$SERVICE"; do [[ -f $f ]] || fail "missing $f"; done
if command -v readelf >/dev/null; then
  readelf -h "$BIN" 2>/dev/null | grep -q "Machine:.*$MACH" || fail "$BIN is not a $MACH binary (target $TARGET)"
fi

q() { printf '%q' "$1"; }
# The install steps as a POSIX sh script, shared by the ssh and --root modes.
# $1 = root prefix ("" on the gateway), $2 = staging dir with the three files.
install_script() {
  local r=$1 s=$2 stamp
  stamp=$(date +%Y%m%d%H%M%S)
  cat <<EOF
set -e
R=$(q "$r"); S=$(q "$s")
install -d -m 0755 "\$R/usr/local/bin" "\$R/etc/midge" "\$R/etc/systemd/system"
if [ -f "\$R/etc/midge/midge.conf" ] && ! cmp -s "\$S/midge.conf" "\$R/etc/midge/midge.conf"; then
  cp -p "\$R/etc/midge/midge.conf" "\$R/etc/midge/midge.conf.bak-$stamp"
  echo "deploy: kept the previous config as \$R/etc/midge/midge.conf.bak-$stamp"
fi
install -m 0755 "\$S/midge" "\$R/usr/local/bin/midge"
install -m 0644 "\$S/midge.conf" "\$R/etc/midge/midge.conf"
install -m 0644 "\$S/midge.service" "\$R/etc/systemd/system/midge.service"
EOF
}
remote_systemd_script() {
  cat <<'EOF'
was_active=0
if systemctl is-active --quiet midge; then was_active=1; fi
systemctl daemon-reload && systemctl enable --now midge
if [ "$was_active" = 1 ]; then systemctl restart midge; fi
sleep 1
systemctl --no-pager --lines=5 status midge || { journalctl -u midge --no-pager -n 20; exit 1; }
EOF
}

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
cp "$BIN" "$STAGE/midge"; cp "$CONFIG" "$STAGE/midge.conf"; cp "$SERVICE" "$STAGE/midge.service"
echo "deploy: $BIN ($TARGET), $CONFIG, $SERVICE -> ${ROOT:+root }${ROOT:-$HOST}"

if [[ -n $ROOT ]]; then
  script=$(install_script "$ROOT" "$STAGE")
  if ((DRY)); then
    echo "+ sh -s <<'SCRIPT'"; echo "$script"; echo "SCRIPT"
    echo "+ systemctl --root=$(q "$ROOT") enable midge"
    exit 0
  fi
  mkdir -p "$ROOT"
  sh -s <<<"$script"
  if command -v systemctl >/dev/null; then
    # Offline: only creates the WantedBy= symlink inside ROOT.
    systemctl --root="$ROOT" enable midge
  else
    echo "deploy: systemctl not found, unit not enabled under $ROOT"
  fi
  echo "deploy: installed under $ROOT"
  exit 0
fi

read -r -a SSH_OPTS <<<"${MIDGE_SSH_OPTS:-}"
SCP_OPTS=()
for ((i = 0; i < ${#SSH_OPTS[@]}; i++)); do  # scp spells ssh's -p as -P
  if [[ ${SSH_OPTS[i]} == -p ]]; then SCP_OPTS+=(-P); else SCP_OPTS+=("${SSH_OPTS[i]}"); fi
done
as_root='if [ "$(id -u)" = 0 ]; then sh -s; else sudo -n sh -s; fi'
if ((DRY)); then
  RT=/tmp/midge-deploy.XXXXXX
  echo "+ ssh ${SSH_OPTS[*]} $HOST mktemp -d /tmp/midge-deploy.XXXXXX   # -> RT"
  echo "+ ssh ${SSH_OPTS[*]} $HOST uname -m   # checked against $TARGET"
  echo "+ scp ${SCP_OPTS[*]} $BIN $CONFIG $SERVICE $HOST:RT/{midge,midge.conf,midge.service}"
  echo "+ ssh ${SSH_OPTS[*]} $HOST $(q "$as_root") <<'SCRIPT'"
  install_script "" RT; echo "rm -rf RT"; remote_systemd_script; echo "SCRIPT"
  exit 0
fi

arch=$(ssh "${SSH_OPTS[@]}" "$HOST" uname -m) || fail "ssh $HOST failed"
case "$TARGET:$arch" in
  aarch64-*:aarch64|armv7-*:armv7l|armv7-*:armv8l|armv7-*:aarch64) ;;
  *) fail "$HOST is $arch, which cannot run $TARGET" ;;
esac
if [[ $TARGET == *-gnu* ]]; then
  glibc=$(ssh "${SSH_OPTS[@]}" "$HOST" 'getconf GNU_LIBC_VERSION 2>/dev/null' | awk '{print $2}') || true
  if [[ -z $glibc ]] || [[ $(printf '%s\n2.34\n' "$glibc" | sort -V | head -1) != 2.34 ]]; then
    fail "$HOST has glibc '${glibc:-none}' but $TARGET needs >= 2.34: use the aarch64-unknown-linux-musl build"
  fi
fi
RT=$(ssh "${SSH_OPTS[@]}" "$HOST" mktemp -d /tmp/midge-deploy.XXXXXX) || fail "ssh $HOST failed"
scp -q "${SCP_OPTS[@]}" "$STAGE/midge" "$STAGE/midge.conf" "$STAGE/midge.service" "$HOST:$RT/" || fail "scp to $HOST failed"
{ install_script "" "$RT"; echo "rm -rf $(q "$RT")"; remote_systemd_script; } |
  ssh "${SSH_OPTS[@]}" "$HOST" "$as_root" || fail "install on $HOST failed"
echo "deploy: midge is running on $HOST"
