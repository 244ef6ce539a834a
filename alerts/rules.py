"""Alert rules: the YAML format, validated at load with errors that name the rule and the field.

    rules:
      - name: toxic-answers
        metric: toxicity_rate          # alerts/metrics.py lists the catalogue
        filters: {app: support-bot}     # app, environment, release, model
        group_by: [app, release]
        window: 5m                      # evaluated over the last 5 minutes ...
        every: 1m                       # ... every minute ...
        offset: 30s                     # ... ending 30 s ago, for ingest lag
        comparison: ">"                 # > >= < <=
        warning: 0.05
        critical: 0.2
        for: 2                          # breaching evaluations in a row before it fires
        min_samples: 50                 # fewer events than this is "no data"
        no_data: ok                     # ok | keep | alert
        cooldown: 10m                   # after a resolve, no new firing this soon
        renotify: 1h                    # remind while firing
        actions: [slack, pagerduty]

A rule file with mistakes still loads its good rules: `load_rules` returns them with one error
line per bad rule, and the scheduler reports those errors instead of stopping.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml

from llmwatch.alerts.metrics import METRICS, metric_named
from llmwatch.core.errors import ConfigError

__all__ = ["ACTIONS", "DIMENSIONS", "NOTIFY_ACTIONS", "Rule", "load_rules", "parse_duration", "parse_named", "parse_rules"]

DIMENSIONS = ("app", "environment", "release", "model")
NOTIFY_ACTIONS = ("slack", "pagerduty", "webhook")
ACTIONS = (*NOTIFY_ACTIONS, "rollback", "escalate")
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
}
NO_DATA = ("ok", "keep", "alert")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class _Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=_Named)  # what parse_named reads: rules, judges


def parse_duration(value: Any) -> float:
    """'30s', '5m', '1h', '2d', or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration like 30s, 5m, 1h")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


@dataclass(frozen=True)
class Rule:
    name: str
    metric: str
    window_s: float
    every_s: float
    comparison: str
    warning: float | None
    critical: float | None
    filters: dict[str, str] = field(default_factory=dict)
    group_by: tuple[str, ...] = ()
    offset_s: float = 0.0
    for_evaluations: int = 1
    min_samples: int = 1
    no_data: str = "ok"
    cooldown_s: float = 0.0
    renotify_s: float = 0.0
    actions: tuple[str, ...] = ()

    def level(self, value: float) -> str | None:
        """'critical', 'warning', or None when the value breaches neither threshold."""
        compare = COMPARISONS[self.comparison]
        if self.critical is not None and compare(value, self.critical):
            return "critical"
        if self.warning is not None and compare(value, self.warning):
            return "warning"
        return None

    def threshold(self, level: str | None) -> float | None:
        return {"critical": self.critical, "warning": self.warning}.get(level or "")


_FIELDS = {
    "name", "metric", "filters", "group_by", "window", "every", "offset", "comparison", "warning",
    "critical", "for", "min_samples", "no_data", "cooldown", "renotify", "actions",
}


