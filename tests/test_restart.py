"""Restarts just work: a stopped stack's ports are free again at once (TIME_WAIT connections do
not count), and the supervisor brings a killed store back within seconds."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from llmwatch.core.errors import PortInUse
from llmwatch.core.processes import check_ports_free, free_port, stop_process, wait_until
from llmwatch.supervisor import Component, Supervisor, python_command


def start_store(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    with open(data_dir / "store.log", "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "llmwatch", "store", "--data-dir", str(data_dir),
                                 "--clickhouse-port", str(port)], stdout=log, stderr=subprocess.STDOUT)


def ping(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200


def server_closed_connections(port: int, count: int = 20) -> None:
    """HTTP/1.0 requests: the server closes each connection first, so its side of each one
    waits in TIME_WAIT for a minute, as after a busy stack is stopped."""
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
            while sock.recv(4096):
                pass


def time_wait_sockets(port: int) -> int:
    out = subprocess.run(["ss", "-Htan", "state", "time-wait", f"( sport = :{port} )"], capture_output=True, text=True)
    return len(out.stdout.splitlines()) if out.returncode == 0 else -1


def test_a_stopped_store_starts_again_on_the_same_port_at_once(tmp_path: Path) -> None:
    port = free_port()
    store = start_store(tmp_path, port)
    wait_until(lambda: ping(port), 30, "store")
    server_closed_connections(port)
    with pytest.raises(PortInUse):
        check_ports_free("127.0.0.1", {"clickhouse_port": port})  # a live listener is still detected
    stop_process(store)
    assert time_wait_sockets(port) != 0  # what made the old probe refuse the port for a minute
    check_ports_free("127.0.0.1", {"clickhouse_port": port})
    started = time.monotonic()
    again = start_store(tmp_path, port)
    try:
        wait_until(lambda: ping(port), 30, "restarted store")
        assert time.monotonic() - started < 20
        assert again.poll() is None
    finally:
        stop_process(again)


def test_the_supervisor_restarts_a_killed_store_within_seconds(tmp_path: Path) -> None:
    port = free_port()
    env = {"LLMWATCH_DATA_DIR": str(tmp_path), "LLMWATCH_CLICKHOUSE_PORT": str(port)}
    store = Component("store", python_command("store"), ready=lambda: ping(port), port=port, env=env)
    supervisor = Supervisor([store], run_dir=tmp_path / "run", log_dir=tmp_path / "logs")
    supervisor.start()

    def watch() -> None:  # run_forever's loop, without its signal handlers (main thread only)
        while not supervisor._stopping:
            supervisor._watch()
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()
    try:
        server_closed_connections(port)
        assert store.process is not None
        old_pid = store.process.pid
        os.kill(old_pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: store.process is not None and store.process.pid != old_pid and ping(port), 60, "store back")
        assert time.monotonic() - killed < 15, "the store took too long to come back"
    finally:
        supervisor.stop()
