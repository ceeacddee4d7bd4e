"""The collector tier next to its peer: one backlog in Kafka, consumed by the tether collector and by
the OpenTelemetry Collector's kafka receiver, each pinned to one core, in the same invocation.

    .venv/bin/python bench/collector_peer_bench.py --traces 20000

The backlog is collector_bench's (its helpers, imported): realistic traces of 3 spans and 6 log
lines, preloaded into one pair of topics as an agent writes them. Then, one after the other, each
consumer reads the whole backlog with a consumer group of its own, pinned to core 1 (taskset):

- tether: `tether collector` at collector_bench's settings (the defaults but for Jaeger, off, and
  a 1 s correlation wait), parsing, correlating and writing logs, spans and trace summaries to
  Elasticsearch, done when Elasticsearch counts every document of the run;
- otelcol + json->kafka: the Collector's kafka receiver (otlp_proto) into its kafka exporter
  writing OTLP JSON (acks=all) to topics of its own: a sink that, like an Elasticsearch exporter,
  encodes every item as JSON and ships it with an acknowledgement;
- otelcol + debug: the same receiver into the debug exporter (basic verbosity: a line per batch),
  the peer's floor: consuming and decoding alone.

The Collector's elasticsearch exporter, the peer the issue names, cannot be built here: the Go
module proxy refuses it (see bench/peers/build_otelcol.sh). So the peer's figures are of the work
before and around the Elasticsearch write (decoding, a JSON encoding, a network write with acks),
not of indexing; the tether collector's include Elasticsearch's bulk round trips.

Each reports items/s (input items: log lines and spans, from the first item consumed to the last
delivered), CPU seconds per million input items (start-up included, from /proc) and peak RSS
(VmHWM), and its ratios to the tether collector.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from collector_bench import collector_run, operations, preload, records_in
from peers_bench import delete_topics

from tests.e2e import collector_harness
from tests.e2e.agent_harness import PARTITIONS, free_port
from tests.e2e.collector_harness import TraceSpec, create_topics, new_topics
from tests.e2e.otelcol_harness import OtelcolProcess, otelcol_binary, peer_configs, prometheus_sum
from tether.stack import Stack
from tether.stack.kafka import ensure_topics

CORE = 1  # collector_bench's core for the tether collector, so the same for the peer
SPANS_PER_TRACE, LINES_PER_TRACE = 3, 6  # TraceSpec.make's defaults
RUN_TIMEOUT_S = 900.0


def _proc_figures(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS in MB) of a running process."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    rss = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    return cpu, rss


def otelcol_run(
    stack: Stack, work: Path, logs_topic: str, spans_topic: str, items: int, sink: str
) -> dict[str, float]:
    """The Collector's kafka receiver over the backlog into `sink` ("json-kafka" or "debug"),
    until its exporter has sent every input item."""
    configs = peer_configs()
    run = uuid.uuid4().hex[:8]
    out_topics = [f"bench.{run}.otelcol-out.logs", f"bench.{run}.otelcol-out.spans"]
    if sink == "json-kafka":
        asyncio.run(ensure_topics(stack.kafka.bootstrap, out_topics, PARTITIONS))
        exporter: dict[str, Any] = configs.otelcol_json_to_kafka(
            bootstrap=stack.kafka.bootstrap, logs_topic=out_topics[0], spans_topic=out_topics[1]
        )
        exporters = {"kafka": exporter}
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
    otelcol = OtelcolProcess(otelcol_binary(), work, config, port, pin=pin)
    began = time.perf_counter()
    otelcol.start()
    assert otelcol.process is not None
    try:
        first: float | None = None
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
            if failed:
                raise RuntimeError(f"otelcol failed {failed:.0f} items:\n{otelcol.tail()}")
            if first is None and _sum(
                text, "otelcol_receiver_accepted_log_records", "otelcol_receiver_accepted_spans"
            ):
                first = time.perf_counter()
            if sent >= items:
                break
            time.sleep(0.1)
        finished = time.perf_counter()
        cpu, rss = _proc_figures(otelcol.process.pid)
    finally:
        otelcol.stop()
        if sink == "json-kafka":
            asyncio.run(delete_topics(stack.kafka.bootstrap, out_topics))
    elapsed = finished - (first or began)
    return {
        "items": float(items),
        "startup_s": (first or began) - began,
        "seconds": elapsed,
        "items_per_s": items / elapsed,
        "cpu_s_per_million_items": cpu / items * 1e6,
        "peak_rss_mb": rss,
    }


def _sum(text: str, *names: str) -> float:
    return sum(prometheus_sum(text, name) for name in names)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", type=int, default=20_000)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    stack = Stack()
    stack.up(report=lambda line: print(f"[stack] {line}", file=sys.stderr))
    otelcol_binary()  # built (or found) before anything is timed
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
                bulk_max_docs=5000,
            )
            results["tether"] = {
                "items": float(items),
                "documents": tether["documents"],
                "startup_s": tether["startup_s"],
                "seconds": tether["seconds"],
                "items_per_s": tether["items_per_s"],
                "docs_per_s": tether["docs_per_s"],
                "cpu_s_per_million_items": tether["cpu_s_per_million_items"],
                "peak_rss_mb": tether["peak_rss_mb"],
            }
            for sink in ("json-kafka", "debug"):
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
            "items_per_s_vs_tether": figures["items_per_s"] / base["items_per_s"],
            "rss_vs_tether": figures["peak_rss_mb"] / base["peak_rss_mb"],
        }
        figures |= ratio
        print(f"{name:19s} " + "  ".join(f"{k}={v:,.2f}" for k, v in figures.items()))
    if args.json:
        args.json.write_text(
            json.dumps({"traces": args.traces, "loadavg": load, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
