"""`llmwatch jobs`: the scheduled work of the monitoring side, on apscheduler.

Today: the drift checks every `drift_interval_s`. A job that fails is logged and runs again at
its next time; overlapping runs of one job are skipped (max_instances=1), and a run missed while
the process was busy is run once (coalesce), not once per missed interval.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from llmwatch.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["build_scheduler", "run_jobs"]


def build_scheduler(settings: Settings, store: Any, *, blocking: bool = True) -> Any:
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.schedulers.blocking import BlockingScheduler

    from detectors.drift_job import run_drift_checks

    scheduler = (BlockingScheduler if blocking else BackgroundScheduler)(timezone=timezone.utc)
    scheduler.add_job(
        run_drift_checks,
        "interval",
        seconds=settings.drift_interval_s,
        args=[store, settings],
        id="drift",
        max_instances=1,
        coalesce=True,
        next_run_time=datetime.now(timezone.utc) + timedelta(seconds=5),
    )
    return scheduler


def run_jobs(settings: Settings) -> None:
    from storage.clickhouse import connect
    from storage.migrate import migrate

    store = connect(settings)
    migrate(store, settings.retention_days)
    scheduler = build_scheduler(settings, store)
    log.info("jobs: drift checks every %.0fs", settings.drift_interval_s)
    scheduler.start()
