#!/usr/bin/env bash
# Active-active benchmark: three `cluster_mode dynsec_sync` nodes against one
# lone midge with the same dynamic-security config. Reports ratios, asserts
# nothing.
#
#   scripts/bench-active-active.sh [--quick] [--reps N] [--duration S]
#                                  [--connections N] [--anonymous]
#                                  [--no-persistence-false] [--no-build]
#                                  [--midge-bin PATH] [--keep] [--out FILE]
#
# Setups, both on 127.0.0.1, started by this script, stopped by PID:
#   1 node   one midge: listener, health_listener, the dynamic-security
#            plugin lines (its own copy of a `mosquitto_ctrl dynsec init
#            FILE admin adminpass` file), no cluster lines
#   3 nodes  three midge processes with the same lines plus `cluster_mode
#            dynsec_sync`, `cluster_node_id`, three `cluster_peer` lines
# Both: max_inflight_messages 20, max_queued_messages 100000,
# connection_messages false. Both setups run side by side; the one not being
# measured is idle (its idle CPU is reported).
#
# Clients log in as user `bench` (created at run time with mosquitto_ctrl
# through node 1, with a role allowing publishClientSend and
# subscribePattern `loadgen/#`); with --anonymous instead `allow_anonymous
# true` and `setDefaultACLAccess publishClientSend allow` and `subscribe
# allow`. Before measuring, every node must carry a QoS 1 round trip of
# those clients (loadgen latency).
#
# Per phase (persistence true, then persistence false unless
# --no-persistence-false; fresh nodes and data directories per phase):
# (a) broker CPU with no clients for 3 s (raft ticks and heartbeats);
# (b) connections held: 3 `loadgen idle` processes with --connections N
#     each (default 1000), one per node (3 nodes) or all three against the
#     one node; VmRSS of every node before and once all CONNACKs are in;
#     broker CPU per connection (login, hold 2 s, PINGREQ, close);
# (c) messages per second, --reps times, the setups alternating (and which
#     goes first): 3 `loadgen throughput --qos 1 --publishers 1
#     --subscribers 1` in parallel, each its own topic, one per node (each
#     pair on one node: nodes do not share messages) or all three against
#     the one node, so both sides have the same 6 clients. Rate = sum of the
#     3 loadgens' deliver_rate. Broker CPU per message = utime+stime of
#     /proc/PID/stat before/after, per node (over that node's messages) and
#     over all nodes; loadgen's CPU per message (getrusage, all 3 processes)
#     beside it; "cores busy" = all that CPU / wall time of the run.
# Medians of --reps. Table to stdout and benches/results/active-active.md
# (raw lines in active-active-raw.txt). Full run ~3 min, --quick ~1 min.
# Only loopback; ports the kernel picks; every wait and loop is bounded.
set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# port_busy, stop_pid, rss_kib, kv, record, median, fmt, note,
# per_run_values, notes_section, publish_results, raise_nofile, free_port.
# shellcheck source=scripts/lib-bench.sh
. "$ROOT/scripts/lib-bench.sh"
CMDLINE="scripts/bench-active-active.sh${*:+ $*}"
QUICK=0
BUILD=1
REPS=""
DUR=""
CONNS=""
ANON=0
PFALSE=1
MIDGE_BIN=""
KEEP=0
OUT="$ROOT/benches/results/active-active.md"
PLUGIN=/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so
USER_NAME=bench
USER_PASS=benchpass

usage() { sed -n '2,46p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --reps) REPS="$2"; shift ;;
        --duration) DUR="$2"; shift ;;
        --connections) CONNS="$2"; shift ;;
        --anonymous) ANON=1 ;;
        --no-persistence-false) PFALSE=0 ;;
        --no-build) BUILD=0 ;;
        --midge-bin) MIDGE_BIN="$2"; shift ;;
        --keep) KEEP=1 ;;
        --out) OUT="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-active-active.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    : "${REPS:=2}" "${DUR:=2}" "${CONNS:=300}"
    REPS_FALSE=1
    IDLE_S=3
else
    : "${REPS:=4}" "${DUR:=5}" "${CONNS:=1000}"
    REPS_FALSE=$(( REPS > 3 ? 3 : REPS ))
    IDLE_S=5
fi
for v in REPS DUR CONNS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench-active-active.sh: --${v,,} must be a positive number" >&2; exit 2; }
done
[ "$REPS" -le 20 ] && [ "$DUR" -le 30 ] && [ "$CONNS" -le 5000 ] ||
    { echo "bench-active-active.sh: bounds: --reps <= 20, --duration <= 30, --connections <= 5000 (per node)" >&2; exit 2; }
for tool in mosquitto_ctrl curl timeout; do
    command -v "$tool" > /dev/null || { echo "bench-active-active.sh: $tool is needed" >&2; exit 1; }
done
[ -r "$PLUGIN" ] || { echo "bench-active-active.sh: $PLUGIN is missing (Debian package mosquitto)" >&2; exit 1; }

