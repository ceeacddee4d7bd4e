"""Whether the native (Rust, native/fastlog) or the Python path runs, decided in one place.

Each fast path has a Python reference that stays the specification; the native one must give
the very same bytes and runs whenever the `tether_fastlog` extension is installed and has it:

- ``file_lines``: the agent's file lines -> Kafka records (agent/chunks.py);
- ``otlp_split``: the agent's OTLP requests -> per-partition requests (agent/split.py);
- ``log_documents``: the collector's Kafka records of file lines -> Elasticsearch documents
  (collector/documents.py; records it does not handle, OTLP logs among them, take the Python
  path one by one);
- ``span_documents``: the collector's Kafka records of spans -> Elasticsearch documents
  (collector/documents.py; records with values it does not handle take the Python path).

No configuration turns a native path off: ``long_lines: drop`` has a native path too. At start
the services `announce` `agent_paths()` / `collector_paths()` (the log and the
tether_{agent,collector}_native_path gauge), so that a missing or outdated extension (the Python
paths are many times slower) shows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final, Literal

from prometheus_client import Gauge

from tether.schemas.log_fields import ROLES, LogFieldMapping

Path = Literal["file_lines", "otlp_split", "log_documents", "span_documents"]
AGENT_PATHS: Final[tuple[Path, ...]] = ("file_lines", "otlp_split")
COLLECTOR_PATHS: Final[tuple[Path, ...]] = ("log_documents", "span_documents")

# What each path needs from the extension (an older build lacks the newer names).
_NEEDS: Final[dict[Path, tuple[str, ...]]] = {
    "file_lines": ("encode_chunk", "FieldMapping", "ENCODE_CHUNK_READS_CONTAINER_LOGS"),
    # split_logs returning the cleared ids' counts (4 values) and split_traces the spans rejected
    # for a parent or link id (5) came with SPLIT_WRITES_VALID_IDS
    "otlp_split": (
        "split_traces",
        "split_logs",
        "SPLIT_TRACES_CHECKS_SPAN_IDS",
        "SPLIT_WRITES_VALID_IDS",
    ),
    "log_documents": ("file_log_documents", "FieldMapping"),
    "span_documents": ("span_documents",),
}


def _import() -> tuple[Any, str]:
    try:
        import tether_fastlog
    except ImportError as error:  # not installed: every path is Python's
        return None, str(error)
    return tether_fastlog, ""


_module, _import_error = _import()


@dataclass(frozen=True, slots=True)
class PathChoice:
    """Which implementation runs one path, and why not the native one when it does not."""

    path: Path
    native: bool
    reason: str  # "" when native

    def describe(self) -> str:
        return f"{self.path}: native" if self.native else f"{self.path}: python ({self.reason})"


def choose(path: Path) -> PathChoice:
    if _module is None:
        return PathChoice(path, False, f"tether_fastlog is not installed ({_import_error})")
    missing = [name for name in _NEEDS[path] if not hasattr(_module, name)]
    if missing:
        return PathChoice(path, False, f"tether_fastlog is too old: no {', '.join(missing)}")
    return PathChoice(path, True, "")


def agent_paths() -> list[PathChoice]:
    return [choose(path) for path in AGENT_PATHS]


def collector_paths() -> list[PathChoice]:
    return [choose(path) for path in COLLECTOR_PATHS]


def announce(choices: list[PathChoice], gauge: Gauge, log: logging.Logger) -> None:
    """At a service's start: each path's choice on its gauge (1 native, 0 Python) and in the log,
    a warning when a path runs the Python reference."""
    for choice in choices:
        gauge.labels(choice.path).set(1 if choice.native else 0)
    text = "; ".join(choice.describe() for choice in choices)
    if all(choice.native for choice in choices):
        log.info("native paths: %s", text)
    else:
        log.warning("native paths: %s (the Python paths are many times slower)", text)


def extension() -> Any:
    """The tether_fastlog module, for a path `choose` found native."""
    if _module is None:
        raise RuntimeError(f"tether_fastlog is not installed ({_import_error})")
    return _module


# One native mapping per LogFieldMapping, kept with it (its id is then not reused).
_mappings: dict[int, tuple[LogFieldMapping, Any]] = {}


def field_mapping(mapping: LogFieldMapping) -> Any:
    """`mapping` as the one typed object the native paths take (tether_fastlog.FieldMapping),
    converted once per mapping."""
    kept = _mappings.get(id(mapping))
    if kept is not None and kept[0] is mapping:
        return kept[1]
    native = extension().FieldMapping(
        **{role: list(getattr(mapping, role)) for role in ROLES},
        severity=dict(mapping.severity),
        numeric_levels=dict(mapping.numeric_levels),
        implied_level_when=list(mapping.implied_level.when_any_of),
        implied_level_severity=mapping.implied_level.severity_number,
        service_when=[(c.name, list(c.when_all_of)) for c in mapping.service_when],
    )
    _mappings[id(mapping)] = (mapping, native)
    return native
