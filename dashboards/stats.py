"""The numbers behind the console's judgements, as pure functions: confidence intervals for rates
and their differences (canary analysis), inter-rater agreement, and a 2-D picture of embeddings."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np
import pandas as pd

from llmwatch.alerts.intervals import rate_difference, wilson

__all__ = ["ERROR_DECISIONS", "cohen_kappa", "detector_accuracy", "fleiss_kappa", "moved_most", "project_2d",
           "rate_difference", "wilson"]

# The reviewer decisions that say a detector was right to flag an event; a judge's rubric is about
# any kind of error, so any decision but `fine` counts for judges.
ERROR_DECISIONS = {"toxicity": ("toxic",), "grounding": ("hallucinated",)}


def detector_accuracy(items: pd.DataFrame) -> pd.DataFrame:
    """Precision and recall of each signal per app against reviewers' decisions, each with its 95%
    Wilson interval and the counts behind it. `items`: app, event_id, decision, detector, flagged
    (one row per reviewed item and signal, as queries.reviewed_items returns). Only an unbiased
    sample (route:sample) makes these estimates of the traffic's precision and recall."""
    rows = []
    for (app, detector), group in items.dropna(subset=["detector"]).groupby(["app", "detector"], sort=True):
        errors = ERROR_DECISIONS.get(str(detector))
        actual = group["decision"].isin(errors) if errors else group["decision"] != "fine"
        flagged = group["flagged"].astype(bool)
        tp, flagged_n, errors_n = int((actual & flagged).sum()), int(flagged.sum()), int(actual.sum())
        p_lo, p_hi = wilson(tp, flagged_n)
        r_lo, r_hi = wilson(tp, errors_n)
        rows.append({"app": app, "signal": detector, "reviewed": len(group),
                     "precision": tp / flagged_n if flagged_n else None, "precision_low": p_lo, "precision_high": p_hi,
                     "flagged": flagged_n, "recall": tp / errors_n if errors_n else None, "recall_low": r_lo,
                     "recall_high": r_hi, "errors": errors_n})
    return pd.DataFrame(rows, columns=["app", "signal", "reviewed", "precision", "precision_low", "precision_high",
                                       "flagged", "recall", "recall_low", "recall_high", "errors"])


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters over the same items; None without items. 1.0 when both
    raters always agree on one single category (no chance correction possible)."""
    if len(a) != len(b):
        raise ValueError("both raters must rate the same items")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[c] * cb[c] for c in ca) / (n * n)
    if expected >= 1.0:
        return 1.0 if observed == 1.0 else 0.0
    return (observed - expected) / (1 - expected)


def fleiss_kappa(ratings: Sequence[Sequence[Hashable]]) -> float | None:
    """Fleiss' kappa, each item a list of the categories its raters chose. Items may have
    different numbers of raters (the usual generalisation); items with fewer than two ratings
    carry no agreement and are left out. None when no item has two ratings."""
    items = [Counter(r) for r in ratings if len(r) >= 2]
    if not items:
        return None
    totals: Counter[Hashable] = Counter()
    agreement = 0.0
    for counts in items:
        n = sum(counts.values())
        agreement += (sum(c * c for c in counts.values()) - n) / (n * (n - 1))
        totals.update(counts)
    observed = agreement / len(items)
    all_ratings = sum(totals.values())
    expected = sum((c / all_ratings) ** 2 for c in totals.values())
    if expected >= 1.0:
        return 1.0 if observed == 1.0 else 0.0
    return (observed - expected) / (1 - expected)


def project_2d(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets in the plane of their first two principal components (fitted on both together,
    so a shift between them shows as a shift in the picture)."""
    both = np.concatenate([reference, current]).astype(np.float64)
    if len(both) == 0:
        return np.zeros((0, 2)), np.zeros((0, 2))
    centred = both - both.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2].T
    if axes.shape[1] < 2:  # a single point, or one dimension
        axes = np.pad(axes, ((0, 0), (0, 2 - axes.shape[1])))
    points = centred @ axes
    return points[: len(reference)], points[len(reference) :]


def moved_most(reference: np.ndarray, current: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k current points least like anything in the reference: (index, cosine distance to
    the nearest reference point), farthest first."""
    if len(reference) == 0 or len(current) == 0:
        return []
    ref = reference / np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12)
    cur = current / np.maximum(np.linalg.norm(current, axis=1, keepdims=True), 1e-12)
    distance = 1.0 - (cur @ ref.T).max(axis=1)
    order = np.argsort(-distance, kind="stable")[:k]
    return [(int(i), float(distance[i])) for i in order]
