#!/usr/bin/env bash
# The npm packages tests/browser.rs needs (mqtt.js's browser bundle and
# playwright-core, which drives Debian's /usr/bin/chromium and downloads no
# browser of its own), pinned by tests/browser/package.json and
# package-lock.json, installed with `npm ci` into a cache directory the way
# scripts/python-env.sh keeps its virtual environment.
#
#   bash scripts/node-env.sh            install if needed, print the directory
#   eval "$(bash scripts/node-env.sh --export)"   also set MIDGE_NODE_DIR
#
# The directory is $MIDGE_NODE_DIR (default ~/.cache/midge-node); it is
# reinstalled when its package-lock.json differs from the committed one.
# Needs node (>= 20) and npm (apt-get install -y nodejs npm) and access to
# the npm registry the first time.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
SRC=$(cd "$(dirname "$0")/../tests/browser" && pwd)
DIR=$(midge_node_dir)
command -v node >/dev/null 2>&1 || die "no node: apt-get install -y nodejs npm"
command -v npm >/dev/null 2>&1 || die "no npm: apt-get install -y npm"
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || die "node $(node -v) is too old for playwright-core: need 20 or newer"
ok() {
    cmp -s "$SRC/package-lock.json" "$DIR/package-lock.json" \
        && [ -f "$DIR/node_modules/mqtt/dist/mqtt.min.js" ] \
        && [ -f "$DIR/node_modules/playwright-core/package.json" ]
}
if ! ok; then
    log "installing mqtt and playwright-core into $DIR (npm ci)"
    mkdir -p "$DIR"
    rm -rf "$DIR/node_modules"
    cp "$SRC/package.json" "$SRC/package-lock.json" "$DIR/"
    (cd "$DIR" && timeout 300 npm ci --no-audit --no-fund --loglevel=error >&2) || die "npm ci in $DIR failed"
    ok || die "$DIR has no mqtt browser bundle or playwright-core after npm ci"
fi
if [ "${1:-}" = --export ]; then
    printf 'export MIDGE_NODE_DIR=%q\n' "$DIR"
else
    echo "$DIR"
fi
