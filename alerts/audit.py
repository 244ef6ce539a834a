"""The audit log: who did what to which app and release, and why. One row per action, from the
alert rules (rollbacks), the release CLI and the console (silences, acknowledgements, reviews)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

__all__ = ["audit"]


def audit(store: Any, actor: str, action: str, *, app: str = "", release: str = "", at: datetime | None = None,
          **details: Any) -> None:
    """Append one llmwatch.audit_log row; `details` become its JSON."""
    store.insert("audit_log", [{"at": at or datetime.now(UTC), "actor": actor, "action": action, "app": app,
                                "release": release, "details": json.dumps(details)}])