WINDOW=20              # QoS 1 PUBACKs outstanding per publisher (= max_inflight_messages)
LEAD=4000              # a publisher stays <= LEAD messages ahead of its subscriber
PAYLOAD=16
LG_TIMEOUT=$((DUR + 40))       # loadgen's own bound per run (seconds)
KILL_AFTER=$((LG_TIMEOUT + 15))
SETUPS=(one three)
declare -A LABEL=([one]="1 node" [three]="3 nodes")
declare -A SETUP_NODES=([one]="n0" [three]="n1 n2 n3")
# Where the 3 loadgens of a setup connect.
declare -A SETUP_TARGETS=([one]="n0 n0 n0" [three]="n1 n2 n3")
CLK_TCK=$(getconf CLK_TCK)

WORK=$(mktemp -d /tmp/midge-bench-aa.XXXXXX)
RAW="$WORK/raw.txt"
NOTES="$WORK/notes.txt"
: > "$RAW"; : > "$NOTES"

declare -A NODE_PID=() NODE_PORT=() NODE_HPORT=() RAFT_PORT=()
declare -A LIVE=()      # pids of running children this script started
PHASE=""                # ptrue / pfalse
PD=""                   # the phase's directory

track() { LIVE[$1]=1; }
reap() { wait "$1" 2> /dev/null; local rc=$?; unset "LIVE[$1]"; return $rc; }
cleanup() {
    local p
    for p in "${!LIVE[@]}"; do stop_pid "$p"; done
    if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------- build
LOADGEN="$ROOT/benches/loadgen/target/release/loadgen"
if [ "$BUILD" = 1 ]; then
    log "building loadgen (release)"
    cargo build --release --quiet --manifest-path "$ROOT/benches/loadgen/Cargo.toml" || die "loadgen does not build"
fi
[ -x "$LOADGEN" ] || die "no loadgen binary at $LOADGEN (run without --no-build)"
MIDGE_FROM="--midge-bin $MIDGE_BIN"
if [ -z "$MIDGE_BIN" ]; then
    MIDGE_BIN="$ROOT/target/release/midge"
    if [ "$BUILD" = 1 ]; then
        log "building midge (cargo build --release)"
        (cd "$ROOT" && cargo build --release --quiet) ||
            die "midge does not build (someone mid-edit?); retry later or use --no-build for the existing binary"
    fi
    MIDGE_FROM="built here from $(cd "$ROOT" && echo "$(git rev-parse --short HEAD 2> /dev/null || echo '?')$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2> /dev/null || echo ' +uncommitted src changes')")"
fi
[ -x "$MIDGE_BIN" ] || die "no midge binary at $MIDGE_BIN"
MIDGE_BUILT=$(date -u -r "$MIDGE_BIN" '+%Y-%m-%d %H:%M UTC')
# Private copy: a rebuild by someone else during the run must not swap it.
cp "$MIDGE_BIN" "$WORK/midge"
raise_nofile

mosquitto_ctrl dynsec init "$WORK/init.json" admin adminpass > /dev/null || die "mosquitto_ctrl dynsec init failed"

# ---------------------------------------------------------------- helpers
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" 2> /dev/null | awk '{ print $12 + $13 }'; }
node_alive() { [ -n "${NODE_PID[$1]:-}" ] && kill -0 "${NODE_PID[$1]}" 2> /dev/null; }
log_tail() { tail -n "${2:-4}" "$PD/$1.log" 2> /dev/null | tr '\n' ' ' | cut -c1-500; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
health_ok() { curl -sf -m 2 -o /dev/null "http://127.0.0.1:$1/health"; }
# div EXPR_A EXPR_B [FORMAT]: (A) / (B), both arithmetic expressions of
# numbers this script computed; empty if B is 0.
div() { awk -v f="${3:-%.2f}" "BEGIN { b = ($2); if (b == 0) print \"\"; else printf f \"\\n\", ($1) / b }"; }

# 3 + 3*3 distinct free ports (the kernel picks; 20 tries to get them distinct).
pick_ports() {
    local -A seen=()
    local names=(n0 n1 n2 n3) n p try kind
    for n in "${names[@]}"; do
        for kind in NODE_PORT NODE_HPORT RAFT_PORT; do
            [ "$n" = n0 ] && [ "$kind" = RAFT_PORT ] && continue
            for try in $(seq 1 20); do
                p=$(free_port) || die "no free port"
                [ -z "${seen[$p]:-}" ] && break
            done
            [ -z "${seen[$p]:-}" ] || die "could not find distinct free ports"
            seen[$p]=1
            case $kind in
                NODE_PORT) NODE_PORT[$n]=$p ;;
                NODE_HPORT) NODE_HPORT[$n]=$p ;;
                RAFT_PORT) RAFT_PORT[$n]=$p ;;
            esac
        done
    done
}

