"""Store a batch so that replays never count twice.

The mechanism (docs/architecture.md, "Exactly-once effect"): Kafka delivers at least once, so the worker makes
every write idempotent by key before it commits offsets.

1. Duplicates inside a batch are dropped by event_id.
2. One lookup per batch finds which event_ids are already in llmwatch.traces. The lookup is
   bounded by the batch's apps and time range, so it reads a few granules through the sort key.
3. New events' trace rows are inserted first, then their score rows. An event whose trace row
   exists but whose score rows are missing (a crash between the two inserts) gets only the
   missing (detector, target) rows on replay. The lookup and the scoring (`plan_traces`) can run
   while the previous batch is being written: events whose id is in that batch are looked up
   again by `write_events`, which runs after the previous write.
4. Feedback is keyed by event_id the same way. Rejections are keyed by rejection_id (Kafka
   position + bytes); the worker produces a rejection's DLQ record before its `rejected` row, so a
   crash between the two is repaired by the replay (which finds no row and sends both again).

The lookups reach back `RETRY_WINDOW` before a batch's earliest event: ids that HTTP ingest
derives from content, or feedback timed by its arrival, arrive again with a later time when the
client retries, and must still find the first copy. The rejection lookup reaches back the same
window before the batch's earliest Kafka record timestamp: a rejection's row was received after its
record entered Kafka, so a replay finds it however long ago that was, and the lookup reads only
the hours since (unbounded, it read every rejection kept, and a flood of junk slowed every batch).

Rows are only ever inserted for keys the store does not have, so a plain count() is exact.
Two workers writing the same partition at once (a zombie whose insert was stuck while its
partition moved to a new owner) can still race: both look, both find nothing, both insert. The
ReplacingMergeTree tables collapse such a pair at the next merge, but a materialized view counts
every insert, so:

5. When a race is possible (ingest/pipeline/processor.py decides), the worker counts the copies
   of its events after its inserts (`repair_rollups`). For each copy beyond the first it inserts
   a negated row into the rollups (`score_counts`, `trace_stats`) with an insert deduplication
   token named after the event and the copy. Whichever of the two racing workers inserted last
   sees both copies; if both do, ClickHouse keeps one of the two identical corrections, so each
   extra copy is taken back exactly once.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from llmwatch.core.events import Feedback, Rejection, SpanEvent, TraceEvent
from llmwatch.detectors.base import ScoreRow
from llmwatch.storage.clickhouse import Store

log = logging.getLogger(__name__)

__all__ = [
    "MAX_STORED_RAW_BYTES",
    "RETRY_WINDOW",
    "RawMessage",
    "StoredBatch",
    "TracePlan",
    "existing_event_ids",
    "existing_rejections",
    "new_rejections",
    "plan_traces",
    "rejected_since",
    "rejection_id",
    "repair_rollups",
    "store_events",
    "store_rejections",
    "trace_copies",
    "write_events",
]

RETRY_WINDOW = timedelta(minutes=15)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # what a rejection lookup without a bound reaches back to


@dataclass(frozen=True, slots=True)
class RawMessage:
    """Where a message sat in Kafka, and its bytes."""

    topic: str
    partition: int
    offset: int
    value: bytes
    arrived: datetime | None = None  # the record's timestamp: stable across replays


@dataclass(frozen=True)
class StoredBatch:
    """What one batch (or part of one) wrote."""

    traces: int = 0
    scores: int = 0
    feedback: int = 0
    rejected: int = 0
    duplicates: int = 0
    # Extra copies of events (from a racing worker) taken back out of the rollups.
    repaired: int = 0
    # Events the store refused (a row its column types cannot hold): rejected, reason `internal`.
    refused: list[tuple[RawMessage, Rejection]] = field(default_factory=list)
    spans: int = 0

    def __add__(self, other: StoredBatch) -> StoredBatch:
        return StoredBatch(
            self.traces + other.traces,
            self.scores + other.scores,
            self.feedback + other.feedback,
            self.rejected + other.rejected,
            self.duplicates + other.duplicates,
            self.repaired + other.repaired,
            self.refused + other.refused,
            self.spans + other.spans,
        )


def rejection_id(message: RawMessage) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{message.topic}\0{message.partition}\0{message.offset}\0".encode())
    digest.update(message.value)
    return digest.digest()


# Bounded by the batch's apps and time range, so the lookup reads a few granules through the
# sort key (app, hour, event_id) instead of scanning the table.
_BY_KEY = (
    "WHERE app IN {apps:Array(String)} "
    "AND timestamp BETWEEN {lo:DateTime64(3, 'UTC')} AND {hi:DateTime64(3, 'UTC')} "
    "AND event_id IN {ids:Array(UUID)}"
)


def _key_params(events: Sequence[TraceEvent | Feedback | SpanEvent]) -> dict[str, Any]:
    return {
        "apps": sorted({e.app for e in events}),
        "lo": min(e.timestamp for e in events) - RETRY_WINDOW,
        "hi": max(e.timestamp for e in events),
        "ids": [e.event_id for e in events],
    }


def existing_event_ids(store: Store, table: str, events: Sequence[TraceEvent | Feedback | SpanEvent]) -> set[uuid.UUID]:
    """Which of these events' ids `table` already holds."""
    if not events:
        return set()
    rows = store.query(f"SELECT DISTINCT event_id FROM {store.database}.{table} {_BY_KEY}", _key_params(events))
    return {row[0] for row in rows}


