"""Evaluations (issue 16), measured on the embedded store and broker, the demo's stand-in LLM
(an OpenAI-compatible server on 127.0.0.1) and demo traffic.

1. Experiment throughput: a dataset replayed through a candidate whose every answer takes
   `--latency-s` (a model's time), at several concurrencies. Baseline: the endpoint's own ceiling,
   concurrency / latency cases per second; efficiency = measured / ceiling.
2. Judge cost accounting: every token and dollar recorded in llmwatch.judge_runs against what the
   server billed, for the online judge run of part 3 (the difference must be 0).
3. Review routing on one 4-minute cycle of demo traffic, scored by the real detectors (the
   worker's batch handler) and a faithfulness judge on docs-rag: each queued item is labelled by a
   simulated reviewer who knows the demo's ground truth (rude answers are toxic, the corpus's
   invented answers hallucinated). The share of review budget spent on real errors, routed
   (uncertain, disagreement) against the uniform sample, each with its 95% Wilson interval.

Prints tables, writes bench/results/evaluations.json. Needs no data from ../shared.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import free_port, print_table, start_store, start_tansu, stop_process, store_url, write_json

from llmwatch.alerts.datasets import DatasetCase
from llmwatch.alerts.evaluations import parse_evaluations
from llmwatch.alerts.experiments import Candidate, run_experiment
from llmwatch.alerts.intervals import wilson
from llmwatch.alerts.judge_job import run_judges
from llmwatch.alerts.routing import route_reviews
from llmwatch.core.settings import Settings
from llmwatch.ingest.demo import corpus
from llmwatch.ingest.demo.generator import Scenario
from llmwatch.ingest.demo.model_server import ChatServer
from llmwatch.storage.clickhouse import ClickHouseStore
from llmwatch.storage.migrate import migrate

PRICE = {"input_per_mtok": 0.15, "output_per_mtok": 0.6}


def experiment_throughput(store: ClickHouseStore, bootstrap: str, cases_n: int, latency_s: float,
                          concurrencies: list[int]) -> list[dict[str, Any]]:
    from llmwatch import Emitter

    server = ChatServer(delay_s=latency_s).start()
    facts = corpus.RAG_FACTS
    cases = [DatasetCase(f"case-{i}", f"{facts[i % len(facts)]['question']} (#{i})", tuple(facts[i % len(facts)]["passages"]))
             for i in range(cases_n)]
    evaluations, _ = parse_evaluations("judges: []")
    rows = []
    try:
        with Emitter(bootstrap, topic="bench.traces") as emitter:
            for concurrency in concurrencies:
                tag = uuid.uuid4().hex[:8]  # a new candidate each time: nothing to resume
                candidate = Candidate("docs-rag", server.url, "demo", f"Answer only from the context. ({tag})",
                                      "bench", str(concurrency))
                summary = run_experiment(store, emitter, "bench", 1, cases, candidate, evaluations=evaluations,
                                         prices=None, concurrency=concurrency, wait_s=0.0, actor="bench")
                ceiling = concurrency / latency_s
                rows.append({"concurrency": concurrency, "cases": cases_n, "seconds": summary["replay_s"],
                             "cases_per_s": summary["cases_per_s"], "ceiling_per_s": round(ceiling, 1),
                             "efficiency": round(summary["cases_per_s"] / ceiling, 3), "errors": summary["errors"]})
    finally:
        server.stop()
    return rows


def oracle(output: str) -> str:
    """The simulated reviewer: the demo's ground truth for an output."""
    if output in corpus.TOXIC_ANSWERS or output in corpus.PASSIVE_AGGRESSIVE_ANSWERS:
        return "toxic"
    if output in {str(f[kind]) for f in corpus.RAG_FACTS for kind in ("unsupported", "subtle")}:
        return "hallucinated"
    return "fine"


