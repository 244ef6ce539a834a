"""The only module that builds Kafka clients. Config keys are librdkafka's own, so its
CONFIGURATION.md stays the documentation."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

from llmwatch.core.kafka_config import producer_config

log = logging.getLogger(__name__)

__all__ = ["COMPACTED", "admin", "ensure_llmwatch_topics", "ensure_topics", "kafka_reachable", "producer"]

# llm.control: the latest release switch per app must outlive any retention period.
COMPACTED = {"cleanup.policy": "compact"}


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
    compacted: Iterable[str] = (),
) -> None:
    """Create the topics that are missing; an existing topic is fine, whatever its partitions.
    Topics in `compacted` keep the latest message per key forever (cleanup.policy=compact), and
    an existing one is switched to that policy."""
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
    compact = set(compacted) & set(wanted)
    missing = [
        NewTopic(t, num_partitions=partitions, replication_factor=replication_factor,
                 config=COMPACTED if t in compact else {})
        for t in wanted
        if t not in existing
    ]
    _compact_existing(client, [t for t in compact if t in existing])
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


def ensure_llmwatch_topics(settings: Any, topics: Iterable[str] = ()) -> None:
    """llmwatch's topics (default: traces, DLQ and control) as settings describe them, with the
    control topic compacted."""
    wanted = list(topics) or [settings.traces_topic, settings.dlq_topic, settings.control_topic]
    ensure_topics(settings.bootstrap_servers, wanted, settings.partitions, settings.replication_factor,
                  compacted=[settings.control_topic])


def _compact_existing(client: AdminClient, topics: list[str]) -> None:
    """Switch existing topics to cleanup.policy=compact (topics made before they were compacted)."""
    if not topics:
        return
    resources = [ConfigResource(ResourceType.TOPIC, t) for t in topics]
    try:
        current = {r.name: f.result(timeout=10) for r, f in client.describe_configs(resources).items()}
        stale = [t for t in topics if current[t].get("cleanup.policy") is None
                 or "compact" not in current[t]["cleanup.policy"].value]
        if stale:
            changes = [ConfigResource(ResourceType.TOPIC, t, incremental_configs=[
                ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)]) for t in stale]
            for future in client.incremental_alter_configs(changes).values():
                future.result(timeout=10)
            log.info("topics %s now compacted", ", ".join(stale))
    except Exception as exc:  # a broker without config APIs still works; say what is missing
        log.warning("could not make %s compacted: %s", ", ".join(topics), exc)


def kafka_reachable(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """Whether a broker answers, without librdkafka logging every failed connection attempt."""
    probe = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        probe.list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return True
