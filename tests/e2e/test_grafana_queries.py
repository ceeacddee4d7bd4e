"""Every panel query of the committed Grafana dashboards, run for real (issue 5, Grafana).

No Grafana server runs here, so what Grafana would do is done by hand: traces and logs with unique
services go through Kafka and a real `tether collector` into Elasticsearch; each Elasticsearch panel
target is translated (grafana.es_query) into the `_search` body Grafana sends, with `$service` set to
this run's services, and its answer is checked against what was produced. PromQL expressions must name
metrics that a real agent and a real collector expose on /metrics.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from grafana.es_query import Variable, search_body
from grafana.generate import DASHBOARDS, DASHBOARDS_DIR
from tests.e2e.agent_harness import AgentProcess
from tests.e2e.collector_harness import (
    CollectorProcess,
    Producer,
    TraceSpec,
    create_topics,
    new_topics,
    wait_for_count,
)
from tether.stack import Stack

pytestmark = pytest.mark.stack

ALIAS = {
    "tether-es-logs": "tether-logs",
    "tether-es-spans": "tether-spans",
    "tether-es-traces": "tether-traces",
}
TRACES = 18


@dataclass
class Produced:
    """What this run sent, and so what every panel must show."""

    run: str
    services: list[str]
    from_ms: int
    to_ms: int
    traces: list[dict[str, Any]] = field(default_factory=list)  # id, service, operation, status, duration_us
    spans: list[tuple[str, str, int]] = field(default_factory=list)  # service, name, duration_us
    logs: list[tuple[str, str, bool]] = field(default_factory=list)  # service, level, traced


def _make(run: str) -> tuple[Produced, list[TraceSpec], list[bytes]]:
    services = [f"{run}-web", f"{run}-api", f"{run}-db"]
    base_ns = time.time_ns() - 120 * 1_000_000_000
    produced = Produced(run, services, base_ns // 1_000_000 - 60_000, time.time_ns() // 1_000_000 + 60_000)
    specs, untraced = [], []
    for k in range(TRACES):
        service = services[k % 3]
        start = base_ns + k * 1_000_000_000
        duration_us = (k + 1) * 1000 + k * 7  # all different, so the slowest order is strict
        error = k % 4 == 0
        spec = TraceSpec(os.urandom(16), service)
        root_id, child_id = os.urandom(8), os.urandom(8)
        operation = f"{run} op{k % 2}"
        spec.spans = [
            Span(
                trace_id=spec.trace_id,
                span_id=root_id,
                name=operation,
                kind=Span.SPAN_KIND_SERVER,
                start_time_unix_nano=start,
                end_time_unix_nano=start + duration_us * 1000,
            ),
            Span(
                trace_id=spec.trace_id,
                span_id=child_id,
                parent_span_id=root_id,
                name=f"{run} child",
                kind=Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=start + 100_000,
                end_time_unix_nano=start + 100_000 + duration_us * 500,
                status=Status(code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_OK),
            ),
        ]
        produced.traces.append(
            {
                "id": spec.trace_id.hex(),
                "service": service,
                "operation": operation,
                "status": "ERROR" if error else "OK",
                "duration_us": duration_us,
            }
        )
        produced.spans += [(service, operation, duration_us), (service, f"{run} child", duration_us // 2)]
        levels = (
            [("info", root_id)]
            + ([("error", child_id)] if error else [])
            + ([("warn", root_id)] * (k % 3 == 0))
        )
        for n, (level, span_id) in enumerate(levels):
            spec.lines.append(
                _line(start + 200_000 + n, level, service, f"{run} log {k}.{n}", spec.trace_id, span_id)
            )
            produced.logs.append((service, level, True))
        specs.append(spec)
    for n in range(2):  # untraced lines count in the volume panels, never in the error table
        untraced.append(_line(base_ns + n, "info", services[0], f"{run} untraced {n}", None, None))
        produced.logs.append((services[0], "info", False))
    return produced, specs, untraced


def _line(
    ts_ns: int, level: str, service: str, message: str, trace: bytes | None, span: bytes | None
) -> bytes:
    line: dict[str, Any] = {"@timestamp": ts_ns / 1e9, "level": level, "service": service, "message": message}
    if trace and span:
        line |= {"trace_id": trace.hex(), "span_id": span.hex()}
    return orjson.dumps(line)


def _post(stack: Stack, alias: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{stack.elasticsearch.url}/{alias}/_search",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


def _rows(
    aggs: dict[str, Any], ids: list[str], path: tuple[Any, ...] = ()
) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Flatten nested bucket aggregations: (keys along the path, innermost bucket)."""
    if not ids:
        yield path, aggs
        return
    for bucket in aggs[ids[0]]["buckets"]:
        yield from _rows(bucket, ids[1:], (*path, bucket["key"]))


