#!/usr/bin/env bash
# Durable SignCsr over gRPC with the sled backend and with the PostgreSQL backend, same run,
# same machine, with calibrate's figure beside them; then OCSP served by a non-writer
# instance. PostgreSQL runs on loopback with fsync on and synchronous_commit = on; with
# PG_STANDBY=1 (the default when scripts/pg-cluster.sh exists) it is the primary of
# scripts/pg-cluster.sh with a synchronous standby, else a lone primary.
# Needs: release builds of ca-server and ca-loadtest; Debian's postgresql (scripts/test.sh
# installs it). Run as root (PostgreSQL runs as the postgres user).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$ROOT/target/release"
. "$ROOT/scripts/lib.sh"
WORK="${WORK:-$(mktemp -d)}"
N="${N:-20000}"
C="${C:-64}"
PORT="${PG_PORT:-56100}"
chmod 755 "$WORK"   # the postgres user reaches its data dir inside
echo "work dir $WORK"; cd "$WORK"
nproc; free -g | head -2; date -u

PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PG_STANDBY=${PG_STANDBY:-$([ -x "$ROOT/scripts/pg-cluster.sh" ] && echo 1 || echo 0)}
pg_up() {
  if [ "$PG_STANDBY" = 1 ]; then
    "$ROOT/scripts/pg-cluster.sh" destroy >/dev/null 2>&1 || true
    URL=$("$ROOT/scripts/pg-cluster.sh" up | tail -1)
  else
    rm -rf "$WORK/pg" && mkdir -p "$WORK/pg" && chown postgres "$WORK/pg"
    (cd / && runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/pg/data" -A trust -U postgres >/dev/null)
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w \
      -o "-p $PORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c synchronous_commit=on" start >/dev/null
    URL="postgres://postgres@127.0.0.1:$PORT/postgres"
  fi
}
pg_down() {
  if [ "$PG_STANDBY" = 1 ]; then "$ROOT/scripts/pg-cluster.sh" destroy >/dev/null 2>&1 || true
  else runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m fast stop >/dev/null || true; fi
}
cleanup() { pkill -f "$BIN/ca-server serve --data-dir (sled|pga|pgb)" 2>/dev/null || true; pg_down; }
trap cleanup EXIT

sign() { # label
  "$BIN/ca-loadtest" -q --json grpc-sign -n "$N" -c "$C" -k 2 --csrs 4000 --warmup 2s >sign.json
  python3 - "$1" <<'PY'
import json, sys
m = json.load(open('sign.json'))['measured']
print('%-28s %8.0f/s  p50 %6.1f ms  p99 %6.1f ms  errors %d' % (sys.argv[1], m['throughput_ok_per_s'],
      m['latency_us']['p50'] / 1e3, m['latency_us']['p99'] / 1e3, sum(m.get('errors', {}).values()) if isinstance(m.get('errors'), dict) else 0))
PY
}

echo "== calibrate"
"$BIN/ca-loadtest" -q calibrate --seconds 3

echo "== SignCsr, closed loop, c=$C, n=$N"
rm -rf sled && start_server "$BIN/ca-server" sled
sign "sled"
kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true

pg_up
echo "postgres: $([ "$PG_STANDBY" = 1 ] && echo 'primary + synchronous standby' || echo 'lone primary'), fsync on, synchronous_commit on"
rm -rf pga && start_server "$BIN/ca-server" pga --storage-url "$URL"
sign "postgres (writer)"

echo "== OCSP from a non-writer instance (and from the writer)"
mkdir -p pgb/keys && cp -a pga/keys/. pgb/keys/ && cp pga/*.pem pga/admin.key pgb/ && chmod 700 pgb/keys
WRITER_PID=$SERVER_PID; mv server.out writer.out; mv server.log writer.log
start_server "$BIN/ca-server" pgb --storage-url "$URL" --grpc-addr 127.0.0.1:50052 --http-addr 127.0.0.1:8081 --no-acme
FOLLOWER_PID=$SERVER_PID
# It answers OCSP once the writer issued it a delegated signer (/readyz says when).
for _ in $(seq 100); do curl -sf http://127.0.0.1:8081/readyz >/dev/null && break; sleep 0.1; done
# The certificates are issued at the writer first (--from-grpc), then queried. Each instance
# is measured twice, in the order writer, follower, follower, writer, so neither always
# runs on the warmer (or the more loaded) machine.
for who in "writer 127.0.0.1:8080" "follower 127.0.0.1:8081" "follower 127.0.0.1:8081" "writer 127.0.0.1:8080"; do
  set -- $who
  "$BIN/ca-loadtest" -q ocsp --url "http://$2/ocsp" --from-grpc http://127.0.0.1:50051 --certs 100 \
    -n 100000 -c 64 --method post 2>&1 | grep -E 'throughput|latency|errors' | sed "s/^/$1: /"
done
kill -TERM "$FOLLOWER_PID" "$WRITER_PID"; wait 2>/dev/null || true
date -u
