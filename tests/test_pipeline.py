"""End to end through the real broker, a real `llmwatch worker` process and the embedded store:
exact counts from the SDK and a plain producer, and exact counts after a kill -9 mid-stream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka import Producer

from llmwatch import Emitter
from llmwatch.core.processes import children
from llmwatch.core.settings import Settings, settings_env
from llmwatch.storage.clickhouse import ClickHouseStore
from tests.conftest import stop_process, wait_until

pytestmark = pytest.mark.slow


def start_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env(settings)}
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "llmwatch", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)


def worker_alive(store: ClickHouseStore, pid: int) -> bool:
    rows = store.query(f"SELECT count() FROM {store.database}.workers WHERE pid = {{pid:UInt32}}", {"pid": pid})
    return rows[0][0] > 0


def table_counts(store: ClickHouseStore) -> tuple[int, int, int, int]:
    db = store.database
    traces, distinct = store.query(f"SELECT count(), uniqExact(event_id) FROM {db}.traces")[0]
    scores = store.query(f"SELECT count() FROM {db}.scores")[0][0]
    rejected = store.query(f"SELECT count() FROM {db}.rejected")[0][0]
    return traces, distinct, scores, rejected


def stages_of(store: ClickHouseStore, pid: int) -> tuple[float, dict[str, float], dict[str, int]]:
    """The worker's latest process CPU, CPU seconds per stage and calls per stage."""
    rows = store.query(
        f"SELECT process_cpu_s, stage_cpu_s, stage_calls FROM {store.database}.workers FINAL WHERE pid = {{pid:UInt32}}",
        {"pid": pid},
    )
    return rows[0] if rows else (0.0, {}, {})


def plain_event(i: int) -> bytes:
    return json.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "trace_id": f"plain-{i}",
            "timestamp": int(time.time() * 1000),
            "app": "plain-app",
            "input": "what is my balance",
            "output": "It is 42 dollars.",
        }
    ).encode()


def test_sdk_and_plain_producer_events_each_stored_once(
    stack_settings: Settings, embedded_store: ClickHouseStore, tmp_path: Path
) -> None:
    """N events from the SDK and M from a plain producer give N+M rows and 2(N+M) score rows;
    junk goes to the rejected table."""
    worker = start_worker(stack_settings, tmp_path / "worker.log")
    try:
        wait_until(lambda: worker_alive(embedded_store, worker.pid), 60, "worker")
        with Emitter(stack_settings.bootstrap_servers, app="sdk-app", topic=stack_settings.traces_topic) as emitter:
            for i in range(1500):
                emitter.emit({"input": f"question {i}", "output": "answer"})
            assert emitter.flush(30)
        producer = Producer({"bootstrap.servers": stack_settings.bootstrap_servers})
        for i in range(500):
            producer.produce(stack_settings.traces_topic, plain_event(i), key=f"plain-{i}".encode())
        for junk in (b"not json", b"\xff\xfe", b'{"app": "x"}'):
            producer.produce(stack_settings.traces_topic, junk)
        assert producer.flush(30) == 0
        wait_until(lambda: table_counts(embedded_store) == (2000, 2000, 4000, 3), 90, "all rows")
        time.sleep(2)  # nothing more arrives late
        assert table_counts(embedded_store) == (2000, 2000, 4000, 3)
        # Its heartbeat says where its time went: every stage of its batches, with CPU and calls.
        wait_until(lambda: stages_of(embedded_store, worker.pid)[2].get("parse", 0) > 0, 30, "stages")
        process_cpu, cpu, calls = stages_of(embedded_store, worker.pid)
        assert {"batch", "parse", "pii", "store insert traces", "store insert scores_by_event"} <= set(cpu)
        # Toxicity scores in the scoring process where there are two cores (a stage of its own name).
        assert {"detector toxicity", "detector toxicity (scoring process)"} & set(cpu)
        inside = cpu["parse"] + cpu["pii"] + sum(v for k, v in cpu.items()
                                                 if k.startswith("detector ") and not k.endswith("(scoring process)"))
        assert 0 < inside <= cpu["batch"] <= process_cpu
        assert calls["batch"] == 2 * calls["parse"]  # each batch is prepared, then written, apart
    finally:
        stop_process(worker, timeout_s=10)
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]


