"""The metric catalogue of alert rules. Every metric is one aggregate query in ClickHouse over the
rule's window, filters and group-by; nothing is pulled into Python but one row per group.

Each query returns, per group: the group's values, `value` (NULL when there is nothing to
measure) and `samples` (how many events the value rests on; below a rule's min_samples the
evaluation counts as "no data").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from llmwatch.core.events import RELEASE_SQL

__all__ = ["METRICS", "ROLLUP_BUCKET_S", "Metric", "metric_named", "metric_query", "worst_events_query"]

_ALL = ("app", "environment", "release", "model")
ROLLUP_BUCKET_S = 10


def _in_window(column: str) -> str:
    return f"{{start:DateTime64(3, 'UTC')}} <= {column} AND {column} < {{end:DateTime64(3, 'UTC')}}"


@dataclass(frozen=True)
class Metric:
    name: str
    description: str
    table: str
    time_column: str
    value: str
    samples: str
    where: str = "1"
    dimensions: tuple[str, ...] = _ALL
    columns: tuple[tuple[str, str], ...] = ()  # dimension -> SQL expression, where not a column
    worst: tuple[str, str] | None = None  # (condition, score) picking the events behind a breach, worst first
    bucket_s: int = 0  # read from a rollup of this granularity: the window is widened to whole buckets
    # A derived table to read instead of `table` ({db} is the database); it may use the window's
    # {start} and {end} parameters.
    source: str = ""


def _label_rate(name: str, detector: str, bad: str, good: str, description: str) -> Metric:
    # Read from the 10-second rollup of score labels (schemas/clickhouse/003_alerts.sql).
    return Metric(
        name, description, "score_counts", "bucket",
        value=f"sumIf(n, label = '{bad}') / sum(n)", samples="sum(n)",
        where=f"detector = '{detector}' AND label IN ('{bad}', '{good}')"
        + (" AND target = 'output'" if detector == "toxicity" else ""),
        worst=(f"label = '{bad}'", "score"),
        bucket_s=ROLLUP_BUCKET_S,
    )


def _latency(q: int) -> Metric:
    return Metric(
        f"latency_p{q}", f"the {q}th percentile of latency_ms", "traces", "timestamp",
        value=f"quantileTDigestIf(0.{q:02d})(latency_ms, latency_ms IS NOT NULL)",
        samples="countIf(latency_ms IS NOT NULL)", columns=(("release", RELEASE_SQL),),
        worst=("latency_ms IS NOT NULL", "latency_ms"),
    )


# One row per conversation with a turn in the window: its dimensions and whether any turn was
# flagged. Feedback is looked up a day back from the window, as it comes after the answer.
_SESSIONS = (
    "(SELECT app, any(environment) AS environment, any(turn_release) AS release, any(turn_model) AS model, "
    "session_id, max(timestamp) AS last_turn, "
    "max(trace_id IN (SELECT trace_id FROM {db}.feedback WHERE score < 0.5 "
    "AND timestamp >= {start:DateTime64(3, 'UTC')} - INTERVAL 1 DAY)) AS negative_feedback, "
    "max(event_id IN (SELECT event_id FROM {db}.scores WHERE detector = 'toxicity' AND label = 'toxic' "
    "AND target = 'output' AND " + _in_window("timestamp") + ")) AS toxic, "
    "max(error != '') AS failed "
    # The release and model of each turn under other names: `model` is the session's below.
    "FROM (SELECT *, " + RELEASE_SQL + " AS turn_release, model AS turn_model FROM {db}.traces "
    "WHERE session_id != '' AND " + _in_window("timestamp") + ") GROUP BY app, session_id)"
)


def _session_rate(name: str, flag: str, description: str) -> Metric:
    return Metric(name, description, "traces", "last_turn", value=f"avg({flag})", samples="count()", source=_SESSIONS)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        _label_rate("toxicity_rate", "toxicity", "toxic", "ok", "share of outputs labelled toxic"),
        _label_rate("hallucination_rate", "grounding", "unsupported", "supported",
                    "share of answers with context labelled unsupported"),
        _label_rate("anomaly_rate", "anomaly", "outlier", "ok", "share of events labelled outlier"),
        _label_rate("injection_rate", "injection", "injection", "ok",
                    "share of scored inputs and retrieved-context sets labelled injection"),
        _latency(50),
        _latency(95),
        _latency(99),
        Metric("tokens_per_event", "average input + output tokens per event", "traces", "timestamp",
               value="avgIf(ifNull(input_tokens, 0) + ifNull(output_tokens, 0), "
                     "input_tokens IS NOT NULL OR output_tokens IS NOT NULL)",
               samples="countIf(input_tokens IS NOT NULL OR output_tokens IS NOT NULL)",
               columns=(("release", RELEASE_SQL),)),
        Metric("cost_usd", "total cost_usd in the window", "traces", "timestamp",
               value="sumIf(cost_usd, cost_usd IS NOT NULL)", samples="countIf(cost_usd IS NOT NULL)",
               columns=(("release", RELEASE_SQL),)),
        Metric("error_rate", "share of events with an error", "traces", "timestamp",
               value="countIf(error != '') / count()", samples="count()", columns=(("release", RELEASE_SQL),)),
        Metric("negative_feedback_rate", "share of feedback scored below 0.5", "feedback", "timestamp",
               value="countIf(score < 0.5) / count()", samples="count()", dimensions=("app",)),
        _session_rate("negative_feedback_session_rate", "negative_feedback",
                      "share of sessions (with a turn in the window) with feedback scored below 0.5"),
        _session_rate("toxic_session_rate", "toxic", "share of sessions with at least one output labelled toxic"),
        _session_rate("failed_session_rate", "failed", "share of sessions with at least one failed call"),
        Metric("drift_p_value", "smallest MMD p-value of the window's drift checks (low = drift)", "drift",
               "checked_at", value="min(p_value)", samples="min(current_size)",
               where="method = 'mmd' AND p_value IS NOT NULL", dimensions=("app",)),
        Metric("drift_score", "largest domain-classifier ROC AUC of the window's drift checks", "drift",
               "checked_at", value="max(statistic)", samples="min(current_size)",
               where="method = 'classifier' AND statistic IS NOT NULL", dimensions=("app",)),
        Metric("dlq_rate", "share of messages rejected (schema, size, bad JSON ...)", "rejected", "received_at",
               value="", samples="", dimensions=()),
    ]
}


_JUDGE = re.compile(r"^judge:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def metric_named(name: str) -> Metric | None:
    """A metric of the catalogue, or `judge:NAME`: the share of a rubric judge's verdicts that fail."""
    if name in METRICS:
        return METRICS[name]
    if isinstance(name, str) and _JUDGE.match(name):  # the pattern keeps the name safe inside SQL quotes
        return _label_rate(name, name, "fail", "pass", f"share of {name}'s verdicts that fail")
    return None


