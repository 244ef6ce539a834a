"""The one batch interface every detector implements, and the row it produces."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from llmwatch.core.events import TraceEvent

__all__ = ["NOT_APPLICABLE", "TARGETS", "Detector", "ScoreRow"]

TARGETS = ("input", "output")
NOT_APPLICABLE = "not_applicable"  # the label of a row whose score is None


# Not frozen: a frozen dataclass sets each field through object.__setattr__, 1.26 µs a row
# against 0.29, and every event gets ~11 rows built (the scoring process builds them, the worker
# again from its answer). Rows are values all the same: nothing changes one after it is made.
@dataclass(slots=True)
class ScoreRow:
    """One detector's verdict on one side of one event. score is in [0, 1], 1 = bad; None only
    when the detector cannot judge (label `not_applicable`, or `error` when it failed)."""

    event_id: uuid.UUID
    detector: str
    detector_version: str
    target: str
    score: float | None
    label: str
    details: dict[str, Any] = field(default_factory=dict)


class Detector(Protocol):
    """Scores a batch of events. Weights load in the module's `load(settings)`, never at import,
    so processes that do not score never import model code.

    A detector may also say `offloadable = True`: the worker's scoring process may then score it
    from its own copy, loaded from the same settings (ingest/pipeline/scoring.py). Only for one
    that keeps no state between batches, reads no store, holds no GPU model, and reads nothing of
    an event but its `event_id`, `input`, `output` and `context`."""

    name: str  # written to the `detector` column
    version: str  # bump when the meaning of a score changes
    targets: tuple[str, ...]  # which of input / output / event it writes rows for

    def score(self, events: Sequence[TraceEvent]) -> list[ScoreRow]:
        """One row per event and target, in the order of `events`; `score([]) == []`."""
        ...

    def close(self) -> None:
        """Release models and devices."""
        ...
