"""Console speed over a store of 10 million events.

Seeds the embedded ClickHouse (chdb) with --events trace events over 7 days (3 apps, 5 releases,
1% errors, three detectors' scores each, 200,000 embeddings, drift checks, alerts, a review
queue) through INSERT ... SELECT, so the materialized views fill the rollups as they do in
production. Then, for each console page:

1. the page's own queries (llmwatch.dashboards.queries), uncached, median of --repeat runs;
2. the whole page rendered by Streamlit's AppTest with every cache cleared (a cold render:
   queries + Python + Streamlit), median of --repeat runs;
3. the baseline: the Overview and Quality numbers computed from the raw traces and scores
   instead of the rollups, in the same run, for the ratio.

Goal: every page under 1 s at the 7-day range (all 10M events) and at the default 24 h.

    .venv/bin/python bench/console.py [--events 10000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import ROOT, free_port, print_table, start_store, stop_process, store_url, write_json

from llmwatch.alerts.silences import load_mutes  # noqa: E402
from llmwatch.core.accounts import hash_password  # noqa: E402
from llmwatch.core.events import RELEASE_SQL  # noqa: E402
from llmwatch.dashboards import queries as q  # noqa: E402
from llmwatch.dashboards.scope import RANGES, Scope  # noqa: E402
from llmwatch.detectors.drift_job import Window, sample_window  # noqa: E402
from llmwatch.storage.clickhouse import ClickHouseStore  # noqa: E402
from llmwatch.storage.migrate import migrate  # noqa: E402

DAYS = 7
APPS = "['support-bot', 'docs-rag', 'agent']"
PAGES = ["overview", "traces", "quality", "drift", "alerts", "review", "releases", "sql"]


def seed(store: ClickHouseStore, events: int, now: datetime) -> float:
    """Insert everything; returns the seconds it took."""
    db = store.database
    started = time.perf_counter()
    span_ms = DAYS * 86400 * 1000
    # Event n: app n%3, release by app and half of the week, time spread evenly over the week.
    base = f"""
        SELECT number AS n,
               reinterpretAsUUID(reinterpretAsFixedString(toUInt128(n) + 1)) AS event_id,
               toDateTime64({{t0:Int64}} / 1000, 3, 'UTC') + toIntervalMillisecond(intDiv(n * {span_ms}, {events})) AS ts,
               {APPS}[1 + n % 3] AS app_,
               if(n % 3 = 0, 'answer', if(n % 3 = 1, 'rag', 'plan')) AS prompt,
               toString(if(n % 3 = 0 AND n > {events} * 6 / 7 AND n % 2 = 0, 8, 7)) AS version,
               if(n % 3 = 2, 'llama-3-70b', 'gpt-4o-mini') AS model_
        FROM numbers({events})"""
    t0 = int((now - timedelta(days=DAYS)).timestamp() * 1000)
    store.command(
        f"""INSERT INTO {db}.traces (event_id, trace_id, span_id, timestamp, received_at, app, environment, prompt_id,
            prompt_version, model, provider, input, output, context, latency_ms, input_tokens, output_tokens, cost_usd,
            user_id, error, input_chars, output_chars)
        SELECT event_id, hex(n), '', ts, ts, app_, 'production', prompt, version, model_, 'openai',
               concat('question ', toString(n % 5000), ' about ', ['refunds', 'invoices', 'shipping', 'passwords'][1 + n % 4]),
               concat('Answer ', toString(n % 977), ': please see the help centre.'),
               if(app_ = 'docs-rag', ['Refunds are possible within 30 days.'], []),
               200 + (cityHash64(n) % 1000) * (1 + (n % 100 = 0) * 5), 20 + n % 50, 40 + n % 200, 0.0001 * (1 + n % 7),
               concat('user-', toString(n % 10000)), if(n % 100 = 7, 'timeout', ''), 30, 45
        FROM ({base})""",
        {"t0": t0},
    )
    for detector, target, bad, good, share, where in (
        ("toxicity", "output", "toxic", "ok", 4, "1"),
        ("grounding", "output", "unsupported", "supported", 10, "app_ = 'docs-rag'"),
        ("anomaly", "event", "outlier", "ok", 100, "1"),
    ):
        store.command(
            f"""INSERT INTO {db}.scores (event_id, app, timestamp, environment, release, model, detector,
                detector_version, target, score, label, details, scored_at)
            SELECT event_id, app_, ts, 'production', concat(prompt, ':', version, '@', model_), model_, '{detector}', 'v1',
                   '{target}', if(cityHash64(n, '{detector}') % {share} = 0, 0.9, 0.05),
                   if(cityHash64(n, '{detector}') % {share} = 0, '{bad}', '{good}'), '{{}}', ts
            FROM ({base}) WHERE {where}""",
            {"t0": t0},
        )
    stride = max(1, events // 200_000)
    store.command(
        f"""INSERT INTO {db}.embeddings (event_id, app, release, timestamp, target, model, vector)
        SELECT event_id, app_, concat(prompt, ':', version, '@', model_), ts, 'input', 'all-MiniLM-L6-v2',
               arrayMap(i -> toInt8(cityHash64(n, i) % 200 - 100), range(384))
        FROM ({base}) WHERE n % {stride} = 0""",
        {"t0": t0},
    )
    drift = []
    for k in range(DAYS * 24 * 12):  # every 5 minutes for a week
        at = now - timedelta(minutes=5 * k)
        for app in ("support-bot", "docs-rag", "agent"):
            drift.append({"checked_at": at, "app": app, "target": "input", "method": "mmd",
                          "reference": Window.between(at - timedelta(hours=25), at - timedelta(hours=1)).label,
                          "current": Window.between(at - timedelta(hours=1), at).label, "reference_size": 2000,
                          "current_size": 2000, "statistic": 0.01, "p_value": 0.5, "threshold": 0.01, "drifted": 0,
                          "verdict": "no_drift", "terms_up": [], "terms_down": []})
    store.insert("drift", drift)
    store.command(
        f"""INSERT INTO {db}.alerts (at, rule, group_key, labels, status, transition, level, value, samples, threshold,
            breaches, since)
        SELECT now64(3) - toIntervalMinute(number), ['toxic-outputs', 'slow-responses', 'errors'][1 + number % 3],
               concat('{{"app":"', {APPS}[1 + intDiv(number, 3) % 3], '"}}'),
               map('app', {APPS}[1 + intDiv(number, 3) % 3]), if(number % 2 = 0, 'firing', 'ok'),
               if(number % 2 = 0, 'firing', 'resolved'), 'critical', 0.2, 500, 0.1, 3, now64(3) - toIntervalMinute(number)
        FROM numbers(20000)"""
    )
    store.command(
        f"""INSERT INTO {db}.review_queue SELECT now64(3), reinterpretAsUUID(reinterpretAsFixedString(toUInt128(number * 97) + 1)),
            'support-bot', 'answer:8@gpt-4o-mini', 'toxic-outputs', 'toxicity_rate breached', 0.9, 'open' FROM numbers(5000)"""
    )
    store.command(
        f"""INSERT INTO {db}.reviews SELECT reinterpretAsUUID(reinterpretAsFixedString(toUInt128(intDiv(number, 2) * 97) + 1)),
            concat('reviewer-', toString(number % 2)), 'support-bot', 'answer:8@gpt-4o-mini',
            ['fine', 'toxic'][1 + (cityHash64(number) % 5 = 0)], '', now64(3) FROM numbers(4000)"""
    )
    for app, release in (("support-bot", ("answer", "7")), ("support-bot", ("answer", "8")), ("docs-rag", ("rag", "7"))):
        store.insert("releases", [{"app": app, "release": f"{release[0]}:{release[1]}@gpt-4o-mini", "prompt_id": release[0],
                                   "prompt_version": release[1], "model": "gpt-4o-mini", "provider": "openai",
                                   "status": "active", "reason": "", "actor": "bench", "updated_at": now}])
    # Background merges would get the rollups here over time; do it now so every run sees the same.
    for table in ("trace_stats", "score_counts"):
        store.command(f"OPTIMIZE TABLE {db}.{table} FINAL")
    return time.perf_counter() - started


def page_queries(store: ClickHouseStore, scope: Scope) -> dict[str, Callable[[], Any]]:
    """What each page asks the store on a first, unfiltered render."""
    db = store.database

    def run(*built: tuple[str, dict[str, Any]]) -> None:
        for sql, params in built:
            store.query_df(sql, params)

    def traces() -> None:
        found = store.query_df(*q.trace_search(scope, db))
        store.query_df(*q.trace_scores(db, [str(e) for e in found["event_id"]]))
        store.query_df(*q.trace_search(scope, db, text="passwords", scores={"toxicity": (0.5, 1.0)}))
        event = str(found["event_id"].iloc[0])
        run(q.trace_detail(db, event), q.score_details(db, event), q.feedback_for(db, "x"))

    def drift() -> None:
        checks = store.query_df(*q.drift_checks(scope, db))
        latest = checks.iloc[0]
        for label in (latest["reference"], latest["current"]):
            window, release = Window.from_label(label)
            sample_window(store, latest["app"], latest["target"], window, 400, release)

    dims = [q.dimension_values(db, d, scope) for d in ("app", "release", "environment", "model")]
    return {
        "overview": lambda: run(q.traffic_totals(scope, db), q.label_totals(scope, db), q.incidents(db, True),
                                q.traffic_series(scope, db, "app"), q.traffic_series(scope, db, "'all'"),
                                q.label_series(scope, db), q.traffic_by_release(scope, db),
                                q.label_totals(scope, db, by=("app", "release")), *dims),
        "traces": lambda: (run(*dims), traces()),
        "quality": lambda: run(*dims, q.label_series(scope, db, by="release"), q.label_totals(scope, db, by=("app", "release")),
                               q.releases_by_first_seen(scope, db, "support-bot"),
                               q.release_counts(scope, db, "support-bot", ["answer:7@gpt-4o-mini", "answer:8@gpt-4o-mini"])),
        "drift": lambda: (run(dims[0]), drift()),
        "alerts": lambda: (run(q.incidents(db, False), q.alert_history(db, "toxic-outputs", '{"app":"agent"}'),
                               q.audit_log(db, ("acknowledge", "silence", "unsilence"), 50)),
                           load_mutes(store, "toxic-outputs", datetime.now(UTC))),
        "review": lambda: run(q.review_backlog(db, 2), q.review_next(db, "bench", 2), q.decisions(db)),
        "releases": lambda: run((f"SELECT DISTINCT app FROM {db}.releases ORDER BY app", {}),
                                q.audit_log(db, ("rolled_back", "restored", "promoted"), 500)),
        "sql": lambda: run((f"SELECT app, release, sum(events) AS events, round(sum(cost_usd), 2) AS cost "
                            f"FROM {db}.trace_stats WHERE bucket > now() - INTERVAL 1 DAY GROUP BY app, release", {})),
    }


def raw_baseline(store: ClickHouseStore, scope: Scope) -> Callable[[], None]:
    """Overview's headline numbers and series from the raw rows, as a console without rollups would."""
    db = store.database
    where, params = scope.where("timestamp", {"release": RELEASE_SQL})
    params["step"] = scope.bucket_s

    def run() -> None:
        store.query(f"SELECT count(), countIf(error != ''), sum(ifNull(input_tokens, 0) + ifNull(output_tokens, 0)), "
                    f"sum(cost_usd), quantilesTDigest(0.5, 0.95, 0.99)(latency_ms) FROM {db}.traces WHERE {where}", params)
        store.query(f"SELECT toStartOfInterval(timestamp, toIntervalSecond({{step:UInt32}})) AS t, app, count(), "
                    f"countIf(error != ''), sum(cost_usd), quantilesTDigest(0.5, 0.95, 0.99)(latency_ms) "
                    f"FROM {db}.traces WHERE {where} GROUP BY t, app", params)
        store.query(f"SELECT app, {RELEASE_SQL} AS release, count(), quantilesTDigest(0.5, 0.95, 0.99)(latency_ms) "
                    f"FROM {db}.traces WHERE {where} GROUP BY app, release", params)
        swhere, sparams = scope.where("timestamp")
        store.query(f"SELECT detector, label, count() FROM {db}.scores WHERE {swhere} GROUP BY detector, label", sparams)
        store.query(f"SELECT app, release, detector, label, count() FROM {db}.scores WHERE {swhere} "
                    f"GROUP BY app, release, detector, label", sparams)

    return run


