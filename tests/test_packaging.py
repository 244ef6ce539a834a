"""`pip install llmwatch` is what an app needs and nothing more; everything installs under the
one name `llmwatch`. The wheel is built from this checkout and installed, without extras, into a
fresh virtual environment, which then emits through both transports into a running pipeline."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmwatch.core.processes import free_port, port_open, stop_process, wait_until
from llmwatch.core.settings import Settings, settings_env
from llmwatch.storage.clickhouse import ClickHouseStore
from tests.test_pipeline import start_worker, worker_alive

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
# What a server install brings and an app must not get (distribution names, as pip lists them).
HEAVY = {"torch", "numpy", "pandas", "scikit-learn", "streamlit", "chdb", "faust-streaming", "evidently",
         "sentence-transformers", "pyarrow", "aiohttp", "clickhouse-connect", "transformers", "scipy"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the checkout without build/: setuptools reuses build/lib, where files
    since moved or deleted would still sit and slip into the wheel."""
    source = tmp_path_factory.mktemp("source") / "llmwatch"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".llmwatch", ".pytest_cache", ".hypothesis", "results"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "--quiet", "--wheel-dir", str(out)], check=True, cwd=out)
    (built,) = out.glob("llmwatch-*.whl")
    return built


@pytest.fixture(scope="module")
def sdk_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh virtual environment holding `pip install llmwatch` (no extras),
    with its dependencies at the versions of our lock file."""
    venv = tmp_path_factory.mktemp("sdk") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-c", str(ROOT / "requirements" / "lock.txt"), str(wheel)], check=True)
    return python


def test_the_wheel_adds_one_top_level_name_and_carries_its_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"llmwatch"}
    for expected in ("llmwatch/ingest/sdk/emitter.py", "llmwatch/core/events.py", "llmwatch/schemas/trace_event.v1.json",
                     "llmwatch/schemas/clickhouse/006_agents.sql", "llmwatch/alerts/rules.yaml", "llmwatch/ingest/pipeline/prices.yaml",
                     "llmwatch/dashboards/views/overview.py", "llmwatch/dashboards/app.py"):
        assert expected in names, expected
    # Every module of the checkout, and nothing else (no stale copy of a moved one).
    checkout = {
        str(Path(folder, name).relative_to(ROOT))
        for folder, _, files in os.walk(ROOT / "llmwatch", followlinks=True) if "__pycache__" not in folder
        for name in files if name.endswith(".py")
    }
    assert {n for n in names if n.endswith(".py")} == checkout


def test_the_sdk_install_is_light(sdk_python: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listed = subprocess.run([str(sdk_python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                            check=True, capture_output=True, text=True).stdout
    installed = {p["name"].lower() for p in json.loads(listed)}
    assert "llmwatch" in installed and not installed & HEAVY, installed & HEAVY
    site = sdk_python.parent.parent / "lib"
    size_mb = sum(f.stat().st_size for f in site.rglob("*") if f.is_file()) / 2**20
    with capsys.disabled():  # reported in every `make test` run
        print(f"\nSDK environment: {len(installed)} packages, {size_mb:.0f} MB: {sorted(installed)}")
    assert size_mb < 100  # pip itself and confluent-kafka's librdkafka are most of it
    # What an app imports is there, and importing it pulls in nothing of the server.
    probe = "import sys, llmwatch; print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    probe = probe.replace("{HEAVY!r}", repr({"torch", "numpy", "pandas", "streamlit", "chdb", "faust", "aiohttp"}))
    assert subprocess.run([str(sdk_python), "-c", probe], check=True, capture_output=True, text=True,
                          cwd=sdk_python.parent).stdout.strip() == "[]"


def test_a_server_command_names_the_extra_it_needs(sdk_python: Path) -> None:
    done = subprocess.run([str(sdk_python), "-m", "llmwatch", "worker"], capture_output=True, text=True, timeout=60,
                          cwd=sdk_python.parent)
    assert done.returncode == 2
    assert re.fullmatch(r"llmwatch worker needs the `server` extra \(no module \w+\): "
                        r"pip install 'llmwatch\[server\]'\n", done.stderr), done.stderr


@pytest.fixture
def ingest_url(stack_settings: Settings, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`llmwatch ingest` with an API key, in front of the test's topic."""
    settings = dataclasses.replace(stack_settings, ingest_port=free_port(), ingest_api_key="k" * 24)
    with open(tmp_path / "ingest.log", "ab") as log:
        server = subprocess.Popen([sys.executable, "-m", "llmwatch", "ingest"], env={**os.environ, **settings_env(settings)},
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: port_open(settings.host, settings.ingest_port), 60, "ingest server")
        yield f"http://{settings.host}:{settings.ingest_port}", settings.ingest_api_key
    finally:
        stop_process(server)


def test_the_light_sdk_delivers_through_kafka_and_http(
    sdk_python: Path, stack_settings: Settings, embedded_store: ClickHouseStore, ingest_url: tuple[str, str],
    tmp_path: Path,
) -> None:
    url, api_key = ingest_url
    worker = start_worker(stack_settings, tmp_path / "worker.log")
    try:
        wait_until(lambda: worker_alive(embedded_store, worker.pid), 60, "worker")
        app = textwrap.dedent(f"""
            from llmwatch import Emitter, Release
            release = Release("answer", "3", "tiny-model")
            with Emitter({stack_settings.bootstrap_servers!r}, app="over-kafka", release=release,
                         topic={stack_settings.traces_topic!r}) as kafka:
                for i in range(40):
                    kafka.emit({{"input": f"question {{i}}", "output": "answer"}})
                assert kafka.flush(30), kafka.stats()
            with Emitter({url!r}, app="over-http", release=release, api_key={api_key!r}) as http:
                for i in range(60):
                    http.emit({{"input": f"question {{i}}", "output": "answer"}})
                http.emit({{"input": "broken", "output": "x", "usage": {{"input_tokens": -1}}}})
                assert http.flush(30), http.stats()
                print(http.stats())
        """)
        done = subprocess.run([str(sdk_python), "-c", app], capture_output=True, text=True, timeout=120,
                              cwd=sdk_python.parent)
        assert done.returncode == 0, done.stderr
        # The one event the server refused is reported failed; its 60 neighbours are delivered.
        assert done.stdout.strip() == "{'queued': 0, 'delivered': 60, 'failed': 1, 'dropped': 0}"
        db = embedded_store.database

        def stored() -> dict[str, int]:
            return dict(embedded_store.query(f"SELECT app, uniqExact(event_id) FROM {db}.traces GROUP BY app"))

        wait_until(lambda: stored() == {"over-kafka": 40, "over-http": 60}, 90, "both transports' events")
    finally:
        stop_process(worker)


def test_project_code_is_imported_only_under_llmwatch() -> None:
    """In a checkout `ingest` and friends are folders at the root and would import as top-level
    packages; installed, only `llmwatch.ingest` exists. So no code may use the bare names."""
    bare = re.compile(r"^\s*(?:from|import)\s+(ingest|detectors|storage|alerts|dashboards|schemas)\b", re.M)
    offenders = [
        f"{path.relative_to(ROOT)}: {match.group(0).strip()}"
        for folder in ("llmwatch", "ingest", "detectors", "storage", "alerts", "dashboards", "schemas", "tests", "bench")
        for path in (ROOT / folder).rglob("*.py")
        for match in bare.finditer(path.read_text())
    ]
    assert offenders == []
