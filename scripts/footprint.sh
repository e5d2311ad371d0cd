#!/usr/bin/env bash
# Footprint of midge next to Eclipse Mosquitto, measured on this machine.
#
#   scripts/footprint.sh [--no-build] [--midge-bin PATH] [--reps N]
#                        [--connections N] [--retained N] [--payload BYTES]
#                        [--with-persistence] [--out FILE]
#
# Prints a markdown table and writes it to benches/results/footprint.md:
#   - stripped binary size of every dist/midge-<target> (scripts/cross-build.sh)
#     and of the x86_64 release binary (cargo build --release);
#   - RSS (VmRSS) of a freshly started broker (idle, after 1 s), with
#     --connections idle MQTT connections held (default 1,000), and with
#     --retained retained messages held (default 10,000 distinct topics,
#     --payload 100 bytes, QoS 1, every PUBACK in), each on a fresh broker;
#     per broker, ratio midge/mosquitto, KiB per connection =
#     (RSS_conns - RSS_idle) / N and bytes per retained message =
#     (RSS_retained - RSS_idle) * 1024 / N. After the retained RSS is read,
#     `loadgen retain --verify-only 1` checks the broker really holds all N.
# Each number is the median of --reps fresh starts (default 3); the brokers
# alternate. Both brokers get the same config: `listener PORT 127.0.0.1`,
# `allow_anonymous true`, `persistence false`, `connection_messages false`
# (midge single-node: no cluster_* lines). --with-persistence adds a third
# column, midge with `persistence true` (redb file in a temporary directory).
# Mosquitto is /usr/sbin/mosquitto with its own config on its own loopback
# port, never the system service.
#
# Not run in CI. Only loopback traffic; every loop is bounded; processes are
# stopped by PID on exit. Takes about 1-2 minutes.
set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ARGS="$*"
. "$ROOT/scripts/lib-bench.sh"
BUILD=1
MIDGE_BIN=""
REPS=3
CONNS=1000
RETAINED=10000
PAYLOAD=100
PERSIST=0
OUT="$ROOT/benches/results/footprint.md"
MOSQ_PORT=18930
MIDGE_PORT=18931

usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; }
num() { [[ $2 =~ ^[1-9][0-9]*$ ]] || { echo "footprint.sh: $1 needs a positive number, not '$2'" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) BUILD=0 ;;
        --midge-bin) MIDGE_BIN="$2"; shift ;;
        --reps) num "$1" "$2"; REPS="$2"; shift ;;
        --connections) num "$1" "$2"; CONNS="$2"; shift ;;
        --retained) num "$1" "$2"; RETAINED="$2"; shift ;;
        --payload) num "$1" "$2"; PAYLOAD="$2"; shift ;;
        --with-persistence) PERSIST=1 ;;
        --out) OUT="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "footprint.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
[ "$PAYLOAD" -ge 8 ] || { echo "footprint.sh: --payload must be at least 8" >&2; exit 2; }

WORK=$(mktemp -d /tmp/midge-footprint.XXXXXX)
RAW="$WORK/raw.txt"; NOTES="$WORK/notes.txt"
: > "$RAW"; : > "$NOTES"
trap bench_cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM
raise_nofile
[ "$(ulimit -n)" -ge $((CONNS + 200)) ] || { log "ulimit -n is $(ulimit -n): too low for $CONNS connections"; exit 1; }

# ---------------------------------------------------------------- build
LOADGEN="$ROOT/benches/loadgen/target/release/loadgen"
if [ "$BUILD" = 1 ]; then
    log "building loadgen (release)"
    cargo build --release --quiet --manifest-path "$ROOT/benches/loadgen/Cargo.toml" || { log "loadgen build failed"; exit 1; }
