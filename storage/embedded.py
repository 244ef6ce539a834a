"""The embedded store: one process owns a chdb database and serves ClickHouse's HTTP interface.

chdb can open a data folder from one process only, so this process is the single owner and every
other process (workers, alerts, console, an analyst's clickhouse-connect or curl) talks to it over
HTTP exactly as it would to a ClickHouse server. What is served, as ClickHouse does:

* `GET|POST /ping` and `GET /` answer `Ok.`
* a query from the `query` URL parameter and/or the request body (both: joined by a newline);
  `INSERT … FORMAT X` with the data in the body streams the body into chdb
* `database`, `default_format`, `param_<name>` (server-side `{name:Type}` parameters) and any other
  URL parameter as a query setting (`readonly`, `max_result_rows`, …), applied per request
* request bodies compressed with gzip, deflate, zstd or lz4 (Content-Encoding)
* errors as `Code: N. DB::Exception: …` with the X-ClickHouse-Exception-Code header

Each request runs in its own chdb session (about 1 ms to open), so settings never leak between
requests.
"""

from __future__ import annotations

import email.parser
import email.policy
import gzip
import json
import logging
import re
import threading
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger(__name__)

__all__ = ["EmbeddedStore", "serve"]

# URL parameters that are protocol, not settings.
_PROTOCOL_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "user",
        "password",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "compress",
        "decompress",
        "enable_http_compression",
        "quota_key",
        "buffer_size",
        "wait_end_of_query",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "client_protocol_version",
    }
)
# `INSERT INTO … FORMAT X` then a newline (or space) then the data, as ClickHouse reads it.
_INSERT_WITH_FORMAT = re.compile(
    rb"\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+(\w+)[ \t]*(?:\r?\n|[ \t]|$)",
    re.IGNORECASE | re.DOTALL,
)
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ERROR_CODE = re.compile(r"Code: (\d+)")
# ClickHouse's own mapping of exception codes to HTTP statuses, for the common ones.
_HTTP_STATUS = {
    62: 400,  # SYNTAX_ERROR
    60: 404,  # UNKNOWN_TABLE
    81: 404,  # UNKNOWN_DATABASE
    164: 403,  # READONLY
    516: 401,  # AUTHENTICATION_FAILED
}


