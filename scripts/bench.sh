#!/usr/bin/env bash
# Reproduces the figures in BENCHMARKS.md on one machine, in one run:
# calibrate (raw limit) -> ca-server grpc-sign (closed loop with the lean h2 client, the same
# with tonic's client, then open loop at 80/70/60% of the h2 peak) -> calibrate again -> OCSP (POST, GET) -> cfssl serve (same machine).
# Needs: release builds of ca-server and ca-loadtest; Debian packages golang-cfssl, hey.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$ROOT/target/release"
. "$ROOT/scripts/lib.sh"
WORK="${WORK:-$(mktemp -d)}"
N="${N:-60000}"
echo "work dir $WORK"; cd "$WORK"
nproc; free -g | head -2; date -u

echo "== calibrate (before)"
"$BIN/ca-loadtest" -q calibrate --seconds 3

rm -rf data && start_server "$BIN/ca-server" data
echo "== grpc-sign closed loop, c=256"
"$BIN/ca-loadtest" -q --json grpc-sign -n "$N" -c 256 -k 2 --csrs 4000 --warmup 3s >sign.json
python3 -c "import json;m=json.load(open('sign.json'))['measured'];print('peak %.0f/s p50 %.1f p99 %.1f ms'%(m['throughput_ok_per_s'],m['latency_us']['p50']/1e3,m['latency_us']['p99']/1e3))"
PEAK=$(python3 -c "import json;print(int(json.load(open('sign.json'))['measured']['throughput_ok_per_s']))")
echo "== grpc-sign closed loop, c=256, with the tonic client (for comparison with the lean h2 one)"
"$BIN/ca-loadtest" -q grpc-sign -n "$N" -c 256 -k 2 --csrs 4000 --warmup 3s --client tonic \
  | grep -E 'throughput|latency|errors'
for PCT in 80 70 60; do
  RATE=$((PEAK * PCT / 100))
  echo "== grpc-sign open loop at $PCT% of peak: $RATE/s for 20 s"
  "$BIN/ca-loadtest" -q grpc-sign -d 20s --rate "$RATE" -c 1024 -k 2 --csrs 4000 --warmup 2s \
    | grep -E 'throughput|latency|start lag|errors'
done
echo "== grpc-sign c=32 (latency at moderate load)"
"$BIN/ca-loadtest" -q grpc-sign -n 20000 -c 32 -k 2 --csrs 4000

echo "== calibrate (after)"
"$BIN/ca-loadtest" -q calibrate --seconds 3

echo "== OCSP (cached answers), POST and GET"
"$BIN/ca-loadtest" -q ocsp --from-grpc http://127.0.0.1:50051 --certs 100 -n 300000 -c 64 --method post
"$BIN/ca-loadtest" -q ocsp --from-grpc http://127.0.0.1:50051 --certs 100 -n 300000 -c 64 --method get
curl -s http://127.0.0.1:8080/metrics | grep -E '^ca_log_(batches|records|checkpoints)_total|^ca_log_flush_seconds_total'
kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true

echo "== cfssl 1.2 serve, P-256 CA, POST /api/v1/cfssl/sign (no storage)"
mkdir -p cfssl && cd cfssl
echo '{"CN":"Bench cfssl CA","key":{"algo":"ecdsa","size":256}}' >ca-csr.json
echo '{"signing":{"default":{"expiry":"168h","usages":["digital signature","server auth"]}}}' >config.json
cfssl gencert -initca ca-csr.json 2>/dev/null | cfssljson -bare ca
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -out leaf.csr \
  -subj /CN=svc.example.internal -addext subjectAltName=DNS:svc.example.internal 2>/dev/null
python3 -c "import json;print(json.dumps({'certificate_request':open('leaf.csr').read(),'hosts':['svc.example.internal']}))" >body.json
(cfssl serve -ca ca.pem -ca-key ca-key.pem -address 127.0.0.1 -port 8888 -config config.json >serve.log 2>&1 &)
sleep 2
for c in 32 128; do
  echo "-- hey -c $c"
  hey -n 30000 -c "$c" -m POST -T application/json -D body.json http://127.0.0.1:8888/api/v1/cfssl/sign \
    | grep -E 'Requests/sec|50% in|99% in|\[[0-9]+\]'
done
pkill -f "cfssl serve" || true
