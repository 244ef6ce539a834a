"""Splitting a sequence into runs bounded by size: batches by bytes, insert bodies by bytes, a
batch into the chunks the scoring process takes while the rest is parsed."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

__all__ = ["chunked", "split_by_size"]

T = TypeVar("T")


def split_by_size(items: Sequence[T], size: Callable[[T], int], limit: int) -> Iterator[list[T]]:
    """Consecutive runs of `items`, in order, each of total `size` at most `limit`; an item bigger
    than `limit` makes a run of its own. Nothing is dropped.

    >>> list(split_by_size([3, 3, 5, 1, 9, 2], lambda n: n, 6))
    [[3, 3], [5, 1], [9], [2]]
    >>> list(split_by_size([], len, 6))
    []
    """
    run: list[T] = []
    total = 0
    for item in items:
        n = size(item)
        if run and total + n > limit:
            yield run
            run, total = [], 0
        run.append(item)
        total += n
    if run:
        yield run


def chunked(items: Sequence[T], n: int) -> Iterator[Sequence[T]]:
    """Consecutive runs of `items` of `n` each (the last may be shorter); n < 1 counts as 1.

    >>> [list(c) for c in chunked("abcde", 2)]
    [['a', 'b'], ['c', 'd'], ['e']]
    """
    n = max(n, 1)
    for start in range(0, len(items), n):
        yield items[start : start + n]
