"""Batch handling against the real store and broker: replays never count twice, nothing is lost."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Consumer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmwatch.core.errors import StoreUnavailable
from llmwatch.core.settings import Settings
from llmwatch.detectors.registry import load_all
from llmwatch.ingest.kafka import ensure_topics, producer
from llmwatch.ingest.pipeline.processor import STORE_RETRY_CAP_S, BatchHandler
from llmwatch.ingest.pipeline.sink import RawMessage
from llmwatch.storage.clickhouse import ClickHouseStore
from tests.conftest import _fresh_store

NOW = datetime.now(UTC)


def valid_event(app: str = "bot", output: str = "fine, thanks") -> bytes:
    return json.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "trace_id": uuid.uuid4().hex,
            "timestamp": int(time.time() * 1000),
            "app": app,
            "input": "hello",
            "output": output,
        }
    ).encode()


def handler_for(store: ClickHouseStore, bootstrap: str, **overrides: object) -> BatchHandler:
    settings = Settings.from_env({}, database=store.database, dlq_topic=f"dlq-{uuid.uuid4().hex[:8]}", **overrides)
    return BatchHandler(settings, store, load_all(["toxicity"], settings), producer(bootstrap))


def counts(store: ClickHouseStore) -> dict[str, int]:
    db = store.database
    return {
        table: store.query(f"SELECT count() FROM {db}.{table}")[0][0]
        for table in ("traces", "scores", "feedback", "rejected")
    }


def dlq_records(broker: str, topic: str, expected: int, timeout_s: float = 30.0) -> list[tuple[bytes, dict]]:
    """(value, headers) of the first `expected` records on a DLQ topic, read from the start."""
    consumer = Consumer(
        {"bootstrap.servers": broker, "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest",
         "session.timeout.ms": 2000}
    )
    consumer.subscribe([topic])
    received: list[tuple[bytes, dict]] = []
    deadline = time.monotonic() + timeout_s
    while len(received) < expected and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            received.append((message.value(), dict(message.headers() or [])))
    consumer.close()
    return received


def messages(values: list[bytes], start: int = 0) -> list[RawMessage]:
    return [RawMessage("llm.traces", 0, start + i, v) for i, v in enumerate(values)]


def test_replayed_batch_counts_once(embedded_store: ClickHouseStore, broker: str) -> None:
    """Processing the same batch twice leaves exactly one row per event and per score."""
    handler = handler_for(embedded_store, broker)
    batch = messages([valid_event() for _ in range(50)] + [b"junk"])
    first = handler.handle(batch)
    second = handler.handle(batch)
    assert (first.traces, first.scores, first.rejected) == (50, 100, 1)
    assert (second.traces, second.scores, second.rejected, second.duplicates) == (0, 0, 0, 50)
    assert counts(embedded_store) == {"traces": 50, "scores": 100, "feedback": 0, "rejected": 1}


def test_duplicates_inside_one_batch(embedded_store: ClickHouseStore, broker: str) -> None:
    """A producer retry that lands twice in one batch is stored once."""
    handler = handler_for(embedded_store, broker)
    raw = valid_event()
    handler.handle(messages([raw, raw, raw]))
    assert counts(embedded_store)["traces"] == 1


def test_crash_between_trace_and_score_inserts(embedded_store: ClickHouseStore, broker: str) -> None:
    """If traces were stored but their scores were not, a replay adds only the missing scores."""
    handler = handler_for(embedded_store, broker)
    batch = messages([valid_event() for _ in range(10)])

    class CrashBeforeScores:
        """The real store, except that the process 'dies' when it writes score rows."""

        def __getattr__(self, name: str) -> object:
            return getattr(embedded_store, name)

        def insert(self, table: str, rows: list) -> None:
            if table == "scores_by_event":
                raise StoreUnavailable("simulated crash")
            embedded_store.insert(table, rows)

    handler.store = CrashBeforeScores()  # type: ignore[assignment]
    handler.settings = Settings.from_env({}, database=embedded_store.database, store_retry_max_s=0.0)
    with pytest.raises(StoreUnavailable):
        handler.handle(batch)
    assert counts(embedded_store)["traces"] == 10
    assert counts(embedded_store)["scores"] == 0
    handler.store = embedded_store
    handler.handle(batch)
    assert counts(embedded_store) == {"traces": 10, "scores": 20, "feedback": 0, "rejected": 0}


def test_rejections_reach_the_dlq_with_reason_and_raw_bytes(embedded_store: ClickHouseStore, broker: str) -> None:
    """Each rejected message is produced to the DLQ with its exact bytes and reason headers."""
    handler = handler_for(embedded_store, broker)
    ensure_topics(broker, [handler.settings.dlq_topic], 1)
    junk = [b"\xff\xfe", b"{}", b"[]", json.dumps({"x": "y" * 10}).encode()]
    handler.handle(messages(junk))
    received = dlq_records(broker, handler.settings.dlq_topic, len(junk))
    assert sorted(v for v, _ in received) == sorted(junk)
    reasons = {v: h["llmwatch.reason"].decode() for v, h in received}
    assert reasons[b"\xff\xfe"] == "invalid_utf8"
    assert reasons[b"[]"] == "not_object"
    assert reasons[b"{}"] == "schema"
    stored = embedded_store.query(f"SELECT reason, count() FROM {embedded_store.database}.rejected GROUP BY reason")
    assert sum(n for _, n in stored) == 4


def test_store_outage_is_retried_then_raised(embedded_store: ClickHouseStore, broker: str) -> None:
    """While the store is unreachable the batch is retried, and it fails loudly, never skipped."""
    dead = ClickHouseStore("http://127.0.0.1:1", embedded_store.database, connect_timeout_s=1)
    naps: list[float] = []
    settings = Settings.from_env({}, database=embedded_store.database, store_retry_max_s=60.0)
    handler = BatchHandler(
        settings, dead, [], producer(broker), sleep=naps.append, monotonic=lambda: sum(naps)
    )
    with pytest.raises(StoreUnavailable):
        handler.handle(messages([valid_event()]))
    assert sum(naps) >= 60.0  # kept trying for the whole budget before giving up
    assert naps[0] <= 0.5 and naps[1] > naps[0]  # exponential backoff from 0.5 s
    assert max(naps) <= STORE_RETRY_CAP_S  # so a store that is back is used within seconds


inputs = st.lists(
    st.one_of(
        st.just("valid"),
        st.just("toxic"),
        st.binary(max_size=40),
        st.sampled_from([b"{}", b"null", b'{"kind": "feedback", "trace_id": "t", "score": 2}']),
    ),
    min_size=1,
    max_size=40,
)


@given(kinds=inputs, data=st.data())
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_input_is_stored_once_or_rejected_once(embedded_url: str, broker: str, kinds: list, data: st.DataObject) -> None:
    """Generated junk and valid events, split into random batches, some replayed: each input
    ends up either stored exactly once or rejected exactly once."""
    values = [valid_event() if k == "valid" else valid_event(output="shut up you idiot") if k == "toxic" else k for k in kinds]
    stream = messages(values)
    for store in _fresh_store(embedded_url):
        handler = handler_for(store, broker)
        position = 0
        while position < len(stream):
            size = data.draw(st.integers(1, len(stream) - position))
            batch = stream[position : position + size]
            handler.handle(batch)
            if data.draw(st.booleans()):
                handler.handle(batch)  # a replay after a crash before the commit
            position += size
        valid = sum(1 for k in kinds if k in ("valid", "toxic"))
        got = counts(store)
        assert got["traces"] == valid
        assert got["scores"] == 2 * valid
        assert got["rejected"] == len(kinds) - valid


class FailsOnWord:
    """A real detector's shape that raises on one event (a poison pill), or on every event with
    a store error (a detector reading its reference while the store is down)."""

    name = "fragile"
    version = "1"
    targets = ("output",)

    def __init__(self, word: str, error: type[Exception] = ValueError) -> None:
        self.word = word
        self.error = error

    def score(self, events: list) -> list:
        from llmwatch.detectors.base import ScoreRow

        if any(self.word in e.output for e in events):
            raise self.error(f"cannot score {self.word}")
        return [ScoreRow(e.event_id, self.name, self.version, "output", 0.0, "ok") for e in events]

    def close(self) -> None:
        pass


def test_a_poison_event_costs_only_its_own_score(embedded_store: ClickHouseStore, broker: str) -> None:
    settings = Settings.from_env({}, database=embedded_store.database, dlq_topic=f"dlq-{uuid.uuid4().hex[:8]}")
    detectors = [*load_all(["toxicity"], settings), FailsOnWord("POISON")]
    handler = BatchHandler(settings, embedded_store, detectors, producer(broker))
    stored = handler.handle(messages([valid_event(output="fine") for _ in range(9)] + [valid_event(output="POISON")]))
    assert stored.traces == 10
    db = embedded_store.database
    rows = embedded_store.query(f"SELECT detector, label, count(), countIf(isNull(score)) FROM {db}.scores GROUP BY ALL ORDER BY ALL")
    assert rows == [("fragile", "error", 1, 1), ("fragile", "ok", 9, 0), ("toxicity", "ok", 20, 0)]
    error = embedded_store.query(f"SELECT details FROM {db}.scores WHERE label = 'error'")[0][0]
    assert json.loads(error) == {"error": "ValueError"}


def test_a_store_error_inside_a_detector_is_retried_not_blamed_on_events(embedded_store: ClickHouseStore, broker: str) -> None:
    settings = Settings.from_env({}, database=embedded_store.database, store_retry_max_s=0.0)
    handler = BatchHandler(settings, embedded_store, [FailsOnWord("fine", StoreUnavailable)], producer(broker))
    with pytest.raises(StoreUnavailable):
        handler.handle(messages([valid_event(output="fine")]))
    assert counts(embedded_store)["scores"] == 0


def test_a_rejection_replayed_long_after_its_record_arrived_is_recorded_once(
    embedded_store: ClickHouseStore, broker: str
) -> None:
    """The rejection lookup reads only the hours since the batch's records entered Kafka (their
    timestamps stay the same on a replay), so a replay of old records still finds their rows: here
    records from two days ago (a consumer group reset to the earliest offset), and one record
    without a timestamp, which leaves the lookup unbounded."""
    handler = handler_for(embedded_store, broker)
    arrived = NOW - timedelta(days=2)
    batch = [RawMessage("llm.traces", 0, i, f"junk {i}".encode(), arrived + timedelta(seconds=i)) for i in range(20)]
    batch.append(RawMessage("llm.traces", 0, 20, b"junk without a record timestamp"))
    assert handler.handle(batch).rejected == 21
    assert handler.handle(batch).rejected == 0
    assert handler.handle(batch[:20]).rejected == 0  # bounded by the records' own timestamps
    assert counts(embedded_store)["rejected"] == 21
    # The earliest timestamp a record can carry is a rejection like any other, not a crash.
    ancient = [RawMessage("llm.traces", 0, 99, b"junk from year 1", datetime(1, 1, 1, tzinfo=UTC))]
    assert handler.handle(ancient).rejected == 1
    assert handler.handle(ancient).rejected == 0


def test_the_rejection_lookup_reaches_back_from_the_records_timestamps() -> None:
    from llmwatch.ingest.pipeline.sink import RETRY_WINDOW, rejected_since

    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    old, new = now - timedelta(days=3), now - timedelta(seconds=5)
    at = [RawMessage("t", 0, i, b"x", arrived) for i, arrived in enumerate((new, old, new))]
    assert rejected_since(at, now) == old - RETRY_WINDOW
    # A producer clock ahead of ours: its rows were received no later than now.
    ahead = [RawMessage("t", 0, 0, b"x", now + timedelta(hours=5))]
    assert rejected_since(ahead, now) == now - RETRY_WINDOW
    unbounded = datetime(1970, 1, 1, tzinfo=UTC)  # before every row a worker writes
    assert rejected_since([*at, RawMessage("t", 0, 9, b"x")], now) == unbounded  # no timestamp: no bound
    # A producer may set any timestamp: year 1 would underflow, and the store keeps 1900 on.
    for hostile in (datetime(1, 1, 1, tzinfo=UTC), datetime(1969, 12, 31, tzinfo=UTC)):
        assert rejected_since([RawMessage("t", 0, 0, b"x", hostile)], now) == unbounded


def test_a_rejection_whose_id_ends_in_a_zero_byte_is_recorded_once(embedded_store: ClickHouseStore, broker: str) -> None:
    """Found by the boundary-value test: 1 rejection id in 256 ends in 0x00, and the lookup that
    makes replays idempotent compared it as a String, which never matched."""
    from llmwatch.ingest.pipeline.sink import rejection_id

    handler = handler_for(embedded_store, broker)
    junk = next(m for m in (messages([f"junk {i}".encode()], start=i) for i in range(5000))
                if rejection_id(m[0]).endswith(b"\x00"))
    handler.handle(junk)
    replay = handler.handle(junk)
    assert replay.rejected == 0
    assert counts(embedded_store)["rejected"] == 1
