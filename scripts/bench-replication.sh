#!/usr/bin/env bash
# Replicated QoS 1 benchmark: midge (one node, and three nodes in one raft
# group) against Mosquitto with persistence on, in the same run.
#
#   scripts/bench-replication.sh [--quick] [--reps N] [--no-build]
#                                [--midge-bin PATH] [--base-port P]
#                                [--midge-option 'KEY VALUE']... [--keep]
#                                [--out FILE] [--peer-tls]
#
# Setups, all on 127.0.0.1, all started by this script and stopped by PID:
#   midge-1   one midge node, persistence true (raft log in redb, fsync per batch)
#   midge-3   three midge nodes (cluster_node_id/cluster_peer), same options;
#             clients talk to the leader directly (found via health_listener)
#   mosquitto Mosquitto 2 with persistence true (it writes its db on autosave /
#             exit only: PUBACK does not wait for the disk)
# Both brokers: max_inflight_messages 20, max_queued_messages 100000.
# --peer-tls: instead of midge-1, a second three-node cluster whose peer
#   link is mutual TLS (certificates from docs/HA.md's openssl commands);
#   the table compares it with the plain one (default out:
#   benches/results/peer-tls.md).
#
# Per setup: QoS 1 throughput 1->1 and 4->4 (loadgen throughput, windowed
# QoS 1, flow-controlled, time-bounded), QoS 1 ping-pong latency p50/p99
# (loadgen latency), and for midge the batching counters from the leader's
# health JSON around each throughput run: broker commands per raft entry
# (commands/proposals) and raft entries per durable write
# (persisted_entries/persists). Once per repetition it also measures the
# disk under the run (loadgen fsync: a 1,600-byte overwrite + fdatasync, 1
# writer for one node, 3 at once for three nodes on this one disk) and
# reports the ceiling that sets for 1->1: with the window of 20 in one
# entry, a node on this disk cannot answer more than 20 per fdatasync
# even if the broker and the hops took no time. Tests alternate between the setups; with
# --reps N every number is the median of N runs. Prints a markdown table and
# writes it to benches/results/replication.md (raw lines next to it).
# Full run ~3 min, --quick ~1 min. Temp dirs are removed unless --keep.
set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib-bench.sh
. "$ROOT/scripts/lib-bench.sh"
QUICK=0
BUILD=1
REPS=""
BASE_PORT=19400
MIDGE_BIN=""
MIDGE_OPTS=()
KEEP=0
PEER_TLS=0
OUT=""

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --no-build) BUILD=0 ;;
        --reps) REPS="$2"; shift ;;
        --base-port) BASE_PORT="$2"; shift ;;
        --midge-bin) MIDGE_BIN="$2"; shift ;;
        --midge-option) MIDGE_OPTS+=("$2"); shift ;;
        --keep) KEEP=1 ;;
        --out) OUT="$2"; shift ;;
        --peer-tls) PEER_TLS=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-replication.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

# ---------------------------------------------------------------- sizes
if [ "$QUICK" = 1 ]; then
    : "${REPS:=2}"
    DUR=2
    LAT_COUNT=1000
else
    : "${REPS:=4}"
    DUR=3
    LAT_COUNT=2000
fi
CLK_TCK=$(getconf CLK_TCK)
LEAD=4000              # a publisher stays <= LEAD/publishers ahead of the slowest subscriber
WINDOW=20              # QoS 1 PUBACKs outstanding per publisher (= max_inflight_messages)
PAYLOAD=16
LG_TIMEOUT=60          # loadgen's own bound per run (seconds)
KILL_AFTER=$((LG_TIMEOUT + 20))
SETUPS=(midge1 midge3 mosquitto)
declare -A LABEL=([midge1]="midge 1 node" [midge3]="midge 3 nodes" [midge3tls]="midge 3 nodes, peer TLS" [mosquitto]="mosquitto")
if [ "$PEER_TLS" = 1 ]; then
    SETUPS=(midge3 midge3tls mosquitto)
    : "${OUT:=$ROOT/benches/results/peer-tls.md}"
fi
: "${OUT:=$ROOT/benches/results/replication.md}"


WORK=$(mktemp -d /tmp/midge-bench-repl.XXXXXX)
chmod 755 "$WORK"      # mosquitto (run as root) drops to user mosquitto and must reach its dir
RAW="$WORK/raw.txt"
NOTES="$WORK/notes.txt"
: > "$RAW"; : > "$NOTES"

