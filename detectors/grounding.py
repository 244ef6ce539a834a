"""Grounding: how much of a response the retrieved context does not support.

The response is split into claims (sentences and list items). Each claim is described by features
that carry meaning, none of them its length:
* the share of its fact-bearing terms (every word but stopwords, stemmed) the context and question
  never mention, and how many of those are names or numbers (a digit, or a capital past the
  claim's first word): a wrong name, number or date is the commonest hallucination;
* how much of the claim the best-matching context sentence covers;
* numbers absent from the context, and a negation the context does not have;
* the share of its terms that only repeat the question;
* the earlier hand-set estimate, P(unsupported) = 1 - 0.4^names 0.75^words 0.995^present.
A logistic regression over the claims' maximum and mean of each feature and the response's share
of novel words (detectors/models/grounding.json, trained by `llmwatch train grounding`) gives the
probability that the response holds an unsupported claim; the same model applied to one claim
gives that claim's probability, for the details. Trained on HaluEval QA and summarization, whose
hallucinated QA answers are longer: no feature counts words, so length cannot be the shortcut.

With an NLI / cross-encoder model (`grounding_model`), a claim's P(unsupported) also includes the
model's doubt: 1 - entailment (best of the passages that share most words with the claim).

The details keep every unsupported claim and its missing terms, for the console.
No context → label `not_applicable` and no score (never a made-up number).

Examples:
    >>> split_claims("Paris is in France. It has 2.1 million people! Is it big? Yes.")
    ['Paris is in France.', 'It has 2.1 million people!', 'Is it big?', 'Yes.']
    >>> missing_terms("The Eiffel Tower opened in 1889 in Lyon.", ["The Eiffel Tower opened in 1889."])
    ['lyon']
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import numpy as np

from llmwatch.core.errors import DetectorLoadError
from llmwatch.core.events import TraceEvent
from llmwatch.detectors.adapters import Adaptable
from llmwatch.detectors.base import NOT_APPLICABLE, ScoreRow
from llmwatch.detectors.hashed import logit, sigmoid

__all__ = ["CLAIM_FEATURES", "Evidence", "Grounding", "GroundingModel", "NliSupport", "Plan", "claim_features", "load",
           "missing_terms", "response_features", "split_claims"]

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])|\n+\s*(?:[-*•]\s+|\d+[.)]\s+)?")
_WORD = re.compile(r"[A-Za-z0-9]+(?:[.,'’][A-Za-z0-9]+)*")
_STOPWORDS = frozenset(
    ["a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "same", "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them", "themselves", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself", "yourselves", "one", "two", "may", "might", "must", "shall", "yes", "also", "s", "t"]
)
_SUFFIXES = ("'s", "’s", "ing", "ed", "es", "s", "ly")
MAX_CLAIMS = 32  # a very long answer is judged on its first claims; details["checked"] says so
T = TypeVar("T")


def split_claims(text: str) -> list[str]:
    """Sentences (and list items) of a response, each a claim to check."""
    claims = [part.strip() for part in _SENTENCE_END.split(text.strip())]
    return [c for c in claims if c and _WORD.search(c)]


def _short_ones_remembered(read: Callable[[str], T], chars: int, kept: int) -> tuple[Callable[[str], T], Any]:
    """`read`, its results remembered for texts of up to `chars` characters, `kept` of them (the
    least recently used leave first), and that cache. Longer texts are read every time: what an
    event holds cannot pin memory."""
    cached = functools.lru_cache(maxsize=kept)(read)

    def remembered(text: str) -> T:
        return cached(text) if len(text) <= chars else read(text)

    return remembered, cached


def _read_stem(word: str) -> str:
    word = word.lower().replace(",", "")
    for suffix in _SUFFIXES:
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


# Words repeat across claims, passages and events: their stems (and terms, below) are remembered,
# those of up to this many characters. A response can hold anything (a base64 blob is one long
# "word"): unbounded, 65,536 such words of 10 kB would pin 650 MB; bounded, each cache stays
# under ~16 MB.
_CACHED_WORD_CHARS = 64
_stem, _cached_stem = _short_ones_remembered(_read_stem, _CACHED_WORD_CHARS, 65536)


def content_terms(text: str) -> list[str]:
    """The words of `text` that carry facts: everything but stopwords, stemmed."""
    return [_stem(w) for w in _WORD.findall(text) if w.lower() not in _STOPWORDS]


def claim_terms(claim: str) -> dict[str, bool]:
    """A claim's fact-bearing terms, each marked strong when it is a number or a name (has a
    digit, or a capital letter anywhere but the claim's first word)."""
    terms: dict[str, bool] = {}
    # Only the first word can start the claim, and does when the claim starts with a word character.
    opening = bool(claim) and claim[0] in _WORD_START
    for i, word in enumerate(_WORD.findall(claim)):
        term = _term(word)
        if term is None:
            continue
        stem, has_digit = term
        strong = has_digit or (word[0].isupper() and (i > 0 or not opening))
        terms[stem] = terms.get(stem, False) or strong
    return terms


