"""The chaos suite, small: bench/chaos.py --quick against a real `llmwatch up` (broker, store,
worker, ingest), every scenario at a reduced size. The full run (bench/chaos.py) is in
docs/reliability.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chaos() -> dict:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "chaos.py"), "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((ROOT / "bench" / "results" / "chaos-quick.json").read_text())


def test_killing_the_worker_loses_and_doubles_nothing(chaos: dict) -> None:
    r = chaos["worker"]
    assert (r["lost"], r["doubled_rows"], r["unscored"]) == (0, 0, 0), r


def test_a_frozen_then_killed_store_loses_nothing_and_is_used_again_within_seconds(chaos: dict) -> None:
    r = chaos["store"]
    assert (r["lost"], r["doubled_rows"], r["unscored"]) == (0, 0, 0), r
    assert r["resume_after_thaw_s"] < 10 and r["resume_after_restart_s"] < 10, r


def test_hostile_messages_are_each_rejected_and_stop_nothing(chaos: dict) -> None:
    r = chaos["hostile"]
    assert r["rejected"] == r["hostile"] and r["valid_stored"] == r["valid"], r
    assert r["doubled_rows"] == 0 and not r["worker_restarted"], r
    assert "internal" not in r["reasons"], r


def test_fuzzed_http_gets_no_server_error(chaos: dict) -> None:
    r = chaos["http"]
    assert r["server_errors"] == 0 and not r["ingest_restarted"], r
    # Error responses once kept their request's body (decompressed) alive through the traceback.
    assert r["rss_growth"] < 0.2, r


def test_every_store_probe_is_refused(chaos: dict) -> None:
    r = chaos["probes"]
    assert r["refused"] == r["probes"] and r["not_refused"] == [], r
    assert r["unauthenticated_refused"] and r["foreign_origin_refused"] and r["get_write_refused"], r


def test_killing_the_broker_never_blocks_the_app(chaos: dict) -> None:
    """The in-memory broker loses what it held (docs/reliability.md); the app's emit() stays
    a queue append, and nothing is doubled."""
    r = chaos["broker"]
    assert r["doubled_rows"] == 0 and r["longest_emit_ms"] < 100, r
