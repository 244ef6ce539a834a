"""The one ClickHouse client every component uses, over HTTP (a server, a cluster, or the
embedded store alike)."""

from __future__ import annotations

import logging
import re
import struct
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import clickhouse_connect
import orjson
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError

from llmwatch.core.chunks import split_by_size
from llmwatch.core.errors import StoreDataError, StoreError, StoreUnavailable
from llmwatch.core.processes import is_loopback

__all__ = ["ClickHouseStore", "Store", "connect"]

# clickhouse-connect warns "Unexpected Http Driver Exception", with a traceback, on every request
# that fails in transport (a store still starting, restarting) and then raises; the StoreUnavailable
# raised here from that error names the store and the cause, once.
logging.getLogger("clickhouse_connect.driver._backend.http_sync").setLevel(logging.ERROR)


# ClickHouse error codes that blame the data sent, not the server: parse, type and range errors.
# Anything else ClickHouse answers (too many parts, memory, read-only, auth...) is the server's
# trouble, retried like an outage rather than blamed on rows.
DATA_ERROR_CODES = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        25,  # CANNOT_PARSE_ESCAPE_SEQUENCE
        26,  # CANNOT_PARSE_QUOTED_STRING
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        53,  # TYPE_MISMATCH
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        128,  # TOO_LARGE_ARRAY_SIZE
        130,  # CANNOT_READ_ARRAY_FROM_TEXT
        131,  # TOO_LARGE_STRING_SIZE
        190,  # SIZES_OF_ARRAYS_DONT_MATCH
        321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
        349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
        376,  # CANNOT_PARSE_UUID
        407,  # DECIMAL_OVERFLOW
    }
)
_CODE = re.compile(r"Code: (\d+)")


def _store_error(exc: DatabaseError) -> StoreError:
    """StoreDataError when the data is to blame, StoreError otherwise."""
    if isinstance(exc, DataError):  # clickhouse-connect could not encode a value for its column
        return StoreDataError(str(exc))
    match = _CODE.search(str(exc))
    if match is not None and int(match.group(1)) in DATA_ERROR_CODES:
        return StoreDataError(str(exc))
    return StoreError(str(exc))


_INTEGER = re.compile(r"(U?)Int(8|16|32|64)")
# The years each time type holds (ClickHouse's documented ranges).
_TIME_YEARS = {"DateTime64": (1900, 2299), "DateTime": (1970, 2105), "Date": (1970, 2148), "Date32": (1900, 2299)}


def _range_checks(context: Any) -> list[tuple[str, Any]]:
    """(column, value -> bool) for the insert's columns whose type has a range to keep."""
    checks: list[tuple[str, Any]] = []
    for name, column_type in zip(context.column_names, context.column_types, strict=True):
        base = re.sub(r"^(?:Nullable|LowCardinality)\((.*)\)$", r"\1", column_type.name)
        if integer := _INTEGER.fullmatch(base):
            bits = int(integer.group(2))
            low, high = (0, 2**bits - 1) if integer.group(1) else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            checks.append((name, lambda v, lo=low, hi=high: isinstance(v, int) and lo <= v <= hi))
        elif (years := _TIME_YEARS.get(base.split("(")[0])) is not None:
            checks.append((name, lambda v, lo=years[0], hi=years[1]: not hasattr(v, "year") or lo <= v.year <= hi))
    return checks


def _brief(exc: Exception) -> str:
    """An exception's message without the request URL (kilobytes of query parameters) it quotes."""
    return re.sub(r"url: /\?\S+", "url: /?…", str(exc))[:500]


# The largest body one insert sends: a batch of big events goes as several (the embedded store
# refuses bodies over --store-max-body-bytes, 512 MB, and a body is held in memory on both sides).
MAX_INSERT_BYTES = 64 * 1024 * 1024

