#!/usr/bin/env bash
# Regenerates the TLS test fixtures in tests/fixtures/tls (test-only keys,
# committed so that tests do not depend on openssl at run time):
#   ca.pem                 test CA (EC P-256, valid 100 years)
#   server.pem/.key        server certificate for localhost / 127.0.0.1 / ::1
#   client.pem/.key        client certificate (CN midge-test-client) by ca.pem
#   other-ca.pem           an unrelated CA
#   other-client.pem/.key  a client certificate by other-ca.pem (must be refused)
# Usage: scripts/gen-test-certs.sh [OUT_DIR]
set -euo pipefail
OUT=${1:-$(cd "$(dirname "$0")/.." && pwd)/tests/fixtures/tls}
mkdir -p "$OUT"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
days=36500
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ca() { # name
  key "$tmp/$1.key"
  openssl req -x509 -new -key "$tmp/$1.key" -days $days -subj "/CN=midge test $1" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$OUT/$1.pem"
}
leaf() { # name ca cn ext
  key "$OUT/$1.key"
  openssl req -new -key "$OUT/$1.key" -subj "/CN=$3" -out "$tmp/$1.csr"
  printf '%s\n' "$4" > "$tmp/$1.ext"
  openssl x509 -req -in "$tmp/$1.csr" -CA "$OUT/$2.pem" -CAkey "$tmp/$2.key" -CAcreateserial -CAserial "$tmp/$2.srl" \
    -days $days -extfile "$tmp/$1.ext" -out "$OUT/$1.pem" 2>/dev/null
}
ca ca
ca other-ca
leaf server ca localhost "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
extendedKeyUsage=serverAuth
basicConstraints=CA:FALSE"
leaf client ca midge-test-client "extendedKeyUsage=clientAuth
basicConstraints=CA:FALSE"
leaf other-client other-ca midge-test-other "extendedKeyUsage=clientAuth
basicConstraints=CA:FALSE"
chmod 0644 "$OUT"/*
echo "wrote $(ls "$OUT" | wc -l) files to $OUT"
