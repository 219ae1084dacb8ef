# shellcheck shell=bash
# A throwaway PostgreSQL server for the quickstart scripts, sourced after setting
#   PORT       the port it listens on (127.0.0.1 and a unix socket in ROOT);
#   ROOT       its directory (data/, server.log), removed by cleanup;
#   WAL_LEVEL  logical (the CDC connector) or replica (the batch connector needs no more).
# PostgreSQL refuses to run as root: as root, the server runs as the `postgres` OS user.

BIN=$(pg_config --bindir)

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Stop the server (if running) and remove its directory; also the EXIT trap.
cleanup() {
  as_postgres "$BIN/pg_ctl" -D "$ROOT/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$ROOT"
}

start_server() {
  cleanup
  mkdir -p "$ROOT"
  if [ "$(id -u)" = 0 ]; then chown postgres "$ROOT"; fi
  as_postgres "$BIN/initdb" -D "$ROOT/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C >/dev/null
  as_postgres "$BIN/pg_ctl" -D "$ROOT/data" -l "$ROOT/server.log" -w \
    -o "-p $PORT -c wal_level=$WAL_LEVEL -c listen_addresses=127.0.0.1 -k $ROOT" start >/dev/null
}

psql_as() { psql -X -q -v ON_ERROR_STOP=1 -h "$ROOT" -p "$PORT" -U postgres "$@"; }
