"""Helpers shared by the benchmarks: servers on free ports, tables, JSON results."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

from llmwatch.core.processes import free_port, stop_process, wait_until  # noqa: E402

try:
    from llmwatch.core.processes import children
except ImportError:  # pipeline.py --against a commit from before the scoring process: no worker had a child

    def children(pid: int) -> list[int]:  # type: ignore[misc]
        return []

__all__ = ["batch_handler", "children", "cpu_s", "cpu_s_of", "demo_messages", "free_port", "print_table", "start_store",
           "start_tansu", "stop_process", "store_url", "wait_until", "write_json"]

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """CPU seconds a process has used, all its threads (utime + stime)."""
    return cpu_s_of(Path(f"/proc/{pid}/stat"))


def cpu_s_of(stat: Path) -> float:
    """CPU seconds of a /proc/PID/stat or /proc/PID/task/TID/stat file."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def demo_messages(n: int, seed: int) -> list[Any]:
    """`n` demo events (support chat, RAG answers, toxic turns, injections, PII) as Kafka messages."""
    import uuid
    from datetime import UTC, datetime

    from llmwatch.ingest.demo.generator import Scenario
    from llmwatch.ingest.pipeline.sink import RawMessage

    scenario = Scenario(seed=seed)
    now = datetime.now(UTC).isoformat()
    messages = []
    for i in range(n):
        doc = scenario.event(elapsed_s=float(i % 240))
        doc.update(event_id=str(uuid.uuid4()), trace_id=uuid.uuid4().hex, timestamp=now)
        messages.append(RawMessage("llm.traces", 0, i, json.dumps(doc).encode()))
    return messages


@contextmanager
def batch_handler(database: str) -> Iterator[tuple[Any, subprocess.Popen[bytes]]]:
    """The worker's batch handler (every default detector, models warm, tables created) on an
    embedded store and a tansu of its own, and the store's process; both stopped afterwards."""
    import tempfile

    from llmwatch.core.settings import Settings
    from llmwatch.detectors.registry import load_all
    from llmwatch.ingest.kafka import producer
    from llmwatch.ingest.pipeline.processor import BatchHandler
    from llmwatch.storage.clickhouse import connect
    from llmwatch.storage.migrate import migrate

    data_dir = Path(tempfile.mkdtemp(prefix=f"llmwatch-bench-{database}-"))
    store_port, kafka_port = free_port(), free_port()
    store_process = start_store(data_dir, store_port)
    try:
        broker = start_tansu(kafka_port)
    except BaseException:
        stop_process(store_process)
        raise
    try:
        settings = Settings.from_env({}, clickhouse_url=store_url(data_dir, store_port), database=database,
                                     kafka_bootstrap=f"127.0.0.1:{kafka_port}")
        store = connect(settings)
        migrate(store, settings.retention_days)
        handler = BatchHandler(settings, store, load_all(settings.detector_names, settings),
                               producer(settings.bootstrap_servers))
        handler.handle(demo_messages(500, seed=0))
        yield handler, store_process
        if handler.embeddings is not None:
            handler.embeddings.close()
    finally:
        stop_process(broker, timeout_s=1.5)
        stop_process(store_process)


def start_tansu(port: int) -> subprocess.Popen[bytes]:
    from llmwatch.broker import tansu_command
    from llmwatch.ingest.kafka import kafka_reachable

    process = subprocess.Popen(tansu_command("127.0.0.1", port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: kafka_reachable(f"127.0.0.1:{port}", 1.0), 20)
    return process


def start_store(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    """The embedded store (`llmwatch store`) on `port`, ready to answer."""
    from llmwatch.storage.clickhouse import ClickHouseStore

    process = subprocess.Popen(
        [sys.executable, "-m", "llmwatch", "store", "--data-dir", str(data_dir), "--clickhouse-port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        # The store wants its generated password (docs/security.md): an anonymous ping never succeeds.
        wait_until(ClickHouseStore(store_url(data_dir, port), database="llmwatch").ping, 60)
    except BaseException:
        stop_process(process)  # never leave a store behind a failed start
        raise
    return process


def store_url(data_dir: Path, port: int, timeout_s: float = 120) -> str:
    """The URL of the embedded store serving `data_dir`, with the password it generated."""
    password_file = data_dir / "clickhouse-password"
    wait_until(password_file.exists, timeout_s, "the store's password file")
    return f"http://default:{password_file.read_text().strip()}@127.0.0.1:{port}"


def print_table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for i, row in enumerate(cells):
        print("  " + "  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}, **payload}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {path.relative_to(ROOT)}")
    return path
