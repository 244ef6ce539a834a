"""Where a process's time goes: CPU and wall seconds per named stage, summed over its life.

Stages are timed per batch or per request, not per event (a `with` costs about a microsecond), on
the thread that does the work. CPU is that thread's own (time.thread_time), so a thread waiting for
the GIL or for another process is not charged CPU for it: a store call's wall time minus its CPU
time is the wait for the HTTP hop and the store. Workers report their totals with every heartbeat
(llmwatch.workers), the embedded store at `/llmwatch/stages`; bench/pipeline.py turns both into a
per-event budget.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["GARBAGE_COLLECTION", "MAX_STAGES", "StageClock", "clock_garbage_collection"]

GARBAGE_COLLECTION = "garbage collection"

MAX_STAGES = 256


class StageClock:
    """Seconds per stage; safe to use from several threads."""

    def __init__(self) -> None:
        self.cpu_s: dict[str, float] = {}
        self.wall_s: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        # Re-entrant: the garbage collector's timing (clock_garbage_collection) adds from inside
        # whatever allocation started a pass, which can be this clock's own, under this lock.
        self._lock = threading.RLock()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.add(stage, time.thread_time() - cpu, time.perf_counter() - wall)

    def add(self, stage: str, cpu_s: float, wall_s: float) -> None:
        with self._lock:
            if stage not in self.cpu_s and len(self.cpu_s) >= MAX_STAGES:
                stage = "other"  # names can come from clients (a table inserted into): bounded
            self.cpu_s[stage] = self.cpu_s.get(stage, 0.0) + cpu_s
            self.wall_s[stage] = self.wall_s.get(stage, 0.0) + wall_s
            self.calls[stage] = self.calls.get(stage, 0) + 1

    def merge(self, other: StageClock) -> None:
        """Add each stage of `other` as one call: a batch's stages timed in parts count once."""
        cpu_s, wall_s, _ = other.totals()
        for stage, seconds in cpu_s.items():
            self.add(stage, seconds, wall_s[stage])

    def totals(self) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
        """(CPU seconds, wall seconds, calls) per stage, copied."""
        with self._lock:
            return dict(self.cpu_s), dict(self.wall_s), dict(self.calls)


def clock_garbage_collection(clock: StageClock) -> Callable[[], None]:
    """Time the cyclic garbage collector's passes as the stage GARBAGE_COLLECTION. A pass runs on
    whichever thread allocated past the threshold, so its time is also inside that thread's stage:
    the budget shows this stage beside the others, not as a share of the sum. Returns a function
    that stops the timing."""
    started = [0.0, 0.0]  # passes never overlap: the collector runs under the GIL, start to stop

    def timed(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            started[:] = time.thread_time(), time.perf_counter()
        else:
            clock.add(GARBAGE_COLLECTION, time.thread_time() - started[0], time.perf_counter() - started[1])

    gc.callbacks.append(timed)
    return lambda: gc.callbacks.remove(timed)