write_conf() { # node -> config path
    local n=$1 f="$PD/$1.conf" i
    cp "$WORK/init.json" "$PD/$n.json"
    {
        echo "listener ${NODE_PORT[$n]} 127.0.0.1"
        echo "health_listener ${NODE_HPORT[$n]} 127.0.0.1"
        echo "persistence ${PHASE#p}"
        echo "persistence_location $PD/$n"
        echo "connection_messages false"
        echo "sys_interval 1"
        echo "max_inflight_messages 20"
        echo "max_queued_messages 100000"
        echo "plugin $PLUGIN"
        echo "plugin_opt_config_file $PD/$n.json"
        [ "$ANON" = 1 ] && echo "allow_anonymous true"
        if [ "$n" != n0 ]; then
            echo "cluster_mode dynsec_sync"
            echo "cluster_node_id ${n#n}"
            for i in 1 2 3; do echo "cluster_peer $i 127.0.0.1:${RAFT_PORT[n$i]}"; done
        fi
    } > "$f"
    echo "$f"
}

start_node() { # node
    local n=$1 conf
    mkdir -p "$PD/$n"
    conf=$(write_conf "$n")
    "$WORK/midge" -c "$conf" > "$PD/$n.log" 2>&1 &
    NODE_PID[$n]=$!
    track "$!"
}

wait_serving() { # timeout-s node... -> 0 once every node answers health 200 and listens
    local t=$1 n ok; shift
    for _ in $(seq 1 $((t * 10))); do
        ok=1
        for n in "$@"; do
            node_alive "$n" || return 1
            { health_ok "${NODE_HPORT[$n]}" && port_busy "${NODE_PORT[$n]}"; } || { ok=0; break; }
        done
        [ "$ok" = 1 ] && return 0
        sleep 0.1
    done
    return 1
}

LOGIN_ARGS=()
[ "$ANON" = 1 ] || LOGIN_ARGS=(--username "$USER_NAME" --password "$USER_PASS")

ctrl() { # port args... -> mosquitto_ctrl's output (without its plain-text warning)
    local port=$1; shift
    timeout -k 2 20 mosquitto_ctrl -h 127.0.0.1 -p "$port" -u admin -P adminpass dynsec "$@" 2>&1 |
        grep -v -e '^Warning: You are running' -e '^This means all of the' -e '^$'
}

ctrl_ok() { # port args...: up to 5 tries; an "already exists" after a retry counts as done
    local port=$1 out try; shift
    for try in 1 2 3 4 5; do
        out=$(ctrl "$port" "$@")
        if ! grep -q -i error <<< "$out"; then return 0; fi
        [ "$try" -gt 1 ] && grep -q -i 'already' <<< "$out" && return 0
        echo "ctrl $PHASE port $port $* -> $out" >> "$RAW"
        sleep 0.5
    done
    note "$PHASE: mosquitto_ctrl dynsec $* failed 5 times: $out"
    return 1
}

# Dynamic-security setup through the setup's first node; then wait until
# every node of the setup carries a QoS 1 round trip of the bench clients.
auth_setup() { # setup
    local s=$1 first n t0 ok line
    first=${SETUP_NODES[$s]%% *}
    t0=$(date +%s%N)
    if [ "$ANON" = 1 ]; then
        ctrl_ok "${NODE_PORT[$first]}" setDefaultACLAccess publishClientSend allow || return 1
        ctrl_ok "${NODE_PORT[$first]}" setDefaultACLAccess subscribe allow || return 1
    else
        ctrl_ok "${NODE_PORT[$first]}" createClient "$USER_NAME" -p "$USER_PASS" || return 1
        ctrl_ok "${NODE_PORT[$first]}" createRole lg || return 1
        ctrl_ok "${NODE_PORT[$first]}" addRoleACL lg publishClientSend 'loadgen/#' allow || return 1
        ctrl_ok "${NODE_PORT[$first]}" addRoleACL lg subscribePattern 'loadgen/#' allow || return 1
        ctrl_ok "${NODE_PORT[$first]}" addClientRole "$USER_NAME" lg || return 1
    fi
    local t_ctrl
    t_ctrl=$(ms_since "$t0")
    for n in ${SETUP_NODES[$s]}; do
        ok=0
        for _ in $(seq 1 30); do
            line=$("$LOADGEN" latency --port "${NODE_PORT[$n]}" --qos 1 --count 20 --warmup 0 --timeout-secs 3 \
                "${LOGIN_ARGS[@]}" 2> /dev/null | grep '^RESULT ')
            [ "$(kv status "$line")" = ok ] && { ok=1; break; }
            sleep 0.2
        done
        if [ "$ok" = 0 ]; then
            note "$PHASE ${LABEL[$s]}: the bench clients cannot do a QoS 1 round trip on node $n: ${line:-no RESULT}"
            return 1
        fi
    done
    echo "auth $PHASE $s ctrl_ms=$t_ctrl usable_everywhere_ms=$(ms_since "$t0")" >> "$RAW"
    log "${LABEL[$s]}: clients can log in, publish and subscribe on every node $(ms_since "$t0") ms after the first command"
}

