# shellcheck shell=bash disable=SC2034
# (SC2034: the IDLE_* results are read by the scripts that source this.)
# Shell helpers shared by the benchmark scripts (scripts/bench.sh,
# scripts/footprint.sh, scripts/bench-replication.sh): ports, process
# start/stop by PID, RSS, loadgen RESULT lines, the "hold N idle connections,
# read the broker's RSS" step, per-run values ($WORK/vals.METRIC.SETUP),
# medians and the report's tail. The sourcing script sets WORK, NOTES and
# RAW; log, die and free_port come from scripts/lib.sh (sourced here).
# Source it from bash; it defines functions and STARTED_PIDS only.
#
# Every loop is bounded; processes are stopped by PID, never by name.

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# PIDs this script started; bench_cleanup stops those still running.
STARTED_PIDS=()

# Stops every PID in STARTED_PIDS still running (SIGTERM, 3 s, SIGKILL).
bench_cleanup() {
    local p
    for p in "${STARTED_PIDS[@]:-}"; do
        [ -n "$p" ] || continue
        if kill -0 "$p" 2>/dev/null; then
            kill "$p" 2>/dev/null
            for _ in $(seq 1 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null
        fi
    done
    wait 2>/dev/null
}

# Raises the soft fd limit to the hard limit, at most 65536 (call it
# directly, not in $(...), or it only applies to the subshell).
raise_nofile() {
    local hard
    hard=$(ulimit -Hn)
    if [ "$hard" = unlimited ] || [ "$hard" -ge 65536 ]; then ulimit -n 65536; else ulimit -n "$hard"; fi
}

port_busy() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }

# First port not listened on, from $1 in steps of 2 (50 tries); 1 if none.
pick_port() {
    local p=$1
    for _ in $(seq 1 50); do port_busy "$p" || { echo "$p"; return 0; }; p=$((p + 2)); done
    return 1
}

wait_listening() { # pid port -> 0 when listening (5 s at most)
    for _ in $(seq 1 100); do
        kill -0 "$1" 2>/dev/null || return 1
        port_busy "$2" && return 0
        sleep 0.05
    done
    return 1
}

