"""SDK cost per event on the caller's thread vs a bare confluent-kafka produce() of the same
bytes (goal: ratio <= 2). Both against a real tansu broker started here.

    .venv/bin/python bench/emit.py [--events 50000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid

from _common import free_port, print_table, start_tansu, stop_process, write_json
from confluent_kafka import Producer

from llmwatch import Emitter, Release
from llmwatch.core.kafka_config import producer_config
from llmwatch.ingest.kafka import ensure_topics


def sample_event(i: int) -> dict:
    return {
        "trace_id": f"trace-{i}",
        "input": [{"role": "system", "content": "You are a helpful support assistant."}, {"role": "user", "content": f"How do I reset my password? ({i})"}],
        "output": "Click 'Forgot password' on the login page and follow the link we email you.",
        "latency_ms": 612.4,
        "usage": {"input_tokens": 48, "output_tokens": 22},
        "user_id": "user-17",
        "tags": {"channel": "web"},
    }


def bare_produce(bootstrap: str, topic: str, events: list[dict]) -> tuple[float, float]:
    """Seconds on the caller's thread and process CPU seconds for produce() of pre-encoded bytes."""
    payloads = [(json.dumps(e).encode(), e["trace_id"].encode()) for e in events]
    producer = Producer(producer_config(bootstrap))
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i, (value, key) in enumerate(payloads):
        producer.produce(topic, value, key=key)
        if i % 1000 == 999:
            producer.poll(0)
    caller = time.perf_counter() - t0
    producer.flush(30)
    return caller, time.process_time() - cpu0


def sdk_emit(bootstrap: str, topic: str, events: list[dict]) -> tuple[float, float, dict]:
    emitter = Emitter(bootstrap, app="bench", topic=topic, release=Release("p", "1", "m"), queue_size=len(events) + 1)
    emitter.flush(5)
    cpu0, t0 = time.process_time(), time.perf_counter()
    for event in events:
        emitter.emit(event)
    caller = time.perf_counter() - t0
    emitter.flush(60)
    cpu = time.process_time() - cpu0
    stats = emitter.stats()
    emitter.close()
    return caller, cpu, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    port = free_port()
    broker = start_tansu(port)
    bootstrap = f"127.0.0.1:{port}"
    topic = f"bench-{uuid.uuid4().hex[:6]}"
    ensure_topics(bootstrap, [topic], 4)
    try:
        events = [sample_event(i) for i in range(args.events)]
        bare, sdk, bare_cpu, sdk_cpu = [], [], [], []
        for _ in range(args.repeats):  # interleaved, so drift on a noisy machine hits both
            b_caller, b_cpu = bare_produce(bootstrap, topic, events)
            s_caller, s_cpu, stats = sdk_emit(bootstrap, topic, events)
            assert stats["dropped"] == 0 and stats["delivered"] == args.events, stats
            bare.append(b_caller / args.events * 1e6)
            sdk.append(s_caller / args.events * 1e6)
            bare_cpu.append(b_cpu / args.events * 1e6)
            sdk_cpu.append(s_cpu / args.events * 1e6)
    finally:
        stop_process(broker, 3)

    med = statistics.median
    ratio = med(sdk) / med(bare)
    cpu_ratio = med(sdk_cpu) / med(bare_cpu)
    print_table(
        f"SDK emit vs bare produce, {args.events} events x {args.repeats} runs (median)",
        ["path", "caller µs/event", "process CPU µs/event"],
        [
            ["bare confluent-kafka produce (pre-encoded bytes)", f"{med(bare):.2f}", f"{med(bare_cpu):.2f}"],
            ["llmwatch Emitter.emit (dict in, JSON + produce in background)", f"{med(sdk):.2f}", f"{med(sdk_cpu):.2f}"],
            ["ratio (goal <= 2 on the caller's thread)", f"{ratio:.2f}x", f"{cpu_ratio:.2f}x"],
        ],
    )
    write_json(
        "emit",
        {
            "events": args.events,
            "repeats": args.repeats,
            "bare_caller_us": bare,
            "sdk_caller_us": sdk,
            "bare_cpu_us": bare_cpu,
            "sdk_cpu_us": sdk_cpu,
            "caller_ratio_median": ratio,
            "cpu_ratio_median": cpu_ratio,
        },
    )


if __name__ == "__main__":
    main()
