"""The demo's stand-in LLM: an OpenAI-compatible chat-completions server on 127.0.0.1 that the
demo's experiments and judges call, so `llmwatch demo` shows evaluations with no provider and no
network. It is a scripted simulation of a model, not a model:

* A judge's request (its system message starts "You are an evaluator") gets a verdict from a rule:
  a rubric about politeness fails rude and passive-aggressive answers (which a lexical toxicity
  model misses); any other fails an output that states a number appearing nowhere in the context,
  or that is rude.
* Any other request is a candidate answering a docs-rag question: a system prompt saying to answer
  only from the context gets the supported answer of the demo corpus; any other gets the invented one.

Usage is counted as one token per whitespace-separated word, so cost accounting can be checked
exactly against what the server billed (bench/evaluations.py). The same server answers with any
`reply` function: the tests script outages, slow and malformed answers with it.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from llmwatch.ingest.demo import corpus

__all__ = ["ChatServer", "Reply", "demo_reply", "tokens"]

_NUMBER = re.compile(r"\d[\d,.]*\d|\d")
_RUDE = re.compile(r"\b(idiot|moron|stupid|dumb|shut up|fool|pathetic)\b", re.IGNORECASE)
_CURT = re.compile(r"already told you|before asking|so hard|not complicated|hundred times|if you bother|"
                   r"reading it this time|wasting my time|go away", re.IGNORECASE)


def tokens(text: str) -> int:
    return len(text.split())


def _tag(text: str, name: str) -> str:
    match = re.search(rf"<{name}>\n(.*?)\n</{name}>", text, re.DOTALL)
    return match.group(1) if match else ""


def judge_answer(system: str, case: str) -> str:
    output, context = _tag(case, "output"), _tag(case, "context")
    if "polite" in system.lower():
        curt = _RUDE.search(output) or _CURT.search(output)
        return json.dumps({"verdict": "fail" if curt else "pass",
                           "reason": "The tone is dismissive." if curt else "Courteous."})
    if _RUDE.search(output):
        return json.dumps({"verdict": "fail", "reason": "The answer insults the user."})
    invented = [n for n in _NUMBER.findall(output) if context and n not in context]
    if invented:
        return json.dumps({"verdict": "fail", "reason": f"{invented[0]} appears nowhere in the context."})
    return json.dumps({"verdict": "pass", "reason": "Supported and polite."})


def candidate_answer(system: str, question: str) -> str:
    fact = next((f for f in corpus.RAG_FACTS if str(f["question"]) in question), None)
    if fact is None:
        return "I can only answer questions about Acme Cloud's documentation."
    return str(fact["answer"] if "only from the" in system.lower() else fact["unsupported"])


@dataclass
class Reply:
    """What the server answers to one request: a text, or an error status; after a delay."""

    text: str = ""
    status: int = 200
    delay_s: float = 0.0


def demo_reply(body: dict[str, Any]) -> Reply:
    """The demo's model: a judge's verdict by rule, or a docs-rag candidate's answer."""
    messages = [m for m in body["messages"] if isinstance(m.get("content"), str)]
    system = next((m["content"] for m in messages if m.get("role") == "system"), "")
    last = messages[-1]["content"] if messages else ""
    return Reply(judge_answer(system, last) if system.startswith("You are an evaluator") else candidate_answer(system, last))


class ChatServer:
    """An OpenAI chat-completions endpoint on `host` whose answers come from `reply(body)` (the
    demo's by default; tests script theirs). Every answer's usage is counted in `billed`, and
    every request body kept in `requests` when `keep_requests` is set."""

    def __init__(self, reply: Callable[[dict[str, Any]], Reply] = demo_reply, *, host: str = "127.0.0.1", port: int = 0,
                 delay_s: float = 0.0, keep_requests: bool = False) -> None:
        self.reply, self.delay_s, self.keep_requests = reply, delay_s, keep_requests
        self.billed = {"input": 0, "output": 0, "requests": 0}
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"state": self})
        self._http = ThreadingHTTPServer((host, port), handler)
        self._http.daemon_threads = True
        self.port = self._http.server_address[1]
        self.url = f"http://{host}:{self.port}/v1"
        self._thread: threading.Thread | None = None

    def start(self) -> ChatServer:
        self._thread = threading.Thread(target=self._http.serve_forever, name="chat-server", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._http.serve_forever()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    state: ChatServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *_args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("content-length", 0))
        if not self.path.rstrip("/").endswith("/chat/completions") or length > 1_000_000:
            self._send({"error": {"message": "POST /v1/chat/completions, at most 1 MB"}}, 404)
            return
        try:
            body = json.loads(self.rfile.read(length))
            messages = [m for m in body["messages"] if isinstance(m.get("content"), str)]
        except (ValueError, KeyError, TypeError, AttributeError):
            self._send({"error": {"message": "a JSON body with messages"}}, 400)
            return
        if self.state.keep_requests:
            with self.state.lock:
                self.state.requests.append(body)
        reply = self.state.reply(body)
        if reply.delay_s or self.state.delay_s:
            time.sleep(reply.delay_s or self.state.delay_s)
        if reply.status != 200:
            self._send({"error": {"message": f"status {reply.status}", "type": "api_error"}}, reply.status)
            return
        usage_in = sum(tokens(m["content"]) for m in messages)
        usage_out = tokens(reply.text)
        with self.state.lock:
            self.state.billed["input"] += usage_in
            self.state.billed["output"] += usage_out
            self.state.billed["requests"] += 1
        self._send({"id": "chatcmpl-llmwatch", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", "demo"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                                 "finish_reason": "stop"}],
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
        except ConnectionError:  # the client gave up (a timeout) and hung up
            pass
