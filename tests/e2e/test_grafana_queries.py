"""Every panel query of the committed Grafana dashboards, run for real (issue 5, Grafana).

No Grafana server runs here, so what Grafana would do is done by hand: traces and logs with unique
services go through Kafka and a real `tether collector` into Elasticsearch; each Elasticsearch panel
target is translated (grafana.es_query) into the `_search` body Grafana sends, with `$service` set to
this run's services, and its answer is checked against what was produced. PromQL expressions must name
metrics that a real agent and a real collector expose on /metrics.
"""

from __future__ import annotations

import asyncio
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
from grafana.generate import DASHBOARDS, DASHBOARDS_DIR, ERROR_TRACE_COLUMNS, NO_SERVICE_WITHOUT_SPANS
from tests.e2e.agent_harness import AgentProcess
from tests.e2e.collector_harness import (
    CollectorProcess,
    Producer,
    TraceSpec,
    create_topics,
    new_topics,
    wait_for_count,
)
from tether.schemas.indices import TEMPLATE_NAMES, index_template
from tether.stack import Stack

pytestmark = pytest.mark.stack

ALIAS = {
    "tether-es-logs": "tether-logs",
    "tether-es-spans": "tether-spans",
    "tether-es-traces": "tether-traces",
}
TRACES = 18
ERROR_LEVELS = {"error", "fatal"}
# Traces with a fatal line (status OK), a span whose parent is never sent, a service that logs with
# the trace id but sends no span, and both.
FATAL, ORPHAN, NO_SPANS, BOTH = {5}, {6, 10}, {7, 10}, {10}


@dataclass
class Produced:
    """What this run sent, and so what every panel must show."""

    run: str
    services: list[str]  # the root services
    from_ms: int
    to_ms: int
    # id, service, operation, status, duration_us, levels (Counter of its log levels), orphans (count),
    # without_spans (services that logged but sent no span)
    traces: list[dict[str, Any]] = field(default_factory=list)
    spans: list[tuple[str, str, int]] = field(default_factory=list)  # service, name, duration_us
    logs: list[tuple[str, str, bool]] = field(default_factory=list)  # service, level, traced
    log_only_services: list[str] = field(default_factory=list)  # log with trace ids, send no spans

    @property
    def all_services(self) -> list[str]:
        return self.services + self.log_only_services


