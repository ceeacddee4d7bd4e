"""An Elasticsearch panel target, as stored in a dashboard, turned into the `_search` body Grafana sends.

Grafana's Elasticsearch data source builds the request on the server (pkg/tsdb/elasticsearch:
data_query.go, client/search_request.go, client/models.go in grafana/grafana); template variables are
interpolated before that by the front end with the `lucene` format. This module reproduces the subset
of that behaviour the tether dashboards use, so their queries can run against a real Elasticsearch in
tests. Anything outside the subset raises `Unsupported`: a new kind of panel query must extend this
translator (and so its test) before it can be committed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Grafana's default when a terms size or raw-data size is missing, unparsable or zero.
DEFAULT_SIZE = 500
# What the `$__all` value of a variable stands for when it has a custom all value.
ALL = "$__all"

BUCKET_TYPES = {"date_histogram", "terms"}
METRIC_TYPES = {"count", "avg", "sum", "min", "max", "percentiles", "raw_data"}
# Query keys Grafana stores that do not change the request body.
IGNORED_TARGET_KEYS = {"refId", "datasource", "hide", "alias", "timeField", "queryType"}
TARGET_KEYS = IGNORED_TARGET_KEYS | {"query", "metrics", "bucketAggs"}

_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")
# Grafana's luceneEscape: these characters and whitespace get a backslash; numbers stay as they are.
_LUCENE_SPECIAL = re.compile(r"([!*+\-=<>\s&|()\[\]{}^~?:\\/\"])")
# Grafana's interval rounding steps (ms), the bucket width an "auto" date histogram gets.
_INTERVAL_STEPS = [
    10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 20_000, 30_000, 60_000, 120_000,
    300_000, 600_000, 900_000, 1_200_000, 1_800_000, 3_600_000, 7_200_000, 10_800_000, 21_600_000,
    43_200_000, 86_400_000, 604_800_000, 2_592_000_000, 31_536_000_000,
]  # fmt: skip


class Unsupported(ValueError):
    """The target uses a part of Grafana's query model this translator does not reproduce."""


@dataclass(frozen=True)
class Variable:
    """A dashboard variable's current value: one string or several (multi-value); `all_value` is the
    variable's custom all value, used when the value is `$__all`."""

    value: str | Sequence[str]
    all_value: str | None = None


def lucene_escape(value: str) -> str:
    try:
        float(value)
        return value
    except ValueError:
        return _LUCENE_SPECIAL.sub(r"\\\1", value)