STARTED_PIDS=()
declare -A NODE_PID=()   # node name (m1, c1, c2, c3, mq) -> pid
declare -A NODE_PORT=()  # node name -> MQTT port
declare -A NODE_HPORT=() # node name -> health port
declare -A PORT=()       # setup -> MQTT port the clients use
declare -A HPORT=()      # setup -> health port of the serving node (midge)
declare -A LEADER=()     # setup -> node name of the leader (midge3)


cleanup() {
    local p
    for p in "${STARTED_PIDS[@]:-}"; do
        [ -n "$p" ] && stop_pid "$p"
    done
    if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------- build
LOADGEN="$ROOT/benches/loadgen/target/release/loadgen"
if [ "$BUILD" = 1 ]; then
    log "building loadgen (release)"
    cargo build --release --quiet --manifest-path "$ROOT/benches/loadgen/Cargo.toml" || { log "loadgen build failed"; exit 1; }
fi
[ -x "$LOADGEN" ] || { log "no loadgen binary at $LOADGEN (run without --no-build)"; exit 1; }
if [ -z "$MIDGE_BIN" ]; then
    MIDGE_BIN="$ROOT/target/release/midge"
    if [ "$BUILD" = 1 ]; then
        log "building midge (cargo build --release)"
        (cd "$ROOT" && cargo build --release --quiet) || {
            log "midge does not build (someone mid-edit?); retry later or use --no-build for the existing binary"; exit 1; }
    fi
fi
[ -x "$MIDGE_BIN" ] || { log "no midge binary at $MIDGE_BIN"; exit 1; }
# Private copy: a rebuild by someone else during the run must not swap it.
cp "$MIDGE_BIN" "$WORK/midge"
MIDGE_BIN_ORIG=$MIDGE_BIN
MIDGE_BIN="$WORK/midge"
command -v mosquitto >/dev/null || { log "mosquitto is not installed (apt-get install mosquitto)"; exit 1; }
command -v curl >/dev/null || { log "curl is needed for midge's health endpoint"; exit 1; }

# ---------------------------------------------------------------- ports
# 21 ports from a base: mosquitto 1; midge1 listener+health 2; midge3 and
# midge3tls per node listener, health, raft 9 each.
base_ok() { local i; for i in $(seq 0 20); do port_busy $(($1 + i)) && return 1; done; return 0; }
B=$BASE_PORT
for _ in $(seq 1 40); do base_ok "$B" && break; B=$((B + 20)); done
base_ok "$B" || { log "no 21 free ports found from $BASE_PORT"; exit 1; }
NODE_PORT[mq]=$B
NODE_PORT[m1]=$((B + 1)); NODE_HPORT[m1]=$((B + 2))
for n in 1 2 3; do
    NODE_PORT[c$n]=$((B + 2 + n))      # B+3..B+5
    NODE_HPORT[c$n]=$((B + 5 + n))     # B+6..B+8
done
RAFT_PORT1=$((B + 9))                  # B+9..B+11
for n in 1 2 3; do
    NODE_PORT[t$n]=$((B + 11 + n))     # B+12..B+14
    NODE_HPORT[t$n]=$((B + 14 + n))    # B+15..B+17
done
RAFT_PORT2=$((B + 18))                 # B+18..B+20
if [ "$PEER_TLS" = 1 ]; then
    # The certificates, by docs/HA.md's commands as written, then for
    # 127.0.0.1 (as tests/common/cluster_tls.rs does).
    command -v openssl >/dev/null || { log "openssl is needed for --peer-tls"; exit 1; }
    block=$(awk '/^## Securing the cluster/ {s = 1} s && /^```sh$/ {b = 1; next} b && /^```$/ {exit} b {print}' "$ROOT/docs/HA.md")
    (cd "$WORK" && bash -euo pipefail -c "$block
for n in 1 2 3; do node_cert \$n 127.0.0.1; done") > "$WORK/certs.log" 2>&1 || { log "making certificates failed: $(tail -n 3 "$WORK/certs.log")"; exit 1; }
    CERTS="$WORK/midge-cluster-ca"
fi

# ---------------------------------------------------------------- brokers
midge_common() { # node-name
    cat <<EOF
listener ${NODE_PORT[$1]} 127.0.0.1
persistence true
persistence_location $WORK/$1
connection_messages false
health_listener ${NODE_HPORT[$1]} 127.0.0.1
max_inflight_messages 20
max_queued_messages 100000
EOF
    local o
    for o in "${MIDGE_OPTS[@]:-}"; do [ -n "$o" ] && echo "$o"; done
}

write_conf() { # node-name -> config path
    local n=$1 f="$WORK/$1.conf" i
    case "$n" in
        mq)
            mkdir -p "$WORK/mq"
            if id mosquitto >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then chown mosquitto "$WORK/mq"; fi
            cat > "$f" <<EOF
listener ${NODE_PORT[mq]} 127.0.0.1
allow_anonymous true
persistence true
persistence_location $WORK/mq/
max_inflight_messages 20
max_queued_messages 100000
log_dest stderr
log_type error
log_type warning
log_type notice
connection_messages false
EOF
            ;;
        m1)
            mkdir -p "$WORK/m1"; midge_common m1 > "$f" ;;
        c[123])
            mkdir -p "$WORK/$n"
            { midge_common "$n"
              echo "cluster_node_id ${n#c}"
              for i in 1 2 3; do echo "cluster_peer $i 127.0.0.1:$((RAFT_PORT1 + i - 1))"; done
            } > "$f" ;;
        t[123])
            mkdir -p "$WORK/$n"
            { midge_common "$n"
              echo "cluster_node_id ${n#t}"
              for i in 1 2 3; do echo "cluster_peer $i 127.0.0.1:$((RAFT_PORT2 + i - 1))"; done
              echo "cluster_cafile $CERTS/ca.crt"
              echo "cluster_certfile $CERTS/node${n#t}.crt"
              echo "cluster_keyfile $CERTS/node${n#t}.key"
            } > "$f" ;;
    esac
    echo "$f"
}

