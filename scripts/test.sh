#!/usr/bin/env bash
# The test command (README "Test it"). Runs every test against real
# processes; bounded in time. Needs: mosquitto, mosquitto-clients,
# python3-paho-mqtt (installed by .ci/run on CI).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Seeds of the cluster simulation (each seed: 30 s of simulated faults).
export SIM_SEEDS="${SIM_SEEDS:-200}"

echo "== unit, codec, broker, simulation and integration tests"
cargo build --bins
cargo test --all-targets -- --test-threads="${TEST_THREADS:-4}"

echo "== high availability: HAProxy in front, network partition, redirect"
export MIDGE_BIN="${MIDGE_BIN:-target/debug/midge}"
bash scripts/test-haproxy.sh
bash scripts/test-partition.sh
bash scripts/test-redirect.sh
if [[ -x scripts/crash-test.sh ]]; then
  echo "== kill -9 crash test"
  bash scripts/crash-test.sh --quick
fi
echo "== all tests passed"
