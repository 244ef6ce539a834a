"""Every query the console runs, as pure functions returning (sql, params).

Overview and Quality read the rollups (trace_stats per minute, score_counts per 10 s), never the
raw rows; Traces reads raw rows only within the app/time prefix of the table's sort key, with a
LIMIT; the small tables (alerts, drift, releases, reviews) are read directly.
"""

from __future__ import annotations

from typing import Any

from llmwatch.core.events import RELEASE_SQL
from llmwatch.dashboards.scope import Scope

__all__ = [
    "LABELS",
    "TRACE_COLUMNS",
    "_label_columns",
    "_label_condition",
    "alert_history",
    "audit_log",
    "decisions",
    "dimension_values",
    "drift_checks",
    "experiment_cases",
    "experiments",
    "feedback_for",
    "incidents",
    "label_series",
    "label_totals",
    "release_counts",
    "releases_by_first_seen",
    "review_backlog",
    "review_next",
    "reviewed_items",
    "reviews",
    "score_details",
    "session_list",
    "session_turns",
    "trace_detail",
    "trace_scores",
    "trace_search",
    "trace_steps",
    "traffic_by_release",
    "traffic_series",
    "traffic_totals",
]

Query = tuple[str, dict[str, Any]]

# The bad label of each detector the console counts, and the rows it counts among.
LABELS = {
    "toxic": ("toxicity", "toxic", "output"),
    "unsupported": ("grounding", "unsupported", ""),
    "anomalous": ("anomaly", "outlier", ""),
    "injection": ("injection", "injection", ""),  # inputs and retrieved-context sets
}
_GOOD = {"toxicity": "ok", "grounding": "supported", "anomaly": "ok", "injection": "ok"}

def _quantile(q: float) -> str:
    # From the summed latency histogram `h` (schemas/clickhouse/004_console.sql): the bucket where
    # the cumulative count reaches q, at its geometric middle. NULL without latencies.
    return (f"if(empty(h), NULL, pow(1.05, mapKeys(h)[arrayFirstIndex(c -> c >= {q} * arraySum(mapValues(h)), "
            f"arrayCumSum(mapValues(h)))] - 0.5) - 1)")


def _traffic(db: str, where: str, keys: tuple[str, ...], order: str = "") -> str:
    """Per `keys`: events, errors, tokens, cost and latency p50/p95/p99 from trace_stats."""
    select_keys = "".join(f"{k}, " for k in keys)
    aliases = [k.rsplit(" AS ", 1)[-1] for k in keys]
    group = f" GROUP BY {', '.join(aliases)}" if keys else ""
    inner = (
        f"SELECT {select_keys}sum(events) AS events, sum(errors) AS errors, "
        f"sum(input_tokens) + sum(output_tokens) AS tokens, sum(cost_usd) AS cost_usd, sumMap(latency_hist) AS h "
        f"FROM {db}.trace_stats WHERE {where}{group}"
    )
    names = "".join(f"{alias}, " for alias in aliases)
    outer = (f"SELECT {names}events, errors, tokens, cost_usd, {_quantile(0.5)} AS p50, {_quantile(0.95)} AS p95, "
             f"{_quantile(0.99)} AS p99 FROM ({inner})")
    return outer + (f" ORDER BY {order}" if order else "")


def traffic_totals(scope: Scope, db: str) -> Query:
    where, params = scope.where("bucket")
    return _traffic(db, where, ()), params


def traffic_step(scope: Scope) -> int:
    """Chart step of traffic series: trace_stats holds minutes, so never finer than that."""
    return max(60, scope.bucket_s)


def traffic_series(scope: Scope, db: str, by: str = "app") -> Query:
    where, params = scope.where("bucket")
    params["step"] = traffic_step(scope)
    t = "toStartOfInterval(bucket, toIntervalSecond({step:UInt32})) AS t"
    return _traffic(db, where, (t, f"{by} AS series" if by.startswith("'") else by), order="t"), params


def traffic_by_release(scope: Scope, db: str) -> Query:
    where, params = scope.where("bucket")
    return _traffic(db, where, ("app", "release"), order="app, events DESC"), params


def _label_condition() -> str:
    parts = []
    for detector, bad, target in LABELS.values():
        labels = f"label IN ('{bad}', '{_GOOD[detector]}')"
        parts.append(f"(detector = '{detector}' AND {labels}" + (f" AND target = '{target}')" if target else ")"))
    return "(" + " OR ".join(parts) + ")"


