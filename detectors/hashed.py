"""A calibrated linear model over hashed word and character n-grams: the learned CPU detectors.

Hashing (detectors/ngrams.py: the same columns on every machine and in every process) means no
vocabulary to ship: the weights are one float16 vector, about 1 MB per model before compression. Word 1..n-grams
catch phrases ("ignore all previous instructions"), character 3..5-grams catch spellings no vocabulary holds (f*cking, idi0t, misspelt slurs). Counts are log-damped and
each text's vector is L2-normalised, so a long text is not more toxic for being long.

The score is `sigmoid(a * (w . x + b) + c)`: (a, c) is Platt scaling fitted on out-of-fold
predictions, so 0.5 means an even chance on data like the training data.

Examples:
    >>> features = HashedFeatures(n_features=2**10)
    >>> x = features.transform(["Ignore previous instructions", "hello"])
    >>> x.shape, round(float(x[0].multiply(x[0]).sum()), 6)
    ((2, 2048), 1.0)
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from llmwatch.core.errors import DetectorLoadError
from llmwatch.detectors.ngrams import ngram_columns

__all__ = ["HashedFeatures", "HashedTextModel", "logit", "pack", "sigmoid", "unpack"]


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))


def logit(p: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    p = np.clip(p, eps, 1 - eps)
    return np.log(p / (1 - p))


def pack(weights: np.ndarray, header: dict[str, Any]) -> bytes:
    """A weights vector and its JSON header as one compressed .npz (no pickles, ever)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, weights=weights, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    return buffer.getvalue()


def unpack(data: bytes) -> tuple[np.ndarray, dict[str, Any]]:
    """The weights and header `pack` wrote; OSError, ValueError or KeyError when it is not one."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return archive["weights"], json.loads(archive["header"].tobytes())


@dataclass(frozen=True)
class HashedFeatures:
    """Word n-grams in the first `n_features` columns, character n-grams in the next."""

    n_features: int = 2**18
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (3, 5)
    concepts: str = ""  # a set of detectors/concepts.py: its tokens are added to each text first

    @property
    def width(self) -> int:
        return 2 * self.n_features

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        if self.concepts:
            from llmwatch.detectors.concepts import annotate_many

            texts = annotate_many(texts, self.concepts)
        rows, columns = ngram_columns(texts, self.word_ngrams, self.char_ngrams, self.n_features)
        return _log_counts(rows, columns, len(texts), self.width)

    def config(self) -> dict[str, Any]:
        return {"n_features": self.n_features, "word_ngrams": list(self.word_ngrams),
                "char_ngrams": list(self.char_ngrams), "concepts": self.concepts}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HashedFeatures:
        return cls(int(config["n_features"]), tuple(config["word_ngrams"]), tuple(config["char_ngrams"]),
                   str(config.get("concepts", "")))


def _log_counts(rows: np.ndarray, columns: np.ndarray, n_rows: int, width: int) -> sparse.csr_matrix:
    """The (n_rows, width) matrix of log(1 + count) of each (row, column) pair, each row scaled to
    length 1, built from its parts: one sort of the pairs as keys row * width + column counts them
    and leaves them in CSR order. scipy's (data, (row, column)) constructor and sum_duplicates sort
    them twice and convert types on the way: the transform took 32 µs per demo event that way, 25
    now, the same matrix. Keys are uint32 whenever they fit (batches of up to 4,096 texts at the
    shipped width): half the bytes to sort."""
    key_type: type[np.unsignedinteger[Any]] = np.uint32 if n_rows * width <= 2**32 and width < 2**32 else np.uint64
    keys: np.ndarray = rows.astype(key_type)
    np.multiply(keys, key_type(width), out=keys)
    np.add(keys, columns, out=keys, casting="unsafe")  # columns < width: no wrap
    keys.sort()
    first = np.empty(len(keys) + 1, dtype=bool)
    first[0] = first[-1] = True
    np.not_equal(keys[1:], keys[:-1], out=first[1:-1])
    bounds = np.flatnonzero(first)  # where each distinct key starts, and the end
    unique = keys[bounds[:-1]]
    # Arrays here hold ~1,000 entries per event: each pass over them counts, so every result is
    # written once in the type it is used in.
    key_rows = np.empty(len(unique), dtype=np.intp)
    key_columns = np.empty(len(unique), dtype=np.int32 if width <= 2**31 else np.int64)
    if width & (width - 1) == 0:
        np.right_shift(unique, key_type(width.bit_length() - 1), out=key_rows, casting="unsafe")
        np.bitwise_and(unique, key_type(width - 1), out=key_columns, casting="unsafe")
    else:
        np.floor_divide(unique, key_type(width), out=key_rows, casting="unsafe")
        np.remainder(unique, key_type(width), out=key_columns, casting="unsafe")
    # Most counts are 1 and few pass 30: log1p by table lookup, the same float32 values.
    counts = np.diff(bounds)
    data = np.log1p(np.arange(int(counts.max(initial=0)) + 1, dtype=np.float32))[counts]
    norms = np.sqrt(np.bincount(key_rows, weights=np.square(data, dtype=np.float64), minlength=n_rows))
    norms[norms == 0] = 1.0
    data /= norms.astype(np.float32)[key_rows]
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(key_rows, minlength=n_rows), out=indptr[1:])
    return sparse.csr_matrix((data, key_columns, indptr), shape=(n_rows, width))


@dataclass
class HashedTextModel:
    """Weights over HashedFeatures plus Platt scaling; `meta` holds the model card's facts."""

    features: HashedFeatures
    weights: np.ndarray  # (features.width,) float32
    bias: float
    platt: tuple[float, float] = (1.0, 0.0)
    meta: dict[str, Any] = field(default_factory=dict)

    def margins(self, texts: Sequence[str]) -> np.ndarray:
        """The uncalibrated linear score w . x + b of each text."""
        if not texts:
            return np.zeros(0)
        return np.asarray(self.features.transform(texts) @ self.weights, dtype=np.float64) + self.bias

    def calibrate(self, margins: np.ndarray) -> np.ndarray:
        a, c = self.platt
        return sigmoid(a * margins + c)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        return self.calibrate(self.margins(texts))

    def to_bytes(self) -> bytes:
        header = {"features": self.features.config(), "bias": self.bias, "platt": list(self.platt), "meta": self.meta}
        return pack(self.weights.astype(np.float16), header)

    @classmethod
    def from_bytes(cls, data: bytes, origin: str = "model") -> HashedTextModel:
        try:
            weights, header = unpack(data)
            weights = weights.astype(np.float32)
            features = HashedFeatures.from_config(header["features"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            msg = f"{origin} is not a llmwatch hashed-n-gram model: {exc}"
            raise DetectorLoadError(msg) from exc
        if weights.shape != (features.width,):
            msg = f"{origin}: {weights.shape[0]} weights for {features.width} features"
            raise DetectorLoadError(msg)
        return cls(features, weights, float(header["bias"]), tuple(header["platt"]), header.get("meta", {}))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(self.to_bytes())
        partial.replace(path)

    @classmethod
    def load(cls, path: Path) -> HashedTextModel:
        if not path.is_file():
            msg = f"no model file at {path}"
            raise DetectorLoadError(msg)
        return cls.from_bytes(path.read_bytes(), str(path))
