"""`llmwatch drift --reference a.jsonl --current b.jsonl`: embed both files' `text` rows and test
whether the current window drifted from the reference. Prints one JSON object."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from llmwatch.core.errors import ConfigError
from llmwatch.core.settings import Settings
from llmwatch.jsonl import read_rows

__all__ = ["read_texts", "run_drift"]


def read_texts(path: Path) -> list[str]:
    """The `text` field of every row; errors name the file and line."""
    texts = []
    for number, row in read_rows(path, ("text",)):
        if not isinstance(row["text"], str):
            raise ConfigError(f"{path}:{number}: `text` must be a string")
        texts.append(row["text"])
    return texts


def run_drift(settings: Settings, args: argparse.Namespace) -> int:
    from llmwatch.detectors.drift import classifier_test, mmd_test, moved_terms
    from llmwatch.detectors.embedding import Encoder

    reference, current = read_texts(args.reference), read_texts(args.current)
    encoder = Encoder.load(settings.embedding_model or None, device=settings.device)
    rng = np.random.default_rng(args.seed)
    ref_vectors, cur_vectors = encoder.encode(reference), encoder.encode(current)
    if args.method == "mmd":
        result = mmd_test(
            reference=ref_vectors,
            current=cur_vectors,
            rng=rng,
            n_permutations=args.permutations,
            alpha=args.alpha,
            min_samples=args.min_samples,
            device=settings.device,
        )
    else:
        result = classifier_test(reference=ref_vectors, current=cur_vectors, rng=rng, min_samples=args.min_samples)
    output = result.as_dict()
    output["moved_terms"] = moved_terms(reference=reference, current=current)
    output["embedding_model"] = encoder.model_path.name
    print(json.dumps(output))
    return 0
