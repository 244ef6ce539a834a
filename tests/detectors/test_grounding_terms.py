"""What the grounding detector reads of a claim, against plain definitions: its terms (every word
but stopwords, stemmed, strong when it holds a digit or is capitalised anywhere but at the very
start of the claim) and whether it negates; and a batch scored at once against each of its events
scored alone."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmwatch.core.events import TraceEvent
from llmwatch.detectors.grounding import _NEGATION, _STOPWORDS, _WORD, Grounding, _stem, claim_terms

_GROUNDING = Grounding()


def _plain_terms(claim: str) -> dict[str, bool]:
    terms: dict[str, bool] = {}
    for match in _WORD.finditer(claim):
        word = match.group()
        if word.lower() in _STOPWORDS:
            continue
        strong = any(c.isdigit() for c in word) or (word[0].isupper() and match.start() > 0)
        terms[_stem(word)] = terms.get(_stem(word), False) or strong
    return terms


def test_names_and_numbers_are_strong() -> None:
    assert claim_terms("Paris has 3 museums and the Louvre.") == {"pari": False, "3": True, "museum": False,
                                                                 "louvre": True}
    assert claim_terms('"Paris" has museums') == {"pari": True, "museum": False}  # not at the very start
    assert claim_terms("It costs 4.50 dollars, museums and Museums") == {"cost": False, "4.50": True,
                                                                        "dollar": False, "museum": True}
    assert claim_terms("") == {}


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([*"aZe1 9.,'’\"(-é", "The ", "Not ", "3.5 ", "Paris", "museums"]), max_size=20)
       .map("".join))
def test_terms_follow_the_plain_definition(claim: str) -> None:
    assert claim_terms(claim) == _plain_terms(claim)


_PLAIN_NEGATION = re.compile(r"\b(?:not|no|never|none|nobody|nothing|neither|nor|without|cannot)\b|n't\b", re.IGNORECASE)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from([*"nNoOtTwWcC'a é_9.-", "not", "NoT", "n't", "N'T", "cannot", "without", "nobody",
                                 "nor", "never", "neither", "nothing", "none"]), max_size=12).map("".join))
def test_negation_is_the_plain_pattern(text: str) -> None:
    assert bool(_NEGATION.search(text)) == bool(_PLAIN_NEGATION.search(text))



def test_long_words_are_read_but_not_remembered() -> None:
    """A word past the cached length (a blob in a response) gets its term like any other, and
    neither cache keeps it: what a response holds cannot pin memory."""
    from llmwatch.detectors import grounding

    grounding._cached_stem.cache_clear()
    grounding._cached_term.cache_clear()
    blob = "Z" + "a1" * 5_000
    assert claim_terms(f"It holds {blob}s here") == {"hold": False, blob.lower(): True}
    # Remembered: "It", "holds" and "here" (stopwords too), and the stem of "holds"; not the blob.
    assert grounding._cached_term.cache_info().currsize == 3
    assert grounding._cached_stem.cache_info().currsize == 1


_SENTENCES = ["The Eiffel Tower opened in 1889.", "It is 330 metres tall.", "Gustave Eiffel designed it.",
              "It was not painted red.", "Paris has 3 museums.", "The tower opened in 1925.", "Rome built it.",
              "Refunds take 5 days.", "Orders ship from Berlin!", "Yes", ""]
_TEXTS = st.lists(st.sampled_from(_SENTENCES), max_size=5).map(" ".join)


def _scored_plainly(grounding: Grounding, event: TraceEvent) -> tuple[float | None, str, list[tuple[str, float]]]:
    """One event through features(): its response row and each claim alone, one model call each."""
    plan = grounding.features(event)
    if plan is None:
        return None, "not_applicable", []
    if not plan.claims:
        return 0.0, "empty", []
    score = float(grounding.response_probabilities(plan.features[None, :])[0])
    per_claim = [float(grounding.model.probabilities(np.concatenate([v, v, plan.features[-1:]])[None, :])[0])
                 for *_, v in plan.claims]
    unsupported = [(claim, p) for (claim, *_), p in zip(plan.claims, per_claim) if p >= grounding.threshold]
    return score, "unsupported" if score >= grounding.threshold else "supported", unsupported


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.lists(_TEXTS, max_size=3), _TEXTS, _TEXTS), min_size=1, max_size=6))
def test_a_batch_scores_as_each_event_alone(cases: list[tuple[list[str], str, str]]) -> None:
    """score() puts the batch's claims in one matrix; each row is what one event's features give."""
    grounding = _GROUNDING
    events = [TraceEvent(uuid.UUID(int=i), "t", datetime(2026, 12, 4, tzinfo=UTC), "app", input=question,
                         output=answer, context=tuple(context))
              for i, (context, question, answer) in enumerate(cases)]
    for row, event in zip(grounding.score(events), events, strict=True):
        score, label, unsupported = _scored_plainly(grounding, event)
        assert row.label == label
        assert row.score == pytest.approx(score, rel=1e-12) if score is not None else row.score is None
        found = [(u["claim"], u["p_unsupported"]) for u in row.details.get("unsupported", [])]
        assert found == [(claim, round(p, 3)) for claim, p in unsupported]
