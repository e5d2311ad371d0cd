# shellcheck shell=bash
# Shared helpers for the high-availability scripts (test-haproxy.sh,
# test-partition.sh, test-redirect.sh, bench-failover.sh). Source it:
#
#   . "$(dirname "$0")/lib-ha.sh"
#
# Sources scripts/lib.sh (log, die, stop_pid, free_port). Provides: ha_log,
# ha_die (lib.sh's log and die, named by HA_NAME), ha_stop_pid (stop_pid),
# ha_need (tool check with the Debian package to install), ha_pick_python
# (a python3 that imports paho-mqtt 1.6 or 2.x),
# ha_midge_bin (locate or build target/release/midge and copy it into the
# work dir so restarts run the same binary even if the tree is rebuilt),
# ha_workdir, ha_kill_recorded (stop processes the Python side recorded in
# WORK/pids, by PID, only if their command line still names WORK).

HA_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HA_NAME=${HA_NAME:-$(basename "$0" .sh)}

LOG_NAME=$HA_NAME
. "$HA_ROOT/scripts/lib.sh"  # log, die, stop_pid, free_port
ha_log() { log "$@"; }
ha_die() { die "$@"; }

# ha_need TOOL DEBIAN_PACKAGE: exit 2 with an install hint when TOOL is missing.
ha_need() {
    command -v "$1" >/dev/null 2>&1 && return 0
    ha_log "missing tool '$1': install it with  apt-get install -y $2"
    exit 2
}

ha_need_root() {
    [ "$(id -u)" = 0 ] && return 0
    ha_log "must run as root (network namespaces / process control)"
    exit 2
}

# ha_pick_python [paho]: sets HA_PY to a python3 interpreter. With "paho",
# the interpreter must import paho.mqtt.client. $MIDGE_PYTHON (set by
# scripts/test.sh to its virtual environment, see scripts/python-env.sh)
# comes first.
ha_pick_python() {
    local want=${1:-}
    local c
    for c in "${MIDGE_PYTHON:-}" "${PYTHON:-}" python3 /usr/bin/python3; do
        [ -n "$c" ] || continue
        command -v "$c" >/dev/null 2>&1 || continue
        if [ "$want" = paho ]; then
            "$c" -c 'import paho.mqtt.client' 2>/dev/null || continue
        fi
        HA_PY=$c
        return 0
    done
    if [ "$want" = paho ]; then
        ha_log "no python3 with paho-mqtt: run  bash scripts/python-env.sh  and set MIDGE_PYTHON to the python it prints"
    else
        ha_log "python3 missing: install it with  apt-get install -y python3"
    fi
    exit 2
}

# ha_pass_cleanup: after a passing run, remove WORK (keep it with HA_KEEP=1;
# a failing run keeps it and prints its path).
ha_pass_cleanup() {
    if [ "${HA_KEEP:-0}" = 1 ]; then
        ha_log "passed; logs in $WORK"
    else
        rm -rf "$WORK"
        ha_log "passed"
    fi
}

# ha_workdir NAME: sets WORK to a fresh temp dir.
ha_workdir() {
    WORK=$(mktemp -d "/tmp/midge-$1.XXXXXX")
    chmod 755 "$WORK"
    : >"$WORK/pids"
}

# ha_midge_bin BUILD(0|1): sets MIDGE_BIN to a private copy of the binary.
# MIDGE_BIN from the environment wins (then nothing is built).
ha_midge_bin() {
    local build=$1 src=${MIDGE_BIN:-}
    if [ -z "$src" ]; then
        src="$HA_ROOT/target/release/midge"
        if [ "$build" = 1 ]; then
            ha_need cargo "rustup (https://rustup.rs) or cargo"
            ha_log "cargo build --release --bin midge"
            if ! (cd "$HA_ROOT" && cargo build --release --bin midge) >"$WORK/build.log" 2>&1; then
                tail -30 "$WORK/build.log" >&2
                ha_log "build failed (log: $WORK/build.log)"
                exit 2
            fi
        fi
    fi
    [ -x "$src" ] || { ha_log "no midge binary at $src (run: cargo build --release)"; exit 2; }
    if [ -d "$HA_ROOT/src" ] && [ -n "$(find "$HA_ROOT/src" -newer "$src" -name '*.rs' 2>/dev/null | head -1)" ]; then
        ha_log "warning: $src is older than some of src/ (testing that binary anyway)"
    fi
    mkdir -p "$WORK/bin"
    cp -p "$src" "$WORK/bin/midge"
    MIDGE_BIN="$WORK/bin/midge"
    MIDGE_DESC="$("$MIDGE_BIN" --version 2>&1 | head -1), binary built $(date -u -r "$src" '+%Y-%m-%d %H:%M UTC'), tree $(git -C "$HA_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$( [ -n "$(git -C "$HA_ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ] && echo ' with uncommitted src changes')"
    export MIDGE_BIN MIDGE_DESC
}

# ha_stop_pid PID: SIGTERM, up to 5 s, then SIGKILL. Only for our own children.
ha_stop_pid() { stop_pid "$@"; }

# ha_kill_recorded: SIGKILL every PID listed in $WORK/pids (written by the
# Python side for each midge it starts) whose command line still mentions
# $WORK (so a recycled PID is never hit).
ha_kill_recorded() {
    [ -n "${WORK:-}" ] && [ -f "$WORK/pids" ] || return 0
    local p
    while read -r p; do
        [ -n "$p" ] || continue
        if [ -r "/proc/$p/cmdline" ] && tr '\0' ' ' <"/proc/$p/cmdline" | grep -qF "$WORK"; then
            kill -9 "$p" 2>/dev/null
        fi
    done <"$WORK/pids"
    return 0
}
