"""A Store whose calls are timed as stages of the worker (llmwatch/core/stages.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llmwatch.core.stages import StageClock
from llmwatch.storage.clickhouse import Store

__all__ = ["TimedStore"]


class TimedStore:
    """A Store whose calls are stages of `clock`: `insert <table>`, `query`, `command`."""

    def __init__(self, store: Store, clock: StageClock) -> None:
        self.store = store
        self.clock = clock
        self.database = store.database

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        with self.clock("store query"):
            return self.store.query(sql, params)

    def query_df(self, sql: str, params: Mapping[str, Any] | None = None,
                 settings: Mapping[str, Any] | None = None) -> Any:
        with self.clock("store query"):
            return self.store.query_df(sql, params, settings)

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        with self.clock(f"store insert {table}"):
            self.store.insert(table, rows)

    def command(self, sql: str, params: Mapping[str, Any] | None = None,
                settings: Mapping[str, Any] | None = None) -> None:
        with self.clock("store command"):
            self.store.command(sql, params, settings)

    def ping(self) -> bool:
        return self.store.ping()

    def close(self) -> None:
        self.store.close()
