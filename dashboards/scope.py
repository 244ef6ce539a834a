"""What a console view looks at: a time range and filters, read from and written to the URL so a
view can be shared by copying its address. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["DIMENSIONS", "RANGES", "Scope", "bucket_seconds", "scope_from_params"]

RANGES = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
DEFAULT_RANGE = "24h"
DIMENSIONS = ("app", "release", "environment", "model")
_STEPS = (10, 60, 300, 900, 3600, 6 * 3600, 86400)  # chart buckets, seconds


def bucket_seconds(span_s: float, points: int = 120) -> int:
    """The smallest of the usual steps that draws `span_s` in at most about `points` points."""
    return next((step for step in _STEPS if span_s / step <= points), _STEPS[-1])


@dataclass(frozen=True)
class Scope:
    start: datetime
    end: datetime
    range_name: str = DEFAULT_RANGE  # a RANGES key, or "custom"
    filters: dict[str, tuple[str, ...]] = field(default_factory=dict)  # dimension -> allowed values

    @property
    def bucket_s(self) -> int:
        return bucket_seconds((self.end - self.start).total_seconds())

    def where(self, time_column: str, columns: Mapping[str, str] | None = None, *,
              skip: tuple[str, ...] = ()) -> tuple[str, dict[str, Any]]:
        """A WHERE clause (without WHERE) and its parameters: the time range on `time_column` and
        each filter on its column (`columns` maps a dimension to an SQL expression where it is not a
        column of the same name; `skip` leaves dimensions out, for tables that lack them)."""
        columns = columns or {}
        params: dict[str, Any] = {"start": self.start, "end": self.end}
        conditions = [f"{time_column} >= {{start:DateTime64(3, 'UTC')}}", f"{time_column} < {{end:DateTime64(3, 'UTC')}}"]
        for dimension, values in sorted(self.filters.items()):
            if values and dimension not in skip:
                conditions.append(f"{columns.get(dimension, dimension)} IN {{{dimension}:Array(String)}}")
                params[dimension] = list(values)
        if "environment" not in skip and not self.filters.get("environment"):
            # Experiments' replays are not the apps' traffic: the Experiments page shows them, or
            # an explicit environment filter.
            conditions.append(f"{columns.get('environment', 'environment')} != 'experiment'")
        return " AND ".join(conditions), params

    def to_params(self) -> dict[str, str]:
        """URL query parameters (st.query_params) that give this scope back."""
        params = {"range": self.range_name}
        if self.range_name == "custom":
            params["from"] = self.start.strftime("%Y-%m-%dT%H:%M")
            params["to"] = self.end.strftime("%Y-%m-%dT%H:%M")
        for dimension, values in self.filters.items():
            if values:
                params[dimension] = ",".join(values)
        return params


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def scope_from_params(params: Mapping[str, str], now: datetime) -> tuple[Scope, list[str]]:
    """The scope a URL asks for, and the problems found in it (each falls back to the default,
    so a mangled link still opens)."""
    problems: list[str] = []
    filters = {d: tuple(v for v in params.get(d, "").split(",") if v) for d in DIMENSIONS if params.get(d)}
    range_name = params.get("range", DEFAULT_RANGE)
    if range_name == "custom":
        try:
            start, end = _parse_time(params["from"]), _parse_time(params["to"])
            if start >= end:
                raise ValueError("from must be before to")
            return Scope(start, end, "custom", filters), problems
        except (KeyError, ValueError) as exc:
            problems.append(f"custom time range ignored: {exc}")
            range_name = DEFAULT_RANGE
    if range_name not in RANGES:
        problems.append(f"unknown time range {range_name!r}; showing {DEFAULT_RANGE}")
        range_name = DEFAULT_RANGE
    return Scope(now - timedelta(seconds=RANGES[range_name]), now, range_name, filters), problems