def _rule(raw: Any, position: int) -> Rule:
    if not isinstance(raw, dict):
        raise ValueError(f"rule #{position}: expected a mapping")
    name = raw.get("name")
    where = f"rule {name!r}" if name else f"rule #{position}"

    def fail(field_name: str, problem: str) -> ValueError:
        return ValueError(f"{where}, field {field_name}: {problem}")

    if not isinstance(name, str) or not _NAME.match(name):
        raise fail("name", "required: letters, digits, '.', '_' or '-'")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise fail(unknown[0], f"unknown field (known: {', '.join(sorted(_FIELDS))})")
    metric = raw.get("metric")
    found = metric_named(metric) if isinstance(metric, str) else None
    if found is None or not isinstance(metric, str):
        raise fail("metric", f"unknown metric {metric!r}; the catalogue: {', '.join(sorted(METRICS))}, "
                             "or judge:NAME (a rubric judge's fail rate)")
    durations = {}
    for key, default in (("window", None), ("every", None), ("offset", 0), ("cooldown", 0), ("renotify", 0)):
        value = raw.get(key, default)
        if value is None:
            raise fail(key, "required, e.g. 5m")
        try:
            durations[key] = parse_duration(value)
        except ValueError as exc:
            raise fail(key, str(exc)) from None
    if durations["every"] <= 0:
        raise fail("every", "must be positive")
    if durations["window"] < durations["every"]:
        raise fail("window", f"{raw['window']} is shorter than the cadence ({raw['every']}): events would go unseen")
    comparison = raw.get("comparison", ">")
    if comparison not in COMPARISONS:
        raise fail("comparison", f"use one of {' '.join(COMPARISONS)}")
    thresholds = {}
    for key in ("warning", "critical"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise fail(key, f"expected a number, got {value!r}")
        thresholds[key] = None if value is None else float(value)
    if thresholds["warning"] is None and thresholds["critical"] is None:
        raise fail("critical", "a rule needs a warning or a critical threshold")
    filters = raw.get("filters") or {}
    if not isinstance(filters, dict) or any(k not in DIMENSIONS or not isinstance(v, str) for k, v in filters.items()):
        raise fail("filters", f"a mapping of {', '.join(DIMENSIONS)} to strings")
    group_by = raw.get("group_by") or []
    if isinstance(group_by, str):
        group_by = [group_by]
    allowed = found.dimensions
    if not isinstance(group_by, list) or any(g not in allowed for g in group_by):
        raise fail("group_by", f"{metric} can be grouped by {', '.join(allowed) or 'nothing'}")
    if any(k not in allowed for k in filters):
        raise fail("filters", f"{metric} can be filtered by {', '.join(allowed) or 'nothing'}")
    for key in ("for", "min_samples"):
        value = raw.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise fail(key, "a whole number, at least 1")
    no_data = raw.get("no_data", "ok")
    if no_data not in NO_DATA:
        raise fail("no_data", f"use one of {', '.join(NO_DATA)}")
    actions = raw.get("actions") or []
    if isinstance(actions, str):
        actions = [actions]
    if not isinstance(actions, list) or any(a not in ACTIONS for a in actions):
        raise fail("actions", f"use any of {', '.join(ACTIONS)}")
    if "rollback" in actions and not {"app", "release"} <= set(group_by) | set(filters):
        raise fail("actions", "rollback needs app and release in group_by or filters, to know what to roll back")
    if "escalate" in actions and found.worst is None:
        escalating = ", ".join(m.name for m in METRICS.values() if m.worst)
        raise fail("actions", f"escalate sends the worst events to reviewers; it works with {escalating}")
    return Rule(
        name=name, metric=metric, window_s=durations["window"], every_s=durations["every"],
        comparison=comparison, warning=thresholds["warning"], critical=thresholds["critical"],
        filters=dict(filters), group_by=tuple(group_by), offset_s=durations["offset"],
        for_evaluations=raw.get("for", 1), min_samples=raw.get("min_samples", 1), no_data=no_data,
        cooldown_s=durations["cooldown"], renotify_s=durations["renotify"], actions=tuple(actions),
    )


def parse_rules(text: str, source: str = "rules") -> tuple[list[Rule], list[str]]:
    """The valid rules of a YAML document, and one error line per invalid one."""
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    raw_rules = document.get("rules") if isinstance(document, dict) else None
    if not isinstance(raw_rules, list):
        raise ConfigError(f"{source}: expected a top-level `rules:` list")
    return parse_named(raw_rules, _rule, "rule", source)


def parse_named(raws: list[Any], parse: Callable[[Any, int], T], kind: str, source: str) -> tuple[list[T], list[str]]:
    """Each entry parsed by `parse(raw, position)` (a ValueError names what is wrong with it), and
    one error line per entry that is wrong or reuses a name: one mistake does not drop the rest."""
    parsed: list[T] = []
    errors: list[str] = []
    for position, raw in enumerate(raws, 1):
        try:
            entry = parse(raw, position)
        except ValueError as exc:
            errors.append(f"{source}: {exc}")
            continue
        if any(p.name == entry.name for p in parsed):
            errors.append(f"{source}: {kind} {entry.name!r}, field name: defined twice")
            continue
        parsed.append(entry)
    return parsed, errors


def load_rules(path: Path) -> tuple[list[Rule], list[str]]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such rules file (set --rules or LLMWATCH_RULES)")
    return parse_rules(path.read_text(encoding="utf-8"), str(path))
