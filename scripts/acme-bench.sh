#!/usr/bin/env bash
# ACME orders per second: ca-server against Debian's Pebble, on this machine, in one run,
# with the same generator (`ca-loadtest acme`: one account per worker, per order newOrder ->
# authz -> http-01 answered by the generator on 127.0.0.1:$HTTP_PORT -> poll until ready ->
# finalize -> poll until valid -> download).
#
#   scripts/acme-bench.sh                      # N=2000 C=32
#   N=4000 C=64 ROUNDS=2 scripts/acme-bench.sh
#   SKIP_BUILD=1 scripts/acme-bench.sh         # use the release binaries as they are
#
# (a) builds release; (b) ca-server on a fresh data dir (durable default storage,
# authorization reuse off like Pebble's PEBBLE_AUTHZREUSE=0), `calibrate`, then the orders;
# (c) Pebble (PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0) with
# pebble-challtestsrv as its DNS server only, then the same orders; (d) both results, the
# ratio, server and generator CPU per order (/proc/PID/stat, /usr/bin/time) against
# calibrate's per-core signing rate.
#
# Debian's pebble package ships no listener certificate (upstream's test/certs/ are not in
# it), so this script makes one: a throwaway P-256 CA and a certificate for 127.0.0.1 and
# localhost, the CA being the bundle the generator trusts. Needs: pebble, openssl, python3.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}"
. "$ROOT/scripts/lib.sh"
N="${N:-2000}"; C="${C:-32}"; ROUNDS="${ROUNDS:-1}"
HTTP_PORT="${HTTP_PORT:-5002}"     # the port both servers dial for http-01
PEBBLE_PORT=14000; PEBBLE_MGMT=15000; PEBBLE_TLS_PORT="${PEBBLE_TLS_PORT:-5003}"
DNS_PORT="${DNS_PORT:-8053}"; CHALL_MGMT="${CHALL_MGMT:-8055}"
EXTRA="${EXTRA:-}"                 # more ca-loadtest acme options, for both servers
CA_RUST_LOG="${CA_RUST_LOG:-}"     # RUST_LOG for ca-server (default: its own, info)
WORK="${WORK:-$(mktemp -d)}"
TICK=$(getconf CLK_TCK)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

if [ -z "${SKIP_BUILD:-}" ]; then
  echo "== build"
  (cd "$ROOT" && cargo build --release -p ca-server -p ca-loadtest)
fi
mkdir -p "$WORK"; echo "work dir $WORK"; cd "$WORK"
echo "== machine"
echo "nproc $(nproc); $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'); $(free -g | awk '/^Mem:/ {print $2}') GiB RAM"
echo "$(date -u +%FT%TZ); $("$BIN/ca-loadtest" --version); pebble $(dpkg-query -W -f '${Version}' pebble 2>/dev/null || echo '?')"