def _label_columns() -> str:
    # For each label: how many bad rows, and how many rows it was judged among.
    columns = []
    for name, (detector, bad, _) in LABELS.items():
        columns.append(f"sumIf(n, detector = '{detector}' AND label = '{bad}') AS {name}")
        columns.append(f"sumIf(n, detector = '{detector}') AS {name}_of")
    return ", ".join(columns)


def label_totals(scope: Scope, db: str, by: tuple[str, ...] = ()) -> Query:
    """Bad-label counts and their denominators, per `by` (app, release...)."""
    where, params = scope.where("bucket")
    group = ", ".join(by)
    select = f"{group + ', ' if group else ''}{_label_columns()}"
    sql = f"SELECT {select} FROM {db}.score_counts WHERE {where} AND {_label_condition()}"
    return (sql + (f" GROUP BY {group} ORDER BY {group}" if group else "")), params


def label_series(scope: Scope, db: str, by: str | None = None) -> Query:
    where, params = scope.where("bucket")
    params["step"] = scope.bucket_s
    key = f", {by}" if by else ""
    return (
        f"SELECT toStartOfInterval(bucket, toIntervalSecond({{step:UInt32}})) AS t{key}, {_label_columns()} "
        f"FROM {db}.score_counts WHERE {where} AND {_label_condition()} GROUP BY t{key} ORDER BY t{key}",
        params,
    )


def release_counts(scope: Scope, db: str, app: str, releases: list[str]) -> Query:
    """Label counts of the given releases of one app over the scope's time range (canary
    analysis compares them over the same period, ignoring the scope's other filters)."""
    same_period = Scope(scope.start, scope.end, scope.range_name, {"app": (app,), "release": tuple(releases)})
    return label_totals(same_period, db, by=("release",))


def releases_by_first_seen(scope: Scope, db: str, app: str) -> Query:
    """An app's releases with traffic in the scope's time range, the newest first."""
    params = {"start": scope.start, "end": scope.end, "app": app}
    return (
        f"SELECT release, min(bucket) AS first_seen FROM {db}.trace_stats WHERE app = {{app:String}} "
        f"AND bucket >= {{start:DateTime64(3, 'UTC')}} AND bucket < {{end:DateTime64(3, 'UTC')}} "
        f"GROUP BY release ORDER BY first_seen DESC, release",
        params,
    )


def incidents(db: str, open_only: bool, limit: int = 200) -> Query:
    """The latest state of each (rule, group), newest first; with open_only just pending/firing."""
    having = "HAVING status IN ('pending', 'firing')" if open_only else ""
    return (
        f"SELECT rule, group_key, argMax(labels, at) AS labels, argMax(status, at) AS status, "
        f"argMax(level, at) AS level, argMax(value, at) AS value, argMax(threshold, at) AS threshold, "
        f"argMax(samples, at) AS samples, argMax(since, at) AS since, max(at) AS last_change "
        f"FROM {db}.alerts GROUP BY rule, group_key {having} ORDER BY last_change DESC LIMIT {{limit:UInt32}}",
        {"limit": limit},
    )


def alert_history(db: str, rule: str, group_key: str, limit: int = 500) -> Query:
    return (
        f"SELECT at, transition, status, level, value, threshold, samples FROM {db}.alerts "
        f"WHERE rule = {{rule:String}} AND group_key = {{group_key:String}} ORDER BY at DESC LIMIT {{limit:UInt32}}",
        {"rule": rule, "group_key": group_key, "limit": limit},
    )


def drift_checks(scope: Scope, db: str) -> Query:
    where, params = scope.where("checked_at", skip=("release", "environment", "model"))
    return (
        f"SELECT checked_at, app, target, method, reference, current, reference_size, current_size, statistic, "
        f"p_value, threshold, verdict, terms_up, terms_down FROM {db}.drift WHERE {where} "
        f"ORDER BY checked_at DESC LIMIT 5000",
        params,
    )


# Score filters of the Traces page: detector -> (low, high).
ScoreRanges = dict[str, tuple[float, float]]


TRACE_COLUMNS = ("event_id", "timestamp", "app", "release", "model", "user_id", "input", "output", "latency_ms", "error")


