"""Grounding: how much of a response the retrieved context does not support.

The response is split into claims (sentences and list items). Each claim's fact-bearing terms
(every word but stopwords, stemmed) are looked up in the context and the question. A term the
context never mentions is the commonest form of hallucination: a wrong name, number or date. A
missing name or number (a term with a digit, or capitalised past the claim's first word) makes the
claim unsupported with probability 0.6, a missing ordinary word (often a paraphrase: "kept" for
"retained") with 0.25, and each term that is present with 0.005 (a right word can still be used
wrongly). So P(unsupported) = 1 - 0.4^names 0.75^words 0.995^present, and the event's score is the
probability that at least one claim is unsupported: one invented number or name is enough, two
paraphrased words are not.

With an NLI / cross-encoder model (`grounding_model`), a claim's P(unsupported) also includes the
model's doubt: 1 - entailment (best of the passages that share most words with the claim).

bench/quality.py measured the alternatives on HaluEval (ROC AUC, QA / summarization): this model
0.980 / 0.760; one weight for every term 0.981 / 0.798, but it labelled 4 of the demo's 5 faithful
paraphrased answers unsupported (this model: 0 of 5, and all 5 invented ones caught); MiniLM
sentence similarity alone 0.56 / 0.46, and no gain when combined with the terms, so the offline
default runs no embedding model at all.

The details keep every unsupported claim and its missing terms, for the console.
No context → label `not_applicable` and no score (never a made-up number).

Examples:
    >>> split_claims("Paris is in France. It has 2.1 million people! Is it big? Yes.")
    ['Paris is in France.', 'It has 2.1 million people!', 'Is it big?', 'Yes.']
    >>> missing_terms("The Eiffel Tower opened in 1889 in Lyon.", ["The Eiffel Tower opened in 1889."])
    ['lyon']
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from llmwatch.core.errors import DetectorLoadError
from llmwatch.core.events import TraceEvent
from llmwatch.detectors.base import NOT_APPLICABLE, ScoreRow

__all__ = ["Grounding", "NliSupport", "load", "missing_terms", "split_claims"]

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])|\n+\s*(?:[-*•]\s+|\d+[.)]\s+)?")
_WORD = re.compile(r"[A-Za-z0-9]+(?:[.,'’][A-Za-z0-9]+)*")
_STOPWORDS = frozenset(
    ["a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "same", "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them", "themselves", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself", "yourselves", "one", "two", "may", "might", "must", "shall", "yes", "also", "s", "t"]
)
_SUFFIXES = ("'s", "’s", "ing", "ed", "es", "s", "ly")
MAX_CLAIMS = 32  # a very long answer is judged on its first claims; details["checked"] says so


def split_claims(text: str) -> list[str]:
    """Sentences (and list items) of a response, each a claim to check."""
    claims = [part.strip() for part in _SENTENCE_END.split(text.strip())]
    return [c for c in claims if c and _WORD.search(c)]


def _stem(word: str) -> str:
    word = word.lower().replace(",", "")
    for suffix in _SUFFIXES:
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_terms(text: str) -> list[str]:
    """The words of `text` that carry facts: everything but stopwords, stemmed."""
    return [_stem(w) for w in _WORD.findall(text) if w.lower() not in _STOPWORDS]


def claim_terms(claim: str) -> dict[str, bool]:
    """A claim's fact-bearing terms, each marked strong when it is a number or a name (has a
    digit, or a capital letter anywhere but the claim's first word)."""
    terms: dict[str, bool] = {}
    for match in _WORD.finditer(claim):
        word = match.group()
        if word.lower() in _STOPWORDS:
            continue
        strong = any(c.isdigit() for c in word) or (word[0].isupper() and match.start() > 0)
        stem = _stem(word)
        terms[stem] = terms.get(stem, False) or strong
    return terms


def known_terms(evidence: Sequence[str]) -> set[str]:
    return {term for text in evidence for term in content_terms(text)}


def missing_terms(claim: str, evidence: Sequence[str]) -> list[str]:
    """Fact-bearing terms of `claim` that occur nowhere in `evidence`."""
    known = known_terms(evidence)
    return [term for term in claim_terms(claim) if term not in known]


class SupportBackend(Protocol):
    version: str

    def support(self, items: Sequence[tuple[str, list[str], str]]) -> list[float]:
        """For each (claim, passages, question): how well the passages support the claim, [0, 1]."""
        ...