# cpu PID: user+system clock ticks of a process so far
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# threads PID: "name ticks" per thread (comm has no spaces in ca-server or pebble)
threads() { for t in /proc/"$1"/task/*; do echo "$(cat "$t/comm") $(awk '{print $14 + $15}' "$t/stat")"; done; }

# wait_port PORT PID: until something listens on 127.0.0.1:PORT (PID must stay alive)
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# run_acme LABEL SERVER_PID DIRECTORY CA_BUNDLE: the orders, with the server's CPU before and
# after and the generator's own CPU; writes LABEL.json, LABEL.progress, LABEL.cpu
run_acme() {
  local label=$1 pid=$2 dir=$3 bundle=$4 c0 c1
  c0=$(cpu "$pid")
  threads "$pid" >"$label.threads0"
  if [ -n "${PERF:-}" ]; then perf record -F 499 -g -p "$pid" -o "$label.perf" >/dev/null 2>&1 & PERF_PID=$!; fi
  # shellcheck disable=SC2086
  /usr/bin/time -f "%U %S" -o "$label.gen" "$BIN/ca-loadtest" --json acme --directory "$dir" \
    --http-port "$HTTP_PORT" --ca-bundle "$bundle" -n "$N" -c "$C" $EXTRA >"$label.json" 2>"$label.progress"
  c1=$(cpu "$pid")
  threads "$pid" >"$label.threads1"
  if [ -n "${PERF:-}" ]; then
    kill -INT "$PERF_PID"; wait "$PERF_PID" 2>/dev/null || true
    perf report -i "$label.perf" --no-children --sort dso,symbol --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -25 >"$label.perf.txt"
    echo "  perf top symbols (self): $WORK/$label.perf.txt"; head -12 "$label.perf.txt"
  fi
  echo "$c0 $c1 $TICK" >"$label.cpu"
  python3 - "$label" <<'PY'
import json, sys
l = sys.argv[1]
r = json.load(open(l + '.json'))
m, a = r['measured'], r['acme']
print('%-10s %d ok, %d errors, %.1f orders/s, order p50 %.1f p99 %.1f ms' % (l, m['ok'], m['errors'],
      m['throughput_ok_per_s'], m['latency_us']['p50'] / 1e3, m['latency_us']['p99'] / 1e3))
for k, e in m['errors_by_kind'].items():
    print('  %6d  %s  e.g. %s' % (e['count'], k, (e.get('sample') or '')[:200]))
import collections, os, re
tick = os.sysconf('SC_CLK_TCK')
def load(f):
    d = collections.Counter()
    for line in open(f):
        name, t = line.rsplit(' ', 1)
        d[re.sub(r'[-_ ]?\d+$', '', name)] += int(t)
    return d
t0, t1 = load(l + '.threads0'), load(l + '.threads1')
n = max(m['ok'] + m['errors'], 1)
split = sorted(((t1[k] - t0[k]) / tick / n * 1e6, k) for k in t1 if t1[k] > t0[k])
print('  server CPU per order by thread: ' + ', '.join('%s %.0f us' % (k, us) for us, k in reversed(split)))
PY
}

echo "== calibrate"
"$BIN/ca-loadtest" -q calibrate --seconds 3 | tee calibrate.txt

# Listener certificate for Pebble (see the header).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout pebble-ca.key \
  -out pebble-ca.pem -days 2 -subj "/CN=acme-bench Pebble listener CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout pebble-key.pem \
  -out pebble.csr -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' >pebble.ext
openssl x509 -req -in pebble.csr -CA pebble-ca.pem -CAkey pebble-ca.key -CAcreateserial -days 2 \
  -extfile pebble.ext -out pebble-cert.pem 2>/dev/null
cat >pebble.json <<EOF
{"pebble": {"listenAddress": "127.0.0.1:$PEBBLE_PORT", "managementListenAddress": "127.0.0.1:$PEBBLE_MGMT",
  "certificate": "$WORK/pebble-cert.pem", "privateKey": "$WORK/pebble-key.pem",
  "httpPort": $HTTP_PORT, "tlsPort": $PEBBLE_TLS_PORT, "ocspResponderURL": "",
  "externalAccountBindingRequired": false}}
EOF
printf '[acme]\n# like PEBBLE_AUTHZREUSE=0: every order validates its own authorization\nreuse_authorizations = false\n' >ca.toml

for round in $(seq "$ROUNDS"); do
  echo "== round $round: ca-server (fresh data dir, durable storage), $N orders, $C workers"
  rm -rf data
  if [ -n "$CA_RUST_LOG" ]; then export RUST_LOG="$CA_RUST_LOG"; fi
  start_server "$BIN/ca-server" data --config ca.toml --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
    --acme-addr 127.0.0.1:0 --acme-http-port "$HTTP_PORT" --acme-allow-loopback
  unset RUST_LOG
  PIDS+=("$SERVER_PID")
  ACME_ADDR=$(grep -o 'acme=[^ ]*' server.out | cut -d= -f2)
  run_acme "ca-server-$round" "$SERVER_PID" "https://$ACME_ADDR/acme/directory" data/root.pem
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
  echo "  ca-server log: $(wc -c <server.log) bytes; deepest acme_validation span nesting in one line:" \
    "$(awk '{n = gsub(/acme_validation\{/, "&"); if (n > m) m = n} END {print m + 0}' server.log)"

  echo "== round $round: pebble (in memory), $N orders, $C workers"
  pebble-challtestsrv -dns01 "127.0.0.1:$DNS_PORT" -http01 "" -tlsalpn01 "" -https01 "" -defaultIPv6 "" \
    -management "127.0.0.1:$CHALL_MGMT" >challtestsrv.log 2>&1 &
  CHALL_PID=$!; PIDS+=("$CHALL_PID")
  wait_port "$CHALL_MGMT" "$CHALL_PID" || { echo "pebble-challtestsrv did not start:"; cat challtestsrv.log; exit 1; }
  PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
    pebble -config pebble.json -dnsserver "127.0.0.1:$DNS_PORT" >pebble.log 2>&1 &
  PEBBLE_PID=$!; PIDS+=("$PEBBLE_PID")
  wait_port "$PEBBLE_PORT" "$PEBBLE_PID" || { echo "pebble did not start:"; cat pebble.log; exit 1; }
  run_acme "pebble-$round" "$PEBBLE_PID" "https://127.0.0.1:$PEBBLE_PORT/dir" pebble-ca.pem
  kill "$PEBBLE_PID" "$CHALL_PID"; wait "$PEBBLE_PID" "$CHALL_PID" 2>/dev/null || true
done

echo "== summary"
python3 - "$ROUNDS" "$N" <<'PY'
import json, re, sys
rounds, n = int(sys.argv[1]), int(sys.argv[2])
cal = open('calibrate.txt').read()
print('calibrate:')
per_core = None
for line in cal.splitlines():
    if re.match(r'^\s*(ceiling|ring ECDSA|ca_core::Authority::issue)', line):
        print('  ' + line.strip())
    m = re.match(r'^\s*ca_core::Authority::issue.*?\s(\d+)\s+(\d+)\s', line)
    if m:
        per_core = int(m.group(1))
if per_core:
    print('  per core: %d issuances/s = %.0f us of CPU per certificate (CSR check, build, P-256 sign)'
          % (per_core, 1e6 / per_core))
def row(label):
    r = json.load(open(label + '.json'))
    m, a = r['measured'], r['acme']
    c0, c1, tick = map(float, open(label + '.cpu').read().split())
    gu, gs = map(float, open(label + '.gen').read().split())
    total = m['ok'] + m['errors']
    s = a['steps_us']
    return dict(label=label, ops=m['throughput_ok_per_s'], ok=m['ok'], err=m['errors'],
                p50=m['latency_us']['p50'] / 1e3, p99=m['latency_us']['p99'] / 1e3,
                steps={k: (v['p50'] / 1e3, v['p99'] / 1e3) for k, v in s.items()},
                srv_ms=(c1 - c0) / tick / max(total, 1) * 1e3, gen_ms=(gu + gs) / max(total, 1) * 1e3,
                polls=(a['polls_until_ready_per_order'], a['polls_until_valid_per_order']),
                http01=a['http01_served'] / max(total, 1))
steps = ['new-order', 'authz', 'challenge', 'finalize', 'download']
rows = []
for k in range(1, rounds + 1):
    rows += [row('ca-server-%d' % k), row('pebble-%d' % k)]
hdr = '%-12s %8s %6s %15s' % ('server', 'orders/s', 'errors', 'order p50/p99') + ''.join(' %17s' % s for s in steps) \
    + ' %10s %10s %11s %8s'
print(hdr % ('srv CPU/ord', 'gen CPU/ord', 'polls r/v', 'http01'))
for r in rows:
    line = '%-12s %8.1f %6d %7.1f/%-7.1f' % (r['label'], r['ops'], r['err'], r['p50'], r['p99'])
    line += ''.join(' %8.1f/%-8.1f' % r['steps'].get(s, (0, 0)) for s in steps)
    line += ' %8.2fms %8.2fms %5.2f/%-5.2f %8.2f' % (r['srv_ms'], r['gen_ms'], r['polls'][0], r['polls'][1], r['http01'])
    print(line)
for k in range(rounds):
    ca, pb = rows[2 * k], rows[2 * k + 1]
    ratio = ca['ops'] / pb['ops'] if pb['ops'] else float('nan')
    print('round %d: ca-server/pebble = %.2f (goal >= 2.0: %s); server CPU per order %.2f ms vs %.2f ms'
          % (k + 1, ratio, 'met' if ratio >= 2 else 'NOT met', ca['srv_ms'], pb['srv_ms']))
PY
echo "results in $WORK"
