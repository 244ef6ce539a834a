"""`llmwatch dataset` and `llmwatch experiment`: building datasets and replaying them through a
candidate release (alerts/datasets.py, alerts/experiments.py)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from llmwatch.core.errors import ConfigError
from llmwatch.core.settings import Settings

__all__ = ["add_arguments", "run_dataset", "run_experiment_command"]


def add_arguments(name: str, command: argparse.ArgumentParser) -> None:
    if name == "dataset":
        command.add_argument("action", choices=["add", "list", "export"])
        command.add_argument("name", nargs="?", default="", help="the dataset (add, export)")
        source = command.add_argument_group("add: where the cases come from (one)")
        source.add_argument("--from-file", type=Path, help="JSONL: input (text or chat messages), optional id, "
                            "context, reference, labels")
        source.add_argument("--from-reviews", action="store_true", help="reviewed events, the majority decision as a label")
        source.add_argument("--from-events", default="", help="comma-separated event ids (a trace search's results)")
        command.add_argument("--app", default="", help="--from-reviews: only this app")
        command.add_argument("--decision", default="", help="--from-reviews: only these decisions, e.g. toxic,hallucinated")
        command.add_argument("--version", type=int, default=0, help="export: this version (default the latest)")
        command.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl")
        command.add_argument("--output", type=Path, help="export: where to write")
        command.add_argument("--actor", default="", help="who (default: the OS user)")
    if name == "experiment":
        command.add_argument("action", choices=["run", "list"])
        command.add_argument("--dataset", default="", help="a dataset name, or a JSONL file (stored as a dataset named after it)")
        command.add_argument("--app", default="")
        command.add_argument("--endpoint", default="", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:11434/v1")
        command.add_argument("--model", default="")
        command.add_argument("--system-prompt", type=Path, help="file holding the candidate's system prompt")
        command.add_argument("--release", default="", help="PROMPT_ID:VERSION the candidate is (with --model, the release name)")
        command.add_argument("--api-key-env", default="", help="environment variable holding the endpoint's key")
        command.add_argument("--concurrency", type=int, default=4, help="calls in flight at once")
        command.add_argument("--rate", type=float, default=0.0, help="calls started per second at most (0: no limit)")
        command.add_argument("--max-output-tokens", type=int, default=512)
        command.add_argument("--price", default="", help="USD per million input,output tokens (default: the price table)")
        command.add_argument("--wait-s", type=float, default=120.0, help="how long to wait for the workers' scores")
        command.add_argument("--actor", default="", help="who (default: the OS user)")


def _store(settings: Settings) -> Any:
    from llmwatch.storage.clickhouse import connect
    from llmwatch.storage.migrate import migrate

    store = connect(settings)
    migrate(store, settings.retention_days)
    return store


def run_dataset(settings: Settings, args: argparse.Namespace) -> int:
    from llmwatch.alerts import datasets

    store = _store(settings)
    if args.action == "list":
        db = store.database
        rows = store.query(  # each dataset's latest version and its size, in one query
            f"SELECT name, version, count(), max(created_at) FROM {db}.datasets FINAL "
            f"WHERE (name, version) IN (SELECT name, max(version) FROM {db}.datasets GROUP BY name) "
            "GROUP BY name, version ORDER BY name")
        if not rows:
            print("no datasets yet: llmwatch dataset add NAME --from-file F | --from-reviews | --from-events IDS")
        for name, version, count, created in rows:
            print(f"{name:<32} v{version:<4} {count:>7} case(s)  {created:%Y-%m-%d %H:%M:%S}")
        return 0
    if not args.name:
        raise ConfigError(f"dataset {args.action} needs a dataset name")
    if args.action == "export":
        if args.output is None:
            raise ConfigError("dataset export needs --output")
        version, cases = datasets.load_dataset(store, args.name, args.version)
        temporary = args.output.with_name(args.output.name + ".partial")
        temporary.write_bytes(datasets.export(cases, args.format))
        temporary.replace(args.output)
        print(f"{len(cases)} case(s) of {args.name} v{version} written to {args.output}")
        return 0
    chosen = [bool(args.from_file), args.from_reviews, bool(args.from_events)]
    if sum(chosen) != 1:
        raise ConfigError("dataset add needs exactly one of --from-file, --from-reviews, --from-events")
    if args.from_file:
        cases = datasets.cases_from_jsonl(args.from_file)
    elif args.from_reviews:
        decisions = tuple(d for d in args.decision.split(",") if d)
        cases = datasets.cases_from_reviews(store, args.app, decisions)
    else:
        cases = datasets.cases_from_events(store, [e.strip() for e in args.from_events.split(",") if e.strip()])
    if not cases:
        raise ConfigError("no cases found to add")
    version, total = datasets.add_cases(store, args.name, cases, args.actor or getpass.getuser())
    print(f"{args.name} v{version}: {total} case(s) ({len(cases)} from this source)")
    return 0


def _price(text: str) -> tuple[float, float] | None:
    if not text:
        return None
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"--price {text!r}: expected two numbers, input,output USD per million tokens") from None
    return low, high


def run_experiment_command(settings: Settings, args: argparse.Namespace) -> int:
    from llmwatch.alerts import datasets
    from llmwatch.alerts.evaluations import load_evaluations
    from llmwatch.alerts.experiments import Candidate, run_experiment
    from llmwatch.alerts.releases import Registry

    store = _store(settings)
    if args.action == "list":
        rows = store.query(
            f"SELECT experiment_id, app, release, dataset, dataset_version, status, cases, updated_at "
            f"FROM {store.database}.experiments FINAL WHERE {{app:String}} = '' OR app = {{app:String}} "
            "ORDER BY updated_at DESC LIMIT 100", {"app": args.app})
        if not rows:
            print("no experiments yet" + (f" of {args.app}" if args.app else "")
                  + ": llmwatch experiment run --dataset NAME --app APP --endpoint URL --model MODEL")
        for experiment, app, release, dataset, version, status, cases, at in rows:
            print(f"{experiment}  {app:<16} {release:<32} {dataset} v{version}  {status:<10} {cases:>6}  {at:%Y-%m-%d %H:%M}")
        return 0
    missing = [flag for flag, value in (("--dataset", args.dataset), ("--app", args.app), ("--endpoint", args.endpoint),
                                        ("--model", args.model)) if not value]
    if missing:
        raise ConfigError(f"experiment run needs {', '.join(missing)}")
    prompt_id, _, prompt_version = args.release.partition(":")
    if args.release and not (prompt_id and prompt_version):
        raise ConfigError(f"--release {args.release!r}: expected PROMPT_ID:VERSION")
    if args.system_prompt is not None and not args.system_prompt.is_file():
        raise ConfigError(f"--system-prompt {args.system_prompt}: no such file")
    system_prompt = args.system_prompt.read_text(encoding="utf-8") if args.system_prompt else ""
    actor = args.actor or getpass.getuser()
    source, version = Path(args.dataset), 0
    if source.suffix == ".jsonl" or source.is_file():
        name = source.stem
        version, _ = datasets.add_cases(store, name, datasets.cases_from_jsonl(source), actor)
    else:
        name = args.dataset
    version, cases = datasets.load_dataset(store, name, version)
    evaluations, errors = load_evaluations(settings.evaluations_path)
    for error in errors:
        print(f"warning: {error}", file=sys.stderr)
    from llmwatch.ingest.pipeline.pricing import PriceTable
    from llmwatch.ingest.sdk.emitter import Emitter

    candidate = Candidate(args.app, args.endpoint.rstrip("/"), args.model, system_prompt, prompt_id, prompt_version,
                          args.api_key_env, args.max_output_tokens)
    emitter = Emitter(settings.bootstrap_servers, topic=settings.traces_topic)
    try:
        summary = run_experiment(
            store, emitter, name, version, cases, candidate, evaluations=evaluations,
            prices=PriceTable.load(settings.price_table or None), registry=Registry(store, settings),
            concurrency=args.concurrency, rate_per_s=args.rate, wait_s=args.wait_s, actor=actor, price=_price(args.price))
    finally:
        emitter.close()
    print(json.dumps(summary, indent=2, default=str))
    if summary["status"] != "done":
        print(f"llmwatch experiment: the workers scored {summary['scored_by_detectors']} of {summary['answered']} "
              f"answers within --wait-s; run the same command again to finish (nothing is asked twice)", file=sys.stderr)
    return 0 if summary["answered"] == summary["cases"] and summary["status"] == "done" else 1
