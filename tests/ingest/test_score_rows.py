"""Score rows travel grouped by event (`scores_by_event`, unrolled into `scores` by its view):
what lands in `scores` must be exactly the rows a row-per-score insert would have written. Against
the real embedded store."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmwatch.core.events import TraceEvent
from llmwatch.detectors.base import ScoreRow
from llmwatch.ingest.pipeline.sink import store_events
from llmwatch.storage.clickhouse import ClickHouseStore

COLUMNS = ("event_id, app, timestamp, environment, release, model, detector, detector_version, target, score, "
           "label, details, scored_at")
NOW = datetime(2026, 12, 4, 12, 0, 0, 123456, tzinfo=UTC)

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
details = st.dictionaries(names, st.one_of(names, st.integers(-(2**53), 2**53), st.booleans()), max_size=3)
scores = st.one_of(st.none(), st.floats(0, 1), st.sampled_from([0.0, 1.0, 1e-30]))


@st.composite
def scored_events(draw: st.DrawFn) -> tuple[list[TraceEvent], list[ScoreRow]]:
    events = [
        TraceEvent(uuid.uuid4(), "t", NOW - timedelta(milliseconds=draw(st.integers(0, 10**7))), draw(names),
                   input="question", output="answer", environment=draw(names), prompt_id=draw(names),
                   prompt_version=draw(names), model=draw(names))
        for _ in range(draw(st.integers(1, 4)))
    ]
    # Any number of rows per event, in any order (detectors write theirs one detector at a time).
    rows = draw(st.lists(st.builds(ScoreRow, st.sampled_from([e.event_id for e in events]), names, names,
                                   st.sampled_from(["input", "output", "context", "event"]), scores, names, details),
                         max_size=12, unique_by=lambda r: (r.event_id, r.detector, r.target)))
    return events, rows


def expected(events: list[TraceEvent], rows: list[ScoreRow]) -> list[tuple]:
    """Each score as its own row of llmwatch.scores, as the store reads it back."""
    of = {e.event_id: e for e in events}

    def ms(t: datetime) -> datetime:  # DateTime64(3), read back as naive UTC
        return t.replace(microsecond=t.microsecond // 1000 * 1000, tzinfo=None)

    return sorted(
        (r.event_id, of[r.event_id].app, ms(of[r.event_id].timestamp), of[r.event_id].environment,
         of[r.event_id].release, of[r.event_id].model, r.detector, r.detector_version, r.target,
         None if r.score is None else float(np.float32(r.score)), r.label, r.details, ms(NOW))
        for r in rows
    )


def stored(store: ClickHouseStore, events: list[TraceEvent]) -> list[tuple]:
    got = store.query(f"SELECT {COLUMNS} FROM {store.database}.scores WHERE event_id IN {{ids:Array(UUID)}}",
                      {"ids": [e.event_id for e in events]})
    return sorted((*r[:11], json.loads(r[11]) if r[11] else {}, r[12]) for r in got)


@given(batch=scored_events())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_grouped_score_rows_land_in_scores_as_one_row_each(
    embedded_store: ClickHouseStore, batch: tuple[list[TraceEvent], list[ScoreRow]]
) -> None:
    events, rows = batch
    result = store_events(embedded_store, traces=events, feedback=[], score=lambda evs: list(rows) if evs else [],
                          now=NOW)
    assert result.scores == len(rows)
    assert stored(embedded_store, events) == expected(events, rows)


def test_the_score_counts_rollup_counts_grouped_rows(embedded_store: ClickHouseStore) -> None:
    """The view's rows are inserts into `scores` like any other: its own view (score_counts_mv) sees them."""
    events = [TraceEvent(uuid.uuid4(), "t", NOW, "bot", input="q", output="a") for _ in range(3)]
    rows = [ScoreRow(e.event_id, "toxicity", "1", target, 0.9 if target == "output" else 0.1,
                     "toxic" if target == "output" else "ok") for e in events for target in ("input", "output")]
    store_events(embedded_store, traces=events, feedback=[], score=lambda evs: rows if evs else [], now=NOW)
    counted = embedded_store.query(f"SELECT target, label, sum(n) FROM {embedded_store.database}.score_counts "
                                   "WHERE app = 'bot' GROUP BY ALL ORDER BY ALL")
    assert counted == [("input", "ok", 3), ("output", "toxic", 3)]
