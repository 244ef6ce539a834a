"""The HTTP ingest server (`llmwatch ingest`, part of `llmwatch up`), default 127.0.0.1:4318.

* `POST /v1/traces`: OTLP/HTTP, protobuf or JSON, gzip accepted. LLM spans become trace events
  (ingest/http/otlp.py); other spans are ignored and counted. The answer is an ExportTraceServiceResponse
  in the request's encoding, with `partial_success` naming spans that could not become events.
* `POST /v1/events`: trace events (or feedback) as JSON, one object or an array, validated against
  the schema (the worker's own parser, so both agree). A missing event_id is derived from the
  event's content, so a client that retries after a 503 stores the event once; a missing trace_id
  comes from the same digest, a missing timestamp is the time of receipt. (Two identical events
  without ids are therefore one event: send an event_id or a timestamp to keep them apart.)
  All or nothing: one invalid event rejects the request with 400 and the reasons.

Bodies are read whole, up to `--ingest-max-body-bytes` before and after decompression; a bigger
one is a 413, never a truncated parse.

Both answer only after Kafka acknowledged every event (acks=all); a broker failure is 503 with
Retry-After, which OTLP exporters retry. With `--ingest-api-key` set, requests need
`Authorization: Bearer <key>` or `X-Api-Key: <key>`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import uuid
import zlib
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from llmwatch.core.events import Rejection, has_duplicate_keys, nesting_depth, parse
from llmwatch.core.processes import return_big_buffers_to_the_os, trim_heap
from llmwatch.core.settings import Settings
from llmwatch.ingest.http.otlp import OtlpError, decode_request, span_events

log = logging.getLogger(__name__)

__all__ = ["build_app", "run_ingest"]

PROTOBUF = "application/x-protobuf"
# Ids of events that arrive without one: a digest of the content.
_CONTENT_NS = uuid.UUID("9a4e1f0c-2b7d-4c55-8e3a-5f6d7c8b9a01")


class Ingest:
    def __init__(self, settings: Settings, producer: Any) -> None:
        self.settings = settings
        self.producer = producer
        self.limits = settings.event_limits
        self.counts = {"events": 0, "otlp_spans_other": 0, "otlp_spans_rejected": 0}

    # -- helpers -------------------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        key = self.settings.ingest_api_key
        if not key:
            return True
        given = request.headers.get("X-Api-Key") or request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), key.encode())

    async def _body(self, request: web.Request) -> bytes:
        limit = self.settings.ingest_max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
        # The whole body, however it is chunked on the wire (content.read(n) returns what is
        # buffered so far, which cut big exporter batches short).
        chunks, size = [], 0
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > limit:
                request[_BIG_BODY] = True
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
            chunks.append(chunk)
        body = b"".join(chunks)
        del chunks
        encoding = request.headers.get("Content-Encoding", "identity").lower()
        # A compressed body may expand to the limit (or be a bomb stopped there).
        request[_BIG_BODY] = size >= _BIG_BODY_BYTES or encoding != "identity"
        try:
            if encoding == "gzip":
                body = _bounded(zlib.decompressobj(16 + zlib.MAX_WBITS), body, limit)
            elif encoding == "deflate":
                body = _bounded(zlib.decompressobj(), body, limit)
            elif encoding != "identity":
                raise web.HTTPUnsupportedMediaType(text=f"Content-Encoding {encoding} is not supported (gzip, deflate)")
        except zlib.error as exc:
            raise web.HTTPBadRequest(text=f"body does not decompress: {exc}") from None
        return body

    async def _produce(self, values: list[tuple[bytes, bytes]]) -> None:
        """Send (key, value) pairs and wait for every acknowledgement."""
        try:
            futures = [await self.producer.send(self.settings.traces_topic, value=v, key=k) for k, v in values]
            await asyncio.gather(*futures)
        except Exception as exc:  # the broker is down or refusing: the client should retry
            log.warning("ingest: Kafka did not acknowledge %d events: %s", len(values), exc)
            raise web.HTTPServiceUnavailable(text="Kafka did not acknowledge the events; retry",
                                             headers={"Retry-After": "5"}) from None
        self.counts["events"] += len(values)

    # -- endpoints -------------------------------------------------------------------------------

    async def traces(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            raise web.HTTPUnauthorized(text="missing or wrong API key")
        content_type = request.headers.get("Content-Type", PROTOBUF).split(";")[0].strip().lower()
        if content_type not in (PROTOBUF, "application/json"):
            raise web.HTTPUnsupportedMediaType(text=f"Content-Type {content_type} (use {PROTOBUF} or application/json)")
        body = await self._body(request)
        try:
            export = decode_request(body, content_type)
        except OtlpError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        result = span_events(export)
        now = datetime.now(UTC)
        accepted, problems = [], list(result.errors)
        for event in result.events:
            raw = orjson.dumps(event)
            parsed = parse(raw, self.limits, now)
            if isinstance(parsed, Rejection):
                problems.append(f"span {event.get('span_id')}: {parsed.reason}: {parsed.detail}")
                continue
            accepted.append((event["trace_id"].encode(), raw))
        await self._produce(accepted)
        rejected = len(problems)
        self.counts["otlp_spans_other"] += result.other_spans
        self.counts["otlp_spans_rejected"] += rejected
        return _otlp_response(content_type, rejected, "; ".join(problems[:5]))

    async def events(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            raise web.HTTPUnauthorized(text="missing or wrong API key")
        body = await self._body(request)
        try:
            document = orjson.loads(body)  # strict UTF-8, no NaN, at most 1024 levels deep
        except orjson.JSONDecodeError as exc:
            raise web.HTTPBadRequest(text=f"not JSON: {exc}") from None
        depth_limit = self.limits.max_depth + 1  # an array of events is one level more
        if nesting_depth(document, depth_limit) > depth_limit:
            raise web.HTTPBadRequest(text=f"nesting deeper than {self.limits.max_depth} levels")
        if has_duplicate_keys(body, document):
            raise web.HTTPBadRequest(text="an object repeats a key")
        items = document if isinstance(document, list) else [document]
        now = datetime.now(UTC)
        values, errors = [], []
        for index, item in enumerate(items):
            if isinstance(item, dict) and item.get("kind") != "feedback":
                _fill_in(item, now)
            raw = orjson.dumps(item)
            parsed = parse(raw, self.limits, now)
            if isinstance(parsed, Rejection):
                errors.append({"index": index, "reason": parsed.reason, "detail": parsed.detail})
            else:
                values.append((parsed.trace_id.encode(), raw))
        if errors:
            return web.json_response({"accepted": 0, "errors": errors[:50]}, status=400)
        await self._produce(values)
        return web.json_response({"accepted": len(values)})

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True, **self.counts})


def _fill_in(event: dict[str, Any], now: datetime) -> None:
    """event_id and trace_id from a digest of the content as sent, timestamp from now."""
    if "event_id" in event and "trace_id" in event and "timestamp" in event:
        return
    digest = uuid.uuid5(_CONTENT_NS, orjson.dumps(event, option=orjson.OPT_SORT_KEYS).decode())
    event.setdefault("event_id", str(digest))
    event.setdefault("trace_id", digest.hex)
    event.setdefault("timestamp", now.isoformat(timespec="milliseconds"))


def _bounded(decompressor: Any, body: bytes, limit: int) -> bytes:
    """Decompress, refusing bodies that expand past the limit (a gzip bomb)."""
    out = decompressor.decompress(body, limit + 1)
    if len(out) > limit or decompressor.unconsumed_tail:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(out))
    return out


def _otlp_response(content_type: str, rejected: int, message: str) -> web.Response:
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message[:1000]
    if content_type == "application/json":
        return web.json_response(json_format.MessageToDict(response))
    return web.Response(body=response.SerializeToString(), content_type=PROTOBUF)


# A request whose body (read or decompressed) reached this size is followed by a heap trim.
_BIG_BODY, _BIG_BODY_BYTES = "llmwatch.big_body", 1 << 20


class _HeapTrimmer:
    """Trims the heap a moment after requests with big bodies, at most once per `delay_s`:
    a burst of them is followed by one trim, once their buffers are freed."""

    def __init__(self, delay_s: float = 1.0) -> None:
        self.delay_s = delay_s
        self.pending: asyncio.TimerHandle | None = None

    def soon(self) -> None:
        if self.pending is None:
            self.pending = asyncio.get_running_loop().call_later(self.delay_s, self._trim)

    def _trim(self) -> None:
        self.pending = None
        trim_heap()


def _trimming_after_big_bodies(trimmer: _HeapTrimmer) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            # aiohttp keeps the error response (the exception) after sending it; its traceback
            # would keep every frame's locals alive with it: the request body, decompressed.
            raise exc.with_traceback(None) from None
        finally:
            if request.get(_BIG_BODY):
                trimmer.soon()

    return middleware


def build_app(settings: Settings, producer: Any) -> web.Application:
    ingest = Ingest(settings, producer)
    app = web.Application(client_max_size=settings.ingest_max_body_bytes + 1024,
                          middlewares=[_trimming_after_big_bodies(_HeapTrimmer())])
    app.router.add_post("/v1/traces", ingest.traces)
    app.router.add_post("/v1/events", ingest.events)
    app.router.add_get("/health", ingest.health)
    app["ingest"] = ingest
    return app


async def _serve(settings: Settings) -> None:
    from aiokafka import AIOKafkaProducer

    return_big_buffers_to_the_os()
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=5,
                                compression_type="lz4", max_request_size=max(1_048_576, settings.max_event_bytes * 2))
    await producer.start()
    # We decompress ourselves, with the body limit applied to the decompressed size (gzip bombs).
    runner = web.AppRunner(build_app(settings, producer), access_log=None, auto_decompress=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.ingest_port)
    await site.start()
    log.info("ingest: OTLP/HTTP and /v1/events on http://%s:%d", settings.host, settings.ingest_port)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await producer.stop()


def run_ingest(settings: Settings) -> None:
    from llmwatch.core.processes import check_ports_free
    from llmwatch.ingest.kafka import ensure_llmwatch_topics

    check_ports_free(settings.host, {"ingest_port": settings.ingest_port})
    ensure_llmwatch_topics(settings)
    asyncio.run(_serve(settings))
