# Shared helpers of the benchmark scripts; sourced, never run.
#
# Every benchmark starts its own throwaway PostgreSQL cluster (wal_level=logical) on a free
# port under $BENCH_WORKDIR (default: .local/bench in the repository, which git ignores),
# runs a private copy of the release binary (so a concurrent `cargo build` cannot swap it
# mid-run), prints a table of figures, and removes everything on exit.
#
# Environment:
#   BENCH_REPS      repetitions of each timed run; the tables show the median (default 3)
#   BENCH_WORKDIR   where clusters and scratch files live (default: <repo>/.local/bench)
#   BENCH_BIN       connector binary (default: target/release/source-postgres)
#   BENCH_KEEP=1    keep the scratch directory (and its server log) for inspection
#   BENCH_PERF=1    profile each connector run with `perf record` and print its top symbols
#                   (use an unstripped build: CARGO_PROFILE_RELEASE_STRIP=false, via BENCH_BIN)
#   BENCH_PG_BINDIR PostgreSQL server binaries (default: pg_config --bindir)
#   BENCH_ID_BASE   first id of generated tables (default 1); 1000000000 gives every id the
#                   same number of digits, so text order equals numeric order

set -euo pipefail

BENCH_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_DIR="$BENCH_REPO/benches"
BENCH_REPS="${BENCH_REPS:-3}"
PG_BINDIR="${BENCH_PG_BINDIR:-$(pg_config --bindir)}"
PG_PASSWORD="bench-secret"

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

