"""The evaluations file (YAML, beside the alert rules): rubric judges, review routing, release gates.

    judges:
      - name: helpful                        # score rows say detector `judge:helpful`
        endpoint: http://127.0.0.1:11434/v1  # any OpenAI-compatible chat-completions server
        model: llama3.1:8b
        api_key_env: OPENAI_API_KEY          # the key is read from this variable, never from the file
        rubric: |                            # {input} {output} {context} {reference} are filled in
          Does the answer address the question?
        scale: pass_fail                     # or {min: 1, max: 5}: the low end is the bad end
        examples:                            # optional few-shot: the case and the verdict it deserves
          - {input: "...", output: "...", verdict: fail, reason: "..."}
        sample: 0.05                         # share of each app's events judged online
        filters: {app: support-bot}          # app, environment, release, model
        daily_calls: 2000                    # never exceeded, retries included
        daily_cost_usd: 5.0                  # never exceeded: a call is made only if its worst case fits
        max_output_tokens: 200
        timeout: 30s
        retries: 2
        compare_with: grounding              # review routing: disagreement with this detector
        price: {input_per_mtok: 0.15, output_per_mtok: 0.60}   # default: the price table's model
    routing:
      sample: 0.01                           # uniform share of events sent to reviewers (the honest sample)
      bands: {toxicity: 0.1, grounding: 0.1} # a score this close to its threshold is uncertain
      daily_budget: 200                      # routed + sampled items per app and UTC day
      disagree: [[toxicity, judge:tone]]     # more pairs than the judges' compare_with
    gates:
      - app: support-bot
        dataset: support-gate                # `llmwatch dataset` name
        signals: [toxicity, grounding, error, judge:helpful]
        tolerance: 0.0                       # refused when clearly worse by more than this ...
        max_increase: 0.1                    # ... or when the rate rises by more than this at all

`parse_evaluations` returns what is valid and one error line per bad entry, naming the entry and
the field, like the alert rules: one mistake does not switch every judge off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmwatch.alerts.rules import DIMENSIONS, parse_duration, parse_named
from llmwatch.core.errors import ConfigError

__all__ = ["DETECTOR_THRESHOLDS", "Evaluations", "Gate", "Judge", "Routing", "load_evaluations", "parse_evaluations"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# The label a detector gives when its score reaches 0.5, and the signals an experiment reports.
DETECTOR_THRESHOLDS = {"toxicity": 0.5, "grounding": 0.5, "injection": 0.5}
OUTPUT_SIGNALS = ("toxicity", "grounding", "error")


@dataclass(frozen=True)
class Judge:
    name: str
    endpoint: str
    model: str
    rubric: str
    scale: tuple[float, float] | None = None  # None: pass/fail
    examples: tuple[dict[str, str], ...] = ()
    api_key_env: str = ""
    sample: float = 0.0
    filters: dict[str, str] = field(default_factory=dict)
    daily_calls: int = 1000
    daily_cost_usd: float = 1.0
    max_output_tokens: int = 200
    timeout_s: float = 30.0
    retries: int = 2
    compare_with: str = ""
    price: tuple[float, float] | None = None  # USD per million input, output tokens

    @property
    def detector(self) -> str:
        return f"judge:{self.name}"


@dataclass(frozen=True)
class Routing:
    sample: float = 0.01
    bands: dict[str, float] = field(default_factory=lambda: {"toxicity": 0.1, "grounding": 0.1})
    daily_budget: int = 200
    disagree: tuple[tuple[str, str], ...] = ()  # pairs of signals (detectors, judge:NAME) whose disagreement routes


@dataclass(frozen=True)
class Gate:
    app: str
    dataset: str
    signals: tuple[str, ...] = OUTPUT_SIGNALS
    tolerance: float = 0.0
    max_increase: float = 0.1


@dataclass(frozen=True)
class Evaluations:
    judges: tuple[Judge, ...] = ()
    routing: Routing = field(default_factory=Routing)
    gates: tuple[Gate, ...] = ()
    broken_gates: tuple[str, ...] = ()  # apps whose gate has a mistake: promotion is refused, not waved through

    def judge(self, name: str) -> Judge | None:
        return next((j for j in self.judges if j.name == name), None)

    def gate(self, app: str) -> Gate | None:
        return next((g for g in self.gates if g.app == app), None)


class _Problem(ValueError):
    pass


def _number(raw: dict[str, Any], key: str, default: float, where: str, low: float = 0.0,
            high: float | None = None) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or (high is not None and value > high):
        bounds = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise _Problem(f"{where}, field {key}: expected a number {bounds}, got {value!r}")
    return float(value)


def _judge(raw: Any, position: int) -> Judge:
    if not isinstance(raw, dict):
        raise _Problem(f"judge #{position}: expected a mapping")
    name = raw.get("name")
    where = f"judge {name!r}" if name else f"judge #{position}"
    known = {"name", "endpoint", "model", "rubric", "scale", "examples", "api_key_env", "sample", "filters",
             "daily_calls", "daily_cost_usd", "max_output_tokens", "timeout", "retries", "compare_with", "price"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise _Problem(f"{where}, field {unknown[0]}: unknown field (known: {', '.join(sorted(known))})")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _Problem(f"{where}, field name: required: letters, digits, '.', '_' or '-'")
    for key in ("endpoint", "model", "rubric"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise _Problem(f"{where}, field {key}: required")
    if not re.match(r"^https?://", raw["endpoint"]):
        raise _Problem(f"{where}, field endpoint: an http(s) URL of an OpenAI-compatible API, e.g. http://127.0.0.1:11434/v1")
    scale_raw = raw.get("scale", "pass_fail")
    scale: tuple[float, float] | None = None
    if scale_raw != "pass_fail":
        if not isinstance(scale_raw, dict) or set(scale_raw) != {"min", "max"} or not all(
                isinstance(scale_raw[k], (int, float)) and not isinstance(scale_raw[k], bool) for k in ("min", "max")) \
                or scale_raw["min"] >= scale_raw["max"]:
            raise _Problem(f"{where}, field scale: pass_fail, or {{min: 1, max: 5}} with min < max")
        scale = (float(scale_raw["min"]), float(scale_raw["max"]))
    examples = raw.get("examples") or []
    if not isinstance(examples, list) or any(
            not isinstance(e, dict) or "verdict" not in e or not all(isinstance(v, (str, int, float)) for v in e.values())
            for e in examples):
        raise _Problem(f"{where}, field examples: a list of mappings with input, output and verdict (and reason)")
    filters = raw.get("filters") or {}
    if not isinstance(filters, dict) or any(k not in DIMENSIONS or not isinstance(v, str) for k, v in filters.items()):
        raise _Problem(f"{where}, field filters: a mapping of {', '.join(DIMENSIONS)} to strings")
    price = raw.get("price")
    if price is not None:
        if not isinstance(price, dict) or set(price) != {"input_per_mtok", "output_per_mtok"}:
            raise _Problem(f"{where}, field price: {{input_per_mtok: N, output_per_mtok: N}} in USD")
        price = (_number(price, "input_per_mtok", 0, where), _number(price, "output_per_mtok", 0, where))
    compare_with = raw.get("compare_with", "")
    if compare_with and compare_with not in DETECTOR_THRESHOLDS:
        raise _Problem(f"{where}, field compare_with: one of {', '.join(DETECTOR_THRESHOLDS)}")
    key_env = raw.get("api_key_env", "")
    if not isinstance(key_env, str) or (key_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key_env)):
        raise _Problem(f"{where}, field api_key_env: the NAME of an environment variable holding the key")
    try:
        timeout_s = parse_duration(raw.get("timeout", 30))
    except ValueError as exc:
        raise _Problem(f"{where}, field timeout: {exc}") from None
    return Judge(
        name=name, endpoint=raw["endpoint"].rstrip("/"), model=raw["model"], rubric=raw["rubric"], scale=scale,
        examples=tuple({k: str(v) for k, v in e.items()} for e in examples), api_key_env=key_env,
        sample=_number(raw, "sample", 0.0, where, 0, 1), filters=dict(filters),
        daily_calls=int(_number(raw, "daily_calls", 1000, where)), daily_cost_usd=_number(raw, "daily_cost_usd", 1.0, where),
        max_output_tokens=int(_number(raw, "max_output_tokens", 200, where, 1)), timeout_s=timeout_s,
        retries=int(_number(raw, "retries", 2, where, 0, 10)), compare_with=compare_with, price=price,
    )


def _routing(raw: Any, judges: tuple[Judge, ...]) -> Routing:
    if raw is None:
        return Routing()
    if not isinstance(raw, dict) or set(raw) - {"sample", "bands", "daily_budget", "disagree"}:
        raise _Problem("routing: a mapping with sample, bands, daily_budget and disagree")
    known = {*DETECTOR_THRESHOLDS, *(j.detector for j in judges)}
    disagree = raw.get("disagree") or []
    if not isinstance(disagree, list) or any(
            not isinstance(p, list) or len(p) != 2 or p[0] == p[1] or any(s not in known for s in p) for p in disagree):
        raise _Problem(f"routing, field disagree: a list of pairs of two different signals among {', '.join(sorted(known))}")
    bands = raw.get("bands", Routing().bands)
    if not isinstance(bands, dict) or any(
            k not in DETECTOR_THRESHOLDS or isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 0.5
            for k, v in bands.items()):
        raise _Problem(f"routing, field bands: a mapping of {', '.join(DETECTOR_THRESHOLDS)} to a width in [0, 0.5)")
    return Routing(sample=_number(raw, "sample", 0.01, "routing", 0, 1), bands={k: float(v) for k, v in bands.items()},
                   daily_budget=int(_number(raw, "daily_budget", 200, "routing")),
                   disagree=tuple((a, b) for a, b in disagree))


def _gate(raw: Any, position: int, judges: tuple[Judge, ...]) -> Gate:
    if not isinstance(raw, dict) or not isinstance(raw.get("app"), str) or not isinstance(raw.get("dataset"), str):
        raise _Problem(f"gate #{position}: a mapping with app and dataset")
    where = f"gate of app {raw['app']!r}"
    unknown = sorted(set(raw) - {"app", "dataset", "signals", "tolerance", "max_increase"})
    if unknown:
        raise _Problem(f"{where}, field {unknown[0]}: unknown field")
    signals = raw.get("signals", list(OUTPUT_SIGNALS))
    known = {*OUTPUT_SIGNALS, *(j.detector for j in judges)}
    if not isinstance(signals, list) or not signals or any(s not in known for s in signals):
        raise _Problem(f"{where}, field signals: a list of {', '.join(sorted(known))}")
    return Gate(app=raw["app"], dataset=raw["dataset"], signals=tuple(signals),
                tolerance=_number(raw, "tolerance", 0.0, where, 0, 1),
                max_increase=_number(raw, "max_increase", 0.1, where, 0, 1))


def parse_evaluations(text: str, source: str = "evaluations") -> tuple[Evaluations, list[str]]:
    """The valid judges, routing and gates of a YAML document, and one error line per bad entry."""
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(document, dict) or set(document) - {"judges", "routing", "gates"}:
        raise ConfigError(f"{source}: expected a mapping with judges, routing and gates")
    judges, errors = parse_named(document.get("judges") or [], _judge, "judge", source)
    try:
        routing = _routing(document.get("routing"), tuple(judges))
    except _Problem as exc:
        errors.append(f"{source}: {exc}")
        routing = Routing(sample=0.0, daily_budget=0)  # a broken routing section routes nothing
    gates: list[Gate] = []
    broken: list[str] = []
    for position, raw in enumerate(document.get("gates") or [], 1):
        try:
            gates.append(_gate(raw, position, tuple(judges)))
        except _Problem as exc:
            errors.append(f"{source}: {exc}")
            if isinstance(raw, dict) and isinstance(raw.get("app"), str):
                broken.append(raw["app"])
    return Evaluations(tuple(judges), routing, tuple(gates), tuple(broken)), errors


def load_evaluations(path: Path) -> tuple[Evaluations, list[str]]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such evaluations file (set --evaluations or LLMWATCH_EVALUATIONS)")
    return parse_evaluations(path.read_text(encoding="utf-8"), str(path))
