"""Rules evaluated against the real store, notifications delivered to real HTTP receivers."""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from llmwatch.alerts.engine import group_key
from llmwatch.alerts.evaluate import evaluate_rule
from llmwatch.alerts.notify import PagerDutyNotifier, SlackNotifier, WebhookNotifier, deliver_due, sign
from llmwatch.alerts.rules import parse_rules
from llmwatch.alerts.scheduler import check_rules
from llmwatch.alerts.silences import ALL_GROUPS, Mutes, silence, unsilence
from llmwatch.core.errors import StoreUnavailable
from llmwatch.core.events import TraceEvent
from llmwatch.core.settings import Settings
from llmwatch.detectors.toxicity import ProfanityCheckToxicity
from llmwatch.ingest.pipeline.sink import store_events
from llmwatch.storage.clickhouse import ClickHouseStore
from tests.alerts.receiver import Receiver

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
RULES = """
rules:
  - name: toxic-outputs
    metric: toxicity_rate
    group_by: [app, release]
    window: 2m
    every: 1m
    warning: 0.05
    critical: 0.2
    for: 2
    min_samples: 20
    actions: [pagerduty, slack, webhook]
"""
RULE = parse_rules(RULES)[0][0]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def traffic(store: ClickHouseStore, start: datetime, toxic_share: float, n: int = 60, version: str = "8") -> None:
    """n events over one minute from `start`, a share of them answered rudely, scored for real."""
    events = [
        TraceEvent(uuid.uuid4(), uuid.uuid4().hex, start + timedelta(seconds=i * 60 / n), "support-bot",
                   input="Why was I charged twice?", prompt_id="answer", prompt_version=version, model="gpt",
                   output="Shut up, you idiot." if i < toxic_share * n else "One charge is an authorisation hold.")
        for i in range(n)
    ]
    detector = ProfanityCheckToxicity()
    store_events(store, traces=events, feedback=[], score=detector.score, now=start)


def evaluate(store: ClickHouseStore, at: datetime) -> list[str]:
    return [t.name for _, t in evaluate_rule(store, RULE, at, link="http://console")]


def settings_for(store: ClickHouseStore, receiver: Receiver) -> Settings:
    return Settings.from_env(
        {}, database=store.database, clickhouse_url=store.url, pagerduty_url=f"{receiver.url}/pd",
        pagerduty_routing_key="rk", slack_webhook_url=f"{receiver.url}/slack", webhook_url=f"{receiver.url}/hook",
        webhook_secret="s3cret-s3cret-s3cret",
    )


def notifiers_for(receiver: Receiver) -> dict:
    return {
        "pagerduty": PagerDutyNotifier(f"{receiver.url}/pd", "rk"),
        "slack": SlackNotifier(f"{receiver.url}/slack"),
        "webhook": WebhookNotifier(f"{receiver.url}/hook", "s3cret"),
    }


