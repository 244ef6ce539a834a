"""`llmwatch up` and `llmwatch demo`: the embedded stack under one supervisor."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from llmwatch.broker import tansu_command
from llmwatch.core.processes import check_ports_free, port_open
from llmwatch.core.settings import Settings
from llmwatch.health import clickhouse_ready, console_ready, workers_alive
from llmwatch.supervisor import Component, Supervisor, python_command

log = logging.getLogger(__name__)

__all__ = ["build_components", "run_stack"]


def build_components(
    settings: Settings, *, demo: bool = False, demo_duration_s: float | None = None
) -> list[Component]:
    """The children of `up` in start order."""
    from llmwatch.core.settings import settings_env
    from llmwatch.ingest.kafka import ensure_llmwatch_topics, kafka_reachable
    from llmwatch.storage.clickhouse import connect
    from llmwatch.storage.migrate import migrate

    env = settings_env(settings)

    def create_topics() -> None:
        # Also after a broker restart: tansu keeps topics in memory only.
        ensure_llmwatch_topics(settings)

    def apply_schema() -> None:
        store = connect(settings)
        try:
            migrate(store, settings.retention_days)
        finally:
            store.close()

    broker = Component(
        "broker",
        tansu_command(settings.host, settings.kafka_port),
        ready=lambda: kafka_reachable(settings.bootstrap_servers, timeout_s=1.0),
        port=settings.kafka_port,
        on_ready=create_topics,
    )
    store = Component(
        "store",
        python_command("store"),
        ready=lambda: clickhouse_ready(settings),
        port=settings.clickhouse_port,
        on_ready=apply_schema,
        env=env,
    )
    workers = [_worker(settings, f"worker-{i + 1}" if settings.workers > 1 else "worker", env)
               for i in range(settings.workers)]
    jobs = Component("jobs", python_command("jobs"), ready=lambda: True, env=env)
    alerts = Component("alerts", python_command("alerts"), ready=lambda: True, env=env)
    ingest = Component("ingest", python_command("ingest"), ready=lambda: port_open(settings.host, settings.ingest_port),
                       port=settings.ingest_port, env=env)
    result = [broker, store, *workers, jobs, alerts, ingest]
    if not settings.no_console:
        result.append(Component("console", python_command("console"), ready=lambda: console_ready(settings),
                                port=settings.console_port, env=env))
    if demo:
        result.append(Component("demo-model", python_command("demo-model"),
                                ready=lambda: port_open(settings.host, settings.demo_model_port),
                                port=settings.demo_model_port, env=env))
        args = ["generate"]
        if demo_duration_s is not None:
            args += ["--duration-s", str(demo_duration_s)]
        result.append(Component("generator", python_command(*args), ready=lambda: True, env=env))
    return result


def _worker(settings: Settings, name: str, env: dict[str, str]) -> Component:
    worker = Component(name, python_command("worker"), ready=lambda: False, env=env, ready_timeout_s=90)
    # Ready once this very process has sent a heartbeat (a previous run's worker may still be fresh).
    worker.ready = lambda: worker.process is not None and workers_alive(settings, worker.process.pid) > 0
    return worker


# The demo replays a 4-minute incident timeline; windows of an hour would never see one.
DEMO_WINDOWS = {
    "drift_interval_s": 30.0,
    "drift_window_s": 60.0,
    "drift_reference_s": 180.0,
    "anomaly_reference_s": 600.0,
    "anomaly_refit_s": 60.0,
    # Drift needs drift_min_samples embeddings per one-minute window: more than a CPU's default 1/s.
    "embedding_max_per_s": 4.0,
}


def demo_settings(settings: Settings) -> Settings:
    """Demo-sized windows, where the user left a window at its default; and, unless the user has
    an evaluations file, the demo's (a judge and a release gate on the demo's stand-in LLM)."""
    defaults = Settings()
    changes: dict[str, Any] = {k: v for k, v in DEMO_WINDOWS.items() if getattr(settings, k) == getattr(defaults, k)}
    if not settings.evaluations:
        path = settings.data_dir / "demo-evaluations.yaml"
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(demo_evaluations(f"http://{settings.host}:{settings.demo_model_port}/v1"))
        changes["evaluations"] = str(path)
    return dataclasses.replace(settings, **changes)


def demo_evaluations(model_url: str) -> str:
    """The demo's evaluations file: a tone judge on a sample of support-bot's answers, a faithfulness
    judge on docs-rag's, routing with a sample big enough to show on the Quality page within
    minutes, and docs-rag's gate."""
    return f"""# Written by `llmwatch demo` (llmwatch/stack.py); your own: --evaluations FILE.
judges:
  - name: polite
    endpoint: {model_url}
    model: demo-judge
    rubric: Is the answer polite and respectful to the user, without condescension?
    sample: 0.1
    filters: {{app: support-bot}}
    compare_with: toxicity
    daily_calls: 20000
    daily_cost_usd: 1.0
    price: {{input_per_mtok: 0.15, output_per_mtok: 0.6}}
  - name: faithful
    endpoint: {model_url}
    model: demo-judge
    rubric: Is every claim of the answer stated in the retrieved context?
    sample: 0.05
    filters: {{app: docs-rag}}
    compare_with: grounding
    daily_calls: 20000
    daily_cost_usd: 1.0
    price: {{input_per_mtok: 0.15, output_per_mtok: 0.6}}
routing:
  sample: 0.02
  bands: {{toxicity: 0.1, grounding: 0.1}}
  daily_budget: 400
gates:
  - app: docs-rag
    dataset: docs-gate
    signals: [grounding, toxicity, error, judge:faithful]
"""


