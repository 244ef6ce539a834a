"""One line to instrument an app's LLM clients and agent framework:

    import llmwatch
    emitter = llmwatch.Emitter("kafka:9092", app="support-bot")
    llmwatch.instrument(emitter)             # every supported library that is installed
    llmwatch.instrument(emitter, only=["openai"])

Every LLM call becomes a trace event (scored by the worker like any other); LangChain's chains,
tools, retrievers and agent steps become spans of the same trace. Nothing global is taken over:
no OpenTelemetry tracer provider is set or used, and the app's own keeps working untouched.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from llmwatch.ingest.sdk.instrument._patch import Patches
from llmwatch.ingest.sdk.instrument._recorder import Recorder

if TYPE_CHECKING:
    from llmwatch.ingest.sdk.emitter import Emitter
    from llmwatch.ingest.sdk.releases import ReleaseResolver

__all__ = ["LIBRARIES", "Instrumentation", "instrument"]

log = logging.getLogger("llmwatch.instrument")

# library -> the module whose presence means it is installed
LIBRARIES = {"openai": "openai", "anthropic": "anthropic", "langchain": "langchain_core", "litellm": "litellm"}


class Instrumentation:
    """What `instrument` did; `uninstrument()` puts every library back as it was."""

    def __init__(self, libraries: list[str], undo: list[Callable[[], None]]) -> None:
        self.libraries = libraries
        self._undo = undo

    def uninstrument(self) -> None:
        global _active
        while self._undo:
            self._undo.pop()()
        if _active is self:
            _active = None

    def __repr__(self) -> str:
        return f"Instrumentation({self.libraries})"


_active: Instrumentation | None = None


def instrument(emitter: Emitter, only: Iterable[str] | None = None, *, resolver: ReleaseResolver | None = None,
               route_model: bool = False, stream_usage: bool = True) -> Instrumentation:
    """Instrument the supported libraries that are installed (or those in `only`).

    resolver: label calls with the app's current release from a ReleaseResolver (rollbacks too).
    route_model: also send each call to the model that release names (a model rollback without
        a deploy). stream_usage: ask OpenAI (and LiteLLM) streams for their token usage, the extra
    chunk hidden from the app.
    Calling it again replaces the previous instrumentation."""
    global _active
    wanted = list(LIBRARIES) if only is None else list(only)
    unknown = [name for name in wanted if name not in LIBRARIES]
    if unknown:
        msg = f"cannot instrument {unknown}: supported are {sorted(LIBRARIES)}"
        raise ValueError(msg)
    installed = [name for name in wanted if importlib.util.find_spec(LIBRARIES[name]) is not None]
    if only is not None and len(installed) < len(wanted):
        msg = f"cannot instrument {[n for n in wanted if n not in installed]}: not installed"
        raise ValueError(msg)
    if _active is not None:
        _active.uninstrument()
    recorder = Recorder(emitter, resolver=resolver, route_model=route_model)
    done: list[str] = []
    undo: list[Callable[[], None]] = []
    for name in installed:
        patches = Patches()
        options = {"stream_usage": stream_usage} if name in ("openai", "litellm") else {}
        try:
            module = importlib.import_module(f"llmwatch.ingest.sdk.instrument.{name}")
            module.instrument(recorder, patches, **options)
        except Exception:  # a client version we do not know: the app runs uninstrumented for it
            patches.undo()
            log.exception("llmwatch could not instrument %s; its calls will not be recorded", name)
            continue
        undo.append(patches.undo)
        done.append(name)
    log.info("llmwatch instrumented %s", ", ".join(done) or "nothing (no supported library installed)")
    _active = Instrumentation(done, undo)
    return _active
