"""Bulk request bodies: bounded in documents and bytes, valid NDJSON, every document exactly once."""

from __future__ import annotations

import tracemalloc

import orjson
import pytest

from tether.collector.config import ElasticsearchSinkConfig
from tether.collector.metrics import CollectorMetrics
from tether.collector.sinks.bulk import bulk_bodies, encode_documents
from tether.collector.sinks.elasticsearch import ElasticsearchSink, IndexRequest
from tether.schemas.indices import daily_index

DAY_NS = 1_700_000_000 * 10**9


def requests(n: int, payload: int = 100) -> list[IndexRequest]:
    return [
        IndexRequest("tether-logs", f"id-{i}", DAY_NS + i, {"message": "x" * payload, "n": i})
        for i in range(n)
    ]


def decode(body: bytes) -> list[tuple[dict[str, object], dict[str, object]]]:
    assert body.endswith(b"\n")
    lines = body.split(b"\n")[:-1]
    assert len(lines) % 2 == 0
    return [(orjson.loads(lines[i]), orjson.loads(lines[i + 1])) for i in range(0, len(lines), 2)]


@pytest.mark.parametrize(
    ("n", "max_docs", "max_bytes"), [(10, 3, 1 << 20), (10, 100, 700), (1, 5, 64), (0, 5, 1 << 20)]
)
def test_bodies_hold_every_document_once_within_bounds(n: int, max_docs: int, max_bytes: int) -> None:
    reqs = requests(n)
    seen: list[str] = []
    for part, body in bulk_bodies(reqs, max_docs, max_bytes):
        pairs = decode(body)
        assert len(pairs) == len(part) <= max_docs
        assert len(body) <= max_bytes or len(part) == 1  # a single oversized document goes alone
        for request, (action, source) in zip(part, pairs, strict=True):
            index = action["index"]
            assert isinstance(index, dict)
            assert index == {
                "_index": daily_index("tether-logs", request.timestamp_ns),
                "_id": request.doc_id,
            }
            assert source == request.source
            seen.append(request.doc_id)
    assert seen == [r.doc_id for r in reqs]


def test_byte_bound_splits_before_the_count_bound() -> None:
    parts = [len(part) for part, _ in bulk_bodies(requests(20, payload=1000), 1000, 5000)]
    assert sum(parts) == 20
    assert len(parts) > 1 and max(parts) < 20


def test_a_pre_encoded_head_and_the_source_make_one_document() -> None:
    head = b'{"@timestamp":"2024-01-02T03:04:05.000000000Z","message":"m",'
    with_source = IndexRequest("tether-logs", "a", DAY_NS, {"tether": {"correlation": "none"}}, head)
    alone = IndexRequest("tether-logs", "b", DAY_NS, {}, head)
    [(_, body)] = bulk_bodies([with_source, alone], 10, 1 << 20)
    assert [source for _, source in decode(body)] == [
        {"@timestamp": "2024-01-02T03:04:05.000000000Z", "message": "m", "tether": {"correlation": "none"}},
        {"@timestamp": "2024-01-02T03:04:05.000000000Z", "message": "m"},
    ]


def test_versioned_documents_carry_an_external_gte_version_and_others_keep_the_plain_action() -> None:
    summary = IndexRequest("tether-traces", "t1", DAY_NS, {"trace": {"id": "t1"}}, version=7)
    plain = IndexRequest("tether-logs", "l1", DAY_NS, {"message": "m"})
    [(_, body)] = bulk_bodies([summary, plain, summary], 10, 1 << 20)
    lines = body.split(b"\n")
    assert orjson.loads(lines[0]) == {
        "index": {
            "_index": daily_index("tether-traces", DAY_NS),
            "_id": "t1",
            "version": 7,
            "version_type": "external_gte",
        }
    }
    assert lines[2] == b'{"index":{"_index":"%s","_id":"l1"}}' % daily_index("tether-logs", DAY_NS).encode()
    assert lines[4] == lines[0]


def test_a_body_being_sent_holds_no_more_than_itself() -> None:
    """While its request is in flight the generator is suspended at its yield: what it holds then
    stays resident for every delivery in flight. A delivery holds its documents encoded already
    (the lines a retry sends again); beside them, a body in flight must cost about itself: orjson
    returns each line in a 4 kB allocation, and keeping those for a join once held ~4 kB per
    document (8 MB here)."""
    reqs = requests(2000)
    tracemalloc.start()
    try:
        documents = encode_documents(reqs)
        encoded, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        bodies = bulk_bodies(documents, 5000, 1 << 30)
        before, _ = tracemalloc.get_traced_memory()
        part, body = next(bodies)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(part) == 2000
    assert encoded < 2 * sum(len(d.lines) for d in documents), encoded  # not 4 kB per document
    assert held - before < 1.2 * len(body), (held - before, len(body))


async def test_bulk_bodies_are_sent_without_another_copy() -> None:
    sink = ElasticsearchSink(ElasticsearchSinkConfig(url="http://127.0.0.1:9"), CollectorMetrics())
    try:
        serializers = sink.client.transport.serializers
        [(_, body)] = bulk_bodies(requests(3), 10, 1 << 20)
        for mimetype in ("application/x-ndjson", "application/vnd.elasticsearch+x-ndjson"):
            assert serializers.dumps(body, mimetype) is body
        # anything else is still serialized as NDJSON
        assert serializers.dumps([{"a": 1}], "application/x-ndjson") == b'{"a":1}\n'
    finally:
        await sink.close()
