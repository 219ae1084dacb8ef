#!/usr/bin/env bash
# The differential soak: fresh seeds of the randomized differential harness
# (tests/it/differential.rs) for as long as asked, then one line of figures appended to the
# soak log of docs/reliability.md (cases, rows, operations, faults, failures with the command
# that replays each).
#
#   scripts/soak.sh [minutes]            # default 60
#
# Environment:
#   TEST_PG_BINDIR      PostgreSQL binaries to run against (default: the local installation)
#   TEST_CONNECTOR_BIN  another build of the connector to check (default: this checkout's)
#   SOAK_NO_DOCS=1      print the figures only
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

minutes="${1:-60}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
report="$work/cases.jsonl"

locked=()
if [[ -f Cargo.lock ]]; then
    locked=(--locked)
fi

echo "==> cargo test --release ${locked[*]} --test it --no-run"
cargo test --release "${locked[@]}" --test it --no-run

started=$SECONDS
status=0
echo "==> differential soak: fresh seeds for $minutes minutes"
DIFF_MINUTES="$minutes" DIFF_REPORT="$report" \
    cargo test --release "${locked[@]}" --test it differential::seeds -- --nocapture 2>&1 |
    grep --line-buffered -E '^differential: ' || status=$?
elapsed=$((SECONDS - started))
touch "$report"

version="$("${TEST_PG_BINDIR:-$(pg_config --bindir)}/postgres" --version | sed -E 's/^[^0-9]*([0-9.]+).*/\1/')"
line="$(python3 - "$report" "$elapsed" "$version" <<'EOF'
import json, subprocess, sys, datetime
path, elapsed, version = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cases = [json.loads(l) for l in open(path) if l.strip()]
failed = [c for c in cases if not c["ok"]]
refused = [c for c in cases if c["ok"] and "refused" in c["outcome"]]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"]).returncode != 0
when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
cells = [
    when,
    f"`{commit}`" + (" (modified)" if dirty else ""),
    f"PostgreSQL {version}",
    f"{elapsed // 60} min",
    str(len(cases)),
    str(sum(c["rows"] for c in cases)),
    str(sum(c["ops"] for c in cases)),
    str(sum(c["faults"] for c in cases)),
    str(len(refused)),
    str(len(failed)) if not failed else f"**{len(failed)}**: " + "; ".join(f"`{c['replay']}`" for c in failed[:5]),
]
print("| " + " | ".join(cells) + " |")
EOF
)"
echo "$line"
if [[ "${SOAK_NO_DOCS:-0}" != 1 ]]; then
    python3 - docs/reliability.md "$line" <<'EOF'
import sys
path, line = sys.argv[1], sys.argv[2]
text = open(path).read()
marker = "<!-- soak log: scripts/soak.sh appends below -->"
if marker not in text:
    sys.exit(f"{path} has no soak log marker: {marker}")
head, tail = text.split(marker, 1)
# The log is the table right after the marker: append after its last row.
rows = tail.split("\n")
end = 1
while end < len(rows) and rows[end].startswith("|"):
    end += 1
rows.insert(end, line)
open(path, "w").write(head + marker + "\n".join(rows))
EOF
    echo "==> appended to docs/reliability.md"
fi
exit "$status"