def trace_search(scope: Scope, db: str, *, text: str = "", user_id: str = "", scores: ScoreRanges | None = None,
                 limit: int = 100) -> Query:
    """The newest matching traces. Score ranges select through the scores table (same app and
    time prefix), text is a case-insensitive substring of input or output."""
    where, params = scope.where("timestamp", {"release": RELEASE_SQL})
    conditions = [where]
    if text:
        conditions.append("(positionCaseInsensitiveUTF8(output, {text:String}) > 0 "
                          "OR positionCaseInsensitiveUTF8(input, {text:String}) > 0)")
        params["text"] = text
    if user_id:
        conditions.append("user_id = {user_id:String}")
        params["user_id"] = user_id
    score_where, _ = scope.where("timestamp")
    for i, (detector, (low, high)) in enumerate(sorted((scores or {}).items())):
        conditions.append(
            f"event_id IN (SELECT event_id FROM {db}.scores WHERE {score_where} AND detector = {{d{i}:String}} "
            f"AND score >= {{lo{i}:Float64}} AND score <= {{hi{i}:Float64}})"
        )
        params.update({f"d{i}": detector, f"lo{i}": low, f"hi{i}": high})
    params["limit"] = limit
    return (
        f"SELECT event_id, timestamp, app, {RELEASE_SQL} AS release, model, user_id, "
        f"substring(input, 1, 160) AS input, substring(output, 1, 160) AS output, latency_ms, error "
        f"FROM {db}.traces WHERE {' AND '.join(conditions)} ORDER BY timestamp DESC LIMIT {{limit:UInt32}}",
        params,
    )


def trace_scores(db: str, event_ids: list[str]) -> Query:
    return (
        f"SELECT event_id, detector, target, argMax(score, scored_at) AS score, argMax(label, scored_at) AS label "
        f"FROM {db}.scores WHERE event_id IN {{ids:Array(UUID)}} GROUP BY event_id, detector, target",
        {"ids": event_ids},
    )


def trace_detail(db: str, event_id: str) -> Query:
    return (
        f"SELECT event_id, trace_id, span_id, timestamp, app, environment, {RELEASE_SQL} AS release, model, provider, "
        f"input, input_messages, output, context, context_ids, latency_ms, input_tokens, output_tokens, cost_usd, "
        f"user_id, session_id, tags, error, pii FROM {db}.traces WHERE event_id = {{id:UUID}} LIMIT 1",
        {"id": event_id},
    )


def trace_steps(db: str, trace_id: str) -> Query:
    """Every step of one trace: its LLM calls (trace events) and its other spans, for the tree."""
    return (
        f"SELECT 'llm' AS source, toString(event_id) AS event_id, span_id, parent_span_id, timestamp, "
        f"if(model != '', model, 'llm call') AS name, 'llm' AS span_kind, latency_ms AS duration_ms, error, "
        f"substring(output, 1, 120) AS summary FROM {db}.traces WHERE trace_id = {{t:String}} "
        f"UNION ALL "
        f"SELECT 'span', toString(event_id), span_id, parent_span_id, timestamp, name, span_kind, duration_ms, error, "
        f"substring(output, 1, 120) FROM {db}.spans WHERE trace_id = {{t:String}} "
        f"ORDER BY timestamp LIMIT 2000",
        {"t": trace_id},
    )


def _session_flags(scope: Scope, db: str) -> str:
    """Per-session counts of what a reviewer looks for: toxic turns, unsupported answers,
    negative feedback, errors (over the rows `s` of one session's turns)."""
    score_where, _ = scope.where("timestamp")
    feedback_where, _ = scope.where("timestamp", skip=("release", "environment", "model"))  # columns it lacks
    toxic, unsupported = LABELS["toxic"], LABELS["unsupported"]
    return (
        f"countIf(event_id IN (SELECT event_id FROM {db}.scores WHERE {score_where} AND detector = '{toxic[0]}' "
        f"AND label = '{toxic[1]}' AND target = '{toxic[2]}')) AS toxic, "
        f"countIf(event_id IN (SELECT event_id FROM {db}.scores WHERE {score_where} AND detector = '{unsupported[0]}' "
        f"AND label = '{unsupported[1]}')) AS unsupported, "
        f"countIf(trace_id IN (SELECT trace_id FROM {db}.feedback WHERE {feedback_where} AND score < 0.5)) "
        f"AS negative_feedback, "
        f"countIf(error != '') AS errors"
    )


