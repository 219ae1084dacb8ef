#!/usr/bin/env bash
# Benchmark 4 — latency under a steady load, at each rate of BENCH_RATES in one run.
#
# The capture streams table `lat` while pgbench runs a custom script at a fixed rate: each
# transaction is one autocommit INSERT storing clock_timestamp(). For every document the
# driver reads from the connector's stdout it records (time the line was read) - (the stored
# clock_timestamp()): the latency from the row's insertion, through COMMIT
# (synchronous_commit=on, so including the WAL flush), logical decoding, the connector, to
# the consumer. Same host, same clock. The same figures are also given from the transaction's
# commit time (the document's _meta.source.ts_ms): commit to stdout.
#
#   BENCH_RATES    transactions/s to measure, space-separated (default "1000 5000"; BENCH_RATE,
#                  when set alone, is one rate)
#   BENCH_CLIENTS  pgbench clients (default: rate / 250, at least 4: a commit waits for its
#                  WAL flush, so one client cannot issue more than a few hundred a second)
#   BENCH_SECONDS  seconds of load per run (default 30)
#
# The rate pgbench achieved is printed beside the rate asked for: when it falls more than 5 %
# short, the row says NOT SUSTAINED and the latency figures are those of a lower load.
source "$(dirname "$0")/common.sh"

RATES="${BENCH_RATES:-${BENCH_RATE:-1000 5000}}"
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

# run_rate RATE CLIENTS: BENCH_REPS runs at RATE; figures into $WORK/conn-RATE.jsonl and
# $WORK/pgbench-RATE.txt.
run_rate() {
  local rate="$1" clients="$2" rep driver
  : >"$WORK/conn-$rate.jsonl"
  : >"$WORK/pgbench-$rate.txt"
  for rep in $(seq 1 "$BENCH_REPS"); do
    rm -f "$WORK/ready" "$WORK/stop"
    pq -c "TRUNCATE lat" >/dev/null
    run_driver "$WORK/conn-$rate.jsonl" --table public.lat --latency-field ts \
      --latency-out "$WORK/latency-$rate-$rep.txt" --stop-file "$WORK/stop" --ready-file "$WORK/ready" \
      --rss "$WORK/time.txt" --stderr "$WORK/connector-$rate-$rep.log" --log-level "${BENCH_LOG_LEVEL:-info}" &
    driver=$!
    for _ in $(seq 1 600); do [ -e "$WORK/ready" ] && break; sleep 0.1; done
    [ -e "$WORK/ready" ] || { echo "the capture did not reach streaming within 60 s" >&2; exit 1; }
    log "rate $rate, rep $rep: pgbench with $clients clients for $SECONDS_ s"
    as_postgres pgbench -n -h "$WORK" -p "$PG_PORT" -U postgres -c "$clients" -j 2 -R "$rate" -T "$SECONDS_" \
      -f "$WORK/insert.sql" bench >"$WORK/pgbench-$rate-$rep.txt" 2>&1
    grep -E 'latency average|^tps' "$WORK/pgbench-$rate-$rep.txt" | tr '\n' ' ' >>"$WORK/pgbench-$rate.txt"
    echo >>"$WORK/pgbench-$rate.txt"
    pq1 "SELECT count(*) FROM lat" >"$WORK/stop"
    wait "$driver"
    log "rate $rate, rep $rep: connector $(tail -1 "$WORK/conn-$rate.jsonl") (load $(load_now))"
    log "rate $rate, rep $rep: pgbench $(tail -1 "$WORK/pgbench-$rate.txt")"
    for _ in $(seq 1 100); do
      [ "$(pq1 "SELECT count(*) FROM pg_replication_slots WHERE active")" = 0 ] && break
      sleep 0.1
    done
  done
}

# report RATE CLIENTS: the table of one rate.
report() {
  local rate="$1" clients="$2" tps commit_ms rss_max sustained
  lat() { jget "$WORK/conn-$rate.jsonl" "latency.$1" | median; }
  clat() { jget "$WORK/conn-$rate.jsonl" "commit_latency.$1" | median; }
  tps="$(awk '{ for (i = 1; i <= NF; i++) if ($i == "tps") print $(i + 2) }' "$WORK/pgbench-$rate.txt" | median)"
  commit_ms="$(awk '{ for (i = 1; i <= NF; i++) if ($i == "average") print $(i + 2) }' "$WORK/pgbench-$rate.txt" | median)"
  rss_max="$(jget "$WORK/conn-$rate.jsonl" max_rss_kib | sort -g | tail -1)"
  sustained="$(awk -v t="$tps" -v r="$rate" 'BEGIN { print (t >= 0.95 * r) ? "sustained" : "NOT SUSTAINED" }')"
  echo
  echo "== Latency at $rate tps: INSERT (clock_timestamp) -> document read from the connector, pgbench -R $rate x $SECONDS_ s, $clients clients; median over $BENCH_REPS runs of each percentile"
  row "" "from INSERT, ms" "from COMMIT, ms"
  row "p50" "$(f "$(lat p50_ms)")" "$(f "$(clat p50_ms)")"
  row "p90" "$(f "$(lat p90_ms)")" "$(f "$(clat p90_ms)")"
  row "p99" "$(f "$(lat p99_ms)")" "$(f "$(clat p99_ms)")"
  row "max" "$(f "$(lat max_ms)")" "$(f "$(clat max_ms)")"
  echo "  (from COMMIT: the transaction's commit time as the document's _meta.source.ts_ms carries it,"
  echo "   in whole milliseconds, so those figures are up to 1 ms longer than exact)"
  echo
  row "documents measured per run" "$(lat n)"
  row "pgbench tps asked, achieved" "$rate" "$(f "$tps")" "$sustained"
  if [ "$sustained" != sustained ]; then
    echo "  pgbench could not hold $rate tps on this machine: the figures above are at $(f "$tps" 0) tps"
  fi
  row "pgbench latency avg ms (incl. -R lag)" "$commit_ms"
  row "connector peak RSS MiB (max of runs)" "$(f "$(echo "$rss_max / 1024" | bc -l)")"
  summary latency "p50 / p99 / max ms at $rate tps" "$(f "$(lat p50_ms)") / $(f "$(lat p99_ms)") / $(f "$(lat max_ms)")"
  summary latency "commit to stdout p50 / p99 ms at $rate tps (p99 target < 10)" "$(f "$(clat p50_ms)") / $(f "$(clat p99_ms)")"
  summary latency "achieved tps (asked $rate)" "$(f "$tps" 0)$([ "$sustained" = sustained ] || echo " NOT SUSTAINED")"
  summary latency "peak RSS MiB at $rate tps" "$(f "$(echo "$rss_max / 1024" | bc -l)")"
}

for rate in $RATES; do
  clients="${BENCH_CLIENTS:-$(( rate / 250 > 4 ? rate / 250 : 4 ))}"
  run_rate "$rate" "$clients"
done
for rate in $RATES; do
  report "$rate" "${BENCH_CLIENTS:-$(( rate / 250 > 4 ? rate / 250 : 4 ))}"
done
echo "  load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
