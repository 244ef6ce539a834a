"""The scheduled work of the monitoring side, on apscheduler.

* `llmwatch jobs`: the drift checks every `drift_interval_s`; the online judges every
  `judge_interval_s` and review routing every `review_routing_interval_s` (alerts/evaluations.py);
  training from reviews every `review_training_interval_h` when that is set (off by default).
* `llmwatch alerts`: every rule on its own cadence, and the notification outbox every 2 s.
* `llmwatch alerts check [--rule NAME]`: every rule once, printing what would change; nothing is
  written or sent.

A job that fails is logged and runs again at its next time; overlapping runs of one job are
skipped (max_instances=1), and a run missed while the process was busy is run once (coalesce).
A store outage skips that evaluation and says so: it is not taken for "ok" or for "no data".
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from llmwatch.core.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["build_scheduler", "check_rules", "run_alerts", "run_jobs"]

OUTBOX_INTERVAL_S = 2.0


def _scheduler(blocking: bool, first_run_in_s: float) -> tuple[Any, Any]:
    """An apscheduler scheduler, and `every(fn, seconds, args, job_id)` adding jobs to it that
    never overlap themselves and run once, not once per missed interval, after a busy spell."""
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.schedulers.blocking import BlockingScheduler

    scheduler = (BlockingScheduler if blocking else BackgroundScheduler)(timezone=UTC)
    first_run = datetime.now(UTC) + timedelta(seconds=first_run_in_s)

    def every(fn: Any, seconds: float, args: list[Any], job_id: str) -> None:
        scheduler.add_job(fn, "interval", seconds=seconds, args=args, id=job_id, max_instances=1, coalesce=True,
                          next_run_time=first_run)

    return scheduler, every


def build_scheduler(settings: Settings, store: Any, *, blocking: bool = True) -> Any:
    from llmwatch.detectors.drift_job import run_drift_checks

    scheduler, every = _scheduler(blocking, first_run_in_s=5)
    every(run_drift_checks, settings.drift_interval_s, [store, settings], "drift")
    evaluations = _evaluations(settings)
    if any(j.sample > 0 for j in evaluations.judges):
        from llmwatch.ingest.pipeline.pricing import PriceTable

        prices = PriceTable.load(settings.price_table or None)
        every(_judge, settings.judge_interval_s, [store, evaluations, prices], "judges")
    if evaluations.routing.daily_budget > 0:
        every(_route, settings.review_routing_interval_s, [store, evaluations, settings.review_routing_interval_s],
              "review-routing")
    if settings.review_training_interval_h > 0:
        every(_train_from_reviews, settings.review_training_interval_h * 3600, [store, settings], "review-training")
    return scheduler


def _evaluations(settings: Settings) -> Any:
    from llmwatch.alerts.evaluations import load_evaluations

    evaluations, errors = load_evaluations(settings.evaluations_path)
    for error in errors:
        log.error("evaluation entry not loaded: %s", error)  # the others keep running
    return evaluations


def _judge(store: Any, evaluations: Any, prices: Any) -> None:
    from llmwatch.alerts.judge_job import run_judges
    from llmwatch.core.errors import StoreError

    try:
        run_judges(store, evaluations, prices)
    except StoreError as exc:
        log.warning("judges skipped, the store is unavailable: %s", exc)


def _route(store: Any, evaluations: Any, interval_s: float) -> None:
    from llmwatch.alerts.routing import route_reviews
    from llmwatch.core.errors import StoreError

    try:
        route_reviews(store, evaluations, interval_s)
    except StoreError as exc:
        log.warning("review routing skipped, the store is unavailable: %s", exc)


def _train_from_reviews(store: Any, settings: Settings) -> None:
    from llmwatch.alerts.review_training import train_and_audit
    from llmwatch.core.errors import StoreError

    try:
        train_and_audit(store, settings, ["toxicity", "grounding"], "llmwatch-jobs")
    except StoreError as exc:
        log.warning("training from reviews skipped, the store is unavailable: %s", exc)


def run_jobs(settings: Settings) -> None:
    from llmwatch.storage.clickhouse import connect
    from llmwatch.storage.migrate import migrate

    store = connect(settings)
    migrate(store, settings.retention_days)
    scheduler = build_scheduler(settings, store)
    log.info("jobs: drift checks every %.0fs", settings.drift_interval_s)
    scheduler.start()


def _rules(settings: Settings) -> list[Any]:
    from llmwatch.alerts.rules import load_rules

    rules, errors = load_rules(settings.rules_path)
    for error in errors:
        log.error("rule not loaded: %s", error)  # the other rules keep running
    return rules


def _evaluate(store: Any, rule: Any, settings: Settings, registry: Any) -> None:
    from llmwatch.alerts.evaluate import evaluate_rule
    from llmwatch.core.errors import StoreError

    try:
        transitions = evaluate_rule(store, rule, datetime.now(UTC), link=settings.link_base, registry=registry)
    except StoreError as exc:
        log.warning("rule %s: evaluation skipped, the store is unavailable: %s", rule.name, exc)
        return
    for labels, transition in transitions:
        log.info("rule %s %s: %s", rule.name, labels or "(all)", transition.name)


def _deliver(store: Any, settings: Settings) -> None:
    from llmwatch.alerts.notify import deliver_due, notifiers
    from llmwatch.core.errors import StoreError

    try:
        outcomes = deliver_due(store, notifiers(settings))
    except StoreError as exc:
        log.warning("notification outbox unavailable, will retry: %s", exc)
        return
    if outcomes:
        log.info("notifications: %s", outcomes)


def build_alert_scheduler(settings: Settings, store: Any, rules: list[Any], registry: Any, *,
                          blocking: bool = True, follower: Any = None) -> Any:
    scheduler, every = _scheduler(blocking, first_run_in_s=1)
    for rule in rules:
        every(_evaluate, rule.every_s, [store, rule, settings, registry], f"rule:{rule.name}")
    every(_deliver, OUTBOX_INTERVAL_S, [store, settings], "outbox")
    if follower is not None:
        every(_follow, OUTBOX_INTERVAL_S, [follower], "registrations")
    return scheduler


def _follow(follower: Any) -> None:
    from llmwatch.core.errors import StoreError

    try:
        applied = follower.poll()
    except StoreError as exc:
        log.warning("release registrations not applied yet, the store is unavailable: %s", exc)
        return
    if applied:
        log.info("release registrations applied: %d", applied)


def run_alerts(settings: Settings) -> None:
    from llmwatch.storage.clickhouse import connect
    from llmwatch.storage.migrate import migrate

    store = connect(settings)
    migrate(store, settings.retention_days)
    from llmwatch.alerts.releases import RegistrationFollower, Registry
    from llmwatch.ingest.kafka import ensure_llmwatch_topics, producer

    rules = _rules(settings)
    ensure_llmwatch_topics(settings, [settings.control_topic])
    registry = Registry(store, settings, producer(settings.bootstrap_servers))
    follower = RegistrationFollower(registry, settings)
    log.info("alerts: %d rules from %s", len(rules), settings.rules_path)
    build_alert_scheduler(settings, store, rules, registry, follower=follower).start()


def check_rules(settings: Settings, only: str | None = None) -> int:
    """Evaluate each rule once against the store and print what would change. Sends nothing."""
    from llmwatch.alerts.evaluate import evaluate_rule
    from llmwatch.alerts.rules import load_rules
    from llmwatch.storage.clickhouse import connect

    rules, errors = load_rules(settings.rules_path)
    for error in errors:
        print(f"ERROR {error}")
    if only:
        rules = [r for r in rules if r.name == only]
        if not rules:
            print(f"ERROR no valid rule named {only!r} in {settings.rules_path}")
            return 1
    store = connect(settings)
    now = datetime.now(UTC)
    for rule in rules:
        transitions = evaluate_rule(store, rule, now, link=settings.link_base, dry_run=True)
        if not transitions:
            print(f"{rule.name}: no change")
        for labels, t in transitions:
            value = "no data" if t.observation is None or t.observation.value is None else f"{t.observation.value:.4g}"
            where = ", ".join(f"{k}={v}" for k, v in labels.items()) or "all"
            actions = f" -> would notify {', '.join(rule.actions) or 'nobody'}" if t.notify else ""
            print(f"{rule.name} [{where}]: {t.name} ({rule.metric} = {value}, level {t.state.level or '-'}){actions}")
    return 1 if errors else 0