start_node() { # node-name: start in the background, no waiting
    local n=$1 conf
    conf=$(write_conf "$n")
    if [ "$n" = mq ]; then
        mosquitto -c "$conf" > "$WORK/$n.log" 2>&1 &
    else
        "$MIDGE_BIN" -c "$conf" > "$WORK/$n.log" 2>&1 &
    fi
    NODE_PID[$n]=$!
    STARTED_PIDS+=("$!")
}

health() { # health-port -> JSON on stdout; return 0 only on HTTP 200
    local body code
    body=$(curl -s -m 2 -w '\n%{http_code}' "http://127.0.0.1:$1/health" 2>/dev/null) || { echo ""; return 1; }
    code=${body##*$'\n'}
    echo "${body%$'\n'*}"
    [ "$code" = 200 ]
}

jnum() { # key json -> number (first "key":N)
    grep -o "\"$1\":[0-9]*" <<< "$2" | head -n 1 | cut -d: -f2
}

node_alive() { [ -n "${NODE_PID[$1]:-}" ] && kill -0 "${NODE_PID[$1]}" 2>/dev/null; }

log_tail() { tail -n "${2:-4}" "$WORK/$1.log" 2>/dev/null | tr '\n' ' ' | cut -c1-600; }

# Wait until one of the given nodes serves (health 200 and MQTT listening);
# echo its name.
wait_serving() { # timeout-seconds node...
    local t=$1 i n; shift
    for i in $(seq 1 $((t * 10))); do
        for n in "$@"; do
            node_alive "$n" || continue
            if health "${NODE_HPORT[$n]}" > /dev/null && port_busy "${NODE_PORT[$n]}"; then echo "$n"; return 0; fi
        done
        sleep 0.1
    done
    return 1
}

start_setup() { # setup
    local s=$1 n ldr t0 t1
    t0=$(date +%s%N)
    case "$s" in
        mosquitto)
            start_node mq
            for _ in $(seq 1 100); do port_busy "${NODE_PORT[mq]}" && break; node_alive mq || break; sleep 0.05; done
            if ! port_busy "${NODE_PORT[mq]}"; then note "mosquitto failed to start: $(log_tail mq)"; return 1; fi
            PORT[mosquitto]=${NODE_PORT[mq]} ;;
        midge1)
            start_node m1
            if ! ldr=$(wait_serving 20 m1); then note "midge 1 node did not serve within 20 s: $(log_tail m1)"; return 1; fi
            PORT[midge1]=${NODE_PORT[m1]}; HPORT[midge1]=${NODE_HPORT[m1]}; LEADER[midge1]=m1 ;;
        midge3)
            for n in c1 c2 c3; do start_node "$n"; done
            if ! ldr=$(wait_serving 30 c1 c2 c3); then
                note "midge 3 nodes: no leader serving within 30 s: $(for n in c1 c2 c3; do echo "$n: $(log_tail $n 2)"; done)"; return 1
            fi
            PORT[midge3]=${NODE_PORT[$ldr]}; HPORT[midge3]=${NODE_HPORT[$ldr]}; LEADER[midge3]=$ldr ;;
        midge3tls)
            for n in t1 t2 t3; do start_node "$n"; done
            if ! ldr=$(wait_serving 30 t1 t2 t3); then
                note "midge 3 nodes with peer TLS: no leader serving within 30 s: $(for n in t1 t2 t3; do echo "$n: $(log_tail $n 2)"; done)"; return 1
            fi
            PORT[midge3tls]=${NODE_PORT[$ldr]}; HPORT[midge3tls]=${NODE_HPORT[$ldr]}; LEADER[midge3tls]=$ldr ;;
    esac
    t1=$(date +%s%N)
    log "$s serving on port ${PORT[$s]}$([ -n "${LEADER[$s]:-}" ] && echo " (leader ${LEADER[$s]})") after $(( (t1 - t0) / 1000000 )) ms"
    sleep 0.3
}

