"""Review routing (`llmwatch jobs`, every `review_routing_interval_s`): besides alert escalations,
events go to the review queue when

* `route:sample`: a uniform random share (by a hash of the event id), whatever their scores. The
  only unbiased slice: the Quality page estimates each detector's precision and recall on it;
* `route:disagreement`: two signals disagree (a judge and the detector it `compare_with`s, or a
  pair listed under routing.disagree);
* `route:uncertain`: a detector's score lies within its band around the threshold;

within a per-app daily budget: the sample first, then disagreements, then the most uncertain.
Each item says why it was queued. A routed event whose input and output a reviewer already has in
the queue (the same text, answered again) is not queued twice: one label covers every copy, and
a popular answer near a threshold would otherwise take the whole budget. The sample is never
deduplicated: it must stay uniform over events. The job reads score rows written since its last mark (kept in
llmwatch.job_marks), so a judge's verdict arriving later still meets its detector.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from llmwatch.alerts.evaluations import DETECTOR_THRESHOLDS, Evaluations

log = logging.getLogger(__name__)

__all__ = ["Candidate", "choose", "route_reviews", "signal_pairs"]

JOB = "review-routing"
SETTLE = timedelta(seconds=5)
LOOKBACK = timedelta(hours=6)  # how far back an event's other scores are looked for
MAX_CANDIDATES = 5000


def _threshold(signal: str) -> float:
    return DETECTOR_THRESHOLDS.get(signal, 0.5)  # judges: fail from 0.5


def signal_pairs(evaluations: Evaluations) -> list[tuple[str, str]]:
    """The pairs of signals whose disagreement routes an event."""
    pairs = [(j.compare_with, j.detector) for j in evaluations.judges if j.compare_with]
    return pairs + [p for p in evaluations.routing.disagree if p not in pairs]


@dataclass(frozen=True)
class Candidate:
    event_id: str
    app: str
    release: str
    sampled: bool
    scores: dict[str, float]  # signal -> score, for the signals it has


def _says(c: Candidate, signal: str) -> str:
    verdict = "flags it" if c.scores[signal] >= _threshold(signal) else "passes it"
    return f"{signal} {verdict} ({c.scores[signal]:.2f})"


def choose(candidates: list[Candidate], evaluations: Evaluations, left: dict[str, int],
           content: dict[str, int] | None = None, queued: set[int] | None = None) -> list[tuple[Candidate, str, str, float | None]]:
    """The items to queue, as (candidate, rule, reason, score), within what each app has `left` of
    its daily budget; routed ones at most one per text (`content`: event id -> hash of its input
    and output; `queued`: the hashes already in the queue). Pure."""
    content, seen = content or {}, set(queued or ())
    bands = evaluations.routing.bands
    pairs = signal_pairs(evaluations)
    ranked: list[tuple[int, float, Candidate, str, str, float | None]] = []
    for c in candidates:
        if c.sampled:
            ranked.append((0, 0.0, c, "route:sample", f"uniform sample ({evaluations.routing.sample:.2%} of events)", None))
            continue
        disputes = [(a, b) for a, b in pairs if a in c.scores and b in c.scores
                    and (c.scores[a] >= _threshold(a)) != (c.scores[b] >= _threshold(b))]
        if disputes:
            a, b = disputes[0]
            ranked.append((1, 0.0, c, "route:disagreement", f"{_says(c, a)}, {_says(c, b)}", c.scores[a]))
            continue
        close = [(abs(score - _threshold(s)), s) for s, score in c.scores.items() if s in bands
                 and abs(score - _threshold(s)) <= bands[s]]
        if close:
            distance, s = min(close)
            ranked.append((2, distance, c, "route:uncertain",
                           f"{s} {c.scores[s]:.2f} within {bands[s]:g} of its threshold {_threshold(s):g}", c.scores[s]))
    ranked.sort(key=lambda item: (item[0], item[1]))
    remaining = dict(left)
    chosen = []
    for _, _, c, rule, reason, score in ranked:
        if remaining.get(c.app, evaluations.routing.daily_budget) <= 0:
            continue
        text = content.get(c.event_id)
        if rule != "route:sample" and text is not None:
            if text in seen:
                continue
            seen.add(text)
        remaining[c.app] = remaining.get(c.app, evaluations.routing.daily_budget) - 1
        chosen.append((c, rule, reason, score))
    return chosen


def _signals(evaluations: Evaluations) -> list[str]:
    names = list(evaluations.routing.bands)
    for a, b in signal_pairs(evaluations):
        names += [a, b]
    return list(dict.fromkeys(names))


def _candidates(store: Any, evaluations: Evaluations, start: datetime, end: datetime) -> list[Candidate]:
    db = store.database
    signals = _signals(evaluations)
    params: dict[str, Any] = {"start": start, "end": end, "lookback": start - LOOKBACK,
                              "per_million": int(evaluations.routing.sample * 1_000_000), "limit": MAX_CANDIDATES}
    columns, wanted = [], ["sampled"]
    for i, signal in enumerate(signals):
        params[f"s{i}"] = signal
        target = " AND target = 'output'" if signal == "toxicity" else ""
        columns.append(f"maxIf(score, detector = {{s{i}:String}}{target}) AS s{i}")
        if signal in evaluations.routing.bands:
            params[f"t{i}"], params[f"b{i}"] = _threshold(signal), evaluations.routing.bands[signal]
            wanted.append(f"abs(s{i} - {{t{i}:Float64}}) <= {{b{i}:Float64}}")
    index = {s: i for i, s in enumerate(signals)}
    for a, b in signal_pairs(evaluations):
        ia, ib = index[a], index[b]
        wanted.append(f"(s{ia} >= {_threshold(a)!r}) != (s{ib} >= {_threshold(b)!r})")
    sql = (
        "SELECT toString(event_id), any(app), any(release), "
        "cityHash64(toString(event_id)) % 1000000 < {per_million:UInt32} AS sampled"
        + "".join(f", {c}" for c in columns)
        + f" FROM {db}.scores WHERE timestamp >= {{lookback:DateTime64(3, 'UTC')}} AND environment != 'experiment' "
        # scored_at is not in the sort key: the event time bounds what is read (partitions, key).
        f"AND event_id IN (SELECT event_id FROM {db}.scores WHERE timestamp >= {{lookback:DateTime64(3, 'UTC')}} "
        "AND scored_at > {start:DateTime64(3, 'UTC')} AND scored_at <= {end:DateTime64(3, 'UTC')}) "
        f"AND event_id NOT IN (SELECT event_id FROM {db}.review_queue WHERE rule LIKE 'route:%' "
        "AND queued_at >= {lookback:DateTime64(3, 'UTC')}) "
        f"GROUP BY event_id HAVING {' OR '.join(f'({w})' for w in wanted)} LIMIT {{limit:UInt32}}"
    )
    result = []
    for event_id, app, release, sampled, *values in store.query(sql, params):
        scores = {s: float(v) for s, v in zip(signals, values) if v is not None}
        result.append(Candidate(event_id, app, release, bool(sampled), scores))
    return result


def _contents(store: Any, candidates: list[Candidate], since: datetime) -> tuple[dict[str, int], set[int]]:
    """Each candidate's text hash, and the hashes of what routing queued already."""
    db = store.database
    ids = [c.event_id for c in candidates if not c.sampled]
    if not ids:
        return {}, set()
    rows = store.query(f"SELECT toString(event_id), cityHash64(input, output) FROM {db}.traces "
                       "WHERE timestamp >= {since:DateTime64(3, 'UTC')} - INTERVAL 6 HOUR AND event_id IN {ids:Array(UUID)}",
                       {"ids": ids, "since": since})
    queued = store.query(
        f"SELECT DISTINCT cityHash64(input, output) FROM {db}.traces WHERE timestamp >= {{since:DateTime64(3, 'UTC')}} - "
        f"INTERVAL 6 HOUR AND event_id IN (SELECT event_id FROM {db}.review_queue WHERE rule IN ('route:uncertain', "
        "'route:disagreement') AND queued_at >= {since:DateTime64(3, 'UTC')})",
        {"since": since})
    return {e: int(h) for e, h in rows}, {int(h) for (h,) in queued}


