"""A bounded, thread-safe map that forgets the least recently used entry first.

For results worth keeping that functools.lru_cache (one call per key) cannot hold: ones computed
a batch at a time (a RAG corpus's passages), or decided by a function with other arguments than
the key (the embedded store's guard verdicts).

Examples:
    >>> cache: Lru[str, int | None] = Lru(2)
    >>> cache.put("a", 1); cache.put("b", None); cache.get("a"); cache.put("c", 3)
    1
    >>> cache.get("b", "unknown"), cache.get("a"), cache.get("c")
    ('unknown', 1, 3)
    >>> cache.put("a", None); cache.get("a", "unknown") is None
    True

A batch at a time: the values of many keys, the unknown ones computed in one call.

    >>> lengths: Lru[str, int] = Lru(10)
    >>> lengths.remembered(["ab", "abc", "ab"], lambda texts: [len(t) for t in texts], keep=lambda t: len(t) < 3)
    {'ab': 2, 'abc': 3}
    >>> len(lengths)  # "abc" was computed but not kept
    1
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar, overload

__all__ = ["Lru"]

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")

_MISSING = object()


class Lru(Generic[K, V]):
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    @overload
    def get(self, key: K) -> V | None: ...

    @overload
    def get(self, key: K, default: D) -> V | D: ...

    def get(self, key: K, default: object = None) -> object:
        """The value kept for `key` (now the most recently used), or `default`."""
        with self._lock:
            value = self._entries.get(key, _MISSING)
            if value is _MISSING:
                return default
            self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def remembered(self, keys: Iterable[K], compute: Callable[[list[K]], Sequence[V]],
                   keep: Callable[[K], bool] = lambda _: True) -> dict[K, V]:
        """The value of each distinct key: the kept ones as kept, the others from one call of
        `compute` (a list of them, in order of first appearance), and kept where `keep` says."""
        found: dict[K, V] = {}
        unknown: dict[K, None] = {}
        for key in keys:
            if key not in found and key not in unknown:
                value = self.get(key, _MISSING)
                if value is _MISSING:
                    unknown[key] = None
                else:
                    found[key] = value  # type: ignore[assignment]  # not _MISSING: a V
        if unknown:
            for key, value in zip(unknown, compute(list(unknown)), strict=True):
                found[key] = value
                if keep(key):
                    self.put(key, value)
        return found

    def __len__(self) -> int:
        return len(self._entries)
