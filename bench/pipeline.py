"""Sustained events/s through `llmwatch up`, emit-to-row latency at fixed rates, and where the time
goes: a per-stage budget, in microseconds per event, for every process.

The stack is the embedded one with its defaults (tansu, the chdb store, the worker with every CPU
detector: toxicity, grounding, injection, anomaly, PII redaction, sampled embeddings), on this
machine with the load generator (this process). Traffic is the demo's: support chat, RAG answers
with retrieved passages, some toxic turns, injection attempts and PII.
Goals (issue 15, 2 cores): >= 3,500 events/s sustained; p99 emit->row < 1 s at 2,000 events/s;
worker RSS flat.

The budget:
* per process: CPU seconds (utime + stime from /proc) over the burst, per event and as a share
  of all CPU spent; RSS before and after;
* the worker's stages (ingest/pipeline/stages.py, reported with its heartbeats): CPU per event,
  and for store calls the wall time too (wall - CPU = the HTTP hop and the store's work). What the
  worker's process spent outside its batches is faust: Kafka fetch and decode, acks, commits;
* the store's stages (its /llmwatch/stages): chdb sessions, the guard's EXPLAIN, each table's
  insert, queries; the rest of its CPU is HTTP;
* each materialized view: the same rows inserted into a scratch copy of the schema with all views,
  then without each one (INSERT ... SELECT inside the store: no HTTP in the difference), per row
  of a 20,000-row insert and per one-row insert (a view's pipeline and the part it writes cost the
  same for one row as for hundreds: a fixed cost every batch pays).

Latency is measured by ClickHouse itself: inserted_at (server clock at insert) - timestamp (taken
by the SDK at emit), on the same machine.

    .venv/bin/python bench/pipeline.py [--events 40000] [--rate 500 --rate 2000] [--seconds 20]
                                       [--workers N] [--against GIT_REF [--repeats N]]

With --against, the named commit is measured first, the same way (this script, in a git worktree
of it), and the two are printed side by side: ratios from one sitting survive a noisy machine.
With --repeats N the two alternate N times; the machine's speed drifts between runs (by up to
1.5x on the development machine), so each pair is compared and the median ratio reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from base64 import b64encode
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from _common import (
    ROOT,
    children,
    cpu_s,
    cpu_s_of,
    free_port,
    print_table,
    stop_process,
    store_url,
    wait_until,
    write_json,
)

from llmwatch import Emitter
from llmwatch.core.errors import StoreError
from llmwatch.ingest.demo.generator import Scenario
from llmwatch.storage.clickhouse import ClickHouseStore
from llmwatch.storage.migrate import migrate

DB = "llmwatch"
# Stages of the worker that run outside its batch thread, and the batch itself.
_OWN_THREADS = ("embeddings", "store insert embeddings", "anomaly refits")
_OUTSIDE_BATCHES = ("batch", *_OWN_THREADS, "store insert workers")
# Timed inside the other stages (llmwatch.core.stages.GARBAGE_COLLECTION, spelt out so that this
# script also measures commits from before it): shown beside them, never subtracted.
_WITHIN_OTHERS = "garbage collection"
_IN_SCORING_PROCESS = "(scoring process)"  # ingest.pipeline.scoring.SCORING_PROCESS_STAGE, for older commits too


def demo_events(n: int, prefix: str) -> list[dict[str, Any]]:
    """Demo traffic, each app renamed `prefix + app` so that one run's rows are counted apart."""
    scenario = Scenario(seed=11)
    events = []
    for i in range(n):
        doc = scenario.event(elapsed_s=float(i % 240))
        doc["app"] = prefix + doc["app"]
        doc.pop("timestamp", None)  # the SDK stamps it at emit
        events.append(doc)
    return events


def count(store: ClickHouseStore, prefix: str) -> int:
    return store.query(f"SELECT count() FROM {DB}.traces WHERE startsWith(app, {{p:String}})", {"p": prefix})[0][0]


