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

chdb is clickhouse-local: no users, no grants, every file and URL in reach. Since this is still a
server, it adds what a ClickHouse server would enforce:

* a password for the `default` user (Basic auth, X-ClickHouse-User/Key headers, or the `user` and
  `password` URL parameters); wrong or missing credentials get code 516 (AUTHENTICATION_FAILED);
* GET is read-only (`readonly=2` unless the client asked for 1), as on ClickHouse;
* statements are checked against allow-lists first (storage/guard.py): table functions, engines
  and statements that reach files, processes or the network are refused with code 497, and so are
  KILL and SYSTEM on read-only requests;
* a request carrying a foreign `Origin` (a web page in the operator's browser) is refused;
* bodies are capped before and after decompression, and every query runs under memory and time
  limits (the client may lower them).

Each request runs in its own chdb session (about 1 ms to open), so settings never leak between
requests.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hmac
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from llmwatch.core.errors import ConfigError
from llmwatch.core.lru import Lru
from llmwatch.core.processes import is_loopback, return_big_buffers_to_the_os
from llmwatch.core.stages import StageClock
from llmwatch.storage.guard import refusal, setting_refusal, statement_kind

log = logging.getLogger(__name__)

__all__ = ["EmbeddedStore", "Limits", "ensure_password", "serve"]

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
_INSERT_TABLE = re.compile(r"INSERT\s+INTO\s+(?:TABLE\s+)?([\w.`]+)", re.IGNORECASE)
_IDENTIFIER_PARAM = re.compile(r"\{\s*(\w+)\s*:\s*Identifier\s*\}", re.IGNORECASE)
_VERDICTS_KEPT = 1024  # the guard's verdicts remembered, least recently used dropped first
_UNJUDGED = object()
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ERROR_CODE = re.compile(r"Code: (\d+)")
# ClickHouse's own mapping of exception codes to HTTP statuses, for the common ones.
_HTTP_STATUS = {
    62: 400,  # SYNTAX_ERROR
    60: 404,  # UNKNOWN_TABLE
    81: 404,  # UNKNOWN_DATABASE
    164: 403,  # READONLY
    497: 403,  # ACCESS_DENIED
    516: 401,  # AUTHENTICATION_FAILED
}


@dataclass(frozen=True)
class Limits:
    """What one request may cost the store."""

    max_body_bytes: int = 512 * 1024 * 1024  # clickhouse.py sends at most MAX_INSERT_BYTES (64 MiB) per insert
    max_memory_bytes: int = 8 * 1024**3
    max_execution_s: float = 600.0


class Refused(Exception):
    """A statement the embedded store will not run (code 497, ACCESS_DENIED)."""


def ensure_password(path: Path, explicit: str = "") -> str:
    """The store's password: `explicit` when given, else the one in `path`, generated there
    (mode 0600, created atomically) on first start."""
    if explicit:
        return explicit
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(24)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process got there first: use its password
        return path.read_text().strip()
    with os.fdopen(fd, "w") as file:
        file.write(password + "\n")
    return password


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
        # Where the store's time goes (served at /llmwatch/stages; bench/pipeline.py reads it).
        self.stages = StageClock()
        self._verdicts: Lru[tuple[Any, ...], str | None] = Lru(_VERDICTS_KEPT)  # a refusal's reason, or None

    def execute(
        self,
        payload: bytes,
        *,
        database: str = "",
        output_format: str = "TabSeparated",
        settings: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        readonly: str = "",
        limits: Limits = Limits(),
    ) -> tuple[bytes, dict[str, Any]]:
        """Run one statement; returns (result bytes, summary). Raises Refused for a statement the
        guard refuses, chdb's error on any other failure. `readonly` is ClickHouse's setting
        ("1", "2" or empty), applied after the other settings."""
        clock = self.stages
        with clock("session"):
            session = self._session_cls(str(self.path))
        try:
            insert = _INSERT_WITH_FORMAT.match(payload[:65536])
            streamed = insert is not None and insert.end() < len(payload)
            statement = (
                f"{insert.group(1).decode('utf-8')} FORMAT {insert.group(2).decode()}"
                if streamed and insert is not None
                else payload.decode("utf-8")
            )
            with clock("guard"):
                if database:
                    session.query(f"USE {_quote_identifier(database)}")
                self._checked(session, database, statement, params or None,
                              readonly=bool(readonly and readonly != "0"))
            with clock("session"):
                # One SET for all (a statement each cost a round through chdb's parser per request).
                assignments = [f"max_memory_usage = {limits.max_memory_bytes}",
                               f"max_execution_time = {limits.max_execution_s:g}",
                               *(f"{name} = {_setting_literal(value)}" for name, value in (settings or {}).items())]
                session.query("SET " + ", ".join(assignments))
                if readonly:  # last: it forbids changing settings after it
                    session.query(f"SET readonly = {_setting_literal(readonly)}")
            if streamed and insert is not None:
                statement = insert.group(1).decode("utf-8")
                table = _INSERT_TABLE.match(statement)
                with clock(f"insert {table.group(1).split('.')[-1].strip('`') if table else '?'}"):
                    inserter = session.send_insert(statement, insert.group(2).decode())
                    inserter.append(payload[insert.end() :])
                    result = inserter.finish()
                written = getattr(result, "rows_written", 0)
                return b"", {"written_rows": str(written), "read_rows": "0"}
            sql = payload.decode("utf-8")
            with clock("query"):
                result = session.query(sql, output_format, params=params or None)
            summary = {
                "read_rows": str(result.rows_read()),
                "read_bytes": str(result.bytes_read()),
                "elapsed_ns": str(int(result.elapsed() * 1e9)),
            }
            return result.bytes(), summary
        finally:
            with clock("session"):
                session.close()

    def _checked(self, session: Any, database: str, statement: str, params: dict[str, str] | None, *,
                 readonly: bool) -> None:
        """_check, remembered: the guard's verdict depends on the statement's syntax tree only, and
        clients send the same few statements again and again (a worker's lookup and inserts on
        every batch) with new parameter values. A value is a literal in the tree, whatever it
        holds, except for an `Identifier` parameter, which names a table: those values are part
        of the key."""
        identifiers = tuple(sorted((name, (params or {}).get(name, "")) for name in _IDENTIFIER_PARAM.findall(statement)))
        key = (database, statement, readonly, identifiers)
        verdict = self._verdicts.get(key, _UNJUDGED)
        if verdict is _UNJUDGED:
            reason: str | None = None
            try:
                self._check(session, statement, params, readonly=readonly)
            except Refused as exc:
                reason = str(exc)
            self._verdicts.put(key, reason)
            verdict = reason
        if isinstance(verdict, str):
            raise Refused(verdict)

    @staticmethod
    def _check(session: Any, statement: str, params: dict[str, str] | None, *, readonly: bool) -> None:
        """Refuse what the guard refuses, judged on ClickHouse's own parse of the statement."""
        ast = session.query(f"EXPLAIN AST {statement}", "TabSeparatedRaw", params=params).bytes().decode()
        formatted = ""
        if statement_kind(ast) == "CreateQuery":
            formatted = session.query(
                "SELECT formatQuerySingleLine({q:String})", "TabSeparatedRaw", params={"q": _escaped(statement)}
            ).bytes().decode()
        reason = refusal(ast, statement, readonly=readonly, formatted=formatted)
        if reason is not None:
            raise Refused(reason)

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
        limit = self.server.limits.max_body_bytes
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > limit:
                raise _TooLarge(length)
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = self._read_chunked(limit)
            else:
                body = self.rfile.read(length) if length else b""
        except _TooLarge as exc:
            self.close_connection = True  # the rest of the body is not read
            self._reply(413, f"Code: 307. DB::Exception: request body of {exc} bytes is over the limit of "
                             f"{limit} bytes. (TOO_MANY_BYTES)\n".encode())
            return
        except ValueError:
            self.close_connection = True
            self._reply(400, b"Code: 27. DB::Exception: malformed Content-Length or chunked body\n")
            return
        try:
            body = _decompress(body, self.headers.get("Content-Encoding", ""), limit)
        except _TooLarge as exc:
            self._reply(413, f"Code: 307. DB::Exception: decompressed body of {exc} bytes is over the limit of "
                             f"{limit} bytes. (TOO_MANY_BYTES)\n".encode())
            return
        except Exception as exc:  # a corrupt body is the client's error
            self._reply(400, f"Code: 432. DB::Exception: cannot decompress body: {exc}\n".encode())
            return
        self._handle(body)

    def _read_chunked(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline(64).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline(64)
                return b"".join(chunks)
            total += size
            if total > limit:
                raise _TooLarge(f"at least {total}")
            chunks.append(self.rfile.read(size))
            self.rfile.readline(64)

    def _authenticated(self, query: dict[str, str]) -> bool:
        """The `default` user with the store's password, however the client sends them."""
        auth = self.headers.get("Authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(auth[6:]).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
        elif "X-ClickHouse-User" in self.headers or "X-ClickHouse-Key" in self.headers:
            user = self.headers.get("X-ClickHouse-User", "default")
            password = self.headers.get("X-ClickHouse-Key", "")
        else:
            user, password = query.get("user", "default"), query.get("password", "")
        expected = self.server.password
        return user == "default" and hmac.compare_digest(password.encode(), expected.encode())

    def _client_gone(self) -> bool:
        try:
            return self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:  # connected, nothing more sent yet
            return False
        except OSError:
            return True

    def _foreign_origin(self) -> bool:
        """A browser page from another origin (any site open in the operator's browser)."""
        origin = self.headers.get("Origin")
        if origin is None:
            return False
        return urlsplit(origin).netloc.lower() != (self.headers.get("Host") or "").lower()

    def _handle(self, body: bytes) -> None:
        url = urlsplit(self.path)
        if url.path in ("/ping", "/health"):
            self._reply(200, b"Ok.\n")
            return
        if url.path not in ("/", "", "/llmwatch/stages"):
            self._reply(404, b"Code: 0. DB::Exception: unknown handler\n")
            return
        if self._foreign_origin():
            self._reply(403, b"Code: 497. DB::Exception: requests from web pages of other origins are not "
                             b"allowed. (ACCESS_DENIED)\n", {"X-ClickHouse-Exception-Code": "497"})
            return
        query: dict[str, str] = dict(parse_qsl(url.query, keep_blank_values=True))
        if url.path == "/llmwatch/stages":
            self._stages(query)
            return
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
        query_id = query.get("query_id") or str(uuid.uuid4())
        if not self._authenticated(query):
            self._reply(401, b"Code: 516. DB::Exception: default: Authentication failed: password is incorrect, "
                             b"or there is no user with such name. (AUTHENTICATION_FAILED)\n",
                        {"X-ClickHouse-Exception-Code": "516", "X-ClickHouse-Query-Id": query_id})
            return
        output_format = query.get("default_format") or "TabSeparated"
        params = {k[len("param_") :]: v for k, v in query.items() if k.startswith("param_")}
        settings = {
            k: v
            for k, v in query.items()
            if k not in _PROTOCOL_PARAMS and not k.startswith("param_") and _SETTING_NAME.match(k)
        }
        if self._client_gone():
            # It gave up waiting (a store frozen or swamped for longer than its timeout): running
            # its query now would only delay the requests of clients that are still there.
            log.info("skipping query %s: the client has closed the connection", query_id)
            self.close_connection = True
            return
        readonly = settings.pop("readonly", "")
        if self.command == "GET" and readonly in ("", "0"):
            readonly = "2"  # as ClickHouse: no writes over GET, settings may still change
        refused = next((r for r in (setting_refusal(k, v) for k, v in settings.items()) if r), None)
        refused = refused or setting_refusal("default_format", output_format)
        try:
            if refused:
                raise Refused(refused)
            data, summary = self.server.store.execute(
                payload,
                database=query.get("database", ""),
                output_format=output_format,
                settings=settings,
                params=params,
                readonly=readonly,
                limits=self.server.limits,
            )
        except Refused as exc:
            self._reply(403, f"Code: 497. DB::Exception: {exc}. (ACCESS_DENIED)\n".encode(),
                        {"X-ClickHouse-Exception-Code": "497", "X-ClickHouse-Query-Id": query_id})
            return
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

    def _stages(self, query: dict[str, str]) -> None:
        """Where the store's time went since it started (core/stages.py), for its operator only."""
        if not self._authenticated(query):
            self._reply(401, b"Code: 516. DB::Exception: Authentication failed. (AUTHENTICATION_FAILED)\n",
                        {"X-ClickHouse-Exception-Code": "516"})
            return
        cpu, wall, calls = self.server.store.stages.totals()
        body = {"process_cpu_s": time.process_time(), "stage_cpu_s": cpu, "stage_wall_s": wall, "stage_calls": calls}
        self._reply(200, json.dumps(body).encode())

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


class _TooLarge(Exception):
    pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the default listen backlog of 5 refused connections under load

    def __init__(self, address: tuple[str, int], store: EmbeddedStore, password: str, limits: Limits) -> None:
        self.store = store
        self.password = password
        self.limits = limits
        super().__init__(address, _Handler)


def serve(
    path: Path,
    host: str,
    port: int,
    *,
    password: str,
    limits: Limits = Limits(),
    ready: threading.Event | None = None,
) -> None:
    """Serve the store at path on host:port until interrupted."""
    if not password:
        raise ConfigError("the embedded store needs a password (see --clickhouse-password)")
    if not is_loopback(host):
        log.warning("the embedded store listens on %s: reachable from other machines (password required)", host)
    return_big_buffers_to_the_os()
    store = EmbeddedStore(path)
    server = _Server((host, port), store, password, limits)
    log.info("embedded ClickHouse %s serving %s on http://%s:%d", store.version, path, host, port)
    if ready is not None:
        ready.set()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        store.close()


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """The body decompressed, refusing (_TooLarge) more than `limit` bytes of output: a small
    body can unpack to gigabytes."""
    encoding = encoding.strip().lower()
    if not encoding or encoding == "identity" or not body:
        return body
    if encoding in ("gzip", "deflate"):
        decompressor: Any = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
        out = decompressor.decompress(body, limit + 1)
        if len(out) > limit or decompressor.unconsumed_tail:
            raise _TooLarge(f"more than {limit}")
        return out
    if encoding == "zstd":
        from backports.zstd import ZstdDecompressor  # in the lock file; compression.zstd in 3.14

        decompressor = ZstdDecompressor()
    elif encoding == "lz4":
        from lz4.frame import LZ4FrameDecompressor

        decompressor = LZ4FrameDecompressor()
    else:
        msg = f"unsupported Content-Encoding {encoding!r}"
        raise ValueError(msg)
    out = decompressor.decompress(body, max_length=limit + 1)
    if len(out) > limit or not decompressor.eof:
        raise _TooLarge(f"more than {limit}")
    return out


# A form part as urllib3 (clickhouse-connect's) writes one: a name and nothing else in its header.
_SIMPLE_PART = re.compile(rb'Content-Disposition: form-data; name="([A-Za-z0-9_.-]*)"\r\n\r\n')
_BOUNDARY = re.compile(r';\s*boundary=(?:"([^"\\]{1,70})"|([^\s;"]{1,70}))', re.IGNORECASE)


def _form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The fields of a multipart/form-data body. ValueError for a file part (external data)."""
    fields = _simple_form_fields(content_type, body)
    return fields if fields is not None else _parsed_form_fields(content_type, body)


def _simple_form_fields(content_type: str, body: bytes) -> dict[str, str] | None:
    """The fields of a form written the plain way (each part `Content-Disposition: form-data;
    name="x"`, nothing else), split at its boundary in C; None for any other form, which the
    email parser reads. That parser took 3.6 ms for a lookup's 2,000 event ids (72 KB), twice a
    batch: this takes 0.04."""
    found = _BOUNDARY.search(content_type)
    if found is None:
        return None
    delimiter = b"\r\n--" + (found.group(1) or found.group(2)).encode("latin-1")
    # Every part opens with CRLF + "--" + boundary; the body starts with the first delimiter
    # without its CRLF. The last is followed by "--" (and an epilogue, ignored).
    parts = (b"\r\n" + body).split(delimiter)
    if parts[0] or len(parts) < 2 or not parts[-1].startswith(b"--"):
        return None
    fields: dict[str, str] = {}
    for part in parts[1:-1]:
        header = _SIMPLE_PART.match(part, 2) if part.startswith(b"\r\n") else None
        if header is None:
            return None
        name = header.group(1).decode("ascii")
        if name in fields:
            return None  # the same name twice: the email parser's reading decides
        try:
            fields[name] = part[header.end():].decode("utf-8")
        except UnicodeDecodeError:
            return None
    return fields


def _parsed_form_fields(content_type: str, body: bytes) -> dict[str, str]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if part.get_filename():
            msg = f"external data tables ({name}) are not supported by the embedded store"
            raise ValueError(msg)
        if name:
            payload = part.get_payload(decode=True)
            fields[str(name)] = payload.decode("utf-8") if isinstance(payload, bytes) else ""
    return fields


def _escaped(value: str) -> str:
    """A query parameter's value as ClickHouse reads it: escaped like TabSeparated."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def _quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _setting_literal(value: str) -> str:
    if re.fullmatch(r"-?\d+(\.\d+)?", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