fi
[ -x "$LOADGEN" ] || { log "no loadgen binary at $LOADGEN (run without --no-build)"; exit 1; }
MIDGE_FROM="--midge-bin"
if [ -z "$MIDGE_BIN" ]; then
    MIDGE_FROM="built here from $(cd "$ROOT" && echo "$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' +uncommitted src changes')")"
    # Where cargo puts the release binary (honours CARGO_TARGET_DIR).
    TDIR=$(cd "$ROOT" && cargo metadata --no-deps --format-version 1 2>/dev/null |
        grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
    MIDGE_BIN="${TDIR:-$ROOT/target}/release/midge"
    if [ "$BUILD" = 1 ]; then
        log "building midge (cargo build --release)"
        (cd "$ROOT" && cargo build --release --quiet) || { log "midge does not build"; exit 1; }
    fi
fi
[ -x "$MIDGE_BIN" ] || { log "no midge binary at $MIDGE_BIN"; exit 1; }
MOSQ=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$MOSQ" ] || { log "mosquitto is not installed (apt-get install mosquitto)"; exit 1; }

# ---------------------------------------------------------------- sizes
has_symtab() { readelf -S "$1" 2>/dev/null | grep -q '\.symtab'; }
SIZES="$WORK/sizes.md"
{
    echo "| binary | bytes | MB | MiB | note |"
    echo "| --- | ---: | ---: | ---: | --- |"
    size_row() { # label file note
        local b
        b=$(stat -c %s "$2")
        printf '| %s | %s | %.2f | %.2f | %s |\n' "$1" "$b" "$(awk -v b="$b" 'BEGIN{print b/1e6}')" \
            "$(awk -v b="$b" 'BEGIN{print b/1048576}')" "$3"
    }
    for f in "$ROOT"/dist/midge-*; do
        [ -f "$f" ] || continue
        t=${f##*/midge-}
        if has_symtab "$f"; then n="NOT stripped (run scripts/cross-build.sh)"; else n="stripped, $(readelf -h "$f" | sed -n 's/^ *Machine: *//p'), $(readelf -l "$f" | grep -q interpreter && echo dynamic || echo static)"; fi
        size_row "midge $t" "$f" "$n"
    done
    x="$MIDGE_BIN"
    if has_symtab "$x"; then
        strip -o "$WORK/midge-x86_64.stripped" "$x"
        x="$WORK/midge-x86_64.stripped"
        n="x86_64 glibc, stripped here (the binary has symbols)"
    else
        n="x86_64 glibc (release profile strips)"
    fi
    size_row "midge x86_64 (${MIDGE_BIN#"$ROOT"/})" "$x" "$n"
    libs=$(ldd "$MOSQ" 2>/dev/null | awk '$3 ~ /^\// && $1 !~ /^(libc|libm|libpthread|libdl|librt|ld-linux)/ {print $3}' | sort -u)
    lb=0; for l in $libs; do lb=$((lb + $(stat -L -c %s "$l"))); done
    size_row "mosquitto $("$MOSQ" -h 2>/dev/null | sed -n '1s/mosquitto version //p') ($MOSQ)" "$MOSQ" \
        "dynamic; + $(awk -v b="$lb" 'BEGIN{printf "%.2f", b/1e6}') MB in $(echo $libs | wc -w) non-libc shared libraries ($(for l in $libs; do basename "$l"; done | sed 's/\.so.*//' | head -n 4 | tr '\n' ' ')…)"
} > "$SIZES"

# ---------------------------------------------------------------- brokers
BROKERS=(midge mosquitto)
[ "$PERSIST" = 1 ] && BROKERS+=(midge_persist)
declare -A PORT=([mosquitto]=$MOSQ_PORT [midge]=$MIDGE_PORT [midge_persist]=$((MIDGE_PORT + 20)))
declare -A PID=()
for b in "${BROKERS[@]}"; do
    p=$(pick_port "${PORT[$b]}") || { log "no free port found for $b"; exit 1; }
    PORT[$b]=$p
done

START_GEN=0
start_broker() { # broker -> sets PID[broker]
    local b=$1 conf log pid
    START_GEN=$((START_GEN + 1))
    conf="$WORK/$b.conf"; log="$WORK/$b.$START_GEN.log"
    {
        echo "listener ${PORT[$b]} 127.0.0.1"
        echo "allow_anonymous true"
        if [ "$b" = midge_persist ]; then
            rm -rf "$WORK/data"; mkdir -p "$WORK/data"
            echo "persistence true"
            echo "persistence_location $WORK/data"
        else
            echo "persistence false"
        fi
        echo "connection_messages false"
        echo "log_dest stderr"
        echo "log_type error"
        echo "log_type warning"
    } > "$conf"
    if [ "$b" = mosquitto ]; then "$MOSQ" -c "$conf" > "$log" 2>&1 & else "$MIDGE_BIN" -c "$conf" > "$log" 2>&1 & fi
    pid=$!
    STARTED_PIDS+=("$pid")
    if ! wait_listening "$pid" "${PORT[$b]}"; then
        note "$b did not start: $(tail -n 3 "$log" | tr '\n' ' ')"
        stop_pid "$pid"; PID[$b]=""; return 1
    fi
    PID[$b]=$pid
    sleep 1   # settle before the idle reading
}
stop_broker() { stop_pid "${PID[$1]:-}"; [ $? = 2 ] && note "$1 ignored SIGTERM for 5 s; sent SIGKILL"; PID[$1]=""; }
alive() { [ -n "${PID[$1]:-}" ] && kill -0 "${PID[$1]}" 2>/dev/null; }


conn_test() { # broker
    local b=$1 base
    start_broker "$b" || return
    base=$(rss_kib "${PID[$b]}")
    record idle "$b" "$base"
    idle_rss "$LOADGEN" "${PID[$b]}" "${PORT[$b]}" "$CONNS" "$WORK/idle.out" "$WORK/idle.err"
    echo "$b idle$CONNS rc=$IDLE_RC $IDLE_READY $IDLE_LINE base_kib=$base rss_kib=$IDLE_RSS" >> "$RAW"
    [ "$IDLE_TIMEOUT" = 1 ] && note "$b: loadgen idle did not finish in time"
    if [ "$(kv status "$IDLE_LINE")" = ok ] && [ -n "$IDLE_RSS" ] && alive "$b"; then
        record conns "$b" "$IDLE_RSS"
        record per_conn "$b" "$(awk -v a="$IDLE_RSS" -v z="$base" -v n="$CONNS" 'BEGIN {printf "%.3f", (a - z) / n}')"
    else
        note "$b $CONNS idle connections: $IDLE_LINE $(head -n 2 "$WORK/idle.err" | tr '\n' ' ')"
    fi
    stop_broker "$b"
}

retain_test() { # broker
    local b=$1 base rss line vline rc
    start_broker "$b" || return
    base=$(rss_kib "${PID[$b]}")
    record idle "$b" "$base"
    timeout -k 5 200 "$LOADGEN" retain --port "${PORT[$b]}" --count "$RETAINED" --payload "$PAYLOAD" \
        --timeout-secs 180 > "$WORK/ret.out" 2> "$WORK/ret.err"
    rc=$?
    line=$(grep '^RESULT ' "$WORK/ret.out" | tail -n 1)
    sleep 1
    rss=$(rss_kib "${PID[$b]}")
    timeout -k 5 200 "$LOADGEN" retain --verify-only 1 --port "${PORT[$b]}" --count "$RETAINED" \
        --payload "$PAYLOAD" --timeout-secs 180 > "$WORK/ver.out" 2> "$WORK/ver.err"
    vline=$(grep '^RESULT ' "$WORK/ver.out" | tail -n 1)
    echo "$b retain rc=$rc $line base_kib=$base rss_kib=$rss | $vline" >> "$RAW"
    if [ "$rc" = 0 ] && [ "$(kv status "$vline")" = ok ] && [ -n "$rss" ] && alive "$b"; then
        record retained "$b" "$rss"
        record per_ret "$b" "$(awk -v a="$rss" -v z="$base" -v n="$RETAINED" 'BEGIN {printf "%.1f", (a - z) * 1024 / n}')"
    else
        note "$b $RETAINED retained: publish: $line $(head -n 2 "$WORK/ret.err" | tr '\n' ' ') verify: $vline $(head -n 2 "$WORK/ver.err" | tr '\n' ' ')"
    fi
    stop_broker "$b"
}

T0=$(date +%s)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
log "work dir $WORK; ports: $(for b in "${BROKERS[@]}"; do printf '%s=%s ' "$b" "${PORT[$b]}"; done)"
ORDER=("${BROKERS[@]}")
for r in $(seq 1 "$REPS"); do
    if [ $((r % 2)) = 0 ]; then mapfile -t BROKERS < <(printf '%s\n' "${ORDER[@]}" | tac); else BROKERS=("${ORDER[@]}"); fi
    for b in "${BROKERS[@]}"; do log "rep $r: $b, $CONNS idle connections"; conn_test "$b"; done
    for b in "${BROKERS[@]}"; do log "rep $r: $b, $RETAINED retained messages"; retain_test "$b"; done
done
BROKERS=("${ORDER[@]}")
T1=$(date +%s)

# ---------------------------------------------------------------- table
fmt_kib() { # number -> thousands separators for >= 1000, else as is (3 decimals kept)
    [ -n "$1" ] || { echo "—"; return; }
    awk -v v="$1" 'BEGIN { if (v >= 1000) { s = sprintf("%.0f", v); o = "";
        while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) }
        print s o } else print v }'
}
row() { # label metric
    local a z p ratio="—"
    a=$(median "$WORK/vals.$2.midge"); z=$(median "$WORK/vals.$2.mosquitto")
    if [ -n "$a" ] && [ -n "$z" ]; then ratio=$(awk -v a="$a" -v z="$z" 'BEGIN { if (z == 0) print "—"; else printf "%.2f", a / z }'); fi
    if [ "$PERSIST" = 1 ]; then
        p=$(median "$WORK/vals.$2.midge_persist")
        printf '| %s | %s | %s | %s | %s |\n' "$1" "$(fmt_kib "$a")" "$(fmt_kib "$z")" "$ratio" "$(fmt_kib "$p")"
    else
        printf '| %s | %s | %s | %s |\n' "$1" "$(fmt_kib "$a")" "$(fmt_kib "$z")" "$ratio"
    fi
}
{
    echo "# Footprint: midge vs Mosquitto"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); $REPS fresh starts per broker and measurement (median); runtime $((T1 - T0)) s; $(nproc) cores, load average at start $LOAD0"
    echo "- midge: $MIDGE_BIN ($MIDGE_FROM; \`--version\`: $("$MIDGE_BIN" --version 2>&1 | head -n 1)); mosquitto: $("$MOSQ" -h 2>/dev/null | sed -n '1s/mosquitto version //p') ($MOSQ)"
    echo "- both brokers: \`listener PORT 127.0.0.1\`, \`allow_anonymous true\`, \`persistence false\`, \`connection_messages false\` (midge single-node)$([ "$PERSIST" = 1 ] && echo '; last column: midge with `persistence true`')"
    echo "- command: \`scripts/footprint.sh${ARGS:+ $ARGS}\`"
    echo
    echo "## Binary size"
    echo
    cat "$SIZES"
    echo
    echo "## Memory (VmRSS)"
    echo
    if [ "$PERSIST" = 1 ]; then
        echo "| metric | midge | mosquitto | ratio midge/mosquitto | midge, persistence true |"
        echo "| --- | ---: | ---: | ---: | ---: |"
    else
        echo "| metric | midge | mosquitto | ratio midge/mosquitto |"
        echo "| --- | ---: | ---: | ---: |"
    fi
    row "RSS idle, fresh broker (KiB)" idle
    row "RSS with $(fmt_kib "$CONNS") idle connections (KiB)" conns
    row "per idle connection (KiB)" per_conn
    row "RSS with $(fmt_kib "$RETAINED") retained ${PAYLOAD}-byte messages (KiB)" retained
    row "per retained message (bytes)" per_ret
    echo
    echo "How: RSS idle is read 1 s after start. Connections: \`loadgen idle --connections $CONNS\` (MQTT 3.1.1, clean session, keep alive 600 s), RSS read once every CONNACK is in; per connection = (RSS_conns − RSS_idle) / $CONNS. Retained: \`loadgen retain --count $RETAINED --payload $PAYLOAD\` publishes to $RETAINED distinct topics at QoS 1 with the RETAIN flag and waits for every PUBACK; RSS read 1 s later; per message = (RSS_retained − RSS_idle) × 1024 / $RETAINED; then \`loadgen retain --verify-only 1\` subscribes and must find all $RETAINED. Every measurement on a freshly started broker."
    echo
    echo "Values per start (KiB, or KiB / bytes for the per-item rows):"
    echo
    per_run_values BROKERS "" idle conns per_conn retained per_ret
    notes_section
    echo
    echo "Raw:"
    echo
    echo '```'
    cat "$RAW"
    echo '```'
} > "$WORK/table.md"
mkdir -p "$(dirname "$OUT")"
cp "$WORK/table.md" "$OUT"
cat "$WORK/table.md"
log "wrote $OUT (broker logs in $WORK)"