# --- what each process spent ----------------------------------------------------------------


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (Python threads carry the process's name; chdb's and
    librdkafka's name theirs), of the threads alive now."""
    by_name: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            by_name[name] = by_name.get(name, 0.0) + cpu_s_of(task / "stat")
        except OSError:  # the thread ended meanwhile
            continue
    return by_name


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def processes(data_dir: Path) -> dict[str, int]:
    """The stack's processes by name, with each worker's scoring process (its child)."""
    state = json.loads((data_dir / "run" / "up.json").read_text())
    pids = {name: c["pid"] for name, c in state["components"].items() if c.get("pid")}
    helpers = {f"{name}'s scoring process": child for name, pid in pids.items() if "worker" in name
               for child in children(pid)}
    return {**pids, **helpers, "load generator (this process)": os.getpid()}


def snapshot(data_dir: Path, store: ClickHouseStore, url: str) -> dict[str, Any]:
    pids = processes(data_dir)
    try:
        workers = store.query(
            f"SELECT argMax(process_cpu_s, seen_at), argMax(stage_cpu_s, seen_at), argMax(stage_wall_s, seen_at), "
            "argMax(stage_calls, seen_at) "
            f"FROM {DB}.workers GROUP BY worker_id"
        )
    except StoreError:  # a commit from before the stage budget (run side by side for its totals)
        workers = []
    cpu: dict[str, float] = {}
    wall: dict[str, float] = {}
    calls: dict[str, float] = {}
    process = 0.0
    for process_cpu, stage_cpu, stage_wall, stage_calls in workers:
        process += process_cpu
        for stage, n in stage_calls.items():
            calls[stage] = calls.get(stage, 0) + n
        for stage, seconds in stage_cpu.items():
            cpu[stage] = cpu.get(stage, 0.0) + seconds
        for stage, seconds in stage_wall.items():
            wall[stage] = wall.get(stage, 0.0) + seconds
    return {
        "cpu_s": {name: cpu_s(pid) for name, pid in pids.items()},
        "rss_mb": {name: rss_mb(pid) for name, pid in pids.items()},
        "threads": {name: thread_cpu_s(pid) for name, pid in pids.items() if name == "store" or "worker" in name},
        "worker": {"process_cpu_s": process, "cpu_s": cpu, "wall_s": wall, "calls": calls},
        "store": store_stages(url),
    }


def store_stages(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    request = urllib.request.Request(f"http://{parts.hostname}:{parts.port}/llmwatch/stages")
    token = b64encode(f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError:  # a commit from before the stage budget
        return {"process_cpu_s": 0.0, "stage_cpu_s": {}, "stage_wall_s": {}}


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def budget(before: dict[str, Any], after: dict[str, Any], events: int) -> dict[str, Any]:
    """Microseconds per event: per process, per worker stage, per store stage."""
    per = 1e6 / events
    process = _delta(after["cpu_s"], before["cpu_s"])
    total = sum(process.values())
    worker_cpu = _delta(after["worker"]["cpu_s"], before["worker"]["cpu_s"])
    worker_wall = _delta(after["worker"]["wall_s"], before["worker"]["wall_s"])
    worker_process = after["worker"]["process_cpu_s"] - before["worker"]["process_cpu_s"]
    within_others = worker_cpu.pop(_WITHIN_OTHERS, None)
    # Detectors the scoring process ran: its CPU, not the worker process's (listed, not subtracted).
    helper = {k: worker_cpu.pop(k) for k in list(worker_cpu) if k.endswith(_IN_SCORING_PROCESS)}
    inside = {k: v for k, v in worker_cpu.items() if k not in _OUTSIDE_BATCHES}
    stages = {k: {"cpu_us": v * per, "wall_us": worker_wall.get(k, 0.0) * per} for k, v in inside.items()}
    batch_cpu = worker_cpu.get("batch", 0.0)
    stages["batch bookkeeping, row dicts"] = {"cpu_us": (batch_cpu - sum(inside.values())) * per, "wall_us": 0.0}
    for name in _OWN_THREADS:
        if name in worker_cpu:
            stages[f"{name} (own thread)"] = {"cpu_us": worker_cpu[name] * per, "wall_us": worker_wall.get(name, 0) * per}
    outside = worker_process - sum(worker_cpu.get(k, 0.0) for k in _OUTSIDE_BATCHES)
    stages["faust (Kafka fetch, decode, acks, commits, timers) and torch's threads"] = {"cpu_us": outside * per, "wall_us": 0.0}
    for name, seconds in helper.items():
        stages[name] = {"cpu_us": seconds * per, "wall_us": worker_wall.get(name, 0.0) * per}
    if within_others is not None:
        stages[f"({_WITHIN_OTHERS}, inside the stages above)"] = {
            "cpu_us": within_others * per, "wall_us": worker_wall.get(_WITHIN_OTHERS, 0.0) * per}
    store_cpu = _delta(after["store"]["stage_cpu_s"], before["store"]["stage_cpu_s"])
    store_process = after["store"]["process_cpu_s"] - before["store"]["process_cpu_s"]
    store = {k: v * per for k, v in store_cpu.items()}
    store["HTTP (requests, auth, bodies) and chdb's own threads (merges, pipelines)"] = (store_process - sum(store_cpu.values())) * per
    # "parse" runs once per batch ("batch" twice since a batch is prepared and written apart).
    batches = after["worker"]["calls"].get("parse", 0) - before["worker"]["calls"].get("parse", 0)
    threads = {name: {t: s * per for t, s in _delta(after["threads"][name], before["threads"].get(name, {})).items()
                      if s * per >= 1.0} for name in after["threads"]}
    return {
        "threads": threads,
        "events_per_batch": events / batches if batches else None,
        "processes": {name: {"cpu_us": s * per, "share": s / total if total else 0.0,
                             "rss_mb_before": before["rss_mb"].get(name, 0.0),
                             "rss_mb_after": after["rss_mb"].get(name, 0.0)} for name, s in process.items()},
        "worker": stages,
        "store": store,
    }


# --- the runs -----------------------------------------------------------------------------------


def saturate(bootstrap: str, store: ClickHouseStore, data_dir: Path, url: str, events: int) -> dict[str, Any]:
    prefix = f"sat{uuid.uuid4().hex[:6]}-"
    docs = demo_events(events, prefix)
    before = snapshot(data_dir, store, url)
    workers = {name: pid for name, pid in processes(data_dir).items() if "worker" in name and "scoring" not in name}
    emitter = Emitter(bootstrap, queue_size=events + 1)
    for doc in docs:
        emitter.emit(doc)
    # The workers' memory as the burst is stored: flat, or growing with the events?
    memory: list[tuple[int, float]] = []
    deadline = time.monotonic() + 900
    while (stored := count(store, prefix)) < events:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{stored} of {events} events stored after 900 s")
        memory.append((stored, sum(rss_mb(pid) for pid in workers.values())))
        time.sleep(1.0)
    emitter.flush(60)
    emitter.close()
    rows = store.query(
        f"SELECT count(), uniqExact(event_id), min(timestamp), max(inserted_at) FROM {DB}.traces "
        "WHERE startsWith(app, {p:String})", {"p": prefix},
    )[0]
    # A heartbeat that left after the last row: the worker's stage totals include the whole burst.
    last = rows[3]
    wait_until(lambda: store.query(f"SELECT max(seen_at) > {{t:DateTime64(3, 'UTC')}} FROM {DB}.workers",
                                   {"t": last})[0][0], 30, "a heartbeat after the burst")
    after = snapshot(data_dir, store, url)
    seconds = (rows[3] - rows[2]).total_seconds()
    quarters = [next((mb for n, mb in memory if n >= q * events / 4), memory[-1][1] if memory else 0.0)
                for q in (1, 2, 3)] + [sum(rss_mb(pid) for pid in workers.values())]
    return {"events": rows[0], "distinct": rows[1], "seconds": seconds, "events_per_s": rows[0] / seconds,
            "worker_rss_mb_by_quarter": quarters, "budget": budget(before, after, rows[0])}


def fixed_rate(bootstrap: str, store: ClickHouseStore, data_dir: Path, rate: float, seconds: float) -> dict[str, Any]:
    prefix = f"rate{int(rate)}-{uuid.uuid4().hex[:6]}-"
    total = int(rate * seconds)
    docs = demo_events(total, prefix)
    emitter = Emitter(bootstrap)
    pids = processes(data_dir)
    cpu_before = {name: cpu_s(pid) for name, pid in pids.items()}
    started = time.monotonic()
    for i, doc in enumerate(docs):
        emitter.emit(doc)
        delay = started + (i + 1) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    # What watching this rate costs each process, in cores (a lower rate pays each batch's fixed
    # costs for fewer events).
    elapsed = time.monotonic() - started
    cores = {name: (cpu_s(pid) - cpu_before[name]) / elapsed for name, pid in pids.items()}
    emitter.flush(60)
    emitter.close()
    wait_until(lambda: count(store, prefix) >= total, 600, "all events stored")
    (p50, p90, p99, worst, n) = store.query(
        "SELECT quantileExact(0.5)(l), quantileExact(0.9)(l), quantileExact(0.99)(l), max(l), count() FROM "
        f"(SELECT dateDiff('millisecond', timestamp, inserted_at) AS l FROM {DB}.traces "
        "WHERE startsWith(app, {p:String}))", {"p": prefix},
    )[0]
    return {"rate": rate, "events": n, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": worst, "cores": cores}


def view_costs(store: ClickHouseStore, url: str, rows: int = 20_000, repeats: int = 3,
               single_inserts: int = 25) -> dict[str, dict[str, float]]:
    """What each materialized view adds to an insert: microseconds per source row (the burst's rows
    copied into a scratch schema with every view, then with each view dropped in turn), and
    milliseconds per insert (the median of one-row inserts: a view runs a pipeline and writes a
    part of its own for every insert, however few rows it brings)."""
    scratch = f"bench_views_{uuid.uuid4().hex[:6]}"
    store.command(f"CREATE DATABASE {scratch}")
    try:
        copy = ClickHouseStore(url, scratch)
        migrate(copy, 30)
        # A table lists the materialized views that read it as its dependencies.
        views = copy.query("SELECT name, arrayJoin(dependencies_table) FROM system.tables "
                           "WHERE database = {d:String} AND engine != 'MaterializedView'", {"d": scratch})
        sources = {source for source, _ in views} | {"traces", "scores"}
        source_of = {view: source for source, view in views}

        def insert_s(table: str) -> float:
            best = float("inf")
            for _ in range(repeats):
                copy.command(f"TRUNCATE TABLE {scratch}.{table}")
                started = time.perf_counter()
                copy.command(f"INSERT INTO {scratch}.{table} SELECT * FROM {DB}.{table} LIMIT {rows}")
                best = min(best, time.perf_counter() - started)
            return best

        def one_row_ms(table: str) -> float:
            took = []
            for _ in range(single_inserts):
                started = time.perf_counter()
                copy.command(f"INSERT INTO {scratch}.{table} SELECT * FROM {DB}.{table} LIMIT 1")
                took.append((time.perf_counter() - started) * 1e3)
            return statistics.median(took)

        n = {t: min(rows, store.query(f"SELECT count() FROM {DB}.{t}")[0][0]) for t in sources}
        with_all = {t: insert_s(t) for t in sources if n[t]}
        single = {t: one_row_ms(t) for t in with_all}
        per_row = {f"insert into {t} (with its views)": with_all[t] / n[t] * 1e6 for t in with_all}
        per_insert = {f"insert into {t} (with its views)": single[t] for t in with_all}
        for view, source in sorted(source_of.items()):
            if source not in with_all:
                continue
            copy.command(f"DROP VIEW {scratch}.{view}")
            without, without_single = insert_s(source), one_row_ms(source)
            per_row[f"  view {view}"] = (with_all[source] - without) / n[source] * 1e6
            per_insert[f"  view {view}"] = single[source] - without_single
            with_all[source], single[source] = without, without_single
        for t in with_all:
            per_row[f"  {t} without views"] = with_all[t] / n[t] * 1e6
            per_insert[f"  {t} without views"] = single[t]
        return {"per_row_us": per_row, "per_insert_ms": per_insert}
    finally:
        store.command(f"DROP DATABASE IF EXISTS {scratch}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement of `llmwatch up` as this checkout has it."""
    kafka_port, ch_port = free_port(), free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="llmwatch-bench-"))
    flags = ["--data-dir", str(data_dir), "--kafka-port", str(kafka_port), "--clickhouse-port", str(ch_port),
             "--ingest-port", str(free_port()), "--no-console"]
    if args.workers:
        flags += ["--workers", str(args.workers)]
    up = subprocess.Popen([sys.executable, "-m", "llmwatch", "up", *flags], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env={**os.environ})
    bootstrap = f"127.0.0.1:{kafka_port}"
    try:
        url = store_url(data_dir, ch_port)
        store = ClickHouseStore(url, DB)
        wait_until(lambda: (data_dir / "run" / "up.json").exists()
                   and store.query(f"SELECT count() FROM {DB}.workers")[0][0] > 0, 180, "llmwatch up")
        time.sleep(2)
        saturation = saturate(bootstrap, store, data_dir, url, args.events)
        latencies = [fixed_rate(bootstrap, store, data_dir, rate, args.seconds) for rate in args.rate or [500.0, 2000.0]]
        views = view_costs(store, url)
    finally:
        stop_process(up, 60)
    return {"saturation": saturation, "fixed_rate": latencies, "views": views}


def run_against(ref: str, args: argparse.Namespace) -> dict[str, Any]:
    """The same measurement of commit `ref`: a git worktree of it runs this very script."""
    worktree = Path(tempfile.mkdtemp(prefix="llmwatch-bench-ref-")) / "checkout"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), ref], check=True,
                   capture_output=True)
    try:
        for name in ("pipeline.py", "_common.py"):
            shutil.copy(Path(__file__).with_name(name), worktree / "bench" / name)
        command = [sys.executable, str(worktree / "bench" / "pipeline.py"), "--events", str(args.events),
                   "--seconds", str(args.seconds), "--name", f"{args.name}-before",
                   *[f"--rate={r}" for r in args.rate or []], *(["--workers", str(args.workers)] if args.workers else [])]
        subprocess.run(command, check=True, cwd=worktree, env={**os.environ, "PYTHONPATH": str(worktree)})
        return json.loads((worktree / "bench" / "results" / f"{args.name}-before.json").read_text())
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False)


