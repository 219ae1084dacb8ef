#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/fuzz_targets/ for a fixed time.
#
#   scripts/fuzz.sh [seconds]      # per target; default 30
#
# Exits non-zero as soon as a target finds a crash; libFuzzer then leaves the input under
# fuzz/artifacts/<target>/, and `cargo fuzz run <target> <file>` replays it.
#
# Environment:
#   FUZZ_SANITIZER  address (default) or none; "none" builds faster and still finds panics.
#   FUZZ_JOBS       parallel fuzzing processes per target (default 1).
set -euo pipefail

seconds="${1:-30}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: $0 [seconds per target, a positive integer]" >&2
    exit 2
fi
sanitizer="${FUZZ_SANITIZER:-address}"
jobs="${FUZZ_JOBS:-1}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz not found; installing it from crates.io" >&2
    cargo install cargo-fuzz --locked
fi

# cargo-fuzz passes nightly-only compiler flags (-Zsanitizer, the sanitizer-coverage
# passes). RUSTC_BOOTSTRAP=1 makes a stable toolchain accept them; on nightly it changes
# nothing. This is for a local and CI test tool only: the connector itself never needs it.
export RUSTC_BOOTSTRAP=1

# Seed each target's corpus with the captured frames, so that libFuzzer starts from real
# messages instead of having to discover the format. The corpus directory is ignored by git.
seed_corpus() {
    local target="$1" fixtures="$root/tests/fixtures/$1" corpus="$root/fuzz/corpus/$1"
    mkdir -p "$corpus"
    [ -d "$fixtures" ] || return 0
    command -v xxd >/dev/null || { echo "xxd not found; not seeding $target" >&2; return 0; }
    local file line n=0
    for file in "$fixtures"/*.hex; do
        [ -e "$file" ] || continue
        while IFS= read -r line; do
            case "$line" in '' | '#'*) continue ;; esac
            n=$((n + 1))
            # Named by content, so reruns do not pile up duplicates.
            printf '%s' "$line" | xxd -r -p >"$corpus/seed-$(printf '%s' "$line" | cksum | cut -d' ' -f1)"
        done <"$file"
    done
    echo "seeded $target with $n captured frames" >&2
}

targets=()
for file in fuzz/fuzz_targets/*.rs; do
    targets+=("$(basename "$file" .rs)")
done
if [ "${#targets[@]}" -eq 0 ]; then
    echo "no fuzz targets in fuzz/fuzz_targets/" >&2
    exit 1
fi

for target in "${targets[@]}"; do
    seed_corpus "$target"
    echo "fuzzing $target for ${seconds}s (sanitizer: $sanitizer, jobs: $jobs)" >&2
    # -max_len: pgoutput rows can be large, but a few KiB reaches every code path and
    # keeps each execution fast.
    cargo fuzz run --fuzz-dir fuzz --sanitizer "$sanitizer" --jobs "$jobs" "$target" -- \
        -max_total_time="$seconds" -max_len=4096 -print_final_stats=1
done
echo "all fuzz targets ran for ${seconds}s each without a crash" >&2
