"""Training the learned toxicity model (`llmwatch train toxicity --data FILE...`).

Rows: {text, toxic, source}. The hashed-n-gram model is fitted on every row, each source's two
classes weighted equally (Davidson's tweets are 83 % toxic because they were sampled by a lexicon:
that share must not become the model's prior). It is then stacked with alt-profanity-check's score
of the text as written and de-obfuscated: a logistic regression over the three out-of-fold logits,
fitted on the sources whose toxic share is natural (not lexicon-sampled), which is also the
calibration.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from llmwatch.detectors.hashed import HashedFeatures, HashedTextModel, logit
from llmwatch.detectors.toxicity import profanity_scores
from llmwatch.detectors.training.fit import balanced_weights, fit_text_model

__all__ = ["LEXICON_SAMPLED", "train_toxicity"]

LEXICON_SAMPLED = frozenset({"davidson2017_tweets"})  # sampled by a hate lexicon: no natural prior
VERSION = "tox-1"


def train_toxicity(rows: Sequence[dict[str, Any]], c: float = 4.0, n_features: int = 2**18) -> HashedTextModel:
    from llmwatch.detectors.profanity import ProfanityModel

    texts, raw, cleaned = profanity_scores(ProfanityModel.shipped().predict_prob, [str(r["text"]) for r in rows])
    labels = np.array([int(r["toxic"]) for r in rows])
    sources = [str(r.get("source", "unknown")) for r in rows]
    natural = np.array([s not in LEXICON_SAMPLED for s in sources])
    if natural.sum() < 50 or len(set(labels[natural])) < 2:
        natural = np.ones(len(rows), dtype=bool)  # nothing with a natural prior: calibrate on all
    model, oof = fit_text_model(texts, labels, balanced_weights(labels, sources), HashedFeatures(n_features), c,
                                calibrate_on=natural)
    stack_x = np.column_stack([oof, logit(raw), logit(cleaned)])
    stacker = LogisticRegression(C=10.0, max_iter=1000).fit(stack_x[natural], labels[natural])
    model.meta.update(
        task="toxicity", version=VERSION, trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
        sources=sorted(set(sources)), calibrated_on=sorted({s for s, n in zip(sources, natural) if n}),
        stack=[*map(float, stacker.coef_[0]), float(stacker.intercept_[0])],
    )
    return model
