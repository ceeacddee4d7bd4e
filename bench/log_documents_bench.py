"""Micro-benchmark of the collector's log document path alone: a Kafka record value as the agent
writes it (200 traces x 6 lines) -> documents -> the JSON source lines of the bulk body.

    .venv/bin/python bench/log_documents_bench.py

Python reference (protobuf decode, log_documents, orjson.dumps of each source) against the native
path (native_log_documents, then head + orjson.dumps of the small source), in us per document;
correlation and the bulk action lines are the same in both and left out.
"""

from __future__ import annotations

import sys
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.e2e.collector_harness import TraceSpec
from tether.agent.encode import FileLine, encode_file_lines
from tether.agent.parse import parse_line
from tether.collector.documents import log_documents, native_log_documents
from tether.collector.gc_tuning import tune_garbage_collector
from tether.schemas.log_fields import default_mapping


def main() -> None:
    mapping = default_mapping()
    traces = [TraceSpec.make(n, run="bench-0123abcd") for n in range(200)]
    lines = [line for t in traces for line in t.lines]
    records = encode_file_lines(
        [FileLine(parse_line(line, mapping), i * 200) for i, line in enumerate(lines)],
        path="/var/log/app.log",
        fingerprint="fp",
        agent_id="bench",
        observed_ns=time.time_ns(),
        partitions=1,
        untraced_partition=0,
    )
    [value] = records.values()
    docs = len(lines)

    def reference() -> None:
        for doc in log_documents(ExportLogsServiceRequest.FromString(value), mapping):
            orjson.dumps(doc.source, default=str)

    def native() -> None:
        for doc in native_log_documents(value, mapping) or []:
            source = orjson.dumps(doc.source, default=str)  # as the sink's source_json
            doc.head + source[1:] if doc.head is not None else source

    def native_build() -> None:
        native_log_documents(value, mapping)

    def reference_build() -> None:
        log_documents(ExportLogsServiceRequest.FromString(value), mapping)

    tune_garbage_collector()  # as the collector runs
    print(f"one record: {len(value):,} bytes, {docs} log lines, {len(value) // docs} bytes per line")
    for name, fn in [
        ("reference: decode + build", reference_build),
        ("reference: decode + build + encode", reference),
        ("native: build", native_build),
        ("native: build + encode", native),
    ]:
        best = min(timeit.repeat(fn, number=20, repeat=15)) / 20
        print(f"{name:38} {best / docs * 1e6:6.2f} us per document")


if __name__ == "__main__":
    main()