setup_nodes() { case "$1" in mosquitto) echo mq ;; midge1) echo m1 ;; midge3) echo c1 c2 c3 ;; midge3tls) echo t1 t2 t3 ;; esac; }

setup_alive() { local n; for n in $(setup_nodes "$1"); do node_alive "$n" || return 1; done; return 0; }

# Before each test: is the setup still up, and (midge3) who leads now?
check_setup() { # setup test -> 0 if usable
    local s=$1 t=$2 n ldr
    for n in $(setup_nodes "$s"); do
        if [ -n "${NODE_PID[$n]:-}" ] && ! node_alive "$n"; then
            note "$s: node $n DIED before '$t' (log: $(log_tail "$n" 5))"
            NODE_PID[$n]=""
        fi
    done
    [ -n "${PORT[$s]:-}" ] || return 1
    if [ "$s" = midge3 ] || [ "$s" = midge3tls ]; then
        # shellcheck disable=SC2046
        ldr=$(wait_serving 10 $(setup_nodes "$s")) || { note "$s: no serving leader before '$t'"; return 1; }
        if [ "$ldr" != "${LEADER[$s]}" ]; then
            note "$s: leader changed from ${LEADER[$s]} to $ldr before '$t'"
            LEADER[$s]=$ldr; PORT[$s]=${NODE_PORT[$ldr]}; HPORT[$s]=${NODE_HPORT[$ldr]}
        fi
    elif [ "$s" = midge1 ]; then
        wait_serving 10 m1 > /dev/null || { note "midge1: not serving before '$t'"; return 1; }
    else
        node_alive mq || return 1
    fi
    return 0
}

# ------------------------------------------------------------- one test
LINE=""
run_lg() { # setup test-name loadgen-args... ; sets LINE to the RESULT line
    local s=$1 t=$2; shift 2
    local out="$WORK/lg.out" err="$WORK/lg.err" rc line
    LINE=""
    timeout -k 5 "$KILL_AFTER" "$LOADGEN" "$@" --port "${PORT[$s]}" > "$out" 2> "$err"
    rc=$?
    line=$(grep '^RESULT ' "$out" | tail -n 1)
    echo "$s $t rc=$rc $line" >> "$RAW"
    if [ "$rc" != 0 ]; then
        note "${LABEL[$s]} '$t': loadgen exit $rc: $(grep -v '^$' "$err" | head -n 3 | tr '\n' ' ') | repro: $LOADGEN $* --port <port>"
    fi
    LINE=$line
}



max_of() { [ -s "$1" ] && grep -E '^-?[0-9.]+$' "$1" | sort -g | tail -n 1 || echo ""; }
sum_of() { [ -s "$1" ] && awk '{s += $1} END {print s}' "$1" || echo ""; }

