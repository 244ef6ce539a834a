"""LangChain, through its own extension point: a callback handler that every callback manager
gets (as OpenInference's instrumentor does it), so chains, agents, tools and retrievers become
spans of one trace, and chat model steps become scored LLM events.

A chat model step whose provider client is instrumented too (ChatOpenAI calls the `openai`
client) is stored as a plain span of kind `llm`: the client's own event, its child, is the one
scored, with the exact request, streaming timings and usage.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from llmwatch.ingest.sdk.context import (
    Scope,
    SpanContext,
    current_scope,
    current_span,
    new_span_id,
    new_trace_id,
    set_span,
    with_scope,
)
from llmwatch.ingest.sdk.instrument._patch import Patches
from llmwatch.ingest.sdk.instrument._recorder import (
    Call,
    Recorder,
    error_text,
    get,
    message_text,
    text_of,
    tool_call_text,
)
from llmwatch.ingest.sdk.spans import span_event

__all__ = ["instrument"]

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "tool",
          "chat": "user", "developer": "system"}


def instrument(recorder: Recorder, patches: Patches) -> None:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.callbacks.base import BaseCallbackManager

    handler = _handler_class(BaseCallbackHandler)(recorder)

    def make(original: Any) -> Any:
        def init_and_add(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            if not any(isinstance(h, type(handler)) for h in self.inheritable_handlers):
                self.add_handler(handler, True)

        return init_and_add

    patches.wrap(BaseCallbackManager, "__init__", make)


@dataclass(slots=True)
class _Run:
    span: SpanContext
    parent: SpanContext | None
    name: str
    kind: str
    started_ms: int
    started: float
    input: Any
    scope: Scope | None
    call: Call | None = None  # a model step: the LLM event it becomes when no client call inside is recorded


def _handler_class(base: type) -> type:
    class LlmwatchCallbackHandler(base):
        run_inline = True  # called in the run's own context, so the spans it sets are seen by the step
        raise_error = False

        def __init__(self, recorder: Recorder) -> None:
            super().__init__()
            self.recorder = recorder
            self.runs: dict[uuid.UUID, _Run] = {}

        # --- starts -------------------------------------------------------------------------

        def _start(self, run_id: uuid.UUID, parent_run_id: uuid.UUID | None, name: str, kind: str,
                   value: Any, model: str = "", provider: str = "") -> None:
            parent_run = self.runs.get(parent_run_id) if parent_run_id else None
            parent = parent_run.span if parent_run else current_span()
            span = SpanContext(parent.trace_id if parent else new_trace_id(), new_span_id())
            run = _Run(span, parent, name, kind, int(time.time() * 1000), time.perf_counter(), value, current_scope())
            if kind == "llm":
                run.call = self.recorder.start(provider, "langchain", model, {"input": value}, parent=parent)
            self.runs[run_id] = run
            set_span(span)

        def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: uuid.UUID,
                           parent_run_id: uuid.UUID | None = None, **kwargs: Any) -> None:
            kind = "agent" if "agent" in str(kwargs.get("name") or "").lower() else "chain"
            self._start(run_id, parent_run_id, _name(serialized, kwargs, "chain"), kind, inputs)

        def on_tool_start(self, serialized: Any, input_str: str, *, run_id: uuid.UUID,
                          parent_run_id: uuid.UUID | None = None, **kwargs: Any) -> None:
            self._start(run_id, parent_run_id, _name(serialized, kwargs, "tool"), "tool",
                        kwargs.get("inputs") or input_str)

        def on_retriever_start(self, serialized: Any, query: str, *, run_id: uuid.UUID,
                               parent_run_id: uuid.UUID | None = None, **kwargs: Any) -> None:
            self._start(run_id, parent_run_id, _name(serialized, kwargs, "retriever"), "retriever", query)

        def on_chat_model_start(self, serialized: Any, messages: list[list[Any]], *, run_id: uuid.UUID,
                                parent_run_id: uuid.UUID | None = None, **kwargs: Any) -> None:
            # Only the first prompt of a batch is recorded; a copy, as the caller keeps its list.
            self._start(run_id, parent_run_id, _name(serialized, kwargs, "chat_model"), "llm",
                        list(messages[0]) if messages else [], *_model_and_provider(kwargs))

        def on_llm_start(self, serialized: Any, prompts: list[str], *, run_id: uuid.UUID,
                         parent_run_id: uuid.UUID | None = None, **kwargs: Any) -> None:
            self._start(run_id, parent_run_id, _name(serialized, kwargs, "llm"), "llm", prompts[0] if prompts else "",
                        *_model_and_provider(kwargs))

        def on_llm_new_token(self, token: str, *, run_id: uuid.UUID, **_: Any) -> None:
            run = self.runs.get(run_id)
            if run is not None and run.call is not None:
                run.call.first_token()

        # --- ends ---------------------------------------------------------------------------

        def _end(self, run_id: uuid.UUID, output: Any = None, error: BaseException | None = None) -> None:
            run = self.runs.pop(run_id, None)
            if run is None:
                return
            set_span(run.parent)
            call = run.call
            if call is not None and run.span.llm_calls == 0:  # no client call inside recorded it: this is the call
                call.finish()
                call.result = output
                call.error = error_text(error) if error is not None else ""
                self.recorder.emit(call, _llm_event)
                return
            duration_ms = (time.perf_counter() - run.started) * 1000
            self.recorder.emitter.emit_later(lambda: with_scope(span_event(
                name=run.name, kind=run.kind, trace_id=run.span.trace_id, span_id=run.span.span_id,
                parent_span_id=run.parent.span_id if run.parent else "", started_ms=run.started_ms,
                duration_ms=duration_ms, error=error_text(error) if error is not None else "",
                input=_plain(run.input), output=_plain(output)), run.scope))

        def on_chain_end(self, outputs: Any, *, run_id: uuid.UUID, **_: Any) -> None:
            self._end(run_id, outputs)

        def on_tool_end(self, output: Any, *, run_id: uuid.UUID, **_: Any) -> None:
            self._end(run_id, output)

        def on_retriever_end(self, documents: Any, *, run_id: uuid.UUID, **_: Any) -> None:
            self._end(run_id, [get(d, "page_content", str(d)) for d in documents or ()])

        def on_llm_end(self, response: Any, *, run_id: uuid.UUID, **_: Any) -> None:
            self._end(run_id, response)

        def on_chain_error(self, error: BaseException, *, run_id: uuid.UUID, **_: Any) -> None:
            self._end(run_id, error=error)

        def on_tool_error(self, error: BaseException, *, run_id: uuid.UUID, **_: Any) -> None:
            self._end(run_id, error=error)

        def on_retriever_error(self, error: BaseException, *, run_id: uuid.UUID, **_: Any) -> None:
            self._end(run_id, error=error)

        def on_llm_error(self, error: BaseException, *, run_id: uuid.UUID, **_: Any) -> None:
            self._end(run_id, error=error)

    return LlmwatchCallbackHandler


def _model_and_provider(kwargs: dict[str, Any]) -> tuple[str, str]:
    """The model and provider of a model step, from LangChain's invocation params and metadata."""
    metadata = kwargs.get("metadata") or {}
    params = kwargs.get("invocation_params") or {}
    model = params.get("model") or params.get("model_name") or metadata.get("ls_model_name") or ""
    return str(model), str(metadata.get("ls_provider") or "langchain")


