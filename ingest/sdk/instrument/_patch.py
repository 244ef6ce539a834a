"""Replacing a method on a client class, and putting it back."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any


class Patches:
    """The methods instrument() replaced, so uninstrument() restores exactly those."""

    def __init__(self) -> None:
        self._originals: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: type, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        original = owner.__dict__.get(name)
        if original is None:  # an older client without this method: nothing to capture
            return
        wrapper = make(original)
        functools.update_wrapper(wrapper, original)
        wrapper.__llmwatch_original__ = original  # type: ignore[attr-defined]
        if inspect.iscoroutinefunction(original) and not inspect.iscoroutinefunction(wrapper):
            msg = f"{owner.__name__}.{name} is async; its wrapper must be too"
            raise TypeError(msg)
        setattr(owner, name, wrapper)
        self._originals.append((owner, name, original))

    def replace(self, owner: Any, name: str, value: Any) -> Any:
        """Set a module's or class's attribute; returns the original."""
        original = getattr(owner, name)
        value.__wrapped__ = original
        setattr(owner, name, value)
        self._originals.append((owner, name, original))
        return original

    def undo(self) -> None:
        while self._originals:
            owner, name, original = self._originals.pop()
            setattr(owner, name, original)

    def __len__(self) -> int:
        return len(self._originals)