# Batching counters of a node's own raft log (in dynsec_sync the node-local
# group: its clients' sessions and messages), from the retained
# $SYS/broker/cluster/batch/* topics (sys_interval 1), read as admin:
# "commands proposals persisted_entries persists", cumulative.
batch_counters() { # node
    timeout -k 1 4 mosquitto_sub -h 127.0.0.1 -p "${NODE_PORT[$1]}" -u admin -P adminpass \
        -t '$SYS/broker/cluster/batch/#' -v -C 4 -W 3 2> /dev/null | sort -u -k1,1 |
        awk '{ split($1, a, "/"); v[a[5]] = $2 }
             END { if (length(v) == 4) print v["commands"], v["proposals"], v["persisted_entries"], v["persists"] }'
}

# ------------------------------------------------------------- measurements
idle_cpu() { # ms of CPU per second of every node with no clients, over IDLE_S s
    local s n
    local -A t0=()
    for n in n0 n1 n2 n3; do t0[$n]=$(cpu_ticks "${NODE_PID[$n]}"); done
    sleep "$IDLE_S"
    for s in "${SETUPS[@]}"; do
        for n in ${SETUP_NODES[$s]}; do
            record "idlecpu.$n" "$s.$PHASE" "$(div "$(( $(cpu_ticks "${NODE_PID[$n]}") - t0[$n] )) * 1000 / $CLK_TCK" "$IDLE_S" %.1f)"
        done
    done
}

conn_test() { # setup
    local s=$1 n i lp ready line alive=0 held=0 tot0=0 tot1=0 dt=0
    local -A r0=() r1=() c0=()
    local pids=()
    log "$PHASE ${LABEL[$s]}: 3 x $CONNS idle connections"
    for n in ${SETUP_NODES[$s]}; do
        node_alive "$n" || { note "$PHASE ${LABEL[$s]}: node $n is not running before the connection test"; return; }
        r0[$n]=$(rss_kib "${NODE_PID[$n]}"); c0[$n]=$(cpu_ticks "${NODE_PID[$n]}")
    done
    i=0
    for n in ${SETUP_TARGETS[$s]}; do
        i=$((i + 1))
        timeout -k 5 90 "$LOADGEN" idle --port "${NODE_PORT[$n]}" --connections "$CONNS" --hold-secs 2 \
            --timeout-secs 60 "${LOGIN_ARGS[@]}" > "$WORK/idle.$i.out" 2> "$WORK/idle.$i.err" &
        lp=$!; track "$lp"; pids+=("$lp")
    done
    for _ in $(seq 1 600); do
        ready=0
        for i in 1 2 3; do grep -q '^READY' "$WORK/idle.$i.out" 2> /dev/null && ready=$((ready + 1)); done
        [ "$ready" = 3 ] && break
        for lp in "${pids[@]}"; do kill -0 "$lp" 2> /dev/null || break 2; done
        sleep 0.1
    done
    sleep 0.5
    for n in ${SETUP_NODES[$s]}; do r1[$n]=$(rss_kib "${NODE_PID[$n]}"); done
    for lp in "${pids[@]}"; do reap "$lp"; done   # each bounded by timeout(1)
    for n in ${SETUP_NODES[$s]}; do dt=$((dt + $(cpu_ticks "${NODE_PID[$n]}") - c0[$n])); done
    for i in 1 2 3; do
        line=$(grep '^RESULT ' "$WORK/idle.$i.out" | tail -n 1)
        echo "idle $PHASE $s loadgen=$i $(grep '^READY' "$WORK/idle.$i.out") $line" >> "$RAW"
        held=$((held + $(kv connected "$line" | grep -E '^[0-9]+$' || echo 0)))
        alive=$((alive + $(kv alive "$line" | grep -E '^[0-9]+$' || echo 0)))
        [ "$(kv status "$line")" = ok ] ||
            note "$PHASE ${LABEL[$s]}: loadgen idle $i: ${line:-no RESULT} $(head -c 300 "$WORK/idle.$i.err")"
    done
    for n in ${SETUP_NODES[$s]}; do
        echo "rss $PHASE $s node=$n before_kib=${r0[$n]} with_conns_kib=${r1[$n]}" >> "$RAW"
        record "rss0.$n" "$s.$PHASE" "${r0[$n]}"
        record "rss1.$n" "$s.$PHASE" "${r1[$n]}"
        tot0=$((tot0 + ${r0[$n]:-0})); tot1=$((tot1 + ${r1[$n]:-0}))
    done
    record rss0 "$s.$PHASE" "$tot0"
    record rss1 "$s.$PHASE" "$tot1"
    record held "$s.$PHASE" "$held"
    record alive "$s.$PHASE" "$alive"
    [ "$held" -gt 0 ] && record kibconn "$s.$PHASE" "$(div $((tot1 - tot0)) "$held")"
    [ "$held" -gt 0 ] && record cpuconn "$s.$PHASE" "$(div "$dt * 1000000 / $CLK_TCK" "$held" %.1f)"
}

