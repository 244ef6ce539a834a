"""The release registry and the rollback action.

A release is what an app serves: a prompt version and a model. Its status lives in
llmwatch.releases (the latest row per app and release wins): `active` (served now), `stable`
(known good, the rollback target), `rolled_back`, `candidate`. Every change is an audit_log row and
a control event on `llm.control` (key: the app), which SDK release resolvers follow
(ingest/sdk/releases.py) so apps switch within seconds, without a redeploy.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from confluent_kafka import KafkaException

from llmwatch.alerts.audit import audit
from llmwatch.core.errors import ConfigError
from llmwatch.core.events import release_name
from llmwatch.core.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["RegistrationFollower", "Registry", "ReleaseRecord", "active_release", "control_event", "rollback_target"]


@dataclass(frozen=True)
class ReleaseRecord:
    app: str
    prompt_id: str
    prompt_version: str
    model: str = ""
    provider: str = ""
    status: str = "candidate"
    reason: str = ""
    actor: str = ""
    updated_at: datetime | None = None

    @property
    def release(self) -> str:
        return release_name(self.prompt_id, self.prompt_version, self.model)

    def as_control(self) -> dict[str, str]:
        return {"prompt_id": self.prompt_id, "prompt_version": self.prompt_version, "model": self.model,
                "provider": self.provider}


def active_release(records: list[ReleaseRecord]) -> ReleaseRecord | None:
    """The release served now, among an app's records."""
    return next((r for r in records if r.status == "active"), None)


def rollback_target(records: list[ReleaseRecord], release: str) -> ReleaseRecord | None:
    """The release a rollback of `release` returns to: the most recent stable other one."""
    return next((r for r in records if r.status == "stable" and r.release != release), None)


def _find(records: list[ReleaseRecord], app: str, release: str) -> ReleaseRecord:
    found = next((r for r in records if r.release == release), None)
    if found is None:
        raise ConfigError(f"no release {release!r} registered for app {app!r}")
    return found


def control_event(record: ReleaseRecord, action: str, at: datetime) -> bytes:
    """The llm.control message telling SDK resolvers which release `record.app` serves now."""
    return json.dumps({"kind": "release", "action": action, "app": record.app, "release": record.as_control(),
                       "reason": record.reason, "at": at.isoformat()}).encode()


class Registry:
    """Release state in ClickHouse; control events through a Kafka producer."""

    def __init__(self, store: Any, settings: Settings, producer: Any | None = None) -> None:
        self.store = store
        self.settings = settings
        self.producer = producer

    def releases(self, app: str) -> list[ReleaseRecord]:
        rows = self.store.query(
            f"SELECT app, prompt_id, prompt_version, model, provider, status, reason, actor, updated_at "
            f"FROM {self.store.database}.releases FINAL WHERE app = {{app:String}} ORDER BY updated_at DESC",
            {"app": app},
        )
        return [ReleaseRecord(*row) for row in rows]

    def active(self, app: str) -> ReleaseRecord | None:
        return active_release(self.releases(app))

    def register(self, record: ReleaseRecord, actor: str) -> ReleaseRecord:
        return self._write(record, "candidate", "registered", actor, record.reason)

    def promote(self, app: str, release: str, actor: str, reason: str = "") -> ReleaseRecord:
        """Serve `release` from now on; the previously active release becomes stable."""
        records = self.releases(app)
        target = _find(records, app, release)
        current = active_release(records)
        if current is not None and current.release != release:
            self._write(current, "stable", "superseded", actor, f"superseded by {release}", publish=False)
        return self._write(target, "active", "promoted", actor, reason)

    def rollback(self, app: str, release: str, actor: str, reason: str) -> ReleaseRecord | None:
        """Mark `release` rolled back and serve the most recent stable release again. Returns the
        release now served, or None when there is no stable one to return to (then nothing changes
        and the caller is told so)."""
        records = self.releases(app)
        bad = _find(records, app, release)
        if bad.status == "rolled_back":
            return active_release(records)
        fallback = rollback_target(records, release)
        if fallback is None:
            log.warning("rollback of %s/%s: no stable release to return to", app, release)
            return None
        self._write(bad, "rolled_back", "rolled_back", actor, reason, publish=False)
        restored = self._write(fallback, "active", "restored", actor, f"rollback of {release}: {reason}")
        self._call_deploy_hook(app, bad, restored, reason)
        return restored

    def _write(self, record: ReleaseRecord, status: str, action: str, actor: str, reason: str,
               publish: bool = True) -> ReleaseRecord:
        now = datetime.now(UTC)
        new = ReleaseRecord(record.app, record.prompt_id, record.prompt_version, record.model, record.provider,
                            status, reason, actor, now)
        self.store.insert("releases", [{
            "app": new.app, "release": new.release, "prompt_id": new.prompt_id, "prompt_version": new.prompt_version,
            "model": new.model, "provider": new.provider, "status": status, "reason": reason, "actor": actor,
            "updated_at": now,
        }])
        audit(self.store, actor, action, app=new.app, release=new.release, at=now, status=status, reason=reason)
        if publish and status == "active" and self.producer is not None:
            self.producer.produce(self.settings.control_topic, key=new.app.encode(), value=control_event(new, action, now))
            remaining = self.producer.flush(10)
            if remaining:
                log.warning("control event for %s not delivered yet; resolvers keep their fallback", new.app)
        return new

    def _call_deploy_hook(self, app: str, bad: ReleaseRecord, restored: ReleaseRecord, reason: str) -> None:
        url = self.settings.deploy_webhook_url
        if not url:
            return
        try:
            httpx.post(url, json={"action": "rollback", "app": app, "from": bad.release, "to": restored.release,
                                  "reason": reason}, timeout=10).raise_for_status()
        except httpx.HTTPError as exc:  # the registry and the SDK have switched already
            log.warning("deploy webhook %s failed: %s", url, exc)


