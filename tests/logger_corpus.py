"""The logger corpus (tests/data/loggers): lines written by real logging libraries, each with the
fields a reader must find in it (tests/data/loggers/generate/*/README.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parent / "data" / "loggers"
EXPECTED = ".expected.jsonl"


def libraries() -> list[str]:
    files = CORPUS.glob("*.jsonl")
    return sorted(p.name.removesuffix(".jsonl") for p in files if not p.name.endswith(EXPECTED))


def lines_of(library: str) -> bytes:
    return (CORPUS / f"{library}.jsonl").read_bytes()


def expected_of(library: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (CORPUS / f"{library}{EXPECTED}").read_text().splitlines()]
