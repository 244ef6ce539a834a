"""README.md and docs/ stay true to the code: every setting and command is documented."""

from __future__ import annotations

import re
import shlex
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from llmwatch.alerts.rules import parse_rules
from llmwatch.cli import COMMANDS, build_parser
from llmwatch.core.settings import Settings, configuration_table
from llmwatch.storage.clickhouse import ClickHouseStore

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()


def test_readme_shows_the_two_commands_first() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make demo" in quick_start and "make test" in quick_start


def test_the_configuration_reference_is_the_one_settings_generate() -> None:
    """docs/configuration.md holds `llmwatch config`'s table as it is now: regenerate it with
    `llmwatch config` after changing a setting."""
    committed = CONFIGURATION.split("do not edit by hand -->\n", 1)[1].split("<!-- end of generated table -->", 1)[0]
    assert committed == configuration_table(), "docs/configuration.md is stale: paste `llmwatch config` into it"
    assert Settings().describe()  # every setting is in it, by construction


def test_every_command_is_documented() -> None:
    for command in COMMANDS:
        assert f"`llmwatch {command}`" in README, command


# --- code blocks: each one meant to run is run -----------------------------------------------

DOCS = {path.name: path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}


def blocks(language: str) -> list[tuple[str, str]]:
    """(file, code) of every fenced block in `language`."""
    fence = re.compile(rf"^```{language}\n(.*?)^```$", re.MULTILINE | re.DOTALL)
    return [(name, m.group(1)) for name, text in DOCS.items() for m in fence.finditer(text)]


@dataclass
class _Reply:
    text: str = "Your order ships tomorrow."
    input_tokens: int = 12
    output_tokens: int = 6


class _Client:
    """What the README's example calls an LLM client."""

    def chat(self, _messages: object) -> _Reply:
        return _Reply()


def test_every_python_block_runs(broker: str, tmp_path: Path) -> None:
    """Against the test broker, with a stand-in for the app's LLM client and its inputs."""
    python = blocks("python")
    assert len(python) >= 2
    for name, code in python:
        code = re.sub(r'"(127\.0\.0\.1|kafka):9092"', repr(broker), code).replace("/var/cache/app", str(tmp_path))
        namespace: dict[str, object] = {
            "client": _Client(), "passages": ["Orders ship within a day."],
            "messages": [{"role": "user", "content": "Where is my order?"}],
        }
        if "llmwatch.instrument(" in code:  # the real openai client, against the local provider
            _run_instrumented(name, code, namespace)
            continue
        exec(compile(code, name, "exec"), namespace)  # noqa: S102 - our own documentation
        if "llmwatch" in namespace:  # the README's emitter delivered the trace and the feedback
            emitter: Any = namespace["llmwatch"]
            assert emitter.stats()["delivered"] == 2, name
            emitter.close()
        if "resolver" in namespace:
            namespace["resolver"].close()  # type: ignore[attr-defined]


def _run_instrumented(name: str, code: str, namespace: dict[str, object]) -> None:
    import openai

    import llmwatch
    from tests.instrument.providers import ProviderServer

    with ProviderServer() as provider:
        namespace["client"] = openai.OpenAI(base_url=provider.url + "/v1", api_key="docs", max_retries=0)
        try:
            exec(compile(code, name, "exec"), namespace)  # noqa: S102 - our own documentation
        finally:
            llmwatch.instrument(namespace["emitter"], only=[]).uninstrument()  # type: ignore[arg-type]
    emitter: Any = namespace["emitter"]
    emitter.flush(30)
    assert emitter.stats()["delivered"] >= 2, name  # the span and the call
    emitter.close()


def test_every_llmwatch_command_line_parses() -> None:
    parser = build_parser()
    lines = [(name, shlex.split(line.split("  #")[0])) for name, code in blocks("bash") for line in code.splitlines()
             if line.startswith("llmwatch ")]
    assert len(lines) >= 6
    for name, argv in lines:
        parser.parse_args(argv[1:])  # exits (fails the test) on an unknown command or flag
        assert argv[1] in COMMANDS, (name, argv)


def test_the_rules_example_is_a_valid_rule_file() -> None:
    (yaml_block,) = [code for _, code in blocks("yaml") if code.startswith("rules:")]
    rules, problems = parse_rules(yaml_block, "docs/alerts.md")
    assert problems == [] and [r.name for r in rules] == ["toxic-outputs"]


def test_the_evaluations_example_is_a_valid_file() -> None:
    from llmwatch.alerts.evaluations import parse_evaluations

    (yaml_block,) = [code for name, code in blocks("yaml") if name == "evaluations.md"]
    evaluations, problems = parse_evaluations(yaml_block, "docs/evaluations.md")
    assert problems == [] and [j.name for j in evaluations.judges] == ["faithful"]
    assert evaluations.gate("docs-rag") is not None and evaluations.routing.disagree


def test_the_readme_sql_runs(embedded_url: str, embedded_store: ClickHouseStore) -> None:
    (curl,) = [code for _, code in blocks("bash") if code.startswith("curl")]
    db = embedded_store.database
    event = {"id": uuid.uuid4(), "app": "support-bot"}
    embedded_store.command(f"INSERT INTO {db}.traces (event_id, app, prompt_version, timestamp, output) "
                           "VALUES ({id:UUID}, {app:String}, '7', now64(3), 'fine')", event)
    embedded_store.command(f"INSERT INTO {db}.scores (event_id, app, timestamp, detector, target, score, label) "
                           "VALUES ({id:UUID}, {app:String}, now64(3), 'toxicity', 'output', 0.25, 'ok')", event)
    sql = curl.split('--data-binary "', 1)[1].rsplit('"', 1)[0].replace("llmwatch.", f"{db}.")
    url = urlsplit(embedded_url)
    answer = httpx.post(f"http://{url.hostname}:{url.port}/", content=sql, auth=(url.username or "", url.password or ""))
    assert answer.status_code == 200, answer.text
    assert "support-bot" in answer.text and "0.25" in answer.text, answer.text
