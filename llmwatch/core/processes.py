"""Small process and port helpers shared by the supervisor, the tests and the benchmarks."""

from __future__ import annotations

import ctypes
import gc
import ipaddress
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmwatch.core.errors import PortInUse

__all__ = [
    "check_ports_free",
    "children",
    "free_port",
    "is_loopback",
    "port_open",
    "return_big_buffers_to_the_os",
    "stop_process",
    "trim_heap",
    "tune_garbage_collector",
    "wait_until",
]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or "localhost") is this machine's loopback."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str = "condition") -> None:
    """Poll predicate every 0.1 s (an exception counts as "not yet"); TimeoutError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # not up yet
            pass
        time.sleep(0.1)
    msg = f"{what} not ready after {timeout_s}s"
    raise TimeoutError(msg)


def children(pid: int) -> list[int]:
    """The pids of the processes whose parent is `pid` (Linux /proc; none elsewhere)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:  # field 4: the parent's pid
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):  # ended meanwhile
            continue
    return found


def stop_process(process: subprocess.Popen[Any], timeout_s: float = 3.0) -> bool:
    """SIGTERM, then SIGKILL after timeout_s: by PID, always. True if it had to be killed."""
    if process.poll() is not None:
        return False
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return True
    return False


def return_big_buffers_to_the_os() -> None:
    """For servers that take big request bodies. After freeing a large block glibc raises its
    mmap threshold, so later multi-megabyte bodies come from the heap and stay in the process's
    memory for good (+57 % RSS after 200 fuzzed requests, measured). Pinning the threshold keeps
    every buffer over 256 KB mmapped, returned to the OS when freed (+0.7 %)."""
    if (libc := _glibc()) is not None:
        libc.mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD


def trim_heap() -> None:
    """Hand the free pages inside the heap back to the OS (glibc's malloc_trim). Freed request
    buffers under the mmap threshold leave holes the heap cannot shrink past, so a server that
    took a burst of big bodies keeps that memory until this runs. Costs a walk of the heap:
    call it after big bodies, not per request."""
    if (libc := _glibc()) is not None:
        libc.malloc_trim(0)


def tune_garbage_collector() -> int:
    """For a long-running process whose start-up loaded what stays (models, vocabularies,
    modules), before its steady work begins. Returns how many objects were frozen.

    * Everything alive now is frozen: out of the cyclic collector's reach. Each full collection
      otherwise walks the worker's ~160,000 long-lived objects again: 90 ms of CPU each, twice per
      3,000 events in the batch handler, in the middle of a batch. In the pipeline the collector's
      stage fell from 100 to 37 us per event (bench/pipeline.py).
    * The youngest generation is collected after 50,000 allocations, not 700: a batch keeps
      thousands of objects alive until it is stored, and each young collection walked them again
      (34 -> 12 us per event at 10,000; at 50,000 about one young collection per batch of 2,000
      is left, and the collector's time in the batch handler fell from 12.8 to 7.4 us per event,
      the mean of 6 and 5 alternating batches). Garbage without cycles is freed at once either
      way, so the higher threshold only delays freeing cyclic garbage."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)
    return gc.get_freeze_count()


def _glibc() -> Any:
    """glibc, for its malloc tuning; None elsewhere (musl, macOS), where there is nothing to tune."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def check_ports_free(host: str, ports: dict[str, int]) -> None:
    """Raise PortInUse naming the first taken port. Probed as the servers bind, with SO_REUSEADDR:
    the TIME_WAIT connections a stopped stack leaves for a minute do not make a port taken."""
    for name, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                flag = f"--{name.replace('_', '-')}"
                msg = f"port {port} on {host} ({name}) is already in use: stop what uses it or pass {flag}"
                raise PortInUse(msg) from None
