"""Per-session alert metrics, computed by the real store: the share of conversations with a turn in
the window that got negative feedback, a toxic output, or a failed call."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from llmwatch.alerts.metrics import metric_query
from llmwatch.alerts.rules import parse_rules
from llmwatch.storage.clickhouse import ClickHouseStore

NOW = datetime.now(UTC).replace(microsecond=0)


def turn(app: str, session: str, minutes_ago: float, *, error: str = "", release: str = "7") -> dict:
    at = NOW - timedelta(minutes=minutes_ago)
    return {"event_id": str(uuid.uuid4()), "trace_id": uuid.uuid4().hex, "timestamp": at, "received_at": at,
            "app": app, "prompt_id": "answer", "prompt_version": release, "model": "gpt-4o-mini", "input": "q",
            "output": "a", "session_id": session, "error": error}


def rule(metric: str, group_by: str = "app") -> object:
    rules, problems = parse_rules(f"rules:\n  - name: r\n    metric: {metric}\n    window: 1h\n    every: 1m\n"
                                  f"    critical: 0.5\n    group_by: {group_by}\n")
    assert not problems, problems
    return rules[0]


@pytest.fixture
def sessions(embedded_store: ClickHouseStore) -> ClickHouseStore:
    turns = [
        turn("bot", "s1", 5), turn("bot", "s1", 4),                # negative feedback on its 2nd turn
        turn("bot", "s2", 3), turn("bot", "s2", 2, error="500"),   # one failed call
        turn("bot", "s3", 10),                                     # a toxic output
        turn("bot", "s4", 1),                                      # nothing wrong
        turn("bot", "", 1),                                        # no session: not counted
        turn("bot", "old", 300),                                   # outside the window
        turn("rag", "r1", 5),
    ]
    embedded_store.insert("traces", turns)
    embedded_store.insert("feedback", [{"event_id": str(uuid.uuid4()), "trace_id": turns[1]["trace_id"], "app": "bot",
                                        "timestamp": NOW, "score": 0.0, "received_at": NOW},
                                       {"event_id": str(uuid.uuid4()), "trace_id": turns[8]["trace_id"], "app": "rag",
                                        "timestamp": NOW, "score": 1.0, "received_at": NOW}])
    embedded_store.insert("scores", [{"event_id": turns[4]["event_id"], "app": "bot", "timestamp": turns[4]["timestamp"],
                                      "detector": "toxicity", "target": "output", "score": 0.9, "label": "toxic",
                                      "scored_at": NOW}])
    return embedded_store


@pytest.mark.parametrize(("metric", "bot"), [("negative_feedback_session_rate", 0.25), ("toxic_session_rate", 0.25),
                                             ("failed_session_rate", 0.25)])
def test_session_rates(sessions: ClickHouseStore, metric: str, bot: float) -> None:
    sql, params = metric_query(rule(metric), NOW - timedelta(hours=1), NOW + timedelta(seconds=1), sessions.database)
    rows = {row[0]: row[1:] for row in sessions.query(sql, params)}
    assert rows == {"bot": (pytest.approx(bot), 4), "rag": (0.0, 1)}


def test_session_rates_group_by_release(sessions: ClickHouseStore) -> None:
    sql, params = metric_query(rule("failed_session_rate", "release"), NOW - timedelta(hours=1),
                               NOW + timedelta(seconds=1), sessions.database)
    assert sessions.query(sql, params) == [("answer:7@gpt-4o-mini", pytest.approx(0.2), 5)]
