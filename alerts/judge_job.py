"""The online judges (`llmwatch jobs`, every `judge_interval_s`): each judge with a sample rate
judges that share of each app's recent events, chosen by a hash of the event id (so every run,
and every replica, picks the same ones), within its daily budget. Never in the worker's path.

An event counts as judged once it has a `judge:<name>` score or an error row; one whose verdict
was recorded but whose score was not (a crash between the two writes) is judged again from the
cache, at no cost.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from llmwatch.alerts.evaluations import Evaluations, Judge
from llmwatch.alerts.judging import Case, JudgeReport, judge_cases
from llmwatch.core.events import RELEASE_SQL

log = logging.getLogger(__name__)

__all__ = ["judge_price", "run_judges", "sampled_events"]

LOOKBACK = timedelta(hours=6)  # events older than this when first seen are left alone
SETTLE = timedelta(seconds=10)  # the worker's scores of an event land with it; give them time
BATCH = 200  # events per judge and run


def judge_price(judge: Judge, prices: Any) -> tuple[float, float]:
    """USD per million input and output tokens: the judge's own, or the price table's for its
    model, or zero (a local model) with a warning."""
    if judge.price is not None:
        return judge.price
    price = prices.price(judge.model, datetime.now(UTC).date()) if prices is not None else None
    if price is None:
        log.warning("judge %s: no price for model %s; its cost counts as 0 (set `price` in the judge)",
                    judge.name, judge.model)
        return 0.0, 0.0
    return price.input, price.output


def sampled_events(store: Any, judge: Judge, start: datetime, end: datetime, limit: int = BATCH) -> list[Case]:
    """The judge's sample of events in [start, end) not judged yet, oldest first."""
    db = store.database
    params: dict[str, Any] = {"start": start, "end": end, "judge": judge.name, "detector": judge.detector,
                              "per_million": int(judge.sample * 1_000_000), "limit": limit}
    conditions = ["timestamp >= {start:DateTime64(3, 'UTC')}", "timestamp < {end:DateTime64(3, 'UTC')}",
                  "environment != 'experiment'", "cityHash64(toString(event_id)) % 1000000 < {per_million:UInt32}"]
    for i, (dimension, wanted) in enumerate(sorted(judge.filters.items())):
        conditions.append(f"{RELEASE_SQL if dimension == 'release' else dimension} = {{f{i}:String}}")
        params[f"f{i}"] = wanted
    sql = (
        f"SELECT toString(event_id), app, input, output, context, timestamp, environment, {RELEASE_SQL}, model "
        f"FROM {db}.traces WHERE {' AND '.join(conditions)} "
        f"AND event_id NOT IN (SELECT event_id FROM {db}.scores WHERE detector = {{detector:String}} "
        "AND timestamp >= {start:DateTime64(3, 'UTC')}) "
        f"AND event_id NOT IN (SELECT event_id FROM {db}.judge_runs WHERE judge = {{judge:String}} AND status = 'error' "
        "AND at >= {start:DateTime64(3, 'UTC')}) "
        "ORDER BY timestamp LIMIT {limit:UInt32}"
    )
    return [Case(event_id, app, text_in, text_out, tuple(context or ()), "", timestamp, environment, release, model)
            for event_id, app, text_in, text_out, context, timestamp, environment, release, model in store.query(sql, params)]


def run_judges(store: Any, evaluations: Evaluations, prices: Any, now: datetime | None = None) -> dict[str, JudgeReport]:
    """One round of every sampling judge; returns what each did."""
    now = now or datetime.now(UTC)
    reports = {}
    for judge in evaluations.judges:
        if judge.sample <= 0:
            continue
        cases = sampled_events(store, judge, now - LOOKBACK, now - SETTLE)
        if not cases:
            continue
        report = judge_cases(store, judge, cases, price=judge_price(judge, prices))
        reports[judge.name] = report
        log.info("judge %s: %s, $%.6f", judge.name, dict(report.counts), report.cost_usd)
    return reports