tp_test() { # metric pubs subs setup
    local m=$1 np=$2 ns=$3 s=$4 line st h0="" h1="" dc dp dpe dps n
    log "${LABEL[$s]}: QoS 1 throughput $np->$ns"
    check_setup "$s" "$m" || { record "$m" "$s" nan; return; }
    declare -A fh0=()
    if [ "$s" != mosquitto ]; then h0=$(health "${HPORT[$s]}"); fi
    if [ "$s" = midge3 ] || [ "$s" = midge3tls ]; then
        for n in $(setup_nodes "$s"); do [ "$n" = "${LEADER[$s]}" ] || fh0[$n]=$(health "${NODE_HPORT[$n]}"); done
    fi
    local pids=() c0 c1
    for n in $(setup_nodes "$s"); do [ -n "${NODE_PID[$n]:-}" ] && pids+=("${NODE_PID[$n]}"); done
    c0=$(cpu_ticks "${pids[@]}")
    run_lg "$s" "$m" throughput --qos 1 --publishers "$np" --subscribers "$ns" --payload $PAYLOAD \
        --duration-secs "$DUR" --max-lead $((LEAD / np)) --window $WINDOW --timeout-secs $LG_TIMEOUT
    line=$LINE
    c1=$(cpu_ticks "${pids[@]}")
    record_cpu "$m" "$s" "$c0" "$c1" "$line"   # every node of the setup
    if [ "$s" != mosquitto ]; then
        h1=$(health "${HPORT[$s]}")
        echo "$s $m health-before $h0" >> "$RAW"
        echo "$s $m health-after  $h1" >> "$RAW"
        if [ -n "$h0" ] && [ -n "$h1" ] && [ "$(jnum term "$h0")" = "$(jnum term "$h1")" ]; then
            dc=$(( $(jnum commands "$h1") - $(jnum commands "$h0") ))
            dp=$(( $(jnum proposals "$h1") - $(jnum proposals "$h0") ))
            dpe=$(( $(jnum persisted_entries "$h1") - $(jnum persisted_entries "$h0") ))
            dps=$(( $(jnum persists "$h1") - $(jnum persists "$h0") ))
            [ "$dp" -gt 0 ] && record "cpp.$m" "$s" "$(awk -v a=$dc -v b=$dp 'BEGIN {printf "%.2f", a / b}')"
            [ "$dps" -gt 0 ] && record "epp.$m" "$s" "$(awk -v a=$dpe -v b=$dps 'BEGIN {printf "%.2f", a / b}')"
            [ "$dps" -gt 0 ] && record "fsyncs.$m" "$s" "$(awk -v a=$dps -v d="$(kv elapsed_s "$line")" 'BEGIN {if (d > 0) printf "%.0f", a / d}')"
            echo "$s $m batching commands=$dc proposals=$dp persisted_entries=$dpe persists=$dps" >> "$RAW"
        else
            note "${LABEL[$s]} '$m': no batching figures (health JSON missing or term changed: term $(jnum term "$h0") -> $(jnum term "$h1"))"
        fi
        if [ "$s" = midge3 ] || [ "$s" = midge3tls ]; then
            local f0 f1 fe=0 fp=0
            for n in "${!fh0[@]}"; do
                f0=${fh0[$n]}; f1=$(health "${NODE_HPORT[$n]}")
                echo "$s $m follower ${n#c} $f1" >> "$RAW"
                [ -n "$f0" ] && [ -n "$f1" ] || continue
                fe=$((fe + $(jnum persisted_entries "$f1") - $(jnum persisted_entries "$f0")))
                fp=$((fp + $(jnum persists "$f1") - $(jnum persists "$f0")))
            done
            [ "$fp" -gt 0 ] && record "fepp.$m" "$s" "$(awk -v a=$fe -v b=$fp 'BEGIN {printf "%.2f", a / b}')"
        fi
    fi
    if [ -z "$line" ]; then record "$m" "$s" nan; return; fi
    st=$(kv status "$line")
    case "$st" in ok|loss) record "$m" "$s" "$(kv deliver_rate "$line")" ;; *) record "$m" "$s" nan ;; esac
    record "lost.$m" "$s" "$(kv lost "$line")"
    record "gap.$m" "$s" "$(kv max_gap_ms "$line")"
    record "gaps5.$m" "$s" "$(kv gaps_over_5ms "$line")"
    if [ "$st" != ok ]; then
        note "${LABEL[$s]} '$m': status=$st, lost $(kv lost "$line") of $(kv expected "$line") deliveries (delivered $(kv delivered "$line"), dups $(kv dups "$line"), published $(kv published "$line"), acked $(kv acked "$line")); loadgen: $(grep -v '^$' "$WORK/lg.err" | head -n 2 | tr '\n' ' ')"
    fi
}


