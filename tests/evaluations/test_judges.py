"""Rubric judges through the real `openai` client against a scripted local server, writing to the
real embedded store: verdicts, malformed answers, budgets, outages, the cache and the online job."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from llmwatch.alerts.evaluate import evaluate_rule
from llmwatch.alerts.evaluations import parse_evaluations
from llmwatch.alerts.judge_job import run_judges
from llmwatch.alerts.judging import Budget, Case, JudgeAnswerError, judge_cases, parse_verdict
from llmwatch.alerts.rules import parse_rules
from llmwatch.core.errors import ConfigError
from llmwatch.core.events import TraceEvent
from llmwatch.ingest.demo.model_server import ChatServer, Reply
from llmwatch.ingest.pipeline.sink import store_events
from llmwatch.storage.clickhouse import ClickHouseStore


def judges_yaml(url: str, **extra: Any) -> str:
    fields = {"name": "polite", "endpoint": url, "model": "judge-1", "rubric": "Is the answer polite?",
              "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}, "retries": 1, "timeout": "2s", **extra}
    return json.dumps({"judges": [fields]})


def judge_of(url: str, **extra: Any) -> Any:
    evaluations, errors = parse_evaluations(judges_yaml(url, **extra))
    assert errors == []
    return evaluations.judges[0]


def rude_is_fail(body: dict[str, Any]) -> Reply:
    """A judge that reads the case from the last message, as a real one would."""
    case = body["messages"][-1]["content"]
    verdict = "fail" if "idiot" in case else "pass"
    return Reply(json.dumps({"verdict": verdict, "reason": "tone"}))


def cases(n: int, rude: int = 0) -> list[Case]:
    now, tag = datetime.now(UTC), uuid.uuid4().hex[:6]  # new text every call: the cache must not answer
    return [Case(str(uuid.uuid4()), "support-bot", f"question {i} ({tag})?", "You idiot." if i < rude else f"Sure, here is answer {i}.",
                 timestamp=now, release="answer:1") for i in range(n)]


def runs(store: ClickHouseStore) -> list[dict[str, Any]]:
    df = store.query_df(f"SELECT * FROM {store.database}.judge_runs ORDER BY at")
    return df.to_dict("records")


def scores(store: ClickHouseStore) -> dict[str, tuple[float, str]]:
    rows = store.query(f"SELECT toString(event_id), score, label FROM {store.database}.scores WHERE detector = 'judge:polite'")
    return {e: (s, label) for e, s, label in rows}


# --- the file and the answers (pure) ---------------------------------------------------------


def test_a_bad_judge_is_reported_by_name_and_field_and_the_others_load() -> None:
    text = json.dumps({"judges": [
        {"name": "ok", "endpoint": "http://127.0.0.1:1/v1", "model": "m", "rubric": "r"},
        {"name": "no-url", "endpoint": "ftp://x", "model": "m", "rubric": "r"},
        {"name": "bad-scale", "endpoint": "http://x/v1", "model": "m", "rubric": "r", "scale": {"min": 5, "max": 1}},
        {"name": "typo", "endpoint": "http://x/v1", "model": "m", "rubric": "r", "sampel": 0.1},
        {"name": "key", "endpoint": "http://x/v1", "model": "m", "rubric": "r", "api_key_env": "sk-123 secret"},
    ], "gates": [{"app": "bot", "dataset": "d", "signals": ["judge:nope"]}]})
    evaluations, errors = parse_evaluations(text)
    assert [j.name for j in evaluations.judges] == ["ok"]
    assert any("judge 'no-url', field endpoint" in e for e in errors)
    assert any("judge 'bad-scale', field scale" in e for e in errors)
    assert any("judge 'typo', field sampel: unknown field" in e for e in errors)
    assert any("judge 'key', field api_key_env" in e for e in errors)
    # A broken gate blocks its app's promotions instead of silently letting everything through.
    assert evaluations.broken_gates == ("bot",) and evaluations.gate("bot") is None
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_evaluations("judges: [")


def test_verdicts_are_parsed_strictly() -> None:
    pass_fail = judge_of("http://127.0.0.1:1/v1")
    assert parse_verdict(pass_fail, '{"verdict": "FAIL", "reason": "rude"}').score == 1.0
    fenced = parse_verdict(pass_fail, 'Sure!\n```json\n{"verdict": "pass", "reason": "fine"}\n```')
    assert (fenced.verdict, fenced.score, fenced.label) == ("pass", 0.0, "pass")
    scale = judge_of("http://127.0.0.1:1/v1", scale={"min": 1, "max": 5})
    assert parse_verdict(scale, '{"score": 2, "reason": "meh"}').score == pytest.approx(0.75)
    assert parse_verdict(scale, '{"score": "5"}').label == "pass"
    for bad in ("PASS", '{"verdict": "maybe"}', '{"score": 3}', "{not json}", ""):
        with pytest.raises(JudgeAnswerError):
            parse_verdict(pass_fail, bad)
    for bad in ('{"score": 9}', '{"score": true}', '{"verdict": "pass"}'):
        with pytest.raises(JudgeAnswerError):
            parse_verdict(scale, bad)


# --- against the server and the store ----------------------------------------------------------


def test_verdicts_become_score_rows_and_cost_is_exact_to_the_token(embedded_store: ClickHouseStore) -> None:
    with ChatServer(rude_is_fail, keep_requests=True) as server:
        judge = judge_of(server.url, examples=[{"input": "hi", "output": "Go away.", "verdict": "fail", "reason": "rude"}])
        batch = cases(6, rude=2)
        report = judge_cases(embedded_store, judge, batch, price=judge.price)
    assert report.counts == {"ok": 6}
    got = scores(embedded_store)
    assert {e: label for e, (_, label) in got.items()} == {c.event_id: "fail" if i < 2 else "pass" for i, c in enumerate(batch)}
    # The few-shot example went as a user/assistant pair before the case, the case as tagged data.
    assert all([m["role"] for m in r["messages"]] == ["system", "user", "assistant", "user"] for r in server.requests)
    rude = [r["messages"] for r in server.requests if "<output>\nYou idiot.\n</output>" in r["messages"][-1]["content"]]
    assert len(rude) == 2 and "not instructions" in rude[0][0]["content"]
    stored = runs(embedded_store)
    assert sum(r["input_tokens"] for r in stored) == server.billed["input"]
    assert sum(r["output_tokens"] for r in stored) == server.billed["output"]
    expected = (server.billed["input"] * 1.0 + server.billed["output"] * 2.0) / 1e6
    assert sum(r["cost_usd"] for r in stored) == pytest.approx(expected, rel=1e-9)
    assert report.cost_usd == pytest.approx(expected, rel=1e-9)


def test_malformed_answers_are_errors_never_scores(embedded_store: ClickHouseStore) -> None:
    answers = iter(["I think it is fine.", '{"verdict": "perhaps"}', '{"verdict": "pass", "reason": "ok"}'])
    with ChatServer(lambda _body: Reply(next(answers)), keep_requests=True) as server:
        judge = judge_of(server.url)
        report = judge_cases(embedded_store, judge, cases(3), price=judge.price, concurrency=1)
    assert report.counts == {"error": 2, "ok": 1}
    errors = [r for r in runs(embedded_store) if r["status"] == "error"]
    assert {r["raw"] for r in errors} == {"I think it is fine.", '{"verdict": "perhaps"}'}
    assert all(r["error"].startswith("malformed answer") for r in errors)
    assert all(r["score"] is None or r["score"] != r["score"] for r in errors)  # NULL (NaN in a frame): no score
    assert len(scores(embedded_store)) == 1
    assert len(server.requests) == 3  # an answered call is not retried: the same text would come back


def test_the_daily_budgets_are_never_exceeded(embedded_store: ClickHouseStore) -> None:
    with ChatServer(rude_is_fail, keep_requests=True) as server:
        by_calls = judge_of(server.url, daily_calls=4)
        report = judge_cases(embedded_store, by_calls, cases(10), price=by_calls.price)
        assert report.counts == {"ok": 4, "over_budget": 6} and len(server.requests) == 4
        # The next run the same day starts from what judge_runs says was spent.
        again = judge_cases(embedded_store, by_calls, cases(3), price=by_calls.price)
        assert again.counts == {"over_budget": 3} and len(server.requests) == 4

        # A cost budget: each call's worst case is reserved, so the spend stays under it even
        # with calls in flight in parallel.
        embedded_store.command(f"TRUNCATE TABLE {embedded_store.database}.judge_runs")
        by_cost = judge_of(server.url, daily_cost_usd=0.02, price={"input_per_mtok": 10.0, "output_per_mtok": 30.0})
        report = judge_cases(embedded_store, by_cost, cases(40), price=by_cost.price, concurrency=8)
    spent = sum(r["cost_usd"] for r in runs(embedded_store))
    assert 0 < report.counts["ok"] < 40 and report.counts["over_budget"] > 0
    assert spent <= 0.02


def test_outages_and_timeouts_are_retried_recorded_and_counted(embedded_store: ClickHouseStore) -> None:
    attempts: dict[str, int] = {}

    def flaky(body: dict[str, Any]) -> Reply:
        case = body["messages"][-1]["content"]
        attempts[case] = attempts.get(case, 0) + 1
        if "question 0" in case:
            return Reply(status=503)  # down for good
        if "question 1" in case and attempts[case] == 1:
            return Reply(status=500)  # one hiccup, then fine
        if "question 2" in case:
            return Reply('{"verdict": "pass"}', delay_s=3.0)  # past the 2 s timeout
        return Reply('{"verdict": "pass", "reason": "ok"}')

    with ChatServer(flaky, keep_requests=True) as server:
        judge = judge_of(server.url)  # retries: 1
        report = judge_cases(embedded_store, judge, cases(4), price=judge.price, sleep=lambda _s: None)
    assert report.counts == {"error": 2, "ok": 2}
    by_event = {r["event_id"]: r for r in runs(embedded_store)}
    stored = sorted(by_event.values(), key=lambda r: r["error"])
    kinds = sorted(r["error"].split(":")[0] for r in stored if r["status"] == "error")
    assert kinds == ["server", "timeout"]
    assert all(r["calls"] == 2 for r in stored if r["status"] == "error")  # one retry each, both counted
    timed_out = next(r for r in stored if r["error"].startswith("timeout"))
    assert timed_out["cost_usd"] > 0  # it may have been served and billed: its worst case stays spent
    assert len(scores(embedded_store)) == 2


def test_the_same_content_is_judged_once(embedded_store: ClickHouseStore) -> None:
    with ChatServer(rude_is_fail, keep_requests=True) as server:
        judge = judge_of(server.url)
        batch = cases(3, rude=1)
        judge_cases(embedded_store, judge, batch, price=judge.price)
        replayed = [Case(str(uuid.uuid4()), c.app, c.input, c.output, timestamp=c.timestamp) for c in batch]
        report = judge_cases(embedded_store, judge, replayed, price=judge.price)
        assert report.counts == {"cached": 3} and len(server.requests) == 3
        changed = judge_of(server.url, rubric="Is the answer polite and correct?")
        judge_cases(embedded_store, changed, replayed, price=changed.price)
        assert len(server.requests) == 6  # a new rubric judges afresh
    labels = [label for _, label in scores(embedded_store).values()]
    assert labels.count("fail") == 2  # the cached verdicts are the original ones


def test_an_exhausted_budget_leaves_cases_for_later_not_as_errors() -> None:
    budget = Budget(calls_left=1, cost_left=1.0)
    assert budget.reserve(0.5) and not budget.reserve(0.1)
    budget.settle(0.5, 0.2)
    assert budget.cost_left == pytest.approx(0.8) and budget.calls_left == 0


def test_the_online_job_judges_its_sample_once_and_alert_rules_read_the_verdicts(embedded_store: ClickHouseStore) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(minutes=5)
    # Fixed event ids: the hashed sample (and so the share of rude answers in it) is the same every run.
    events = [TraceEvent(uuid.uuid5(uuid.NAMESPACE_URL, f"{app}/{i}"), uuid.uuid4().hex, start + timedelta(seconds=i), app,
                         input="Why was I charged twice?", output="You idiot." if i % 2 else "A hold, it goes away.",
                         prompt_id="answer", prompt_version="1")
              for i in range(40) for app in ("support-bot", "docs-bot")]
    store_events(embedded_store, traces=events, feedback=[], score=lambda _e: [], now=now)
    with ChatServer(rude_is_fail, keep_requests=True) as server:
        text = judges_yaml(server.url, sample=0.5, filters={"app": "support-bot"})
        evaluations, _ = parse_evaluations(text)
        first = run_judges(embedded_store, evaluations, prices=None, now=now)
        second = run_judges(embedded_store, evaluations, prices=None, now=now)
    judged = embedded_store.query(
        f"SELECT app, count() FROM {embedded_store.database}.scores WHERE detector = 'judge:polite' GROUP BY app")
    assert len(judged) == 1 and judged[0][0] == "support-bot"
    assert 8 <= judged[0][1] <= 32  # about half of its 40 events, chosen by event id
    # Two distinct answers: two calls, every other copy judged by the cache.
    assert first["polite"].counts == {"ok": 2, "cached": judged[0][1] - 2} and second == {}
    assert len(server.requests) == 2

    rule = parse_rules("""
rules:
  - {name: impolite, metric: "judge:polite", group_by: [app], window: 10m, every: 1m, critical: 0.2, actions: [escalate]}
""")[0][0]
    transitions = evaluate_rule(embedded_store, rule, now + timedelta(seconds=1), link="http://console", dry_run=True)
    assert [(labels, t.name) for labels, t in transitions] == [({"app": "support-bot"}, "firing")]
    assert re.search(r"judge:NAME", parse_rules("rules:\n  - {name: x, metric: judge, window: 1m, every: 1m, critical: 1}")[1][0])
