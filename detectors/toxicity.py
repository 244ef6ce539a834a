"""Toxicity of the input and of the output, scored separately.

Backends (setting `toxicity_model`):
* `learned` (default): a linear model over hashed word and character n-grams trained on tweets,
  chatbot-user turns and Wikipedia comments (detectors/models/MODEL_CARD.md), stacked with
  alt-profanity-check's score of the text as written and de-obfuscated. The stack is a logistic
  regression fitted on out-of-fold scores of the sources with a natural share of toxic text, so the
  score is a calibrated probability. ~7k texts/s per core (bench/detectors.py). A path to a `.npz`
  written by `llmwatch train toxicity` loads that model instead.
* `profanity-check`: alt-profanity-check's shipped linear model (TF-IDF + linear SVM,
  calibrated), scored a batch at a time by detectors/profanity.py. No download. Its vocabulary
  misses the ways people hide insults (f*ck, 1d10t, f u c k, fuuuck, b!tch), so each text is also
  scored after undoing those, and the higher score counts (bench/quality.py measures the gain on
  obfuscated text).
* a path to a detoxify checkpoint (`.ckpt`, original / unbiased / multilingual, saved with its
  tokenizer and config in a local folder: see docs/detectors.md). Runs on the GPU when present, in
  length-sorted batches under fp16 autocast. With `toxicity_cascade_below` > 0 the cheap model
  scores everything first and only texts it scores at or above that value go to detoxify.

Examples:
    >>> from datetime import datetime, timezone
    >>> import uuid
    >>> from llmwatch.core.events import TraceEvent
    >>> event = TraceEvent(uuid.UUID(int=1), "t", datetime.now(timezone.utc), "app",
    ...                    input="have a nice day", output="shut up, you idiot")
    >>> [(r.target, r.label) for r in ProfanityCheckToxicity().score([event])]
    [('input', 'ok'), ('output', 'toxic')]
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llmwatch.core.errors import DetectorLoadError
from llmwatch.core.events import TraceEvent
from llmwatch.detectors.adapters import Adaptable
from llmwatch.detectors.base import TARGETS, ScoreRow
from llmwatch.detectors.hashed import logit, sigmoid
from llmwatch.detectors.profanity import ProfanityModel

__all__ = ["DetoxifyToxicity", "LearnedToxicity", "ProfanityCheckToxicity", "deobfuscate", "deobfuscate_many", "load",
           "load_detoxify", "shipped_model"]

THRESHOLD = 0.5

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})
_MASKED = [
    (re.compile(pattern, re.IGNORECASE), word)
    for pattern, word in [
        (r"\bf[\W_]*[*#@%u][\W_]*[*#@%c][\W_]*k", "fuck"), (r"\bf[*#@%]+k", "fuck"), (r"\bsh[*#@!1i]t", "shit"),
        (r"\bb[*#@!1i]tch", "bitch"), (r"\ba[*#@$s]{2}hole", "asshole"), (r"\bc[*#@u]nt", "cunt"),
        (r"\bd[*#@1i]ck", "dick"), (r"\bwh[*#@o]re", "whore"), (r"\bst[*#@u]pid", "stupid"), (r"\bid[*#@1i]ot", "idiot"),
    ]
]
# Any one of them matching somewhere, in one scan: most texts hide nothing, and skip the ten. The
# scan starts with one set of characters, both cases of the masks' first letters, so the regex
# engine skips every other position in C (a set under IGNORECASE, or a look-ahead, does not skip);
# the word boundary is a look-behind after that letter, and a look-behind for each first letter
# picks its masks. 6.5 -> 4.5 µs per demo event against the look-ahead form, the same matches
# (tests/detectors/test_learned.py).
_MASKS_BY_FIRST: dict[str, list[str]] = {}
for _pattern, _ in _MASKED:
    _MASKS_BY_FIRST.setdefault(_pattern.pattern[2], []).append(_pattern.pattern[3:])  # after r"\b" and the letter
_ANY_MASKED = re.compile(
    f"[{''.join(_MASKS_BY_FIRST)}{''.join(_MASKS_BY_FIRST).upper()}]" + r"(?<!\w.)(?i:"
    + "|".join(f"(?<={first})(?:{'|'.join(rests)})" for first, rests in _MASKS_BY_FIRST.items()) + ")"
)
_SPACED = re.compile(r"\b(?:[A-Za-z][ .\-_]){2,}[A-Za-z]\b")  # f u c k, s.h.i.t
_TRAILING = re.compile(r"(.*?)([.,!?;:)\"']*)", re.DOTALL)
_REPEATED = re.compile(r"(.)\1{2,}")  # fuuuuck: what _collapse_repeats does


def _unleet(token: str) -> str:
    # Only tokens with letters ("100 points" stays), and not their closing punctuation ("hi!").
    core, tail = _TRAILING.fullmatch(token).groups()  # type: ignore[union-attr]
    return (core.translate(_LEET) if any(c.isalpha() for c in core) else core) + tail


# Only tokens (runs of non-whitespace) holding a character _LEET changes can change. The scan
# jumps between those characters in C, and each one found is widened to its token: a pattern
# for the whole token starts with a look-behind, tried at every position (8.3 -> 3.5 µs per demo
# event). str.isspace() is what the regex engine's \s tests.
_LEET_CHAR = re.compile(r"[013457@$!]")
_SPACE = re.compile(r"\s")


def _unleet_tokens(text: str) -> str:
    """Each whitespace-separated token of `text` un-leeted (_unleet), whitespace kept."""
    replacements = []
    done = 0  # where the last token ended
    hit = _LEET_CHAR.search(text)
    while hit is not None:
        start = hit.start()
        while start > done and not text[start - 1].isspace():
            start -= 1
        after = _SPACE.search(text, hit.end())
        done = after.start() if after is not None else len(text)
        replacements.append((start, done, _unleet(text[start:done])))
        hit = _LEET_CHAR.search(text, done)
    return _spliced(text, replacements)


def _spliced(text: str, replacements: Iterable[tuple[int, int, str]]) -> str:
    """`text` with each (start, end, new), ascending and not overlapping, in place of text[start:end]."""
    parts: list[str] = []
    done = 0
    for start, end, new in replacements:
        parts += (text[done:start], new)
        done = end
    if not parts:
        return text
    parts.append(text[done:])
    return "".join(parts)


# Each ASCII byte's classes for _unspace, as bits: 1 a letter, 2 spacing, 4 a word character.
# Other code points are encoded as "?", in none of them.
_CLASSES = bytes((c < 128 and chr(c).isalpha()) | (chr(c) in " .-_") << 1 | (chr(c).isalnum() or chr(c) == "_") << 2
                 for c in range(256))


def _unspace(text: str) -> str:
    """_SPACED.sub(_unspaced, text), the pattern run only on the texts (parts between two
    _SEPARATORs, which no match crosses) where it can match: a letter after no ASCII word
    character, then spacing, a letter, spacing, a letter. numpy finds those; the pattern tries
    every letter, and ~1 text in 400 of demo traffic has one (4.2 -> 0.4 µs per demo event)."""
    classes = np.frombuffer(text.encode("ascii", "replace").translate(_CLASSES), dtype=np.uint8)
    if len(classes) < 5:
        return text
    # Letter, spacing, letter, spacing, letter from each position, after no word character.
    window = (classes[:-4] & classes[2:-2] & classes[4:]) << 1 & classes[1:-3] & classes[3:-1] & 2 != 0
    window[1:] &= classes[:-5] & 4 == 0
    replacements = []
    done = 0  # where the last part ended
    for at in np.flatnonzero(window).tolist():
        if at < done:
            continue  # in a part already done
        start = text.rfind(_SEPARATOR, 0, at) + 1
        done = text.find(_SEPARATOR, at)
        done = len(text) if done < 0 else done
        replacements.append((start, done, _SPACED.sub(_unspaced, text[start:done])))
    return _spliced(text, replacements)


def _collapse_repeats(text: str) -> str:
    """_REPEATED.sub(r"\\1", text): each run of three or more of one character (a newline aside,
    as `.` has it) made one. numpy finds the runs: the regex tries a capture and a back-reference
    at every position, and runs are rare (4.2 -> 0.2 µs per demo event)."""
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    same = codes[1:] == codes[:-1]
    at = np.flatnonzero(same[1:] & same[:-1] & (codes[:-2] != ord("\n")))  # three alike from here
    if not len(at):
        return text
    breaks = np.flatnonzero(np.diff(at) != 1)
    firsts = at[np.concatenate(([0], breaks + 1))].tolist()
    ends = (at[np.concatenate((breaks, [len(at) - 1]))] + 3).tolist()
    return _spliced(text, ((first, end, text[first]) for first, end in zip(firsts, ends)))


def deobfuscate(text: str) -> str:
    """Undo the common ways of hiding a word from a filter.

    >>> deobfuscate("f u c k off, you 1d10t. a$$hole! fuuuuck")
    'fuck off, you idiot. asshole! fuck'
    """
    text = _unspace(text)
    text = _unleet_tokens(text)
    if _ANY_MASKED.search(text):
        for pattern, word in _MASKED:
            text = pattern.sub(word, text)
    return _collapse_repeats(text)


_SPACING = re.compile(r"[ .\-_]")
# Texts of a batch are joined with this between them, so each pattern scans the batch once. It is
# whitespace and not a word character: at either side of it every pattern sees what it sees at a
# string's edge, and none but the masks' [\W_]* can match across it (deobfuscate_many checks those).
_SEPARATOR = "\x1e"


def deobfuscate_many(texts: Sequence[str]) -> list[str]:
    """deobfuscate() of each text, each pattern scanning the whole batch once (not per text)."""
    out = list(texts)
    joined = [i for i, text in enumerate(texts) if text and _SEPARATOR not in text]
    for i in set(range(len(texts))) - set(joined):
        out[i] = deobfuscate(texts[i])
    if not joined:
        return out
    batch = _SEPARATOR.join(texts[i] for i in joined)
    batch = _unleet_tokens(_unspace(batch))
    parts = batch.split(_SEPARATOR)
    # A mask's [\W_]* can run across the separator: such a match flags each text it touches, and
    # each flagged text is searched again alone (a match across two texts hides none inside one).
    ends = list(itertools.accumulate(len(part) + 1 for part in parts))
    flagged: set[int] = set()
    for match in _ANY_MASKED.finditer(batch):
        first = bisect.bisect_right(ends, match.start())
        last = bisect.bisect_right(ends, max(match.end() - 1, match.start()))
        flagged.update(range(first, last + 1))
    for k in flagged:
        if _ANY_MASKED.search(parts[k]):
            for pattern, word in _MASKED:
                parts[k] = pattern.sub(word, parts[k])
    for i, part in zip(joined, _collapse_repeats(_SEPARATOR.join(parts)).split(_SEPARATOR)):
        out[i] = part
    return out


def _unspaced(match: re.Match[str]) -> str:
    return _SPACING.sub("", match.group())


def _texts(events: Sequence[TraceEvent]) -> list[str]:
    return [getattr(event, target) for event in events for target in TARGETS]


def _rows(detector: Any, events: Sequence[TraceEvent], scores: Sequence[float] | np.ndarray,
          details: Sequence[dict[str, Any]] | None = None, version: str = "") -> list[ScoreRow]:
    """Rows in (event, target) order from flat per-text scores; empty texts are labelled `empty`."""
    name, version, threshold = detector.name, version or detector.version, detector.threshold
    # Python floats, once: indexing a numpy array per row cost more than the rest of the row.
    values = scores.tolist() if isinstance(scores, np.ndarray) else [float(s) for s in scores]
    rows = []
    k = 0
    for event in events:
        for target in TARGETS:
            if not getattr(event, target).strip():
                rows.append(ScoreRow(event.event_id, name, version, target, 0.0, "empty"))
            else:
                score = values[k]
                rows.append(ScoreRow(event.event_id, name, version, target, score,
                                     "toxic" if score >= threshold else "ok", details[k] if details else {}))
            k += 1
    return rows


def profanity_scores(predict_prob: Any, texts: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The texts de-obfuscated, alt-profanity-check's score of each as written, and the higher of
    that and its score de-obfuscated (only texts that changed are scored twice)."""
    plain = deobfuscate_many(texts)
    changed = [i for i, (text, clean) in enumerate(zip(texts, plain)) if clean != text]
    scored = np.asarray(predict_prob([*texts, *(plain[i] for i in changed)]), dtype=np.float64)  # one call
    raw = scored[: len(texts)]
    cleaned = raw.copy()
    if changed:
        cleaned[changed] = np.maximum(raw[changed], scored[len(texts) :])
    return plain, raw, cleaned


