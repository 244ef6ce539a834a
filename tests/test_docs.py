"""README.md and docs/ stay true to the code: every setting and command is documented."""

from __future__ import annotations

from pathlib import Path

from llmwatch.cli import COMMANDS
from llmwatch.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()


def test_readme_shows_the_two_commands_first() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make demo" in quick_start and "make test" in quick_start


def test_every_setting_is_in_the_configuration_table() -> None:
    for flag, env, _default, _ in Settings().describe():
        assert f"`{flag}`" in CONFIGURATION and f"`{env}`" in CONFIGURATION, flag


def test_every_command_is_documented() -> None:
    for command in COMMANDS:
        assert f"`llmwatch {command}`" in README, command
