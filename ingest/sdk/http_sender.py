"""The SDK's HTTP transport: trace events to llmwatch ingest's `/v1/events`, for apps that cannot
reach Kafka (serverless functions, edge workers, other networks).

`HttpProducer` has the part of confluent_kafka.Producer's interface the Emitter uses (`produce`,
`poll`, `flush`), so the Emitter's guarantees hold unchanged: `emit` is a queue append on the
app's thread, and all network work happens on the Emitter's background thread, here.

- Events are sent in batches (up to `batch_events` or `batch_bytes`, or after `linger_s`), as one
  JSON array, gzip-compressed, with the API key in `X-Api-Key`.
- A refused connection, a timeout, 429 or a 5xx is retried with exponential backoff (capped at
  `max_backoff_s`). Every event carries its `event_id` (the Emitter sets it before sending), and
  the store keeps one row per event_id, so a retry whose first attempt did arrive stores nothing
  twice.
- The server accepts a batch whole or not at all; a 400 names the events it refused. Those are
  reported as failed and the rest is sent again, so one bad event never costs its neighbours.
- Any other 4xx (a wrong API key, a wrong URL) fails the batch: retrying cannot fix it.
"""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

__all__ = ["HttpProducer"]

DeliveryCallback = Callable[[Any, Any], None]
_RETRY_STATUSES = {408, 429, 500, 502, 503, 504}


