"""Experiments: replay a dataset through a candidate (model + system prompt on an OpenAI-compatible
endpoint), score the outputs with the detectors (the workers, as events) and the judges (here), and
compare with the app's current release on the same dataset.

* The experiment id is a hash of what defines the run (dataset version, app, endpoint, model,
  system prompt, release): running the same command again resumes it. A case's answer is stored in
  llmwatch.experiment_cases the moment it arrives, so a crash costs at most the calls in flight.
* Each answered case becomes a trace event (environment `experiment`, tags experiment/dataset/case,
  event id derived from both ids, so a re-sent event is the same event) sent through Kafka: the
  workers redact and score it like any other, the console and SQL see it, alert rules do not.
* Calls run `concurrency` at a time, started at most `rate_per_s` per second.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from llmwatch.alerts.chat import RETRYABLE, ChatEndpoint, CompletionError
from llmwatch.alerts.datasets import DatasetCase
from llmwatch.alerts.evaluations import Evaluations
from llmwatch.alerts.intervals import rate_difference, wilson
from llmwatch.alerts.judge_job import judge_price
from llmwatch.alerts.judging import Case, judge_cases

log = logging.getLogger(__name__)

__all__ = ["Candidate", "RateLimiter", "baseline_experiment", "experiment_id", "latest_experiment", "run_experiment",
           "signal_counts", "summarize"]

_NAMESPACE = uuid.UUID("4f0c6a52-32c4-4a8e-9b7e-6f1f3c9c2d11")


@dataclass(frozen=True)
class Candidate:
    app: str
    endpoint: str
    model: str
    system_prompt: str = ""
    prompt_id: str = ""
    prompt_version: str = ""
    api_key_env: str = ""
    max_output_tokens: int = 512
    timeout_s: float = 60.0
    retries: int = 2

    @property
    def release(self) -> str:
        from llmwatch.core.events import release_name

        return release_name(self.prompt_id, self.prompt_version, self.model)


def experiment_id(dataset: str, version: int, candidate: Candidate) -> str:
    parts = [dataset, version, candidate.app, candidate.endpoint, candidate.model, candidate.system_prompt,
             candidate.prompt_id, candidate.prompt_version]
    return "exp-" + hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]


def case_event_id(experiment: str, case_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{experiment}/{case_id}"))


class RateLimiter:
    """At most `per_s` starts per second, shared by the pool's threads (0: no limit)."""

    def __init__(self, per_s: float, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 1.0 / per_s if per_s > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()
        self._clock, self._sleep = clock, sleep

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            self._sleep(start - now)


def _messages(candidate: Candidate, case: DatasetCase) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": candidate.system_prompt}] if candidate.system_prompt else []
    if case.context:
        passages = "\n\n".join(f"[{i + 1}] {p}" for i, p in enumerate(case.context))
        messages.append({"role": "user", "content": f"Context:\n{passages}\n\nQuestion: {case.input}"})
    else:
        messages.append({"role": "user", "content": case.input})
    return messages


@dataclass
class _Answer:
    case: DatasetCase
    status: str
    output: str = ""
    error: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0


def _answer(endpoint: ChatEndpoint, candidate: Candidate, case: DatasetCase, limiter: RateLimiter,
            price: tuple[float, float]) -> _Answer:
    error = ""
    for attempt in range(candidate.retries + 1):
        limiter.wait()
        try:
            done = endpoint.complete(candidate.model, _messages(candidate, case), max_tokens=candidate.max_output_tokens,
                                     temperature=0.0)
        except CompletionError as exc:
            error = f"{exc.kind}: {exc}"
            if exc.kind not in RETRYABLE:
                break
            time.sleep(min(8.0, 0.5 * 2**attempt))
            continue
        cost = (done.input_tokens * price[0] + done.output_tokens * price[1]) / 1e6
        return _Answer(case, "ok", done.text, "", done.input_tokens, done.output_tokens, cost, done.latency_ms)
    return _Answer(case, "error", error=error)


def _finished(store: Any, experiment: str) -> dict[str, dict[str, Any]]:
    rows = store.query(
        f"SELECT case_id, toString(event_id), status, output, error, input_tokens, output_tokens, cost_usd, latency_ms "
        f"FROM {store.database}.experiment_cases FINAL WHERE experiment_id = {{e:String}}", {"e": experiment})
    return {r[0]: {"event_id": r[1], "status": r[2], "output": r[3], "error": r[4], "input_tokens": r[5],
                   "output_tokens": r[6], "cost_usd": r[7], "latency_ms": r[8]} for r in rows}


def _event(experiment: str, dataset: str, candidate: Candidate, case: DatasetCase, row: dict[str, Any]) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": row["event_id"], "trace_id": row["event_id"], "app": candidate.app, "environment": "experiment",
        "input": case.input, "output": row["output"], "context": list(case.context),
        "release": {"prompt_id": candidate.prompt_id, "prompt_version": candidate.prompt_version, "model": candidate.model},
        "latency_ms": row["latency_ms"], "tags": {"experiment": experiment, "dataset": dataset, "case_id": case.case_id},
    }
    if row["status"] == "ok":
        event["usage"] = {"input_tokens": row["input_tokens"], "output_tokens": row["output_tokens"]}
        event["cost_usd"] = row["cost_usd"]
    else:
        event["error"] = row["error"][:1000]
    return event


