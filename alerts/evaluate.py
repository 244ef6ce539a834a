"""One evaluation of one rule against the store: query the metric per group, step each group's
state machine, persist the transitions to llmwatch.alerts, and queue notifications.

State lives in ClickHouse (the latest llmwatch.alerts row per rule and group), so a restarted
scheduler resumes open incidents: it neither pages again nor forgets to resolve.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

from llmwatch.alerts.engine import AlertState, Observation, Transition, group_key, state_from_row, step
from llmwatch.alerts.metrics import metric_query, worst_events_query
from llmwatch.alerts.notify import Notification, enqueue
from llmwatch.alerts.rules import NOTIFY_ACTIONS, Rule
from llmwatch.alerts.silences import load_mutes

log = logging.getLogger(__name__)

__all__ = ["ESCALATION_LIMIT", "evaluate_rule", "load_states"]

ESCALATION_LIMIT = 50  # events a firing rule sends to reviewers, worst first


def load_states(store: Any, rule: Rule) -> dict[str, tuple[dict[str, str], AlertState]]:
    """The current state of each group of `rule` that has one."""
    rows = store.query(
        f"SELECT group_key, argMax(labels, at), argMax(status, at), argMax(transition, at), argMax(level, at), "
        f"argMax(breaches, at), argMax(since, at), argMax(notified_at, at), argMax(resolved_at, at), max(at) "
        f"FROM {store.database}.alerts WHERE rule = {{rule:String}} GROUP BY group_key",
        {"rule": rule.name},
    )
    states = {}
    for key, labels, status, transition, level, breaches, since, notified_at, resolved_at, at in rows:
        row = {"status": status, "transition": transition, "level": level, "breaches": breaches, "since": since,
               "notified_at": notified_at, "resolved_at": resolved_at, "at": at}
        states[key] = (dict(labels), state_from_row(row))
    return states


def observe(store: Any, rule: Rule, now: datetime) -> dict[str, tuple[dict[str, str], Observation]]:
    end = now - timedelta(seconds=rule.offset_s)
    sql, params = metric_query(rule, end - timedelta(seconds=rule.window_s), end, store.database)
    observed = {}
    for row in store.query(sql, params):
        labels = {dimension: str(value) for dimension, value in zip(rule.group_by, row)}
        value, samples = row[len(rule.group_by)], row[len(rule.group_by) + 1]
        value = None if value is None or value != value else float(value)  # NaN: nothing to measure
        observed[group_key(labels)] = (labels, Observation(value, int(samples or 0)))
    return observed


def evaluate_rule(store: Any, rule: Rule, now: datetime, *, link: str, registry: Any = None,
                  dry_run: bool = False) -> list[tuple[dict[str, str], Transition]]:
    """Evaluate once: persist transitions, queue notifications, and on firing take the rule's
    actions (rollback through `registry`, escalation to the review queue). With dry_run nothing is
    written, queued or done. Raises StoreError when the store cannot be read: the caller skips
    this evaluation rather than treating it as ok or no data."""
    states = load_states(store, rule)
    observed = observe(store, rule, now)
    if not rule.group_by and not observed:
        observed[group_key({})] = ({}, Observation(None, 0))
    transitions = []
    previous: list[AlertState] = []
    rows = []
    # Groups seen now, and groups with an open state that had no data this time.
    for key in sorted(set(observed) | {k for k, (_, s) in states.items() if s.status != "ok"}):
        labels, observation = observed.get(key, (states.get(key, ({}, None))[0], None))
        state = states.get(key, ({}, AlertState()))[1]
        _, transition = step(rule, state, observation, now)
        if transition is None:
            continue
        transitions.append((labels, transition))
        previous.append(state)
        rows.append(_alert_row(rule, key, labels, transition, now))
    if dry_run or not rows:
        return transitions
    # Side effects first, the new state last: a crash in between leaves the old state, so the next
    # evaluation takes the same transitions again; the outbox knows them by the state they leave
    # (delivery ids), rollback and escalation are idempotent, so nothing is lost or doubled.
    mutes = load_mutes(store, rule.name, now)
    for (labels, transition), row, before in zip(transitions, rows, previous):
        if not transition.notify:
            continue
        notification = _notification(rule, row["group_key"], labels, transition, now, link)
        targets = [a for a in rule.actions if a in NOTIFY_ACTIONS]
        if transition.name == "firing":
            if "rollback" in rule.actions:
                _rollback(registry, rule, labels, notification)
            if "escalate" in rule.actions and _escalate(store, rule, labels, now):
                targets.append("review")
        if targets and mutes.holds(row["group_key"], transition.name, transition.state.since):
            log.info("rule %s %s: %s not sent (silenced or acknowledged)", rule.name, row["group_key"], transition.name)
        elif targets:
            enqueue(store, targets, notification, now, identity=_identity(rule, row["group_key"], transition, before))
    store.insert("alerts", rows)
    return transitions


def _identity(rule: Rule, key: str, transition: Transition, before: AlertState) -> str:
    """What a notification is about: the rule, the group, the transition and the state it left."""
    stamp = lambda t: t.isoformat() if t else "-"  # noqa: E731
    return "/".join((rule.name, key, transition.name, before.status, before.level or "-", stamp(before.since),
                     stamp(before.notified_at), stamp(before.resolved_at)))


def _rollback(registry: Any, rule: Rule, labels: dict[str, str], notification: Notification) -> None:
    scope = {**rule.filters, **labels}
    app, release = scope["app"], scope["release"]
    if registry is None:
        log.warning("rule %s: rollback of %s/%s skipped, no release registry", rule.name, app, release)
        return
    try:
        restored = registry.rollback(app, release, actor=f"rule:{rule.name}", reason=notification.summary)
    except Exception as exc:  # an unregistered release: say so, keep alerting
        log.warning("rule %s: rollback of %s/%s failed: %s", rule.name, app, release, exc)
        return
    log.warning("rule %s: rolled %s back from %s to %s", rule.name, app, release,
                restored.release if restored else "(nothing: no stable release)")


def _escalate(store: Any, rule: Rule, labels: dict[str, str], now: datetime) -> int:
    """Queue the events behind the breach for human review, worst first. Returns how many."""
    end = now - timedelta(seconds=rule.offset_s)
    sql, params = worst_events_query(rule, labels, end - timedelta(seconds=rule.window_s), end, store.database,
                                     ESCALATION_LIMIT)
    rows = [
        {"queued_at": now, "event_id": event_id, "app": app, "release": release, "rule": rule.name,
         "reason": f"{rule.metric} breached", "score": float(score) if score is not None else None, "status": "open"}
        for event_id, app, release, score in store.query(sql, params)
    ]
    store.insert("review_queue", rows)
    return len(rows)


def _alert_row(rule: Rule, key: str, labels: dict[str, str], t: Transition, now: datetime) -> dict[str, Any]:
    s = t.state
    observation = t.observation or Observation(None, 0)
    return {
        "at": now, "rule": rule.name, "group_key": key, "labels": labels, "status": s.status,
        "transition": t.name, "level": s.level or "", "value": observation.value, "samples": observation.samples,
        "threshold": rule.threshold(s.level), "breaches": s.breaches, "notified_at": s.notified_at,
        "resolved_at": s.resolved_at, "since": s.since or now,
    }


def _notification(rule: Rule, key: str, labels: dict[str, str], t: Transition, now: datetime, link: str) -> Notification:
    observation = t.observation or Observation(None, 0)
    level = t.state.level or "warning"
    query = json.dumps({"rule": rule.name, **labels}, separators=(",", ":"))
    return Notification(
        rule=rule.name, group_key=key, labels=labels, event=t.name, level=level, metric=rule.metric,
        value=observation.value, threshold=rule.threshold(t.state.level) if t.name != "resolved" else None,
        samples=observation.samples, at=now, link=f"{link}/?alert={query}",
    )
