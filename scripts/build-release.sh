#!/usr/bin/env bash
# Builds both connectors' release binaries as the images ship them, and prints their directory.
#
#   scripts/build-release.sh        # stdout: the directory holding source-postgres and
#                                   # source-postgres-batch; cargo's output goes to stderr
#
# Statically linked (glibc with crt-static) for x86_64-unknown-linux-gnu, both binaries in one
# cargo invocation; the explicit --target keeps build scripts and proc-macros dynamically
# linked, and keeps this build apart from `cargo build --release`. scripts/build-image.sh
# stages these binaries, and scripts/test.sh and scripts/test-versions.sh run the integration
# tests against them, so the tests run exactly what the images ship and CI compiles it once.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

rust_target="x86_64-unknown-linux-gnu"
binaries=(source-postgres source-postgres-batch)
locked=()
if [[ -f Cargo.lock ]]; then
    locked=(--locked)
fi

echo "==> cargo build --release ${locked[*]} --target $rust_target (crt-static): ${binaries[*]}" >&2
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release "${locked[@]}" --target "$rust_target" --bin source-postgres --bin source-postgres-batch >&2
target_dir="$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
dir="$target_dir/$rust_target/release"
for name in "${binaries[@]}"; do
    binary="$dir/$name"
    if [[ ! -x "$binary" ]]; then
        echo "build-release: error: the build did not produce $binary" >&2
        exit 1
    fi
    linkage="$(ldd "$binary" 2>&1 || true)"
    if ! grep -Eq 'statically linked|not a dynamic executable' <<<"$linkage"; then
        echo "build-release: error: $binary is dynamically linked, it would not run in an empty image:"$'\n'"$linkage" >&2
        exit 1
    fi
done
echo "$dir"
