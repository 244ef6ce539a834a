"""The pure parts of evaluations: the rate limiter, the gate's comparison, the demo's file."""

from __future__ import annotations

from llmwatch.alerts.evaluations import Gate, load_evaluations, parse_evaluations
from llmwatch.alerts.experiments import RateLimiter, summarize
from llmwatch.alerts.gate import compare
from llmwatch.core.settings import Settings
from llmwatch.stack import demo_evaluations


def test_the_rate_limiter_spaces_starts_across_threads() -> None:
    now = [100.0]
    slept: list[float] = []
    limiter = RateLimiter(4.0, clock=lambda: now[0], sleep=slept.append)
    for _ in range(5):
        limiter.wait()
    # Five starts at 4/s from one instant: the 2nd waits 0.25 s, the 5th 1 s.
    assert slept == [0.25, 0.5, 0.75, 1.0]
    unlimited = RateLimiter(0.0, clock=lambda: 0.0, sleep=slept.append)
    unlimited.wait()
    assert len(slept) == 4


def test_the_gate_refuses_clearly_worse_or_too_big_a_rise_and_nothing_else() -> None:
    gate = Gate("docs-rag", "gate", ("grounding", "error", "judge:faithful"), tolerance=0.0, max_increase=0.1)
    current = {"grounding": [2, 100], "error": [0, 100], "judge:faithful": [5, 100]}
    same = {"grounding": [3, 100], "error": [1, 100], "judge:faithful": [6, 100]}
    assert compare(gate, same, current) == []
    worse = {"grounding": [20, 100], "error": [0, 100], "judge:faithful": [5, 100]}
    (problem,) = compare(gate, worse, current)
    assert problem.startswith("grounding: 20/100 (20.0%) against 2/100 (2.0%)")
    # On a small dataset the interval is wide: a 20-point rise is refused by max_increase alone.
    small = compare(gate, {"grounding": [1, 5], "error": [0, 5], "judge:faithful": [0, 5]},
                    {"grounding": [0, 5], "error": [0, 5], "judge:faithful": [0, 5]})
    assert len(small) == 1 and small[0].startswith("grounding: 1/5")
    missing = compare(gate, {"grounding": [0, 5], "error": [0, 5]}, current)
    assert missing == ["judge:faithful: the candidate's experiment has no judge:faithful results"]


def test_summaries_say_worse_only_when_the_interval_says_so() -> None:
    signals = summarize({"grounding": (10, 20), "error": (1, 20)}, {"grounding": (1, 20), "error": (0, 20)})
    assert signals["grounding"]["difference"]["verdict"] == "worse"
    assert signals["error"]["difference"]["verdict"] == "no clear difference"
    assert "difference" not in summarize({"grounding": (1, 5)})["grounding"]


def test_the_demo_and_the_bundled_files_parse_cleanly() -> None:
    evaluations, errors = parse_evaluations(demo_evaluations("http://127.0.0.1:8700/v1"))
    assert errors == [] and {j.name for j in evaluations.judges} == {"polite", "faithful"}
    assert evaluations.gate("docs-rag") is not None
    bundled, errors = load_evaluations(Settings().evaluations_path)
    assert errors == [] and bundled.judges == () and bundled.routing.daily_budget > 0
