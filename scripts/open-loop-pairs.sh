#!/usr/bin/env bash
# The p99-at-80%-of-peak target, ROUNDS times: per round a fresh server, calibrate, the
# closed-loop peak (c=256), then 20 s of open loop at 80 % of that peak.
#
#   ROUNDS=3 scripts/open-loop-pairs.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$ROOT/target/release"
WORK="$(mktemp -d)"; cd "$WORK"
for r in $(seq "${ROUNDS:-3}"); do
  rm -rf data
  "$BIN/ca-server" serve --data-dir data >server.out 2>server.log &
  pid=$!
  for _ in $(seq 50); do grep -q "ca-server ready" server.out 2>/dev/null && break; sleep 0.1; done
  grep -q "ca-server ready" server.out || { echo "ca-server did not start:"; cat server.log; exit 1; }
  cal=$("$BIN/ca-loadtest" -q calibrate --seconds 2 | awk '/^ceiling/ {print $2}')
  "$BIN/ca-loadtest" -q --json grpc-sign -n 60000 -c 256 -k 2 --csrs 4000 --warmup 3s >peak.json
  peak=$(python3 -c "import json; print(int(json.load(open('peak.json'))['measured']['throughput_ok_per_s']))")
  rate=$((peak * 80 / 100))
  "$BIN/ca-loadtest" -q grpc-sign -d 20s --rate "$rate" -c 1024 -k 2 --csrs 4000 --warmup 2s >open.out
  echo "round $r: calibrate $cal, peak $peak/s ($((100 * peak / cal)) %), open loop at $rate/s:" \
    "$(grep -E '^(throughput|latency)' open.out | tr -s ' ' | tr '\n' ' ')"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
rm -rf "$WORK"
