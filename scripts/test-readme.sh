#!/usr/bin/env bash
# README.md as a test: its commands run as written, top to bottom, so the
# README cannot drift from the code.
#
#   bash scripts/test-readme.sh [--setup] [--keep] [--section TEXT]   (root; MIDGE_BIN=PATH)
#
# --section TEXT runs only the "## " sections whose title contains TEXT
# (for debugging one part; the test command runs them all).
#
# Conventions in README.md (scripts/readme_blocks.py reads them):
#
# * ```sh (or ```bash) blocks run, in README order, each with
#   `bash -euo pipefail`, in a copy of the checkout. ```console, ```text and
#   ```conf blocks never run: use them for output, for commands that only
#   make sense by hand (`kill -9 <pid>`), and for config files. Every code
#   block names its language; a bare ``` is an error.
# * An HTML comment right before a block changes how it runs (invisible on
#   GitHub):   <!-- readme-test: DIRECTIVE ... -->
#     skip (REASON)   never run (needs other machines, or is this test)
#     setup           install steps (apt-get, rustup, cargo install): run
#                     only with --setup, in the root namespace, on a fresh
#                     machine; without it, `midge` on PATH is MIDGE_BIN
#     on=gw1,gw2      run on these gateways (network namespaces, below)
#     background      start it and go on; it is stopped (SIGTERM to its
#                     process group) at the next "## " heading
#     wait-port=N     (background) go on once 127.0.0.1:N accepts, there
#     wait-for="TEXT" (background) go on once its output contains TEXT
#     retry=S         rerun until it succeeds, for up to S seconds (for
#                     steps that wait on an election)
#     timeout=S       a foreground block's limit (default 60 s)
# * <!-- readme-test: gateways gw1=10.0.0.11 ... --> names the example's
#   gateways. Each gets a network namespace with that address on one
#   bridge; every other block runs in a "LAN" namespace (10.0.0.100) with
#   its own loopback, so 127.0.0.1:1883 there is private to this test.
#   Nothing leaves the namespaces (no route out).
# * A ```conf block whose first line is `# gw1: /etc/midge/midge.conf` is
#   that gateway's file. On a gateway, /etc/midge and /var/lib/midge (in
#   files and commands) are mapped to that gateway's own temp directory.
# * <!-- readme-test: check cluster --> runs this script's own check at
#   that point: transfer-leader sent to a follower makes that follower the
#   leader, status through a follower names the leader.
#
# Everything is bounded in time; what it starts is stopped by process
# group; the namespaces and the temp dir are removed on exit (--keep keeps
# the logs). Needs: root, iproute2, mosquitto (mosquitto_passwd),
# mosquitto-clients, curl, python3.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib.sh"
SETUP=0 KEEP=0 ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --setup) SETUP=1 ;;
        --keep) KEEP=1 ;;
        --section) ONLY=${2:-}; shift ;;
        -h|--help) sed -n '2,47p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
for t in ip mosquitto_passwd mosquitto_sub curl python3; do
    command -v "$t" >/dev/null || die "missing $t (bash scripts/setup-test-deps.sh)"
done
PY=${MIDGE_PYTHON:-python3}

WORK=$(mktemp -d /tmp/midge-readme.XXXXXX)
chmod 755 "$WORK"
NS=mr$$            # namespace prefix
NAMESPACES=()
BG=()              # process group ids of running background blocks
FAILED=1

