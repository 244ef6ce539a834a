"""Detector names mapped to lazy import strings (as faust's FactoryMapping does): only the
detectors a process asks for are imported, so `llmwatch alerts` never imports torch."""

from __future__ import annotations

import importlib
from typing import Any

from llmwatch.core.errors import ConfigError, DetectorLoadError
from llmwatch.detectors.base import Detector

__all__ = ["DETECTORS", "available", "load", "load_all"]

DETECTORS: dict[str, str] = {
    "toxicity": "llmwatch.detectors.toxicity:load",
    "grounding": "llmwatch.detectors.grounding:load",
    "injection": "llmwatch.detectors.injection:load",
    "embedding": "llmwatch.detectors.embedding:load",
    "anomaly": "llmwatch.detectors.anomaly:load",
}


def available() -> list[str]:
    return sorted(DETECTORS)


def load(name: str, settings: Any) -> Detector:
    """Import and build the detector called `name`."""
    try:
        target = DETECTORS[name]
    except KeyError:
        msg = f"unknown detector {name!r}; available: {', '.join(available())}"
        raise ConfigError(msg) from None
    module_name, _, factory = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        msg = f"detector {name!r} needs a package that is not installed: {exc}"
        raise DetectorLoadError(msg) from exc
    return getattr(module, factory)(settings)


def load_all(names: list[str], settings: Any) -> list[Detector]:
    return [load(name, settings) for name in names]
