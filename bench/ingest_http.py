"""HTTP ingest throughput against the SDK's direct Kafka path, on this machine (2 cores: the
client, the ingest server and tansu share them).

Accepted events/s (acknowledged by Kafka) for `/v1/events` batches and OTLP/HTTP protobuf batches
(one LLM span per event, the SDK's own encoder), each as a ratio to the SDK emitting the same
number of events straight to Kafka, and the p50 / p99 request latency of the HTTP paths.

    .venv/bin/python bench/ingest_http.py [--events 20000] [--batch 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import httpx
from _common import free_port, print_table, start_tansu, stop_process, wait_until, write_json

from llmwatch import Emitter
from llmwatch.core.processes import port_open
from llmwatch.core.settings import Settings, settings_env
from tests.ingest.otel import captured_spans


def event(i: int) -> dict:
    return {"app": "bench", "input": f"Why was I charged twice? order {i}",
            "output": "One of the two payments is an authorisation hold.", "latency_ms": 640.0}


def sdk_path(settings: Settings, n: int) -> float:
    emitter = Emitter(settings.bootstrap_servers, app="bench", topic=settings.traces_topic, queue_size=n + 1)
    started = time.perf_counter()
    for i in range(n):
        emitter.emit(event(i))
    assert emitter.flush(120)
    seconds = time.perf_counter() - started
    emitter.close()
    return n / seconds


def events_path(url: str, n: int, batch: int) -> tuple[float, list[float]]:
    latencies = []
    with httpx.Client(timeout=60) as client:
        started = time.perf_counter()
        for start in range(0, n, batch):
            t = time.perf_counter()
            answer = client.post(f"{url}/v1/events", json=[event(i) for i in range(start, min(n, start + batch))])
            latencies.append(time.perf_counter() - t)
            assert answer.status_code == 200, answer.text
    return n / (time.perf_counter() - started), latencies


def otlp_bodies(n: int, batch: int) -> list[bytes]:
    """OTLP protobuf bodies of `batch` chat spans each, encoded by the OpenTelemetry SDK."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    def emit(provider):  # type: ignore[no-untyped-def]
        tracer = provider.get_tracer("bench")
        for i in range(n):
            with tracer.start_as_current_span("chat") as span:
                e = event(i)
                span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                                     "gen_ai.provider.name": "p", "gen_ai.prompt": e["input"], "gen_ai.completion": e["output"]})

    spans = captured_spans(emit, {"service.name": "bench-otel"})
    return [encode_spans(spans[i : i + batch]).SerializeToString() for i in range(0, len(spans), batch)]


def otlp_path(url: str, bodies: list[bytes], n: int) -> tuple[float, list[float]]:
    latencies = []
    with httpx.Client(timeout=60) as client:
        started = time.perf_counter()
        for body in bodies:
            t = time.perf_counter()
            answer = client.post(f"{url}/v1/traces", content=body, headers={"Content-Type": "application/x-protobuf"})
            latencies.append(time.perf_counter() - t)
            assert answer.status_code == 200, answer.text
    return n / (time.perf_counter() - started), latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    kafka_port = free_port()
    broker = start_tansu(kafka_port)
    settings = Settings.from_env({}, kafka_bootstrap=f"127.0.0.1:{kafka_port}", ingest_port=free_port(), partitions=4)
    server = subprocess.Popen([sys.executable, "-m", "llmwatch", "ingest"], env={**os.environ, **settings_env(settings)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{settings.ingest_port}"
    try:
        wait_until(lambda: port_open("127.0.0.1", settings.ingest_port), 60)
        bodies = otlp_bodies(args.events, args.batch)
        events_path(url, args.batch * 5, args.batch)  # warm up both paths
        sdk = statistics.median(sdk_path(settings, args.events) for _ in range(3))
        json_rate, json_latency = events_path(url, args.events, args.batch)
        otlp_rate, otlp_latency = otlp_path(url, bodies, args.events)
    finally:
        stop_process(server)
        stop_process(broker)
    rows = [
        ["SDK straight to Kafka (emit + flush)", f"{sdk:,.0f}", "1.00", "", ""],
        [f"POST /v1/events, {args.batch} per request", f"{json_rate:,.0f}", f"{json_rate / sdk:.2f}",
         f"{1000 * percentile(json_latency, 0.5):.1f}", f"{1000 * percentile(json_latency, 0.99):.1f}"],
        [f"POST /v1/traces (OTLP protobuf), {args.batch} spans per request", f"{otlp_rate:,.0f}", f"{otlp_rate / sdk:.2f}",
         f"{1000 * percentile(otlp_latency, 0.5):.1f}", f"{1000 * percentile(otlp_latency, 0.99):.1f}"],
    ]
    print_table(f"Accepted events/s, {args.events:,} events (acknowledged by Kafka)",
                ["path", "events/s", "ratio to SDK", "p50 ms", "p99 ms"], rows)
    write_json("ingest_http", {"events": args.events, "batch": args.batch, "sdk_events_per_s": sdk,
                               "json_events_per_s": json_rate, "otlp_events_per_s": otlp_rate,
                               "json_p99_ms": 1000 * percentile(json_latency, 0.99),
                               "otlp_p99_ms": 1000 * percentile(otlp_latency, 0.99)})


if __name__ == "__main__":
    main()
