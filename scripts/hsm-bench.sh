#!/usr/bin/env bash
# Issuance rate over gRPC with the issuing key in software and in SoftHSM2 (PKCS#11), in the
# same run and interleaved (the VM's speed drifts; BENCHMARKS.md), with `ca-loadtest
# calibrate` before and after. Prints one row per server run.
#
#   WORK=/tmp/hsm-bench ROUNDS=2 N=20000 C=256 scripts/hsm-bench.sh
#
# Needs: softhsm2 (scripts/test.sh installs it), python3. Builds release unless SKIP_BUILD=1.
# Listens on GRPC_PORT/HTTP_PORT (default 50151/8180, ACME off) so it does not collide with
# a server on the default ports.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}"
. "$ROOT/scripts/lib.sh"
WORK="${WORK:-$(mktemp -d)}"
N="${N:-20000}"
C="${C:-256}"
ROUNDS="${ROUNDS:-2}"
GRPC_PORT="${GRPC_PORT:-50151}"
HTTP_PORT="${HTTP_PORT:-8180}"
MODULE=/usr/lib/softhsm/libsofthsm2.so
[ -e "$MODULE" ] || { echo "$MODULE missing: apt-get install softhsm2"; exit 1; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release -p ca-server -p ca-loadtest)
fi
mkdir -p "$WORK"; cd "$WORK"
echo "work dir $WORK"
echo "nproc $(nproc); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
uptime
date -u

# A token of our own (SOFTHSM2_CONF), the PIN in a 0600 file, and a config naming both.
rm -rf tokens && mkdir tokens
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$WORK" >softhsm2.conf
export SOFTHSM2_CONF="$WORK/softhsm2.conf"
softhsm2-util --init-token --free --label bench --pin 1234 --so-pin 5678 >/dev/null
(umask 077; echo 1234 >pin)
cat >hsm.toml <<TOML
[ca.pkcs11]
module = "$MODULE"
token_label = "bench"
key_label = "issuing"
pin_file = "$WORK/pin"
TOML
: >soft.toml
rm -rf data-soft data-hsm
"$BIN/ca-server" init --data-dir data-soft --config soft.toml >/dev/null
"$BIN/ca-server" init --pkcs11 --data-dir data-hsm --config hsm.toml >/dev/null

calibrate() {
  echo "== calibrate ($1)"
  "$BIN/ca-loadtest" -q calibrate --seconds 3 | grep -E 'cores|Authority::issue |ceiling' || true
}

# run KIND: serve the KIND data dir, one closed-loop grpc-sign run, print the row.
run() {
  local kind=$1
  start_server "$BIN/ca-server" "data-$kind" --config "$kind.toml" --no-acme \
    --grpc-addr "127.0.0.1:$GRPC_PORT" --http-addr "127.0.0.1:$HTTP_PORT"
  "$BIN/ca-loadtest" -q --json grpc-sign --addr "http://127.0.0.1:$GRPC_PORT" -n "$N" -c "$C" -k 2 \
    --csrs 4000 --warmup 3s >"sign-$kind.json"
  local hsm_signs
  hsm_signs=$(curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | awk '/^ca_hsm_sign_total /{print $2}')
  kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
  python3 - "$kind" "$hsm_signs" <<'PY'
import json, sys
m = json.load(open('sign-%s.json' % sys.argv[1]))['measured']
l = m['latency_us']
print('%-9s %9.0f %9.1f %9.1f %8d %12s' % (sys.argv[1], m['throughput_ok_per_s'], l['p50'] / 1e3,
      l['p99'] / 1e3, m['errors'], sys.argv[2]))
PY
}

calibrate before
echo "== grpc-sign closed loop: -n $N -c $C -k 2, P-256 issuing key"
printf '%-9s %9s %9s %9s %8s %12s\n' key "ok/s" "p50 ms" "p99 ms" errors "hsm signs"
for _ in $(seq "$ROUNDS"); do
  run soft
  run hsm
done
calibrate after
