#!/usr/bin/env bash
# Restart time and memory of ca-server on a big store, measured on a fresh copy of it:
# start -> /healthz, RSS after open and every 5 s of 30 s of closed-loop load, then kill -9
# under load and the restart after it (journal records written back, replayed records).
#
#   scripts/store-at-scale.sh STORE_DIR [extra serve args, e.g. --config c64.toml]
#
# STORE_DIR is left untouched (fill one with `ca-server serve --insecure-grpc --data-dir D`
# and `ca-loadtest grpc-sign -n 1000000 -c 256 -k 2 --csrs 4000`); the copy goes to a temp dir.
# gRPC is plaintext (--insecure-grpc): ca-loadtest speaks http:// only.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$ROOT/target/release"
SRC="$1"; shift
WORK="$(mktemp -d)"; D="$WORK/data"
trap 'rm -rf "$WORK"' EXIT
cp -a "$SRC" "$D"; sync
# Wait for /healthz from server $1; give up if that process exits (e.g. the port was taken).
health() {
  until curl -sf http://127.0.0.1:8080/healthz >/dev/null 2>&1; do
    kill -0 "$1" 2>/dev/null || return 1
    sleep 0.02
  done
  # /healthz could come from another server on the port: ours must still be running.
  kill -0 "$1" 2>/dev/null
}
rss() { awk '/VmRSS/ {print int($2/1024)}' "/proc/$1/status"; }

# start LABEL LOG [serve args]: start the server, wait for /healthz, print how long it took,
# what the store logged at open and the RSS; sets $pid.
start() {
  local label=$1 log=$2; shift 2
  local t0 t1
  t0=$(date +%s.%N)
  "$BIN/ca-server" serve --insecure-grpc --data-dir "$D" "$@" >"$log.out" 2>"$log" &
  pid=$!
  health "$pid" || { echo "ca-server did not start:"; cat "$log"; exit 1; }
  t1=$(date +%s.%N)
  echo "$label: start -> /healthz $(python3 -c "print('%.2f' % ($t1 - $t0))") s;" \
    "$(grep -oE 'recovered=[0-9]+|records=[0-9]+|replayed=[0-9]+|elapsed_ms=[0-9]+' "$log" | tr '\n' ' ')RSS $(rss $pid) MB"
}

start "clean restart" "$WORK/s1.log" "$@"
"$BIN/ca-loadtest" -q grpc-sign -d 30s -c 256 -k 2 --csrs 4000 >"$WORK/load.out" 2>&1 &
load=$!
for i in 1 2 3 4 5 6; do sleep 5; printf 't=%ss %s MB; ' $((i * 5)) "$(rss $pid)"; done; echo
wait "$load"; grep throughput "$WORK/load.out"

"$BIN/ca-loadtest" -q grpc-sign -d 8s -c 64 -k 2 --csrs 2000 >/dev/null 2>&1 &
load=$!
sleep 5; kill -9 "$pid"; wait "$load" || true
start "after kill -9" "$WORK/s2.log" "$@"
kill "$pid"; wait "$pid" 2>/dev/null || true
