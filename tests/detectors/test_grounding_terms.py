"""What the grounding detector reads of a claim, against plain definitions: its terms (every word
but stopwords, stemmed, strong when it holds a digit or is capitalised anywhere but at the very
start of the claim) and whether it negates."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from llmwatch.detectors.grounding import _NEGATION, _STOPWORDS, _WORD, _stem, claim_terms


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
