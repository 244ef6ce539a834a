"""Datasets, experiments and the release gate end to end: the `llmwatch` commands, the real broker,
a real worker process scoring the experiments' events, the embedded store, and the demo's local
OpenAI-compatible model server answering through the real `openai` client."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from llmwatch.alerts.metrics import metric_query
from llmwatch.alerts.rules import parse_rules
from llmwatch.cli import main
from llmwatch.core.settings import Settings, settings_env
from llmwatch.ingest.demo import corpus
from llmwatch.ingest.demo.model_server import ChatServer, Reply
from llmwatch.storage.clickhouse import ClickHouseStore
from tests.conftest import stop_process
from tests.test_pipeline import start_worker

pytestmark = pytest.mark.slow

GOOD_PROMPT = "Answer only from the numbered context passages; quote numbers exactly."
BAD_PROMPT = "Answer from what you know, briefly."


@pytest.fixture
def model() -> Iterator[ChatServer]:
    server = ChatServer().start()
    yield server
    server.stop()


@pytest.fixture
def evaluated(stack_settings: Settings, model: ChatServer, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings whose evaluations file has a judge on the model server and a gate for docs-rag,
    in the environment the commands read; a worker scoring toxicity and grounding."""
    evaluations = tmp_path / "evaluations.yaml"
    evaluations.write_text(json.dumps({
        "judges": [{"name": "faithful", "endpoint": model.url, "model": "demo-judge", "rubric": "Is every claim in the context?",
                    "compare_with": "grounding", "price": {"input_per_mtok": 0.5, "output_per_mtok": 1.5}}],
        "gates": [{"app": "docs-rag", "dataset": "docs-gate", "signals": ["grounding", "error", "judge:faithful"]}],
    }))
    settings = dataclasses.replace(stack_settings, detectors="toxicity,grounding", evaluations=str(evaluations))
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        yield settings
    finally:
        stop_process(worker, timeout_s=10)


