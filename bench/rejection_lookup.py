"""The worker's rejection lookup as the `rejected` table grows (a flood of junk, kept 30 days).

Every batch that rejects something asks the store which of its rejections are already recorded
(so a replay records none twice). The lookup is bounded by the batch's Kafka record timestamps;
records without one leave it unbounded, which is what every lookup was before. Both are timed on
the embedded store with N rejections spread over 30 days, 100 ids per lookup (median of 5).

    .venv/bin/python bench/rejection_lookup.py [--rows 1000000 10000000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import free_port, print_table, start_store, stop_process, store_url, write_json

from llmwatch.core.settings import Settings
from llmwatch.ingest.pipeline.sink import RawMessage, existing_rejections, rejection_id
from llmwatch.storage.clickhouse import Store, connect
from llmwatch.storage.migrate import migrate


def lookup_ms(store: Store, keyed: dict[bytes, RawMessage], now: datetime, repeats: int = 5) -> float:
    took = []
    for _ in range(repeats):
        started = time.perf_counter()
        existing_rejections(store, keyed, now)
        took.append((time.perf_counter() - started) * 1e3)
    return statistics.median(took)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    args = parser.parse_args()
    results = []
    for rows in args.rows:
        data_dir, port = Path(tempfile.mkdtemp(prefix="llmwatch-bench-rejections-")), free_port()
        process = start_store(data_dir, port)
        try:
            store = connect(Settings.from_env({}, clickhouse_url=store_url(data_dir, port), database="llmwatch"))
            migrate(store, 30)
            store.command(
                "INSERT INTO llmwatch.rejected (rejection_id, received_at, topic, partition, offset, reason, detail, "
                "raw, raw_bytes) SELECT toFixedString(unhex(hex(MD5(toString(number)))), 16), "
                f"now64(3) - toIntervalSecond(number % {30 * 86400}), 'llm.traces', 0, number, 'not_json', '', 'junk', 4 "
                f"FROM numbers({rows})"
            )
            now = datetime.now(UTC)
            batch = [RawMessage("llm.traces", 0, 10**12 + i, f"junk {i}".encode(), now - timedelta(seconds=1))
                     for i in range(100)]
            bounded = {rejection_id(m): m for m in batch}
            unbounded = {key: RawMessage(m.topic, m.partition, m.offset, m.value) for key, m in bounded.items()}
            results.append({"rows": rows, "bounded_ms": lookup_ms(store, bounded, now),
                            "unbounded_ms": lookup_ms(store, unbounded, now)})
        finally:
            stop_process(process)
    print_table("Rejection lookup, 100 ids, embedded store (median of 5)",
                ["rejections kept (30 days)", "unbounded (no record timestamps; every lookup before)",
                 "bounded by the records' timestamps", "ratio"],
                [[f"{r['rows']:,}", f"{r['unbounded_ms']:.1f} ms", f"{r['bounded_ms']:.1f} ms",
                  f"{r['unbounded_ms'] / r['bounded_ms']:.1f}x"] for r in results])
    write_json("rejection_lookup", {"results": results})


if __name__ == "__main__":
    main()
