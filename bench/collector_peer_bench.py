"""The collector tier next to its peer: one backlog in Kafka, consumed by the tether collector and by
the OpenTelemetry Collector's kafka receiver, each pinned to one core, in the same invocation.

    .venv/bin/python bench/collector_peer_bench.py --traces 20000

The backlog is collector_bench's (its helpers, imported): realistic traces of 3 spans and 6 log
lines, preloaded into one pair of topics as an agent writes them. Then, one after the other, each
consumer reads the whole backlog with a consumer group of its own, pinned to core 1 (taskset):

- tether: `tether collector` at collector_bench's settings (the defaults but for Jaeger, off, and
  a 1 s correlation wait), parsing, correlating and writing logs, spans and trace summaries to
  Elasticsearch, done when Elasticsearch counts every document of the run;
- otelcol + elasticsearch: the Collector's kafka receiver into its elasticsearch exporter (the
  peer the issue names; a binary of its own at contrib v0.150.0, the newest release whose exporter
  the Go module proxy serves: see bench/peers/build_otelcol.sh), into the same Elasticsearch, data
  streams emptied for each run, the exporter's defaults (otel mapping mode, gzip level 1,
  Elasticsearch ids, 10 consumers, 1-5 MB batches) but its queue sized in bytes (10 x 5 MB: at its
  default 10 requests no batch fills) and a 1 s flush timeout (bench/peers/configs.py says why);
  done when Elasticsearch counts every input item in them;
- otelcol + json->kafka: the Collector's kafka receiver (v0.165) into its kafka exporter
  writing OTLP JSON (acks=all) to topics of its own: a sink that, like an Elasticsearch exporter,
  encodes every item as JSON and ships it with an acknowledgement;
- otelcol + debug: the same receiver into the debug exporter (basic verbosity: a line per batch),
  the peer's floor: consuming and decoding alone.

The integ-test-zip Elasticsearch of the stack has none of the default distribution's built-in index
templates (logs-*-*, traces-*-*, their otel variants), and the otel mapping mode writes to data
streams only: the bench puts a data-stream template for the peer's two streams, 1 shard, 0 replicas
and a 1 s refresh as tether's indices, strings mapped as keywords (ignore_above 1024) as the built-in
templates map them. That Elasticsearch cannot delete a data stream either (PeerStreams says how
they are emptied instead). The peer stores what it decodes (bodies and attributes as OTLP holds
them, with random ids); tether parses, correlates and writes summaries too.

Each reports items/s (input items: log lines and spans, from the first item consumed to the last
delivered), CPU seconds per million input items (start-up included, from /proc; and "running",
from the first item seen consumed on, start-up left out) and peak RSS
(VmHWM), and its ratios to the tether collector; the runs into Elasticsearch also documents/s and
the documents counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch, NotFoundError

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from collector_bench import BULK_MAX_DOCS, collector_run, operations, preload, process_cpu, records_in

from tests.e2e import collector_harness
from tests.e2e.agent_harness import PARTITIONS, free_port
from tests.e2e.collector_harness import TraceSpec, create_topics, new_topics
from tests.e2e.otelcol_harness import OtelcolProcess, otelcol_binary, peer_configs, prometheus_sum
from tether.stack import Stack
from tether.stack.kafka import delete_topics, ensure_topics

CORE = 1  # collector_bench's core for the tether collector, so the same for the peer
SPANS_PER_TRACE, LINES_PER_TRACE = 3, 6  # TraceSpec.make's defaults
RUN_TIMEOUT_S = 900.0


def _proc_figures(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS in MB) of a running process."""
    cpu = process_cpu(pid)
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    rss = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    return cpu, rss


