#!/usr/bin/env bash
# Regenerate the seed corpora in fuzz/corpus/: openssl-made CSRs and OCSP requests here,
# the rest (rcgen CSRs, JWS bodies and ACME payloads signed as the ACME clients sign them,
# OCSP requests for a real CA, events and a commit journal from the real event store) by
# the gen-corpus binary. Seeds are small and random keys differ per run.
set -euo pipefail
cd "$(dirname "$0")"
corpus=corpus
rm -rf "$corpus"
mkdir -p "$corpus"/{csr,jws,ocsp_request,event,journal,acme_json}

cargo run --quiet --bin gen-corpus -- "$corpus"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
csr() { # name, then `openssl req -newkey` arguments
  local name=$1
  shift
  openssl req -new -nodes -keyout "$tmp/$name.key" -out "$corpus/csr/openssl-$name.pem" "$@" 2>/dev/null
}
csr ec-p256 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj /CN=svc.example.internal \
  -addext "subjectAltName=DNS:svc.example.internal,IP:10.0.0.7,IP:fd00::7"
csr ec-p384 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -subj "/O=Example/CN=p384.example.internal"
csr rsa2048 -newkey rsa:2048 -subj /CN=rsa.example.internal -addext "subjectAltName=DNS:rsa.example.internal"
csr ed25519 -newkey ed25519 -subj /CN=ed.example.internal -addext "subjectAltName=DNS:ed.example.internal,URI:spiffe://cluster.local/ns/a/sa/b"
sans=$(for i in $(seq 1 30); do printf 'DNS:host%d.example.internal,' "$i"; done)
csr ec-p256-30-sans -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj /CN=host1.example.internal \
  -addext "subjectAltName=${sans%,}" -addext "keyUsage=digitalSignature" -addext "extendedKeyUsage=serverAuth"
openssl req -in "$corpus/csr/openssl-ec-p256.pem" -outform DER -out "$corpus/csr/openssl-ec-p256.der"

# OCSP requests as `openssl ocsp` writes them (with and without a nonce, SHA-1 and SHA-256
# CertIDs, two serials in one request) against a throwaway CA.
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout "$tmp/ca.key" \
  -out "$tmp/ca.pem" -subj "/CN=Fuzz Seeds CA" -days 1 2>/dev/null
openssl ocsp -issuer "$tmp/ca.pem" -serial 0x41020304050607 -reqout "$corpus/ocsp_request/openssl-sha1-nonce.der" >/dev/null
openssl ocsp -issuer "$tmp/ca.pem" -serial 0x41020304050607 -no_nonce -reqout "$corpus/ocsp_request/openssl-sha1.der" >/dev/null
openssl ocsp -sha256 -issuer "$tmp/ca.pem" -serial 0x1 -serial 0x7fffffffffffffffffffffffffffffff \
  -reqout "$corpus/ocsp_request/openssl-sha256-two.der" >/dev/null

for d in "$corpus"/*; do
  printf '%-14s %3d files %6d bytes\n' "$(basename "$d")" "$(find "$d" -type f | wc -l)" "$(cat "$d"/* | wc -c)"
done
