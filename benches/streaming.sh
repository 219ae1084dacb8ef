#!/usr/bin/env bash
# Benchmark 2 — streaming throughput: draining a replication backlog.
#
#   1. The capture runs once against an empty table, so its slot exists and has caught up;
#      its final state (the resume cursor) is kept. The slot is then copied to a template
#      slot (pg_copy_logical_replication_slot), which is never consumed.
#   2. With nothing running, BENCH_ROWS rows (default 1,000,000) are inserted in
#      transactions of BENCH_TXN_ROWS rows (default 10, so 100,000 transactions) into the
#      8-column table of the backfill benchmark; the WAL position after them is the end LSN.
#   3. Each repetition drains that identical backlog twice, alternating which goes first,
#      each from a fresh copy of the template slot:
#        * the connector, resumed from the kept state with SHUTDOWN_AFTER_POLLING=yes (it
#          exits once it has streamed to a watermark written after the backlog); every
#          checkpoint is acknowledged by benches/driver.py;
#        * pg_recvlogical --endpos <end LSN>, pgoutput with the options the connector uses
#          (proto_version 2, streaming on, publication flow_publication), into /dev/null.
#      Both connect over TCP loopback as the capture user.
# Target: connector events/s >= 0.9 x pg_recvlogical's.
source "$(dirname "$0")/common.sh"

ROWS="${BENCH_ROWS:-1000000}"
TXN_ROWS="${BENCH_TXN_ROWS:-10}"
TXNS=$(( (ROWS + TXN_ROWS - 1) / TXN_ROWS ))
ROWS=$(( TXNS * TXN_ROWS ))
BASE="${BENCH_ID_BASE:-1}"

bench_init streaming
machine_info
pg_start
capture_setup
create_wide_table s 0
export PGPASSWORD="$PG_PASSWORD"

log "first capture run on the empty table (creates the slot)"
run_driver "$WORK/initial.jsonl" --table public.s --shutdown-after-polling --state-out "$WORK/state0.json" \
  --stderr "$WORK/connector-initial.log"
pq -c "SELECT pg_copy_logical_replication_slot('flow_slot', 'template_slot')" >/dev/null

log "inserting the backlog: $ROWS rows in $TXNS transactions of $TXN_ROWS"
start_lsn="$(pq1 "SELECT pg_current_wal_lsn()")"
t0="$(now_s)"
pq <<SQL
SET synchronous_commit = off;
DO \$\$
DECLARE lo int8;
BEGIN
  FOR i IN 0..$((TXNS - 1)) LOOP
    lo := $BASE + i::int8 * $TXN_ROWS;
    INSERT INTO s $(wide_rows_sql lo "$TXN_ROWS");
    COMMIT;
  END LOOP;
END
\$\$;
SQL
t1="$(now_s)"
end_lsn="$(pq1 "SELECT pg_current_wal_lsn()")"
wal_bytes="$(pq1 "SELECT pg_wal_lsn_diff('$end_lsn', '$start_lsn')::int8")"
log "backlog inserted in $(printf %.1f "$(echo "$t1 - $t0" | bc -l)") s, WAL $start_lsn .. $end_lsn ($((wal_bytes / 1000000)) MB)"
pq -c "CHECKPOINT" >/dev/null

: >"$WORK/conn.jsonl"
: >"$WORK/recv.txt"
drain_connector() {
  fresh_slot template_slot flow_slot
  run_driver "$WORK/conn.jsonl" --table public.s --state-in "$WORK/state0.json" --shutdown-after-polling \
    --rss "$WORK/time.txt" --stderr "$WORK/connector.log" --log-level "${BENCH_LOG_LEVEL:-info}"
  local docs
  docs="$(jget "$WORK/conn.jsonl" docs | tail -1)"
  log "rep $1: connector $(tail -1 "$WORK/conn.jsonl") (load $(load_now))"
  if [ "$docs" != "$ROWS" ]; then
    echo "FAILED: the connector captured $docs documents of a $ROWS-row backlog" >&2
    exit 1
  fi
}
drain_recvlogical() {
  fresh_slot template_slot recv_slot
  local t0 t1
  t0="$(now_s)"
  /usr/bin/time -f "%U %S" -o "$WORK/recv-time.txt" timeout 1800 pg_recvlogical -h 127.0.0.1 -p "$PG_PORT" -U flow_capture -d bench --slot recv_slot --start \
    --endpos "$end_lsn" --no-loop -o proto_version=2 -o publication_names=flow_publication -o streaming=on \
    -f /dev/null
  t1="$(now_s)"
  echo "$t1 - $t0" | bc -l >>"$WORK/recv.txt"
  awk '{ print $1 + $2 }' "$WORK/recv-time.txt" >>"$WORK/recv-cpu.txt"
  log "rep $1: pg_recvlogical $(tail -1 "$WORK/recv.txt") s (load $(load_now))"
  drop_slot recv_slot
}

