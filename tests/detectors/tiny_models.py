"""Tiny but real transformer checkpoints, built by the tests (nothing is downloaded).

Both use the WordPiece vocabulary of the bundled all-MiniLM-L6-v2, a 2-layer BERT with hidden
size 32, and a few optimiser steps so that outputs depend on the input.
"""

from __future__ import annotations

import os
from pathlib import Path

DETOXIFY_CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
NLI_LABELS = {0: "contradiction", 1: "neutral", 2: "entailment"}


def _bert(folder: Path, num_labels: int, id2label: dict[int, str] | None = None):  # type: ignore[no-untyped-def]
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    from llmwatch.detectors.embedding import default_model_path

    torch.manual_seed(0)
    # The configured embedding model's vocabulary (LLMWATCH_EMBEDDING_MODEL), else the bundled one.
    vocabulary = os.environ.get("LLMWATCH_EMBEDDING_MODEL") or str(default_model_path())
    tokenizer = BertTokenizer.from_pretrained(vocabulary, model_max_length=128)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, num_labels=num_labels,
        **({"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}} if id2label else {}),
    )
    model = BertForSequenceClassification(config)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(folder))
    config.save_pretrained(str(folder))
    return model, tokenizer


def _train(model, tokenizer, inputs, targets, loss_fn, steps: int = 80) -> None:  # type: ignore[no-untyped-def]
    import torch

    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    if isinstance(inputs[0], tuple):
        first, second = zip(*inputs)
        batch = tokenizer(list(first), list(second), padding=True, return_tensors="pt")
    else:
        batch = tokenizer(list(inputs), padding=True, return_tensors="pt")
    model.train()
    for _ in range(steps):
        optimiser.zero_grad()
        loss = loss_fn(model(**batch).logits, targets)
        loss.backward()
        optimiser.step()
    model.eval()


def build_detoxify_checkpoint(folder: Path) -> Path:
    """A checkpoint in detoxify's own format whose model_type is a local folder."""
    import torch

    model, tokenizer = _bert(folder / "bert", len(DETOXIFY_CLASSES))
    texts = ["you are an idiot", "shut up moron", "I will hurt you", "hello friend", "thanks for the help", "nice day"]
    targets = torch.tensor([[1.0] * 6] * 3 + [[0.0] * 6] * 3)
    _train(model, tokenizer, texts, targets, torch.nn.functional.binary_cross_entropy_with_logits)
    checkpoint = {
        "config": {
            "arch": {"args": {
                "model_type": str(folder / "bert"), "model_name": "BertForSequenceClassification",
                "tokenizer_name": "BertTokenizer", "num_classes": len(DETOXIFY_CLASSES),
            }},
            "dataset": {"args": {"classes": DETOXIFY_CLASSES}},
        },
        "state_dict": model.state_dict(),
    }
    path = folder / "tiny-original.ckpt"
    torch.save(checkpoint, path)
    return path


def build_nli_model(folder: Path) -> Path:
    """A save_pretrained NLI model (contradiction / neutral / entailment) in `folder`."""
    import torch

    model, tokenizer = _bert(folder, 3, NLI_LABELS)
    pairs = [
        ("Refunds are paid within five days.", "Refunds are paid within five days."),
        ("The office is in Paris.", "The office is in Paris."),
        ("The API allows 100 requests per minute.", "The API allows 100 requests per minute."),
        ("Refunds are paid within five days.", "The office is in Tokyo."),
        ("The office is in Paris.", "Refunds take a year."),
        ("The API allows 100 requests per minute.", "Cats are purple."),
    ]
    targets = torch.tensor([2, 2, 2, 1, 1, 1])
    _train(model, tokenizer, pairs, targets, torch.nn.functional.cross_entropy)
    model.save_pretrained(str(folder))
    return folder