def _llm_event(call: Call) -> dict[str, Any]:
    """The body of a model step's LLM event: its messages, and the output, tool calls and usage of
    its LLMResult (none when it failed)."""
    event = {"input": _messages(call.request["input"]), "output": ""}
    if call.result is not None:
        event.update(_generation(call.result))
    return event


def _name(serialized: Any, kwargs: dict[str, Any], default: str) -> str:
    if kwargs.get("name"):
        return str(kwargs["name"])
    if isinstance(serialized, dict):
        if serialized.get("name"):
            return str(serialized["name"])
        ids = serialized.get("id")
        if isinstance(ids, list) and ids:
            return str(ids[-1])
    return default


def _message(message: Any) -> dict[str, str]:
    role = _ROLES.get(str(get(message, "type", "")), str(get(message, "type", "user")))
    content = text_of(get(message, "content"))
    calls = [tool_call_text(get(c, "name", ""), get(c, "args", {})) for c in get(message, "tool_calls") or ()]
    return {"role": role, "content": message_text(content, calls)}


def _messages(value: Any) -> Any:
    if isinstance(value, str):
        return value
    return [_message(m) for m in value or ()]


def _generation(result: Any) -> dict[str, Any]:
    """Output, tool calls and usage of an LLMResult."""
    generations = get(result, "generations") or [[]]
    first = generations[0][0] if generations and generations[0] else None
    message = get(first, "message")
    out: dict[str, Any] = {"output": text_of(get(message, "content")) if message is not None else str(get(first, "text", ""))}
    calls = [{"id": get(c, "id", ""), "name": get(c, "name", ""), "arguments": get(c, "args", {})}
             for c in get(message, "tool_calls") or ()]
    if calls:
        out["tool_calls"] = calls
    usage = get(message, "usage_metadata")
    if usage is None:
        token_usage = (get(result, "llm_output") or {}).get("token_usage") or {}
        usage = {"input_tokens": token_usage.get("prompt_tokens"), "output_tokens": token_usage.get("completion_tokens")}
    tokens = {k: get(usage, k) for k in ("input_tokens", "output_tokens") if isinstance(get(usage, k), int)}
    cached = get(get(usage, "input_token_details"), "cache_read")
    if isinstance(cached, int) and cached:
        tokens["cached_input_tokens"] = cached
    if tokens:
        out["usage"] = tokens
    return out


def _plain(value: Any) -> Any:
    """A chain's inputs and outputs as JSON-friendly values (messages and documents as text)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if get(value, "generations") is not None:
        return _generation(value).get("output", "")
    if get(value, "content") is not None:
        return text_of(get(value, "content"))
    if get(value, "page_content") is not None:
        return get(value, "page_content")
    return repr(value)
