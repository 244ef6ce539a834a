"""A seeded store and console settings shared by the console tests of one module."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from llmwatch.core.accounts import hash_password
from llmwatch.core.settings import Settings
from llmwatch.storage.clickhouse import ClickHouseStore
from llmwatch.storage.migrate import migrate
from tests.dashboards.seed import Seeded, seed

PASSWORDS = {"ada": "admin-pass-1", "rui": "reviewer-pass-1", "rita": "reviewer-pass-2", "vic": "viewer-pass-1"}
ROLES = {"ada": "admin", "rui": "reviewer", "rita": "reviewer", "vic": "viewer"}


@pytest.fixture(scope="module")
def console_env(embedded_url: str) -> Iterator[tuple[dict[str, str], ClickHouseStore, Seeded]]:
    """LLMWATCH_* variables for a console over a freshly seeded database of its own."""
    database = f"console_{uuid.uuid4().hex[:10]}"
    store = ClickHouseStore(embedded_url, database)
    migrate(store, retention_days=90)
    users = ",".join(f"{name}:{ROLES[name]}:{hash_password(pw)}" for name, pw in PASSWORDS.items())
    env = {
        "LLMWATCH_CLICKHOUSE_URL": embedded_url,
        "LLMWATCH_DATABASE": database,
        "LLMWATCH_CONSOLE_USERS": users,
        "LLMWATCH_CONSOLE_CACHE_S": "1",
        "LLMWATCH_KAFKA_BOOTSTRAP": "127.0.0.1:1",  # no bus: the console must not need one to show pages
    }
    seeded = seed(store, Settings.from_env(env))
    try:
        yield env, store, seeded
    finally:
        store.command(f"DROP DATABASE IF EXISTS {database}")
        store.close()
