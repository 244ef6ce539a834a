"""The only module that builds Kafka clients. Config keys are librdkafka's own, so its
CONFIGURATION.md stays the documentation."""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

log = logging.getLogger(__name__)

__all__ = ["admin", "ensure_topics", "kafka_reachable", "producer", "producer_config"]


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        # Batches small messages into few requests; 5 ms is invisible next to an LLM call.
        "linger.ms": 5,
        "compression.type": "lz4",
        # Not idempotent on purpose: tansu's memory broker forgets producer ids on restart and an
        # idempotent producer then never delivers again (see README, Operations). Duplicates from
        # retries are harmless: the worker stores each event_id once.
        "enable.idempotence": False,
        "message.max.bytes": 16 * 1024 * 1024,
    }
    config.update(overrides)
    return config


def producer(bootstrap: str, **overrides: Any) -> Producer:
    return Producer(producer_config(bootstrap, **overrides))


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def ensure_topics(
    bootstrap: str,
    topics: Iterable[str],
    partitions: int,
    replication_factor: int = 1,
    timeout_s: float = 30.0,
) -> None:
    """Create the topics that are missing; an existing topic is fine, whatever its partitions."""
    client = admin(bootstrap)
    deadline = time.monotonic() + timeout_s
    wanted = list(topics)
    while True:
        try:
            existing = set(client.list_topics(timeout=5).topics)
            break
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise
            log.info("waiting for Kafka at %s: %s", bootstrap, exc)
            time.sleep(0.5)
    missing = [
        NewTopic(t, num_partitions=partitions, replication_factor=replication_factor)
        for t in wanted
        if t not in existing
    ]
    if not missing:
        return
    futures = client.create_topics(missing, operation_timeout=10)
    for topic, future in futures.items():
        try:
            future.result()
            log.info("created topic %s with %d partitions", topic, partitions)
        except KafkaException as exc:
            # Another process (or the producer's auto-creation) got there first.
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


def kafka_reachable(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """Whether a broker answers, without librdkafka logging every failed connection attempt."""
    probe = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        probe.list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return True
