#!/usr/bin/env bash
# kill -9 durability test: nothing a broker acknowledged may be lost.
#
#   scripts/crash-test.sh [--broker midge|mosquitto|both] [--kills N] [--quick]
#                         [--seed S] [--rate MSG_PER_S] [--window N] [--offline-subscriber]
#                         [--midge-bin PATH] [--no-build] [--record] [--keep]
#                         [--mosquitto-autosave SECONDS] [--midge-option 'KEY VALUE']...
#
# For each broker: start it on 127.0.0.1 on a random free port with
# persistence in a fresh data directory, run scripts/crash_checker.py against
# it (a persistent-session QoS 1 subscriber on crash/seq and a QoS 1 publisher
# of increasing sequence numbers that counts a number as acknowledged only when
# its PUBACK arrives), and meanwhile kill the broker with SIGKILL N times
# (default 20, --quick 8) at random moments 0.3-2 s apart, restarting it each
# time on the same port and data directory. Then stop publishing, give the
# subscriber up to 15 s to drain, and report acknowledged / received / LOST
# (acknowledged but never received) / duplicates.
#
# midge: LOST > 0 (or a restart that fails) is a failure: exit 1.
# mosquitto (2.0.11, `persistence true`, default autosave_interval 1800; with
# --mosquitto-autosave S: `autosave_interval S`, `autosave_on_changes false`):
# losses are the expected finding, reported, not a failure.
# --offline-subscriber: the subscriber also disconnects on purpose for 1 s
# after every 0.7 s connected, so kills also hit messages queued for an
# offline persistent session.
# --midge-option adds a line to midge's config (e.g. 'persistence_fsync false'
# as a negative control: then losses are possible and still fail the run).
#
# The summary table is printed; with --record (the benchmark campaign, never
# the test command) it is also appended to benches/results/crash.md (or
# --out FILE). Broker logs, the kill/restart log and the clients' timeline
# are in a temp dir that is removed when midge passes and kept (path
# printed) when it fails or with --keep.
#
# Only loopback. Every loop is bounded in count and time; only processes this
# script started are signalled, by PID. --quick (midge) ~30 s; full run with
# both brokers ~2-3 min.
set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${MIDGE_PYTHON:-python3}  # the checker needs only the standard library
BROKER=midge
KILLS=""
QUICK=0
SEED=""
RATE=2000
WINDOW=32
MIDGE_BIN=""
BUILD=1
RECORD=0
KEEP=0
MOSQ_AUTOSAVE=""
MIDGE_OPTIONS=()
MIDGE_DESC=""
OFFLINE_SUB=0
OUT="$ROOT/benches/results/crash.md"

usage() { sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --broker) BROKER="${2:-}"; shift ;;
        --kills) KILLS="${2:-}"; shift ;;
        --quick) QUICK=1 ;;
        --seed) SEED="${2:-}"; shift ;;
        --rate) RATE="${2:-}"; shift ;;
        --window) WINDOW="${2:-}"; shift ;;
        --midge-bin) MIDGE_BIN="${2:-}"; shift ;;
        --no-build) BUILD=0 ;;
        --record) RECORD=1 ;;
        --no-record) RECORD=0 ;;  # the default; accepted for old command lines
        --keep) KEEP=1 ;;
        --mosquitto-autosave) MOSQ_AUTOSAVE="${2:-}"; shift ;;
        --midge-option) MIDGE_OPTIONS+=("${2:-}"); shift ;;
        --offline-subscriber) OFFLINE_SUB=1 ;;
        --out) OUT="${2:-}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "crash-test.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
case "$BROKER" in
    midge) BROKERS="midge" ;;
    mosquitto) BROKERS="mosquitto" ;;
    both) BROKERS="midge mosquitto" ;;
    *) echo "crash-test.sh: --broker must be midge, mosquitto or both" >&2; exit 2 ;;
esac
if [ -z "$KILLS" ]; then
    if [ "$QUICK" = 1 ]; then KILLS=8; else KILLS=20; fi