_WORD_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")  # what _WORD starts with


def _read_term(word: str) -> tuple[str, bool] | None:
    if word.lower() in _STOPWORDS:
        return None
    return _stem(word), not word.isalpha() and any(c.isdigit() for c in word)


# A word's stem and whether it holds a digit; None for a stopword. One cached lookup per word of
# a claim, where the lower-casing, the stopword test and the digit scan each cost a call
# (claim_terms 26 -> 10 µs per claim of ~19 words, demo traffic).
_term, _cached_term = _short_ones_remembered(_read_term, _CACHED_WORD_CHARS, 65536)


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


# `\b(?:not|no|never|none|nobody|nothing|neither|nor|without|cannot)\b|n't\b`, ignoring case,
# written to start with one set of characters (n, w, c) so that the scan skips every other
# position; the word boundary before is a look-behind once that character matched. 7-9 -> 1 µs
# per claim of ~100 characters.
_NEGATION = re.compile(
    r"[nNwWcC](?:(?<=[nN])(?:(?<!\w.)(?i:ot|o|ever|one|obody|othing|either|or)\b|(?i:'t)\b)"
    r"|(?<=[wW])(?<!\w.)(?i:ithout)\b|(?<=[cC])(?<!\w.)(?i:annot)\b)"
)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
CLAIM_FEATURES = ("missing_share", "missing_names", "uncovered", "unknown_numbers", "new_negation",
                  "question_share", "any_missing", "handset_logit")
_UNKNOWN_NUMBERS = CLAIM_FEATURES.index("unknown_numbers")  # its claim maximum, in response features


class _Document(NamedTuple):
    """What one retrieved document contributes to an event's evidence. Terms in tuples: a set of
    a few terms costs several times their size, and these are kept."""

    terms: tuple[str, ...]
    sentence_terms: tuple[tuple[str, ...], ...]  # one per sentence (split_claims)
    numbers: tuple[str, ...]
    negated: bool


# A RAG app retrieves from a corpus, so the same chunks come back event after event: each is
# read once, not once per event that retrieved it. Keyed by the text itself; chunks of up to
# 4,096 characters are kept, 2,048 of them: ~16 MB for chunks of 1,000 characters, ~47 MB at
# most (measured with tracemalloc, the texts included).
_CACHED_DOCUMENT_CHARS = 4096


def _read_document(doc: str) -> _Document:
    return _Document(tuple(content_terms(doc)),
                     tuple(tuple(content_terms(s)) for s in split_claims(doc)),
                     tuple({n.replace(",", "") for n in _NUMBER.findall(doc)}),
                     _NEGATION.search(doc) is not None)


_document, _cached_document = _short_ones_remembered(_read_document, _CACHED_DOCUMENT_CHARS, 2048)


@dataclass
class Evidence:
    """What a response is checked against, prepared once per event."""

    known: set[str]
    question_terms: set[str]
    numbers: set[str]
    passage_terms: list[tuple[str, ...]]  # the terms of each passage
    negated: bool

    @classmethod
    def of(cls, context: Sequence[str], question: str) -> Evidence:
        documents = [_document(doc) for doc in context]
        question_terms = set(content_terms(question))
        # The passages are the documents' sentences, or the documents themselves when none has
        # one (as _passages).
        passage_terms = [terms for d in documents for terms in d.sentence_terms] or \
                        [d.terms for doc, d in zip(context, documents) if doc.strip()]
        return cls(question_terms.union(*(d.terms for d in documents)), question_terms,
                   set().union(*(d.numbers for d in documents)), passage_terms or [()],
                   any(d.negated for d in documents))


def _handset(names: int, words: int, present: int) -> float:
    return 1.0 - 0.4**names * 0.75**words * 0.995**present


