"""`llmwatch score`: batch scoring of JSONL files for evaluation and backfills.

    llmwatch score --detector toxicity  --input in.jsonl --output out.jsonl   # rows with `text`
    llmwatch score --detector grounding --input in.jsonl --output out.jsonl   # `context`, `response`, optional `question`
    llmwatch score --detector injection --input in.jsonl --output out.jsonl   # `text`, or `input` and/or `context`

Each output row keeps the input's `id` (its line number when it has none) and adds `score` in
[0, 1] (1 = bad; null when not applicable), `label` and `details`. Injection scores `text` (or
`input`) as a user input and each `context` passage as retrieved text; the row's score is the
higher, and `details` names where it was found (`input`, or the passage index) and the span.
Rows are scored in chunks, so files larger than memory stream through. Offline models by default;
--toxicity-model, --grounding-model, --grounding-weights and --injection-model choose others.
"""

from __future__ import annotations

import argparse
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from llmwatch.core.errors import ConfigError
from llmwatch.core.events import TraceEvent
from llmwatch.core.settings import Settings
from llmwatch.detectors.registry import load
from llmwatch.jsonl import read_rows

__all__ = ["DETECTOR_FIELDS", "run_score"]

DETECTOR_FIELDS = {"toxicity": ("text",), "grounding": ("context", "response"), "injection": ()}
CHUNK = 1024


def _event(number: int, row: dict[str, Any], detector: str, now: datetime) -> TraceEvent:
    def text(field: str) -> str:
        value = row.get(field) or ""
        if not isinstance(value, str):
            raise ConfigError(f"line {number}: `{field}` must be a string")
        return value

    if detector == "toxicity":
        return TraceEvent(uuid.UUID(int=number), "", now, "score", input="", output=text("text"))
    context = row.get("context") or []
    if detector == "injection":
        if "text" not in row and "input" not in row and "context" not in row:
            raise ConfigError(f"line {number}: an injection row needs `text`, or `input` and/or `context`")
        context = [context] if isinstance(context, str) else context
        if not isinstance(context, list) or not all(isinstance(c, str) for c in context):
            raise ConfigError(f"line {number}: `context` must be a string or a list of strings")
        return TraceEvent(uuid.UUID(int=number), "", now, "score", input=text("text") or text("input"),
                          output="", context=tuple(context))
    context = [context] if isinstance(context, str) else context
    if not isinstance(context, list) or not all(isinstance(c, str) for c in context):
        raise ConfigError(f"line {number}: `context` must be a string or a list of strings")
    return TraceEvent(uuid.UUID(int=number), "", now, "score", input=text("question"), output=text("response"),
                      context=tuple(context))


def _injection_result(rows: list[Any]) -> Any:
    """The input's and the context's rows as one: the higher score, with where it was found."""
    from dataclasses import replace

    scored = [r for r in rows if r.score is not None and r.label != "empty"]
    if not scored:
        return rows[-1]
    best = max(scored, key=lambda r: r.score)
    where = {"found_in": "input"} if best.target == "input" else {"found_in": "context"}
    return replace(best, details=where | best.details)


def _flush(detector: Any, chunk: list[tuple[int, dict[str, Any], TraceEvent]], out: IO[str]) -> None:
    scored = detector.score([event for *_, event in chunk])
    if detector.name == "injection":
        by_event: dict[Any, list[Any]] = {}
        for r in scored:
            by_event.setdefault(r.event_id, []).append(r)
        rows = {event_id: _injection_result(group) for event_id, group in by_event.items()}
    else:
        rows = {r.event_id: r for r in scored if r.target == "output"}
    for number, row, event in chunk:
        result = rows[event.event_id]
        out.write(json.dumps({
            "id": row.get("id", number),
            "score": None if result.score is None else round(result.score, 6),
            "label": result.label,
            "details": result.details,
        }, ensure_ascii=False) + "\n")


def run_score(settings: Settings, args: argparse.Namespace) -> int:
    name = args.detector
    detector = load(name, settings)
    now = datetime.now(UTC)
    count = 0
    output_path: Path = args.output
    output_path.parent.mkdir(parents=True, exist_ok=True)
    partial = output_path.with_name(output_path.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8") as out:
            chunk: list[tuple[int, dict[str, Any], TraceEvent]] = []
            for number, row in read_rows(args.input, DETECTOR_FIELDS[name]):
                chunk.append((number, row, _event(number, row, name, now)))
                if len(chunk) == CHUNK:
                    _flush(detector, chunk, out)
                    count += len(chunk)
                    chunk = []
            if chunk:
                _flush(detector, chunk, out)
                count += len(chunk)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(output_path)  # never leave a half-written file under the real name
    print(f"scored {count} rows with {name} ({detector.version}) -> {output_path}")
    return 0