fi
case "$KILLS" in ''|*[!0-9]*) echo "crash-test.sh: --kills must be a number" >&2; exit 2 ;; esac
if [ "$KILLS" -gt 200 ]; then echo "crash-test.sh: --kills at most 200" >&2; exit 2; fi
[ -n "$SEED" ] || SEED=$(( $(date +%s) % 100000 ))
case "$SEED" in *[!0-9]*) echo "crash-test.sh: --seed must be a number" >&2; exit 2 ;; esac
RANDOM=$SEED

LOG_NAME=crash-test
. "$ROOT/scripts/lib.sh"  # log, stop_pid, free_port
now() { date +%s.%N; }

WORK=$(mktemp -d /tmp/midge-crash.XXXXXX)
chmod 755 "$WORK"
BROKER_PID=""
CHECKER_PID=""

cleanup() {
    stop_pid "$CHECKER_PID"; CHECKER_PID=""
    stop_pid "$BROKER_PID"; BROKER_PID=""
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

listening() {  # listening PORT: a TCP socket in LISTEN state on 127.0.0.1:PORT
    grep -q "^ *[0-9]*: 0100007F:$(printf %04X "$1") 00000000:0000 0A " /proc/net/tcp 2>/dev/null
}

# ------------------------------------------------------------------ binaries
if [[ " $BROKERS " == *" midge "* ]]; then
    if [ -z "$MIDGE_BIN" ]; then
        MIDGE_BIN="$ROOT/target/release/midge"
        if [ "$BUILD" = 1 ]; then
            log "cargo build --release --bin midge"
            (cd "$ROOT" && cargo build --release --bin midge) >"$WORK/build.log" 2>&1 || {
                tail -30 "$WORK/build.log" >&2; log "build failed"; exit 2; }
        fi
    fi
    [ -x "$MIDGE_BIN" ] || { log "no midge binary at $MIDGE_BIN (run cargo build --release)"; exit 2; }
    if [ -n "$(find "$ROOT/src" -newer "$MIDGE_BIN" -name '*.rs' 2>/dev/null | head -1)" ]; then
        log "warning: $MIDGE_BIN is older than some of src/ (testing that binary anyway)"
    fi
    # A private copy: every restart runs the same binary even if the tree is rebuilt meanwhile.
    mkdir -p "$WORK/bin"; cp "$MIDGE_BIN" "$WORK/bin/midge"
    MIDGE_DESC="$("$WORK/bin/midge" --version 2>&1 | head -1), binary built $(date -u -r "$MIDGE_BIN" '+%Y-%m-%d %H:%M UTC'), tree $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$( [ -n "$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ] && echo ' with uncommitted src changes')"
    MIDGE_BIN="$WORK/bin/midge"
fi
if [[ " $BROKERS " == *" mosquitto "* ]]; then
    command -v mosquitto >/dev/null || { log "mosquitto not installed (apt-get install mosquitto)"; exit 2; }
fi

log "work dir (broker logs, events, timelines): $WORK"
log "brokers: $BROKERS; kills: $KILLS; seed: $SEED; publisher: $RATE msg/s, window $WINDOW"

# ------------------------------------------------------------------ one broker
# Globals per run: B (name), BDIR, PORT, CONF, START_N, BROKER_PID, EVENTS.
start_broker() {  # start_broker LABEL -> 0 when serving, 1 when it could not start
    local label=$1 attempt logf deadline
    for attempt in 1 2 3; do
        START_N=$((START_N + 1))
        logf="$BDIR/broker-$(printf %02d "$START_N").log"
        echo "START $START_N $(now) $label attempt=$attempt" >>"$EVENTS"
        : >"$logf"
        if [ "$B" = midge ]; then
            "$MIDGE_BIN" -c "$CONF" >"$logf" 2>&1 &
        else
            mosquitto -c "$CONF" >"$logf" 2>&1 &
        fi
        BROKER_PID=$!
        echo "PID $START_N $(now) $BROKER_PID" >>"$EVENTS"
        deadline=$(( $(date +%s) + 15 ))
        while [ "$(date +%s)" -le "$deadline" ]; do
            if ! kill -0 "$BROKER_PID" 2>/dev/null; then break; fi
            if [ "$B" = midge ]; then
                grep -q 'serves clients' "$logf" && { echo "READY $START_N $(now)" >>"$EVENTS"; return 0; }
            else
                # Mosquitto's log reaches the file late; a LISTEN socket on
                # the port (kernel table, no connection made) is the signal.
                if grep -q ' running$' "$logf" || listening "$PORT"; then
                    echo "READY $START_N $(now)" >>"$EVENTS"; return 0
                fi
            fi
            sleep 0.02
        done
        if kill -0 "$BROKER_PID" 2>/dev/null; then
            echo "NOTREADY $START_N $(now) (no ready line in 15 s)" >>"$EVENTS"
            kill -9 "$BROKER_PID" 2>/dev/null
        else
            wait "$BROKER_PID" 2>/dev/null
            echo "EXITED $START_N $(now) status=$?" >>"$EVENTS"
        fi
        wait "$BROKER_PID" 2>/dev/null
        BROKER_PID=""
        START_FAILURES=$((START_FAILURES + 1))
        log "$B failed to start ($label, attempt $attempt); log $logf:"
        tail -5 "$logf" | sed 's/^/    /' >&2
        sleep 0.5
    done
    return 1
}