def interpolate(query: str, variables: Mapping[str, Variable]) -> str:
    """`$name` / `${name}` replaced the way Grafana's `lucene` format does: a single value escaped, several
    values as `("a" OR "b")`, none as `__empty__`, a custom all value as is."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise Unsupported(f"variable ${name} has no value")
        variable = variables[name]
        value = variable.value
        if value == ALL or (not isinstance(value, str) and list(value) == [ALL]):
            if variable.all_value is None:
                raise Unsupported(f"${name} is All but the variable has no custom all value")
            return variable.all_value  # Grafana does not format custom all values
        if isinstance(value, str):
            return lucene_escape(value)
        if not value:
            return "__empty__"
        return "(" + " OR ".join(f'"{lucene_escape(v)}"' for v in value) + ")"

    return _VARIABLE.sub(replace, query)


def auto_interval_ms(from_ms: int, to_ms: int, max_data_points: int = 1000, min_ms: int = 10_000) -> int:
    """The bucket width of an `auto` date histogram: the range over the data points, rounded up to a
    step, never under the data source's minimum time interval."""
    raw = max((to_ms - from_ms) // max(max_data_points, 1), 1)
    step = next((s for s in _INTERVAL_STEPS if s >= raw), _INTERVAL_STEPS[-1])
    return max(step, min_ms)


def _int(value: Any, default: int) -> int:
    """Grafana's stringToIntWithDefaultValue: unparsable or zero means the default."""
    try:
        number = int(str(value))
    except ValueError:
        return default
    return number or default


def _check_keys(what: str, item: Mapping[str, Any], allowed: set[str]) -> None:
    extra = set(item) - allowed
    if extra:
        raise Unsupported(f"{what}: {sorted(extra)} not supported")


def _metric_body(metric: Mapping[str, Any]) -> dict[str, Any]:
    kind = metric["type"]
    _check_keys(f"metric {kind}", metric, {"id", "type", "field", "settings", "hide"})
    if not metric.get("field"):
        raise Unsupported(f"metric {kind} without a field")
    body: dict[str, Any] = {"field": metric["field"]}
    settings = dict(metric.get("settings") or {})
    if kind == "percentiles":
        _check_keys("percentiles settings", settings, {"percents"})
        if settings.get("percents"):
            body["percents"] = list(settings["percents"])
    elif settings:
        raise Unsupported(f"metric {kind} settings {sorted(settings)} not supported")
    return {kind: body}


def _terms_body(
    bucket: Mapping[str, Any], metrics: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The terms aggregation and the metric aggregations Grafana adds inside it for ordering by a metric."""
    settings = dict(bucket.get("settings") or {})
    _check_keys("terms settings", settings, {"size", "order", "orderBy", "min_doc_count", "missing"})
    terms: dict[str, Any] = {
        "field": bucket["field"],
        "size": _int(settings.get("size"), DEFAULT_SIZE),
        "order": {},
    }
    if "min_doc_count" in settings:
        terms["min_doc_count"] = int(settings["min_doc_count"])
    if "missing" in settings:  # Grafana passes a string setting as is: the key of valueless documents
        if not isinstance(settings["missing"], str):
            raise Unsupported("terms missing must be a string")
        terms["missing"] = settings["missing"]
    extra: dict[str, Any] = {}
    order_by = settings.get("orderBy")
    if order_by is not None:
        direction = settings.get("order", "desc")
        metric_id = re.match(r"^\d+", order_by)
        if metric_id:
            metric = next((m for m in metrics if m["id"] == metric_id.group(0)), None)
            if metric is None:
                raise Unsupported(f"terms ordered by unknown metric {order_by}")
            if metric["type"] == "count":
                terms["order"]["_count"] = direction
            else:
                terms["order"][order_by] = direction
                extra[metric["id"]] = _metric_body(metric)
        elif order_by in ("_count", "_key"):
            terms["order"][order_by] = direction
        else:
            raise Unsupported(f"terms orderBy {order_by!r} not supported (use _count, _key or a metric id)")
    return {"terms": terms}, extra


def _date_histogram_body(
    bucket: Mapping[str, Any], time_field: str, from_ms: int, to_ms: int, interval_ms: int
) -> dict[str, Any]:
    settings = dict(bucket.get("settings") or {})
    _check_keys("date_histogram settings", settings, {"interval", "min_doc_count"})
    interval = settings.get("interval", "auto")
    return {
        "date_histogram": {
            "field": bucket.get("field") or time_field,
            "fixed_interval": f"{interval_ms}ms" if interval == "auto" else interval,
            "min_doc_count": int(settings.get("min_doc_count", 0)),
            "extended_bounds": {"min": from_ms, "max": to_ms},
            "format": "epoch_millis",
        }
    }


def search_body(
    target: Mapping[str, Any],
    *,
    time_field: str,
    from_ms: int,
    to_ms: int,
    variables: Mapping[str, Variable] | None = None,
    interval_ms: int | None = None,
) -> dict[str, Any]:
    """The `_search` body for one target over [from_ms, to_ms]. `time_field` is the data source's
    (Grafana uses the data source's, not the target's); `interval_ms` defaults to the auto interval."""
    _check_keys("target", target, TARGET_KEYS)
    metrics: list[Mapping[str, Any]] = list(target.get("metrics") or [])
    buckets: list[Mapping[str, Any]] = list(target.get("bucketAggs") or [])
    if not metrics:
        raise Unsupported("target without metrics")
    for metric in metrics:
        if metric.get("type") not in METRIC_TYPES:
            raise Unsupported(f"metric type {metric.get('type')!r} not supported")
    for bucket in buckets:
        if bucket.get("type") not in BUCKET_TYPES:
            raise Unsupported(f"bucket aggregation {bucket.get('type')!r} not supported")
        _check_keys(f"bucket {bucket['type']}", bucket, {"id", "type", "field", "settings"})

    query = interpolate(str(target.get("query") or ""), variables or {})
    filters: list[dict[str, Any]] = [
        {"range": {time_field: {"gte": from_ms, "lte": to_ms, "format": "epoch_millis"}}}
    ]
    if query.strip():
        filters.append({"query_string": {"analyze_wildcard": True, "query": query}})
    body: dict[str, Any] = {
        "size": 0,
        "query": {"bool": {"filter": filters[0] if len(filters) == 1 else filters}},
    }

    if metrics[0]["type"] == "raw_data":
        if len(metrics) > 1 or buckets:
            raise Unsupported("raw_data with other metrics or bucket aggregations")
        settings = dict(metrics[0].get("settings") or {})
        _check_keys("raw_data settings", settings, {"size"})
        body["size"] = _int(settings.get("size"), DEFAULT_SIZE)
        body["sort"] = {time_field: {"order": "desc", "unmapped_type": "boolean"}, "_doc": {"order": "desc"}}
        body["docvalue_fields"] = [time_field]
        body["script_fields"] = {}
        body["fields"] = [{"field": time_field, "format": "strict_date_optional_time_nanos"}]
        return body
    if any(m["type"] == "raw_data" for m in metrics):
        raise Unsupported("raw_data must be the only metric")
    if not buckets:
        raise Unsupported("metric query without bucket aggregations")

    interval = interval_ms if interval_ms is not None else auto_interval_ms(from_ms, to_ms)
    # Each bucket aggregation nests inside the previous one; metrics go in the innermost.
    aggs: dict[str, Any] = {}
    body["aggs"] = aggs
    for bucket in buckets:
        if bucket["type"] == "terms":
            node, extra = _terms_body(bucket, metrics)
        else:
            node, extra = _date_histogram_body(bucket, time_field, from_ms, to_ms, interval), {}
        aggs[bucket["id"]] = node
        aggs = node.setdefault("aggs", {})
        aggs.update(extra)
    for metric in metrics:
        if metric["type"] != "count":  # doc_count comes with every bucket
            aggs[metric["id"]] = _metric_body(metric)
    _drop_empty_aggs(body)
    return body


def _drop_empty_aggs(node: dict[str, Any]) -> None:
    """Grafana writes `aggs` only where there are sub-aggregations."""
    for child in node.get("aggs", {}).values():
        _drop_empty_aggs(child)
    if node.get("aggs") == {}:
        del node["aggs"]