def test_a_toxic_burst_triggers_once_and_resolves_once_with_the_same_dedup_key(
    embedded_store: ClickHouseStore, receiver: Receiver
) -> None:
    store, notify = embedded_store, notifiers_for(receiver)
    for minute in range(4):
        traffic(store, T0 + timedelta(minutes=minute), toxic_share=0.5)
    traffic(store, T0 + timedelta(minutes=4), toxic_share=0.0)
    traffic(store, T0 + timedelta(minutes=5), toxic_share=0.0)

    assert evaluate(store, T0 + timedelta(minutes=2)) == ["pending"]
    assert evaluate(store, T0 + timedelta(minutes=3)) == ["firing"]
    assert evaluate(store, T0 + timedelta(minutes=4)) == []  # still firing: nothing new to say
    deliver_due(store, notify)
    # A restarted scheduler resumes from the stored state: no second trigger.
    assert evaluate(store, T0 + timedelta(minutes=4, seconds=30)) == []
    assert evaluate(store, T0 + timedelta(minutes=6)) == ["resolved"]
    deliver_due(store, notify)
    deliver_due(store, notify)  # nothing left to send

    pagerduty = [b for (path, _, _), b in zip(receiver.requests, receiver.bodies()) if path == "/pd"]
    assert [b["event_action"] for b in pagerduty] == ["trigger", "resolve"]
    assert pagerduty[0]["dedup_key"] == pagerduty[1]["dedup_key"]
    assert pagerduty[0]["payload"]["severity"] == "critical" and pagerduty[0]["routing_key"] == "rk"
    assert pagerduty[0]["payload"]["custom_details"]["group"] == {"app": "support-bot", "release": "answer:8@gpt"}
    assert sum(path == "/slack" for path, _, _ in receiver.requests) == 2
    slack = next(b for (path, _, _), b in zip(receiver.requests, receiver.bodies()) if path == "/slack")
    assert slack["blocks"][0]["text"]["text"] == "firing: toxic-outputs"

    transitions = store.query(f"SELECT transition FROM {store.database}.alerts ORDER BY at")
    assert [t for (t,) in transitions] == ["pending", "firing", "resolved"]
    delivered = store.query(
        f"SELECT notifier, event, status, attempts FROM {store.database}.alert_outbox FINAL ORDER BY notifier, event"
    )
    assert delivered == [(n, e, "delivered", 1) for n in ("pagerduty", "slack", "webhook") for e in ("firing", "resolved")]


def test_reminders_and_cooldowns_work_from_the_stored_state(embedded_store: ClickHouseStore) -> None:
    """The stored state comes back from ClickHouse with naive UTC datetimes: renotify and cooldown
    compare them with now (this crashed every evaluation of a firing rule with `renotify`)."""
    rule = parse_rules(RULES.replace("for: 2", "for: 1\n    renotify: 2m\n    cooldown: 10m"))[0][0]
    store = embedded_store
    for minute in range(9):
        traffic(store, T0 + timedelta(minutes=minute), toxic_share=0.5 if minute < 5 or minute == 8 else 0.0)

    def at(minutes: float) -> list[str]:
        return [t.name for _, t in evaluate_rule(store, rule, T0 + timedelta(minutes=minutes), link="http://console")]

    assert at(2) == ["firing"]
    assert at(3) == []
    assert at(4.5) == ["renotify"]
    assert at(7.1) == ["resolved"]  # the window (5.1-7.1) is clean
    assert at(8.6) == ["pending"]  # toxic again in minute 8, but within the 10-minute cooldown: no new page


class CrashOn:
    """The real store, except that the process 'dies' when it writes into `table`."""

    def __init__(self, store: ClickHouseStore, table: str) -> None:
        self.store, self.table = store, table

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    def insert(self, table: str, rows: list) -> None:
        if table == self.table:
            raise StoreUnavailable("simulated crash")
        self.store.insert(table, rows)


@pytest.mark.parametrize("crash_on", ["alert_outbox", "alerts"])
def test_a_crash_inside_an_evaluation_is_repaired_by_the_next(
    embedded_store: ClickHouseStore, receiver: Receiver, crash_on: str
) -> None:
    """Killed before the outbox row, or between the outbox row and the new state: the next
    evaluation takes the transition again, and each receiver is paged exactly once."""
    store = embedded_store
    for minute in range(3):
        traffic(store, T0 + timedelta(minutes=minute), toxic_share=0.5)
    assert evaluate(store, T0 + timedelta(minutes=2)) == ["pending"]
    with pytest.raises(StoreUnavailable):
        evaluate_rule(CrashOn(store, crash_on), RULE, T0 + timedelta(minutes=3), link="http://console")
    assert evaluate(store, T0 + timedelta(minutes=3, seconds=10)) == ["firing"]
    assert evaluate(store, T0 + timedelta(minutes=3, seconds=20)) == []
    deliver_due(store, notifiers_for(receiver))
    assert sorted(path for path, _, _ in receiver.requests) == ["/hook", "/pd", "/slack"]
    transitions = store.query(f"SELECT transition FROM {store.database}.alerts ORDER BY at")
    assert [t for (t,) in transitions] == ["pending", "firing"]


