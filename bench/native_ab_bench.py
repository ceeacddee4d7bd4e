"""Two builds of the native extension on the same JSON lines: ns per line of encode_chunk, each build
with its own log-field mapping (schemas/log_fields.yaml of its commit), in processes of their own,
alternating, best of `--repeat` chunks per process. For a change to the Rust path or the mapping,
build the commit before it beside the installed extension:

    git worktree add /tmp/before <commit>
    (cd /tmp/before/native/fastlog && CARGO_TARGET_DIR=/tmp/before-target \\
        cargo build --release --features pyo3/extension-module)
    mkdir -p /tmp/before-module/tether_fastlog
    cp .venv/lib/python3.11/site-packages/tether_fastlog/__init__.py /tmp/before-module/tether_fastlog/
    cp /tmp/before-target/release/libtether_fastlog.so \
        /tmp/before-module/tether_fastlog/tether_fastlog.abi3.so
    .venv/bin/python bench/native_ab_bench.py --before /tmp/before-module \\
        --before-mapping /tmp/before/schemas/log_fields.yaml

The lines are those of a typical service: ISO timestamp, level, service, trace and span ids, a
message and a small data object. On a shared machine the times are noisy; `--instructions` counts
instructions instead (valgrind's callgrind: the same for the same build and input whatever else
runs): each build runs 1 and 3 chunks, and the difference is divided by 2 chunks of lines.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LINES = 20_000


def lines() -> bytes:
    import orjson

    rng = random.Random(7)
    out = []
    for n in range(LINES):
        line = {
            "@timestamp": f"2026-11-21T10:00:{n % 60:02d}.{n:06d}Z",
            "level": "info",
            "service": "checkout",
            "trace_id": rng.randbytes(16).hex(),
            "span_id": rng.randbytes(8).hex(),
            "message": f"user {n} did a thing with some words in it",
            "data": {"n": n, "path": "/api/v1/cart", "ok": True},
        }
        out.append(orjson.dumps(line))
    return b"\n".join(out) + b"\n"


def mapping_of(module: Any, yaml_path: Path) -> Any:
    """The module's FieldMapping of a log_fields.yaml, with only the keywords its build knows."""
    import yaml

    raw = yaml.safe_load(yaml_path.read_text())
    base: dict[str, Any] = {
        role: list(raw.get(role) or ())
        for role in ("message", "timestamp", "level", "trace_id", "span_id", "service", "data")
    }
    base["severity"] = {str(k).lower(): int(v) for k, v in raw["severity"].items()}
    implied = raw.get("implied_level") or {}
    newer: dict[str, Any] = {
        "message_template": list(raw.get("message_template") or ()),
        "numeric_levels": {int(k): int(v) for k, v in (raw.get("numeric_levels") or {}).items()},
        "implied_level_when": list(implied.get("when_any_of") or ()),
        "implied_level_severity": int(implied.get("severity_number") or 0),
        "service_when": [(e["name"], list(e["when_all_of"])) for e in raw.get("service_when") or ()],
    }
    try:
        return module.FieldMapping(**base, **newer)
    except TypeError:  # a build from before those keywords
        return module.FieldMapping(**base)


def measure(yaml_path: Path, repeat: int, options: dict[str, Any]) -> float:
    """ns per line, best of `repeat` (run in the child process)."""
    import tether_fastlog

    mapping = mapping_of(tether_fastlog, yaml_path)
    chunk = lines()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        tether_fastlog.encode_chunk(chunk, 0, mapping, 8, 0, "agent", "fp", "/var/log/a.log", 1, **options)
        best = min(best, time.perf_counter() - start)
    return best / LINES * 1e9


def _option_args(options: list[str]) -> list[str]:
    return [arg for option in options for arg in ("--option", option)]


def _options(options: list[str]) -> dict[str, Any]:
    """`name=value` (the value read as JSON) -> encode_chunk keyword arguments."""
    return {name: json.loads(value) for name, _, value in (option.partition("=") for option in options)}


def run(module_dir: str | None, yaml_path: Path, repeat: int, options: list[str]) -> float:
    env = dict(os.environ)
    if module_dir:
        env["PYTHONPATH"] = module_dir
    else:
        env.pop("PYTHONPATH", None)
    command = [sys.executable, __file__, "--child", str(yaml_path), "--repeat", str(repeat)]
    command += _option_args(options)
    return float(subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout)


def instructions(module_dir: str | None, yaml_path: Path, options: list[str]) -> float:
    """Instructions per line of encode_chunk: (3 chunks - 1 chunk) / 2 chunks, under callgrind."""
    counts = []
    for repeat in (1, 3):
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        if module_dir:
            env["PYTHONPATH"] = module_dir
        command = [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--child",
            str(yaml_path),
            "--repeat",
            str(repeat),
            *_option_args(options),
        ]
        done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
        collected = [line for line in done.stderr.splitlines() if "Collected" in line]
        counts.append(int(collected[-1].split()[-1]))
    return (counts[1] - counts[0]) / (2 * LINES)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", help="directory holding the other build's tether_fastlog package")
    parser.add_argument("--before-mapping", type=Path, help="that commit's schemas/log_fields.yaml")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--instructions", action="store_true", help="count instructions (valgrind)")
    parser.add_argument(
        "--now-option",
        action="append",
        default=[],
        help="name=value (JSON) keyword argument of encode_chunk for the installed build only, "
        "e.g. move_routing_keys=true",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--option", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(measure(args.child, args.repeat, _options(args.option)))
        return
    if not args.before or not args.before_mapping:
        parser.error("--before and --before-mapping are required")
    now_mapping = ROOT / "schemas" / "log_fields.yaml"
    if args.instructions:
        before = instructions(args.before, args.before_mapping, [])
        now = instructions(None, now_mapping, args.now_option)
        print(f"encode_chunk, {LINES} JSON lines, instructions per line (callgrind)")
        print(f"  before {before:.0f}\n  now    {now:.0f}\n  now / before: {now / before:.3f}")
        return
    results: dict[str, list[float]] = {"before": [], "now": []}
    for _ in range(args.rounds):
        results["before"].append(run(args.before, args.before_mapping, args.repeat, []))
        results["now"].append(run(None, now_mapping, args.repeat, args.now_option))
    print(f"encode_chunk, {LINES} JSON lines, best of {args.repeat} per process, {args.rounds} rounds")
    for name, values in results.items():
        print(f"  {name:6} {' '.join(f'{v:.0f}' for v in values)} ns/line (min {min(values):.0f})")
    print(f"  now / before (min): {min(results['now']) / min(results['before']):.3f}")


if __name__ == "__main__":
    main()