def run_stack(settings: Settings, *, demo: bool = False, demo_duration_s: float | None = None) -> int:
    if demo:
        settings = demo_settings(settings)
    ports = {"kafka_port": settings.kafka_port, "clickhouse_port": settings.clickhouse_port,
             "ingest_port": settings.ingest_port, **({"demo_model_port": settings.demo_model_port} if demo else {})}
    if not settings.no_console:
        ports["console_port"] = settings.console_port
    check_ports_free(settings.host, ports)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(
        build_components(settings, demo=demo, demo_duration_s=demo_duration_s),
        run_dir=settings.data_dir / "run",
        log_dir=settings.data_dir / "logs",
    )
    try:
        supervisor.start()
    except BaseException:
        supervisor.stop()
        raise
    lines = [
        "llmwatch is up:",
        f"  Kafka       {settings.bootstrap_servers}  (topics {settings.traces_topic}, {settings.dlq_topic}, {settings.control_topic})",
        f"  ClickHouse  {settings.store_url}  (database {settings.database}, user default, password in "
        f"{settings.store_password_file if not settings.clickhouse_password else '--clickhouse-password'})",
        f"              try: curl --user 'default:{settings.store_password}' "
        f"'{settings.store_url}/?query=SELECT+count()+FROM+{settings.database}.traces'",
        f"  ingest      http://{settings.host}:{settings.ingest_port}  (OTLP/HTTP /v1/traces, JSON /v1/events)",
        f"  logs        {settings.data_dir / 'logs'}",
        (f"  console     http://{settings.host}:{settings.console_port}"
         + ("  (no login: local admin; --console-users requires one)" if not settings.console_users else "")
         if not settings.no_console else "  console     left out (--no-console)"),
    ]
    if demo:
        lines.append(f"  demo        emitting {settings.demo_rate:g} events/s through the SDK; its stand-in LLM at "
                     f"http://{settings.host}:{settings.demo_model_port}/v1 (evaluations: {settings.evaluations})")
    lines.append("Ctrl-C stops everything.")
    print("\n".join(lines), flush=True)
    supervisor.run_forever()
    return 0