@dataclass
class NliSupport:
    """Entailment probability from an NLI / cross-encoder model, max over the passages that share
    the most words with the claim (the top `candidates`; checking all of them costs quadratically
    and rarely changes the maximum)."""

    classifier: Any
    version: str
    candidates: int = 4

    def __post_init__(self) -> None:
        labels = self.classifier.labels
        entail = [i for i, name in labels.items() if name.startswith("entail") or name in ("consistent", "supported")]
        if entail:
            self.column: int | None = entail[0]
        elif len(labels) == 1:
            self.column = None  # one logit: a consistency score (HHEM style)
        else:
            msg = f"cannot tell which label of the NLI model means 'entailed' among {sorted(labels.values())}"
            raise DetectorLoadError(msg)

    def _candidates(self, claim: str, passages: list[str]) -> list[str]:
        terms = set(content_terms(claim))
        ranked = sorted(passages, key=lambda p: -len(terms & set(content_terms(p))))
        return ranked[: self.candidates]

    def support(self, items: Sequence[tuple[str, list[str], str]]) -> list[float]:
        pairs: list[tuple[str, str]] = []
        owners: list[int] = []
        for i, (claim, passages, question) in enumerate(items):
            hypothesis = f"{question} {claim}" if question and len(claim.split()) <= 6 else claim
            for passage in self._candidates(claim, passages):
                pairs.append((passage, hypothesis))
                owners.append(i)
        logits = self.classifier.logits(pairs)
        if self.column is None:
            probabilities = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        else:
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            probabilities = (shifted / shifted.sum(axis=1, keepdims=True))[:, self.column]
        best = [0.0] * len(items)
        for owner, p in zip(owners, probabilities):
            best[owner] = max(best[owner], float(p))
        return best


def _passages(context: Sequence[str]) -> list[str]:
    sentences = [s for doc in context for s in split_claims(doc)]
    return sentences or [doc for doc in context if doc.strip()]


class Grounding:
    name = "grounding"
    targets = ("output",)

    def __init__(self, backend: SupportBackend | None = None, p_missing_name: float = 0.6,
                 p_missing_word: float = 0.25, p_present: float = 0.005) -> None:
        self.backend = backend
        self.p_missing_name = p_missing_name
        self.p_missing_word = p_missing_word
        self.p_present = p_present
        self.version = "grounding-terms-2" + (f"+{backend.version}" if backend else "")
        self.threshold = 0.5

    def claim_unsupported(self, names_missing: int, words_missing: int, present: int, support: float = 1.0) -> float:
        kept = (
            support
            * (1.0 - self.p_missing_name) ** names_missing
            * (1.0 - self.p_missing_word) ** words_missing
            * (1.0 - self.p_present) ** present
        )
        return 1.0 - kept

    def score(self, events: Sequence[TraceEvent]) -> list[ScoreRow]:
        plans: list[tuple[TraceEvent, list[str]]] = []
        items: list[tuple[str, list[str], str]] = []
        for event in events:
            passages = _passages(event.context)
            claims = split_claims(event.output) if passages else []
            plans.append((event, claims))
            items += [(claim, passages, event.input) for claim in claims[:MAX_CLAIMS]]
        supports = iter(self.backend.support(items) if self.backend and items else [])
        rows = []
        for event, all_claims in plans:
            claims = all_claims[:MAX_CLAIMS]
            if not any(doc.strip() for doc in event.context):
                rows.append(self._row(event, None, NOT_APPLICABLE, {"reason": "no retrieved context"}))
                continue
            if not claims:
                rows.append(self._row(event, 0.0, "empty"))
                continue
            known = known_terms((*event.context, event.input))
            judged = []
            for claim in claims:
                terms = claim_terms(claim)
                missing = [term for term in terms if term not in known]
                names = sum(1 for term in missing if terms[term])
                support = next(supports) if self.backend else 1.0
                p = self.claim_unsupported(names, len(missing) - names, len(terms) - len(missing), support)
                judged.append((claim, missing, support, p))
            score = 1.0 - math.prod(1.0 - p for *_, p in judged)
            unsupported = [
                {"claim": claim, "missing": missing[:10], "p_unsupported": round(p, 3)}
                | ({"entailment": round(support, 3)} if self.backend else {})
                for claim, missing, support, p in judged
                if p >= self.threshold
            ]
            details: dict[str, Any] = {"claims": len(all_claims), "unsupported": unsupported}
            if len(all_claims) > MAX_CLAIMS:
                details["checked"] = MAX_CLAIMS
            label = "unsupported" if score >= self.threshold else "supported"
            rows.append(self._row(event, score, label, details))
        return rows

    def _row(self, event: TraceEvent, score: float | None, label: str, details: dict[str, Any] | None = None) -> ScoreRow:
        return ScoreRow(event.event_id, self.name, self.version, "output", score, label, details or {})

    def close(self) -> None:
        pass


def load(settings: Any) -> Grounding:
    if not settings.grounding_model:
        return Grounding()
    from llmwatch.detectors.transformer import SequenceClassifier

    classifier = SequenceClassifier.from_path(settings.grounding_model, settings.device, settings.model_batch_size)
    name = settings.grounding_model.rstrip("/").rsplit("/", 1)[-1]
    return Grounding(NliSupport(classifier, f"nli-{name}"))