tp_test() { # setup
    local s=$1 n i lp line st t0 rate_sum=0 uniq_sum=0 lost_sum=0 lgcpu=0 bt=0 wall ok=1
    local -A c0=() c1=() u=() b0=() b1=()
    local pids=()
    log "$PHASE ${LABEL[$s]}: QoS 1, 3 pairs in parallel, ${DUR} s"
    for n in ${SETUP_NODES[$s]}; do
        node_alive "$n" || { note "$PHASE ${LABEL[$s]}: node $n DIED before a throughput run (log: $(log_tail "$n"))"; record rate "$s.$PHASE" nan; return; }
    done
    for n in ${SETUP_NODES[$s]}; do b0[$n]=$(batch_counters "$n"); done
    for n in ${SETUP_NODES[$s]}; do c0[$n]=$(cpu_ticks "${NODE_PID[$n]}"); done
    t0=$(date +%s%N)
    i=0
    for n in ${SETUP_TARGETS[$s]}; do
        i=$((i + 1))
        timeout -k 5 "$KILL_AFTER" "$LOADGEN" throughput --port "${NODE_PORT[$n]}" --qos 1 --publishers 1 --subscribers 1 \
            --payload $PAYLOAD --duration-secs "$DUR" --max-lead $LEAD --window $WINDOW --timeout-secs $LG_TIMEOUT \
            "${LOGIN_ARGS[@]}" > "$WORK/tp.$i.out" 2> "$WORK/tp.$i.err" &
        lp=$!; track "$lp"; pids+=("$lp")
    done
    i=0
    for lp in "${pids[@]}"; do
        i=$((i + 1))
        reap "$lp" || note "$PHASE ${LABEL[$s]}: loadgen throughput $i exited $?: $(grep -v '^$' "$WORK/tp.$i.err" | head -n 2 | tr '\n' ' ')"
    done
    wall=$(( $(date +%s%N) - t0 ))
    for n in ${SETUP_NODES[$s]}; do c1[$n]=$(cpu_ticks "${NODE_PID[$n]}"); bt=$((bt + c1[$n] - c0[$n])); done
    sleep 1.2   # the $SYS counters are republished every second
    local bc=0 bp=0 x0 x1
    for n in ${SETUP_NODES[$s]}; do
        b1[$n]=$(batch_counters "$n")
        echo "batch $PHASE $s node=$n before=(${b0[$n]}) after=(${b1[$n]})" >> "$RAW"
        read -r -a x0 <<< "${b0[$n]}"; read -r -a x1 <<< "${b1[$n]}"
        if [ ${#x0[@]} = 4 ] && [ ${#x1[@]} = 4 ]; then
            bc=$((bc + x1[0] - x0[0])); bp=$((bp + x1[3] - x0[3]))
            record "pps.$n" "$s.$PHASE" "$(div "($((x1[3] - x0[3]))) * 1000000000" "$wall" %.0f)"
        else
            bc=-1
        fi
    done
    if [ "$bc" -ge 0 ] && [ "$bp" -gt 0 ]; then
        record pps "$s.$PHASE" "$(div "$bp * 1000000000" "$wall" %.0f)"
        record cpp "$s.$PHASE" "$(div "$bc" "$bp" %.1f)"
    else
        note "$PHASE ${LABEL[$s]}: no batching counters from \$SYS (see raw lines 'batch')"
    fi
    i=0
    for n in ${SETUP_TARGETS[$s]}; do
        i=$((i + 1))
        line=$(grep '^RESULT ' "$WORK/tp.$i.out" | tail -n 1)
        echo "tp $PHASE $s loadgen=$i node=$n $line" >> "$RAW"
        st=$(kv status "$line")
        case "$st" in ok|loss) ;; *) ok=0; note "$PHASE ${LABEL[$s]}: loadgen throughput $i status=${st:-none}"; continue ;; esac
        [ "$st" = loss ] && note "$PHASE ${LABEL[$s]}: loadgen $i lost $(kv lost "$line") of $(kv expected "$line") QoS 1 deliveries"
        record "pairrate.$i" "$s.$PHASE" "$(kv deliver_rate "$line")"
        rate_sum=$(awk -v a="$rate_sum" -v b="$(kv deliver_rate "$line")" 'BEGIN {print a + b}')
        uniq_sum=$((uniq_sum + $(kv unique "$line")))
        u[$n]=$(( ${u[$n]:-0} + $(kv unique "$line") ))
        lost_sum=$((lost_sum + $(kv lost "$line")))
        lgcpu=$(awk -v a="$lgcpu" -v b="$(kv cpu_user_s "$line")" -v c="$(kv cpu_sys_s "$line")" 'BEGIN {print a + b + c}')
    done
    echo "cpu $PHASE $s wall_ms=$((wall / 1000000)) clk_tck=$CLK_TCK $(for n in ${SETUP_NODES[$s]}; do printf 'ticks_%s=%s ' "$n" $((c1[$n] - c0[$n])); done)loadgen_cpu_s=$lgcpu messages=$uniq_sum" >> "$RAW"
    record lost "$s.$PHASE" "$lost_sum"
    if [ "$ok" = 0 ] || [ "$uniq_sum" = 0 ]; then record rate "$s.$PHASE" nan; return; fi
    record rate "$s.$PHASE" "$rate_sum"
    for n in ${SETUP_NODES[$s]}; do
        record "cpumsg.$n" "$s.$PHASE" "$(div "$((c1[$n] - c0[$n])) * 1000000 / $CLK_TCK" "${u[$n]:-0}")"
    done
    record cpumsg "$s.$PHASE" "$(div "$bt * 1000000 / $CLK_TCK" "$uniq_sum")"
    record lgmsg "$s.$PHASE" "$(div "$lgcpu * 1000000" "$uniq_sum")"
    record allmsg "$s.$PHASE" "$(div "($bt / $CLK_TCK + $lgcpu) * 1000000" "$uniq_sum")"
    record cores "$s.$PHASE" "$(div "($bt / $CLK_TCK + $lgcpu) * 1000000000" "$wall")"
}