def _record(store: Any, experiment: str, dataset: str, version: int, candidate: Candidate, status: str, cases: int,
            summary: dict[str, Any], actor: str, started: datetime) -> None:
    store.insert("experiments", [{
        "experiment_id": experiment, "dataset": dataset, "dataset_version": version, "app": candidate.app,
        "release": candidate.release, "model": candidate.model, "endpoint": candidate.endpoint,
        "system_prompt": candidate.system_prompt, "status": status, "cases": cases, "summary": json.dumps(summary),
        "actor": actor, "started_at": started, "updated_at": datetime.now(UTC)}])


def signal_counts(store: Any, experiment: str, judges: list[str]) -> dict[str, tuple[int, int]]:
    """(bad, judged) per output signal of an experiment's events: toxicity, grounding, error, judges."""
    db = store.database
    # One verdict per event and signal, the latest: a resumed run must not count a case twice.
    rows = store.query(
        f"SELECT detector, countIf(label IN ('toxic', 'unsupported', 'fail')), "
        f"countIf(label IN ('toxic', 'unsupported', 'fail', 'ok', 'supported', 'pass')) "
        f"FROM (SELECT event_id, detector, argMax(label, scored_at) AS label FROM {db}.scores "
        f"WHERE event_id IN (SELECT event_id FROM {db}.experiment_cases FINAL WHERE experiment_id = {{e:String}}) "
        f"AND (detector = 'grounding' OR (detector = 'toxicity' AND target = 'output') OR has({{judges:Array(String)}}, detector)) "
        f"GROUP BY event_id, detector) GROUP BY detector", {"e": experiment, "judges": judges})
    counts = {detector: (int(bad), int(n)) for detector, bad, n in rows}
    errors = store.query(f"SELECT countIf(status = 'error'), count() FROM {db}.experiment_cases FINAL "
                         "WHERE experiment_id = {e:String}", {"e": experiment})[0]
    counts["error"] = (int(errors[0]), int(errors[1]))
    return counts


def summarize(counts: dict[str, tuple[int, int]], baseline: dict[str, tuple[int, int]] | None = None) -> dict[str, Any]:
    """Per signal: the rate with its 95% Wilson interval, and against a baseline the difference
    with Newcombe's interval and a verdict (worse / better / no clear difference). Pure."""
    signals: dict[str, Any] = {}
    for name, (k, n) in sorted(counts.items()):
        low, high = wilson(k, n)
        entry: dict[str, Any] = {"bad": k, "of": n, "rate": k / n if n else None, "low": low, "high": high}
        if baseline and name in baseline and baseline[name][1] and n:
            kb, nb = baseline[name]
            d, d_low, d_high = rate_difference(k, n, kb, nb)
            entry["baseline"] = {"bad": kb, "of": nb, "rate": kb / nb}
            entry["difference"] = {"value": d, "low": d_low, "high": d_high,
                                   "verdict": "worse" if d_low > 0 else "better" if d_high < 0 else "no clear difference"}
        signals[name] = entry
    return signals