def claim_features(claim: str, evidence: Evidence) -> tuple[list[float], list[str]]:
    """CLAIM_FEATURES of one claim, and its missing terms."""
    terms = claim_terms(claim)
    n = len(terms) or 1
    missing = [term for term in terms if term not in evidence.known]
    names = sum(1 for term in missing if terms[term])
    claimed = set(terms)
    covered = max((len(claimed.intersection(p)) / len(claimed) for p in evidence.passage_terms), default=0.0) \
        if claimed else 1.0
    unknown_numbers = sum(1 for x in _NUMBER.findall(claim) if x.replace(",", "") not in evidence.numbers)
    p = min(_handset(names, len(missing) - names, len(terms) - len(missing)), 0.9999)
    return [
        len(missing) / n, float(min(names, 3)), 1.0 - covered, float(min(unknown_numbers, 3)),
        1.0 if _NEGATION.search(claim) and not evidence.negated else 0.0,
        len(claimed & evidence.question_terms) / n, 1.0 if missing else 0.0, math.log(max(p, 1e-4) / (1 - p)),
    ], missing


def response_features(claims: Sequence[Any], novel_share: float) -> np.ndarray:
    """Max and mean of each claim feature, then the response's share of novel words."""
    matrix = np.asarray(claims, dtype=np.float64).reshape(-1, len(CLAIM_FEATURES))
    return np.concatenate([matrix.max(axis=0), matrix.mean(axis=0), [novel_share]])


def novel_share(response: str, evidence: Evidence) -> float:
    words = content_terms(response)
    return sum(1 for w in words if w not in evidence.known) / max(1, len(words))


@dataclass
class GroundingModel:
    """Standardised logistic regression over response_features (weights in JSON)."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    bias: float
    meta: dict[str, Any] = field(default_factory=dict)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """P(unsupported) per row, never below 1 - 0.4^n for the n numbers the worst claim has and
        the context has not: HaluEval's invented answers are long, so the fitted weights alone let
        a short "It opened in 1925." (context: 1889) pass. (Names are not floored: faithful
        summaries name people and places their sources spell differently.)"""
        x = np.atleast_2d(x)
        learned = sigmoid(((x - self.mean) / self.scale) @ self.coef + self.bias)
        return np.maximum(learned, 1.0 - 0.4 ** x[:, _UNKNOWN_NUMBERS])

    def adapter_inputs(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What a review model (detectors/adapters.py) reads: the standardised features and this
        model's logit."""
        x = np.atleast_2d(x)
        return (x - self.mean) / self.scale, logit(self.probabilities(x), 1e-6)

    def to_json(self) -> str:
        return json.dumps({"mean": self.mean.tolist(), "scale": self.scale.tolist(), "coef": self.coef.tolist(),
                           "bias": self.bias, "meta": self.meta}, indent=1)

    @classmethod
    def from_json(cls, text: str, origin: str = "model") -> GroundingModel:
        try:
            data = json.loads(text)
            model = cls(np.array(data["mean"]), np.array(data["scale"]), np.array(data["coef"]), float(data["bias"]),
                        data.get("meta", {}))
        except (ValueError, KeyError, TypeError) as exc:
            raise DetectorLoadError(f"{origin} is not a grounding model: {exc}") from exc
        if not model.mean.shape == model.scale.shape == model.coef.shape == (2 * len(CLAIM_FEATURES) + 1,):
            raise DetectorLoadError(f"{origin} has weights for other features than {CLAIM_FEATURES}")
        return model

    @classmethod
    def load(cls, path: Path) -> GroundingModel:
        if not path.is_file():
            raise DetectorLoadError(f"no grounding model at {path}")
        return cls.from_json(path.read_text(encoding="utf-8"), str(path))


def shipped_model() -> Path:
    return Path(__file__).parent / "models" / "grounding.json"


class Plan(NamedTuple):
    """One event's grounding inputs: response features, the checked claims as (claim, missing
    terms, claim features), and how many claims the response has in all."""

    features: np.ndarray
    claims: list[tuple[str, list[str], np.ndarray]]
    total: int


def _checked_claims(event: TraceEvent) -> tuple[list[tuple[str, list[str], list[float]]], int, float] | None:
    """(claim, missing terms, CLAIM_FEATURES) of each claim checked, how many claims the response
    has in all, and its share of novel words; None when there is no context."""
    if not any(doc.strip() for doc in event.context):
        return None
    evidence = Evidence.of(event.context, event.input)
    every_claim = split_claims(event.output)
    claims = []
    for claim in every_claim[:MAX_CLAIMS]:
        values, missing = claim_features(claim, evidence)
        claims.append((claim, missing, values))
    if not claims:
        return [], 0, 0.0
    return claims, len(every_claim), novel_share(event.output, evidence)


