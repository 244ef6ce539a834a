"""The release gate: a release is promoted only when its latest experiment on the app's gate
dataset is not worse than the current release's on the same dataset version, on every gated signal.

Worse, per signal: the 95% interval of the rate difference (candidate − current, Newcombe) lies
above the gate's `tolerance` (clear evidence), or the rate rose by more than `max_increase` (too
big to wave through on a small dataset). A refusal names each reason and the command that fixes it.
`--force` with a reason overrides; refusals, passes and overrides all go to the audit log. After
promotion the alert rules' automatic rollback still applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmwatch.alerts.audit import audit
from llmwatch.alerts.evaluations import Evaluations, Gate
from llmwatch.alerts.experiments import latest_experiment
from llmwatch.alerts.intervals import rate_difference
from llmwatch.core.errors import LlmwatchError

__all__ = ["GateRefused", "GateVerdict", "check_gate", "compare", "promote_through_gate"]


class GateRefused(LlmwatchError):
    pass


@dataclass(frozen=True)
class GateVerdict:
    allowed: bool
    reasons: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)


def compare(gate: Gate, candidate: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The gated signals on which the candidate's counts are worse than the current's. Pure;
    counts are {signal: [bad, of]}."""
    problems = []
    for signal in gate.signals:
        if signal not in candidate or not candidate[signal][1]:
            problems.append(f"{signal}: the candidate's experiment has no {signal} results")
            continue
        if signal not in current or not current[signal][1]:
            continue  # nothing to compare with: the current release was never measured on it
        (k1, n1), (k0, n0) = candidate[signal], current[signal]
        d, low, high = rate_difference(k1, n1, k0, n0)
        if low > gate.tolerance or d > gate.max_increase:
            problems.append(f"{signal}: {k1}/{n1} ({k1 / n1:.1%}) against {k0}/{n0} ({k0 / n0:.1%}) now, "
                            f"difference {d:+.1%} [{low:+.1%}, {high:+.1%}]")
    return problems


def check_gate(store: Any, evaluations: Evaluations, registry: Any, app: str, release: str) -> GateVerdict:
    if app in evaluations.broken_gates:
        return GateVerdict(False, (f"the gate of {app} has a mistake in the evaluations file; fix it first",))
    gate = evaluations.gate(app)
    if gate is None:
        return GateVerdict(True, ("no gate configured",))
    tried = latest_experiment(store, app, release, gate.dataset)
    fix = (f"llmwatch experiment run --dataset {gate.dataset} --app {app} --endpoint URL --model MODEL "
           f"--release {release}")
    if tried is None:
        return GateVerdict(False, (f"{release} has no finished experiment on the gate dataset {gate.dataset!r}: {fix}",))
    active = registry.active(app)
    details = {"dataset": gate.dataset, "dataset_version": tried["dataset_version"], "candidate": tried["experiment_id"]}
    if active is None or active.release == release:
        return GateVerdict(True, ("nothing served now to compare with",), details)
    current = latest_experiment(store, app, active.release, gate.dataset, tried["dataset_version"])
    if current is None:
        return GateVerdict(False, (f"the current release {active.release} has no finished experiment on "
                                   f"{gate.dataset!r} version {tried['dataset_version']} to compare with: "
                                   f"{fix.replace(release, active.release)}",), details)
    details["current"] = current["experiment_id"]
    problems = compare(gate, tried["summary"].get("counts", {}), current["summary"].get("counts", {}))
    return GateVerdict(not problems, tuple(problems) or ("not worse on " + ", ".join(gate.signals),), details)


def promote_through_gate(store: Any, evaluations: Evaluations, registry: Any, app: str, release: str, actor: str,
                         reason: str = "", force: bool = False) -> tuple[Any, GateVerdict]:
    """Promote `release` if the gate allows it, or if forced with a reason. Raises GateRefused."""
    verdict = check_gate(store, evaluations, registry, app, release)
    if not verdict.allowed:
        if not force:
            audit(store, actor, "gate_refused", app=app, release=release, reasons=list(verdict.reasons), **verdict.details)
            raise GateRefused(f"{app} {release} stopped at the release gate:\n  " + "\n  ".join(verdict.reasons)
                              + "\n(--force --reason WHY promotes it anyway, on the record)")
        if not reason.strip():
            raise GateRefused("--force needs --reason: overriding the gate is written to the audit log with it")
        audit(store, actor, "gate_overridden", app=app, release=release, reasons=list(verdict.reasons), why=reason,
              **verdict.details)
    elif verdict.details:
        audit(store, actor, "gate_passed", app=app, release=release, reasons=list(verdict.reasons), **verdict.details)
    return registry.promote(app, release, actor, reason), verdict
