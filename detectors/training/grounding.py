"""Training the grounding model (`llmwatch train grounding --data FILE...`).

Rows: {context, question?, response, hallucinated, source?}. A logistic regression over the
response features of detectors/grounding.py, each source's classes weighted equally, then shifted
to a deployment's prior: HaluEval is half hallucinated, a RAG app's traffic is not, and a model
calibrated at 50 % flags faithful paraphrased answers (3 of the demo's 5 at C=1 before the shift).
The score is calibrated for traffic where PRIOR of the answers are unsupported; the strong
regularisation (C=0.1) keeps the weights from leaning on HaluEval's own style (its faithful QA
answers are copied spans, so any paraphrase looked suspicious).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from llmwatch.core.events import TraceEvent
from llmwatch.detectors.grounding import CLAIM_FEATURES, Grounding, GroundingModel
from llmwatch.detectors.training.fit import SEED, balanced_weights

__all__ = ["event_of", "grounding_features", "train_grounding"]

VERSION = "grd-1"
PRIOR = 0.1  # the share of unsupported answers the score is calibrated for
_NEUTRAL = GroundingModel(np.zeros(17), np.ones(17), np.zeros(17), 0.0)


def event_of(row: dict[str, Any], number: int = 0) -> TraceEvent:
    context = row.get("context") or []
    context = [context] if isinstance(context, str) else list(context)
    return TraceEvent(uuid.UUID(int=number + 1), "", datetime.now(UTC), "train", input=str(row.get("question") or ""),
                      output=str(row.get("response") or ""), context=tuple(context))


def grounding_features(rows: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Response features of the rows that have context and claims, and which rows those are."""
    extractor = Grounding(model=_NEUTRAL)
    features, kept = [], []
    for i, row in enumerate(rows):
        plan = extractor.features(event_of(row, i))
        if plan is not None and plan.claims:
            features.append(plan.features)
            kept.append(i)
    return np.array(features).reshape(-1, 2 * len(CLAIM_FEATURES) + 1), np.array(kept, dtype=int)


def train_grounding(rows: Sequence[dict[str, Any]], c: float = 0.1, prior: float = PRIOR) -> GroundingModel:
    x, kept = grounding_features(rows)
    labels = np.array([int(rows[i]["hallucinated"]) for i in kept])
    sources = [str(rows[i].get("source", "rows")) for i in kept]
    weights = balanced_weights(labels, sources)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = (x - mean) / scale
    oof = np.zeros(len(labels))
    for train, test in StratifiedKFold(5, shuffle=True, random_state=SEED).split(z, labels):
        fitted = LogisticRegression(C=c, max_iter=2000).fit(z[train], labels[train], sample_weight=weights[train])
        oof[test] = fitted.decision_function(z[test])
    final = LogisticRegression(C=c, max_iter=2000).fit(z, labels, sample_weight=weights)
    # Balanced weights make the fitted prior 1/2; move it to `prior` (Bayes: add the log prior odds).
    bias = float(final.intercept_[0]) + float(np.log(prior / (1 - prior)))
    return GroundingModel(mean, scale, final.coef_[0], bias, {
        "version": VERSION, "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "features": [f"max_{f}" for f in CLAIM_FEATURES] + [f"mean_{f}" for f in CLAIM_FEATURES] + ["novel_share"],
        "rows": len(labels), "positives": int(labels.sum()), "sources": sorted(set(sources)),
        "oof_roc_auc": round(float(roc_auc_score(labels, oof)), 4), "c": c, "prior": prior,
    })
