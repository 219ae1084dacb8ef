#!/usr/bin/env bash
# Benchmark 5 (optional) — a peer: pipelinewise-tap-postgres (Singer tap, Python) on the
# same data, ratios only, for the backfill and for streaming.
#
# Streaming: a backlog of BENCH_PEER_STREAM_ROWS inserts (default 200,000, in transactions
# of BENCH_TXN_ROWS) drained by the tap's LOG_BASED mode (wal2json, installed from Debian's
# packages when missing) and by the connector, each from its own copy of a slot created
# before the backlog, BENCH_REPS times each, alternating.
#
# Backfill: the 8-column table of BENCH_ROWS rows (default 500,000: the tap is slow) read
# by the tap's FULL_TABLE sync into a pipe, and by the connector's backfill (as in
# backfill.sh), BENCH_REPS times each, alternating. Both over TCP loopback as the capture
# user. The tap is installed from PyPI into a virtualenv at .local/bench-peer-venv (kept
# between runs; BENCH_PEER_VENV overrides the location).
source "$(dirname "$0")/common.sh"

ROWS="${BENCH_ROWS:-500000}"
VENV="${BENCH_PEER_VENV:-$BENCH_REPO/.local/bench-peer-venv}"

if [ ! -x "$VENV/bin/tap-postgres" ]; then
  echo "installing pipelinewise-tap-postgres into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q pipelinewise-tap-postgres
fi
tap_version="$("$VENV/bin/pip" show pipelinewise-tap-postgres 2>/dev/null | awk '/^Version/ { print $2 }')"

bench_init peer
machine_info
pg_start
capture_setup
log "creating the table (${ROWS} rows)"
create_wide_table t "$ROWS"
pq -c "VACUUM (ANALYZE, FREEZE) t"
cat >"$WORK/tap.json" <<JSON
{"host": "127.0.0.1", "port": $PG_PORT, "user": "flow_capture", "password": "$PG_PASSWORD", "dbname": "bench",
 "default_replication_method": "FULL_TABLE"}
JSON
"$VENV/bin/tap-postgres" -c "$WORK/tap.json" --discover >"$WORK/catalog.json" 2>"$WORK/discover.log"
python3 - "$WORK/catalog.json" <<'PY'
import json, sys
catalog = json.load(open(sys.argv[1]))
for stream in catalog["streams"]:
    for entry in stream["metadata"]:
        if entry["breadcrumb"] == []:
            entry["metadata"]["selected"] = stream["table_name"] == "t"
            entry["metadata"]["replication-method"] = "FULL_TABLE"
json.dump(catalog, open(sys.argv[1], "w"))
PY

: >"$WORK/tap.txt"
: >"$WORK/conn.jsonl"
for rep in $(seq 1 "$BENCH_REPS"); do
  for which in $( ((rep % 2)) && echo "tap conn" || echo "conn tap"); do
    if [ "$which" = tap ]; then
      t0="$(now_s)"
      records="$("$VENV/bin/tap-postgres" -c "$WORK/tap.json" --catalog "$WORK/catalog.json" 2>"$WORK/tap.log" \
        | grep -c '^{"type": "RECORD"')"
      t1="$(now_s)"
      if [ "$records" != "$ROWS" ]; then
        echo "FAILED: the tap emitted $records records of $ROWS" >&2
        exit 1
      fi
      echo "$t1 - $t0" | bc -l >>"$WORK/tap.txt"
      log "rep $rep: tap $(tail -1 "$WORK/tap.txt") s (load $(load_now))"
    else
      run_driver "$WORK/conn.jsonl" --table public.t --shutdown-after-polling --rss "$WORK/time.txt" \
        --stderr "$WORK/connector.log"
      log "rep $rep: connector $(tail -1 "$WORK/conn.jsonl") (load $(load_now))"
      docs="$(jget "$WORK/conn.jsonl" docs | tail -1)"
      if [ "$docs" != "$ROWS" ]; then
        echo "FAILED: the connector captured $docs documents of a $ROWS-row table" >&2
        exit 1
      fi
    fi
  done
done

tap_s="$(median <"$WORK/tap.txt")"
conn_s="$(jget "$WORK/conn.jsonl" wall_s | median)"
f() { printf "%.${2:-2}f" "$1"; }
echo
echo "== Peer backfill: $ROWS rows x 8 columns, median of $BENCH_REPS"
row "" "seconds" "rows/s"
row "pipelinewise-tap-postgres $tap_version FULL_TABLE" "$(f "$tap_s")" "$(f "$(echo "$ROWS / $tap_s" | bc -l)" 0)"
row "connector backfill, spawn to exit" "$(f "$conn_s")" "$(f "$(echo "$ROWS / $conn_s" | bc -l)" 0)"
row "ratio connector / tap" "$(f "$(echo "$tap_s / $conn_s" | bc -l)" 1)"
echo "  load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- Streaming: the same backlog drained by the tap's LOG_BASED mode (wal2json) and by the
# connector (pgoutput), each from a copy of a slot created before the backlog was written.
STREAM_ROWS="${BENCH_PEER_STREAM_ROWS:-200000}"
TXN_ROWS="${BENCH_TXN_ROWS:-10}"
TXNS=$(( (STREAM_ROWS + TXN_ROWS - 1) / TXN_ROWS ))
STREAM_ROWS=$(( TXNS * TXN_ROWS ))
if [ ! -f "$("$PG_BINDIR/pg_config" --pkglibdir 2>/dev/null || pg_config --pkglibdir)/wal2json.so" ]; then
  major="$(pg_config --version | sed -E 's/^[^0-9]*([0-9]+).*/\1/')"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing wal2json (postgresql-$major-wal2json) for the tap's LOG_BASED mode"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "postgresql-$major-wal2json" >/dev/null
  else
    echo "wal2json is not installed (Debian: postgresql-$major-wal2json): skipping the streaming comparison" >&2
    exit 0
  fi