def _existing_score_keys(store: Store, events: Sequence[TraceEvent]) -> set[tuple[uuid.UUID, str, str]]:
    if not events:
        return set()
    rows = store.query(
        f"SELECT event_id, detector, target FROM {store.database}.scores {_BY_KEY}", _key_params(events)
    )
    return {(row[0], row[1], row[2]) for row in rows}


def existing_rejections(store: Store, keyed: dict[bytes, RawMessage], now: datetime) -> set[bytes]:
    """Which of these rejection ids (each with the message it came from) `rejected` holds."""
    if not keyed:
        return set()
    rows = store.query(
        f"SELECT DISTINCT hex(rejection_id) FROM {store.database}.rejected "
        # toFixedString: unhex gives a String, and an id ending in a zero byte (1 in 256) then
        # never matched its FixedString(16), so replays recorded those rejections again.
        "WHERE rejection_id IN (SELECT toFixedString(unhex(arrayJoin({ids:Array(String)})), 16)) "
        "AND received_at >= {since:DateTime64(3, 'UTC')}",
        {"ids": [i.hex() for i in keyed], "since": rejected_since(list(keyed.values()), now)},
    )
    return {bytes.fromhex(row[0]) for row in rows}


def rejected_since(messages: Sequence[RawMessage], now: datetime) -> datetime:
    """The earliest `received_at` a stored rejection of these messages can have.

    Unbounded, the lookup read every rejection kept (the sort key leads with the hour), so a flood
    of junk would make every later batch slower. A message is processed after it entered Kafka,
    so its row was received at or after its record timestamp, less the producer's clock skew
    (RETRY_WINDOW allows for 15 minutes); a timestamp ahead of this worker's clock counts as now.
    A message without a timestamp, or with one before 1970 (a producer may set any), bounds
    nothing: 1970, before every row this worker wrote."""
    arrivals = [m.arrived for m in messages]
    if any(arrived is None or arrived < _EPOCH for arrived in arrivals):
        return _EPOCH
    return min(min(a for a in arrivals if a is not None), now) - RETRY_WINDOW


@dataclass(frozen=True)
class TracePlan:
    """A batch's trace events sorted by what the store held when it looked, the new ones scored.

    Made before the batch is written (`plan_traces`), so that a worker can look up and score one
    batch while the previous one is still being written. Events whose id was in that batch are
    `in_flight`: the lookup could not tell whether they are stored, so `write_events` looks again."""

    new: list[TraceEvent] = field(default_factory=list)
    replayed: list[TraceEvent] = field(default_factory=list)  # trace row stored before a crash
    scores: list[ScoreRow] = field(default_factory=list)  # of the new, and those the replayed lack
    in_flight: list[TraceEvent] = field(default_factory=list)


def plan_traces(store: Store, traces: Sequence[TraceEvent], score: Any,
                in_flight: frozenset[uuid.UUID] | set[uuid.UUID] = frozenset()) -> TracePlan:
    """Look up which of these events the store holds and score the rest (`score(events) ->
    list[ScoreRow]`). Scored before their rows are written, so a detector that reads history
    (anomaly) never sees the batch it is judging. `in_flight`: ids another write may be storing
    right now. Raises StoreError; writes nothing."""
    unique = list({e.event_id: e for e in traces}.values())  # copies inside the batch dropped
    waiting = [e for e in unique if e.event_id in in_flight]
    if waiting:
        unique = [e for e in unique if e.event_id not in in_flight]
    stored = existing_event_ids(store, "traces", unique)
    new = [e for e in unique if e.event_id not in stored]
    replayed = [e for e in unique if e.event_id in stored]
    scores = score(new)
    if replayed:
        # Stored before a crash that may have come before their scores were.
        have = _existing_score_keys(store, replayed)
        scores += [r for r in score(replayed) if (r.event_id, r.detector, r.target) not in have]
    return TracePlan(new, replayed, scores, waiting)


