"""The SDK's HTTP transport against a server on 127.0.0.1 that answers what ingest can answer:
outages (503, a closed port), a batch refused for some of its events (400 naming them), a wrong
API key (401). Delivery through the real ingest server and worker is in tests/test_packaging.py."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from llmwatch import Emitter
from llmwatch.core.processes import free_port


class Scripted(ThreadingHTTPServer):
    """Answers each POST with the next (status, body) of `script`, then 200; keeps what it got."""

    def __init__(self, script: list[tuple[int, Any]]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = list(script)
        self.received: list[tuple[dict[str, str], list[dict[str, Any]]]] = []
        self.delay_s = 0.0  # how long each answer takes

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Scripted

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        events = json.loads(body)
        self.server.received.append((dict(self.headers), events))
        status, answer = self.server.script.pop(0) if self.server.script else (200, {"accepted": len(events)})
        time.sleep(self.server.delay_s)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Scripted]:
    scripted = Scripted(getattr(request, "param", []))
    thread = threading.Thread(target=scripted.serve_forever, daemon=True)
    thread.start()
    yield scripted
    scripted.shutdown()
    scripted.server_close()


def ids(received: list[tuple[dict[str, str], list[dict[str, Any]]]]) -> list[list[str]]:
    return [[e["event_id"] for e in events] for _, events in received]


@pytest.mark.parametrize("server", [[(503, {"error": "Kafka did not acknowledge"}), (429, {})]], indirect=True)
def test_outages_are_retried_with_the_same_event_ids(server: Scripted) -> None:
    with Emitter(server.url, app="bot", api_key="secret-key") as emitter:
        for i in range(30):
            emitter.emit({"input": f"q{i}", "output": "a"})
        assert emitter.flush(20)
        assert emitter.stats() == {"queued": 0, "delivered": 30, "failed": 0, "dropped": 0}
    sent = ids(server.received)
    assert len(sent) == 3 and sent[0] == sent[1] == sent[2] and len(set(sent[0])) == 30
    headers, events = server.received[-1]
    assert headers["X-Api-Key"] == "secret-key" and headers["Content-Encoding"] == "gzip"
    assert {e["app"] for e in events} == {"bot"}


def test_flush_waits_for_the_batch_the_background_thread_has_in_flight(server: Scripted) -> None:
    server.delay_s = 0.5
    with Emitter(server.url, app="bot") as emitter:
        for i in range(30):
            emitter.emit({"input": f"q{i}", "output": "a"})
        deadline = time.monotonic() + 5
        while not server.received and time.monotonic() < deadline:  # the linger sent it: in flight
            time.sleep(0.01)
        assert emitter.flush(20)
        assert emitter.stats()["delivered"] == 30
    assert len(server.received) == 1


@pytest.mark.parametrize("server", [[(400, {"accepted": 0, "errors": [
    {"index": 1, "reason": "schema", "detail": "usage.input_tokens: must be >= 0"}]})]], indirect=True)
def test_a_refused_event_does_not_cost_its_batch(server: Scripted) -> None:
    with Emitter(server.url, app="bot") as emitter:
        for i in range(5):
            emitter.emit({"input": f"q{i}", "output": "a"})
        emitter.flush(20)
        assert emitter.stats() == {"queued": 0, "delivered": 4, "failed": 1, "dropped": 0}
    first, second = ids(server.received)
    assert second == first[:1] + first[2:]


@pytest.mark.parametrize("server", [[(401, "missing or wrong API key")]], indirect=True)
def test_a_wrong_api_key_fails_the_batch_instead_of_retrying_forever(server: Scripted) -> None:
    with Emitter(server.url, app="bot", api_key="wrong") as emitter:
        emitter.emit({"input": "q", "output": "a"})
        emitter.flush(20)
        assert emitter.stats() == {"queued": 0, "delivered": 0, "failed": 1, "dropped": 0}
    assert len(server.received) == 1


def test_an_unreachable_server_never_blocks_or_raises_and_nothing_goes_uncounted() -> None:
    emitter = Emitter(f"http://127.0.0.1:{free_port()}", app="bot", queue_size=10)
    for i in range(25):
        emitter.emit({"input": f"q{i}", "output": "a"})  # never raises, never waits
    assert not emitter.flush(1.5)
    emitter.close(0.5)
    stats = emitter.stats()
    assert stats["delivered"] == 0 and stats["dropped"] == 25, stats  # queue overflow + undelivered at close


def test_a_malformed_url_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="http:// or https:// URL"):
        Emitter("http://", app="bot")
