"""Detectors that read or write the store, against the real embedded ClickHouse: every offline
detector through the batch handler, embeddings, the scheduled drift checks and anomaly models."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np

from llmwatch.core.errors import StoreError
from llmwatch.core.events import TraceEvent
from llmwatch.core.settings import Settings
from llmwatch.detectors.anomaly import AnomalyDetector, store_reference
from llmwatch.detectors.drift_job import run_drift_checks
from llmwatch.detectors.embedding import Encoder, EventEmbedder
from llmwatch.detectors.registry import available, load_all
from llmwatch.ingest.demo.corpus import SUPPORT_QUESTIONS, SUPPORT_QUESTIONS_SHIFTED
from llmwatch.ingest.kafka import producer
from llmwatch.ingest.pipeline import sink
from llmwatch.ingest.pipeline.processor import BatchHandler
from llmwatch.ingest.pipeline.sink import RawMessage
from llmwatch.storage.clickhouse import ClickHouseStore

NOW = datetime.now(UTC)


def event(app: str, text: str, at: datetime, **fields: object) -> TraceEvent:
    return TraceEvent(uuid.uuid4(), uuid.uuid4().hex, at, app, input=text, output=f"About: {text}", **fields)


def store_events(store: ClickHouseStore, events: list[TraceEvent], embedder: EventEmbedder | None = None) -> None:
    sink.store_events(store, traces=events, feedback=[], score=lambda e: [], now=NOW)
    if embedder is not None:
        store.insert("embeddings", embedder.embed(events))


def test_every_offline_detector_through_the_batch_handler(embedded_store: ClickHouseStore, broker: str) -> None:
    settings = Settings.from_env({}, database=embedded_store.database, clickhouse_url=embedded_store.url,
                                 device="cpu", anomaly_min_reference=50)
    history = [event("bot", q, NOW - timedelta(minutes=30), latency_ms=800.0 + i) for i, q in enumerate(SUPPORT_QUESTIONS * 6)]
    store_events(embedded_store, history)
    handler = BatchHandler(settings, embedded_store, load_all(available(), settings), producer(broker))
    def raw(i: int, **fields: object) -> RawMessage:
        body = {"event_id": str(uuid.uuid4()), "trace_id": f"t{i}", "timestamp": NOW.isoformat(), "app": "bot",
                "input": "How do I reset my password?", "output": "Use the reset link.", **fields}
        return RawMessage("llm.traces", 0, i, json.dumps(body).encode())

    stored = handler.handle([
        raw(0, latency_ms=810.0, output="About: How do I reset my password?"),
        raw(1, latency_ms=90_000.0, output="Refunds take 90 days, says Gustave.", context=["Refunds take 5 days."]),
    ])
    assert stored.traces == 2
    handler.embeddings.drain()  # vectors are written on a background thread
    db = embedded_store.database
    rows = embedded_store.query(
        f"SELECT t.trace_id, s.detector, s.target, s.label FROM {db}.scores AS s "
        f"JOIN {db}.traces AS t USING event_id WHERE t.trace_id IN ('t0', 't1') ORDER BY 1, 2, 3"
    )
    labels = {(r[0], r[1], r[2]): r[3] for r in rows}
    assert labels[("t0", "anomaly", "event")] == "ok" and labels[("t1", "anomaly", "event")] == "outlier"
    assert labels[("t0", "grounding", "output")] == "not_applicable"
    assert labels[("t1", "grounding", "output")] == "unsupported"
    assert labels[("t0", "toxicity", "output")] == "ok"
    vectors = embedded_store.query(
        f"SELECT target, length(vector) FROM {db}.embeddings WHERE event_id IN "
        f"(SELECT event_id FROM {db}.traces WHERE trace_id = 't0') ORDER BY target"
    )
    assert vectors == [("input", 384), ("output", 384)]


def test_drift_checks_find_the_shift_name_its_terms_and_refuse_small_samples(embedded_store: ClickHouseStore) -> None:
    embedder = EventEmbedder(Encoder.load(None, "cpu"), max_per_batch=0, max_per_s=0)
    rng = np.random.default_rng(1)

    def window(app: str, texts: list[str], n: int, minutes_ago: float, **fields: object) -> list[TraceEvent]:
        return [
            event(app, f"{rng.choice(texts)} (ticket {rng.integers(10_000)})", NOW - timedelta(minutes=minutes_ago), **fields)
            for _ in range(n)
        ]

    stable = window("stable", SUPPORT_QUESTIONS, 150, 90) + window("stable", SUPPORT_QUESTIONS, 150, 10)
    shifted = (
        window("shifted", SUPPORT_QUESTIONS, 150, 90)
        + window("shifted", SUPPORT_QUESTIONS, 75, 10, prompt_id="answer", prompt_version="7")
        + window("shifted", SUPPORT_QUESTIONS_SHIFTED, 75, 10, prompt_id="answer", prompt_version="8")
    )
    tiny = window("tiny", SUPPORT_QUESTIONS, 20, 90) + window("tiny", SUPPORT_QUESTIONS, 20, 10)
    store_events(embedded_store, stable + shifted + tiny, embedder)

    settings = Settings.from_env(
        {}, database=embedded_store.database, device="cpu", drift_window_s=3600, drift_reference_s=3600,
        drift_min_samples=50, drift_evidently=True,
    )
    rows = run_drift_checks(embedded_store, settings, now=NOW + timedelta(seconds=1), rng=np.random.default_rng(0))
    by_key = {(r["app"], r["target"], r["method"], r["current"].partition(" release ")[2]): r for r in rows}

    stable_mmd = by_key[("stable", "input", "mmd", "")]
    assert stable_mmd["verdict"] == "no_drift" and stable_mmd["reference_size"] == stable_mmd["current_size"] == 150
    shifted_mmd = by_key[("shifted", "input", "mmd", "")]
    assert shifted_mmd["verdict"] == "drift" and shifted_mmd["p_value"] < 0.01
    assert {"outage", "bitcoin", "crypto"} & set(shifted_mmd["terms_up"])
    assert by_key[("shifted", "input", "classifier", "")]["verdict"] == "drift"
    # The cross-check agrees.
    assert by_key[("shifted", "input", "evidently", "")]["verdict"] == "drift"
    assert by_key[("stable", "input", "evidently", "")]["verdict"] == "no_drift"
    # Per release: the new release drifted, the old one did not.
    assert by_key[("shifted", "input", "mmd", "answer:8")]["verdict"] == "drift"
    assert by_key[("shifted", "input", "mmd", "answer:7")]["verdict"] == "no_drift"
    tiny_row = by_key[("tiny", "input", "mmd", "")]
    assert (tiny_row["verdict"], tiny_row["p_value"], tiny_row["drifted"]) == ("insufficient_data", None, None)
    stored = embedded_store.query(f"SELECT count(), countIf(verdict = 'drift') FROM {embedded_store.database}.drift")
    assert stored[0] == (len(rows), sum(1 for r in rows if r["verdict"] == "drift"))

    pinned = Settings.from_env(
        {}, database=embedded_store.database, device="cpu", drift_reference_release="answer:7", drift_min_samples=50,
    )
    rows = run_drift_checks(embedded_store, pinned, now=NOW + timedelta(seconds=1), rng=np.random.default_rng(0))
    release_row = next(r for r in rows if r["app"] == "shifted" and r["method"] == "mmd" and r["target"] == "input"
                       and r["current"].endswith("answer:8"))
    assert release_row["reference"] == "release answer:7" and release_row["verdict"] == "drift"


def test_anomaly_model_fitted_from_the_store(embedded_store: ClickHouseStore) -> None:
    rng = np.random.default_rng(0)
    history = [
        event("bot", "q", NOW - timedelta(minutes=5), latency_ms=float(rng.normal(800, 50)),
              input_tokens=int(rng.normal(200, 20)), output_tokens=int(rng.normal(150, 15)))
        for _ in range(300)
    ]
    store_events(embedded_store, history + [event("new-app", "q", NOW, latency_ms=800.0)])
    detector = AnomalyDetector(store_reference(embedded_store, 3600), min_reference=200)
    typical = event("bot", "q", NOW, latency_ms=810.0, input_tokens=205, output_tokens=150)
    slow = event("bot", "q", NOW, latency_ms=9000.0, input_tokens=205, output_tokens=150)
    unknown = event("new-app", "q", NOW, latency_ms=800.0)
    rows = detector.score([typical, slow, unknown])
    assert [r.label for r in rows] == ["ok", "outlier", "not_applicable"]
    assert rows[1].details["features"][0] == "latency_ms" and rows[1].score >= 0.99
    assert event("a", "q", NOW, prompt_id="answer", prompt_version="7", model="gpt").release == "answer:7@gpt"


def test_anomaly_models_refit_on_schedule_and_new_apps_are_checked_again_soon() -> None:
    now = [0.0]
    history: dict[str, np.ndarray] = {"bot": np.empty((0, 6))}
    calls: list[str] = []

    def reference(app: str) -> np.ndarray:
        calls.append(app)
        return history[app]

    detector = AnomalyDetector(reference, refit_s=600, min_reference=200, clock=lambda: now[0])
    probe = event("bot", "q", NOW, latency_ms=800.0)
    assert detector.score([probe])[0].label == "not_applicable"
    history["bot"] = np.random.default_rng(0).lognormal(6.7, 0.1, size=(500, 6))
    now[0] = 5.0
    detector.score([probe])
    assert len(calls) == 1  # too soon to look again
    now[0] = 16.0
    assert detector.score([probe])[0].label in ("ok", "outlier")  # a new app: checked again after 15 s
    now[0] = 300.0
    detector.score([probe])
    assert len(calls) == 2  # a fitted model lives for refit_s
    now[0] = 617.0
    detector.score([probe])
    assert len(calls) == 3


def test_refits_in_the_background_keep_the_batch_going_with_the_model_it_had() -> None:
    now = [0.0]
    rng = np.random.default_rng(0)

    def latencies(mean_log: float) -> np.ndarray:  # the app reports latency only
        rows = np.full((500, 6), np.nan)
        rows[:, 0] = rng.lognormal(mean_log, 0.1, size=500)
        return rows

    history = {"bot": latencies(6.7)}
    fitting = threading.Event()
    looks: list[str] = []

    def reference(app: str) -> np.ndarray:
        looks.append(app)
        if len(looks) > 1:
            assert fitting.wait(10)  # a slow refit: the batch below must not wait for it
        return history[app]

    detector = AnomalyDetector(reference, refit_s=600, min_reference=200, clock=lambda: now[0],
                               refit_in_background=True)
    slow = event("bot", "q", NOW, latency_ms=9000.0)
    first = detector.model_for("bot")
    assert first is not None and detector.score([slow])[0].label == "outlier"  # first look: in the batch
    history["bot"] = latencies(9.1)  # the app got slower: 9000 ms is normal now
    now[0] = 601.0
    assert detector.score([slow])[0].label == "outlier"  # scored at once, with the model it had
    assert detector.model_for("bot") is first and looks == ["bot", "bot"]
    fitting.set()
    detector.wait_for_refits()
    assert detector.model_for("bot") is not first
    assert detector.score([slow])[0].label == "ok"
    detector.close()


def test_a_failed_background_refit_keeps_the_previous_model() -> None:
    now = [0.0]
    history = np.random.default_rng(1).lognormal(6.7, 0.1, size=(500, 6))
    looks: list[int] = []

    def reference(app: str) -> np.ndarray:
        looks.append(1)
        if len(looks) > 1:
            raise StoreError("store down")
        return history

    detector = AnomalyDetector(reference, refit_s=600, min_reference=200, clock=lambda: now[0],
                               refit_in_background=True)
    first = detector.model_for("bot")
    now[0] = 601.0
    detector.model_for("bot")
    detector.wait_for_refits()
    assert detector.model_for("bot") is first and len(looks) == 2
    detector.close()


def test_embedding_sample_per_app_per_batch() -> None:
    """The CPU cap keeps at most N events of each app per batch, the same ones on a replay, and
    all of a quiet app's events."""
    embedder = EventEmbedder(Encoder.load(None, "cpu"), max_per_batch=4, max_per_s=0)
    busy = [event("busy", f"q{i}", NOW) for i in range(100)]
    quiet = [event("quiet", "q", NOW) for _ in range(3)]
    chosen = embedder.chosen(busy + quiet)
    assert sum(e.app == "busy" for e in chosen) == 4 and sum(e.app == "quiet" for e in chosen) == 3
    # Chosen by event_id, so a replay (in any order) picks the same events.
    assert {e.event_id for e in embedder.chosen(list(reversed(busy + quiet)))} == {e.event_id for e in chosen}
    assert {r["event_id"] for r in embedder.embed(busy + quiet)} == {e.event_id for e in chosen}
    assert len(EventEmbedder(embedder.encoder, max_per_batch=0, max_per_s=0).chosen(busy)) == 100
    # An experiment's replays are never embedded: drift compares the app's own traffic.
    replays = [event("busy", f"q{i}", NOW, environment="experiment") for i in range(10)]
    assert EventEmbedder(embedder.encoder, max_per_batch=0, max_per_s=0).chosen(replays) == []


def test_embedding_sample_per_app_per_second() -> None:
    """At a high event rate the CPU cap is per second: full batches many times a second embed no
    more than max_per_s events of an app on average (a bucket of two seconds' worth)."""
    now = [0.0]
    embedder = EventEmbedder(Encoder.load(None, "cpu"), max_per_batch=4, max_per_s=4.0, clock=lambda: now[0])
    chosen = 0
    for _ in range(70):  # 10 s of 7 full batches a second
        batch = [event("busy", f"q{i}", NOW) for i in range(50)] + [event("quiet", "q", NOW)]
        picked = embedder.chosen(batch)
        assert sum(e.app == "busy" for e in picked) <= 4
        chosen += sum(e.app == "busy" for e in picked)
        now[0] += 1 / 7
    assert 40 <= chosen <= 4 * 10 + 8  # the rate, plus the bucket it started with
    assert len(EventEmbedder(embedder.encoder, max_per_batch=0, max_per_s=0).chosen(batch)) == 51
