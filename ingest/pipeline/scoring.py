"""Scoring a batch: each detector isolated from the events that break it, and the stateless ones in
a second process, beside the worker's own.

A worker's batches run on one core: parsing, PII redaction, the detectors and the store calls
share one GIL. Toxicity, injection and grounding with their offline models are pure functions of
an event's text and cost about half of it (bench/pipeline.py's budget), so with
`--scoring-process` (on by default where there are two cores or more) a helper process scores
them while the worker runs the rest of the batch, the anomaly detector and the store calls.

A batch goes to the helper in chunks as the worker parses it (`ScoringBatch.send`), and the rows
come back by event id, for whichever events the worker's lookup keeps (`ScoringBatch.rows`).

Nothing is lost when the helper fails. Events it has not answered for (it died, its socket broke,
it took longer than `SCORING_TIMEOUT_S`) are scored in the worker by the worker's own copies of
the same detectors, and a fresh helper takes the next batch; after `MAX_FAILURES` failures in a
row the worker scores everything itself. Review-trained adapters are set on the worker's copies
(detectors/adapters.py: refresh_adapters) and sent along with the next chunk.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

from llmwatch.core.errors import StoreError
from llmwatch.core.events import TraceEvent
from llmwatch.detectors.base import Detector, ScoreRow

log = logging.getLogger(__name__)

__all__ = ["MAX_FAILURES", "SCORING_CHUNK", "SCORING_PROCESS_STAGE", "SCORING_TIMEOUT_S", "ScoringBatch",
           "ScoringProcess", "offloadable", "score_isolated"]

SCORING_TIMEOUT_S = 300.0  # its first batch waits for its start-up too (imports, models: seconds)
MAX_FAILURES = 3
# Events per chunk sent while a batch is parsed: the helper scores one chunk while the worker
# parses and redacts the next, so a batch's scoring ends soon after its parsing.
SCORING_CHUNK = 500
# Stages of the worker's clock timed in the helper: "detector toxicity (scoring process)".
SCORING_PROCESS_STAGE = "(scoring process)"

# (CPU seconds, wall seconds, rows) of each detector the helper ran, by name; a row is (index of
# its event in the chunk, detector_version, target, score, label, details).
Scored = dict[str, tuple[float, float, list[tuple[Any, ...]]]]


def score_isolated(detector: Detector, events: Sequence[TraceEvent]) -> list[ScoreRow]:
    """One event that makes a detector fail (a poison pill) costs that event its score, not the
    batch: on failure the batch is re-scored one event at a time and the failing event gets an
    `error` row, so the failure is visible and nothing is retried forever."""
    try:
        return detector.score(events)
    except StoreError:
        raise  # the store is down (a detector reading its reference): retry the batch, do not blame events
    except Exception:
        log.exception("detector %s failed on a batch of %d; isolating the event", detector.name, len(events))
    rows: list[ScoreRow] = []
    for event in events:
        try:
            rows += detector.score([event])
        except StoreError:
            raise
        except Exception as exc:
            log.error("detector %s failed on event %s: %s", detector.name, event.event_id, type(exc).__name__)
            rows += [
                ScoreRow(event.event_id, detector.name, detector.version, target, None, "error",
                         {"error": type(exc).__name__})
                for target in detector.targets
            ]
    return rows


def offloadable(detector: Detector) -> bool:
    """Whether a detector may score in the helper: it says so. Such a detector keeps no state
    between batches, reads no store and holds no GPU model (the helper builds its own copy from
    the settings), and reads only an event's `event_id`, `input`, `output` and `context`: the
    helper's events carry nothing else."""
    return bool(getattr(detector, "offloadable", False))


