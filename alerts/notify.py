"""Notifiers (Slack, PagerDuty, signed webhook) behind one interface, and the delivery outbox.

A notification is first written to llmwatch.alert_outbox, then delivered by `deliver_due`, which
the scheduler runs every few seconds: a receiver that is down, slow or answering 5xx is retried
with jittered exponential backoff (honouring Retry-After) until `max_attempts`; every attempt is a
row, so what was sent, when, and why not is in ClickHouse. Nothing here blocks rule evaluation.

Webhook receivers verify `X-Llmwatch-Signature: sha256=<hex>`, the HMAC-SHA256 of
`<X-Llmwatch-Timestamp>.<body>` under the shared secret, and reject stale timestamps.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx

from llmwatch.core.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["Notification", "Notifier", "deliver_due", "enqueue", "notifiers", "sign"]

MAX_BACKOFF_S = 600.0


@dataclass(frozen=True)
class Notification:
    """What happened, in receiver-neutral terms."""

    rule: str
    group_key: str
    labels: dict[str, str]
    event: str  # firing | renotify | changed | resolved
    level: str
    metric: str
    value: float | None
    threshold: float | None
    samples: int
    at: datetime
    link: str

    @property
    def summary(self) -> str:
        where = ", ".join(f"{k}={v}" for k, v in self.labels.items()) or "all traffic"
        value = "no data" if self.value is None else f"{self.value:.4g}"
        if self.event == "resolved":
            return f"[resolved] {self.rule} on {where}: {self.metric} = {value}"
        return f"[{self.level}] {self.rule} on {where}: {self.metric} = {value} (threshold {self.threshold}, {self.samples} events)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule, "group": self.labels, "event": self.event, "level": self.level,
            "metric": self.metric, "value": self.value, "threshold": self.threshold, "samples": self.samples,
            "at": self.at.isoformat(), "link": self.link, "summary": self.summary,
        }


class Notifier(Protocol):
    name: str

    def request(self, notification: Notification) -> tuple[str, bytes, dict[str, str]]:
        """(url, body, headers) of the HTTP POST that delivers `notification`."""
        ...


class SlackNotifier:
    name = "slack"

    def __init__(self, url: str) -> None:
        self.url = url

    def request(self, n: Notification) -> tuple[str, bytes, dict[str, str]]:
        emoji = {"resolved": ":white_check_mark:", "critical": ":rotating_light:"}.get(
            n.event if n.event == "resolved" else n.level, ":warning:"
        )
        fields = [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in n.labels.items()]
        fields += [
            {"type": "mrkdwn", "text": f"*{n.metric}*\n{'no data' if n.value is None else f'{n.value:.4g}'}"},
            {"type": "mrkdwn", "text": f"*threshold*\n{n.threshold}"},
            {"type": "mrkdwn", "text": f"*events*\n{n.samples}"},
        ]
        body = {
            "text": n.summary,
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": f"{n.event}: {n.rule}"[:150]}},
                {"type": "section", "text": {"type": "mrkdwn", "text": f"{emoji} {n.summary}"}},
                {"type": "section", "fields": fields[:10]},
                {"type": "actions", "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": "Open in llmwatch"}, "url": n.link},
                ]},
            ],
        }
        return self.url, json.dumps(body).encode(), {"Content-Type": "application/json"}


class PagerDutyNotifier:
    """Events API v2: one incident per (rule, group) through a stable dedup_key; a resolve closes it."""

    name = "pagerduty"

    def __init__(self, url: str, routing_key: str) -> None:
        self.url = url
        self.routing_key = routing_key

    @staticmethod
    def dedup_key(n: Notification) -> str:
        return "llmwatch:" + hashlib.sha256(f"{n.rule}\0{n.group_key}".encode()).hexdigest()[:32]

    def request(self, n: Notification) -> tuple[str, bytes, dict[str, str]]:
        body: dict[str, Any] = {
            "routing_key": self.routing_key,
            "event_action": "resolve" if n.event == "resolved" else "trigger",
            "dedup_key": self.dedup_key(n),
        }
        if n.event != "resolved":
            body["payload"] = {
                "summary": n.summary[:1024],
                "severity": "critical" if n.level == "critical" else "warning",
                "source": "llmwatch",
                "component": n.labels.get("app", ""),
                "group": n.rule,
                "custom_details": n.as_dict(),
            }
            body["links"] = [{"href": n.link, "text": "llmwatch"}]
        return self.url, json.dumps(body).encode(), {"Content-Type": "application/json"}


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class WebhookNotifier:
    name = "webhook"

    def __init__(self, url: str, secret: str) -> None:
        self.url = url
        self.secret = secret

    def request(self, n: Notification) -> tuple[str, bytes, dict[str, str]]:
        body = json.dumps(n.as_dict()).encode()
        timestamp = str(int(time.time()))
        return self.url, body, {
            "Content-Type": "application/json",
            "X-Llmwatch-Timestamp": timestamp,
            "X-Llmwatch-Signature": sign(self.secret, timestamp, body),
        }


def notifiers(settings: Settings) -> dict[str, Notifier]:
    """The notifiers that have somewhere to send to."""
    found: dict[str, Notifier] = {}
    if settings.slack_webhook_url:
        found["slack"] = SlackNotifier(settings.slack_webhook_url)
    if settings.pagerduty_routing_key:
        found["pagerduty"] = PagerDutyNotifier(settings.pagerduty_url, settings.pagerduty_routing_key)
    if settings.webhook_url:
        found["webhook"] = WebhookNotifier(settings.webhook_url, settings.webhook_secret)
    # The reviewers' channel (the `escalate` action), or the main Slack channel.
    if settings.review_slack_webhook_url or settings.slack_webhook_url:
        found["review"] = SlackNotifier(settings.review_slack_webhook_url or settings.slack_webhook_url)
    return found


# Delivery ids derived from what a notification is about, so that queueing it again (an evaluation
# replayed after a crash) finds the first copy instead of paging twice.
_DELIVERY_NS = uuid.UUID("0f2b9c1e-6a7d-4e8f-9b3c-2d1e0f9a8b7c")


def enqueue(store: Any, notifier_names: list[str], notification: Notification, now: datetime,
            identity: str | None = None) -> int:
    """Write one outbox row per notifier, once per `identity` (any string that names this very
    notification); delivery happens in `deliver_due`. Returns the rows written."""
    ids = {name: uuid.uuid5(_DELIVERY_NS, f"{identity}\0{name}") if identity else uuid.uuid4() for name in notifier_names}
    if identity and ids:
        queued = store.query(
            f"SELECT DISTINCT delivery_id FROM {store.database}.alert_outbox WHERE delivery_id IN {{ids:Array(UUID)}}",
            {"ids": list(ids.values())},
        )
        already = {row[0] for row in queued}
        ids = {name: i for name, i in ids.items() if i not in already}
    rows = [
        {
            "delivery_id": ids[name], "created_at": now, "notifier": name, "rule": notification.rule,
            "group_key": notification.group_key, "event": notification.event,
            "payload": json.dumps(notification.as_dict()),
            "status": "pending", "attempts": 0, "next_attempt": now, "last_error": "", "updated_at": now,
        }
        for name in ids
    ]
    store.insert("alert_outbox", rows)
    return len(rows)


def _notification(payload: str, group_key: str) -> Notification:
    d = json.loads(payload)
    return Notification(
        rule=d["rule"], group_key=group_key, labels=d["group"], event=d["event"], level=d["level"],
        metric=d["metric"], value=d["value"], threshold=d["threshold"], samples=d["samples"],
        at=datetime.fromisoformat(d["at"]), link=d["link"],
    )


def _retry_after(response: httpx.Response | None, now: datetime) -> float | None:
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, (parsedate_to_datetime(value) - now).total_seconds())
    except (TypeError, ValueError):
        return None


def deliver_due(store: Any, available: dict[str, Notifier], now: datetime | None = None, *,
                max_attempts: int = 12, timeout_s: float = 10.0, client: httpx.Client | None = None) -> dict[str, int]:
    """Try every outbox row that is due. Returns counts per outcome."""
    now = now or datetime.now(UTC)
    rows = store.query(
        f"SELECT delivery_id, created_at, notifier, rule, group_key, event, payload, attempts "
        f"FROM {store.database}.alert_outbox FINAL "
        f"WHERE status IN ('pending', 'retry') AND next_attempt <= {{now:DateTime64(3, 'UTC')}} "
        f"ORDER BY created_at LIMIT 500",
        {"now": now},
    )
    outcomes: dict[str, int] = {}
    http = client or httpx.Client(timeout=timeout_s)
    try:
        for delivery_id, created_at, name, rule, key, event, payload, attempts in rows:
            status, error, wait = _attempt(http, available.get(name), payload, key, attempts, now, max_attempts)
            outcomes[status] = outcomes.get(status, 0) + 1
            store.insert("alert_outbox", [{
                "delivery_id": delivery_id, "created_at": created_at, "notifier": name, "rule": rule,
                "group_key": key, "event": event, "payload": payload, "status": status,
                "attempts": attempts + 1, "next_attempt": now + timedelta(seconds=wait),
                "last_error": error[:1000], "updated_at": datetime.now(UTC),
            }])
    finally:
        if client is None:
            http.close()
    return outcomes


def _attempt(http: httpx.Client, notifier: Notifier | None, payload: str, key: str, attempts: int,
             now: datetime, max_attempts: int) -> tuple[str, str, float]:
    """(status, error, seconds until the next attempt) of one delivery attempt."""
    if notifier is None:
        return "not_configured", "no URL or key is set for this notifier", 0.0
    url, body, headers = notifier.request(_notification(payload, key))
    response: httpx.Response | None = None
    try:
        response = http.post(url, content=body, headers=headers)
        if response.status_code < 300:
            return "delivered", "", 0.0
        error = f"HTTP {response.status_code}: {response.text[:200]}"
        permanent = 400 <= response.status_code < 500 and response.status_code not in (408, 429)
    except httpx.HTTPError as exc:
        error, permanent = f"{type(exc).__name__}: {exc}", False
    if permanent or attempts + 1 >= max_attempts:
        log.warning("notification to %s failed for good: %s", notifier.name, error)
        return "failed", error, 0.0
    wait = _retry_after(response, now)
    if wait is None:
        wait = min(MAX_BACKOFF_S, 2.0 * 2**attempts) * random.uniform(0.8, 1.2)
    return "retry", error, wait