def llmwatch(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def experiment(capsys: pytest.CaptureFixture[str], url: str, version: str, prompt: Path, *extra: str) -> dict[str, Any]:
    code, out, err = llmwatch(capsys, "experiment", "run", "--dataset", "docs-gate", "--app", "docs-rag", "--endpoint", url,
                              "--model", "demo", "--system-prompt", str(prompt), "--release", f"rag-answer:{version}",
                              "--wait-s", "90", *extra)
    summary = json.loads(out)
    assert code == (0 if summary["answered"] == summary["cases"] and summary["status"] == "done" else 1), err
    return summary


def test_a_worse_release_is_stopped_at_the_gate_and_a_good_one_promoted(
    evaluated: Settings, model: ChatServer, embedded_store: ClickHouseStore, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cases = tmp_path / "docs-gate.jsonl"
    cases.write_text("".join(json.dumps({"id": f"fact-{i}", "input": f["question"], "context": f["passages"]}) + "\n"
                             for i, f in enumerate(corpus.RAG_FACTS)))
    code, out, _ = llmwatch(capsys, "dataset", "add", "docs-gate", "--from-file", str(cases))
    assert code == 0 and f"docs-gate v1: {len(corpus.RAG_FACTS)} case(s)" in out
    assert llmwatch(capsys, "dataset", "add", "docs-gate", "--from-file", str(cases))[1].startswith("docs-gate v1:")  # unchanged
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text(GOOD_PROMPT)
    bad.write_text(BAD_PROMPT)
    for version in ("3", "5", "6"):
        assert llmwatch(capsys, "release", "register", "--app", "docs-rag", "--prompt-id", "rag-answer",
                        "--prompt-version", version, "--model", "demo", *(["--activate"] if version == "3" else []))[0] == 0

    # A release never tried on the gate dataset is refused, and the refusal is audited.
    code, _, err = llmwatch(capsys, "release", "promote", "--app", "docs-rag", "--release", "rag-answer:6@demo")
    assert code == 1 and "no finished experiment on the gate dataset 'docs-gate'" in err

    current = experiment(capsys, model.url, "3", good)
    n = len(corpus.RAG_FACTS)
    assert current["answered"] == n and current["scored_by_detectors"] == n and current["baseline"] is None
    assert current["signals"]["grounding"]["bad"] <= 1 and current["signals"]["judge:faithful"]["of"] == n

    worse = experiment(capsys, model.url, "5", bad)
    assert worse["baseline"]["release"] == "rag-answer:3@demo"
    assert worse["signals"]["grounding"]["bad"] >= n - 1
    assert worse["signals"]["grounding"]["difference"]["verdict"] == "worse"
    code, _, err = llmwatch(capsys, "release", "promote", "--app", "docs-rag", "--release", "rag-answer:5@demo")
    assert code == 1 and "stopped at the release gate" in err and "grounding:" in err
    code, _, err = llmwatch(capsys, "release", "promote", "--app", "docs-rag", "--release", "rag-answer:5@demo", "--force")
    assert code == 1 and "--force needs --reason" in err

    better = experiment(capsys, model.url, "6", good)
    assert better["signals"]["grounding"]["difference"]["verdict"] != "worse"
    code, out, _ = llmwatch(capsys, "release", "promote", "--app", "docs-rag", "--release", "rag-answer:6@demo")
    assert code == 0 and "docs-rag now serves rag-answer:6@demo (release gate: not worse on" in out

    db = embedded_store.database
    actions = [a for (a,) in embedded_store.query(f"SELECT action FROM {db}.audit_log WHERE action LIKE 'gate_%' ORDER BY at")]
    assert actions == ["gate_refused", "gate_refused", "gate_passed"]
    # The experiments' events are in the store for the console and SQL, tagged, and no alert rule counts them.
    tagged = embedded_store.query(f"SELECT count(), uniqExact(tags['experiment']) FROM {db}.traces WHERE environment = 'experiment'")
    assert tagged[0] == (3 * n, 3)
    rule = parse_rules("rules:\n  - {name: h, metric: hallucination_rate, window: 1h, every: 1m, critical: 0.1}")[0][0]
    now = datetime.now(UTC)
    sql, params = metric_query(rule, now - timedelta(hours=1), now + timedelta(minutes=1), db)
    assert embedded_store.query(sql, params)[0][1] == 0

    # Running it again resumes: nothing is asked of the model twice, the judges answer from the cache.
    billed = dict(model.billed)
    again = experiment(capsys, model.url, "6", good)
    assert (again["resumed"], again["called"]) == (n, 0) and model.billed == billed
    assert again["counts"] == better["counts"] and again["cost_usd"] == better["cost_usd"]  # counted once, also resumed
    assert again["experiment_id"] == better["experiment_id"]

    code, out, _ = llmwatch(capsys, "dataset", "export", "docs-gate", "--format", "parquet", "--output", str(tmp_path / "d.parquet"))
    assert code == 0 and (tmp_path / "d.parquet").stat().st_size > 0


def test_a_run_that_failed_halfway_redoes_only_the_failed_cases(
    evaluated: Settings, embedded_store: ClickHouseStore, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    questions = [f"Question number {i}?" for i in range(6)]
    cases = tmp_path / "cases.jsonl"
    cases.write_text("".join(json.dumps({"input": q}) + "\n" for q in questions))
    asked: list[str] = []
    down = {"Question number 2?", "Question number 4?"}

    def answer(body: dict[str, Any]) -> Reply:
        question = body["messages"][-1]["content"]
        asked.append(question)
        return Reply(status=503) if question in down else Reply(f"Answer to {question}")

    with ChatServer(answer, keep_requests=True) as server:
        args = ["experiment", "run", "--dataset", str(cases), "--app", "bot", "--endpoint", server.url, "--model", "m",
                "--wait-s", "60", "--concurrency", "3", "--rate", "50"]
        code, out, _ = llmwatch(capsys, *args)
        first = json.loads(out)
        assert code == 1 and (first["answered"], first["errors"]) == (4, 2)
        assert first["signals"]["error"]["bad"] == 2
        down.clear()
        asked.clear()
        code, out, _ = llmwatch(capsys, *args)
    second = json.loads(out)
    assert code == 0 and second["resumed"] == 4 and second["called"] == 2
    assert sorted(asked) == ["Question number 2?", "Question number 4?"]
    assert second["signals"]["error"]["bad"] == 0 and second["scored_by_detectors"] == 6
