#!/usr/bin/env bash
# The cost of mTLS on gRPC, on this machine, in one run, same release build:
#   (a) steady-state SignCsr rate over kept-alive connections: mTLS (the default listener,
#       admin credential) against --insecure-grpc plaintext;
#   (b) a new connection per request (`ca-loadtest handshake`: TCP + TLS with the client
#       certificate + HTTP/2 + one GetCaCertificates, then close): connections/s and server
#       CPU per connection, full TLS handshakes, with TLS resumption, and plaintext; plus
#       `openssl s_time -new` (an independent client: full handshakes only, no HTTP/2).
# ROUNDS rounds, each mTLS then plaintext on fresh data dirs; server CPU from /proc/PID/stat
# before/after each run, generator CPU from /usr/bin/time.
#
#   scripts/grpc-tls-bench.sh                    # ROUNDS=2 D=10s
#   SKIP_BUILD=1 ROUNDS=3 D=15s scripts/grpc-tls-bench.sh
#
# Needs: openssl, python3, /usr/bin/time (Debian package `time`).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}"
. "$ROOT/scripts/lib.sh"
ROUNDS="${ROUNDS:-2}"; D="${D:-10s}"
SIGN="${SIGN:--c 256 -k 2 --csrs 4000 --warmup 2s}"   # grpc-sign load, as in bench.sh
HS="${HS:--c 8 --warmup 1s}"                          # handshake load
WORK="${WORK:-$(mktemp -d)}"
TICK=$(getconf CLK_TCK)
SERVER_PID=
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true; }
trap cleanup EXIT

if [ -z "${SKIP_BUILD:-}" ]; then
  echo "== build"
  (cd "$ROOT" && cargo build --release -p ca-server -p ca-loadtest)
fi
mkdir -p "$WORK"; echo "work dir $WORK"; cd "$WORK"
echo "== machine"
echo "nproc $(nproc); $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'); $(free -g | awk '/^Mem:/ {print $2}') GiB RAM"
echo "$(date -u +%FT%TZ); $("$BIN/ca-loadtest" --version); $(openssl version)"
echo "load before: $(uptime)"

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# measure LABEL CMD...: run a generator command against $SERVER_PID; LABEL.json (its stdout),
# LABEL.cpu (server ticks before/after, tick rate), LABEL.gen (generator user/sys seconds)
measure() {
  local label=$1 c0 c1
  shift
  c0=$(cpu "$SERVER_PID")
  /usr/bin/time -f "%U %S" -o "$label.gen" "$@" >"$label.json" 2>"$label.err" \
    || { echo "$label failed:"; cat "$label.err"; exit 1; }
  c1=$(cpu "$SERVER_PID")
  echo "$c0 $c1 $TICK" >"$label.cpu"
}

# s_time LABEL PORT: full TLS handshakes with the admin certificate for D seconds.
s_time() {
  local label=$1 port=$2 c0 c1 secs=${D%s} t0 t1
  c0=$(cpu "$SERVER_PID"); t0=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o "$label.gen" openssl s_time -connect "127.0.0.1:$port" -new \
    -CAfile data/root.pem -cert data/admin.pem -key data/admin.key -time "$secs" >"$label.txt" 2>&1 || true
  c1=$(cpu "$SERVER_PID"); t1=$(date +%s.%N)
  echo "$c0 $c1 $TICK" >"$label.cpu"
  # s_time reports whole real seconds only: the wall time is taken here.
  echo "$t0 $t1" >"$label.wall"
}

echo "== calibrate"
"$BIN/ca-loadtest" -q calibrate --seconds 2 | tee calibrate.txt

