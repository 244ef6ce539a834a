"""One contract every registered detector passes (as river's estimator checks do)."""

from __future__ import annotations

import copy
import uuid
from datetime import datetime, timezone
from typing import Callable

import pytest

from detectors.base import TARGETS, Detector
from detectors.registry import available, load
from ingest.events import TraceEvent
from llmwatch.settings import Settings

TEXTS = [
    ("How do I reset my password?", "Click 'Forgot password' on the login page."),
    ("you are a useless idiot", "I'm sorry you feel that way."),
    ("", "Shut up, moron."),
    ("What is the API rate limit?", ""),
    ("Tell me about refunds " * 40, "Refunds take five business days. " * 30),
]


def events() -> list[TraceEvent]:
    now = datetime.now(timezone.utc)
    return [TraceEvent(uuid.UUID(int=i + 1), f"t{i}", now, "app", input=a, output=b) for i, (a, b) in enumerate(TEXTS)]


def check_scores_in_unit_interval(detector: Detector) -> None:
    assert all(0.0 <= row.score <= 1.0 for row in detector.score(events()))


def check_one_row_per_event_and_target(detector: Detector) -> None:
    rows = detector.score(events())
    keys = [(row.event_id, row.target) for row in rows]
    assert sorted(keys) == sorted((e.event_id, t) for e in events() for t in TARGETS)
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
    assert all(abs(a.score - b.score) < 1e-5 for a, b in zip(batch, singles))


CHECKS: list[Callable[[Detector], None]] = [
    check_scores_in_unit_interval,
    check_one_row_per_event_and_target,
    check_input_batch_unchanged,
    check_deterministic,
    check_empty_batch,
    check_batch_equals_singles,
]


@pytest.fixture(scope="module", params=available())
def detector(request: pytest.FixtureRequest) -> Detector:
    return load(request.param, Settings())


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
