#!/usr/bin/env bash
# Benchmark 4 — latency under a steady load.
#
# The capture streams table `lat` while pgbench runs a custom script at a fixed rate
# (BENCH_RATE transactions/s, default 1000, BENCH_CLIENTS clients, default 4, for
# BENCH_SECONDS seconds, default 30): each transaction is one autocommit INSERT storing
# clock_timestamp(). For every document the driver reads from the connector's stdout it
# records (time the line was read) - (the stored clock_timestamp()): the latency from the
# row's insertion, through COMMIT (synchronous_commit=on, so including the WAL flush),
# logical decoding, the connector, to the consumer. Same host, same clock.
source "$(dirname "$0")/common.sh"

RATE="${BENCH_RATE:-1000}"
CLIENTS="${BENCH_CLIENTS:-4}"
SECONDS_="${BENCH_SECONDS:-30}"

bench_init latency
machine_info
pg_start
capture_setup
pq -c "CREATE TABLE lat (id bigserial PRIMARY KEY, ts timestamptz NOT NULL, pad text)"
cat >"$WORK/insert.sql" <<'SQL'
INSERT INTO lat (ts, pad) VALUES (clock_timestamp(), 'latency benchmark row');
SQL
chmod 644 "$WORK/insert.sql"

f() { printf "%.${2:-1}f" "$1"; }
: >"$WORK/conn.jsonl"
: >"$WORK/pgbench.txt"
for rep in $(seq 1 "$BENCH_REPS"); do
  rm -f "$WORK/ready" "$WORK/stop"
  pq -c "TRUNCATE lat" >/dev/null
  run_driver "$WORK/conn.jsonl" --table public.lat --latency-field ts --latency-out "$WORK/latency-$rep.txt" \
    --stop-file "$WORK/stop" --ready-file "$WORK/ready" --rss "$WORK/time.txt" \
    --stderr "$WORK/connector-$rep.log" --log-level "${BENCH_LOG_LEVEL:-info}" &
  driver=$!
  for _ in $(seq 1 600); do [ -e "$WORK/ready" ] && break; sleep 0.1; done
  [ -e "$WORK/ready" ] || { echo "the capture did not reach streaming within 60 s" >&2; exit 1; }
  log "rep $rep: pgbench at $RATE tps with $CLIENTS clients for $SECONDS_ s"
  as_postgres pgbench -n -h "$WORK" -p "$PG_PORT" -U postgres -c "$CLIENTS" -j 2 -R "$RATE" -T "$SECONDS_" \
    -f "$WORK/insert.sql" bench >"$WORK/pgbench-$rep.txt" 2>&1
  grep -E 'latency average|^tps' "$WORK/pgbench-$rep.txt" | tr '\n' ' ' >>"$WORK/pgbench.txt"
  echo >>"$WORK/pgbench.txt"
  pq1 "SELECT count(*) FROM lat" >"$WORK/stop"
  wait "$driver"
  log "rep $rep: connector $(tail -1 "$WORK/conn.jsonl") (load $(load_now))"
  log "rep $rep: pgbench $(tail -1 "$WORK/pgbench.txt")"
  for _ in $(seq 1 100); do
    [ "$(pq1 "SELECT count(*) FROM pg_replication_slots WHERE active")" = 0 ] && break
    sleep 0.1
  done
done

lat() { jget "$WORK/conn.jsonl" "latency.$1" | median; }
tps="$(awk '{ for (i = 1; i <= NF; i++) if ($i == "tps") print $(i + 2) }' "$WORK/pgbench.txt" | median)"
commit_ms="$(awk '{ for (i = 1; i <= NF; i++) if ($i == "average") print $(i + 2) }' "$WORK/pgbench.txt" | median)"
rss_max="$(jget "$WORK/conn.jsonl" max_rss_kib | sort -g | tail -1)"
echo
echo "== Latency: INSERT (clock_timestamp) -> document read from the connector, pgbench $RATE tps x $SECONDS_ s, $CLIENTS clients; median over $BENCH_REPS runs of each percentile"
row "" "ms"
row "p50" "$(f "$(lat p50_ms)")"
row "p90" "$(f "$(lat p90_ms)")"
row "p99" "$(f "$(lat p99_ms)")"
row "max" "$(f "$(lat max_ms)")"
echo
row "documents measured per run" "$(lat n)"
row "pgbench tps achieved" "$(f "$tps")"
row "pgbench latency avg ms (incl. -R lag)" "$commit_ms"
row "connector peak RSS MiB (max of runs)" "$(f "$(echo "$rss_max / 1024" | bc -l)")"
echo "  load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
