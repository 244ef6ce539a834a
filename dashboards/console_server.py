"""How `llmwatch console` starts Streamlit: the command line and the environment. Pure."""

from __future__ import annotations

import sys
from pathlib import Path

from llmwatch.core.errors import ConfigError
from llmwatch.core.processes import is_loopback
from llmwatch.core.settings import Settings

__all__ = ["APP", "streamlit_command"]

APP = Path(__file__).resolve().parent / "app.py"


def streamlit_command(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment for `streamlit run` serving the console per settings. Refuses
    an open console (no users, no OIDC roles) on an address other machines can reach."""
    if not settings.console_users and not settings.console_oidc_roles and not is_loopback(settings.host):
        raise ConfigError(
            f"the console would listen on {settings.host} with no login: set --console-users "
            "(see `llmwatch console hash-password`) or --console-oidc-roles, or use a loopback --host"
        )
    from llmwatch.core.settings import settings_env

    command = [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.address", settings.host,
        "--server.port", str(settings.console_port),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",
        "--theme.base", "light",
    ]
    return command, settings_env(settings)
