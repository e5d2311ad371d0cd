#!/usr/bin/env bash
# The test command (README "Test it"). Runs every test against real
# processes; bounded in time. Installs what it needs when missing
# (scripts/setup-test-deps.sh: Debian packages as root, without starting
# any service, and a Python virtual environment with paho-mqtt 2 whose
# interpreter the tests get as MIDGE_PYTHON / MIDGE_TEST_PYTHON).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== dependencies (at ${SECONDS} s)"
bash scripts/setup-test-deps.sh
eval "$(bash scripts/python-env.sh --export)"

# Seeds of the cluster simulation (each seed: 30 s of simulated faults).
export SIM_SEEDS="${SIM_SEEDS:-200}"

echo "== unit, codec, broker, simulation and integration tests (at ${SECONDS} s)"
cargo build --bins
cargo test --all-targets -- --test-threads="${TEST_THREADS:-4}"

echo "== high availability: HAProxy in front, network partitions (both cluster modes), redirect (at ${SECONDS} s)"
export MIDGE_BIN="${MIDGE_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/midge}"
bash scripts/test-haproxy.sh
bash scripts/test-partition.sh
bash scripts/test-partition-dynsec.sh
bash scripts/test-redirect.sh

echo "== kill -9 crash test (release build) (at ${SECONDS} s)"
cargo build --release --bin midge
bash scripts/crash-test.sh --quick --midge-bin "${CARGO_TARGET_DIR:-$PWD/target}/release/midge"

echo "== the demo cluster: proxying followers, failover (at ${SECONDS} s)"
bash scripts/test-demo.sh

echo "== README: its sh blocks, its three-node example in network namespaces (at ${SECONDS} s)"
bash scripts/test-readme.sh
echo "== all tests passed (at ${SECONDS} s)"
