"""Grafana: the committed dashboards are what the code generates, and they fit the provisioning and the
index templates; the query translator gives Grafana's request shapes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from grafana.es_query import Unsupported, Variable, interpolate, search_body
from grafana.generate import (
    DASHBOARDS,
    DASHBOARDS_DIR,
    ERROR_LOG_LEVELS,
    ERROR_TRACE_COLUMNS,
    LOG_LEVELS,
    render,
)
from tether.collector.red_metrics import RedMetrics, RedMetricsConfig
from tether.collector.trace_summary import LEVEL_ORDER

ROOT = Path(__file__).resolve().parents[2]
DATASOURCES = ROOT / "grafana/provisioning/datasources/tether.yaml"
PROVIDERS = ROOT / "grafana/provisioning/dashboards/tether.yaml"
TEMPLATES = ROOT / "schemas/elasticsearch"


def _dashboards() -> dict[str, dict[str, Any]]:
    return {name: json.loads((DASHBOARDS_DIR / f"{name}.json").read_text()) for name in DASHBOARDS}


def _datasources() -> list[dict[str, Any]]:
    return list(yaml.safe_load(DATASOURCES.read_text())["datasources"])


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _mapped_fields(properties: dict[str, Any], prefix: str = "") -> set[str]:
    fields = set()
    for name, spec in properties.items():
        path = f"{prefix}{name}"
        fields.add(path)
        fields |= _mapped_fields(spec.get("properties", {}), f"{path}.")
    return fields


def _template_fields(alias: str) -> set[str]:
    template = json.loads((TEMPLATES / f"{alias}.json").read_text())
    return _mapped_fields(template["template"]["mappings"]["properties"])


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_committed_json_is_what_the_code_generates(name: str) -> None:
    committed = (DASHBOARDS_DIR / f"{name}.json").read_text(encoding="utf-8")
    assert committed == render(name), f"grafana/dashboards/{name}.json is stale: run python -m grafana"
    assert render(name) == render(name)  # deterministic


def test_provisioning_has_the_five_datasources_with_links_both_ways() -> None:
    sources = {source["uid"]: source for source in _datasources()}
    assert {uid: s["type"] for uid, s in sources.items()} == {
        "tether-es-logs": "elasticsearch",
        "tether-es-spans": "elasticsearch",
        "tether-es-traces": "elasticsearch",
        "tether-jaeger": "jaeger",
        "tether-prometheus": "prometheus",
    }
    for uid, alias in [("tether-es-logs", "tether-logs"), ("tether-es-spans", "tether-spans")]:
        data = sources[uid]["jsonData"]
        assert (data["index"], data["timeField"]) == (alias, "@timestamp")
        (link,) = data["dataLinks"]
        assert (link["field"], link["datasourceUid"]) == ("trace.id", "tether-jaeger")
        # `$$` is Grafana's escape for `$`: without it the env expansion would empty the link.
        assert link["url"] == "$${__value.raw}"
    assert sources["tether-es-traces"]["jsonData"]["index"] == "tether-traces"
    logs = sources["tether-es-logs"]["jsonData"]
    assert (logs["logMessageField"], logs["logLevelField"]) == ("message", "log.level")
    to_logs = sources["tether-jaeger"]["jsonData"]["tracesToLogsV2"]
    assert to_logs["datasourceUid"] == "tether-es-logs" and to_logs["filterByTraceID"]
    assert to_logs["query"] == 'trace.id:"$${__trace.traceId}"'
    urls = {uid: s["url"] for uid, s in sources.items()}
    assert urls == {
        "tether-es-logs": "${ELASTICSEARCH_URL}",
        "tether-es-spans": "${ELASTICSEARCH_URL}",
        "tether-es-traces": "${ELASTICSEARCH_URL}",
        "tether-jaeger": "${JAEGER_URL}",
        "tether-prometheus": "${PROMETHEUS_URL}",
    }
    readme = (ROOT / "grafana/README.md").read_text()
    for variable, default in [
        ("ELASTICSEARCH_URL", "http://elasticsearch:9200"),
        ("JAEGER_URL", "http://jaeger:16686"),
        ("PROMETHEUS_URL", "http://prometheus:9090"),
    ]:
        assert f"`{variable}` | `{default}`" in readme


def test_dashboard_provider_points_at_the_mounted_directory() -> None:
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_every_panel_uses_a_provisioned_datasource() -> None:
    uids = {source["uid"] for source in _datasources()}
    dashboards = _dashboards()
    for name, dashboard in dashboards.items():
        for panel in _panels(dashboard):
            refs = [panel["datasource"]] + [t["datasource"] for t in panel.get("targets", [])]
            for ref in refs:
                assert ref["uid"] in uids, (name, panel["title"], ref)
            for override in panel.get("fieldConfig", {}).get("overrides", []):
                for prop in override["properties"]:
                    for link in prop["value"] if prop["id"] == "links" else []:
                        assert link["internal"]["datasourceUid"] in uids
        for variable in dashboard["templating"]["list"]:
            assert variable["datasource"]["uid"] in uids
    assert {len(list(_panels(d))) > 0 for d in dashboards.values()} == {True}


def test_every_elasticsearch_field_exists_in_the_index_template() -> None:
    alias_of = {source["uid"]: source["jsonData"].get("index") for source in _datasources()}
    used = 0
    for dashboard in _dashboards().values():
        for panel in _panels(dashboard):
            for target in panel.get("targets", []):
                alias = alias_of[target["datasource"]["uid"]]
                if target["datasource"]["type"] != "elasticsearch":
                    continue
                mapped = _template_fields(alias)
                fields = [target["timeField"]]
                fields += [m["field"] for m in target["metrics"] if "field" in m]
                fields += [b["field"] for b in target.get("bucketAggs", [])]
                fields += re.findall(r"([\w.@]+):", target["query"])
                for field in fields:
                    assert field in mapped, (panel["title"], alias, field)
                    used += 1
        for variable in dashboard["templating"]["list"]:
            if variable["datasource"]["type"] == "elasticsearch":
                assert json.loads(variable["query"])["field"] in _template_fields(
                    alias_of[variable["datasource"]["uid"]]
                )
    assert used > 20


def test_every_dashboard_filters_by_its_variables() -> None:
    for name, dashboard in _dashboards().items():
        names = {v["name"] for v in dashboard["templating"]["list"]}
        assert names == ({"instance"} if name == "pipeline" else {"service"})
        for panel in _panels(dashboard):
            for target in panel["targets"]:
                text = target.get("query") or target.get("expr")
                assert any(f"${n}" in text for n in names), (name, panel["title"])


def test_the_translator_builds_grafanas_request_for_a_terms_histogram_target() -> None:
    target = {
        "refId": "A",
        "datasource": {"type": "elasticsearch", "uid": "tether-es-traces"},
        "timeField": "@timestamp",
        "query": "trace.root.service:$service",
        "metrics": [
            {"id": "1", "type": "count"},
            {"id": "2", "type": "percentiles", "field": "d", "settings": {"percents": ["50", "99"]}},
            {"id": "3", "type": "max", "field": "d"},
        ],
        "bucketAggs": [
            {
                "id": "4",
                "type": "terms",
                "field": "s",
                "settings": {"size": "0", "orderBy": "3", "order": "desc"},
            },
            {"id": "5", "type": "date_histogram", "field": "@timestamp", "settings": {"interval": "auto"}},
        ],
    }
    body = search_body(
        target,
        time_field="@timestamp",
        from_ms=1_000,
        to_ms=3_601_000,
        variables={"service": Variable(["a-b", "c"])},
    )
    assert body == {
        "size": 0,
        "query": {
            "bool": {
                "filter": [
                    {"range": {"@timestamp": {"gte": 1_000, "lte": 3_601_000, "format": "epoch_millis"}}},
                    {
                        "query_string": {
                            "analyze_wildcard": True,
                            "query": 'trace.root.service:("a\\-b" OR "c")',
                        }
                    },
                ]
            }
        },
        "aggs": {
            "4": {
                # size 0 is Grafana's default of 500; ordering by a metric puts that metric in the terms too
                "terms": {"field": "s", "size": 500, "order": {"3": "desc"}},
                "aggs": {
                    "3": {"max": {"field": "d"}},
                    "5": {
                        "date_histogram": {
                            "field": "@timestamp",
                            "fixed_interval": "10000ms",  # 1 h / 1000 points, not under the 10 s minimum
                            "min_doc_count": 0,
                            "extended_bounds": {"min": 1_000, "max": 3_601_000},
                            "format": "epoch_millis",
                        },
                        "aggs": {
                            "2": {"percentiles": {"field": "d", "percents": ["50", "99"]}},
                            "3": {"max": {"field": "d"}},
                        },
                    },
                },
            }
        },
    }


def test_the_translator_builds_a_raw_data_request_and_the_all_value() -> None:
    target = {
        "refId": "A",
        "query": "service.name:$service AND log.level:error",
        "metrics": [{"id": "1", "type": "raw_data", "settings": {"size": "200"}}],
    }
    body = search_body(
        target, time_field="@timestamp", from_ms=0, to_ms=10, variables={"service": Variable("$__all", "*")}
    )
    assert body["size"] == 200
    assert body["sort"] == {
        "@timestamp": {"order": "desc", "unmapped_type": "boolean"},
        "_doc": {"order": "desc"},
    }
    assert body["query"]["bool"]["filter"][1]["query_string"]["query"] == "service.name:* AND log.level:error"
    assert "aggs" not in body
    # No query string: the filter is the range alone, as one object.
    body = search_body({"metrics": target["metrics"]}, time_field="t", from_ms=0, to_ms=1)
    assert body["query"] == {
        "bool": {"filter": {"range": {"t": {"gte": 0, "lte": 1, "format": "epoch_millis"}}}}
    }


def test_the_translator_passes_a_terms_missing_key() -> None:
    target = {
        "metrics": [{"id": "1", "type": "count"}],
        "bucketAggs": [{"id": "2", "type": "terms", "field": "f", "settings": {"size": "5", "missing": "-"}}],
    }
    body = search_body(target, time_field="@timestamp", from_ms=0, to_ms=1)
    assert body["aggs"] == {"2": {"terms": {"field": "f", "size": 5, "order": {}, "missing": "-"}}}
    target["bucketAggs"][0]["settings"]["missing"] = 0  # type: ignore[index]
    with pytest.raises(Unsupported):
        search_body(target, time_field="@timestamp", from_ms=0, to_ms=1)


def _traces_panel(title: str) -> dict[str, Any]:
    (panel,) = [p for p in _panels(_dashboards()["traces"]) if p["title"] == title]
    assert panel["datasource"]["uid"] == "tether-es-traces"
    return panel


def test_error_traces_table_lists_traces_by_worst_log_level_with_counts_by_level() -> None:
    panel = _traces_panel("Traces whose spans logged errors")
    (target,) = panel["targets"]
    # The levels from error up, in the collector's order of severity.
    assert list(ERROR_LOG_LEVELS) == list(LEVEL_ORDER[LEVEL_ORDER.index("error") :])
    assert f"trace.worst_log_level:({' OR '.join(ERROR_LOG_LEVELS)})" in target["query"]
    assert [m["type"] for m in target["metrics"]] == ["raw_data"] and "bucketAggs" not in target
    # A column for every level the collector counts, so no count is hidden.
    assert sorted(LOG_LEVELS) == sorted(LEVEL_ORDER)
    (organize,) = panel["transformations"]
    shown = [name for name, _ in sorted(organize["options"]["indexByName"].items(), key=lambda kv: kv[1])]
    assert shown == ERROR_TRACE_COLUMNS
    assert set(organize["options"]["includeByName"]) == set(shown)
    assert {f"trace.logs_by_level.{level}" for level in LEVEL_ORDER} <= set(shown)
    for column in shown:  # everything but the flattened counts is a mapped field of the summary
        if not column.startswith("trace.logs_by_level."):
            assert column in _template_fields("tether-traces"), column
    (override,) = panel["fieldConfig"]["overrides"]
    assert override["matcher"] == {"id": "byName", "options": "trace.id"}
    (link,) = override["properties"][0]["value"]
    assert link["internal"]["datasourceUid"] == "tether-jaeger"


def test_broken_propagation_panel_groups_broken_traces_by_service() -> None:
    panel = _traces_panel("Broken propagation by service")
    (target,) = panel["targets"]
    assert "(trace.orphan_span_count:>0 OR trace.services_without_spans:*)" in target["query"]
    assert [(b["type"], b["field"]) for b in target["bucketAggs"]] == [
        ("terms", "trace.root.service"),
        ("terms", "trace.services_without_spans"),
    ]
    # Traces broken only by orphan spans have no services_without_spans: kept under a key of their own.
    assert target["bucketAggs"][1]["settings"]["missing"] == "(none)"
    assert [(m["type"], m.get("field")) for m in target["metrics"]] == [
        ("count", None),
        ("sum", "trace.orphan_span_count"),
    ]


def test_lucene_interpolation_matches_grafana() -> None:
    assert interpolate("s:$service", {"service": Variable("a b")}) == "s:a\\ b"
    assert interpolate("s:${service}", {"service": Variable(["x"])}) == 's:("x")'
    assert interpolate("s:$service", {"service": Variable([])}) == "s:__empty__"
    assert interpolate("n:$n", {"n": Variable("12")}) == "n:12"


@pytest.mark.parametrize(
    "change",
    [
        {"bucketAggs": [{"id": "2", "type": "histogram", "field": "x"}]},
        {"metrics": [{"id": "1", "type": "moving_avg", "field": "1"}]},
        {"metrics": [{"id": "1", "type": "avg", "field": "x", "settings": {"script": "1"}}]},
        {"bucketAggs": [{"id": "2", "type": "terms", "field": "x", "settings": {"orderBy": "_term"}}]},
        {"query": "a:$undefined"},
        {"alias": "x", "format": "table"},
    ],
)
def test_the_translator_refuses_what_it_does_not_reproduce(change: dict[str, Any]) -> None:
    target = {
        "query": "",
        "metrics": [{"id": "1", "type": "count"}],
        "bucketAggs": [{"id": "2", "type": "date_histogram", "field": "@timestamp"}],
        **change,
    }
    with pytest.raises(Unsupported):
        search_body(target, time_field="@timestamp", from_ms=0, to_ms=1)


def test_every_committed_elasticsearch_target_translates() -> None:
    count = 0
    for dashboard in _dashboards().values():
        for panel in _panels(dashboard):
            for target in panel["targets"]:
                if target["datasource"]["type"] == "elasticsearch":
                    search_body(
                        target,
                        time_field="@timestamp",
                        from_ms=0,
                        to_ms=60_000,
                        variables={"service": Variable(["a"])},
                    )
                    count += 1
    assert count == 10


def _prometheus_exprs(title: str) -> list[str]:
    (panel,) = [p for p in _panels(_dashboards()["pipeline"]) if p["title"] == title]
    assert panel["datasource"]["uid"] == "tether-prometheus"
    return [target["expr"] for target in panel["targets"]]


def _exposed_names(registry: CollectorRegistry) -> set[str]:
    """The series names a scrape of the registry stores (histograms: _bucket, _sum, _count)."""
    names = set()
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
    return names


RED_PANELS = [
    "Span requests by service and operation",
    "Span error rate by service and operation",
    "Span duration p50 / p99 by service and operation",
]


def test_red_panels_query_the_span_metrics_the_collector_exposes() -> None:
    registry = CollectorRegistry()
    RedMetrics(registry, RedMetricsConfig())
    exposed = _exposed_names(registry)
    used: set[str] = set()
    for title in RED_PANELS:
        for expr in _prometheus_exprs(title):
            names = set(re.findall(r"\btether_\w+", expr))
            assert names and names <= exposed, (title, expr, exposed)
            assert "by (service, operation)" in expr or "by (le, service, operation)" in expr, expr
            used |= names
    assert used == {
        "tether_collector_span_requests_total",
        "tether_collector_span_errors_total",
        "tether_collector_span_duration_seconds_bucket",
    }
    durations = _prometheus_exprs("Span duration p50 / p99 by service and operation")
    assert [expr.split(",")[0] for expr in durations] == ["histogram_quantile(0.5", "histogram_quantile(0.99"]
    (error_rate,) = _prometheus_exprs("Span error rate by service and operation")
    errors, requests = error_rate.split(" / ")
    assert "span_errors_total" in errors and "span_requests_total" in requests


def test_correlation_health_panels_query_the_per_service_correlation_metrics() -> None:
    # Named by the collector (issue 14): service_log_correlation_total{service, result in
    # span|inferred|trace|none}, service_traces_total{service, logs in yes|no}.
    lines, traces = "tether_collector_service_log_correlation_total", "tether_collector_service_traces_total"
    (shares,) = _prometheus_exprs("Log correlation by service")
    assert shares.count(lines) == 2 and "by (service, result)" in shares and "group_left" in shares
    joined, with_logs = _prometheus_exprs("Correlation health by service")
    assert joined.count(lines) == 2 and 'result=~"span|inferred"' in joined.split(" / ")[0]
    assert with_logs.count(traces) == 2 and 'logs="yes"' in with_logs.split(" / ")[0]
    assert 'logs="yes"' not in with_logs.split(" / ")[1]  # the share of all traces

    (panel,) = [p for p in _panels(_dashboards()["pipeline"]) if p["title"] == "Log correlation by service"]
    assert (panel["type"], panel["options"]["stacking"]) == ("barchart", "normal")
    (target,) = panel["targets"]
    assert (target["instant"], target["format"]) == (True, "table")
    matrix, organize = panel["transformations"]
    assert matrix["id"] == "groupingToMatrix"
    assert (matrix["options"]["rowField"], matrix["options"]["columnField"]) == ("service", "result")
    assert organize["options"]["renameByName"] == {"service\\result": "service"}
    results = {o["matcher"]["options"] for o in panel["fieldConfig"]["overrides"]}
    assert (
        results
        == {"span", "inferred", "trace", "none"}
        == set(organize["options"]["indexByName"]) - {"service\\result"}
    )
