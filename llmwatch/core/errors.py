"""Errors raised by llmwatch.

* LlmwatchError
  + ConfigError          a setting, flag or file is wrong; the message names it
  + SchemaError          a schema or DDL file cannot be loaded
  + StoreError           ClickHouse answered with an error
    - StoreUnavailable   ClickHouse could not be reached (retry later)
    - StoreDataError     the data sent cannot be stored (a value out of its column's range):
                         retrying cannot help; find the rows at fault
  + DetectorLoadError    a detector's model or package is missing
  + PortInUse            a port the embedded stack needs is taken
"""

from __future__ import annotations


class LlmwatchError(Exception):
    """Base class of every error llmwatch raises on purpose."""


class ConfigError(LlmwatchError):
    pass


class SchemaError(LlmwatchError):
    pass


class StoreError(LlmwatchError):
    pass


class StoreUnavailable(StoreError):
    pass


class StoreDataError(StoreError):
    pass


class DetectorLoadError(LlmwatchError):
    pass


class PortInUse(LlmwatchError):
    pass
