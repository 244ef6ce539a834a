"""Model-backed detectors on tiny real checkpoints: the whole load → batch → score path."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from llmwatch.core.errors import DetectorLoadError
from llmwatch.core.events import TraceEvent
from llmwatch.detectors.grounding import Grounding, NliSupport
from llmwatch.detectors.toxicity import load_detoxify
from llmwatch.detectors.transformer import SequenceClassifier

TEXTS = ["you are an idiot", "hello friend", "shut up moron " * 60, "thanks for the help", "I will hurt you", "ok"]


def event(i: int, output: str, context: tuple[str, ...] = (), question: str = "") -> TraceEvent:
    return TraceEvent(uuid.UUID(int=i), f"t{i}", datetime.now(UTC), "app", input=question,
                      output=output, context=context)


def test_detoxify_scores_equal_detoxifys_own_predict(detoxify_checkpoint: Path) -> None:
    from detoxify import Detoxify

    ours = load_detoxify(detoxify_checkpoint, device="cpu", batch_size=2).probabilities(TEXTS)
    theirs = Detoxify(checkpoint=str(detoxify_checkpoint), device="cpu").predict(TEXTS)
    for column, name in enumerate(theirs):
        np.testing.assert_allclose(ours[:, column], theirs[name], atol=1e-5)


def test_detoxify_separates_what_it_learned(detoxify_checkpoint: Path) -> None:
    detector = load_detoxify(detoxify_checkpoint, device="cpu")
    rows = detector.score([event(1, "you are an idiot"), event(2, "hello friend")])
    by_id = {(r.event_id.int, r.target): r for r in rows}
    assert by_id[(1, "output")].label == "toxic" and by_id[(2, "output")].label == "ok"
    assert by_id[(1, "input")].label == "empty"
    assert set(by_id[(1, "output")].details) >= {"toxicity", "insult"}
    assert detector.version == "detoxify-tiny-original"


def test_cascade_sends_only_doubtful_texts_to_the_model(detoxify_checkpoint: Path) -> None:
    detector = load_detoxify(detoxify_checkpoint, device="cpu", cascade_below=0.3)
    rows = detector.score([event(1, "fuck off you idiot"), event(2, "thanks for the help, have a nice day")])
    assert detector.last_sent == 1
    by_id = {r.event_id.int: r for r in rows if r.target == "output"}
    assert "toxicity" in by_id[1].details and by_id[2].details == {"model": "profanity-check"}


def test_missing_or_broken_checkpoints_fail_with_the_path(tmp_path: Path) -> None:
    with pytest.raises(DetectorLoadError, match="no detoxify checkpoint at"):
        load_detoxify(tmp_path / "absent.ckpt")
    broken = tmp_path / "broken.ckpt"
    import torch

    torch.save({"state_dict": {}}, broken)
    with pytest.raises(DetectorLoadError, match="could not load detoxify checkpoint"):
        load_detoxify(broken)
    with pytest.raises(DetectorLoadError, match="config.json missing"):
        SequenceClassifier.from_path(tmp_path)


def test_nli_backend_finds_the_entailment_label_and_flags_unsupported_claims(nli_model: Path) -> None:
    classifier = SequenceClassifier.from_path(nli_model, device="cpu")
    assert classifier.labels[2] == "entailment"
    grounding = Grounding(NliSupport(classifier, "nli-tiny"))
    context = ("Refunds are paid within five days.", "The office is in Paris.")
    supported, invented = grounding.score([
        event(1, "Refunds are paid within five days.", context),
        event(2, "Refunds are paid within five days. The office is in Tokyo.", context),
    ])
    assert supported.label == "supported" and invented.label == "unsupported"
    assert [c["claim"] for c in invented.details["unsupported"]] == ["The office is in Tokyo."]
    assert invented.details["unsupported"][0]["missing"] == ["tokyo"]


def test_grounding_without_context_is_not_applicable() -> None:
    (row,) = Grounding().score([event(1, "The answer is 42.")])
    assert (row.score, row.label) == (None, "not_applicable")


def test_offline_grounding_flags_invented_numbers_and_names() -> None:
    context = ("The Eiffel Tower opened in 1889 and is 330 metres tall.",)
    faithful, invented = Grounding().score([
        event(1, "It opened in 1889.", context, "When did the Eiffel Tower open?"),
        event(2, "It opened in 1925 in Lyon, designed by Gustave Eiffel.", context, "When did the Eiffel Tower open?"),
    ])
    assert faithful.score < 0.3 < 0.5 < invented.score
    assert invented.details["unsupported"][0]["missing"] == ["1925", "lyon", "design", "gustave"]


@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA GPU")
def test_gpu_scores_equal_cpu_scores(detoxify_checkpoint: Path, nli_model: Path) -> None:
    cpu = load_detoxify(detoxify_checkpoint, device="cpu").probabilities(TEXTS)
    gpu = load_detoxify(detoxify_checkpoint, device="cuda").probabilities(TEXTS)
    np.testing.assert_allclose(gpu, cpu, atol=2e-2)
    pairs = [("The office is in Paris.", "The office is in Paris."), ("Refunds are paid.", "Cats are purple.")]
    cpu_logits = SequenceClassifier.from_path(nli_model, device="cpu").logits(pairs)
    gpu_logits = SequenceClassifier.from_path(nli_model, device="cuda").logits(pairs)
    np.testing.assert_allclose(gpu_logits, cpu_logits, atol=5e-2)