# The rollups keep a deduplication window so that a correction written twice counts once
# (ingest/pipeline/sink.py, step 5). Blocks a materialized view derives from an insert must never be
# deduplicated: two batches may well add identical counts to the same rollup rows.
_INSERT_SETTINGS = {"deduplicate_blocks_in_dependent_materialized_views": 0}
_JSON_INSERT_SETTINGS = {
    **_INSERT_SETTINGS,
    "date_time_input_format": "best_effort",  # orjson writes RFC 3339 times with their offset
    "input_format_skip_unknown_fields": 0,  # a column name that does not exist is an error
    "input_format_json_named_tuples_as_objects": 0,  # orjson writes a tuple as an array
}


class Store(Protocol):
    """What components need from ClickHouse. Rows are tuples; SQL parameters use
    ClickHouse's server-side `{name:Type}` placeholders."""

    database: str

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]: ...

    def query_df(self, sql: str, params: Mapping[str, Any] | None = None,
                 settings: Mapping[str, Any] | None = None) -> Any: ...

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None: ...

    def command(self, sql: str, params: Mapping[str, Any] | None = None,
                settings: Mapping[str, Any] | None = None) -> None: ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


class ClickHouseStore:
    """Store over clickhouse-connect. Connection failures raise StoreUnavailable (retry later);
    errors ClickHouse answered with raise StoreError."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        user: str = "default",
        password: str = "",
        connect_timeout_s: float = 5.0,
        query_timeout_s: float = 60.0,
        max_insert_bytes: int = MAX_INSERT_BYTES,
    ) -> None:
        parts = urlsplit(url)
        self.max_insert_bytes = max_insert_bytes
        self.url = url
        # Credentials in the URL (http://user:password@host:port) count, but never reach a log.
        self.address = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        self.database = database
        self._options: dict[str, Any] = {
            "host": parts.hostname or "127.0.0.1",
            "port": parts.port or (8443 if parts.scheme == "https" else 8123),
            "secure": parts.scheme == "https",
            "username": unquote(parts.username) if parts.username else user,
            "password": unquote(parts.password) if parts.password else password,
            # clickhouse-connect truncates timeouts to whole seconds.
            "connect_timeout": max(1, round(connect_timeout_s)),
            "send_receive_timeout": max(1, round(query_timeout_s)),
            # One client serves several threads; sessions would forbid concurrent queries.
            "autogenerate_session_id": False,
            # On loopback (the embedded store) there is no network to save: compressing a batch
            # and decompressing it again only costs both processes CPU.
            "compress": not is_loopback(parts.hostname or "127.0.0.1"),
        }
        self._client: Any = None
        self._lock = threading.Lock()
        # Building an insert context costs a DESCRIBE round trip; a worker inserts into the same
        # few tables forever, so keep them (dropped on any error, in case the schema changed).
        self._insert_contexts: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._insert_lock = threading.Lock()  # a cached context carries one insert's data
        self._range_checks: dict[tuple[str, tuple[str, ...]], list[tuple[str, Any]]] = {}

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    self._client = clickhouse_connect.get_client(**self._options)
                except OperationalError as exc:
                    msg = f"ClickHouse at {self.address} is unreachable: {exc}"
                    raise StoreUnavailable(msg) from exc
                except DatabaseError as exc:
                    raise StoreError(str(exc)) from exc
            return self._client

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        client = self._get_client()
        try:
            return getattr(client, method)(*args, **kwargs)
        except OperationalError as exc:
            msg = f"ClickHouse at {self.address} is unreachable: {_brief(exc)}"
            raise StoreUnavailable(msg) from exc
        except DatabaseError as exc:
            raise _store_error(exc) from exc

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self._call("query", sql, parameters=params).result_rows

    def query_df(self, sql: str, params: Mapping[str, Any] | None = None,
                 settings: Mapping[str, Any] | None = None) -> Any:
        """A pandas DataFrame; `settings` are ClickHouse settings for this query alone. An empty
        result still has its columns (the HTTP answer to an empty result carries none)."""
        frame = self._call("query_df", sql, parameters=params, settings=settings)
        if len(frame.columns) == 0:
            import pandas as pd

            try:
                described = self._call("query", f"DESCRIBE ({sql.strip().rstrip(';')})", parameters=params,
                                       settings=settings)
                frame = pd.DataFrame(columns=[row[0] for row in described.result_rows])
            except StoreError:  # not a SELECT (SHOW, EXPLAIN ...): nothing to name
                pass
        return frame

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert rows (all with the same keys, the column names) in one block.

        Rows go as JSONEachRow, written by orjson in C and parsed by ClickHouse in C++: about a
        third of the worker's CPU of clickhouse-connect's Python encoding of its Native format
        (bench/pipeline.py). They go as one JSON array (JSONEachRow reads one as rows), written
        by one call of orjson: 2.5x less time than a document per row. Rows JSON cannot carry
        (bytes, numpy numbers, integers past 64 bits) go as Native.

        Rows over `max_insert_bytes` go as several inserts, in order, each a block of whole rows:
        a failure can leave the first ones stored, so a caller that must not write a row twice
        looks up what is stored before it tries again (the worker's write does)."""
        if not rows:
            return
        columns = tuple(rows[0])
        try:
            blocks = [orjson.dumps(rows if isinstance(rows, list) else list(rows))]
            if len(blocks[0]) > self.max_insert_bytes:
                encoded = [orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE) for row in rows]
                blocks = [b"".join(run) for run in split_by_size(encoded, len, self.max_insert_bytes)]
        except TypeError:
            self._insert_native(table, columns, rows)
            return
        # ClickHouse reads an integer too big for its column modulo its size, and clamps a time out
        # of its type's range, without a word; the Native encoder raises. So the ranges are
        # checked here, for the columns whose type has one.
        with self._insert_lock:
            checks = self._range_checks.get((table, columns))
            if checks is None:
                checks = self._range_checks[(table, columns)] = _range_checks(self._insert_context(table, columns))
        for name, fits in checks:
            for row in rows:
                value = row[name]
                if value is not None and not fits(value):
                    msg = f"cannot store {name}={value!r} in {table}: out of the range of its column"
                    raise StoreDataError(msg)
        try:
            for block in blocks:
                self._call("raw_insert", f"{self.database}.{table}", list(columns), insert_block=block,
                           fmt="JSONEachRow", settings=_JSON_INSERT_SETTINGS)
        except StoreError:
            with self._insert_lock:  # the schema may have changed: describe the columns again
                self._insert_contexts.pop((table, columns), None)
                self._range_checks.pop((table, columns), None)
            raise

    def _insert_context(self, table: str, columns: tuple[str, ...]) -> Any:
        key = (table, columns)
        context = self._insert_contexts.get(key)
        if context is None:
            context = self._call("create_insert_context", f"{self.database}.{table}", list(columns),
                                 settings=_INSERT_SETTINGS)
            self._insert_contexts[key] = context
        return context

    def _insert_native(self, table: str, columns: tuple[str, ...], rows: Sequence[Mapping[str, Any]]) -> None:
        data = [[row[c] for c in columns] for row in rows]
        key = (table, columns)
        with self._insert_lock:
            context = self._insert_context(table, columns)
            context.data = data
            try:
                self._call("insert", context=context)
            except (ValueError, TypeError, OverflowError, struct.error) as exc:
                # Raised while encoding a value (a datetime before year 1, a str for a number):
                # the connection is fine, the rows are not.
                self._insert_contexts.pop(key, None)
                raise StoreDataError(f"cannot encode rows for {table}: {type(exc).__name__}: {exc}") from exc
            except StoreError:
                self._insert_contexts.pop(key, None)
                raise
            finally:
                context.data = None

    def command(self, sql: str, params: Mapping[str, Any] | None = None,
                settings: Mapping[str, Any] | None = None) -> None:
        self._call("command", sql, parameters=params, settings=settings)

    def ping(self) -> bool:
        try:
            return bool(self._get_client().ping())
        except StoreError:
            return False

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            self._insert_contexts.clear()


def connect(settings: Any) -> ClickHouseStore:
    """The store named by settings (llmwatch.core.settings.Settings)."""
    return ClickHouseStore(
        settings.store_url,
        settings.database,
        user=settings.clickhouse_user,
        password=settings.store_password,
    )
