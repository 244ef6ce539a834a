"""The embedded store is a server, so it is attacked like one: every probe below was a working
exploit through its port (files read and written, other local services reached, the database
dropped from a web page). Each must be refused, and the store must stay usable."""

from __future__ import annotations

import gzip
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmwatch.core.processes import free_port, stop_process, wait_until
from llmwatch.storage.embedded import ensure_password
from tests.storage.probes import PROBES


def parts(url: str) -> tuple[str, str]:
    """(base URL without credentials, password)."""
    split = urlsplit(url)
    return f"http://{split.hostname}:{split.port}", split.password or ""


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """A store of its own with small limits: 1 MB bodies, 200 MB of memory, 2 s per query."""
    port, data_dir = free_port(), tmp_path_factory.mktemp("small-store")
    with open(data_dir / "store.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "llmwatch", "store", "--data-dir", str(data_dir), "--clickhouse-port", str(port),
             "--store-max-body-bytes", str(1 << 20), "--store-query-max-memory-bytes", str(200 << 20),
             "--store-query-timeout-s", "2"],
            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{base}/ping").status_code == 200, 30, "store")
        yield base, (data_dir / "clickhouse-password").read_text().strip(), data_dir
    finally:
        stop_process(process)


def test_credentials_are_required(embedded_url: str) -> None:
    base, password = parts(embedded_url)
    assert httpx.get(f"{base}/ping").text == "Ok.\n"  # health checks need no password, as on ClickHouse
    for auth in (None, ("default", "wrong"), ("admin", password)):
        answer = httpx.get(f"{base}/?query=SELECT+1", auth=auth)
        assert answer.status_code == 401 and answer.headers["X-ClickHouse-Exception-Code"] == "516"
        assert "AUTHENTICATION_FAILED" in answer.text
    assert httpx.get(f"{base}/?query=SELECT+1", auth=("default", password)).text == "1\n"
    assert httpx.get(f"{base}/?query=SELECT+1&user=default&password={password}").text == "1\n"
    headers = {"X-ClickHouse-User": "default", "X-ClickHouse-Key": password}
    assert httpx.post(f"{base}/", content=b"SELECT 2", headers=headers).text == "2\n"


def test_where_the_time_goes_is_for_the_operator_only(embedded_url: str) -> None:
    """/llmwatch/stages answers the store's CPU per stage, with the password only."""
    base, password = parts(embedded_url)
    assert httpx.get(f"{base}/llmwatch/stages").status_code == 401
    assert httpx.get(f"{base}/?query=SELECT+1", auth=("default", password)).text == "1\n"
    stages = httpx.get(f"{base}/llmwatch/stages", auth=("default", password)).json()
    assert stages["process_cpu_s"] > 0 and {"session", "guard", "query"} <= set(stages["stage_cpu_s"])
    assert stages["stage_calls"]["query"] >= 1


def test_the_password_file_is_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "clickhouse-password"
    first = ensure_password(path)
    assert len(first) >= 32 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert ensure_password(path) == first  # a restart keeps it
    assert ensure_password(path, "chosen") == "chosen"  # --clickhouse-password wins


def test_get_is_read_only(embedded_url: str) -> None:
    """As on ClickHouse, so an <img src="http://127.0.0.1:8123/?query=DROP..."> in any web page the
    operator opens changes nothing (browsers send no Origin with such a GET)."""
    base, password = parts(embedded_url)
    auth = ("default", password)
    # POST writes, as on ClickHouse.
    assert httpx.post(f"{base}/", content=b"CREATE DATABASE victim", auth=auth).status_code == 200
    for params in ({"query": "CREATE TABLE default.from_get (a Int8) ENGINE = Memory"},
                   {"query": "CREATE TABLE default.from_get (a Int8) ENGINE = Memory", "readonly": "0"},
                   {"query": "DROP DATABASE victim"}):
        answer = httpx.get(f"{base}/", params=params, auth=auth)
        assert answer.status_code == 403, answer.text
    assert httpx.get(f"{base}/", params={"query": "EXISTS TABLE default.from_get"}, auth=auth).text == "0\n"
    assert httpx.get(f"{base}/", params={"query": "EXISTS DATABASE victim"}, auth=auth).text == "1\n"
    httpx.post(f"{base}/", content=b"DROP DATABASE victim", auth=auth)




