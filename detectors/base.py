"""The one batch interface every detector implements, and the row it produces."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from ingest.events import TraceEvent

__all__ = ["Detector", "ScoreRow", "TARGETS"]

TARGETS = ("input", "output")


@dataclass(frozen=True, slots=True)
class ScoreRow:
    """One detector's verdict on one side of one event. score is in [0, 1], 1 = bad."""

    event_id: uuid.UUID
    detector: str
    detector_version: str
    target: str
    score: float
    label: str
    details: dict[str, Any] = field(default_factory=dict)


class Detector(Protocol):
    """Scores a batch of events. Weights load in the module's `load(settings)`, never at import,
    so processes that do not score never import model code."""

    name: str  # written to the `detector` column
    version: str  # bump when the meaning of a score changes

    def score(self, events: Sequence[TraceEvent]) -> list[ScoreRow]:
        """One row per event and target, in the order of `events`; `score([]) == []`."""
        ...

    def close(self) -> None:
        """Release models and devices."""
        ...
