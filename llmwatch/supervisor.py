"""Runs the embedded stack's components as child processes: start in order, wait until each is
ready, restart a crashed one with backoff, stop everything on SIGTERM or Ctrl-C."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llmwatch.core.errors import LlmwatchError
from llmwatch.core.processes import stop_process

log = logging.getLogger(__name__)

__all__ = ["Component", "Supervisor", "python_command"]

MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0  # a component that ran this long has its backoff reset


@dataclass
class Component:
    """One child process of `llmwatch up`."""

    name: str
    command: list[str]
    ready: Callable[[], bool]
    port: int | None = None
    ready_timeout_s: float = 60.0
    on_ready: Callable[[], None] | None = None  # e.g. create topics after the broker (re)starts
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = 1.0
    restart_at: float | None = None


class Supervisor:
    def __init__(self, components: list[Component], run_dir: Path, log_dir: Path) -> None:
        self.components = components
        self.run_dir = run_dir
        self.log_dir = log_dir
        self._stopping = False

    def _spawn(self, component: Component) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(self.log_dir / f"{component.name}.log", "ab")  # noqa: SIM115 - owned by the child
        env = {**os.environ, **component.env}
        component.process = subprocess.Popen(
            component.command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
        )
        log_file.close()
        component.started_at = time.monotonic()
        self._write_state()

    def _wait_ready(self, component: Component) -> None:
        deadline = time.monotonic() + component.ready_timeout_s
        while time.monotonic() < deadline:
            if component.process is not None and component.process.poll() is not None:
                msg = (
                    f"{component.name} exited with status {component.process.returncode} while"
                    f" starting; see {self.log_dir / (component.name + '.log')}"
                )
                raise LlmwatchError(msg)
            try:
                if component.ready():
                    if component.on_ready is not None:
                        component.on_ready()
                    return
            except Exception as exc:  # a readiness probe failing is "not yet"
                log.debug("%s not ready: %s", component.name, exc)
            time.sleep(0.2)
        msg = f"{component.name} not ready after {component.ready_timeout_s:.0f}s; see {self.log_dir / (component.name + '.log')}"
        raise LlmwatchError(msg)

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for component in self.components:
            log.info("starting %s", component.name)
            self._spawn(component)
            self._wait_ready(component)
            log.info("%s ready", component.name)

    def run_forever(self, on_tick: Callable[[], None] | None = None) -> None:
        """Watch children until SIGTERM/SIGINT; restart the ones that die."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            while not self._stopping:
                self._watch()
                if on_tick is not None:
                    on_tick()
                time.sleep(0.5)
        finally:
            self.stop()

    def _on_signal(self, signum: int, _frame: object) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        self._stopping = True

    def _watch(self) -> None:
        now = time.monotonic()
        for component in self.components:
            process = component.process
            if component.restart_at is not None:
                if now >= component.restart_at:
                    component.restart_at = None
                    component.restarts += 1
                    log.info("restarting %s (restart %d)", component.name, component.restarts)
                    self._spawn(component)
                    try:
                        self._wait_ready(component)
                    except LlmwatchError as exc:
                        log.error("%s", exc)
                continue
            if process is None or process.poll() is None:
                if process is not None and now - component.started_at > STABLE_AFTER_S:
                    component.backoff_s = 1.0
                continue
            log.error(
                "%s exited with status %s; restarting in %.0fs (log: %s)",
                component.name,
                process.returncode,
                component.backoff_s,
                self.log_dir / f"{component.name}.log",
            )
            component.restart_at = now + component.backoff_s
            component.backoff_s = min(MAX_BACKOFF_S, component.backoff_s * 2)

    def stop(self, timeout_s: float = 8.0) -> None:
        """SIGTERM every child, last started first; SIGKILL what is left after timeout_s."""
        self._stopping = True
        for component in reversed(self.components):
            process = component.process
            if process is None or process.poll() is not None:
                continue
            log.info("stopping %s (pid %d)", component.name, process.pid)
            if stop_process(process, timeout_s):
                log.warning("%s did not stop in %.0fs; it was killed", component.name, timeout_s)
        state = self.run_dir / "up.json"
        state.unlink(missing_ok=True)

    def _write_state(self) -> None:
        state = {
            "supervisor_pid": os.getpid(),
            "components": {
                c.name: {"pid": c.process.pid if c.process else None, "port": c.port}
                for c in self.components
            },
        }
        (self.run_dir / "up.json").write_text(json.dumps(state, indent=2))


def python_command(*args: str) -> list[str]:
    """Run an llmwatch subcommand with this interpreter (works without the console script)."""
    return [sys.executable, "-m", "llmwatch", *args]
