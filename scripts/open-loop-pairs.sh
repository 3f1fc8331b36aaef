#!/usr/bin/env bash
# The p99-at-80%-of-peak target, ROUNDS times: per round a fresh server, calibrate, the
# closed-loop peak (c=256), then 20 s of open loop at 80 % of that peak.
#
#   ROUNDS=3 scripts/open-loop-pairs.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$ROOT/target/release"
. "$ROOT/scripts/lib.sh"
WORK="$(mktemp -d)"; cd "$WORK"
trap 'rm -rf "$WORK"' EXIT
for r in $(seq "${ROUNDS:-3}"); do
  rm -rf data
  start_server "$BIN/ca-server" data
  pid=$SERVER_PID
  cal=$("$BIN/ca-loadtest" -q calibrate --seconds 2 | awk '/^ceiling/ {print $2}')
  "$BIN/ca-loadtest" -q --json grpc-sign -n 60000 -c 256 -k 2 --csrs 4000 --warmup 3s >peak.json
  peak=$(python3 -c "import json; print(int(json.load(open('peak.json'))['measured']['throughput_ok_per_s']))")
  rate=$((peak * 80 / 100))
  "$BIN/ca-loadtest" -q grpc-sign -d 20s --rate "$rate" -c 1024 -k 2 --csrs 4000 --warmup 2s >open.out
  echo "round $r: calibrate $cal, peak $peak/s ($((100 * peak / cal)) %), open loop at $rate/s:" \
    "$(grep -E '^(throughput|latency)' open.out | tr -s ' ' | tr '\n' ' ')"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
