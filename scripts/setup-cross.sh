#!/usr/bin/env bash
# Install everything needed to cross-build midge for ARM gateways on a
# Debian 12 (bookworm) x86_64 host, without Docker:
#   - Debian cross gcc + libc for arm64 and armhf (used as linkers)
#   - qemu-user-static (cargo `runner` for `cargo test --target ...`)
#   - the rustup targets
# Idempotent: safe to run again; only installs what is missing.
# Must run as root (or with sudo available) for the apt part.
set -euo pipefail

TARGETS=(aarch64-unknown-linux-gnu aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf)
# armv7-unknown-linux-musleabihf is listed in Cross.toml for users with Docker,
# but its rust-std could not be fetched on our build machines; try it only on request.
if [[ "${MIDGE_WITH_ARMV7_MUSL:-0}" == 1 ]]; then
  TARGETS+=(armv7-unknown-linux-musleabihf)
fi
APT_PKGS=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user-static)

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "setup-cross: need root or sudo for apt-get" >&2; exit 1; }
  SUDO="sudo"
fi

missing=()
for p in "${APT_PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "setup-cross: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup-cross: apt packages already installed"
fi

command -v rustup >/dev/null || { echo "setup-cross: rustup not found on PATH" >&2; exit 1; }
installed=$(rustup target list --installed)
for t in "${TARGETS[@]}"; do
  if grep -qx "$t" <<<"$installed"; then
    echo "setup-cross: rust target $t already installed"
  else
    rustup target add "$t"
  fi
done

# Sanity check: every tool the cargo config refers to must now exist.
for tool in aarch64-linux-gnu-gcc arm-linux-gnueabihf-gcc qemu-aarch64-static qemu-arm-static; do
  command -v "$tool" >/dev/null || { echo "setup-cross: $tool missing after install" >&2; exit 1; }
done
echo "setup-cross: ok"
