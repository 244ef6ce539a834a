"""The alert state machine of one (rule, group), as a pure function.

    ok ──breach──► pending ──breach × for──► firing ──recovered──► ok (transition: resolved)
     ▲               │                        │  ├─ renotify after `renotify`
     └──recovered────┘ (cleared)              │  └─ level change warning ⇄ critical (changed)

A breach is a value past the warning or critical threshold. "No data" (no rows, NULL, or fewer
samples than min_samples) follows the rule's policy: `ok` counts as recovered, `keep` changes
nothing, `alert` counts as a critical breach. After a resolve, a new firing waits for `cooldown`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from llmwatch.alerts.rules import Rule

__all__ = ["AlertState", "Observation", "Transition", "group_key", "step"]

NOTIFYING = ("firing", "renotify", "changed", "resolved")


@dataclass(frozen=True)
class Observation:
    value: float | None
    samples: int


@dataclass(frozen=True)
class AlertState:
    status: str = "ok"  # ok | pending | firing
    level: str | None = None
    breaches: int = 0
    since: datetime | None = None
    notified_at: datetime | None = None
    resolved_at: datetime | None = None


@dataclass(frozen=True)
class Transition:
    """A state change worth a row in llmwatch.alerts; `notify` when receivers should hear of it."""

    name: str  # pending | firing | renotify | changed | resolved | cleared
    state: AlertState
    observation: Observation | None

    @property
    def notify(self) -> bool:
        return self.name in NOTIFYING


def group_key(labels: dict[str, str]) -> str:
    """A stable key for a group's labels (the PagerDuty dedup key is built on it)."""
    return json.dumps(labels, sort_keys=True, separators=(",", ":"))


def _no_data(rule: Rule, observation: Observation | None) -> bool:
    return observation is None or observation.value is None or observation.samples < rule.min_samples


def step(rule: Rule, state: AlertState, observation: Observation | None, now: datetime) -> tuple[AlertState, Transition | None]:
    """The next state after one evaluation, and the transition taken (None: nothing changed)."""
    if _no_data(rule, observation):
        if rule.no_data == "keep":
            return state, None
        level = "critical" if rule.no_data == "alert" else None
    else:
        level = rule.level(observation.value)  # type: ignore[union-attr, arg-type]

    def moved(name: str, new: AlertState) -> tuple[AlertState, Transition]:
        return new, Transition(name, new, observation)

    if level is None:
        if state.status == "firing":
            return moved("resolved", AlertState("ok", since=now, resolved_at=now))
        if state.status == "pending":
            return moved("cleared", AlertState("ok", since=now, resolved_at=state.resolved_at))
        return state, None

    if state.status == "firing":
        if level != state.level:
            return moved("changed", replace(state, level=level, breaches=state.breaches + 1, notified_at=now))
        if rule.renotify_s and state.notified_at and now - state.notified_at >= timedelta(seconds=rule.renotify_s):
            return moved("renotify", replace(state, breaches=state.breaches + 1, notified_at=now))
        return replace(state, breaches=state.breaches + 1), None

    breaches = state.breaches + 1 if state.status == "pending" else 1
    cooling = (
        state.resolved_at is not None
        and rule.cooldown_s > 0
        and now - state.resolved_at < timedelta(seconds=rule.cooldown_s)
    )
    if breaches >= rule.for_evaluations and not cooling:
        return moved("firing", AlertState("firing", level, breaches, since=now, notified_at=now,
                                          resolved_at=state.resolved_at))
    since = state.since if state.status == "pending" else now
    return moved("pending", AlertState("pending", level, breaches, since=since, resolved_at=state.resolved_at))


def _utc(moment: datetime | None) -> datetime | None:
    # clickhouse-connect returns the UTC columns as naive datetimes; `step` compares them with an
    # aware `now` (renotify, cooldown), which Python refuses for a naive one.
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def state_from_row(row: dict[str, Any]) -> AlertState:
    """The state a persisted llmwatch.alerts row leaves a (rule, group) in."""
    return AlertState(
        status=row["status"],
        level=row["level"] or None,
        breaches=row["breaches"],
        since=_utc(row["since"]),
        notified_at=_utc(row["notified_at"]),
        resolved_at=_utc(row["resolved_at"]),
    )