def report(result: dict[str, Any], workers: int) -> None:
    saturation, latencies, views = result["saturation"], result["fixed_rate"], result["views"]
    b = saturation["budget"]
    print_table(
        f"Pipeline through `llmwatch up` on {os.cpu_count()} cores (every CPU detector, demo traffic"
        f"{f', {workers} workers' if workers else ''})",
        ["measure", "value", "goal"],
        [
            [f"sustained events/s (burst of {saturation['events']:,})", f"{saturation['events_per_s']:,.0f}", ">= 3,500"],
            ["stored exactly once", f"{saturation['distinct']}/{saturation['events']}", "all"],
            ["worker RSS after 1/4, 2/4, 3/4, all of the burst",
             " / ".join(f"{mb:.0f}" for mb in saturation["worker_rss_mb_by_quarter"]) + " MB", "flat"],
            *[[f"emit->row p50 / p99 at {r['rate']:,.0f}/s", f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f} ms",
               "p99 < 1,000 ms" if r["rate"] >= 2000 else "p99 < 500 ms"] for r in latencies],
        ],
    )
    print_table("CPU per process during the burst", ["process", "us/event", "share", "RSS MB before -> after"],
                [[name, f"{p['cpu_us']:.0f}", f"{p['share']:.0%}", f"{p['rss_mb_before']:.0f} -> {p['rss_mb_after']:.0f}"]
                 for name, p in sorted(b["processes"].items(), key=lambda kv: -kv[1]["cpu_us"])])
    for name, threads in b["threads"].items():
        print_table(f"CPU of the {name} process by thread name", ["thread", "us/event"],
                    [[t, f"{us:.0f}"] for t, us in sorted(threads.items(), key=lambda kv: -kv[1])])
    print_table(f"Worker stages (CPU; store calls also wall: the hop and the store's work); "
                f"{b['events_per_batch'] or 0:.0f} events per batch",
                ["stage", "CPU us/event", "wall us/event"],
                [[name, f"{s['cpu_us']:.1f}", f"{s['wall_us']:.1f}" if s["wall_us"] else ""]
                 for name, s in sorted(b["worker"].items(), key=lambda kv: (kv[0].startswith("("), -kv[1]["cpu_us"]))])
    print_table("Store stages (CPU)", ["stage", "us/event"],
                [[name, f"{us:.1f}"] for name, us in sorted(b["store"].items(), key=lambda kv: -kv[1])])
    print_table("CPU at each fixed rate (cores: CPU seconds per second while the load ran)",
                ["process", *[f"{r['rate']:,.0f}/s" for r in latencies]],
                [[name, *[f"{r.get('cores', {}).get(name, 0.0):.2f}" for r in latencies]]
                 for name in latencies[0].get("cores", {})] if latencies else [])
    print_table("Materialized views (INSERT ... SELECT inside the store, no parsing; a view's figure is a difference: no HTTP)",
                ["insert", "us per row", "ms per one-row insert"],
                [[name, f"{us:.1f}", f"{views['per_insert_ms'][name]:.1f}"] for name, us in views["per_row_us"].items()])


