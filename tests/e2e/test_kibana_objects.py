"""deploy/kibana/tether.ndjson against the real Elasticsearch, with documents a real collector indexed.

Kibana itself is not on this machine; what Kibana asks of Elasticsearch for these objects is: the
data view's title resolves to indices, `_field_caps` knows each field (time field a date, sort and
format fields aggregatable, query fields searchable), and the saved Lucene query runs as a
`query_string`.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from tests.e2e.collector_harness import (
    CollectorProcess,
    Producer,
    TraceSpec,
    create_topics,
    new_topics,
    wait_for_count,
)
from tests.unit.test_kibana_objects import DATE_TYPES, field_uses, load_objects, search_source
from tether.stack import Stack

pytestmark = pytest.mark.stack

TRACES = 4
SPANS_PER_TRACE = 3  # a root and two children, each with one info and one error line


def _get(source: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        source = source[part]
    return source


def _http_get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return int(response.status), bytes(response.read())


async def test_saved_objects_work_on_what_the_collector_indexes(stack: Stack, tmp_path: Path) -> None:
    logs_topic, spans_topic, run = new_topics("kibana")
    await create_topics(stack, logs_topic, spans_topic)
    collector = CollectorProcess(stack, tmp_path, logs_topic, spans_topic, group=run, wait_seconds=1)
    collector.start()
    collector.wait_assigned()
    traces = [TraceSpec.make(n, run=run) for n in range(TRACES)]
    async with Producer(stack, logs_topic, spans_topic) as producer:
        for trace in traces:
            await producer.spans(trace.span_request(trace.spans))
            await producer.lines(trace.lines)
    trace_ids = [trace.trace_id.hex() for trace in traces]
    ours = {"terms": {"trace.id": trace_ids}}
    # Every alias the data views name has documents of this run before anything is asked of it.
    await wait_for_count(stack, "tether-spans", ours, TRACES * SPANS_PER_TRACE)
    await wait_for_count(stack, "tether-traces", ours, TRACES)
    correlated = {"bool": {"filter": [ours, {"term": {"tether.correlation": "span"}}]}}
    await wait_for_count(stack, "tether-logs", correlated, TRACES * SPANS_PER_TRACE * 2)
    assert collector.stop() == 0, collector.tail()

    objects = load_objects()
    es = AsyncElasticsearch(stack.elasticsearch.url)
    try:
        await _check_aliases_and_field_caps(es, objects)
        await _check_saved_search(es, objects, trace_ids)
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
    (search,) = [o for o in objects if o["type"] == "search"]
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