def _make(run: str) -> tuple[Produced, list[TraceSpec], list[bytes]]:
    services = [f"{run}-web", f"{run}-api", f"{run}-db"]
    base_ns = time.time_ns() - 120 * 1_000_000_000
    produced = Produced(run, services, base_ns // 1_000_000 - 60_000, time.time_ns() // 1_000_000 + 60_000)
    produced.log_only_services = [f"{run}-queue"]
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
        produced.spans += [(service, operation, duration_us), (service, f"{run} child", duration_us // 2)]
        if k in ORPHAN:  # its parent is never sent; inside the root's time, so the duration stays
            spec.spans.append(
                Span(
                    trace_id=spec.trace_id,
                    span_id=os.urandom(8),
                    parent_span_id=os.urandom(8),
                    name=f"{run} orphan",
                    kind=Span.SPAN_KIND_INTERNAL,
                    start_time_unix_nano=start + 150_000,
                    end_time_unix_nano=start + 150_000 + duration_us * 100,
                )
            )
            produced.spans.append((service, f"{run} orphan", duration_us // 10))
        levels = (
            [("info", root_id, service)]
            + ([("error", child_id, service)] if error else [])
            + ([("fatal", child_id, service)] if k in FATAL else [])
            + ([("warn", root_id, service)] * (k % 3 == 0))
            + ([("info", root_id, produced.log_only_services[0])] if k in NO_SPANS else [])
        )
        for n, (level, span_id, logger) in enumerate(levels):
            spec.lines.append(
                _line(start + 200_000 + n, level, logger, f"{run} log {k}.{n}", spec.trace_id, span_id)
            )
            produced.logs.append((logger, level, True))
        produced.traces.append(
            {
                "id": spec.trace_id.hex(),
                "service": service,
                "operation": operation,
                "status": "ERROR" if error else "OK",
                "duration_us": duration_us,
                "levels": Counter(level for level, _, _ in levels),
                "orphans": int(k in ORPHAN),
                "without_spans": produced.log_only_services if k in NO_SPANS else [],
            }
        )
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
    assert len(hits) == sum(level in ERROR_LEVELS for _, level, _ in p.logs) > 0
    trace_ids = {t["id"] for t in p.traces if ERROR_LEVELS & set(t["levels"])}
    for source in hits:
        assert source["log"]["level"] in ERROR_LEVELS and source["service"]["name"] in p.services
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


def _flatten(source: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A document's fields the way Grafana's raw-data response makes columns of them (dotted keys)."""
    flat: dict[str, Any] = {}
    for key, value in source.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@check("Traces whose spans logged errors")
def _error_traces(p: Produced, response: dict[str, Any], ids: list[str]) -> None:
    expected = {t["id"]: t for t in p.traces if ERROR_LEVELS & set(t["levels"])}
    hits = [_flatten(hit["_source"]) for hit in response["hits"]["hits"]]
    assert sorted(hit["trace.id"] for hit in hits) == sorted(expected)
    assert any(t["levels"]["fatal"] and not t["levels"]["error"] for t in expected.values())
    for hit in hits:
        trace = expected[hit["trace.id"]]
        worst = "fatal" if trace["levels"]["fatal"] else "error"
        counts = {
            key.rsplit(".", 1)[1]: n for key, n in hit.items() if key.startswith("trace.logs_by_level.")
        }
        assert (hit["trace.worst_log_level"], counts, hit["trace.log_count"]) == (
            worst,
            dict(trace["levels"]),
            trace["levels"].total(),
        )
        assert (hit["trace.root.service"], hit["trace.root.operation"], hit["trace.status"]) == (
            trace["service"],
            trace["operation"],
            trace["status"],
        )
        assert hit["trace.duration.us"] == trace["duration_us"]
        # Every column the table keeps is there, and no count by level is left out of them.
        assert {c for c in ERROR_TRACE_COLUMNS if not c.startswith("trace.logs_by_level.")} <= set(hit)
        assert {f"trace.logs_by_level.{level}" for level in counts} <= set(ERROR_TRACE_COLUMNS)
    stamps = [hit["sort"][0] for hit in response["hits"]["hits"]]
    assert stamps == sorted(stamps, reverse=True)  # newest first


@check("Broken propagation by service")
def _broken_propagation(p: Produced, response: dict[str, Any], ids: list[str]) -> None:
    expected: Counter[tuple[str, str]] = Counter()
    orphans: Counter[tuple[str, str]] = Counter()
    for t in p.traces:
        if t["orphans"] or t["without_spans"]:
            for service in t["without_spans"] or [NO_SERVICE_WITHOUT_SPANS]:
                expected[t["service"], service] += 1
                orphans[t["service"], service] += t["orphans"]
    rows = dict(_rows(response["aggregations"], ids))
    assert {key: bucket["doc_count"] for key, bucket in rows.items()} == dict(expected)
    assert {key: bucket["2"]["value"] for key, bucket in rows.items()} == {k: orphans[k] for k in expected}
    # Both kinds of breakage, alone and together, are in the answer.
    assert {service for _, service in expected} == {NO_SERVICE_WITHOUT_SPANS, *p.log_only_services}
    assert sum(orphans.values()) == len(ORPHAN) and sum(expected.values()) == len(ORPHAN | NO_SPANS)


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
    await asyncio.to_thread(update_existing_mappings, stack)
    collector = CollectorProcess(stack, tmp_path, logs_topic, spans_topic, group=run, wait_seconds=1)
    collector.start()
    collector.wait_assigned()
    produced, specs, untraced = _make(run)
    async with Producer(stack, logs_topic, spans_topic) as producer:
        for spec in specs:
            await producer.spans(spec.span_request(spec.spans))
            await producer.lines(spec.lines)
        await producer.lines(untraced)
    in_run = {"terms": {"service.name": produced.all_services}}
    logs = await wait_for_count(stack, "tether-logs", in_run, len(produced.logs))
    spans = await wait_for_count(stack, "tether-spans", in_run, len(produced.spans))
    # Each summary once it counts all its logs (a summary written before a late line is written again).
    counted = [
        {
            "bool": {
                "filter": [
                    {"term": {"trace.id": t["id"]}},
                    {"term": {"trace.log_count": t["levels"].total()}},
                ]
            }
        }
        for t in produced.traces
    ]
    summaries = await wait_for_count(stack, "tether-traces", {"bool": {"should": counted}}, TRACES)
    assert collector.stop() == 0, collector.tail()
    assert (len(logs), len(spans), len(summaries)) == (len(produced.logs), len(produced.spans), TRACES)

    variables = {"service": Variable(produced.all_services)}
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


def update_existing_mappings(stack: Stack) -> None:
    """Give indices that already exist the fields of the current templates (additive only).

    Elasticsearch applies an index template when it creates an index, never afterwards, so a daily
    index created before a field was added to the template (on a stack that outlives a change of the
    schemas) would keep the field unindexed until the next day's index; a fresh stack needs nothing.
    """
    for name in TEMPLATE_NAMES:
        template = index_template(name)
        for alias in template["template"].get("aliases", {}):
            request = urllib.request.Request(
                f"{stack.elasticsearch.url}/{alias}/_mapping?allow_no_indices=true",
                data=json.dumps({"properties": template["template"]["mappings"]["properties"]}).encode(),
                headers={"Content-Type": "application/json"},
                method="PUT",
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                assert json.loads(response.read())["acknowledged"]


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