# The disk's floor for a setup: one writer per node that fsyncs per
# entry, all at once (the leader and its followers write each entry
# together, on this machine's one disk).
floor_test() { # setup
    local s=$1 w=1 line
    case "$s" in mosquitto) return ;; midge3*) w=3 ;; esac
    log "${LABEL[$s]}: disk floor (loadgen fsync, $w writer(s))"
    line=$(timeout -k 5 "$KILL_AFTER" "$LOADGEN" fsync --dir "$WORK" --writers "$w" --count 2000 --bytes 1600 2> "$WORK/lg.err" | grep '^RESULT ')
    echo "$s floor $line" >> "$RAW"
    if [ -z "$line" ]; then note "${LABEL[$s]}: loadgen fsync failed: $(head -n 2 "$WORK/lg.err" | tr '\n' ' ')"; return; fi
    record floor "$s" "$(kv p50_us "$line")"
    record ceil "$s" "$(awk -v w=$WINDOW -v p="$(kv p50_us "$line")" 'BEGIN {if (p > 0) printf "%.0f", w * 1e6 / p}')"
}

lat_test() { # setup
    local s=$1 line
    log "${LABEL[$s]}: QoS 1 ping-pong latency ($LAT_COUNT messages)"
    check_setup "$s" lat || return
    run_lg "$s" lat latency --qos 1 --count "$LAT_COUNT" --payload $PAYLOAD --timeout-secs $LG_TIMEOUT
    line=$LINE
    [ -n "$line" ] || return
    if [ "$(kv status "$line")" != ok ]; then note "${LABEL[$s]} latency: status=$(kv status "$line")"; return; fi
    record p50 "$s" "$(kv p50_us "$line")"
    record p99 "$s" "$(kv p99_us "$line")"
    record pmax "$s" "$(kv max_us "$line")"
}

# ---------------------------------------------------------------- run
T0=$(date +%s)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
LOADS=""
log "work dir $WORK; ports from $B; midge binary $MIDGE_BIN_ORIG"
for s in "${SETUPS[@]}"; do start_setup "$s" || true; done

for r in $(seq 1 "$REPS"); do
    log "--- repetition $r of $REPS"
    # Rotate which setup goes first, so none always runs right after another's load.
    ORDER=()
    for i in 0 1 2; do ORDER+=("${SETUPS[$(( (i + r - 1) % 3 ))]}"); done
    for s in "${ORDER[@]}"; do tp_test q1_11 1 1 "$s"; done
    for s in "${ORDER[@]}"; do tp_test q1_44 4 4 "$s"; done
    for s in "${ORDER[@]}"; do lat_test "$s"; done
    for s in "${ORDER[@]}"; do floor_test "$s"; done
    LOADS="$LOADS $(cut -d' ' -f1 /proc/loadavg)"
done

# Final state, then stop everything we started.
for n in m1 c1 c2 c3 t1 t2 t3; do
    [ -n "${NODE_PID[$n]:-}" ] || continue
    echo "final $n $(health "${NODE_HPORT[$n]}")" >> "$RAW"
done
# Scan the logs now: shutting nodes down one by one makes the others log
# lost connections and start elections.
for n in m1 c1 c2 c3 t1 t2 t3; do
    [ -f "$WORK/$n.log" ] || continue
    w=$(grep -E ' (WARN|ERROR) ' "$WORK/$n.log" 2>/dev/null | grep -v -e 'Cannot reach peer' -e 'without TLS' | wc -l)
    [ "$w" -gt 0 ] && note "midge node $n logged $w WARN/ERROR lines during the run, e.g. $(grep -E ' (WARN|ERROR) ' "$WORK/$n.log" | grep -v -e 'Cannot reach peer' -e 'without TLS' | head -n 2 | tr '\n' ' ' | cut -c1-400)"
done
e=$(cat "$WORK"/c[123].log 2>/dev/null | grep -c 'became leader')
[ "${e:-0}" -gt 1 ] && note "midge 3 nodes: $e 'became leader' log lines during the run (leader changes after the first election)"
for n in mq m1 c1 c2 c3 t1 t2 t3; do
    [ -n "${NODE_PID[$n]:-}" ] || continue
    if ! node_alive "$n"; then note "node $n had exited by the end of the run (log: $(log_tail "$n" 5))"; fi
    stop_pid "${NODE_PID[$n]}" || note "node $n ignored SIGTERM for 5 s; sent SIGKILL"
done
# Mosquitto writes its db at exit: proof persistence was really on.
if [ -s "$WORK/mq/mosquitto.db" ]; then
    MQ_DB="mosquitto.db written at exit ($(stat -c %s "$WORK/mq/mosquitto.db") bytes)"
else
    MQ_DB="no mosquitto.db written"
    note "mosquitto wrote no mosquitto.db (persistence not effective?): $(log_tail mq 3)"
fi
grep -q "dropped" "$WORK/mq.log" 2>/dev/null && note "mosquitto log: $(grep -c dropped "$WORK/mq.log") 'messages being dropped' lines"
T1=$(date +%s)

