"""Per-deployment models learned from this deployment's reviewers, and where workers find them.

An adapter sits on a shipped detector: `z = a * shipped_logit + w . x + b`, with x the same
features the shipped model reads (hashed n-grams of the output for toxicity, the response
features for grounding). With few labels the fitted `a` keeps the shipped model's judgement and `w`
learns this deployment's words and habits; `llmwatch train --from-reviews` fits it
(detectors/training/reviews.py) and stores each version in `llmwatch.detector_models`.

Workers poll that table (`model_refresh_s`) and swap the highest promoted version in between two
batches: no restart, and every score row names the version that produced it.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from llmwatch.core.errors import DetectorLoadError, StoreError
from llmwatch.detectors.hashed import pack, sigmoid, unpack

log = logging.getLogger(__name__)

__all__ = ["Adaptable", "Adapter", "latest_promoted", "next_version", "refresh_adapters", "store_version"]

@dataclass
class Adapter:
    detector: str
    version: int
    base_weight: float
    weights: np.ndarray  # one per feature column
    bias: float
    meta: dict[str, Any] = field(default_factory=dict)

    def logits(self, features: Any, base_logits: np.ndarray) -> np.ndarray:
        return self.base_weight * base_logits + np.asarray(features @ self.weights).ravel() + self.bias

    def probabilities(self, features: Any, base_logits: np.ndarray) -> np.ndarray:
        return sigmoid(self.logits(features, base_logits))

    def to_bytes(self) -> bytes:
        header = {"detector": self.detector, "version": self.version, "base_weight": self.base_weight,
                  "bias": self.bias, "meta": self.meta}
        return pack(self.weights.astype(np.float32), header)

    @classmethod
    def from_bytes(cls, data: bytes) -> Adapter:
        try:
            weights, header = unpack(data)
            return cls(header["detector"], int(header["version"]), float(header["base_weight"]), weights,
                       float(header["bias"]), header.get("meta", {}))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DetectorLoadError(f"not a llmwatch review model: {exc}") from exc


class Adaptable:
    """A detector that can carry an adapter. The adapter and the version it makes are one pair,
    replaced as one, so a batch scored while a worker swaps models names what scored it."""

    name: str  # the detector's
    base_version: str
    _adapted: tuple[Adapter | None, str]

    def _init_adapter(self, base_version: str) -> None:
        self.base_version = base_version
        self._adapted = (None, base_version)

    @property
    def adapter(self) -> Adapter | None:
        return self._adapted[0]

    @property
    def version(self) -> str:
        return self._adapted[1]

    def set_adapter(self, adapter: Adapter | None) -> None:
        suffix = f"+reviews-v{adapter.version}" if adapter is not None else ""
        self._adapted = (adapter, self.base_version + suffix)


def next_version(store: Any, detector: str) -> int:
    rows = store.query(f"SELECT max(version) FROM {store.database}.detector_models WHERE detector = {{d:String}}",
                       {"d": detector})
    return int(rows[0][0] or 0) + 1 if rows else 1


def store_version(store: Any, adapter: Adapter, status: str, labels: int, actor: str, metrics: dict[str, Any]) -> None:
    store.insert("detector_models", [{
        "detector": adapter.detector, "version": adapter.version, "created_at": datetime.now(UTC), "status": status,
        "labels": labels, "actor": actor, "metrics": json.dumps(metrics),
        "model": base64.b64encode(adapter.to_bytes()).decode(),
    }])


def latest_promoted(store: Any, detector: str, known: int | None = None) -> Adapter | None:
    """The highest promoted version of `detector` (None when there is none, or it is `known`)."""
    rows = store.query(
        f"SELECT version, model FROM {store.database}.detector_models FINAL "
        "WHERE detector = {d:String} AND status = 'promoted' ORDER BY version DESC LIMIT 1", {"d": detector})
    if not rows or int(rows[0][0]) == known:
        return None
    return Adapter.from_bytes(base64.b64decode(rows[0][1]))


def refresh_adapters(store: Any, detectors: Sequence[Any]) -> list[str]:
    """Give each adaptable detector the newest promoted review model; names what changed."""
    changed = []
    for detector in detectors:
        if not isinstance(detector, Adaptable):
            continue
        current = detector.adapter.version if detector.adapter is not None else None
        try:
            adapter = latest_promoted(store, detector.name, current)
        except (StoreError, DetectorLoadError) as exc:
            log.warning("review model for %s not refreshed: %s", detector.name, exc)
            continue
        if adapter is not None:
            detector.set_adapter(adapter)
            changed.append(f"{detector.name} v{adapter.version}")
    return changed
