"""Rule files and the state machine, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llmwatch.alerts.engine import AlertState, Observation, step
from llmwatch.alerts.metrics import METRICS
from llmwatch.alerts.rules import Rule, load_rules, parse_duration, parse_rules
from llmwatch.core.errors import ConfigError
from llmwatch.core.settings import Settings

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
GOOD = """
  - name: ok-rule
    metric: toxicity_rate
    window: 5m
    every: 1m
    critical: 0.2
"""


def test_the_bundled_rules_load_cleanly() -> None:
    rules, errors = load_rules(Settings().rules_path)
    assert errors == [] and len(rules) >= 5
    assert {r.metric for r in rules} >= {"toxicity_rate", "hallucination_rate", "drift_p_value", "dlq_rate"}


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("- name: a\n    metric: toxicity_ratio\n    window: 5m\n    every: 1m\n    critical: 1",
         "rule 'a', field metric: unknown metric 'toxicity_ratio'"),
        ("- name: b\n    metric: toxicity_rate\n    window: 30s\n    every: 1m\n    critical: 1",
         "rule 'b', field window: 30s is shorter than the cadence (1m)"),
        ("- name: c\n    metric: toxicity_rate\n    window: 5 minutes\n    every: 1m\n    critical: 1",
         "rule 'c', field window: '5 minutes' is not a duration"),
        ("- name: d\n    metric: toxicity_rate\n    window: 5m\n    every: 1m", "rule 'd', field critical: a rule needs"),
        ("- name: e\n    metric: toxicity_rate\n    window: 5m\n    every: 1m\n    critical: 1\n    treshold: 2",
         "rule 'e', field treshold: unknown field"),
        ("- name: f\n    metric: negative_feedback_rate\n    window: 5m\n    every: 1m\n    critical: 1\n    group_by: release",
         "rule 'f', field group_by: negative_feedback_rate can be grouped by app"),
        ("- name: g\n    metric: toxicity_rate\n    window: 5m\n    every: 1m\n    critical: 1\n    actions: [email]",
         "rule 'g', field actions: use any of slack, pagerduty, webhook"),
        ("- metric: toxicity_rate", "rule #2, field name: required"),
    ],
)
def test_a_bad_rule_is_named_and_the_others_still_load(rule: str, message: str) -> None:
    rules, errors = parse_rules(f"rules:\n{GOOD}\n  {rule}\n", "rules.yaml")
    assert [r.name for r in rules] == ["ok-rule"]
    assert len(errors) == 1 and message in errors[0], errors


def test_unreadable_files_are_config_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_rules("rules: [", "x.yaml")
    with pytest.raises(ConfigError, match="top-level `rules:` list"):
        parse_rules("alerts: []", "x.yaml")
    with pytest.raises(ConfigError, match="no such rules file"):
        load_rules(tmp_path / "absent.yaml")


def test_durations() -> None:
    assert [parse_duration(v) for v in ("30s", "5m", "1.5h", "2d", 90)] == [30, 300, 5400, 172800, 90]


def test_every_catalogue_metric_is_documented() -> None:
    catalogue = (Path(__file__).resolve().parents[2] / "docs" / "alerts.md").read_text()
    for name in METRICS:
        assert f"`{name}`" in catalogue, name


RULE = Rule("r", "toxicity_rate", window_s=300, every_s=60, comparison=">", warning=0.05, critical=0.2,
            for_evaluations=2, min_samples=10, cooldown_s=600, renotify_s=3600)


def run(rule: Rule, observations: list[Observation | None], state: AlertState | None = None) -> list[str | None]:
    names = []
    state = state or AlertState()
    for i, observation in enumerate(observations):
        state, transition = step(rule, state, observation, T0 + timedelta(minutes=i))
        names.append(transition.name if transition else None)
    return names


def test_fires_after_for_evaluations_then_resolves() -> None:
    bad, good = Observation(0.5, 100), Observation(0.0, 100)
    assert run(RULE, [bad, bad, bad, good, good]) == ["pending", "firing", None, "resolved", None]


def test_a_single_breach_only_pends_and_clears() -> None:
    assert run(RULE, [Observation(0.5, 100), Observation(0.0, 100)]) == ["pending", "cleared"]


def test_level_changes_and_renotify() -> None:
    state = AlertState("firing", "warning", 2, T0, notified_at=T0)
    s, t = step(RULE, state, Observation(0.5, 100), T0 + timedelta(minutes=1))
    assert t is not None and t.name == "changed" and s.level == "critical"
    s, t = step(RULE, s, Observation(0.5, 100), T0 + timedelta(minutes=30))
    assert t is None
    s, t = step(RULE, s, Observation(0.5, 100), T0 + timedelta(hours=2))
    assert t is not None and t.name == "renotify"


def test_cooldown_holds_a_new_firing() -> None:
    resolved = AlertState("ok", resolved_at=T0)
    bad = Observation(0.5, 100)
    state, t = step(RULE, resolved, bad, T0 + timedelta(minutes=1))
    state, t = step(RULE, state, bad, T0 + timedelta(minutes=2))
    assert t is not None and t.name == "pending"  # would fire, but cooling down
    state, t = step(RULE, state, bad, T0 + timedelta(minutes=11))
    assert t is not None and t.name == "firing"


@pytest.mark.parametrize(("policy", "expected"), [("ok", "resolved"), ("keep", None), ("alert", None)])
def test_no_data_policy(policy: str, expected: str | None) -> None:
    rule = Rule(**{**RULE.__dict__, "no_data": policy})
    firing = AlertState("firing", "critical", 2, T0, notified_at=T0)
    for observation in (None, Observation(None, 0), Observation(0.9, 3)):  # nothing, NULL, too few samples
        _, transition = step(rule, firing, observation, T0 + timedelta(minutes=1))
        assert (transition.name if transition else None) == expected
