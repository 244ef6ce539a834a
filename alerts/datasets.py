"""Datasets: named, versioned sets of cases (input, context, optional reference answer and labels)
in llmwatch.datasets. A version never changes; adding cases writes version N+1 holding version N's
cases and the new ones (a case id seen before is replaced by its new text).

Cases come from a JSONL file, from reviewed events (the review queue's decisions), or from any list
of event ids (a trace search in the console); they leave as JSONL or Parquet.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmwatch.core.errors import ConfigError

__all__ = ["DatasetCase", "add_cases", "cases_from_events", "cases_from_jsonl", "cases_from_reviews", "export",
           "latest_version", "load_dataset"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
MAX_CASES = 100_000


@dataclass(frozen=True)
class DatasetCase:
    case_id: str
    input: str
    context: tuple[str, ...] = ()
    reference: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"id": self.case_id, "input": self.input, "context": list(self.context), "reference": self.reference,
                "labels": self.labels, "source": self.source}


def _case_id(text: str, context: tuple[str, ...]) -> str:
    return hashlib.sha256(json.dumps([text, list(context)]).encode()).hexdigest()[:16]


def _passages(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"{where}: `context` must be a list of passages")
    passages = []
    for passage in value:
        if isinstance(passage, dict) and isinstance(passage.get("text"), str):
            passages.append(passage["text"])
        elif isinstance(passage, str):
            passages.append(passage)
        else:
            raise ConfigError(f"{where}: each context passage is a string or {{id, text}}")
    return tuple(passages)


def _input_text(value: Any, where: str) -> str:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in value):
        return next(m["content"] for m in reversed(value) if m.get("role", "user") == "user")
    raise ConfigError(f"{where}: `input` must be a non-empty string or a list of chat messages")


def cases_from_jsonl(path: Path) -> list[DatasetCase]:
    """Rows with `input` (text or chat messages); optional `id`, `context`, `reference`, `labels`."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    cases = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{where}: not JSON ({exc})") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{where}: expected a JSON object")
        text, context = _input_text(row.get("input"), where), _passages(row.get("context"), where)
        labels = row.get("labels") or {}
        if not isinstance(labels, dict):
            raise ConfigError(f"{where}: `labels` must be an object of strings")
        reference = row.get("reference", "")
        if not isinstance(reference, str):
            raise ConfigError(f"{where}: `reference` must be a string")
        case_id = str(row.get("id") or _case_id(text, context))
        cases.append(DatasetCase(case_id, text, context, reference, {str(k): str(v) for k, v in labels.items()},
                                 f"file:{path.name}"))
        if len(cases) > MAX_CASES:
            raise ConfigError(f"{path}: more than {MAX_CASES} cases")
    if not cases:
        raise ConfigError(f"{path}: no cases")
    return cases


def _event_cases(rows: list[tuple[Any, ...]], source: str) -> list[DatasetCase]:
    return [DatasetCase(event_id, text, tuple(context or ()), "", labels, source)
            for event_id, text, context, labels in rows if text]


def cases_from_reviews(store: Any, app: str = "", decisions: tuple[str, ...] = ()) -> list[DatasetCase]:
    """Reviewed events (majority decision as the `decision` label, the output reviewers saw as
    `reviewed_output`), of one app or all, of these decisions or all."""
    db = store.database
    rows = store.query(
        f"SELECT toString(t.event_id), t.input, t.context, map('decision', r.decision, 'reviewed_output', t.output, 'app', t.app) "
        f"FROM (SELECT event_id, topK(1)(decision)[1] AS decision FROM {db}.reviews FINAL GROUP BY event_id) AS r "
        f"JOIN (SELECT event_id, app, input, output, context FROM {db}.traces WHERE event_id IN (SELECT event_id FROM {db}.reviews)) "
        f"AS t ON t.event_id = r.event_id "
        "WHERE ({app:String} = '' OR t.app = {app:String}) AND (empty({decisions:Array(String)}) OR has({decisions:Array(String)}, r.decision)) "
        "ORDER BY t.event_id",
        {"app": app, "decisions": list(decisions)},
    )
    return _event_cases(rows, "reviews")


def cases_from_events(store: Any, event_ids: list[str]) -> list[DatasetCase]:
    """The given events (a trace search's results) as cases; their output is kept as a label."""
    rows = store.query(
        f"SELECT toString(event_id), input, context, map('original_output', output, 'app', app) FROM {store.database}.traces "
        "WHERE event_id IN {ids:Array(UUID)} ORDER BY event_id", {"ids": event_ids})
    return _event_cases(rows, "search")


def latest_version(store: Any, name: str) -> int:
    rows = store.query(f"SELECT max(version) FROM {store.database}.datasets WHERE name = {{name:String}}", {"name": name})
    return int(rows[0][0] or 0) if rows else 0


def load_dataset(store: Any, name: str, version: int = 0) -> tuple[int, list[DatasetCase]]:
    """(version, cases) of dataset `name`; version 0: the latest. ConfigError when there is none."""
    version = version or latest_version(store, name)
    rows = store.query(
        f"SELECT case_id, input, context, reference, labels, source FROM {store.database}.datasets FINAL "
        "WHERE name = {name:String} AND version = {version:UInt32} ORDER BY case_id",
        {"name": name, "version": version},
    ) if version else []
    if not rows:
        raise ConfigError(f"no dataset {name!r}" + (f" version {version}" if version else "")
                          + " (create it with `llmwatch dataset add`)")
    return version, [DatasetCase(c, i, tuple(ctx or ()), ref, dict(labels), src) for c, i, ctx, ref, labels, src in rows]


def add_cases(store: Any, name: str, cases: list[DatasetCase], actor: str) -> tuple[int, int]:
    """Write version N+1 = version N's cases plus `cases`; returns (version, cases in it). When
    nothing changes, no version is written and the latest is returned."""
    if not _NAME.match(name):
        raise ConfigError(f"dataset name {name!r}: letters, digits, '.', '_' or '-'")
    previous = latest_version(store, name)
    merged = {c.case_id: c for c in (load_dataset(store, name, previous)[1] if previous else [])}
    before = dict(merged)
    merged.update({c.case_id: c for c in cases})
    if previous and merged == before:
        return previous, len(merged)
    if len(merged) > MAX_CASES:
        raise ConfigError(f"dataset {name!r} would hold more than {MAX_CASES} cases")
    version, now = previous + 1, datetime.now(UTC)
    store.insert("datasets", [
        {"name": name, "version": version, "case_id": c.case_id, "input": c.input, "context": list(c.context),
         "reference": c.reference, "labels": c.labels, "source": c.source, "created_at": now, "actor": actor}
        for c in merged.values()])
    return version, len(merged)


def export(cases: list[DatasetCase], fmt: str) -> bytes:
    """The cases as JSONL (one object per line) or Parquet."""
    if fmt == "jsonl":
        return "".join(json.dumps(c.as_json(), ensure_ascii=False) + "\n" for c in cases).encode()
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("case_id", pa.string()), ("input", pa.string()), ("context", pa.list_(pa.string())),
                        ("reference", pa.string()), ("labels", pa.map_(pa.string(), pa.string())), ("source", pa.string())])
    table = pa.Table.from_pylist([{**asdict(c), "context": list(c.context), "labels": list(c.labels.items())}
                                  for c in cases], schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()