log() { printf '  [%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# bench_init NAME: scratch directory, private binary copy, cleanup trap.
bench_init() {
  local name="$1"
  local base="${BENCH_WORKDIR:-$BENCH_REPO/.local/bench}"
  mkdir -p "$base"
  WORK="$(mktemp -d "$base/$name.XXXXXX")"
  chmod 755 "$WORK"
  [ "$(id -u)" = 0 ] && chown postgres "$WORK"
  local src="${BENCH_BIN:-$BENCH_REPO/target/release/source-postgres}"
  if [ ! -x "$src" ]; then
    echo "connector binary $src is missing: run cargo build --release (or scripts/bench.sh)" >&2
    exit 1
  fi
  BIN="$WORK/source-postgres"
  cp "$src" "$BIN"
  if [ ! -x /usr/bin/time ]; then
    echo "/usr/bin/time is missing (Debian: apt-get install time)" >&2
    exit 1
  fi
  trap bench_cleanup EXIT
}

bench_cleanup() {
  local status=$?
  if [ -n "${PG_DATA:-}" ] && [ -d "$PG_DATA" ]; then
    as_postgres "$PG_BINDIR/pg_ctl" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1 || true
  fi
  if [ -n "${WORK:-}" ]; then
    if [ "${BENCH_KEEP:-0}" = 1 ] || [ "$status" != 0 ]; then
      echo "scratch directory kept: $WORK" >&2
    else
      rm -rf "$WORK"
    fi
  fi
  exit "$status"
}

# pg_start [extra server settings...]: initdb + start on a free port. Sets PG_PORT, PG_DATA.
pg_start() {
  PG_DATA="$WORK/data"
  PG_PORT="$(free_port)"
  as_postgres "$PG_BINDIR/initdb" -D "$PG_DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C >/dev/null
  local opts="-p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1 -c wal_level=logical"
  opts+=" -c max_wal_senders=10 -c max_replication_slots=10"
  opts+=" -c shared_buffers=${BENCH_SHARED_BUFFERS:-1GB} -c max_wal_size=16GB -c checkpoint_timeout=30min"
  local setting
  # BENCH_SERVER_SETTINGS: more settings for every benchmark's server, space-separated
  # (say "synchronous_commit=off", a common tuning the fences must not depend on).
  # shellcheck disable=SC2086
  for setting in "$@" ${BENCH_SERVER_SETTINGS:-}; do opts+=" -c $setting"; done
  as_postgres "$PG_BINDIR/pg_ctl" -D "$PG_DATA" -l "$WORK/server.log" -w -o "$opts" start >/dev/null
  log "PostgreSQL $(pg_config --version | awk '{print $2}') on port $PG_PORT"
}

# psql as the superuser over the Unix socket, database bench by default.
pq() { psql -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PG_PORT" -U postgres -d "${PGDB:-bench}" "$@"; }
# One value.
pq1() { pq -At -c "$1"; }

# The capture role, database, publication and endpoint configuration ($WORK/config.json).
capture_setup() {
  PGDB=postgres pq -c "CREATE ROLE flow_capture WITH LOGIN REPLICATION PASSWORD '$PG_PASSWORD'" -c "CREATE DATABASE bench"
  pq <<SQL
CREATE PUBLICATION flow_publication FOR ALL TABLES;
GRANT CREATE ON SCHEMA public TO flow_capture;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO flow_capture;
SQL
  write_config "${BENCH_CHUNK_SIZE:-50000}"
}

# write_config CHUNK_SIZE [SLOT]
# BENCH_READERS, when set, is advanced.backfill_readers (unset: the default, chosen from the table size).
write_config() {
  local slot="${2:-flow_slot}"
  local readers=""
  if [ -n "${BENCH_READERS:-}" ]; then readers=",\"backfill_readers\":${BENCH_READERS}"; fi
  cat >"$WORK/config.json" <<JSON
{"address":"127.0.0.1:$PG_PORT","user":"flow_capture","credentials":{"auth_type":"UserPassword","password":"$PG_PASSWORD"},
 "database":"bench","advanced":{"sslmode":"disable","backfill_chunk_size":$1,"slotName":"$slot"$readers}}
JSON
}

# The 8-column benchmark table, filled with ROWS rows in one statement, ids from FIRST
# (default $BENCH_ID_BASE, else 1).
#   create_wide_table NAME ROWS [FIRST]
create_wide_table() {
  pq <<SQL
CREATE TABLE $1 (
  id      int8 PRIMARY KEY,
  name    text NOT NULL,
  qty     int4,
  price   numeric(12,2),
  created timestamptz NOT NULL,
  active  bool,
  attrs   jsonb,
  score   float8
);
SQL
  [ "$2" -gt 0 ] && fill_wide_table "$1" "${3:-${BENCH_ID_BASE:-1}}" "$2"
  return 0
}

# fill_wide_table NAME FIRST_ID COUNT: one INSERT ... SELECT of COUNT rows (~170 bytes each as COPY text).
fill_wide_table() {
  pq -c "SET synchronous_commit = off" -c "INSERT INTO $1 $(wide_rows_sql "$2" "$3")"
}

# The SELECT generating rows FIRST..FIRST+COUNT-1 of the wide table.
wide_rows_sql() {
  echo "SELECT g, 'customer ' || md5(g::text), (g % 1000)::int4, (g % 100000) / 100.0,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second', g % 3 = 0,
       jsonb_build_object('k', g % 97, 'tag', 'tag' || (g % 13), 'ok', g % 2 = 0),
       g * 0.001
  FROM generate_series($1::int8, ($1 + $2 - 1)::int8) g"
}

# Print a timestamp in seconds with nanoseconds.
now_s() { date +%s.%N; }

# median of the numbers on stdin (one per line).
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# jget FILE KEY: a top-level field of a driver summary (JSON, one object per line -> one value per line).
jget() { python3 -c 'import json, sys
for line in open(sys.argv[1]):
    line = line.strip()
    if line:
        v = json.loads(line)
        for k in sys.argv[2].split("."):
            v = v.get(k) if isinstance(v, dict) else None
        print(v)' "$1" "$2"; }

# The conditions a figure was measured under.
machine_info() {
  local cpu
  cpu="$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "machine: $(nproc) CPU ($cpu), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r)"
  echo "PostgreSQL $(pg_config --version | awk '{print $2}'), client and server on the same host (TCP loopback)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
}

load_now() { cut -d' ' -f1 /proc/loadavg; }

# run_driver SUMMARY_FILE [driver args...]: run the driver, append its summary line.
# With BENCH_PERF=1 the connector runs under `perf record` and the top of its profile
# (self time by symbol) is printed after each run; peak RSS figures then include perf.
run_driver() {
  local out="$1" bin="$BIN" PERF_RUN
  shift
  if [ "${BENCH_PERF:-0}" = 1 ]; then
    PERF_RUN=$(($(find "$WORK" -maxdepth 1 -name 'perf-*.data' | wc -l) + 1))
    bin="$WORK/perf-wrapper.sh"
    printf '#!/bin/sh\nexec perf record -q -F 999 -g -o %s -- %s "$@"\n' "$WORK/perf-$PERF_RUN.data" "$BIN" >"$bin"
    chmod +x "$bin"
  fi
  python3 "$BENCH_DIR/driver.py" --bin "$bin" --config "$WORK/config.json" "$@" >>"$out"
  if [ "${BENCH_PERF:-0}" = 1 ]; then
    echo "  perf profile of run $PERF_RUN (self time; $WORK/perf-$PERF_RUN.data):" >&2
    perf report -i "$WORK/perf-$PERF_RUN.data" --no-children --sort symbol --stdio -g none 2>/dev/null \
      | grep "%" | grep -v "^#" | head -"${BENCH_PERF_TOP:-25}" | cut -c1-130 >&2 || true
  fi
}

# Print a table row with fixed columns: row LABEL VALUE...
row() { printf '  %-44s' "$1"; shift; printf ' %14s' "$@"; printf '\n'; }

# drop_slot SLOT: drop the slot if it exists, once no process holds it (the previous run's
# walsender may still be exiting when its client already has).
drop_slot() {
  local i
  for i in $(seq 1 100); do
    [ "$(pq1 "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$1' AND active")" = 0 ] && break
    sleep 0.1
  done
  pq -c "SELECT pg_drop_replication_slot('$1') FROM pg_replication_slots WHERE slot_name = '$1'" >/dev/null
}

# fresh_slot TEMPLATE SLOT: SLOT as a new copy of the template slot (which is never consumed).
fresh_slot() {
  drop_slot "$2"
  pq -c "SELECT pg_copy_logical_replication_slot('$1', '$2')" >/dev/null
}

# summary BENCHMARK FIGURE VALUE: one line for the summary table scripts/bench.sh prints at the
# end of a run (appended to $BENCH_SUMMARY, tab-separated; nothing when it is unset).
summary() {
  [ -n "${BENCH_SUMMARY:-}" ] || return 0
  printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$BENCH_SUMMARY"
}
