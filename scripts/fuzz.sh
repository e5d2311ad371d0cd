#!/usr/bin/env bash
# Fuzz every cargo-fuzz target in fuzz/ for SECONDS_PER_TARGET (default 30).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]
#
# Installs cargo-fuzz if missing (`cargo install cargo-fuzz --locked`, about
# 2 minutes), builds all targets once (release, debug assertions and
# overflow checks on), then runs each one from its seed corpus
# fuzz/corpus/<target>/ (read only) into a working corpus
# fuzz/target/work/<target>/ (kept between runs, git-ignored). Exits 1 if any
# target crashed, timed out or ran out of memory, printing the reproducer
# (fuzz/artifacts/<target>/...) and the panic message.
#
# Stable toolchains: with a sanitizer cargo-fuzz passes a nightly-only flag
# (-Zsanitizer=...), so RUSTC_BOOTSTRAP=1 is exported then, unless rustc is
# a nightly. Without one (the default) stable rustc needs no help.
#
# Environment:
#   FUZZ_TARGETS      targets to run (default: all, from `cargo fuzz list`)
#   FUZZ_SANITIZER    none (default) or address. midge has no unsafe code,
#                     so ASan only guards dependencies, at a third of the
#                     execs/s and a longer build.
#   MIDGE_FUZZ_ALLOW  comma-separated names of known, not yet fixed findings
#                     the checks let pass (see fuzz/src/broker_events.rs)
#
# Reproduce / debug a crash:
#   cargo fuzz run -s none TARGET fuzz/artifacts/TARGET/crash-...
#   MIDGE_FUZZ_TRACE=1 cargo run --manifest-path fuzz/Cargo.toml \
#       --example replay -- TARGET fuzz/artifacts/TARGET/crash-...
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

secs="${1:-30}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || ((secs < 1)); then
  echo "usage: $0 [SECONDS_PER_TARGET]" >&2
  exit 2
fi
sanitizer="${FUZZ_SANITIZER:-none}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
if [[ "$sanitizer" != none ]] && ! rustc --version | grep -q nightly; then
  export RUSTC_BOOTSTRAP=1
fi

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
echo "== building fuzz targets: $(echo $targets) (sanitizer: $sanitizer)"
build_start=$SECONDS
cargo fuzz build --sanitizer "$sanitizer"
echo "== built in $((SECONDS - build_start)) s"

mkdir -p fuzz/target/logs
failed=()
for t in $targets; do
  work="fuzz/target/work/$t"
  log="fuzz/target/logs/$t.log"
  mkdir -p "$work" "fuzz/corpus/$t"
  echo "== fuzzing $t for ${secs} s (log: $log)"
  set +e
  # -timeout: an input running over 10 s is a hang (reported like a crash).
  cargo fuzz run --sanitizer "$sanitizer" "$t" "$work" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  # The last status line: coverage, corpus and speed.
  grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -n 1 || true
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" | tr '\n' ' '
  echo
  if ((rc != 0)); then
    failed+=("$t")
    echo "!! $t FAILED (exit $rc)"
    grep -E -A3 "panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|SUMMARY:" "$log" | head -n 20 || true
    artifact=$(grep -oE 'Test unit written to [^ ]+' "$log" | tail -n 1 | sed 's/Test unit written to //' || true)
    if [[ -n "$artifact" && -f "$artifact" ]]; then
      echo "!! reproducer: $artifact ($(wc -c <"$artifact") bytes)"
      echo "!! hex: $(od -An -v -tx1 "$artifact" | tr -d ' \n' | head -c 2000)"
      echo "!! rerun: ${RUSTC_BOOTSTRAP:+RUSTC_BOOTSTRAP=1 }cargo fuzz run -s $sanitizer $t $artifact"
    else
      tail -n 30 "$log"
    fi
  fi
done

if ((${#failed[@]})); then
  echo "== fuzzing found problems in: ${failed[*]}"
  exit 1
fi
echo "== fuzzing passed: $(echo $targets), ${secs} s each"