def test_webhook_is_signed(embedded_store: ClickHouseStore, receiver: Receiver) -> None:
    for minute in range(2):
        traffic(embedded_store, T0 + timedelta(minutes=minute), toxic_share=0.5)
    evaluate(embedded_store, T0 + timedelta(minutes=1))
    evaluate(embedded_store, T0 + timedelta(minutes=2))
    deliver_due(embedded_store, {"webhook": WebhookNotifier(f"{receiver.url}/hook", "s3cret")})
    (_path, headers, body), = [r for r in receiver.requests if r[0] == "/hook"]
    expected = sign("s3cret", headers["X-Llmwatch-Timestamp"], body)
    assert hmac.compare_digest(headers["X-Llmwatch-Signature"], expected)
    assert json.loads(body)["event"] == "firing"


def test_a_receiver_that_is_down_gets_the_notification_later(embedded_store: ClickHouseStore) -> None:
    flaky = Receiver(statuses=[503, 503], headers={"Retry-After": "0"})
    try:
        for minute in range(2):
            traffic(embedded_store, T0 + timedelta(minutes=minute), toxic_share=0.5)
        evaluate(embedded_store, T0 + timedelta(minutes=1))
        evaluate(embedded_store, T0 + timedelta(minutes=2))
        notify = {"pagerduty": PagerDutyNotifier(f"{flaky.url}/pd", "rk")}
        later = datetime.now(UTC)
        assert deliver_due(embedded_store, notify, later) == {"retry": 1, "not_configured": 2}
        assert deliver_due(embedded_store, notify, later + timedelta(seconds=1)) == {"retry": 1}
        assert deliver_due(embedded_store, notify, later + timedelta(seconds=2)) == {"delivered": 1}
        assert [b["event_action"] for b in flaky.bodies()] == ["trigger"] * 3
        row = embedded_store.query(
            f"SELECT status, attempts, last_error FROM {embedded_store.database}.alert_outbox FINAL WHERE notifier = 'pagerduty'"
        )
        assert row == [("delivered", 3, "")]
    finally:
        flaky.close()


def test_a_dead_store_skips_the_evaluation_instead_of_resolving() -> None:
    dead = ClickHouseStore("http://127.0.0.1:9", database="llmwatch")
    with pytest.raises(StoreUnavailable):
        evaluate(dead, T0)


def test_check_prints_what_would_fire_and_sends_nothing(
    embedded_store: ClickHouseStore, receiver: Receiver, tmp_path, capsys  # type: ignore[no-untyped-def]
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("for: 2", "for: 1") + "  - name: broken\n    metric: nope\n")
    now = datetime.now(UTC)
    traffic(embedded_store, now - timedelta(seconds=70), toxic_share=0.5)
    settings = Settings.from_env({}, **{**settings_for(embedded_store, receiver).__dict__, "rules": str(rules)})
    assert check_rules(settings) == 1  # one rule did not load
    out = capsys.readouterr().out
    assert "ERROR" in out and "rule 'broken', field metric" in out
    assert "toxic-outputs [app=support-bot, release=answer:8@gpt]: firing" in out
    assert "would notify pagerduty, slack, webhook" in out
    assert embedded_store.query(f"SELECT count() FROM {embedded_store.database}.alerts") == [(0,)]
    assert receiver.requests == []


ROLLBACK_RULES = RULES.replace("actions: [pagerduty, slack, webhook]", "actions: [rollback, escalate, slack]")
RESOLVER = """
import sys, time
from llmwatch import Release
from llmwatch.ingest.sdk.releases import ReleaseResolver
with ReleaseResolver(sys.argv[1], {"support-bot": Release("answer", "8", "gpt")}, topic=sys.argv[2]) as resolver:
    print("serving", resolver.release("support-bot").prompt_version, flush=True)
    deadline = time.monotonic() + 60
    while resolver.release("support-bot").prompt_version != "7" and time.monotonic() < deadline:
        time.sleep(0.05)
    print("serving", resolver.release("support-bot").prompt_version, flush=True)
"""


