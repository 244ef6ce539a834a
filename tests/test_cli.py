"""`llmwatch up`, `status` and the shared flags, as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmwatch.cli import COMMANDS, build_parser, settings_from_args
from llmwatch.core.errors import ConfigError
from llmwatch.core.settings import Settings
from tests.conftest import free_port, stop_process, wait_until


def llmwatch(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmwatch", *args], capture_output=True, text=True, timeout=timeout_s)


def test_every_command_takes_the_same_settings_flags() -> None:
    parser = build_parser()
    for command in COMMANDS:
        extra = {
            "drift": ["--reference", "a.jsonl", "--current", "b.jsonl"],
            "score": ["--detector", "toxicity", "--input", "a.jsonl", "--output", "b.jsonl"],
            "release": ["list", "--app", "a"],
            "reviews": ["export", "--output", "r.jsonl"],
            "dataset": ["list"],
            "experiment": ["list"],
        }.get(command, [])
        args = parser.parse_args([command, *extra, "--data-dir", "/tmp/x", "--kafka-port", "19092", "--clickhouse-port", "18123", "--console-port", "18501", "--no-console"])
        settings = settings_from_args(args, environ={})
        assert (settings.kafka_port, settings.clickhouse_port, settings.console_port, settings.no_console) == (19092, 18123, 18501, True)


def test_flags_override_environment_which_overrides_defaults() -> None:
    args = build_parser().parse_args(["status", "--kafka-port", "9999"])
    settings = settings_from_args(args, environ={"LLMWATCH_KAFKA_PORT": "1111", "LLMWATCH_BATCH_SIZE": "64"})
    assert settings.kafka_port == 9999
    assert settings.batch_size == 64


def test_bad_environment_names_every_bad_variable() -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"LLMWATCH_KAFKA_PORT": "ninety", "LLMWATCH_NO_CONSOLE": "maybe"})
    assert "LLMWATCH_KAFKA_PORT" in str(error.value) and "LLMWATCH_NO_CONSOLE" in str(error.value)


def test_taken_port_gives_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = llmwatch("up", "--data-dir", str(tmp_path), "--kafka-port", str(port), "--clickhouse-port", str(free_port()),
                          "--ingest-port", str(free_port()))
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "--kafka-port" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_fails_when_nothing_runs() -> None:
    result = llmwatch("status", "--kafka-port", str(free_port()), "--clickhouse-port", str(free_port()))
    assert result.returncode == 1
    assert "FAIL  kafka" in result.stdout


@pytest.mark.slow
def test_up_status_and_clean_shutdown(tmp_path: Path) -> None:
    """`up` brings every component up, `status` exits 0, SIGTERM stops every child."""
    ports = ["--kafka-port", str(free_port()), "--clickhouse-port", str(free_port()), "--console-port", str(free_port()),
             "--ingest-port", str(free_port())]
    flags = ["--data-dir", str(tmp_path), *ports, "--kafka-session-timeout-s", "2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        [sys.executable, "-m", "llmwatch", "up", *flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as up:
        _watch_up(up, tmp_path, flags)


def _watch_up(up: subprocess.Popen[str], tmp_path: Path, flags: list[str]) -> None:
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Ctrl-C stops everything"):
                break
        assert any(line.startswith("llmwatch is up") for line in lines), "".join(lines)
        state = json.loads((tmp_path / "run" / "up.json").read_text())
        pids = [c["pid"] for c in state["components"].values()]
        assert sorted(state["components"]) == ["alerts", "broker", "console", "ingest", "jobs", "store", "worker"]
        status = llmwatch("status", *flags)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "ok    console" in status.stdout

        # A crashed component is restarted by the supervisor.
        old_worker = state["components"]["worker"]["pid"]
        os.kill(old_worker, signal.SIGKILL)
        wait_until(
            lambda: json.loads((tmp_path / "run" / "up.json").read_text())["components"]["worker"]["pid"] != old_worker,
            30,
            "worker restart",
        )
        wait_until(lambda: llmwatch("status", *flags).returncode == 0, 90, "healthy again")
        state = json.loads((tmp_path / "run" / "up.json").read_text())
        pids = [c["pid"] for c in state["components"].values()]
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        stop_process(up, timeout_s=30)
