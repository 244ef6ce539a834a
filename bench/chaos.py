"""Chaos against `llmwatch up`: processes killed and frozen mid-stream, hostile Kafka messages,
fuzzed HTTP requests, and the store probes. Prints a table and writes bench/results/chaos.json.

Goal for every row: 0 lost, 0 doubled, 0 crash loops, every probe refused (the in-memory broker
loses what it held when killed: that row is reported, not a goal).

    .venv/bin/python bench/chaos.py            # the full run (about 10 minutes)
    .venv/bin/python bench/chaos.py --quick    # a small version of each scenario (tests/test_chaos.py)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from _common import free_port, print_table, stop_process, store_url, wait_until, write_json
from confluent_kafka import Producer

from llmwatch import Emitter
from llmwatch.core.processes import port_open
from llmwatch.storage.clickhouse import ClickHouseStore
from tests.storage.probes import PROBES

DB = "llmwatch"


@dataclass(frozen=True)
class Scale:
    worker_events: int = 20_000
    worker_kills: int = 10
    store_events: int = 10_000
    freeze_s: float = 60.0
    broker_events: int = 10_000
    hostile: int = 10_000
    valid: int = 1_000
    big_strings: int = 20
    http_requests: int = 2_000
    rate: float = 200.0  # events/s the app emits
    store_rate: float = 100.0  # slower while the store is frozen, so the stream outlasts the freeze


QUICK = Scale(worker_events=1_500, worker_kills=2, store_events=1_000, freeze_s=5.0, broker_events=1_000,
              hostile=500, valid=100, big_strings=2, http_requests=200, rate=200.0, store_rate=100.0)


class Stack:
    """`llmwatch up --no-console` on free ports, in a temporary data folder."""

    def __init__(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="llmwatch-chaos-"))
        self.kafka_port, self.store_port, self.ingest_port = free_port(), free_port(), free_port()
        flags = ["--data-dir", str(self.data_dir), "--kafka-port", str(self.kafka_port),
                 "--clickhouse-port", str(self.store_port), "--ingest-port", str(self.ingest_port), "--no-console"]
        self.process = subprocess.Popen([sys.executable, "-m", "llmwatch", "up", *flags],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.bootstrap = f"127.0.0.1:{self.kafka_port}"
        self.ingest_url = f"http://127.0.0.1:{self.ingest_port}"
        # Short timeouts: a poller that waits a minute on a frozen store only queues more work.
        self.store = ClickHouseStore(store_url(self.data_dir, self.store_port), DB, query_timeout_s=5)
        # `up` starts the ingest server last: once it listens and a worker beats, the stack is up.
        wait_until(lambda: port_open("127.0.0.1", self.ingest_port) and self.workers_alive() > 0, 240, "llmwatch up")

    def pid(self, component: str) -> int | None:
        try:
            state = json.loads((self.data_dir / "run" / "up.json").read_text())
        except (OSError, ValueError):
            return None
        return state["components"].get(component, {}).get("pid")

    def workers_alive(self) -> int:
        return self.store.query(f"SELECT count() FROM {DB}.workers FINAL WHERE seen_at > now64(3) - INTERVAL 15 SECOND")[0][0]

    def signal(self, component: str, sig: int) -> int:
        """Send `sig` to the component's live process, waiting for the supervisor to have
        restarted it if the last one is dead (a crashed component restarts after a backoff)."""
        for _ in range(600):
            pid = self.pid(component)
            try:
                if pid is not None and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z":
                    os.kill(pid, sig)
                    return pid
            except (OSError, IndexError):  # exited in between
                pass
            time.sleep(0.2)
        raise TimeoutError(f"no live {component} process to signal")

    def close(self) -> None:
        stop_process(self.process, 60)


def emit_steadily(stack: Stack, app: str, count: int, rate: float,
                  actions: dict[int, Callable[[], None]] | None = None) -> dict[str, Any]:
    """Emit `count` events through the SDK at `rate`, running actions[i] before event i.
    Returns the event ids sent and the longest emit() call."""
    emitter = Emitter(stack.bootstrap, app=app, queue_size=count + 1)
    ids, longest, started = [], 0.0, time.monotonic()
    for i in range(count):
        if actions and i in actions:
            actions[i]()
        event_id = str(uuid.uuid4())
        t = time.perf_counter()
        emitter.emit({"event_id": event_id, "input": f"Where is my order {i}?",
                      "output": "It ships tomorrow, tracking follows by mail.", "latency_ms": 500.0})
        longest = max(longest, time.perf_counter() - t)
        ids.append(event_id)
        delay = started + (i + 1) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    emitter.flush(120)
    stats = emitter.stats()
    emitter.close()
    return {"ids": ids, "longest_emit_ms": longest * 1000, "sdk": stats}


def settle(stack: Stack, app: str, expected: int, quiet_s: float = 30.0, timeout_s: float = 600.0) -> int:
    """Wait until `expected` distinct events of `app` are stored with their scores, or nothing new
    arrives for quiet_s while a worker is alive (a restarting worker is not a reason to stop
    waiting). A batch's score rows land after its trace rows (a large batch's by a second or so):
    counting the unscored before they land would blame a write still in progress."""
    last, last_change, deadline = -1, time.monotonic(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            stored_and_scored = stack.store.query(
                f"SELECT uniqExact(event_id) FROM {DB}.traces WHERE app = {{a:String}} UNION ALL "
                f"SELECT uniqExact(event_id) FROM {DB}.scores WHERE app = {{a:String}} AND detector = 'toxicity' "
                "AND target = 'output'", {"a": app})
            n = min(count for (count,) in stored_and_scored)
            working = stack.workers_alive() > 0
        except Exception:  # the store is restarting
            n, working = last, False
        if n >= expected:
            return n
        if n != last or not working:
            last, last_change = n, time.monotonic()
        elif time.monotonic() - last_change > quiet_s:
            return n
        time.sleep(1)
    return last


def tally(stack: Stack, app: str, sent: list[str]) -> dict[str, int]:
    rows, distinct = stack.store.query(
        f"SELECT count(), uniqExact(event_id) FROM {DB}.traces WHERE app = {{a:String}}", {"a": app})[0]
    unscored = stack.store.query(
        f"SELECT count() FROM (SELECT DISTINCT event_id FROM {DB}.traces WHERE app = {{a:String}}) "
        f"WHERE event_id NOT IN (SELECT event_id FROM {DB}.scores WHERE app = {{a:String}} AND detector = 'toxicity' "
        "AND target = 'output')", {"a": app})[0][0]
    rolled = stack.store.query(f"SELECT sum(events) FROM {DB}.trace_stats WHERE app = {{a:String}}", {"a": app})[0][0]
    return {"sent": len(sent), "stored": distinct, "lost": len(sent) - distinct, "doubled_rows": rows - distinct,
            "unscored": unscored, "rollup_excess": int(rolled or 0) - distinct}


def first_row_after(stack: Stack, app: str, since: float, timeout_s: float = 300.0) -> float:
    """Seconds from `since` (a time.time()) until the first row of `app` inserted after it (the
    store stamps inserted_at itself). Measured whenever it is called: the earliest such row."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            first = stack.store.query(
                f"SELECT toUnixTimestamp64Milli(min(inserted_at)) FROM {DB}.traces "
                "WHERE app = {a:String} AND inserted_at > fromUnixTimestamp64Milli({t:Int64})",
                {"a": app, "t": int(since * 1000)})[0][0]
            if first:
                return first / 1000 - since
        except Exception:
            pass
        time.sleep(0.5)
    return float("inf")