def compare(before: dict[str, Any], after: dict[str, Any], ref: str) -> None:
    cpu = _process_cpu
    rows = [["sustained events/s", *(f"{r['saturation']['events_per_s']:,.0f}" for r in (before, after)),
             f"{speedup(before, after):.2f}x"]]
    for process in ("worker", "store", "jobs", "alerts", "broker", "load generator"):
        b, a = cpu(before, process), cpu(after, process)
        rows.append([f"{process} CPU us/event", f"{b:.0f}", f"{a:.0f}", f"{a / b:.2f}x" if b else ""])
        if process == "worker":
            b, a = cpu(before, "scoring process"), cpu(after, "scoring process")
            rows.append(["  of which its scoring process", f"{b:.0f}", f"{a:.0f}", ""])
    for b, a in zip(before["fixed_rate"], after["fixed_rate"], strict=True):
        rows.append([f"p99 emit->row at {a['rate']:,.0f}/s", f"{b['p99_ms']:,.0f} ms", f"{a['p99_ms']:,.0f} ms",
                     f"{a['p99_ms'] / b['p99_ms']:.2f}x" if b["p99_ms"] else ""])
    print_table(f"Side by side: {ref} against this checkout, one run after the other", ["measure", ref, "now", "ratio"],
                rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--rate", type=float, action="append", help="fixed rates to measure latency at (repeatable)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=0, help="worker processes (default: llmwatch up's)")
    parser.add_argument("--against", metavar="GIT_REF", help="first measure this commit the same way (a git "
                        "worktree of it runs this script), then print the two side by side")
    parser.add_argument("--repeats", type=int, default=1, help="with --against: measure the two this many times, "
                        "alternating; each pair is compared, and the pair of the median ratio is reported in full")
    parser.add_argument("--name", default="pipeline", help="name of the JSON result (bench/results/NAME.json)")
    args = parser.parse_args()

    if not args.against:
        result = run(args)
        report(result, args.workers)
        write_json(args.name, {**result, "against": None})
        return
    pairs = []
    for _ in range(max(1, args.repeats)):
        pairs.append((run_against(args.against, args), run(args)))
    ratios = [speedup(b, a) for b, a in pairs]
    before, result = pairs[sorted(range(len(pairs)), key=ratios.__getitem__)[len(pairs) // 2]]
    report(result, args.workers)
    compare(before, result, args.against)
    if len(pairs) > 1:
        compare_pairs(pairs, ratios, args.against)
    write_json(args.name, {**result, "against": {"ref": args.against, **before},
                           "pairs": [{"before": b["saturation"]["events_per_s"], "after": a["saturation"]["events_per_s"],
                                      "ruler": ruler(b, a), "p99_ms_before": [r["p99_ms"] for r in b["fixed_rate"]],
                                      "p99_ms_after": [r["p99_ms"] for r in a["fixed_rate"]]} for b, a in pairs]})


def _process_cpu(result: dict[str, Any], process: str) -> float:
    return sum(p["cpu_us"] for name, p in result["saturation"]["budget"]["processes"].items() if process in name)


def speedup(before: dict[str, Any], after: dict[str, Any]) -> float:
    return after["saturation"]["events_per_s"] / before["saturation"]["events_per_s"]


def ruler(before: dict[str, Any], after: dict[str, Any]) -> float:
    """After / before CPU per event of the processes whose code a change to llmwatch leaves alone
    (the broker, the load generator): how much the machine itself sped up or slowed down."""
    fixed = ("broker", "load generator")
    return sum(_process_cpu(after, p) for p in fixed) / max(1e-9, sum(_process_cpu(before, p) for p in fixed))


def compare_pairs(pairs: list[tuple[dict[str, Any], dict[str, Any]]], ratios: list[float], ref: str) -> None:
    rates = [r["rate"] for r in pairs[0][1]["fixed_rate"]]

    def p99s(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
        return [f"{b['p99_ms']:,.0f} -> {a['p99_ms']:,.0f}" for b, a in zip(before["fixed_rate"], after["fixed_rate"],
                                                                           strict=True)]

    rows = [[str(i), f"{b['saturation']['events_per_s']:,.0f}", f"{a['saturation']['events_per_s']:,.0f}",
             f"{ratio:.2f}x", f"{ruler(b, a):.2f}x", *p99s(b, a)]
            for i, ((b, a), ratio) in enumerate(zip(pairs, ratios, strict=True), 1)]
    rows.append(["median", "", "", f"{statistics.median(ratios):.2f}x", "", *["" for _ in rates]])
    print_table(f"Each pair, {ref} then this checkout (ruler: the broker's and the load generator's CPU per event, "
                "after / before: the machine's own drift)",
                ["pair", f"{ref} events/s", "now events/s", "ratio", "ruler", *[f"p99 ms at {r:,.0f}/s" for r in rates]],
                rows)


if __name__ == "__main__":
    main()
