"""The stream processor: a faust app that scores llm.traces in batches and stores the results.

Per batch (size N, or whatever arrived within T seconds):
parse and validate → score with every detector → insert (idempotently, ingest/pipeline/sink.py) → produce
the rejections' DLQ records and wait for them → insert their llmwatch.rejected rows → only then ack.

No single event can stop the pipeline: an exception while parsing, redacting, scoring or encoding
one event rejects that event alone (reason `internal`, the exception type in the detail), and a
store error that blames the data (StoreDataError) is narrowed down to the rows at fault by
bisecting the batch. Only an unreachable store or broker holds a batch back.

faust's consumer fetches, keeps the offsets and commits; the traces reach the batch loop as
fetched batches (ingest/pipeline/fetch.py), and each message is acked only after its batch is
stored. A store outage is retried with backoff; when it outlasts `store_retry_max_s` the process
exits without acking, so its supervisor restarts it from the committed offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, NoReturn

from llmwatch.core.chunks import chunked, split_by_size
from llmwatch.core.errors import StoreDataError, StoreError
from llmwatch.core.events import Feedback, Parsed, Rejection, SpanEvent, TraceEvent, parse
from llmwatch.core.processes import tune_garbage_collector
from llmwatch.core.settings import Settings
from llmwatch.core.stages import StageClock, clock_garbage_collection
from llmwatch.detectors.adapters import refresh_adapters
from llmwatch.detectors.base import Detector, ScoreRow
from llmwatch.detectors.pii import redact_bytes, redact_event, redact_events, redact_span, redact_text
from llmwatch.ingest.pipeline.pricing import PriceTable
from llmwatch.ingest.pipeline.scoring import (
    SCORING_CHUNK,
    SCORING_PROCESS_STAGE,
    ScoringBatch,
    ScoringProcess,
    offloadable,
    score_isolated,
)
from llmwatch.ingest.pipeline.sink import (
    MAX_STORED_RAW_BYTES,
    RawMessage,
    StoredBatch,
    TracePlan,
    new_rejections,
    plan_traces,
    repair_rollups,
    store_rejections,
    trace_copies,
    write_events,
)
from llmwatch.ingest.pipeline.stages import TimedStore
from llmwatch.storage.clickhouse import Store

log = logging.getLogger(__name__)

__all__ = ["BatchHandler", "PreparedBatch", "build_app", "run_worker"]

# Exit status that tells the supervisor "the store stayed down; restart me".
EXIT_STORE_DOWN = 75
DLQ_TEXT_LIMIT = 1000
HEARTBEAT_INTERVAL_S = 5.0
# Retry waits grow 0.5, 1, 2, 4 s and stop growing here, so a store that comes back is used
# again within this many seconds.
STORE_RETRY_CAP_S = 4.0
# A previous owner's insert can land up to store_retry_max_s (its retries) plus one request's
# timeout after it lost the partition; the rollup check covers that long after an assignment.
_IN_FLIGHT_MARGIN_S = 120.0


class BatchHandler:
    """Everything a batch goes through, without faust: testable with a real store and broker."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        detectors: Sequence[Detector],
        dlq_producer: Any,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        scoring: ScoringProcess | None = None,
    ) -> None:
        self.settings = settings
        # Holds copies of some of `detectors` (ingest/pipeline/scoring.py); these stay the truth.
        self.scoring = scoring
        # Where the time goes, per stage (reported with the heartbeat; bench/pipeline.py).
        self.clock_stages = StageClock()
        self.store = TimedStore(store, self.clock_stages)
        # Scorers write score rows; embedders (the `embedding` detector) write vectors.
        self.detectors = [d for d in detectors if hasattr(d, "score")]
        for detector in self.detectors:
            if hasattr(detector, "stages"):  # work off the batch's thread (anomaly refits) is reported too
                detector.stages = self.clock_stages
        self.embedders = [d for d in detectors if hasattr(d, "embed")]
        self.embeddings = (EmbeddingWriter(self.store, self.embedders, self.clock_stages) if self.embedders
                           else None)
        self.dlq = dlq_producer
        self.clock = clock
        self.sleep = sleep
        self.monotonic = monotonic
        self.limits = settings.event_limits
        self.pii = settings.pii_policy
        self.prices = PriceTable.load(settings.price_table or None)
        # When this worker got each partition (topic, partition); unknown ones count from now.
        self.created = monotonic()
        self.owned_since: dict[tuple[str, int], float] = {}
        self.totals = {"traces": 0, "spans": 0, "scores": 0, "feedback": 0, "rejected": 0, "duplicates": 0}

    def score(self, events: Sequence[TraceEvent], batch: ScoringBatch | None = None) -> list[ScoreRow]:
        """Every detector's rows, in the order of the detectors. The scoring process, when there
        is one, scores its detectors while this thread scores the others; `batch`: what it was
        already sent (prepare sends a batch while parsing it)."""
        helper = self._helper()
        if helper is None:
            return [row for detector in self.detectors for row in self._score_here(detector, events)]
        if batch is None:
            with helper.batch(self.detectors) as batch:
                batch.send(events)
                return self._score_with(batch, events)
        return self._score_with(batch, events)

    def _helper(self) -> ScoringProcess | None:
        return self.scoring if self.scoring is not None and self.scoring.usable else None

    def _score_with(self, batch: ScoringBatch, events: Sequence[TraceEvent]) -> list[ScoreRow]:
        rows = {d.name: self._score_here(d, events) for d in self.detectors if d.name not in batch.names}
        batch.collect()
        for name, (cpu_s, wall_s) in batch.take_times().items():  # the helper's CPU: a stage of its own name
            self.clock_stages.add(f"detector {name} {SCORING_PROCESS_STAGE}", cpu_s, wall_s)
        for detector in self.detectors:
            if detector.name in batch.names:
                found, missing = batch.rows(detector.name, events)
                rows[detector.name] = found + (self._score_here(detector, missing) if missing else [])
        return [row for detector in self.detectors for row in rows[detector.name]]

    def _score_here(self, detector: Detector, events: Sequence[TraceEvent]) -> list[ScoreRow]:
        with self.clock_stages(f"detector {detector.name}"):
            return score_isolated(detector, events)

    def close(self) -> None:
        """Stop the scoring process (the worker's exit stops it too: its pipe closes)."""
        if self.scoring is not None:
            self.scoring.stop()

    def _redacted(self, message: RawMessage, parsed: Parsed) -> tuple[RawMessage, Parsed]:
        """The message with PII handled per policy, before anything is stored or logged."""
        policy = self.pii
        if isinstance(parsed, TraceEvent):
            return message, redact_event(parsed, policy)
        if isinstance(parsed, SpanEvent):
            return message, redact_span(parsed, policy)
        if isinstance(parsed, Feedback):
            return message, replace(parsed, comment=redact_text(parsed.comment, policy.input, policy.key)[0])
        # Unparsed bytes have no fields: the strictest policy of any field applies. A message over
        # the size limit keeps its first MAX_STORED_RAW_BYTES only, in the DLQ too: it could never
        # be replayed, and redacting megabytes of an attacker's bytes would stall the batch.
        strictest = policy.strictest
        raw = message.value[:MAX_STORED_RAW_BYTES] if parsed.reason == "too_large" else message.value
        value = redact_bytes(raw, strictest, policy.key)
        detail = redact_text(parsed.detail, strictest, policy.key)[0]
        return replace(message, value=value), replace(parsed, detail=detail, raw=value)

    def _prepared(self, messages: Sequence[RawMessage], now: datetime,
                  clock: StageClock) -> list[tuple[RawMessage, Parsed]]:
        """Parse, redact and price a batch, each step over the whole batch. Never raises:
        whatever goes wrong with one message rejects that message alone."""
        with clock("parse"):
            parsed = [self._isolated(m, partial(self._parse, m, now)) for m in messages]
        with clock("pii"):
            parsed = self._redacted_batch(parsed)
        with clock("pricing"):
            return [self._isolated(m, partial(self._priced, m, p)) if isinstance(p, TraceEvent) else (m, p)
                    for m, p in parsed]

    def _parse(self, message: RawMessage, now: datetime) -> tuple[RawMessage, Parsed]:
        return message, parse(message.value, self.limits, now, arrived=message.arrived)

    def _priced(self, message: RawMessage, event: TraceEvent) -> tuple[RawMessage, Parsed]:
        return message, self.prices.priced(event)  # cost_usd from the price table when the app sent none

    def _redacted_batch(self, parsed: list[tuple[RawMessage, Parsed]]) -> list[tuple[RawMessage, Parsed]]:
        """Every message with PII handled. Trace events are redacted together (each pattern
        scans the batch once); if that fails, one at a time, so the failure is one event's."""
        traces = [(i, p) for i, (_, p) in enumerate(parsed) if isinstance(p, TraceEvent)]
        done: set[int] = set()
        try:
            redacted = redact_events([event for _, event in traces], self.pii)
            for (i, _), event in zip(traces, redacted, strict=True):
                parsed[i] = (parsed[i][0], event)
            done = {i for i, _ in traces}
        except Exception:
            log.exception("redacting a batch of %d failed; redacting one event at a time", len(traces))
        return [item if i in done else self._isolated(item[0], partial(self._redacted, *item))
                for i, item in enumerate(parsed)]

    def _isolated(self, message: RawMessage,
                  step: Callable[[], tuple[RawMessage, Parsed]]) -> tuple[RawMessage, Parsed]:
        """`step()` for this message, or the message rejected (`internal`) if it raises."""
        try:
            return step()
        except Exception as exc:
            log.exception("parsing message %s/%d/%d failed", *_position(message))
            return self._internal(message, exc, "parsing")

    def _internal(self, message: RawMessage, exc: Exception, stage: str) -> tuple[RawMessage, Rejection]:
        """A rejection with reason `internal`: the message broke llmwatch at `stage`."""
        detail = f"{stage} failed: {type(exc).__name__}: {str(exc)[:DLQ_TEXT_LIMIT]}"
        try:
            redacted, rejection = self._redacted(message, Rejection("internal", detail, message.value))
        except Exception:  # redaction itself failed: keep none of the bytes rather than leak PII
            log.exception("redacting message %s/%d/%d failed", *_position(message))
            return replace(message, value=b""), Rejection("internal", f"{stage} failed: {type(exc).__name__}", b"")
        assert isinstance(rejection, Rejection)
        return redacted, rejection

    def partitions_assigned(self, partitions: Iterable[tuple[str, int]]) -> None:
        """This worker now owns these partitions (faust's on_partitions_assigned)."""
        now = self.monotonic()
        for partition in partitions:
            self.owned_since[partition] = now

    def _may_have_raced(self, messages: Sequence[RawMessage], started: float) -> bool:
        """Could another worker have written this batch's events too? Only around a rebalance:
        when this worker got a partition recently (the previous owner's insert may still be in
        flight, retried for up to store_retry_max_s), or when this batch took longer than the
        consumer session (this worker may have lost the partition meanwhile). Outside those,
        the rollup check (one lookup per batch: +19 % on a 500-event batch, measured) is skipped."""
        now = self.monotonic()
        if now - started > self.settings.kafka_session_timeout_s:
            return True
        horizon = self.settings.store_retry_max_s + _IN_FLIGHT_MARGIN_S
        return any(now - self.owned_since.get((m.topic, m.partition), self.created) < horizon for m in messages)

    def handle(self, messages: Sequence[RawMessage]) -> StoredBatch:
        """Process one batch to completion. Returns when everything is stored and every DLQ
        record is acknowledged by the broker; raises StoreError when the store (or the broker,
        for DLQ records) stays down."""
        return self.write(self.prepare(messages))

    def prepare(self, messages: Sequence[RawMessage],
                in_flight: frozenset[uuid.UUID] = frozenset()) -> PreparedBatch:
        """Parse, redact, price, look up and score a batch; writes nothing. `in_flight`: the event
        ids of a batch that may be being written meanwhile (`write` looks those up again).
        Raises StoreError when the store stays down."""
        helper = self._helper()
        exchange = helper.batch(self.detectors) if helper else contextlib.nullcontext()
        with self.clock_stages("batch"), exchange as scoring:
            started = self.monotonic()
            now = self.clock()
            events: list[tuple[RawMessage, TraceEvent | Feedback | SpanEvent]] = []
            rejections: list[tuple[RawMessage, Rejection]] = []
            # With a scoring process, each chunk goes to it once parsed: it scores while this
            # thread parses the next (the rows are taken for the events the lookup finds new).
            chunks = StageClock()  # parse, pii and pricing of the chunks, clocked as one call each
            for chunk in chunked(messages, SCORING_CHUNK if scoring else len(messages)):
                parsed_chunk = self._prepared(chunk, now, chunks)
                for message, parsed in parsed_chunk:
                    if isinstance(parsed, Rejection):
                        rejections.append((message, parsed))
                    else:
                        events.append((message, parsed))
                if scoring:
                    scoring.send([p for _, p in parsed_chunk if isinstance(p, TraceEvent)])
            self.clock_stages.merge(chunks)
            traces = [e for _, e in events if isinstance(e, TraceEvent)]
            score = partial(self.score, batch=scoring)
            plan = self._with_retry(lambda: self._plan(traces, in_flight, score)) if traces else TracePlan()
            return PreparedBatch(messages, now, started, events, rejections, plan)

    def _plan(self, traces: list[TraceEvent], in_flight: frozenset[uuid.UUID],
              score: Callable[[Sequence[TraceEvent]], list[ScoreRow]]) -> TracePlan | None:
        try:
            return plan_traces(self.store, traces, score, in_flight)
        except StoreDataError:
            log.warning("looking up a batch of %d failed on its data; splitting it while writing", len(traces))
            return None

    def write(self, batch: PreparedBatch) -> StoredBatch:
        """Store a prepared batch, then its rejections, in that order. Batches must be written one
        at a time, in the order they were prepared."""
        with self.clock_stages("batch"):
            return self._write(batch)

    def _write(self, batch: PreparedBatch) -> StoredBatch:
        events, now = batch.events, batch.now
        # Only the first attempt writes the plan: one that failed may have stored some of its rows,
        # so a retry looks up (and scores) again.
        plans = iter([batch.plan])
        stored = self._with_retry(lambda: self._store_isolated(events, next(plans, None), now))
        traces = [e for _, e in events if isinstance(e, TraceEvent)]
        stored = replace(stored, duplicates=stored.duplicates + trace_copies(traces))
        if traces and self._may_have_raced(batch.messages, batch.started):
            stored = replace(stored, repaired=self._with_retry(lambda: repair_rollups(self.store, traces)))
        rejections = batch.rejections + stored.refused
        stored = replace(stored, rejected=self._with_retry(lambda: self._reject(rejections, now)))
        if self.embeddings is not None:
            self.embeddings.submit(traces)
        for key in self.totals:
            self.totals[key] += getattr(stored, key)
        return stored

    def _store_isolated(self, events: list[tuple[RawMessage, TraceEvent | Feedback | SpanEvent]],
                        plan: TracePlan | None, now: datetime) -> StoredBatch:
        """Store these events. When the store refuses the data, or encoding it fails, split the
        batch in halves until the events at fault stand alone, and return those as refused.
        `plan`: these events' traces looked up and scored; None to do that here."""
        if not events:
            return StoredBatch()
        try:
            if plan is None:
                plan = plan_traces(self.store, [e for _, e in events if isinstance(e, TraceEvent)], self.score)
            return write_events(
                self.store,
                plan,
                feedback=[e for _, e in events if isinstance(e, Feedback)],
                spans=[e for _, e in events if isinstance(e, SpanEvent)],
                score=self.score,
                now=now,
            )
        except StoreError as exc:
            if not isinstance(exc, StoreDataError):
                raise  # the store's trouble, not the data's: retried as an outage
            error: Exception = exc
        except Exception as exc:  # encoding a row failed: a bug, but one event's
            error = exc
        if len(events) == 1:
            message, event = events[0]
            log.error("event %s refused: %s: %s", event.event_id, type(error).__name__, error)
            return StoredBatch(refused=[self._internal(message, error, "storing")])
        middle = len(events) // 2
        # The halves look up and score again: a failed write may have stored some rows.
        return self._store_isolated(events[:middle], None, now) + self._store_isolated(events[middle:], None, now)

    def _reject(self, rejections: list[tuple[RawMessage, Rejection]], now: datetime) -> int:
        """DLQ records first, then `rejected` rows: a crash in between replays both, so a
        rejection is never recorded without its DLQ record. Returns the rows written."""
        if not rejections:
            return 0
        fresh = new_rejections(self.store, rejections, now)
        if fresh:
            with self.clock_stages("dlq"):
                self._send_to_dlq([(m, r) for _, m, r in fresh])
            self._store_rejections_isolated(fresh, now)
        return len(fresh)

    def _store_rejections_isolated(self, fresh: list[tuple[bytes, RawMessage, Rejection]], now: datetime) -> None:
        try:
            store_rejections(self.store, fresh, now)
        except StoreDataError as exc:
            if len(fresh) == 1:  # its DLQ record is the copy that remains
                log.error("rejection of %s/%d/%d not stored: %s", *_position(fresh[0][1]), exc)
                return
            middle = len(fresh) // 2
            self._store_rejections_isolated(fresh[:middle], now)
            self._store_rejections_isolated(fresh[middle:], now)

    def _with_retry(self, write: Callable[[], Any]) -> Any:
        """Run `write` until it succeeds, backing off while the store is unreachable; give up
        (re-raise) after store_retry_max_s."""
        started = self.monotonic()
        attempt = 0
        while True:
            try:
                return write()
            except StoreError as exc:
                waited = self.monotonic() - started
                if waited >= self.settings.store_retry_max_s:
                    raise
                delay = min(STORE_RETRY_CAP_S, 0.5 * 2**attempt) * random.uniform(0.8, 1.0)
                attempt += 1
                log.warning(
                    "store write failed (attempt %d, down %.0fs), retrying in %.1fs: %s",
                    attempt,
                    waited,
                    delay,
                    exc,
                )
                self.sleep(delay)

    def _send_to_dlq(self, rejections: list[tuple[RawMessage, Rejection]]) -> None:
        failures: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        for message, rejection in rejections:
            self.dlq.produce(
                self.settings.dlq_topic,
                value=message.value,
                headers=[
                    ("llmwatch.reason", rejection.reason.encode()),
                    ("llmwatch.detail", rejection.detail[:DLQ_TEXT_LIMIT].encode()),
                    ("llmwatch.source", "{}/{}/{}".format(*_position(message)).encode()),
                ],
                on_delivery=on_delivery,
            )
            self.dlq.poll(0)
        remaining = self.dlq.flush(30)
        if remaining or failures:
            msg = f"DLQ delivery failed ({remaining} pending): {failures[:3]}"
            raise StoreError(msg)


