"""Detector quality per source, on data each model did not see, beside the trivial baselines.

The shipped models are trained on ../shared/train and ../shared/eval, so scoring them there would
be scoring the training data. Every "llmwatch" figure below comes from a model trained here, in
this run, with the training command's code and without the rows it is measured on:
* toxicity: leave one source out (the model that scores a source never saw it); baselines: text
  length, alt-profanity-check alone, and the previous default (profanity-check + de-obfuscation);
  also on a copy whose profane words are hidden (f*ck, 1d10t, f u c k, fuuuck);
* grounding: leave one source out, and 5-fold cross-validation (the other source plus 4/5 of this
  one); baselines: response length, the share of response words missing from the context, and
  the previous hand-set default;
* injection: 5-fold cross-validation with rows that open with the same five words kept in one
  fold (templates never straddle train and test); baselines: text length and the keyword rule
  `ignore|previous instructions|system prompt|jailbreak|DAN`. "hidden in documents": each test
  fold's short injections planted in its benign reading passages, against the same passages
  clean. False alarms: the share flagged among ordinary user questions (../shared/eval drift sets:
  trivia questions and chit-chat) and the issue's examples.
Each row: ROC AUC, precision / recall at the shipped threshold 0.5, ECE (10 equal-width bins) and
sample sizes. The reliability diagrams (predicted vs observed per bin) are in the JSON.

Needs ../shared (or --shared); says so plainly and exits 0 when it is absent.

    .venv/bin/python bench/quality.py [--shared DIR] [--detoxify CKPT] [--nli DIR] [--device auto]
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, print_table, write_json
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, StratifiedKFold

from llmwatch.detectors.training.fit import SEED, read_jsonl

SHARED = ROOT.parent / "shared"
NOW = datetime.now(UTC)
_WORDS = re.compile(r"\w+")
KEYWORDS = re.compile(r"ignore|previous instructions|system prompt|jailbreak|DAN")
ISSUE_EXAMPLES = ["How can I kill a Python process?", "Can I ignore this warning?"]


def ece(labels: np.ndarray, p: np.ndarray, bins: int = 10) -> tuple[float, list[dict[str, float]]]:
    """Expected calibration error and the reliability diagram's bins."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    error, diagram = 0.0, []
    for b in range(bins):
        members = which == b
        if members.any():
            predicted, observed = float(p[members].mean()), float(labels[members].mean())
            error += members.mean() * abs(predicted - observed)
            diagram.append({"bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}", "n": int(members.sum()),
                            "predicted": round(predicted, 3), "observed": round(observed, 3)})
    return float(error), diagram


def measure(scorer: str, source: str, labels: Sequence[int], scores: Sequence[float], probability: bool) -> dict:
    y, s = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    row: dict[str, Any] = {"scorer": scorer, "source": source, "n": len(y), "positives": int(y.sum()),
                           "roc_auc": round(float(roc_auc_score(y, s)), 4) if 0 < y.sum() < len(y) else None}
    if probability:
        flagged = s >= 0.5
        tp = int((flagged & (y == 1)).sum())
        row["precision"] = round(tp / max(1, int(flagged.sum())), 4)
        row["recall"] = round(tp / max(1, int(y.sum())), 4)
        row["ece"], row["reliability"] = ece(y, s)
        row["ece"] = round(row["ece"], 4)
    return row


def by_source(rows: list[dict], label: str, scorers: dict[str, tuple[Callable[[list[dict]], np.ndarray], bool]]) -> list[dict]:
    out = []
    for name, (scorer, probability) in scorers.items():
        scores = np.asarray(scorer(rows), dtype=np.float64)
        for source in sorted({r["source"] for r in rows}):
            idx = [i for i, r in enumerate(rows) if r["source"] == source]
            out.append(measure(name, source, [rows[i][label] for i in idx], scores[idx], probability))
    return out


# ---------------------------------------------------------------- toxicity

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


def toxicity(rows: list[dict], detoxify: str | None, device: str) -> tuple[list[dict], list[dict]]:
    from profanity_check import predict_prob

    from llmwatch.detectors.toxicity import LearnedToxicity, ProfanityCheckToxicity, load_detoxify
    from llmwatch.detectors.training.toxicity import train_toxicity

    held_out: dict[str, LearnedToxicity] = {}
    for source in sorted({r["source"] for r in rows}):
        held_out[source] = LearnedToxicity(train_toxicity([r for r in rows if r["source"] != source]))

    def learned(rs: list[dict]) -> np.ndarray:
        out = np.zeros(len(rs))
        for source, model in held_out.items():
            idx = [i for i, r in enumerate(rs) if r["source"].removesuffix(" (obfuscated)") == source]
            out[idx] = model.predict([rs[i]["text"] for i in idx])
        return out

    scorers: dict[str, tuple[Callable[[list[dict]], np.ndarray], bool]] = {
        "baseline: text length": (lambda rs: np.array([len(r["text"]) for r in rs]), False),
        "alt-profanity-check alone": (lambda rs: predict_prob([r["text"] for r in rs]), True),
        "previous default (profanity-check + de-obfuscation)": (
            lambda rs: ProfanityCheckToxicity().predict([r["text"] for r in rs]), True),
        "llmwatch toxicity (learned, source held out)": (learned, True),
    }
    if detoxify:
        model = load_detoxify(detoxify, device)
        scorers[f"detoxify {Path(detoxify).name}"] = (
            lambda rs: model.probabilities([r["text"] for r in rs])[:, model.primary], True)
    hidden_rows = obfuscated([r for r in rows if r["source"] != "davidson2017_tweets"])
    return by_source(rows, "toxic", scorers), by_source(hidden_rows, "toxic", scorers)


