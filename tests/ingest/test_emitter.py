"""The SDK emitter against the real broker: delivery, keys, timing, and never hurting the app."""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest
from confluent_kafka import Consumer

from llmwatch import Emitter, Release
from llmwatch.ingest.kafka import ensure_topics
from tests.conftest import free_port


def consume(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest", "session.timeout.ms": 2000}
    )
    consumer.subscribe([topic])
    received = []
    deadline = time.monotonic() + timeout_s
    while len(received) < expected and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            received.append(message)
    consumer.close()
    return received


@pytest.fixture
def topic(broker: str) -> str:
    name = f"emit-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker, [name], 4)
    return name


def test_emitted_events_arrive_keyed_by_trace_id(broker: str, topic: str) -> None:
    """Every event arrives once, keyed by its trace_id, with defaults filled in."""
    with Emitter(broker, app="bot", topic=topic, release=Release("p", "7", "m")) as emitter:
        queued = [emitter.emit({"trace_id": f"t{i}", "input": "hi", "output": "yo"}) for i in range(200)]
        assert all(queued)
        assert emitter.flush(10)
        assert emitter.stats()["delivered"] == 200
    received = consume(broker, topic, 200)
    assert len(received) == 200
    docs = [json.loads(m.value()) for m in received]
    assert len({d["event_id"] for d in docs}) == 200
    assert all(m.key().decode() == d["trace_id"] for m, d in zip(received, docs))
    assert all(d["app"] == "bot" and d["release"] == {"prompt_id": "p", "prompt_version": "7", "model": "m"} for d in docs)
    assert all(uuid.UUID(d["event_id"]).version == 4 for d in docs)


def test_trace_context_times_the_call_and_keeps_the_apps_exception(broker: str, topic: str) -> None:
    """The context manager records latency, usage and the error, and re-raises the app's error."""
    with Emitter(broker, app="bot", topic=topic) as emitter:
        with emitter.trace(input=[{"role": "user", "content": "q"}], context=["passage"]) as call:
            time.sleep(0.02)
            call.output = "answer"
            call.usage(12, 34)
        with pytest.raises(ZeroDivisionError), emitter.trace(input="q2"):
            1 / 0  # noqa: B018
        emitter.flush(10)
    ok, failed = sorted((json.loads(m.value()) for m in consume(broker, topic, 2)), key=lambda d: "error" in d)
    assert ok["latency_ms"] >= 20
    assert ok["usage"] == {"input_tokens": 12, "output_tokens": 34}
    assert ok["context"] == ["passage"] and ok["output"] == "answer"
    assert failed["error"].startswith("ZeroDivisionError")


def test_observe_decorator(broker: str, topic: str) -> None:
    with Emitter(broker, app="bot", topic=topic) as emitter:

        @emitter.observe(tags={"feature": "summary"})
        def summarise(prompt: str) -> str:
            return prompt.upper()

        assert summarise("abc") == "ABC"
        emitter.flush(10)
    (doc,) = [json.loads(m.value()) for m in consume(broker, topic, 1)]
    assert (doc["input"], doc["output"], doc["tags"]) == ("abc", "ABC", {"feature": "summary"})


def test_unreachable_broker_drops_and_counts_but_never_raises() -> None:
    """With nowhere to send and a full queue, emit returns None and counts the drop."""
    emitter = Emitter(
        f"127.0.0.1:{free_port()}",
        app="bot",
        queue_size=10,
        producer_config={"queue.buffering.max.messages": 5, "message.timeout.ms": 60000},
    )
    results = [emitter.emit({"input": "x", "output": "y"}) for _ in range(2000)]
    stats = emitter.stats()
    assert False in results
    assert stats["dropped"] > 0
    assert stats["dropped"] + stats["queued"] + stats["delivered"] + stats["failed"] <= 2000
    assert emitter.flush(0.5) is False  # nothing can be delivered; flush says so instead of hanging
    emitter.close(timeout_s=2)
    assert not emitter._thread.is_alive()  # closing never hangs on an unreachable broker
    dropped = emitter.stats()["dropped"]
    assert emitter.emit({"input": "x", "output": "y"}) is False  # closed: dropped, counted
    assert emitter.stats()["dropped"] == dropped + 1


def test_unserialisable_event_is_dropped_not_raised(broker: str, topic: str) -> None:
    with Emitter(broker, app="bot", topic=topic) as emitter:
        emitter.emit({"input": "x", "output": object()})
        emitter.flush(5)
        assert emitter.stats()["dropped"] == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_emitter_works_in_a_forked_child(broker: str, topic: str) -> None:
    """Forking servers (gunicorn, celery) get a working emitter in each child."""
    emitter = Emitter(broker, app="bot", topic=topic)
    emitter.emit({"trace_id": "parent", "input": "a", "output": "b"})
    emitter.flush(10)
    pid = os.fork()
    if pid == 0:  # child: emit and exit without running the parent's test machinery
        emitter.emit({"trace_id": "child", "input": "a", "output": "b"})
        os._exit(0 if emitter.flush(10) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    emitter.close()
    keys = sorted(m.key().decode() for m in consume(broker, topic, 2))
    assert keys == ["child", "parent"]