def shipped_model() -> Path:
    return Path(__file__).parent / "models" / "toxicity.npz"


class LearnedToxicity(Adaptable):
    """Hashed n-grams + alt-profanity-check, stacked and calibrated (the offline default).

    With an adapter (detectors/adapters.py: a model fitted on this deployment's reviewers' labels,
    swapped in by the worker without a restart) the score is the adapter's, which reads this
    model's logit and the same hashed features."""

    name = "toxicity"
    targets = TARGETS
    offloadable = True  # may score in the worker's scoring process (ingest/pipeline/scoring.py)

    def __init__(self, model: Any, threshold: float = THRESHOLD) -> None:
        self.model = model
        self._predict_prob = ProfanityModel.shipped().predict_prob
        self.threshold = threshold
        self.stack = np.asarray(model.meta["stack"], dtype=np.float64)  # text, raw, de-obfuscated, bias
        self._init_adapter(f"learned-{model.meta.get('version', 'custom')}")

    def features_and_logits(self, texts: Sequence[str]) -> tuple[Any, np.ndarray]:
        """The hashed features of each (de-obfuscated) text and the shipped model's logit."""
        plain, raw, cleaned = profanity_scores(self._predict_prob, texts)
        x = self.model.features.transform(plain)
        margins = np.asarray(x @ self.model.weights, dtype=np.float64) + self.model.bias
        w = self.stack
        return x, w[0] * margins + w[1] * logit(raw) + w[2] * logit(cleaned) + w[3]

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        adapter = self.adapter
        x, logits = self.features_and_logits(texts)
        return adapter.probabilities(x, logits) if adapter is not None else sigmoid(logits)

    def score(self, events: Sequence[TraceEvent]) -> list[ScoreRow]:
        if not events:
            return []
        adapter, version = self._adapted
        texts = _texts(events)
        x, logits = self.features_and_logits(texts)
        scores = adapter.probabilities(x, logits) if adapter is not None else sigmoid(logits)
        return _rows(self, events, scores, version=version)

    def close(self) -> None:
        pass


