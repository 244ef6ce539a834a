"""The OTLP → trace event mapping, pure: the SDK's own encoder in, event dicts out."""

from __future__ import annotations

import json

import pytest

from llmwatch.ingest.http.otlp import OtlpError, decode_request, span_events
from tests.ingest.otel import captured_spans


def encoded(*attribute_sets: dict) -> bytes:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    def emit(provider):  # type: ignore[no-untyped-def]
        for attributes in attribute_sets:
            with provider.get_tracer("t").start_as_current_span("s") as span:
                span.set_attributes(attributes)

    return encode_spans(captured_spans(emit, {"service.name": "svc"})).SerializeToString()


def test_llm_spans_become_events_and_the_others_spans() -> None:
    body = encoded(
        {"gen_ai.operation.name": "chat", "gen_ai.prompt": "hi", "gen_ai.completion": "hello",
         "gen_ai.usage.input_tokens": 2, "llm.cost.total": 0.001, "session.id": "s1"},
        {"gen_ai.operation.name": "chat"},  # an LLM span without content: rejected, reported
        {"http.method": "GET"},  # not an LLM call
        {"gen_ai.operation.name": "embeddings", "gen_ai.prompt": "x"},  # not a call with an answer to judge
    )
    result = span_events(decode_request(body, "application/x-protobuf"))
    event, http_span, embedding_span = result.events
    assert (result.other_spans, result.rejected_spans) == (2, 1)
    assert (http_span["kind"], http_span["span_kind"], http_span["attributes"]) == ("span", "chain", {"http.method": "GET"})
    assert embedding_span["span_kind"] == "embedding"
    assert {k: event[k] for k in ("app", "input", "output", "usage", "cost_usd", "session_id")} == {
        "app": "svc", "input": "hi", "output": "hello", "usage": {"input_tokens": 2}, "cost_usd": 0.001, "session_id": "s1"}
    again = span_events(decode_request(body, "application/x-protobuf")).events[0]
    assert again["event_id"] == event["event_id"]  # derived from the ids: retries are stored once


def test_bad_bodies() -> None:
    with pytest.raises(OtlpError, match="not OTLP JSON"):
        decode_request(b"{", "application/json")
    with pytest.raises(OtlpError, match="not OTLP JSON"):
        decode_request(json.dumps({"resourceSpans": "x"}).encode(), "application/json")
    with pytest.raises(OtlpError, match="not OTLP protobuf"):
        decode_request(b"\x0a\xff\xff\xff", "application/x-protobuf")
