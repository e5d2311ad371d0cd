#!/usr/bin/env bash
# Debian packages of midge, one per architecture, with Debian's own
# dpkg-deb (no other tool):
#
#   scripts/package-deb.sh [--arch amd64|arm64|armhf]... [--binary ARCH=FILE]...
#                          [--out DIR]
#
# Binaries, unless --binary names another:
#   amd64  target/release/midge (cargo build --release when missing)
#   arm64  dist/midge-aarch64-unknown-linux-musl   (scripts/cross-build.sh)
#   armhf  dist/midge-armv7-unknown-linux-gnueabihf (scripts/cross-build.sh)
# Default: every architecture whose binary exists. Writes
# DIR/midge_VERSION_ARCH.deb (DIR: dist/).
#
# A package holds /usr/bin/midge, the hardened unit
# /lib/systemd/system/midge.service (User=midge), /etc/midge/midge.conf (a
# conffile) and /etc/midge/conf.d/, the docs in /usr/share/doc/midge. Its
# postinst creates the `midge` system user and /var/lib/midge (0750) and,
# under systemd, enables and starts the service; purge removes both.
# Templates: scripts/deb/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib.sh"
ARCHS=() OUT="$ROOT/dist"
declare -A BIN=(
    [amd64]="$ROOT/target/release/midge"
    [arm64]="$ROOT/dist/midge-aarch64-unknown-linux-musl"
    [armhf]="$ROOT/dist/midge-armv7-unknown-linux-gnueabihf"
)
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) ARCHS+=("$2"); shift ;;
        --binary) BIN[${2%%=*}]=${2#*=}; shift ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
    shift
done
command -v dpkg-deb >/dev/null || die "dpkg-deb is missing (Debian package dpkg)"
if [ ${#ARCHS[@]} -eq 0 ]; then
    [ -x "${BIN[amd64]}" ] || (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
    for a in amd64 arm64 armhf; do [ -f "${BIN[$a]}" ] && ARCHS+=("$a"); done
fi
VERSION=$(awk -F'"' '/^version *=/ {print $2; exit}' "$ROOT/Cargo.toml")
mkdir -p "$OUT"
for arch in "${ARCHS[@]}"; do
    bin=${BIN[$arch]:-}
    [ -n "$bin" ] || die "unknown architecture $arch (amd64, arm64, armhf)"
    if [ "$arch" = amd64 ] && [ ! -x "$bin" ]; then
        (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
    fi
    [ -f "$bin" ] || die "no $arch binary at $bin (scripts/cross-build.sh builds the ARM ones)"
    # A dynamically linked binary needs the C library; a static one nothing.
    depends="adduser"
    # (the program interpreter's name is in a dynamic binary only)
    if LC_ALL=C grep -q -a -e '/ld-linux' "$bin"; then depends="adduser, libc6 (>= 2.31)"; fi
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    d="$work/midge_${VERSION}_$arch"
    install -D -m 0755 "$bin" "$d/usr/bin/midge"
    install -D -m 0644 "$ROOT/scripts/deb/midge.service" "$d/lib/systemd/system/midge.service"
    install -D -m 0644 "$ROOT/scripts/deb/midge.conf" "$d/etc/midge/midge.conf"
    install -d -m 0755 "$d/etc/midge/conf.d"
    for doc in README.md docs/CONFIG.md docs/HA.md docs/DYNSEC.md docs/FORMATS.md; do
        install -D -m 0644 "$ROOT/$doc" "$d/usr/share/doc/midge/$(basename "$doc")"
    done
    printf 'midge\nLicense: Apache-2.0 (/usr/share/common-licenses/Apache-2.0)\n' > "$d/usr/share/doc/midge/copyright"
    install -d -m 0755 "$d/DEBIAN"
    for s in postinst prerm postrm; do install -m 0755 "$ROOT/scripts/deb/$s" "$d/DEBIAN/$s"; done
    echo /etc/midge/midge.conf > "$d/DEBIAN/conffiles"
    size=$(du -sk --exclude=DEBIAN "$d" | cut -f1)
    cat > "$d/DEBIAN/control" <<EOF
Package: midge
Version: $VERSION
Architecture: $arch
Maintainer: midge maintainers <maintainers@midge.invalid>
Depends: $depends
Installed-Size: $size
Section: net
Priority: optional
Description: small, highly available MQTT broker for edge gateways
 midge speaks MQTT 3.1.1 and 5.0 with Mosquitto's configuration syntax.
 Three gateways form one cluster (raft): when the node serving clients
 dies another takes over within a second, with every session,
 subscription, queued and retained message.
EOF
    deb="$OUT/midge_${VERSION}_$arch.deb"
    dpkg-deb --root-owner-group -Zxz --build "$d" "$deb" >/dev/null
    rm -rf "$work"
    trap - EXIT
    log "built $deb ($(du -k "$deb" | cut -f1) KiB)"
done