def median_s(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def render_times(url: str, database: str, range_name: str, repeat: int) -> dict[str, float]:
    """Cold AppTest renders of every page (caches cleared before each)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ.update({"LLMWATCH_CLICKHOUSE_URL": url, "LLMWATCH_DATABASE": database,
                       "LLMWATCH_CONSOLE_USERS": f"bench:admin:{hash_password('bench')}",
                       "LLMWATCH_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "dashboards" / "app.py"), default_timeout=120)
    at.query_params["range"] = range_name
    at.run()
    at.text_input[0].input("bench")
    at.text_input[1].input("bench")
    at.button[0].click()
    at.run()
    result = {}
    for page in PAGES:
        times = []
        for _ in range(repeat):
            st.cache_data.clear()
            at.switch_page(f"views/{page}.py")
            started = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - started)
            if at.exception:
                raise RuntimeError(f"{page}: {at.exception[0].message}")
        result[page] = statistics.median(times)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        process = start_store(Path(tmp), port)
        try:
            url = store_url(Path(tmp), port)
            store = ClickHouseStore(url, "llmwatch", query_timeout_s=600)
            migrate(store, 90)
            now = datetime.now(UTC).replace(microsecond=0)
            seconds = seed(store, args.events, now)
            counts = dict(store.query("SELECT 'traces', count() FROM llmwatch.traces UNION ALL "
                                      "SELECT 'scores', count() FROM llmwatch.scores UNION ALL "
                                      "SELECT 'trace_stats rows', count() FROM llmwatch.trace_stats UNION ALL "
                                      "SELECT 'score_counts rows', count() FROM llmwatch.score_counts"))
            print(f"seeded in {seconds:.0f} s: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))

            rows, results = [], {"events": args.events, "seed_s": seconds, "counts": counts, "ranges": {}}
            for range_name in ("7d", "24h"):
                scope = Scope(now - timedelta(seconds=RANGES[range_name]), now + timedelta(minutes=1), range_name)
                queries = {page: median_s(fn, args.repeat) for page, fn in page_queries(store, scope).items()}
                baseline = median_s(raw_baseline(store, scope), args.repeat)
                renders = render_times(url, "llmwatch", range_name, args.repeat)
                results["ranges"][range_name] = {"queries_s": queries, "render_s": renders,
                                                 "overview_raw_baseline_s": baseline}
                for page in PAGES:
                    rows.append([range_name, page, f"{1000 * queries[page]:.0f}", f"{1000 * renders[page]:.0f}",
                                 "yes" if renders[page] < 1.0 else "NO"])
                rows.append([range_name, "overview from raw rows (baseline)", f"{1000 * baseline:.0f}", "",
                             f"rollups {baseline / queries['overview']:.1f}x faster"])
            print_table(f"Console pages over {args.events:,} events (cold: caches cleared; median of {args.repeat})",
                        ["range", "page", "queries ms", "render ms", "< 1 s"], rows)
            write_json("console", results)
        finally:
            stop_process(process, timeout_s=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
