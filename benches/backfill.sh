#!/usr/bin/env bash
# Benchmark 1 — backfill throughput and memory.
#
# A BENCH_ROWS-row (default 2,000,000), 8-column table (int8 PK, text, int4, numeric,
# timestamptz, bool, jsonb, float8) is read two ways, BENCH_REPS times each, alternating:
#   * COPY (SELECT * FROM t) TO STDOUT through psql's \copy into /dev/null, over TCP
#     loopback as the capture user: the server's fastest way to ship the rows to a client;
#   * the connector's full backfill (fresh state, SHUTDOWN_AFTER_POLLING=yes, so it exits
#     once the backfill is done and the stream has caught up), stdout into /dev/null;
#   * the same, its output read and counted by benches/driver.py (each checkpoint
#     acknowledged), which also checks that every row arrived.
# Connector time is wall time from spawn to exit (connect, slot creation, every chunk,
# every watermark fence). BENCH_READERS sets advanced.backfill_readers (connections reading
# the table at once; unset: the default, chosen from the table size, 2 for 1 M rows in chunks
# of 50,000, and used while measured faster than one). Targets: ratio to COPY (of the /dev/null run) >= 0.85, peak RSS
# < 32 MiB.
source "$(dirname "$0")/common.sh"

ROWS="${BENCH_ROWS:-2000000}"
CHUNK="${BENCH_CHUNK_SIZE:-50000}"

bench_init backfill
machine_info
pg_start
capture_setup
log "creating the table (${ROWS} rows)"
create_wide_table t "$ROWS"
pq -c "VACUUM (ANALYZE, FREEZE) t"
heap="$(pq1 "SELECT pg_size_pretty(pg_table_size('t'))")"
export PGPASSWORD="$PG_PASSWORD"
copy_cmd=(psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U flow_capture -d bench -c "\\copy (SELECT * FROM t) TO '/dev/null'")
copy_bytes="$(psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U flow_capture -d bench -c "COPY (SELECT * FROM t) TO STDOUT" | wc -c)"
log "warm-up read done (COPY text: $copy_bytes bytes)"

: >"$WORK/copy.txt"
: >"$WORK/conn.jsonl"
: >"$WORK/null.jsonl"
for rep in $(seq 1 "$BENCH_REPS"); do
  for which in $( ((rep % 2)) && echo "copy null conn" || echo "conn null copy"); do
    case "$which" in
    copy)
      t0="$(now_s)"
      "${copy_cmd[@]}"
      t1="$(now_s)"
      echo "$t1 - $t0" | bc -l >>"$WORK/copy.txt"
      log "rep $rep: COPY $(tail -1 "$WORK/copy.txt") s (load $(load_now))"
      ;;
    null)
      run_driver "$WORK/null.jsonl" --table public.t --shutdown-after-polling --discard-output \
        --rss "$WORK/time.txt" --stderr "$WORK/connector-null.log" --log-level "${BENCH_LOG_LEVEL:-info}"
      log "rep $rep: connector > /dev/null $(tail -1 "$WORK/null.jsonl")  (load $(load_now))"
      ;;
    conn)
      run_driver "$WORK/conn.jsonl" --table public.t --shutdown-after-polling \
        --rss "$WORK/time.txt" --stderr "$WORK/connector.log" --log-level "${BENCH_LOG_LEVEL:-info}"
      log "rep $rep: connector > driver $(tail -1 "$WORK/conn.jsonl")  (load $(load_now))"
      docs="$(jget "$WORK/conn.jsonl" docs | tail -1)"
      if [ "$docs" != "$ROWS" ]; then
        echo "FAILED: the connector captured $docs documents of a $ROWS-row table (exit 0): rows were skipped." >&2
        echo "connector log: $WORK/connector.log, server log: $WORK/server.log" >&2
        exit 1
      fi
      ;;
    esac
  done
done

