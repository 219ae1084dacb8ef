#!/usr/bin/env bash
# Benchmark — backfill of many small tables (fences shared across tables).
#
# BENCH_TABLES tables (default 500) of BENCH_TABLE_ROWS rows each (default 20), 3 columns,
# read two ways, BENCH_REPS times each, alternating:
#   * one psql session running `\copy (SELECT * FROM tN) TO '/dev/null'` for every table:
#     the server's fastest way to ship them to a client, one statement per table;
#   * the connector's full backfill of all of them (fresh state, SHUTDOWN_AFTER_POLLING=yes),
#     its output read by benches/driver.py, which checks that every row arrived.
# Without shared fences the connector pays a watermark write and a fence (one round trip
# through the replication stream) and a checkpoint per table; with them, one per chunk's
# worth of rows. The table shows wall times, tables/s, checkpoints and the ratio to COPY.
source "$(dirname "$0")/common.sh"

TABLES="${BENCH_TABLES:-500}"
ROWS="${BENCH_TABLE_ROWS:-20}"

bench_init tables
machine_info
pg_start
capture_setup
log "creating $TABLES tables of $ROWS rows"
pq -c "DO \$\$ BEGIN FOR i IN 1..$TABLES LOOP
  EXECUTE format('CREATE TABLE t%s (id int8 PRIMARY KEY, name text NOT NULL, at timestamptz NOT NULL)', i);
  EXECUTE format('INSERT INTO t%s SELECT g, md5(g::text), now() FROM generate_series(1, $ROWS) g', i);
END LOOP; END \$\$"
pq -c "VACUUM ANALYZE"

export PGPASSWORD="$PG_PASSWORD"
for i in $(seq 1 "$TABLES"); do echo "\\copy (SELECT * FROM t$i) TO '/dev/null'"; done >"$WORK/copy.sql"
copy_cmd=(psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U flow_capture -d bench -f "$WORK/copy.sql")
table_args=()
for i in $(seq 1 "$TABLES"); do table_args+=(--table "public.t$i"); done

: >"$WORK/copy.txt"
: >"$WORK/conn.jsonl"
for rep in $(seq 1 "$BENCH_REPS"); do
  for which in $( ((rep % 2)) && echo "copy conn" || echo "conn copy"); do
    case "$which" in
    copy)
      t0="$(now_s)"
      "${copy_cmd[@]}"
      t1="$(now_s)"
      echo "$t1 - $t0" | bc -l >>"$WORK/copy.txt"
      log "rep $rep: COPY of every table $(tail -1 "$WORK/copy.txt") s"
      ;;
    conn)
      # A fresh slot each time: the previous run's slot holds its own position.
      PGDB=bench pq -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots" >/dev/null
      run_driver "$WORK/conn.jsonl" "${table_args[@]}" --shutdown-after-polling \
        --rss "$WORK/time.txt" --stderr "$WORK/connector.log" --log-level "${BENCH_LOG_LEVEL:-info}"
      log "rep $rep: connector $(tail -1 "$WORK/conn.jsonl")"
      docs="$(jget "$WORK/conn.jsonl" docs | tail -1)"
      if [ "$docs" != "$((TABLES * ROWS))" ]; then
        echo "FAILED: the connector captured $docs documents of $((TABLES * ROWS)) rows: rows were skipped." >&2
        exit 1
      fi
      ;;
    esac
  done
done

copy_s="$(median <"$WORK/copy.txt")"
conn_s="$(jget "$WORK/conn.jsonl" wall_s | median)"
window_s="$(python3 -c 'import json, sys
v = sorted(json.loads(l)["last_doc_s"] - json.loads(l)["opened_s"] for l in open(sys.argv[1]))
print(v[len(v) // 2])' "$WORK/conn.jsonl")"
checkpoints="$(jget "$WORK/conn.jsonl" checkpoints | median)"
rss_max="$(jget "$WORK/conn.jsonl" max_rss_kib | sort -g | tail -1)"

f() { printf "%.${2:-2}f" "$1"; }
echo
echo "== Backfill of $TABLES tables x $ROWS rows, median of $BENCH_REPS"
row "" "seconds" "tables/s" "rows/s"
row "COPY of every table, one psql session" "$(f "$copy_s")" "$(f "$(echo "$TABLES / $copy_s" | bc -l)" 0)" "$(f "$(echo "$TABLES * $ROWS / $copy_s" | bc -l)" 0)"
row "connector > driver, spawn to exit" "$(f "$conn_s")" "$(f "$(echo "$TABLES / $conn_s" | bc -l)" 0)" "$(f "$(echo "$TABLES * $ROWS / $conn_s" | bc -l)" 0)"
row "connector > driver, opened to last document" "$(f "$window_s")" "$(f "$(echo "$TABLES / $window_s" | bc -l)" 0)" "$(f "$(echo "$TABLES * $ROWS / $window_s" | bc -l)" 0)"
echo
row "checkpoints per run (one per fence, plus start/end)" "$(f "$checkpoints" 0)"
row "ratio to COPY, spawn to exit" "$(f "$(echo "$copy_s / $conn_s" | bc -l)")"
row "connector peak RSS MiB" "$(f "$(echo "$rss_max / 1024" | bc -l)" 1)"
echo "  load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
