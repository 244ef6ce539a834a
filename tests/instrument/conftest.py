"""The instrumentation tests run the real client packages against tests/instrument/providers.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from llmwatch import Emitter
from tests.instrument.providers import ProviderServer


class RecordingEmitter(Emitter):
    """The real Emitter, its queue read back by the test instead of sent (the subject here is what
    instrumentation queues; tests/instrument/test_end_to_end.py sends through Kafka)."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1:9", app="support-bot")
        self.close(timeout_s=0)  # no producer thread: events stay in the queue
        self._closed = False

    def events(self) -> list[dict[str, Any]]:
        out = []
        while self._queue:
            item = self._queue.popleft()
            record = item if isinstance(item, dict) else self._build(item)
            if record is not None:
                out.append(self._complete(record))
        return out


@pytest.fixture(scope="session")
def provider() -> Iterator[ProviderServer]:
    with ProviderServer() as server:
        yield server


@pytest.fixture
def recorded() -> Iterator[RecordingEmitter]:
    import llmwatch

    emitter = RecordingEmitter()
    instrumentation = llmwatch.instrument(emitter)
    yield emitter
    instrumentation.uninstrument()
