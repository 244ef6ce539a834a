"""Where a process's time goes: CPU and wall seconds per named stage, summed over its life.

Stages are timed per batch or per request, not per event (a `with` costs about a microsecond), on
the thread that does the work. CPU is that thread's own (time.thread_time), so a thread waiting for
the GIL or for another process is not charged CPU for it: a store call's wall time minus its CPU
time is the wait for the HTTP hop and the store. Workers report their totals with every heartbeat
(llmwatch.workers), the embedded store at `/llmwatch/stages`; bench/pipeline.py turns both into a
per-event budget.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["MAX_STAGES", "StageClock"]

MAX_STAGES = 256


class StageClock:
    """Seconds per stage; safe to use from several threads."""

    def __init__(self) -> None:
        self.cpu_s: dict[str, float] = {}
        self.wall_s: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

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

    def totals(self) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
        """(CPU seconds, wall seconds, calls) per stage, copied."""
        with self._lock:
            return dict(self.cpu_s), dict(self.wall_s), dict(self.calls)
