#!/usr/bin/env bash
# Install the Debian packages the test suite runs against (only those missing), then run
# the whole workspace's tests, then a short fuzz pass (scripts/fuzz.sh, 10 s per AFL++
# target; a crash fails the run). Arguments go to `cargo test`, and then the fuzz pass is
# left out (a filtered run is someone iterating on a test).
#
#   openssl          openssl verify / ocsp / crl checks
#   ca-certificates  a CA bundle for the clients' HTTPS stacks
#   certbot, lego    the real ACME clients of tests/acme_interop.rs
#   pebble           /usr/bin/pebble-challtestsrv: DNS server and challenge responder
#   python3          lego's dns-01 exec hook; tests/grpc_python.rs (grpcio client)
#   python3-pip      tests/grpc_python.rs pip-installs pinned grpcio/grpcio-tools from PyPI
#                    into the target dir (once; later runs reuse it)
#   softhsm2         the PKCS#11 token of tests/pkcs11.rs (/usr/lib/softhsm/libsofthsm2.so,
#                    softhsm2-util to make a fresh token per test)
#   postgresql       the PostgreSQL backend's tests (storage/tests/pg_store.rs and the
#                    ca-server ones start throwaway servers from /usr/lib/postgresql/*/bin)
set -euo pipefail

cd "$(dirname "$0")/.."

missing=()
have() { command -v "$1" >/dev/null 2>&1; }
have openssl || missing+=(openssl)
[ -s /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
have certbot || missing+=(certbot)
have lego || missing+=(lego)
[ -x /usr/bin/pebble-challtestsrv ] || missing+=(pebble)
have python3 || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
{ have softhsm2-util && [ -e /usr/lib/softhsm/libsofthsm2.so ]; } || missing+=(softhsm2)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)

if [ "${#missing[@]}" -gt 0 ]; then
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

cargo test --workspace "$@"
if [ "$#" -eq 0 ]; then
  # Fresh machine: ~5 min to install cargo-afl with its AFL++, ~9 min for the instrumented
  # build at AFL_OPT_LEVEL=1, 1 min of fuzzing; both kept in ~/.cache for the next run.
  AFL_OPT_LEVEL=${AFL_OPT_LEVEL:-1} CA_FUZZ_TARGET=${CA_FUZZ_TARGET:-$HOME/.cache/ca-fuzz/target} scripts/fuzz.sh 10
fi