# ---------------------------------------------------------------- phases
T0=$(date +%s)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
LOADS=""
PHASES=(ptrue)
[ "$PFALSE" = 1 ] && PHASES+=(pfalse)
declare -A PHASE_OK=()
log "work dir $WORK; midge $MIDGE_BIN ($MIDGE_FROM)"
for PHASE in "${PHASES[@]}"; do
    PD="$WORK/$PHASE"; mkdir -p "$PD"
    reps=$REPS; [ "$PHASE" = pfalse ] && reps=$REPS_FALSE
    log "=== persistence ${PHASE#p}: starting 1 node and 3 nodes"
    pick_ports
    NODE_PID=()
    for n in n0 n1 n2 n3; do start_node "$n"; done
    t0=$(date +%s%N)
    wait_serving 30 n0 || { note "$PHASE: the 1 node did not serve within 30 s: $(log_tail n0)"; }
    wait_serving 30 n1 n2 n3 || { note "$PHASE: the 3 nodes did not all serve within 30 s: $(for n in n1 n2 n3; do echo "$n: $(log_tail "$n" 2)"; done)"; }
    log "all nodes serving after $(ms_since "$t0") ms"
    PHASE_OK[$PHASE]=1
    for s in "${SETUPS[@]}"; do auth_setup "$s" || PHASE_OK[$PHASE]=0; done
    if [ "${PHASE_OK[$PHASE]}" = 1 ]; then
        idle_cpu
        # fresh nodes: connections first (RSS), the setup that goes first alternates by phase
        if [ "$PHASE" = ptrue ]; then ORDER=(one three); else ORDER=(three one); fi
        for s in "${ORDER[@]}"; do conn_test "$s"; done
        for r in $(seq 1 "$reps"); do
            log "--- persistence ${PHASE#p}: repetition $r of $reps"
            if [ $((r % 2)) = 1 ]; then ORDER=(one three); else ORDER=(three one); fi
            for s in "${ORDER[@]}"; do tp_test "$s"; done
            LOADS="$LOADS $(cut -d' ' -f1 /proc/loadavg)"
        done
    fi
    for n in n0 n1 n2 n3; do
        w=$(grep -E ' (WARN|ERROR) ' "$PD/$n.log" 2> /dev/null | grep -v 'Cannot reach peer' | wc -l)
        [ "$w" -gt 0 ] && note "$PHASE: node $n logged $w WARN/ERROR lines (besides 'Cannot reach peer' at start), e.g. $(grep -E ' (WARN|ERROR) ' "$PD/$n.log" | grep -v 'Cannot reach peer' | head -n 2 | tr '\n' ' ' | cut -c1-400)"
        node_alive "$n" || note "$PHASE: node $n had exited before the end of the phase (log: $(log_tail "$n" 5))"
    done
    e=$(cat "$PD"/n[123].log 2> /dev/null | grep -c 'is the leader for term')
    echo "leaders $PHASE three: $e 'is the leader for term' lines (3 node-local groups + the cluster group = 4 without changes)" >> "$RAW"
    [ "$e" -gt 4 ] && note "$PHASE 3 nodes: $e 'is the leader for term' log lines, more than the 4 of a start without leader changes"
    for n in n0 n1 n2 n3; do
        stop_pid "${NODE_PID[$n]}" || note "$PHASE: node $n ignored SIGTERM for 5 s; sent SIGKILL"
        unset "LIVE[${NODE_PID[$n]}]"
    done
done
T1=$(date +%s)

