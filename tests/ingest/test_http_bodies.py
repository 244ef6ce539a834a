"""Big request bodies over real TCP: what OTLP exporters send (512 spans with prompts and answers)
and big /v1/events batches, plain and gzip, up to the 16 MB limit. Each is read whole, never cut
at what happened to be buffered."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from llmwatch.core.processes import free_port, port_open, stop_process, wait_until
from llmwatch.core.settings import Settings, settings_env
from tests.ingest.otel import captured_spans

pytestmark = pytest.mark.slow
MB = 1 << 20


@pytest.fixture(scope="module")
def ingest_url(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`llmwatch ingest` alone, with the default 16 MB body limit, in front of the real broker."""
    data_dir = tmp_path_factory.mktemp("ingest")
    settings = Settings.from_env({}, data_dir=data_dir, kafka_bootstrap=broker, ingest_port=free_port(),
                                 traces_topic=f"big-{os.getpid()}", clickhouse_port=free_port())
    with open(data_dir / "ingest.log", "ab") as log:
        server = subprocess.Popen([sys.executable, "-m", "llmwatch", "ingest"], env={**os.environ, **settings_env(settings)},
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: port_open(settings.host, settings.ingest_port), 60, "ingest server")
        yield f"http://{settings.host}:{settings.ingest_port}"
    finally:
        stop_process(server)


def events_body(size: int) -> tuple[bytes, int]:
    """A /v1/events batch of about `size` bytes: events of 64 KB each."""
    text = "The refund arrives within five days of the return. " * 1250  # 64 KB
    count = size // len(text)
    events = [{"app": "big", "input": f"question {i}", "output": text, "user_id": f"u{i}"} for i in range(count)]
    return json.dumps(events).encode(), count


def otlp_body(size: int, encoding: str) -> tuple[bytes, int]:
    """An OTLP export of 512 LLM spans whose prompts and answers add up to about `size` bytes."""
    from google.protobuf import json_format
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    words = "tokens " * (size * 9 // 10 // 512 // 14)  # JSON adds a little on top

    def emit(provider: Any) -> None:
        tracer = provider.get_tracer("app")
        for i in range(512):
            with tracer.start_as_current_span("chat") as span:
                span.set_attributes({"gen_ai.request.model": "gpt-4o", "gen_ai.provider.name": "openai",
                                     "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": f"{i} {words}",
                                     "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": words})

    message = encode_spans(captured_spans(emit, {"service.name": "big"}))
    if encoding == "protobuf":
        return message.SerializeToString(), 512
    document = json_format.MessageToDict(message)
    for resource in document["resourceSpans"]:  # OTLP JSON carries ids as hex
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = __import__("base64").b64decode(span[key]).hex()
    return json.dumps(document).encode(), 512


@pytest.mark.parametrize("size", [1 * MB, 8 * MB, 15 * MB], ids=["1MB", "8MB", "15MB"])
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("kind", ["events", "otlp-protobuf", "otlp-json"])
def test_big_bodies_are_read_whole(ingest_url: str, kind: str, size: int, compress: bool) -> None:
    if kind == "events":
        body, count = events_body(size)
        path, content_type = "/v1/events", "application/json"
    else:
        body, count = otlp_body(size, kind.removeprefix("otlp-"))
        path, content_type = "/v1/traces", "application/x-protobuf" if kind == "otlp-protobuf" else "application/json"
    assert 0.75 * size < len(body) <= 16_000_000
    headers = {"Content-Type": content_type}
    if compress:
        body, headers["Content-Encoding"] = gzip.compress(body, compresslevel=1), "gzip"
    before = httpx.get(f"{ingest_url}/health").json()["events"]
    answer = httpx.post(f"{ingest_url}{path}", content=body, headers=headers, timeout=120)
    assert answer.status_code == 200, answer.text[:300]
    if kind == "events":
        assert answer.json() == {"accepted": count}
    elif kind == "otlp-json":
        assert answer.json() == {}  # no partial_success: every span accepted
    assert httpx.get(f"{ingest_url}/health").json()["events"] - before == count


def test_bodies_past_the_limit_are_refused_whole(ingest_url: str) -> None:
    body, _ = events_body(17 * MB)
    answer = httpx.post(f"{ingest_url}/v1/events", content=body, headers={"Content-Type": "application/json"}, timeout=120)
    assert answer.status_code == 413
    chunked = httpx.post(f"{ingest_url}/v1/events", content=iter([body[i:i + MB] for i in range(0, len(body), MB)]),
                         timeout=120)  # no Content-Length: the limit still holds while reading
    assert chunked.status_code == 413


@pytest.mark.parametrize("depth", [65, 1000, 5000])
def test_deep_json_is_a_400(ingest_url: str, depth: int) -> None:
    for path, content_type in (("/v1/events", "application/json"), ("/v1/traces", "application/json")):
        body = b'{"a":' * depth + b"1" + b"}" * depth
        answer = httpx.post(f"{ingest_url}{path}", content=body, headers={"Content-Type": content_type})
        assert answer.status_code == 400, (path, depth, answer.status_code)
        nested = b"[" * depth + b"]" * depth
        assert httpx.post(f"{ingest_url}{path}", content=nested, headers={"Content-Type": content_type}).status_code == 400


def test_duplicate_keys_are_a_400(ingest_url: str) -> None:
    body = b'{"app": "a", "input": "x", "output": "y", "app": "b"}'
    answer = httpx.post(f"{ingest_url}/v1/events", content=body)
    assert answer.status_code == 400 and "repeats a key" in answer.text


def test_out_of_range_values_are_refused_at_the_door(ingest_url: str) -> None:
    for event in ({"app": "a", "input": "x", "output": "y", "usage": {"input_tokens": 4294967296}},
                  {"app": "a", "input": "x", "output": "y", "cost_usd": 1.7e308},
                  {"app": "a", "input": "x", "output": "y", "timestamp": "0001-01-01T00:00:00+01:00"}):
        answer = httpx.post(f"{ingest_url}/v1/events", json=event)
        assert answer.status_code == 400, event
        assert answer.json()["accepted"] == 0


def test_settings_are_what_the_fixture_assumes() -> None:
    assert dataclasses.fields(Settings)  # the default limit this module tests against
    assert Settings().ingest_max_body_bytes == 16_000_000
