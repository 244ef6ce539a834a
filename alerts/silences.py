"""Silences and acknowledgements, set from the console and honoured by every evaluation.

A silence mutes a rule's notifications (for one group, or all groups with group_key "") until
a time; the rule keeps evaluating, recording transitions and taking its actions, so the timeline
stays complete. An acknowledgement says someone is on an incident: its reminders (renotify)
stop, but a change of level or its resolution is still sent. Each is a row in
llmwatch.alert_actions and in audit_log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from llmwatch.alerts.audit import audit

__all__ = ["Mutes", "acknowledge", "load_mutes", "silence", "unsilence"]

ALL_GROUPS = ""


@dataclass(frozen=True)
class Mutes:
    """What holds a rule's notifications back at one moment."""

    silenced: frozenset[str] = frozenset()  # group keys; ALL_GROUPS mutes every group
    acknowledged: dict[str, datetime] = field(default_factory=dict)  # group key -> latest ack

    def holds(self, group_key: str, transition: str, since: datetime | None) -> bool:
        """Whether a notification of `transition` for the incident that began at `since` is held."""
        if ALL_GROUPS in self.silenced or group_key in self.silenced:
            return True
        acked = self.acknowledged.get(group_key)
        return transition == "renotify" and acked is not None and since is not None and acked >= since


def load_mutes(store: Any, rule: str, now: datetime) -> Mutes:
    """The silences in force and the acknowledgements of `rule` at `now`."""
    rows = store.query(
        f"SELECT group_key, action, argMax(until, at), max(at) FROM {store.database}.alert_actions "
        f"WHERE rule = {{rule:String}} GROUP BY group_key, action",
        {"rule": rule},
    )
    latest: dict[tuple[str, str], tuple[datetime | None, datetime]] = {
        (g, a): (_utc(u), _as_utc(at)) for g, a, u, at in rows
    }
    silenced = set()
    for (group, action), (until, at) in latest.items():
        if action != "silence" or until is None or until <= now:
            continue
        lifted = latest.get((group, "unsilence"))
        if lifted is None or lifted[1] < at:
            silenced.add(group)
    acknowledged = {g: at for (g, a), (_, at) in latest.items() if a == "acknowledge"}
    return Mutes(frozenset(silenced), acknowledged)


def _utc(moment: datetime | None) -> datetime | None:
    # Nullable DateTime64 columns come back naive; they are UTC.
    return None if moment is None else _as_utc(moment)


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _record(store: Any, rule: str, group_key: str, action: str, actor: str, note: str,
            until: datetime | None = None) -> None:
    now = datetime.now(UTC)
    store.insert("alert_actions", [{"at": now, "rule": rule, "group_key": group_key, "action": action,
                                    "until": until, "actor": actor, "note": note}])
    labels = json.loads(group_key) if group_key else {}
    audit(store, actor, action, app=labels.get("app", ""), release=labels.get("release", ""), at=now, rule=rule,
          group=group_key, until=until.isoformat() if until else None, note=note)


def silence(store: Any, rule: str, group_key: str, until: datetime, actor: str, note: str) -> None:
    if until <= datetime.now(UTC):
        raise ValueError("a silence must end in the future")
    _record(store, rule, group_key, "silence", actor, note, until)


def unsilence(store: Any, rule: str, group_key: str, actor: str, note: str = "") -> None:
    _record(store, rule, group_key, "unsilence", actor, note)


def acknowledge(store: Any, rule: str, group_key: str, actor: str, note: str) -> None:
    _record(store, rule, group_key, "acknowledge", actor, note)