stop_bg() {
    local g _
    for g in "${BG[@]+"${BG[@]}"}"; do kill -TERM -- "-$g" 2>/dev/null; done
    for _ in $(seq 1 50); do
        local alive=0
        for g in "${BG[@]+"${BG[@]}"}"; do kill -0 -- "-$g" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for g in "${BG[@]+"${BG[@]}"}"; do kill -KILL -- "-$g" 2>/dev/null; wait "$g" 2>/dev/null; done
    BG=()
}
cleanup() {
    local n p
    stop_bg
    # Anything still running in our namespaces was started by a block.
    for n in "${NAMESPACES[@]+"${NAMESPACES[@]}"}"; do
        for p in $(ip netns pids "$n" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    done
    for n in "${NAMESPACES[@]+"${NAMESPACES[@]}"}"; do ip netns del "$n" 2>/dev/null; done
    if [ "$KEEP" = 1 ]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------ the binary
if [ "$SETUP" = 0 ]; then
    if [ -z "${MIDGE_BIN:-}" ]; then
        (cd "$ROOT" && cargo build --bin midge) || die "cargo build failed"
        MIDGE_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/midge
    fi
    MIDGE_BIN=$(cd "$(dirname "$MIDGE_BIN")" && pwd)/$(basename "$MIDGE_BIN")
    [ -x "$MIDGE_BIN" ] || die "no midge binary at $MIDGE_BIN"
    mkdir -p "$WORK/bin"
    ln -s "$MIDGE_BIN" "$WORK/bin/midge"
    export MIDGE_BIN PATH="$WORK/bin:$PATH"
else
    # What a new login shell has after rustup: the README's later blocks
    # run `cargo install` and `midge` from ~/.cargo/bin.
    export PATH="$HOME/.cargo/bin:$PATH"
fi

# ------------------------------------------------- the README, a checkout copy
mkdir -p "$WORK/blocks" "$WORK/checkout" "$WORK/logs"
"$PY" "$ROOT/scripts/readme_blocks.py" "$ROOT/README.md" "$WORK/blocks" || die "README.md breaks the conventions above"
(cd "$ROOT" && git ls-files -z -co --exclude-standard | tar --null -T - -cf -) | tar -C "$WORK/checkout" -xf - \
    || die "cannot copy the checkout"

# ------------------------------------------------------------- namespaces
declare -A GW_ADDR=() GW_NS=()
add_ns() { ip netns add "$1" && NAMESPACES+=("$1") && ip -n "$1" link set lo up; }
plug() {  # plug NS PORT ADDR/24: a veth from the switch's bridge into NS
    ip -n "$NS-sw" link add "$2" type veth peer name eth0 netns "$1" &&
        ip -n "$NS-sw" link set "$2" master br0 && ip -n "$NS-sw" link set "$2" up &&
        ip -n "$1" addr add "$3" dev eth0 && ip -n "$1" link set eth0 up
}
add_ns "$NS-sw" && ip -n "$NS-sw" link add br0 type bridge && ip -n "$NS-sw" link set br0 up || die "cannot create the switch namespace"
add_ns "$NS-lan" && plug "$NS-lan" plan 10.0.0.100/24 || die "cannot create the LAN namespace"
while IFS=$'\t' read -r -a step; do
    [ "${step[0]}" = gateways ] || continue
    for kv in "${step[@]:1}"; do
        gw=${kv%%=*} addr=${kv#*=}
        GW_ADDR[$gw]=$addr GW_NS[$gw]=$NS-$gw
        add_ns "$NS-$gw" && plug "$NS-$gw" "p$gw" "$addr/24" || die "cannot create namespace for $gw"
        mkdir -p "$WORK/gw/$gw"
    done
done <"$WORK/blocks/plan"
log "namespaces: LAN 10.0.0.100$(for g in "${!GW_ADDR[@]}"; do printf ', %s %s' "$g" "${GW_ADDR[$g]}"; done)"

gw_map() {  # gw_map GW < text: /etc/midge and /var/lib/midge -> the gateway's dir
    sed -e "s#/etc/midge#$WORK/gw/$1/etc/midge#g" -e "s#/var/lib/midge#$WORK/gw/$1/var/lib/midge#g"
}

# --------------------------------------------------------------- running
# start_block N WHERE: start block N in WHERE (a gateway, "lan" or "host")
# as a new process group; sets STARTED (its pid = pgid) and LOGF.
start_block() {
    local n=$1 where=$2 file="$WORK/logs/block-$1-$2.sh" ns_cmd=()
    LOGF="$WORK/logs/block-$n-$where.log"
    case "$where" in
        host) echo "cd $(printf %q "$WORK/checkout")" >"$file"; cat "$WORK/blocks/block-$n" >>"$file" ;;
        lan) echo "cd $(printf %q "$WORK/checkout")" >"$file"; cat "$WORK/blocks/block-$n" >>"$file"
             ns_cmd=(ip netns exec "$NS-lan") ;;
        *) [ -n "${GW_NS[$where]:-}" ] || die "block $n: unknown gateway $where"
           echo "cd $(printf %q "$WORK/gw/$where")" >"$file"; gw_map "$where" <"$WORK/blocks/block-$n" >>"$file"
           ns_cmd=(ip netns exec "${GW_NS[$where]}") ;;
    esac
    "${ns_cmd[@]}" setsid bash -euo pipefail "$file" </dev/null >>"$LOGF" 2>&1 &
    STARTED=$!
}
show_fail() {  # show_fail N WHERE LINE MSG
    log "README.md:$3 (block $1, on $2): $4"
    echo "----- the block:" >&2; cat "$WORK/blocks/block-$1" >&2
    echo "----- its output (last 40 lines):" >&2; tail -40 "$WORK/logs/block-$1-$2.log" >&2
    echo "-----" >&2
}
run_fg() {  # run_fg N WHERE LINE LIMIT_S RETRY_S: 0 when the block succeeds
    local n=$1 where=$2 line=$3 limit=$4 retry=$5 t_end=$((SECONDS + $5)) rc
    while :; do
        : >"$WORK/logs/block-$n-$where.log"
        start_block "$n" "$where"
        local t=0
        while kill -0 "$STARTED" 2>/dev/null && [ "$t" -lt $((limit * 10)) ]; do sleep 0.1; t=$((t + 1)); done
        if kill -0 "$STARTED" 2>/dev/null; then
            kill -KILL -- "-$STARTED" 2>/dev/null; wait "$STARTED" 2>/dev/null
            rc=124
        else
            wait "$STARTED"; rc=$?
        fi
        kill -KILL -- "-$STARTED" 2>/dev/null  # leftovers of the block
        [ "$rc" = 0 ] && return 0
        if [ "$SECONDS" -ge "$t_end" ]; then
            show_fail "$n" "$where" "$line" "exit status $rc$([ "$rc" = 124 ] && echo " (timed out after $limit s)")"
            return 1
        fi
        sleep 1
    done
}
run_bg() {  # run_bg N WHERE LINE WAIT_PORT WAIT_FOR
    local n=$1 where=$2 line=$3 port=$4 text=$5 ns
    : >"$WORK/logs/block-$n-$where.log"
    start_block "$n" "$where"
    BG+=("$STARTED")
    ns=$NS-lan; [ "$where" = lan ] || ns=${GW_NS[$where]}
    for _ in $(seq 1 600); do
        if ! kill -0 "$STARTED" 2>/dev/null; then
            show_fail "$n" "$where" "$line" "the background block exited"; return 1
        fi
        if [ -n "$port" ] && ip netns exec "$ns" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then return 0; fi
        if [ -n "$text" ] && grep -qF -- "$text" "$LOGF"; then return 0; fi
        [ -z "$port$text" ] && return 0
        sleep 0.1
    done
    show_fail "$n" "$where" "$line" "not ready within 60 s (waiting for ${port:+port $port}${text:+\"$text\"})"
    return 1
}

