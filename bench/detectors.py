"""Detector speed on this machine's device, and the worker's events/s with the offline detectors.

1. texts/s per detector at batch sizes 1, 32, 256 (demo traffic: support questions and answers,
   RAG answers with retrieved passages), per wall-clock second and per CPU second (per core):
   * toxicity: the learned default (goal: >= 5,000 texts/s per core at batch 256), the previous
     profanity-check default, and a detoxify checkpoint through our batched path against
     detoxify's own `Detoxify.predict` on the same list (same checkpoint; ratio in one run);
   * grounding: the offline default per event, and an NLI model per (claim, passage) pair;
   * injection on user inputs and on retrieved passages (same goal);
   * embedding (all-MiniLM-L6-v2), pii redaction, anomaly.
   Without --detoxify / --nli, BERT-base-sized stand-ins (the size of detoxify `original` and of
   base NLI models) are built here with random weights: right for speed, meaningless for quality.
2. Worker events/s: `BatchHandler.handle` on batches of 500 demo events against the embedded
   store and broker, for several detector sets (goal: >= 2,000 events/s on 2 cores with all
   offline detectors on).
Drift against Evidently on 10,000x384 is in bench/drift.py.

    .venv/bin/python bench/detectors.py [--device auto] [--detoxify CKPT] [--nli DIR] [--events 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from _common import free_port, print_table, start_store, start_tansu, stop_process, store_url, write_json

from llmwatch.core.events import Limits, TraceEvent, parse
from llmwatch.core.settings import Settings
from llmwatch.ingest.demo.generator import Scenario

BATCHES = (1, 32, 256)
NOW = datetime.now(UTC)


def demo_events(n: int, seed: int = 3) -> list[TraceEvent]:
    scenario = Scenario(seed)
    events = []
    for i in range(n):
        doc = scenario.event(elapsed_s=float(i % 240))
        doc.update(event_id=str(uuid.uuid4()), trace_id=uuid.uuid4().hex, timestamp=NOW.isoformat())
        parsed = parse(json.dumps(doc).encode(), Limits(), NOW)
        assert isinstance(parsed, TraceEvent), parsed
        events.append(parsed)
    return events


def rate(fn: Callable[[list[Any]], Any], items: list[Any], batch: int, budget_s: float = 4.0) -> tuple[float, float]:
    """Items per second of `fn` over `items` in batches of `batch` (at least one pass, or budget_s):
    per wall-clock second, and per CPU second of this process (items/s per core)."""
    fn(items[:batch])  # warm up (lazy init, CUDA kernels)
    done, started, cpu = 0, time.perf_counter(), time.process_time()

    def rates() -> tuple[float, float]:
        return done / (time.perf_counter() - started), done / max(1e-9, time.process_time() - cpu)

    while True:
        for start in range(0, len(items), batch):
            fn(items[start : start + batch])
            done += len(items[start : start + batch])
            if time.perf_counter() - started > budget_s and done >= batch:
                return rates()
        if time.perf_counter() - started > budget_s:
            return rates()


MINILM: str | None = None  # --minilm: an all-MiniLM-L6-v2 directory (default: the bundled one)


def bert_base_classifier(folder: Path, labels: dict[int, str]) -> Path:
    """A classifier the size of detoxify `original` and of base NLI models (BERT-base: 12 layers,
    hidden 768), randomly initialised, with the bundled MiniLM's WordPiece tokenizer. Right for
    speed (same shapes and operations as the real checkpoints), meaningless for quality."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from llmwatch.detectors.embedding import default_model_path

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(MINILM or str(default_model_path()), model_max_length=512)
    config = BertConfig(vocab_size=tokenizer.vocab_size, num_labels=len(labels), id2label=labels,
                        label2id={v: k for k, v in labels.items()})
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def detoxify_checkpoint(folder: Path) -> Path:
    """A BERT-base-sized checkpoint in detoxify's own format (see bert_base_classifier)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    classes = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
    model_dir = bert_base_classifier(folder / "model", dict(enumerate(classes)))
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    path = folder / "bert-base-stand-in.ckpt"
    torch.save({
        "config": {"arch": {"args": {"model_type": str(model_dir), "model_name": "BertForSequenceClassification",
                                     "tokenizer_name": "BertTokenizer", "num_classes": 6}},
                   "dataset": {"args": {"classes": classes}}},
        "state_dict": model.state_dict(),
    }, path)
    return path


def detector_speeds(events: list[TraceEvent], device: str, detoxify: str | None, nli: str | None, work: Path) -> list[dict]:
    from llmwatch.detectors.anomaly import FEATURES, AnomalyDetector
    from llmwatch.detectors.embedding import Encoder
    from llmwatch.detectors.grounding import Grounding, NliSupport, split_claims
    from llmwatch.detectors.pii import redact_text
    from llmwatch.detectors.registry import load
    from llmwatch.detectors.toxicity import ProfanityCheckToxicity, load_detoxify
    from llmwatch.detectors.transformer import SequenceClassifier

    texts = [e.output for e in events] + [e.input for e in events]
    rag = [e for e in events if e.context]
    rows: list[dict] = []

    def record(detector: str, unit: str, fn: Callable[[list[Any]], Any], items: list[Any], **extra: Any) -> None:
        for batch in BATCHES:
            per_s, per_core = rate(fn, items, batch, budget_s=2.0 if batch == 1 else 4.0)
            rows.append({"detector": detector, "unit": unit, "batch": batch, "per_s": round(per_s, 1),
                         "per_core_s": round(per_core, 1), **extra})
            print(f"  {detector:<40} batch {batch:>3}: {per_s:>10,.0f} {unit}/s ({per_core:,.0f} per CPU-s)", flush=True)

    learned = load("toxicity", Settings())
    record("toxicity (learned, default)", "texts", learned.predict, texts, device="cpu")
    cheap = ProfanityCheckToxicity()
    record("toxicity (profanity-check, previous default)", "texts", cheap.predict, texts, device="cpu")
    injection = load("injection", Settings())
    record("injection (user inputs)", "texts", injection.predict, [e.input for e in events], device="cpu")
    record("injection (retrieved passages)", "texts", injection.predict, [c for e in rag for c in e.context],
           device="cpu")
    record("pii (redact)", "texts", lambda b: [redact_text(t, "redact") for t in b], texts, device="cpu")
    reference = np.random.default_rng(0).lognormal(5, 0.5, size=(20_000, len(FEATURES)))
    anomaly = AnomalyDetector(lambda app: reference)
    record("anomaly (ECOD, 20k reference)", "events", anomaly.score, events, device="cpu")
    record("grounding (learned, default)", "events", Grounding().score, rag, device="cpu")

    checkpoint = detoxify or str(detoxify_checkpoint(work / "detoxify"))
    # Production text: short questions, answers of a few sentences, retrieved passages.
    mixed = texts[: len(texts) // 2] + [c for e in rag for c in e.context]
    ours = load_detoxify(checkpoint, device)
    record("toxicity detoxify: llmwatch batched path", "texts", ours.probabilities, mixed, device=ours.classifier.device,
           checkpoint=Path(checkpoint).name)
    from detoxify import Detoxify

    theirs = Detoxify(checkpoint=checkpoint, device=ours.classifier.device)
    record("toxicity detoxify: Detoxify.predict", "texts", theirs.predict, mixed, device=ours.classifier.device,
           checkpoint=Path(checkpoint).name)

    nli_dir = nli or str(bert_base_classifier(work / "nli", {0: "contradiction", 1: "neutral", 2: "entailment"}))
    classifier = SequenceClassifier.from_path(nli_dir, device)
    pairs = [(p, c) for e in rag for c in split_claims(e.output) for p in e.context]
    record("grounding NLI", "pairs", classifier.logits, pairs, device=classifier.device, model=Path(nli_dir).name)
    record("grounding NLI (whole detector)", "events", Grounding(NliSupport(classifier, "nli")).score, rag,
           device=classifier.device)

    encoder = Encoder.load(MINILM, device)
    record("embedding (MiniLM)", "texts", encoder.encode, texts, device=encoder.device)
    return rows


def worker_speeds(events: list[TraceEvent], device: str) -> list[dict]:
    """BatchHandler.handle throughput on the real embedded store and broker."""
    from llmwatch.detectors.registry import load_all
    from llmwatch.ingest.kafka import producer
    from llmwatch.ingest.pipeline.processor import BatchHandler
    from llmwatch.ingest.pipeline.sink import RawMessage
    from llmwatch.storage.clickhouse import ClickHouseStore
    from llmwatch.storage.migrate import migrate

    kafka_port, store_port = free_port(), free_port()
    data = Path(tempfile.mkdtemp(prefix="llmwatch-bench-"))
    broker = start_tansu(kafka_port)
    try:
        store_process = start_store(data, store_port)
    except BaseException:
        stop_process(broker)
        raise
    rows = []
    try:
        url = store_url(data, store_port)
        raw = [json.dumps({
            "event_id": str(uuid.uuid4()), "trace_id": e.trace_id, "timestamp": NOW.isoformat(), "app": e.app,
            "input": e.input, "output": e.output, "context": list(e.context), "latency_ms": e.latency_ms,
            "usage": {"input_tokens": e.input_tokens, "output_tokens": e.output_tokens},
        }).encode() for e in events]
        detector_sets = [
            ("toxicity", {"toxicity_model": "profanity-check"}),  # the previous default, in the same run
            ("toxicity", {}),
            ("toxicity,grounding,anomaly (+ pii)", {"toxicity_model": "profanity-check"}),
            ("toxicity,grounding,anomaly (+ pii)", {}),
            ("toxicity,grounding,injection,anomaly (+ pii)", {}),
            ("toxicity,grounding,injection,anomaly,embedding (+ pii)", {}),  # automatic caps
            ("toxicity,grounding,injection,anomaly,embedding (+ pii)", {"embedding_max_per_batch": 16,
                                                                        "embedding_max_per_s": 0}),
            ("toxicity,grounding,injection,anomaly,embedding (+ pii)", {"embedding_max_per_batch": 0,
                                                                        "embedding_max_per_s": 0}),
        ]
        for names, extra in detector_sets:
            database = f"bench_{uuid.uuid4().hex[:8]}"
            settings = Settings.from_env({}, clickhouse_url=url, database=database, device=device,
                                         detectors=names.split(" ")[0], anomaly_min_reference=100, **extra)
            store = ClickHouseStore(url, database=database)
            migrate(store, settings.retention_days)
            handler = BatchHandler(settings, store, load_all(settings.detector_names, settings),
                                   producer(f"127.0.0.1:{kafka_port}"))
            warm = [RawMessage("llm.traces", 0, i, v) for i, v in enumerate(raw[:500])]
            handler.handle(warm)  # loads models, fits the anomaly reference
            messages = [RawMessage("llm.traces", 1, i, v) for i, v in enumerate(raw[500:])]
            started = time.perf_counter()
            for start in range(0, len(messages), 500):
                handler.handle(messages[start : start + 500])
            seconds = time.perf_counter() - started
            label = names + "".join(f", {key}={value}" for key, value in extra.items())
            per_s = len(messages) / seconds
            embedded = ""
            if handler.embeddings is not None:
                handler.embeddings.drain()
                written, skipped = handler.embeddings.written, handler.embeddings.skipped_batches
                batches = -(-len(messages) // 500)
                embedded = f"{written:,} vectors; {skipped} of {batches} batches skipped"
            rows.append({"detectors": label, "events": len(messages), "seconds": round(seconds, 2),
                         "events_per_s": round(per_s, 1), "device": device, "embeddings": embedded})
            print(f"  {label:<75} {per_s:>8,.0f} events/s  {embedded}", flush=True)
            for detector in handler.detectors + handler.embedders:
                detector.close()
            if handler.embeddings is not None:
                handler.embeddings.close()
    finally:
        stop_process(store_process)
        stop_process(broker)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--detoxify", default=None, help="detoxify .ckpt (default: a MiniLM-sized stand-in)")
    parser.add_argument("--nli", default=None, help="NLI model directory (default: a MiniLM-sized stand-in)")
    parser.add_argument("--events", type=int, default=5000, help="events for the worker measurement")
    parser.add_argument("--skip-worker", action="store_true")
    parser.add_argument("--only-worker", action="store_true")
    parser.add_argument("--minilm", default=None, help="all-MiniLM-L6-v2 directory (default: the bundled package)")
    args = parser.parse_args()
    global MINILM
    MINILM = args.minilm
    from llmwatch.detectors.embedding import pick_device

    device = pick_device(args.device)
    events = demo_events(max(args.events, 1000))
    if args.only_worker:
        print("worker (BatchHandler.handle, batches of 500, embedded store + broker)")
        write_json(f"detectors-worker-{device.split(':')[0]}", {"device": device, "worker": worker_speeds(events, device)})
        return
    print(f"detector speed on {device} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory() as work:
        speeds = detector_speeds(events[:1000], device, args.detoxify, args.nli, Path(work))
    def cell(name: str, batch: int, key: str = "per_s") -> str:
        return f"{next(r[key] for r in speeds if r['detector'] == name and r['batch'] == batch):,.0f}"

    print_table("Detector throughput (per second)",
                ["detector", "unit", "device", *[f"batch {b}" for b in BATCHES], "per core, batch 256"], [
        [name, unit, dev, *[cell(name, b) for b in BATCHES], cell(name, 256, "per_core_s")]
        for name, unit, dev in dict.fromkeys((r["detector"], r["unit"], r["device"]) for r in speeds)
    ])
    ours = {r["batch"]: r["per_s"] for r in speeds if r["detector"] == "toxicity detoxify: llmwatch batched path"}
    theirs = {r["batch"]: r["per_s"] for r in speeds if r["detector"] == "toxicity detoxify: Detoxify.predict"}
    ratio = {b: round(ours[b] / theirs[b], 2) for b in BATCHES}
    print("\n  detoxify checkpoint, llmwatch path / Detoxify.predict: " + ", ".join(f"batch {b}: {r}x" for b, r in ratio.items()))
    result: dict[str, Any] = {"device": device, "detectors": speeds, "detoxify_ratio": ratio}
    if not args.skip_worker:
        print("\nworker (BatchHandler.handle, batches of 500, embedded store + broker)")
        result["worker"] = worker_speeds(events, device)
    write_json(f"detectors-{device.split(':')[0]}", result)


if __name__ == "__main__":
    main()
