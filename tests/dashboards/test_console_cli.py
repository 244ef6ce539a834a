"""`llmwatch console hash-password`, the refusal of an open console, and `llmwatch reviews export`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from llmwatch.core.accounts import parse_users, verify
from llmwatch.dashboards import reviews


def llmwatch(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmwatch", *args], input=stdin, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def test_hash_password_makes_a_hash_the_console_accepts() -> None:
    result = llmwatch("console", "hash-password", stdin="s3cret pass\n")
    assert result.returncode == 0, result.stderr
    hashed = result.stdout.strip()
    assert verify("s3cret pass", hashed) and not verify("s3cret", hashed)
    assert parse_users(f"ada:admin:{hashed}")["ada"].role == "admin"


def test_an_open_console_off_loopback_is_refused() -> None:
    result = llmwatch("console", "--host", "0.0.0.0", env={"LLMWATCH_CONSOLE_USERS": ""})
    assert result.returncode == 1
    assert "with no login" in result.stderr and "--console-users" in result.stderr


def test_reviews_export_writes_the_labelled_dataset(console_env, tmp_path: Path) -> None:  # noqa: ANN001
    env, store, seeded = console_env
    event = seeded.review_event_ids[0]
    for reviewer, decision in (("rui", "toxic"), ("rita", "fine"), ("ada", "toxic")):
        reviews.record(store, event, reviewer, "support-bot", "answer:8@gpt-4o-mini", decision, "")
    for fmt in ("jsonl", "parquet"):
        out = tmp_path / f"labels.{fmt}"
        result = llmwatch("reviews", "export", "--format", fmt, "--output", str(out), env=env)
        assert result.returncode == 0, result.stderr
        assert f"{1 + len(seeded.sampled)} reviewed event(s)" in result.stdout and "Fleiss' kappa" in result.stdout
        rows = ([json.loads(line) for line in out.read_text().splitlines()] if fmt == "jsonl"
                else pq.read_table(out).to_pylist())
        assert len(rows) == 1 + len(seeded.sampled)  # the seed's uniform review sample, decided by two reviewers
        row = next(r for r in rows if r["event_id"] == event)
        assert row["label"] == "toxic" and not row["agreed"] and len(row["decisions"]) == 3
        assert not list(tmp_path.glob("*.partial"))


def test_reviews_export_with_no_decisions_writes_an_empty_dataset(console_env, tmp_path: Path) -> None:  # noqa: ANN001
    env, store, _ = console_env
    empty = {**env, "LLMWATCH_DATABASE": f"{store.database}_empty"}
    assert llmwatch("migrate", env=empty).returncode == 0
    try:
        result = llmwatch("reviews", "export", "--output", str(tmp_path / "none.jsonl"), env=empty)
        assert result.returncode == 0, result.stderr
        assert "0 reviewed event(s)" in result.stdout and "kappa n/a over 0 item(s)" in result.stdout
        assert (tmp_path / "none.jsonl").read_bytes() == b""
    finally:
        store.command(f"DROP DATABASE IF EXISTS {store.database}_empty")
