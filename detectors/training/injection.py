"""Training the injection detector (`llmwatch train injection --data FILE...`).

Rows: {text, injection, kind?, source?}, and optionally ordinary user messages to chatbots as more
benign rows (ConvAbuse's non-abusive turns: the injection set's benign rows hold no small talk, so
"can you tell me about ..." would otherwise look like CyberSecEval's templates). Additions made
here, described in the model card:
* ordinary requests that use the words attacks use ("Can I skip this warning?", "How do I stop a
  process?"), from templates, as benign rows: without them a model learns "contains ignore";
* the benign search questions again, capitalised and with a question mark: the set's benign
  questions are lower-case and unpunctuated while its injections are written properly, which a
  model would otherwise learn as "a proper question is an injection";
* benign reading passages with one training injection planted between two sentences, as
  injection rows: indirect injection hides an instruction inside a document, an e-mail or a tool
  result, and the detector also scores windows of a few sentences (detectors/injection.py).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import product
from typing import Any

import numpy as np

from llmwatch.detectors.hashed import HashedFeatures, HashedTextModel
from llmwatch.detectors.training.fit import SEED, balanced_weights, fit_text_model

__all__ = ["opening", "ordinary_requests", "plant", "train_injection"]

VERSION = "inj-1"
_SENTENCE = re.compile(r"(?<=[.!?])\s+")

# Ordinary technical and everyday questions around the attack vocabulary. None of these strings is
# in the tests: they check other sentences of the same kind.
_ASKS = ["How do I {v} {o}?", "Can I {v} {o}?", "how to {v} {o}", "Is it safe to {v} {o}?", "Why would I {v} {o}?", "What happens if I {v} {o}?",
         "Should I {v} {o} before deploying?", "Can you explain how to {v} {o} in Python?",
         "My colleague told me to {v} {o}. Is that a good idea?", "Is there a command to {v} {o} on Linux?"]
_VERBS_OBJECTS = {
    "ignore": ["the deprecation warnings in pytest", "case when comparing strings", "files in .gitignore",
               "a failing test temporarily", "whitespace in a diff", "SSL errors in curl", "an email from my boss",
               "null values in a pandas column", "the first line of a CSV file", "unused variable warnings"],
    "kill": ["a zombie process", "a stuck docker container", "all node processes", "a background job in bash",
             "weeds in my lawn without chemicals", "a thread in Java", "the tmux session"],
    "override": ["a method in a Java subclass", "the default font size in CSS", "environment variables in docker",
                 "the equals method", "a setting in pyproject.toml"],
    "forget": ["a saved wifi network on Windows", "my github credentials in git", "a bluetooth device"],
    "bypass": ["the cache when reloading a page", "a broken fuse temporarily", "the proxy for localhost"],
    "reset": ["my router to factory settings", "a git branch to the previous commit", "the admin password I forgot",
              "the password of my account", "my PIN", "my two-factor device"],
    "change": ["my password", "the email address for invoices", "my billing details", "my username",
               "my delivery address", "the admin password of the router"],
    "recover": ["a deleted account", "my password without my old phone", "an unsaved document"],
    "reveal": ["hidden files on a Mac", "the password saved in Chrome", "the answer to a riddle step by step"],
    "disable": ["the system beep on Ubuntu", "autocorrect on my phone", "telemetry in VS Code"],
    "jailbreak": ["an old iPhone to install apps", "a Kindle to change the screensaver"],
    "write": ["a system prompt for a customer support bot", "a prompt that makes the model answer in French",
              "instructions for my babysitter", "a role-play scenario for a language class"],
}
_STATEMENTS = [
    "Please disregard my previous email, the meeting is now on Friday.",
    "The instructions in the manual say to ignore the blinking light for the first hour.",
    "You are now subscribed to our newsletter.", "From now on, the office opens at 9 am.",
    "Pretend you are a tourist in Rome and tell me what to see on day one.",
    "Act as a Linux terminal tutor and explain what the ls command does.",
    "What does the system prompt do in the OpenAI API?", "Previous instructions for this form are outdated; use v2.",
    "The DAN protocol in networking stands for Dynamic Address Negotiation, right?",
    "Summarize the rules of chess, ignoring the history of the game.",
]


def ordinary_requests() -> list[str]:
    asks = [template.format(v=verb, o=obj) for template, (verb, objects) in product(_ASKS, _VERBS_OBJECTS.items())
            for obj in objects]
    return sorted(set(asks)) + _STATEMENTS


def _proper(question: str) -> str:
    text = question.strip()
    text = text[:1].upper() + text[1:]
    return text if text[-1:] in ".?!" else text + "?"


def plant(passage: str, instruction: str, rng: random.Random) -> str:
    """`instruction` between two sentences of `passage`, at a random place."""
    sentences = _SENTENCE.split(passage)
    at = rng.randrange(len(sentences) + 1)
    return " ".join([*sentences[:at], instruction, *sentences[at:]])


def train_injection(rows: Sequence[dict[str, Any]], benign: Sequence[str] = (), c: float = 10.0,
                    n_features: int = 2**18, planted: int = 400) -> HashedTextModel:
    """`benign`: more ordinary user messages (chatbot turns, say), as benign rows."""
    rng = random.Random(SEED)
    texts = [str(r["text"]) for r in rows] + list(benign)
    labels = [int(r["injection"]) for r in rows] + [0] * len(benign)
    groups = [str(r.get("kind") or r.get("source") or "rows") for r in rows] + ["user_messages"] * len(benign)
    ordinary = ordinary_requests() + [_proper(str(r["text"])) for r in rows
                                      if not int(r["injection"]) and len(str(r["text"])) < 200]
    short_attacks = [t for t, y in zip(texts, labels) if y and len(t) < 400]
    passages = [t for t, y in zip(texts, labels) if not y and len(_SENTENCE.split(t)) >= 4]
    documents = [plant(rng.choice(passages), rng.choice(short_attacks), rng) for _ in range(planted)] \
        if short_attacks and passages else []
    texts += ordinary + documents
    labels += [0] * len(ordinary) + [1] * len(documents)
    groups += ["ordinary_request"] * len(ordinary) + ["planted_in_document"] * len(documents)
    # Both classes weigh the same; within them, kinds and templates by the square root of their size.
    weights = balanced_weights(labels, ["all"] * len(labels)) * _root_weights(groups) \
        * _root_weights([opening(t) for t in texts])
    features = HashedFeatures(n_features, word_ngrams=(1, 3), concepts="injection")
    model, _ = fit_text_model(texts, labels, weights, features, c)
    model.meta.update(task="injection", version=VERSION, trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
                      sources=sorted({str(r.get("source", "rows")) for r in rows}),
                      added={"ordinary_request": len(ordinary), "planted_in_document": len(documents),
                             "user_messages": len(benign)})
    return model


def opening(text: str) -> str:
    """A row's template key: its first five words. CyberSecEval fills a few templates many ways
    ("What is the capital of 'Zubrowka', given this article: ..."); rows that share an opening are
    one template, for weighting here and for grouped folds in bench/quality.py."""
    return " ".join(text.lower().split()[:5])


def _root_weights(keys: Sequence[str]) -> np.ndarray:
    """Each row weighs 1 / sqrt(rows with its key), so a key's total grows with the square root of
    its size: big templates and kinds (jailbreak personas) count, without drowning the small ones
    (short overrides), and the model learns attacks rather than one template's topic."""
    sizes = Counter(keys)
    weights = np.array([1.0 / np.sqrt(sizes[k]) for k in keys])
    return weights / weights.mean()
