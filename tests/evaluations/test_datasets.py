"""Datasets on the real embedded store: versions, the three sources, clear refusals, exports."""

from __future__ import annotations

import io
import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from llmwatch.alerts.datasets import (
    DatasetCase,
    add_cases,
    cases_from_events,
    cases_from_jsonl,
    cases_from_reviews,
    export,
    load_dataset,
)
from llmwatch.core.errors import ConfigError
from llmwatch.core.events import TraceEvent
from llmwatch.dashboards import reviews
from llmwatch.ingest.pipeline.sink import store_events
from llmwatch.storage.clickhouse import ClickHouseStore


def write(path: Path, *rows: object) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_a_bad_file_is_refused_with_its_line_and_what_is_wrong(tmp_path: Path) -> None:
    cases = [
        ({"id": "a"}, "bad.jsonl:1: `input` must be a non-empty string or a list of chat messages"),
        ("{not json", "bad.jsonl:1: not JSON"),
        ({"input": "q", "context": "one passage"}, "`context` must be a list of passages"),
        ({"input": "q", "context": [{"id": 1}]}, "each context passage is a string or {id, text}"),
        ({"input": "q", "labels": ["x"]}, "`labels` must be an object"),
        ({"input": "q", "reference": 3}, "`reference` must be a string"),
    ]
    for row, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            cases_from_jsonl(write(tmp_path / "bad.jsonl", row))
    with pytest.raises(ConfigError, match="no cases"):
        cases_from_jsonl(write(tmp_path / "empty.jsonl", ""))
    with pytest.raises(ConfigError, match="no such file"):
        cases_from_jsonl(tmp_path / "missing.jsonl")


def test_versions_grow_and_never_change(embedded_store: ClickHouseStore, tmp_path: Path) -> None:
    first = cases_from_jsonl(write(tmp_path / "a.jsonl",
                                   {"id": "1", "input": "How long are logs kept?", "context": [{"id": "d", "text": "90 days."}],
                                    "reference": "90 days", "labels": {"topic": "logs"}},
                                   {"input": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "Hi?"}]}))
    assert first[1].input == "Hi?" and first[0].context == ("90 days.",)
    assert add_cases(embedded_store, "gate", first, "ci") == (1, 2)
    assert add_cases(embedded_store, "gate", first, "ci") == (1, 2)  # nothing new: no version
    changed = [DatasetCase("1", "How long are audit logs kept?"), DatasetCase("3", "New?")]
    assert add_cases(embedded_store, "gate", changed, "ci") == (2, 3)
    assert {c.case_id: c.input for c in load_dataset(embedded_store, "gate", 1)[1]}["1"] == "How long are logs kept?"
    version, latest = load_dataset(embedded_store, "gate")
    assert version == 2 and {c.case_id: c.input for c in latest}["1"] == "How long are audit logs kept?"
    with pytest.raises(ConfigError, match="no dataset 'nope'"):
        load_dataset(embedded_store, "nope")
    with pytest.raises(ConfigError, match="letters, digits"):
        add_cases(embedded_store, "bad name; DROP", first, "ci")
    lines = export(latest, "jsonl").decode().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["id"]
    table = pq.read_table(io.BytesIO(export(load_dataset(embedded_store, "gate", 1)[1], "parquet")))
    assert table.num_rows == 2 and dict(table.to_pylist()[0]["labels"]) == {"topic": "logs"}


def test_cases_come_from_reviews_and_from_a_search(embedded_store: ClickHouseStore) -> None:
    now = datetime.now(UTC)
    events = [TraceEvent(uuid.uuid4(), uuid.uuid4().hex, now, app, input=f"question {i}", output=f"answer {i}",
                         context=["a passage"]) for i, app in enumerate(["docs-rag", "docs-rag", "support-bot"])]
    store_events(embedded_store, traces=events, feedback=[], score=lambda _e: [], now=now)
    ids = [str(e.event_id) for e in events]
    reviews.record(embedded_store, ids[0], "rui", "docs-rag", "", "hallucinated", "")
    reviews.record(embedded_store, ids[0], "rita", "docs-rag", "", "hallucinated", "")
    reviews.record(embedded_store, ids[1], "rui", "docs-rag", "", "fine", "")
    reviews.record(embedded_store, ids[2], "rui", "support-bot", "", "toxic", "")
    bad = cases_from_reviews(embedded_store, app="docs-rag", decisions=("hallucinated", "toxic"))
    assert [(c.case_id, c.labels["decision"], c.labels["reviewed_output"]) for c in bad] == [(ids[0], "hallucinated", "answer 0")]
    assert len(cases_from_reviews(embedded_store)) == 3
    found = cases_from_events(embedded_store, ids[1:])
    assert sorted(c.input for c in found) == ["question 1", "question 2"] and found[0].context == ("a passage",)
