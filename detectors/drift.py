"""Two-sample drift tests on embeddings, and the words that moved.

* `mmd_test`: squared maximum mean discrepancy with an RBF kernel (bandwidth by the median
  heuristic on the pooled sample) and a permutation p-value, in torch (GPU when present). The
  pooled kernel matrix is built once; each permutation is a quadratic form aᵀKa with
  a = +1/n on one side and -1/m on the other, so P permutations are one (P×N)·(N×N) product.
* `classifier_test`: Evidently's default method: a logistic-regression domain classifier that
  tries to tell the windows apart, ROC AUC from 5-fold cross-validation (0.5 = same).
* `moved_terms`: words whose share changed most between the windows (smoothed log-odds).

Windows are keyword-only (reference=, current=) and randomness comes only from the caller's
generator. Below `min_samples` on either side there is no verdict (`drift` is None).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["DriftResult", "classifier_test", "evidently_test", "mmd_test", "moved_terms"]


@dataclass(frozen=True)
class DriftResult:
    method: str
    statistic: float | None
    p_value: float | None
    n_reference: int
    n_current: int
    drift: bool | None  # None: too little data for a verdict
    threshold: float
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "drift": self.drift,
            "threshold": self.threshold,
            **self.details,
        }


def _too_little(method: str, n_ref: int, n_cur: int, minimum: int, threshold: float) -> DriftResult:
    return DriftResult(
        method, None, None, n_ref, n_cur, None, threshold,
        {"reason": f"need at least {minimum} samples on each side"},
    )


def _subsample(x: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if len(x) <= limit:
        return x
    return x[rng.choice(len(x), size=limit, replace=False)]


def _windows(
    reference: np.ndarray, current: np.ndarray, rng: np.random.Generator, min_samples: int, max_samples: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Both windows subsampled to max_samples, or None when either is below min_samples."""
    if min(len(reference), len(current)) < min_samples:
        return None
    return _subsample(reference, max_samples, rng), _subsample(current, max_samples, rng)


def _bandwidth(pooled: Any, rng: np.random.Generator, pairs: int = 20_000) -> float:
    """The median heuristic: median squared distance over random pairs of the pooled sample (a
    sample of pairs estimates the median as well as all (n+m)²/2 of them, at a tiny cost)."""
    import torch

    size = pooled.shape[0]
    i = torch.from_numpy(rng.integers(size, size=pairs)).to(pooled.device)
    j = torch.from_numpy(rng.integers(size, size=pairs)).to(pooled.device)
    keep = i != j
    sq = (pooled[i[keep]] - pooled[j[keep]]).pow(2).sum(dim=1)
    return float(sq.median().clamp_min(1e-12))