# ------------------------------------------------------ the cluster check
health_code() {  # health_code ADDR: HTTP status of ADDR:8080/health, from the LAN
    ip netns exec "$NS-lan" curl -s -m 2 -o /dev/null -w '%{http_code}' "http://$1:8080/health"
}
check_cluster() {
    local user pass gw leader="" follower="" id code _
    read -r user pass < <(grep -ohE 'mosquitto_passwd -c -b /etc/midge/passwd [^ ]+ [^ ]+' "$WORK"/blocks/block-* | head -1 | awk '{print $5, $6}')
    [ -n "$user" ] || { log "check cluster: no mosquitto_passwd -c -b line in the README"; return 1; }
    for _ in $(seq 1 100); do
        leader="" follower=""
        for gw in $(printf '%s\n' "${!GW_ADDR[@]}" | sort); do
            [ -f "$WORK/gw/$gw/etc/midge/midge.conf" ] || continue
            code=$(health_code "${GW_ADDR[$gw]}")
            [ "$code" = 200 ] && leader=$gw
            [ "$code" = 503 ] && [ -z "$follower" ] && follower=$gw
        done
        [ -n "$leader" ] && [ -n "$follower" ] && break
        sleep 0.1
    done
    [ -n "$leader" ] && [ -n "$follower" ] || { log "check cluster: no leader and follower found"; return 1; }
    id=$(awk '$1 == "cluster_node_id" {print $2}' "$WORK/gw/$follower/etc/midge/midge.conf")
    log "check cluster: leader $leader; transfer-leader $id sent to the follower $follower"
    if ! ip netns exec "$NS-lan" timeout 20 midge ctl -h "${GW_ADDR[$follower]}" -p 1880 -u "$user" -P "$pass" \
        transfer-leader "$id" >"$WORK/logs/check-transfer.log" 2>&1; then
        log "check cluster: midge ctl transfer-leader via the follower $follower failed:"; cat "$WORK/logs/check-transfer.log" >&2
        return 1
    fi
    for _ in $(seq 1 100); do
        [ "$(health_code "${GW_ADDR[$follower]}")" = 200 ] && break
        sleep 0.1
    done
    [ "$(health_code "${GW_ADDR[$follower]}")" = 200 ] || { log "check cluster: $follower did not become the leader"; return 1; }
    # status through a node that now follows names the new leader
    if ! ip netns exec "$NS-lan" timeout 20 midge ctl -h "${GW_ADDR[$leader]}" -p 1880 -u "$user" -P "$pass" status \
        >"$WORK/logs/check-status.log" 2>&1 || ! grep -q "\"leader_id\": $id\b" "$WORK/logs/check-status.log"; then
        log "check cluster: status via $leader does not name node $id as the leader:"; cat "$WORK/logs/check-status.log" >&2
        return 1
    fi
    log "check cluster: passed ($follower leads now)"
}