class ScoringProcess:
    """A helper process holding its own copies of the detectors named, loaded from `settings`
    as the worker loads its own (detectors/registry.py). One batch at a time (`batch`)."""

    def __init__(self, settings: Any, names: Sequence[str], timeout_s: float = SCORING_TIMEOUT_S) -> None:
        self.settings = settings
        self.names = list(names)
        self.timeout_s = timeout_s
        self.failures = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None
        self._pipe: Connection | None = None
        self._answers: queue.Queue[Any] = queue.Queue()
        self._sent_adapters: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.start()

    @property
    def usable(self) -> bool:
        return self.failures < MAX_FAILURES

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """A fresh interpreter (not a fork of a process with threads, and not multiprocessing's
        spawn, which re-runs the caller's main module), talking over a socket pair. A thread
        reads its answers as they come, so neither side ever waits on a full socket."""
        ours, theirs = socket.socketpair()
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-c", "from llmwatch.ingest.pipeline.scoring import main; main()", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
            )
        self._socket = ours
        self._pipe = Connection(os.dup(ours.fileno()))
        self._pipe.send((self.settings, self.names))
        self._sent_adapters = {}
        self._answers = queue.Queue()  # a new helper's answers only: nothing of the last one's is read
        threading.Thread(target=_read_answers, args=(self._pipe, self._answers), name="llmwatch-scoring-answers",
                         daemon=True).start()

    @contextmanager
    def batch(self, detectors: Sequence[Detector]) -> Iterator[ScoringBatch]:
        """One batch's exchange: send it in chunks as they are parsed, collect the rows once.
        `detectors`: the worker's copies, whose adapters the helper's must match."""
        with self._lock:
            batch = ScoringBatch(self, detectors)
            try:
                yield batch
            finally:
                batch.collect()  # every answer owed is read here: none is left for the next batch

    def _send(self, events: Sequence[TraceEvent], detectors: Sequence[Detector]) -> bool:
        assert self._pipe is not None
        adapters = {d.name: d.adapter for d in detectors  # type: ignore[attr-defined]
                    if d.name in self.names and hasattr(d, "set_adapter")}
        changed = {name: a for name, a in adapters.items()
                   if name not in self._sent_adapters or self._sent_adapters[name] is not a}
        try:
            self._pipe.send((_wire_events(events), changed))
        except (OSError, ValueError) as exc:  # the helper is gone; ValueError: a closed pipe
            self._failed(f"could not send it a batch: {exc}")
            return False
        self._sent_adapters.update(changed)
        return True

    def _receive(self) -> Scored | None:
        try:
            answer = self._answers.get(timeout=self.timeout_s)
        except queue.Empty:
            self._failed(f"no answer in {self.timeout_s:g} s")
            return None
        if isinstance(answer, _Stopped):
            self._failed(f"it stopped ({answer.reason})")
            return None
        self.failures = 0
        return answer

    def _failed(self, reason: str) -> None:
        self.failures += 1
        code = self._process.poll() if self._process is not None else None
        self.stop()
        if self.usable:
            log.warning("scoring process: %s (exit code %s); its events are scored in the worker, a new process "
                        "takes the next batch", reason, code)
            self.start()
        else:
            log.error("scoring process: %s (exit code %s), %d times in a row; the worker scores every batch "
                      "itself from now on", reason, code, self.failures)

    def stop(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)  # wakes the answer thread; the helper reads its end
            self._socket.close()
        if self._pipe is not None:
            self._pipe.close()
        if self._process is not None:
            try:
                self._process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=2.0)
        self._process = self._pipe = self._socket = None