def write_events(
    store: Store,
    plan: TracePlan,
    *,
    feedback: Sequence[Feedback],
    score: Any,
    now: datetime,
    spans: Sequence[SpanEvent] = (),
) -> StoredBatch:
    """Write a planned batch idempotently: trace rows, then score rows, then feedback and spans.
    Raises StoreError/StoreUnavailable (StoreDataError when a row's data is at fault). After a
    failure, plan again before calling it again: the failed attempt may have stored some rows."""
    if plan.in_flight:  # the write before this one has finished now: look again
        again = plan_traces(store, plan.in_flight, score)
        plan = TracePlan(plan.new + again.new, plan.replayed + again.replayed, plan.scores + again.scores)
    store.insert("traces", [e.row(now) for e in plan.new])
    store.insert("scores_by_event", _score_rows(plan.scores, plan.new + plan.replayed, now))

    unique_feedback = list({f.event_id: f for f in feedback}.values())
    seen_feedback = existing_event_ids(store, "feedback", unique_feedback)
    new_feedback = [f for f in unique_feedback if f.event_id not in seen_feedback]
    store.insert("feedback", [f.row(now) for f in new_feedback])

    unique_spans = list({s.event_id: s for s in spans}.values())
    seen_spans = existing_event_ids(store, "spans", unique_spans)
    new_spans = [s for s in unique_spans if s.event_id not in seen_spans]
    store.insert("spans", [s.row(now) for s in new_spans])

    # Copies of a trace inside the batch are the caller's to count: plan_traces dropped them.
    duplicates = len(plan.replayed) + len(feedback) - len(new_feedback) + len(spans) - len(new_spans)
    return StoredBatch(
        traces=len(plan.new), scores=len(plan.scores), feedback=len(new_feedback), duplicates=duplicates,
        spans=len(new_spans),
    )


def store_events(
    store: Store,
    *,
    traces: Sequence[TraceEvent],
    feedback: Sequence[Feedback],
    score: Any,
    now: datetime,
    spans: Sequence[SpanEvent] = (),
) -> StoredBatch:
    """Look up, score and write one parsed batch: `plan_traces`, then `write_events`. Safe to call
    again after a failure: it looks up again."""
    stored = write_events(store, plan_traces(store, traces, score), feedback=feedback, score=score, now=now,
                          spans=spans)
    return replace(stored, duplicates=stored.duplicates + trace_copies(traces))


def trace_copies(traces: Sequence[TraceEvent]) -> int:
    """How many of these events repeat an earlier one's event_id (duplicates inside a batch)."""
    return len(traces) - len({e.event_id for e in traces})


# Score rows can have extra copies where the trace row has none: the new owner finds the
# zombie's trace rows, takes the events for replays whose scores are missing, and writes them
# just before the zombie writes its own.
_COPIES = (
    "SELECT event_id, '', '', count() AS copies FROM {db}.traces {by_key} GROUP BY event_id HAVING copies > 1 "
    "UNION ALL "
    "SELECT event_id, detector, target, count() AS copies FROM {db}.scores {by_key} "
    "GROUP BY event_id, detector, target HAVING copies > 1"
)
_ONE_COPY = "WHERE app = {app:String} AND timestamp = {ts:DateTime64(3, 'UTC')} AND event_id = {id:UUID}"
# Each correction is what the rollup's materialized view added for one stored copy, negated:
# the expressions are those of trace_stats_mv (004_console.sql) and score_counts_mv
# (003_alerts.sql); tests/ingest/test_rollup_repair.py fails if the two drift apart.
_TRACE_STATS_CORRECTION = (
    "INSERT INTO {db}.trace_stats SELECT toStartOfMinute(timestamp), app, environment, {{release:String}}, model, "
    "-1, -toInt64(error != ''), -toInt64(ifNull(input_tokens, 0)), -toInt64(ifNull(output_tokens, 0)), "
    "-ifNull(cost_usd, 0), if(latency_ms IS NULL, CAST(map(), 'Map(UInt16, Int64)'), "
    "map(toUInt16(least(65535, ceil(log(greatest(0, assumeNotNull(latency_ms)) + 1) / log(1.05)))), toInt64(-1))) "
    "FROM {db}.traces {where} LIMIT 1"
)
_SCORE_COUNTS_CORRECTION = (
    "INSERT INTO {db}.score_counts SELECT toStartOfInterval(timestamp, toIntervalSecond(10)), app, environment, "
    "release, model, detector, target, label, -1 FROM {db}.scores {where} "
    "AND (detector, target) IN {{pairs:Array(Tuple(String, String))}} LIMIT 1 BY detector, target"
)