# ------------------------------------------------------------ the plan
RAN=0 SKIPPED=0 IN_ONLY=1
[ -n "$ONLY" ] && IN_ONLY=0
while IFS=$'\t' read -r -a step; do
    if [ "${step[0]}" = section ] && [ -n "$ONLY" ]; then
        IN_ONLY=0; [[ "${step[1]}" == *"$ONLY"* ]] && IN_ONLY=1
    fi
    if [ "$IN_ONLY" = 0 ] && [ "${step[0]}" != file ]; then continue; fi
    case "${step[0]}" in
        gateways) ;;
        section) stop_bg; log "## ${step[1]}" ;;
        file)
            n=${step[1]} gw=${step[2]} path=${step[3]}
            [ -n "${GW_NS[$gw]:-}" ] || die "README conf block $n names unknown gateway $gw"
            dest=$(echo "$path" | gw_map "$gw")
            mkdir -p "$(dirname "$dest")"
            gw_map "$gw" <"$WORK/blocks/block-$n" >"$dest"
            ;;
        check)
            case "${step[1]:-}" in
                cluster) check_cluster || exit 1 ;;
                *) die "unknown check ${step[1]:-}" ;;
            esac
            ;;
        run)
            n=${step[1]} line=${step[2]#line=}
            skip=0 setup=0 bg=0 on=lan port="" text="" retry=0 limit=60
            for d in "${step[@]:3}"; do
                case "$d" in
                    skip) skip=1 ;;
                    setup) setup=1 ;;
                    background) bg=1 ;;
                    on=*) on=${d#on=} ;;
                    wait-port=*) port=${d#wait-port=} ;;
                    wait-for=*) text=${d#wait-for=} ;;
                    retry=*) retry=${d#retry=} ;;
                    timeout=*) limit=${d#timeout=} ;;
                esac
            done
            if [ "$skip" = 1 ] || { [ "$setup" = 1 ] && [ "$SETUP" = 0 ]; }; then
                SKIPPED=$((SKIPPED + 1)); continue
            fi
            [ "$setup" = 1 ] && on=host
            for where in ${on//,/ }; do
                log "README.md:$line on $where$([ "$bg" = 1 ] && echo ' (background)')"
                if [ "$bg" = 1 ]; then
                    run_bg "$n" "$where" "$line" "$port" "$text" || exit 1
                else
                    run_fg "$n" "$where" "$line" "$limit" "$retry" || exit 1
                fi
            done
            RAN=$((RAN + 1))
            ;;
    esac
done <"$WORK/blocks/plan"
stop_bg
FAILED=0
log "passed: $RAN blocks ran, $SKIPPED skipped (skip/setup)"
