"""Two batches at once, as the worker runs them: the next batch is parsed, looked up and scored
(`prepare`) while the previous one is written (`write`). Against the real store and broker."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmwatch.core.errors import StoreUnavailable
from llmwatch.ingest.pipeline.processor import BatchHandler, PreparedBatch
from llmwatch.ingest.pipeline.sink import RawMessage
from llmwatch.storage.clickhouse import ClickHouseStore
from tests.conftest import _fresh_store
from tests.ingest.test_batches import counts, handler_for, messages, valid_event


def run_pipelined(handler: BatchHandler, batches: list[list[RawMessage]]) -> list[Any]:
    """The agent's order: prepare N+1 (told N's ids are in flight), then write N."""
    stored = []
    writing: PreparedBatch | None = None
    for batch in batches:
        prepared = handler.prepare(batch, writing.trace_ids if writing else frozenset())
        if writing is not None:
            stored.append(handler.write(writing))
        writing = prepared
    if writing is not None:
        stored.append(handler.write(writing))
    return stored


def test_events_resent_in_the_next_batch_are_stored_once(embedded_store: ClickHouseStore, broker: str) -> None:
    """A producer's retry lands the same events in the next batch, which is looked up before the
    first one is written: the write looks those up again, and stores none twice."""
    handler = handler_for(embedded_store, broker)
    first = [valid_event() for _ in range(10)]
    second = first + [valid_event() for _ in range(5)]
    stored = run_pipelined(handler, [messages(first), messages(second, start=10)])
    assert [(s.traces, s.duplicates) for s in stored] == [(10, 0), (5, 10)]
    assert counts(embedded_store) == {"traces": 15, "scores": 30, "feedback": 0, "rejected": 0}


def test_without_the_in_flight_ids_the_resent_events_would_be_stored_twice(
        embedded_store: ClickHouseStore, broker: str) -> None:
    """Why `prepare` is told what is in flight: its lookup cannot see a write not yet made."""
    handler = handler_for(embedded_store, broker)
    batch = [valid_event() for _ in range(10)]
    first = handler.prepare(messages(batch))
    second = handler.prepare(messages(batch, start=10))
    handler.write(first)
    handler.write(second)
    assert counts(embedded_store)["traces"] == 20


class FailsOnce:
    """The real store, whose first insert into `table` fails as an outage after it is stored (a
    response lost on the way back)."""

    def __init__(self, store: ClickHouseStore, table: str) -> None:
        self.store = store
        self.table = table
        self.failed = False

    def insert(self, table: str, rows: Any) -> None:
        self.store.insert(table, rows)
        if table == self.table and not self.failed:
            self.failed = True
            msg = "connection reset"
            raise StoreUnavailable(msg)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_retried_write_looks_up_again(embedded_store: ClickHouseStore, broker: str) -> None:
    """The trace rows went in, the score insert's answer was lost: the retry must not write the
    prepared trace rows a second time."""
    flaky = FailsOnce(embedded_store, "scores_by_event")
    handler = handler_for(flaky, broker)  # type: ignore[arg-type]  # the store's interface
    handler.sleep = lambda _s: None
    stored = handler.handle(messages([valid_event() for _ in range(8)]))
    assert flaky.failed
    assert stored.duplicates == 8  # the retry found the trace rows of the first attempt
    db = embedded_store.database
    assert counts(embedded_store)["traces"] == 8
    # The failed attempt's score rows are stored too; the retry added none of its own.
    assert embedded_store.query(f"SELECT count(), uniqExact(event_id, detector, target) FROM {db}.scores") == [(16, 16)]


inputs = st.lists(st.sampled_from(["valid", "toxic", "junk", "resend"]), min_size=1, max_size=40)


@given(kinds=inputs, data=st.data())
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_pipelined_batches_store_each_event_once(embedded_url: str, broker: str, kinds: list,
                                                 data: st.DataObject) -> None:
    """Valid events, junk, and events sent again (by a retrying producer, at a later offset),
    split into random batches run two at a time, some batches replayed: each event is stored
    once, each junk message rejected once."""
    values: list[bytes] = []
    for kind in kinds:
        sent = [v for v in values if v != b"junk"]
        if kind == "resend" and sent:
            values.append(data.draw(st.sampled_from(sent)))
        else:
            values.append(b"junk" if kind in ("junk", "resend") else
                          valid_event(output="shut up you idiot" if kind == "toxic" else "fine"))
    stream = messages(values)
    batches: list[list[RawMessage]] = []
    position = 0
    while position < len(stream):
        size = data.draw(st.integers(1, len(stream) - position))
        batches.append(stream[position : position + size])
        if data.draw(st.booleans()):
            batches.append(batches[-1])  # a replay after a crash before the commit
        position += size
    for store in _fresh_store(embedded_url):
        run_pipelined(handler_for(store, broker), batches)
        distinct = len({v for v in values if v != b"junk"})
        assert counts(store) == {"traces": distinct, "scores": 2 * distinct, "feedback": 0,
                                 "rejected": values.count(b"junk")}
