"""Learning from reviewers: ROC AUC on a domain the shipped model never saw, after 0, 50, 200
and 1,000 reviewer labels (simulated from that domain's gold labels).

* toxicity: the model is trained without ConvAbuse (user turns to chatbots); ConvAbuse plays the
  deployment. Its rows are split once (fixed seed) into a pool reviewers label from and a test set.
* grounding: the model is trained on HaluEval QA only; HaluEval summarization plays the deployment.
For each label count, 5 draws of labels (seeds 0-4): the adapter `llmwatch train --from-reviews`
fits (detectors/training/reviews.py: fit on 3/4, promoted only if it beats the current model on the
held-back 1/4), scored on the test set. "promoted" is how many of the 5 draws the gate let through;
a draw that is not promoted keeps the shipped model's AUC, as a deployment would.

Needs ../shared (or --shared); says so plainly and exits 0 when it is absent.

    .venv/bin/python bench/learning.py [--shared DIR]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, print_table, write_json
from sklearn.metrics import roc_auc_score

from llmwatch.detectors.training.fit import SEED, read_jsonl
from llmwatch.detectors.training.reviews import fit_adapter, split_held_back

COUNTS = (0, 50, 200, 1000)
DRAWS = 5


def stratified(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    first, second = [], []
    for value in (0, 1):
        members = rng.permutation(np.flatnonzero(labels == value))
        cut = round(len(members) * share)
        first += members[:cut].tolist()
        second += members[cut:].tolist()
    return np.array(sorted(first)), np.array(sorted(second))


def curve(name: str, features: Any, logits: np.ndarray, labels: np.ndarray) -> list[dict]:
    pool, test = stratified(labels, 0.6, SEED)
    shipped = float(roc_auc_score(labels[test], logits[test]))
    out = [{"domain": name, "labels": 0, "auc_mean": round(shipped, 4), "auc_sd": 0.0, "promoted": "-",
            "pool": len(pool), "test": len(test)}]
    for n in COUNTS[1:]:
        aucs, promoted = [], 0
        for draw in range(DRAWS):
            rng = random.Random(draw)
            chosen = np.array(sorted(rng.sample(pool.tolist(), min(n, len(pool)))))
            y = labels[chosen]
            if min(y.sum(), len(y) - y.sum()) < 10:
                aucs.append(shipped)  # too few of one class: `train --from-reviews` skips
                continue
            fit, held = (np.array(part) for part in split_held_back(y))
            adapter = fit_adapter(name, 1, features[chosen[fit]], logits[chosen[fit]], y[fit])
            candidate = roc_auc_score(y[held], adapter.probabilities(features[chosen[held]], logits[chosen[held]]))
            if candidate > roc_auc_score(y[held], logits[chosen[held]]):
                promoted += 1
                aucs.append(float(roc_auc_score(labels[test], adapter.probabilities(features[test], logits[test]))))
            else:
                aucs.append(shipped)
        out.append({"domain": name, "labels": n, "auc_mean": round(float(np.mean(aucs)), 4),
                    "auc_sd": round(float(np.std(aucs)), 4), "promoted": f"{promoted}/{DRAWS}",
                    "pool": len(pool), "test": len(test)})
    return out


def toxicity(shared: Path) -> list[dict]:
    from llmwatch.detectors.toxicity import LearnedToxicity
    from llmwatch.detectors.training.toxicity import train_toxicity

    rows = read_jsonl(shared / "train" / "toxicity_train.jsonl") + read_jsonl(shared / "eval" / "toxicity_dev.jsonl")
    domain = "convabuse2021_chatbot_users"
    detector = LearnedToxicity(train_toxicity([r for r in rows if r["source"] != domain]))
    target = [r for r in rows if r["source"] == domain]
    features, logits = detector.features_and_logits([r["text"] for r in target])
    return curve(f"toxicity on {domain}", features, logits, np.array([r["toxic"] for r in target]))


def grounding(shared: Path) -> list[dict]:
    from llmwatch.detectors.training.grounding import grounding_features, train_grounding

    rows = read_jsonl(shared / "eval" / "grounding_dev.jsonl")
    domain = "halueval_summarization"
    model = train_grounding([r for r in rows if r["source"] != domain])
    target = [r for r in rows if r["source"] == domain]
    x, _ = grounding_features(target)
    standard, logits = model.adapter_inputs(x)
    return curve(f"grounding on {domain}", standard, logits, np.array([r["hallucinated"] for r in target]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="the folder holding train/ and eval/")
    args = parser.parse_args()
    needed = [args.shared / "train" / "toxicity_train.jsonl", args.shared / "eval" / "toxicity_dev.jsonl",
              args.shared / "eval" / "grounding_dev.jsonl"]
    absent = [str(p) for p in needed if not p.exists()]
    if absent:
        print(f"learning: skipped, {', '.join(absent)} absent (the data ships beside the repository, not in it)")
        return
    rows = toxicity(args.shared) + grounding(args.shared)
    print_table("ROC AUC on an unseen domain after N reviewer labels (mean ± sd of 5 draws; test set fixed)",
                ["domain", "labels", "ROC AUC", "promoted", "pool / test"],
                [[r["domain"], r["labels"], f"{r['auc_mean']:.4f} ± {r['auc_sd']:.4f}", r["promoted"],
                  f"{r['pool']} / {r['test']}"] for r in rows])
    write_json("learning", {"curve": rows})


if __name__ == "__main__":
    main()