for r in $(seq "$ROUNDS"); do
  echo "== round $r: mTLS (fresh data dir, the default listener, admin credential)"
  rm -rf data
  GRPC_TLS=1 start_server "$BIN/ca-server" data --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --no-acme
  ADDR=$(grep -o 'grpc=[^ ]*' server.out | cut -d= -f2); PORT=${ADDR##*:}
  # shellcheck disable=SC2086
  measure "sign-mtls-$r" "$BIN/ca-loadtest" -q --json grpc-sign --addr "https://$ADDR" --data-dir data -d "$D" $SIGN
  # shellcheck disable=SC2086
  measure "hs-mtls-$r" "$BIN/ca-loadtest" -q --json handshake --addr "https://$ADDR" --data-dir data -d "$D" $HS
  # shellcheck disable=SC2086
  measure "hs-resume-$r" "$BIN/ca-loadtest" -q --json handshake --addr "https://$ADDR" --data-dir data \
    --tls-resume -d "$D" $HS
  s_time "s_time-$r" "$PORT"
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=

  echo "== round $r: plaintext (fresh data dir, --insecure-grpc)"
  rm -rf data
  start_server "$BIN/ca-server" data --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --no-acme
  ADDR=$(grep -o 'grpc=[^ ]*' server.out | cut -d= -f2)
  # shellcheck disable=SC2086
  measure "sign-plain-$r" "$BIN/ca-loadtest" -q --json grpc-sign --addr "http://$ADDR" -d "$D" $SIGN
  # shellcheck disable=SC2086
  measure "hs-plain-$r" "$BIN/ca-loadtest" -q --json handshake --addr "http://$ADDR" -d "$D" $HS
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
done
echo "load after: $(uptime)"

echo "== summary"
python3 - "$ROUNDS" <<'PY'
import json, re, sys
rounds = int(sys.argv[1])
def cpu(label):
    c0, c1, tick = map(float, open(label + '.cpu').read().split())
    gu, gs = map(float, open(label + '.gen').read().split())
    return (c1 - c0) / tick, gu + gs
def row(label):
    m = json.load(open(label + '.json'))['measured']
    srv, gen = cpu(label)
    n = max(m['ok'] + m['errors'], 1)
    return dict(label=label, rate=m['throughput_ok_per_s'], err=m['errors'],
                p50=m['latency_us']['p50'] / 1e3, p99=m['latency_us']['p99'] / 1e3,
                srv_us=srv / n * 1e6, gen_us=gen / n * 1e6)
def s_time_row(label):
    t = open(label + '.txt').read()
    n = re.search(r'(\d+) connections in \d+ real seconds', t)
    if not n:
        return dict(label=label, rate=float('nan'), err=-1, p50=0, p99=0, srv_us=0, gen_us=0)
    t0, t1 = map(float, open(label + '.wall').read().split())
    conns, real = int(n.group(1)), t1 - t0
    srv, gen = cpu(label)
    return dict(label=label, rate=conns / real, err=0, p50=0, p99=0,
                srv_us=srv / max(conns, 1) * 1e6, gen_us=gen / max(conns, 1) * 1e6)
print('%-14s %10s %6s %9s %9s %13s %13s' % ('run', 'ok/s', 'errors', 'p50 ms', 'p99 ms', 'srv CPU/op', 'gen CPU/op'))
rows = {}
for r in range(1, rounds + 1):
    for k in ['sign-mtls', 'sign-plain', 'hs-mtls', 'hs-resume', 'hs-plain', 's_time']:
        label = '%s-%d' % (k, r)
        x = s_time_row(label) if k == 's_time' else row(label)
        rows[label] = x
        print('%-14s %10.1f %6d %9.2f %9.2f %10.0f us %10.0f us' % (label, x['rate'], x['err'], x['p50'], x['p99'],
              x['srv_us'], x['gen_us']))
for r in range(1, rounds + 1):
    g = lambda k: rows['%s-%d' % (k, r)]
    sm, sp, hm, hr, hp = g('sign-mtls'), g('sign-plain'), g('hs-mtls'), g('hs-resume'), g('hs-plain')
    print('round %d: kept-alive SignCsr mTLS/plaintext = %.3f (server CPU/cert %+.0f us); new connection: '
          'mTLS %.0f/s vs plaintext %.0f/s, server CPU per full mTLS handshake %+.0f us over plaintext '
          '(resumed: %+.0f us)' % (r, sm['rate'] / sp['rate'], sm['srv_us'] - sp['srv_us'], hm['rate'], hp['rate'],
                                   hm['srv_us'] - hp['srv_us'], hr['srv_us'] - hp['srv_us']))
PY
echo "results in $WORK"
