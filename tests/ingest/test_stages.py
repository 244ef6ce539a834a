"""The stage clock behind the pipeline budget: CPU is the thread's own, waiting is wall time only,
and the number of stage names is bounded (a client names the table it inserts into)."""

from __future__ import annotations

import time

from llmwatch.core.stages import MAX_STAGES, StageClock


def test_waiting_costs_wall_time_and_no_cpu() -> None:
    clock = StageClock()
    with clock("wait"):
        time.sleep(0.2)
    with clock("work"):
        deadline = time.thread_time() + 0.1
        while time.thread_time() < deadline:
            pass
    cpu, wall, calls = clock.totals()
    assert cpu["wait"] < 0.05 <= 0.19 <= wall["wait"]
    assert cpu["work"] >= 0.1 and wall["work"] >= cpu["work"] - 0.01
    assert calls == {"wait": 1, "work": 1}


def test_stage_names_are_bounded() -> None:
    clock = StageClock()
    for i in range(MAX_STAGES + 50):
        clock.add(f"insert table_{i}", 0.001, 0.002)
    cpu, _, calls = clock.totals()
    assert len(cpu) == MAX_STAGES + 1 and calls["other"] == 50