class EmbeddedStore:
    """Owns the chdb data folder; runs one query per call in a fresh session."""

    def __init__(self, path: Path) -> None:
        from chdb import session  # imported here: only the owner process needs chdb

        self._session_cls = session.Session
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        # Holding one session open keeps the engine (and the folder lock) for the process's life.
        self._anchor = self._session_cls(str(path))
        self.version = self._anchor.query("SELECT version()", "TabSeparated").bytes().decode().strip()

    def execute(
        self,
        payload: bytes,
        *,
        database: str = "",
        output_format: str = "TabSeparated",
        settings: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[bytes, dict[str, Any]]:
        """Run one statement; returns (result bytes, summary). Raises chdb's error on failure."""
        session = self._session_cls(str(self.path))
        try:
            if database:
                session.query(f"USE {_quote_identifier(database)}")
            for name, value in (settings or {}).items():
                session.query(f"SET {name} = {_setting_literal(value)}")
            insert = _INSERT_WITH_FORMAT.match(payload[:65536])
            if insert is not None and insert.end() < len(payload):
                statement = insert.group(1).decode("utf-8")
                inserter = session.send_insert(statement, insert.group(2).decode())
                inserter.append(payload[insert.end() :])
                result = inserter.finish()
                written = getattr(result, "rows_written", 0)
                return b"", {"written_rows": str(written), "read_rows": "0"}
            sql = payload.decode("utf-8")
            result = session.query(sql, output_format, params=params or None)
            summary = {
                "read_rows": str(result.rows_read()),
                "read_bytes": str(result.bytes_read()),
                "elapsed_ns": str(int(result.elapsed() * 1e9)),
            }
            return result.bytes(), summary
        finally:
            session.close()

    def close(self) -> None:
        self._anchor.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clickhouse-connect's pool expects
    # Headers and body leave in separate writes; with Nagle's algorithm the body then waits for
    # the client's delayed ACK: 40 ms on every query (measured), now about 1 ms.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._handle(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked()
        else:
            body = self.rfile.read(length) if length else b""
        try:
            body = _decompress(body, self.headers.get("Content-Encoding", ""))
        except Exception as exc:  # a corrupt body is the client's error
            self._reply(400, f"Code: 432. DB::Exception: cannot decompress body: {exc}\n".encode())
            return
        self._handle(body)

    def _read_chunked(self) -> bytes:
        chunks = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def _handle(self, body: bytes) -> None:
        url = urlsplit(self.path)
        if url.path in ("/ping", "/health"):
            self._reply(200, b"Ok.\n")
            return
        if url.path not in ("/", ""):
            self._reply(404, b"Code: 0. DB::Exception: unknown handler\n")
            return
        query: dict[str, str] = dict(parse_qsl(url.query, keep_blank_values=True))
        content_type = self.headers.get("Content-Type", "")
        # Clients send long parameter lists as a multipart form: the query and param_* are fields.
        # A urlencoded body is the query itself, as ClickHouse reads it (`curl --data-binary`).
        if body and content_type.startswith("multipart/form-data"):
            try:
                fields = _form_fields(content_type, body)
            except ValueError as exc:
                self._reply(400, f"Code: 27. DB::Exception: {exc}\n".encode())
                return
            query.update(fields)
            body = b""
        sql = query.get("query", "").encode("utf-8")
        payload = sql + b"\n" + body if sql and body else sql or body
        if not payload.strip():
            self._reply(200, b"Ok.\n")
            return
        output_format = query.get("default_format") or "TabSeparated"
        params = {k[len("param_") :]: v for k, v in query.items() if k.startswith("param_")}
        settings = {
            k: v
            for k, v in query.items()
            if k not in _PROTOCOL_PARAMS and not k.startswith("param_") and _SETTING_NAME.match(k)
        }
        query_id = query.get("query_id") or str(uuid.uuid4())
        try:
            data, summary = self.server.store.execute(
                payload,
                database=query.get("database", ""),
                output_format=output_format,
                settings=settings,
                params=params,
            )
        except Exception as exc:  # chdb raises its own error type for any failed query
            message = str(exc).strip()
            match = _ERROR_CODE.search(message)
            code = int(match.group(1)) if match else 1002
            if not message.startswith("Code:"):
                message = f"Code: {code}. DB::Exception: {message}"
            self._reply(
                _HTTP_STATUS.get(code, 500),
                (message + "\n").encode(),
                {"X-ClickHouse-Exception-Code": str(code), "X-ClickHouse-Query-Id": query_id},
            )
            return
        self._reply(
            200,
            data,
            {
                "X-ClickHouse-Query-Id": query_id,
                "X-ClickHouse-Format": output_format,
                "X-ClickHouse-Timezone": "UTC",
                "X-ClickHouse-Summary": json.dumps(summary),
            },
        )

    def _reply(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-ClickHouse-Server-Display-Name", "llmwatch-embedded")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], store: EmbeddedStore) -> None:
        self.store = store
        super().__init__(address, _Handler)


def serve(path: Path, host: str, port: int, ready: threading.Event | None = None) -> None:
    """Serve the store at path on host:port until interrupted."""
    store = EmbeddedStore(path)
    server = _Server((host, port), store)
    log.info("embedded ClickHouse %s serving %s on http://%s:%d", store.version, path, host, port)
    if ready is not None:
        ready.set()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        store.close()


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if not encoding or encoding == "identity" or not body:
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "zstd":
        from backports import zstd  # ships with the lock file; stdlib compression.zstd in 3.14

        return zstd.decompress(body)
    if encoding == "lz4":
        import lz4.frame

        return lz4.frame.decompress(body)
    msg = f"unsupported Content-Encoding {encoding!r}"
    raise ValueError(msg)


def _form_fields(content_type: str, body: bytes) -> dict[str, str]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if part.get_filename():
            msg = f"external data tables ({name}) are not supported by the embedded store"
            raise ValueError(msg)
        if name:
            fields[name] = part.get_payload(decode=True).decode("utf-8")
    return fields


def _quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _setting_literal(value: str) -> str:
    if re.fullmatch(r"-?\d+(\.\d+)?", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
