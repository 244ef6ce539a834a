"""docker-compose.yml is valid and every service runs a command the CLI has (no Docker engine
here, so the file is checked, not run)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from llmwatch.cli import COMMANDS, build_parser
from llmwatch.core.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
SETTING_VARS = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_is_valid_yaml_with_the_expected_services() -> None:
    services = compose()["services"]
    assert {"kafka", "clickhouse", "migrate", "worker", "worker-gpu", "console", "alerts", "jobs", "ingest"} <= set(services)
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]


def test_every_llmwatch_service_command_exists_in_the_cli() -> None:
    parser = build_parser()
    services = {name: s for name, s in compose()["services"].items() if s.get("image", "").startswith("llmwatch")}
    assert services
    for name, service in services.items():
        command = service["command"]
        assert command[0] in COMMANDS, f"{name}: unknown command {command[0]}"
        parser.parse_args(command)  # flags too


def test_service_environment_names_real_settings() -> None:
    for name, service in compose()["services"].items():
        for variable in service.get("environment", {}):
            if variable.startswith(ENV_PREFIX):
                assert variable in SETTING_VARS, f"{name}: {variable} is not a setting"


def test_mounted_files_and_build_context_exist() -> None:
    assert (ROOT / "Dockerfile").is_file()
    for volume in compose()["services"]["clickhouse"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).is_file(), source
