#!/usr/bin/env bash
# A/B two ca-server builds on this machine with the same ca-loadtest, interleaved, so the
# VM's drifting speed hits both alike. Each round and build: fresh data dir, start, warm
# up, calibrate, closed-loop grpc-sign, calibrate again. Prints throughput, its ratio to
# the mean of the two calibrate runs around it, and the CPU each side spent per request
# (server from /proc/<pid>/stat, load generator from /usr/bin/time).
#
#   scripts/compare-servers.sh DIR_A DIR_B [ROUNDS]   (DIR_* hold a ca-server binary)
#
# ARGS_A / ARGS_B add load-generator options to A's / B's runs, so the same build can be
# A/B-ed against two client settings:
#   ARGS_B="--client tonic" scripts/compare-servers.sh target/release target/release 3
#
# Example (previous commit vs this tree):
#   git worktree add /tmp/base HEAD~1 && (cd /tmp/base && CARGO_TARGET_DIR=/tmp/base-target \
#     cargo build --release -p ca-server)
#   scripts/compare-servers.sh /tmp/base-target/release target/release 3
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LOADTEST="$ROOT/target/release/ca-loadtest"
. "$ROOT/scripts/lib.sh"
A="$(cd "$1" && pwd)"; B="$(cd "$2" && pwd)"; ROUNDS="${3:-2}"; N="${N:-40000}"
WORK="$(mktemp -d)"; cd "$WORK"
TICK=$(getconf CLK_TCK)
printf '%-28s %8s %8s %7s %8s %9s %9s\n' build "ok/s" calib ratio "p99 ms" "srv us/rq" "gen us/rq"
for round in $(seq "$ROUNDS"); do
  for side in A B; do
    if [ "$side" = A ]; then dir="$A"; extra="${ARGS_A:-}"; else dir="$B"; extra="${ARGS_B:-}"; fi
    rm -rf data
    start_server "$dir/ca-server" data --grpc-addr 127.0.0.1:50051 --http-addr 127.0.0.1:8080
    pid=$SERVER_PID
    "$LOADTEST" -q grpc-sign -n 6000 -c 256 -k 2 --csrs 4000 >/dev/null
    cal0=$("$LOADTEST" -q calibrate --seconds 2 | awk '/^ceiling/ {print $2}')
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    /usr/bin/time -f "%U %S" -o gen.time "$LOADTEST" -q --json grpc-sign -n "$N" -c 256 -k 2 --csrs 4000 $extra >run.json
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    cal1=$("$LOADTEST" -q calibrate --seconds 2 | awk '/^ceiling/ {print $2}')
    kill "$pid"; wait "$pid" 2>/dev/null || true
    python3 - "$dir $extra" "$cal0" "$cal1" "$u0" "$s0" "$u1" "$s1" "$TICK" "$N" <<'EOF'
import json, sys
d, cal0, cal1, u0, s0, u1, s1, tick, n = sys.argv[1:]
m = json.load(open("run.json"))["measured"]
gen_u, gen_s = map(float, open("gen.time").read().split())
cal = (float(cal0) + float(cal1)) / 2
ok = m["throughput_ok_per_s"]
srv = ((int(u1) - int(u0)) + (int(s1) - int(s0))) / int(tick) / int(n) * 1e6
print("%-28s %8.0f %8.0f %6.1f%% %8.1f %9.1f %9.1f" % (d[-28:], ok, cal, 100 * ok / cal,
      m["latency_us"]["p99"] / 1e3, srv, (gen_u + gen_s) / int(n) * 1e6))
EOF
  done
done
