"""What the calls made now belong to: the enclosing span, the prompt release, the session.

Context variables, so each thread and each asyncio task has its own, and a task started inside a
span inherits it. Instrumented LLM calls, `Emitter.span` and the LangChain handler all read and
set the same ones, so their spans nest into one trace:

    with llmwatch.session("conv-42", user_id="u-7"), llmwatch.release(Release("answer", "8")):
        with emitter.span("plan", kind="agent"):
            client.chat.completions.create(...)     # a child of "plan", in session conv-42
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from llmwatch.ingest.sdk.emitter import Release

__all__ = ["Scope", "SpanContext", "current_scope", "current_span", "new_span_id", "new_trace_id", "release",
           "scoped", "session", "stamp", "with_scope"]


@dataclass(slots=True)
class SpanContext:
    """The span that calls made now are children of."""

    trace_id: str
    span_id: str
    # Instrumented LLM calls made inside this span: a framework's LLM step that wraps an
    # instrumented client call is stored as a plain span, so the call is scored once.
    llm_calls: int = 0


@dataclass(frozen=True, slots=True)
class Scope:
    """Session, user and tags that every event emitted inside `session(...)` carries."""

    session_id: str = ""
    user_id: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)


T = TypeVar("T")

_span: ContextVar[SpanContext | None] = ContextVar("llmwatch_span", default=None)
_release: ContextVar[Release | None] = ContextVar("llmwatch_release", default=None)
_scope: ContextVar[Scope | None] = ContextVar("llmwatch_scope", default=None)


def new_trace_id() -> str:
    """A W3C / OpenTelemetry trace id: 32 hex digits."""
    return f"{random.getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    """A W3C / OpenTelemetry span id: 16 hex digits."""
    return f"{random.getrandbits(64) or 1:016x}"


def current_span() -> SpanContext | None:
    return _span.get()


def current_release() -> Release | None:
    return _release.get()


def current_scope() -> Scope | None:
    return _scope.get()


@contextmanager
def scoped(var: ContextVar[T], value: T) -> Iterator[T]:
    """`var` holds `value` inside the block, and what it held before after it."""
    token = var.set(value)
    try:
        yield value
    finally:
        var.reset(token)


def set_span(span: SpanContext | None) -> None:
    """Make `span` current without a `with` block (callbacks that start and end in two calls)."""
    _span.set(span)


@contextmanager
def release(value: Release) -> Iterator[Release]:
    """Label the LLM calls made inside the block with this prompt release."""
    with scoped(_release, value):
        yield value


@contextmanager
def session(session_id: str, *, user_id: str = "", tags: Mapping[str, str] | None = None) -> Iterator[Scope]:
    """Group the events emitted inside the block into one conversation (the console's Sessions page)."""
    outer = _scope.get()
    scope = Scope(session_id, user_id or (outer.user_id if outer else ""), {**(outer.tags if outer else {}), **(tags or {})})
    with scoped(_scope, scope):
        yield scope


def with_scope(record: dict[str, Any], scope: Scope | None) -> dict[str, Any]:
    """`record` with the session, user and tags of `scope` (its own values win)."""
    if scope is not None:
        if scope.session_id:
            record.setdefault("session_id", scope.session_id)
        if scope.user_id:
            record.setdefault("user_id", scope.user_id)
        if scope.tags:
            record["tags"] = {**scope.tags, **record.get("tags", {})}
    return record


def stamp(record: dict[str, Any]) -> dict[str, Any]:
    """Add the current span and session to an event about to be emitted (the caller's thread)."""
    span = _span.get()
    if span is not None:
        record.setdefault("trace_id", span.trace_id)
        record.setdefault("parent_span_id", span.span_id)
    return with_scope(record, _scope.get())
