#!/usr/bin/env bash
# Benchmark 5 (optional) — a peer: pipelinewise-tap-postgres (Singer tap, Python) on the
# same data, ratios only.
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