def demo_cycle(store: ClickHouseStore, bootstrap: str, events_n: int, sample: float, budget: int) -> dict[str, Any]:
    from llmwatch.detectors.registry import load_all
    from llmwatch.ingest.kafka import producer
    from llmwatch.ingest.pipeline.processor import BatchHandler
    from llmwatch.ingest.pipeline.sink import RawMessage

    settings = Settings.from_env({}, clickhouse_url=store.url, database=store.database, anomaly_min_reference=100,
                                 detectors="toxicity,grounding,injection,anomaly")
    handler = BatchHandler(settings, store, load_all(settings.detector_names, settings), producer(bootstrap))
    scenario = Scenario(seed=13)
    at = (datetime.now(UTC) - timedelta(minutes=2)).isoformat()
    messages = []
    for i in range(events_n):
        doc = scenario.event(elapsed_s=240.0 * i / events_n)  # one whole incident cycle
        doc.update(event_id=str(uuid.uuid4()), trace_id=uuid.uuid4().hex, timestamp=at)
        messages.append(RawMessage("llm.traces", i % 4, i, json.dumps(doc).encode()))
    started = time.perf_counter()
    for start in range(0, len(messages), 500):
        handler.handle(messages[start : start + 500])
    scored_s = time.perf_counter() - started

    server = ChatServer().start()
    try:
        evaluations, errors = parse_evaluations(json.dumps({
            "judges": [{"name": "faithful", "endpoint": server.url, "model": "demo-judge", "sample": 0.1,
                        "rubric": "Is every claim of the answer in the context?", "filters": {"app": "docs-rag"},
                        "compare_with": "grounding", "daily_calls": 100_000, "daily_cost_usd": 10.0, "price": PRICE},
                       {"name": "polite", "endpoint": server.url, "model": "demo-judge", "sample": 0.1,
                        "rubric": "Is the answer polite and respectful to the user, without condescension?",
                        "filters": {"app": "support-bot"}, "compare_with": "toxicity", "daily_calls": 100_000,
                        "daily_cost_usd": 10.0, "price": PRICE}],
            "routing": {"sample": sample, "bands": {"toxicity": 0.1, "grounding": 0.1}, "daily_budget": budget},
        }))
        assert not errors, errors
        while run_judges(store, evaluations, prices=None):
            pass
        billed = dict(server.billed)
    finally:
        server.stop()
    recorded = store.query(f"SELECT sum(input_tokens), sum(output_tokens), sum(cost_usd), sum(calls), count() "
                           f"FROM {store.database}.judge_runs")[0]
    expected_cost = (billed["input"] * PRICE["input_per_mtok"] + billed["output"] * PRICE["output_per_mtok"]) / 1e6
    accounting = {"requests_billed": billed["requests"], "calls_recorded": int(recorded[3]), "verdicts": int(recorded[4]),
                  "input_tokens_billed": billed["input"], "input_tokens_recorded": int(recorded[0]),
                  "output_tokens_billed": billed["output"], "output_tokens_recorded": int(recorded[1]),
                  "cost_billed_usd": expected_cost, "cost_recorded_usd": float(recorded[2]),
                  "cost_difference_usd": float(recorded[2]) - expected_cost}

    route_reviews(store, evaluations, interval_s=3600, now=datetime.now(UTC) + timedelta(seconds=6))
    queued = store.query(
        f"SELECT q.rule, q.app, t.output FROM {store.database}.review_queue AS q FINAL "
        f"JOIN {store.database}.traces AS t ON t.event_id = q.event_id")
    by_route: dict[str, list[int]] = {}
    for rule, _app, output in queued:
        error = oracle(output) != "fine"
        for key in (rule, "routed (uncertain + disagreement)" if rule != "route:sample" else None):
            if key:
                by_route.setdefault(key, [0, 0])
                by_route[key][0] += error
                by_route[key][1] += 1
    truth = [oracle(json.loads(m.value)["output"]) != "fine" for m in messages]
    routing = [{"route": route, "items": n, "errors": k, "error_share": k / n, "low": wilson(k, n)[0],
                "high": wilson(k, n)[1]} for route, (k, n) in sorted(by_route.items())]
    return {"events": events_n, "scored_s": round(scored_s, 1), "error_share_of_traffic": sum(truth) / len(truth),
            "accounting": accounting, "routing": routing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=200, help="dataset size for the throughput runs")
    parser.add_argument("--latency-s", type=float, default=0.2, help="the stand-in model's time per answer")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--events", type=int, default=12_000, help="demo events in the routing cycle (240 s at 50/s)")
    parser.add_argument("--sample", type=float, default=0.02, help="routing.sample")
    parser.add_argument("--budget", type=int, default=300, help="routing.daily_budget per app")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        kafka_port, store_port = free_port(), free_port()
        broker = start_tansu(kafka_port)
        store_process = start_store(Path(work), store_port)
        try:
            store = ClickHouseStore(store_url(Path(work), store_port), "bench_evaluations")
            migrate(store, 90)
            bootstrap = f"127.0.0.1:{kafka_port}"
            throughput = experiment_throughput(store, bootstrap, args.cases, args.latency_s, args.concurrency)
            cycle = demo_cycle(store, bootstrap, args.events, args.sample, args.budget)
        finally:
            stop_process(store_process)
            stop_process(broker)
    print_table(f"Experiment throughput ({args.cases} cases, the model answers in {args.latency_s:g} s)",
                ["concurrency", "cases/s", "ceiling (concurrency / latency)", "efficiency", "errors"],
                [[r["concurrency"], f"{r['cases_per_s']:.1f}", f"{r['ceiling_per_s']:.1f}", f"{r['efficiency']:.0%}",
                  r["errors"]] for r in throughput])
    a = cycle["accounting"]
    print_table("Judge cost accounting (judge_runs against what the server billed)", ["", "billed", "recorded"], [
        ["requests / calls", a["requests_billed"], a["calls_recorded"]],
        ["input tokens", a["input_tokens_billed"], a["input_tokens_recorded"]],
        ["output tokens", a["output_tokens_billed"], a["output_tokens_recorded"]],
        ["cost (USD)", f"{a['cost_billed_usd']:.9f}", f"{a['cost_recorded_usd']:.9f}"],
    ])
    print(f"  difference: {a['cost_difference_usd']:.2e} USD")
    print_table(f"Review routing on {cycle['events']:,} demo events ({cycle['error_share_of_traffic']:.1%} of them errors)",
                ["route", "items", "reviewers call an error", "share [95% interval]"],
                [[r["route"], r["items"], r["errors"], f"{r['error_share']:.1%} [{r['low']:.1%}, {r['high']:.1%}]"]
                 for r in cycle["routing"]])
    write_json("evaluations", {"throughput": throughput, **cycle, "args": vars(args)})


if __name__ == "__main__":
    sys.exit(main())
