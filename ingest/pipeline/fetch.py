"""A faust app whose consumer hands a fetched batch over in one task, straight to a batch loop
(`MessageBatches`) for the topics that want one, and whose fetches wait at the broker as long as
the settings say.

faust-streaming's consumer delivers every fetched record with
`await self.wait_first(callback(message), self.suspend_flow.wait())`: four tasks, an
`asyncio.wait` and three turns of the event loop per message (each an `epoll` call). On a bare
agent that only acks, one race per fetched batch instead costs 2.2x less CPU per message
(bench/consumer.py: 102 -> 47 µs); bench/pipeline.py shows it in the worker's "faust" stage.

`BatchDrainConsumer` keeps the race, and with it what the race is for: a rebalance (the flow
suspended), a stop or a crash still interrupts delivery, now between any two messages of the
batch rather than around each one. The offsets, gaps and periodic commits are the same
bookkeeping, per message, as in faust's own loop.

Even delivered a batch at a time, each message still became a faust event on its own: the
conductor's per-message callback (a lock, two flow-control awaits, an event object), a channel
queue, a step of the stream's iterator and of `noack_take()`'s buffer, sensors on the way in and
out, and `stream.ack`. The worker works in batches and needs none of it, so its topic's messages
go into a `MessageBatches` whole: 51 -> 3 µs of CPU per message on a bare loop that takes and
acks (bench/consumer.py). faust's consumer still fetches, tracks offsets and gaps, commits what is
acked, and drives rebalances; the buffer is cleared when faust clears its own stream buffers.

faust also creates its aiokafka consumer with `fetch_max_wait_ms=1500`, not a setting. A Kafka
broker answers a fetch as soon as there is data, but tansu answers only at that deadline: at
500 events/s, aiokafka alone got its records 391 ms after they were produced (p50; p99 754 ms),
against 32 ms with a wait of 100 ms; a bare agent's batches (window 0.25 s) came 506 / 962 ms
after, against 157 / 295 ms with this consumer (bench/consumer.py). `fetch_wait_s` sets it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver

__all__ = ["BatchDrainApp", "MessageBatches"]

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
        app: Any = self.app  # a BatchDrainApp
        batched: dict[str, MessageBatches] = app.batched_topics
        handed: list[Any] = []  # messages of batched topics, handed over together
        for count, message in enumerate(batch, 1):
            if count % YIELD_EVERY == 0:
                await self._hand_over(handed, batched)
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
            if message.topic in batched:
                handed.append(message)
            else:
                await self.callback(message)
            read_offset[tp] = offset
        await self._hand_over(handed, batched)

    async def _hand_over(self, messages: list[Any], batched: dict[str, MessageBatches]) -> None:
        if messages:
            await self.app.flow_control.acquire()  # held during a rebalance, as faust's own delivery is
            for topic in {m.topic for m in messages}:
                await batched[topic].put([m for m in messages if m.topic == topic])
            messages.clear()


class MessageBatches:
    """A topic's messages as the consumer fetched them, for an agent that takes them in batches.

    faust hands each message to a stream on its own: an event object, a channel queue, a step of
    the stream's iterator and of `take()`'s buffer, each with its sensors. An agent that works a
    batch at a time needs none of that: here a fetched batch is appended once and taken in slices.
    faust's consumer still fetches, keeps the offsets and commits what `ack` marks.

    Like faust's stream buffers it is cleared when a rebalance begins and again when it ends
    (faust then seeks every partition back to its committed offset). It holds at most
    `max_messages` messages and `max_bytes` bytes of values (give or take the last fetched
    batch): past that the consumer's delivery waits, and with it the fetching.
    """

    def __init__(self, app: Any, max_messages: int, max_bytes: int) -> None:
        self.max_messages, self.max_bytes = max_messages, max_bytes
        self._messages: deque[Any] = deque()
        self._bytes = 0
        self._oldest_at = 0.0  # loop time when the oldest buffered message arrived
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._app = app
        app.flow_control.manage_queue(self)  # calls clear() on a rebalance

    def __len__(self) -> int:
        return len(self._messages)

    def clear(self) -> None:
        self._messages.clear()
        self._bytes = 0
        self._room.set()

    def _full(self) -> bool:
        return len(self._messages) >= self.max_messages or self._bytes >= self.max_bytes

    async def put(self, messages: Sequence[Any]) -> None:
        while self._full():
            self._room.clear()
            await self._room.wait()
        if not self._messages:
            self._oldest_at = asyncio.get_running_loop().time()
        self._messages.extend(messages)
        self._bytes += sum(len(m.value or b"") for m in messages)
        self._arrived.set()

    async def take(self, max_count: int, within: float) -> list[Any]:
        """Up to `max_count` messages: as soon as that many are here, else `within` seconds after
        the oldest of them arrived. Waits for at least one."""
        loop = asyncio.get_running_loop()
        while True:
            while len(self._messages) < max_count:
                wait = self._oldest_at + within - loop.time() if self._messages else None
                if wait is not None and wait <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), wait)
                except TimeoutError:
                    break
            taken = [self._messages.popleft() for _ in range(min(max_count, len(self._messages)))]
            self._bytes -= sum(len(m.value or b"") for m in taken)
            if not self._full():
                self._room.set()
            if taken:  # a rebalance may have cleared the buffer meanwhile
                return taken

    def ack(self, messages: Sequence[Any]) -> None:
        """Mark these messages processed: their offsets may be committed."""
        ack = self._app.consumer.ack
        for message in messages:
            ack(message)


class BatchDrainTransport(aiokafka_driver.Transport):
    Consumer = BatchDrainConsumer


class BatchDrainApp(faust.App):
    """faust.App on the aiokafka transport with `BatchDrainConsumer`; its fetches wait at most
    `fetch_wait_s` at the broker."""

    def __init__(self, *args: Any, fetch_wait_s: float = 1.5, **kwargs: Any) -> None:
        self.fetch_wait_s = fetch_wait_s
        self.batched_topics: dict[str, MessageBatches] = {}
        super().__init__(*args, **kwargs)

    def batches(self, topic: Any, max_messages: int, max_bytes: int) -> MessageBatches:
        """Subscribe to `topic` (a faust Topic) and receive its messages as MessageBatches
        instead of through a stream."""
        (name,) = topic.topics
        batches = self.batched_topics[name] = MessageBatches(self, max_messages, max_bytes)
        self.topics.add(topic)
        return batches

    def _new_transport(self) -> Any:
        return BatchDrainTransport(self.conf.broker_consumer, self)
