#!/usr/bin/env bash
# Benchmark 3 — one large transaction while the capture is streaming: memory and drain time.
#
# The capture is started on an empty table and left streaming (no SHUTDOWN_AFTER_POLLING).
# Then one transaction inserts BENCH_ROWS rows (default 2,000,000) of the 8-column table,
# and a second one updates every row. With pgoutput protocol 2 and streaming on, the server
# sends each transaction in blocks while it runs (past logical_decoding_work_mem, 64 MB by
# default); the connector must hold them until the commit without growing. The driver closes
# the connector's input at the first checkpoint after it has read 2 x BENCH_ROWS documents.
#
# Figures: peak RSS of the connector (/usr/bin/time -v; target < 32 MiB), and drain time:
# from each COMMIT returning to the client to the last document of that transaction read
# from the connector. As a reference, pg_recvlogical then decodes the same two transactions
# from a slot created alongside (the same pgoutput options), into /dev/null.
#
# BENCH_CONCURRENCY=N (default 1): N transactions at once instead of one, each inserting
# (then updating) its own BENCH_ROWS / N rows, all open together, so the server streams
# them interleaved and the connector holds N of them at once (one shared spill budget).
# BENCH_DECODING_WORK_MEM (e.g. 64kB) sets logical_decoding_work_mem for the benchmark's
# database (default: the server's 64MB): lower, every one of N small transactions is
# streamed, not only the largest few.
source "$(dirname "$0")/common.sh"

ROWS="${BENCH_ROWS:-2000000}"
BASE="${BENCH_ID_BASE:-1}"
CONCURRENCY="${BENCH_CONCURRENCY:-1}"
PER_TXN=$(( (ROWS + CONCURRENCY - 1) / CONCURRENCY ))
ROWS=$(( PER_TXN * CONCURRENCY ))

# concurrently SQL_FOR_INDEX: run one statement per transaction (index 0..N-1), each in its
# own session, all at once; wait for every one.
concurrently() {
  local pids=() i
  for i in $(seq 0 $((CONCURRENCY - 1))); do
    pq -c "$("$1" "$i")" >/dev/null &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i"; done
}
insert_sql() { echo "INSERT INTO lt $(wide_rows_sql "$((BASE + $1 * PER_TXN))" "$PER_TXN")"; }
update_sql() {
  local lo=$((BASE + $1 * PER_TXN))
  echo "UPDATE lt SET qty = qty + 1, score = score * 2 WHERE id >= $lo AND id < $((lo + PER_TXN))"
}

bench_init largetx
machine_info
pg_start
capture_setup
create_wide_table lt 0
if [ -n "${BENCH_DECODING_WORK_MEM:-}" ]; then
  pq -c "ALTER DATABASE bench SET logical_decoding_work_mem = '$BENCH_DECODING_WORK_MEM'" >/dev/null
fi
export PGPASSWORD="$PG_PASSWORD"

