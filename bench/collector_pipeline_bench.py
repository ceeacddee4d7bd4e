"""Micro-benchmark of the collector's per-item work without I/O: agent-format Kafka record values
(200 traces of 3 spans and 6 JSON lines each per record, as collector_bench preloads) -> documents
-> correlation (a TraceBuffer at the defaults, RED metrics) -> encoded bulk lines -> bulk bodies.

    .venv/bin/python bench/collector_pipeline_bench.py --traces 4000

Reports the best of five passes in us per input item (spans and lines), so changes to the
in-process path can be compared without Kafka, Elasticsearch or the event loop (collector_bench
and collector_peer_bench measure the whole process). With --profile, cProfile's top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
import timeit
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry

from tests.e2e.collector_harness import TraceSpec
from tether.agent.encode import TRACES, FileLine, encode_file_lines, split_request
from tether.agent.parse import parse_line
from tether.collector.config import CollectorConfig
from tether.collector.correlate import Budget, Output, RecentBudget, RepairBudget, Stats, TraceBuffer
from tether.collector.decode import decode_logs, decode_spans
from tether.collector.gc_tuning import tune_garbage_collector
from tether.collector.red_metrics import RedMetrics
from tether.collector.sinks.bulk import bulk_bodies, encode_documents
from tether.schemas.log_fields import default_mapping

RECORD_TRACES = 200


def records(traces: int) -> list[tuple[bytes, bytes]]:
    """(spans value, logs value) per 200 traces, as the agent writes them to one partition."""
    mapping = default_mapping()
    specs = [TraceSpec.make(n, run="bench-0123abcd") for n in range(traces)]
    for spec in specs:  # operations as applications name them (collector_bench.operations)
        for child, span in enumerate(spec.spans):
            span.name = f"{span.name.split(' op ')[0]} op {child}"
    out, offset = [], 0
    for start in range(0, traces, RECORD_TRACES):
        group = specs[start : start + RECORD_TRACES]
        request = group[0].span_request([s for t in group for s in t.spans])
        [spans] = split_request(request, TRACES, 1, None).records.values()
        file_lines = []
        for line in [line for t in group for line in t.lines]:
            file_lines.append(FileLine(parse_line(line, mapping), offset))
            offset += len(line) + 1
        [logs] = encode_file_lines(
            file_lines,
            path="/var/log/app.log",
            fingerprint="fp",
            agent_id="bench",
            observed_ns=time.time_ns(),
            partitions=1,
            untraced_partition=0,
        ).values()
        out.append((spans, logs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", type=int, default=4000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    values = records(args.traces)
    config = CollectorConfig.model_validate(
        {"kafka": {"bootstrap_servers": "127.0.0.1:9092"}, "elasticsearch": {"url": "http://127.0.0.1:9200"}}
    )
    mapping, c, limit = config.log_fields.mapping(), config.correlation, config.elasticsearch.bulk_max_docs
    red = RedMetrics(CollectorRegistry(), config.red_metrics)

    def run() -> int:
        buffer: TraceBuffer[None] = TraceBuffer(
            c.wait_seconds,
            Budget(c.max_pending_traces, c.max_pending_bytes),
            c.max_recent_traces,
            Stats(),
            partition=0,
            repair=RepairBudget(c.max_repairable_logs),
            recent=RecentBudget(c.max_recent_traces),
        )
        unparsed: Counter[str] = Counter()
        outputs: list[Output[None]] = []
        sent = 0
        for spans_value, logs_value in values:
            _, spans = decode_spans(spans_value, False)
            red.observe(spans)
            for span in spans:
                outputs += buffer.add_span(span, None, 2500, 0.0)
            for log in decode_logs(logs_value, mapping, unparsed):
                outputs += buffer.add_log(log, None, 2500, 0.0)
            if len(outputs) >= limit:
                for _, body in bulk_bodies(encode_documents(outputs), limit, 1 << 30):
                    sent += len(body)
                outputs = []
        outputs += buffer.due(0.0, everything=True)
        for _, body in bulk_bodies(encode_documents(outputs), limit, 1 << 30):
            sent += len(body)
        return sent

    tune_garbage_collector()
    run()
    items = args.traces * 9
    best = min(timeit.repeat(run, number=1, repeat=5))
    print(f"traces={args.traces} items={items} best_s={best:.3f} us_per_item={best / items * 1e6:.2f}")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
