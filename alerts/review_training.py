"""Training from reviews, audited: used by `llmwatch train --from-reviews` and by the scheduled job
(`review_training_interval_h`, off by default) that `llmwatch jobs` runs."""

from __future__ import annotations

import logging
from typing import Any

from llmwatch.alerts.audit import audit
from llmwatch.core.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["train_and_audit"]


def train_and_audit(store: Any, settings: Settings, detectors: list[str], actor: str) -> list[Any]:
    """One candidate per detector; each promotion or rejection is an audit_log row."""
    from llmwatch.detectors.adapters import Adaptable
    from llmwatch.detectors.registry import load
    from llmwatch.detectors.training.reviews import train_from_reviews

    outcomes = []
    for name in detectors:
        detector = load(name, settings)
        if not isinstance(detector, Adaptable):
            log.warning("%s (%s) cannot learn from reviews; only the learned toxicity and grounding models do",
                        name, detector.version)
            continue
        outcome = train_from_reviews(store, detector, actor)
        if outcome.status != "skipped":
            audit(store, actor, f"model_{outcome.status}", detector=name, version=outcome.version,
                  reason=outcome.reason, **outcome.metrics)
        log.info("train from reviews: %s %s (%s)", name, outcome.status, outcome.reason)
        outcomes.append(outcome)
    return outcomes