for rep in $(seq 1 "$BENCH_REPS"); do
  if ((rep % 2)); then drain_recvlogical "$rep"; drain_connector "$rep"
  else drain_connector "$rep"; drain_recvlogical "$rep"; fi
done

recv_s="$(median <"$WORK/recv.txt")"
conn_s="$(jget "$WORK/conn.jsonl" wall_s | median)"
bytes="$(jget "$WORK/conn.jsonl" bytes | median)"
rss_max="$(jget "$WORK/conn.jsonl" max_rss_kib | sort -g | tail -1)"
cpu_s="$(python3 -c 'import json, sys
v = sorted(json.loads(l)["user_s"] + json.loads(l)["sys_s"] for l in open(sys.argv[1]))
print(v[len(v) // 2])' "$WORK/conn.jsonl")"
recv_cpu_s="$(median <"$WORK/recv-cpu.txt")"
ckpts="$(jget "$WORK/conn.jsonl" checkpoints | median)"
ratio="$(echo "$recv_s / $conn_s" | bc -l)"

f() { printf "%.${2:-2}f" "$1"; }
echo
echo "== Streaming: backlog of $ROWS inserts in $TXNS transactions ($((wal_bytes / 1000000)) MB of WAL), median of $BENCH_REPS"
row "" "seconds" "events/s" "txn/s"
row "pg_recvlogical (pgoutput v2) to /dev/null" "$(f "$recv_s")" "$(f "$(echo "$ROWS / $recv_s" | bc -l)" 0)" \
  "$(f "$(echo "$TXNS / $recv_s" | bc -l)" 0)"
row "connector, spawn to exit" "$(f "$conn_s")" "$(f "$(echo "$ROWS / $conn_s" | bc -l)" 0)" \
  "$(f "$(echo "$TXNS / $conn_s" | bc -l)" 0)"
echo
row "ratio connector / pg_recvlogical (>= 1.0)" "$(f "$ratio")" "$(awk -v r="$ratio" 'BEGIN { print (r >= 1.0) ? "PASS" : "BELOW" }')"
row "connector output MB/s" "$(f "$(echo "$bytes / $conn_s / 1000000" | bc -l)" 1)"
row "connector checkpoints per run" "$ckpts"
row "connector peak RSS MiB (max of runs)" "$(f "$(echo "$rss_max / 1024" | bc -l)" 1)"
row "connector CPU s (user+sys)" "$(f "$cpu_s")"
row "pg_recvlogical CPU s (user+sys)" "$(f "$recv_cpu_s")"
# CPU per event is the figure that does not depend on how busy the shared cores are.
row "CPU us/event: connector, pg_recvlogical" "$(f "$(echo "$cpu_s * 1000000 / $ROWS" | bc -l)")" \
  "$(f "$(echo "$recv_cpu_s * 1000000 / $ROWS" | bc -l)")"
row "CPU per event, connector / pg_recvlogical" "$(f "$(echo "$cpu_s / $recv_cpu_s" | bc -l)")"
summary streaming "ratio to pg_recvlogical (target >= 1.0), $ROWS events" "$(f "$ratio")"
summary streaming "CPU us/event, connector / pg_recvlogical" \
  "$(f "$(echo "$cpu_s * 1000000 / $ROWS" | bc -l)") / $(f "$(echo "$recv_cpu_s * 1000000 / $ROWS" | bc -l)")"
summary streaming "connector peak RSS MiB (max of runs)" "$(f "$(echo "$rss_max / 1024" | bc -l)" 1)"
echo "  load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
