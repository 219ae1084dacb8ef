#!/usr/bin/env bash
# The batch connector, end to end, on a fresh machine:
#   1. build the connectors;
#   2. start a throwaway PostgreSQL WITHOUT logical replication (wal_level=replica) on port
#      55433, with sample data and a user that has no REPLICATION, only SELECT;
#   3. discover and capture it through the local runner (tables by xmin, a view re-read at
#      every poll), printing documents;
#   4. make changes and show the next polls picking them up;
#   5. stop the server.
# Everything lives under .local/ and is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=55433
ROOT=$(pwd)/.local/quickstart-batch
WAL_LEVEL=replica
# shellcheck source=lib/local-server.sh
source scripts/lib/local-server.sh
trap cleanup EXIT

echo "==> building the connectors"
cargo build --release --locked --quiet --bin source-postgres --bin source-postgres-batch

echo "==> starting PostgreSQL on port $PORT (wal_level=replica: no logical replication)"
start_server

echo "==> creating sample data"
psql_as -c "CREATE ROLE flow_batch WITH LOGIN NOREPLICATION PASSWORD 'secret1234'" -c "CREATE DATABASE demo"
psql_as -d demo <<'SQL'
CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, balance numeric(12,2), created timestamptz NOT NULL DEFAULT '2024-01-15 09:30:00+00');
INSERT INTO users (id, name, balance) SELECT g, 'user ' || g, g * 10.25 FROM generate_series(1, 5) g;
CREATE VIEW rich_users AS SELECT id, name FROM users WHERE balance > 30 ORDER BY id;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO flow_batch;
SQL

echo "==> capturing (documents are printed as [\"collection\", document])"
LOG_LEVEL=warn target/release/source-postgres preview --source catalog-examples/batch-local.flow.yaml --timeout 10 &
preview=$!
sleep 5

echo "==> changing rows: the next polls (every 2s) pick them up"
psql_as -d demo <<'SQL'
INSERT INTO users (id, name, balance) VALUES (6, 'new user', 99);
UPDATE users SET balance = balance + 100 WHERE id = 1;
SQL
wait "$preview"
echo "==> done"
