"""What a batch costs the embedded store, apart from its events.

The worker's batch handler (real detectors, PII redaction, the embedded store over HTTP, tansu)
stores the same demo traffic in batches of different sizes; the store process's CPU (all its
threads: requests, chdb's pipelines, the merges that follow) is read from /proc before and after.
A line through (1 / batch size, CPU per event) splits it into a cost per batch (the duplicate
lookup and the two inserts, each a pipeline and a new part per table and materialized view, and
their merges) and a cost per event. Sizes are interleaved, each repeated.

    .venv/bin/python bench/store_batches.py [--events 3000] [--sizes 25 125 500] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import (
    batch_handler,
    cpu_s,
    demo_messages,
    print_table,
    write_json,
)

SETTLE_S = 1.0  # before and after each run: the merges an insert starts belong to it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 125, 500])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    with batch_handler("batches") as (handler, store_process):
        time.sleep(SETTLE_S)
        idle_before = cpu_s(store_process.pid)
        time.sleep(5)
        idle_cores = (cpu_s(store_process.pid) - idle_before) / 5  # merges, schedulers

        per_event: dict[int, list[float]] = {size: [] for size in args.sizes}
        seed = 1
        for _ in range(args.repeats):
            for size in args.sizes:
                messages = demo_messages(args.events, seed)
                seed += 1
                time.sleep(SETTLE_S)
                before, started = cpu_s(store_process.pid), time.monotonic()
                for start in range(0, len(messages), size):
                    handler.handle(messages[start:start + size])
                time.sleep(SETTLE_S)
                spent = cpu_s(store_process.pid) - before - idle_cores * (time.monotonic() - started)
                per_event[size].append(spent / len(messages) * 1e6)
        median = {size: statistics.median(values) for size, values in per_event.items()}
        # Least squares through (1 / size, us per event): slope = us per batch, intercept = per event.
        xs = [1 / size for size in args.sizes]
        ys = [median[size] for size in args.sizes]
        x_mean, y_mean = statistics.fmean(xs), statistics.fmean(ys)
        slope = sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys, strict=True)) / sum((x - x_mean) ** 2 for x in xs)
        per_batch_ms, per_event_us = slope / 1000, y_mean - slope * x_mean

    print_table(f"Embedded store CPU per event by batch size ({args.events} demo events, median of {args.repeats}; "
                f"idle {idle_cores * 1000:.0f} ms per second taken out)",
                ["events per batch", "store CPU us per event", "runs"],
                [[size, f"{median[size]:.0f}", " / ".join(f"{v:.0f}" for v in per_event[size])] for size in args.sizes])
    print_table("Fitted", ["measure", "value"],
                [["store CPU per batch", f"{per_batch_ms:.1f} ms"], ["store CPU per event", f"{per_event_us:.0f} us"]])
    write_json("store_batches", {"events": args.events, "idle_cores": idle_cores, "us_per_event": per_event,
                                 "median_us_per_event": median, "per_batch_ms": per_batch_ms, "per_event_us": per_event_us})


if __name__ == "__main__":
    main()
