"""Real servers for the tests: tansu (Kafka) and the embedded ClickHouse store, started on free
127.0.0.1 ports and stopped by PID. Each test gets its own database and topics.

Set LLMWATCH_TEST_CLICKHOUSE_URL to also run the storage tests against a real ClickHouse server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmwatch.broker import tansu_command
from llmwatch.core.processes import free_port, stop_process, wait_until
from llmwatch.core.settings import Settings
from llmwatch.ingest.kafka import ensure_llmwatch_topics, kafka_reachable
from llmwatch.storage.clickhouse import ClickHouseStore
from llmwatch.storage.migrate import migrate

SERVER_URL = os.environ.get("LLMWATCH_TEST_CLICKHOUSE_URL", "")
# LiteLLM fetches its price map from GitHub when imported (instrumentation tests import it): offline.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    with open(tmp_path_factory.mktemp("tansu") / "tansu.log", "wb") as log:
        process = subprocess.Popen(tansu_command("127.0.0.1", port), stdout=log, stderr=subprocess.STDOUT)
    bootstrap = f"127.0.0.1:{port}"
    try:
        wait_until(lambda: kafka_reachable(bootstrap, timeout_s=1.0), 20, "tansu")
        yield bootstrap
    finally:
        # tansu shuts down gracefully (~6 s with clients); nothing is persisted anyway.
        stop_process(process, timeout_s=1.5)


@pytest.fixture(scope="session")
def embedded_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    data_dir = tmp_path_factory.mktemp("store")
    with open(data_dir / "store.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "llmwatch", "store", "--data-dir", str(data_dir), "--clickhouse-port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/ping").status_code == 200, 30, "embedded store")
        # The password the store generated on first start; clients read it from the URL.
        password = (data_dir / "clickhouse-password").read_text().strip()
        yield f"http://default:{password}@127.0.0.1:{port}"
    finally:
        stop_process(process)


@pytest.fixture(params=["embedded", "server"])
def store_url(request: pytest.FixtureRequest) -> str:
    """The ClickHouse HTTP endpoint: the embedded store, and a real server when configured."""
    if request.param == "server":
        if not SERVER_URL:
            pytest.skip("LLMWATCH_TEST_CLICKHOUSE_URL is not set: no ClickHouse server to test against")
        return SERVER_URL
    return request.getfixturevalue("embedded_url")


def _fresh_store(url: str) -> Iterator[ClickHouseStore]:
    database = f"t_{uuid.uuid4().hex[:12]}"
    store = ClickHouseStore(url, database)
    migrate(store, retention_days=90)
    try:
        yield store
    finally:
        store.command(f"DROP DATABASE IF EXISTS {database}")
        store.close()


@pytest.fixture
def store(store_url: str) -> Iterator[ClickHouseStore]:
    """A migrated database of its own on every engine under test."""
    yield from _fresh_store(store_url)


@pytest.fixture
def embedded_store(embedded_url: str) -> Iterator[ClickHouseStore]:
    """A migrated database of its own on the embedded store only (pipeline tests)."""
    yield from _fresh_store(embedded_url)


@pytest.fixture
def stack_settings(broker: str, embedded_store: ClickHouseStore, embedded_url: str, tmp_path: Path) -> Settings:
    """Settings for a worker on this test's own topics, group and database."""
    suffix = uuid.uuid4().hex[:8]
    settings = Settings.from_env(
        {},
        data_dir=tmp_path,
        kafka_bootstrap=broker,
        clickhouse_url=embedded_url,
        database=embedded_store.database,
        traces_topic=f"traces-{suffix}",
        dlq_topic=f"dlq-{suffix}",
        control_topic=f"control-{suffix}",
        consumer_group=f"workers-{suffix}",
        kafka_session_timeout_s=2.0,
        batch_window_s=0.2,
        batch_size=200,
        store_retry_max_s=20.0,
        # Exact-count tests use one detector; tests/detectors/test_stored.py runs them all.
        detectors="toxicity",
    )
    ensure_llmwatch_topics(settings)
    return settings
