"""What instrumentation records, through the worker's batch handler into the real store: LLM calls
as scored traces with computed costs and time to first token, other steps as spans."""

from __future__ import annotations

import orjson
import pytest

import llmwatch
from llmwatch.ingest.pipeline.sink import RawMessage
from llmwatch.storage.clickhouse import ClickHouseStore
from tests.ingest.test_batches import handler_for
from tests.instrument.conftest import RecordingEmitter
from tests.instrument.providers import USAGE, ProviderServer


def stored(store: ClickHouseStore, broker: str, events: list[dict], **settings: object) -> None:
    messages = [RawMessage("llm.traces", 0, i, orjson.dumps(e)) for i, e in enumerate(events)]
    result = handler_for(store, broker, **settings).handle(messages)
    assert result.rejected == 0, result


def test_calls_spans_and_costs_are_stored(provider: ProviderServer, recorded: RecordingEmitter,
                                          embedded_store: ClickHouseStore, broker: str) -> None:
    import openai

    client = openai.OpenAI(base_url=provider.url + "/v1", api_key="test", max_retries=0)
    with llmwatch.session("conv-1"), recorded.span("answer", kind="agent", input="mail me at ann@example.com"):
        for _ in client.chat.completions.create(model="gpt-4o-mini-2024-07-18", stream=True,
                                                messages=[{"role": "user", "content": "Capital of France?"}]):
            pass
        client.chat.completions.create(model="a-model-without-a-price", messages=[{"role": "user", "content": "?"}])
    stored(embedded_store, broker, recorded.events(), pii="redact")
    db = embedded_store.database
    rows = embedded_store.query(
        f"SELECT model, cost_usd, cost_source, cached_input_tokens, ttft_ms IS NOT NULL, parent_span_id, session_id "
        f"FROM {db}.traces ORDER BY model")
    (no_price, priced) = rows
    # gpt-4o-mini: $0.15 / M input ($0.075 cached), $0.60 / M output (ingest/pipeline/prices.yaml)
    expected = ((USAGE["input"] - USAGE["cached"]) * 0.15 + USAGE["cached"] * 0.075 + USAGE["output"] * 0.60) / 1e6
    assert priced[1] == pytest.approx(expected) and priced[2] == "computed" and priced[3] == USAGE["cached"]
    assert priced[4] == 1  # streamed: time to first token
    assert no_price[1] is None and no_price[2] == ""
    (span,) = embedded_store.query(f"SELECT name, span_kind, span_id, parent_span_id, input, session_id, status "
                                   f"FROM {db}.spans")
    assert span[:2] == ("answer", "agent") and span[3] == "" and span[5] == "conv-1" and span[6] == "ok"
    assert "ann@example.com" not in span[4]  # spans are redacted like events
    assert priced[5] == no_price[5] == span[2] and priced[6] == "conv-1"


def test_a_cost_the_app_sends_is_kept_and_a_price_table_overrides(recorded: RecordingEmitter, tmp_path: object,
                                                                  embedded_store: ClickHouseStore, broker: str) -> None:
    from pathlib import Path

    table = Path(str(tmp_path)) / "prices.yaml"
    table.write_text("prices:\n  - {match: 'gpt-4o-mini', input: 1000000, output: 0, since: 2020-01-01}\n")
    base = {"input": "hi", "output": "hello", "release": {"model": "gpt-4o-mini"}, "usage": {"input_tokens": 3}}
    recorded.emit({**base, "cost_usd": 0.5})
    recorded.emit(base)
    stored(embedded_store, broker, recorded.events(), price_table=str(table))
    rows = embedded_store.query(f"SELECT cost_usd, cost_source FROM {embedded_store.database}.traces ORDER BY cost_usd")
    assert rows == [(0.5, "sent"), (3.0, "computed")]


def test_span_events_are_validated_and_deduplicated(embedded_store: ClickHouseStore, broker: str) -> None:
    from datetime import UTC, datetime

    span = {"kind": "span", "app": "bot", "trace_id": "t1", "span_id": "s1", "name": "search",
            "span_kind": "retriever", "timestamp": int(datetime.now(UTC).timestamp() * 1000), "duration_ms": 12.5,
            "input": {"query": "x"}, "output": ["a", "b"]}
    handler = handler_for(embedded_store, broker)
    first = handler.handle([RawMessage("llm.traces", 0, 0, orjson.dumps(span)),
                            RawMessage("llm.traces", 0, 1, orjson.dumps({**span, "span_kind": "nonsense"})),
                            RawMessage("llm.traces", 0, 2, orjson.dumps({**span, "duration_ms": -1}))])
    assert (first.spans, first.rejected) == (1, 2)
    again = handler.handle([RawMessage("llm.traces", 0, 3, orjson.dumps(span))])  # re-sent: same span
    assert (again.spans, again.duplicates) == (0, 1)
    rows = embedded_store.query(f"SELECT input, output, duration_ms FROM {embedded_store.database}.spans")
    assert rows == [('{"query": "x"}', '["a", "b"]', 12.5)]
