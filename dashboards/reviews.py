"""Reviewers' decisions: recording one, measuring agreement, and the labelled dataset they make
(for calibrating detectors). Used by the Review page and `llmwatch reviews export`."""

from __future__ import annotations

import io
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime
from itertools import combinations
from typing import Any

import pandas as pd

from llmwatch.alerts.audit import audit
from llmwatch.dashboards.stats import cohen_kappa, fleiss_kappa

__all__ = ["DECISIONS", "agreement", "dataset", "record", "to_jsonl", "to_parquet"]

DECISIONS = ("fine", "toxic", "hallucinated", "other")


def record(store: Any, event_id: str, reviewer: str, app: str, release: str, decision: str, note: str) -> None:
    """One reviewer's decision on one event (a second decision by the same reviewer replaces it)."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    if decision == "other" and not note.strip():
        raise ValueError("an `other` decision needs a note saying what is wrong")
    now = datetime.now(UTC)
    store.insert("reviews", [{"event_id": event_id, "reviewer": reviewer, "app": app, "release": release,
                              "decision": decision, "note": note.strip(), "decided_at": now}])
    audit(store, reviewer, "review", app=app, release=release, at=now, event_id=str(event_id), decision=decision)


def agreement(decisions: pd.DataFrame) -> dict[str, Any]:
    """Fleiss' kappa over every item with two or more decisions, and Cohen's kappa of the pair
    of reviewers who share the most items. `decisions`: event_id, reviewer, decision."""
    by_item: dict[Any, dict[str, str]] = defaultdict(dict)
    for row in decisions.itertuples():
        by_item[row.event_id][row.reviewer] = row.decision
    shared = [item for item in by_item.values() if len(item) >= 2]
    result: dict[str, Any] = {"items": len(by_item), "items_with_2_plus": len(shared),
                              "fleiss_kappa": fleiss_kappa([list(item.values()) for item in shared])}
    pairs: Counter[tuple[str, str]] = Counter()
    for item in shared:
        pairs.update(combinations(sorted(item), 2))
    if pairs:
        (a, b), n = pairs.most_common(1)[0]
        both = [item for item in shared if a in item and b in item]
        result.update(pair=(a, b), pair_items=n,
                      cohen_kappa=cohen_kappa([i[a] for i in both], [i[b] for i in both]))
    return result


def dataset(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """One record per reviewed event: its text, every decision, and the majority label (ties and
    single decisions keep `label` but say `agreed: false` / `decisions: 1`)."""
    out = []
    for event_id, group in rows.groupby("event_id", sort=False):
        first = group.iloc[0]
        votes = Counter(group["decision"])
        (label, top), *rest = votes.most_common()
        out.append({
            "event_id": str(event_id), "app": first["app"], "release": first["release"],
            "input": first["input"] if isinstance(first["input"], str) else "",
            "output": first["output"] if isinstance(first["output"], str) else "",
            "context": list(first["context"]) if first["context"] is not None else [],
            "label": label, "agreed": len(votes) == 1 and len(group) > 1, "tied": bool(rest and rest[0][1] == top),
            "decisions": [{"reviewer": r.reviewer, "decision": r.decision, "note": r.note,
                           "decided_at": pd.Timestamp(r.decided_at).isoformat()} for r in group.itertuples()],
        })
    return out


def to_jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def to_parquet(records: list[dict[str, Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), buffer)
    return buffer.getvalue()
