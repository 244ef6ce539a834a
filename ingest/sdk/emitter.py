"""The SDK apps use to emit trace events.

    from llmwatch import Emitter, Release

    llmwatch = Emitter("127.0.0.1:9092", app="support-bot",     # or "https://llmwatch-host:4318"
                       release=Release(prompt_id="answer", prompt_version="7", model="gpt-4o-mini"))
    with llmwatch.trace(input=messages, context=passages) as call:
        reply = client.chat(messages)                  # your LLM call, timed
        call.output = reply.text
        call.usage(reply.input_tokens, reply.output_tokens)
    llmwatch.flush()                                   # at shutdown

Guarantees to the host app:
* `emit` never blocks on the network and never raises: it appends to a bounded in-memory queue
  (O(1)) and a background thread serialises and produces.
* Overflow policy: when `queue_size` events are waiting (the broker is down or slow), new events
  are dropped and counted in `stats()["dropped"]`, with one warning per burst. Old events are
  kept: they are already partly sent and are the ones explaining the incident.
* Events are keyed by trace_id, so the spans of one trace stay in order on one partition.
* After `os.fork` the child starts its own producer thread (librdkafka does not survive fork).
* Events leave in batches: the producer waits up to `LINGER_MS` (50 ms, invisible next to an LLM
  call) to fill a request. Against 5 ms, that is a tenth of the produce requests at a steady
  rate, ~40 % less CPU in the app's producer and in the embedded broker, which pays ~1 ms per
  request (docs/benchmarks.md, ninth round). `producer_config={"linger.ms": ...}` overrides it.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from llmwatch.ingest.sdk.spans import Span

log = logging.getLogger(__name__)

LINGER_MS = 50

__all__ = ["Emitter", "LLMCall", "Release"]

Messages = Sequence[Mapping[str, str]]


@dataclass(frozen=True)
class Release:
    """What produced an answer: the prompt version and the model (OTel gen_ai.request.model)."""

    prompt_id: str = ""
    prompt_version: str = ""
    model: str = ""
    provider: str = ""

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}


def _new_event_id() -> str:
    """A random (version 4) UUID. The Mersenne Twister is several times cheaper than
    os.urandom, Python re-seeds it after fork, and event ids need uniqueness, not secrecy."""
    value = random.getrandbits(128)
    value = (value & ~(0xF000 << 64)) | (4 << 76)  # version 4
    value = (value & ~(0xC000 << 48)) | (0x8000 << 48)  # RFC 4122 variant
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Emitter:
    """Sends trace events from a background thread. Thread-safe and fork-safe.

    `destination` is Kafka's bootstrap servers (`kafka-1:9092,kafka-2:9092`), or the URL of
    llmwatch ingest (`https://llmwatch.example.com:4318`) for apps that cannot reach Kafka: the
    same guarantees, over HTTP (ingest/sdk/http_sender.py), with `api_key` if the server wants one."""

    def __init__(
        self,
        destination: str,
        *,
        app: str = "",
        release: Release | None = None,
        environment: str = "",
        topic: str = "llm.traces",
        queue_size: int = 100_000,
        producer_config: Mapping[str, Any] | None = None,
        api_key: str = "",
    ) -> None:
        if queue_size < 1:
            msg = f"queue_size must be at least 1, got {queue_size}"
            raise ValueError(msg)
        self.over_http = destination.startswith(("http://", "https://"))
        if self.over_http:
            from llmwatch.ingest.sdk.http_sender import HttpProducer

            HttpProducer(destination)  # a malformed URL raises here, in the caller's hands
        self._api_key = api_key
        self.app = app
        self.release = release
        self.environment = environment
        self.topic = topic
        self.queue_size = queue_size
        self._destination = destination
        self._producer_config = dict(producer_config or {})
        # Events, or functions that build one on the background thread (emit_later).
        self._queue: collections.deque[dict[str, Any] | Callable[[], Mapping[str, Any] | None]] = collections.deque()
        self._busy = False  # the thread holds a record it has popped but not yet produced
        self._closed = False
        self._close_deadline = 0.0
        self._dropped = 0
        self._delivered = 0
        self._failed = 0
        self._warned_at = 0.0
        self._thread: threading.Thread | None = None
        self._producer: Any = None
        self._start()
        _live_emitters.add(self)

    # --- the caller's side: cheap and never raising ---------------------------------------

    def emit(self, event: Mapping[str, Any]) -> bool:
        """Queue one trace event; True if queued, False if dropped (queue full or closed).

        The caller's cost is a dict copy and a deque append: the background thread fills
        event_id (set it yourself if you need it), trace_id (defaults to the event_id), app,
        release and environment, serialises and produces. `timestamp` is taken now."""
        try:
            if self._closed or len(self._queue) >= self.queue_size:
                self._drop()
                return False
            record = dict(event)
            if "timestamp" not in record:
                record["timestamp"] = int(time.time() * 1000)
            self._queue.append(record)  # deque.append is atomic; the thread polls the queue
            return True
        except Exception:  # the host app must never see our failure
            log.exception("llmwatch emitter could not queue an event")
            self._drop()
            return False

    def emit_later(self, build: Callable[[], Mapping[str, Any] | None]) -> bool:
        """Queue a function that builds the event on the background thread (None: emit nothing).

        Instrumentation keeps its conversion work off the app's thread this way: the caller pays
        for a closure and a deque append. `build` must only read what the app no longer changes."""
        try:
            if self._closed or len(self._queue) >= self.queue_size:
                self._drop()
                return False
            self._queue.append(build)
            return True
        except Exception:
            log.exception("llmwatch emitter could not queue an event")
            self._drop()
            return False

    def span(self, name: str, *, kind: str = "chain", input: Any = None,  # noqa: A002 - the span's input
             **attributes: Any) -> Span:
        """A context manager for one step of a trace that is not an LLM call: a tool call, a
        retrieval, an agent step. LLM calls and spans made inside it become its children.

            with llmwatch.span("search", kind="retrieval", input=query) as span:
                span.output = hits"""
        from llmwatch.ingest.sdk.spans import Span

        return Span(self, name, kind=kind, input=input, attributes=attributes)

    def feedback(self, trace_id: str, score: float, comment: str = "", **fields: Any) -> None:
        """Record a user's rating of a trace: score in [0, 1], 1 = best."""
        record = {"kind": "feedback", "trace_id": trace_id, "score": score, **fields}
        if comment:
            record["comment"] = comment
        self.emit(record)

    def trace(
        self,
        *,
        input: str | Messages,  # noqa: A002 - the contract's field name
        context: Sequence[str | Mapping[str, Any]] | None = None,
        trace_id: str | None = None,
        release: Release | None = None,
        **fields: Any,
    ) -> LLMCall:
        """A context manager that times an LLM call and emits its event on exit."""
        return LLMCall(self, input=input, context=context, trace_id=trace_id, release=release, fields=fields)

    def observe(self, **fields: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: the first positional argument (or `prompt=`) is the input, str(return) the
        output; latency and errors are recorded."""

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                prompt = args[0] if args else kwargs.get("prompt", "")
                with self.trace(input=prompt if isinstance(prompt, (str, list)) else str(prompt), **fields) as call:
                    result = fn(*args, **kwargs)
                    call.output = str(result)
                    return result

            wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
            wrapper.__name__ = getattr(fn, "__name__", "wrapper")
            return wrapper

        return decorate

    def stats(self) -> dict[str, int]:
        """queued, delivered, failed (broker refused), dropped (queue full or closed)."""
        return {
            "queued": len(self._queue),
            "delivered": self._delivered,
            "failed": self._failed,
            "dropped": self._dropped,
        }

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued event is acknowledged by the broker (True) or timeout."""
        deadline = time.monotonic() + timeout_s
        while self._queue or self._busy:
            if time.monotonic() >= deadline or self._thread is None or not self._thread.is_alive():
                return not (self._queue or self._busy)
            time.sleep(0.001)
        producer = self._producer
        if producer is None:
            return True
        return producer.flush(max(0.0, deadline - time.monotonic())) == 0

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush, then stop the background thread; later emits are dropped and counted."""
        deadline = time.monotonic() + timeout_s
        self.flush(timeout_s)
        self._close_deadline = deadline
        self._closed = True
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()) + 1.0)

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the background side -----------------------------------------------------------------

    def _drop(self) -> None:
        self._dropped += 1
        now = time.monotonic()
        if now - self._warned_at > 10:
            self._warned_at = now
            log.warning(
                "llmwatch emitter dropped events (%d so far): queue full at %d or closed",
                self._dropped,
                self.queue_size,
            )

    def _start(self) -> None:
        self._producer = None
        self._thread = threading.Thread(target=self._run, name="llmwatch-emitter", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        # The parent's thread and librdkafka handle are gone in the child; queued events
        # belong to the parent, which sends them.
        self._queue = collections.deque()
        self._busy = False
        if not self._closed:
            self._start()

    def _make_producer(self) -> Any:
        if self.over_http:
            from llmwatch.ingest.sdk.http_sender import HttpProducer

            return HttpProducer(self._destination, api_key=self._api_key, **self._producer_config)
        from confluent_kafka import Producer

        from llmwatch.core.kafka_config import producer_config

        return Producer(producer_config(self._destination, **{"linger.ms": LINGER_MS, **self._producer_config}))

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is None:
            self._delivered += 1
        else:
            self._failed += 1
            log.warning("llmwatch event not delivered: %s", err)

    def _run(self) -> None:
        try:
            self._producer = self._make_producer()
        except Exception:
            log.exception("llmwatch emitter could not create its producer; events will be dropped")
            self._closed = True
            self._dropped += len(self._queue)
            self._queue.clear()
            return
        producer = self._producer
        queue = self._queue
        while True:
            if not queue:
                if self._closed:
                    undelivered = producer.flush(max(0.0, self._close_deadline - time.monotonic()))
                    if undelivered:
                        self._dropped += undelivered
                        log.warning("llmwatch emitter closed with %d events undelivered", undelivered)
                    self._producer = None  # librdkafka's threads and sockets go with it
                    return
                # Serves delivery callbacks and waits without the GIL; polling instead of a
                # wake-up event keeps emit() free of locks (5 ms: a tenth of the producer's linger).
                producer.poll(0.005)
                continue
            self._busy = True
            try:
                while queue:
                    item = queue.popleft()
                    record = item if isinstance(item, dict) else self._build(item)
                    if record is not None:
                        self._produce(producer, self._complete(record))
            finally:
                self._busy = False
            producer.poll(0)

    def _build(self, build: Callable[[], Mapping[str, Any] | None]) -> dict[str, Any] | None:
        try:
            record = build()
        except Exception:
            log.exception("llmwatch could not build an event; dropped")
            self._dropped += 1
            return None
        return None if record is None else dict(record)

    def _complete(self, record: dict[str, Any]) -> dict[str, Any]:
        """Fill the defaults emit() left to this thread."""
        if "event_id" not in record:
            record["event_id"] = _new_event_id()
        if "trace_id" not in record:
            record["trace_id"] = record["event_id"]
        if self.app and "app" not in record:
            record["app"] = self.app
        if self.release is not None and "release" not in record and record.get("kind", "trace") == "trace":
            record["release"] = self.release.as_dict()
        if self.environment and "environment" not in record and record.get("kind") != "feedback":
            record["environment"] = self.environment
        return record

    def _produce(self, producer: Any, record: dict[str, Any]) -> None:
        try:
            value = orjson.dumps(record, default=_json_default)
        except TypeError:
            log.exception("llmwatch event is not JSON-serialisable; dropped")
            self._dropped += 1
            return
        key = str(record.get("trace_id", "")).encode()
        while True:
            try:
                producer.produce(self.topic, value, key=key, on_delivery=self._on_delivery)
                return
            except BufferError:
                if self._closed:
                    # Closing with the broker unreachable: what cannot be queued is dropped,
                    # counted, and the thread ends instead of waiting forever.
                    self._dropped += 1
                    return
                # librdkafka's own queue is full: serve callbacks and wait, on our thread only.
                producer.poll(0.05)
            except Exception:
                log.exception("llmwatch producer refused an event; dropped")
                self._dropped += 1
                return


class LLMCall:
    """One LLM call being timed; set `output` (and optionally usage/cost/tags) inside the block."""

    def __init__(
        self,
        emitter: Emitter,
        *,
        input: str | Messages,  # noqa: A002
        context: Sequence[str | Mapping[str, Any]] | None,
        trace_id: str | None,
        release: Release | None,
        fields: dict[str, Any],
    ) -> None:
        self._emitter = emitter
        self.event: dict[str, Any] = {"input": input if isinstance(input, str) else [dict(m) for m in input], **fields}
        if context is not None:
            self.event["context"] = list(context)
        if trace_id is not None:
            self.event["trace_id"] = trace_id
        if release is not None:
            self.event["release"] = release.as_dict()
        self.output: str | Messages = ""
        self._started = 0.0

    @property
    def trace_id(self) -> str:
        return self.event.setdefault("trace_id", _new_event_id())

    def usage(self, input_tokens: int | None = None, output_tokens: int | None = None) -> None:
        usage = {}
        if input_tokens is not None:
            usage["input_tokens"] = int(input_tokens)
        if output_tokens is not None:
            usage["output_tokens"] = int(output_tokens)
        self.event["usage"] = usage

    def __enter__(self) -> LLMCall:
        self._started = time.perf_counter()
        self.event["timestamp"] = int(time.time() * 1000)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, _tb: Any) -> None:
        self.event["latency_ms"] = round((time.perf_counter() - self._started) * 1000, 3)
        output = self.output
        self.event["output"] = output if isinstance(output, str) else [dict(m) for m in output]
        if exc is not None:
            self.event["error"] = f"{exc_type.__name__}: {exc}" if exc_type else str(exc)
        self._emitter.emit(self.event)
        # The app's own exception propagates unchanged.


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError


_live_emitters: weakref.WeakSet[Emitter] = weakref.WeakSet()


def _reinit_after_fork() -> None:
    for emitter in list(_live_emitters):
        emitter._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)
