"""deploy/kibana/tether.ndjson against the real Elasticsearch, with documents a real collector indexed.

Kibana itself is not on this machine; what Kibana asks of Elasticsearch for these objects is: the
data view's title resolves to indices, `_field_caps` knows each field (time field a date, sort and
format fields aggregatable, query fields searchable), and the saved Lucene query runs as a
`query_string`.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from elasticsearch import AsyncElasticsearch
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.e2e.collector_harness import (
    CollectorProcess,
    Producer,
    TraceSpec,
    create_topics,
    new_topics,
    wait_for_count,
)
from tests.e2e.test_grafana_queries import update_existing_mappings
from tests.unit.test_kibana_objects import (
    DATE_TYPES,
    SAVED_SEARCHES,
    data_view_of,
    field_uses,
    load_objects,
    search_source,
)
from tether.stack import Stack

pytestmark = pytest.mark.stack

TRACES = 4
SPANS_PER_TRACE = 3  # a root and two children, each with one info and one error line
ERROR_LEVELS = {"error", "fatal"}


def _get(source: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        source = source[part]
    return source


def _line(trace: TraceSpec, span: Span, level: str, message: str, service: str | None = None) -> bytes:
    line = {
        "@timestamp": (span.start_time_unix_nano + 500) / 1e9,
        "level": level,
        "trace_id": trace.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "message": message,
    }
    return orjson.dumps(line | ({"service": service} if service else {}))


def _gap_traces(run: str) -> dict[str, TraceSpec]:
    """Three traces with info lines only, and one gap each: a fatal line; a span whose parent is never
    sent; a line of a service that logs with the trace id but sends no span."""
    fatal, orphaned, unspanned = (
        TraceSpec.make(TRACES + k, children=1, logs_per_span=1, run=run) for k in range(3)
    )
    fatal.lines.append(_line(fatal, fatal.spans[1], "fatal", f"{run} fatal"))
    root = orphaned.spans[0]
    orphaned.spans.append(
        Span(
            trace_id=orphaned.trace_id,
            span_id=os.urandom(8),
            parent_span_id=os.urandom(8),
            name=f"{run} orphan",
            kind=Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=root.start_time_unix_nano + 100,
            end_time_unix_nano=root.start_time_unix_nano + 200,
        )
    )
    unspanned.lines.append(_line(unspanned, unspanned.spans[0], "info", f"{run} queue", f"{run}-queue"))
    return {"fatal": fatal, "orphaned": orphaned, "unspanned": unspanned}


def _http_get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return int(response.status), bytes(response.read())


async def test_saved_objects_work_on_what_the_collector_indexes(stack: Stack, tmp_path: Path) -> None:
    logs_topic, spans_topic, run = new_topics("kibana")
    await create_topics(stack, logs_topic, spans_topic)
    await asyncio.to_thread(update_existing_mappings, stack)
    collector = CollectorProcess(stack, tmp_path, logs_topic, spans_topic, group=run, wait_seconds=1)
    collector.start()
    collector.wait_assigned()
    traces = [TraceSpec.make(n, run=run) for n in range(TRACES)]
    gaps = _gap_traces(run)
    async with Producer(stack, logs_topic, spans_topic) as producer:
        for trace in [*traces, *gaps.values()]:
            await producer.spans(trace.span_request(trace.spans))
            await producer.lines(trace.lines)
    trace_ids = [trace.trace_id.hex() for trace in traces]
    ours = {"terms": {"trace.id": trace_ids}}
    # Every alias the data views name has documents of this run before anything is asked of it.
    await wait_for_count(stack, "tether-spans", ours, TRACES * SPANS_PER_TRACE)
    await wait_for_count(stack, "tether-traces", ours, TRACES)
    correlated = {"bool": {"filter": [ours, {"term": {"tether.correlation": "span"}}]}}
    await wait_for_count(stack, "tether-logs", correlated, TRACES * SPANS_PER_TRACE * 2)
    # The gap traces' summaries once they count every line (a summary is rewritten as lines come).
    complete = [
        {
            "bool": {
                "filter": [
                    {"term": {"trace.id": t.trace_id.hex()}},
                    {"term": {"trace.log_count": len(t.lines)}},
                ]
            }
        }
        for t in gaps.values()
    ]
    await wait_for_count(stack, "tether-traces", {"bool": {"should": complete}}, len(gaps))
    assert collector.stop() == 0, collector.tail()

    objects = load_objects()
    es = AsyncElasticsearch(stack.elasticsearch.url)
    try:
        await _check_aliases_and_field_caps(es, objects)
        await _check_saved_search(es, objects, trace_ids)
        await _check_log_and_gap_searches(es, objects, traces, gaps, run)
    finally:
        await es.close()

    # The formatter's link opens the Jaeger UI, which shows a trace the collector exported.
    view = next(o for o in objects if o["type"] == "index-pattern")
    template = json.loads(view["attributes"]["fieldFormatMap"])["trace.id"]["params"]["urlTemplate"]
    status, _ = await asyncio.to_thread(_http_get, template.replace("{{value}}", trace_ids[0]))
    assert status == 200
    status, body = await asyncio.to_thread(_http_get, f"{stack.jaeger.query_url}/api/traces/{trace_ids[0]}")
    (trace,) = json.loads(body)["data"]
    assert len(trace["spans"]) == SPANS_PER_TRACE


async def _check_aliases_and_field_caps(es: AsyncElasticsearch, objects: list[dict[str, Any]]) -> None:
    for view in (o for o in objects if o["type"] == "index-pattern"):
        alias = view["attributes"]["title"]
        indices = await es.indices.get_alias(name=alias)
        assert indices.body, f"{alias} resolves to no index"
    by_alias: dict[str, list[Any]] = {}
    for use in field_uses(objects):
        by_alias.setdefault(use.alias, []).append(use)
    for alias, uses in by_alias.items():
        response = await es.field_caps(index=alias, fields=sorted({u.field for u in uses}))
        caps = response["fields"]
        for use in uses:
            assert use.field in caps, f"{alias}: _field_caps does not know {use.field}"
            # One type across every daily index, or Kibana shows the field as a conflict.
            ((kind, cap),) = caps[use.field].items()
            assert cap["searchable"], f"{alias}: {use.field} is not searchable"
            if use.need == "time":
                assert kind in DATE_TYPES and cap["aggregatable"], (use.field, kind)
            if use.need in ("sort", "format", "time"):
                assert cap["aggregatable"], f"{alias}: {use.field} ({kind}) is not aggregatable"


async def _check_saved_search(
    es: AsyncElasticsearch, objects: list[dict[str, Any]], trace_ids: list[str]
) -> None:
    (search,) = [o for o in objects if o["id"] == "tether-error-logs"]
    attributes = search["attributes"]
    query = search_source(search)["query"]
    assert query["language"] == "lucene"
    # Kibana sends a Lucene query this way; restricted to this run's traces, the rest is shared.
    response = await es.search(
        index="tether-logs",
        query={
            "bool": {
                "must": [{"query_string": {"query": query["query"], "analyze_wildcard": True}}],
                "filter": [{"terms": {"trace.id": trace_ids}}],
            }
        },
        sort=[{field: {"order": order}} for field, order in attributes["sort"]],
        size=100,
    )
    hits = response["hits"]["hits"]
    assert len(hits) == TRACES * SPANS_PER_TRACE  # the error lines, none of the info lines
    for hit in hits:
        source = hit["_source"]
        assert source["log"]["level"] == "error"
        for column in attributes["columns"]:
            assert _get(source, column), f"{column} is empty in {source}"
    stamps = [hit["_source"]["@timestamp"] for hit in hits]
    assert stamps == sorted(stamps, reverse=True)


async def _run_search(
    es: AsyncElasticsearch, objects: list[dict[str, Any]], object_id: str, trace_ids: list[str]
) -> list[dict[str, Any]]:
    """A saved search's hits among this run's traces, as Kibana asks for them."""
    (search,) = [o for o in objects if o["id"] == object_id]
    query = search_source(search)["query"]
    assert query["language"] == "lucene"
    alias = data_view_of(search, objects)["attributes"]["title"]
    assert alias == SAVED_SEARCHES[object_id][0]
    await es.indices.refresh(index=alias)
    response = await es.search(
        index=alias,
        query={
            "bool": {
                "must": [{"query_string": {"query": query["query"], "analyze_wildcard": True}}],
                "filter": [{"terms": {"trace.id": trace_ids}}],
            }
        },
        sort=[{field: {"order": order}} for field, order in search["attributes"]["sort"]],
        size=100,
    )
    hits = [hit["_source"] for hit in response["hits"]["hits"]]
    stamps = [source["@timestamp"] for source in hits]
    assert stamps == sorted(stamps, reverse=True)
    # Every column shows something on some hit (a gap column may be empty where that gap is not).
    for column in search["attributes"]["columns"]:
        assert any(_has(source, column) for source in hits), f"{object_id}: no hit has {column}"
    return hits


def _has(source: dict[str, Any], dotted: str) -> bool:
    try:
        return _get(source, dotted) not in (None, "", [], {})
    except (KeyError, TypeError):
        return False


def _levels(trace: TraceSpec) -> dict[str, Counter[str]]:
    """The levels of a trace's lines by span id."""
    levels: dict[str, Counter[str]] = {}
    for line in trace.lines:
        value = orjson.loads(line)
        levels.setdefault(value["span_id"], Counter())[value["level"]] += 1
    return levels


