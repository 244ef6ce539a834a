"""What overlapping two batches buys the worker (one written while the next is prepared), and
what its scoring process adds.

The worker's batch handler (real detectors, PII redaction, the embedded store over HTTP, tansu)
stores the same kind of demo traffic three ways, interleaved and repeated:
* one at a time: `handle(batch)`, as the worker did before: parse, score, then wait for the store;
* overlapped: `prepare(N+1)` (parse, redact, look up, score) on this thread while `write(N)`
  (the inserts, the HTTP hop, the store's work) runs on another;
* overlapped, with the scoring process, as the worker runs on two cores: toxicity, injection and
  grounding score in a helper process, a chunk at a time while the rest is parsed.
Wall time gives events/s; this process's CPU (and the helper's) gives CPU per event and the cores
kept busy. No faust, no load generator: the comparison sees only the handler and the store.

    .venv/bin/python bench/batch_overlap.py [--events 8000] [--batch 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import Future, ThreadPoolExecutor

from _common import batch_handler, cpu_s, demo_messages, print_table, write_json

from llmwatch.core.processes import tune_garbage_collector
from llmwatch.ingest.pipeline.processor import BatchHandler, PreparedBatch
from llmwatch.ingest.pipeline.scoring import ScoringProcess, offloadable
from llmwatch.ingest.pipeline.sink import RawMessage, StoredBatch

MODES = ("one at a time", "overlapped", "overlapped, scoring process")


def one_at_a_time(handler: BatchHandler, batches: list[list[RawMessage]], _writer: ThreadPoolExecutor) -> None:
    for batch in batches:
        handler.handle(batch)


def overlapped(handler: BatchHandler, batches: list[list[RawMessage]], writer: ThreadPoolExecutor) -> None:
    writing: Future[StoredBatch] | None = None
    in_flight: frozenset = frozenset()
    for batch in batches:
        prepared: PreparedBatch = handler.prepare(batch, in_flight)
        if writing is not None:
            writing.result()
        writing, in_flight = writer.submit(handler.write, prepared), prepared.trace_ids
    if writing is not None:
        writing.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    with batch_handler("overlap") as (handler, _store_process):
        helper = ScoringProcess(handler.settings, [d.name for d in handler.detectors if offloadable(d)])
        tune_garbage_collector()  # as the worker runs
        seed = 1
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="write") as writer:
                for _ in range(args.repeats):
                    for mode, run in zip(MODES, (one_at_a_time, overlapped, overlapped), strict=True):
                        handler.scoring = helper if "scoring process" in mode else None
                        messages = demo_messages(args.events, seed)
                        seed += 1
                        batches = [messages[i:i + args.batch] for i in range(0, len(messages), args.batch)]
                        helper_cpu = cpu_s(helper.pid) if helper.pid else 0.0
                        wall, cpu = time.perf_counter(), time.process_time()
                        run(handler, batches, writer)
                        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                        cpu += (cpu_s(helper.pid) if helper.pid else 0.0) - helper_cpu
                        runs[mode].append({"events_per_s": len(messages) / wall, "cpu_us": cpu / len(messages) * 1e6,
                                           "cores": cpu / wall})
        finally:
            handler.scoring = None
            helper.stop()

    median = {mode: {k: statistics.median(r[k] for r in runs[mode]) for k in ("events_per_s", "cpu_us", "cores")}
              for mode in MODES}
    rows = [[mode, f"{m['events_per_s']:,.0f}", " / ".join(f"{r['events_per_s']:,.0f}" for r in runs[mode]),
             f"{m['cpu_us']:.0f}", f"{m['cores']:.2f}"] for mode, m in median.items()]
    print_table(f"Batch handler, {args.events} demo events in batches of {args.batch} (median of {args.repeats})",
                ["batches", "events/s", "runs", "handler (+ helper) CPU us/event", "cores busy"], rows)
    ratio = median["overlapped"]["events_per_s"] / median["one at a time"]["events_per_s"]
    helped = median["overlapped, scoring process"]["events_per_s"] / median["overlapped"]["events_per_s"]
    print(f"\noverlapped / one at a time: {ratio:.2f}x events/s; with the scoring process / overlapped: {helped:.2f}x")
    write_json("batch_overlap", {"events": args.events, "batch": args.batch, "runs": runs, "median": median,
                                 "ratio": ratio, "scoring_process_ratio": helped})


if __name__ == "__main__":
    main()
