"""The `openai` client: chat completions and the responses API, sync and async, streamed or not.

A streamed chat completion reports its token usage only if the request asks for it
(`stream_options={"include_usage": true}`). With `stream_usage` (the default) we ask, when the
app did not, and keep the extra last chunk (it has no choices) from the app, so the app's loop
sees exactly the chunks it would have seen.
"""

from __future__ import annotations

from typing import Any

from llmwatch.ingest.sdk.instrument._calls import Api, async_call, sync_call
from llmwatch.ingest.sdk.instrument._patch import Patches
from llmwatch.ingest.sdk.instrument._recorder import Call, Recorder, get, message_text, text_of, tool_call_text

__all__ = ["chat_api", "chat_event", "chat_token", "instrument"]


def instrument(recorder: Recorder, patches: Patches, *, stream_usage: bool = True) -> None:
    from openai.resources.chat.completions import AsyncCompletions, Completions
    from openai.resources.responses import AsyncResponses, Responses

    chat = chat_api(stream_usage=stream_usage)
    responses = Api("openai", "responses", _responses_event, ("input",), _responses_token)
    for method in ("create", "parse"):
        patches.wrap(Completions, method, sync_call(recorder, chat))
        patches.wrap(AsyncCompletions, method, async_call(recorder, chat))
        patches.wrap(Responses, method, sync_call(recorder, responses))
        patches.wrap(AsyncResponses, method, async_call(recorder, responses))


# --- chat completions ----------------------------------------------------------------------


def chat_api(*, stream_usage: bool) -> Api:
    return Api("openai", "chat", chat_event, ("messages",), chat_token,
               prepare=_ask_for_usage if stream_usage else None, is_ours=_usage_only_chunk)


def _ask_for_usage(kwargs: dict[str, Any]) -> bool:
    options = kwargs.get("stream_options")
    if isinstance(options, dict) and "include_usage" in options:
        return False  # the app decided
    kwargs["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return True


def _usage_only_chunk(chunk: Any) -> bool:
    return not get(chunk, "choices") and get(chunk, "usage") is not None


def chat_token(chunk: Any) -> bool:
    for choice in get(chunk, "choices") or ():
        delta = get(choice, "delta")
        if get(delta, "content") or get(delta, "tool_calls"):
            return True
    return False


def _chat_message(message: Any) -> dict[str, str]:
    content = text_of(get(message, "content"))
    calls = [tool_call_text(get(get(c, "function"), "name", ""), get(get(c, "function"), "arguments", ""))
             for c in get(message, "tool_calls") or ()]
    return {"role": str(get(message, "role", "user")), "content": message_text(content, calls)}


def chat_event(call: Call) -> dict[str, Any]:
    event: dict[str, Any] = {"input": [_chat_message(m) for m in call.request.get("messages") or ()]}
    if call.streamed:
        text, tool_calls, usage = _from_chunks(call.chunks)
    else:
        message = get((get(call.result, "choices") or [None])[0], "message")
        text = text_of(get(message, "content"))
        tool_calls = [{"id": get(c, "id", ""), "name": get(get(c, "function"), "name", ""),
                       "arguments": get(get(c, "function"), "arguments", "")} for c in get(message, "tool_calls") or ()]
        usage = get(call.result, "usage")
    event["output"] = text
    if tool_calls:
        event["tool_calls"] = tool_calls
    if usage is not None:
        event["usage"] = _usage(usage, "prompt_tokens", "completion_tokens", "prompt_tokens_details")
    user = call.request.get("user") or call.request.get("safety_identifier")
    if isinstance(user, str) and user:
        event["user_id"] = user
    return event


def _from_chunks(chunks: list[Any]) -> tuple[str, list[dict[str, str]], Any]:
    text: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    usage = None
    for chunk in chunks:
        usage = get(chunk, "usage") or usage
        for choice in get(chunk, "choices") or ():
            if get(choice, "index", 0) != 0:
                continue  # n > 1: the first choice is the one recorded
            delta = get(choice, "delta")
            if get(delta, "content"):
                text.append(get(delta, "content"))
            for piece in get(delta, "tool_calls") or ():
                slot = calls.setdefault(get(piece, "index", 0), {"id": "", "name": "", "arguments": ""})
                function = get(piece, "function")
                slot["id"] += get(piece, "id") or ""
                slot["name"] += get(function, "name") or ""
                slot["arguments"] += get(function, "arguments") or ""
    return "".join(text), [calls[i] for i in sorted(calls)], usage


def _usage(usage: Any, input_name: str, output_name: str, details_name: str) -> dict[str, int]:
    out = {}
    for ours, theirs in (("input_tokens", input_name), ("output_tokens", output_name)):
        value = get(usage, theirs)
        if isinstance(value, int):
            out[ours] = value
    cached = get(get(usage, details_name), "cached_tokens")
    if isinstance(cached, int) and cached:
        out["cached_input_tokens"] = cached
    return out


# --- responses API -------------------------------------------------------------------------


_FIRST_OUTPUT = frozenset({"response.output_text.delta", "response.refusal.delta",
                           "response.function_call_arguments.delta"})


def _responses_token(item: Any) -> bool:
    return get(item, "type") in _FIRST_OUTPUT


def _response_input(request: dict[str, Any]) -> list[dict[str, str]]:
    messages = []
    instructions = request.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    items = request.get("input")
    if isinstance(items, str):
        return [*messages, {"role": "user", "content": items}]
    for item in items or ():
        kind = get(item, "type", "message")
        if kind == "function_call":
            messages.append({"role": "assistant", "content": tool_call_text(get(item, "name", ""), get(item, "arguments", ""))})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "content": text_of(get(item, "output"))})
        elif kind == "message" or get(item, "role"):
            messages.append({"role": str(get(item, "role", "user")), "content": text_of(get(item, "content"))})
    return messages


def _responses_event(call: Call) -> dict[str, Any]:
    event: dict[str, Any] = {"input": _response_input(call.request)}
    response = call.result
    if call.streamed:
        response = next((get(e, "response") for e in reversed(call.chunks)
                         if get(e, "type") in ("response.completed", "response.incomplete", "response.failed")), None)
        if response is None:  # the stream ended early: the text deltas that did arrive
            event["output"] = "".join(get(e, "delta") or "" for e in call.chunks
                                      if get(e, "type") == "response.output_text.delta")
            return event
    text, tool_calls = [], []
    for item in get(response, "output") or ():
        if get(item, "type") == "message":
            text.append(text_of(get(item, "content")))
        elif get(item, "type") == "function_call":
            tool_calls.append({"id": get(item, "call_id", ""), "name": get(item, "name", ""),
                               "arguments": get(item, "arguments", "")})
    event["output"] = "\n".join(t for t in text if t)
    if tool_calls:
        event["tool_calls"] = tool_calls
    usage = get(response, "usage")
    if usage is not None:
        event["usage"] = _usage(usage, "input_tokens", "output_tokens", "input_tokens_details")
    error = get(response, "error")
    if error is not None and not call.error:
        event["error"] = f"{get(error, 'code', '')}: {get(error, 'message', '')}"
    return event
