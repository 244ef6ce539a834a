"""Per-event outlier scores over latency, tokens, cost and text length, one model per app.

pyod's ECOD (parameter-free, one pass, explains itself per feature) is fitted on the app's recent
history (`anomaly_reference_s`, read from ClickHouse) and refitted every `anomaly_refit_s`. An
event's score is the share of reference events that are less outlying than it (an empirical
quantile, so 0.99 means "stranger than 99 % of the last day"); above `anomaly_quantile` it is
labelled `outlier`, and the details name the features that made it so. Until an app has
`anomaly_min_reference` events there is no model and the label is `not_applicable`.

In the worker (`load`), only an app's first look is made in the batch; later refits (a query of
up to 20,000 rows and a fit: about a second, which was the worst batch at 500 events/s in
bench/pipeline.py) run on a thread of their own while the batches go on with the model they had.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from llmwatch.core.events import TraceEvent
from llmwatch.core.stages import StageClock
from llmwatch.detectors.base import NOT_APPLICABLE, ScoreRow

log = logging.getLogger(__name__)

__all__ = ["FEATURES", "AnomalyDetector", "AppModel", "features", "load", "warm_up"]

NO_MODEL_RECHECK_S = 15.0
FEATURES = ("latency_ms", "input_tokens", "output_tokens", "cost_usd", "input_chars", "output_chars")


def features(event: TraceEvent) -> list[float]:
    """The event's numbers, NaN where the app did not report one."""
    values = [event.latency_ms, event.input_tokens, event.output_tokens, event.cost_usd,
              len(event.input), len(event.output)]
    return [np.nan if v is None else float(v) for v in values]