async def _check_log_and_gap_searches(
    es: AsyncElasticsearch,
    objects: list[dict[str, Any]],
    traces: list[TraceSpec],
    gaps: dict[str, TraceSpec],
    run: str,
) -> None:
    everything = [*traces, *gaps.values()]
    ids = [t.trace_id.hex() for t in everything]

    # Traces: the four with error lines and the one with a fatal line, not the info-only ones.
    hits = await _run_search(es, objects, "tether-error-traces", ids)
    by_trace = {source["trace"]["id"]: source["trace"] for source in hits}
    expected = {t.trace_id.hex(): t for t in [*traces, gaps["fatal"]]}
    assert set(by_trace) == set(expected)
    for trace_id, trace in expected.items():
        levels = sum(_levels(trace).values(), Counter())
        worst = "fatal" if levels["fatal"] else "error"
        got = by_trace[trace_id]
        assert (got["worst_log_level"], got["logs_by_level"], got["log_count"]) == (
            worst,
            dict(levels),
            levels.total(),
        )
        assert got["root"]["service"] == trace.service

    # Spans: each span an error or fatal line was joined to, and only those.
    hits = await _run_search(es, objects, "tether-error-spans", ids)
    got_spans = {(s["trace"]["id"], s["span"]["id"]): s["span"] for s in hits}
    wanted = {
        (t.trace_id.hex(), span_id): levels
        for t in everything
        for span_id, levels in _levels(t).items()
        if ERROR_LEVELS & set(levels)
    }
    assert set(got_spans) == set(wanted)
    assert len(wanted) == TRACES * SPANS_PER_TRACE + 1
    for key, levels in wanted.items():
        span = got_spans[key]
        worst = "fatal" if levels["fatal"] else "error"
        assert (span["worst_log_level"], span["logs_by_level"], span["log_count"]) == (
            worst,
            dict(levels),
            levels.total(),
        )

    # Broken propagation: the trace with a span whose parent never came, and the one where a
    # service logged without sending spans; none of the others.
    hits = await _run_search(es, objects, "tether-broken-propagation", ids)
    broken = {source["trace"]["id"]: source["trace"] for source in hits}
    orphaned, unspanned = gaps["orphaned"].trace_id.hex(), gaps["unspanned"].trace_id.hex()
    assert set(broken) == {orphaned, unspanned}
    assert broken[orphaned]["orphan_span_count"] == 1
    assert broken[orphaned]["orphan_spans"] == [gaps["orphaned"].spans[-1].span_id.hex()]
    assert "services_without_spans" not in broken[orphaned]
    assert broken[unspanned]["orphan_span_count"] == 0
    assert broken[unspanned]["services_without_spans"] == [f"{run}-queue"]
