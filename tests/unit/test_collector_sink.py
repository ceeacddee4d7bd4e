"""ElasticsearchSink.index against a scripted bulk response: what is retried, refused, or done."""

from __future__ import annotations

from typing import Any

from tether.collector.config import ElasticsearchSinkConfig
from tether.collector.metrics import CollectorMetrics
from tether.collector.sinks.elasticsearch import ElasticsearchSink, IndexRequest

DAY_NS = 1_700_000_000 * 10**9
CONFLICT = {
    "status": 409,
    "error": {"type": "version_conflict_engine_exception", "reason": "[t]: version conflict"},
}


class _Bulk:
    """Answers each bulk call with the next list of item results."""

    def __init__(self, *answers: list[dict[str, Any]]) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def __call__(self, **_: Any) -> dict[str, Any]:
        self.calls += 1
        items = self.answers.pop(0)
        errors = any(item["status"] >= 300 for item in items)
        return {"errors": errors, "items": [{"index": item} for item in items]}


def _sink(bulk: _Bulk) -> tuple[ElasticsearchSink, CollectorMetrics]:
    metrics = CollectorMetrics()
    sink = ElasticsearchSink(ElasticsearchSinkConfig(), metrics)
    sink.client.bulk = bulk  # type: ignore[method-assign,assignment]
    return sink, metrics


async def test_a_version_conflict_of_a_versioned_document_is_done_and_counted() -> None:
    sink, metrics = _sink(_Bulk([{"status": 201}, CONFLICT]))
    try:
        newer_known = IndexRequest("tether-traces", "t", DAY_NS, {}, version=3)
        rejections = await sink.index([IndexRequest("tether-logs", "l", DAY_NS, {}), newer_known])
        assert rejections == []
        assert metrics.superseded.labels("tether-traces")._value.get() == 1
    finally:
        await sink.close()


async def test_a_version_conflict_of_an_unversioned_document_is_still_a_rejection() -> None:
    sink, metrics = _sink(_Bulk([CONFLICT]))
    try:
        [rejection] = await sink.index([IndexRequest("tether-logs", "l", DAY_NS, {})])
        assert (rejection.status, rejection.error_type) == (409, "version_conflict_engine_exception")
        assert metrics.superseded.labels("tether-logs")._value.get() == 0
    finally:
        await sink.close()


async def test_other_refusals_of_a_versioned_document_are_retried_or_rejected_as_before() -> None:
    bulk = _Bulk(
        [{"status": 429}, {"status": 400, "error": {"type": "document_parsing_exception", "reason": "x"}}],
        [{"status": 200}],
    )
    sink, _ = _sink(bulk)
    try:
        summaries = [IndexRequest("tether-traces", n, DAY_NS, {}, version=1) for n in ("a", "b")]
        [rejection] = await sink.index(summaries)
        assert rejection.request.doc_id == "b" and rejection.status == 400
        assert bulk.calls == 2  # "a" was retried after its 429
    finally:
        await sink.close()
