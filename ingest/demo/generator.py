"""Synthetic traffic for `llmwatch demo`, emitted through the SDK like a real app would.

Three apps run normal traffic; a repeating timeline of `CYCLE_S` seconds injects the incidents a
monitoring product must catch:

| from (s) | to (s) | incident |
|---|---|---|
| 60 | 120 | support-bot release v8 (new prompt) is deployed as a canary and answers rudely |
| 100 | 160 | docs-rag release v4 (new model) answers with claims the retrieved context does not support |
| 150 | 220 | support-bot users start asking about something new (a crypto outage): input drift |
| 200 | 230 | sql-agent latency and token spikes |

Throughout, about 1 in 100 support-bot users tries a prompt injection or jailbreak, and about 1 in
200 docs-rag answers retrieves a page with an instruction planted in it (indirect injection). Not
every error is blatant: v8 is also passive-aggressive (no insult for a lexical model to find), v4
also gets single details wrong, and the stable releases slip into both now and then. Those are
what the judges and review routing are for.

The loop closes on its own when the store is reachable: the generator also plays the deploy
pipeline, promoting v8 in the release registry when its canary phase starts. The `toxic-outputs`
rule fires, rolls v8 back, and the generator's SDK release resolver (following `llm.control`)
switches support-bot back to v7 within seconds, so toxicity recovers and the incident resolves.

Before release, the gate (`DemoGate`, half a minute in): docs-rag's team tries two new prompts on
the gate dataset through the demo's stand-in LLM. v5 answers from memory, is worse on grounding
and the faithfulness judge, and is stopped at the gate; v6 is not worse and is promoted, and the
generator's docs-rag traffic follows the registry to it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmwatch import Emitter, Release
from llmwatch.core.events import release_name
from llmwatch.core.settings import Settings
from llmwatch.ingest.demo import corpus

log = logging.getLogger(__name__)

__all__ = ["CYCLE_S", "Scenario", "run_generator"]

CYCLE_S = 240.0

SUPPORT_STABLE = Release("support-answer", "7", "gpt-4o-mini", "openai")
SUPPORT_CANARY = Release("support-answer", "8", "gpt-4o-mini", "openai")
RAG_STABLE = Release("rag-answer", "3", "llama-3.1-70b", "vllm")
RAG_REGRESSED = Release("rag-answer", "4", "llama-3.1-8b", "vllm")
AGENT_RELEASE = Release("sql-agent", "12", "claude-sonnet", "anthropic")
# docs-rag's candidates for the release gate, with the system prompts they are tried with.
RAG_PROMPT = "Answer only from the numbered context passages."
RAG_FROM_MEMORY = Release("rag-answer", "5", "llama-3.1-70b", "vllm")
RAG_QUOTING = Release("rag-answer", "6", "llama-3.1-70b", "vllm")
CANDIDATE_PROMPTS = {
    RAG_STABLE: RAG_PROMPT,
    RAG_FROM_MEMORY: "Answer from what you know, briefly; the context is a hint.",
    RAG_QUOTING: "Answer only from the numbered context passages, quoting numbers exactly.",
}


@dataclass(frozen=True)
class Phase:
    toxic_burst: bool
    unsupported_answers: bool
    input_drift: bool
    latency_spike: bool


def phase_at(elapsed_s: float) -> Phase:
    t = elapsed_s % CYCLE_S
    return Phase(
        toxic_burst=60 <= t < 120,
        unsupported_answers=100 <= t < 160,
        input_drift=150 <= t < 220,
        latency_spike=200 <= t < 230,
    )


class Scenario:
    """Builds demo events; pure apart from its seeded random generator."""

    def __init__(self, seed: int, serving: Callable[[str], Release] | None = None) -> None:
        self.rng = random.Random(seed)
        # What the release registry says support-bot serves (an SDK resolver); None: the timeline decides.
        self.serving = serving

    def event(self, elapsed_s: float) -> dict[str, Any]:
        phase = phase_at(elapsed_s)
        roll = self.rng.random()
        if roll < 0.5:
            return self._support(phase)
        if roll < 0.85:
            return self._rag(phase)
        return self._agent(phase)

    def _support(self, phase: Phase) -> dict[str, Any]:
        rng = self.rng
        canary = phase.toxic_burst and rng.random() < 0.5
        if self.serving is not None:
            canary = canary and self.serving("support-bot").prompt_version == SUPPORT_CANARY.prompt_version
        release = SUPPORT_CANARY if canary else SUPPORT_STABLE
        questions = corpus.SUPPORT_QUESTIONS_SHIFTED if phase.input_drift and rng.random() < 0.7 else corpus.SUPPORT_QUESTIONS
        roll = rng.random()
        question = (rng.choice(corpus.TOXIC_USER_MESSAGES) if roll < 0.02
                    else rng.choice(corpus.INJECTION_ATTEMPTS) if roll < 0.03 else rng.choice(questions))
        roll = rng.random()
        if canary and roll < 0.45:
            answer = rng.choice(corpus.TOXIC_ANSWERS)
        elif (canary and roll < 0.7) or (not canary and roll < 0.015):
            answer = rng.choice(corpus.PASSIVE_AGGRESSIVE_ANSWERS)
        else:
            answer = rng.choice(corpus.SUPPORT_ANSWERS)
        return {
            "app": "support-bot",
            "environment": "production",
            "release": release.as_dict(),
            "input": [
                {"role": "system", "content": "You are a friendly support assistant for Acme Cloud."},
                {"role": "user", "content": question},
            ],
            "output": answer,
            "latency_ms": round(rng.lognormvariate(6.4, 0.35), 1),  # ~600 ms median
            "usage": {"input_tokens": 60 + rng.randint(0, 40), "output_tokens": 30 + rng.randint(0, 60)},
            "cost_usd": round(0.00002 * (100 + rng.randint(0, 100)), 6),
            "user_id": f"user-{rng.randint(1, 400)}",
            "session_id": f"s-{rng.randint(1, 2000)}",
            "tags": {"channel": rng.choice(["web", "ios", "android"])},
        }

    def _rag(self, phase: Phase) -> dict[str, Any]:
        rng = self.rng
        fact = rng.choice(corpus.RAG_FACTS)
        regressed = phase.unsupported_answers and rng.random() < 0.7
        serving = self.serving("docs-rag") if self.serving is not None else RAG_STABLE
        release = RAG_REGRESSED if regressed else serving
        roll = rng.random()
        if regressed and roll < 0.6:
            answer = fact["unsupported"]
        elif (regressed and roll < 0.8) or (not regressed and roll < 0.02):
            answer = fact["subtle"]
        else:
            answer = fact["answer"]
        return {
            "app": "docs-rag",
            "environment": "production",
            "release": release.as_dict(),
            "input": fact["question"],
            "output": answer,
            "context": [{"id": f"doc-{i}", "text": p} for i, p in enumerate(fact["passages"])]
            + ([{"id": "doc-api-keys", "text": corpus.POISONED_PASSAGE}] if rng.random() < 0.005 else []),
            "latency_ms": round(rng.lognormvariate(7.0, 0.3), 1),  # ~1.1 s median
            "usage": {"input_tokens": 400 + rng.randint(0, 300), "output_tokens": 40 + rng.randint(0, 80)},
            "cost_usd": round(0.000004 * (500 + rng.randint(0, 400)), 6),
            "user_id": f"user-{rng.randint(1, 400)}",
        }

    def _agent(self, phase: Phase) -> dict[str, Any]:
        rng = self.rng
        spike = phase.latency_spike and rng.random() < 0.6
        latency = rng.lognormvariate(7.6, 0.3) * (rng.uniform(6, 12) if spike else 1.0)
        output_tokens = 80 + rng.randint(0, 120) + (rng.randint(3000, 8000) if spike else 0)
        event: dict[str, Any] = {
            "app": "sql-agent",
            "environment": "production",
            "release": AGENT_RELEASE.as_dict(),
            "input": rng.choice(corpus.AGENT_TASKS),
            "output": rng.choice(corpus.AGENT_ANSWERS),
            "latency_ms": round(latency, 1),
            "usage": {"input_tokens": 900 + rng.randint(0, 400), "output_tokens": output_tokens},
            "cost_usd": round(0.000015 * (1000 + output_tokens), 6),
            "user_id": f"analyst-{rng.randint(1, 30)}",
        }
        if rng.random() < (0.2 if spike else 0.01):
            event["error"] = "TimeoutError: tool call exceeded 30 s"
        return event

    def spans_for(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The steps around an agent's LLM call, as an agent framework would trace them: the run,
        a schema lookup and the SQL tool (which times out with the call in the latency spike).
        Links the event to the run. Needs the event's trace_id; other apps have none."""
        if event["app"] != "sql-agent":
            return []
        rng = self.rng
        now_ms = int(time.time() * 1000)
        latency = event["latency_ms"]
        schema_ms, sql_ms = round(rng.uniform(20, 60), 1), round(rng.uniform(80, 400), 1)
        run_ms = round(schema_ms + latency + sql_ms, 1)
        root = f"{rng.getrandbits(64):016x}"
        event["span_id"], event["parent_span_id"] = f"{rng.getrandbits(64):016x}", root
        event["timestamp"] = now_ms - int(latency + sql_ms)

        def span(name: str, kind: str, started_ms: int, duration_ms: float, **fields: Any) -> dict[str, Any]:
            return {"kind": "span", "app": "sql-agent", "environment": "production", "trace_id": event["trace_id"],
                    "span_id": f"{rng.getrandbits(64):016x}", "parent_span_id": root, "name": name, "span_kind": kind,
                    "timestamp": started_ms, "duration_ms": duration_ms, "status": "ok", **fields}

        failed = "error" in event
        run = span("answer analyst question", "agent", now_ms - int(run_ms), run_ms, input=event["input"],
                   output=event["output"], user_id=event["user_id"])
        run["span_id"] = root
        del run["parent_span_id"]
        return [
            span("list_tables", "tool", now_ms - int(run_ms), schema_ms, input={"schema": "analytics"},
                 output=["orders", "customers", "events"]),
            span("run_sql", "tool", now_ms - int(sql_ms), sql_ms,
                 input={"sql": "SELECT region, sum(total) FROM orders GROUP BY region"},
                 **({"status": "error", "error": event["error"]} if failed else {"output": "5 rows"})),
            run,
        ]

    def feedback_for(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """Some users rate answers; bad answers get thumbs down far more often."""
        rng = self.rng
        if rng.random() > 0.08:
            return None
        output = event["output"]
        bad = output in corpus.TOXIC_ANSWERS or any(output == f["unsupported"] for f in corpus.RAG_FACTS)
        thumbs_up = rng.random() < (0.15 if bad else 0.85)
        comment = rng.choice(corpus.FEEDBACK_COMMENTS_GOOD if thumbs_up else corpus.FEEDBACK_COMMENTS_BAD)
        return {"trace_id": event["trace_id"], "score": 1.0 if thumbs_up else 0.0, "comment": comment, "app": event["app"]}


class DemoDeploys:
    """The demo's deploy pipeline: registers support-bot's releases, promotes the v8 canary when
    its phase starts and v7 when it ends (unless a rule rolled it back first)."""

    def __init__(self, settings: Settings) -> None:
        from llmwatch.alerts.releases import Registry, ReleaseRecord
        from llmwatch.ingest.kafka import ensure_llmwatch_topics, producer
        from llmwatch.storage.clickhouse import connect
        from llmwatch.storage.migrate import migrate

        store = connect(settings)
        migrate(store, settings.retention_days)
        ensure_llmwatch_topics(settings, [settings.control_topic])
        self.registry = Registry(store, settings, producer(settings.bootstrap_servers))
        for app, releases in (("support-bot", (SUPPORT_STABLE, SUPPORT_CANARY)),
                              ("docs-rag", (RAG_STABLE, RAG_FROM_MEMORY, RAG_QUOTING))):
            for release in releases:
                self.registry.register(ReleaseRecord(app, release.prompt_id, release.prompt_version,
                                                     release.model, release.provider), actor="demo-deploy")
        self.deploy(SUPPORT_STABLE, "demo start")
        self.registry.promote("docs-rag", self.name(RAG_STABLE), actor="demo-deploy", reason="demo start")
        self.store = store
        self.canary_started = self.canary_ended = -1  # the cycle each last happened in

    @staticmethod
    def name(release: Release) -> str:
        return release_name(release.prompt_id, release.prompt_version, release.model)

    def deploy(self, release: Release, reason: str) -> None:
        self.registry.promote("support-bot", self.name(release), actor="demo-deploy", reason=reason)

    def tick(self, elapsed_s: float) -> None:
        cycle = int(elapsed_s // CYCLE_S)
        if phase_at(elapsed_s).toxic_burst:
            if self.canary_started < cycle:
                self.canary_started = cycle
                self.deploy(SUPPORT_CANARY, "demo: canary of prompt v8")
        elif self.canary_started == cycle and self.canary_ended < cycle:
            self.canary_ended = cycle
            active = self.registry.active("support-bot")
            if active is not None and active.prompt_version == SUPPORT_CANARY.prompt_version:
                self.deploy(SUPPORT_STABLE, "demo: canary phase over")


class DemoGate:
    """docs-rag's release gate, played once per demo start: a gate dataset from the demo corpus,
    an experiment per release on the demo's stand-in LLM, then a promotion attempt of each
    candidate through the gate. Runs on its own thread: experiments wait for the workers."""

    def __init__(self, settings: Settings, deploys: DemoDeploys) -> None:
        self.settings, self.deploys = settings, deploys
        self.thread = threading.Thread(target=self.run, name="demo-gate", daemon=True)

    def run(self, delay_s: float = 30.0) -> None:
        from llmwatch.core.errors import LlmwatchError

        time.sleep(delay_s)
        try:
            self._run()
        except LlmwatchError as exc:
            log.warning("demo gate: not played (%s)", exc)

    def _run(self) -> None:
        from llmwatch.alerts.datasets import DatasetCase, add_cases
        from llmwatch.alerts.evaluations import load_evaluations
        from llmwatch.alerts.experiments import Candidate, run_experiment
        from llmwatch.alerts.gate import GateRefused, promote_through_gate

        evaluations, _ = load_evaluations(self.settings.evaluations_path)
        gate = evaluations.gate("docs-rag")
        if gate is None:
            return
        store, registry = self.deploys.store, self.deploys.registry
        cases = [DatasetCase(f"fact-{i}", str(f["question"]), tuple(f["passages"]), str(f["answer"]), source="demo")
                 for i, f in enumerate(corpus.RAG_FACTS)]
        version, _ = add_cases(store, gate.dataset, cases, "demo-deploy")
        url = f"http://{self.settings.host}:{self.settings.demo_model_port}/v1"
        with Emitter(self.settings.bootstrap_servers, topic=self.settings.traces_topic) as emitter:
            for release, prompt in CANDIDATE_PROMPTS.items():
                candidate = Candidate("docs-rag", url, release.model, prompt, release.prompt_id, release.prompt_version)
                summary = run_experiment(store, emitter, gate.dataset, version, cases, candidate, evaluations=evaluations,
                                         prices=None, registry=registry, actor="demo-deploy")
                log.info("demo gate: experiment %s of %s: %s", summary["experiment_id"], summary["release"],
                         {k: f"{v['bad']}/{v['of']}" for k, v in summary["signals"].items()})
        for release in (RAG_FROM_MEMORY, RAG_QUOTING):
            try:
                promote_through_gate(store, evaluations, registry, "docs-rag", self.deploys.name(release), "demo-deploy",
                                     "demo: new docs prompt")
                log.info("demo gate: %s promoted", self.deploys.name(release))
            except GateRefused as exc:
                log.warning("demo gate: %s", exc)


def run_generator(settings: Settings, *, duration_s: float | None = None, max_events: int | None = None) -> int:
    """Emit demo events at settings.demo_rate until duration_s or max_events; returns the count."""
    from llmwatch.core.errors import LlmwatchError
    from llmwatch.ingest.sdk.releases import ReleaseResolver

    try:
        deploys: DemoDeploys | None = DemoDeploys(settings)
    except LlmwatchError as exc:
        log.warning("demo: no release registry (%s); the timeline alone decides releases", exc)
        deploys = None
    resolver = ReleaseResolver(settings.bootstrap_servers, {"support-bot": SUPPORT_STABLE, "docs-rag": RAG_STABLE},
                               topic=settings.control_topic) if deploys else None
    if deploys is not None:
        DemoGate(settings, deploys).thread.start()
    scenario = Scenario(settings.demo_seed, resolver.release if resolver else None)
    emitter = Emitter(settings.bootstrap_servers, topic=settings.traces_topic, queue_size=settings.emitter_queue_size)
    interval = 1.0 / settings.demo_rate
    started = time.monotonic()
    next_at = started
    sent = 0
    try:
        while (duration_s is None or time.monotonic() - started < duration_s) and (max_events is None or sent < max_events):
            elapsed = time.monotonic() - started
            if deploys is not None and sent % 50 == 0:
                deploys.tick(elapsed)
            event = scenario.event(elapsed)
            event["trace_id"] = f"{random.getrandbits(64):016x}"
            for span in scenario.spans_for(event):
                emitter.emit(span)
            emitter.emit(event)
            feedback = scenario.feedback_for(event)
            if feedback is not None:
                emitter.feedback(**feedback)
            sent += 1
            if sent % 1000 == 0:
                log.info("demo: %d events emitted, %s", sent, emitter.stats())
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    except KeyboardInterrupt:
        pass
    finally:
        emitter.close()
        if resolver is not None:
            resolver.close()
    log.info("demo: done, %d events, %s", sent, emitter.stats())
    return sent
