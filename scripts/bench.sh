#!/usr/bin/env bash
# Performance benchmarks: one release build, then each benchmark of benches/ in turn. Each
# starts its own throwaway PostgreSQL (wal_level=logical) on a free port, prints a table of
# figures, and removes everything. Targets and measured figures: docs/performance.md.
#
#   scripts/bench.sh                          # all: backfill streaming largetx latency
#   scripts/bench.sh backfill streaming       # some
#   BENCH_ROWS=200000 BENCH_REPS=1 scripts/bench.sh    # a quick pass
#
# Environment (see benches/common.sh for the rest): BENCH_ROWS (rows per benchmark; the
# defaults are 2,000,000 for backfill and largetx, 1,000,000 for streaming), BENCH_REPS
# (default 3), BENCH_TXN_ROWS (streaming rows per transaction, default 10), BENCH_RATE,
# BENCH_CLIENTS, BENCH_SECONDS (latency), BENCH_CHUNK_SIZE (default 50000),
# BENCH_NO_BUILD=1 to use the existing target/release binary.
# peer (pipelinewise-tap-postgres, from PyPI into a virtualenv) runs only when named.
set -euo pipefail
cd "$(dirname "$0")/.."

all=(backfill streaming largetx latency)
if [ $# -eq 0 ]; then set -- "${all[@]}"; fi
for name in "$@"; do
  if [ ! -f "benches/$name.sh" ]; then
    echo "no benchmark named $name (known: ${all[*]} peer)" >&2
    exit 2
  fi
done

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  echo "==> cargo build --release"
  locked=()
  [ -f Cargo.lock ] && locked=(--locked)
  cargo build --release "${locked[@]}" --quiet
fi

status=0
for name in "$@"; do
  echo
  echo "==> benches/$name.sh"
  started=$SECONDS
  if bash "benches/$name.sh"; then
    echo "==> $name: done in $((SECONDS - started)) s"
  else
    echo "==> $name: FAILED after $((SECONDS - started)) s"
    status=1
  fi
done
exit "$status"
