"""`llmwatch migrate --cluster NAME`: the cluster form of the schema. No ClickHouse cluster runs
here (docs/operations.md says what was and was not run), so this checks what can be checked:
ClickHouse's own parser accepts every statement, and the Replicated/Distributed pairs and the
views are complete and consistent."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from llmwatch.storage.clickhouse import ClickHouseStore
from llmwatch.storage.cluster import cluster_statements
from llmwatch.storage.migrate import cluster_migration, statements

DB = "llmwatch"
CLUSTER = "prod"


@pytest.fixture(scope="module")
def ddl() -> list[str]:
    return cluster_migration(DB, 30, CLUSTER)


def created(ddl: list[str], kind: str) -> dict[str, str]:
    pattern = re.compile(rf"CREATE {kind} IF NOT EXISTS {DB}\.(\w+) ON CLUSTER {CLUSTER}\b")
    return {m.group(1): s for s in ddl if (m := pattern.match(s))}


def test_clickhouse_parses_every_statement(ddl: list[str], embedded_store: ClickHouseStore) -> None:
    for sql in ddl:
        (formatted,) = embedded_store.query("SELECT formatQuery({sql:String})", {"sql": sql})[0]
        assert f"ON CLUSTER {CLUSTER}" in formatted, sql[:120]


def test_every_table_is_a_replicated_local_table_behind_a_distributed_one(ddl: list[str]) -> None:
    tables = created(ddl, "TABLE")
    single_server = {m.group(1) for s in statements(DB, 30) if (m := re.match(rf"CREATE TABLE IF NOT EXISTS {DB}\.(\w+)", s))}
    assert set(tables) == single_server | {f"{t}_local" for t in single_server}
    for table in single_server - {"scores_by_event"}:
        local = tables[f"{table}_local"]
        assert re.search(rf"ENGINE = Replicated\w*MergeTree\('/clickhouse/tables/{{shard}}/{DB}/{table}_local', "
                         r"'\{replica\}'", local), local
        assert re.search(rf"AS {DB}\.{table}_local\s+ENGINE = Distributed\({CLUSTER}, {DB}, {table}_local, ",
                         tables[table]), tables[table]
    # Engine arguments survive: the outbox keeps its version column.
    assert "'{replica}', updated_at)" in tables["alert_outbox_local"]
    # An event's rows share a shard; the rest is sharded by the rows' identity.
    assert tables["traces"].endswith("cityHash64(event_id))")
    assert tables["workers"].endswith("cityHash64(worker_id))")
    # A Null table keeps nothing: its local form stays Null, and an event's score rows go to its shard.
    assert re.search(r"\)\s*ENGINE = Null$", tables["scores_by_event_local"]), tables["scores_by_event_local"]
    assert tables["scores_by_event"].endswith(f"Distributed({CLUSTER}, {DB}, scores_by_event_local, cityHash64(event_id))")


def test_views_read_and_write_the_local_tables(ddl: list[str]) -> None:
    views = created(ddl, "MATERIALIZED VIEW")
    assert set(views) == {"score_counts_mv", "trace_stats_mv", "scores_by_event_mv"}
    assert f"TO {DB}.scores_local AS" in views["scores_by_event_mv"]
    for name, view in views.items():
        names = set(re.findall(rf"\b{DB}\.(\w+)", view)) - {name}
        assert names and all(n.endswith("_local") for n in names), view


def test_alters_reach_local_tables_and_column_changes_the_distributed_ones(ddl: list[str]) -> None:
    alters = [s for s in ddl if s.startswith("ALTER TABLE")]
    assert "ALTER TABLE llmwatch.scores_local ON CLUSTER prod ADD COLUMN IF NOT EXISTS release LowCardinality(String) AFTER environment" in alters
    assert "ALTER TABLE llmwatch.scores ON CLUSTER prod ADD COLUMN IF NOT EXISTS release LowCardinality(String) AFTER environment" in alters
    settings = [s for s in alters if "deduplication_window" in s]
    assert settings and all("_local ON CLUSTER" in s and "non_replicated" not in s for s in settings)
    ttls = [s for s in alters if " TTL " in s]
    assert len(ttls) == 8 and all("_local ON CLUSTER" in s for s in ttls)  # traces 4, spans 2, feedback, rejected


def test_bad_cluster_names_and_unknown_statements_are_refused() -> None:
    with pytest.raises(ValueError, match="plain identifier"):
        cluster_statements([], "prod; DROP TABLE x")
    with pytest.raises(ValueError, match="no cluster form"):
        cluster_statements(["TRUNCATE TABLE llmwatch.traces"], CLUSTER)


def test_the_command_prints_the_cluster_form() -> None:
    done = subprocess.run([sys.executable, "-m", "llmwatch", "migrate", "--cluster", CLUSTER, "--print"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.count(";\n") == len(cluster_migration(DB, 90, CLUSTER))
