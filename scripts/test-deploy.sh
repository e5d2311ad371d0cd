#!/usr/bin/env bash
# Tests scripts/deploy.sh without a gateway: installs into `--root $(mktemp -d)`
# and checks that the files landed with the right modes and content, that the
# unit gets enabled, that --dry-run changes nothing, that a wrong-architecture
# binary is refused, and (if systemd-analyze exists) that every board's unit
# passes `systemd-analyze verify` with no warnings.
# Needs no cross toolchain: the "binary" is a minimal AArch64/ARM ELF header.
# Prints "N passed, M failed" and exits non-zero if anything failed.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEPLOY=${DEPLOY:-$REPO/scripts/deploy.sh}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0 failn=0
ok() { pass=$((pass + 1)); echo "ok   - $*"; }
bad() { failn=$((failn + 1)); echo "FAIL - $*"; }
check() { local d=$1; shift; if "$@"; then ok "$d"; else bad "$d"; fi; }
mode_is() { [[ $(stat -c %a "$1" 2>/dev/null) == "$2" ]]; }
same() { cmp -s "$1" "$2"; }

# Minimal ELF header: $1 = 64|32, $2 = e_machine (183 AArch64, 40 ARM).
fake_elf() {
  local out=$1 cls=$2 mach=$3
  if [[ $cls == 64 ]]; then
    printf '\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00' >"$out"
    printf "\\x02\\x00\\x$(printf %02x "$mach")\\x00\\x01\\x00\\x00\\x00" >>"$out"
    head -c 40 /dev/zero >>"$out"                       # entry, phoff, shoff, flags
    printf '\x40\x00\x38\x00\x00\x00\x40\x00\x00\x00\x00\x00' >>"$out"  # sizes, counts
  else
    printf '\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00' >"$out"
    printf "\\x02\\x00\\x$(printf %02x "$mach")\\x00\\x01\\x00\\x00\\x00" >>"$out"
    head -c 16 /dev/zero >>"$out"
    printf '\x34\x00\x20\x00\x00\x00\x28\x00\x00\x00\x00\x00' >>"$out"
  fi
  printf 'midge-test-%s\n' "$RANDOM$RANDOM" >>"$out"   # unique content
}
fake_elf "$T/midge-a64" 64 183
fake_elf "$T/midge-arm" 32 40

# ---------------------------------------------------------------- 1. install
R=$T/root1
out=$("$DEPLOY" --root "$R" --binary "$T/midge-a64" 2>&1); rc=$?
echo "$out" | sed 's/^/    /'
check "deploy --root exits 0" test "$rc" -eq 0
B=$REPO/boards/generic-arm64-gateway
check "binary installed at usr/local/bin/midge" same "$T/midge-a64" "$R/usr/local/bin/midge"
check "binary mode 0755" mode_is "$R/usr/local/bin/midge" 755
check "config is the default board's (generic-arm64-gateway for aarch64 musl)" same "$B/midge.conf" "$R/etc/midge/midge.conf"
check "config mode 0644" mode_is "$R/etc/midge/midge.conf" 644
check "unit installed" same "$B/midge.service" "$R/etc/systemd/system/midge.service"
check "unit mode 0644" mode_is "$R/etc/systemd/system/midge.service" 644
check "unit runs /usr/local/bin/midge -c /etc/midge/midge.conf" \
  grep -qx 'ExecStart=/usr/local/bin/midge -c /etc/midge/midge.conf' "$R/etc/systemd/system/midge.service"
if command -v systemctl >/dev/null; then
  check "unit enabled (multi-user.target.wants symlink)" \
    test "$(readlink "$R/etc/systemd/system/multi-user.target.wants/midge.service")" = /etc/systemd/system/midge.service
fi
check "nothing outside usr/local/bin, etc/midge, etc/systemd/system" \
  test -z "$(cd "$R" && find . -type f -o -type l | grep -v '^\./usr/local/bin/midge$\|^\./etc/midge/\|^\./etc/systemd/system/')"

# ------------------------------------------- 2. upgrade with another config
printf 'listener 1883\nallow_anonymous true\n' >"$T/custom.conf"
"$DEPLOY" --root "$R" --binary "$T/midge-a64" --config "$T/custom.conf" >/dev/null 2>&1
check "second deploy with --config installs it" same "$T/custom.conf" "$R/etc/midge/midge.conf"
bak=$(ls "$R"/etc/midge/midge.conf.bak-* 2>/dev/null | head -1)
check "changed config backed up as midge.conf.bak-*" test -n "$bak"
[[ -n $bak ]] && check "backup holds the previous config" same "$B/midge.conf" "$bak"

# -------------------------------------------- 3. other targets and boards
R2=$T/root2
"$DEPLOY" --root "$R2" --target armv7-unknown-linux-gnueabihf --binary "$T/midge-arm" >/dev/null 2>&1
check "armv7 target uses generic-armv7-gateway" same "$REPO/boards/generic-armv7-gateway/midge.conf" "$R2/etc/midge/midge.conf"
check "armv7 binary mode 0755" mode_is "$R2/usr/local/bin/midge" 755
R3=$T/root3
"$DEPLOY" --root "$R3" --target aarch64-unknown-linux-gnu --board rpi3-zero2w --binary "$T/midge-a64" >/dev/null 2>&1
check "--board rpi3-zero2w selects its unit" same "$REPO/boards/rpi3-zero2w/midge.service" "$R3/etc/systemd/system/midge.service"

