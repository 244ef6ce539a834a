"""A faust app whose consumer hands a fetched batch to the streams in one task, and whose fetches
wait at the broker as long as the settings say.

faust-streaming's consumer delivers every fetched record with
`await self.wait_first(callback(message), self.suspend_flow.wait())`: four tasks, an
`asyncio.wait` and three turns of the event loop per message (each an `epoll` call). On a bare
agent that only acks, one race per fetched batch instead costs 2.2x less CPU per message
(bench/consumer.py: 102 -> 47 µs); bench/pipeline.py shows it in the worker's "faust" stage.

`BatchDrainConsumer` keeps the race, and with it what the race is for: a rebalance (the flow
suspended), a stop or a crash still interrupts delivery, now between any two messages of the
batch rather than around each one. The offsets, gaps and periodic commits are the same
bookkeeping, per message, as in faust's own loop.

faust also creates its aiokafka consumer with `fetch_max_wait_ms=1500`, not a setting. A Kafka
broker answers a fetch as soon as there is data, but tansu answers only at that deadline: at
500 events/s, aiokafka alone got its records 391 ms after they were produced (p50; p99 754 ms),
against 32 ms with a wait of 100 ms; a bare agent's batches (window 0.25 s) came 506 / 962 ms
after, against 157 / 295 ms with this consumer (bench/consumer.py). `fetch_wait_s` sets it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver

__all__ = ["BatchDrainApp", "RawBytes"]

# Let the loop run other work (heartbeats, timers, the stream) this often within a batch, as
# faust's own loop does.
YIELD_EVERY = 100


class FetchWaitConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start(), which has not run yet: faust passes a constant.
        app: Any = self.app  # a BatchDrainApp
        consumer._fetch_max_wait_ms = round(app.fetch_wait_s * 1000)
        return consumer


class BatchDrainConsumer(aiokafka_driver.Consumer):
    def _new_consumer_thread(self) -> Any:
        return FetchWaitConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:  # the consumer's background task
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                batch = [message async for _tp, message in self.getmany(timeout=1.0)]
                await self.sleep(0)
                if batch and not self.should_stop:
                    await self.wait_first(self._deliver(batch), self.suspend_flow.wait())
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
            self.log.info("Broker stopped consumer, shutting down...")
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise
            self.log.info("Consumer shutting down for user cancel.")
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _deliver(self, batch: Sequence[Any]) -> None:
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        for count, message in enumerate(batch, 1):
            if count % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            tp, offset = message.tp, message.offset
            last = read_offset[tp]
            if last is not None and offset < last:
                continue  # seen already (a seek back)
            if last and offset - last > 1 and acks_enabled_for(message.topic):
                await self._add_gap(tp, last + 1, offset)  # compacted or transactional offsets
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()
            await self.callback(message)
            read_offset[tp] = offset


class RawBytes(faust.Schema):
    """A record's key and value as the broker sent them. faust's `raw` codec returns them
    unchanged too, after two lookups in its codec registry per message."""

    def loads_key(self, app: Any, message: Any, *, loads: Any = None, serializer: Any = None) -> Any:
        return message.key

    def loads_value(self, app: Any, message: Any, *, loads: Any = None, serializer: Any = None) -> Any:
        return message.value


class BatchDrainTransport(aiokafka_driver.Transport):
    Consumer = BatchDrainConsumer


class BatchDrainApp(faust.App):
    """faust.App on the aiokafka transport with `BatchDrainConsumer`; its fetches wait at most
    `fetch_wait_s` at the broker."""

    def __init__(self, *args: Any, fetch_wait_s: float = 1.5, **kwargs: Any) -> None:
        self.fetch_wait_s = fetch_wait_s
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        return BatchDrainTransport(self.conf.broker_consumer, self)
