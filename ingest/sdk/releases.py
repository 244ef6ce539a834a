"""The SDK's release resolver: "which prompt version and model should app X use now?"

    resolver = ReleaseResolver("kafka:9092", fallback={"support-bot": Release("answer", "7", "gpt-4o-mini")})
    release = resolver.release("support-bot")      # a dict lookup; never blocks, never raises

A background thread follows `llm.control` from its beginning (every partition, no consumer
group, so every app instance sees every event) and keeps the latest release per app. Until the
bus has said anything about an app, and whenever it cannot be reached, the app's fallback (or
the last release seen, cached in `cache_path` across restarts) is served.

`announce(...)` registers a release from the app side (`llmwatch alerts` writes it to the registry).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llmwatch.ingest.sdk.emitter import Release

log = logging.getLogger(__name__)

__all__ = ["ReleaseResolver", "announce"]


class ReleaseResolver:
    def __init__(self, bootstrap: str, fallback: Mapping[str, Release] | None = None, *,
                 topic: str = "llm.control", cache_path: str | Path | None = None, poll_s: float = 0.2) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.poll_s = poll_s
        self.cache_path = Path(cache_path) if cache_path else None
        self._current: dict[str, Release] = dict(fallback or {})
        self._current.update(self._read_cache())
        self.switches = 0  # control events applied
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="llmwatch-releases", daemon=True)
        self._thread.start()

    def release(self, app: str, default: Release | None = None) -> Release:
        """The release `app` should serve now."""
        return self._current.get(app) or default or Release()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> ReleaseResolver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def apply(self, value: bytes) -> bool:
        """Apply one control message; False when it is not a release event this resolver reads."""
        try:
            event = json.loads(value)
            app, fields = event["app"], event["release"]
        except (ValueError, KeyError, TypeError):
            return False
        if event.get("kind") != "release" or not isinstance(fields, dict):
            return False
        self._current[app] = Release(**{k: str(fields.get(k, "")) for k in ("prompt_id", "prompt_version", "model", "provider")})
        self.switches += 1
        self._write_cache()
        return True

    def _follow(self) -> None:
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        consumer = None
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "llmwatch-resolver",
                                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
                    metadata = consumer.list_topics(self.topic, timeout=5)
                    partitions = metadata.topics[self.topic].partitions
                    if not partitions:
                        raise KafkaException(f"topic {self.topic} has no partitions yet")
                    consumer.assign([TopicPartition(self.topic, p, 0) for p in partitions])
                message = consumer.poll(self.poll_s)
                value = message.value() if message is not None and not message.error() else None
                if value is not None:
                    self.apply(value)
            except Exception as exc:  # the bus is down: keep serving what we have, try again
                log.debug("release resolver: %s", exc)
                if consumer is not None:
                    consumer.close()
                    consumer = None
                self._stop.wait(2.0)
        if consumer is not None:
            consumer.close()

    def _read_cache(self) -> dict[str, Release]:
        if self.cache_path is None or not self.cache_path.is_file():
            return {}
        try:
            data: dict[str, Any] = json.loads(self.cache_path.read_text())
            return {app: Release(**fields) for app, fields in data.items()}
        except (ValueError, TypeError):
            return {}

    def _write_cache(self) -> None:
        if self.cache_path is None:
            return
        tmp = self.cache_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({app: r.__dict__ for app, r in self._current.items()}))
        tmp.replace(self.cache_path)


def announce(bootstrap: str, app: str, release: Release, *, activate: bool = False, topic: str = "llm.control",
             timeout_s: float = 10.0) -> bool:
    """Register `release` of `app` from the app itself (a deploy step, or at start-up): a control
    message that `llmwatch alerts` writes into the release registry, promoting it when
    `activate`. Returns whether the broker took it within `timeout_s`."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    body = {"kind": "register", "app": app, "release": release.as_dict(), "activate": activate}
    # llm.control is compacted (the latest message per key stays): a key per registered release
    # keeps every release, and release switches keep the key `app`, so its latest switch stays.
    key = f"{app}\0register\0{release.as_dict()}"
    producer.produce(topic, key=key.encode(), value=json.dumps(body).encode())
    return producer.flush(timeout_s) == 0