def mmd_test(
    *,
    reference: np.ndarray,
    current: np.ndarray,
    rng: np.random.Generator,
    n_permutations: int = 500,
    alpha: float = 0.01,
    min_samples: int = 50,
    max_samples: int = 2000,
    device: str = "auto",
    stop_after_exceeding: int = 20,
) -> DriftResult:
    """MMD² permutation test with an RBF kernel. Each window is subsampled to `max_samples` rows
    (the kernel matrix is (n+m)² floats); the result reports the sizes actually used.

    Permutations stop early once `stop_after_exceeding` of them reach the observed statistic
    (Besag & Clifford's sequential p-value, h / permutations done): a window that is clearly not
    drifting needs tens of permutations, not hundreds."""
    windows = _windows(reference, current, rng, min_samples, max_samples)
    if windows is None:  # before importing torch: a process with too little data stays light
        return _too_little("mmd", len(reference), len(current), min_samples, alpha)
    import torch

    from llmwatch.detectors.embedding import pick_device

    x, y = windows
    n, m = len(x), len(y)
    dev = torch.device(pick_device(device))
    generator = torch.Generator(device=dev).manual_seed(int(rng.integers(2**63 - 1)))
    pooled = torch.from_numpy(np.concatenate([x, y])).to(dev)
    with torch.inference_mode():
        bandwidth = _bandwidth(pooled, rng)
        weights = torch.cat([torch.full((n,), 1.0 / n, device=dev), torch.full((m,), -1.0 / m, device=dev)])
        kernel = torch.exp_(torch.cdist(pooled, pooled).pow_(2).div_(-bandwidth))

        def statistic(a: Any) -> Any:
            return ((a @ kernel) * a).sum(dim=-1)

        observed = float(statistic(weights))
        exceed = done = 0
        # Each permutation is a random relabelling of the pooled rows; a chunk of them is one
        # (P×N) product. Chunks bound memory and let the test stop early.
        chunk = max(1, min(100, int(2e8 // ((n + m) * 4 * 3))))
        while done < n_permutations and exceed < stop_after_exceeding:
            size = min(chunk, n_permutations - done)
            order = torch.argsort(torch.rand(size, n + m, generator=generator, device=dev), dim=1)
            exceed += int((statistic(weights[order]) >= observed).sum())
            done += size
    p_value = exceed / done if exceed >= stop_after_exceeding else (1 + exceed) / (1 + done)
    details = {"bandwidth": bandwidth, "permutations": done, "kernel": "rbf", "device": str(dev)}
    return DriftResult("mmd", observed, p_value, n, m, p_value < alpha, alpha, details)


def classifier_test(
    *,
    reference: np.ndarray,
    current: np.ndarray,
    rng: np.random.Generator,
    threshold: float = 0.55,
    min_samples: int = 50,
    max_samples: int = 5000,
    folds: int = 5,
) -> DriftResult:
    """Domain-classifier ROC AUC with stratified k-fold cross-validation; drift above threshold
    (Evidently's default 0.55)."""
    windows = _windows(reference, current, rng, min_samples, max_samples)
    if windows is None:  # before importing scikit-learn
        return _too_little("classifier", len(reference), len(current), min_samples, threshold)
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x, y = windows
    features = np.concatenate([x, y])
    labels = np.concatenate([np.zeros(len(x)), np.ones(len(y))])
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=int(rng.integers(2**31 - 1)))
    scores = cross_val_predict(LogisticRegression(max_iter=1000), features, labels, cv=splitter, method="predict_proba")[:, 1]
    auc = float(roc_auc_score(labels, scores))
    return DriftResult("classifier", auc, None, len(x), len(y), auc > threshold, threshold, {"folds": folds})


def evidently_test(
    *, reference: np.ndarray, current: np.ndarray, rng: np.random.Generator, min_samples: int = 50,
    max_samples: int = 5000,
) -> DriftResult:
    """Evidently's own default embedding-drift method (domain classifier, threshold 0.55), called
    directly: its Report path also draws a t-SNE plot, ~20 s a call. A cross-check of ours."""
    import warnings

    windows = _windows(reference, current, rng, min_samples, max_samples)
    if windows is None:  # before importing evidently and pandas
        return _too_little("evidently", len(reference), len(current), min_samples, 0.55)
    import pandas as pd

    with warnings.catch_warnings():  # evidently's imports touch numpy.core (deprecated, harmless)
        warnings.simplefilter("ignore", DeprecationWarning)
        from evidently.legacy.metrics.data_drift.embedding_drift_methods import model

    x, y = windows
    columns = [f"e{i}" for i in range(x.shape[1])]
    score, drifted, _ = model()(pd.DataFrame(y, columns=columns), pd.DataFrame(x, columns=columns))
    return DriftResult("evidently", float(score), None, len(x), len(y), bool(drifted), 0.55, {"evidently_method": "model"})


_WORD = re.compile(r"[a-z][a-z'\-]{2,}")
_STOP = frozenset(
    ["the", "and", "for", "that", "with", "this", "what", "which", "who", "was", "were", "are", "from", "has", "have", "had", "how", "does", "did", "his", "her", "their", "they", "them", "you", "your", "its", "into", "than", "then", "there", "when", "where", "will", "would", "can", "could", "about"]
)


def moved_terms(*, reference: Sequence[str], current: Sequence[str], top: int = 10) -> list[dict[str, Any]]:
    """Words whose share of the text moved most, by log-odds with add-one smoothing. Pure."""
    ref = Counter(w for t in reference for w in _WORD.findall(t.lower()) if w not in _STOP)
    cur = Counter(w for t in current for w in _WORD.findall(t.lower()) if w not in _STOP)
    ref_total, cur_total = sum(ref.values()), sum(cur.values())
    vocabulary = len(set(ref) | set(cur)) or 1
    moved = []
    for word in set(ref) | set(cur):
        p_ref = (ref[word] + 1) / (ref_total + vocabulary)
        p_cur = (cur[word] + 1) / (cur_total + vocabulary)
        moved.append(
            {
                "term": word,
                "log_odds": round(math.log(p_cur / p_ref), 3),
                "reference_count": ref[word],
                "current_count": cur[word],
            }
        )
    moved.sort(key=lambda d: (-abs(d["log_odds"]), d["term"]))
    return moved[:top]
