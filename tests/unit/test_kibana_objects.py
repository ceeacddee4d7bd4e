"""deploy/kibana/tether.ndjson: importable saved objects whose every field exists in our index templates.

The helpers here are shared with tests/e2e/test_kibana_objects.py, which checks the same fields
against the real Elasticsearch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from tether.collector.trace_summary import LEVEL_ORDER
from tether.schemas.indices import TEMPLATE_NAMES, index_template

NDJSON = Path(__file__).resolve().parents[2] / "deploy" / "kibana" / "tether.ndjson"
KNOWN_TYPES = {"index-pattern", "search"}
JAEGER_TRACE_URL = "http://localhost:16686/trace/{{value}}"
INDEX_REF = "kibanaSavedObjectMeta.searchSourceJSON.index"
# Every saved search: its data view and its Lucene query. The levels are the collector's short names
# from error up (collector/trace_summary.py LEVEL_ORDER), the gaps its trace summary flags.
SAVED_SEARCHES = {
    "tether-error-logs": ("tether-logs", "log.level:error"),
    "tether-error-traces": ("tether-traces", "trace.worst_log_level:(error OR fatal)"),
    "tether-error-spans": ("tether-spans", "span.worst_log_level:(error OR fatal)"),
    "tether-broken-propagation": (
        "tether-traces",
        "trace.services_without_spans:* OR trace.orphan_span_count:>0",
    ),
}

# What Kibana needs of a field: a time field must be a date, sort and query fields must be
# aggregatable / searchable, a column only has to exist.
Need = Literal["time", "sort", "query", "column", "format"]


@dataclass(frozen=True)
class FieldUse:
    object_id: str
    alias: str
    field: str
    need: Need


def load_objects(path: Path = NDJSON) -> list[dict[str, Any]]:
    """One JSON object per non-empty line, as the import API reads it."""
    objects = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        value = json.loads(line)
        assert isinstance(value, dict), f"line {number} is not a JSON object"
        objects.append(value)
    return objects


def search_source(obj: dict[str, Any]) -> dict[str, Any]:
    source: dict[str, Any] = json.loads(obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    return source


def data_view_of(search: dict[str, Any], objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The data view a saved search reads, resolved the way Kibana does: indexRefName -> references."""
    ref_name = search_source(search)["indexRefName"]
    (ref,) = [r for r in search["references"] if r["name"] == ref_name]
    (view,) = [o for o in objects if o["type"] == ref["type"] and o["id"] == ref["id"]]
    return view


# field:value terms of a Lucene query string; quoted phrases are removed first so their text is not
# mistaken for field names.
_QUERY_FIELD = re.compile(r"(?<![\w.@\\])([A-Za-z_@][\w.@]*)\s*:")


def query_fields(query: str) -> list[str]:
    return _QUERY_FIELD.findall(re.sub(r'"(?:[^"\\]|\\.)*"', '""', query))


def field_uses(objects: list[dict[str, Any]]) -> list[FieldUse]:
    """Every field the saved objects name, with the data view alias it is read through."""
    uses: list[FieldUse] = []
    for obj in objects:
        attributes = obj["attributes"]
        if obj["type"] == "index-pattern":
            alias = attributes["title"]
            uses.append(FieldUse(obj["id"], alias, attributes["timeFieldName"], "time"))
            for name in json.loads(attributes.get("fieldFormatMap") or "{}"):
                uses.append(FieldUse(obj["id"], alias, name, "format"))
        elif obj["type"] == "search":
            alias = data_view_of(obj, objects)["attributes"]["title"]
            uses += [FieldUse(obj["id"], alias, c, "column") for c in attributes["columns"]]
            uses += [FieldUse(obj["id"], alias, field, "sort") for field, _ in attributes["sort"]]
            query = search_source(obj)["query"]
            uses += [FieldUse(obj["id"], alias, f, "query") for f in query_fields(query["query"])]
    return uses


def template_for(alias: str) -> dict[str, Any]:
    """The index template whose indices carry `alias`."""
    (template,) = [
        index_template(name)
        for name in TEMPLATE_NAMES
        if alias in index_template(name)["template"].get("aliases", {})
    ]
    return template


def mapped_type(alias: str, dotted: str) -> str | None:
    """The mapping type of a dotted field in the template, walking nested `properties`.

    A path below a `flattened` field exists (its keys are searchable as keyword); below anything
    else that has no `properties` it does not.
    """
    node: dict[str, Any] = template_for(alias)["template"]["mappings"]
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        properties = node.get("properties")
        if properties is None or part not in properties:
            return None
        node = properties[part]
        if node.get("type") == "flattened" and i < len(parts) - 1:
            return "flattened"
    return str(node.get("type", "object"))


DATE_TYPES = {"date", "date_nanos"}
NOT_AGGREGATABLE = {"text", "object", "flattened"}  # flattened keys are, the root object is not


# --- the file itself ----------------------------------------------------------------------------------


def test_ndjson_parses_one_known_object_per_line_with_unique_ids() -> None:
    lines = [line for line in NDJSON.read_text().splitlines() if line.strip()]
    objects = load_objects()
    assert len(objects) == len(lines) == 7
    assert {o["type"] for o in objects} <= KNOWN_TYPES
    keys = [(o["type"], o["id"]) for o in objects]
    assert len(set(keys)) == len(keys), keys
    for obj in objects:
        assert isinstance(obj["attributes"], dict) and isinstance(obj["references"], list)
        # coreMigrationVersion newer than the importing Kibana is refused; 8.8.0 is the oldest
        # version that writes it.
        assert obj["coreMigrationVersion"] == "8.8.0"


