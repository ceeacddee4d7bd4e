"""The log-field mapping (log_fields.yaml): which JSON keys carry which log record role, and how
level names and numbers become OpenTelemetry severity numbers."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from typing import Any

import yaml

ROLES = ("timestamp", "level", "message", "message_template", "trace_id", "span_id", "service", "data")

# OpenTelemetry's short names of the severity ranges 1-4, 5-8, ... 21-24 (SeverityNumber).
SEVERITY_NAMES = ("trace", "debug", "info", "warn", "error", "fatal")


def severity_name(number: int) -> str:
    """The short name of a SeverityNumber's range ("info" for 9-12); "" when unspecified."""
    return SEVERITY_NAMES[(number - 1) // 4] if 1 <= number <= 24 else ""


@dataclass(frozen=True)
class ImpliedLevel:
    """A line with no level but one of `when_any_of` has this severity (Serilog's CLEF leaves out
    Information)."""

    when_any_of: tuple[str, ...] = ()
    severity_number: int = 0


@dataclass(frozen=True)
class ConditionalName:
    """A name that counts for a role only on lines that have one of `when_all_of`."""

    name: str
    when_all_of: tuple[str, ...]


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
    message_template: tuple[str, ...] = ()
    numeric_levels: dict[int, int] = field(default_factory=dict)
    implied_level: ImpliedLevel = ImpliedLevel()
    service_when: tuple[ConditionalName, ...] = ()

    def severity_number(self, level: str) -> int:
        """OpenTelemetry SeverityNumber of a level name (any case, with an optional +N/-N of Go's
        slog), or of a numeric level written as text ("30"); 0 (unspecified) when unknown."""
        name = level.lower()
        number = self.severity.get(name)
        if number is not None:
            return number
        if name.isascii() and name.isdigit():
            return self.numeric_levels.get(int(name), 0)
        sign = max(name.rfind("+"), name.rfind("-"))
        steps = name[sign + 1 :]
        if sign >= 0 and 1 <= len(steps) <= 2 and steps.isascii() and steps.isdigit():
            base = self.severity.get(name[:sign])
            if base is not None:
                return min(max(base + int(name[sign:]), 1), 24)
        return 0

    def with_aliases(self, aliases: dict[str, list[str]], severity: dict[str, int]) -> LogFieldMapping:
        """This mapping with a deployment's own names tried first, and its level names added."""
        changed: dict[str, Any] = {
            role: tuple(dict.fromkeys([*names, *getattr(self, role)]))
            for role, names in aliases.items()
            if names
        }
        if severity:
            changed["severity"] = {**self.severity, **{k.lower(): v for k, v in severity.items()}}
        return replace(self, **changed) if changed else self

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
                    if isinstance(node, dict) and part in node:
                        node = node[part]
                    elif (
                        isinstance(node, list) and part.isascii() and part.isdigit() and int(part) < len(node)
                    ):
                        node = node[int(part)]
                    else:
                        break
                else:
                    if scalar and isinstance(node, dict | list):
                        continue
                    return name, node
        return None, None

    @classmethod
    def lookup_message(cls, record: dict[str, Any], names: tuple[str, ...]) -> tuple[str | None, Any]:
        """The message: the first of `names` holding a scalar, else the first holding anything
        (structlog's `event` is its message, ECS's `event` an object that is not)."""
        found = cls.lookup(record, names, scalar=True)
        return found if found[0] is not None else cls.lookup(record, names)

    def has_any(self, record: dict[str, Any], names: tuple[str, ...]) -> bool:
        return any(self.lookup(record, (name,))[0] is not None for name in names)

    def lookup_service(self, record: dict[str, Any]) -> tuple[str | None, Any]:
        """The service's name and value: the role's names, then the conditional ones."""
        found = self.lookup(record, self.service, scalar=True)
        if found[0] is not None:
            return found
        for conditional in self.service_when:
            if all(self.has_any(record, (when,)) for when in conditional.when_all_of):
                found = self.lookup(record, (conditional.name,), scalar=True)
                if found[0] is not None:
                    return found
        return None, None


def _is_index(part: str) -> bool:
    return part.isascii() and part.isdigit()


@cache
def _paths(names: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Each name with its dotted parts (empty for a flat name), split once per mapping, not per line."""
    return tuple((name, tuple(name.split(".")) if "." in name else ()) for name in names)


@cache
def default_mapping() -> LogFieldMapping:
    raw = yaml.safe_load(resources.files("tether.schemas").joinpath("log_fields.yaml").read_text())
    implied = raw.get("implied_level") or {}
    return LogFieldMapping(
        **{role: tuple(raw.get(role) or ()) for role in ROLES},
        severity={str(k).lower(): int(v) for k, v in raw["severity"].items()},
        numeric_levels={int(k): int(v) for k, v in (raw.get("numeric_levels") or {}).items()},
        implied_level=ImpliedLevel(
            tuple(implied.get("when_any_of") or ()), int(implied.get("severity_number") or 0)
        ),
        service_when=tuple(
            ConditionalName(str(entry["name"]), tuple(entry["when_all_of"]))
            for entry in raw.get("service_when") or ()
        ),
    )
