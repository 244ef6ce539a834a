"""Costs without asking the app: USD from tokens and a price table (prices.yaml, overridable).

    table = PriceTable.load(settings.price_table)
    event = table.priced(event)   # cost_usd filled and cost_source "computed" when a price fits

Pure once loaded: the worker prices each event in microseconds (a dict lookup per model name).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from llmwatch.core.errors import ConfigError
from llmwatch.core.events import TraceEvent

__all__ = ["SHIPPED_TABLE", "Price", "PriceTable"]

SHIPPED_TABLE = Path(__file__).with_name("prices.yaml")

# `openai/gpt-4o` (LiteLLM), `models/gemini-2.5-flash` (Google), `meta-llama/...` (hosts),
# `us.anthropic.claude-...` (Bedrock): the model's own name is what follows.
_PREFIX = re.compile(r"^.*/|^(?:[a-z]{2}\.)?anthropic\.")


@dataclass(frozen=True, slots=True)
class Price:
    match: re.Pattern[str]
    input: float  # USD per million input tokens
    output: float  # USD per million output tokens
    cached_input: float | None
    since: date
    provider: str = ""
    source: str = ""
    checked: str = ""

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> float:
        cached = min(cached_input_tokens, input_tokens)
        cached_price = self.input if self.cached_input is None else self.cached_input
        return ((input_tokens - cached) * self.input + cached * cached_price + output_tokens * self.output) / 1e6


class PriceTable:
    def __init__(self, prices: list[Price]) -> None:
        self.prices = prices
        self._lookup = lru_cache(maxsize=4096)(self._find)

    @classmethod
    def load(cls, override: str | Path | None = None) -> PriceTable:
        """The shipped table, with the entries of `override` (same format) tried first."""
        prices = _read(Path(override)) if override else []
        return cls(prices + _read(SHIPPED_TABLE))

    def price(self, model: str, when: date) -> Price | None:
        return self._lookup(model, when)

    def _find(self, model: str, when: date) -> Price | None:
        name = _PREFIX.sub("", model.strip().lower())
        for price in self.prices:
            if price.since <= when and price.match.fullmatch(name):
                return price
        return None

    def priced(self, event: TraceEvent) -> TraceEvent:
        """The event with cost_usd computed, if it has none, has tokens and its model has a price."""
        if event.cost_usd is not None or (event.input_tokens is None and event.output_tokens is None) or not event.model:
            return event
        price = self.price(event.model, event.timestamp.date())
        if price is None:
            return event
        cost = price.cost(event.input_tokens or 0, event.output_tokens or 0, event.cached_input_tokens or 0)
        return dataclasses.replace(event, cost_usd=round(cost, 10), cost_source="computed")


def _read(path: Path) -> list[Price]:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        msg = f"price table {path}: {exc}"
        raise ConfigError(msg) from exc
    entries = (doc or {}).get("prices") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        msg = f"price table {path}: expected a mapping with a `prices` list"
        raise ConfigError(msg)
    return [_price(entry, path, i) for i, entry in enumerate(entries)]


def _price(entry: Any, path: Path, index: int) -> Price:
    where = f"price table {path}, entry {index + 1}"
    if not isinstance(entry, dict) or "match" not in entry:
        msg = f"{where}: expected a mapping with `match`, `input`, `output` and `since`"
        raise ConfigError(msg)
    try:
        pattern = re.compile(str(entry["match"]))
        since = entry.get("since", date(1970, 1, 1))
        since = since if isinstance(since, date) else datetime.strptime(str(since), "%Y-%m-%d").date()
        numbers = {k: float(entry[k]) for k in ("input", "output")}
        cached = float(entry["cached_input"]) if entry.get("cached_input") is not None else None
    except (KeyError, TypeError, ValueError, re.error) as exc:
        msg = f"{where} ({entry.get('match')!r}): {type(exc).__name__}: {exc}"
        raise ConfigError(msg) from exc
    if min(numbers.values()) < 0 or (cached is not None and cached < 0):
        msg = f"{where} ({entry['match']!r}): prices must not be negative"
        raise ConfigError(msg)
    return Price(pattern, numbers["input"], numbers["output"], cached, since, str(entry.get("provider", "")),
                 str(entry.get("source", "")), str(entry.get("checked", "")))