def test_references_resolve_within_the_file() -> None:
    objects = load_objects()
    ids = {(o["type"], o["id"]) for o in objects}
    for obj in objects:
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in ids, (obj["id"], ref)
    searches = [o for o in objects if o["type"] == "search"]
    assert {search["id"] for search in searches} == set(SAVED_SEARCHES)
    for search in searches:
        # Kibana 8 exports keep the data view out of searchSourceJSON and name the reference instead.
        source = search_source(search)
        assert "index" not in source and source["indexRefName"] == INDEX_REF
        assert data_view_of(search, objects)["id"] == SAVED_SEARCHES[search["id"]][0]


def test_data_views_cover_the_three_aliases_on_timestamp_with_a_jaeger_link() -> None:
    views = [o for o in load_objects() if o["type"] == "index-pattern"]
    assert sorted(v["attributes"]["title"] for v in views) == ["tether-logs", "tether-spans", "tether-traces"]
    for view in views:
        assert view["attributes"]["timeFieldName"] == "@timestamp"
        formats = json.loads(view["attributes"]["fieldFormatMap"])
        assert formats["trace.id"]["id"] == "url"
        assert formats["trace.id"]["params"]["urlTemplate"] == JAEGER_TRACE_URL


def _search(object_id: str) -> dict[str, Any]:
    (search,) = [o for o in load_objects() if o["type"] == "search" and o["id"] == object_id]
    return search


def test_saved_search_is_error_logs_with_trace_service_and_span() -> None:
    search = _search("tether-error-logs")
    attributes = search["attributes"]
    assert attributes["columns"][:3] == ["trace.id", "service.name", "span.name"]
    assert attributes["sort"] == [["@timestamp", "desc"]]
    # Lucene, so that the e2e test runs exactly this string as a query_string query.
    assert search_source(search)["query"] == {"query": "log.level:error", "language": "lucene"}


@pytest.mark.parametrize("object_id", sorted(SAVED_SEARCHES))
def test_saved_searches_run_their_lucene_query_newest_first_with_the_trace_first(object_id: str) -> None:
    search = _search(object_id)
    attributes = search["attributes"]
    # Lucene, so that the e2e test runs exactly this string as a query_string query.
    assert search_source(search)["query"] == {"query": SAVED_SEARCHES[object_id][1], "language": "lucene"}
    assert attributes["sort"] == [["@timestamp", "desc"]]
    assert attributes["columns"][0] == "trace.id"  # the data view formats it as a link to Jaeger
    assert attributes["title"].startswith("tether: ") and attributes["description"]


def test_log_searches_show_the_counts_by_level_and_broken_propagation_the_gaps() -> None:
    traces = _search("tether-error-traces")["attributes"]["columns"]
    assert {"trace.root.service", "trace.worst_log_level", "trace.log_count", "trace.logs_by_level"} <= set(
        traces
    )
    spans = _search("tether-error-spans")["attributes"]["columns"]
    assert {
        "service.name",
        "span.name",
        "span.worst_log_level",
        "span.log_count",
        "span.logs_by_level",
    } <= set(spans)
    broken = _search("tether-broken-propagation")["attributes"]["columns"]
    assert {"trace.services_without_spans", "trace.orphan_span_count", "trace.orphan_spans"} <= set(broken)
    # The error queries name the collector's levels from error up, no more and no less.
    worst = LEVEL_ORDER[LEVEL_ORDER.index("error") :]
    for object_id in ("tether-error-traces", "tether-error-spans"):
        query = SAVED_SEARCHES[object_id][1]
        assert query.endswith(":(" + " OR ".join(worst) + ")"), query


# --- every field exists in the index templates --------------------------------------------------------


@pytest.mark.parametrize("use", field_uses(load_objects()), ids=lambda u: f"{u.object_id}:{u.need}:{u.field}")
def test_every_referenced_field_is_mapped(use: FieldUse) -> None:
    kind = mapped_type(use.alias, use.field)
    assert kind is not None, f"{use.field} is not in the {use.alias} index template"
    if use.need == "time":
        assert kind in DATE_TYPES, kind
    if use.need in ("sort", "format"):
        assert kind not in NOT_AGGREGATABLE, f"{use.field} ({kind}) cannot be sorted on"


def test_field_uses_cover_what_the_objects_name() -> None:
    uses = {(u.alias, u.field, u.need) for u in field_uses(load_objects())}
    assert ("tether-logs", "log.level", "query") in uses
    assert ("tether-logs", "span.name", "column") in uses
    assert ("tether-traces", "trace.id", "format") in uses
    assert ("tether-traces", "trace.worst_log_level", "query") in uses
    assert ("tether-spans", "span.worst_log_level", "query") in uses
    assert ("tether-traces", "trace.services_without_spans", "query") in uses
    assert ("tether-traces", "trace.orphan_span_count", "query") in uses
    assert ("tether-traces", "trace.logs_by_level", "column") in uses


def test_mapped_type_walks_nested_properties_and_refuses_unknown_fields() -> None:
    assert mapped_type("tether-logs", "span.duration.us") == "long"
    assert mapped_type("tether-logs", "@timestamp") == "date_nanos"
    assert mapped_type("tether-logs", "data.anything.below") == "flattened"
    assert mapped_type("tether-logs", "trace.id.more") is None
    assert mapped_type("tether-logs", "span.nam") is None
    assert mapped_type("tether-traces", "span.name") is None  # summaries carry no span


def test_query_fields_ignore_phrases_and_escapes() -> None:
    assert query_fields('log.level:error AND NOT message:"a: b" OR service.name : x') == [
        "log.level",
        "message",
        "service.name",
    ]
    assert query_fields(r"message:a\:b") == ["message"]
