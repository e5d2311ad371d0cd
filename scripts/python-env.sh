#!/usr/bin/env bash
# The Python the tests use: a virtual environment with paho-mqtt 2 and
# prometheus-client (Prometheus' own parser of the text format, for
# tests/metrics.rs), the Debian way (Debian's python3 refuses `pip install`:
# externally managed).
#
#   bash scripts/python-env.sh            create/update it if needed, print its python
#   eval "$(bash scripts/python-env.sh --export)"   also set MIDGE_PYTHON and MIDGE_TEST_PYTHON
#
# The environment lives in $MIDGE_VENV (default ~/.cache/midge-venv) and is
# reused while it imports paho-mqtt >= 2 (prometheus-client is added to it
# when missing). Needs python3-venv
# (apt-get install -y python3-venv) and access to PyPI the first time.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
VENV=$(midge_venv_dir)
PY=$VENV/bin/python
ok() { [ -x "$PY" ] && "$PY" -c 'import sys, paho.mqtt; sys.exit(int(paho.mqtt.__version__.split(".")[0]) < 2)' 2>/dev/null; }
if ! ok; then
    # Debian's interpreter, not whatever python3 comes first on PATH.
    base=/usr/bin/python3; [ -x "$base" ] || base=$(command -v python3)
    "$base" -c 'import ensurepip' 2>/dev/null || die "$base cannot make a virtual environment: apt-get install -y python3-venv"
    log "creating $VENV with paho-mqtt 2"
    rm -rf "$VENV"
    "$base" -m venv "$VENV"
    timeout 300 "$VENV/bin/pip" install --quiet --disable-pip-version-check 'paho-mqtt>=2' || die "pip install paho-mqtt failed"
    ok || die "$VENV does not import paho-mqtt 2"
fi
if ! "$PY" -c 'import prometheus_client.parser' 2>/dev/null; then
    log "adding prometheus-client to $VENV"
    timeout 300 "$VENV/bin/pip" install --quiet --disable-pip-version-check 'prometheus-client>=0.16' \
        || die "pip install prometheus-client failed"
fi
if [ "${1:-}" = --export ]; then
    printf 'export MIDGE_PYTHON=%q MIDGE_TEST_PYTHON=%q\n' "$PY" "$PY"
else
    echo "$PY"
fi
