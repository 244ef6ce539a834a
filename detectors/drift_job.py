"""The scheduled drift check: per app and side (input / output), and per release within the
current window, compare stored embeddings of a reference with the current window and write one
llmwatch.drift row per method (MMD permutation test, domain classifier, and with `drift_evidently`
Evidently's own method as a cross-check).

Reference: the `drift_reference_s` before the current window, or, with `drift_reference_release`
set, every stored event of that release. Samples are taken in ClickHouse by a hash of event_id
(deterministic, no full scan into Python), at most `drift_max_samples` a side. Below
`drift_min_samples` a side the row says so and carries no verdict.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from llmwatch.core.settings import Settings
from llmwatch.detectors.drift import DriftResult, classifier_test, evidently_test, mmd_test, moved_terms
from llmwatch.detectors.embedding import dequantise
from llmwatch.storage.clickhouse import Store

log = logging.getLogger(__name__)

__all__ = ["Window", "run_drift_checks", "sample_window"]


@dataclass(frozen=True)
class Window:
    """Which stored embeddings a side of the comparison reads."""

    label: str  # written to the drift table: "2026-11-22 10:00/11:00" or "release answer:7"
    start: datetime | None = None
    end: datetime | None = None
    release: str | None = None

    def where(self) -> tuple[str, dict[str, Any]]:
        if self.release is not None:
            return "release = {w_release:String}", {"w_release": self.release}
        return (
            "timestamp >= {w_start:DateTime64(3, 'UTC')} AND timestamp < {w_end:DateTime64(3, 'UTC')}",
            {"w_start": self.start, "w_end": self.end},
        )

    @classmethod
    def between(cls, start: datetime, end: datetime) -> Window:
        """The time window [start, end), labelled to the minute as the drift table shows it."""
        return cls(f"{start:%Y-%m-%d %H:%M}/{end:%Y-%m-%d %H:%M}", start, end)

    @classmethod
    def from_label(cls, label: str) -> tuple[Window, str | None]:
        """The window a drift row's reference/current label names (to minute precision), and
        the release it was restricted to, if any. ValueError for a label it did not write."""
        if label.startswith("release "):
            return cls(label, release=label.removeprefix("release ")), None
        span, _, release = label.partition(" release ")
        start, end = (datetime.strptime(part, "%Y-%m-%d %H:%M").replace(tzinfo=UTC) for part in span.split("/"))
        return cls(label, start, end + timedelta(minutes=1)), release or None


def sample_window(store: Store, app: str, target: str, window: Window, limit: int, release: str | None = None) -> tuple[np.ndarray, list[str]]:
    """Up to `limit` vectors of one app and side in `window`, with their texts (for moved terms)."""
    where, params = window.where()
    if release is not None:
        where += " AND release = {only_release:String}"
        params["only_release"] = release
    db = store.database
    sampled = store.query(
        f"SELECT event_id, any(vector) FROM {db}.embeddings "
        f"WHERE app = {{app:String}} AND target = {{target:String}} AND {where} "
        f"GROUP BY event_id ORDER BY cityHash64(event_id) LIMIT {{limit:UInt32}}",
        {"app": app, "target": target, "limit": limit, **params},
    )
    if not sampled:
        return np.zeros((0, 0), dtype=np.float32), []
    # Texts of just the sampled events (they may have expired: then no terms, still a verdict).
    texts = dict(store.query(
        f"SELECT event_id, {target} FROM {db}.traces WHERE app = {{app:String}} AND event_id IN {{ids:Array(UUID)}}",
        {"app": app, "ids": [event_id for event_id, _ in sampled]},
    ))
    return dequantise([vector for _, vector in sampled]), [texts.get(event_id, "") for event_id, _ in sampled]


def _row(now: datetime, app: str, target: str, reference: Window, current: Window, result: DriftResult,
         moved: list[dict[str, Any]]) -> dict[str, Any]:
    up = [m["term"] for m in moved if m["log_odds"] > 0][:10]
    down = [m["term"] for m in moved if m["log_odds"] < 0][:10]
    verdict = "insufficient_data" if result.drift is None else ("drift" if result.drift else "no_drift")
    return {
        "checked_at": now,
        "app": app,
        "target": target,
        "method": result.method,
        "reference": reference.label,
        "current": current.label,
        "reference_size": result.n_reference,
        "current_size": result.n_current,
        "statistic": result.statistic,
        "p_value": result.p_value,
        "threshold": result.threshold,
        "drifted": None if result.drift is None else int(result.drift),
        "verdict": verdict,
        "terms_up": up if result.drift else [],
        "terms_down": down if result.drift else [],
    }


def run_drift_checks(store: Store, settings: Settings, now: datetime | None = None,
                     rng: np.random.Generator | None = None,
                     on_row: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """One round of drift checks for every app with embeddings in the current window. Returns
    (and stores) the drift rows."""
    now = now or datetime.now(UTC)
    rng = rng or np.random.default_rng(settings.drift_seed)
    window = timedelta(seconds=settings.drift_window_s)
    current = Window.between(now - window, now)
    if settings.drift_reference_release:
        reference = Window(f"release {settings.drift_reference_release}", release=settings.drift_reference_release)
    else:
        reference = Window.between(now - window - timedelta(seconds=settings.drift_reference_s), now - window)
    where, params = current.where()
    groups = store.query(
        f"SELECT app, target, groupUniqArray(release) FROM {store.database}.embeddings WHERE {where} "
        "GROUP BY app, target ORDER BY app, target",
        params,
    )
    rows: list[dict[str, Any]] = []
    for app, target, releases in groups:
        ref_vectors, ref_texts = sample_window(store, app, target, reference, settings.drift_max_samples)
        # The whole app first, then each release on its own when there is more than one.
        scopes: list[str | None] = [None] + (sorted(releases) if len(releases) > 1 else [])
        for release in scopes:
            cur_vectors, cur_texts = sample_window(store, app, target, current, settings.drift_max_samples, release)
            label = current if release is None else Window(f"{current.label} release {release}")
            moved = moved_terms(reference=ref_texts, current=cur_texts) if len(cur_texts) else []
            for result in _tests(ref_vectors, cur_vectors, settings, rng):
                row = _row(now, app, target, reference, label, result, moved)
                rows.append(row)
                if on_row:
                    on_row(row)
    store.insert("drift", rows)
    log.info("drift: %d checks, %d drifted", len(rows), sum(1 for r in rows if r["drifted"]))
    return rows


def _tests(reference: np.ndarray, current: np.ndarray, settings: Settings, rng: np.random.Generator) -> list[DriftResult]:
    common: dict[str, Any] = {"rng": rng, "min_samples": settings.drift_min_samples,
                              "max_samples": settings.drift_max_samples}
    results = [
        mmd_test(reference=reference, current=current, alpha=settings.drift_alpha, device=settings.device, **common),
        classifier_test(reference=reference, current=current, **common),
    ]
    if settings.drift_evidently:
        results.append(evidently_test(reference=reference, current=current, **common))
    return results
