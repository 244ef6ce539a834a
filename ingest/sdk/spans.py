"""Spans: the steps of a trace that are not LLM calls (tools, retrievals, chains, agent steps).

An LLM call is a scored trace event; every other step is a span event (`"kind": "span"`) stored
beside them in `llmwatch.spans`, linked by trace_id and parent_span_id, so the console can draw
the whole agent run as a tree.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from llmwatch.ingest.sdk.context import SpanContext, current_span, new_span_id, new_trace_id, set_span, stamp
from llmwatch.schemas import trace_event_schema

if TYPE_CHECKING:
    from llmwatch.ingest.sdk.emitter import Emitter

__all__ = ["SPAN_KINDS", "Span", "span_event"]

# The contract's span kinds (OpenInference's, lower-cased); any other kind is sent as "chain".
SPAN_KINDS = frozenset(trace_event_schema()["$defs"]["span"]["properties"]["span_kind"]["enum"])


def span_event(*, name: str, kind: str, trace_id: str, span_id: str, parent_span_id: str, started_ms: int,
               duration_ms: float, error: str = "", input: Any = None, output: Any = None,  # noqa: A002
               attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The span event of the trace-event contract (schemas/trace_event.v1.json, `$defs/span`)."""
    record: dict[str, Any] = {
        "kind": "span", "name": name, "span_kind": kind if kind in SPAN_KINDS else "chain",
        "trace_id": trace_id, "span_id": span_id, "timestamp": started_ms, "duration_ms": round(duration_ms, 3),
        "status": "error" if error else "ok",
    }
    if parent_span_id:
        record["parent_span_id"] = parent_span_id
    if error:
        record["error"] = error
    if input is not None:
        record["input"] = _plain(input)
    if output is not None:
        record["output"] = _plain(output)
    if attributes:
        record["attributes"] = {str(k): v if isinstance(v, str) else repr(v) for k, v in attributes.items()}
    return record


def _plain(value: Any) -> Any:
    """JSON as it is (the worker stores it as text); anything else as its repr."""
    return value if isinstance(value, (str, int, float, bool, list, dict, tuple)) else repr(value)


class Span:
    """`with emitter.span(...) as span:`; set `span.output` (and `span.attributes`) inside."""

    def __init__(self, emitter: Emitter, name: str, *, kind: str, input: Any,  # noqa: A002
                 attributes: dict[str, Any]) -> None:
        self._emitter = emitter
        self.name = name
        self.kind = kind
        self.input = input
        self.output: Any = None
        self.attributes = dict(attributes)
        parent = current_span()
        self.context = SpanContext(parent.trace_id if parent else new_trace_id(), new_span_id())
        self._parent = parent
        self._started_ms = 0
        self._started = 0.0

    @property
    def trace_id(self) -> str:
        return self.context.trace_id

    def __enter__(self) -> Span:
        self._started_ms = int(time.time() * 1000)
        self._started = time.perf_counter()
        set_span(self.context)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 _tb: TracebackType | None) -> None:
        duration_ms = (time.perf_counter() - self._started) * 1000
        set_span(self._parent)
        error = f"{exc_type.__name__}: {exc}" if exc_type is not None else ""
        record = span_event(
            name=self.name, kind=self.kind, trace_id=self.context.trace_id, span_id=self.context.span_id,
            parent_span_id=self._parent.span_id if self._parent else "", started_ms=self._started_ms,
            duration_ms=duration_ms, error=error, input=self.input, output=self.output, attributes=self.attributes)
        self._emitter.emit(stamp(record))  # the current span is the parent again: adds session and tags
