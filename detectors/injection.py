"""Prompt injection and jailbreaks, in the user's input and in each retrieved context passage.

Direct injection ("ignore your instructions and ...") and jailbreak personas ("you are DAN ...")
arrive as the input; indirect injection arrives inside what the app retrieves: a document, an
e-mail, a tool result, with an instruction planted between ordinary sentences. A model that reads
a whole long passage dilutes one planted sentence among hundreds of benign words, so every text is
also scored in windows of a few sentences and its score is the highest window's. The details name
the passage and the window that scored highest, so a reviewer sees the planted instruction itself.

The model is a calibrated linear model over hashed word 1-3-grams and character n-grams
(detectors/hashed.py), trained on jailbreaks, direct and indirect injections and benign prompts,
with ordinary requests that use the attack words ("How do I kill a zombie process?") as benign
rows: it is the phrasing of an override that counts, not one keyword. detectors/models/MODEL_CARD.md
has its data and figures; `llmwatch train injection --data FILE` retrains it.

Examples:
    >>> windows("One. Two. Three. Four.", size=2)
    ['One. Two. Three. Four.', 'One. Two.', 'Two. Three.', 'Three. Four.']
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llmwatch.core.errors import DetectorLoadError
from llmwatch.core.events import TraceEvent
from llmwatch.core.lru import Lru
from llmwatch.detectors.base import NOT_APPLICABLE, ScoreRow
from llmwatch.detectors.hashed import HashedTextModel

__all__ = ["Injection", "load", "sentences", "shipped_model", "windows"]

THRESHOLD = 0.5
WINDOW = 3  # sentences per window: a planted instruction is one or two
MAX_WINDOWS = 48  # per text; longer texts get longer windows (see windows())
# A RAG app retrieves from a corpus, so the same passages come back event after event: each one's
# scan is remembered (a pure function of its text, for this detector's model and threshold).
# Passages of up to 4,096 characters, 4,096 of them: ~5 MB for chunks of 1,000 characters, ~20 MB
# at most (of ASCII text: the texts are the keys; a scan is a float and a slice of the text).
CACHED_PASSAGES = 4096
CACHED_PASSAGE_CHARS = 4096
SPAN_CHARS = 300
_SENTENCE = re.compile(r"(?<=[.!?:;])\s+|\n+")


def sentences(text: str) -> list[str]:
    """The sentences (and clauses after a colon or semicolon, and lines) of `text`."""
    return [s for s in _SENTENCE.split(text) if s.strip()]


def shipped_model() -> Path:
    return Path(__file__).parent / "models" / "injection.npz"


def windows(text: str, size: int = WINDOW) -> list[str]:
    """The text itself, then runs of `size` consecutive sentences (when it has more than `size`),
    every sentence in at least one. Past MAX_WINDOWS runs the runs grow instead of multiplying:
    a very long document is cut into MAX_WINDOWS chunks that cover it."""
    parts = sentences(text)
    if len(parts) <= size:
        return [text]
    if len(parts) - size + 1 <= MAX_WINDOWS:
        starts, stride = range(len(parts) - size + 1), size
    else:
        stride = -(-len(parts) // MAX_WINDOWS)
        starts, size = range(0, len(parts), stride), stride
    return [text] + [" ".join(parts[i : i + size]) for i in starts]


class Injection:
    name = "injection"
    targets = ("input", "context")
    offloadable = True  # may score in the worker's scoring process (ingest/pipeline/scoring.py)

    def __init__(self, model: HashedTextModel, threshold: float = THRESHOLD) -> None:
        self.model = model
        self.threshold = threshold
        self.version = f"learned-{model.meta.get('version', 'custom')}"
        self._passage_scans: Lru[str, tuple[float, str]] = Lru(CACHED_PASSAGES)

    def scan(self, texts: Sequence[str]) -> list[tuple[float, str]]:
        """For each text: its probability of carrying an injection, and the window behind it."""
        pieces: list[str] = []
        owners: list[int] = []
        for i, text in enumerate(texts):
            parts = windows(text)
            pieces += parts
            owners += [i] * len(parts)
        if not pieces:
            return []
        probabilities = self.model.probabilities(pieces)
        best = [(-1.0, "")] * len(texts)
        for owner, piece, p in zip(owners, pieces, probabilities):
            if p > best[owner][0]:
                best[owner] = (float(p), piece)
        return self._narrowed(best)

    def _narrowed(self, best: list[tuple[float, str]]) -> list[tuple[float, str]]:
        """For flagged texts, the window's most suspicious sentence: what a reviewer should read."""
        flagged = [(i, sentences(span)) for i, (p, span) in enumerate(best) if p >= self.threshold]
        flagged = [(i, group) for i, group in flagged if len(group) > 1]
        if not flagged:
            return best
        scores = iter(self.model.probabilities([s for _, group in flagged for s in group]))
        for i, group in flagged:
            top, _ = max(zip(range(len(group)), scores), key=lambda item: item[1])  # this group's scores only
            best[i] = (best[i][0], group[top])
        return best

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([p for p, _ in self.scan(texts)])

    def scan_passages(self, passages: Sequence[str]) -> dict[str, tuple[float, str]]:
        """scan() of each distinct passage, remembered ones not scanned again."""
        return self._passage_scans.remembered(passages, self.scan, keep=lambda p: len(p) <= CACHED_PASSAGE_CHARS)

    def score(self, events: Sequence[TraceEvent]) -> list[ScoreRow]:
        inputs = iter(self.scan([event.input for event in events if event.input.strip()]))
        passage_scans = self.scan_passages([doc for event in events for doc in event.context if doc.strip()])
        rows = []
        for event in events:
            if event.input.strip():
                p, span = next(inputs)
                rows.append(self._row(event, "input", p, {"span": span[:SPAN_CHARS]} if p >= self.threshold else {}))
            else:
                rows.append(ScoreRow(event.event_id, self.name, self.version, "input", 0.0, "empty"))
            passages = [(i, passage_scans[doc]) for i, doc in enumerate(event.context) if doc.strip()]
            if not passages:
                rows.append(ScoreRow(event.event_id, self.name, self.version, "context", None, NOT_APPLICABLE,
                                     {"reason": "no retrieved context"}))
                continue
            index, (p, span) = max(passages, key=lambda item: item[1][0])
            details: dict[str, Any] = {"passages": len(passages)}
            if p >= self.threshold:
                details |= {"passage": index, "span": span[:SPAN_CHARS]}
            rows.append(self._row(event, "context", p, details))
        return rows

    def _row(self, event: TraceEvent, target: str, p: float, details: dict[str, Any]) -> ScoreRow:
        label = "injection" if p >= self.threshold else "ok"
        return ScoreRow(event.event_id, self.name, self.version, target, p, label, details)

    def close(self) -> None:
        pass


def load(settings: Any) -> Injection:
    path = Path(settings.injection_model) if settings.injection_model else shipped_model()
    model = HashedTextModel.load(path)
    if model.meta.get("task") not in (None, "injection"):
        msg = f"{path} is a {model.meta['task']} model, not an injection model"
        raise DetectorLoadError(msg)
    return Injection(model)