@dataclass(frozen=True)
class PreparedBatch:
    """A batch parsed, redacted, looked up and scored (`BatchHandler.prepare`): what `write` stores."""

    messages: Sequence[RawMessage]
    now: datetime
    started: float  # monotonic
    events: list[tuple[RawMessage, TraceEvent | Feedback | SpanEvent]]
    rejections: list[tuple[RawMessage, Rejection]]
    plan: TracePlan | None  # None: the lookup failed on the data; the write splits the batch to find out why

    @property
    def trace_ids(self) -> frozenset[uuid.UUID]:
        return frozenset(e.event_id for _, e in self.events if isinstance(e, TraceEvent))


def _position(message: RawMessage) -> tuple[str, int, int]:
    return message.topic, message.partition, message.offset


class EmbeddingWriter:
    """Embeds stored events and writes llmwatch.embeddings on a background thread, off the
    batch's critical path: the model runs (and releases the GIL) on one core while the worker
    parses and scores the next batch on the other.

    Embeddings are a sample for drift checks, not a record: when the thread falls behind, whole
    batches are skipped and counted (`skipped_batches`), never the events or their scores."""

    def __init__(self, store: Store, embedders: Sequence[Any], clock: StageClock | None = None,
                 max_pending: int = 4) -> None:
        self.store = store
        self.clock = clock or StageClock()
        self.embedders = list(embedders)
        self.pending: queue.Queue[list[TraceEvent] | None] = queue.Queue(maxsize=max_pending)
        self.written = 0  # vectors stored
        self.skipped_batches = 0
        self.thread = threading.Thread(target=self._run, name="llmwatch-embeddings", daemon=True)
        self.thread.start()

    def submit(self, events: list[TraceEvent]) -> None:
        if not events:
            return
        try:
            self.pending.put_nowait(events)
        except queue.Full:
            self.skipped_batches += 1

    def drain(self, timeout_s: float = 60.0) -> None:
        """Wait until everything submitted so far is written (tests, benchmarks, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self.pending.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def _run(self) -> None:
        while True:
            events = self.pending.get()
            try:
                if events is None:
                    return
                with self.clock("embeddings"):
                    rows = [row for embedder in self.embedders for row in embedder.embed(events)]
                self.store.insert("embeddings", rows)
                self.written += len(rows)
            except Exception as exc:  # a sample lost, never the worker
                self.skipped_batches += 1
                log.warning("embeddings of %d events not stored: %s", len(events or []), exc)
            finally:
                self.pending.task_done()

    def close(self) -> None:
        self.drain()
        self.pending.put(None)
        self.thread.join(timeout=10)


def _message_bytes(message: Any) -> int:
    return len(message.value or b"")


def _record_time(seconds: float | None) -> datetime | None:
    try:
        return datetime.fromtimestamp(seconds, tz=UTC) if seconds else None
    except (OverflowError, OSError, ValueError):  # a producer may set any timestamp
        return None


def build_app(settings: Settings, handler: BatchHandler) -> Any:
    """The faust app whose batch loop runs `handler` on the traces."""
    from llmwatch.ingest.pipeline.fetch import BatchDrainApp

    app = BatchDrainApp(
        settings.consumer_group,
        broker=f"kafka://{settings.bootstrap_servers}",
        store="memory://",
        # faust makes a table folder even with memory tables; keep it out of the cwd.
        datadir=str(settings.data_dir / "faust"),
        web_enabled=False,
        fetch_wait_s=settings.kafka_fetch_wait_s,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=min(1.0, settings.kafka_session_timeout_s / 4),
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.partitions,
        topic_allow_declare=False,
        stream_wait_empty=False,
        # A batch may wait for the store this long before it is acked; faust's default would warn.
        stream_processing_timeout=max(300.0, settings.store_retry_max_s + 60),
    )
    topic = app.topic(settings.traces_topic)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # mode types receivers narrowly
    async def on_assigned(_app: Any, *args: Any, signal: Any, **_: Any) -> None:
        (assigned,) = args  # the set of TopicPartitions this worker got
        handler.partitions_assigned((tp.topic, tp.partition) for tp in assigned)

    def exit_unstored(messages: list[RawMessage]) -> NoReturn:
        # Nothing of this batch is acked; stop so the supervisor restarts us from the committed
        # offsets (re-raising would let faust restart the agent and move on).
        log.critical("batch of %d could not be stored; exiting", len(messages), exc_info=True)
        logging.shutdown()
        os._exit(EXIT_STORE_DOWN)

    async def prepare(messages: list[RawMessage], in_flight: frozenset[uuid.UUID]) -> PreparedBatch:
        try:
            return await asyncio.to_thread(handler.prepare, messages, in_flight)
        except Exception:
            exit_unstored(messages)

    async def write_and_ack(taken: list[Any], preparing: asyncio.Future[PreparedBatch],
                            previous: asyncio.Future[None] | None) -> None:
        batch = await preparing
        if previous is not None:
            await previous  # writes and acks stay in order
        try:
            stored = await asyncio.to_thread(handler.write, batch)
        except Exception:
            exit_unstored(list(batch.messages))
        batches.ack(taken)
        log.debug("batch %d: %s", len(taken), stored)

    # The traces come a fetched batch at a time (fetch.MessageBatches), not one faust event each.
    batches = app.batches(topic, max_messages=max(4096, 2 * settings.batch_size),
                          max_bytes=settings.batch_max_bytes)

    @app.task
    async def score_traces() -> None:
        # Two batches in hand at once. While one is written (the store's work, a third of a
        # batch's time, which the worker used to only wait for), the next is parsed, looked up and
        # scored. Writes and acks stay one batch at a time, in order.
        # An idle worker hands a batch over whole and takes the next at once, so a batch's window
        # starts when its first message arrives: at low rates nothing waits for a preparation.
        # A busy one prepares the batch, and waits for the previous write, before it takes
        # another: two batches at most, and one write in flight.
        writing: asyncio.Future[None] | None = None
        preparing: asyncio.Future[PreparedBatch] | None = None

        async def hand_over(taken: list[Any]) -> None:
            nonlocal writing, preparing
            messages = [RawMessage(m.topic, m.partition, m.offset, m.value, _record_time(m.timestamp)) for m in taken]
            if writing is None or writing.done() or preparing is None:
                preparing = asyncio.ensure_future(prepare(messages, frozenset()))
            else:
                # The lookup cannot see the rows of the batch in hand: name its events.
                in_flight = (await preparing).trace_ids
                preparing = asyncio.ensure_future(prepare(messages, in_flight))
                await preparing
                await writing  # so the next batch's lookup has only this one's rows to miss
            writing = asyncio.ensure_future(write_and_ack(taken, preparing, writing))

        try:
            while True:
                taken = await batches.take(settings.batch_size, within=settings.batch_window_s)
                # Up to batch_size events, but a take of big ones is handled in parts: a batch is
                # held parsed (twice, while the next is prepared), so its bytes bound the memory.
                for part in split_by_size(taken, _message_bytes, settings.batch_max_bytes):
                    await hand_over(part)
        finally:
            if writing is not None and not writing.done():
                await asyncio.shield(writing)  # let a stopping worker finish (and ack) its batch

    @app.timer(interval=settings.model_refresh_s)
    async def refresh_models() -> None:
        # Review-trained models promoted since the last look: swapped in between batches.
        changed = await asyncio.to_thread(refresh_adapters, handler.store, handler.detectors)
        if changed:
            log.info("now scoring with review-trained %s", ", ".join(changed))

    worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    started_at = datetime.now(UTC)

    @app.timer(interval=HEARTBEAT_INTERVAL_S)
    async def heartbeat() -> None:
        stage_cpu, stage_wall, stage_calls = handler.clock_stages.totals()
        row = {
            "worker_id": worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": started_at,
            "seen_at": datetime.now(UTC),
            **{k: handler.totals[k] for k in ("traces", "scores", "rejected", "duplicates")},
            "process_cpu_s": time.process_time(),
            "stage_cpu_s": stage_cpu,
            "stage_wall_s": stage_wall,
            "stage_calls": stage_calls,
        }
        try:
            await asyncio.to_thread(handler.store.insert, "workers", [row])
        except StoreError as exc:
            log.warning("heartbeat not stored: %s", exc)
        log.debug("totals: %s", handler.totals)

    return app


def _one_torch_thread_on_cpu(detectors: Sequence[Detector]) -> None:
    """A model on the CPU gets one thread: torch would otherwise take every core, which the
    batches, the broker and the store need (bench/pipeline.py: with two, the embedding thread's
    CPU showed up as torch's threads beside faust's)."""
    if any(getattr(getattr(d, "encoder", None), "device", "cuda") == "cpu" for d in detectors):
        import torch

        torch.set_num_threads(1)


def run_worker(settings: Settings) -> None:
    """Run one worker (a consumer-group member) until interrupted."""
    import faust

    from llmwatch.detectors.registry import load_all
    from llmwatch.ingest.kafka import ensure_llmwatch_topics, producer
    from llmwatch.storage.clickhouse import connect
    from llmwatch.storage.migrate import migrate

    store = connect(settings)
    migrate(store, settings.retention_days)
    ensure_llmwatch_topics(settings)
    detectors = load_all(settings.detector_names, settings)
    refresh_adapters(store, detectors)
    _one_torch_thread_on_cpu(detectors)
    offloaded = [d.name for d in detectors if offloadable(d)] if settings.uses_scoring_process else []
    scoring = ScoringProcess(settings, offloaded) if offloaded else None
    handler = BatchHandler(settings, store, detectors, producer(settings.bootstrap_servers), scoring=scoring)
    app = build_app(settings, handler)
    worker = faust.Worker(app, loglevel=settings.log_level, override_logging=False)
    clock_garbage_collection(handler.clock_stages)
    tune_garbage_collector()
    worker.execute_from_commandline()
