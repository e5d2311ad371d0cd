#!/usr/bin/env bash
# Regenerates the TLS test fixtures in tests/fixtures/tls (test-only keys,
# committed so that tests do not depend on openssl at run time):
#   ca.pem                 test CA (EC P-256, valid 100 years)
#   server.pem/.key        server certificate for localhost / 127.0.0.1 / ::1
#   client.pem/.key        client certificate (CN midge-test-client) by ca.pem
#   other-ca.pem           an unrelated CA
#   other-client.pem/.key  a client certificate by other-ca.pem (must be refused)
#   subject.pem            self-signed, with a subject that needs RFC 2253
#                          escapes (use_subject_as_username; key not kept)
#   id-ca.pem              a CA for the certificate-name logins
#   id-client.pem/.key     by id-ca.pem: /C=DE/O=plant, north/CN=sensor-1
#   id-nocn.pem/.key       by id-ca.pem: a subject without CN (/O=midge test)
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
subject() { # the subject.pem fixture alone
  key "$tmp/subject.key"
  openssl req -x509 -new -utf8 -multivalue-rdn -key "$tmp/subject.key" -days $days \
    -subj "/C=DE/L=Köln/O=Acme \\+ Co/OU=line, north/CN=sensor 7+UID=s7/emailAddress=ops@example.com" \
    -out "$OUT/subject.pem"
}
subject
identity() { # id-ca and its clients alone
  ca id-ca
  for c in "id-client:/C=DE/O=plant, north/CN=sensor-1" "id-nocn:/O=midge test"; do
    key "$OUT/${c%%:*}.key"
    openssl req -new -key "$OUT/${c%%:*}.key" -subj "${c#*:}" -out "$tmp/${c%%:*}.csr"
    printf 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n' > "$tmp/${c%%:*}.ext"
    openssl x509 -req -in "$tmp/${c%%:*}.csr" -CA "$OUT/id-ca.pem" -CAkey "$tmp/id-ca.key" -CAcreateserial \
      -CAserial "$tmp/id-ca.srl" -days $days -extfile "$tmp/${c%%:*}.ext" -out "$OUT/${c%%:*}.pem" 2>/dev/null
  done
}
identity
chmod 0644 "$OUT"/*
echo "wrote $(ls "$OUT" | wc -l) files to $OUT"