def _percentiles_within(values: dict[str, float | None], low: float, high: float) -> None:
    assert set(values) == {"50.0", "95.0", "99.0"}, values
    for value in values.values():
        assert value is not None and low <= value <= high, (values, low, high)


# One check per panel title: a panel without a check fails the test, so none slips through unrun.
Check = Callable[[Produced, dict[str, Any], list[str]], None]
CHECKS: dict[str, Check] = {}


def check(title: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        CHECKS[title] = fn
        return fn

    return register


@check("Log volume by level")
def _volume_by_level(p: Produced, response: dict[str, Any], ids: list[str]) -> None:
    got: Counter[str] = Counter()
    for (level, _), bucket in _rows(response["aggregations"], ids):
        got[level] += bucket["doc_count"]
    assert got == Counter(level for _, level, _ in p.logs)


@check("Log volume by service")
def _volume_by_service(p: Produced, response: dict[str, Any], ids: list[str]) -> None:
    got: Counter[str] = Counter()
    for (service, _), bucket in _rows(response["aggregations"], ids):
        got[service] += bucket["doc_count"]
    assert got == Counter(service for service, _, _ in p.logs)


@check("Error logs")
def _error_logs(p: Produced, response: dict[str, Any], ids: list[str]) -> None:
    hits = [hit["_source"] for hit in response["hits"]["hits"]]
    assert len(hits) == sum(level == "error" for _, level, _ in p.logs) > 0
    trace_ids = {t["id"] for t in p.traces if t["status"] == "ERROR"}
    for source in hits:
        assert source["log"]["level"] == "error" and source["service"]["name"] in p.services
        assert source["trace"]["id"] in trace_ids and source["span"]["name"] == f"{p.run} child"
    stamps = [hit["sort"][0] for hit in response["hits"]["hits"]]
    assert stamps == sorted(stamps, reverse=True)  # newest first


@check("Trace latency p50 / p95 / p99 by root service")
def _trace_latency(p: Produced, response: dict[str, Any], ids: list[str]) -> None:
    seen: set[str] = set()
    for (service, _), bucket in _rows(response["aggregations"], ids):
        if bucket["doc_count"]:
            durations = [t["duration_us"] for t in p.traces if t["service"] == service]
            _percentiles_within(bucket["1"]["values"], min(durations), max(durations))
            seen.add(service)
    assert seen == set(p.services)


@check("Error rate by root service")
def _error_rate(p: Produced, response: dict[str, Any], ids: list[str]) -> None:
    got: Counter[tuple[str, str]] = Counter()
    for (service, status, _), bucket in _rows(response["aggregations"], ids):
        got[service, status] += bucket["doc_count"]
    assert got == Counter((t["service"], t["status"]) for t in p.traces)
    assert {status for _, status in got} == {"ERROR", "OK"}


@check("Latency and errors by service and operation")
def _by_operation(p: Produced, response: dict[str, Any], ids: list[str]) -> None:
    groups: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for t in p.traces:
        groups[t["service"], t["operation"], t["status"]].append(t["duration_us"])
    rows = dict(_rows(response["aggregations"], ids))
    assert set(rows) == set(groups)
    for key, durations in groups.items():
        bucket = rows[key]
        assert bucket["doc_count"] == len(durations)
        assert bucket["3"]["value"] == max(durations)
        _percentiles_within(bucket["2"]["values"], min(durations), max(durations))


@check("Slowest traces")
def _slowest(p: Produced, response: dict[str, Any], ids: list[str]) -> None:
    rows = list(_rows(response["aggregations"], ids))
    expected = sorted(p.traces, key=lambda t: -t["duration_us"])[:20]
    assert [keys[0] for keys, _ in rows] == [t["id"] for t in expected]
    for (trace_id, service, operation, status), bucket in rows:
        trace = next(t for t in p.traces if t["id"] == trace_id)
        assert (service, operation, status) == (trace["service"], trace["operation"], trace["status"])
        assert bucket["1"]["value"] == trace["duration_us"]


@check("Span latency by service and span name")
def _span_latency(p: Produced, response: dict[str, Any], ids: list[str]) -> None:
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for service, name, duration in p.spans:
        groups[service, name].append(duration)
    rows = dict(_rows(response["aggregations"], ids))
    assert set(rows) == set(groups)
    for key, durations in groups.items():
        assert rows[key]["doc_count"] == len(durations)
        assert rows[key]["3"]["value"] == max(durations)
        _percentiles_within(rows[key]["2"]["values"], min(durations), max(durations))


def _targets(datasource_type: str) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for name in DASHBOARDS:
        dashboard = json.loads((DASHBOARDS_DIR / f"{name}.json").read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                if target["datasource"]["type"] == datasource_type:
                    yield name, panel, target


async def test_every_elasticsearch_panel_query_returns_what_the_pipeline_indexed(
    stack: Stack, tmp_path: Path
) -> None:
    logs_topic, spans_topic, run = new_topics("grafana")
    await create_topics(stack, logs_topic, spans_topic)
    collector = CollectorProcess(stack, tmp_path, logs_topic, spans_topic, group=run, wait_seconds=1)
    collector.start()
    collector.wait_assigned()
    produced, specs, untraced = _make(run)
    async with Producer(stack, logs_topic, spans_topic) as producer:
        for spec in specs:
            await producer.spans(spec.span_request(spec.spans))
            await producer.lines(spec.lines)
        await producer.lines(untraced)
    in_run = {"terms": {"service.name": produced.services}}
    trace_ids = [t["id"] for t in produced.traces]
    logs = await wait_for_count(stack, "tether-logs", in_run, len(produced.logs))
    spans = await wait_for_count(stack, "tether-spans", in_run, len(produced.spans))
    summaries = await wait_for_count(stack, "tether-traces", {"terms": {"trace.id": trace_ids}}, TRACES)
    assert collector.stop() == 0, collector.tail()
    assert (len(logs), len(spans), len(summaries)) == (len(produced.logs), len(produced.spans), TRACES)

    variables = {"service": Variable(produced.services)}
    checked = []
    for dashboard, panel, target in _targets("elasticsearch"):
        body = search_body(
            target,
            time_field="@timestamp",
            from_ms=produced.from_ms,
            to_ms=produced.to_ms,
            variables=variables,
        )
        response = _post(stack, ALIAS[target["datasource"]["uid"]], body)
        assert not response.get("timed_out") and response["_shards"]["failed"] == 0, response
        assert panel["title"] in CHECKS, f"{dashboard}: panel {panel['title']!r} has no check in this test"
        ids = [bucket["id"] for bucket in target.get("bucketAggs", [])]
        CHECKS[panel["title"]](produced, response, ids)
        checked.append(panel["title"])
    assert sorted(checked) == sorted(CHECKS), "every check ran once, on a committed panel"


def _exposed(metrics_text: str) -> set[str]:
    """Every series name a Prometheus scrape of this text would store, samples or not yet."""
    names = set()
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


async def test_every_promql_expression_names_metrics_the_agent_and_collector_expose(
    stack: Stack, tmp_path: Path
) -> None:
    logs_topic, spans_topic, run = new_topics("grafana-prom")
    await create_topics(stack, logs_topic, spans_topic)
    collector = CollectorProcess(stack, tmp_path / "collector", logs_topic, spans_topic, group=run)
    collector.start()
    collector.wait_assigned()
    agent = AgentProcess(stack, tmp_path / "agent")
    await agent.create_topics()
    agent.start()
    try:
        exposed = set()
        for process in (agent, collector):
            status, body = process.get("/metrics")
            assert status == 200
            exposed |= _exposed(body.decode())
    finally:
        assert agent.stop() == 0, agent.tail()
        assert collector.stop() == 0, collector.tail()
    assert any(name.startswith("tether_agent_") for name in exposed)
    assert any(name.startswith("tether_collector_") for name in exposed)

    used: set[str] = set()
    for _, panel, target in _targets("prometheus"):
        names = set(re.findall(r"\btether_\w+", target["expr"]))
        assert names, (panel["title"], target["expr"])
        used |= names
    missing = sorted(used - exposed)
    assert not missing, f"PromQL names metrics nobody exposes: {missing}"
    assert {name.split("_")[1] for name in used} == {"agent", "collector"}