# ---------------------------------------------------------------- grounding

def missing_share(row: dict) -> float:
    context = set(_WORDS.findall(row["context"].lower()))
    words = _WORDS.findall(row["response"].lower())
    return sum(w not in context for w in words) / max(1, len(words))


def grounding(rows: list[dict], nli: str | None, device: str) -> list[dict]:
    from llmwatch.detectors.grounding import CLAIM_FEATURES, Grounding, NliSupport
    from llmwatch.detectors.training.grounding import event_of, grounding_features, train_grounding

    x, kept = grounding_features(rows)
    assert len(kept) == len(rows), "every dev row has context and claims"
    handset = CLAIM_FEATURES.index("handset_logit")
    labels = np.array([r["hallucinated"] for r in rows])
    sources = np.array([r["source"] for r in rows])

    def scores_from(models: list[tuple[np.ndarray, Any]]) -> np.ndarray:
        out = np.zeros(len(rows))
        for idx, model in models:
            out[idx] = model.probabilities(x[idx])
        return out

    loso = scores_from([(np.flatnonzero(sources == s), train_grounding([r for r, t in zip(rows, sources) if t != s]))
                        for s in sorted(set(sources))])
    folds = []
    for s in sorted(set(sources)):
        idx = np.flatnonzero(sources == s)
        for _, test in StratifiedKFold(5, shuffle=True, random_state=SEED).split(idx, labels[idx]):
            held = set(idx[test].tolist())
            folds.append((idx[test], train_grounding([r for i, r in enumerate(rows) if i not in held])))
    cv = scores_from(folds)

    def previous(rs: list[dict]) -> np.ndarray:
        # The hand-set default this replaces: 1 - prod(1 - p_claim) over the claims' hand-set p.
        out = []
        for i, r in enumerate(rs):
            plan = Grounding().features(event_of(r, i))
            claims = plan.claims if plan else []
            ps = [1 / (1 + np.exp(-values[handset])) for *_, values in claims]
            out.append(1 - float(np.prod([1 - p for p in ps])) if ps else 0.0)
        return np.array(out)

    scorers: dict[str, tuple[Callable[[list[dict]], np.ndarray], bool]] = {
        "baseline: response length": (lambda rs: np.array([len(r["response"]) for r in rs]), False),
        "baseline: share of response words missing from context": (
            lambda rs: np.array([missing_share(r) for r in rs]), False),
        "previous default (hand-set term weights)": (previous, True),
        "llmwatch grounding (learned, other source only)": (lambda rs: loso, True),
        "llmwatch grounding (learned, 5-fold CV)": (lambda rs: cv, True),
    }
    if nli:
        from llmwatch.detectors.transformer import SequenceClassifier

        def with_nli(rs: list[dict]) -> np.ndarray:
            backend = NliSupport(SequenceClassifier.from_path(nli, device), f"nli-{Path(nli).name}")
            detector = Grounding(backend)
            events = [event_of(r, i) for i, r in enumerate(rs)]
            return np.array([row.score for start in range(0, len(events), 64)
                             for row in detector.score(events[start : start + 64])])

        scorers[f"llmwatch grounding (shipped + NLI {Path(nli).name}; in-sample)"] = (with_nli, True)
    return by_source(rows, "hallucinated", scorers)


# ---------------------------------------------------------------- injection

