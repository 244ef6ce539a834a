"""How llmwatch's Kafka producers are configured (the SDK's and the worker's alike). Pure: a dict
for confluent-kafka, which is imported by whoever builds the producer."""

from __future__ import annotations

from typing import Any

__all__ = ["producer_config"]


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        # Batches small messages into few requests; 5 ms is invisible next to an LLM call.
        "linger.ms": 5,
        "compression.type": "lz4",
        # Not idempotent on purpose: tansu's memory broker forgets producer ids on restart and an
        # idempotent producer then never delivers again (see docs/operations.md). Duplicates from
        # retries are harmless: the worker stores each event_id once.
        "enable.idempotence": False,
        "message.max.bytes": 16 * 1024 * 1024,
    }
    config.update(overrides)
    return config
