"""Training the grounding model (`llmwatch train grounding --data FILE...`).

Rows: {context, question?, response, hallucinated, source?}. A logistic regression over the
response features of detectors/grounding.py, each source's classes weighted equally.
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
        if plan is not None and plan[1]:
            features.append(plan[0])
            kept.append(i)
    return np.array(features).reshape(-1, 2 * len(CLAIM_FEATURES) + 1), np.array(kept, dtype=int)


def train_grounding(rows: Sequence[dict[str, Any]], c: float = 1.0) -> GroundingModel:
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
    return GroundingModel(mean, scale, final.coef_[0], float(final.intercept_[0]), {
        "version": VERSION, "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "features": [f"max_{f}" for f in CLAIM_FEATURES] + [f"mean_{f}" for f in CLAIM_FEATURES] + ["novel_share"],
        "rows": len(labels), "positives": int(labels.sum()), "sources": sorted(set(sources)),
        "oof_roc_auc": round(float(roc_auc_score(labels, oof)), 4), "c": c,
    })
