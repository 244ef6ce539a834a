"""The numbers behind the console's judgements, as pure functions: confidence intervals for rates
and their differences (canary analysis), inter-rater agreement, and a 2-D picture of embeddings."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np

__all__ = ["cohen_kappa", "fleiss_kappa", "moved_most", "project_2d", "rate_difference", "wilson"]

Z_95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n; (0, 1) when there is nothing to go on."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_difference(k1: int, n1: int, k2: int, n2: int, z: float = Z_95) -> tuple[float, float, float]:
    """p1 - p2 with Newcombe's hybrid score interval (method 10): well behaved for the small
    rates and unequal sizes of a canary. Returns (difference, low, high)."""
    p1, p2 = (k1 / n1 if n1 else 0.0), (k2 / n2 if n2 else 0.0)
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, max(-1.0, low), min(1.0, high)


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