class ProfanityCheckToxicity:
    """Fast CPU toxicity from alt-profanity-check's linear model."""

    name = "toxicity"
    version = "profanity-check-2"
    targets = TARGETS
    offloadable = True

    def __init__(self, threshold: float = THRESHOLD) -> None:
        self._predict_prob = ProfanityModel.shipped().predict_prob
        self.threshold = threshold

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        return profanity_scores(self._predict_prob, texts)[2]

    def score(self, events: Sequence[TraceEvent]) -> list[ScoreRow]:
        if not events:
            return []
        return _rows(self, events, self.predict(_texts(events)))

    def close(self) -> None:
        pass


class DetoxifyToxicity:
    """A detoxify checkpoint, batched on the GPU when present; optionally behind the cheap model."""

    name = "toxicity"
    targets = TARGETS

    def __init__(self, classifier: Any, class_names: Sequence[str], checkpoint: str,
                 cascade_below: float = 0.0, threshold: float = THRESHOLD) -> None:
        self.classifier = classifier
        self.class_names = [str(c) for c in class_names]
        self.primary = self.class_names.index("toxicity") if "toxicity" in self.class_names else 0
        self.cascade_below = cascade_below
        self.cheap = ProfanityCheckToxicity() if cascade_below > 0 else None
        self.threshold = threshold
        self.version = f"detoxify-{Path(checkpoint).stem}" + (f"-cascade{cascade_below:g}" if cascade_below else "")
        self.last_sent = 0  # texts the last call sent to the model (the cascade's saving)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Per-class probabilities (sigmoid, as detoxify's own predict), one row per text."""
        logits = self.classifier.logits(list(texts))
        return 1.0 / (1.0 + np.exp(-logits))

    def score(self, events: Sequence[TraceEvent]) -> list[ScoreRow]:
        if not events:
            return []
        texts = _texts(events)
        wanted = [k for k, text in enumerate(texts) if text.strip()]
        scores = np.zeros(len(texts))
        details: list[dict[str, Any]] = [{} for _ in texts]
        if self.cheap is not None:
            cheap = self.cheap.predict([texts[k] for k in wanted])
            for k, value in zip(wanted, cheap):
                scores[k] = value
                details[k] = {"model": "profanity-check"}
            wanted = [k for k, value in zip(wanted, cheap) if value >= self.cascade_below]
        self.last_sent = len(wanted)
        if wanted:
            probabilities = self.probabilities([texts[k] for k in wanted])
            for k, row in zip(wanted, probabilities):
                scores[k] = row[self.primary]
                details[k] = {name: round(float(p), 4) for name, p in zip(self.class_names, row) if p >= 0.01}
        return _rows(self, events, scores, details)

    def close(self) -> None:
        self.classifier = None


