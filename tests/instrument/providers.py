"""A local stand-in for the OpenAI and Anthropic APIs on 127.0.0.1, in their documented wire
formats (JSON bodies and server-sent events), so the real client packages run unchanged and
nothing leaves the machine.

The requested model picks the behaviour: `...-tools` answers with a tool call, `error-429` and
`error-500` fail with that status, `slow` answers after `SLOW_S` seconds (for client timeouts).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPLY = "Paris is the capital of France."
SLOW_S = 3.0
USAGE = {"input": 21, "output": 7, "cached": 5}


class ProviderServer:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []  # (path, body) as received
        handler = type("Handler", (_Handler,), {"server_state": self})
        self._http = _Server(("127.0.0.1", 0), handler)
        self._http.daemon_threads = True
        self.port = self._http.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def __enter__(self) -> ProviderServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up is not news
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server_state: ProviderServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

    def log_message(self, *_args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        path = self.path.split("?")[0]
        self.server_state.requests.append((path, body))
        model = str(body.get("model", ""))
        if model.startswith("error-"):
            status = int(model.removeprefix("error-"))
            kind = "rate_limit_error" if status == 429 else "api_error"
            self._json({"error": {"message": f"simulated {status}", "type": kind}}, status, retry_after=True)
            return
        if model == "slow":
            time.sleep(SLOW_S)
        tools = model.endswith("-tools")
        if path.endswith("/chat/completions"):
            self._answer(body, _chat(model, tools), _chat_chunks(model, tools, body))
        elif path.endswith("/responses"):
            self._answer(body, _response(model, tools), _response_events(model, tools))
        elif path.endswith("/messages"):
            self._answer(body, _message(model, tools), _message_events(model, tools))
        else:
            self._json({"error": {"message": f"no route {path}"}}, 404)

    def _answer(self, body: dict[str, Any], whole: dict[str, Any], events: list[tuple[str | None, Any]]) -> None:
        if not body.get("stream"):
            self._json(whole, 200)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for name, data in events:
            text = (f"event: {name}\n" if name else "") + f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"
            raw = text.encode()
            self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _json(self, doc: dict[str, Any], status: int, *, retry_after: bool = False) -> None:
        raw = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        if retry_after:
            self.send_header("retry-after", "0")
        self.end_headers()
        self.wfile.write(raw)


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


# --- OpenAI chat completions ------------------------------------------------------------------

_TOOL_ARGS = '{"city": "Paris"}'


def _chat_usage() -> dict[str, Any]:
    return {"prompt_tokens": USAGE["input"], "completion_tokens": USAGE["output"],
            "total_tokens": USAGE["input"] + USAGE["output"], "prompt_tokens_details": {"cached_tokens": USAGE["cached"]}}


def _chat(model: str, tools: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None if tools else REPLY}
    if tools:
        message["tool_calls"] = [{"id": "call_1", "type": "function",
                                  "function": {"name": "get_weather", "arguments": _TOOL_ARGS}}]
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tools else "stop",
                         "logprobs": None}],
            "usage": _chat_usage()}


def _chat_chunks(model: str, tools: bool, body: dict[str, Any]) -> list[tuple[str | None, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> tuple[None, dict[str, Any]]:
        return None, {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                      "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    if tools:
        chunks.append(chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                             "function": {"name": "get_weather", "arguments": ""}}]}))
        chunks += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
                   for part in (_TOOL_ARGS[:9], _TOOL_ARGS[9:])]
    else:
        chunks += [chunk({"content": word}) for word in _words(REPLY)]
    chunks.append(chunk({}, "tool_calls" if tools else "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        chunks.append((None, {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
                              "model": model, "choices": [], "usage": _chat_usage()}))
    chunks.append((None, "[DONE]"))
    return chunks


# --- OpenAI responses -----------------------------------------------------------------------------


def _response(model: str, tools: bool) -> dict[str, Any]:
    output: list[dict[str, Any]]
    if tools:
        output = [{"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
                   "arguments": _TOOL_ARGS, "status": "completed"}]
    else:
        output = [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": REPLY, "annotations": []}]}]
    return {"id": "resp_1", "object": "response", "created_at": 1_700_000_000, "status": "completed", "model": model,
            "output": output, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "usage": {"input_tokens": USAGE["input"], "output_tokens": USAGE["output"],
                      "total_tokens": USAGE["input"] + USAGE["output"],
                      "input_tokens_details": {"cached_tokens": USAGE["cached"]},
                      "output_tokens_details": {"reasoning_tokens": 0}}}


def _response_events(model: str, tools: bool) -> list[tuple[str | None, Any]]:
    """The documented order: created, then per output item added, its parts and deltas, done."""
    whole = _response(model, tools)
    started = {**whole, "status": "in_progress", "output": [], "usage": None}
    events: list[dict[str, Any]] = [{"type": "response.created", "response": started}]
    for index, item in enumerate(whole["output"]):
        if item["type"] == "function_call":
            events += [
                {"type": "response.output_item.added", "output_index": index, "item": {**item, "arguments": ""}},
                {"type": "response.function_call_arguments.delta", "item_id": item["id"], "output_index": index,
                 "delta": item["arguments"]},
                {"type": "response.function_call_arguments.done", "item_id": item["id"], "output_index": index,
                 "arguments": item["arguments"]},
            ]
        else:
            part = {"type": "output_text", "text": "", "annotations": []}
            events += [
                {"type": "response.output_item.added", "output_index": index,
                 "item": {**item, "status": "in_progress", "content": []}},
                {"type": "response.content_part.added", "item_id": item["id"], "output_index": index,
                 "content_index": 0, "part": part},
                *({"type": "response.output_text.delta", "item_id": item["id"], "output_index": index,
                   "content_index": 0, "delta": word} for word in _words(REPLY)),
                {"type": "response.output_text.done", "item_id": item["id"], "output_index": index,
                 "content_index": 0, "text": REPLY},
                {"type": "response.content_part.done", "item_id": item["id"], "output_index": index,
                 "content_index": 0, "part": {**part, "text": REPLY}},
            ]
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    events.append({"type": "response.completed", "response": whole})
    return [(event["type"], {**event, "sequence_number": i}) for i, event in enumerate(events)]


# --- Anthropic messages -----------------------------------------------------------------------------


def _message(model: str, tools: bool) -> dict[str, Any]:
    content: list[dict[str, Any]] = (
        [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}] if tools
        else [{"type": "text", "text": REPLY}])
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": "tool_use" if tools else "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": USAGE["input"], "output_tokens": USAGE["output"],
                      "cache_read_input_tokens": USAGE["cached"], "cache_creation_input_tokens": 0}}


def _message_events(model: str, tools: bool) -> list[tuple[str | None, Any]]:
    start = {**_message(model, tools), "content": [], "stop_reason": None,
             "usage": {"input_tokens": USAGE["input"], "output_tokens": 1, "cache_read_input_tokens": USAGE["cached"],
                       "cache_creation_input_tokens": 0}}
    events: list[tuple[str | None, Any]] = [("message_start", {"type": "message_start", "message": start})]
    if tools:
        events.append(("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "input_json_delta", "partial_json": part}})
                   for part in (_TOOL_ARGS[:9], _TOOL_ARGS[9:])]
    else:
        events.append(("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": word}}) for word in _words(REPLY)]
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use" if tools else "end_turn",
                                                               "stop_sequence": None},
                           "usage": {"output_tokens": USAGE["output"]}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return events