class PeerStreams:
    """The elasticsearch exporter's two data streams, empty when a run begins and emptied after it.

    The stack's Elasticsearch (the integ-test-zip) has no data-streams module, so no REST call
    deletes a data stream (DELETE /_data_stream answers 405), and its write index cannot be
    deleted either. So the names are fixed and each stream is emptied instead: rolled over to a new,
    empty write index, every older backing index deleted. What stays between runs is two empty
    indices and the template they use."""

    TEMPLATE = "tether-bench-otelpeer"
    LOGS, TRACES = "logs-tetherbench.otelpeer-default", "traces-tetherbench.otelpeer-default"

    def __init__(self, url: str) -> None:
        self.es = Elasticsearch(url, request_timeout=60)
        self.logs, self.traces = self.LOGS, self.TRACES

    def create(self) -> None:
        """The template (what the default distribution's built-in logs/traces templates would
        be), then both streams emptied of any earlier run's documents."""
        self.es.indices.put_index_template(
            name=self.TEMPLATE,
            index_patterns=[self.logs, self.traces],
            data_stream={},
            priority=500,
            template={
                "settings": {"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "1s"},
                "mappings": {
                    "dynamic_templates": [
                        {
                            "strings_as_keyword": {
                                "match_mapping_type": "string",
                                "mapping": {"type": "keyword", "ignore_above": 1024},
                            }
                        }
                    ]
                },
            },
        )
        self.empty()

    def count(self) -> int:
        """Documents in both streams once refreshed."""
        names = f"{self.logs},{self.traces}"
        self.es.indices.refresh(index=names, ignore_unavailable=True)
        return int(self.es.count(index=names, ignore_unavailable=True)["count"])

    def empty(self) -> None:
        for name in (self.logs, self.traces):
            try:
                self.es.indices.resolve_index(name=name)
            except NotFoundError:
                continue  # not made yet: the first bulk request makes it
            self.es.indices.rollover(alias=name)
            backing = self.es.indices.resolve_index(name=name)["data_streams"][0]["backing_indices"]
            self.es.indices.delete(index=",".join(backing[:-1]))  # all but the new write index

    def close(self) -> None:
        self.empty()
        self.es.close()


def otelcol_run(
    stack: Stack, work: Path, logs_topic: str, spans_topic: str, items: int, sink: str
) -> dict[str, float]:
    """The Collector's kafka receiver over the backlog into `sink` ("elasticsearch", "json-kafka"
    or "debug"), until its exporter has sent every input item (and, into Elasticsearch, until
    Elasticsearch counts them)."""
    configs = peer_configs()
    run = uuid.uuid4().hex[:8]
    out_topics = [f"bench.{run}.otelcol-out.logs", f"bench.{run}.otelcol-out.spans"]
    streams = PeerStreams(stack.elasticsearch.url) if sink == "elasticsearch" else None
    if streams is not None:
        streams.create()
        exporters: dict[str, Any] = {
            "elasticsearch": configs.otelcol_elasticsearch(
                url=stack.elasticsearch.url, logs_index=streams.logs, traces_index=streams.traces
            )
        }
    elif sink == "json-kafka":
        asyncio.run(ensure_topics(stack.kafka.bootstrap, out_topics, PARTITIONS))
        exporters = {
            "kafka": configs.otelcol_json_to_kafka(
                bootstrap=stack.kafka.bootstrap, logs_topic=out_topics[0], spans_topic=out_topics[1]
            )
        }
    else:
        exporters = {"debug": {"verbosity": "basic"}}
    port = free_port()
    config = configs.otelcol_consumer_config(
        bootstrap=stack.kafka.bootstrap,
        logs_topic=logs_topic,
        spans_topic=spans_topic,
        group_id=f"bench-otelcol-{run}",
        metrics_port=port,
        exporters=exporters,
    )
    pin = ["taskset", "-c", str(CORE)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []
    binary = otelcol_binary("collector-peer" if streams is not None else "peer")
    otelcol = OtelcolProcess(binary, work, config, port, pin=pin)
    began = time.perf_counter()
    try:
        otelcol.start()
        assert otelcol.process is not None
        first: float | None = None
        cpu_at_first = 0.0
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            otelcol.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"otelcol took over {RUN_TIMEOUT_S:.0f} s:\n{otelcol.tail()}")
            text = otelcol.scrape()
            sent = _sum(text, "otelcol_exporter_sent_log_records", "otelcol_exporter_sent_spans")
            failed = _sum(
                text,
                "otelcol_exporter_send_failed_log_records",
                "otelcol_exporter_send_failed_spans",
                "otelcol_kafka_receiver_unmarshal_failed_log_records",
                "otelcol_kafka_receiver_unmarshal_failed_spans",
            )
            # documents the exporter sent that Elasticsearch refused (mapping errors and the like)
            failed += _unsuccessful(text, "otelcol_elasticsearch_docs_processed")
            if failed:
                raise RuntimeError(f"otelcol failed {failed:.0f} items:\n{otelcol.tail()}")
            if first is None and _sum(
                text, "otelcol_receiver_accepted_log_records", "otelcol_receiver_accepted_spans"
            ):
                first, cpu_at_first = time.perf_counter(), process_cpu(otelcol.process.pid)
            # As the tether collector's run: Elasticsearch's own count once the sender says all.
            if sent >= items and (streams is None or (documents := streams.count()) >= items):
                break
            time.sleep(0.1)
        finished = time.perf_counter()
        cpu, rss = _proc_figures(otelcol.process.pid)
    finally:
        if otelcol.process is not None:
            otelcol.stop()
        if sink == "json-kafka":
            asyncio.run(delete_topics(stack.kafka.bootstrap, out_topics))
        if streams is not None:
            streams.close()
    elapsed = finished - (first or began)
    figures = {
        "items": float(items),
        "startup_s": (first or began) - began,
        "seconds": elapsed,
        "items_per_s": items / elapsed,
        "cpu_s_per_million_items": cpu / items * 1e6,
        "running_cpu_s_per_million_items": (cpu - cpu_at_first) / items * 1e6,
        "peak_rss_mb": rss,
    }
    if streams is not None:
        figures["documents"] = float(documents)
        figures["docs_per_s"] = documents / elapsed
        # what went over the wire to Elasticsearch, per document (gzip level 1 is its default)
        figures["bulk_bytes_per_doc"] = _sum(text, "otelcol_elasticsearch_flushed_bytes") / documents
        figures["bulk_raw_bytes_per_doc"] = (
            _sum(text, "otelcol_elasticsearch_flushed_uncompressed_bytes") / documents
        )
    return figures


def _sum(text: str, *names: str) -> float:
    return sum(prometheus_sum(text, name) for name in names)


def _unsuccessful(text: str, name: str) -> float:
    """The series of `name` (a counter with an outcome label) whose outcome is not success."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + "_total{")) and 'outcome="success"' not in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", type=int, default=20_000)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    stack = Stack()
    stack.up(report=lambda line: print(f"[stack] {line}", file=sys.stderr))
    otelcol_binary()  # both built (or found) before anything is timed
    otelcol_binary("collector-peer")
    logs_topic, spans_topic, run = new_topics("bench")
    # Traces happen as they are preloaded (collector_bench's reason: the harness's T0 is a minute back).
    collector_harness.T0 = time.time_ns()
    traces = operations(TraceSpec.make(n, run=run) for n in range(args.traces))
    items = args.traces * (SPANS_PER_TRACE + LINES_PER_TRACE)
    expected_documents = args.traces * (SPANS_PER_TRACE + LINES_PER_TRACE + 1)  # and a summary each
    asyncio.run(create_topics(stack, logs_topic, spans_topic))
    asyncio.run(preload(stack, logs_topic, spans_topic, traces))
    records = asyncio.run(records_in(stack, logs_topic, spans_topic))
    load = os.getloadavg()
    results: dict[str, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="tether-bench-") as tmp:
            tether = collector_run(
                stack,
                Path(tmp),
                logs_topic,
                spans_topic,
                expected_documents,
                run,
                max_pending_mb=64,
                bulk_max_docs=BULK_MAX_DOCS,  # the collector's default, as collector_bench
            )
            results["tether"] = {
                "items": float(items),
                "documents": tether["documents"],
                "startup_s": tether["startup_s"],
                "seconds": tether["seconds"],
                "items_per_s": tether["items_per_s"],
                "docs_per_s": tether["docs_per_s"],
                "cpu_s_per_million_items": tether["cpu_s_per_million_items"],
                "running_cpu_s_per_million_items": tether["running_cpu_s_per_million_items"],
                "peak_rss_mb": tether["peak_rss_mb"],
            }
            for sink in ("elasticsearch", "json-kafka", "debug"):
                results[f"otelcol+{sink}"] = otelcol_run(
                    stack, Path(tmp), logs_topic, spans_topic, items, sink
                )
    finally:
        asyncio.run(delete_topics(stack.kafka.bootstrap, [logs_topic, spans_topic]))
    print(
        f"traces={args.traces} input_items={items} records={records} "
        f"tether_documents={expected_documents} loadavg_before={load[0]:.2f},{load[1]:.2f},{load[2]:.2f}"
    )
    base = results["tether"]
    for name, figures in results.items():
        ratio = {
            "cpu_per_item_vs_tether": figures["cpu_s_per_million_items"] / base["cpu_s_per_million_items"],
            "running_cpu_per_item_vs_tether": figures["running_cpu_s_per_million_items"]
            / base["running_cpu_s_per_million_items"],
            "items_per_s_vs_tether": figures["items_per_s"] / base["items_per_s"],
            "rss_vs_tether": figures["peak_rss_mb"] / base["peak_rss_mb"],
        }
        figures |= ratio
        print(f"{name:22s} " + "  ".join(f"{k}={v:,.2f}" for k, v in figures.items()))
    if args.json:
        args.json.write_text(
            json.dumps({"traces": args.traces, "loadavg": load, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