def test_kill_9_mid_stream_then_restart_gives_exact_counts(
    stack_settings: Settings, embedded_store: ClickHouseStore, tmp_path: Path
) -> None:
    """A worker killed with SIGKILL mid-stream leaves uncommitted offsets; its replacement
    replays them and the counts are still exact."""
    total = 6000
    log_path = tmp_path / "worker.log"
    worker = start_worker(stack_settings, log_path)
    emitter = Emitter(stack_settings.bootstrap_servers, app="kill-app", topic=stack_settings.traces_topic)

    def emit_steadily() -> None:
        for i in range(total):
            emitter.emit({"input": f"question {i}", "output": "answer"})
            if i % 100 == 99:
                time.sleep(0.05)

    try:
        wait_until(lambda: worker_alive(embedded_store, worker.pid), 60, "worker")
        sender = threading.Thread(target=emit_steadily)
        sender.start()
        wait_until(lambda: table_counts(embedded_store)[0] >= 1000, 60, "first rows")
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        sender.join()
        assert emitter.flush(30)
        stored_at_kill = table_counts(embedded_store)[0]
        assert stored_at_kill < total, "the kill should land mid-stream"
        worker = start_worker(stack_settings, log_path)
        wait_until(lambda: table_counts(embedded_store)[0] >= total, 120, "all rows after restart")
        time.sleep(3)  # let any replayed batch finish
        traces, distinct, scores, _ = table_counts(embedded_store)
        assert (traces, distinct, scores) == (total, total, 2 * total)
    finally:
        emitter.close()
        stop_process(worker, timeout_s=10)


def test_two_workers_share_the_partitions(stack_settings: Settings, embedded_store: ClickHouseStore, tmp_path: Path) -> None:
    """Workers scale out as members of one consumer group: two of them store everything once."""
    workers = [start_worker(stack_settings, tmp_path / f"worker-{i}.log") for i in range(2)]
    try:
        for worker in workers:
            wait_until(lambda w=worker: worker_alive(embedded_store, w.pid), 60, "worker")
        with Emitter(stack_settings.bootstrap_servers, app="group-app", topic=stack_settings.traces_topic) as emitter:
            for i in range(3000):
                emitter.emit({"trace_id": f"t{i}", "input": "q", "output": "a"})
            assert emitter.flush(30)
        wait_until(lambda: table_counts(embedded_store)[0] >= 3000, 120, "all rows")
        time.sleep(2)
        assert table_counts(embedded_store)[:3] == (3000, 3000, 6000)
        shares = embedded_store.query(
            f"SELECT pid, max(traces) FROM {embedded_store.database}.workers GROUP BY pid"
        )
        assert {pid for pid, _ in shares} == {w.pid for w in workers}
    finally:
        for worker in workers:
            stop_process(worker, timeout_s=10)


PII = {
    "email": "jane.doe@example.com",
    "card": "4111 1111 1111 1111",
    "phone": "+44 20 7946 0958",
    "key": "sk-proj-4f9XbQ2LmN8pRt6VwYz1AbCdEf",
    "iban": "DE89370400440532013000",
    "ip": "203.0.113.42",
}


