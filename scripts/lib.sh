# Sourced by the measurement scripts.

# start_server CA_SERVER_BIN DATA_DIR [serve args...]: start ca-server in the background,
# with server.out/server.log in the current directory, and wait for its ready line; sets
# SERVER_PID. Exits if it does not come up: a server left running by something else would
# otherwise answer on the same port and be measured instead.
# gRPC is plaintext (--insecure-grpc) unless GRPC_TLS=1 (mTLS, the server's default; the
# generator then needs https:// and --data-dir). Builds from before the flag existed
# (compare-servers.sh A/B runs) served plaintext anyway and get no flag.
start_server() {
  local bin=$1 data=$2
  shift 2
  if [ -z "${GRPC_TLS:-}" ] && "$bin" serve --help 2>/dev/null | grep -q -- --insecure-grpc; then
    set -- --insecure-grpc "$@"
  fi
  "$bin" serve --data-dir "$data" "$@" >server.out 2>server.log &
  SERVER_PID=$!
  for _ in $(seq 50); do grep -q "ca-server ready" server.out 2>/dev/null && break; sleep 0.1; done
  grep -q "ca-server ready" server.out || { echo "ca-server did not start:"; cat server.log; exit 1; }
}