# ---------------------------------------------------------------- table

ratio() { # a z -> a/z
    case "$1$2" in *FAIL*|*nan*) echo "—"; return ;; esac
    [ -n "$1" ] && [ -n "$2" ] || { echo "—"; return; }
    awk -v a="$1" -v z="$2" 'BEGIN { if (z + 0 == 0) print "—"; else printf "%.2f", a / z }'
}

get() { # metric setup how(median|max|sum)
    case "$3" in
        max) max_of "$WORK/vals.$1.$2" ;;
        sum) sum_of "$WORK/vals.$1.$2" ;;
        *) median "$WORK/vals.$1.$2" ;;
    esac
}

row() { # label metric how [noratio]
    local a b z
    a=$(get "$2" "${SETUPS[0]}" "$3"); b=$(get "$2" "${SETUPS[1]}" "$3"); z=$(get "$2" mosquitto "$3")
    if [ "${4:-}" = noratio ]; then
        printf '| %s | %s | %s | %s | | |\n' "$1" "$(fmt "$a")" "$(fmt "$b")" "$(fmt "$z")"
    else
        printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$(fmt "$a")" "$(fmt "$b")" "$(fmt "$z")" "$(ratio "$a" "$z")" "$(ratio "$b" "$z")"
    fi
}

for s in "${SETUPS[@]}"; do
    cat "$WORK"/vals.lost.q1_*."$s" > "$WORK/vals.lostall.$s" 2>/dev/null
done
H11=$(ratio "$(get q1_11 midge3 median)" "$(get q1_11 mosquitto median)")
H44=$(ratio "$(get q1_44 midge3 median)" "$(get q1_44 mosquitto median)")
T11=$(ratio "$(get q1_11 midge3tls median)" "$(get q1_11 midge3 median)")
T44=$(ratio "$(get q1_44 midge3tls median)" "$(get q1_44 midge3 median)")
verdict() { awk -v r="$1" 'BEGIN { if (r == "—") print "n/a"; else if (r + 0 >= 0.8) print "meets the aim"; else print "below the aim" }'; }

