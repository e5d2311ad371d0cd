#!/usr/bin/env bash
# Dynamic security, midge and Mosquitto 2.0.11 with its plugin in one run;
# reports ratios, asserts nothing.
#
#   scripts/bench-dynsec.sh [--count 5000] [--concurrency 4] [--reps 5]
#                           [--instr-count 1000] [--roles 1000]
#                           [--skip-logins] [--skip-acl] [--no-build]
#                           [--midge-bin PATH] [--out FILE] [--keep]
#
# Both brokers get the same dynamic-security file: `mosquitto_ctrl dynsec
# init` (admin/adminpass) plus what scripts/dynsec_bench_json.py adds, hashes
# derived with Python's PBKDF2-SHA512 after it checked that it derives the
# admin hash mosquitto_ctrl wrote: users bench (101 iterations, 1 role),
# bench1k (1,000 iterations), u0..u<count-1> (101 iterations each) and many
# (--roles roles: r1..r<roles-1>, each with a publishClientSend ACL on its
# own r<i>/#, priority i, and lg, priority 0 and so checked last, the one
# whose publishClientSend loadgen/# allows loadgen's topics).
#
# (a) Logins: `loadgen connect` does --count logins, --concurrency at a
#     time, each CONNECT (MQTT 3.1.1), CONNACK, DISCONNECT, then waits for
#     the broker to close: anonymously (allow_anonymous true, no password
#     check), as bench, as u0..u<count-1> (distinct users) and as bench1k.
#     Per login: connects/s, the broker's CPU (utime+stime of /proc/PID/stat
#     before and after, so also threads that ended) and loadgen's own
#     (getrusage); 5,000 logins make the 10 ms ticks of /proc/PID/stat
#     2 µs per login. One broker start per repetition runs every login
#     kind; the brokers alternate, and which goes first; medians of --reps.
# (b) ACL checks: each broker under valgrind's callgrind, as
#     scripts/bench-instructions.sh does it: `loadgen latency --qos 1` does
#     --instr-count QoS 1 round trips, a second start does 1 round trip and
#     then waits as long as the first took; (difference) / (count - 1) is
#     the broker's instructions per round trip. Publisher and subscriber log
#     in as bench (1 role), the publisher as many (1,000 roles, the matching
#     ACL in the last), or both as many (every delivery's
#     publishClientReceive check then walks the 1,000 roles too before
#     defaultACLAccess allows it).
#
# Writes benches/results/dynsec.md (raw lines in dynsec-raw.txt beside it);
# --keep keeps the work directory (configs, broker logs, callgrind files).
# Needs mosquitto, mosquitto_ctrl (mosquitto-clients), the plugin at
# /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so, valgrind and
# python3. Mosquitto runs with `user root` (it keeps reading the file and
# can write callgrind's). Only loopback traffic, ports the kernel picks;
# every process this script starts is stopped by PID; every wait is
# bounded. About 2-3 min.
set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# free_port, port_busy, stop_pid, kv, record, median, fmt, per_run_values,
# note, publish_results, STARTED_PIDS and bench_cleanup.
. "$ROOT/scripts/lib-bench.sh"
COUNT=5000
CONC=4
REPS=5
ICOUNT=1000
ROLES=1000
LOGINS=1
ACL=1
BUILD=1
MIDGE_BIN=""
KEEP=0
OUT="$ROOT/benches/results/dynsec.md"
PLUGIN=/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so
CMDLINE="scripts/bench-dynsec.sh${*:+ $*}"

usage() { sed -n '2,45p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --count) COUNT="$2"; shift ;;
        --concurrency) CONC="$2"; shift ;;
        --reps) REPS="$2"; shift ;;
        --instr-count) ICOUNT="$2"; shift ;;
        --roles) ROLES="$2"; shift ;;
        --skip-logins) LOGINS=0 ;;
        --skip-acl) ACL=0 ;;
        --no-build) BUILD=0 ;;
        --midge-bin) MIDGE_BIN="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --keep) KEEP=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-dynsec.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