declare -A R_KILLS R_ACK R_RECV R_LOST R_DUP R_SESS R_STARTFAIL R_TIME R_VERDICT R_NOTE

run_broker() {
    B=$1
    BDIR="$WORK/$B"
    mkdir -p "$BDIR/data"
    EVENTS="$BDIR/events.txt"
    : >"$EVENTS"
    START_N=0
    START_FAILURES=0
    local t_begin kills_done=0 note="" verdict rc
    t_begin=$(date +%s.%N)
    PORT=$(free_port)
    CONF="$BDIR/$B.conf"
    if [ "$B" = midge ]; then
        cat >"$CONF" <<EOF
listener $PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $BDIR/data
max_queued_messages 100000
EOF
        for o in "${MIDGE_OPTIONS[@]+"${MIDGE_OPTIONS[@]}"}"; do echo "$o" >>"$CONF"; done
    else
        # Run as root, mosquitto drops to user "mosquitto": let it write the db.
        if id mosquitto >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then chown mosquitto "$BDIR/data"; fi
        cat >"$CONF" <<EOF
listener $PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $BDIR/data/
max_queued_messages 100000
log_dest stderr
EOF
        if [ -n "$MOSQ_AUTOSAVE" ]; then
            printf 'autosave_interval %s\nautosave_on_changes false\n' "$MOSQ_AUTOSAVE" >>"$CONF"
        fi
    fi
    log "== $B on 127.0.0.1:$PORT, data $BDIR/data"
    if ! start_broker "initial start"; then
        R_KILLS[$B]=0; R_ACK[$B]=-; R_RECV[$B]=-; R_LOST[$B]=-; R_DUP[$B]=-; R_SESS[$B]=-
        R_STARTFAIL[$B]=$START_FAILURES; R_VERDICT[$B]="did not start"; R_NOTE[$B]="initial start failed"
        R_TIME[$B]=$(awk -v a="$t_begin" -v b="$(date +%s.%N)" 'BEGIN{printf "%.0f", b-a}')
        return
    fi

    local fail_flag=""
    [ "$B" = midge ] && fail_flag="--fail-on-loss"
    local offline_flags=""
    [ "$OFFLINE_SUB" = 1 ] && offline_flags="--sub-offline-every 0.7 --sub-offline-for 1"
    "$PY" "$ROOT/scripts/crash_checker.py" --port "$PORT" --broker "$B" \
        --sub-id "crash-sub-$SEED" --pub-id "crash-pub-$SEED" \
        --rate "$RATE" --window "$WINDOW" \
        --stop-file "$BDIR/stop" --ready-file "$BDIR/checker.ready" \
        --events "$EVENTS" --json "$BDIR/result.json" --timeline "$BDIR/timeline.txt" \
        --max-runtime 200 --drain 15 --quiet 5 $fail_flag $offline_flags \
        >"$BDIR/checker.out" 2>&1 &
    CHECKER_PID=$!

    # Kills start once messages flow (first PUBACK), at most 20 s from now.
    local i
    for i in $(seq 1 400); do
        [ -e "$BDIR/checker.ready" ] && break
        kill -0 "$CHECKER_PID" 2>/dev/null || break
        sleep 0.05
    done
    if [ ! -e "$BDIR/checker.ready" ]; then
        note="no PUBACK within 20 s of the start;"
        log "$B: $note"
    else
        local k gap
        for k in $(seq 1 "$KILLS"); do
            gap=$(awk -v r="$RANDOM" 'BEGIN{printf "%.3f", 0.3 + 1.7 * r / 32767}')
            sleep "$gap"
            if ! kill -0 "$BROKER_PID" 2>/dev/null; then
                echo "DIED $START_N $(now) broker exited on its own" >>"$EVENTS"
                note="$note broker exited on its own before kill #$k;"
                log "$B exited on its own before kill #$k"
                wait "$BROKER_PID" 2>/dev/null
            else
                local tk
                tk=$(now)
                kill -9 "$BROKER_PID" 2>/dev/null
                echo "KILL $k $tk $BROKER_PID" >>"$EVENTS"
                wait "$BROKER_PID" 2>/dev/null
                echo "KILLED $k $(now) (reaped)" >>"$EVENTS"
                kills_done=$k
            fi
            BROKER_PID=""
            if ! start_broker "restart after kill #$k"; then
                note="$note could not restart after kill #$k (3 attempts);"
                break
            fi
            kill -0 "$CHECKER_PID" 2>/dev/null || { note="$note checker exited early;"; break; }
        done
        log "$B: $kills_done kills done, $START_N starts, $START_FAILURES failed starts"
        # Let traffic run on the last incarnation, then stop and drain.
        [ -n "$BROKER_PID" ] && sleep 1.5
    fi
    touch "$BDIR/stop"
    local waited=0
    while kill -0 "$CHECKER_PID" 2>/dev/null && [ "$waited" -lt 400 ]; do
        sleep 0.1; waited=$((waited + 1))
    done
    if kill -0 "$CHECKER_PID" 2>/dev/null; then
        note="$note checker did not finish in 40 s;"
        stop_pid "$CHECKER_PID"
    fi
    wait "$CHECKER_PID" 2>/dev/null; rc=$?
    CHECKER_PID=""
    sed 's/^/    /' "$BDIR/checker.out" >&2
    if [ -n "$BROKER_PID" ]; then
        stop_pid "$BROKER_PID"
        BROKER_PID=""
    fi

    local j="$BDIR/result.json"
    get() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$j" "$1" 2>/dev/null || echo "-"; }
    R_KILLS[$B]=$kills_done
    R_ACK[$B]=$(get acknowledged); R_RECV[$B]=$(get received)
    R_LOST[$B]=$(get lost); R_DUP[$B]=$(get duplicates); R_SESS[$B]=$(get sub_session_lost)
    R_STARTFAIL[$B]=$START_FAILURES
    R_TIME[$B]=$(awk -v a="$t_begin" -v b="$(date +%s.%N)" 'BEGIN{printf "%.0f", b-a}')
    if [ "$B" = midge ]; then
        local why=()
        [ "$rc" = 1 ] && why+=("lost ${R_LOST[$B]} acknowledged messages")
        [ "$rc" != 0 ] && [ "$rc" != 1 ] && why+=("checker exit $rc")
        [ "${R_SESS[$B]}" != "-" ] && [ "${R_SESS[$B]}" != 0 ] && why+=("forgot the subscriber's session ${R_SESS[$B]} times")
        [ "$kills_done" != "$KILLS" ] && why+=("$kills_done of $KILLS kills done")
        [ "$START_FAILURES" != 0 ] && why+=("$START_FAILURES failed starts")
        [ -n "$note" ] && [ ${#why[@]} = 0 ] && why+=("see notes")
        if [ ${#why[@]} = 0 ]; then
            verdict="PASS"
        else
            verdict="FAIL: $(IFS=';'; echo "${why[*]}" | sed 's/;/; /g')"
        fi
    else
        if [ "$rc" = 3 ]; then verdict="did not run (checker exit 3)"
        elif [ "${R_LOST[$B]}" = 0 ]; then verdict="no loss observed"
        else verdict="lost acknowledged messages (expected)"; fi
    fi
    R_VERDICT[$B]=$verdict
    R_NOTE[$B]=$note
    log "$B: $verdict ${note}"
}

T0=$(date +%s)
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
for b in $BROKERS; do run_broker "$b"; done
T1=$(date +%s)

# ------------------------------------------------------------------ summary
MODE="full"; [ "$QUICK" = 1 ] && MODE="quick"; [ "$OFFLINE_SUB" = 1 ] && MODE="$MODE, offline subscriber"
{
    echo "| broker | kills | acknowledged | received | lost | duplicates | sub session forgotten | failed starts | runtime (s) | result |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    for b in $BROKERS; do
        name=$b
        if [ "$b" = midge ] && [ ${#MIDGE_OPTIONS[@]} -gt 0 ]; then
            name="midge ($(IFS=,; echo "${MIDGE_OPTIONS[*]}"))"
        fi
        if [ "$b" = mosquitto ]; then
            name="mosquitto $(mosquitto -h 2>/dev/null | sed -n 's/^mosquitto version \([^ ]*\).*/\1/p' | head -1)"
            if [ -n "$MOSQ_AUTOSAVE" ]; then name="$name (autosave ${MOSQ_AUTOSAVE} s)"; else name="$name (default autosave)"; fi
        fi
        echo "| $name | ${R_KILLS[$b]} | ${R_ACK[$b]} | ${R_RECV[$b]} | ${R_LOST[$b]} | ${R_DUP[$b]} | ${R_SESS[$b]} | ${R_STARTFAIL[$b]} | ${R_TIME[$b]} | ${R_VERDICT[$b]} |"
    done
} >"$WORK/table.md"
{
    echo "## $(date -u '+%Y-%m-%d %H:%M UTC') — crash-test.sh --broker $BROKER ($MODE), $KILLS kills, seed $SEED"
    echo
    echo "- SIGKILL every 0.3-2 s, restart on the same port and data dir; publisher QoS 1 at $RATE msg/s, $WINDOW PUBACKs outstanding at most, clean session; subscriber QoS 1, fixed client id, clean_session=0$([ "$OFFLINE_SUB" = 1 ] && echo ', offline on purpose for 1 s after every 0.7 s connected'); drain up to 15 s after the last restart"
    echo "- lost = PUBACKed by the broker but never delivered to the persistent subscriber; duplicates = deliveries of an already received number (allowed at QoS 1)"
    [[ " $BROKERS " == *" midge "* ]] && echo "- midge: $MIDGE_DESC"
    echo "- machine: $(nproc) cores, load average at start $LOAD; total runtime $((T1 - T0)) s; logs were in $WORK"
    echo
    cat "$WORK/table.md"
    for b in $BROKERS; do
        if [ -n "${R_NOTE[$b]}" ] || { [ "${R_LOST[$b]}" != 0 ] && [ "${R_LOST[$b]}" != "-" ]; }; then
            echo; break
        fi
    done
    for b in $BROKERS; do
        [ -n "${R_NOTE[$b]}" ] && echo "- $b: ${R_NOTE[$b]}"
        if [ -f "$WORK/$b/result.json" ] && [ "${R_LOST[$b]}" != 0 ] && [ "${R_LOST[$b]}" != "-" ]; then
            echo "- $b: $("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%d of the %d lost were acknowledged while the subscriber was offline or re-subscribing after a restart; lost by following kill: %s; first lost: %s" % (d["lost"] - d["lost_while_subscribed"], d["lost"], ", ".join("#%s: %d" % kv for kv in d["lost_by_kill"].items()), " ".join(d["lost_ranges"][:10])))' "$WORK/$b/result.json")"
        fi
    done
    echo
} >"$WORK/summary.md"

echo
cat "$WORK/summary.md"
if [ "$RECORD" = 1 ]; then
    mkdir -p "$(dirname "$OUT")"
    if [ ! -s "$OUT" ]; then
        printf '# kill -9 crash test results\n\nAppended by `scripts/crash-test.sh`; newest last.\n\n' >"$OUT"
    fi
    cat "$WORK/summary.md" >>"$OUT"
    log "appended to $OUT"
fi
STATUS=0
if [[ " $BROKERS " == *" midge "* ]] && [ "${R_VERDICT[midge]}" != PASS ]; then STATUS=1; fi
if [ "$STATUS" = 0 ] && [ "$KEEP" = 0 ]; then
    rm -rf "$WORK"
else
    log "logs kept in $WORK"
fi
exit $STATUS
