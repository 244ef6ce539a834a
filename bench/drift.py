"""Drift: quality on ../shared/eval and speed against Evidently, on this machine's device.

Quality (needs ../shared/eval; says so plainly when it is absent): over repeated trials, how often
a 20 % mix of drift_shifted into drift_reference is detected (goal: at p < 0.01, most of the
time) and how often same-distribution splits raise a false alarm (goal <= 5 %).
Speed: 10,000x384 vs 10,000x384 embeddings: our torch MMD and classifier tests against
Evidently's own embedding-drift methods on the same data (same verdict; goal >= 10x faster).
Embedding throughput at batch sizes 1, 32 and 256.

    .venv/bin/python bench/drift.py [--trials 20] [--device auto] [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import ROOT, print_table, write_json

from llmwatch.detectors.drift import classifier_test, mmd_test
from llmwatch.detectors.embedding import Encoder

EVAL = ROOT.parent / "shared" / "eval"


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def quality(encoder: Encoder, trials: int, device: str, eval_dir: Path) -> dict | None:
    ref_file, shifted_file = eval_dir / "drift_reference.jsonl", eval_dir / "drift_shifted.jsonl"
    if not ref_file.exists() or not shifted_file.exists():
        print(f"\nquality: skipped, {eval_dir} is absent (it ships beside the repository, not in it)")
        return None
    reference = encoder.encode([json.loads(line)["text"] for line in ref_file.open()])
    shifted = encoder.encode([json.loads(line)["text"] for line in shifted_file.open()])
    rng = np.random.default_rng(2026)
    outcome = {"mmd": {"detected": 0, "false_alarms": 0}, "classifier": {"detected": 0, "false_alarms": 0}}
    p_values = []
    for _ in range(trials):
        order = rng.permutation(len(reference))
        base, same = reference[order[:500]], reference[order[500:1000]]
        mixed = np.concatenate([reference[order[1000:1400]], shifted[rng.choice(len(shifted), 100, replace=False)]])
        drifted = mmd_test(reference=base, current=mixed, rng=rng, n_permutations=500, device=device)
        calm = mmd_test(reference=base, current=same, rng=rng, n_permutations=500, device=device)
        p_values.append(drifted.p_value)
        outcome["mmd"]["detected"] += bool(drifted.drift)
        outcome["mmd"]["false_alarms"] += bool(calm.drift)
        outcome["classifier"]["detected"] += bool(classifier_test(reference=base, current=mixed, rng=rng).drift)
        outcome["classifier"]["false_alarms"] += bool(classifier_test(reference=base, current=same, rng=rng).drift)
    rows = [
        [method, f"{o['detected']}/{trials}", f"{o['false_alarms']}/{trials}"] for method, o in outcome.items()
    ]
    print_table(
        f"Drift quality: 500 reference vs 500 current (20 % drift_shifted), {trials} trials",
        ["method (verdict rule)", "20 % mix detected", "false alarms, same distribution"],
        [[r[0] + (" (p < 0.01)" if r[0] == "mmd" else " (AUC > 0.55)"), r[1], r[2]] for r in rows],
    )
    return {"trials": trials, "outcome": outcome, "mmd_p_values_drifted": p_values}


def evidently_methods():
    try:
        from evidently.legacy.metrics.data_drift.embedding_drift_methods import mmd, model
    except ImportError:
        return None
    return {"evidently model (default)": model(), "evidently mmd": mmd()}


def speed(device: str) -> dict:
    import pandas as pd

    rng = np.random.default_rng(11)
    reference = unit(rng.normal(size=(10_000, 384)))
    current = unit(rng.normal(size=(10_000, 384)) + 0.02)
    results = []

    def timed(name: str, fn) -> None:
        started = time.perf_counter()
        verdict = fn()
        results.append({"method": name, "seconds": time.perf_counter() - started, "drift": bool(verdict)})

    timed("llmwatch mmd (2,000 per side, 500 permutations)", lambda: mmd_test(reference=reference, current=current, rng=np.random.default_rng(0), device=device).drift)
    if device.startswith("cuda"):
        timed("llmwatch mmd (all 10,000 per side, 500 permutations)", lambda: mmd_test(reference=reference, current=current, rng=np.random.default_rng(0), max_samples=10_000, device=device).drift)
    timed("llmwatch classifier (5,000 per side, 5-fold)", lambda: classifier_test(reference=reference, current=current, rng=np.random.default_rng(0)).drift)
    methods = evidently_methods()
    if methods is None:
        print("\nspeed: Evidently is not installed on this machine; its rows are left out")
    else:
        columns = [f"e{i}" for i in range(384)]
        ref_df, cur_df = pd.DataFrame(reference, columns=columns), pd.DataFrame(current, columns=columns)
        for name, method in methods.items():
            # Evidently writes a "target" column into the frames it is given: pass copies.
            timed(name, lambda m=method: m(cur_df.copy(), ref_df.copy())[1])
    fastest_ours = min(r["seconds"] for r in results if r["method"].startswith("llmwatch"))
    evidently_default = next((r["seconds"] for r in results if r["method"] == "evidently model (default)"), None)
    print_table(
        f"Drift speed: 10,000x384 vs 10,000x384 (shifted by 0.02 per dimension) on {device}",
        ["method", "seconds", "drift verdict"],
        [[r["method"], f"{r['seconds']:.2f}", r["drift"]] for r in results],
    )
    if evidently_default:
        print(f"  Evidently's default method takes {evidently_default / fastest_ours:.1f}x the time of our fastest test")
    return {"results": results, "evidently_default_over_ours": (evidently_default / fastest_ours) if evidently_default else None}


def throughput(encoder: Encoder) -> list[dict]:
    texts = [f"How do I reset my password for account number {i}? I tried twice already." for i in range(2048)]
    rows = []
    for batch in (1, 32, 256):
        encoder.batch_size = batch
        sample = texts[: 256 if batch == 1 else 2048]
        encoder.encode(sample[:64])  # warm-up
        started = time.perf_counter()
        encoder.encode(sample)
        rows.append({"batch_size": batch, "texts_per_s": len(sample) / (time.perf_counter() - started)})
    print_table(
        f"Embedding throughput ({encoder.model_path.name} on {encoder.device})",
        ["batch size", "texts/s"],
        [[r["batch_size"], f"{r['texts_per_s']:,.0f}"] for r in rows],
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model-dir", default=None, help="sentence-transformers directory (default: bundled MiniLM)")
    parser.add_argument("--eval-dir", type=Path, default=EVAL, help="folder with drift_reference.jsonl and drift_shifted.jsonl")
    args = parser.parse_args()
    encoder = Encoder.load(args.model_dir, device=args.device)
    device = encoder.device
    result = {"device": device, "throughput": throughput(encoder)}
    encoder.batch_size = 256
    result["quality"] = quality(encoder, args.trials, device, args.eval_dir)
    result["speed"] = speed(device)
    write_json(f"drift-{device.split(':')[0]}", result)


if __name__ == "__main__":
    main()
