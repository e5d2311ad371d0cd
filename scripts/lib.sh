# shellcheck shell=bash
# Shared shell helpers for midge's scripts. Source it:
#
#   . "$(dirname "$0")/lib.sh"
#
# log MSG...      "[NAME HH:MM:SS] MSG" on stderr (NAME: $LOG_NAME or the script's name)
# die MSG...      log "FAIL: MSG", exit 1
# free_port       an unused TCP port on 127.0.0.1
# stop_pid PID    SIGTERM, up to 5 s, then SIGKILL; reaps it; only that PID
# midge_venv_dir  where scripts/python-env.sh keeps its virtual environment
# midge_node_dir  where scripts/node-env.sh keeps the npm packages of tests/browser

LOG_NAME=${LOG_NAME:-$(basename "$0" .sh)}
log() { echo "[$LOG_NAME $(date +%H:%M:%S)] $*" >&2; }
die() { log "FAIL: $*"; exit 1; }

free_port() {
    local py=${MIDGE_PYTHON:-python3} p _
    if command -v "$py" >/dev/null 2>&1; then  # the kernel picks one
        "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' && return 0
    fi
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        grep -qi ":$(printf %04X "$p") " /proc/net/tcp /proc/net/tcp6 2>/dev/null && continue
        echo "$p"
        return 0
    done
    return 1
}

stop_pid() {
    local p=${1:-} _
    [ -n "$p" ] || return 0
    if kill -0 "$p" 2>/dev/null; then
        kill "$p" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null
    fi
    wait "$p" 2>/dev/null
    return 0
}

midge_venv_dir() { echo "${MIDGE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/midge-venv}"; }
midge_node_dir() { echo "${MIDGE_NODE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/midge-node}"; }