def _left_today(store: Any, evaluations: Evaluations, now: datetime) -> dict[str, int]:
    rows = store.query(
        f"SELECT app, count() FROM {store.database}.review_queue FINAL WHERE rule LIKE 'route:%' "
        "AND toDate(queued_at, 'UTC') = {day:Date} GROUP BY app", {"day": now.date()})
    return {app: evaluations.routing.daily_budget - int(n) for app, n in rows}


def _mark(store: Any, now: datetime, interval_s: float) -> datetime:
    rows = store.query(f"SELECT argMax(mark, updated_at) FROM {store.database}.job_marks WHERE job = {{job:String}} "
                       "GROUP BY job", {"job": JOB})
    if not rows:
        return now - timedelta(seconds=interval_s)
    mark: datetime = rows[0][0]
    return mark if mark.tzinfo else mark.replace(tzinfo=UTC)  # the column is UTC; the driver may drop the zone


def route_reviews(store: Any, evaluations: Evaluations, interval_s: float, now: datetime | None = None) -> int:
    """One round: queue what the rules pick from the scores written since the last mark, then move
    the mark. A crash in between queues the same items again, which the queue's key collapses."""
    now = now or datetime.now(UTC)
    start, end = _mark(store, now, interval_s), now - SETTLE
    if end <= start:
        return 0
    candidates = _candidates(store, evaluations, start, end)
    content, queued = _contents(store, candidates, now - LOOKBACK)
    chosen = choose(candidates, evaluations, _left_today(store, evaluations, now), content, queued)
    store.insert("review_queue", [
        {"queued_at": now, "event_id": c.event_id, "app": c.app, "release": c.release, "rule": rule, "reason": reason,
         "score": score, "status": "open"} for c, rule, reason, score in chosen])
    store.insert("job_marks", [{"job": JOB, "mark": end, "updated_at": now}])
    if chosen:
        log.info("review routing: queued %d event(s)", len(chosen))
    return len(chosen)
