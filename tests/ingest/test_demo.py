"""The demo scenario: normal traffic that validates, with each incident in its phase."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from llmwatch.core.events import Limits, SpanEvent, TraceEvent, parse
from llmwatch.ingest.demo import corpus
from llmwatch.ingest.demo.generator import CYCLE_S, Scenario, phase_at


def emitted(scenario: Scenario, elapsed_s: float, n: int) -> list[dict]:
    events = []
    for _ in range(n):
        event = scenario.event(elapsed_s)
        event.update(event_id=str(uuid.uuid4()), trace_id=uuid.uuid4().hex, timestamp=int(datetime.now(UTC).timestamp() * 1000))
        events.append(event)
    return events


def test_every_demo_event_satisfies_the_schema() -> None:
    scenario = Scenario(seed=1)
    now = datetime.now(UTC)
    for t in range(0, int(CYCLE_S), 5):
        for event in emitted(scenario, t, 20):
            assert isinstance(parse(json.dumps(event).encode(), Limits(), now), TraceEvent)


def test_agent_runs_come_with_their_spans() -> None:
    scenario = Scenario(seed=3)
    now = datetime.now(UTC)
    events = [e for e in emitted(scenario, 210, 300) if e["app"] == "sql-agent"]
    assert events
    for event in events:
        spans = [parse(json.dumps(s).encode(), Limits(), now) for s in scenario.spans_for(event)]
        assert all(isinstance(s, SpanEvent) for s in spans), spans
        assert isinstance(parse(json.dumps(event).encode(), Limits(), now), TraceEvent)
        tools, run = spans[:2], spans[2]
        assert run.span_kind == "agent" and not run.parent_span_id and event["parent_span_id"] == run.span_id
        assert all(s.parent_span_id == run.span_id and s.trace_id == event["trace_id"] for s in tools)
        assert (tools[1].status == "error") == ("error" in event)
    assert scenario.spans_for({"app": "support-bot"}) == []


def test_incidents_happen_only_in_their_phase() -> None:
    scenario = Scenario(seed=2)
    calm = emitted(scenario, 10, 2000)
    toxic = emitted(scenario, 70, 2000)
    hallucinating = emitted(scenario, 120, 2000)
    spiking = emitted(scenario, 210, 2000)

    def toxic_outputs(events: list[dict]) -> int:
        return sum(e["output"] in corpus.TOXIC_ANSWERS for e in events)

    def unsupported(events: list[dict]) -> int:
        return sum(any(e["output"] == f["unsupported"] for f in corpus.RAG_FACTS) for e in events)

    assert toxic_outputs(calm) == 0 and toxic_outputs(toxic) > 100
    assert all(e["release"]["prompt_version"] == "8" for e in toxic if e["output"] in corpus.TOXIC_ANSWERS)
    assert unsupported(calm) == 0 and unsupported(hallucinating) > 100
    agent_latency = lambda events: max(e["latency_ms"] for e in events if e["app"] == "sql-agent")  # noqa: E731
    assert agent_latency(spiking) > 3 * agent_latency(calm)
    assert phase_at(CYCLE_S + 70).toxic_burst  # the timeline repeats
