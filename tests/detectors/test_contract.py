"""One contract every registered detector passes (as river's estimator checks do)."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pytest

from llmwatch.core.events import TraceEvent
from llmwatch.core.settings import Settings
from llmwatch.detectors.anomaly import FEATURES, AnomalyDetector
from llmwatch.detectors.base import NOT_APPLICABLE, TARGETS, Detector
from llmwatch.detectors.registry import available, load

REFUNDS = "Refunds are paid within five business days. Orders over $50 ship free."
TEXTS = [
    ("How do I reset my password?", "Click 'Forgot password' on the login page.", ()),
    ("you are a useless idiot", "I'm sorry you feel that way.", ()),
    ("", "Shut up, moron.", ()),
    ("What is the API rate limit?", "", ("The API allows 100 requests per minute.",)),
    ("Tell me about refunds " * 40, "Refunds take five business days. " * 30, (REFUNDS,)),
    ("When are refunds paid?", "Refunds are paid within 30 days, by cheque from Paris.", (REFUNDS, "Shipping is free.")),
]
_NOW = datetime.now(UTC)


def events() -> list[TraceEvent]:
    return [
        TraceEvent(uuid.UUID(int=i + 1), f"t{i}", _NOW, "app", input=a, output=b, context=c, latency_ms=100.0 * (i + 1))
        for i, (a, b, c) in enumerate(TEXTS)
    ]


def check_scores_in_unit_interval(detector: Detector) -> None:
    for row in detector.score(events()):
        if row.score is None:
            assert row.label == NOT_APPLICABLE
        else:
            assert 0.0 <= row.score <= 1.0


def check_one_row_per_event_and_target(detector: Detector) -> None:
    rows = detector.score(events())
    keys = [(row.event_id, row.target) for row in rows]
    assert set(detector.targets) <= {*TARGETS, "event", "context"}
    assert sorted(keys) == sorted((e.event_id, t) for e in events() for t in detector.targets)
    assert all(row.detector == detector.name and row.detector_version == detector.version for row in rows)


def check_input_batch_unchanged(detector: Detector) -> None:
    batch = events()
    before = copy.deepcopy(batch)
    detector.score(batch)
    assert batch == before


def check_deterministic(detector: Detector) -> None:
    assert detector.score(events()) == detector.score(events())


def check_empty_batch(detector: Detector) -> None:
    assert detector.score([]) == []


def check_batch_equals_singles(detector: Detector) -> None:
    batch = detector.score(events())
    singles = [row for event in events() for row in detector.score([event])]
    assert [(r.event_id, r.target, r.label) for r in batch] == [(r.event_id, r.target, r.label) for r in singles]
    assert all(a.score == b.score or abs(a.score - b.score) < 1e-4 for a, b in zip(batch, singles))


CHECKS: list[Callable[[Detector], None]] = [
    check_scores_in_unit_interval,
    check_one_row_per_event_and_target,
    check_input_batch_unchanged,
    check_deterministic,
    check_empty_batch,
    check_batch_equals_singles,
]


# Every registered detector with its default (offline) model, and the model-backed variants on
# tiny checkpoints the tests build.
# `embedding` writes vectors, not scores (tests/detectors/test_embedding.py).
VARIANTS = [*(n for n in available() if n not in ("embedding", "anomaly")), "anomaly:synthetic", "toxicity:detoxify", "toxicity:detoxify-cascade", "toxicity:profanity-check",
            "grounding:nli"]


@pytest.fixture(scope="module", params=VARIANTS)
def detector(request: pytest.FixtureRequest) -> Detector:
    name, _, variant = request.param.partition(":")
    settings = Settings(device="cpu")
    if variant.startswith("detoxify"):
        checkpoint = str(request.getfixturevalue("detoxify_checkpoint"))
        cascade = 0.2 if variant.endswith("cascade") else 0.0
        settings = Settings(device="cpu", toxicity_model=checkpoint, toxicity_cascade_below=cascade)
    elif variant == "synthetic":
        # Reads its reference from the store in production (tests/detectors/test_anomaly.py).
        reference = np.random.default_rng(0).lognormal(5, 0.5, size=(1000, len(FEATURES)))
        return AnomalyDetector(lambda app: reference)
    elif variant == "profanity-check":
        settings = Settings(device="cpu", toxicity_model="profanity-check")
    elif variant == "nli":
        settings = Settings(device="cpu", grounding_model=str(request.getfixturevalue("nli_model")))
    return load(name, settings)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_detector_contract(detector: Detector, check: Callable[[Detector], None]) -> None:
    check(detector)


def test_offline_toxicity_separates_obvious_cases() -> None:
    """The shipped model flags the rude output and not the polite one."""
    rows = {(r.event_id.int, r.target): r for r in load("toxicity", Settings()).score(events())}
    assert rows[(2, "input")].label == "toxic"
    assert rows[(1, "output")].label == "ok"
    assert rows[(3, "output")].label == "toxic"
    assert rows[(3, "input")].label == "empty"
