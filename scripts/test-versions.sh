#!/usr/bin/env bash
# The version matrix: the capture tests against PostgreSQL 13, 14, 16, 17 and 18, each on a
# throwaway server of that version (scripts/test.sh runs everything on the system's 15).
#
#   scripts/test-versions.sh [majors...]      # default: 13 14 16 17 18
#
# Binaries come from scripts/pg-versions.sh (run first; it is a no-op once they are there).
# For each major, with TEST_PG_BINDIR pointing at it, the integration tests that exercise
# capturing and streaming:
#   * every transcript tests/transcripts/capture_*.txt, compared with the same reviewed
#     snapshots as on 15 (tests/it/snapshots/it__transcript__capture_*.snap);
#   * capture_stream:: (a 1M-row transaction in one checkpoint with bounded memory, idle slots,
#     schema changes while streaming, dropped slots, resuming Go state, statement timeouts);
#   * capture_visibility:: (a commit the stream delivers before queries see it: a synchronous
#     standby that never confirms holds it; the backfill must wait for it);
#   * capture_chaos:: (every fault scenario: failpoints under load with transactions past
#     logical_decoding_work_mem, immediate restarts of a private server of that version,
#     network cuts and stalls, dropped slots, publications and tables; about 90 s each). The
#     failpoint scenarios stop CHAOS_VERSION_SESSIONS sessions each, default 8 (20 on 15 in
#     scripts/test.sh): the matrix took 2,720 s of CI's 90 minutes with 20;
#   * capture_faults:: (ten runs of the random-SIGKILL soak: six kills each under a writer
#     of single- and multi-row transactions, the result equal to the table; about 60 s);
#   * differential::seeds (the randomized differential harness, tests/it/differential.rs:
#     DIFF_VERSION_SEEDS cases, default 6, from seed <major>000, so each version runs cases of
#     its own);
#   * keyless_backfill::keyless_backfill_reads_each_row_about_once (each keyless window is a
#     TID scan, also on 13, which has no TID range scan);
#   * pg_connect::slot_ (the replication client: slots, protocol versions, errors);
#   * read_only:: (read-only captures, fenced by WAL position; on 16, 17 and 18 also from a hot
#     standby made with pg_basebackup, which 14 must refuse clearly; 13's package has no
#     pg_basebackup, so that test is skipped there);
#   * harness:: (the server starts, logical WAL, the capture role).
# Not here: discovery and type tests (PostGIS is only installed for 15) and TLS (needs psql,
# which the PostgreSQL 13 package lacks).
#
# Version differences skipped on purpose:
#   * 13: pg_connect::slot_stream_confirm_and_drop_with_protocol_version_2_and_streaming asks the
#     server for pgoutput protocol 2, which PostgreSQL 13 does not have (the connector itself
#     uses protocol 1 there; every other test covers that).
#
# The builds are the same as scripts/test.sh's (the release binaries, which the tests run, and
# the test build), so after it nothing is compiled again.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

majors=("$@")
if [[ ${#majors[@]} -eq 0 ]]; then
    majors=(13 14 16 17 18)
fi

scripts/pg-versions.sh "${majors[@]}"
dir="$(scripts/pg-versions.sh --dir)"

locked=()
if [[ -f Cargo.lock ]]; then
    locked=(--locked)
fi


# A failing snapshot must not leave a pending .snap.new to be accepted by mistake: the
# snapshots are the ones reviewed on 15, and the diff is printed anyway.
export INSTA_UPDATE="${INSTA_UPDATE:-no}"

started=$SECONDS
echo "==> scripts/build-release.sh; cargo test ${locked[*]} --test it --no-run"
release_dir="$(scripts/build-release.sh)"
cargo test "${locked[@]}" --test it --no-run
echo "==> build: $((SECONDS - started))s"
# The release binaries, as in scripts/test.sh (see there why).
export TEST_CONNECTOR_BIN="${TEST_CONNECTOR_BIN:-$release_dir/source-postgres}"
export TEST_BATCH_CONNECTOR_BIN="${TEST_BATCH_CONNECTOR_BIN:-$release_dir/source-postgres-batch}"

results=()
failed=0
for major in "${majors[@]}"; do
    bindir="$dir/$major/bin"
    skip=()
    if [[ "$major" -lt 14 ]]; then
        skip=(--skip pg_connect::slot_stream_confirm_and_drop_with_protocol_version_2_and_streaming
            --skip read_only::read_only_capture_from_a_hot_standby)
    fi
    echo
    echo "==> PostgreSQL $major ($("$bindir/postgres" --version)): capture tests"
    major_started=$SECONDS
    status=0
    # (TEST_PG_HOST would point the tests at an existing server instead.)
    env -u TEST_PG_HOST TEST_PG_BINDIR="$bindir" \
        DIFF_SEEDS="${DIFF_VERSION_SEEDS:-6}" DIFF_SEED_BASE="${major}000" \
        CHAOS_SESSIONS="${CHAOS_VERSION_SESSIONS:-8}" \
        cargo test "${locked[@]}" --test it -- \
        transcript::capture_ capture_stream:: capture_visibility:: capture_chaos:: capture_faults:: \
        differential::seeds keyless_backfill::keyless_backfill_reads_each_row_about_once \
        pg_connect::slot_ harness::harness_ read_only:: \
        "${skip[@]}" || status=$?
    outcome=ok
    if [[ "$status" -ne 0 ]]; then
        outcome="FAILED (exit $status)"
        failed=$((failed + 1))
    fi
    results+=("$(printf 'PostgreSQL %-3s %-18s %5ds' "$major:" "$outcome" "$((SECONDS - major_started))")")
done

echo
echo "==> version matrix"
printf '%s\n' "${results[@]}"
printf 'total %ds\n' "$((SECONDS - started))"
exit $((failed > 0))
