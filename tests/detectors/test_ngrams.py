"""Hashed n-gram columns and the features made of them, computed for a whole batch in numpy passes,
against the plain definition: every n-gram of every text, hashed and counted one at a time."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from llmwatch.detectors.hashed import HashedFeatures
from llmwatch.detectors.ngrams import ngram_columns

_MASK = 2**64 - 1
_BASE, _MIX, _SALT, _PAIR = 0x100000001B3, 0xFF51AFD7ED558CCD, 0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F


def _column(h: int, n: int, width: int) -> int:
    x = ((h ^ (n * _SALT & _MASK)) * _MIX) & _MASK
    return (x ^ (x >> 29)) % width


def _is_word(c: str) -> bool:
    return ord(c) < 0x10000 and (c.isalnum() or c == "_")


def _plain_columns(texts: list[str], words: tuple[int, int], chars: tuple[int, int], width: int) -> Counter:
    """(row, column) of each n-gram, one n-gram at a time, as the module's docstring defines them."""
    found: Counter = Counter()
    for row, text in enumerate(texts):
        padded = f" {text.replace(chr(0), ' ')} ".lower()
        for n in range(chars[0], chars[1] + 1):
            for i in range(len(padded) - n + 1):
                h = 0
                for c in padded[i : i + n]:
                    h = (h * _BASE + ord(c)) & _MASK
                found[row, width + _column(h, n, width)] += 1
        hashes, word = [], ""
        for c in padded + " ":
            if _is_word(c):
                word += c
                continue
            if word:
                hashes.append(sum(ord(w) * pow(_BASE, k, 2**64) for k, w in enumerate(word)) & _MASK)
            word = ""
        for n in range(words[0], words[1] + 1):
            for i in range(len(hashes) - n + 1):
                h = hashes[i]
                for nxt in hashes[i + 1 : i + n]:
                    h = (h * _PAIR + nxt) & _MASK
                found[row, _column(h, 100 + n, width)] += 1
    return found


_TEXT = st.text(alphabet=st.sampled_from(list("ab cD_\x00\x01éİß😀9.,!\n\t")), max_size=14)


@settings(max_examples=300, deadline=None)
@given(st.lists(_TEXT, max_size=5), st.sampled_from([((1, 2), (3, 5), 2**18), ((1, 1), (2, 2), 1000),
                                                      ((2, 3), (1, 4), 2**10)]))
def test_batch_columns_are_each_ngram_hashed_alone(texts: list[str], layout: tuple) -> None:
    words, chars, width = layout
    rows, columns = ngram_columns(texts, words, chars, width)
    assert rows.dtype == columns.dtype == np.int64
    assert Counter(zip(rows.tolist(), columns.tolist())) == _plain_columns(texts, words, chars, width)



def _plain_features(texts: list[str], features: HashedFeatures) -> dict[tuple[int, int], float]:
    """log(1 + count) of each n-gram of each text, each text's values scaled to length 1."""
    counts = _plain_columns(texts, features.word_ngrams, features.char_ngrams, features.n_features)
    damped = {key: math.log1p(count) for key, count in counts.items()}
    norms: dict[int, float] = {}
    for (row, _), value in damped.items():
        norms[row] = norms.get(row, 0.0) + value * value
    return {(row, column): value / math.sqrt(norms[row]) for (row, column), value in damped.items()}


@settings(max_examples=200, deadline=None)
@given(st.lists(_TEXT, max_size=5), st.sampled_from([HashedFeatures(2**10), HashedFeatures(1000, (1, 1), (2, 2)),
                                                      HashedFeatures(2**31, (1, 2), (3, 3))]))
def test_features_are_damped_counts_of_each_text_normalised(texts: list[str], features: HashedFeatures) -> None:
    # 2**31 columns of each kind: a batch's (row, column) keys pass 32 bits and take the 64-bit path.
    x = features.transform(texts)
    assert x.shape == (len(texts), features.width)
    assert x.has_canonical_format  # sorted, no duplicates: what the sparse products expect
    coo = x.tocoo()
    found = dict(zip(zip(coo.row.tolist(), coo.col.tolist()), coo.data.tolist()))
    expected = _plain_features(texts, features)
    assert found.keys() == expected.keys()
    assert all(math.isclose(found[key], value, rel_tol=1e-6) for key, value in expected.items())
