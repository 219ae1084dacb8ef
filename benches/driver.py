#!/usr/bin/env python3
"""A minimal Flow-runtime stand-in for benchmarks (Python 3.11, standard library only).

It starts the connector binary, sends one `open` request, reads `captured` and
`checkpoint` responses from its stdout as raw bytes (documents are counted, never
decoded, so the driver stays cheap next to the connector) and answers every checkpoint
with an `acknowledge`. The merged capture state is kept so a later run can resume.
Other responses (`sourcedSchema`, written before the checkpoint that commits it) are
skipped: only the `captured` and `checkpoint` markers are looked for.

It prints one JSON object of figures on stdout when the connector exits:

  wall_s        spawn of the connector to its exit
  opened_s      spawn to the `opened` response
  first_doc_s   spawn to the first document read
  last_doc_s    spawn to the last document read
  docs, bytes   documents read, and bytes of connector output
  checkpoints   checkpoints read (each one acknowledged)
  start_unix    Unix time of the spawn (to relate the figures above to other clocks)
  max_rss_kib, user_s, sys_s   of the connector, from `/usr/bin/time -v` (with --rss)
  driver_cpu_s  CPU time of this driver, to show it is not the bottleneck
  latency       with --latency-field: percentiles of (time a document line was read) minus
                (the timestamp the document carries in that field), in milliseconds
  commit_latency  with --latency-field: the same from the transaction's commit time, the
                document's `_meta.source.ts_ms` (whole milliseconds as the connector writes
                them, so each sample is up to 1 ms longer than the exact figure)

Stop conditions: the connector exits by itself (SHUTDOWN_AFTER_POLLING=yes), or, with
--stop-after-docs N or --stop-file (a file holding N, written later by the benchmark),
stdin is closed at the first checkpoint once N documents were read.
"""

import argparse
import datetime
import json
import os
import resource
import select
import subprocess
import sys
import time

CAPTURED = b'\n{"captured":'
CHECKPOINT = b'\n{"checkpoint":'
OPENED = b'\n{"opened":'


def merge_patch(target, patch):
    """RFC 7396 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = merge_patch(target.get(key), value)
    return target


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def parse_time_v(path):
    """Figures of GNU time's -v report."""
    out = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if line.startswith("Maximum resident set size (kbytes):"):
                    out["max_rss_kib"] = int(line.rsplit(":", 1)[1])
                elif line.startswith("User time (seconds):"):
                    out["user_s"] = float(line.rsplit(":", 1)[1])
                elif line.startswith("System time (seconds):"):
                    out["sys_s"] = float(line.rsplit(":", 1)[1])
    except FileNotFoundError:
        pass
    return out