class RegistrationFollower:
    """Reads `register` messages that apps send on llm.control (llmwatch.announce) and
    writes them into the registry. A consumer group keeps the position, committed only after the
    registry has the registrations (applying one twice changes nothing), so none is lost when the
    store is down or the process dies in between."""

    def __init__(self, registry: Registry, settings: Settings) -> None:
        from confluent_kafka import Consumer

        self.registry = registry
        self.consumer = Consumer({
            "bootstrap.servers": settings.bootstrap_servers, "group.id": f"{settings.consumer_group}-registry",
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "session.timeout.ms": int(settings.kafka_session_timeout_s * 1000),
        })
        self.consumer.subscribe([settings.control_topic])

    def poll(self, max_messages: int = 100, timeout_s: float = 0.5) -> int:
        """Apply what has arrived, then commit; returns how many registrations were applied.
        Raises StoreError (the registry is unreachable) after rewinding to the first message not
        applied, so the next poll reads it again."""
        messages = [m for m in self.consumer.consume(max_messages, timeout_s) if not m.error()]
        applied = 0
        for index, message in enumerate(messages):
            try:
                applied += self._apply(message)
            except Exception:
                self._rewind(messages[index:])
                raise
        if messages:
            try:
                self.consumer.commit(asynchronous=False)
            except KafkaException as exc:  # a rebalance took the partition: its new reader re-applies
                log.info("registrations applied but not committed (%s); they will be applied again", exc)
        return applied

    def _rewind(self, unapplied: list[Any]) -> None:
        from confluent_kafka import TopicPartition

        first: dict[tuple[str, int], int] = {}
        for message in unapplied:
            first.setdefault((message.topic(), message.partition()), message.offset())
        for (topic, partition), offset in first.items():
            self.consumer.seek(TopicPartition(topic, partition, offset))

    def _apply(self, message: Any) -> int:
        """Write one registration into the registry; 0 for anything else on the topic."""
        try:
            event = json.loads(message.value())
            if event.get("kind") != "register":
                return 0  # release switches are ours; other kinds are for other readers
            fields = event["release"]
            record = ReleaseRecord(event["app"], fields.get("prompt_id", ""), fields.get("prompt_version", ""),
                                   fields.get("model", ""), fields.get("provider", ""))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignored a malformed registration on the control topic: %s", exc)
            return 0
        known = {r.release: r for r in self.registry.releases(record.app)}
        if record.release not in known:
            self.registry.register(record, actor=f"sdk:{record.app}")
        if event.get("activate") and known.get(record.release, record).status != "active":
            self.registry.promote(record.app, record.release, actor=f"sdk:{record.app}", reason="announced by the app")
        return 1

    def close(self) -> None:
        self.consumer.close()
