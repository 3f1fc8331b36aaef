#!/usr/bin/env bash
# A local PostgreSQL cluster for development and tests: a primary and a standby on
# loopback, from Debian's postgresql package, run as the postgres user (run this as root).
#
#   scripts/pg-cluster.sh up [--async]   create/start; prints the URL as the last line
#   scripts/pg-cluster.sh url            the URL (every host, target_session_attrs=read-write)
#   scripts/pg-cluster.sh status         role, sync state and replay lag of each node
#   scripts/pg-cluster.sh kill-primary   kill -9 the primary's postmaster
#   scripts/pg-cluster.sh promote        promote the standby (it becomes the primary)
#   scripts/pg-cluster.sh pause-standby | resume-standby   SIGSTOP/SIGCONT its walreceiver
#   scripts/pg-cluster.sh down | destroy stop both | stop and delete everything
#
# By default the standby is synchronous (synchronous_standby_names = 'FIRST 1 (standby)',
# synchronous_commit = on): a commit returns once the standby has flushed it, which is
# what the PostgreSQL backend's durability promise needs. --async leaves it asynchronous
# (a failover can then lose acknowledged commits: for the test that must catch that).
# Environment: PG_CLUSTER_DIR (/tmp/ca-pg-cluster), PG_PRIMARY_PORT (55432),
# PG_STANDBY_PORT (55433).
set -euo pipefail

BASE=${PG_CLUSTER_DIR:-/tmp/ca-pg-cluster}
P1=${PG_PRIMARY_PORT:-55432}
P2=${PG_STANDBY_PORT:-55433}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$PGBIN/initdb" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }

pg() { (cd / && runuser -u postgres -- "$PGBIN/$@"); }
port_of() { [ "$1" = n1 ] && echo "$P1" || echo "$P2"; }
running() { pg pg_ctl -D "$BASE/$1" status >/dev/null 2>&1; }
sql() { pg psql -h 127.0.0.1 -p "$(port_of "$1")" -U postgres -d postgres -Atqc "$2"; }
is_primary() { running "$1" && [ "$(sql "$1" 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; }
primary() { for n in n1 n2; do is_primary $n && { echo $n; return; }; done; return 1; }
other() { [ "$1" = n1 ] && echo n2 || echo n1; }
url() { echo "postgres://ca:ca@127.0.0.1:$P1,127.0.0.1:$P2/ca?target_session_attrs=read-write&connect_timeout=2"; }
start() { pg pg_ctl -D "$BASE/$1" -l "$BASE/$1.log" -w -t 30 start >/dev/null; }
wait_until() { # seconds, description, command...
  local s=$1 what=$2; shift 2
  for _ in $(seq $((s * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timed out waiting for $what" >&2; return 1
}

init_primary() { # node
  mkdir -p "$BASE" && chown postgres "$BASE" && chmod 755 "$BASE"
  pg initdb -D "$BASE/$1" -U postgres -A trust >/dev/null
  cat >>"$BASE/$1/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $(port_of "$1")
unix_socket_directories = '$BASE'
wal_level = replica
max_wal_senders = 5
synchronous_commit = on
EOF
  cat >"$BASE/$1/pg_hba.conf" <<EOF
local all all trust
host all postgres 127.0.0.1/32 trust
host replication postgres 127.0.0.1/32 trust
host all ca 127.0.0.1/32 scram-sha-256
EOF
  start "$1"
  sql "$1" "CREATE ROLE ca LOGIN PASSWORD 'ca'"
  sql "$1" "CREATE DATABASE ca OWNER ca"
}

init_standby() { # node, primary node
  rm -rf "${BASE:?}/$1"
  pg pg_basebackup -h 127.0.0.1 -p "$(port_of "$2")" -U postgres -D "$BASE/$1" -R -X stream -c fast >/dev/null
  sed -i "/^port = /d" "$BASE/$1/postgresql.conf"
  echo "port = $(port_of "$1")" >>"$BASE/$1/postgresql.conf"
  # Name the standby, so synchronous_standby_names can require it.
  sed -i "s/^primary_conninfo = '/primary_conninfo = 'application_name=standby /" "$BASE/$1/postgresql.auto.conf"
  start "$1"
}

set_sync() { # primary node, async?
  local names="'FIRST 1 (standby)'"
  [ "$2" = async ] && names="''"
  sql "$1" "ALTER SYSTEM SET synchronous_standby_names = $names" && sql "$1" "SELECT pg_reload_conf()" >/dev/null
}

is_standby_dir() { [ -f "$BASE/$1/standby.signal" ]; }

up() {
  local mode=${1:-sync}
  local p=""
  # A running primary wins. Otherwise start a stopped one, but only when it is the only
  # node that is no standby: after a promotion the old primary must not come back as a
  # second primary (it is rebuilt as a standby below).
  p=$(primary) || p=""
  if [ -z "$p" ]; then
    local primaries=()
    for n in n1 n2; do [ -d "$BASE/$n" ] && ! is_standby_dir $n && primaries+=("$n"); done
    case ${#primaries[@]} in
      0) [ -d "$BASE/n1" ] || [ -d "$BASE/n2" ] && { echo "only standbys in $BASE: promote one first" >&2; exit 1; }
         init_primary n1; p=n1 ;;
      1) p=${primaries[0]}; start "$p" ;;
      *) echo "two primaries in $BASE and neither running: destroy first" >&2; exit 1 ;;
    esac
  fi
  local s; s=$(other "$p")
  if [ -d "$BASE/$s" ] && is_standby_dir "$s"; then
    running "$s" || start "$s"
  else
    # No standby yet, or the old primary after a promotion (its timeline forked): rebuild.
    pg pg_ctl -D "$BASE/$s" -m immediate stop >/dev/null 2>&1 || true
    init_standby "$s" "$p"
  fi
  set_sync "$p" "$mode"
  wait_until 60 "the standby to stream" \
    bash -c "[ \"\$(runuser -u postgres -- $PGBIN/psql -h 127.0.0.1 -p $(port_of "$p") -U postgres -d postgres -Atqc \"SELECT count(*) FROM pg_stat_replication WHERE application_name = 'standby' AND state = 'streaming'$([ "$mode" = sync ] && echo " AND sync_state = 'sync'")\")\" = 1 ]"
  echo "primary $p (127.0.0.1:$(port_of "$p")), $mode standby $s (127.0.0.1:$(port_of "$s"))" >&2
  url
}

walreceiver_pid() { pgrep -u postgres -f "walreceiver" | while read -r pid; do
  # the walreceiver whose parent is the standby's postmaster
  [ "$(ps -o ppid= -p "$pid" | tr -d ' ')" = "$(head -1 "$BASE/$1/postmaster.pid")" ] && echo "$pid"; done; }

case "${1:-}" in
  up) up "$([ "${2:-}" = --async ] && echo async || echo sync)" ;;
  url) url ;;
  status)
    for n in n1 n2; do
      if ! running $n; then echo "$n 127.0.0.1:$(port_of $n) down"
      elif is_primary $n; then
        echo "$n 127.0.0.1:$(port_of $n) primary; standbys: $(sql $n "SELECT string_agg(application_name || ' ' || sync_state || ' lag ' || coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0) || ' bytes', ', ') FROM pg_stat_replication")"
      else echo "$n 127.0.0.1:$(port_of $n) standby"; fi
    done ;;
  kill-primary)
    p=$(primary) || { echo "no primary" >&2; exit 1; }
    kill -9 "$(head -1 "$BASE/$p/postmaster.pid")"
    echo "killed the primary $p" >&2 ;;
  promote)
    s=""
    for n in n1 n2; do running $n && ! is_primary $n && s=$n; done
    [ -n "$s" ] || { echo "no standby to promote" >&2; exit 1; }
    # A paused walreceiver would deliver what it holds once resumed by the promotion,
    # and so would one resumed and told to stop (CONT then TERM: it drains its socket,
    # which holds what the primary sent during the pause, before it looks at the signal).
    # Kill it while paused: the standby restarts its recovery from the WAL it had flushed,
    # so what it had not received is lost as in a real partition.
    for pid in $(walreceiver_pid "$s"); do
      case $(ps -o stat= -p "$pid") in
        T*) kill -KILL "$pid" ;;
        *) kill -TERM "$pid" ;;
      esac
    done
    wait_until 30 "$s to accept connections again" sql "$s" "SELECT 1"
    pg pg_ctl -D "$BASE/$s" -w promote >/dev/null
    wait_until 30 "$s to accept writes" is_primary "$s"
    echo "promoted $s" >&2 ;;
  pause-standby|resume-standby)
    s=""
    for n in n1 n2; do running $n && ! is_primary $n && s=$n; done
    [ -n "$s" ] || { echo "no standby" >&2; exit 1; }
    sig=$([ "$1" = pause-standby ] && echo STOP || echo CONT)
    for pid in $(walreceiver_pid "$s"); do kill -"$sig" "$pid"; done ;;
  down) for n in n1 n2; do pg pg_ctl -D "$BASE/$n" -m fast stop >/dev/null 2>&1 || true; done ;;
  destroy)
    for n in n1 n2; do
      pkill -CONT -u postgres -f walreceiver 2>/dev/null || true
      pg pg_ctl -D "$BASE/$n" -m immediate stop >/dev/null 2>&1 || true
    done
    rm -rf "${BASE:?}" ;;
  *) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