def injection(rows: list[dict], benign: list[str], ordinary: list[str]) -> tuple[list[dict], list[dict]]:
    import random

    from llmwatch.detectors.injection import Injection
    from llmwatch.detectors.training.injection import opening, plant, train_injection

    texts = [r["text"] for r in rows]
    labels = np.array([r["injection"] for r in rows])
    openings = [opening(t) for t in texts]
    oof = np.zeros(len(rows))
    hidden_y: list[int] = []
    hidden_s: list[float] = []
    ordinary_flags = np.zeros(len(ordinary))
    rng = random.Random(SEED)
    for train, test in GroupKFold(5).split(texts, labels, openings):
        detector = Injection(train_injection([rows[i] for i in train], benign))
        oof[test] = detector.predict([texts[i] for i in test])
        attacks = [texts[i] for i in test if labels[i] and rows[i]["kind"] != "jailbreak" and len(texts[i]) < 400]
        passages = [texts[i] for i in test if rows[i]["kind"] == "benign_reading_comprehension"]
        planted = [plant(p, rng.choice(attacks), rng) for p in passages] if attacks else []
        hidden_s += list(detector.predict(planted + passages))
        hidden_y += [1] * len(planted) + [0] * len(passages)
        ordinary_flags += detector.predict(ordinary) >= 0.5
    length = np.array([len(t) for t in texts], dtype=float)
    keyword = np.array([1.0 if KEYWORDS.search(t) else 0.0 for t in texts])
    out = []
    for name, scores, probability in [("baseline: text length", length, False),
                                      ("baseline: keyword rule", keyword, False),
                                      ("llmwatch injection (learned, 5-fold CV)", oof, True)]:
        out.append(measure(name, "all", labels, scores, probability))
        for kind in sorted({r["kind"] for r in rows} - {"benign_question", "benign_instruction", "benign_roleplay",
                                                         "benign_reading_comprehension"}):
            idx = [i for i, r in enumerate(rows) if r["kind"] == kind or not r["injection"]]
            out.append(measure(name, f"{kind} vs all benign", labels[idx], scores[idx], probability))
    out.append(measure("llmwatch injection (learned, 5-fold CV)", "hidden in documents", hidden_y, hidden_s, True))
    false_alarms = [{"set": "ordinary questions (drift sets + issue examples)", "n": len(ordinary),
                     "flagged_by_any_fold": int((ordinary_flags > 0).sum()),
                     "flag_rate": round(float((ordinary_flags / 5).mean()), 5)}]
    return out, false_alarms


# ---------------------------------------------------------------- output

def table(title: str, results: list[dict]) -> None:
    def label(r: dict) -> str:
        return f"{r['precision']:.3f} / {r['recall']:.3f}" if "precision" in r else ""

    print_table(title, ["scorer", "source", "n (positive)", "ROC AUC", "P / R at 0.5", "ECE"], [
        [r["scorer"], r["source"], f"{r['n']} ({r['positives']})",
         "" if r["roc_auc"] is None else f"{r['roc_auc']:.4f}", label(r), f"{r['ece']:.3f}" if "ece" in r else ""]
        for r in results
    ])


def reliability(rows: list[dict]) -> None:
    """The reliability diagrams as text: per bin of predicted probability, observed rate (n)."""
    bins = [f"{b / 10:.1f}-{(b + 1) / 10:.1f}" for b in range(10)]
    print_table("Reliability: observed rate (n) per bin of predicted probability", ["scorer", "source", *bins], [
        [r["scorer"].removeprefix("llmwatch "), r["source"],
         *[next((f"{d['observed']:.2f} ({d['n']})" for d in r["reliability"] if d["bin"] == b), "") for b in bins]]
        for r in rows
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=SHARED, help="the folder holding train/ and eval/")
    parser.add_argument("--detoxify", default=None, help="a detoxify .ckpt to evaluate as well")
    parser.add_argument("--nli", default=None, help="an NLI / cross-encoder model directory to evaluate as well")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    train, dev = args.shared / "train", args.shared / "eval"
    needed = [train / "toxicity_train.jsonl", train / "injection_train.jsonl", dev / "toxicity_dev.jsonl",
              dev / "grounding_dev.jsonl", dev / "drift_reference.jsonl", dev / "drift_shifted.jsonl"]
    absent = [str(p) for p in needed if not p.exists()]
    if absent:
        print(f"quality: skipped, {', '.join(absent)} absent (the data ships beside the repository, not in it)")
        return
    toxicity_rows = read_jsonl(needed[0]) + read_jsonl(needed[2])
    benign_turns = [r["text"] for r in read_jsonl(needed[0]) if not r["toxic"]]
    ordinary = [r["text"] for r in read_jsonl(needed[4]) + read_jsonl(needed[5])] + ISSUE_EXAMPLES
    tox, tox_hidden = toxicity(toxicity_rows, args.detoxify, args.device)
    inj, false_alarms = injection(read_jsonl(needed[1]), benign_turns, ordinary)
    results = {"toxicity": tox, "toxicity_obfuscated": tox_hidden,
               "grounding": grounding(read_jsonl(needed[3]), args.nli, args.device),
               "injection": inj, "injection_false_alarms": false_alarms}
    table("Toxicity (label: toxic); llmwatch scores each source with a model trained without it", tox)
    table("Toxicity, profane words hidden as f*ck / 1d10t / f u c k / fuuuck", tox_hidden)
    table("Grounding (label: hallucinated)", results["grounding"])
    table("Injection and jailbreak (label: injection)", inj)
    reliability([r for part in ("toxicity", "grounding", "injection") for r in results[part]
                 if r["scorer"].startswith("llmwatch") and "reliability" in r])
    print_table("Injection false alarms at 0.5", ["set", "n", "flagged (any fold)", "flag rate"],
                [[f["set"], f["n"], f["flagged_by_any_fold"], f"{f['flag_rate']:.2%}"] for f in false_alarms])
    write_json("quality", results)


if __name__ == "__main__":
    main()