class HttpProducer:
    def __init__(
        self,
        url: str,
        *,
        api_key: str = "",
        batch_events: int = 500,
        batch_bytes: int = 4 << 20,
        linger_s: float = 0.2,
        timeout_s: float = 10.0,
        max_backoff_s: float = 30.0,
        max_buffered: int = 10_000,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            msg = f"llmwatch HTTP transport needs an http:// or https:// URL, got {url!r}"
            raise ValueError(msg)
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._path = parts.path.rstrip("/") + "/v1/events"
        self._api_key = api_key
        self._batch_events, self._batch_bytes = batch_events, batch_bytes
        self._linger_s, self._timeout_s, self._max_backoff_s = linger_s, timeout_s, max_backoff_s
        self._max_buffered = max_buffered
        self._pending: list[tuple[bytes, DeliveryCallback | None]] = []
        self._pending_bytes = 0
        self._oldest = 0.0  # when the oldest pending event was buffered
        self._backoff = 0.0
        self._retry_at = 0.0
        self._connection: http.client.HTTPConnection | None = None
        # The Emitter's thread produces and polls; the app's thread may flush at the same time.
        self._lock = threading.RLock()

    # --- confluent_kafka.Producer's interface, as the Emitter uses it ---------------------------

    def produce(self, _topic: str, value: bytes, key: bytes | None = None,
                on_delivery: DeliveryCallback | None = None) -> None:
        """Buffer one event. Raises BufferError when `max_buffered` are waiting (the server is
        down): the Emitter then waits, and its own bounded queue takes the overflow."""
        with self._lock:
            if len(self._pending) >= self._max_buffered:
                raise BufferError("llmwatch HTTP transport: buffer full")
            if not self._pending:
                self._oldest = time.monotonic()
            self._pending.append((value, on_delivery))
            self._pending_bytes += len(value)
            if len(self._pending) >= self._batch_events or self._pending_bytes >= self._batch_bytes:
                self._send_due(force=True)

    def poll(self, timeout: float = 0.0) -> int:
        """Send a batch that is due; otherwise wait up to `timeout`. Returns batches sent."""
        with self._lock:
            sent = self._send_due(force=False)
        if not sent and timeout > 0:
            time.sleep(timeout)
        return sent

    def flush(self, timeout: float | None = None) -> int:
        """Send everything buffered, retrying until `timeout`; returns how many are left.

        Every look at the buffer takes the lock: a batch the Emitter's thread has in flight is
        out of the buffer but not yet delivered, and it holds the lock until the server answers."""
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while True:
            with self._lock:
                wait = self._retry_at - time.monotonic()
                if not self._pending or time.monotonic() >= deadline:
                    return len(self._pending)
                if wait <= 0:
                    self._send_batch()
                    continue
            time.sleep(min(wait, max(0.0, deadline - time.monotonic())))

    def __len__(self) -> int:
        return len(self._pending)

    # --- sending ----------------------------------------------------------------------------------

    def _send_due(self, *, force: bool) -> int:
        now = time.monotonic()
        if not self._pending or now < self._retry_at:
            return 0
        if not force and now - self._oldest < self._linger_s and len(self._pending) < self._batch_events:
            return 0
        return self._send_batch()

    def _send_batch(self) -> int:
        """One attempt at the oldest batch. Returns 1 when the server answered for it."""
        batch = self._take_batch()
        body = b"[" + b",".join(value for value, _ in batch) + b"]"
        try:
            status, answer = self._post(body)
        except (OSError, http.client.HTTPException) as exc:
            self._close_connection()
            return self._retry_later(batch, f"{type(exc).__name__}: {exc}")
        if status < 300:
            self._settle(batch, None)
        elif status in _RETRY_STATUSES:
            return self._retry_later(batch, f"HTTP {status}")
        elif status == 400 and (refused := _refused(answer, len(batch))):
            # The server named the events it refused; report those, send the rest again.
            for index, reason in refused.items():
                _, callback = batch[index]
                if callback is not None:
                    callback(f"refused by llmwatch ingest: {reason}", None)
            keep = [item for i, item in enumerate(batch) if i not in refused]
            self._requeue(keep)
        else:
            log.warning("llmwatch ingest refused %d events: HTTP %d %s", len(batch), status, answer[:200])
            self._settle(batch, f"HTTP {status}: {answer[:200]!r}")
        self._backoff = 0.0
        return 1

    def _take_batch(self) -> list[tuple[bytes, DeliveryCallback | None]]:
        batch: list[tuple[bytes, DeliveryCallback | None]] = []
        size = 0
        for value, callback in self._pending:
            if batch and (len(batch) >= self._batch_events or size + len(value) > self._batch_bytes):
                break
            batch.append((value, callback))
            size += len(value)
        del self._pending[: len(batch)]
        self._pending_bytes -= size
        return batch

    def _requeue(self, batch: list[tuple[bytes, DeliveryCallback | None]]) -> None:
        self._pending[:0] = batch
        self._pending_bytes += sum(len(value) for value, _ in batch)
        if batch:
            self._oldest = 0.0  # due at once

    def _retry_later(self, batch: list[tuple[bytes, DeliveryCallback | None]], why: str) -> int:
        self._requeue(batch)
        self._backoff = min(self._max_backoff_s, max(0.5, self._backoff * 2))
        self._retry_at = time.monotonic() + self._backoff
        log.warning("llmwatch ingest unreachable (%s); retrying %d events in %.1f s", why, len(batch), self._backoff)
        return 0

    @staticmethod
    def _settle(batch: list[tuple[bytes, DeliveryCallback | None]], error: Any) -> None:
        for _, callback in batch:
            if callback is not None:
                callback(error, None)

    def _post(self, body: bytes) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json", "User-Agent": "llmwatch-sdk"}
        if len(body) > 1024:
            body = gzip.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        if self._api_key:
            headers["X-Api-Key"] = self._api_key
        if self._connection is None:
            kind = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            self._connection = kind(self._host, self._port, timeout=self._timeout_s)
        self._connection.request("POST", self._path, body=body, headers=headers)
        response = self._connection.getresponse()
        answer = response.read()
        if response.will_close:
            self._close_connection()
        return response.status, answer

    def _close_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _refused(answer: bytes, size: int) -> dict[int, str]:
    """The events a 400 names, by their index in the batch, with the server's reason."""
    try:
        errors = json.loads(answer).get("errors") or []
        return {e["index"]: f"{e.get('reason')}: {e.get('detail')}" for e in errors
                if isinstance(e.get("index"), int) and 0 <= e["index"] < size}
    except (ValueError, AttributeError, TypeError, KeyError):
        return {}