def metric_query(rule: Any, start: datetime, end: datetime, database: str) -> tuple[str, dict[str, Any]]:
    """SQL and parameters computing the rule's metric over [start, end) for each of its groups."""
    metric = metric_named(rule.metric)
    assert metric is not None
    if metric.bucket_s:
        # Whole buckets: the start floored, the end rounded up so the newest events count at once.
        start, end = _floor(start, metric.bucket_s), _floor(end, metric.bucket_s) + timedelta(seconds=metric.bucket_s)
    params: dict[str, Any] = {"start": start, "end": end}
    if metric.name == "dlq_rate":
        rejected = f"(SELECT count() FROM {database}.rejected WHERE {_in_window('received_at')})"
        accepted = f"(SELECT count() FROM {database}.traces WHERE {_in_window('timestamp')})"
        return f"SELECT {rejected} / greatest(1, {rejected} + {accepted}) AS value, {rejected} + {accepted} AS samples", params
    expressions = dict(metric.columns)
    conditions = [metric.where, _in_window(metric.time_column), *_production(metric)]
    for i, (dimension, wanted) in enumerate(sorted(rule.filters.items())):
        conditions.append(f"{expressions.get(dimension, dimension)} = {{f{i}:String}}")
        params[f"f{i}"] = wanted
    groups = [f"{expressions.get(g, g)} AS {g}" for g in rule.group_by]
    select = ", ".join([*groups, f"{metric.value} AS value", f"{metric.samples} AS samples"])
    source = metric.source.replace("{db}", database) if metric.source else f"{database}.{metric.table}"
    sql = f"SELECT {select} FROM {source} WHERE {' AND '.join(conditions)}"
    if rule.group_by:
        sql += f" GROUP BY {', '.join(rule.group_by)} ORDER BY {', '.join(rule.group_by)}"
    return sql, params


def worst_events_query(rule: Any, labels: dict[str, str], start: datetime, end: datetime, database: str,
                       limit: int) -> tuple[str, dict[str, Any]]:
    """The events behind a breach of `rule` in one group, worst first: (event_id, app, release, score)."""
    metric = metric_named(rule.metric)
    assert metric is not None and metric.worst is not None
    condition, score = metric.worst
    expressions = dict(metric.columns)
    params: dict[str, Any] = {"start": start, "end": end, "limit": limit}
    table, time_column = ("scores", "timestamp") if metric.bucket_s else (metric.table, metric.time_column)
    conditions = [metric.where, condition, _in_window(time_column), *_production(metric)]
    for i, (dimension, wanted) in enumerate(sorted({**rule.filters, **labels}.items())):
        conditions.append(f"{expressions.get(dimension, dimension)} = {{w{i}:String}}")
        params[f"w{i}"] = wanted
    release = expressions.get("release", "release")
    sql = (
        f"SELECT event_id, app, {release} AS release, max({score}) AS worst FROM {database}.{table} "
        f"WHERE {' AND '.join(conditions)} GROUP BY event_id, app, release ORDER BY worst DESC LIMIT {{limit:UInt32}}"
    )
    return sql, params


def _production(metric: Metric) -> list[str]:
    """Experiments' events (environment 'experiment') are not the app's traffic: no rule sees them."""
    return ["environment != 'experiment'"] if "environment" in metric.dimensions and metric.table in ("traces", "score_counts") else []


def _floor(moment: datetime, seconds: int) -> datetime:
    return datetime.fromtimestamp(moment.timestamp() // seconds * seconds, tz=moment.tzinfo)

