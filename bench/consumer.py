"""faust's consumer against the worker's (ingest/pipeline/fetch.py), with nothing but the
batching, same broker.

Each variant takes batches of up to 500 within 0.25 s and acks every message, and does nothing
else. Two measures, each variant in a process of its own, the variants interleaved:

* CPU per message: a 4-partition topic holding N messages of 800 bytes, consumed from the start
  (process CPU from the first batch to the last, over N);
* latency: messages produced at a fixed rate; the time from produce() to the agent's batch.

    .venv/bin/python bench/consumer.py [--messages 40000] [--rate 500] [--seconds 10] [--repeats 2]

* `faust`: faust.App as it comes (a race of four tasks per message, fetches waiting up to 1.5 s
  at the broker), an agent doing `stream.noack_take(500, within=0.25)` and `stream.ack` per event;
* `stream`: the same agent on BatchDrainApp with the default `--kafka-fetch-wait-s` (the worker
  until its batch loop);
* `llmwatch`: BatchDrainApp's MessageBatches, `take(500, within=0.25)` and `ack`: the worker's
  batch loop.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

from _common import free_port, print_table, start_tansu, stop_process, write_json

VARIANTS = ("faust", "stream", "llmwatch")


def consume(variant: str, bootstrap: str, topic: str, messages: int, rate: float, seconds: float) -> None:
    """Run one agent until it has seen its messages, then print its figures as JSON and exit."""
    import faust

    from llmwatch.core.settings import Settings
    from llmwatch.ingest.kafka import producer
    from llmwatch.ingest.pipeline.fetch import BatchDrainApp

    latency_mode = rate > 0
    options: dict[str, Any] = dict(
        broker=f"kafka://{bootstrap}", store="memory://", datadir=f"/tmp/llmwatch-bench-consumer-{uuid.uuid4().hex}",
        web_enabled=False, broker_session_timeout=6, broker_heartbeat_interval=1, topic_partitions=4,
        topic_allow_declare=False, stream_wait_empty=False,
        consumer_auto_offset_reset="latest" if latency_mode else "earliest",
    )
    group = f"{variant}-{uuid.uuid4().hex[:8]}"
    app = (BatchDrainApp(group, fetch_wait_s=Settings().kafka_fetch_wait_s, **options) if variant != "faust"
           else faust.App(group, **options))
    channel = app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    seen: list[float] = []
    state: dict[str, float] = {}
    expected = int(rate * seconds) if latency_mode else messages

    def report() -> None:
        if latency_mode:
            ms = sorted(x * 1000 for x in seen)
            result = {"p50_ms": statistics.median(ms), "p99_ms": ms[int(0.99 * (len(ms) - 1))], "messages": len(ms)}
        else:
            result = {"cpu_us": (time.process_time() - state["cpu"]) / len(seen) * 1e6, "messages": len(seen),
                      "per_s": len(seen) / (time.monotonic() - state["wall"])}
        print(json.dumps(result), flush=True)
        os._exit(0)

    def produce_at_rate() -> None:
        time.sleep(8)  # the group has formed; "latest" starts here
        sender = producer(bootstrap)
        started = time.monotonic()
        for i in range(expected):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sender.produce(topic, value=repr(time.time()).encode(), key=str(i % 97).encode())
            sender.poll(0)
        sender.flush(30)

    def took(values: list[bytes]) -> None:
        now = time.time()
        if not state:
            state.update(cpu=time.process_time(), wall=time.monotonic())
        seen.extend(now - float(v) if latency_mode else 0.0 for v in values)

    if isinstance(app, BatchDrainApp) and variant == "llmwatch":  # the worker's batch loop (processor.py)
        batches = app.batches(channel, max_messages=4096, max_bytes=64 * 2**20)

        @app.task
        async def bare_batches() -> None:
            while True:
                messages = await batches.take(500, within=0.25)
                took([m.value for m in messages])
                batches.ack(messages)
                if len(seen) >= expected:
                    report()

    else:

        @app.agent(channel, name="bare")
        async def bare(stream: Any) -> None:
            async for events in stream.noack_take(500, within=0.25):
                took([e.value for e in events])
                for event in events:
                    await stream.ack(event)
                if len(seen) >= expected:
                    report()

    if latency_mode:
        threading.Thread(target=produce_at_rate, daemon=True).start()
    faust.Worker(app, loglevel="WARNING", override_logging=False).execute_from_commandline()


def fill(bootstrap: str, topic: str, messages: int) -> None:
    from llmwatch.ingest.kafka import ensure_topics, producer

    ensure_topics(bootstrap, [topic], partitions=4)
    sender = producer(bootstrap)
    payload = b'{"x": "' + b"a" * 800 + b'"}'
    for i in range(messages):
        sender.produce(topic, value=payload, key=str(i % 97).encode())
        if i % 1000 == 0:
            sender.poll(0)
    sender.flush(60)


def run_variant(variant: str, bootstrap: str, topic: str, args: argparse.Namespace, rate: float) -> dict[str, Any]:
    command = [sys.executable, __file__, "--consume", variant, "--bootstrap", bootstrap, "--topic", topic,
               "--messages", str(args.messages), "--rate", str(rate), "--seconds", str(args.seconds), "worker"]
    output = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False).stdout
    lines = [line for line in output.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{variant} printed no result")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--consume", choices=VARIANTS)
    parser.add_argument("--bootstrap")
    parser.add_argument("--topic")
    args, _ = parser.parse_known_args()
    if args.consume:
        consume(args.consume, args.bootstrap, args.topic, args.messages,
                args.rate if args.rate > 0 else 0.0, args.seconds)
        return

    port = free_port()
    broker = start_tansu(port)
    bootstrap = f"127.0.0.1:{port}"
    try:
        backlog = f"bench-backlog-{uuid.uuid4().hex[:6]}"
        fill(bootstrap, backlog, args.messages)
        from llmwatch.ingest.kafka import ensure_topics

        cpu: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
        latency: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
        for _ in range(args.repeats):
            for variant in VARIANTS:
                cpu[variant].append(run_variant(variant, bootstrap, backlog, args, rate=0.0))
                live = f"bench-live-{uuid.uuid4().hex[:6]}"
                ensure_topics(bootstrap, [live], partitions=4)
                latency[variant].append(run_variant(variant, bootstrap, live, args, rate=args.rate))
    finally:
        stop_process(broker, timeout_s=1.5)

    def median(results: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in results)

    rows = [[variant, f"{median(cpu[variant], 'cpu_us'):.1f}", f"{median(cpu[variant], 'per_s'):,.0f}",
             f"{median(latency[variant], 'p50_ms'):.0f} / {median(latency[variant], 'p99_ms'):.0f}"]
            for variant in VARIANTS]
    ratios = {f"{v} / llmwatch": median(cpu[v], "cpu_us") / median(cpu["llmwatch"], "cpu_us")
              for v in VARIANTS if v != "llmwatch"}
    rows.extend([f"ratio ({name})", f"{ratio:.1f}x", "", ""] for name, ratio in ratios.items())
    print_table(f"Taking and acking batches, nothing else, 4 partitions: {args.messages:,} queued messages; {args.rate:,.0f}/s for "
                f"{args.seconds:.0f} s (median of {args.repeats})",
                ["consumer", "CPU us/message", "messages/s", f"produce->batch p50 / p99 ms at {args.rate:,.0f}/s"],
                rows)
    write_json("consumer", {"cpu": cpu, "latency": latency, "cpu_ratios": ratios})


if __name__ == "__main__":
    main()
