#!/usr/bin/env bash
# Cross-build stripped release binaries of midge for ARM gateways with plain
# cargo + rustup targets + Debian's cross gcc (no Docker; see setup-cross.sh).
#
#   scripts/cross-build.sh [--manifest-path Cargo.toml] [TARGET...]
#
# Default targets: aarch64-unknown-linux-musl aarch64-unknown-linux-gnu
#                  armv7-unknown-linux-gnueabihf
# Output: $MIDGE_DIST/midge-<target> (default: <crate dir>/dist) and a size table.
# Environment:
#   MIDGE_CRATE_DIR  crate to build (default: this repository's root);
#                    --manifest-path overrides it
#   MIDGE_BIN        binary name (default: midge)
#   MIDGE_DIST       output directory (default: <crate dir>/dist)
#   MIDGE_PROFILE    cargo profile (default: gateway, opt-level "z" for size,
#                    see Cargo.toml; release for opt-level 3). A crate
#                    without a [profile.gateway] is built with release.
#   CARGO_TARGET_DIR honoured as usual
# Builds run one after another (never in parallel). Exit status is non-zero
# if any target failed; the other targets are still attempted.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CRATE_DIR=${MIDGE_CRATE_DIR:-$REPO}
BIN=${MIDGE_BIN:-midge}
DEFAULT_TARGETS=(aarch64-unknown-linux-musl aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)

targets=()
while (($#)); do
  case "$1" in
    --manifest-path) CRATE_DIR=$(cd "$(dirname "$2")" && pwd); shift 2 ;;
    --manifest-path=*) m=${1#*=}; CRATE_DIR=$(cd "$(dirname "$m")" && pwd); shift ;;
    -h|--help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    -*) echo "cross-build: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
((${#targets[@]})) || targets=("${DEFAULT_TARGETS[@]}")
[[ -f $CRATE_DIR/Cargo.toml ]] || { echo "cross-build: no Cargo.toml in $CRATE_DIR" >&2; exit 2; }
DIST=${MIDGE_DIST:-$CRATE_DIR/dist}
mkdir -p "$DIST"

# Where cargo puts build output for this crate (workspace-aware).
TARGET_DIR=$(cd "$CRATE_DIR" && cargo metadata --no-deps --format-version 1 2>/dev/null |
  grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4 || true)
TARGET_DIR=${TARGET_DIR:-${CARGO_TARGET_DIR:-$CRATE_DIR/target}}

strip_tool() {
  case "$1" in
    aarch64-*) echo aarch64-linux-gnu-strip ;;
    armv7-*|arm-*) echo arm-linux-gnueabihf-strip ;;
  esac
}
elf_machine() {
  case "$1" in
    aarch64-*) echo AArch64 ;;
    armv7-*|arm-*) echo ARM ;;
  esac
}

PROFILE=${MIDGE_PROFILE:-gateway}
if [[ $PROFILE == gateway ]] && ! grep -q '^\[profile\.gateway\]' "$CRATE_DIR/Cargo.toml"; then
  PROFILE=release
fi
echo "cross-build: cargo profile $PROFILE"

installed=$(rustup target list --installed 2>/dev/null || true)
failed=()
declare -A secs
for t in "${targets[@]}"; do
  if ! grep -qx "$t" <<<"$installed"; then
    echo "cross-build: rust target $t is not installed (run scripts/setup-cross.sh)" >&2
    failed+=("$t"); continue
  fi
  echo "=== cross-build: $t ($CRATE_DIR)"
  start=$SECONDS
  # --config: the repo's linker/runner settings apply even when the crate
  # lives elsewhere; strip is forced on in case the profile ever drops it.
  if ! (cd "$CRATE_DIR" && cargo build --profile "$PROFILE" --target "$t" --bin "$BIN" \
        --config "$REPO/.cargo/config.toml" --config "profile.$PROFILE.strip=true"); then
    echo "cross-build: cargo build failed for $t" >&2
    failed+=("$t"); continue
  fi
  secs[$t]=$((SECONDS - start))
  src=$TARGET_DIR/$t/$PROFILE/$BIN
  out=$DIST/$BIN-$t
  install -m 0755 "$src" "$out.tmp"
  s=$(strip_tool "$t"); if [[ -n $s ]] && command -v "$s" >/dev/null; then "$s" "$out.tmp"; fi
  mach=$(readelf -h "$out.tmp" | sed -n 's/^ *Machine: *//p')
  if [[ $mach != *"$(elf_machine "$t")"* ]]; then
    echo "cross-build: $out is not an $(elf_machine "$t") binary (Machine: $mach)" >&2
    rm -f "$out.tmp"; failed+=("$t"); continue
  fi
  if readelf -S "$out.tmp" | grep -q '\.symtab'; then
    echo "cross-build: $out still has a symbol table" >&2
    rm -f "$out.tmp"; failed+=("$t"); continue
  fi
  mv -f "$out.tmp" "$out"
done

echo
printf '%-34s %12s %8s %8s %6s  %s\n' TARGET BYTES MB MiB BUILD FILE
for t in "${targets[@]}"; do
  f=$DIST/$BIN-$t
  if [[ " ${failed[*]-} " == *" $t "* ]]; then
    printf '%-34s %12s %8s %8s %6s  %s\n' "$t" FAILED - - - -
  else
    b=$(stat -c %s "$f")
    printf '%-34s %12d %8.2f %8.2f %5ss  %s\n' "$t" "$b" "$(awk -v b="$b" 'BEGIN{print b/1000000}')" \
      "$(awk -v b="$b" 'BEGIN{print b/1048576}')" "${secs[$t]}" "$f"
  fi
done
if ((${#failed[@]})); then
  echo "cross-build: FAILED: ${failed[*]}" >&2
  exit 1
fi