# ---------------------------------------------------------------- table
ratio() { # a b -> a/b
    case "$1$2" in *FAIL*|*nan*) echo "—"; return ;; esac
    [ -n "$1" ] && [ -n "$2" ] || { echo "—"; return; }
    awk -v a="$1" -v z="$2" 'BEGIN { if (z + 0 == 0) print "—"; else printf "%.2f", a / z }'
}
get() { median "$WORK/vals.$1.$2"; }
nodes_med() { # metric setup.phase nodes... -> "a / b / c"
    local m=$1 sp=$2 n out=""; shift 2
    for n in "$@"; do out="${out:+$out / }$(fmt "$(get "$m.$n" "$sp")")"; done
    echo "$out"
}
row() { # label metric phase [noratio]
    local a b
    a=$(get "$2" "one.$3"); b=$(get "$2" "three.$3")
    if [ "${4:-}" = noratio ]; then
        printf '| %s | %s | %s | |\n' "$1" "$(fmt "$a")" "$(fmt "$b")"
    else
        printf '| %s | %s | %s | %s |\n' "$1" "$(fmt "$a")" "$(fmt "$b")" "$(ratio "$b" "$a")"
    fi
}
sumall() { cat "$WORK"/vals."$1"."$2" 2> /dev/null | awk '{s += $1} END {print s + 0}'; }

tp_table() { # phase
    local p=$1
    echo "| metric (medians) | 1 node | 3 nodes | 3 nodes / 1 node |"
    echo "| --- | ---: | ---: | ---: |"
    row "QoS 1 messages/s, the 3 pairs together (higher is better)" rate "$p"
    printf '| messages/s of each pair (loadgen 1 / 2 / 3) | %s | %s | |\n' \
        "$(nodes_med pairrate "one.$p" 1 2 3)" "$(nodes_med pairrate "three.$p" 1 2 3)"
    printf '| broker CPU per message, per node (µs; node 1 / 2 / 3) | %s | %s | |\n' \
        "$(nodes_med cpumsg "one.$p" n0)" "$(nodes_med cpumsg "three.$p" n1 n2 n3)"
    row "broker CPU per message, all nodes (µs, lower is better)" cpumsg "$p"
    row "loadgen CPU per message, all 3 processes (µs)" lgmsg "$p"
    row "brokers + loadgen CPU per message (µs)" allmsg "$p"
    row "cores busy during a run (brokers + loadgen, of $(nproc))" cores "$p" noratio
    row "raft log writes (persists) per second, all nodes" pps "$p"
    printf '| raft log writes per second, per node (node 1 / 2 / 3) | %s | %s | |\n' \
        "$(nodes_med pps "one.$p" n0)" "$(nodes_med pps "three.$p" n1 n2 n3)"
    row "broker commands per raft log write (batching; all nodes)" cpp "$p"
    printf '| QoS 1 deliveries lost, all runs (must be 0) | %s | %s | |\n' "$(sumall lost "one.$p")" "$(sumall lost "three.$p")"
}

conn_table() { # phase
    local p=$1
    echo "| metric | 1 node (3 × $CONNS) | 3 nodes ($CONNS each) | 3 nodes / 1 node |"
    echo "| --- | ---: | ---: | ---: |"
    printf '| RSS before, per node (KiB; node 1 / 2 / 3) | %s | %s | |\n' "$(nodes_med rss0 "one.$p" n0)" "$(nodes_med rss0 "three.$p" n1 n2 n3)"
    printf '| RSS holding the connections, per node (KiB) | %s | %s | |\n' "$(nodes_med rss1 "one.$p" n0)" "$(nodes_med rss1 "three.$p" n1 n2 n3)"
    row "RSS before, total (KiB)" rss0 "$p"
    row "RSS holding the connections, total (KiB)" rss1 "$p"
    row "KiB per connection ((total with − total before) / connections)" kibconn "$p"
    row "broker CPU per connection, all nodes (µs: login, 2 s hold, PINGREQ, close)" cpuconn "$p"
    row "connections held (all 3 loadgens)" held "$p" noratio
    row "… still answering PINGREQ after the 2 s hold" alive "$p" noratio
    printf '| broker CPU with no clients, %s s (ms per s; node 1 / 2 / 3; one tick = %s ms per s) | %s | %s | |\n' "$IDLE_S" "$(div "1000 / $CLK_TCK" "$IDLE_S" %.1f)" \
        "$(nodes_med idlecpu "one.$p" n0)" "$(nodes_med idlecpu "three.$p" n1 n2 n3)"
}

R_TP=$(ratio "$(get rate three.ptrue)" "$(get rate one.ptrue)")
R_CPU=$(ratio "$(get cpumsg three.ptrue)" "$(get cpumsg one.ptrue)")
R_RSS=$(ratio "$(get rss1 three.ptrue)" "$(get rss1 one.ptrue)")
if [ "$ANON" = 1 ]; then
    AUTH="anonymous: \`allow_anonymous true\` on every node, and \`mosquitto_ctrl dynsec setDefaultACLAccess publishClientSend allow\` and \`subscribe allow\` through node 1 of each setup (the 3 nodes get them through the cluster)"
