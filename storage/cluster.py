"""The schema for a ClickHouse cluster, derived from the single-server DDL. Pure: text in, text out.

`llmwatch migrate --cluster NAME` applies it. Each table `db.T` of schemas/clickhouse/*.sql becomes

- `db.T_local` on every node (ON CLUSTER), its engine the Replicated form of the original
  (ReplacingMergeTree -> ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/T_local',
  '{replica}', ...)), with the same columns, keys and settings; a Null table (`scores_by_event`,
  which its view unrolls into `scores`) stays Null;
- `db.T`, a Distributed table over the `_local` tables with the same columns, sharded by
  `cityHash64(event_id)` where the table has an event_id (an event's trace, scores, embeddings and
  feedback land on one shard), else by a hash of the sort key's plain, non-time columns: rows that
  a ReplacingMergeTree collapses (a worker's heartbeats, an outbox delivery's attempts) and the
  two identical corrections racing workers write to a rollup meet on one shard.

Every component keeps reading and writing `db.T`. The materialized views are created on every
node and read and write the `_local` tables, so each shard rolls up its own events and a query
through the Distributed rollup sums the shards (and an event's score rows, sent through
`scores_by_event`, land on its shard's `scores_local`). ALTERs go to the `_local` tables and, where
they change columns, to the Distributed table too. Insert deduplication (the rollup corrections)
uses `replicated_deduplication_window` on replicated tables.
"""

from __future__ import annotations

import re

__all__ = ["cluster_statements", "local_name"]

_CREATE_TABLE = re.compile(
    r"CREATE TABLE IF NOT EXISTS (?P<db>\w+)\.(?P<table>\w+)\s*(?P<columns>\(.*\))\s*"
    r"ENGINE = (?P<engine>\w+)(?:\((?P<args>[^)]*)\))?(?P<rest>.*)",
    re.DOTALL,
)
_CREATE_VIEW = re.compile(
    r"CREATE MATERIALIZED VIEW IF NOT EXISTS (?P<db>\w+)\.(?P<view>\w+) TO (?P=db)\.(?P<target>\w+) AS\s+(?P<select>.*)",
    re.DOTALL,
)
_ALTER = re.compile(r"ALTER TABLE (?P<db>\w+)\.(?P<table>\w+) (?P<change>.*)", re.DOTALL)
_CREATE_DATABASE = re.compile(r"CREATE DATABASE IF NOT EXISTS (?P<db>\w+)$")


def local_name(table: str) -> str:
    return f"{table}_local"


def cluster_statements(statements: list[str], cluster: str) -> list[str]:
    """The cluster form of `statements` (storage.migrate.statements), in order."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", cluster):
        msg = f"cluster name {cluster!r} must be a plain identifier"
        raise ValueError(msg)
    tables = {m.group("table") for s in statements if (m := _CREATE_TABLE.match(s))}
    out: list[str] = []
    for statement in statements:
        out.extend(_clustered(statement, cluster, tables))
    return out


def _sharding_key(columns: str, rest: str) -> str:
    if re.search(r"^\s*event_id\s", columns, re.MULTILINE):
        return "cityHash64(event_id)"
    order = re.search(r"ORDER BY (\((?P<many>[^\n]*)\)|(?P<one>\w+))", rest)
    keys = [k.strip() for k in (order.group("many") or order.group("one")).split(",")] if order else []
    types = dict(re.findall(r"^\s*(\w+)\s+(\S+)", columns, re.MULTILINE))
    plain = [k for k in keys if re.fullmatch(r"\w+", k) and not types.get(k, "").startswith("DateTime")]
    return f"cityHash64({', '.join(plain)})" if plain else "rand()"


def _clustered(statement: str, cluster: str, tables: set[str]) -> list[str]:
    on = f"ON CLUSTER {cluster}"
    if m := _CREATE_DATABASE.match(statement):
        return [f"CREATE DATABASE IF NOT EXISTS {m.group('db')} {on}"]
    if m := _CREATE_TABLE.match(statement):
        db, table, columns = m.group("db"), m.group("table"), m.group("columns")
        local = local_name(table)
        engine = m.group("engine")
        if engine != "Null":  # a Null table keeps nothing to replicate: its views write the local tables
            args = [f"'/clickhouse/tables/{{shard}}/{db}/{local}'", "'{replica}'"]
            if m.group("args"):
                args.append(m.group("args").strip())
            engine = f"Replicated{engine}({', '.join(args)})"
        key = _sharding_key(columns, m.group("rest"))
        return [
            f"CREATE TABLE IF NOT EXISTS {db}.{local} {on}\n{columns}\nENGINE = {engine}{m.group('rest')}",
            f"CREATE TABLE IF NOT EXISTS {db}.{table} {on} AS {db}.{local}\n"
            f"ENGINE = Distributed({cluster}, {db}, {local}, {key})",
        ]
    if m := _CREATE_VIEW.match(statement):
        db = m.group("db")
        select = re.sub(rf"\b{db}\.(\w+)\b",
                        lambda t: f"{db}.{local_name(t.group(1))}" if t.group(1) in tables else t.group(0),
                        m.group("select"))
        return [f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{m.group('view')} {on} "
                f"TO {db}.{local_name(m.group('target'))} AS {select}"]
    if m := _ALTER.match(statement):
        db, table, change = m.group("db"), m.group("table"), m.group("change")
        change = change.replace("non_replicated_deduplication_window", "replicated_deduplication_window")
        result = [f"ALTER TABLE {db}.{local_name(table)} {on} {change}"]
        # A Distributed table mirrors the columns (not their TTLs or the storage settings).
        if re.match(r"(ADD|MODIFY) COLUMN ", change) and " TTL " not in change:
            result.append(f"ALTER TABLE {db}.{table} {on} {change}")
        return result
    msg = f"no cluster form for this statement: {statement[:80]!r}"
    raise ValueError(msg)