class ScoringBatch:
    """The rows the helper gave for one batch's events, by detector and event id."""

    def __init__(self, process: ScoringProcess, detectors: Sequence[Detector]) -> None:
        self.process = process
        self.detectors = detectors
        self.names = process.names
        self.failed = False
        self._sent: set[uuid.UUID] = set()
        self._owed: collections.deque[list[TraceEvent]] = collections.deque()  # chunks sent, not answered
        self._rows: dict[str, dict[uuid.UUID, list[ScoreRow]]] = {name: {} for name in self.names}
        self.cpu_s = dict.fromkeys(self.names, 0.0)
        self.wall_s = dict.fromkeys(self.names, 0.0)

    def send(self, events: Sequence[TraceEvent]) -> None:
        """Score these too (each event once per batch); returns at once."""
        fresh = [e for e in events if e.event_id not in self._sent]
        if not fresh or self.failed:
            return
        if not self.process._send(fresh, self.detectors):
            self.failed = True
            return
        self._sent.update(e.event_id for e in fresh)
        self._owed.append(fresh)

    def collect(self) -> None:
        """Wait for every answer owed; after a failure the rest are the worker's to score."""
        while self._owed and not self.failed:
            answer = self.process._receive()
            if answer is None:
                self.failed = True
                return
            chunk = self._owed.popleft()
            for name, (cpu_s, wall_s, rows) in answer.items():
                self.cpu_s[name] += cpu_s
                self.wall_s[name] += wall_s
                by_event = self._rows[name]
                for i, version, target, score, label, details in rows:
                    event_id = chunk[i].event_id
                    by_event.setdefault(event_id, []).append(
                        ScoreRow(event_id, name, version, target, score, label, details))

    def take_times(self) -> dict[str, tuple[float, float]]:
        """(CPU, wall) seconds per detector the helper spent since the last take, then zeroed."""
        spent = {name: (self.cpu_s[name], self.wall_s[name]) for name in self.names
                 if self.cpu_s[name] or self.wall_s[name]}
        for name in spent:
            self.cpu_s[name] = self.wall_s[name] = 0.0
        return spent

    def rows(self, name: str, events: Sequence[TraceEvent]) -> tuple[list[ScoreRow], list[TraceEvent]]:
        """The helper's rows of detector `name` for `events`, and the events it has none for."""
        self.collect()
        by_event = self._rows[name]
        found = [row for e in events if e.event_id in by_event for row in by_event[e.event_id]]
        return found, [e for e in events if e.event_id not in by_event]


# What crosses the socket is what offloadable detectors read, in flat lists (pickling a list of
# strings is a memcpy; whole TraceEvents, their UUIDs and datetimes cost ~35 us per event both
# ways, measured), and rows come back as tuples indexing the chunk's events.
_WiredEvents = tuple[bytes, list[str], list[str], list[tuple[str, ...]]]
_UNSENT_TIME = datetime.fromtimestamp(0, UTC)


def _wire_events(events: Sequence[TraceEvent]) -> _WiredEvents:
    return (b"".join(e.event_id.bytes for e in events), [e.input for e in events], [e.output for e in events],
            [e.context for e in events])


def _unwired_events(wired: _WiredEvents) -> list[TraceEvent]:
    ids, inputs, outputs, contexts = wired
    return [TraceEvent(uuid.UUID(bytes=ids[16 * i : 16 * i + 16]), "", _UNSENT_TIME, "", input=text, output=output,
                       context=context)
            for i, (text, output, context) in enumerate(zip(inputs, outputs, contexts, strict=True))]


@dataclass(frozen=True)
class _Stopped:
    reason: str


def _read_answers(pipe: Connection, answers: queue.Queue[Any]) -> None:
    while True:
        try:
            answers.put(pipe.recv())
        except (EOFError, OSError) as exc:  # closed: by stop(), or by the helper's end
            answers.put(_Stopped(str(exc) or type(exc).__name__))
            return


def main() -> None:
    """The helper's entry: the socket's descriptor is its one argument; settings come first on it."""
    pipe = Connection(int(sys.argv[1]))
    try:
        settings, names = pipe.recv()
    except (EOFError, OSError):
        return
    _serve(pipe, settings, names)


def _serve(pipe: Any, settings: Any, names: list[str]) -> None:
    """The helper: score each batch received with every detector, until the pipe closes."""
    from llmwatch.core.processes import tune_garbage_collector
    from llmwatch.detectors.registry import load_all

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the worker's to handle; the pipe's close ends us
    detectors = load_all(names, settings)
    tune_garbage_collector()
    while True:
        try:
            wired, adapters = pipe.recv()
        except (EOFError, OSError):
            return
        events = _unwired_events(wired)
        position = {e.event_id: i for i, e in enumerate(events)}
        answer: Scored = {}
        for detector in detectors:
            if detector.name in adapters:
                detector.set_adapter(adapters[detector.name])  # type: ignore[attr-defined]
            cpu, wall = time.thread_time(), time.perf_counter()
            rows = [(position[r.event_id], r.detector_version, r.target, r.score, r.label, r.details)
                    for r in score_isolated(detector, events)]
            answer[detector.name] = (time.thread_time() - cpu, time.perf_counter() - wall, rows)
        try:
            pipe.send(answer)
        except (OSError, ValueError):
            return