else
    AUTH="user \`$USER_NAME\` with a password (PBKDF2-SHA512, 101 iterations), created at run time with \`mosquitto_ctrl dynsec createClient\` through node 1 of each setup (the 3 nodes: replicated to nodes 2 and 3 by the cluster), role \`lg\` with \`publishClientSend loadgen/#\` and \`subscribePattern loadgen/#\`; anonymous stays denied"
fi
{
    echo "# Active-active (cluster_mode dynsec_sync): 3 nodes vs 1 node"
    echo
    echo "**Headline, persistence true, 3 nodes / 1 node:** QoS 1 messages/s **$R_TP**, broker CPU per message (all nodes) **$R_CPU**, RSS holding 3 × $CONNS connections (all nodes) **$R_RSS**."
    echo
    echo "- command: \`$CMDLINE\`"
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); mode: $([ "$QUICK" = 1 ] && echo quick || echo full); repetitions: $REPS with persistence true$([ "$PFALSE" = 1 ] && echo ", $REPS_FALSE with persistence false") (medians); runtime $((T1 - T0)) s"
    echo "- midge: $MIDGE_FROM, binary built $MIDGE_BUILT; loadgen at $(cd "$ROOT" && git rev-parse --short HEAD 2> /dev/null)$(cd "$ROOT" && git diff --quiet HEAD -- benches/loadgen 2> /dev/null || echo ' +uncommitted changes')"
    echo "- **machine: $(nproc) cores, shared.** The 3 nodes and the 3 loadgen processes (6 client threads plus their readers) compete for those $(nproc) cores, as do the 1 node and the same loadgens: 3 nodes cannot use more CPU than 1 node can here, so messages/s compares how much work each message costs, not what three machines would do. Hence the CPU-per-message rows, per node and over all nodes, with loadgen's beside them. Load average at start $LOAD0, after each repetition:$LOADS"
    echo "- both setups run side by side, on loopback; the one not being measured is idle (its CPU with no clients is in the connections table)"
    echo "- 1 node: one midge, no cluster lines; 3 nodes: \`cluster_mode dynsec_sync\`, \`cluster_node_id\`, 3 \`cluster_peer\` lines; both: \`plugin $PLUGIN\`, \`plugin_opt_config_file\` (own copy of \`mosquitto_ctrl dynsec init FILE admin adminpass\`), \`max_inflight_messages 20\`, \`max_queued_messages 100000\`, \`connection_messages false\`, \`health_listener\`"
    echo "- clients log in as: $AUTH"
    echo "- messages/s: 3 \`loadgen throughput --qos 1 --publishers 1 --subscribers 1 --payload $PAYLOAD --window $WINDOW --max-lead $LEAD --duration-secs $DUR\` in parallel, each its own topic; 3 nodes: one per node (a pair on one node: nodes do not share messages); 1 node: all 3 against it (the same 6 clients). Rate = sum of the 3 deliver_rates (unique deliveries / first publish → last delivery)"
    echo "- CPU: broker = utime+stime from /proc/PID/stat before/after the 3 loadgens (connect to exit), per node over the messages of its pair, and over all nodes; loadgen = getrusage of each process (its whole life), summed; cores busy = (brokers + loadgen CPU) / wall time of the run"
    echo "- batching: each node's own raft log (in dynsec_sync the node-local group; it carries the node's sessions and messages; with persistence true one redb write + fsync per persist), counters \`\$SYS/broker/cluster/batch/{commands,persists}\` read as admin before and 1.2 s after each run (\`sys_interval 1\` on every node of both setups); per second = over the run's wall time"
    echo "- connections: 3 \`loadgen idle --connections $CONNS --hold-secs 2\` in parallel (logged in as above), on freshly started nodes; RSS (VmRSS) read once all CONNACKs are in"
    echo
    echo "## Persistence true (the realistic setup)"
    echo
    echo "Messages per second:"
    echo
    tp_table ptrue
    echo
    echo "Connections held:"
    echo
    conn_table ptrue
    if [ "$PFALSE" = 1 ]; then
        echo
        echo "## Persistence false"
        echo
        tp_table pfalse
        echo
        conn_table pfalse
    fi
    echo
    echo "Per-run values (one value per run; setup.phase):"
    echo
    ALLSP=()
    for p in "${PHASES[@]}"; do for s in "${SETUPS[@]}"; do ALLSP+=("$s.$p"); done; done
    per_run_values ALLSP "" rate pairrate.1 pairrate.2 pairrate.3 cpumsg cpumsg.n0 cpumsg.n1 cpumsg.n2 cpumsg.n3 lgmsg cores pps cpp
    notes_section
} > "$WORK/table.md"

publish_results "$OUT"
log "wrote $OUT and ${OUT%.md}-raw.txt"
