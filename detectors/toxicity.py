"""Toxicity of the input and of the output, scored separately.

The offline default is alt-profanity-check's shipped linear model (TF-IDF + linear SVM,
calibrated): no download, ~150k texts/s on one core.

Examples:
    >>> from datetime import datetime, timezone
    >>> import uuid
    >>> from ingest.events import TraceEvent
    >>> event = TraceEvent(uuid.UUID(int=1), "t", datetime.now(timezone.utc), "app",
    ...                    input="have a nice day", output="shut up, you idiot")
    >>> [(r.target, r.label) for r in ProfanityCheckToxicity().score([event])]
    [('input', 'ok'), ('output', 'toxic')]
"""

from __future__ import annotations

from typing import Any, Sequence

from detectors.base import TARGETS, ScoreRow
from ingest.events import TraceEvent

__all__ = ["ProfanityCheckToxicity", "load"]


class ProfanityCheckToxicity:
    """Fast CPU toxicity from alt-profanity-check's linear model."""

    name = "toxicity"
    version = "profanity-check-1"

    def __init__(self, threshold: float = 0.5) -> None:
        from profanity_check import predict_prob  # ~1 s import: only where scoring happens

        self._predict_prob = predict_prob
        self.threshold = threshold

    def score(self, events: Sequence[TraceEvent]) -> list[ScoreRow]:
        if not events:
            return []
        texts = [getattr(event, target) for event in events for target in TARGETS]
        probabilities = self._predict_prob(texts)
        rows = []
        for i, event in enumerate(events):
            for j, target in enumerate(TARGETS):
                text = texts[2 * i + j]
                if not text.strip():
                    rows.append(ScoreRow(event.event_id, self.name, self.version, target, 0.0, "empty"))
                    continue
                score = float(probabilities[2 * i + j])
                label = "toxic" if score >= self.threshold else "ok"
                rows.append(ScoreRow(event.event_id, self.name, self.version, target, score, label))
        return rows

    def close(self) -> None:
        pass


def load(settings: Any) -> ProfanityCheckToxicity:
    return ProfanityCheckToxicity()