def test_a_firing_rule_rolls_the_release_back_and_an_sdk_in_another_process_follows(
    embedded_store: ClickHouseStore, broker: str, receiver: Receiver
) -> None:
    import subprocess
    import sys

    from llmwatch.alerts.releases import Registry, ReleaseRecord
    from llmwatch.ingest.kafka import ensure_topics, producer

    store = embedded_store
    settings = Settings.from_env({}, database=store.database, control_topic=f"control-{uuid.uuid4().hex[:8]}",
                                 deploy_webhook_url=f"{receiver.url}/deploy")
    ensure_topics(broker, [settings.control_topic], 1)
    registry = Registry(store, settings, producer(broker))
    for version in ("7", "8"):
        registry.register(ReleaseRecord("support-bot", "answer", version, "gpt"), actor="ci")
        registry.promote("support-bot", f"answer:{version}@gpt", actor="ci")
    app = subprocess.Popen([sys.executable, "-c", RESOLVER, broker, settings.control_topic],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert app.stdout is not None and app.stdout.readline().split() == ["serving", "8"]
        rule = parse_rules(ROLLBACK_RULES)[0][0]
        for minute in range(2):
            traffic(store, T0 + timedelta(minutes=minute), toxic_share=0.5)
        for minute in (1, 2):
            evaluate_rule(store, rule, T0 + timedelta(minutes=minute), link="http://console", registry=registry)
        assert app.stdout.readline().split() == ["serving", "7"]
        assert app.wait(30) == 0
    finally:
        app.kill()
        app.wait()
        if app.stdout is not None:
            app.stdout.close()

    statuses = {r.release: r.status for r in registry.releases("support-bot")}
    assert statuses == {"answer:7@gpt": "active", "answer:8@gpt": "rolled_back"}
    audit = store.query(f"SELECT actor, action, release FROM {store.database}.audit_log WHERE actor LIKE 'rule:%' ORDER BY at")
    assert audit == [("rule:toxic-outputs", "rolled_back", "answer:8@gpt"), ("rule:toxic-outputs", "restored", "answer:7@gpt")]
    # Escalation: the toxic answers behind the breach, worst first, capped.
    queue = store.query(f"SELECT release, rule, score FROM {store.database}.review_queue ORDER BY score DESC")
    assert 0 < len(queue) <= 50 and {(r, rule) for r, rule, _ in queue} == {("answer:8@gpt", "toxic-outputs")}
    assert queue[0][2] >= queue[-1][2] >= 0.5
    deploy = [b for (path, _, _), b in zip(receiver.requests, receiver.bodies()) if path == "/deploy"]
    assert deploy == [{"action": "rollback", "app": "support-bot", "from": "answer:8@gpt", "to": "answer:7@gpt",
                       "reason": deploy[0]["reason"]}]
    deliver_due(store, {"review": SlackNotifier(f"{receiver.url}/review"), "slack": SlackNotifier(f"{receiver.url}/slack")})
    assert sorted(path for path, _, _ in receiver.requests) == ["/deploy", "/review", "/slack"]


def test_rollback_needs_to_know_what_to_roll_back() -> None:
    bad = RULES.replace("group_by: [app, release]", "group_by: [app]").replace(
        "actions: [pagerduty, slack, webhook]", "actions: [rollback]")
    rules, errors = parse_rules(bad)
    assert rules == [] and "rollback needs app and release" in errors[0]


def test_release_command_registers_promotes_and_rolls_back(
    embedded_store: ClickHouseStore, broker: str, capsys  # type: ignore[no-untyped-def]
) -> None:
    from llmwatch.cli import main

    flags = ["--clickhouse-url", embedded_store.url, "--database", embedded_store.database, "--kafka-bootstrap", broker,
             "--control-topic", f"control-{uuid.uuid4().hex[:8]}", "--partitions", "1"]
    for version in ("7", "8"):
        assert main(["release", "register", "--app", "bot", "--prompt-id", "answer", "--prompt-version", version,
                     "--model", "m", "--activate", "--actor", "ci", *flags]) == 0
    assert main(["release", "rollback", "--app", "bot", "--release", "answer:8@m", "--reason", "rude", *flags]) == 0
    out = capsys.readouterr().out
    assert "bot rolled back from answer:8@m to answer:7@m" in out
    assert main(["release", "rollback", "--app", "bot", "--release", "answer:9@m", *flags]) == 1
    assert "no release 'answer:9@m' registered for app 'bot'" in capsys.readouterr().err


def test_an_app_registers_its_release_through_the_sdk(embedded_store: ClickHouseStore, broker: str) -> None:
    import time

    from llmwatch.alerts.releases import RegistrationFollower, Registry
    from llmwatch.ingest.kafka import ensure_topics
    from llmwatch.ingest.sdk.emitter import Release
    from llmwatch.ingest.sdk.releases import announce

    settings = Settings.from_env({}, database=embedded_store.database, kafka_bootstrap=broker,
                                 control_topic=f"control-{uuid.uuid4().hex[:8]}", consumer_group=f"g-{uuid.uuid4().hex[:6]}",
                                 kafka_session_timeout_s=2.0)
    ensure_topics(broker, [settings.control_topic], 1)
    registry = Registry(embedded_store, settings)
    follower = RegistrationFollower(registry, settings)
    try:
        assert announce(broker, "bot", Release("answer", "7", "m"), activate=True, topic=settings.control_topic)
        assert announce(broker, "bot", Release("answer", "8", "m"), topic=settings.control_topic)
        deadline, applied = time.monotonic() + 30, 0
        while applied < 2 and time.monotonic() < deadline:
            applied += follower.poll()
    finally:
        follower.close()
    assert {r.release: r.status for r in registry.releases("bot")} == {"answer:7@m": "active", "answer:8@m": "candidate"}
    assert {r.actor for r in registry.releases("bot")} == {"sdk:bot"}


def test_registrations_survive_a_store_outage_and_a_restart(embedded_store: ClickHouseStore, broker: str) -> None:
    """The registry's store fails while a registration is read: it is not committed, so the same
    follower (after a rewind) or a new one (after a crash) applies it. The control topic is
    compacted, so switches outlive any retention."""
    import time

    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    from llmwatch.alerts.releases import RegistrationFollower, Registry
    from llmwatch.ingest.kafka import ensure_llmwatch_topics
    from llmwatch.ingest.sdk.emitter import Release
    from llmwatch.ingest.sdk.releases import announce

    suffix = uuid.uuid4().hex[:8]
    settings = Settings.from_env({}, database=embedded_store.database, kafka_bootstrap=broker, partitions=1,
                                 traces_topic=f"t-{suffix}", dlq_topic=f"d-{suffix}", control_topic=f"control-{suffix}",
                                 consumer_group=f"g-{suffix}", kafka_session_timeout_s=2.0)
    ensure_llmwatch_topics(settings)
    admin = AdminClient({"bootstrap.servers": broker})  # kept until its futures resolve
    config = admin.describe_configs([ConfigResource(ResourceType.TOPIC, settings.control_topic)])
    assert next(iter(config.values())).result()["cleanup.policy"].value == "compact"

    def poll_until(follower: RegistrationFollower, store: object, wanted: int) -> int:
        follower.registry = Registry(store, settings)
        deadline, applied = time.monotonic() + 30, 0
        while applied < wanted and time.monotonic() < deadline:
            applied += follower.poll()
        return applied

    assert announce(broker, "bot", Release("answer", "7", "m"), activate=True, topic=settings.control_topic)
    follower = RegistrationFollower(Registry(embedded_store, settings), settings)
    try:
        with pytest.raises(StoreUnavailable):
            poll_until(follower, CrashOn(embedded_store, "releases"), 1)
        assert poll_until(follower, embedded_store, 1) == 1  # rewound: read again
    finally:
        follower.close()
    assert {r.release for r in Registry(embedded_store, settings).releases("bot")} == {"answer:7@m"}

    assert announce(broker, "bot", Release("answer", "8", "m"), topic=settings.control_topic)
    crashed = RegistrationFollower(Registry(embedded_store, settings), settings)
    with pytest.raises(StoreUnavailable):
        poll_until(crashed, CrashOn(embedded_store, "releases"), 1)
    crashed.close()  # the process died: nothing was committed for answer:8
    restarted = RegistrationFollower(Registry(embedded_store, settings), settings)
    try:
        assert poll_until(restarted, embedded_store, 1) >= 1  # answer:7 may come again: applying it twice is harmless
    finally:
        restarted.close()
    assert {r.release: r.status for r in Registry(embedded_store, settings).releases("bot")} == {
        "answer:7@m": "active", "answer:8@m": "candidate"}


def test_a_receiver_that_times_out_or_refuses_is_retried_and_recorded(embedded_store: ClickHouseStore) -> None:
    import httpx

    slow = Receiver(delays=[2.0])
    refused_url = f"http://127.0.0.1:{__import__('llmwatch.core.processes', fromlist=['free_port']).free_port()}/hook"
    try:
        for minute in range(2):
            traffic(embedded_store, T0 + timedelta(minutes=minute), toxic_share=0.5)
        evaluate(embedded_store, T0 + timedelta(minutes=1))
        evaluate(embedded_store, T0 + timedelta(minutes=2))
        notify = {"pagerduty": PagerDutyNotifier(f"{slow.url}/pd", "rk"), "webhook": WebhookNotifier(refused_url, "s")}
        now = datetime.now(UTC)
        with httpx.Client(timeout=0.5) as client:
            assert deliver_due(embedded_store, notify, now, client=client) == {"retry": 2, "not_configured": 1}
        errors = dict(embedded_store.query(
            f"SELECT notifier, last_error FROM {embedded_store.database}.alert_outbox FINAL WHERE status = 'retry'"))
        assert errors["pagerduty"].startswith("ReadTimeout") and errors["webhook"].startswith("ConnectError")
        assert deliver_due(embedded_store, notify, now) == {}  # backing off: not due yet
        assert deliver_due(embedded_store, {**notify, "webhook": WebhookNotifier(f"{slow.url}/hook", "s")},
                           now + timedelta(minutes=1)) == {"delivered": 2}
    finally:
        slow.close()


def test_a_silenced_group_keeps_its_timeline_but_sends_nothing_until_lifted(embedded_store: ClickHouseStore) -> None:
    store = embedded_store
    for minute in range(4):
        traffic(store, T0 + timedelta(minutes=minute), toxic_share=0.5)
    traffic(store, T0 + timedelta(minutes=4), toxic_share=0.0)
    traffic(store, T0 + timedelta(minutes=5), toxic_share=0.0)
    key = group_key({"app": "support-bot", "release": "answer:8@gpt"})
    silence(store, RULE.name, key, datetime.now(UTC) + timedelta(hours=1), "ada", "planned load test")

    assert evaluate(store, T0 + timedelta(minutes=2)) == ["pending"]
    assert evaluate(store, T0 + timedelta(minutes=3)) == ["firing"]
    outbox = f"SELECT event, count() FROM {store.database}.alert_outbox GROUP BY event"
    assert store.query(outbox) == []
    unsilence(store, RULE.name, key, "ada")
    assert evaluate(store, T0 + timedelta(minutes=6)) == ["resolved"]
    assert store.query(outbox) == [("resolved", 3)]
    audit = store.query(f"SELECT actor, action, app FROM {store.database}.audit_log ORDER BY at")
    assert audit == [("ada", "silence", "support-bot"), ("ada", "unsilence", "support-bot")]


def test_an_acknowledgement_stops_reminders_of_that_incident_only() -> None:
    since = T0
    mutes = Mutes(acknowledged={"g": T0 + timedelta(minutes=1)})
    assert mutes.holds("g", "renotify", since)
    assert not mutes.holds("g", "changed", since) and not mutes.holds("g", "resolved", since)
    assert not mutes.holds("g", "renotify", T0 + timedelta(minutes=5))  # a later incident
    assert not mutes.holds("other", "renotify", since)
    assert Mutes(silenced=frozenset({ALL_GROUPS})).holds("any", "firing", since)
