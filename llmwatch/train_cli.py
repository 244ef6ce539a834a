"""`llmwatch train`: fit the learned detectors.

    llmwatch train toxicity  --data toxicity_train.jsonl [more.jsonl ...] --output toxicity.npz
    llmwatch train injection --data injection_train.jsonl [--benign chat_turns.jsonl] --output injection.npz
    llmwatch train grounding --data grounding.jsonl --output grounding.json
    llmwatch train --from-reviews [--detector toxicity,grounding]

From files: rows as in ../shared/train and ../shared/eval (toxicity `text`, `toxic`; injection
`text`, `injection`; grounding `context`, `response`, `hallucinated`; `source` optional). Point the
`toxicity_model`, `injection_model` or `grounding_weights` setting at the output to use it.
From reviews: per-deployment models, promoted only when they beat the current one on held-back
labels (detectors/training/reviews.py); workers pick promoted ones up without a restart.
"""

from __future__ import annotations

import argparse
import getpass
import json
from pathlib import Path
from typing import Any

from llmwatch.core.errors import ConfigError
from llmwatch.core.settings import Settings

__all__ = ["REQUIRED", "run_train"]

REQUIRED = {"toxicity": ("text", "toxic"), "injection": ("text", "injection"),
            "grounding": ("context", "response", "hallucinated")}


def _rows(paths: list[Path], fields: tuple[str, ...]) -> list[dict[str, Any]]:
    from llmwatch.detectors.training.fit import read_jsonl

    rows: list[dict[str, Any]] = []
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"no training data at {path}: pass --data with the path to a JSONL file "
                              f"(the public sets are in ../shared/train and ../shared/eval of the llmwatch checkout)")
        try:
            found = read_jsonl(path)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not JSON Lines ({exc})") from exc
        for number, row in enumerate(found, 1):
            missing = [f for f in fields if f not in row]
            if missing:
                raise ConfigError(f"{path} line {number}: missing {', '.join(missing)}")
            label = fields[-1]
            if label in ("toxic", "injection", "hallucinated") and row[label] not in (0, 1):  # True/False count
                raise ConfigError(f"{path} line {number}: `{label}` must be 0 or 1, got {row[label]!r}")
        rows += found
    if not rows:
        raise ConfigError("the training data is empty")
    return rows


def _from_files(args: argparse.Namespace) -> int:
    target = args.target
    rows = _rows(args.data, REQUIRED[target])
    output: Path = args.output
    if target == "grounding":
        from llmwatch.detectors.training.grounding import train_grounding

        model = train_grounding(rows)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(model.to_json(), encoding="utf-8")
        facts = model.meta
    elif target == "injection":
        from llmwatch.detectors.training.injection import train_injection

        benign = [str(r["text"]) for r in _rows(args.benign, ("text",))
                  if not r.get("toxic") and not r.get("injection")] if args.benign else []
        trained = train_injection(rows, benign)
        trained.save(output)
        facts = trained.meta
    else:
        from llmwatch.detectors.training.toxicity import train_toxicity

        trained = train_toxicity(rows)
        trained.save(output)
        facts = trained.meta
    print(f"trained {target} on {facts['rows']} rows ({facts['positives']} positive); "
          f"out-of-fold ROC AUC {facts['oof_roc_auc']} -> {output}")
    return 0


def run_train(settings: Settings, args: argparse.Namespace) -> int:
    if not args.from_reviews:
        if not args.target or not args.data or not args.output:
            raise ConfigError("name what to train (toxicity, injection, grounding) with --data and --output, "
                              "or pass --from-reviews")
        return _from_files(args)
    from llmwatch.alerts.review_training import train_and_audit
    from llmwatch.storage.clickhouse import connect
    from llmwatch.storage.migrate import migrate

    detectors = [d.strip() for d in args.detector.split(",") if d.strip()]
    unknown = sorted(set(detectors) - {"toxicity", "grounding"})
    if unknown:
        raise ConfigError(f"only toxicity and grounding learn from reviews, not {', '.join(unknown)}")
    store = connect(settings)
    migrate(store, settings.retention_days)
    outcomes = train_and_audit(store, settings, detectors, args.actor or getpass.getuser())
    for outcome in outcomes:
        version = f" v{outcome.version}" if outcome.version else ""
        print(f"{outcome.detector}{version}: {outcome.status}: {outcome.reason}")
    return 0
