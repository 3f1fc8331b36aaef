#!/usr/bin/env bash
# Proves scripts/pg-cluster.sh does what the PostgreSQL backend's tests rely on: with the
# synchronous standby a committed row survives kill -9 of the primary and a promotion, and
# `up` then rebuilds a two-node cluster; with --async and a paused standby, a committed
# (acknowledged) row is lost by the same failover. Run as root; exits non-zero on failure.
set -euo pipefail
C="$(cd "$(dirname "$0")" && pwd)/pg-cluster.sh"
export PGPASSWORD=ca
PSQL=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)/psql
fail() { echo "FAIL: $*" >&2; "$C" destroy; exit 1; }
q() { "$PSQL" "$1" -Atqc "$2"; }
started=$(date +%s)

"$C" destroy
URL=$("$C" up | tail -1)
q "$URL" "CREATE TABLE t (x int); INSERT INTO t VALUES (1)"
[ "$(q "postgres://ca:ca@127.0.0.1:${PG_STANDBY_PORT:-55433}/ca" 'SELECT count(*) FROM t')" = 1 ] \
  || fail "the committed row is not on the synchronous standby"
"$C" kill-primary
"$C" promote
[ "$(q "$URL" 'SELECT string_agg(x::text, $$,$$) FROM t')" = 1 ] || fail "the promoted standby lacks the row"
q "$URL" "INSERT INTO t VALUES (2)" || fail "the URL does not reach the promoted node for writes"
"$C" up >/dev/null
"$C" status | grep -q "standby sync" || fail "up did not rebuild a synchronous standby: $("$C" status)"
echo "sync: a committed row survived kill -9 of the primary and the promotion; two nodes again" >&2

"$C" destroy
URL=$("$C" up --async | tail -1)
q "$URL" "CREATE TABLE t (x int); INSERT INTO t VALUES (1)"
sleep 1
"$C" pause-standby
q "$URL" "INSERT INTO t VALUES (2)"   # acknowledged by the primary alone
"$C" kill-primary
"$C" promote
got=$(q "$URL" 'SELECT string_agg(x::text, $$,$$ ORDER BY x) FROM t')
[ "$got" = 1 ] || fail "expected the acknowledged row 2 to be lost with an async paused standby, got rows $got"
echo "async: the acknowledged row 2 was lost by the failover, as it must be (rows now: $got)" >&2

"$C" destroy
echo "ok in $(($(date +%s) - started)) s" >&2