def load_detoxify(checkpoint: str | Path, device: str = "auto", batch_size: int = 128,
                  cascade_below: float = 0.0) -> DetoxifyToxicity:
    """A detoxify `.ckpt` from a local path. Its `model_type` must name a local folder with the
    transformers config and tokenizer files (detoxify would otherwise fetch them from the hub)."""
    from llmwatch.detectors.embedding import pick_device
    from llmwatch.detectors.transformer import SequenceClassifier

    path = Path(checkpoint)
    if not path.is_file():
        msg = f"no detoxify checkpoint at {path}"
        raise DetectorLoadError(msg)
    try:
        from detoxify import Detoxify
    except ImportError as exc:
        raise DetectorLoadError("the detoxify backend needs the detoxify package") from exc
    chosen = pick_device(device)
    try:
        model = Detoxify(checkpoint=str(path), device=chosen)
    except (OSError, ValueError, KeyError) as exc:
        msg = (
            f"could not load detoxify checkpoint {path}: {exc}. Its config.arch.args.model_type must be "
            "a local folder holding config.json and the tokenizer files (no download is attempted)"
        )
        raise DetectorLoadError(msg) from exc
    classifier = SequenceClassifier.wrap(model.model, model.tokenizer, chosen, batch_size)
    return DetoxifyToxicity(classifier, model.class_names, str(path), cascade_below)


def load_learned(path: Path | None = None) -> LearnedToxicity:
    from llmwatch.detectors.hashed import HashedTextModel

    model = HashedTextModel.load(path or shipped_model())
    if "stack" not in model.meta:
        msg = f"{path} is not a toxicity model (no stack weights): train it with `llmwatch train toxicity`"
        raise DetectorLoadError(msg)
    return LearnedToxicity(model)


def load(settings: Any) -> LearnedToxicity | ProfanityCheckToxicity | DetoxifyToxicity:
    choice = settings.toxicity_model
    if choice in ("", "learned"):
        return load_learned()
    if choice == "profanity-check":
        return ProfanityCheckToxicity()
    if choice.endswith(".npz"):
        return load_learned(Path(choice))
    return load_detoxify(choice, settings.device, settings.model_batch_size, settings.toxicity_cascade_below)
