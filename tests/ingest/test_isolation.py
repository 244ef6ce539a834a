"""No single event stops the pipeline: hostile and boundary inputs through the worker's batch
handler, on the real store and broker. Each input is stored once or rejected once, the handler
never raises, and only an unreachable store holds a batch back."""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmwatch.core.errors import StoreDataError, StoreError
from llmwatch.core.settings import Settings
from llmwatch.ingest.kafka import ensure_topics, producer
from llmwatch.ingest.pipeline.processor import BatchHandler
from llmwatch.storage.clickhouse import ClickHouseStore
from tests.conftest import _fresh_store
from tests.ingest.test_batches import counts, dlq_records, handler_for, messages, valid_event


def reasons(store: ClickHouseStore) -> dict[str, int]:
    rows = store.query(f"SELECT reason, count() FROM {store.database}.rejected GROUP BY reason")
    return dict(rows)


def test_rows_the_store_refuses_are_rejected_alone(embedded_store: ClickHouseStore, broker: str) -> None:
    """Two rows of a batch do not fit their column (here a column narrowed to UInt8, as a
    schema and a table that drifted apart would be): those two are rejected as `internal` with
    the store's error, the other twenty are stored, and nothing raises."""
    db = embedded_store.database
    embedded_store.command(f"ALTER TABLE {db}.traces MODIFY COLUMN input_tokens Nullable(UInt8)")
    handler = handler_for(embedded_store, broker)
    ensure_topics(broker, [handler.settings.dlq_topic], 1)
    poison = [json.dumps({**json.loads(valid_event(app="poison")), "usage": {"input_tokens": 1000}}).encode()
              for _ in range(2)]
    batch = messages([valid_event() for _ in range(10)] + poison[:1] + [valid_event() for _ in range(10)] + poison[1:])
    stored = handler.handle(batch)
    assert (stored.traces, stored.rejected) == (20, 2)
    assert counts(embedded_store) == {"traces": 20, "scores": 40, "feedback": 0, "rejected": 2}
    detail = embedded_store.query(f"SELECT detail FROM {db}.rejected")[0][0]
    assert detail.startswith("storing failed: StoreDataError")
    dlq = dlq_records(broker, handler.settings.dlq_topic, 2)
    assert sorted(h["llmwatch.reason"] for _, h in dlq) == [b"internal", b"internal"]
    assert all(json.loads(v)["app"] == "poison" for v, _ in dlq)
    # A replay (the worker died before committing) writes nothing twice.
    again = handler.handle(batch)
    assert (again.traces, again.rejected, again.duplicates) == (0, 0, 20)
    assert counts(embedded_store) == {"traces": 20, "scores": 40, "feedback": 0, "rejected": 2}


def test_a_server_side_failure_is_not_blamed_on_rows(embedded_store: ClickHouseStore, broker: str) -> None:
    """An error that is the server's (here a missing table) is retried like an outage and then
    raised: the events are not rejected, so nothing is lost when the server is fixed."""
    embedded_store.command(f"DROP TABLE {embedded_store.database}.feedback")
    handler = handler_for(embedded_store, broker, store_retry_max_s=0.0)
    feedback = json.dumps({"kind": "feedback", "trace_id": "t1", "score": 1}).encode()
    with pytest.raises(StoreError) as raised:
        handler.handle(messages([valid_event(), feedback]))
    assert not isinstance(raised.value, StoreDataError)
    assert embedded_store.query(f"SELECT count() FROM {embedded_store.database}.rejected")[0][0] == 0


def test_values_the_client_cannot_encode_are_data_errors(embedded_store: ClickHouseStore) -> None:
    """clickhouse-connect's encoding failures (a UInt32 overflow, a datetime before year 1 in UTC)
    are StoreDataError, and the store stays usable."""
    row = valid_row()
    with pytest.raises(StoreDataError):
        embedded_store.insert("traces", [{**row, "input_tokens": 2**32}])
    with pytest.raises(StoreDataError):
        embedded_store.insert("traces", [{**row, "timestamp": "not a time"}])
    embedded_store.insert("traces", [row])
    assert counts(embedded_store)["traces"] == 1


def test_one_value_out_of_range_among_many_rows_is_found(embedded_store: ClickHouseStore) -> None:
    """A value equal to ones that fit but of a type that does not (5.0 in an integer column after
    many 5s), one time past the column's range among many that share a time, or a list where a
    number belongs, is refused, and nothing of the batch is stored."""
    row = valid_row()
    shared = [{**row, "input_tokens": 5} for _ in range(100)]
    with pytest.raises(StoreDataError, match="input_tokens=5.0"):
        embedded_store.insert("traces", [*shared, {**row, "input_tokens": 5.0}])
    late = row["timestamp"].replace(year=2300)
    with pytest.raises(StoreDataError, match="timestamp="):
        embedded_store.insert("traces", [*shared[:50], {**row, "timestamp": late}, *shared[50:]])
    with pytest.raises(StoreDataError, match="input_tokens="):
        embedded_store.insert("traces", [*shared, {**row, "input_tokens": [1]}])
    assert counts(embedded_store)["traces"] == 0
    embedded_store.insert("traces", shared)
    assert counts(embedded_store)["traces"] == 1  # one event id: the table keeps it once


def valid_row() -> dict[str, Any]:
    from llmwatch.core.events import Limits, parse

    event = parse(valid_event(), Limits(), datetime.now(UTC))
    return event.row(datetime.now(UTC))  # type: ignore[union-attr]


