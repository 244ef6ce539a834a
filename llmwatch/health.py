"""Health checks behind `llmwatch status`: the same for the embedded stack and for clusters."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from llmwatch.core.settings import Settings

__all__ = ["Check", "check_all", "clickhouse_ready", "console_ready", "workers_alive"]

WORKER_STALE_S = 20  # a worker heartbeats every 5 s


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def clickhouse_ready(settings: Settings, timeout_s: float = 2.0) -> bool:
    try:
        return httpx.get(f"{settings.store_url}/ping", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def console_url(settings: Settings) -> str:
    return f"http://{settings.host}:{settings.console_port}"


def console_ready(settings: Settings, timeout_s: float = 2.0) -> bool:
    """Streamlit answers its health endpoint (the app itself loads per browser session)."""
    try:
        response = httpx.get(f"{console_url(settings)}/_stcore/health", timeout=timeout_s)
        return response.status_code == 200 and response.text.strip() == "ok"
    except httpx.HTTPError:
        return False


def workers_alive(settings: Settings, pid: int | None = None) -> int:
    """Workers (optionally: the one with this pid) that sent a heartbeat in the last WORKER_STALE_S."""
    from llmwatch.storage.clickhouse import connect

    store = connect(settings)
    try:
        rows = store.query(
            f"SELECT count() FROM {settings.database}.workers FINAL "
            "WHERE seen_at > now64(3) - toIntervalSecond({stale:UInt32}) "
            "AND ({pid:Nullable(UInt32)} IS NULL OR pid = {pid:Nullable(UInt32)})",
            {"stale": WORKER_STALE_S, "pid": pid},
        )
        return int(rows[0][0])
    finally:
        store.close()


def check_all(settings: Settings) -> list[Check]:
    from llmwatch.core.errors import StoreError
    from llmwatch.ingest.kafka import kafka_reachable

    checks = []
    kafka_ok = kafka_reachable(settings.bootstrap_servers)
    checks.append(Check("kafka", kafka_ok, settings.bootstrap_servers))
    store_ok = clickhouse_ready(settings)
    checks.append(Check("clickhouse", store_ok, settings.store_url))
    if store_ok:
        try:
            alive = workers_alive(settings)
            checks.append(Check("workers", alive > 0, f"{alive} alive (heartbeat within {WORKER_STALE_S}s)"))
        except StoreError as exc:
            checks.append(Check("workers", False, f"cannot read {settings.database}.workers: {exc}"))
    else:
        checks.append(Check("workers", False, "unknown: ClickHouse unreachable"))
    if not settings.no_console:
        checks.append(Check("console", console_ready(settings), console_url(settings)))
    return checks