def latest_experiment(store: Any, app: str, release: str, dataset: str, version: int = 0) -> dict[str, Any] | None:
    """The newest finished experiment of `release` of `app` on `dataset` (of `version`, or any)."""
    rows = store.query(
        f"SELECT experiment_id, dataset_version, summary, updated_at FROM {store.database}.experiments FINAL "
        "WHERE app = {app:String} AND release = {release:String} AND dataset = {dataset:String} AND status = 'done' "
        "AND ({version:UInt32} = 0 OR dataset_version = {version:UInt32}) ORDER BY updated_at DESC LIMIT 1",
        {"app": app, "release": release, "dataset": dataset, "version": version})
    if not rows:
        return None
    experiment, dataset_version, summary, updated_at = rows[0]
    return {"experiment_id": experiment, "dataset_version": int(dataset_version), "summary": json.loads(summary or "{}"),
            "updated_at": updated_at}


def baseline_experiment(store: Any, registry: Any, app: str, dataset: str, version: int, exclude: str) -> dict[str, Any] | None:
    """The latest experiment of the app's active release on the same dataset version, with that release."""
    active = registry.active(app) if registry is not None else None
    if active is None:
        return None
    found = latest_experiment(store, app, active.release, dataset, version)
    return {**found, "release": active.release} if found is not None and found["experiment_id"] != exclude else None


def _wait_for_scores(store: Any, experiment: str, expected: int, wait_s: float) -> int:
    """Wait until the workers have scored every answered case's event; returns how many are."""
    deadline = time.monotonic() + wait_s
    scored = 0
    while True:
        rows = store.query(
            f"SELECT uniqExact(event_id) FROM {store.database}.scores WHERE detector IN ('toxicity', 'grounding') "
            f"AND event_id IN (SELECT event_id FROM {store.database}.experiment_cases FINAL "
            "WHERE experiment_id = {e:String} AND status = 'ok')", {"e": experiment})
        scored = int(rows[0][0]) if rows else 0
        if scored >= expected or time.monotonic() >= deadline:
            return scored
        time.sleep(0.5)


