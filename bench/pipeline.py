"""Sustained events/s through `llmwatch up` (embedded: tansu, chdb store, one worker with the
offline toxicity detector, all on this machine) and emit-to-row latency at a fixed rate.
Goals: >= 2,000 events/s sustained; p99 emit-to-row < 2 s.

Latency is measured by ClickHouse itself: inserted_at (server clock at insert) - timestamp
(taken by the SDK at emit), on the same machine.

    .venv/bin/python bench/pipeline.py [--events 40000] [--rate 2000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import free_port, print_table, stop_process, store_url, wait_until, write_json

from llmwatch import Emitter
from llmwatch.storage.clickhouse import ClickHouseStore

DB = "llmwatch"


def count(store: ClickHouseStore, app: str) -> int:
    return store.query(f"SELECT count() FROM {DB}.traces WHERE app = {{app:String}}", {"app": app})[0][0]


def event(i: int) -> dict:
    return {
        "input": [{"role": "system", "content": "You are a support assistant."}, {"role": "user", "content": f"Why was I charged twice this month? order {i}"}],
        "output": "One of the two payments is an authorisation hold that disappears within three business days.",
        "latency_ms": 640.0,
        "usage": {"input_tokens": 52, "output_tokens": 24},
    }


def saturate(emitter_bootstrap: str, store: ClickHouseStore, events: int) -> dict:
    app = "bench-saturate"
    emitter = Emitter(emitter_bootstrap, app=app, queue_size=events + 1)
    for i in range(events):
        emitter.emit(event(i))
    emitter.flush(120)
    emitter.close()
    wait_until(lambda: count(store, app) >= events, 600)
    rows = store.query(
        f"SELECT count(), uniqExact(event_id), min(timestamp), max(inserted_at) FROM {DB}.traces WHERE app = {{app:String}}",
        {"app": app},
    )[0]
    seconds = (rows[3] - rows[2]).total_seconds()
    return {"events": rows[0], "distinct": rows[1], "seconds": seconds, "events_per_s": rows[0] / seconds}


def fixed_rate(bootstrap: str, store: ClickHouseStore, rate: float, seconds: float) -> dict:
    app = f"bench-rate-{int(rate)}"
    emitter = Emitter(bootstrap, app=app)
    total = int(rate * seconds)
    started = time.monotonic()
    for i in range(total):
        emitter.emit(event(i))
        delay = started + (i + 1) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    emitter.flush(60)
    emitter.close()
    wait_until(lambda: count(store, app) >= total, 300)
    (p50, p90, p99, worst, n) = store.query(
        "SELECT quantileExact(0.5)(l), quantileExact(0.9)(l), quantileExact(0.99)(l), max(l), count() FROM "
        f"(SELECT dateDiff('millisecond', timestamp, inserted_at) AS l FROM {DB}.traces WHERE app = {{app:String}})",
        {"app": app},
    )[0]
    return {"rate": rate, "events": n, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": worst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--rate", type=float, action="append", help="fixed rates to measure latency at (repeatable)")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    rates = args.rate or [500.0, 2000.0]

    kafka_port, ch_port = free_port(), free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="llmwatch-bench-"))
    flags = ["--data-dir", str(data_dir), "--kafka-port", str(kafka_port), "--clickhouse-port", str(ch_port),
             "--ingest-port", str(free_port()), "--no-console"]
    up = subprocess.Popen([sys.executable, "-m", "llmwatch", "up", *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    bootstrap = f"127.0.0.1:{kafka_port}"
    try:
        store = ClickHouseStore(store_url(data_dir, ch_port), DB)
        wait_until(lambda: (data_dir / "run" / "up.json").exists() and store.query(f"SELECT count() FROM {DB}.workers")[0][0] > 0, 180)
        time.sleep(2)
        saturation = saturate(bootstrap, store, args.events)
        latencies = [fixed_rate(bootstrap, store, rate, args.seconds) for rate in rates]
    finally:
        stop_process(up, 60)

    print_table(
        f"Pipeline through `llmwatch up` on {os.cpu_count()} cores (offline toxicity detector)",
        ["measure", "value", "goal"],
        [
            [f"sustained events/s (burst of {saturation['events']})", f"{saturation['events_per_s']:,.0f}", ">= 2,000"],
            ["stored exactly once", f"{saturation['distinct']}/{saturation['events']}", "all"],
            *[[f"emit->row p50 / p99 at {r['rate']:,.0f}/s", f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f} ms", "p99 < 2,000 ms"] for r in latencies],
        ],
    )
    write_json("pipeline", {"saturation": saturation, "fixed_rate": latencies})


if __name__ == "__main__":
    main()
