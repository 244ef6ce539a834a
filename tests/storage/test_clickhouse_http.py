"""The embedded store speaks ClickHouse's HTTP interface well enough for unchanged clients;
the same tests run against a real server when LLMWATCH_TEST_CLICKHOUSE_URL is set."""

from __future__ import annotations

import gzip
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

import clickhouse_connect
import httpx
import pytest

from llmwatch.core.errors import StoreError, StoreUnavailable
from llmwatch.storage.clickhouse import ClickHouseStore
from llmwatch.storage.migrate import migrate, statements
from tests.conftest import free_port


def raw_client(store: ClickHouseStore):
    parts = urlsplit(store.url)
    return clickhouse_connect.get_client(host=parts.hostname, port=parts.port, database=store.database,
                                         username=parts.username or "default", password=parts.password or "")


def test_curl_style_get(store: ClickHouseStore) -> None:
    """GET /?query=SELECT+1 answers like ClickHouse (TabSeparated)."""
    assert httpx.get(f"{store.url}/?query=SELECT+1").text == "1\n"
    assert httpx.get(f"{store.url}/ping").text == "Ok.\n"


def test_curl_data_binary_body_is_the_query(store: ClickHouseStore) -> None:
    """`curl --data-binary "SELECT …"` (the README's example) sends the query as a urlencoded-typed
    body; ClickHouse runs it as SQL, and so must the embedded store."""
    answer = httpx.post(f"{store.url}/", content=b"SELECT 1 + 1 AS two, 'a=b&c' AS s",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.text == "2\ta=b&c\n"


def test_query_in_body_with_format(store: ClickHouseStore) -> None:
    """A POSTed query with its own FORMAT clause, and a gzip-compressed body."""
    body = gzip.compress(b"SELECT 1 AS one, 'x' AS s FORMAT JSONEachRow")
    answer = httpx.post(f"{store.url}/", content=body, headers={"Content-Encoding": "gzip"})
    assert answer.json() == {"one": 1, "s": "x"}


def test_clickhouse_connect_query_insert_command(store: ClickHouseStore) -> None:
    """clickhouse-connect's query, query_df, insert and command work unchanged."""
    client = raw_client(store)
    client.command(
        "CREATE TABLE probe (id UUID, ts DateTime64(3, 'UTC'), s String, n Nullable(Float64), "
        "a Array(String), m Map(String, String)) ENGINE = MergeTree ORDER BY ts"
    )
    rows = [
        [uuid.uuid4(), datetime(2026, 1, 1, tzinfo=UTC), f"héllo {i}", None if i % 2 else 1.5, ["a"], {"k": "v"}]
        for i in range(1000)
    ]
    summary = client.insert("probe", rows, column_names=["id", "ts", "s", "n", "a", "m"])
    assert summary.written_rows == 1000
    assert client.query("SELECT count(), countIf(n IS NULL) FROM probe").result_rows == [(1000, 500)]
    frame = client.query_df("SELECT s, a FROM probe ORDER BY s LIMIT 2")
    assert list(frame["s"]) == ["héllo 0", "héllo 1"]
    assert client.query("SELECT {x:UInt32} + 1", parameters={"x": 41}).result_rows == [(42,)]


def test_long_parameter_lists_are_sent_as_forms(store: ClickHouseStore) -> None:
    """clickhouse-connect posts long parameters as multipart forms; they must bind."""
    ids = [uuid.uuid4() for _ in range(2000)]
    rows = store.query("SELECT length({ids:Array(UUID)})", {"ids": ids})
    assert rows == [(2000,)]


def test_errors_become_store_errors(store: ClickHouseStore) -> None:
    """ClickHouse errors keep their code and message."""
    with pytest.raises(StoreError, match="60"):
        store.query("SELECT * FROM no_such_table")


def test_readonly_setting_is_enforced_by_the_engine(store: ClickHouseStore) -> None:
    """A URL setting applies to its request only, and readonly blocks writes."""
    client = raw_client(store)
    client.command("CREATE TABLE ro (x UInt8) ENGINE = MergeTree ORDER BY x")
    with pytest.raises(Exception, match="164|readonly|READONLY"):
        client.command("INSERT INTO ro VALUES (1)", settings={"readonly": 1})
    client.command("INSERT INTO ro VALUES (2)")
    assert client.query("SELECT count() FROM ro").result_rows == [(1,)]


def test_unreachable_store_raises_unavailable() -> None:
    """Connection failures are StoreUnavailable, so callers know to retry."""
    store = ClickHouseStore(f"http://127.0.0.1:{free_port()}", "llmwatch", connect_timeout_s=1)
    with pytest.raises(StoreUnavailable):
        store.query("SELECT 1")


def test_migrate_is_idempotent_and_creates_every_table(store: ClickHouseStore) -> None:
    """Running migrate again changes nothing and fails nowhere."""
    migrate(store, retention_days=90)
    tables = {r[0] for r in store.query("SELECT name FROM system.tables WHERE database = {db:String}", {"db": store.database})}
    assert {"traces", "scores", "feedback", "rejected", "workers"} <= tables


def test_retention_ttl_follows_settings(store: ClickHouseStore) -> None:
    """Raw text columns carry the retention TTL; changing it changes the table."""
    migrate(store, retention_days=30)
    ddl = store.query(
        "SELECT create_table_query FROM system.tables WHERE database = {db:String} AND name = 'traces'",
        {"db": store.database},
    )[0][0]
    assert "`output` String CODEC(ZSTD(3)) TTL toDateTime(timestamp) + toIntervalDay(30)" in ddl
    assert "`latency_ms` Nullable(Float64)," in ddl  # numbers never expire


def test_sort_keys_lead_with_app_and_coarse_time() -> None:
    """Pure check of the DDL: app first, hour buckets, monthly partitions."""
    ddl = "\n".join(statements("llmwatch", 90))
    assert "ORDER BY (app, toStartOfHour(timestamp), event_id)" in ddl
    assert "PARTITION BY toYYYYMM(timestamp)" in ddl


def test_an_empty_dataframe_keeps_its_columns(store: ClickHouseStore) -> None:
    frame = store.query_df(f"SELECT at, actor FROM {store.database}.audit_log WHERE actor = {{a:String}}", {"a": "nobody"})
    assert frame.empty and list(frame.columns) == ["at", "actor"]


def test_rollups_follow_inserts_and_a_new_rollup_is_backfilled(store: ClickHouseStore) -> None:
    db = store.database
    rows = [{"event_id": str(uuid.uuid4()), "trace_id": "t", "timestamp": datetime(2026, 11, 20, 10, 0, s, tzinfo=UTC),
             "app": "bot", "prompt_id": "answer", "prompt_version": "7", "model": "m", "latency_ms": float(100 * (s + 1)),
             "input_tokens": 10, "output_tokens": 5, "cost_usd": 0.01, "error": "boom" if s == 0 else ""}
            for s in range(10)]
    store.insert("traces", rows)
    totals = f"SELECT release, sum(events), sum(errors), sum(input_tokens) + sum(output_tokens) FROM {db}.trace_stats GROUP BY release"
    assert store.query(totals) == [("answer:7@m", 10, 1, 150)]
    # A database that predates the rollup: migrate creates it and counts what is already stored, once.
    store.command(f"DROP TABLE {db}.trace_stats_mv")
    store.command(f"DROP TABLE {db}.trace_stats")
    migrate(store, retention_days=90)
    migrate(store, retention_days=90)
    assert store.query(totals) == [("answer:7@m", 10, 1, 150)]
    (histogram,) = store.query(f"SELECT sumMap(latency_hist) FROM {db}.trace_stats")[0]
    assert sum(histogram.values()) == 10 and max(1.05 ** k - 1 for k in histogram) == pytest.approx(1000, rel=0.05)


def test_a_big_insert_goes_as_several_bodies_of_whole_rows(store: ClickHouseStore) -> None:
    """Rows over max_insert_bytes are sent as several inserts, none over the limit unless one row
    alone is, and every row arrives once."""
    store.command(f"CREATE TABLE {store.database}.probe_big (n UInt32, s String) ENGINE = MergeTree ORDER BY n")
    small = ClickHouseStore(store.url, store.database, max_insert_bytes=2_000)
    bodies: list[int] = []
    call = small._call

    def recording(method: str, *args: object, **kwargs: object) -> object:
        if method == "raw_insert":
            bodies.append(len(kwargs["insert_block"]))  # type: ignore[arg-type]
        return call(method, *args, **kwargs)

    small._call = recording  # type: ignore[method-assign]
    rows = [{"n": i, "s": "x" * 90} for i in range(100)] + [{"n": 100, "s": "y" * 5_000}]
    small.insert("probe_big", rows)
    assert len(bodies) > 5
    assert max(bodies[:-1]) <= 2_000 and bodies[-1] > 5_000  # the big row went alone
    assert store.query(f"SELECT count(), uniqExact(n), sum(length(s)) FROM {store.database}.probe_big") == [
        (101, 101, 100 * 90 + 5_000)]
    # Under the limit, the same rows go as one body (a JSON array), and arrive as rows.
    bodies.clear()
    small.max_insert_bytes = 1_000_000
    small.insert("probe_big", [{**row, "n": row["n"] + 1_000} for row in rows])
    assert len(bodies) == 1
    assert store.query(f"SELECT count(), uniqExact(n) FROM {store.database}.probe_big") == [(202, 202)]
