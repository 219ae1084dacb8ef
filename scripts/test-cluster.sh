#!/usr/bin/env bash
# A long-lived PostgreSQL server for working on the tests by hand: the tests normally start (and
# delete) their own, which leaves nothing to inspect after a failure. This one stays up until
# stopped, and the tests use it when the variables printed by `start` are exported.
#
#   scripts/test-cluster.sh start     # prints: export TEST_PG_HOST=... TEST_PG_PORT=... ...
#   eval "$(scripts/test-cluster.sh start)" && cargo test --test it
#   psql "host=127.0.0.1 port=$TEST_PG_PORT user=postgres password=postgres dbname=it_<test>"
#   scripts/test-cluster.sh stop      # stops it and deletes its directory
#
# It is configured like the tests' own server (tests/it/harness.rs). Environment:
#   TEST_CLUSTER_DIR   where the data lives (default: $TMPDIR or /tmp, /source-postgres-test-cluster)
#   TEST_CLUSTER_PORT  TCP port on 127.0.0.1 (default 15432)
#   TEST_PG_BINDIR     PostgreSQL binaries (default: pg_config --bindir)
set -euo pipefail

dir="${TEST_CLUSTER_DIR:-${TMPDIR:-/tmp}/source-postgres-test-cluster}"
port="${TEST_CLUSTER_PORT:-15432}"
bindir="${TEST_PG_BINDIR:-$(pg_config --bindir)}"
password="postgres"

# PostgreSQL refuses to run as root: run its programs as the postgres OS user then.
as_server_owner() {
    if [[ "$(id -u)" -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start() {
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        echo "already running in $dir" >&2
    else
        rm -rf "$dir"
        mkdir -p "$dir"
        if [[ "$(id -u)" -eq 0 ]]; then
            chown postgres: "$dir"
        fi
        as_server_owner "$bindir/initdb" -D "$dir/data" --username=postgres --auth-local=trust \
            --auth-host=scram-sha-256 --encoding=UTF8 --locale=C --no-sync >"$dir/initdb.log"
        as_server_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w start -o "\
            -p $port -k $dir -c listen_addresses=127.0.0.1 -c wal_level=logical \
            -c max_replication_slots=100 -c max_wal_senders=100 -c wal_sender_timeout=10s \
            -c max_connections=200 -c timezone=PST8PDT -c fsync=off -c full_page_writes=off" >&2
        as_server_owner "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres \
            -d postgres >&2 <<SQL
SET password_encryption = 'scram-sha-256';
ALTER ROLE postgres PASSWORD '$password';
CREATE ROLE flow_capture LOGIN REPLICATION PASSWORD 'secret1234';
SQL
        echo "started PostgreSQL in $dir, log: $dir/postgres.log" >&2
    fi
    echo "export TEST_PG_HOST=127.0.0.1 TEST_PG_PORT=$port TEST_PG_SUPERUSER=postgres TEST_PG_PASSWORD=$password"
}

stop() {
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        as_server_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >&2
    fi
    rm -rf "$dir"
    echo "stopped; removed $dir" >&2
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
