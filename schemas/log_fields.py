"""The log-field mapping (log_fields.yaml): which JSON keys carry which log record role."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

ROLES = ("timestamp", "level", "message", "trace_id", "span_id", "service", "data")


@dataclass(frozen=True)
class LogFieldMapping:
    timestamp: tuple[str, ...]
    level: tuple[str, ...]
    message: tuple[str, ...]
    trace_id: tuple[str, ...]
    span_id: tuple[str, ...]
    service: tuple[str, ...]
    data: tuple[str, ...]
    severity: dict[str, int]

    def severity_number(self, level: str) -> int:
        """OpenTelemetry SeverityNumber for a level name; 0 (unspecified) when unknown."""
        return self.severity.get(level.lower(), 0)

    @staticmethod
    def lookup(
        record: dict[str, Any], names: tuple[str, ...], scalar: bool = False
    ) -> tuple[str | None, Any]:
        """The first of `names` present in `record` (flat key or nested dotted path) and its value.

        With `scalar`, objects and arrays do not count, so {"service": {"name": "x"}} falls through
        from "service" to "service.name".
        """
        for name, parts in _paths(names):
            if name in record:
                if scalar and isinstance(record[name], dict | list):
                    continue
                return name, record[name]
            if parts and parts[0] in record:
                node: Any = record
                for part in parts:
                    if not isinstance(node, dict) or part not in node:
                        break
                    node = node[part]
                else:
                    if scalar and isinstance(node, dict | list):
                        continue
                    return name, node
        return None, None


@cache
def _paths(names: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Each name with its dotted parts (empty for a flat name), split once per mapping, not per line."""
    return tuple((name, tuple(name.split(".")) if "." in name else ()) for name in names)


@cache
def default_mapping() -> LogFieldMapping:
    raw = yaml.safe_load(resources.files("tether.schemas").joinpath("log_fields.yaml").read_text())
    return LogFieldMapping(
        **{role: tuple(raw[role]) for role in ROLES},
        severity={str(k).lower(): int(v) for k, v in raw["severity"].items()},
    )
