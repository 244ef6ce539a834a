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

from alerts.engine import AlertState, Observation, Transition, group_key, state_from_row, step
from alerts.metrics import metric_query
from alerts.notify import Notification, enqueue
from alerts.rules import ACTIONS, Rule

log = logging.getLogger(__name__)

__all__ = ["evaluate_rule", "load_states"]


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


def evaluate_rule(store: Any, rule: Rule, now: datetime, *, notify_with: list[str], link: str,
                  dry_run: bool = False) -> list[tuple[dict[str, str], Transition]]:
    """Evaluate once. With dry_run nothing is written or queued. Raises StoreError when the store
    cannot be read: the caller skips this evaluation rather than treating it as ok or no data."""
    states = load_states(store, rule)
    observed = observe(store, rule, now)
    if not rule.group_by and not observed:
        observed[group_key({})] = ({}, Observation(None, 0))
    transitions = []
    rows = []
    # Groups seen now, and groups with an open state that had no data this time.
    for key in sorted(set(observed) | {k for k, (_, s) in states.items() if s.status != "ok"}):
        labels, observation = observed.get(key, (states.get(key, ({}, None))[0], None))
        state = states.get(key, ({}, AlertState()))[1]
        new_state, transition = step(rule, state, observation, now)
        if transition is None:
            continue
        transitions.append((labels, transition))
        rows.append(_alert_row(rule, key, labels, transition, now))
    if dry_run or not rows:
        return transitions
    store.insert("alerts", rows)
    for (labels, transition), row in zip(transitions, rows):
        if transition.notify:
            targets = [a for a in rule.actions if a in ACTIONS]
            if targets:
                enqueue(store, targets, _notification(rule, row["group_key"], labels, transition, now, link), now)
    return transitions


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
