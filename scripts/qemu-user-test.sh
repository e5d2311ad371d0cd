#!/usr/bin/env bash
# Runs the integration tests against cross-built ARM binaries under qemu-user
# (no binfmt_misc needed: the emulator is called explicitly).
#
#   scripts/qemu-user-test.sh [--tests T1,T2,...] [--threads N] DIST_BINARY...
#
#   e.g. scripts/qemu-user-test.sh dist/midge-aarch64-unknown-linux-musl \
#            dist/midge-armv7-unknown-linux-gnueabihf
#
# For each binary it writes a small wrapper script
#   exec qemu-<arch>-static [-L <sysroot>] BINARY "$@"
# (emulator from the ELF machine; -L only for dynamically linked binaries,
# sysroot from the ELF machine and checked against the triple in the file
# name), checks `wrapper --version` works, then runs each integration test
# target with `MIDGE_BIN=wrapper cargo test --test T`. The wrapper execs, so
# the PID a test kills (SIGKILL in the failover test) is the emulator that
# runs midge, and /proc/PID/fd shows midge's sockets. The wrapper also counts
# its starts: a test target that passes without starting it fails.
#
# Default test targets: every tests/*.rs that starts the binary, i.e. uses
# the harness (`mod common;`, which honours MIDGE_BIN) or names
# CARGO_BIN_EXE_midge / MIDGE_BIN itself; today that leaves out sim_cluster
# and formats_golden, which never start it. A test target that starts
# `CARGO_BIN_EXE_midge` directly instead of honouring MIDGE_BIN would
# silently test the host binary: it is reported as an error, not run.
#
# Environment: QEMU_TEST_THREADS (default 2, same as --threads),
#   MIDGE_QEMU_SYSROOT_AARCH64 (default /usr/aarch64-linux-gnu),
#   MIDGE_QEMU_SYSROOT_ARM (default /usr/arm-linux-gnueabihf),
#   QEMU_TEST_FILE_TIMEOUT seconds per test target (default 300);
#   CARGO_TARGET_DIR as usual.
# Needs: qemu-user-static, the cross sysroots (scripts/setup-cross.sh), and
# what the host tests need (mosquitto, mosquitto-clients, paho-mqtt 2).
# Exit status non-zero if any test target failed or could not be run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Test targets that start the midge binary (see above).
TESTS=()
for f in tests/*.rs; do
  if grep -qE '^mod common;|CARGO_BIN_EXE_midge|MIDGE_BIN' "$f"; then TESTS+=("$(basename "$f" .rs)"); fi
done
THREADS=${QEMU_TEST_THREADS:-2}
FILE_TIMEOUT=${QEMU_TEST_FILE_TIMEOUT:-300}
bins=()
while (($#)); do
  case "$1" in
    --tests) IFS=, read -r -a TESTS <<<"$2"; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    -*) echo "qemu-user-test: unknown option $1" >&2; exit 2 ;;
    *) bins+=("$1"); shift ;;
  esac
done
((${#TESTS[@]})) || { echo "qemu-user-test: no test targets" >&2; exit 2; }
((${#bins[@]})) || { echo "qemu-user-test: give at least one cross-built binary (see --help)" >&2; exit 2; }
[[ $THREADS =~ ^[1-9][0-9]*$ ]] || { echo "qemu-user-test: --threads must be a positive number" >&2; exit 2; }
[[ $FILE_TIMEOUT =~ ^[1-9][0-9]*$ ]] || { echo "qemu-user-test: QEMU_TEST_FILE_TIMEOUT must be a positive number" >&2; exit 2; }
for t in "${TESTS[@]}"; do
  [[ -f tests/$t.rs ]] || { echo "qemu-user-test: no test target tests/$t.rs" >&2; exit 2; }
done
# The paho tests run the venv's Python (paho-mqtt 2), as scripts/test.sh
# gives it to them; made here too when missing.
if [[ -z ${MIDGE_TEST_PYTHON:-} ]]; then
  eval "$(bash scripts/python-env.sh --export)"
fi

WORK=$(mktemp -d /tmp/midge-qemu-user.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# `exec qemu... BIN "$@"` wrapper for one binary; prints its path.
make_wrapper() {
  local bin=$1 name mach class emu sysroot="" interp want_sysroot="" w
  [[ -f $bin && -r $bin ]] || { echo "qemu-user-test: no such binary: $bin" >&2; return 1; }
  bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
  name=$(basename "$bin")
  mach=$(readelf -h "$bin" 2>/dev/null | sed -n 's/^ *Machine: *//p')
  class=$(readelf -h "$bin" 2>/dev/null | sed -n 's/^ *Class: *//p')
  case "$mach" in
    AArch64) emu=qemu-aarch64-static; want_sysroot=${MIDGE_QEMU_SYSROOT_AARCH64:-/usr/aarch64-linux-gnu} ;;
    ARM) emu=qemu-arm-static; want_sysroot=${MIDGE_QEMU_SYSROOT_ARM:-/usr/arm-linux-gnueabihf} ;;
    *) echo "qemu-user-test: $bin: not an AArch64 or ARM ELF binary (Machine: ${mach:-?}, Class: ${class:-?})" >&2; return 1 ;;
  esac
  # The triple in the file name must agree with the ELF header.
  case "$name:$mach" in
    *aarch64-*:AArch64|*armv7-*:ARM|*arm-*:ARM|*thumbv7*:ARM) ;;
    *-*-*:*) if [[ $name == *linux* ]]; then
               echo "qemu-user-test: $name: file name triple does not match ELF machine $mach" >&2; return 1
             fi ;;
  esac
  command -v "$emu" >/dev/null || { echo "qemu-user-test: $emu not found (scripts/setup-cross.sh installs qemu-user-static)" >&2; return 1; }
  interp=$(readelf -l "$bin" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \(.*\)]$/\1/p')
  if [[ -n $interp ]]; then
    # Dynamically linked (glibc): the emulator needs the target's libc.
    case "$name" in
      *musl*) echo "qemu-user-test: $name: a musl build with a program interpreter ($interp)?" >&2; return 1 ;;
    esac
    sysroot=$want_sysroot
    [[ -e $sysroot$interp ]] || {
      echo "qemu-user-test: $name needs $interp, not found under sysroot $sysroot (install the libc6-*-cross package)" >&2
      return 1
    }
  fi
  w=$WORK/$name.sh
  {
    echo '#!/bin/sh'
    # One line per start, so the script can tell the tests really used it.
    printf 'echo "$$" >>%q\n' "$w.calls"
    printf 'exec %q%s %q "$@"\n' "$(command -v "$emu")" "${sysroot:+ -L $(printf %q "$sysroot")}" "$bin"
  } >"$w"
  chmod 0755 "$w"
  echo "$w"
}