copy_s="$(median <"$WORK/copy.txt")"
null_s="$(jget "$WORK/null.jsonl" wall_s | median)"
conn_s="$(jget "$WORK/conn.jsonl" wall_s | median)"
window_s="$(python3 -c 'import json, sys
v = sorted(json.loads(l)["last_doc_s"] - json.loads(l)["first_doc_s"] for l in open(sys.argv[1]))
print(v[len(v) // 2])' "$WORK/conn.jsonl")"
bytes="$(jget "$WORK/conn.jsonl" bytes | median)"
rss_med="$(cat "$WORK/null.jsonl" "$WORK/conn.jsonl" >"$WORK/all.jsonl"; jget "$WORK/all.jsonl" max_rss_kib | median)"
rss_max="$(jget "$WORK/all.jsonl" max_rss_kib | sort -g | tail -1)"
cpu() { python3 -c 'import json, sys
v = sorted(json.loads(l)["user_s"] + json.loads(l)["sys_s"] for l in open(sys.argv[1]))
print(v[len(v) // 2])' "$1"; }
driver_cpu="$(jget "$WORK/conn.jsonl" driver_cpu_s | median)"
ratio="$(echo "$copy_s / $null_s" | bc -l)"
ratio_drv="$(echo "$copy_s / $conn_s" | bc -l)"

f() { printf "%.${2:-2}f" "$1"; }
rate() { f "$(echo "$ROWS / $1" | bc -l)" 0; }
mbps() { f "$(echo "$1 / $2 / 1000000" | bc -l)" 1; }
echo
echo "== Backfill: $ROWS rows x 8 columns (heap $heap, COPY text $(f "$(echo "$copy_bytes / 1000000" | bc -l)" 1) MB), chunk size $CHUNK, readers ${BENCH_READERS:-default (by size, used while faster)}, median of $BENCH_REPS"
row "" "seconds" "rows/s" "MB/s"
row "COPY (SELECT * FROM t) TO STDOUT via psql" "$(f "$copy_s")" "$(rate "$copy_s")" "$(mbps "$copy_bytes" "$copy_s")"
row "connector > /dev/null, spawn to exit" "$(f "$null_s")" "$(rate "$null_s")" "$(mbps "$bytes" "$null_s")"
row "connector > driver, spawn to exit" "$(f "$conn_s")" "$(rate "$conn_s")" "$(mbps "$bytes" "$conn_s")"
row "connector > driver, first to last document" "$(f "$window_s")" "$(rate "$window_s")" "$(mbps "$bytes" "$window_s")"
echo
row "connector output, bytes per document" "$(f "$(echo "$bytes / $ROWS" | bc -l)" 0)"
row "ratio to COPY, > /dev/null (target >= 0.85)" "$(f "$ratio")" "$(awk -v r="$ratio" 'BEGIN { print (r >= 0.85) ? "PASS" : "BELOW" }')"
row "ratio to COPY, > driver" "$(f "$ratio_drv")"
row "connector peak RSS MiB, median / max (< 32)" "$(f "$(echo "$rss_med / 1024" | bc -l)" 1)" "$(f "$(echo "$rss_max / 1024" | bc -l)" 1)" \
  "$(awk -v r="$rss_max" 'BEGIN { print (r < 32768) ? "PASS" : "ABOVE" }')"
row "connector CPU s (user+sys), > /dev/null" "$(f "$(cpu "$WORK/null.jsonl")")"
row "connector CPU s (user+sys), > driver" "$(f "$(cpu "$WORK/conn.jsonl")")"
row "driver CPU s (reading the output)" "$(f "$driver_cpu")"
null_cpu="$(cpu "$WORK/null.jsonl")"
row "connector CPU us/row, > /dev/null" "$(f "$(echo "$null_cpu * 1000000 / $ROWS" | bc -l)")"
summary backfill "ratio to COPY, > /dev/null (target >= 0.85), $ROWS rows" "$(f "$ratio")"
summary backfill "ratio to COPY, > driver" "$(f "$ratio_drv")"
summary backfill "connector CPU us/row, > /dev/null" "$(f "$(echo "$null_cpu * 1000000 / $ROWS" | bc -l)")"
summary backfill "connector peak RSS MiB (max of runs)" "$(f "$(echo "$rss_max / 1024" | bc -l)" 1)"
echo "  load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
