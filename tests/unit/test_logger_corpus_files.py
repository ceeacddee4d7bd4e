"""tests/data/loggers: every library file has a well-formed expected file (docs: generate/*/README.md).

The corpus is written by running real logging libraries; these checks catch a generator that wrote
a truncated file, an expected file out of step with its lines, or a value outside the documented
format (ids, canonical levels, time bounds, the `keys` map). They work for any library's file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

CORPUS_DIR = Path(__file__).resolve().parents[1] / "data" / "loggers"
EXPECTED_SUFFIX = ".expected.jsonl"
CANONICAL_LEVELS = {"trace", "debug", "info", "warn", "error", "fatal"}
EXPECTED_FIELDS = {"message", "level", "trace_id", "span_id", "service", "time_min_ns", "time_max_ns", "keys"}
KEY_ROLES = {"message", "level", "time", "trace_id", "span_id", "service"}
TRACE_ID = re.compile(r"[0-9a-f]{32}")
SPAN_ID = re.compile(r"[0-9a-f]{16}")
_MISSING = object()


def library_files() -> list[Path]:
    return sorted(p for p in CORPUS_DIR.glob("*.jsonl") if not p.name.endswith(EXPECTED_SUFFIX))


def expected_path(library_file: Path) -> Path:
    return library_file.with_name(library_file.name.removesuffix(".jsonl") + EXPECTED_SUFFIX)


def read_lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n"), f"{path.name}: the last line has no newline"
    return text[:-1].split("\n")


def resolve(document: Any, path: str) -> Any:
    """The value at a dotted path; a dotted key may also be one literal key (ECS's "log.level"), and
    a part of digits indexes an array (MEL's "Scopes.0.TraceId")."""
    if path in ("", None):
        return document
    if isinstance(document, list):
        head, _, rest = path.partition(".")
        if head.isdigit() and int(head) < len(document):
            return resolve(document[int(head)], rest)
        return _MISSING
    if not isinstance(document, dict):
        return _MISSING
    parts = path.split(".")
    for split in range(len(parts), 0, -1):  # longest literal key first
        key = ".".join(parts[:split])
        if key in document:
            found = resolve(document[key], ".".join(parts[split:]))
            if found is not _MISSING:
                return found
    return _MISSING


def is_whole_number(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_expected(expected: dict[str, Any], line: dict[str, Any], where: str) -> None:
    assert set(expected) == EXPECTED_FIELDS, where
    assert isinstance(expected["message"], str), where
    assert expected["level"] in CANONICAL_LEVELS, where
    for role, pattern in (("trace_id", TRACE_ID), ("span_id", SPAN_ID)):
        value = expected[role]
        assert value is None or (isinstance(value, str) and pattern.fullmatch(value)), f"{where}: {role}"
    assert expected["service"] is None or isinstance(expected["service"], str), where
    low, high = expected["time_min_ns"], expected["time_max_ns"]
    assert is_whole_number(low) and is_whole_number(high), where
    assert 0 < low <= high, where

    keys = expected["keys"]
    assert isinstance(keys, dict) and set(keys) == KEY_ROLES, where
    for role, key in keys.items():
        assert key is None or (isinstance(key, str) and key), f"{where}: keys.{role}"
        if key is not None:
            assert resolve(line, key) is not _MISSING, f"{where}: keys.{role}={key!r} is not in the line"
    for role in ("trace_id", "span_id", "service"):
        if expected[role] is not None:
            assert keys[role] is not None, f"{where}: {role} is set but keys.{role} says where is unknown"


def test_the_corpus_has_library_files() -> None:
    assert library_files(), f"no library files in {CORPUS_DIR}"


def test_every_expected_file_has_its_library_file() -> None:
    for path in CORPUS_DIR.glob("*" + EXPECTED_SUFFIX):
        library_file = path.with_name(path.name.removesuffix(EXPECTED_SUFFIX) + ".jsonl")
        assert library_file.is_file(), f"{path.name} has no {library_file.name}"


@pytest.mark.parametrize("library_file", library_files(), ids=lambda p: p.name.removesuffix(".jsonl"))
def test_library_file_matches_its_expected_file(library_file: Path) -> None:
    lines = read_lines(library_file)
    expected_file = expected_path(library_file)
    assert expected_file.is_file(), f"{library_file.name} has no {expected_file.name}"
    expected_lines = read_lines(expected_file)
    assert len(expected_lines) == len(lines), f"{library_file.name}: line counts differ"
    assert lines, f"{library_file.name} is empty"

    for number, (raw, raw_expected) in enumerate(zip(lines, expected_lines, strict=True), start=1):
        where = f"{library_file.name}:{number}"
        line = json.loads(raw)
        assert isinstance(line, dict), f"{where}: not a JSON object"
        expected = json.loads(raw_expected)
        assert isinstance(expected, dict), f"{expected_file.name}:{number}: not a JSON object"
        check_expected(expected, line, where)
