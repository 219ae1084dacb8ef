#!/usr/bin/env bash
# Value encoding time against value size (benches/encode_scaling.rs): 1 MB and 10 MB values
# of the types whose encoders walk their input piece by piece, and the ratio (linear is about
# 10x); then the cost of each value of the backfill benchmark's row (benches/row_encode.rs).
# No server needed.
set -euo pipefail
cd "$(dirname "$0")/.."
locked=()
[ -f Cargo.lock ] && locked=(--locked)
echo "== value encoding scaling (best of 3)"
cargo bench "${locked[@]}" --quiet --bench encode_scaling
cargo bench "${locked[@]}" --quiet --bench row_encode