f() { printf "%.${2:-2}f" "$1"; }
: >"$WORK/conn.jsonl"
: >"$WORK/result.txt"
for rep in $(seq 1 "$BENCH_REPS"); do
  pq -c "TRUNCATE lt" >/dev/null
  rm -f "$WORK/ready" "$WORK/stop"
  run_driver "$WORK/conn.jsonl" --table public.lt --stop-file "$WORK/stop" --ready-file "$WORK/ready" \
    --rss "$WORK/time.txt" --rss-samples "$WORK/rss-$rep.txt" --stderr "$WORK/connector-$rep.log" \
    --log-level "${BENCH_LOG_LEVEL:-info}" &
  driver=$!
  for _ in $(seq 1 600); do [ -e "$WORK/ready" ] && break; sleep 0.1; done
  [ -e "$WORK/ready" ] || { echo "the capture did not reach streaming within 60 s" >&2; exit 1; }
  drop_slot recv_slot
  pq -c "SELECT pg_create_logical_replication_slot('recv_slot', 'pgoutput')" >/dev/null

  log "rep $rep: inserting $ROWS rows in $CONCURRENCY concurrent transaction(s)"
  t0="$(now_s)"
  concurrently insert_sql
  t1="$(now_s)"
  log "rep $rep: updating them in $CONCURRENCY concurrent transaction(s)"
  concurrently update_sql
  t2="$(now_s)"
  end_lsn="$(pq1 "SELECT pg_current_wal_lsn()")"
  echo $((2 * ROWS)) >"$WORK/stop"
  wait "$driver"
  summary="$(tail -1 "$WORK/conn.jsonl")"
  log "rep $rep: connector $summary (load $(load_now))"
  docs="$(jget "$WORK/conn.jsonl" docs | tail -1)"
  if [ "$docs" -lt $((2 * ROWS)) ]; then
    echo "FAILED: the connector captured $docs documents, expected $((2 * ROWS))" >&2
    exit 1
  fi
  start_unix="$(jget "$WORK/conn.jsonl" start_unix | tail -1)"
  last_doc="$(jget "$WORK/conn.jsonl" last_doc_s | tail -1)"
  t_r0="$(now_s)"
  timeout 1800 pg_recvlogical -h 127.0.0.1 -p "$PG_PORT" -U flow_capture -d bench --slot recv_slot --start \
    --endpos "$end_lsn" --no-loop -o proto_version=2 -o publication_names=flow_publication -o streaming=on \
    -f /dev/null
  t_r1="$(now_s)"
  drop_slot recv_slot
  drain="$(echo "$start_unix + $last_doc - $t2" | bc -l)"
  echo "$(echo "$t1 - $t0" | bc -l) $(echo "$t2 - $t1" | bc -l) $drain $(echo "$start_unix + $last_doc - $t0" | bc -l) $(echo "$t_r1 - $t_r0" | bc -l)" >>"$WORK/result.txt"
  log "rep $rep: insert $(f "$(echo "$t1 - $t0" | bc -l)") s, update $(f "$(echo "$t2 - $t1" | bc -l)") s, drain after last commit $(f "$drain") s, pg_recvlogical $(f "$(echo "$t_r1 - $t_r0" | bc -l)") s"
  # Wait for the slot to be released before the next repetition.
  for _ in $(seq 1 100); do
    [ "$(pq1 "SELECT count(*) FROM pg_replication_slots WHERE active")" = 0 ] && break
    sleep 0.1
  done
done

col() { awk -v c="$1" '{ print $c }' "$WORK/result.txt" | median; }
rss_med="$(jget "$WORK/conn.jsonl" max_rss_kib | median)"
rss_max="$(jget "$WORK/conn.jsonl" max_rss_kib | sort -g | tail -1)"
cpu_s="$(python3 -c 'import json, sys
v = sorted(json.loads(l)["user_s"] + json.loads(l)["sys_s"] for l in open(sys.argv[1]))
print(v[len(v) // 2])' "$WORK/conn.jsonl")"
echo
if [ "$CONCURRENCY" = 1 ]; then
  echo "== Large transactions: INSERT of $ROWS rows, then UPDATE of all of them, each one transaction, while streaming; median of $BENCH_REPS"
else
  echo "== Large transactions: INSERT of $ROWS rows, then UPDATE of all of them, each in $CONCURRENCY concurrent transactions of $PER_TXN rows, while streaming (logical_decoding_work_mem ${BENCH_DECODING_WORK_MEM:-64MB}); median of $BENCH_REPS"
fi
row "" "seconds"
row "INSERT statement(s) (client side, to COMMIT)" "$(f "$(col 1)")"
row "UPDATE statement(s) (client side, to COMMIT)" "$(f "$(col 2)")"
row "connector: last COMMIT -> last document read" "$(f "$(col 3)")"
row "connector: INSERT start -> last document read" "$(f "$(col 4)")"
row "pg_recvlogical: decode both afterwards" "$(f "$(col 5)")"
echo
row "connector peak RSS MiB, median / max (< 32)" "$(f "$(echo "$rss_med / 1024" | bc -l)" 1)" "$(f "$(echo "$rss_max / 1024" | bc -l)" 1)" \
  "$(awk -v r="$rss_max" 'BEGIN { print (r < 32768) ? "PASS" : "ABOVE" }')"
row "connector CPU s (user+sys)" "$(f "$cpu_s")"
row "documents/s, last COMMIT -> last document" "$(f "$(echo "$ROWS / $(col 3)" | bc -l)" 0)"
echo "  load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