@dataclass
class AppModel:
    """ECOD fitted on an app's reference window.

    pyod fits ECOD and scores the reference. New events are scored with the same formula (per
    feature, the larger of the left and right tail's -log ECDF, summed) against the reference's
    sorted columns: pyod's own `decision_function` would re-sort the whole reference for every
    call and let the events of one batch change each other's scores. Inside the reference's
    range the scores equal pyod's; beyond it they keep growing with the distance."""

    columns: list[int]  # indices into FEATURES with data in the reference
    medians: np.ndarray  # fills a missing value with the typical one (not an outlier by absence)
    sorted_reference: np.ndarray  # each column sorted
    reference_scores: np.ndarray  # sorted decision scores of the reference

    @classmethod
    def fit(cls, reference: np.ndarray) -> AppModel:
        from pyod.models.ecod import ECOD

        columns = [j for j in range(reference.shape[1]) if np.isfinite(reference[:, j]).any()]
        data = reference[:, columns]
        medians = np.nanmedian(data, axis=0)
        data = np.where(np.isfinite(data), data, medians)
        with warnings.catch_warnings():
            # A constant feature (every answer the same length) makes scipy's skew warn; ECOD
            # copes with it (that feature then scores every event alike).
            warnings.simplefilter("ignore", RuntimeWarning)
            model = ECOD().fit(data)
        return cls(columns, medians, np.sort(data, axis=0), np.sort(model.decision_scores_))

    def tails(self, rows: np.ndarray) -> np.ndarray:
        """Per-feature outlyingness, -log of the smaller tail probability (ECOD's O)."""
        data = rows[:, self.columns]
        data = np.where(np.isfinite(data), data, self.medians)
        n = len(self.sorted_reference)
        out = np.empty_like(data)
        for j in range(data.shape[1]):
            column = self.sorted_reference[:, j]
            below = np.searchsorted(column, data[:, j], side="right")  # reference values <= x
            above = n - np.searchsorted(column, data[:, j], side="left")  # reference values >= x
            left, right = (below + 1) / (n + 1), (above + 1) / (n + 1)
            # Beyond the reference's range the ECDF saturates (a 100x latency spike would score
            # like the slowest event ever seen); add how far out it is, in interquartile ranges.
            q1, q3 = column[int(0.25 * (n - 1))], column[int(0.75 * (n - 1))]
            scale = (q3 - q1) or (abs(column[-1] - column[0]) or max(abs(column[-1]), 1.0))
            beyond = np.maximum(data[:, j] - column[-1], column[0] - data[:, j]).clip(min=0) / scale
            out[:, j] = np.maximum(-np.log(left), -np.log(right)) + beyond
        return out

    def score(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's quantile among the reference's scores, and its per-feature outlyingness."""
        per_feature = self.tails(rows)
        raw = per_feature.sum(axis=1)
        quantiles = np.searchsorted(self.reference_scores, raw, side="left") / len(self.reference_scores)
        return quantiles, per_feature


class AnomalyDetector:
    name = "anomaly"
    version = "ecod-1"
    targets = ("event",)

    def __init__(self, reference: Callable[[str], np.ndarray], *, refit_s: float = 600.0, min_reference: int = 200,
                 quantile: float = 0.99, clock: Callable[[], float] = time.monotonic,
                 refit_in_background: bool = False) -> None:
        """`reference(app)` returns the app's recent feature rows (n × len(FEATURES), NaN = missing).
        With `refit_in_background`, an app's later looks run on a thread of their own."""
        self.reference = reference
        self.refit_s = refit_s
        self.min_reference = min_reference
        self.quantile = quantile
        self.clock = clock
        self.models: dict[str, AppModel | None] = {}
        self.checked: dict[str, float] = {}
        self.refits = (ThreadPoolExecutor(1, thread_name_prefix="llmwatch-anomaly-refit") if refit_in_background
                       else None)
        self.stages: StageClock | None = None  # the worker's, to report the refits' time in its budget

    def model_for(self, app: str) -> AppModel | None:
        now = self.clock()
        # Without a model yet (a new app), look again soon rather than after a full refit period.
        wait = self.refit_s if self.models.get(app) is not None else min(self.refit_s, NO_MODEL_RECHECK_S)
        seen = app in self.checked
        if seen and now - self.checked[app] < wait:
            return self.models.get(app)
        self.checked[app] = now
        if seen and self.refits is not None:
            self.refits.submit(self._refit, app).add_done_callback(partial(self._refitted, app))
            return self.models.get(app)
        self.models[app] = self._fitted(app)
        return self.models[app]

    def _fitted(self, app: str) -> AppModel | None:
        rows = self.reference(app)
        log.debug("anomaly model for %s: %d reference events", app, len(rows))
        return AppModel.fit(rows) if len(rows) >= self.min_reference else None

    def _refit(self, app: str) -> AppModel | None:
        with self.stages("anomaly refits") if self.stages is not None else nullcontext():
            return self._fitted(app)

    def _refitted(self, app: str, fit: Future[AppModel | None]) -> None:
        try:
            self.models[app] = fit.result()
        except Exception as exc:  # the store was down, say: the previous model stays until the next look
            log.warning("anomaly model for %s not refitted: %s: %s", app, type(exc).__name__, exc)

    def wait_for_refits(self) -> None:
        """Until every refit started so far has landed (tests, benchmarks)."""
        if self.refits is not None:
            self.refits.submit(lambda: None).result()  # one thread, in order: the earlier ones are done

    def score(self, events: Sequence[TraceEvent]) -> list[ScoreRow]:
        by_app: dict[str, list[int]] = {}
        for i, event in enumerate(events):
            by_app.setdefault(event.app, []).append(i)
        rows: list[ScoreRow | None] = [None] * len(events)
        for app, indices in by_app.items():
            model = self.model_for(app)
            if model is None:
                for i in indices:
                    rows[i] = ScoreRow(events[i].event_id, self.name, self.version, "event", None, NOT_APPLICABLE,
                                       {"reason": f"fewer than {self.min_reference} reference events"})
                continue
            quantiles, per_feature = model.score(np.array([features(events[i]) for i in indices]))
            for k, i in enumerate(indices):
                q = float(quantiles[k])
                label = "outlier" if q >= self.quantile else "ok"
                details = {}
                if label == "outlier":
                    top = np.argsort(-per_feature[k])[:2]
                    details = {"features": [FEATURES[model.columns[j]] for j in top]}
                rows[i] = ScoreRow(events[i].event_id, self.name, self.version, "event", q, label, details)
        return [row for row in rows if row is not None]

    def close(self) -> None:
        if self.refits is not None:
            self.refits.shutdown(wait=False, cancel_futures=True)
        self.models.clear()


def warm_up() -> None:
    """Fit once on made-up numbers. The first ECOD fit in a process imports pyod and prepares what
    it runs: ~1.4 s of CPU against ~35 ms for each fit after it (20,000 rows). Done at start-up,
    it is not paid inside the first batch (an app's first look) or in the first refits, which come
    while a restarted worker catches up with its backlog."""
    AppModel.fit(np.random.default_rng(0).lognormal(size=(64, len(FEATURES))))


def store_reference(store: Any, window_s: float, limit: int = 20_000) -> Callable[[str], np.ndarray]:
    """`reference(app)` reading the app's last `window_s` of traces, sampled by event_id hash."""

    def reference(app: str) -> np.ndarray:
        rows = store.query(
            f"SELECT latency_ms, input_tokens, output_tokens, cost_usd, input_chars, output_chars "
            f"FROM {store.database}.traces WHERE app = {{app:String}} "
            f"AND timestamp > now64(3) - toIntervalSecond({{window:UInt32}}) "
            f"AND environment != 'experiment' "  # an experiment's replays are not the app's normal
            f"ORDER BY cityHash64(event_id) LIMIT {{limit:UInt32}}",
            {"app": app, "window": int(window_s), "limit": limit},
        )
        return np.array([[np.nan if v is None else float(v) for v in row] for row in rows], dtype=np.float64).reshape(
            -1, len(FEATURES)
        )

    return reference


def load(settings: Any) -> AnomalyDetector:
    from llmwatch.storage.clickhouse import connect

    warm_up()
    return AnomalyDetector(
        store_reference(connect(settings), settings.anomaly_reference_s),
        refit_s=settings.anomaly_refit_s,
        min_reference=settings.anomaly_min_reference,
        quantile=settings.anomaly_quantile,
        refit_in_background=True,
    )