def session_list(scope: Scope, db: str, *, text: str = "", flagged_only: bool = False, limit: int = 100) -> Query:
    """Conversations (events grouped by session_id), newest first, with their flags. `text`
    matches a session id, a user, or a word of any turn."""
    where, params = scope.where("timestamp", {"release": RELEASE_SQL})
    conditions = [where, "session_id != ''"]
    if text:
        conditions.append(
            f"session_id IN (SELECT session_id FROM {db}.traces WHERE {where} AND session_id != '' AND "
            "(session_id = {text:String} OR user_id = {text:String} OR positionCaseInsensitiveUTF8(input, {text:String}) > 0 "
            "OR positionCaseInsensitiveUTF8(output, {text:String}) > 0))")
        params["text"] = text
    params["limit"] = limit
    having = " HAVING toxic + unsupported + negative_feedback + errors > 0" if flagged_only else ""
    return (
        f"SELECT app, session_id, any(user_id) AS user_id, min(timestamp) AS started, max(timestamp) AS last_turn, "
        f"count() AS turns, {_session_flags(scope, db)} "
        f"FROM {db}.traces WHERE {' AND '.join(conditions)} GROUP BY app, session_id{having} "
        f"ORDER BY last_turn DESC LIMIT {{limit:UInt32}}",
        params,
    )


def session_turns(db: str, app: str, session_id: str) -> Query:
    """One conversation's turns in time order, with each turn's bad labels."""
    toxic, unsupported = LABELS["toxic"], LABELS["unsupported"]
    return (
        f"SELECT toString(t.event_id) AS event_id, t.trace_id AS trace_id, t.timestamp AS timestamp, t.input AS input, "
        f"t.output AS output, t.error AS error, "
        f"countIf(s.detector = '{toxic[0]}' AND s.label = '{toxic[1]}' AND s.target = '{toxic[2]}') > 0 AS toxic, "
        f"countIf(s.detector = '{unsupported[0]}' AND s.label = '{unsupported[1]}') > 0 AS unsupported "
        f"FROM {db}.traces AS t LEFT JOIN {db}.scores AS s ON s.event_id = t.event_id AND s.app = t.app "
        f"WHERE t.app = {{app:String}} AND t.session_id = {{s:String}} "
        f"GROUP BY event_id, trace_id, timestamp, input, output, error ORDER BY timestamp LIMIT 1000",
        {"app": app, "s": session_id},
    )


def score_details(db: str, event_id: str) -> Query:
    return (
        f"SELECT detector, detector_version, target, score, label, details FROM {db}.scores "
        f"WHERE event_id = {{id:UUID}} ORDER BY detector, target, scored_at DESC LIMIT 1 BY detector, target",
        {"id": event_id},
    )


def feedback_for(db: str, trace_id: str) -> Query:
    return (
        f"SELECT timestamp, score, comment, user_id FROM {db}.feedback WHERE trace_id = {{t:String}} ORDER BY timestamp",
        {"t": trace_id},
    )


def review_next(db: str, reviewer: str, decisions_needed: int, app: str = "") -> Query:
    """The oldest queued event this reviewer has not decided and that still needs decisions."""
    app_filter = "AND q.app = {app:String}" if app else ""
    return (
        f"SELECT q.event_id, q.app, q.release, q.rule, q.reason, q.score, q.queued_at FROM {db}.review_queue AS q FINAL "
        f"WHERE q.status = 'open' {app_filter} "
        f"AND q.event_id NOT IN (SELECT event_id FROM {db}.reviews FINAL WHERE reviewer = {{reviewer:String}}) "
        f"AND q.event_id NOT IN (SELECT event_id FROM {db}.reviews FINAL GROUP BY event_id "
        f"HAVING uniqExact(reviewer) >= {{needed:UInt32}}) "
        f"ORDER BY q.queued_at, q.event_id LIMIT 1",
        {"reviewer": reviewer, "needed": decisions_needed, "app": app},
    )


def review_backlog(db: str, decisions_needed: int) -> Query:
    return (
        f"SELECT count() FROM (SELECT DISTINCT event_id FROM {db}.review_queue FINAL WHERE status = 'open') AS q "
        f"WHERE q.event_id NOT IN (SELECT event_id FROM {db}.reviews FINAL GROUP BY event_id "
        f"HAVING uniqExact(reviewer) >= {{needed:UInt32}})",
        {"needed": decisions_needed},
    )