def open_request(config, tables, key):
    bindings = []
    for table in tables:
        schema, name = table.split(".", 1)
        bindings.append({
            "resourceConfig": {"namespace": schema, "stream": name},
            "resourcePath": [schema, name],
            "collection": {"name": f"bench/{name}", "key": key},
            "stateKey": f"{schema}%2F{name}",
        })
    return {"capture": {"name": "bench/source-postgres", "config": config, "bindings": bindings}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="connector binary")
    ap.add_argument("--config", required=True, help="endpoint configuration (JSON file)")
    ap.add_argument("--table", action="append", required=True, help="schema.table to bind (repeatable)")
    ap.add_argument("--key", default="/id", help="collection key pointer (comma-separated)")
    ap.add_argument("--state-in", help="capture state to resume from (JSON file)")
    ap.add_argument("--state-out", help="write the merged state here at the end")
    ap.add_argument("--rss", help="run under /usr/bin/time -v, writing its report to this file")
    ap.add_argument("--stderr", default=os.devnull, help="connector stderr goes here")
    ap.add_argument("--log-level", default="warn")
    ap.add_argument("--shutdown-after-polling", action="store_true", help="SHUTDOWN_AFTER_POLLING=yes")
    ap.add_argument("--stop-after-docs", type=int)
    ap.add_argument("--stop-file")
    ap.add_argument("--ready-file", help="touched once every binding is Active (backfill done)")
    ap.add_argument("--latency-field", help="document field holding a timestamptz to measure latency against")
    ap.add_argument("--latency-out", help="write each latency sample (ms) here, one per line")
    ap.add_argument("--discard-output", action="store_true",
                    help="connector stdout goes straight to /dev/null (nothing is counted or acknowledged); "
                         "only meaningful with --shutdown-after-polling")
    ap.add_argument("--rss-samples", help="sample the connector's VmRSS every 0.5 s into this file (seconds, KiB)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="kill the connector after this many seconds")
    args = ap.parse_args()

    with open(args.config, encoding="utf-8") as f:
        config = json.load(f)
    state = {}
    if args.state_in:
        with open(args.state_in, encoding="utf-8") as f:
            state = json.load(f)

    env = dict(os.environ, LOG_LEVEL=args.log_level)
    if args.shutdown_after_polling:
        env["SHUTDOWN_AFTER_POLLING"] = "yes"
    else:
        env.pop("SHUTDOWN_AFTER_POLLING", None)
    cmd = [args.bin]
    if args.rss:
        cmd = ["/usr/bin/time", "-v", "-o", args.rss] + cmd

    key = [k for k in args.key.split(",") if k]
    request = {"open": dict(open_request(config, args.table, key), state=state)}
    stderr = open(args.stderr, "wb")
    start = time.monotonic()
    start_unix = time.time()
    stdout = subprocess.DEVNULL if args.discard_output else subprocess.PIPE
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=stdout, stderr=stderr, env=env, bufsize=0)
    proc.stdin.write(json.dumps(request).encode() + b"\n")
    if args.discard_output:
        try:
            code = proc.wait(timeout=args.timeout)
            killed = False
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
            killed = True
        summary = {"exit": code, "killed": killed, "start_unix": round(start_unix, 4),
                   "wall_s": round(time.monotonic() - start, 4)}
        if args.rss:
            summary.update(parse_time_v(args.rss))
        print(json.dumps(summary))
        return 0 if code == 0 and not killed else 1

    fd = proc.stdout.fileno()
    tail = b""
    docs = nbytes = checkpoints = 0
    opened_s = first_doc_s = last_doc_s = None
    stop_after = args.stop_after_docs
    stdin_open = True
    ready_done = args.ready_file is None
    ends_with_checkpoint = False
    latencies = []
    commit_latencies = []
    lat_field = args.latency_field.encode() if args.latency_field else None
    killed = False
    samples = open(args.rss_samples, "w", encoding="utf-8") if args.rss_samples else None
    connector_pid = None if args.rss else proc.pid
    next_sample = 0.0
    peak_sampled = 0

    def sample_rss(now):
        nonlocal connector_pid, next_sample, peak_sampled
        next_sample = now + 0.5
        if connector_pid is None:
            try:
                with open(f"/proc/{proc.pid}/task/{proc.pid}/children", encoding="ascii") as f:
                    children = f.read().split()
                connector_pid = int(children[0]) if children else None
            except (OSError, ValueError):
                return
        if connector_pid is None:
            return
        try:
            with open(f"/proc/{connector_pid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        kib = int(line.split()[1])
                        peak_sampled = max(peak_sampled, kib)
                        samples.write(f"{now - start:.2f} {kib}\n")
                        break
        except OSError:
            pass

    def close_stdin():
        nonlocal stdin_open
        if stdin_open:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
            stdin_open = False

    while True:
        now = time.monotonic()
        if now - start > args.timeout:
            proc.kill()
            killed = True
            break
        if stop_after is None and args.stop_file and os.path.exists(args.stop_file):
            with open(args.stop_file, encoding="utf-8") as f:
                text = f.read().strip()
            if text:
                stop_after = int(text)
        if stop_after is not None and docs >= stop_after and ends_with_checkpoint:
            close_stdin()
        if samples is not None and now >= next_sample:
            sample_rss(now)
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 20)
        now = time.monotonic()
        if not chunk:
            break
        nbytes += len(chunk)
        data = tail + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            tail = data
            continue
        lines = b"\n" + data[: cut + 1]
        tail = data[cut + 1:]

        n_docs = lines.count(CAPTURED)
        if n_docs:
            if first_doc_s is None:
                first_doc_s = now - start
            last_doc_s = now - start
            docs += n_docs
            if lat_field is not None:
                wall = time.time()
                pos = lines.find(CAPTURED)
                while pos >= 0:
                    end = lines.find(b"\n", pos + 1)
                    doc = json.loads(lines[pos + 1: end])["captured"]["doc"]
                    ts = doc.get(args.latency_field)
                    if ts is not None:
                        sent = datetime.datetime.fromisoformat(ts).timestamp()
                        latencies.append((wall - sent) * 1000.0)
                    committed_ms = doc.get("_meta", {}).get("source", {}).get("ts_ms")
                    if committed_ms is not None:
                        commit_latencies.append(wall * 1000.0 - committed_ms)
                    pos = lines.find(CAPTURED, end)
        if opened_s is None and OPENED in lines:
            opened_s = now - start

        last_ckpt = lines.rfind(CHECKPOINT)
        if last_ckpt >= 0 or n_docs:
            ends_with_checkpoint = last_ckpt > lines.rfind(CAPTURED)
        acks = 0
        pos = lines.find(CHECKPOINT)
        while pos >= 0:
            end = lines.find(b"\n", pos + 1)
            patch = json.loads(lines[pos + 1: end])["checkpoint"]["state"]
            if patch.get("mergePatch"):
                state = merge_patch(state, patch.get("updated", {}))
            else:
                state = patch.get("updated", {})
            acks += 1
            pos = lines.find(CHECKPOINT, end)
        if acks:
            checkpoints += acks
            if stdin_open:
                try:
                    proc.stdin.write(b'{"acknowledge":{"checkpoints":%d}}\n' % acks)
                except BrokenPipeError:
                    stdin_open = False
            if not ready_done:
                modes = [b.get("mode") for b in (state.get("bindingStateV1") or {}).values()]
                if modes and all(m == "Active" for m in modes):
                    with open(args.ready_file, "w", encoding="utf-8") as f:
                        f.write(f"{now - start:.3f}\n")
                    ready_done = True

    close_stdin()
    code = proc.wait()
    wall_s = time.monotonic() - start
    stderr.close()

    if args.state_out:
        with open(args.state_out, "w", encoding="utf-8") as f:
            json.dump(state, f)
    own = resource.getrusage(resource.RUSAGE_SELF)
    summary = {
        "exit": code,
        "killed": killed,
        "start_unix": round(start_unix, 4),
        "wall_s": round(wall_s, 4),
        "opened_s": opened_s and round(opened_s, 4),
        "first_doc_s": first_doc_s and round(first_doc_s, 4),
        "last_doc_s": last_doc_s and round(last_doc_s, 4),
        "docs": docs,
        "bytes": nbytes,
        "checkpoints": checkpoints,
        "driver_cpu_s": round(own.ru_utime + own.ru_stime, 3),
    }
    if args.rss:
        summary.update(parse_time_v(args.rss))
    if samples is not None:
        samples.close()
        summary["sampled_peak_rss_kib"] = peak_sampled
    if args.latency_field:
        latencies.sort()
        if args.latency_out:
            with open(args.latency_out, "w", encoding="utf-8") as f:
                f.writelines(f"{v:.3f}\n" for v in latencies)
        commit_latencies.sort()
        for key, samples_ms in (("latency", latencies), ("commit_latency", commit_latencies)):
            summary[key] = {
                "n": len(samples_ms),
                "p50_ms": percentile(samples_ms, 50),
                "p90_ms": percentile(samples_ms, 90),
                "p99_ms": percentile(samples_ms, 99),
                "max_ms": samples_ms[-1] if samples_ms else None,
            }
    print(json.dumps(summary))
    return 0 if code == 0 and not killed else 1


if __name__ == "__main__":
    sys.exit(main())
