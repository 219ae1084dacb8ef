#!/usr/bin/env python3
"""Extract the facts of the Go connector's capture snapshots into tests/fixtures/go-documents.

Usage: scripts/go-snapshot-facts.py <git dir of the Go connectors' repository> [Test ...]

The Go connector's tests record, per test, the SQL they ran (`sql> ...` lines), the capture
runs (`=== Run: <name> ===`) and the documents each run emitted. This reads those files
from the repository (never copying them) and writes, per test, our own fixture:

    {"test": ..., "steps": [{"sql": "..."} | {"run": "<name>", "documents": [[collection suffix, doc], ...]}]}

Documents keep the column values, `_meta.op` and `_meta.before`; volatile fields (`uuid`,
`source.loc`, `source.ts_ms`, `source.txid`, the snapshot flag) are dropped. Timestamps with a
UTC offset (Go wrote `timestamptz` in the server's TimeZone) are rewritten to the same
instant in UTC, also inside range strings, so the test compares instants.
"""

import datetime
import json
import os
import re
import subprocess
import sys

DEFAULT_TESTS = [
    "TestIntegerTypes", "TestNumericTypes", "TestFloatingPointTypes", "TestStringTypes", "TestBinaryTypes",
    "TestTemporalTypes", "TestSpecialTemporalValues", "TestLongYearTimestamps", "TestJSONTypes", "TestArrayTypes",
    "TestMultidimensionalArrays", "TestNetworkTypes", "TestGeometryTypes", "TestRangeTypes", "TestMiscTypes",
    "TestUserTypes-Domain", "TestUserTypes-Enum", "TestUserTypes-Range", "TestUserTypes-Tuple", "TestCIText",
    "TestNotNullTypes", "TestSerialTypes", "TestUnpairedSurrogatesInJSON", "TestFeatureFlagFlattenArrays-Enabled",
    "TestFeatureFlagFlattenArrays-Disabled", "TestScanKeyTypes-BigInt", "TestScanKeyTypes-BigSerial",
    "TestScanKeyTypes-Bool", "TestScanKeyTypes-Char", "TestScanKeyTypes-Decimal", "TestScanKeyTypes-Double",
    "TestScanKeyTypes-Integer", "TestScanKeyTypes-MAC6", "TestScanKeyTypes-MAC8", "TestScanKeyTypes-Numeric",
    "TestScanKeyTypes-OID", "TestScanKeyTypes-Real", "TestScanKeyTypes-Serial", "TestScanKeyTypes-SmallInt",
    "TestScanKeyTypes-SmallSerial", "TestScanKeyTypes-Text", "TestScanKeyTypes-UUID", "TestScanKeyTypes-VarChar",
    "TestSimpleCapture", "TestReplicationInserts", "TestReplicationUpdates", "TestReplicationDeletes",
    "TestToastColumns", "TestTrickyColumnNames", "TestCaptureDomainJSONB",
]

INSTANT = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?([+-]\d\d:\d\d)")


def to_utc(match):
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = match.group(7) or ""
    sign = 1 if match.group(8)[0] == "+" else -1
    off_h, off_m = (int(x) for x in match.group(8)[1:].split(":"))
    try:
        local = datetime.datetime(year, month, day, hour, minute, second)
    except ValueError:
        return match.group(0)
    utc = local - sign * datetime.timedelta(hours=off_h, minutes=off_m)
    if not 1 <= utc.year <= 9999:
        return match.group(0)
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


def normalize(value):
    if isinstance(value, str):
        return INSTANT.sub(to_utc, value)
    if isinstance(value, list):
        return [normalize(v) for v in value]
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    return value


def strip_meta(doc):
    meta = doc.get("_meta", {})
    kept = {"op": meta.get("op")}
    if "before" in meta:
        kept["before"] = normalize(meta["before"])
    out = {k: normalize(v) for k, v in doc.items() if k != "_meta"}
    out["_meta"] = kept
    return out


def read_json_values(lines, start):
    """Parses consecutive JSON values (a document is `[collection, doc]`) from line `start`."""
    values, i = [], start
    decoder = json.JSONDecoder()
    while i < len(lines) and lines[i].startswith("["):
        text, j = "", i
        while True:
            text += lines[j] + "\n"
            j += 1
            try:
                value, _ = decoder.raw_decode(text)
                break
            except json.JSONDecodeError:
                if j >= len(lines):
                    raise
        values.append(value)
        i = j
    return values, i


def facts(text):
    lines = text.split("\n")
    steps, i = [], 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("sql> "):
            statement = [line[5:]]
            i += 1
            # A statement runs to the next marker line (its literals may hold newlines).
            while i < len(lines) and not re.match(r"^(sql> |=== |--- |\[$|\{$)", lines[i]):
                statement.append(lines[i])
                i += 1
            steps.append({"sql": "\n".join(statement)})
            continue
        run = re.match(r"^=== Run: (.*) ===$", line)
        if run:
            docs, i = read_json_values(lines, i + 1)
            documents = [[collection.split("/")[-1], strip_meta(doc)] for collection, doc in docs]
            steps.append({"run": run.group(1), "documents": documents})
            continue
        i += 1
    return steps


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    git_dir, tests = sys.argv[1], sys.argv[2:] or DEFAULT_TESTS
    out_dir = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "go-documents")
    os.makedirs(out_dir, exist_ok=True)
    for test in tests:
        path = f"HEAD:source-postgres/.snapshots/{test}"
        text = subprocess.run(["git", "--git-dir", git_dir, "show", path], capture_output=True, text=True, check=True).stdout
        fixture = {"test": test, "steps": facts(text)}
        with open(os.path.join(out_dir, f"{test}.json"), "w") as f:
            json.dump(fixture, f, indent=1, sort_keys=True, ensure_ascii=False)
            f.write("\n")
        runs = [s for s in fixture["steps"] if "run" in s]
        print(f"{test}: {len(runs)} runs, {sum(len(r['documents']) for r in runs)} documents")


if __name__ == "__main__":
    main()