# mqtt_leader NAME=PORT... -> the NAME whose broker answers an MQTT 3.1.1
# CONNECT with CONNACK 0 (a cluster's serving leader; followers in
# redirect mode answer 3); tries for 20 s; 1 if none.
mqtt_leader() {
    local _ nv ans
    for _ in $(seq 1 100); do
        for nv in "$@"; do
            ans=$(python3 -c '
import socket,sys
s=socket.create_connection(("127.0.0.1",int(sys.argv[1])),timeout=1)
s.sendall(b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02ld"); print(s.recv(4).hex())' "${nv#*=}" 2>/dev/null)
            [ "$ans" = 20020000 ] && { echo "${nv%%=*}"; return 0; }
        done
        sleep 0.2
    done
    return 1
}

# SIGTERM, up to 5 s, then SIGKILL; returns 2 if SIGKILL was needed.
stop_pid() {
    local p=$1
    [ -n "$p" ] || return 0
    kill "$p" 2>/dev/null || { wait "$p" 2>/dev/null; return 0; }
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then
        kill -9 "$p" 2>/dev/null
        wait "$p" 2>/dev/null
        return 2
    fi
    wait "$p" 2>/dev/null
    return 0
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }

# cpu_ticks PID...: user + system CPU of the processes (all their threads)
# in clock ticks (getconf CLK_TCK a second), summed; empty if one is gone.
cpu_ticks() {
    local p t sum=0
    for p in "$@"; do
        # utime and stime are fields 14 and 15 of stat: 12 and 13 once the
        # pid and the "(command name)" are cut off.
        t=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || return 0
        [ -n "$t" ] || return 0
        sum=$((sum + t))
    done
    echo "$sum"
}

# record_cpu METRIC SETUP C0 C1 LINE: CPU per delivery of a loadgen
# throughput run (LINE, its RESULT), recorded as bcpu.METRIC (the broker's:
# cpu_ticks C0 before and C1 after, all its processes) and ccpu.METRIC
# (loadgen's own, from its getrusage figures), both in µs over the run's
# unique deliveries: a ratio of brokers is only as good as a client that
# costs less than both. Nothing when nothing was delivered.
record_cpu() {
    local m=$1 s=$2 c0=$3 c1=$4 line=$5 u
    u=$(kv unique "$line")
    [ "${u:-0}" -gt 0 ] 2>/dev/null || return 0
    [ -n "$c0" ] && [ -n "$c1" ] && record "bcpu.$m" "$s" \
        "$(awk -v d=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v u="$u" 'BEGIN {printf "%.2f", d / hz * 1e6 / u}')"
    record "ccpu.$m" "$s" "$(awk -v a="$(kv cpu_user_s "$line")" -v b="$(kv cpu_sys_s "$line")" -v u="$u" \
        'BEGIN {printf "%.2f", (a + b) * 1e6 / u}')"
}

kv() { # key line -> value of key=value in a loadgen RESULT line
    sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<< " $2" | head -n 1
}

# idle_rss LOADGEN BROKER_PID PORT N OUT ERR
# Runs `loadgen idle` with N connections against PORT, reads BROKER_PID's RSS
# once every CONNACK is in (READY) and 0.5 s later, then lets loadgen ping
# every connection and exit (40 s at most, else it is stopped). Sets
# IDLE_RSS (KiB, empty if unreadable), IDLE_READY (the READY line),
# IDLE_LINE (the RESULT line), IDLE_RC (loadgen's exit status) and
# IDLE_TIMEOUT (1 if loadgen had to be stopped).
idle_rss() {
    local lg=$1 bpid=$2 port=$3 n=$4 out=$5 err=$6 lp
    IDLE_RSS=""; IDLE_READY=""; IDLE_LINE=""; IDLE_RC=""; IDLE_TIMEOUT=0
    "$lg" idle --connections "$n" --hold-secs 2 --port "$port" --timeout-secs 60 > "$out" 2> "$err" &
    lp=$!
    STARTED_PIDS+=("$lp")
    for _ in $(seq 1 600); do
        grep -q '^READY' "$out" 2>/dev/null && break
        kill -0 "$lp" 2>/dev/null || break
        sleep 0.1
    done
    sleep 0.5
    IDLE_RSS=$(rss_kib "$bpid")
    # loadgen pings every connection after the hold and exits by itself
    for _ in $(seq 1 400); do kill -0 "$lp" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$lp" 2>/dev/null; then kill "$lp" 2>/dev/null; IDLE_TIMEOUT=1; fi
    wait "$lp"; IDLE_RC=$?
    IDLE_READY=$(grep '^READY' "$out")
    IDLE_LINE=$(grep '^RESULT ' "$out" | tail -n 1)
}

note() { echo "$*" >> "$NOTES"; log "NOTE: $*"; }

record() { # metric setup value: one value of one run
    [ -n "$3" ] || return 0
    echo "$3" >> "$WORK/vals.$1.$2"
}

median() { # file -> median of the numeric values; FAIL if only failures; empty if no file
    [ -s "$1" ] || { echo ""; return; }
    grep -E '^-?[0-9.]+$' "$1" | sort -g | awk '{a[NR]=$1} END {
        if (NR == 0) print "FAIL"; else if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'
}

fmt() { # number -> thousands separators for >= 100, else up to 2 decimals
    local v=$1
    case "$v" in
        ""|nan) echo "—"; return ;;
        FAIL) echo "FAIL"; return ;;
    esac
    awk -v v="$v" 'BEGIN {
        if (v >= 100) { s = sprintf("%.0f", v); o = "";
            while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) }
            print s o }
        else if (v == int(v)) printf "%d\n", v; else printf "%.2f\n", v }'
}

# per_run_values SETUPS LABELS METRIC...: "- METRIC LABEL: v1 v2 ..." for
# every metric and setup with values. SETUPS names an array of setups,
# LABELS an associative array of display names ("" = the setup names).
per_run_values() {
    local -n _setups=$1
    local labels=$2 m s label
    shift 2
    for m in "$@"; do
        for s in "${_setups[@]}"; do
            [ -s "$WORK/vals.$m.$s" ] || continue
            label=$s
            if [ -n "$labels" ]; then local -n _labels=$labels; label=${_labels[$s]}; fi
            echo "- $m $label: $(tr '\n' ' ' < "$WORK/vals.$m.$s")"
        done
    done
}

notes_section() { # the notes collected by note(), if any
    [ -s "$NOTES" ] || return 0
    echo
    echo "Notes / anomalies:"
    echo
    sed 's/^/- /' "$NOTES"
}

publish_results() { # OUT: $WORK/table.md to OUT, $RAW next to it, the table to stdout
    mkdir -p "$(dirname "$1")"
    cp "$WORK/table.md" "$1"
    cp "$RAW" "${1%.md}-raw.txt"
    cat "$WORK/table.md"
}
