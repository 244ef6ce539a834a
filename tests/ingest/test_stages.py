"""The stage clock behind the pipeline budget: CPU is the thread's own, waiting is wall time only,
and the number of stage names is bounded (a client names the table it inserts into)."""

from __future__ import annotations

import gc
import threading
import time

from llmwatch.core.processes import tune_garbage_collector
from llmwatch.core.stages import GARBAGE_COLLECTION, MAX_STAGES, StageClock, clock_garbage_collection


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


def test_garbage_collection_passes_are_timed_until_stopped() -> None:
    clock = StageClock()
    stop = clock_garbage_collection(clock)
    try:
        gc.collect()
        gc.collect(0)
    finally:
        stop()
    cpu, wall, calls = clock.totals()
    assert calls[GARBAGE_COLLECTION] >= 2  # and any pass an allocation started meanwhile
    assert 0 <= cpu[GARBAGE_COLLECTION] <= wall[GARBAGE_COLLECTION] + 0.01
    gc.collect()
    assert clock.totals()[2] == calls


def test_a_tuned_collector_leaves_the_start_up_heap_alone() -> None:
    # What the worker does once its models are loaded: later passes walk only what is new, and
    # the youngest generation waits for more allocations.
    models = [[i] for i in range(1000)]
    threshold = gc.get_threshold()
    try:
        assert tune_garbage_collector() >= len(models)
        walked = {id(o) for o in gc.get_objects()}  # every generation the collector walks
        assert not any(id(model) in walked for model in models)
        assert id(models) not in walked
        assert gc.get_threshold()[0] > threshold[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
    assert id(models) in {id(o) for o in gc.get_objects()}


def test_a_collection_inside_the_clock_does_not_deadlock() -> None:
    # A collection runs on whichever thread allocates, including one inside the clock's lock
    # (totals() copies three dicts): its timing must not wait for that lock.
    clock = StageClock()
    stop = clock_garbage_collection(clock)
    threshold = gc.get_threshold()
    done = threading.Event()

    def busy_clock() -> None:
        for _ in range(200):
            clock.totals()
            clock.add("work", 0.0, 0.0)
        done.set()

    gc.set_threshold(1)  # every allocation of a container collects
    try:
        threading.Thread(target=busy_clock, daemon=True).start()
        finished = done.wait(10)
    finally:
        gc.set_threshold(*threshold)
        stop()
    assert finished, "the clock deadlocked on a collection inside its lock"
    assert clock.totals()[2][GARBAGE_COLLECTION] > 0