for v in COUNT CONC REPS ICOUNT ROLES; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench-dynsec.sh: every count must be a positive number" >&2; exit 2; }
done
[ "$COUNT" -le 20000 ] && [ "$CONC" -le 64 ] && [ "$REPS" -le 20 ] && [ "$ICOUNT" -ge 2 ] &&
    [ "$ICOUNT" -le 20000 ] && [ "$ROLES" -ge 2 ] && [ "$ROLES" -le 10000 ] ||
    { echo "bench-dynsec.sh: bounds: --count <= 20000, --concurrency <= 64, --reps <= 20, --instr-count 2..20000, --roles 2..10000" >&2; exit 2; }
for tool in mosquitto mosquitto_ctrl python3 valgrind callgrind_annotate; do
    command -v "$tool" > /dev/null || { echo "bench-dynsec.sh: $tool is needed" >&2; exit 1; }
done
[ -r "$PLUGIN" ] || { echo "bench-dynsec.sh: Mosquitto's plugin $PLUGIN is missing (Debian package mosquitto)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/midge-dynsec-bench.XXXXXX)
chmod 755 "$WORK"
RAW="$WORK/raw.txt"; NOTES="$WORK/notes.txt"
: > "$RAW"; : > "$NOTES"
on_exit() {
    bench_cleanup
    if [ "$KEEP" = 1 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap on_exit EXIT
trap 'log "interrupted"; exit 130' INT TERM
T0=$SECONDS
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- build
LOADGEN="$ROOT/benches/loadgen/target/release/loadgen"
if [ "$BUILD" = 1 ]; then
    log "building loadgen and midge (release)"
    cargo build --release --quiet --manifest-path "$ROOT/benches/loadgen/Cargo.toml" || die "loadgen does not build"
    [ -n "$MIDGE_BIN" ] || (cd "$ROOT" && cargo build --release --quiet) || die "midge does not build"
fi
MIDGE_FROM="--midge-bin"
if [ -z "$MIDGE_BIN" ]; then
    MIDGE_FROM="built here from $(cd "$ROOT" && echo "$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' +uncommitted src changes')")"
    TDIR=$(cd "$ROOT" && cargo metadata --no-deps --format-version 1 2>/dev/null |
        grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
    MIDGE_BIN="${TDIR:-$ROOT/target}/release/midge"
fi
[ -x "$MIDGE_BIN" ] || die "no midge binary at $MIDGE_BIN"
[ -x "$LOADGEN" ] || die "no loadgen at $LOADGEN (run without --no-build)"
MOSQ=$(command -v mosquitto)

# ---------------------------------------------------------------- the file
log "writing the dynamic-security file ($COUNT users, $ROLES roles)"
mosquitto_ctrl dynsec init "$WORK/init.json" admin adminpass > /dev/null || die "mosquitto_ctrl dynsec init failed"
python3 "$ROOT/scripts/dynsec_bench_json.py" "$WORK/init.json" adminpass "$WORK/dynsec.json" \
    --users "$COUNT" --roles "$ROLES" || die "could not write the dynamic-security file"
PASS=benchpass

# start_broker BROKER NAME [valgrind args...]: a fresh copy of the file and a
# config on a free port; sets BPID and BPORT. 0 once it listens (30 s).
start_broker() {
    local b=$1 name=$2 conf="$WORK/$2.conf"
    shift 2
    BPORT=$(free_port) || die "no free port"
    cp "$WORK/dynsec.json" "$WORK/$name.json"
    {
        printf 'listener %s 127.0.0.1\npersistence false\nallow_anonymous true\nconnection_messages false\n' "$BPORT"
        printf 'plugin %s\nplugin_opt_config_file %s\n' "$PLUGIN" "$WORK/$name.json"
        [ "$b" = mosquitto ] && echo "user root"
    } > "$conf"
    if [ "$b" = mosquitto ]; then
        "$@" "$MOSQ" -c "$conf" > "$WORK/$name.log" 2>&1 &
    else
        "$@" "$MIDGE_BIN" -c "$conf" > "$WORK/$name.log" 2>&1 &
    fi
    BPID=$!
    STARTED_PIDS+=("$BPID")
    for _ in $(seq 1 300); do
        kill -0 "$BPID" 2> /dev/null || break
        port_busy "$BPORT" && return 0
        sleep 0.1
    done
    log "$b did not start listening on $BPORT (log: $WORK/$name.log)"
    tail -n 5 "$WORK/$name.log" >&2
    return 1
}

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" 2> /dev/null | awk '{ print $12 + $13 }'; }

# ---------------------------------------------------------------- (a) logins
KINDS=(anon bench users bench1k)
declare -A KIND_LABEL=(
    [anon]="anonymous (no password check)"
    [bench]="1 user, 101 iterations"
    [users]="$COUNT distinct users, 101 iterations"
    [bench1k]="1 user, 1,000 iterations"
)
declare -A KIND_ARGS=(
    [anon]=""
    [bench]="--username bench --password $PASS"
    [users]="--username u --users $COUNT --password $PASS"
    [bench1k]="--username bench1k --password $PASS"
)

# login_runs BROKER REP: one start, every login kind.
login_runs() {
    local b=$1 rep=$2 k line t0 t1 n
    start_broker "$b" "$b-logins-$rep" || { note "$b did not start (logins, repetition $rep)"; return; }
    # warm-up (and midge's import of the file has applied after it)
    "$LOADGEN" connect --port "$BPORT" --count 200 --concurrency "$CONC" --username bench --password "$PASS" \
        --timeout-secs 60 > /dev/null 2>&1
    for k in "${KINDS[@]}"; do
        t0=$(cpu_ticks "$BPID")
        # shellcheck disable=SC2086 # KIND_ARGS holds words
        line=$("$LOADGEN" connect --port "$BPORT" --count "$COUNT" --concurrency "$CONC" ${KIND_ARGS[$k]} \
            --timeout-secs 120 2> "$WORK/lg.err" | grep '^RESULT ')
        t1=$(cpu_ticks "$BPID")
        echo "logins $b rep=$rep kind=$k broker_ticks=$((t1 - t0)) clk_tck=$CLK_TCK $line" >> "$RAW"
        if [ "$(kv status "$line")" != ok ]; then
            note "$b, ${KIND_LABEL[$k]}, repetition $rep: ${line:-no RESULT} $(head -c 300 "$WORK/lg.err")"
            continue
        fi
        n=$(kv connected "$line")
        record rate "$b.$k" "$(kv rate "$line")"
        record ccpu "$b.$k" "$(kv cpu_us_per_connect "$line")"
        record cuser "$b.$k" "$(kv cpu_user_us_per_connect "$line")"
        record bcpu "$b.$k" "$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$n" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')"
    done
    stop_pid "$BPID" || note "$b needed SIGKILL (logins, repetition $rep)"
}

if [ "$LOGINS" = 1 ]; then
    for rep in $(seq 1 "$REPS"); do
        if [ $((rep % 2)) = 1 ]; then order=(midge mosquitto); else order=(mosquitto midge); fi
        for b in "${order[@]}"; do
            log "logins: repetition $rep/$REPS, $b"
            login_runs "$b" "$rep"
        done
    done
fi

# ---------------------------------------------------------------- (b) ACLs
ACLS=(one manypub manyboth)
declare -A ACL_LABEL=(
    [one]="publisher 1 role, subscriber 1 role"
    [manypub]="publisher $ROLES roles, subscriber 1 role"
    [manyboth]="publisher $ROLES roles, subscriber $ROLES roles"
)
declare -A ACL_ARGS=(
    [one]="--username bench --password $PASS"
    [manypub]="--username many --password $PASS --sub-username bench --sub-password $PASS"
    [manyboth]="--username many --password $PASS"
)

# instr_total BROKER ACL N [SECS]: sets TOTAL to callgrind's instruction
# total for a start with N round trips lasting at least SECS seconds (empty
# if there is none) and ELAPSED to the seconds it lasted.
instr_total() {
    local b=$1 v=$2 n=$3 secs=${4:-0} name="$1-$2-$3" start line rest
    TOTAL=""
    start=$(date +%s.%N)
    ELAPSED=0
    start_broker "$b" "$name" valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.out" || return 1
    # shellcheck disable=SC2086 # ACL_ARGS holds words
    line=$("$LOADGEN" latency --port "$BPORT" --qos 1 --count "$n" --warmup 0 ${ACL_ARGS[$v]} \
        --timeout-secs 300 2> "$WORK/lg.err" | grep '^RESULT ')
    echo "acl $b $v n=$n $line" >> "$RAW"
    [ "$(kv status "$line")" = ok ] || note "$b, ${ACL_LABEL[$v]}, $n round trips: ${line:-no RESULT} $(head -c 300 "$WORK/lg.err")"
    rest=$(awk -v s="$secs" -v a="$start" -v n="$(date +%s.%N)" 'BEGIN { r = s - (n - a); print (r > 0 ? r : 0) }')
    sleep "$rest"
    ELAPSED=$(awk -v a="$start" -v n="$(date +%s.%N)" 'BEGIN { print n - a }')
    # SIGTERM; valgrind writes its file as the broker exits (60 s at most)
    kill "$BPID" 2> /dev/null
    for _ in $(seq 1 600); do kill -0 "$BPID" 2> /dev/null || break; sleep 0.1; done
    stop_pid "$BPID" || note "$b under valgrind needed SIGKILL ($name)"
    TOTAL=$(callgrind_annotate "$WORK/$name.out" 2> /dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
}

if [ "$ACL" = 1 ]; then
    for b in midge mosquitto; do
        for v in "${ACLS[@]}"; do
            log "ACL checks under callgrind: $b, ${ACL_LABEL[$v]}"
            instr_total "$b" "$v" "$ICOUNT"
            big=$TOTAL
            instr_total "$b" "$v" 1 "$ELAPSED"
            small=$TOTAL
            echo "acl $b $v instructions n=$ICOUNT: $big n=1: $small" >> "$RAW"
            if [[ $big =~ ^[0-9]+$ && $small =~ ^[0-9]+$ ]]; then
                record instr "$b.$v" $(((big - small) / (ICOUNT - 1)))
            else
                note "$b, ${ACL_LABEL[$v]}: no callgrind total (files in $WORK)"
            fi
        done
    done
fi
T1=$SECONDS

# ---------------------------------------------------------------- report
ratio() { awk -v a="$1" -v z="$2" 'BEGIN { if (a == "" || z == "" || z == 0) print "—"; else printf "%.2f\n", a / z }'; }
diff_of() { awk -v a="$1" -v z="$2" 'BEGIN { if (a == "" || z == "") print ""; else printf "%.1f\n", a - z }'; }
declare -A MED
SETUPS=()
for b in midge mosquitto; do
    for k in "${KINDS[@]}"; do SETUPS+=("$b.$k"); done
    for v in "${ACLS[@]}"; do SETUPS+=("$b.$v"); done
done
for s in "${SETUPS[@]}"; do
    for m in rate bcpu ccpu cuser instr; do MED[$m.$s]=$(median "$WORK/vals.$m.$s"); done
done
{
    echo "# Dynamic security: midge vs Mosquitto 2.0.11 with its plugin"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); runtime $((T1 - T0)) s; $(nproc) cores, load average at start $LOAD0, at the end $(cut -d' ' -f1-3 /proc/loadavg) (shared machine: compare the ratios)"
    echo "- midge: $MIDGE_BIN ($MIDGE_FROM); mosquitto: $(mosquitto -h 2> /dev/null | head -n 1 | sed 's/mosquitto version //') with $PLUGIN"
    echo "- both brokers: \`listener PORT 127.0.0.1\`, \`persistence false\`, \`allow_anonymous true\`, \`connection_messages false\`, \`plugin ...mosquitto_dynamic_security.so\`, \`plugin_opt_config_file\` a fresh copy of the same file per start (Mosquitto also \`user root\`)"
    echo "- file: \`mosquitto_ctrl dynsec init\` plus scripts/dynsec_bench_json.py: $COUNT users u0.., bench (101 iterations), bench1k (1,000), many ($ROLES roles, the matching ACL in the lowest-priority one)"
    echo "- command: \`$CMDLINE\`"
    if [ "$LOGINS" = 1 ]; then
        echo
        echo "## Logins"
        echo
        echo "\`loadgen connect --count $COUNT --concurrency $CONC\`: CONNECT (MQTT 3.1.1), CONNACK, DISCONNECT, broker closes; medians of $REPS starts per broker. Broker CPU: utime+stime from /proc/PID/stat (${CLK_TCK} Hz ticks) around the run; loadgen CPU: its getrusage, in brackets the user-space part (the rest is kernel time: loopback TCP, whose receiving side Linux runs in the sender's context, so the handshake and the DISCONNECT's delivery are charged to loadgen)."
        echo
        echo "| login | connects/s midge | connects/s Mosquitto | ratio | broker CPU µs/login midge | broker CPU µs/login Mosquitto | ratio | loadgen CPU µs/login, midge run / Mosquitto run |"
        echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        for k in "${KINDS[@]}"; do
            echo "| ${KIND_LABEL[$k]} | $(fmt "${MED[rate.midge.$k]}") | $(fmt "${MED[rate.mosquitto.$k]}") | $(ratio "${MED[rate.midge.$k]}" "${MED[rate.mosquitto.$k]}") | $(fmt "${MED[bcpu.midge.$k]}") | $(fmt "${MED[bcpu.mosquitto.$k]}") | $(ratio "${MED[bcpu.midge.$k]}" "${MED[bcpu.mosquitto.$k]}") | $(fmt "${MED[ccpu.midge.$k]}") ($(fmt "${MED[cuser.midge.$k]}")) / $(fmt "${MED[ccpu.mosquitto.$k]}") ($(fmt "${MED[cuser.mosquitto.$k]}")) |"
        done
        for k in bench bench1k; do
            a=$(diff_of "${MED[bcpu.midge.$k]}" "${MED[bcpu.midge.anon]}")
            z=$(diff_of "${MED[bcpu.mosquitto.$k]}" "${MED[bcpu.mosquitto.anon]}")
            echo "| password check: ${KIND_LABEL[$k]} − anonymous | | | | $(fmt "$a") | $(fmt "$z") | $(ratio "$a" "$z") | |"
        done
    fi
    if [ "$ACL" = 1 ]; then
        echo
        echo "## ACL checks"
        echo
        echo "Broker instructions per QoS 1 round trip under callgrind (\`loadgen latency --qos 1 --count $ICOUNT\` minus a 1-round-trip start of the same duration, ÷ $((ICOUNT - 1))). The publisher's topic \`loadgen/PID/lat\` matches only the lowest-priority role's ACL; the subscriber's publishClientReceive check matches no ACL and falls to defaultACLAccess (allow)."
        echo
        echo "| publisher / subscriber | midge | Mosquitto | ratio midge/Mosquitto |"
        echo "| --- | ---: | ---: | ---: |"
        for v in "${ACLS[@]}"; do
            echo "| ${ACL_LABEL[$v]} | $(fmt "${MED[instr.midge.$v]}") | $(fmt "${MED[instr.mosquitto.$v]}") | $(ratio "${MED[instr.midge.$v]}" "${MED[instr.mosquitto.$v]}") |"
        done
        a=$(diff_of "${MED[instr.midge.manypub]}" "${MED[instr.midge.one]}")
        z=$(diff_of "${MED[instr.mosquitto.manypub]}" "${MED[instr.mosquitto.one]}")
        echo "| publish check: $((ROLES - 1)) more roles before the match | $(fmt "$a") | $(fmt "$z") | $(ratio "$a" "$z") |"
        echo "| … per non-matching role | $(fmt "$(awk -v d="$a" -v r="$ROLES" 'BEGIN { if (d != "") printf "%.1f", d / (r - 1) }')") | $(fmt "$(awk -v d="$z" -v r="$ROLES" 'BEGIN { if (d != "") printf "%.1f", d / (r - 1) }')") | $(ratio "$a" "$z") |"
        a=$(diff_of "${MED[instr.midge.manyboth]}" "${MED[instr.midge.manypub]}")
        z=$(diff_of "${MED[instr.mosquitto.manyboth]}" "${MED[instr.mosquitto.manypub]}")
        echo "| delivery check: subscriber with $ROLES roles instead of 1 | $(fmt "$a") | $(fmt "$z") | $(ratio "$a" "$z") |"
    fi
    echo
    echo "Per-run values:"
    echo
    per_run_values SETUPS "" rate bcpu ccpu cuser instr
    notes_section
} > "$WORK/table.md"

publish_results "$OUT"
log "wrote $OUT and ${OUT%.md}-raw.txt"