class Grounding(Adaptable):
    name = "grounding"
    targets = ("output",)

    def __init__(self, backend: SupportBackend | None = None, model: GroundingModel | None = None) -> None:
        self.model = model or GroundingModel.load(shipped_model())
        self.backend = backend
        # A review model (detectors/adapters.py) reads this model's logit and standardised features.
        self._init_adapter(f"learned-{self.model.meta.get('version', 'custom')}"
                           + (f"+{backend.version}" if backend else ""))
        self.threshold = 0.5

    @property
    def offloadable(self) -> bool:
        """The offline model may score in the worker's scoring process; an NLI model stays with
        the worker (one copy of its weights, on its device)."""
        return self.backend is None

    def response_probabilities(self, features: np.ndarray, adapter: Any = None) -> np.ndarray:
        """P(unsupported) of each row of response features: the shipped model's, or the adapter's
        over its logit and the standardised features."""
        if adapter is None:
            return self.model.probabilities(features)
        return np.asarray(adapter.probabilities(*self.model.adapter_inputs(features)))

    def features(self, event: TraceEvent) -> Plan | None:
        """The event's response features and checked claims; None when there is no context."""
        checked = _checked_claims(event)
        if checked is None:
            return None
        claims, total, novel = checked
        if not claims:
            return Plan(np.zeros(0), [], 0)
        features = response_features([values for *_, values in claims], novel)
        return Plan(features, [(claim, missing, np.array(values)) for claim, missing, values in claims], total)

    def score(self, events: Sequence[TraceEvent]) -> list[ScoreRow]:
        adapter, version = self._adapted
        checked = [(event, _checked_claims(event)) for event in events]
        judged = [(event, c) for event, c in checked if c is not None and c[0]]
        # The batch's claims in one matrix: one model call for every response (the max and mean of
        # its claims' features, as response_features) and one for every claim, and no numpy call
        # per event (small arrays cost a microsecond or more each: 35 -> 23 µs per demo event).
        response_scores: Iterator[float] = iter([])
        claim_scores: Iterator[float] = iter([])
        if judged:
            values = np.array([v for _, (claims, _, _) in judged for *_, v in claims], dtype=np.float64)
            counts = np.array([len(claims) for _, (claims, _, _) in judged])
            starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
            novel = np.array([n for _, (_, _, n) in judged], dtype=np.float64)[:, None]
            responses = np.hstack([np.maximum.reduceat(values, starts), np.add.reduceat(values, starts) / counts[:, None],
                                   novel])
            response_scores = iter(np.asarray(self.response_probabilities(responses, adapter)).tolist())
            # A claim alone: the response model applied to a one-claim response.
            claim_scores = iter(self.model.probabilities(np.hstack([values, values, np.repeat(novel, counts, axis=0)]))
                                .tolist())
        items = [(claim, _passages(event.context), event.input)
                 for event, (claims, _, _) in judged for claim, *_ in claims] if self.backend else []
        supports = iter(self.backend.support(items) if self.backend and items else [])
        rows = []
        for event, c in checked:
            if c is None:
                rows.append(self._row(event, version, None, NOT_APPLICABLE, {"reason": "no retrieved context"}))
                continue
            claims, total, _ = c
            if not claims:
                rows.append(self._row(event, version, 0.0, "empty"))
                continue
            doubts = [1.0 - float(next(supports)) for _ in claims] if self.backend else [0.0] * len(claims)
            per_claim = [1.0 - (1.0 - next(claim_scores)) * (1.0 - doubt) for doubt in doubts]
            score = 1.0 - (1.0 - next(response_scores)) * (1.0 - max(doubts))
            unsupported = [
                {"claim": claim, "missing": missing[:10], "p_unsupported": round(p, 3)}
                | ({"entailment": round(1.0 - doubt, 3)} if self.backend else {})
                for (claim, missing, _), p, doubt in zip(claims, per_claim, doubts)
                if p >= self.threshold
            ]
            details: dict[str, Any] = {"claims": total, "unsupported": unsupported}
            if total > MAX_CLAIMS:
                details["checked"] = MAX_CLAIMS
            label = "unsupported" if score >= self.threshold else "supported"
            rows.append(self._row(event, version, score, label, details))
        return rows

    def _row(self, event: TraceEvent, version: str, score: float | None, label: str,
             details: dict[str, Any] | None = None) -> ScoreRow:
        return ScoreRow(event.event_id, self.name, version, "output", score, label, details or {})

    def close(self) -> None:
        pass


def load(settings: Any) -> Grounding:
    weights = Path(settings.grounding_weights) if settings.grounding_weights else shipped_model()
    model = GroundingModel.load(weights)
    if not settings.grounding_model:
        return Grounding(model=model)
    from llmwatch.detectors.transformer import SequenceClassifier

    classifier = SequenceClassifier.from_path(settings.grounding_model, settings.device, settings.model_batch_size)
    name = settings.grounding_model.rstrip("/").rsplit("/", 1)[-1]
    return Grounding(NliSupport(classifier, f"nli-{name}"), model)
