#!/usr/bin/env bash
# The Debian packages (scripts/package-deb.sh), checked and, for this
# machine's architecture, installed with dpkg -i, run, upgraded over a
# changed conffile and purged:
#
#   scripts/test-package.sh        (as root, on Debian; CI runs it after
#                                   scripts/cross-build.sh)
#
# Checks: each .deb's architecture, files and conffile, and that its binary
# is built for that architecture (ELF e_machine); after dpkg -i: the
# `midge` system user, /var/lib/midge (midge, 0750), the conffile
# registered, `midge --version`, the broker running as that user from the
# packaged config (on another port, -p) keeping its data in /var/lib/midge,
# answering a retained QoS 1 publish; a reinstall keeps a changed
# /etc/midge/midge.conf; purge removes the binary, the data and the user.
# Exit 0 pass, 1 fail, 2 could not run. Stops only what it started, by PID.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib.sh"
[ "$(id -u)" = 0 ] || { log "needs root (dpkg -i)"; exit 2; }
command -v dpkg-deb >/dev/null && command -v mosquitto_pub >/dev/null || { log "needs dpkg and mosquitto-clients"; exit 2; }
if dpkg -s midge >/dev/null 2>&1; then
    log "a midge package is installed already; purge it first (dpkg --purge midge)"; exit 2
fi
PID=""
INSTALLED=0
cleanup() {
    [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null
    [ "$INSTALLED" = 1 ] && dpkg --purge midge >/dev/null 2>&1
}
trap cleanup EXIT
fail() { log "FAIL: $*"; exit 1; }

bash "$ROOT/scripts/package-deb.sh" --out "$ROOT/dist" || fail "package-deb.sh failed"
VERSION=$(awk -F'"' '/^version *=/ {print $2; exit}' "$ROOT/Cargo.toml")
declare -A MACHINE=([amd64]=62 [arm64]=183 [armhf]=40)
checked=0
for arch in amd64 arm64 armhf; do
    deb="$ROOT/dist/midge_${VERSION}_$arch.deb"
    [ -f "$deb" ] || continue
    [ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || fail "$deb: wrong Architecture field"
    files=$(dpkg-deb -c "$deb" | awk '{print $6}')
    for f in ./usr/bin/midge ./lib/systemd/system/midge.service ./etc/midge/midge.conf ./etc/midge/conf.d/; do
        grep -qx -- "$f" <<< "$files" || fail "$deb lacks $f"
    done
    dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/midge/midge.conf || fail "$deb: midge.conf is not a conffile"
    m=$(dpkg-deb --fsys-tarfile "$deb" 2>/dev/null | tar -xO ./usr/bin/midge | head -c 20 | od -An -tu2 -j18 -N2 | tr -d ' ')
    [ "$m" = "${MACHINE[$arch]}" ] || fail "$deb: its binary is ELF machine $m, not $arch's ${MACHINE[$arch]}"
    log "$deb: $arch, files, conffile, binary machine ok"
    checked=$((checked + 1))
done
[ "$checked" -gt 0 ] || fail "no package built"

host=$(dpkg --print-architecture)
deb="$ROOT/dist/midge_${VERSION}_$host.deb"
[ -f "$deb" ] || { log "no package for this machine ($host): install test skipped"; exit 0; }
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" > /tmp/midge-dpkg.log 2>&1 || fail "dpkg -i: $(tail -5 /tmp/midge-dpkg.log)"
INSTALLED=1
uid=$(id -u midge 2>/dev/null) || fail "no midge user after dpkg -i"
[ "$uid" -lt 1000 ] || fail "midge is not a system user (uid $uid)"
[ "$(stat -c '%U %a' /var/lib/midge)" = "midge 750" ] || fail "/var/lib/midge is $(stat -c '%U %a' /var/lib/midge)"
dpkg-query -W -f='${Conffiles}\n' midge | grep -q '/etc/midge/midge.conf' || fail "conffile not registered"
/usr/bin/midge --version | grep -q "$VERSION" || fail "midge --version does not say $VERSION"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
runuser -u midge -- /usr/bin/midge -c /etc/midge/midge.conf -p "$port" > /tmp/midge-pkg-run.log 2>&1 &
PID=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -r -t pkg/test -m installed || fail "publish to the packaged broker: $(tail -3 /tmp/midge-pkg-run.log)"
got=$(mosquitto_sub -h 127.0.0.1 -p "$port" -t pkg/test -C 1 -W 5) || fail "no retained message back"
[ "$got" = installed ] || fail "got '$got'"
[ "$(stat -c %U /var/lib/midge/midge.redb 2>/dev/null)" = midge ] || fail "no data store of user midge in /var/lib/midge"
kill -TERM "$PID"; wait "$PID" 2>/dev/null; PID=""
log "installed: user midge ($uid), /var/lib/midge, conffile, runs as midge and keeps its data there"
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify /lib/systemd/system/midge.service > /tmp/midge-unit.log 2>&1 \
        || fail "systemd-analyze verify: $(cat /tmp/midge-unit.log)"
    log "systemd-analyze verify: unit ok"
fi
echo "# changed by test-package.sh" >> /etc/midge/midge.conf
DEBIAN_FRONTEND=noninteractive dpkg --force-confdef --force-confold -i "$deb" > /tmp/midge-dpkg.log 2>&1 || fail "reinstall: $(tail -5 /tmp/midge-dpkg.log)"
grep -q "changed by test-package.sh" /etc/midge/midge.conf || fail "the changed conffile was replaced"
dpkg --purge midge > /tmp/midge-dpkg.log 2>&1 || fail "purge: $(tail -5 /tmp/midge-dpkg.log)"
INSTALLED=0
[ ! -e /usr/bin/midge ] || fail "/usr/bin/midge left after purge"
[ ! -e /var/lib/midge ] || fail "/var/lib/midge left after purge"
! getent passwd midge >/dev/null || fail "user midge left after purge"
log "reinstall kept the changed conffile; purge removed binary, data and user"
log "package test passed"
