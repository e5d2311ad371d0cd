#!/usr/bin/env bash
# What `bash scripts/test.sh` needs besides Rust, installed when missing:
# Debian packages mosquitto (mosquitto_passwd, the broker the tests compare
# against), mosquitto-clients, haproxy, iproute2, openssl, curl, tcpdump, python3-venv,
# chromium (tests/browser.rs), nodejs and npm when there is no node or npm
# (this machine's kind ships Node.js 20, which playwright-core needs;
# Debian 12's own nodejs is 18), a Python virtual environment with
# paho-mqtt 2 (scripts/python-env.sh) and the browser test's npm packages
# (scripts/node-env.sh).
#
#   bash scripts/setup-test-deps.sh     (as root when a package is missing)
#
# Installing Debian's mosquitto package normally starts its system service
# on port 1883, where the tests and the README examples run midge: a
# temporary /usr/sbin/policy-rc.d (exit 101) keeps every package's service
# from starting during the install, and is removed again afterwards.
# Does nothing (no apt-get, no network) when everything is present.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# tool -> Debian package
declare -A NEED=(
    [mosquitto]=mosquitto [mosquitto_passwd]=mosquitto [mosquitto_sub]=mosquitto-clients
    [mosquitto_pub]=mosquitto-clients [haproxy]=haproxy [ip]=iproute2 [openssl]=openssl [curl]=curl [tcpdump]=tcpdump
    [chromium]=chromium [node]=nodejs [npm]=npm
)
missing=()
for t in "${!NEED[@]}"; do
    command -v "$t" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$t" >/dev/null 2>&1 || missing+=("${NEED[$t]}")
done
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || [ -x "$(midge_venv_dir)/bin/python" ] || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    [ "$(id -u)" = 0 ] || die "missing Debian packages: ${missing[*]}; run as root, or: sudo apt-get install -y ${missing[*]}"
    log "installing ${missing[*]} (no service is started)"
    added_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        added_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -q
    timeout 600 apt-get install -y -q "${missing[@]}"
    if [ "$added_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi
bash "$(dirname "$0")/python-env.sh" >/dev/null
bash "$(dirname "$0")/node-env.sh" >/dev/null
