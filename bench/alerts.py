"""Alerting: how fast the loop closes, and what one rule evaluation costs.

1. Closed loop, on the embedded stack (tansu, chdb store, one worker), an HTTP receiver standing in
   for PagerDuty, the alert scheduler and an SDK release resolver, all on this machine: from the
   first toxic answer emitted to the PagerDuty trigger received, and to the app's resolver serving
   the stable release again. Goal: under one rule cadence + 5 s.
2. One evaluation of the toxicity_rate rule (group by app and release) over 10,000,000 score rows
   in the window, in the embedded ClickHouse. Goal: < 200 ms.

    .venv/bin/python bench/alerts.py [--rows 10000000] [--every 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import (
    ROOT,
    free_port,
    print_table,
    start_store,
    start_tansu,
    stop_process,
    store_url,
    wait_until,
    write_json,
)

sys.path.insert(0, str(ROOT / "tests"))

from llmwatch import (  # noqa: E402
    Emitter,
    Release,
    ReleaseResolver,  # noqa: E402
)
from llmwatch.alerts.evaluate import evaluate_rule  # noqa: E402
from llmwatch.alerts.releases import Registry, ReleaseRecord  # noqa: E402
from llmwatch.alerts.rules import parse_rules  # noqa: E402
from llmwatch.alerts.scheduler import build_alert_scheduler  # noqa: E402
from llmwatch.core.settings import (
    Settings,  # noqa: E402
    settings_env,  # noqa: E402
)
from llmwatch.ingest.kafka import ensure_topics, producer  # noqa: E402
from llmwatch.storage.clickhouse import ClickHouseStore  # noqa: E402
from llmwatch.storage.migrate import migrate  # noqa: E402

LOOP_RULE = """
rules:
  - name: toxic-outputs
    metric: toxicity_rate
    group_by: [app, release]
    window: 30s
    every: {every}s
    critical: 0.2
    min_samples: 20
    actions: [rollback, pagerduty]
