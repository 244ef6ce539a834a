"""The worker's faust app: its aiokafka consumer waits at the broker as long as the settings say
(faust passes a constant 1.5 s, which is the latency floor on tansu), its consumer delivers a
fetched batch in one task, and the traces reach the batch loop through MessageBatches. Delivery
itself (nothing lost, nothing twice, rebalances between two workers) is what
tests/test_pipeline.py runs through real workers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP, Message

from llmwatch.core.errors import ConfigError
from llmwatch.core.settings import Settings
from llmwatch.ingest.pipeline.fetch import BatchDrainApp, BatchDrainConsumer, MessageBatches


def test_the_consumer_waits_at_the_broker_as_long_as_the_setting_says(tmp_path: Path) -> None:
    settings = Settings.from_env({"LLMWATCH_KAFKA_FETCH_WAIT_S": "0.05"})
    app = BatchDrainApp("fetch-test", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False,
                        datadir=str(tmp_path), fetch_wait_s=settings.kafka_fetch_wait_s)
    assert isinstance(app.consumer, BatchDrainConsumer)

    async def fetch_wait_ms() -> Any:  # aiokafka wants a running loop; nothing connects before start()
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        await consumer.stop()
        return consumer._fetch_max_wait_ms  # what AIOKafkaConsumer.start() hands its fetcher

    try:
        assert asyncio.run(fetch_wait_ms()) == 50
    finally:
        app.consumer._thread.thread_loop.close()  # the loops faust made for the consumer
        app.loop.close()


def test_a_fetch_wait_outside_its_range_is_refused() -> None:
    for value in ("0", "-1", "31"):
        with pytest.raises(ConfigError, match="kafka_fetch_wait_s must be in"):
            Settings.from_env({"LLMWATCH_KAFKA_FETCH_WAIT_S": value})


@pytest.fixture
def app(tmp_path: Path) -> Iterator[BatchDrainApp]:
    app = BatchDrainApp("batches-test", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False,
                        datadir=str(tmp_path))
    yield app
    app.loop.close()


def _messages(offsets: range, size: int = 10) -> list[Message]:
    return [Message("llm.traces", 0, offset, 0.0, 0, None, None, b"x" * size, None, tp=TP("llm.traces", 0))
            for offset in offsets]


def test_a_take_returns_a_full_batch_at_once_and_leaves_the_rest(app: BatchDrainApp) -> None:
    batches = app.batches(app.topic("llm.traces"), max_messages=100, max_bytes=10**6)

    async def run() -> tuple[list[Message], list[Message], float]:
        await batches.put(_messages(range(7)))
        started = time.monotonic()
        first = await batches.take(5, within=30)
        second = await batches.take(5, within=0.05)  # two left: it waits out the window for more
        return first, second, time.monotonic() - started

    first, second, elapsed = asyncio.run(run())
    assert [m.offset for m in first] == [0, 1, 2, 3, 4] and [m.offset for m in second] == [5, 6]
    assert elapsed < 20  # the full batch did not wait for its 30 s window
    assert len(batches) == 0


def test_a_partial_batch_waits_for_more_until_its_window_ends(app: BatchDrainApp) -> None:
    batches = app.batches(app.topic("llm.traces"), max_messages=100, max_bytes=10**6)

    async def run() -> tuple[list[Message], float]:
        started = time.monotonic()
        taking = asyncio.ensure_future(batches.take(10, within=0.3))
        await asyncio.sleep(0.05)
        assert not taking.done()  # nothing yet: a take waits for at least one message
        await batches.put(_messages(range(2)))
        await asyncio.sleep(0.1)
        await batches.put(_messages(range(2, 3)))  # within the window: joins the batch
        return await taking, time.monotonic() - started

    taken, elapsed = asyncio.run(run())
    assert [m.offset for m in taken] == [0, 1, 2]
    assert elapsed >= 0.3  # the window runs from the first message's arrival


def test_a_full_buffer_holds_the_delivery_back_until_a_take(app: BatchDrainApp) -> None:
    by_count = app.batches(app.topic("llm.traces"), max_messages=4, max_bytes=10**6)
    by_bytes = app.batches(app.topic("other"), max_messages=100, max_bytes=25)

    async def run(batches: MessageBatches) -> None:
        await batches.put(_messages(range(4)))
        putting = asyncio.ensure_future(batches.put(_messages(range(4, 6))))
        await asyncio.sleep(0.05)
        assert not putting.done() and len(batches) == 4  # the consumer's delivery waits, and its fetching
        assert [m.offset for m in await batches.take(3, within=1)] == [0, 1, 2]
        await asyncio.wait_for(putting, 5)
        assert [m.offset for m in await batches.take(10, within=0.01)] == [3, 4, 5]

    asyncio.run(run(by_count))
    asyncio.run(run(by_bytes))  # four messages of 10 bytes are over 25


def test_a_rebalance_empties_the_buffer_and_frees_the_delivery(app: BatchDrainApp) -> None:
    batches = app.batches(app.topic("llm.traces"), max_messages=2, max_bytes=10**6)

    async def run() -> list[Message]:
        await batches.put(_messages(range(2)))
        putting = asyncio.ensure_future(batches.put(_messages(range(2, 3))))
        await asyncio.sleep(0.05)
        app.flow_control.clear()  # what faust does to its stream buffers when a rebalance begins
        await asyncio.wait_for(putting, 5)
        return await batches.take(10, within=0.01)

    # faust seeks back to the committed offsets after a rebalance: the cleared messages come again.
    assert [m.offset for m in asyncio.run(run())] == [2]


def test_acked_messages_are_what_faust_commits(app: BatchDrainApp) -> None:
    topic = app.topic("llm.traces")
    batches = app.batches(topic, max_messages=100, max_bytes=10**6)
    assert "llm.traces" in {name for channel in app.topics for name in channel.topics}  # subscribed
    app.topics._acking_topics.add("llm.traces")  # what faust's conductor sets on subscribing
    messages = _messages(range(3))
    try:
        batches.ack(messages[:2])
        assert [m.acked for m in messages] == [True, True, False]
        assert list(app.consumer._acked[TP("llm.traces", 0)]) == [0, 1]
    finally:
        app.consumer._thread.thread_loop.close()  # the loop faust made for the consumer