def test_dlq_records_come_before_rejected_rows(embedded_store: ClickHouseStore, broker: str) -> None:
    """With the broker unreachable the batch fails before any `rejected` row is written, so the
    replay sends the DLQ record and then writes the row: a rejection is never recorded without
    its DLQ record."""
    settings = Settings.from_env({}, database=embedded_store.database, dlq_topic=f"dlq-{uuid.uuid4().hex[:8]}",
                                 store_retry_max_s=0.0)
    dead = producer("127.0.0.1:1", **{"message.timeout.ms": 500})
    handler = BatchHandler(settings, embedded_store, [], dead)
    batch = messages([b"junk", valid_event()])
    with pytest.raises(StoreError, match="DLQ delivery failed"):
        handler.handle(batch)
    assert counts(embedded_store)["rejected"] == 0
    ensure_topics(broker, [settings.dlq_topic], 1)
    handler.dlq = producer(broker)
    handler.handle(batch)
    assert counts(embedded_store) == {"traces": 1, "scores": 0, "feedback": 0, "rejected": 1}
    assert [v for v, _ in dlq_records(broker, settings.dlq_topic, 1)] == [b"junk"]


# Boundary values for every field of the schema: type limits, column limits, schema maxima and
# one past them, odd text, odd times.
NOW_MS = int(time.time() * 1000)
NUMBERS = [0, -1, 1, 0.5, -0.0, 2**31 - 1, 2**32 - 1, 2**32, 2**53, 2**63 - 1, 2**64, 2**70, 1e308, -1e308,
           5e-324, 100_000_000, 100_000_001, 86_400_000, 86_400_001, 100_000, 100_001, 253402300799999]
TEXTS = ["", "x", "\x00", "a\u202eb\u202c", "😀" * 50, "x" * 64, "x" * 65, "x" * 128, "x" * 129, "x" * 256,
         "x" * 257, "y" * 4096, "y" * 4097, "\u0000\u0001\u001f", "null", "🏳️‍🌈", "ﷺ", "\ud7ff"]
TIMES = ["0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00Z", "2999-12-31T23:59:59Z", "9999-12-31T23:59:59.999999+00:00",
         "1970-01-01T00:00:00Z", "2026-13-45T00:00:00Z", "now", NOW_MS, NOW_MS + 3_600_000, NOW_MS + 3_600_001, 0, -1,
         2**70, 1e12, float(NOW_MS), "9999-12-31T23:59:59-14:00"]
FIELDS = ["event_id", "trace_id", "span_id", "parent_span_id", "timestamp", "app", "environment", "input", "output",
          "context", "latency_ms", "cost_usd", "user_id", "session_id", "tags", "error", "kind",
          "release.prompt_id", "release.prompt_version", "release.model", "release.provider",
          "usage.input_tokens", "usage.output_tokens"]
_scalar = st.one_of(st.sampled_from(NUMBERS), st.sampled_from(TEXTS), st.sampled_from(TIMES), st.none(), st.booleans())
values = st.one_of(
    _scalar,
    st.lists(_scalar, max_size=3),
    st.dictionaries(st.sampled_from(["id", "text", "role", "content", ""]), _scalar, max_size=3),
    st.lists(st.fixed_dictionaries({"role": st.sampled_from(TEXTS), "content": st.sampled_from(TEXTS)}), max_size=3),
)


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    if "." in path:
        parent, name = path.split(".")
        if not isinstance(doc.get(parent), dict):
            doc[parent] = {}
        doc[parent][name] = value
    else:
        doc[path] = value


@st.composite
def hostile_message(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(st.binary(max_size=64))
    if choice == 1:
        depth = draw(st.sampled_from([31, 33, 1000, 1025]))
        return b'{"a":' * depth + b"1" + b"}" * depth
    doc = json.loads(valid_event())
    if draw(st.booleans()):
        doc = {"kind": "feedback", "trace_id": "t", "score": 1, "event_id": str(uuid.uuid4())}
    for path in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True)):
        value = draw(values)
        _set(doc, path, datetime.now(UTC).isoformat() if value == "now" else value)
    raw = json.dumps(doc, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if choice == 2:  # a repeated key, the second value winning in most parsers
        raw = raw[:-1] + b', "app": "other"}'
    return raw


@given(batch=st.lists(hostile_message(), min_size=1, max_size=25))
@settings(max_examples=int(os.environ.get("LLMWATCH_HYPOTHESIS_EXAMPLES", "30")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow, HealthCheck.data_too_large])
def test_boundary_values_are_stored_once_or_rejected_once(embedded_url: str, broker: str, batch: list[bytes]) -> None:
    for store in _fresh_store(embedded_url):
        handler = handler_for(store, broker)
        stored = handler.handle(messages(batch))  # never raises
        assert stored.traces + stored.feedback + stored.rejected + stored.duplicates == len(batch)
        got = counts(store)
        assert got["traces"] == stored.traces and got["feedback"] == stored.feedback
        assert got["rejected"] == stored.rejected
        assert "internal" not in reasons(store), "the schema should have caught every boundary value"
        replay = handler.handle(messages(batch))
        assert (replay.traces, replay.feedback, replay.rejected) == (0, 0, 0), store.query(
            f"SELECT offset, reason, detail, hex(rejection_id) FROM {store.database}.rejected ORDER BY offset")
        assert counts(store) == got
