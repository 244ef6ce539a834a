"""Rollups stay exact when two workers race on the same events (ingest/pipeline/sink.py, step 5).

The race: a worker whose insert was stuck (a zombie) and the partition's new owner both look up
the same events, both find nothing, both insert. The tests play it out on the real store: the
zombie's insert waits while the new owner handles the same offsets, then lands.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from llmwatch.ingest.pipeline.processor import BatchHandler
from llmwatch.ingest.pipeline.sink import RawMessage
from llmwatch.storage.clickhouse import ClickHouseStore
from tests.ingest.test_batches import handler_for, messages


def rich_event(i: int) -> bytes:
    """An event that reaches every rollup column: release and model, usage, cost, latency, errors."""
    event = {
        "event_id": str(uuid.uuid4()),
        "trace_id": uuid.uuid4().hex,
        "timestamp": int(time.time() * 1000) - i * 7_000,
        "app": f"app-{i % 2}",
        "environment": "prod",
        "release": {"prompt_id": "support", "prompt_version": str(i % 3), "model": "gpt-x" if i % 4 else ""},
        "input": "hello",
        "output": "you idiot" if i % 5 == 0 else "fine, thanks",
        "usage": {"input_tokens": 10 + i, "output_tokens": 3 * i},
        "cost_usd": 0.001 * i,
    }
    if i % 6:
        event["latency_ms"] = 100.0 + 37 * i
    if i % 7 == 0:
        event["error"] = "timeout"
    return json.dumps(event).encode()


def rollup(store: ClickHouseStore, table: str, source: str | None = None) -> dict[tuple, tuple]:
    """The rollup's rows summed per key; with `source`, what its materialized view computes from
    that table read with FINAL (one row per event), which is what the rollup must hold."""
    db = store.database
    if source is None:
        body = f"{db}.{table}"
    else:
        (view,) = store.query(f"SELECT as_select FROM system.tables WHERE database = '{db}' AND name = '{table}_mv'")[0]
        assert view.count(f"FROM {db}.{source}") == 1
        body = "(" + view.replace(f"FROM {db}.{source}", f"FROM {db}.{source} FINAL") + ")"
    if table == "trace_stats":
        sql = (f"SELECT bucket, app, environment, release, model, sum(events), sum(errors), sum(input_tokens), "
               f"sum(output_tokens), round(sum(cost_usd), 9), sumMap(latency_hist) FROM {body} "
               "GROUP BY ALL HAVING sum(events) != 0")
    else:
        sql = (f"SELECT bucket, app, environment, release, model, detector, target, label, sum(n) FROM {body} "
               "GROUP BY ALL HAVING sum(n) != 0")
    rows = store.query(sql)
    width = 5 if table == "trace_stats" else 8
    return {tuple(r[:width]): tuple(_plain(v) for v in r[width:]) for r in rows}


def _plain(value: Any) -> Any:
    return {k: v for k, v in value.items() if v} if isinstance(value, dict) else value


def assert_rollups_exact(store: ClickHouseStore) -> None:
    assert rollup(store, "trace_stats") == rollup(store, "trace_stats", "traces")
    assert rollup(store, "score_counts") == rollup(store, "score_counts", "scores")


class StuckInsert:
    """The real store, except that the first insert of trace rows waits until `meanwhile` (the
    partition's new owner at work) has run: the zombie's insert lands after the new owner's."""

    def __init__(self, store: ClickHouseStore, meanwhile: Any) -> None:
        self.store, self.meanwhile = store, meanwhile

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    def insert(self, table: str, rows: list) -> None:
        if table == "traces" and self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            meanwhile()
        self.store.insert(table, rows)


def test_a_zombie_insert_that_lands_last_is_taken_back_out(embedded_store: ClickHouseStore, broker: str) -> None:
    events = [rich_event(i) for i in range(40)]
    zombie, owner = handler_for(embedded_store, broker), handler_for(embedded_store, broker)
    # The new owner's batches end elsewhere than the zombie's: 0-19 and 20-39 against 0-29.
    owner_batches = [messages(events[:20]), messages(events[20:], start=20)]
    owner_stored = []
    zombie.store = StuckInsert(embedded_store, lambda: owner_stored.extend(owner.handle(b) for b in owner_batches))

    stored = zombie.handle(messages(events[:30]))

    assert sum(s.traces for s in owner_stored) == 40 and sum(s.repaired for s in owner_stored) == 0
    assert (stored.traces, stored.repaired) == (30, 30)
    db = embedded_store.database
    assert embedded_store.query(f"SELECT count() FROM {db}.traces FINAL")[0][0] == 40
    assert_rollups_exact(embedded_store)


def test_two_workers_that_both_see_the_copies_correct_once(embedded_store: ClickHouseStore, broker: str) -> None:
    """The new owner looks again after the zombie landed (its replay of the same offsets): it
    finds the same copies and writes the same corrections, which the store drops."""
    events = [rich_event(i) for i in range(12)]
    zombie, owner = handler_for(embedded_store, broker), handler_for(embedded_store, broker)
    batch = messages(events)
    zombie.store = StuckInsert(embedded_store, lambda: owner.handle(batch))
    assert zombie.handle(batch).repaired == 12
    replay = owner.handle(batch)
    assert (replay.traces, replay.duplicates, replay.repaired) == (0, 12, 12)
    assert_rollups_exact(embedded_store)


def test_a_third_copy_is_taken_back_too(embedded_store: ClickHouseStore, broker: str) -> None:
    events = [rich_event(i) for i in range(6)]
    first, second, third = (handler_for(embedded_store, broker) for _ in range(3))
    batch = messages(events)
    second.store = StuckInsert(embedded_store, lambda: first.handle(batch))
    third.store = StuckInsert(embedded_store, lambda: second.handle(batch))
    assert third.handle(batch).repaired == 12  # two extra copies of six events
    assert_rollups_exact(embedded_store)


def test_identical_rollup_rows_from_separate_batches_all_count(embedded_store: ClickHouseStore, broker: str) -> None:
    """The deduplication window the corrections need must not drop a batch whose rollup rows
    happen to equal an earlier batch's (same app, bucket and labels): each such insert counts."""
    handler = handler_for(embedded_store, broker)
    now = int(time.time() * 1000) // 60_000 * 60_000 + 1_000  # one minute bucket, one 10 s bucket
    for _ in range(3):
        event = {"event_id": str(uuid.uuid4()), "trace_id": uuid.uuid4().hex, "timestamp": now, "app": "same",
                 "input": "hello", "output": "fine, thanks"}
        assert handler.handle([RawMessage("llm.traces", 0, 0, json.dumps(event).encode())]).traces == 1
    db = embedded_store.database
    assert embedded_store.query(f"SELECT sum(events) FROM {db}.trace_stats WHERE app = 'same'")[0][0] == 3
    assert embedded_store.query(f"SELECT sum(n) FROM {db}.score_counts WHERE app = 'same'")[0][0] == 6
    assert_rollups_exact(embedded_store)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def long_settled(handler: BatchHandler, clock: Clock) -> BatchHandler:
    """A worker that got its partition an hour ago."""
    handler.monotonic = clock
    handler.created = clock.now - 3600
    handler.partitions_assigned([("llm.traces", 0)])
    handler.owned_since[("llm.traces", 0)] = clock.now - 3600
    return handler


def test_a_settled_worker_skips_the_check(embedded_store: ClickHouseStore, broker: str) -> None:
    """An hour after its last rebalance a worker is the only writer of its partitions: no copy
    lookup, so steady-state batches pay nothing for the race check."""
    handler = long_settled(handler_for(embedded_store, broker), Clock())
    lookups = []
    real_query = embedded_store.query

    class Counting:
        def __getattr__(self, name: str) -> object:
            return getattr(embedded_store, name)

        def query(self, sql: str, params: Any = None) -> Any:
            lookups.append("copies > 1" in sql)
            return real_query(sql, params)

    handler.store = Counting()  # type: ignore[assignment]
    assert handler.handle(messages([rich_event(i) for i in range(10)])).traces == 10
    assert lookups and not any(lookups)


def test_a_worker_whose_batch_outlived_its_session_checks(embedded_store: ClickHouseStore, broker: str) -> None:
    """The zombie: settled for an hour, then its insert hangs past the consumer session (the
    partition moves on) and lands after the new owner's. Its own check takes the copies back."""
    events = [rich_event(i) for i in range(8)]
    clock = Clock()
    zombie, owner = long_settled(handler_for(embedded_store, broker), clock), handler_for(embedded_store, broker)
    batch = messages(events)

    def meanwhile() -> None:
        clock.now += 60  # the hung insert: longer than any session timeout
        owner.handle(batch)

    zombie.store = StuckInsert(embedded_store, meanwhile)
    assert zombie.handle(batch).repaired == 8
    assert_rollups_exact(embedded_store)
