#!/usr/bin/env bash
# The project's test command: the release build the images ship (scripts/build-release.sh),
# then every test of the crate (unit tests, the integration tests in tests/it running those
# release binaries against a throwaway PostgreSQL, the transcript snapshots, doc tests), then a
# one-line summary.
#
#   scripts/test.sh [extra cargo test arguments]     # e.g. scripts/test.sh --test it harness
#
# Needs PostgreSQL's server binaries (pg_config on PATH, or TEST_PG_BINDIR); see
# tests/it/harness.rs for using an existing server instead (TEST_PG_HOST ...).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

locked=()
if [[ -f Cargo.lock ]]; then
    locked=(--locked)
fi

# PostGIS for the extension type tests (tests/it/types.rs), which require it under CI=true.
if [[ "${CI:-}" == true && "$(id -u)" -eq 0 && ! -f "$(pg_config --sharedir)/extension/postgis.control" ]]; then DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "postgresql-$(pg_config --version | awk '{print int($2)}')-postgis-3"; fi

# sshd for the SSH tunnel tests (tests/it/ssh_tunnel.rs), which start a private one and fail,
# saying how to install it, when it is missing.
if [[ "$(id -u)" -eq 0 && ! -x /usr/sbin/sshd ]] && command -v apt-get >/dev/null; then DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openssh-server; fi

started=$SECONDS
release_dir="$(scripts/build-release.sh)"
built=$SECONDS

# The integration tests run the binaries just built, the ones the images ship (statically
# linked; scripts/build-image.sh stages the same files), rather than the test profile's debug
# builds (which `cargo test` alone uses). Besides testing what ships: the fault scenarios'
# writers keep writing while a restarted session catches up, and on two shared cores a debug
# build fell minutes behind them (a watermark failpoint scenario took 243 s against 8.5 s, the
# version matrix 516 s against 218 s on PostgreSQL 18). Unit tests keep the test profile's
# overflow checks. TEST_CONNECTOR_BIN and TEST_BATCH_CONNECTOR_BIN name other builds.
export TEST_CONNECTOR_BIN="${TEST_CONNECTOR_BIN:-$release_dir/source-postgres}"
export TEST_BATCH_CONNECTOR_BIN="${TEST_BATCH_CONNECTOR_BIN:-$release_dir/source-postgres-batch}"

echo "==> cargo test ${locked[*]} $*"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test "${locked[@]}" "$@" 2>&1 | tee "$log" || status=$?

# "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 1.2s"
awk -v build="$((built - started))" -v total="$((SECONDS - started))" -v status="$status" '
    /^test result:/ { binaries++; passed += $4; failed += $6; ignored += $8 }
    END {
        printf "==> summary: %d passed, %d failed, %d ignored in %d test binaries; ", passed, failed, ignored, binaries
        printf "release build %ds, total %ds; %s\n", build, total, (status == 0 ? "OK" : "FAILED")
    }' "$log"
exit "$status"