@pytest.mark.parametrize("probe", PROBES)
def test_probes_that_reach_outside_the_store_are_refused(embedded_url: str, probe: str) -> None:
    base, password = parts(embedded_url)
    answer = httpx.post(f"{base}/", content=probe.encode(), auth=("default", password))
    assert answer.status_code == 403, answer.text
    assert answer.headers["X-ClickHouse-Exception-Code"] == "497" and "ACCESS_DENIED" in answer.text
    assert not Path("/tmp/llmwatch-probe").exists()


def test_the_read_only_analyst_path_refuses_kill_and_system(embedded_url: str) -> None:
    """The console's SQL page sends readonly=1: no KILL, no SYSTEM, no INTO OUTFILE."""
    base, password = parts(embedded_url)
    for probe in ("KILL QUERY WHERE 1", "SYSTEM DROP DNS CACHE", "SELECT 'x' INTO OUTFILE '/tmp/llmwatch-probe'"):
        answer = httpx.post(f"{base}/", params={"readonly": "1"}, content=probe.encode(), auth=("default", password))
        assert answer.status_code == 403, (probe, answer.text)
    setting = httpx.post(f"{base}/", params={"format_schema": "/etc/shadow"}, content=b"SELECT 1", auth=("default", password))
    assert setting.status_code == 403


