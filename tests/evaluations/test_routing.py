"""Review routing on the real embedded store: uncertain scores, disagreements between a judge and a
detector, the uniform sample, the per-app daily budget, and a mark that neither skips nor repeats."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from llmwatch.alerts.evaluations import parse_evaluations
from llmwatch.alerts.routing import route_reviews
from llmwatch.core.events import TraceEvent
from llmwatch.detectors.base import ScoreRow
from llmwatch.ingest.pipeline.sink import store_events
from llmwatch.storage.clickhouse import ClickHouseStore

JUDGE = {"name": "polite", "endpoint": "http://127.0.0.1:9/v1", "model": "m", "rubric": "polite?", "compare_with": "toxicity"}


def evaluations(sample: float = 0.0, budget: int = 100) -> object:
    text = json.dumps({"judges": [JUDGE], "routing": {"sample": sample, "bands": {"toxicity": 0.1}, "daily_budget": budget}})
    parsed, errors = parse_evaluations(text)
    assert errors == []
    return parsed


def store_scored(store: ClickHouseStore, at: datetime, toxicity: list[float], judge: dict[int, float] | None = None,
                 app: str = "support-bot", text: str = "") -> list[str]:
    """Events scored `toxicity[i]` on their output, some also by the judge; scored_at = `at`."""
    events = [TraceEvent(uuid.uuid4(), uuid.uuid4().hex, at - timedelta(seconds=30), app, input="q", output=text or f"a{i}",
                         prompt_id="answer", prompt_version="1") for i in range(len(toxicity))]
    score = {e.event_id: s for e, s in zip(events, toxicity)}

    def scorer(batch: list[TraceEvent]) -> list[ScoreRow]:
        return [ScoreRow(e.event_id, "toxicity", "t", "output", score[e.event_id], "toxic" if score[e.event_id] >= 0.5 else "ok")
                for e in batch]

    store_events(store, traces=events, feedback=[], score=scorer, now=at)
    for i, verdict in (judge or {}).items():
        e = events[i]
        store.insert("scores", [{"event_id": e.event_id, "app": app, "timestamp": e.timestamp, "environment": "",
                                 "release": "answer:1", "model": "", "detector": "judge:polite", "detector_version": "m",
                                 "target": "output", "score": verdict, "label": "fail" if verdict >= 0.5 else "pass",
                                 "details": "", "scored_at": at}])
    return [str(e.event_id) for e in events]


def queue(store: ClickHouseStore) -> dict[str, tuple[str, str]]:
    rows = store.query(f"SELECT toString(event_id), rule, reason FROM {store.database}.review_queue FINAL")
    return {e: (rule, reason) for e, rule, reason in rows}


def test_uncertain_and_disputed_events_are_queued_with_their_reason(embedded_store: ClickHouseStore) -> None:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    ids = store_scored(embedded_store, at, [0.05, 0.45, 0.58, 0.95, 0.02, 0.9], judge={4: 1.0, 5: 1.0})
    queued = route_reviews(embedded_store, evaluations(), interval_s=120, now=at + timedelta(seconds=10))
    got = queue(embedded_store)
    assert queued == 3 and set(got) == {ids[1], ids[2], ids[4]}
    assert got[ids[4]][0] == "route:disagreement"
    assert got[ids[4]][1] == "toxicity passes it (0.02), judge:polite flags it (1.00)"  # 5: both flag it: agreed
    assert got[ids[1]] == ("route:uncertain", "toxicity 0.45 within 0.1 of its threshold 0.5")
    # The mark moved: the same scores are not routed twice, new ones are.
    assert route_reviews(embedded_store, evaluations(), interval_s=120, now=at + timedelta(seconds=20)) == 0
    later = store_scored(embedded_store, at + timedelta(seconds=30), [0.52])
    assert route_reviews(embedded_store, evaluations(), interval_s=120, now=at + timedelta(seconds=40)) == 1
    assert queue(embedded_store)[later[0]][0] == "route:uncertain"


def test_the_uniform_sample_ignores_scores_and_the_budget_caps_each_app(embedded_store: ClickHouseStore) -> None:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    scores = [0.01] * 300 + [0.5] * 50
    store_scored(embedded_store, at, scores, app="support-bot")
    store_scored(embedded_store, at, [0.49] * 5, app="docs-bot")
    routed = route_reviews(embedded_store, evaluations(sample=0.1, budget=40), interval_s=120, now=at + timedelta(seconds=10))
    rows = embedded_store.query(
        f"SELECT app, rule, count() FROM {embedded_store.database}.review_queue FINAL GROUP BY app, rule ORDER BY app, rule")
    by = {(app, rule): n for app, rule, n in rows}
    assert sum(n for (app, _), n in by.items() if app == "support-bot") == 40  # the budget
    sampled = by[("support-bot", "route:sample")]
    assert 15 <= sampled <= 40  # ~35 of 350 by event id, before the uncertain ones
    assert by.get(("support-bot", "route:uncertain"), 0) == 40 - sampled
    assert sum(n for (app, _), n in by.items() if app == "docs-bot") == 5  # its own budget
    assert routed == 45
    # Spent for today: a later round adds nothing for support-bot.
    store_scored(embedded_store, at + timedelta(seconds=30), [0.5] * 5, app="support-bot")
    assert route_reviews(embedded_store, evaluations(sample=0.1, budget=40), interval_s=120, now=at + timedelta(seconds=40)) == 0


def test_the_same_text_is_routed_once_but_sampled_every_time(embedded_store: ClickHouseStore) -> None:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    store_scored(embedded_store, at, [0.45] * 30, text="Sigh. It is not complicated.")
    assert route_reviews(embedded_store, evaluations(), interval_s=120, now=at + timedelta(seconds=10)) == 1
    store_scored(embedded_store, at + timedelta(seconds=30), [0.45] * 5, text="Sigh. It is not complicated.")
    assert route_reviews(embedded_store, evaluations(), interval_s=120, now=at + timedelta(seconds=40)) == 0
    # The uniform sample stays uniform over events: copies of one text are each sampled.
    store_scored(embedded_store, at + timedelta(seconds=50), [0.01] * 200, text="Fine.")
    sampled = route_reviews(embedded_store, evaluations(sample=0.2), interval_s=120, now=at + timedelta(seconds=60))
    assert 15 <= sampled <= 70
