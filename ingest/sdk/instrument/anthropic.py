"""The `anthropic` client: messages, sync and async, streamed (`stream=True` or the `stream()`
helper) or not."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from llmwatch.ingest.sdk.instrument._calls import Api, async_call, begin, failed, returned, sync_call
from llmwatch.ingest.sdk.instrument._patch import Patches
from llmwatch.ingest.sdk.instrument._recorder import (
    Call,
    Recorder,
    get,
    recorded_elsewhere,
    text_of,
    tool_call_text,
)

__all__ = ["instrument"]

log = logging.getLogger("llmwatch.instrument")


def instrument(recorder: Recorder, patches: Patches) -> None:
    from anthropic.lib.streaming import AsyncMessageStreamManager, MessageStreamManager
    from anthropic.resources.messages import AsyncMessages, Messages

    api = Api("anthropic", "messages", _messages_event, ("messages",), _first_output)
    patches.wrap(Messages, "create", sync_call(recorder, api))
    patches.wrap(AsyncMessages, "create", async_call(recorder, api))
    # `messages.stream(...)`, the helper: it posts without `create`, when its manager is entered.
    patches.wrap(Messages, "stream", _stream_helper(recorder, api))
    patches.wrap(AsyncMessages, "stream", _stream_helper(recorder, api))
    patches.wrap(MessageStreamManager, "__enter__", _entered(recorder, api))
    patches.wrap(AsyncMessageStreamManager, "__aenter__", _entered_async(recorder, api))


def _stream_helper(recorder: Recorder, api: Api) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def stream_and_record(self: Any, *args: Any, **kwargs: Any) -> Any:
            if recorded_elsewhere():
                return original(self, *args, **kwargs)
            try:
                request = {**kwargs, "stream": True}
                call, _ = begin(recorder, api, request)
                if "model" in kwargs:
                    kwargs["model"] = request["model"]  # routed, with route_model
            except Exception:
                log.exception("llmwatch could not start recording an anthropic stream")
                return original(self, *args, **kwargs)
            manager = original(self, *args, **kwargs)
            manager.__dict__["_llmwatch_call"] = call  # the request is made when it is entered
            return manager

        return stream_and_record

    return make


def _entered(recorder: Recorder, api: Api) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def enter_and_record(self: Any) -> Any:
            call = self.__dict__.pop("_llmwatch_call", None)
            if call is None:
                return original(self)
            try:
                stream = original(self)
            except BaseException as exc:
                failed(recorder, api, call, exc)
                raise
            returned(recorder, api, call, stream._raw_stream, hide=False, is_async=False)
            return stream

        return enter_and_record

    return make


def _entered_async(recorder: Recorder, api: Api) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        async def enter_and_record(self: Any) -> Any:
            call = self.__dict__.pop("_llmwatch_call", None)
            if call is None:
                return await original(self)
            try:
                stream = await original(self)
            except BaseException as exc:
                failed(recorder, api, call, exc)
                raise
            returned(recorder, api, call, stream._raw_stream, hide=False, is_async=True)
            return stream

        return enter_and_record

    return make


def _first_output(event: Any) -> bool:
    return get(event, "type") == "content_block_delta"


def _blocks_text(content: Any) -> str:
    """Text, tool use and tool results of a message's content blocks, as one text."""
    if isinstance(content, str):
        return content
    parts = []
    for block in content or ():
        kind = get(block, "type")
        if kind == "text":
            parts.append(get(block, "text", ""))
        elif kind == "tool_use":
            parts.append(tool_call_text(get(block, "name", ""), get(block, "input", {})))
        elif kind == "tool_result":
            parts.append(text_of(get(block, "content")))
        elif kind in ("image", "document"):
            parts.append(f"[{kind}]")
    return "\n".join(p for p in parts if p)


def _messages_event(call: Call) -> dict[str, Any]:
    request = call.request
    messages = []
    system = request.get("system")
    if isinstance(system, (str, list)) and system:
        messages.append({"role": "system", "content": text_of(system)})
    for message in request.get("messages") or ():
        messages.append({"role": str(get(message, "role", "user")), "content": _blocks_text(get(message, "content"))})
    event: dict[str, Any] = {"input": messages}
    if call.streamed:
        text, tool_calls, usage = _from_events(call.chunks)
    else:
        blocks = get(call.result, "content") or ()
        text = "".join(get(b, "text", "") for b in blocks if get(b, "type") == "text")
        tool_calls = [{"id": get(b, "id", ""), "name": get(b, "name", ""), "arguments": get(b, "input", {})}
                      for b in blocks if get(b, "type") == "tool_use"]
        usage = _usage(get(call.result, "usage"))
    event["output"] = text
    if tool_calls:
        event["tool_calls"] = tool_calls
    if usage:
        event["usage"] = usage
    metadata = request.get("metadata")
    if isinstance(get(metadata, "user_id"), str):
        event["user_id"] = get(metadata, "user_id")
    return event


def _usage(usage: Any) -> dict[str, int]:
    out = {}
    for ours, theirs in (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
                         ("cached_input_tokens", "cache_read_input_tokens")):
        value = get(usage, theirs)
        if isinstance(value, int):
            out[ours] = value
    created = get(usage, "cache_creation_input_tokens")
    if isinstance(created, int) and created:
        # Anthropic counts cache writes apart from input_tokens; both are input the call paid for.
        out["input_tokens"] = out.get("input_tokens", 0) + created
    cached = out.get("cached_input_tokens", 0)
    if cached:
        out["input_tokens"] = out.get("input_tokens", 0) + cached
    return out


def _from_events(events: list[Any]) -> tuple[str, list[dict[str, Any]], dict[str, int]]:
    text: list[str] = []
    blocks: dict[int, dict[str, Any]] = {}
    usage: dict[str, int] = {}
    for event in events:
        kind = get(event, "type")
        if kind == "message_start":
            usage = _usage(get(get(event, "message"), "usage"))
        elif kind == "content_block_start":
            block = get(event, "content_block")
            if get(block, "type") == "tool_use":
                blocks[get(event, "index", 0)] = {"id": get(block, "id", ""), "name": get(block, "name", ""),
                                                  "arguments": ""}
        elif kind == "content_block_delta":
            delta = get(event, "delta")
            if get(delta, "type") == "text_delta":
                text.append(get(delta, "text", ""))
            elif get(delta, "type") == "input_json_delta" and get(event, "index", 0) in blocks:
                blocks[get(event, "index", 0)]["arguments"] += get(delta, "partial_json", "")
        elif kind == "message_delta":
            output_tokens = get(get(event, "usage"), "output_tokens")
            if isinstance(output_tokens, int):
                usage["output_tokens"] = output_tokens
    return "".join(text), [blocks[i] for i in sorted(blocks)], usage