{
    if [ "$PEER_TLS" = 1 ]; then
        echo "# Replicated QoS 1: midge 3 nodes, plain and with peer TLS, vs Mosquitto (persistence true)"
    else
        echo "# Replicated QoS 1: midge (1 node, 3 nodes) vs Mosquitto (persistence true)"
    fi
    echo
    echo "**Headline, midge 3 nodes / mosquitto (aim ≥ 0.8, issue 21):** QoS 1 throughput 1→1 **$H11** ($(verdict "$H11")), 4→4 **$H44** ($(verdict "$H44"))."
    if [ "$PEER_TLS" = 1 ]; then
        echo
        echo "**Peer TLS / plain peer link (3 nodes each):** QoS 1 throughput 1→1 **$T11**, 4→4 **$T44**."
    fi
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); mode: $([ "$QUICK" = 1 ] && echo quick || echo full); repetitions: $REPS (medians); runtime $((T1 - T0)) s"
    echo "- machine: $(nproc) cores, shared; load average at start $LOAD0, after each repetition:$LOADS (absolute numbers are noisy: compare ratios)"
    echo "- mosquitto $(mosquitto -h 2>/dev/null | head -n 1 | sed 's/mosquitto version //'): persistence true ($MQ_DB; it saves on autosave_interval/exit, PUBACK does not wait for disk)"
    echo "- midge $(cd "$ROOT" && echo "$(git rev-parse --short HEAD 2>/dev/null || echo 'no commit')$(git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ' +uncommitted src changes')"), binary built $(date -u -r "$MIDGE_BIN_ORIG" '+%H:%M UTC'): persistence true (raft log in redb, fsync per write batch; PUBACK after commit); 3 nodes = 3 processes on this machine and disk ($(df -T "$WORK" | awk 'NR==2 {print $2}')), client connected to the leader$([ ${#MIDGE_OPTS[@]} -gt 0 ] && echo "; extra options: ${MIDGE_OPTS[*]}")"
    echo "- both: max_inflight_messages 20, max_queued_messages 100000; payload $PAYLOAD B; loopback only"
    echo "- throughput = unique deliveries / (first publish → last delivery); publishers run ${DUR} s, windowed QoS 1 ($WINDOW PUBACKs outstanding), each at most $LEAD/publishers messages ahead of the slowest subscriber. Latency: QoS 1 ping-pong (publish → subscriber receives), $LAT_COUNT messages"
    echo "- batching (midge leader, counter deltas over each throughput run): commands/proposal = broker commands per raft entry; entries/persist = raft entries per redb write+fsync"
    echo "- CPU per delivery: user + system time over each throughput run (/proc/PID/stat, $CLK_TCK ticks a second) of every process of the setup (three nodes: all three), and loadgen's own (its getrusage), each over the run's unique deliveries"
    echo "- disk floor: \`loadgen fsync --writers 1|3 --bytes 1600\` in the run's directory once per repetition (each writer overwrites its own zero-filled file, one fdatasync per write; 1,600 B is about one entry of 20 QoS 1 commands). With the window in one entry a node answers at most $WINDOW messages per fdatasync, so $WINDOW / floor bounds 1→1 whatever the broker does; the ceiling's ratio column compares that bound with Mosquitto's measured 1→1"
    echo
    echo "| metric | ${LABEL[${SETUPS[0]}]} | ${LABEL[${SETUPS[1]}]} | mosquitto | ${LABEL[${SETUPS[0]}]} / mosquitto | ${LABEL[${SETUPS[1]}]} / mosquitto |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    row "QoS 1 throughput 1→1 (msg/s, higher is better)" q1_11 median
    row "QoS 1 throughput 4→4 (deliveries/s, higher is better)" q1_44 median
    row "CPU per delivery 1→1, broker (all its nodes; µs, lower is better)" bcpu.q1_11 median
    row "CPU per delivery 1→1, loadgen (µs)" ccpu.q1_11 median
    row "CPU per delivery 4→4, broker (all its nodes; µs, lower is better)" bcpu.q1_44 median
    row "CPU per delivery 4→4, loadgen (µs)" ccpu.q1_44 median
    row "QoS 1 ping-pong latency p50 (µs, lower is better)" p50 median
    row "QoS 1 ping-pong latency p99 (µs, lower is better)" p99 median
    row "QoS 1 ping-pong latency max, worst run (µs)" pmax max noratio
    row "batching 1→1: commands per raft entry" cpp.q1_11 median noratio
    row "batching 1→1: raft entries per persist" epp.q1_11 median noratio
    row "batching 1→1: persists per second, leader" fsyncs.q1_11 median noratio
    row "batching 4→4: commands per raft entry" cpp.q1_44 median noratio
    row "batching 4→4: raft entries per persist" epp.q1_44 median noratio
    row "batching 4→4: persists per second, leader" fsyncs.q1_44 median noratio
    row "followers 1→1: raft entries per persist" fepp.q1_11 median noratio
    row "followers 4→4: raft entries per persist" fepp.q1_44 median noratio
    row "longest delivery gap 1→1, worst run (ms)" gap.q1_11 max noratio
    row "longest delivery gap 4→4, worst run (ms)" gap.q1_44 max noratio
    row "QoS 1 deliveries lost, all runs (must be 0)" lostall sum noratio
    row "disk floor: fdatasync p50 of a 1,600 B overwrite, one writer per node at once (µs)" floor median noratio
    # The ceiling's ratio is to Mosquitto's measured 1->1; the last row
    # says how much of its own ceiling midge reached.
    a=$(get ceil "${SETUPS[0]}" median); b=$(get ceil "${SETUPS[1]}" median); z=$(get q1_11 mosquitto median)
    printf '| %s | %s | %s | | %s | %s |\n' "1→1 ceiling if broker and hops took no time: $WINDOW / floor (msg/s)" \
        "$(fmt "$a")" "$(fmt "$b")" "$(ratio "$a" "$z")" "$(ratio "$b" "$z")"
    printf '| %s | %s | %s | | | |\n' "1→1 throughput / that ceiling" \
        "$(ratio "$(get q1_11 "${SETUPS[0]}" median)" "$a")" "$(ratio "$(get q1_11 "${SETUPS[1]}" median)" "$b")"
    echo
    echo "Per-run values:"
    echo
    per_run_values SETUPS LABEL q1_11 q1_44 bcpu.q1_11 ccpu.q1_11 bcpu.q1_44 ccpu.q1_44 p50 p99 floor cpp.q1_11 epp.q1_11 cpp.q1_44 epp.q1_44 fepp.q1_11 fepp.q1_44 gap.q1_11 gap.q1_44
    notes_section
} > "$WORK/table.md"

publish_results "$OUT"
log "wrote $OUT and ${OUT%.md}-raw.txt"