def run_experiment(store: Any, emitter: Any, dataset: str, version: int, cases: list[DatasetCase], candidate: Candidate,
                   *, evaluations: Evaluations, prices: Any, registry: Any = None, concurrency: int = 4,
                   rate_per_s: float = 0.0, wait_s: float = 120.0, actor: str = "",
                   price: tuple[float, float] | None = None) -> dict[str, Any]:
    """Run (or resume) one experiment and return its JSON summary."""
    experiment = experiment_id(dataset, version, candidate)
    started = datetime.now(UTC)
    done = _finished(store, experiment)
    resumed = sum(1 for r in done.values() if r["status"] == "ok")
    _record(store, experiment, dataset, version, candidate, "running", len(cases), {}, actor, started)
    if price is None:
        found = prices.price(candidate.model, started.date()) if prices is not None else None
        price = (found.input, found.output) if found is not None else (0.0, 0.0)
    endpoint = ChatEndpoint(candidate.endpoint, api_key_env=candidate.api_key_env, timeout_s=candidate.timeout_s)
    limiter = RateLimiter(rate_per_s)
    todo = [c for c in cases if done.get(c.case_id, {}).get("status") != "ok"]
    lock = threading.Lock()
    clock = time.perf_counter()

    def one(case: DatasetCase) -> None:
        answer = _answer(endpoint, candidate, case, limiter, price)
        row = {"event_id": case_event_id(experiment, case.case_id), "status": answer.status, "output": answer.output,
               "error": answer.error, "input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens,
               "cost_usd": answer.cost_usd, "latency_ms": answer.latency_ms}
        with lock:  # stored before anything else: a crash after this line never pays for the case again
            store.insert("experiment_cases", [{"experiment_id": experiment, "case_id": case.case_id, **row,
                                               "finished_at": datetime.now(UTC)}])
            done[case.case_id] = row

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        list(pool.map(one, todo))
    replay_s = time.perf_counter() - clock
    # Every case's event, also those answered before a crash (the same event id: sent twice, stored once).
    by_id = {c.case_id: c for c in cases}
    for case_id, row in done.items():
        if case_id in by_id:
            emitter.emit(_event(experiment, dataset, candidate, by_id[case_id], row))
    if not emitter.flush(30):
        log.warning("experiment %s: some events are not delivered yet; scores will be missing for them", experiment)
    answered = [(by_id[i], r) for i, r in done.items() if i in by_id and r["status"] == "ok"]
    judges = [j for j in evaluations.judges if j.filters.get("app", candidate.app) == candidate.app]
    for judge in judges:
        judged = {e for (e,) in store.query(
            f"SELECT DISTINCT toString(event_id) FROM {store.database}.judge_runs WHERE judge = {{j:String}} "
            "AND experiment = {e:String} AND status IN ('ok', 'cached')", {"j": judge.name, "e": experiment})}
        judge_cases(store, judge, [
            Case(r["event_id"], candidate.app, case.input, r["output"], case.context, case.reference, started,
                 "experiment", candidate.release, candidate.model) for case, r in answered if r["event_id"] not in judged],
            price=judge_price(judge, prices), experiment=experiment, concurrency=concurrency)
    # What the judges spent on this experiment, over every run of it (as the candidate's cost is).
    spent = store.query(f"SELECT judge, sum(cost_usd), sum(input_tokens), sum(output_tokens) FROM {store.database}.judge_runs "
                        "WHERE experiment = {e:String} GROUP BY judge ORDER BY judge", {"e": experiment})
    judge_costs = {f"judge:{name}": float(cost) for name, cost, _, _ in spent}
    judge_tokens = {"input": sum(int(r[2]) for r in spent), "output": sum(int(r[3]) for r in spent)}
    scored = _wait_for_scores(store, experiment, len(answered), wait_s)
    counts = signal_counts(store, experiment, [j.detector for j in judges])
    baseline = baseline_experiment(store, registry, candidate.app, dataset, version, experiment)
    baseline_counts = ({k: tuple(v) for k, v in baseline["summary"].get("counts", {}).items()} if baseline else None)
    summary = {
        "experiment_id": experiment, "dataset": dataset, "dataset_version": version, "app": candidate.app,
        "release": candidate.release, "model": candidate.model, "cases": len(cases),
        "answered": len(answered), "errors": sum(1 for r in done.values() if r["status"] == "error"),
        "resumed": resumed, "called": len(todo), "scored_by_detectors": scored,
        "replay_s": round(replay_s, 3), "cases_per_s": round(len(todo) / replay_s, 2) if todo and replay_s else None,
        "cost_usd": {"candidate": round(sum(r["cost_usd"] for r in done.values()), 8),
                     "judges": {k: round(v, 8) for k, v in judge_costs.items()}},
        "tokens": {"candidate_input": sum(r["input_tokens"] for r in done.values()),
                   "candidate_output": sum(r["output_tokens"] for r in done.values()),
                   "judge_input": judge_tokens["input"], "judge_output": judge_tokens["output"]},
        "counts": counts,
        "signals": summarize(counts, baseline_counts),
        "baseline": {"experiment_id": baseline["experiment_id"], "release": baseline["release"]} if baseline else None,
    }
    status = "done" if scored >= len(answered) else "incomplete"
    summary["status"] = status
    _record(store, experiment, dataset, version, candidate, status, len(cases), summary, actor, started)
    return summary