fi
create_wide_table s 0
log "creating the slots before the backlog: the connector's (pgoutput) and the tap's (wal2json)"
run_driver "$WORK/initial.jsonl" --table public.s --shutdown-after-polling --state-out "$WORK/state0.json" \
  --stderr "$WORK/connector-initial.log"
pq -c "SELECT pg_copy_logical_replication_slot('flow_slot', 'flow_template')" >/dev/null
pq -c "SELECT pg_create_logical_replication_slot('pipelinewise_template', 'wal2json')" >/dev/null
cat >"$WORK/tap-log.json" <<JSON
{"host": "127.0.0.1", "port": $PG_PORT, "user": "flow_capture", "password": "$PG_PASSWORD", "dbname": "bench",
 "default_replication_method": "LOG_BASED", "logical_poll_total_seconds": 600, "break_at_end_lsn": true}
JSON
"$VENV/bin/tap-postgres" -c "$WORK/tap-log.json" --discover >"$WORK/catalog-log.json" 2>>"$WORK/discover.log"
python3 - "$WORK/catalog-log.json" <<'PY'
import json, sys
catalog = json.load(open(sys.argv[1]))
for stream in catalog["streams"]:
    for entry in stream["metadata"]:
        if entry["breadcrumb"] == []:
            entry["metadata"]["selected"] = stream["table_name"] == "s"
            entry["metadata"]["replication-method"] = "LOG_BASED"
json.dump(catalog, open(sys.argv[1], "w"))
PY
# The tap's first LOG_BASED run syncs the (empty) table and records the slot's position.
pq -c "SELECT pg_copy_logical_replication_slot('pipelinewise_template', 'pipelinewise_bench')" >/dev/null
"$VENV/bin/tap-postgres" -c "$WORK/tap-log.json" --catalog "$WORK/catalog-log.json" 2>"$WORK/tap-initial.log" \
  | grep '^{"type": "STATE"' | tail -1 | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["value"]))' >"$WORK/tap-state.json"
pq -c "SELECT pg_drop_replication_slot('pipelinewise_bench')" >/dev/null

log "inserting the backlog: $STREAM_ROWS rows in $TXNS transactions of $TXN_ROWS"
pq <<SQL
SET synchronous_commit = off;
DO \$\$
DECLARE lo int8;
BEGIN
  FOR i IN 0..$((TXNS - 1)) LOOP
    lo := 1 + i::int8 * $TXN_ROWS;
    INSERT INTO s $(wide_rows_sql lo "$TXN_ROWS");
    COMMIT;
  END LOOP;
END
\$\$;
SQL
pq -c "CHECKPOINT" >/dev/null

: >"$WORK/tap-stream.txt"
: >"$WORK/conn-stream.jsonl"
for rep in $(seq 1 "$BENCH_REPS"); do
  for which in $( ((rep % 2)) && echo "tap conn" || echo "conn tap"); do
    if [ "$which" = tap ]; then
      pq -c "SELECT pg_copy_logical_replication_slot('pipelinewise_template', 'pipelinewise_bench')" >/dev/null
      t0="$(now_s)"
      records="$("$VENV/bin/tap-postgres" -c "$WORK/tap-log.json" --catalog "$WORK/catalog-log.json" -s "$WORK/tap-state.json" \
        2>"$WORK/tap-stream.log" | grep -c '^{"type": "RECORD"' || true)"
      t1="$(now_s)"
      pq -c "SELECT pg_drop_replication_slot('pipelinewise_bench')" >/dev/null
      if [ "$records" != "$STREAM_ROWS" ]; then
        echo "FAILED: the tap emitted $records records of a $STREAM_ROWS-change backlog (log: $WORK/tap-stream.log)" >&2
        exit 1
      fi
      echo "$t1 - $t0" | bc -l >>"$WORK/tap-stream.txt"
      log "rep $rep: tap LOG_BASED $(tail -1 "$WORK/tap-stream.txt") s (load $(load_now))"
    else
      pq -c "SELECT pg_drop_replication_slot('flow_slot')" >/dev/null
      pq -c "SELECT pg_copy_logical_replication_slot('flow_template', 'flow_slot')" >/dev/null
      run_driver "$WORK/conn-stream.jsonl" --table public.s --shutdown-after-polling --state-in "$WORK/state0.json" \
        --stderr "$WORK/connector-stream.log"
      log "rep $rep: connector $(tail -1 "$WORK/conn-stream.jsonl") (load $(load_now))"
      docs="$(jget "$WORK/conn-stream.jsonl" docs | tail -1)"
      if [ "$docs" != "$STREAM_ROWS" ]; then
        echo "FAILED: the connector captured $docs documents of a $STREAM_ROWS-change backlog" >&2
        exit 1
      fi
    fi
  done
done
tap_stream_s="$(median <"$WORK/tap-stream.txt")"
conn_stream_s="$(jget "$WORK/conn-stream.jsonl" wall_s | median)"
echo
echo "== Peer streaming: a backlog of $STREAM_ROWS inserts in $TXNS transactions, median of $BENCH_REPS"
row "" "seconds" "events/s"
row "pipelinewise-tap-postgres $tap_version LOG_BASED" "$(f "$tap_stream_s")" "$(f "$(echo "$STREAM_ROWS / $tap_stream_s" | bc -l)" 0)"
row "connector, spawn to exit" "$(f "$conn_stream_s")" "$(f "$(echo "$STREAM_ROWS / $conn_stream_s" | bc -l)" 0)"
row "ratio connector / tap" "$(f "$(echo "$tap_stream_s / $conn_stream_s" | bc -l)" 1)"
echo "  load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
