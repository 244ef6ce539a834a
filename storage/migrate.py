"""Apply schemas/clickhouse/*.sql idempotently, and keep the retention TTL in line with settings."""

from __future__ import annotations

import logging
import re
from string import Template

from llmwatch.core.errors import SchemaError
from llmwatch.schemas import ddl_files
from llmwatch.storage.clickhouse import Store
from llmwatch.storage.cluster import cluster_statements

log = logging.getLogger(__name__)

__all__ = ["cluster_migration", "migrate", "statements"]

# Raw text columns that expire after the retention period; the numbers stay.
_TEXT_COLUMNS = {
    "traces": {
        "input": "String CODEC(ZSTD(3))",
        "input_messages": "Array(Tuple(role LowCardinality(String), content String)) CODEC(ZSTD(3))",
        "output": "String CODEC(ZSTD(3))",
        "context": "Array(String) CODEC(ZSTD(3))",
    },
    "spans": {"input": "String CODEC(ZSTD(3))", "output": "String CODEC(ZSTD(3))"},
    "feedback": {"comment": "String CODEC(ZSTD(3))"},
    "rejected": {"raw": "String CODEC(ZSTD(3))"},
}
# Rollup tables and the materialized views that feed them.
_ROLLUPS = {"score_counts": "score_counts_mv", "trace_stats": "trace_stats_mv"}
_TIME_COLUMN = {"traces": "timestamp", "spans": "timestamp", "feedback": "timestamp", "rejected": "received_at"}


def statements(database: str, retention_days: int) -> list[str]:
    """Every DDL statement, in order, with settings filled in. Pure."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", database):
        msg = f"database name {database!r} must be a plain identifier"
        raise SchemaError(msg)
    result: list[str] = []
    for path in ddl_files():
        text = Template(path.read_text()).safe_substitute(
            db=database, retention_days=str(retention_days)
        )
        body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
        result.extend(s.strip() for s in body.split(";") if s.strip())
    return result


def migrate(store: Store, retention_days: int, cluster: str = "") -> None:
    """Create what is missing; set the raw-text TTL where it differs from retention_days. With
    `cluster`, the cluster form (storage/cluster.py), ON CLUSTER through this node."""
    if cluster:
        _migrate_cluster(store, retention_days, cluster)
        return
    new_rollups = [table for table in _ROLLUPS if not _table_exists(store, table)]
    for sql in statements(store.database, retention_days):
        store.command(sql)
    for table in new_rollups:
        # A materialized view sees only new inserts: count what is already stored, once, with
        # the view's own SELECT.
        (select,) = store.query(
            "SELECT as_select FROM system.tables WHERE database = {db:String} AND name = {v:String}",
            {"db": store.database, "v": _ROLLUPS[table]},
        )[0]
        store.command(f"INSERT INTO {store.database}.{table} {select}")
    for table, columns in _TEXT_COLUMNS.items():
        _set_ttl(store, table, columns, retention_days)
    log.info("schema of database %s is up to date", store.database)


def cluster_migration(database: str, retention_days: int, cluster: str) -> list[str]:
    """Every statement of the cluster form, the raw-text TTLs included. Pure."""
    ttls = [_ttl_statement(database, table, column, definition, retention_days)
            for table, columns in _TEXT_COLUMNS.items() for column, definition in columns.items()]
    return cluster_statements(statements(database, retention_days) + ttls, cluster)


def _migrate_cluster(store: Store, retention_days: int, cluster: str) -> None:
    for sql in cluster_migration(store.database, retention_days, cluster):
        store.command(sql)
    # A new cluster has nothing to roll up; rows stored before the views existed are not
    # counted (backfill each shard with the views' SELECT over its _local tables if needed).
    log.info("schema of database %s is up to date on cluster %s", store.database, cluster)


def _ttl_statement(database: str, table: str, column: str, definition: str, days: int) -> str:
    # Without materialisation existing parts pick the TTL up on their next merge, so a
    # retention change is one cheap metadata step, not a rewrite of the table.
    return (
        f"ALTER TABLE {database}.{table} MODIFY COLUMN {column} {definition} "
        f"TTL toDateTime({_TIME_COLUMN[table]}) + INTERVAL {days} DAY "
        "SETTINGS materialize_ttl_after_modify = 0"
    )


def _table_exists(store: Store, table: str) -> bool:
    rows = store.query(
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        {"db": store.database, "t": table},
    )
    return rows[0][0] > 0


def _set_ttl(store: Store, table: str, columns: dict[str, str], days: int) -> None:
    rows = store.query(
        "SELECT create_table_query FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        {"db": store.database, "t": table},
    )
    ddl = rows[0][0] if rows else ""
    wanted = f"toIntervalDay({days})"
    for column, definition in columns.items():
        current = re.search(rf"`{column}` [^`]*?TTL [^`]*?toIntervalDay\((\d+)\)", ddl)
        if current and f"toIntervalDay({current.group(1)})" == wanted:
            continue
        store.command(_ttl_statement(store.database, table, column, definition, days))
        log.info("%s.%s: raw text now expires after %d days", table, column, days)
