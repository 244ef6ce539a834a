"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1 for the evaluation tests:
the real `openai` client talks to it in the documented wire format, and each test decides what it
answers (`reply(body) -> Reply`), so malformed verdicts, outages and slow answers are tried."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    text: str = ""
    status: int = 200
    input_tokens: int = 0  # 0: the words of the prompt
    output_tokens: int = 0  # 0: the words of the answer
    delay_s: float = 0.0


def tokens(text: str) -> int:
    return max(1, len(text.split()))


class ChatServer:
    def __init__(self, reply: Callable[[dict[str, Any]], Reply]) -> None:
        self.reply = reply
        self.requests: list[dict[str, Any]] = []
        self.usage = {"input": 0, "output": 0}  # what it billed, for the accounting checks
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"state": self})
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def __enter__(self) -> ChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()


class _Handler(BaseHTTPRequestHandler):
    state: ChatServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *_args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        with self.state._lock:
            self.state.requests.append(body)
        reply = self.state.reply(body)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if reply.status != 200:
            self._send({"error": {"message": f"scripted {reply.status}", "type": "api_error"}}, reply.status)
            return
        prompt = " ".join(m.get("content") or "" for m in body.get("messages", []))
        usage_in = reply.input_tokens or tokens(prompt)
        usage_out = reply.output_tokens or tokens(reply.text)
        with self.state._lock:
            self.state.usage["input"] += usage_in
            self.state.usage["output"] += usage_out
        self._send({"id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": body.get("model"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                                 "finish_reason": "stop", "logprobs": None}],
                    "usage": {"prompt_tokens": usage_in, "completion_tokens": usage_out,
                              "total_tokens": usage_in + usage_out}}, 200)

    def _send(self, doc: dict[str, Any], status: int) -> None:
        raw = json.dumps(doc).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
        except ConnectionError:  # the client timed out and hung up
            pass