# -------------------------------------------------------- 4. refusals
"$DEPLOY" --root "$T/root4" --binary "$T/midge-arm" >/dev/null 2>&1
check "32-bit ARM binary refused for an aarch64 target" test $? -ne 0
check "  ...and nothing installed" test ! -e "$T/root4/usr/local/bin/midge"
"$DEPLOY" --root "$T/root5" --binary "$T/nonexistent" >/dev/null 2>&1
check "missing binary refused" test $? -ne 0
"$DEPLOY" --root "$T/root5" --target x86_64-unknown-linux-gnu --binary "$T/midge-a64" >/dev/null 2>&1
check "unknown target refused" test $? -ne 0
"$DEPLOY" >/dev/null 2>&1
check "no HOST and no --root refused" test $? -ne 0

# -------------------------------------------------------- 5. dry runs
out=$("$DEPLOY" --root "$T/root6" --binary "$T/midge-a64" --dry-run 2>&1); rc=$?
check "--dry-run --root exits 0" test "$rc" -eq 0
check "--dry-run --root creates nothing" test ! -e "$T/root6"
check "--dry-run prints install -m 0755" grep -q 'install -m 0755' <<<"$out"
# A .invalid host cannot resolve: the dry run must not try to reach it.
out=$("$DEPLOY" gw.invalid --binary "$T/midge-a64" --dry-run 2>&1); rc=$?
check "--dry-run over ssh exits 0 without contacting the host" test "$rc" -eq 0
check "ssh dry run shows scp of the three files" grep -q '^+ scp .*gw.invalid:' <<<"$out"
check "ssh dry run installs the binary 0755" grep -q 'install -m 0755 "$S/midge" "$R/usr/local/bin/midge"' <<<"$out"
check "ssh dry run runs daemon-reload && enable --now" grep -q 'systemctl daemon-reload && systemctl enable --now midge' <<<"$out"

# ---------------------------------------- 6. systemd-analyze on every board
if command -v systemd-analyze >/dev/null && [[ -d /usr/lib/systemd/system || -d /lib/systemd/system ]]; then
  for b in "$REPO"/boards/*/; do
    b=$(basename "$b")
    [[ -f $REPO/boards/$b/midge.service ]] || continue
    RV=$T/verify-$b
    "$DEPLOY" --root "$RV" --board "$b" --binary "$T/midge-a64" >/dev/null 2>&1
    mkdir -p "$RV/usr/lib/systemd"
    cp -a "$( [[ -d /usr/lib/systemd/system ]] && echo /usr/lib/systemd/system || echo /lib/systemd/system)" "$RV/usr/lib/systemd/"
    # verify exits 0 on unknown keys and bad values: any output is a failure.
    vout=$(systemd-analyze verify --man=no --root="$RV" "$RV/etc/systemd/system/midge.service" 2>&1); vrc=$?
    [[ -n $vout ]] && echo "$vout" | sed 's/^/    /'
    check "systemd-analyze verify boards/$b/midge.service: clean" test "$vrc" -eq 0 -a -z "$vout"
    exposure=$(systemd-analyze security --offline=yes --root="$RV" midge.service 2>/dev/null | sed -n 's/.*Overall exposure level for midge.service: \([0-9.]*\).*/\1/p')
    check "systemd-analyze security boards/$b: exposure ${exposure:-?} <= 2.5" \
      awk -v e="${exposure:-99}" 'BEGIN{exit !(e <= 2.5)}'
  done
else
  echo "skip - systemd-analyze not available: units not verified"
fi

# ------------------------------------------------- 7. board file contents
for b in "$REPO"/boards/*/; do
  b=${b%/}; n=$(basename "$b")
  check "boards/$n has README.md, midge.conf, midge.service" test -f "$b/README.md" -a -f "$b/midge.conf" -a -f "$b/midge.service"
  allowed='^(listener 1883|allow_anonymous|max_inflight_messages|max_queued_messages|max_queued_bytes|memory_limit|max_packet_size|message_size_limit|max_keepalive|persistent_client_expiration|sys_interval|log_type|persistence|persistence_location /var/lib/midge|cluster_tick_ms|cluster_election_ticks|cluster_heartbeat_ticks)( |$)'
  check "boards/$n/midge.conf uses only the supported keys" \
    test -z "$(grep -v '^[[:space:]]*\(#\|$\)' "$b/midge.conf" | grep -Ev "$allowed")"
  for k in 'ProtectSystem=strict' 'ReadWritePaths=/var/lib/midge' 'StateDirectory=midge' 'NoNewPrivileges=yes' \
    'PrivateTmp=yes' 'ProtectHome=yes' 'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' 'Restart=on-failure' \
    'RestartSec=1' 'LimitNOFILE=65536' 'ExecStart=/usr/local/bin/midge -c /etc/midge/midge.conf'; do
    grep -qx "$k" "$b/midge.service" || bad "boards/$n/midge.service lacks $k"
  done
  check "boards/$n/midge.service sets MemoryMax" grep -q '^MemoryMax=[0-9]' "$b/midge.service"
  check "boards/$n/midge.service runs as a non-root user" grep -Eq '^(DynamicUser=yes|User=midge)$' "$b/midge.service"
done

echo
echo "test-deploy: $pass passed, $failn failed"
((failn == 0))
