"""The `log_fields` section both tiers take: a deployment's own names for the roles of a JSON log
line, tried before tether's defaults (schemas/log_fields.yaml), and its own level names.

The agent reads timestamp, level, trace and span ids and service with it; the collector reads the
message and takes the same names out of `data`. Give both tiers the same section.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from tether.config import Section
from tether.schemas.log_fields import LogFieldMapping, default_mapping

ROLE_FIELDS = ("timestamp", "level", "message", "message_template", "trace_id", "span_id", "service", "data")
_NAMES = "names tried before the defaults, in order (dotted for nested keys)"


class LogFieldsConfig(Section):
    timestamp: list[str] = Field(default_factory=list, description=_NAMES)
    level: list[str] = Field(default_factory=list, description=_NAMES)
    message: list[str] = Field(default_factory=list, description=_NAMES)
    message_template: list[str] = Field(default_factory=list, description=_NAMES)
    trace_id: list[str] = Field(default_factory=list, description=_NAMES)
    span_id: list[str] = Field(default_factory=list, description=_NAMES)
    service: list[str] = Field(default_factory=list, description=_NAMES)
    data: list[str] = Field(default_factory=list, description=_NAMES)
    severity: dict[str, int] = Field(
        default_factory=dict,
        description="level names (any case) and their OpenTelemetry severity numbers (1-24), "
        "added to the defaults",
    )

    @field_validator(
        "timestamp", "level", "message", "message_template", "trace_id", "span_id", "service", "data"
    )
    @classmethod
    def _names_are_keys(cls, names: list[str]) -> list[str]:
        for name in names:
            if not name or name.startswith(".") or name.endswith(".") or ".." in name:
                raise ValueError(f"{name!r} is no key or dotted path (write e.g. 'log.level')")
        return names

    @field_validator("severity")
    @classmethod
    def _severity_numbers(cls, severity: dict[str, int]) -> dict[str, int]:
        for name, number in severity.items():
            if not 1 <= number <= 24:
                raise ValueError(
                    f"{name}: {number} is no OpenTelemetry severity number (use 1-24, e.g. 9 for info)"
                )
        return severity

    def mapping(self) -> LogFieldMapping:
        aliases = {role: getattr(self, role) for role in ROLE_FIELDS}
        return default_mapping().with_aliases(aliases, self.severity)