def when_the_store_answers(stack: Stack, marks: dict[str, float]) -> None:
    """Record in marks["answering"] when the (restarting) store first answers a ping."""

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{stack.store_port}/ping", timeout=1).status_code == 200:
                    marks["answering"] = time.time()
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()


def kill_the_worker(stack: Stack, scale: Scale) -> dict[str, Any]:
    step = scale.worker_events // (scale.worker_kills + 1)
    kills = {step * (k + 1): lambda: stack.signal("worker", signal.SIGKILL) for k in range(scale.worker_kills)}
    sent = emit_steadily(stack, "chaos-worker", scale.worker_events, scale.rate, kills)
    settle(stack, "chaos-worker", scale.worker_events)
    return {"kills": scale.worker_kills, **tally(stack, "chaos-worker", sent["ids"])}


def freeze_and_kill_the_store(stack: Stack, scale: Scale) -> dict[str, Any]:
    app, marks = "chaos-store", {}
    freeze_at = scale.store_events // 10
    thaw_after = int(scale.freeze_s * scale.store_rate)

    def freeze() -> None:
        marks["frozen"] = time.time()
        stack.signal("store", signal.SIGSTOP)

    def thaw() -> None:
        stack.signal("store", signal.SIGCONT)
        marks["thawed"] = time.time()

    def kill() -> None:
        stack.signal("store", signal.SIGKILL)
        marks["killed"] = time.time()
        time.sleep(0.2)  # the dead store's port closes; then wait for the restarted one
        when_the_store_answers(stack, marks)

    actions = {freeze_at: freeze, freeze_at + thaw_after: thaw}
    if freeze_at + thaw_after >= scale.store_events:  # a short run: thaw near the end
        actions = {freeze_at: freeze, scale.store_events - 2: thaw}
    sent = emit_steadily(stack, app, scale.store_events, scale.store_rate, actions)
    resume_after_freeze = first_row_after(stack, app, marks["thawed"])
    settle(stack, app, scale.store_events)
    # Then kill -9 it under load: the supervisor restarts it, the worker resumes.
    more = emit_steadily(stack, app + "-kill", max(200, scale.store_events // 5), scale.rate,
                         {50: kill})
    wait_until(lambda: "answering" in marks, 120, "the restarted store")
    resume_after_kill = first_row_after(stack, app + "-kill", marks["answering"])
    settle(stack, app + "-kill", len(more["ids"]))
    first, second = tally(stack, app, sent["ids"]), tally(stack, app + "-kill", more["ids"])
    return {"freeze_s": round(marks["thawed"] - marks["frozen"], 1),
            "resume_after_thaw_s": round(resume_after_freeze, 1), "resume_after_restart_s": round(resume_after_kill, 1),
            **{k: first[k] + second[k] for k in first}}


def kill_the_broker(stack: Stack, scale: Scale) -> dict[str, Any]:
    app = "chaos-broker"
    sent = emit_steadily(stack, app, scale.broker_events, scale.rate,
                         {scale.broker_events // 2: lambda: stack.signal("broker", signal.SIGKILL)})
    settle(stack, app, scale.broker_events, quiet_s=60)
    result = tally(stack, app, sent["ids"])
    return {**result, "sdk_delivered": sent["sdk"]["delivered"], "longest_emit_ms": round(sent["longest_emit_ms"], 2)}


def hostile_messages(count: int, big: int, rng: random.Random) -> list[bytes]:
    now_ms = int(time.time() * 1000)

    def event(**fields: Any) -> dict[str, Any]:
        return {"event_id": str(uuid.uuid4()), "trace_id": "t", "timestamp": now_ms, "app": "chaos-hostile",
                "input": "hi", "output": "hello", **fields}

    kinds: list[Callable[[], bytes]] = [
        lambda: rng.randbytes(rng.randint(1, 200)),
        lambda: b'{"app": "\xff\xfe", "input": "x"}',
        lambda: b'{"app": "a\x00", ' + b'"x": 1',
        lambda: b'{"a":' * 1000 + b"1" + b"}" * 1000,
        lambda: json.dumps(event(usage={"input_tokens": 2**70})).encode(),
        lambda: json.dumps(event(cost_usd=1e308)).encode(),
        lambda: json.dumps(event(timestamp="0001-01-01T00:00:00+01:00")).encode(),
        lambda: json.dumps(event(timestamp="2999-01-01T00:00:00Z")).encode(),
        lambda: json.dumps(event())[:-1].encode() + b', "app": "other"}',
        lambda: json.dumps(event(app="")).encode(),
        lambda: json.dumps(event(input={"role": "user"})).encode(),
        lambda: json.dumps({"kind": "feedback", "trace_id": "t", "score": 7}).encode(),
    ]
    messages = [rng.choice(kinds)() for _ in range(count - big)]
    messages += [json.dumps(event(output="x" * 2_000_000)).encode() for _ in range(big)]
    return messages


def valid_messages(count: int, app: str) -> list[bytes]:
    now_ms = int(time.time() * 1000)
    texts = ["مرحبا، أين طلبي؟", "שלום \u202eעולם\u202c", "🚀🔥 launch day 🎉", "plain question"]
    return [json.dumps({"event_id": str(uuid.uuid4()), "trace_id": uuid.uuid4().hex, "timestamp": now_ms, "app": app,
                        "input": texts[i % len(texts)], "output": "answer " + texts[(i + 1) % len(texts)]},
                       ensure_ascii=False).encode() for i in range(count)]


def produce(bootstrap: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 16 * 1024 * 1024, "linger.ms": 5})
    for value in values:
        while True:
            try:
                producer.produce("llm.traces", value=value)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(120) == 0


def rejected_since(stack: Stack, since: float) -> dict[str, int]:
    rows = stack.store.query(
        f"SELECT reason, count() FROM {DB}.rejected WHERE received_at >= fromUnixTimestamp64Milli({{t:Int64}}) GROUP BY reason",
        {"t": int(since * 1000)})
    return dict(rows)


def hostile_mix(stack: Stack, scale: Scale) -> dict[str, Any]:
    rng = random.Random(7)
    worker_pid = stack.pid("worker")
    # The clean baseline: the same number of messages, all valid.
    clean = valid_messages(scale.hostile + scale.valid, "chaos-clean")
    started = time.time()
    produce(stack.bootstrap, clean)
    settle(stack, "chaos-clean", len(clean))
    clean_s = time.time() - started

    valid = valid_messages(scale.valid, "chaos-hostile-valid")
    hostile = hostile_messages(scale.hostile, scale.big_strings, rng)
    mixed = valid + hostile
    rng.shuffle(mixed)
    started = time.time()
    produce(stack.bootstrap, mixed)
    wait_until(lambda: sum(rejected_since(stack, started).values()) >= len(hostile), 600, "rejections")
    settle(stack, "chaos-hostile-valid", len(valid))
    mixed_s = time.time() - started
    reasons = rejected_since(stack, started)
    rows, distinct = stack.store.query(f"SELECT count(), uniqExact(event_id) FROM {DB}.traces WHERE app = 'chaos-hostile-valid'")[0]
    return {"hostile": len(hostile), "rejected": sum(reasons.values()), "reasons": reasons, "valid": len(valid),
            "valid_stored": distinct, "doubled_rows": rows - distinct, "worker_restarted": stack.pid("worker") != worker_pid,
            "clean_s": round(clean_s, 1), "mixed_s": round(mixed_s, 1), "slowdown": round(mixed_s / clean_s, 2)}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fuzz_http(stack: Stack, scale: Scale) -> dict[str, Any]:
    rng = random.Random(11)
    url = stack.ingest_url
    event = {"app": "chaos-http", "input": "x", "output": "y"}
    bodies: list[Callable[[], tuple[str, str, bytes, dict[str, str]]]] = [
        lambda: ("POST", "/v1/events", rng.randbytes(rng.randint(0, 5000)), {}),
        lambda: ("POST", "/v1/traces", rng.randbytes(rng.randint(0, 5000)), {"Content-Type": "application/x-protobuf"}),
        lambda: ("POST", "/v1/traces", rng.randbytes(2000), {"Content-Type": "application/json"}),
        lambda: ("POST", "/v1/events", b'{"a":' * 1000 + b"1" + b"}" * 1000, {}),
        lambda: ("POST", "/v1/events", b"[" * 100_000 + b"]" * 100_000, {}),
        lambda: ("POST", "/v1/events", gzip.compress(b"[" + b"0," * 10_000_000 + b"0]"), {"Content-Encoding": "gzip"}),
        lambda: ("POST", "/v1/events", rng.randbytes(300), {"Content-Encoding": "gzip"}),
        lambda: ("POST", "/v1/events", rng.randbytes(300), {"Content-Encoding": rng.choice(["br", "zstd", "x" * 100])}),
        lambda: ("POST", "/v1/events", json.dumps({**event, "usage": {"input_tokens": 2**64}}).encode(), {}),
        lambda: ("POST", "/v1/events", json.dumps([event] * rng.randint(1, 50)).encode(), {}),
        lambda: ("POST", "/v1/events", b'{"app": "a", "app": "b", "input": "x", "output": "y"}', {}),
        lambda: ("POST", "/v1/events", json.dumps({**event, "input": "\ud800"}).encode(), {}),
        lambda: (rng.choice(["GET", "PUT", "DELETE", "PATCH"]), rng.choice(["/v1/events", "/", "/x" * 50]), b"", {}),
        lambda: ("POST", "/v1/traces", b"", {"Content-Type": "text/plain"}),
        lambda: ("POST", "/v1/events", json.dumps(event).encode(), {"Content-Type": "application/json; charset=x-nope"}),
    ]
    statuses: dict[str, int] = {}
    pid = stack.pid("ingest")
    assert pid is not None
    with httpx.Client(timeout=30) as client:

        def send(method: str, path: str, body: bytes, headers: dict[str, str]) -> str:
            try:
                return str(client.request(method, f"{url}{path}", content=body, headers=headers).status_code)
            except httpx.HTTPError as exc:  # the server closed the connection: counted, not fatal
                return type(exc).__name__

        for _ in range(3):  # every kind of request once, so the allocator has grown before the reading
            for make in bodies:
                send(*make())
        before, curve = rss_kb(pid), []
        for i in range(scale.http_requests):
            key = send(*rng.choice(bodies)())
            statuses[key] = statuses.get(key, 0) + 1
            if (i + 1) % max(1, scale.http_requests // 8) == 0:
                curve.append(round(rss_kb(pid) / 1024, 1))
    # Requests in flight hold their bodies (up to 16 MB decompressed) for a moment: "back within
    # 20 %" is read once the server is idle again.
    time.sleep(1.0)
    after = min(rss_kb(pid) for _ in range(5) if time.sleep(0.5) is None)
    errors = sum(n for code, n in statuses.items() if code.startswith("5") and code != "503")
    return {"requests": scale.http_requests, "statuses": dict(sorted(statuses.items())), "server_errors": errors,
            "rss_before_mb": round(before / 1024, 1), "rss_after_mb": round(after / 1024, 1),
            "rss_growth": round(after / before - 1, 3), "rss_curve_mb": curve, "ingest_restarted": stack.pid("ingest") != pid}


def probe_the_store(stack: Stack) -> dict[str, Any]:
    base = f"http://127.0.0.1:{stack.store_port}"
    password = (stack.data_dir / "clickhouse-password").read_text().strip()
    refused = {}
    for probe in PROBES:
        answer = httpx.post(f"{base}/", content=probe.encode(), auth=("default", password), timeout=30)
        refused[probe] = answer.status_code == 403
    unauthenticated = httpx.get(f"{base}/?query=SELECT+1", timeout=30).status_code == 401
    foreign = httpx.post(f"{base}/", content=b"SELECT 1", auth=("default", password), headers={"Origin": "http://evil"}).status_code == 403
    get_write = httpx.get(f"{base}/", params={"query": "CREATE TABLE default.x (a Int8) ENGINE = Memory"},
                          auth=("default", password)).status_code == 403
    return {"probes": len(PROBES), "refused": sum(refused.values()), "unauthenticated_refused": unauthenticated,
            "foreign_origin_refused": foreign, "get_write_refused": get_write,
            "not_refused": [p for p, ok in refused.items() if not ok]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small version of each scenario")
    parser.add_argument("--only", action="append", help="run only these scenarios (repeatable)")
    args = parser.parse_args()
    scale = QUICK if args.quick else Scale()
    scenarios = {"worker": kill_the_worker, "store": freeze_and_kill_the_store, "hostile": hostile_mix,
                 "http": fuzz_http, "probes": lambda stack, _scale: probe_the_store(stack), "broker": kill_the_broker}
    stack = Stack()
    results: dict[str, Any] = {"scale": scale.__dict__}
    try:
        for name, run in scenarios.items():
            if args.only and name not in args.only:
                continue
            started = time.monotonic()
            results[name] = run(stack, scale)
            results[name]["took_s"] = round(time.monotonic() - started, 1)
            print(f"{name}: {results[name]}", flush=True)
    finally:
        stack.close()

    rows = []
    if "worker" in results:
        r = results["worker"]
        rows.append([f"kill -9 the worker {r['kills']}x during {r['sent']:,} events", r["lost"], r["doubled_rows"],
                     f"unscored {r['unscored']}, rollup excess {r['rollup_excess']}"])
    if "store" in results:
        r = results["store"]
        rows.append([f"freeze the store {r['freeze_s']:.0f} s, then kill -9 it ({r['sent']:,} events)", r["lost"],
                     r["doubled_rows"], f"resumed {r['resume_after_thaw_s']} s after thaw, "
                                        f"{r['resume_after_restart_s']} s after restart"])
    if "broker" in results:
        r = results["broker"]
        rows.append([f"kill -9 the in-memory broker ({r['sent']:,} events)", r["lost"], r["doubled_rows"],
                     f"longest emit {r['longest_emit_ms']} ms; SDK reported {r['sdk_delivered']:,} delivered"])
    if "hostile" in results:
        r = results["hostile"]
        rows.append([f"{r['hostile']:,} hostile + {r['valid']:,} valid Kafka messages",
                     r["valid"] - r["valid_stored"], r["doubled_rows"],
                     f"{r['rejected']:,} rejected with a reason; worker restarted: {r['worker_restarted']}; "
                     f"{r['slowdown']}x the time of clean traffic"])
    if "http" in results:
        r = results["http"]
        rows.append([f"{r['requests']:,} fuzzed HTTP requests", "-", "-",
                     f"{r['server_errors']} 5xx (not 503); RSS {r['rss_before_mb']} -> {r['rss_after_mb']} MB"])
    if "probes" in results:
        r = results["probes"]
        rows.append([f"{r['probes']} store probes + auth, origin, GET write", "-", "-",
                     f"{r['refused']}/{r['probes']} refused; others refused: "
                     f"{r['unauthenticated_refused'] and r['foreign_origin_refused'] and r['get_write_refused']}"])
    print_table("Chaos against `llmwatch up` (bench/chaos.py)" + (" --quick" if args.quick else ""),
                ["scenario", "lost", "doubled", "notes"], rows)
    write_json("chaos-quick" if args.quick else "chaos", results)


if __name__ == "__main__":
    main()
