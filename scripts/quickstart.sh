#!/usr/bin/env bash
# The main job, end to end, on a fresh machine:
#   1. build the connector;
#   2. start a throwaway PostgreSQL (wal_level=logical) on port 55432 with sample data;
#   3. discover and capture it through the local runner, printing documents;
#   4. make live changes and show them arriving;
#   5. stop the server.
# Everything lives under .local/ and is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${QUICKSTART_PORT:-55432}
ROOT=$(pwd)/.local/quickstart
WAL_LEVEL=logical
# shellcheck source=lib/local-server.sh
source scripts/lib/local-server.sh
trap cleanup EXIT

echo "==> building the connector"
cargo build --release --locked --quiet

echo "==> starting PostgreSQL on port $PORT"
start_server

echo "==> creating sample data"
psql_as -c "CREATE ROLE flow_capture WITH LOGIN REPLICATION PASSWORD 'secret1234'" -c "CREATE DATABASE demo"
psql_as -d demo <<'SQL'
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE users (
  id bigint PRIMARY KEY,
  name text NOT NULL,
  email varchar(120),
  mood mood,
  tags text[],
  balance numeric(12,2),
  created timestamptz NOT NULL DEFAULT '2024-01-15 09:30:00+00'
);
COMMENT ON COLUMN users.email IS 'Contact address';
INSERT INTO users (id, name, email, mood, tags, balance)
SELECT g, 'user ' || g, 'user' || g || '@example.com', (ARRAY['sad','ok','happy'])[1 + g % 3]::mood,
       ARRAY['tag' || g % 2], g * 10.25
FROM generate_series(1, 5) g;
CREATE TABLE events (kind text, payload jsonb, at timestamp);
-- No primary key: give updates and deletes a replica identity (validation requires it).
ALTER TABLE events REPLICA IDENTITY FULL;
INSERT INTO events VALUES ('signup', '{"user": 1}', '2024-01-15 09:31:00'), ('login', '{"user": 2}', '2024-01-15 09:32:00');
CREATE PUBLICATION flow_publication FOR ALL TABLES;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO flow_capture;
GRANT CREATE ON SCHEMA public TO flow_capture;
SQL

echo "==> capturing (documents are printed as [\"collection\", document])"
rm -f .local/quickstart-state.json
LOG_LEVEL=warn target/release/source-postgres preview --source catalog-examples/local.flow.yaml \
  --state-file .local/quickstart-state.json --timeout 12 &
preview=$!
sleep 5

echo "==> making live changes"
psql_as -d demo <<'SQL'
INSERT INTO users (id, name, email, mood) VALUES (6, 'new user', 'six@example.com', 'happy');
UPDATE users SET balance = balance + 100, mood = 'happy' WHERE id = 1;
DELETE FROM users WHERE id = 2;
INSERT INTO events VALUES ('purchase', '{"user": 6, "total": 12.5}', '2024-01-15 10:00:00');
SQL
wait "$preview"
rm -f .local/quickstart-state.json
echo "==> done"
