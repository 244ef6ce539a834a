"""The worker's faust app: its aiokafka consumer waits at the broker as long as the settings say
(faust passes a constant 1.5 s, which is the latency floor on tansu), and its consumer delivers a
fetched batch in one task. Delivery itself (nothing lost, nothing twice, rebalances between two
workers) is what tests/test_pipeline.py runs through real workers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from llmwatch.core.errors import ConfigError
from llmwatch.core.settings import Settings
from llmwatch.ingest.pipeline.fetch import BatchDrainApp, BatchDrainConsumer


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