# A test target that runs `CARGO_BIN_EXE_midge` itself would test the host
# binary whatever MIDGE_BIN says.
bypasses_midge_bin() {
  grep -nE 'Command::new\(env!\("CARGO_BIN_EXE_' "tests/$1.rs" || true
}

echo "== qemu-user-test: building the host test binaries (${TESTS[*]})"
test_args=()
for t in "${TESTS[@]}"; do test_args+=(--test "$t"); done
cargo test --no-run "${test_args[@]}"

declare -A RES=() SECS=()
failed=()
for b in "${bins[@]}"; do
  echo
  echo "== qemu-user-test: $b"
  if ! w=$(make_wrapper "$b"); then failed+=("$b:wrapper"); continue; fi
  echo "wrapper $w:"; sed 's/^/    /' "$w"
  if ! v=$(timeout --kill-after=5 60 "$w" --version 2>&1); then
    echo "qemu-user-test: '$b --version' failed under emulation: $v" >&2
    failed+=("$b:--version"); continue
  fi
  echo "    --version: $v"
  total_start=$SECONDS
  for t in "${TESTS[@]}"; do
    key="$(basename "$b")|$t"
    if hits=$(bypasses_midge_bin "$t") && [[ -n $hits ]]; then
      echo "qemu-user-test: tests/$t.rs starts CARGO_BIN_EXE_midge directly, so it would test the host binary, not $b:" >&2
      sed 's/^/    /' <<<"$hits" >&2
      echo "    make it honour MIDGE_BIN (like tests/common/mod.rs) to run it here" >&2
      RES[$key]="NOT RUN (ignores MIDGE_BIN)"; SECS[$key]=0; failed+=("$key"); continue
    fi
    echo "--- $t ($(basename "$b"), $THREADS test threads)"
    s=$SECONDS
    : >"$w.calls"
    if MIDGE_BIN=$w timeout --kill-after=30 "$FILE_TIMEOUT" cargo test --test "$t" -- --test-threads="$THREADS"; then
      RES[$key]=ok
    else
      rc=$?
      RES[$key]="FAILED (exit $rc)"
      if ((rc == 124)); then RES[$key]="FAILED (timed out after ${FILE_TIMEOUT}s)"; fi
      failed+=("$key")
    fi
    SECS[$key]=$((SECONDS - s))
    starts=$(wc -l <"$w.calls")
    if ((starts == 0)) && [[ ${RES[$key]} == ok ]]; then
      echo "qemu-user-test: $t passed without ever starting $w: it does not test $b" >&2
      RES[$key]="FAILED (never started MIDGE_BIN)"; failed+=("$key")
    else
      RES[$key]+=" ($starts runs of the emulated binary)"
    fi
  done
  SECS["$(basename "$b")|total"]=$((SECONDS - total_start))
done

echo
echo "== qemu-user-test summary ($THREADS test threads)"
printf '%-42s %-26s %6s  %s\n' BINARY TEST SECS RESULT
for b in "${bins[@]}"; do
  n=$(basename "$b")
  for t in "${TESTS[@]}"; do
    if [[ -n ${RES["$n|$t"]+x} ]]; then
      printf '%-42s %-26s %6s  %s\n' "$n" "$t" "${SECS["$n|$t"]}" "${RES["$n|$t"]}"
    fi
  done
  if [[ -n ${SECS["$n|total"]+x} ]]; then printf '%-42s %-26s %6s\n' "$n" "(all)" "${SECS["$n|total"]}"; fi
done
if ((${#failed[@]})); then
  echo "qemu-user-test: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "qemu-user-test: all passed"
