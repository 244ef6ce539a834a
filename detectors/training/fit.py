"""Fitting a HashedTextModel: class-weighted logistic regression, out-of-fold Platt scaling."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from llmwatch.detectors.hashed import HashedFeatures, HashedTextModel

__all__ = ["balanced_weights", "fit_platt", "fit_text_model", "out_of_fold", "read_jsonl"]

SEED = 20261202


def read_jsonl(path: Any) -> list[dict[str, Any]]:
    import json
    from pathlib import Path

    with Path(path).open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def balanced_weights(labels: Sequence[int] | np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """Weights that give both classes of every group (a source) equal total weight, each group
    keeping its share of the rows: a 77 %-positive source teaches no prior."""
    cells = Counter(zip(groups, labels))
    sizes = Counter(groups)
    weights = np.array([sizes[g] / (2.0 * cells[g, y]) for g, y in zip(groups, labels)])
    return weights / weights.mean()


def _fit_linear(x: Any, labels: np.ndarray, weights: np.ndarray, c: float) -> LogisticRegression:
    return LogisticRegression(C=c, solver="liblinear", max_iter=2000, random_state=SEED).fit(
        x, labels, sample_weight=weights)


def out_of_fold(x: Any, labels: np.ndarray, weights: np.ndarray, c: float, folds: int = 5) -> np.ndarray:
    """Each row's margin from a model that did not see it."""
    margins = np.zeros(len(labels))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=SEED).split(np.zeros(len(labels)), labels):
        margins[test] = _fit_linear(x[train], labels[train], weights[train], c).decision_function(x[test])
    return margins


def fit_platt(margins: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(a, c) so that sigmoid(a * margin + c) is calibrated on these rows."""
    model = LogisticRegression(C=1e4, max_iter=1000).fit(margins.reshape(-1, 1), labels)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def fit_text_model(texts: Sequence[str], labels: Sequence[int] | np.ndarray, weights: np.ndarray, features: HashedFeatures,
                   c: float = 4.0, meta: dict[str, Any] | None = None,
                   calibrate_on: np.ndarray | None = None) -> tuple[HashedTextModel, np.ndarray]:
    """The model on every row, calibrated on out-of-fold margins (of the rows in `calibrate_on`,
    a boolean mask: those whose class balance is the one scores should mean). Returns the model
    and the out-of-fold margins (for stacking and for the model card's figures)."""
    x = features.transform(texts)
    y = np.asarray(labels)
    oof = out_of_fold(x, y, weights, c)
    mask = np.ones(len(y), dtype=bool) if calibrate_on is None else calibrate_on
    platt = fit_platt(oof[mask], y[mask])
    final = _fit_linear(x, y, weights, c)
    facts = dict(meta or {})
    facts.update(rows=len(y), positives=int(y.sum()), oof_roc_auc=round(float(roc_auc_score(y, oof)), 4), c=c)
    model = HashedTextModel(features, final.coef_[0].astype(np.float32), float(final.intercept_[0]), platt, facts)
    return model, oof