def repair_rollups(store: Store, events: Sequence[TraceEvent]) -> int:
    """Take every extra copy of these events (and of their score rows) back out of the rollups.
    Returns how many extra copies of events it found (an event written twice counts 1); 0, at the
    cost of one lookup, when nothing raced."""
    if not events:
        return 0
    db = store.database
    rows = store.query(_COPIES.format(db=db, by_key=_BY_KEY), _key_params(events))
    if not rows:
        return 0
    by_id = {e.event_id: e for e in events}
    trace_copies: dict[uuid.UUID, int] = {}
    score_copies: dict[uuid.UUID, dict[tuple[str, str], int]] = {}
    for event_id, detector, target, copies in rows:
        if detector:
            score_copies.setdefault(event_id, {})[(detector, target)] = copies
        else:
            trace_copies[event_id] = copies
    for event_id, copies in trace_copies.items():
        for copy in range(2, copies + 1):
            _correct_trace_stats(store, by_id[event_id], copy)
    for event_id, pairs in score_copies.items():
        for copy in range(2, max(pairs.values()) + 1):
            _correct_score_counts(store, by_id[event_id], sorted(p for p, n in pairs.items() if n >= copy), copy)
    extra = {event_id: max([trace_copies.get(event_id, 1), *score_copies.get(event_id, {}).values()]) - 1
             for event_id in trace_copies.keys() | score_copies.keys()}
    log.warning("took %d extra copies of %d events back out of the rollups (two workers raced)",
                sum(extra.values()), len(extra))
    return sum(extra.values())


def _one_copy(event: TraceEvent) -> dict[str, Any]:
    return {"app": event.app, "ts": event.timestamp, "id": event.event_id}


def _correct_trace_stats(store: Store, event: TraceEvent, copy: int) -> None:
    store.command(
        _TRACE_STATS_CORRECTION.format(db=store.database, where=_ONE_COPY),
        {**_one_copy(event), "release": event.release},
        settings={"insert_deduplication_token": f"trace_stats/{event.event_id}/{copy}"},
    )


def _correct_score_counts(store: Store, event: TraceEvent, pairs: list[tuple[str, str]], copy: int) -> None:
    # The token names the (detector, target) pairs too, so only a worker that saw the same
    # copies writes the same correction, which ClickHouse then drops.
    digest = hashlib.blake2b(repr(pairs).encode(), digest_size=8).hexdigest()
    store.command(
        _SCORE_COUNTS_CORRECTION.format(db=store.database, where=_ONE_COPY),
        {**_one_copy(event), "pairs": pairs},
        settings={"insert_deduplication_token": f"score_counts/{event.event_id}/{copy}/{digest}"},
    )


def new_rejections(
    store: Store, rejections: Sequence[tuple[RawMessage, Rejection]], now: datetime
) -> list[tuple[bytes, RawMessage, Rejection]]:
    """The rejections the store has no row for yet, with their keys, each once."""
    keyed = {rejection_id(m): (m, r) for m, r in rejections}
    seen = existing_rejections(store, {key: m for key, (m, _) in keyed.items()}, now)
    return [(key, m, r) for key, (m, r) in keyed.items() if key not in seen]


def store_rejections(store: Store, rejections: Sequence[tuple[bytes, RawMessage, Rejection]], now: datetime) -> None:
    store.insert("rejected", [_rejected_row(key, m, r, now) for key, m, r in rejections])


_DETAILS_JSON = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY  # what detectors put there; 10x json.dumps


def _score_rows(scores: Sequence[ScoreRow], events: Sequence[TraceEvent], now: datetime) -> list[dict[str, Any]]:
    """The llmwatch.scores_by_event rows: one per event, its columns once and a tuple per score
    (its view unrolls them into llmwatch.scores; schemas/clickhouse/010_scores_by_event.sql)."""
    by_event: dict[uuid.UUID, list[tuple[str, str, str, float | None, str, str]]] = {}
    for score in scores:
        details = orjson.dumps(score.details, option=_DETAILS_JSON).decode() if score.details else ""
        by_event.setdefault(score.event_id, []).append(
            (score.detector, score.detector_version, score.target, score.score, score.label, details))
    of_id = {e.event_id: e for e in events}
    rows = []
    for event_id, event_scores in by_event.items():
        event = of_id[event_id]
        rows.append({
            "event_id": event_id,
            "app": event.app,
            "timestamp": event.timestamp,
            "environment": event.environment,
            "release": event.release,
            "model": event.model,
            "scored_at": now,
            "scores": event_scores,
        })
    return rows


# Rejected payloads are kept for diagnosis, not as an archive of arbitrary blobs.
MAX_STORED_RAW_BYTES = 64 * 1024


def _rejected_row(key: bytes, message: RawMessage, rejection: Rejection, now: datetime) -> dict[str, Any]:
    return {
        "rejection_id": key,
        "received_at": now,
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "reason": rejection.reason,
        "detail": rejection.detail,
        "raw": message.value[:MAX_STORED_RAW_BYTES],
        "raw_bytes": len(message.value),
    }
