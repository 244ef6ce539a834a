"""`llmwatch train --from-reviews`: per-deployment models from the review queue's decisions.

Labels: every reviewed event whose reviewers agree (one decision, or all the same); `toxic` vs
`fine` trains toxicity, `hallucinated` vs `fine` (events with context) trains grounding. A quarter
of the labels, stratified, is held back: the candidate (detectors/adapters.py, fitted on the rest)
is promoted only when its ROC AUC on them beats the model it would replace (the current promoted
version, or the shipped model). Either way the version is stored, with its label counts, the event
ids on each side of the split, both AUCs and the date; the caller audits the decision. Nothing here promotes a model that was not measured.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from llmwatch.detectors.adapters import Adapter, latest_promoted, next_version, store_version
from llmwatch.detectors.training.fit import SEED

__all__ = ["LABELS", "Outcome", "agreed_labels", "fit_adapter", "reviewed_items", "split_held_back", "train_from_reviews"]

LABELS = {"toxicity": ("toxic", "fine"), "grounding": ("hallucinated", "fine")}
HELD_BACK = 0.25
MIN_HELD_BACK_PER_CLASS = 5
BASE_SCALE = 10.0  # the shipped logit's column is scaled up so the L2 penalty barely touches its weight


@dataclass
class Outcome:
    detector: str
    status: str  # promoted | rejected | skipped
    reason: str
    version: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)


def reviewed_items(store: Any) -> list[dict[str, Any]]:
    """Each reviewed event with its decisions (latest per reviewer) and text."""
    db = store.database
    rows = store.query(
        f"SELECT toString(r.event_id), groupArray(r.decision), any(t.input), any(t.output), any(t.context) "
        f"FROM {db}.reviews AS r FINAL INNER JOIN (SELECT event_id, input, output, context FROM {db}.traces "
        f"WHERE event_id IN (SELECT event_id FROM {db}.reviews)) AS t ON t.event_id = r.event_id "
        f"GROUP BY r.event_id ORDER BY r.event_id")
    return [{"event_id": e, "decisions": list(d), "input": i, "output": o, "context": list(c or [])}
            for e, d, i, o, c in rows]


def agreed_labels(items: Sequence[dict[str, Any]], detector: str) -> list[tuple[dict[str, Any], int]]:
    bad, good = LABELS[detector]
    labelled = []
    for item in items:
        decisions = set(item["decisions"])
        if len(decisions) != 1 or not item["output"].strip():
            continue  # disagreement, or nothing to score
        (decision,) = decisions
        if decision in (bad, good) and (detector != "grounding" or any(c.strip() for c in item["context"])):
            labelled.append((item, int(decision == bad)))
    return labelled


def fit_adapter(detector: str, version: int, features: Any, base_logits: np.ndarray, labels: np.ndarray,
                c: float = 1.0) -> Adapter:
    x = sparse.hstack([sparse.csr_matrix(base_logits.reshape(-1, 1) * BASE_SCALE), sparse.csr_matrix(features)],
                      format="csr")
    model = LogisticRegression(C=c, solver="liblinear", max_iter=2000, random_state=SEED).fit(x, labels)
    coef = model.coef_[0]
    return Adapter(detector, version, float(coef[0] * BASE_SCALE), coef[1:].astype(np.float32),
                   float(model.intercept_[0]))


def _inputs(detector: Any, items: Sequence[dict[str, Any]]) -> tuple[Any, np.ndarray]:
    """Features and shipped logits, as the detector computes them when scoring."""
    if detector.name == "toxicity":
        return detector.features_and_logits([item["output"] for item in items])
    import uuid
    from datetime import UTC, datetime

    from llmwatch.core.events import TraceEvent

    events = [TraceEvent(uuid.UUID(item["event_id"]), "", datetime.now(UTC), "", input=item["input"],
                         output=item["output"], context=tuple(item["context"])) for item in items]
    return detector.model.adapter_inputs(np.array([detector.features(event).features for event in events]))


def split_held_back(labels: np.ndarray) -> tuple[list[int], list[int]]:
    rng = random.Random(SEED)
    fit, held = [], []
    for value in (0, 1):
        members = [i for i, y in enumerate(labels) if y == value]
        rng.shuffle(members)
        cut = max(MIN_HELD_BACK_PER_CLASS, round(len(members) * HELD_BACK))
        held += members[:cut]
        fit += members[cut:]
    return sorted(fit), sorted(held)


def train_from_reviews(store: Any, detector: Any, actor: str, c: float = 1.0) -> Outcome:
    """Fit, measure and store one candidate for `detector` (a loaded toxicity or grounding)."""
    from llmwatch.core.errors import DetectorLoadError

    name = detector.name
    try:
        detector.set_adapter(latest_promoted(store, name))  # compare against what workers serve now
    except DetectorLoadError:
        detector.set_adapter(None)
    labelled = agreed_labels(reviewed_items(store), name)
    labels = np.array([y for _, y in labelled])
    counts = {"bad": int(labels.sum()), "fine": int(len(labels) - labels.sum())}
    if min(counts.values(), default=0) < 2 * MIN_HELD_BACK_PER_CLASS:
        return Outcome(name, "skipped", f"too few agreed labels to fit and hold back {MIN_HELD_BACK_PER_CLASS} "
                       f"of each class: {counts}", metrics={"labels": counts})
    items = [item for item, _ in labelled]
    fit, held = split_held_back(labels)
    features, logits = _inputs(detector, items)
    version = next_version(store, name)
    candidate = fit_adapter(name, version, features[fit], logits[fit], labels[fit], c)
    candidate_auc = float(roc_auc_score(labels[held], candidate.probabilities(features[held], logits[held])))
    serving = detector.adapter  # what workers score with now; the shipped logit when None
    current_scores = serving.probabilities(features[held], logits[held]) if serving is not None else logits[held]
    current_auc = float(roc_auc_score(labels[held], current_scores))
    current = f"reviews-v{detector.adapter.version}" if detector.adapter is not None else "shipped"
    metrics = {"labels": counts, "fit": len(fit), "held_back": len(held), "candidate_auc": round(candidate_auc, 4),
               "current": current, "current_auc": round(current_auc, 4), "base_version": detector.base_version}
    candidate.meta = dict(metrics)
    promoted = candidate_auc > current_auc
    status = "promoted" if promoted else "rejected"
    # Which labels made it: the reviewed events of each side of the split (the audit row keeps the summary).
    used = {"fit_events": [items[i]["event_id"] for i in fit], "held_back_events": [items[i]["event_id"] for i in held]}
    store_version(store, candidate, status, len(labels), actor, metrics | used)
    reason = (f"held-back ROC AUC {candidate_auc:.3f} vs {current} {current_auc:.3f} on {len(held)} labels")
    return Outcome(name, status, reason, version, metrics)
