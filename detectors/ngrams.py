"""Hashed word and character n-gram counts of a batch of texts, in a few numpy passes.

scikit-learn's HashingVectorizer builds every n-gram as a Python string before hashing it: about
4 µs per text per analyzer for a chat message, most of a detector's time. Here the whole batch
is one array of code points; an n-gram's hash is a polynomial in its code points, computed for
every position at once (uint64 arithmetic wraps, which is the modulus), so the cost is a few
vector operations per n rather than Python work per n-gram.

* character n-grams: over each lower-cased text padded with one space at each end, never across
  two texts;
* words: runs of letters, digits and `_` (what `\\w+` matches in the Basic Multilingual Plane);
  a word's hash comes from prefix sums (the base is odd, so it has an inverse modulo 2^64), and
  word n-grams combine consecutive word hashes of the same text.
Hash collisions are what hashing always costs: 2^18 columns each for words and characters.

Examples:
    >>> rows, columns = ngram_columns(["ab", "b"], (1, 1), (2, 2), 2**20)
    >>> sorted(rows.tolist())  # text 0: the word "ab", " a", "ab", "b "; text 1: "b", " b", "b "
    [0, 0, 0, 0, 1, 1, 1]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["ngram_columns"]

_BASE = np.uint64(0x100000001B3)  # odd: invertible modulo 2^64
_BASE_INVERSE = np.uint64(pow(0x100000001B3, -1, 2**64))
_MIX = np.uint64(0xFF51AFD7ED558CCD)
_SALT = np.uint64(0x9E3779B97F4A7C15)
_PAIR = np.uint64(0xC2B2AE3D27D4EB4F)
_SEPARATOR = 0  # between texts in the joined batch

# Which BMP code points are word characters, as Python's \w sees them.
_WORD_CHAR = np.array([chr(c).isalnum() or chr(c) == "_" for c in range(0x10000)], dtype=bool)


def _columns(h: np.ndarray, n: int, width: int, offset: int) -> np.ndarray:
    """The columns of polynomial hashes: their bits spread (n tells n-gram lengths apart), then
    reduced to [offset, offset + width). In place on one copy; returns int64."""
    with np.errstate(over="ignore"):
        x = h ^ (np.uint64(n) * _SALT)
        x *= _MIX
        x ^= x >> np.uint64(29)
    if width & (width - 1) == 0:
        x &= np.uint64(width - 1)  # the same as % for a power of two, without a division
    else:
        x %= np.uint64(width)
    x += np.uint64(offset)
    return x.view(np.int64)  # < 2^63: the same numbers


def _powers(base: np.uint64, count: int) -> np.ndarray:
    powers = np.full(count, base, dtype=np.uint64)
    powers[0] = 1
    with np.errstate(over="ignore"):
        return np.cumprod(powers, dtype=np.uint64)


def ngram_columns(texts: Sequence[str], word_ngrams: tuple[int, int], char_ngrams: tuple[int, int],
                  n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of every n-gram occurrence: words in [0, n_features), characters in
    [n_features, 2 n_features). Count them with a sparse matrix."""
    if not texts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    codes = _code_points(texts)
    is_separator = codes == _SEPARATOR
    separators_before = np.concatenate([[0], np.cumsum(is_separator)])  # at each position, and at the end
    row_of = separators_before[1:]  # the text each position belongs to
    size = len(codes)
    rows, columns = [], []

    # Characters: h_n(i) = h_{n-1}(i) * B + c[i + n - 1], for every start i at once.
    h = np.zeros(size, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for n in range(1, char_ngrams[1] + 1):
            if n > size:
                break
            h = h[: size - n + 1] * _BASE + codes[n - 1 :]
            if n >= char_ngrams[0]:
                inside = separators_before[n:] == separators_before[: size - n + 1]  # no separator in [i, i + n)
                rows.append(row_of[: size - n + 1][inside])
                columns.append(_columns(h[inside], n, n_features, n_features))

    # Words: maximal runs of word characters.
    is_word = np.zeros(size, dtype=bool)
    bmp = codes < 0x10000
    is_word[bmp] = _WORD_CHAR[codes[bmp].astype(np.int64)]
    edges = np.diff(np.concatenate([[False], is_word, [False]]).astype(np.int8))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if len(starts):
        with np.errstate(over="ignore"):
            prefix = np.concatenate([np.zeros(1, dtype=np.uint64), np.cumsum(codes * _powers(_BASE, size),
                                                                              dtype=np.uint64)])
            words = (prefix[ends] - prefix[starts]) * _powers(_BASE_INVERSE, size)[starts]
            word_rows = row_of[starts]
            combined = words
            for n in range(1, word_ngrams[1] + 1):
                if n > 1:
                    combined = combined[:-1] * _PAIR + words[n - 1 :]
                    same_text = word_rows[n - 1 :] == word_rows[: len(word_rows) - n + 1]
                else:
                    same_text = np.ones(len(words), dtype=bool)
                if n >= word_ngrams[0] and len(combined):
                    rows.append(word_rows[: len(combined)][same_text])
                    columns.append(_columns(combined[same_text], 100 + n, n_features, 0))
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(rows), np.concatenate(columns)


def _code_points(texts: Sequence[str]) -> np.ndarray:
    """The batch's lower-cased code points as uint64: each text padded with a space at each end,
    a 0 between two texts (a 0 inside a text is read as a space)."""
    body = " \x00 ".join(texts)
    if body.count("\x00") != len(texts) - 1:  # some text holds a 0 of its own
        body = " \x00 ".join(text.replace("\x00", " ") for text in texts)
    joined = f" {body} ".lower()
    return np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
