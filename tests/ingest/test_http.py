"""HTTP ingest end to end: the real OpenTelemetry SDK and its OTLP/HTTP exporter (protobuf, and
the SDK's own encoding sent as OTLP JSON), JSON events, a real `llmwatch ingest` process, the real
broker, a real worker and the embedded store."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmwatch.core.processes import free_port, port_open, stop_process, wait_until
from llmwatch.core.settings import Settings, settings_env
from llmwatch.storage.clickhouse import ClickHouseStore
from tests.ingest.otel import captured_spans, tracer_provider
from tests.test_pipeline import start_worker, worker_alive

pytestmark = pytest.mark.slow
KEY = "test-key"


@pytest.fixture
def ingest(stack_settings: Settings, embedded_store: ClickHouseStore, tmp_path: Path) -> Iterator[tuple[Settings, str]]:
    settings = dataclasses.replace(stack_settings, ingest_port=free_port(), ingest_api_key=KEY, ingest_max_body_bytes=200_000)
    with open(tmp_path / "ingest.log", "ab") as log:  # the child keeps its own handle
        server = subprocess.Popen([sys.executable, "-m", "llmwatch", "ingest"], env={**os.environ, **settings_env(settings)},
                                  stdout=log, stderr=subprocess.STDOUT)
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        wait_until(lambda: port_open(settings.host, settings.ingest_port), 60, "ingest server")
        wait_until(lambda: worker_alive(embedded_store, worker.pid), 60, "worker")
        yield settings, f"http://{settings.host}:{settings.ingest_port}"
    finally:
        stop_process(server)
        stop_process(worker)


def rows(store: ClickHouseStore, where: str = "1") -> list[tuple]:
    return store.query(
        f"SELECT app, environment, trace_id, span_id, input, output, context, model, provider, prompt_version, "
        f"input_tokens, output_tokens, round(latency_ms), error FROM {store.database}.traces WHERE {where} ORDER BY output"
    )


def genai_spans(provider_factory):  # type: ignore[no-untyped-def]
    """Emit what OTel-instrumented apps emit: a current-convention chat span with retrieval
    documents, a legacy gen_ai.prompt/completion span, an OpenInference span, and a non-LLM span."""
    tracer = provider_factory.get_tracer("app")
    with tracer.start_as_current_span("http GET /ask"):
        with tracer.start_as_current_span("chat gpt-4o") as span:
            span.set_attributes({
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 7, "user.id": "u1",
                "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "When are refunds paid?"}]}]),
                "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "a: within five days."}]}]),
                "gen_ai.retrieval.documents": json.dumps([{"id": "d1", "score": 0.9, "content": "Refunds are paid within five days."}]),
                "llm.prompt_template.version": "7",
            })
        with tracer.start_as_current_span("completion") as span:
            span.set_attributes({"gen_ai.system": "anthropic", "gen_ai.request.model": "claude",
                                 "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "hi",
                                 "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "b: hello there",
                                 "gen_ai.usage.prompt_tokens": 3, "gen_ai.usage.completion_tokens": 2})
        with tracer.start_as_current_span("llm") as span:
            span.set_attributes({"openinference.span.kind": "LLM", "llm.model_name": "mistral", "input.value": "ping",
                                 "output.value": "c: pong", "llm.token_count.prompt": 1, "llm.token_count.completion": 1})
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, "rate limited"))
        with tracer.start_as_current_span("lookup") as span:
            span.set_attributes({"openinference.span.kind": "TOOL", "input.value": '{"order": 7}',
                                 "output.value": "shipped", "tool.name": "lookup"})


RESOURCE = {"service.name": "otel-app", "deployment.environment.name": "prod"}


def test_otlp_protobuf_from_the_real_sdk_becomes_trace_events(
    ingest: tuple[Settings, str], embedded_store: ClickHouseStore
) -> None:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    _, url = ingest
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", headers={"Authorization": f"Bearer {KEY}"},
                                compression=Compression.Gzip)
    provider = tracer_provider(exporter, RESOURCE)
    genai_spans(provider)
    provider.shutdown()
    wait_until(lambda: len(rows(embedded_store)) >= 3, 60, "rows")
    time.sleep(1)
    (a, b, c) = rows(embedded_store)
    assert len(rows(embedded_store)) == 3  # the other spans are spans, not trace events
    assert a[:2] == ("otel-app", "prod") and a[4:7] == ("When are refunds paid?", "a: within five days.",
                                                          ["Refunds are paid within five days."])
    assert a[7:12] == ("gpt-4o", "openai", "7", 12, 7) and len(a[2]) == 32 and len(a[3]) == 16
    assert b[4:6] == ("hi", "b: hello there") and b[7:9] == ("claude", "anthropic") and b[10:12] == (3, 2)
    assert c[4:6] == ("ping", "c: pong") and c[7] == "mistral" and c[13] == "rate limited"
    health = httpx.get(f"{url}/health").json()
    assert (health["events"], health["otlp_spans_other"]) == (5, 2)  # the other spans are kept as span events
    spans = {row[0]: row[1:] for row in embedded_store.query(
        f"SELECT name, span_kind, span_id, parent_span_id, input, output, attributes, trace_id "
        f"FROM {embedded_store.database}.spans")}
    assert spans["http GET /ask"][:1] == ("chain",) and spans["http GET /ask"][2] == ""
    assert spans["lookup"][:1] == ("tool",) and spans["lookup"][3:6] == ('{"order": 7}', "shipped", {"tool.name": "lookup"})
    http_span = spans["http GET /ask"][1]
    assert spans["lookup"][2] == http_span and spans["lookup"][6] == a[2]  # one trace, one tree
    parents = embedded_store.query(f"SELECT DISTINCT parent_span_id FROM {embedded_store.database}.traces")
    assert parents == [(http_span,)]
    scores = embedded_store.query(f"SELECT count() FROM {embedded_store.database}.scores")[0][0]
    assert scores == 6  # the same pipeline: each event scored (toxicity, input and output)


def test_otlp_json_and_retries_are_stored_once(ingest: tuple[Settings, str], embedded_store: ClickHouseStore) -> None:
    from google.protobuf import json_format
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    _, url = ingest
    document = json_format.MessageToDict(encode_spans(captured_spans(genai_spans, RESOURCE)))
    for resource in document["resourceSpans"]:  # OTLP JSON carries ids as hex, not base64
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = __import__("base64").b64decode(span[key]).hex()
    headers = {"X-Api-Key": KEY, "Content-Type": "application/json"}
    for _ in range(2):  # an exporter retry sends the same spans again
        answer = httpx.post(f"{url}/v1/traces", content=json.dumps(document), headers=headers)
        assert answer.status_code == 200 and answer.json() == {}
    wait_until(lambda: len(rows(embedded_store)) >= 3, 60, "rows")
    time.sleep(2)
    assert len(rows(embedded_store)) == 3


def test_json_events_bad_input_keys_and_sizes(ingest: tuple[Settings, str], embedded_store: ClickHouseStore) -> None:
    _, url = ingest
    auth = {"X-Api-Key": KEY}
    batch = [{"app": "web", "input": f"q{i}", "output": f"answer {i}"} for i in range(20)]
    answer = httpx.post(f"{url}/v1/events", json=batch, headers=auth)
    assert answer.status_code == 200 and answer.json() == {"accepted": 20}
    one = httpx.post(f"{url}/v1/events", json={"app": "web", "input": "x", "output": "single"}, headers=auth)
    assert one.json() == {"accepted": 1}

    bad = httpx.post(f"{url}/v1/events", json=[{"app": "web", "input": "ok", "output": "fine"}, {"app": "web"}], headers=auth)
    assert bad.status_code == 400 and bad.json()["accepted"] == 0
    assert bad.json()["errors"][0]["index"] == 1 and bad.json()["errors"][0]["reason"] == "schema"
    assert httpx.post(f"{url}/v1/events", content=b"{not json", headers=auth).status_code == 400
    assert httpx.post(f"{url}/v1/events", json=batch, headers={"X-Api-Key": "wrong"}).status_code == 401
    assert httpx.post(f"{url}/v1/events", json=batch).status_code == 401
    big = [{"app": "web", "input": "x" * 1000, "output": "y"}] * 300
    assert httpx.post(f"{url}/v1/events", json=big, headers=auth).status_code == 413
    bomb = gzip.compress(json.dumps(big).encode())  # small on the wire, too large once unpacked
    assert httpx.post(f"{url}/v1/events", content=bomb, headers={**auth, "Content-Encoding": "gzip"}).status_code == 413
    garbage = httpx.post(f"{url}/v1/traces", content=b"\x0a\xff\xff\xff", headers={**auth, "Content-Type": "application/x-protobuf"})
    assert garbage.status_code == 400 and "not OTLP protobuf" in garbage.text
    assert httpx.post(f"{url}/v1/traces", content=b"x", headers={**auth, "Content-Type": "text/plain"}).status_code == 415

    wait_until(lambda: len(rows(embedded_store, "app = 'web'")) >= 21, 60, "rows")
    time.sleep(1)
    assert len(rows(embedded_store, "app = 'web'")) == 21  # nothing from the rejected requests


def test_retries_of_events_without_ids_are_stored_once(ingest: tuple[Settings, str], embedded_store: ClickHouseStore) -> None:
    """A client that retries (after a 503, a timeout) sends the same events again, later: ids
    derived from the content make them the same events, for traces and for feedback."""
    _, url = ingest
    auth = {"X-Api-Key": KEY}
    batch = [{"app": "retry", "input": f"q{i}", "output": f"answer {i}"} for i in range(5)]
    feedback = {"kind": "feedback", "trace_id": "t-retry", "score": 0, "app": "retry"}
    for _ in range(2):
        assert httpx.post(f"{url}/v1/events", json=batch, headers=auth).json() == {"accepted": 5}
        assert httpx.post(f"{url}/v1/events", json=feedback, headers=auth).json() == {"accepted": 1}
        time.sleep(1.5)  # the retry gets a later timestamp from the server
    db = embedded_store.database
    wait_until(lambda: embedded_store.query(f"SELECT count() FROM {db}.feedback")[0][0] >= 1, 60, "feedback")
    time.sleep(2)
    assert len(rows(embedded_store, "app = 'retry'")) == 5
    assert embedded_store.query(f"SELECT count() FROM {db}.feedback")[0][0] == 1
    # Different content is a different event, even without ids.
    httpx.post(f"{url}/v1/events", json={**batch[0], "output": "another answer"}, headers=auth)
    wait_until(lambda: len(rows(embedded_store, "app = 'retry'")) == 6, 60, "the sixth event")
