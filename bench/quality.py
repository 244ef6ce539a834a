"""Detector quality on ../shared/eval, per source, beside the trivial baselines.

For every detector and source: ROC AUC, F1 at the best threshold (chosen on the same data, so an
upper bound), and precision / recall / F1 of the label the detector ships (bad at score >= 0.5).
Baselines:
* toxicity: text length, and alt-profanity-check alone; also on a copy of the data whose profane
  words are hidden the way people hide them from filters (f*ck, 1d10t, f u c k, fuuuck);
* grounding: response length, and the share of response words missing from the context.
Drift quality (20 % mix detected at p < 0.01, false alarms) is in bench/drift.py.

Model-backed variants run when given local models: --detoxify CKPT, --nli DIR.
Needs ../shared/eval (or --eval-dir); says so plainly and exits 0 when it is absent.

    .venv/bin/python bench/quality.py [--detoxify CKPT] [--nli DIR] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import re
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, print_table, write_json
from sklearn.metrics import precision_recall_curve, roc_auc_score

from llmwatch.core.events import TraceEvent

EVAL = ROOT.parent / "shared" / "eval"
NOW = datetime.now(UTC)
_WORDS = re.compile(r"\w+")


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


def best_f1(labels: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(f1.max())


def evaluate(rows: list[dict[str, Any]], label: str, scorers: dict[str, Callable[[list[dict]], np.ndarray]]) -> list[dict]:
    results = []
    for name, scorer in scorers.items():
        scores = np.asarray(scorer(rows), dtype=np.float64)
        for source in sorted({r["source"] for r in rows}):
            idx = [i for i, r in enumerate(rows) if r["source"] == source]
            y = np.array([rows[i][label] for i in idx])
            s = scores[idx]
            row = {
                "scorer": name, "source": source, "n": len(idx), "positives": int(y.sum()),
                "roc_auc": round(float(roc_auc_score(y, s)), 4), "best_f1": round(best_f1(y, s), 4),
            }
            if name.startswith("llmwatch"):  # its label: bad at score >= 0.5
                flagged = s >= 0.5
                precision = float((flagged & (y == 1)).sum() / max(1, flagged.sum()))
                recall = float((flagged & (y == 1)).sum() / max(1, (y == 1).sum()))
                row["label"] = {"precision": round(precision, 4), "recall": round(recall, 4),
                                "f1": round(2 * precision * recall / max(1e-12, precision + recall), 4)}
            results.append(row)
    return results


def output_scores(detector: Any, events: Sequence[TraceEvent], batch: int = 256) -> np.ndarray:
    out = []
    for start in range(0, len(events), batch):
        rows = [r for r in detector.score(events[start : start + batch]) if r.target == "output"]
        out += [r.score for r in rows]
    return np.array(out, dtype=np.float64)


def toxicity(rows: list[dict], detoxify: str | None, device: str) -> list[dict]:
    from profanity_check import predict_prob

    from llmwatch.detectors.toxicity import ProfanityCheckToxicity, load_detoxify

    def as_events(rs: list[dict]) -> list[TraceEvent]:
        return [TraceEvent(uuid.UUID(int=i + 1), "", NOW, "eval", input="", output=r["text"]) for i, r in enumerate(rs)]

    scorers: dict[str, Callable[[list[dict]], np.ndarray]] = {
        "baseline: text length": lambda rs: np.array([len(r["text"]) for r in rs]),
        "alt-profanity-check alone": lambda rs: predict_prob([r["text"] for r in rs]),
        "llmwatch toxicity (default, offline)": lambda rs: output_scores(ProfanityCheckToxicity(), as_events(rs)),
    }
    if detoxify:
        scorers[f"llmwatch toxicity (detoxify {Path(detoxify).name})"] = lambda rs: output_scores(
            load_detoxify(detoxify, device), as_events(rs)
        )
    return evaluate(rows, "toxic", scorers)


_OBFUSCATIONS = [
    lambda w: w[0] + "*" + w[2:],  # f*ck
    lambda w: w.translate(str.maketrans("aeio", "4310")),  # 1d10t
    lambda w: " ".join(w),  # f u c k
    lambda w: w[:2] + w[1] * 4 + w[2:],  # fuuuuck
]


def obfuscated(rows: list[dict], seed: int = 7) -> list[dict]:
    """The same rows with the words that make alt-profanity-check fire hidden the way people
    hide them from filters (one of four ways, chosen per word)."""
    from profanity_check import predict_prob

    rng = np.random.default_rng(seed)
    out = []
    for row in rows:
        words = row["text"].split(" ")
        flagged = predict_prob(words) if words else []
        hidden = [
            _OBFUSCATIONS[rng.integers(len(_OBFUSCATIONS))](w) if p > 0.5 and len(w) >= 4 and w.isalpha() else w
            for w, p in zip(words, flagged)
        ]
        out.append({**row, "text": " ".join(hidden), "source": row["source"] + " (obfuscated)"})
    return out


def cascade(rows: list[dict], thresholds: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.3)) -> list[dict]:
    """What `--toxicity-cascade-below T` saves and what it can miss: the share of texts the cheap
    model keeps away from detoxify, and the share of labelled-toxic texts among them (the most the
    cascade can miss, whatever detoxify would have said)."""
    from llmwatch.detectors.toxicity import ProfanityCheckToxicity

    cheap = ProfanityCheckToxicity().predict([r["text"] for r in rows])
    toxic = np.array([r["toxic"] for r in rows]) == 1
    out = []
    for t in thresholds:
        skipped = cheap < t
        out.append({"below": t, "texts_skipped": round(float(skipped.mean()), 4),
                    "toxic_skipped": round(float((skipped & toxic).sum() / max(1, toxic.sum())), 4)})
    return out


def missing_share(row: dict) -> float:
    context = set(_WORDS.findall(row["context"].lower()))
    words = _WORDS.findall(row["response"].lower())
    return sum(w not in context for w in words) / max(1, len(words))


def grounding(rows: list[dict], nli: str | None, device: str) -> list[dict]:
    from llmwatch.detectors.grounding import Grounding, NliSupport

    def as_events(rs: list[dict]) -> list[TraceEvent]:
        return [
            TraceEvent(uuid.UUID(int=i + 1), "", NOW, "eval", input=r.get("question") or "", output=r["response"],
                       context=(r["context"],))
            for i, r in enumerate(rs)
        ]

    scorers: dict[str, Callable[[list[dict]], np.ndarray]] = {
        "baseline: response length": lambda rs: np.array([len(r["response"]) for r in rs]),
        "baseline: share of response words missing from context": lambda rs: np.array([missing_share(r) for r in rs]),
        "llmwatch grounding (default, offline)": lambda rs: output_scores(Grounding(), as_events(rs)),
    }
    if nli:
        from llmwatch.detectors.transformer import SequenceClassifier

        def with_nli(rs: list[dict]) -> np.ndarray:
            backend = NliSupport(SequenceClassifier.from_path(nli, device), f"nli-{Path(nli).name}")
            return output_scores(Grounding(backend), as_events(rs), batch=64)

        scorers[f"llmwatch grounding (NLI {Path(nli).name})"] = with_nli
    return evaluate(rows, "hallucinated", scorers)


def table(title: str, results: list[dict]) -> None:
    def label(r: dict) -> str:
        m = r.get("label")
        return f"{m['precision']:.3f} / {m['recall']:.3f} / {m['f1']:.3f}" if m else ""

    print_table(title, ["scorer", "source", "n (positive)", "ROC AUC", "best F1", "label P / R / F1"], [
        [r["scorer"], r["source"], f"{r['n']} ({r['positives']})", f"{r['roc_auc']:.4f}", f"{r['best_f1']:.4f}", label(r)]
        for r in results
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval-dir", type=Path, default=EVAL)
    parser.add_argument("--detoxify", default=None, help="a detoxify .ckpt to evaluate as well")
    parser.add_argument("--nli", default=None, help="an NLI / cross-encoder model directory to evaluate as well")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    toxicity_file, grounding_file = args.eval_dir / "toxicity_dev.jsonl", args.eval_dir / "grounding_dev.jsonl"
    if not toxicity_file.exists() or not grounding_file.exists():
        print(f"quality: skipped, {args.eval_dir} is absent (it ships beside the repository, not in it)")
        return
    results = {
        "toxicity": toxicity(read(toxicity_file), args.detoxify, args.device),
        "toxicity_obfuscated": toxicity(obfuscated(read(toxicity_file)), args.detoxify, args.device),
        "grounding": grounding(read(grounding_file), args.nli, args.device),
        "cascade": cascade(read(toxicity_file)),
    }
    table("Toxicity (label: toxic)", results["toxicity"])
    table("Toxicity, profane words hidden as f*ck / 1d10t / f u c k / fuuuck", results["toxicity_obfuscated"])
    table("Grounding (label: hallucinated)", results["grounding"])
    print_table("Toxicity cascade: texts the cheap model keeps from detoxify (all sources)",
                ["--toxicity-cascade-below", "texts never sent to detoxify", "toxic texts among them (max. missed)"],
                [[c["below"], f"{c['texts_skipped']:.1%}", f"{c['toxic_skipped']:.1%}"] for c in results["cascade"]])
    write_json("quality", results)


if __name__ == "__main__":
    main()