def test_redact_policy_keeps_pii_out_of_store_dlq_and_logs(
    stack_settings: Settings, embedded_store: ClickHouseStore, tmp_path: Path
) -> None:
    """Valid events, a schema-invalid event and plain junk, all carrying PII: with the default
    policy (redact) none of it reaches any ClickHouse table, the DLQ topic or the worker's log."""
    from confluent_kafka import Consumer

    secrets = " ".join(PII.values())
    log_path = tmp_path / "worker.log"
    worker = start_worker(stack_settings, log_path)
    try:
        wait_until(lambda: worker_alive(embedded_store, worker.pid), 60, "worker")
        producer = Producer({"bootstrap.servers": stack_settings.bootstrap_servers})
        good = json.loads(plain_event(0))
        good.update(input=f"I am {secrets}", output=f"Noted: {secrets}", context=[f"CRM: {secrets}"])
        bad_schema = {**good, "event_id": str(uuid.uuid4()), "latency_ms": f"slow {PII['email']}"}
        for payload in (json.dumps(good).encode(), json.dumps(bad_schema).encode(), f"junk {secrets}".encode()):
            producer.produce(stack_settings.traces_topic, payload)
        assert producer.flush(30) == 0
        wait_until(lambda: table_counts(embedded_store)[0::3] == (1, 2), 60, "rows")
    finally:
        stop_process(worker)

    db = embedded_store.database
    dump = "".join(
        json.dumps(embedded_store.query(f"SELECT * FROM {db}.{table}"), default=str, ensure_ascii=False)
        for table in ("traces", "scores", "rejected")
    )
    consumer = Consumer({
        "bootstrap.servers": stack_settings.bootstrap_servers, "group.id": f"dlq-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
    })
    consumer.subscribe([stack_settings.dlq_topic])
    dlq: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(dlq) < 2 and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is not None and not message.error():
            dlq.append(message.value() + b"".join(v for _, v in message.headers() or []))
    consumer.close()
    assert len(dlq) == 2
    sinks = {"clickhouse": dump, "dlq": b"".join(dlq).decode("utf-8", "replace"), "log": log_path.read_text()}
    for sink, text in sinks.items():
        for kind, value in PII.items():
            assert value not in text, f"{kind} reached the {sink}"
    pii = embedded_store.query(f"SELECT pii FROM {db}.traces")[0][0]
    assert pii["input.email"] == pii["output.card"] == pii["context.iban"] == 1
    assert "[EMAIL]" in dump and "[CARD]" in sinks["dlq"]


@pytest.mark.parametrize("scoring_process", ["on", "off"])
def test_the_worker_scores_in_its_scoring_process_when_asked(
    stack_settings: Settings, embedded_store: ClickHouseStore, tmp_path: Path, scoring_process: str
) -> None:
    """--scoring-process on: toxicity and injection score in the worker's child process (their
    stages say so), and every row is there; off: in the worker, and it has no child."""
    settings = replace(stack_settings, scoring_process=scoring_process, detectors="toxicity,injection,anomaly")
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        wait_until(lambda: worker_alive(embedded_store, worker.pid), 60, "worker")
        producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
        for i in range(300):
            producer.produce(settings.traces_topic, plain_event(i))
        assert producer.flush(30) == 0
        # Toxicity of input and output, injection of input and context, anomaly of the event.
        wait_until(lambda: table_counts(embedded_store)[:3] == (300, 300, 1500), 90, "all rows")
        in_helper = f"detector toxicity {'(scoring process)' if scoring_process == 'on' else ''}".strip()
        wait_until(lambda: in_helper in stages_of(embedded_store, worker.pid)[1], 30, "stages")
        assert bool(children(worker.pid)) == (scoring_process == "on")
    finally:
        stop_process(worker, timeout_s=10)
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]


def test_a_take_of_big_events_is_handled_in_parts_bounded_by_bytes(
    stack_settings: Settings, embedded_store: ClickHouseStore, tmp_path: Path
) -> None:
    """A batch is held parsed while the next is prepared, so its bytes, not only its count, are
    bounded: a take of big events is handled in parts of at most batch_max_bytes, each stored once."""
    settings = replace(stack_settings, batch_size=500, batch_window_s=1.0, batch_max_bytes=20_000)
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    values = [json.dumps({**json.loads(plain_event(i)), "output": "x" * 1_000}).encode() for i in range(300)]
    for value in values:
        producer.produce(settings.traces_topic, value)
    assert producer.flush(30) == 0  # all waiting before the worker starts: its takes are full
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        wait_until(lambda: table_counts(embedded_store)[:3] == (300, 300, 600), 90, "all rows")
        # At most 20,000 bytes of ~1,100-byte events per part: 300 events need at least 17 parts
        # (a take of 300 handled whole would be one); heartbeats report them within seconds.
        expected = 300 * len(values[0]) // 20_000
        wait_until(lambda: stages_of(embedded_store, worker.pid)[2].get("parse", 0) >= expected, 30, "parts")
    finally:
        stop_process(worker, timeout_s=10)
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]
