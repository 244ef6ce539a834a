"""A trace as a tree: its steps (LLM calls and spans) in call order, with depth and timing. Pure.

    steps = waterfall(rows)          # rows of queries.trace_steps, as dicts
    st.markdown(html_block(waterfall_html(steps)), unsafe_allow_html=True)  # bars on one time axis
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["Step", "waterfall", "waterfall_html"]


@dataclass(frozen=True, slots=True)
class Step:
    span_id: str
    name: str
    kind: str
    depth: int
    start_ms: float  # from the start of the trace
    duration_ms: float
    error: str
    summary: str
    event_id: str  # the trace event of an LLM call, "" for a span
    slowest: bool = False


def waterfall(rows: list[dict[str, Any]]) -> list[Step]:
    """Depth-first, children in start order. A step whose parent is not in the trace (not sent,
    or outside it) is a root; a cycle in broken parent links cannot loop."""
    if not rows:
        return []
    by_id = {r["span_id"]: r for r in rows if r["span_id"]}
    children: dict[str, list[dict[str, Any]]] = {}
    roots = []
    for row in sorted(rows, key=lambda r: r["timestamp"]):
        parent = row["parent_span_id"]
        if parent and parent in by_id and parent != row["span_id"]:
            children.setdefault(parent, []).append(row)
        else:
            roots.append(row)
    start: datetime = min(r["timestamp"] for r in rows)
    ordered: list[tuple[dict[str, Any], int]] = []
    seen: set[int] = set()

    def visit(row: dict[str, Any], depth: int) -> None:
        if id(row) in seen:
            return
        seen.add(id(row))
        ordered.append((row, depth))
        for child in children.get(row["span_id"], []):
            visit(child, depth + 1)

    for root in roots:
        visit(root, 0)
    for row in rows:  # steps only reachable through a cycle
        visit(row, 0)
    durations = [_ms(r["duration_ms"]) for r, _ in ordered]
    slowest = max(range(len(ordered)), key=lambda i: durations[i]) if any(durations) else -1
    return [
        Step(span_id=row["span_id"], name=str(row["name"]), kind=str(row["span_kind"]), depth=depth,
             start_ms=(row["timestamp"] - start).total_seconds() * 1000, duration_ms=durations[i],
             error=str(row["error"] or ""), summary=str(row["summary"] or ""),
             event_id=str(row["event_id"]) if row["source"] == "llm" else "", slowest=i == slowest)
        for i, (row, depth) in enumerate(ordered)
    ]


def _ms(value: Any) -> float:
    try:
        return max(0.0, float(value)) if value is not None else 0.0
    except (TypeError, ValueError):
        return 0.0


_COLOURS = {"llm": "#6f42c1", "tool": "#fd7e14", "retriever": "#20c997", "agent": "#0d6efd"}


def waterfall_html(steps: list[Step], scores: dict[str, str] | None = None) -> str:
    """One row per step: the name indented by depth, a bar on the trace's time axis, the duration.
    Failed steps are red and say why; the slowest is bold. `scores` adds text after an LLM step
    (by event id). Everything from the events is escaped."""
    scores = scores or {}
    total = max((s.start_ms + s.duration_ms for s in steps), default=0.0) or 1.0
    lines = []
    for step in steps:
        left = 100 * step.start_ms / total
        width = max(0.5, 100 * step.duration_ms / total)
        colour = "#dc3545" if step.error else _COLOURS.get(step.kind, "#6c757d")
        name = html.escape(step.name)
        label = f"<b>{name}</b>" if step.slowest else name
        extra = f" · {html.escape(scores[step.event_id])}" if step.event_id in scores else ""
        failure = f" · <span style='color:#dc3545'>{html.escape(step.error[:200])}</span>" if step.error else ""
        lines.append(
            "<div style='display:flex;align-items:center;gap:8px;font-size:0.85em;line-height:1.6'>"
            f"<div style='width:38%;padding-left:{step.depth * 14}px;white-space:nowrap;overflow:hidden;"
            f"text-overflow:ellipsis'>{label} <span style='color:#6c757d'>{html.escape(step.kind)}</span></div>"
            "<div style='width:44%;position:relative;height:10px;background:#f1f3f5'>"
            f"<div style='position:absolute;left:{left:.2f}%;width:{width:.2f}%;height:10px;background:{colour}'>"
            "</div></div>"
            f"<div style='width:18%;white-space:nowrap'>{step.duration_ms:,.0f} ms{extra}{failure}</div></div>"
        )
    return "".join(lines)  # for markup.html_block
