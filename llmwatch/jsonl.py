"""Reading JSONL input files for the batch commands, with errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmwatch.core.errors import ConfigError

__all__ = ["read_rows"]


def read_rows(path: Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; a line that is not a JSON object, or lacks
    a `required` field, stops the read with `path:line: what is wrong`."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{path}:{number}: expected a JSON object")
            missing = [f for f in required if f not in row]
            if missing:
                raise ConfigError(f"{path}:{number}: missing field {', '.join(missing)}")
            yield number, row
