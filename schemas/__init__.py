"""The trace-event JSON Schema and the ClickHouse DDL, shipped as package data."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).parent
TRACE_EVENT_SCHEMA = SCHEMA_DIR / "trace_event.v1.json"
DDL_DIR = SCHEMA_DIR / "clickhouse"

__all__ = ["DDL_DIR", "SCHEMA_DIR", "TRACE_EVENT_SCHEMA", "ddl_files", "trace_event_schema"]


@cache
def trace_event_schema() -> dict[str, Any]:
    """The trace event v1 JSON Schema as a dict."""
    return json.loads(TRACE_EVENT_SCHEMA.read_text())


def ddl_files() -> list[Path]:
    """DDL files in the order they are applied."""
    return sorted(DDL_DIR.glob("*.sql"))
