"""What every instrumentation shares: turning one captured call into one trace event.

The app's thread only times the call and keeps references (a shallow copy of what it may still
change, like its message list); the event is built on the emitter's thread (`Emitter.emit_later`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmwatch.ingest.sdk.context import (
    Scope,
    SpanContext,
    current_release,
    current_scope,
    current_span,
    new_span_id,
    new_trace_id,
    scoped,
    with_scope,
)

if TYPE_CHECKING:
    from llmwatch.ingest.sdk.emitter import Emitter, Release
    from llmwatch.ingest.sdk.releases import ReleaseResolver

log = logging.getLogger("llmwatch.instrument")


_elsewhere: ContextVar[bool] = ContextVar("llmwatch_recorded_elsewhere", default=False)


def recorded_elsewhere() -> bool:
    """True inside a call a framework we instrument records already (LiteLLM calls the openai
    client): the client's own call is not recorded a second time."""
    return _elsewhere.get()


def recording_elsewhere() -> AbstractContextManager[bool]:
    """Inside this block, instrumented client calls are not recorded (the framework records them)."""
    return scoped(_elsewhere, True)


def get(obj: Any, name: str, default: Any = None) -> Any:
    """A field of a response object or of the dict an app passed: client types and plain JSON alike."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def text_of(content: Any) -> str:
    """Message content as text: a string, or the text of a list of parts (images as a marker)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        parts = []
        for part in content:
            kind = get(part, "type", "text")
            text = get(part, "text")
            if isinstance(text, str):
                parts.append(text)
            elif kind in ("image_url", "image", "input_image"):
                parts.append("[image]")
            elif kind in ("input_audio", "audio"):
                parts.append("[audio]")
        return "\n".join(parts)
    return str(content)


def tool_call_text(name: str, arguments: Any) -> str:
    """How a tool call reads in a message list: `[tool call] name({"city": "Paris"})`."""
    if not isinstance(arguments, str):
        try:
            arguments = json.dumps(arguments, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            arguments = str(arguments)
    return f"[tool call] {name}({arguments})"


def message_text(content: str, tool_calls: list[str]) -> str:
    """A message's text followed by its tool calls, one per line."""
    return "\n".join([content, *tool_calls] if content else tool_calls)


def error_text(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    return f"{type(exc).__name__}{f' {status}' if status else ''}: {exc}"


@dataclass(slots=True)
class Call:
    """One LLM call in flight: what the app's thread captured (cheap), filled in as it completes."""

    provider: str
    operation: str
    model: str
    request: dict[str, Any]
    started_ms: int
    started: float
    # What the call belongs to, read on the app's thread (context variables); ids and labels are
    # made from them on the emitter's thread.
    parent: SpanContext | None
    release: Release | None
    scope: Scope | None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    result: Any = None
    chunks: list[Any] = field(default_factory=list)
    error: str = ""
    streamed: bool = False
    complete: bool = True  # False: the app stopped reading a stream before its end

    def first_token(self) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = (time.perf_counter() - self.started) * 1000

    def finish(self) -> None:
        self.latency_ms = (time.perf_counter() - self.started) * 1000


Converter = Callable[[Call], dict[str, Any]]


class Recorder:
    """Starts calls on the app's thread and hands finished ones to the emitter."""

    def __init__(self, emitter: Emitter, *, resolver: ReleaseResolver | None = None, route_model: bool = False) -> None:
        self.emitter = emitter
        self.resolver = resolver
        self.route_model = route_model

    def release(self) -> Release | None:
        """The release calls are labelled with now: `with llmwatch.release(...)`, else the
        resolver's (after a rollback too), else the emitter's."""
        explicit = current_release()
        if explicit is not None:
            return explicit
        if self.resolver is not None and self.emitter.app:
            return self.resolver.release(self.emitter.app)
        return self.emitter.release

    def routed_model(self, requested: Any) -> Any:
        """With route_model, the model the resolver's release names replaces the app's: a rollback
        of a model release then takes effect in instrumented apps without a deploy."""
        if not self.route_model:
            return requested
        release = self.release()
        return release.model if release is not None and release.model else requested

    def start(self, provider: str, operation: str, model: Any, request: dict[str, Any],
              parent: SpanContext | None = None) -> Call:
        """A call starting now, a child of `parent` (default: the current span)."""
        parent = parent or current_span()
        if parent is not None:
            parent.llm_calls += 1
        # Positional: this runs on the app's thread for every call.
        return Call(provider, operation, str(model or ""), request, int(time.time() * 1000), time.perf_counter(),
                    parent, self.release(), current_scope())

    def emit(self, call: Call, convert: Converter) -> None:
        self.emitter.emit_later(lambda: self._event(call, convert))

    @staticmethod
    def _event(call: Call, convert: Converter) -> dict[str, Any]:
        try:
            if type(call.result).__name__ == "LegacyAPIResponse":
                # `client.with_raw_response.create(...)` (langchain-openai calls it so): the parsed
                # body is cached in the response, so the app's own parse() reuses this one.
                call.result = call.result.parse()
            body = convert(call)
        except Exception as exc:  # an unexpected response shape: keep the call, say what failed
            log.warning("llmwatch could not read a %s %s response: %r", call.provider, call.operation, exc)
            body = {"input": "", "output": "", "error": call.error or f"llmwatch could not read the response: {exc!r}"}
        labels = call.release.as_dict() if call.release is not None else {}
        labels["model"] = call.model or labels.get("model", "")
        labels["provider"] = call.provider
        parent = call.parent
        event: dict[str, Any] = {
            "trace_id": parent.trace_id if parent else new_trace_id(), "span_id": new_span_id(),
            "timestamp": call.started_ms, "release": {k: v for k, v in labels.items() if v}, **body,
        }
        if parent is not None:
            event["parent_span_id"] = parent.span_id
        if call.latency_ms is not None:
            event["latency_ms"] = round(call.latency_ms, 3)
        if call.ttft_ms is not None:
            event["ttft_ms"] = round(call.ttft_ms, 3)
        if call.error:
            event["error"] = call.error
        event["tags"] = {"llm.operation": call.operation, **event.get("tags", {})}
        if call.streamed:
            event["tags"]["llm.stream"] = "complete" if call.complete else "abandoned"
        return with_scope(event, call.scope)
