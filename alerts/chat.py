"""One chat completion from an OpenAI-compatible endpoint (a provider, vLLM, Ollama), through the
`openai` client package: what judges and experiments call.

The client's own retries are off (max_retries=0): callers retry, because every attempt counts
against a judge's daily call budget and an experiment's rate limit.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["BILLED_UNKNOWN", "RETRYABLE", "ChatEndpoint", "Completion", "CompletionError"]


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    latency_ms: float


class CompletionError(Exception):
    """A call that produced no answer. `kind`: timeout, connection, rate_limit, server, client."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


RETRYABLE = ("timeout", "connection", "rate_limit", "server")
# A timed-out request may have been served (and billed) all the same; the others were refused.
BILLED_UNKNOWN = ("timeout",)


class ChatEndpoint:
    def __init__(self, base_url: str, *, api_key_env: str = "", timeout_s: float = 30.0) -> None:
        import openai

        key = os.environ.get(api_key_env, "") if api_key_env else ""
        # Local servers want no key, and the client refuses to start without one.
        self._client = openai.OpenAI(base_url=base_url, api_key=key or "unused", timeout=timeout_s, max_retries=0)
        self.base_url = base_url

    def complete(self, model: str, messages: list[dict[str, str]], *, max_tokens: int,
                 temperature: float = 0.0) -> Completion:
        import openai

        started = time.perf_counter()
        try:
            response: Any = self._client.chat.completions.create(
                model=model, messages=messages, max_tokens=max_tokens, temperature=temperature)  # type: ignore[arg-type]
        except openai.APITimeoutError as exc:
            raise CompletionError("timeout", f"{self.base_url}: no answer in time ({exc})") from None
        except openai.APIConnectionError as exc:
            raise CompletionError("connection", f"{self.base_url}: unreachable ({exc})") from None
        except openai.RateLimitError as exc:
            raise CompletionError("rate_limit", f"{self.base_url}: rate limited ({exc.status_code})") from None
        except openai.APIStatusError as exc:
            kind = "server" if exc.status_code >= 500 else "client"
            raise CompletionError(kind, f"{self.base_url}: HTTP {exc.status_code}: {exc.message}") from None
        latency_ms = (time.perf_counter() - started) * 1000
        choices = getattr(response, "choices", None) or []
        text = (choices[0].message.content or "") if choices and choices[0].message is not None else ""
        usage = getattr(response, "usage", None)
        return Completion(text, int(getattr(usage, "prompt_tokens", 0) or 0),
                          int(getattr(usage, "completion_tokens", 0) or 0), latency_ms)