"""


def closed_loop(store: ClickHouseStore, settings: Settings, every: float) -> dict:
    from llmwatch.alerts.receiver import Receiver  # tests/alerts/receiver.py: a real HTTP server

    pagerduty = Receiver()
    settings = Settings.from_env({}, **{**settings.__dict__, "pagerduty_url": f"{pagerduty.url}/pd",
                                        "pagerduty_routing_key": "bench"})
    registry = Registry(store, settings, producer(settings.bootstrap_servers))
    stable, bad = Release("answer", "7", "m"), Release("answer", "8", "m")
    for release in (stable, bad):
        registry.register(ReleaseRecord("bot", release.prompt_id, release.prompt_version, "m"), actor="bench")
        registry.promote("bot", f"answer:{release.prompt_version}@m", actor="bench")
    rules, _ = parse_rules(LOOP_RULE.format(every=every))
    resolver = ReleaseResolver(settings.bootstrap_servers, {"bot": bad}, topic=settings.control_topic)
    scheduler = build_alert_scheduler(settings, store, rules, registry, blocking=False)
    emitter = Emitter(settings.bootstrap_servers, app="bot", topic=settings.traces_topic)
    try:
        scheduler.start()
        time.sleep(every * 1.5)  # the scheduler is in its rhythm; the incident starts at a random phase
        started = time.monotonic()
        paged = switched = None
        while time.monotonic() - started < 120 and (paged is None or switched is None):
            release = resolver.release("bot")
            toxic = release.prompt_version == "8"
            emitter.emit({"input": "hi", "output": "shut up you idiot" if toxic else "hello, how can I help?",
                          "release": release.as_dict()})
            if paged is None and any(path == "/pd" for path, _, _ in pagerduty.requests):
                paged = time.monotonic() - started
            if switched is None and not toxic:
                switched = time.monotonic() - started
            time.sleep(0.01)
    finally:
        scheduler.shutdown(wait=False)
        emitter.close()
        resolver.close()
        pagerduty.close()
    return {"rule_every_s": every, "to_page_s": paged, "to_switch_s": switched, "goal_s": every + 5}


def evaluation_cost(store: ClickHouseStore, rows: int) -> dict:
    db = store.database
    now = datetime.now(UTC)
    started = time.perf_counter()
    # 10M score rows over the last hour: 20 apps, 5 releases each, 5 % toxic.
    store.command(
        f"INSERT INTO {db}.scores (event_id, app, timestamp, environment, release, model, detector, "
        f"detector_version, target, score, label, details, scored_at) "
        f"SELECT generateUUIDv4(), concat('app-', toString(number % 20)), "
        f"now64(3) - toIntervalMillisecond(number % 3600000), 'production', "
        f"concat('answer:', toString(number % 5), '@m'), 'm', 'toxicity', 'bench', 'output', "
        f"if(number % 20 = 0, 0.9, 0.05), if(number % 20 = 0, 'toxic', 'ok'), '', now64(3) "
        f"FROM numbers({rows})"
    )
    loaded = time.perf_counter() - started
    rule = parse_rules(
        "rules:\n  - {name: r, metric: toxicity_rate, group_by: [app, release], window: 1h, every: 1m, critical: 0.2}\n"
    )[0][0]
    timings = []
    for _ in range(7):
        t = time.perf_counter()
        evaluate_rule(store, rule, now + timedelta(seconds=1), link="http://console", dry_run=True)
        timings.append(time.perf_counter() - t)
    return {"rows": rows, "load_s": round(loaded, 1), "evaluation_ms_median": round(1000 * statistics.median(timings), 1),
            "evaluation_ms_min": round(1000 * min(timings), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--every", type=float, default=5.0, help="rule cadence in seconds")
    args = parser.parse_args()
    kafka_port, store_port = free_port(), free_port()
    data = Path(tempfile.mkdtemp(prefix="llmwatch-bench-"))
    broker = start_tansu(kafka_port)
    try:
        store_process = start_store(data, store_port)
    except BaseException:
        stop_process(broker)
        raise
    worker = None
    try:
        settings = Settings.from_env({}, kafka_bootstrap=f"127.0.0.1:{kafka_port}", clickhouse_url=store_url(data, store_port),
                                     data_dir=data, detectors="toxicity", kafka_session_timeout_s=2.0,
                                     control_topic=f"control-{uuid.uuid4().hex[:6]}")
        store = ClickHouseStore(settings.store_url, database=settings.database)
        migrate(store, settings.retention_days)
        ensure_topics(settings.bootstrap_servers, [settings.traces_topic, settings.dlq_topic, settings.control_topic], 1)
        worker = subprocess.Popen([sys.executable, "-m", "llmwatch", "worker"], env={**os.environ, **settings_env(settings)},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: store.query(f"SELECT count() FROM {settings.database}.workers")[0][0] > 0, 90)
        loop = closed_loop(store, settings, args.every)
        cost = evaluation_cost(store, args.rows)
    finally:
        if worker is not None:
            stop_process(worker)
        stop_process(store_process)
        stop_process(broker)
    print_table("Closed loop (embedded stack, 2-core CPU)", ["measure", "seconds", "goal"], [
        ["first toxic answer -> PagerDuty trigger received", f"{loop['to_page_s']:.1f}" if loop["to_page_s"] else "not reached", f"< {loop['goal_s']:g}"],
        ["first toxic answer -> app serves the stable release", f"{loop['to_switch_s']:.1f}" if loop["to_switch_s"] else "not reached", f"< {loop['goal_s']:g}"],
    ])
    print_table(f"One evaluation of toxicity_rate by app and release over {cost['rows']:,} score rows",
                ["median ms", "min ms", "goal"], [[cost["evaluation_ms_median"], cost["evaluation_ms_min"], "< 200 ms"]])
    write_json("alerts", {"closed_loop": loop, "evaluation": cost})


if __name__ == "__main__":
    main()