def test_requests_from_web_pages_of_other_origins_are_refused(embedded_url: str) -> None:
    base, password = parts(embedded_url)
    foreign = httpx.post(f"{base}/", content=b"SELECT 1", auth=("default", password),
                         headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    host = urlsplit(base).netloc
    same = httpx.post(f"{base}/", content=b"SELECT 1", auth=("default", password), headers={"Origin": f"http://{host}"})
    assert same.text == "1\n"


def test_bodies_and_queries_are_bounded(small_store: tuple[str, str, Path]) -> None:
    base, password, _ = small_store
    auth = ("default", password)
    big = b"SELECT '" + b"x" * (2 << 20) + b"'"
    assert httpx.post(f"{base}/", content=big, auth=auth).status_code == 413
    bomb = gzip.compress(b"SELECT '" + b"x" * (50 << 20) + b"'")  # 50 KB on the wire
    assert len(bomb) < 100_000
    assert httpx.post(f"{base}/", content=bomb, auth=auth, headers={"Content-Encoding": "gzip"}).status_code == 413
    chunks = iter([b"SELECT '", *[b"x" * 65536] * 40, b"'"])  # chunked, no Content-Length
    assert httpx.post(f"{base}/", content=chunks, auth=auth).status_code == 413
    memory = httpx.post(f"{base}/", content=b"SELECT groupArray(number) FROM numbers(100000000)", auth=auth, timeout=60)
    assert memory.status_code != 200 and "MEMORY_LIMIT_EXCEEDED" in memory.text
    slow = httpx.post(f"{base}/", content=b"SELECT count() FROM numbers(1000000000000)", auth=auth, timeout=60)
    assert slow.status_code != 200 and "TIMEOUT_EXCEEDED" in slow.text
    assert httpx.post(f"{base}/", content=b"SELECT 1", auth=auth).text == "1\n"  # still serving


def test_ordinary_queries_that_look_like_probes_run(embedded_url: str) -> None:
    """The guard reads ClickHouse's parse, not the text: names and strings that merely mention
    files, engines or formats are fine. (The names of file-naming settings themselves are
    refused anywhere in a statement: a rare false alarm, never a hole.)"""
    base, password = parts(embedded_url)
    for query in ("SELECT 'INTO OUTFILE /tmp/x' AS s, 'file(x)' AS t",
                  "SELECT 1 AS log_path, 2 AS user_file, 'ENGINE = File' AS note",
                  "SELECT count() FROM numbers(10) WHERE number IN (SELECT number FROM numbers(3))"):
        answer = httpx.post(f"{base}/", content=query.encode(), auth=("default", password))
        assert answer.status_code == 200, (query, answer.text)


def test_remembered_verdicts_refuse_alike(embedded_url: str) -> None:
    """The guard remembers its verdict per statement (a worker sends the same few on every batch):
    a refused statement stays refused when asked again, a statement read-write may run is still
    refused read-only, and a parameter's value stays a literal whatever it holds."""
    base, password = parts(embedded_url)
    auth = ("default", password)
    for _ in range(2):
        for probe in PROBES[:4]:
            assert httpx.post(f"{base}/", content=probe.encode(), auth=auth).status_code == 403, probe
    assert httpx.post(f"{base}/", content=b"SYSTEM DROP DNS CACHE", auth=auth).status_code != 403
    assert httpx.post(f"{base}/", params={"readonly": "1"}, content=b"SYSTEM DROP DNS CACHE", auth=auth).status_code == 403
    for value in ("1", "file('/etc/passwd')"):
        answer = httpx.post(f"{base}/", params={"param_v": value, "default_format": "JSONEachRow"},
                            content=b"SELECT {v:String} AS v", auth=auth)
        assert answer.json() == {"v": value}


_FIELD_NAMES = st.sampled_from(["query", "param_ids", "param_x", "database", "param_ü", 'param_"q"', "param a"])
_FIELD_VALUES = st.lists(st.sampled_from([*"ab\r\n-é'[]\\", "\x00", "--", "\r\n--"]), max_size=30).map("".join)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_FIELD_NAMES, _FIELD_VALUES, max_size=4))
def test_forms_read_as_the_email_parser_reads_them(fields: dict[str, str]) -> None:
    """Multipart forms as clients write them (urllib3, clickhouse-connect's encoder) are split at
    their boundary directly when every part is plain; any other form goes to the email parser.
    Both read the same fields."""
    from urllib3.filepost import encode_multipart_formdata

    from llmwatch.storage.embedded import _form_fields, _parsed_form_fields, _simple_form_fields

    body, content_type = encode_multipart_formdata(fields)
    assert _form_fields(content_type, body) == _parsed_form_fields(content_type, body)
    if all(name.isascii() and '"' not in name and " " not in name for name in fields):
        assert _simple_form_fields(content_type, body) == fields  # the fast path read it, exactly


def test_forms_that_are_not_plain_go_to_the_email_parser() -> None:
    """A file part (external data, which the store refuses), a part with more headers, a body
    cut short or a quoted boundary: the fast path declines, the email parser decides."""
    from llmwatch.storage.embedded import _form_fields, _simple_form_fields

    file_part = (b'--b\r\nContent-Disposition: form-data; name="t"; filename="t.tsv"\r\n\r\n1\r\n--b--\r\n')
    assert _simple_form_fields("multipart/form-data; boundary=b", file_part) is None
    with pytest.raises(ValueError, match="external data"):
        _form_fields("multipart/form-data; boundary=b", file_part)
    typed = b'--b\r\nContent-Disposition: form-data; name="q"\r\nContent-Type: text/plain\r\n\r\nSELECT 1\r\n--b--\r\n'
    assert _simple_form_fields("multipart/form-data; boundary=b", typed) is None
    assert _form_fields("multipart/form-data; boundary=b", typed) == {"q": "SELECT 1"}
    cut = b'--b\r\nContent-Disposition: form-data; name="q"\r\n\r\nSELECT 1'
    assert _simple_form_fields("multipart/form-data; boundary=b", cut) is None
    plain = b'--a b\r\nContent-Disposition: form-data; name="q"\r\n\r\nSELECT 1\r\n--a b--\r\n'
    assert _form_fields('multipart/form-data; boundary="a b"', plain) == {"q": "SELECT 1"}