def reviewed_items(db: str, rule: str = "", since: Any = None) -> Query:
    """Each decided review-queue item (of `rule`, or any) with the reviewers' majority decision, and
    whether each output detector and judge flagged it (score >= 0.5): one row per (item, signal)."""
    conditions = ["1"] + (["rule = {rule:String}"] if rule else []) + (
        ["queued_at >= {since:DateTime64(3, 'UTC')}"] if since is not None else [])
    return (
        f"SELECT q.app AS app, toString(q.event_id) AS event_id, q.rule AS rule, r.decision AS decision, "
        f"s.detector AS detector, max(s.score >= 0.5) AS flagged "
        f"FROM (SELECT app, event_id, rule FROM {db}.review_queue FINAL WHERE {' AND '.join(conditions)}) AS q "
        f"JOIN (SELECT event_id, topK(1)(decision)[1] AS decision FROM {db}.reviews FINAL GROUP BY event_id) AS r "
        f"ON r.event_id = q.event_id "
        f"LEFT JOIN (SELECT event_id, detector, score FROM {db}.scores WHERE score IS NOT NULL "
        f"AND (detector = 'grounding' OR (detector = 'toxicity' AND target = 'output') OR startsWith(detector, 'judge:')) "
        f"AND event_id IN (SELECT event_id FROM {db}.review_queue)) AS s ON s.event_id = q.event_id "
        f"GROUP BY app, event_id, rule, decision, detector ORDER BY app, event_id, detector",
        {"rule": rule, "since": since},
    )


def experiments(db: str, app: str = "", limit: int = 200) -> Query:
    """The newest experiments (of one app, or all), their summary JSON included."""
    return (
        f"SELECT experiment_id, app, release, dataset, dataset_version, status, cases, summary, updated_at "
        f"FROM {db}.experiments FINAL WHERE {{app:String}} = '' OR app = {{app:String}} "
        f"ORDER BY updated_at DESC LIMIT {{limit:UInt32}}",
        {"app": app, "limit": limit},
    )


def experiment_cases(db: str, experiment_ids: list[str]) -> Query:
    """Each case of these experiments: the input, the output, and one row per output signal's score."""
    return (
        f"SELECT c.experiment_id AS experiment_id, c.case_id AS case_id, t.input AS input, c.output AS output, "
        f"c.status AS status, c.error AS error, s.detector AS detector, s.score AS score "
        f"FROM {db}.experiment_cases AS c FINAL "
        f"LEFT JOIN (SELECT event_id, input FROM {db}.traces WHERE environment = 'experiment' AND event_id IN "
        f"(SELECT event_id FROM {db}.experiment_cases WHERE experiment_id IN {{ids:Array(String)}})) AS t ON t.event_id = c.event_id "
        f"LEFT JOIN (SELECT event_id, detector, max(score) AS score FROM {db}.scores WHERE event_id IN "
        f"(SELECT event_id FROM {db}.experiment_cases WHERE experiment_id IN {{ids:Array(String)}}) "
        f"AND (detector = 'grounding' OR (detector = 'toxicity' AND target = 'output') OR startsWith(detector, 'judge:')) "
        f"GROUP BY event_id, detector) AS s ON s.event_id = c.event_id "
        f"WHERE c.experiment_id IN {{ids:Array(String)}} ORDER BY c.case_id",
        {"ids": experiment_ids},
    )


def decisions(db: str) -> Query:
    """Every decision (latest per reviewer and event), without the texts: for agreement."""
    return f"SELECT event_id, app, release, reviewer, decision, decided_at FROM {db}.reviews FINAL ORDER BY decided_at", {}


def reviews(db: str) -> Query:
    """Every decision (latest per reviewer and event), with the event's text for the dataset."""
    return (
        f"SELECT r.event_id, r.app, r.release, r.reviewer, r.decision, r.note, r.decided_at, t.input, t.output, "
        f"t.context FROM {db}.reviews AS r FINAL LEFT JOIN (SELECT event_id, input, output, context FROM {db}.traces "
        f"WHERE event_id IN (SELECT event_id FROM {db}.reviews)) AS t ON t.event_id = r.event_id ORDER BY r.decided_at",
        {},
    )


def audit_log(db: str, actions: tuple[str, ...] = (), app: str = "", limit: int = 200) -> Query:
    """The newest audit rows, of these actions (all without) and this app (any without)."""
    conditions = (["action IN {actions:Array(String)}"] if actions else []) + (["app = {app:String}"] if app else [])
    where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
    return (
        f"SELECT at, actor, action, app, release, details FROM {db}.audit_log {where}"
        f"ORDER BY at DESC LIMIT {{limit:UInt32}}",
        {"actions": list(actions), "app": app, "limit": limit},
    )


def dimension_values(db: str, dimension: str, scope: Scope) -> Query:
    """Values of an app/release/environment/model filter seen in the scope's time range."""
    where, params = scope.where("bucket", skip=(dimension,))
    return f"SELECT DISTINCT {dimension} FROM {db}.trace_stats WHERE {where} ORDER BY {dimension} LIMIT 500", params
