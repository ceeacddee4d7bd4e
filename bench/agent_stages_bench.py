"""Where the native file-line encoder spends its time: encode_chunk stopped after each stage (1 split
lines + UTF-8, 2 + JSON parse, 3 + field extraction, 4 + encoding), in ns per line.

The stage helper is a profiling aid, left out of the default build. Build the extension with it
into a directory of its own (under cargo's target/, ignored by git), first on the path, so the
installed one stays as it is:

    cd native/fastlog && cargo build --release --features pyo3/extension-module,bench
    mkdir -p target/bench-module
    cp target/release/libtether_fastlog.so target/bench-module/tether_fastlog.abi3.so
    cd ../.. && PYTHONPATH=native/fastlog/target/bench-module .venv/bin/python bench/agent_stages_bench.py

(or `maturin build --release --features bench` and install that wheel into a scratch venv).
"""

from __future__ import annotations

import random
import sys
import timeit
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson
import tether_fastlog

from tether import native
from tether.agent.parse import parse_timestamp
from tether.schemas.log_fields import default_mapping

LINES = 20_000


def main() -> None:
    stage_helper: Any = getattr(tether_fastlog, "encode_chunk_stage", None)
    if stage_helper is None:
        sys.exit(
            f"{tether_fastlog.__file__} has no encode_chunk_stage: build it with --features bench "
            "(see this script's docstring)"
        )
    data = _chunk()
    mapping = native.field_mapping(default_mapping())
    for stage, name in enumerate(("lines + UTF-8", "+ JSON parse", "+ fields", "+ encoding"), start=1):

        def run(stage: int = stage) -> None:
            stage_helper(
                stage, data, 0, mapping, 6, 0, "agent", "fp", "/var/log/app.log", 1, 262_144, parse_timestamp
            )

        best = min(timeit.repeat(run, number=5, repeat=7)) / 5
        print(f"stage {stage} {name:16} {best / LINES * 1e9:7.1f} ns per line")


def _chunk() -> bytes:
    rng = random.Random(1)
    lines = []
    for i in range(LINES):
        line = {
            "timestamp": f"2026-11-21T10:00:00.{rng.randrange(10**6):06d}Z",
            "level": rng.choice(["info", "warn", "error"]),
            "message": f"request handled in {rng.randrange(1000)} ms",
            "service": f"svc-{rng.randrange(4)}",
            "trace_id": f"{rng.getrandbits(128):032x}",
            "span_id": f"{rng.getrandbits(64):016x}",
            "http": {"method": "GET", "path": f"/api/v1/items/{i}", "status": 200},
        }
        lines.append(orjson.dumps(line))
    return b"\n".join(lines) + b"\n"


if __name__ == "__main__":
    main()
