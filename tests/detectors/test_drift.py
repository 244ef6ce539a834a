"""Drift tests: calibrated on same-distribution windows, sensitive to a shift, no verdict on too
little data, reproducible from a seed; and `llmwatch drift` end to end with the bundled model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from llmwatch.detectors.drift import classifier_test, mmd_test, moved_terms


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def windows() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    reference = unit(rng.normal(size=(400, 32)))
    same = unit(rng.normal(size=(400, 32)))
    direction = unit(rng.normal(size=(1, 32)))
    shifted = unit(rng.normal(size=(400, 32)) + 0.6 * direction)
    return reference, same, shifted


def test_mmd_detects_a_shift(windows) -> None:
    reference, _, shifted = windows
    result = mmd_test(reference=reference, current=shifted, rng=np.random.default_rng(0), n_permutations=200)
    assert result.drift is True and result.p_value < 0.01
    assert (result.n_reference, result.n_current) == (400, 400)


def test_mmd_false_alarm_rate_is_near_alpha() -> None:
    """Over repeated same-distribution splits, p < 0.05 happens about 5 % of the time."""
    rng = np.random.default_rng(7)
    alarms = 0
    for _ in range(40):
        a, b = unit(rng.normal(size=(120, 16))), unit(rng.normal(size=(120, 16)))
        alarms += mmd_test(reference=a, current=b, rng=rng, n_permutations=99, alpha=0.05).drift
    assert alarms <= 6  # 5 % of 40 is 2; 6 or more would happen by chance < 1 % of the time


def test_same_seed_same_p_value(windows) -> None:
    reference, same, _ = windows
    first = mmd_test(reference=reference, current=same, rng=np.random.default_rng(3), n_permutations=100)
    second = mmd_test(reference=reference, current=same, rng=np.random.default_rng(3), n_permutations=100)
    assert first == second


def test_no_verdict_on_too_little_data(windows) -> None:
    reference, _, shifted = windows
    for test in (mmd_test, classifier_test):
        result = test(reference=reference, current=shifted[:10], rng=np.random.default_rng(0))
        assert result.drift is None and result.statistic is None
        assert "at least" in result.details["reason"]


def test_too_little_data_imports_neither_torch_nor_scikit_learn() -> None:
    """The jobs process checks drift from its start, when a window mostly holds too little: it
    stays light then (importing torch and scikit-learn takes ~330 MB and seconds of CPU)."""
    code = ("import sys, numpy as np\n"
            "from llmwatch.detectors.drift import classifier_test, evidently_test, mmd_test\n"
            "for test in (mmd_test, classifier_test, evidently_test):\n"
            "    test(reference=np.zeros((3, 4)), current=np.zeros((900, 4)), rng=np.random.default_rng(0))\n"
            "print(sorted(m for m in ('torch', 'sklearn', 'pandas', 'evidently') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]"


def test_classifier_auc(windows) -> None:
    reference, same, shifted = windows
    assert classifier_test(reference=reference, current=shifted, rng=np.random.default_rng(0)).drift is True
    calm = classifier_test(reference=reference, current=same, rng=np.random.default_rng(0))
    assert calm.drift is False and 0.4 < calm.statistic < 0.6


def test_moved_terms_name_what_changed() -> None:
    moved = moved_terms(reference=["which river flows through paris"] * 20, current=["i loved that movie"] * 20, top=4)
    assert len(moved) == 4
    assert {m["term"] for m in moved} <= {"loved", "movie", "river", "flows", "paris"}  # stop words never
    assert all(abs(m["log_odds"]) > 1 for m in moved)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU to compare GPU and CPU results")
def test_gpu_matches_cpu(windows) -> None:
    reference, _, shifted = windows
    cpu = mmd_test(reference=reference, current=shifted, rng=np.random.default_rng(5), n_permutations=200, device="cpu")
    gpu = mmd_test(reference=reference, current=shifted, rng=np.random.default_rng(5), n_permutations=200, device="cuda")
    assert gpu.statistic == pytest.approx(cpu.statistic, rel=1e-3)
    assert gpu.drift == cpu.drift


QUESTIONS = [
    "Which river flows through the capital of France?",
    "Who wrote the novel that the 1962 film was based on?",
    "In what year was the university founded where she studied?",
    "Which mountain range lies on the border of these two countries?",
    "What is the population of the city where the band was formed?",
]
CHAT = ["I loved that movie, have you seen it?", "Any good sci-fi books you'd recommend?", "I listen to jazz all the time"]


def test_drift_command_end_to_end(tmp_path: Path) -> None:
    """`llmwatch drift` embeds with the bundled model and prints one JSON verdict."""
    rng = np.random.default_rng(0)
    reference = [f"{q} ({i})" for i in range(80) for q in [QUESTIONS[rng.integers(5)]]]
    current = [f"{c} ({i})" for i in range(80) for c in [CHAT[rng.integers(3)]]]
    (tmp_path / "ref.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in reference))
    (tmp_path / "cur.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in current))
    result = subprocess.run(
        [sys.executable, "-m", "llmwatch", "drift", "--reference", str(tmp_path / "ref.jsonl"), "--current", str(tmp_path / "cur.jsonl"),
         "--permutations", "200", "--device", "cpu", "--log-level", "WARNING"],
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["method"] == "mmd" and verdict["drift"] is True and verdict["p_value"] < 0.01
    assert (verdict["n_reference"], verdict["n_current"]) == (80, 80)
    assert verdict["moved_terms"]


def test_drift_command_names_a_bad_line(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"txt": "oops"}\n')
    result = subprocess.run(
        [sys.executable, "-m", "llmwatch", "drift", "--reference", str(tmp_path / "bad.jsonl"), "--current", str(tmp_path / "bad.jsonl")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert "bad.jsonl:2" in result.stderr
