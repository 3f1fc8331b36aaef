#!/usr/bin/env bash
# Takeover time on the PostgreSQL backend: two ca-server instances on one database; ROUNDS
# times, kill -9 the writer and time until the other one has issued a certificate (a
# `ca-server client sign` every 50 ms), then restart the killed one as the follower.
# Prints each round, then the median and the worst. The lease TTL is the server default
# (3 s) unless LEASE_TTL_MS is set. Needs the release build and Debian's postgresql; root.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$ROOT/target/release"
ROUNDS=${ROUNDS:-10}
PORT=${PG_PORT:-56200}
WORK="${WORK:-$(mktemp -d)}"
chmod 755 "$WORK"
cd "$WORK"
echo "work dir $WORK" >&2
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
mkdir -p "$WORK/pg" "$WORK/sock" && chown postgres "$WORK/pg" "$WORK/sock"
(cd / && runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/pg" -A trust -U postgres >/dev/null)
(cd / && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/sock/pg.log" -w \
  -o "-p $PORT -k $WORK/sock -c listen_addresses=127.0.0.1" start >/dev/null)
URL="postgres://postgres@127.0.0.1:$PORT/postgres"
PIDS=()
cleanup() {
  kill -9 "${PIDS[@]}" 2>/dev/null || true
  (cd / && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null) || true
}
trap cleanup EXIT
[ -n "${LEASE_TTL_MS:-}" ] && printf '[storage]\nlease_ttl_ms = %s\n' "$LEASE_TTL_MS" >ca.toml || : >ca.toml

serve() { # name grpc-port http-port
  "$BIN/ca-server" serve --data-dir "$1" --storage-url "$URL" --config ca.toml --insecure-grpc --no-acme \
    --grpc-addr "127.0.0.1:$2" --http-addr "127.0.0.1:$3" >"$1.out" 2>>"$1.log" &
  PIDS+=($!)
  eval "PID_$1=$!"
  disown  # no "Killed" report from bash for each kill -9
  for _ in $(seq 100); do grep -q "ca-server ready" "$1.out" 2>/dev/null && return; sleep 0.1; done
  echo "$1 did not start:" >&2; cat "$1.log" >&2; exit 1
}
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout k.pem -out r.csr \
  -subj /CN=t.example.internal -addext subjectAltName=DNS:t.example.internal 2>/dev/null
serve a 50061 8091
mkdir -p b/keys && cp -a a/keys/. b/keys/ && cp a/*.pem a/admin.key b/ && chmod 700 b/keys
serve b 50062 8092
declare -A GRPC=([a]=50061 [b]=50062) HTTP=([a]=8091 [b]=8092)
writer=a follower=b
times=()
for r in $(seq "$ROUNDS"); do
  "$BIN/ca-server" client --addr "http://127.0.0.1:${GRPC[$writer]}" sign --csr r.csr --out /dev/null >/dev/null 2>&1
  pid_var="PID_$writer"
  start=$(date +%s%N)
  kill -9 "${!pid_var}"
  until "$BIN/ca-server" client --addr "http://127.0.0.1:${GRPC[$follower]}" sign --csr r.csr --out /dev/null >/dev/null 2>&1; do
    sleep 0.05
  done
  ms=$((($(date +%s%N) - start) / 1000000))
  times+=("$ms")
  echo "round $r: $follower issued $ms ms after the kill -9 of $writer"
  serve "$writer" "${GRPC[$writer]}" "${HTTP[$writer]}"
  tmp=$writer; writer=$follower; follower=$tmp
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "takeover over %d rounds: median %d ms, worst %d ms\n", NR, (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2), a[NR]}'
