"""One typed settings object for every llmwatch process.

Each field declares its environment variable, its default and why it exists, in one place.
`Settings.from_env` is pure (it takes the environment as a mapping) and reports every bad
variable at once; the CLI adds one flag per field, so every command takes the same flags.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmwatch.core.errors import ConfigError
from llmwatch.core.pii_policy import PiiPolicy

if TYPE_CHECKING:
    # events.py needs the `server` extra (its schema validators); the SDK reads settings without it.
    from llmwatch.core.events import Limits

ENV_PREFIX = "LLMWATCH_"


def _bundled_alerts_file(name: str) -> Path:
    """A file shipped beside llmwatch.alerts (a checkout's alerts/ folder, or
    site-packages/llmwatch/alerts), found without importing it."""
    spec = importlib.util.find_spec("llmwatch.alerts")
    assert spec is not None and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0]) / name


def setting(default: Any, help: str, *, flag: bool = True) -> Any:
    """A settings field; its env name is LLMWATCH_<FIELD NAME>, its CLI flag --field-name."""
    return field(default=default, metadata={"help": help, "flag": flag})


@dataclass(frozen=True)
class Settings:
    # Where things are.
    data_dir: Path = setting(Path(".llmwatch"), "folder for the embedded store, logs and pid files")
    host: str = setting("127.0.0.1", "address the embedded services bind to and clients connect to")
    kafka_port: int = setting(9092, "Kafka (tansu in the embedded stack) port")
    kafka_bootstrap: str = setting("", "Kafka bootstrap servers; default HOST:KAFKA_PORT")
    clickhouse_port: int = setting(8123, "ClickHouse HTTP port (embedded store or server)")
    clickhouse_url: str = setting("", "ClickHouse HTTP URL; default http://HOST:CLICKHOUSE_PORT")
    clickhouse_user: str = setting("default", "ClickHouse user")
    clickhouse_password: str = setting(
        "", "ClickHouse password; empty: the embedded store's own, generated into DATA_DIR/clickhouse-password"
    )
    database: str = setting("llmwatch", "ClickHouse database")
    console_port: int = setting(8501, "Streamlit console port")
    ingest_port: int = setting(4318, "HTTP ingest port: OTLP/HTTP at /v1/traces, JSON events at /v1/events")
    ingest_api_key: str = setting("", "API key the HTTP ingest requires (Authorization: Bearer or X-Api-Key); empty: none")
    ingest_max_body_bytes: int = setting(16_000_000, "largest HTTP ingest request body, after decompression")
    no_console: bool = setting(False, "leave the console out of `llmwatch up`")

    # Topics.
    traces_topic: str = setting("llm.traces", "topic the SDK writes trace events to")
    dlq_topic: str = setting("llm.traces.dlq", "topic for rejected events (raw bytes + reason)")
    control_topic: str = setting("llm.control", "topic for control events (release switches)")
    partitions: int = setting(4, "partitions created for llm.traces; the ceiling on worker count")
    replication_factor: int = setting(1, "replication factor of the topics llmwatch creates (3 on a cluster)")
    workers: int = setting(1, "worker processes `llmwatch up` runs (consumer-group members; at most `partitions`)")
    consumer_group: str = setting("llmwatch-worker", "consumer group the workers share")
    kafka_session_timeout_s: float = setting(
        6.0, "consumer session timeout; tansu delays group joins by half of it"
    )
    kafka_fetch_wait_s: float = setting(
        0.1, "longest a worker's fetch waits at the broker for new events; tansu answers a waiting fetch only "
        "at this deadline, so it is the floor of emit-to-row latency there (faust's own is 1.5 s)"
    )

    # Stream processing.
    batch_size: int = setting(2000, "most events per batch (a batch is cut sooner by --batch-window-s)")
    batch_window_s: float = setting(0.25, "flush a partial batch after this many seconds")
    batch_max_bytes: int = setting(
        64 * 1024 * 1024, "most bytes of events per batch: a take of big events is handled in parts (memory)")
    detectors: str = setting(
        "toxicity,grounding,injection,anomaly,embedding", "comma-separated detectors every event is scored by"
    )
    scoring_process: str = setting(
        "auto", "score the stateless detectors (toxicity, injection, grounding) in a helper process beside each "
        "worker: on, off, or auto (on with two cores or more)"
    )
    max_event_bytes: int = setting(1_000_000, "events larger than this are rejected")
    max_event_depth: int = setting(32, "JSON nesting deeper than this is rejected")
    max_future_skew_s: float = setting(3600.0, "timestamps further ahead than this are rejected")
    store_retry_max_s: float = setting(
        300.0, "give up (exit, restart from committed offsets) after the store is down this long"
    )

    # Models.
    device: str = setting("auto", "torch device for models: auto (CUDA when present), cpu, cuda, cuda:1")
    embedding_model: str = setting("", "sentence-transformers model directory; default: the bundled all-MiniLM-L6-v2")
    embedding_sample: float = setting(1.0, "share of events whose input and output are embedded (chosen by event_id)")
    embedding_max_per_batch: int = setting(
        -1, "events of one app embedded per batch at most; -1: automatic (no cap on a GPU, 4 on a CPU), 0: no cap"
    )
    embedding_max_per_s: float = setting(
        -1.0, "events of one app embedded per second at most; -1: automatic (no cap on a GPU, 1 on a CPU), 0: no cap"
    )
    model_batch_size: int = setting(128, "texts (or claim/passage pairs) per forward pass of a transformer model")
    toxicity_model: str = setting(
        "learned", "toxicity backend: learned (offline, CPU), profanity-check, a .npz from `llmwatch train "
        "toxicity`, or a detoxify .ckpt path"
    )
    toxicity_cascade_below: float = setting(
        0.0, "with a detoxify checkpoint: texts the cheap model scores below this skip detoxify (0 = off)"
    )
    review_training_interval_h: float = setting(
        0.0, "`llmwatch jobs` trains per-deployment models from reviews this often (hours; 0 = off)"
    )
    model_refresh_s: float = setting(60.0, "workers load newly promoted review-trained models this often (s)")
    grounding_weights: str = setting(
        "", "grounding weights (.json from `llmwatch train grounding`); default: the shipped model"
    )
    injection_model: str = setting(
        "", "injection model (.npz from `llmwatch train injection`); default: the shipped model"
    )
    grounding_model: str = setting(
        "", "NLI / cross-encoder model directory for grounding; default: none (the learned claim features alone)"
    )

    # Drift checks (`llmwatch jobs`, part of `llmwatch up`).
    drift_interval_s: float = setting(300.0, "how often the drift checks run")
    drift_window_s: float = setting(3600.0, "the current window: the last this-many seconds")
    drift_reference_s: float = setting(86400.0, "the reference window: this long, just before the current one")
    drift_reference_release: str = setting(
        "", "compare with this pinned release (prompt_id:prompt_version@model) instead of the reference window"
    )
    drift_min_samples: int = setting(100, "no verdict with fewer embeddings than this on either side")
    drift_max_samples: int = setting(2000, "embeddings sampled per side (by event_id hash)")
    drift_alpha: float = setting(0.01, "MMD permutation-test significance level")
    drift_seed: int = setting(0, "seed of the drift tests' random generator")
    drift_evidently: bool = setting(False, "also run Evidently's embedding-drift method, as a cross-check row")

    # Anomaly scores.
    anomaly_reference_s: float = setting(86400.0, "anomaly models are fitted on this much recent history per app")
    anomaly_refit_s: float = setting(600.0, "refit each app's anomaly model this often")
    anomaly_min_reference: int = setting(200, "events an app needs before its events get anomaly scores")
    anomaly_quantile: float = setting(0.99, "events above this quantile of the reference are labelled outliers")

    # Alerts (`llmwatch alerts`, part of `llmwatch up`).
    rules: str = setting("", "alert rules YAML file; default: the bundled alerts/rules.yaml")
    evaluations: str = setting(
        "", "judges, review routing and release gates (YAML); default: the bundled alerts/evaluations.yaml"
    )
    judge_interval_s: float = setting(60.0, "`llmwatch jobs` runs the online judges this often (s)")
    review_routing_interval_s: float = setting(60.0, "`llmwatch jobs` routes uncertain, disputed and sampled events to reviewers this often (s)")
    console_url: str = setting("", "console address used in notification links; default http://HOST:CONSOLE_PORT")
    slack_webhook_url: str = setting("", "Slack incoming-webhook URL for the `slack` action")
    pagerduty_url: str = setting("https://events.pagerduty.com/v2/enqueue", "PagerDuty Events API v2 endpoint")
    pagerduty_routing_key: str = setting("", "PagerDuty integration (routing) key for the `pagerduty` action")
    webhook_url: str = setting("", "URL the `webhook` action POSTs signed JSON to")
    webhook_secret: str = setting("", "HMAC-SHA256 secret of the webhook signature header (16+ characters; required with --webhook-url)")
    review_slack_webhook_url: str = setting("", "Slack webhook of the reviewers' channel (`escalate`); default: --slack-webhook-url")
    deploy_webhook_url: str = setting("", "called with JSON after a rollback, for deploy systems that must follow")

    # Console (`llmwatch console`, part of `llmwatch up`).
    console_users: str = setting(
        "", "console logins as name:role:hash,... (roles viewer, reviewer, admin; hashes from "
        "`llmwatch console hash-password`); empty: no login, allowed only on a loopback --host"
    )
    console_oidc_roles: str = setting(
        "", "with OIDC configured in .streamlit/secrets.toml [auth]: email:role,... (*@domain:role for a domain)"
    )
    console_cache_s: float = setting(10.0, "how long the console reuses a query's result")
    console_sql_max_rows: int = setting(10_000, "rows the SQL page returns at most")
    console_sql_timeout_s: float = setting(30.0, "seconds a SQL page query may run")
    console_sql_user: str = setting("", "ClickHouse user for the SQL page (a read-only user); default: --clickhouse-user")
    console_sql_password: str = setting("", "password of --console-sql-user")
    review_decisions: int = setting(2, "reviewers who decide on an item before it leaves the review queue")

    # Privacy.
    pii: str = setting(
        "redact",
        "PII policy before anything is stored: redact, hash or keep, or per field, "
        "e.g. input=hash,output=redact,context=keep",
    )
    price_table: str = setting("", "YAML price table read before the shipped one (same format as ingest/pipeline/prices.yaml): costs of events sent without cost_usd")
    pii_hash_key: str = setting("", "secret key for `hash` digests, 16+ characters (required by the `hash` policy: unkeyed hashes of short values can be guessed)")

    # Storage.
    retention_days: int = setting(90, "raw text (input, output, context) expires after this")
    store_max_body_bytes: int = setting(512 * 1024 * 1024, "embedded store: largest request body, before and after decompression")
    store_query_max_memory_bytes: int = setting(8 * 1024**3, "embedded store: memory one query may use (max_memory_usage)")
    store_query_timeout_s: float = setting(600.0, "embedded store: seconds one query may run (max_execution_time)")

    # SDK emitter.
    emitter_queue_size: int = setting(100_000, "events buffered in the app before new ones drop")

    # Demo traffic.
    demo_rate: float = setting(50.0, "events per second the demo generator emits")
    demo_seed: int = setting(7, "seed of the demo generator")
    demo_model_port: int = setting(8700, "port of the demo's stand-in LLM (OpenAI-compatible) its experiments and judges call")

    log_level: str = setting("INFO", "log level")

    @property
    def uses_scoring_process(self) -> bool:
        """--scoring-process resolved: auto means on where this process may run on two cores."""
        if self.scoring_process != "auto":
            return self.scoring_process == "on"
        return len(os.sched_getaffinity(0)) >= 2 if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1) >= 2

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"{self.host}:{self.kafka_port}"

    @property
    def store_url(self) -> str:
        return self.clickhouse_url or f"http://{self.host}:{self.clickhouse_port}"

    @property
    def store_password_file(self) -> Path:
        return self.data_dir / "clickhouse-password"

    @property
    def store_password(self) -> str:
        """--clickhouse-password, else (for the embedded store) the one it generated."""
        if self.clickhouse_password or self.clickhouse_url:
            return self.clickhouse_password
        try:
            return self.store_password_file.read_text().strip()
        except OSError:
            return ""

    @property
    def rules_path(self) -> Path:
        return Path(self.rules) if self.rules else _bundled_alerts_file("rules.yaml")

    @property
    def evaluations_path(self) -> Path:
        return Path(self.evaluations) if self.evaluations else _bundled_alerts_file("evaluations.yaml")

    @property
    def link_base(self) -> str:
        return (self.console_url or f"http://{self.host}:{self.console_port}").rstrip("/")

    @property
    def event_limits(self) -> Limits:
        """What the worker and HTTP ingest accept beyond the schema: one definition, so both agree."""
        from llmwatch.core.events import Limits

        return Limits(
            max_bytes=self.max_event_bytes,
            max_depth=self.max_event_depth,
            max_future_skew=timedelta(seconds=self.max_future_skew_s),
            max_age=timedelta(days=self.retention_days),
        )

    @property
    def pii_policy(self) -> PiiPolicy:
        return PiiPolicy.parse(self.pii, self.pii_hash_key)

    @property
    def console_accounts(self) -> dict[str, Any]:
        """Console users by name (llmwatch.core.accounts.User)."""
        from llmwatch.core.accounts import parse_users

        return parse_users(self.console_users)

    @property
    def detector_names(self) -> list[str]:
        return [name.strip() for name in self.detectors.split(",") if name.strip()]

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Settings from LLMWATCH_* variables, then `overrides` (CLI flags) on top."""
        values: dict[str, Any] = {}
        problems: list[str] = []
        for f in dataclasses.fields(cls):
            env_name = ENV_PREFIX + f.name.upper()
            if env_name in environ:
                try:
                    values[f.name] = _coerce(f.type, environ[env_name])
                except ValueError as exc:
                    problems.append(f"{env_name}={environ[env_name]!r}: {exc}")
        if problems:
            msg = "bad settings: " + "; ".join(problems)
            raise ConfigError(msg)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        problems = []
        for name in ("kafka_port", "clickhouse_port", "console_port", "ingest_port"):
            port = getattr(self, name)
            if not 0 < port < 65536:
                problems.append(f"{name} must be a TCP port, got {port}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be at least 1, got {self.batch_size}")
        if self.scoring_process not in ("auto", "on", "off"):
            problems.append(f"scoring_process must be auto, on or off, got {self.scoring_process!r}")
        if self.batch_max_bytes < 1:
            problems.append(f"batch_max_bytes must be at least 1, got {self.batch_max_bytes}")
        if not 0 < self.kafka_fetch_wait_s <= 30:
            problems.append(f"kafka_fetch_wait_s must be in (0, 30], got {self.kafka_fetch_wait_s}")
        if self.batch_window_s <= 0:
            problems.append(f"batch_window_s must be positive, got {self.batch_window_s}")
        if self.retention_days < 1:
            problems.append(f"retention_days must be at least 1, got {self.retention_days}")
        if self.model_batch_size < 1:
            problems.append(f"model_batch_size must be at least 1, got {self.model_batch_size}")
        if self.drift_min_samples < 10 or self.drift_max_samples < self.drift_min_samples:
            problems.append("drift_min_samples must be at least 10 and at most drift_max_samples")
        if not 0.0 < self.drift_alpha < 1.0 or not 0.5 < self.anomaly_quantile < 1.0:
            problems.append("drift_alpha must be in (0, 1) and anomaly_quantile in (0.5, 1)")
        if not 0.0 < self.embedding_sample <= 1.0:
            problems.append(f"embedding_sample must be in (0, 1], got {self.embedding_sample}")
        if not 0.0 <= self.toxicity_cascade_below < 1.0:
            problems.append(f"toxicity_cascade_below must be in [0, 1), got {self.toxicity_cascade_below}")
        if self.replication_factor < 1:
            problems.append(f"replication_factor must be at least 1, got {self.replication_factor}")
        if not 1 <= self.workers <= max(1, self.partitions):
            problems.append(f"workers must be between 1 and partitions ({self.partitions}), got {self.workers}")
        if self.partitions < 1:
            problems.append(f"partitions must be at least 1, got {self.partitions}")
        if self.review_training_interval_h < 0 or self.model_refresh_s <= 0:
            problems.append("review_training_interval_h must be >= 0 (0 = off) and model_refresh_s positive")
        if self.review_decisions < 1 or self.console_sql_max_rows < 1 or self.console_sql_timeout_s <= 0:
            problems.append("review_decisions and console_sql_max_rows must be at least 1, console_sql_timeout_s positive")
        try:
            _ = self.pii_policy
        except ValueError as exc:
            problems.append(str(exc))
        if self.webhook_url and len(self.webhook_secret) < 16:
            # An empty secret signs with a key everyone knows: receivers could not tell us from anyone.
            problems.append("webhook_secret must be set, 16 characters or more, when webhook_url is")
        try:
            from llmwatch.core.accounts import oidc_role

            _ = self.console_accounts
            oidc_role("check@example.com", self.console_oidc_roles)
        except ConfigError as exc:
            problems.append(str(exc))
        if problems:
            raise ConfigError("bad settings: " + "; ".join(problems))

    def describe(self) -> list[tuple[str, str, Any, str]]:
        """(flag, env var, default, help) for every setting: the source of the table in docs/configuration.md."""
        return [
            (
                "--" + f.name.replace("_", "-"),
                ENV_PREFIX + f.name.upper(),
                f.default,
                f.metadata["help"],
            )
            for f in dataclasses.fields(self)
        ]


def configuration_table() -> str:
    """The settings reference as a Markdown table: what `llmwatch config` prints and
    docs/configuration.md holds (tests/test_docs.py fails when the two differ)."""
    lines = ["| flag | environment | default | what |", "|---|---|---|---|"]
    for flag, env, default, help_text in Settings().describe():
        if default == "":
            # An empty default is either worked out from other settings or means "none".
            default = "(derived)" if re.search(r";\s*default\b", help_text) else "(none)"
        lines.append(f"| `{flag}` | `{env}` | `{default}` | {help_text} |")
    return "\n".join(lines) + "\n"


def _coerce(type_name: Any, raw: str) -> Any:
    # Field types are strings under `from __future__ import annotations`.
    kind = type_name if isinstance(type_name, str) else type_name.__name__
    if kind == "bool":
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ValueError("expected true or false")
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind == "Path":
        return Path(raw)
    return raw


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process exactly these settings."""
    env = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        env[ENV_PREFIX + f.name.upper()] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return env
