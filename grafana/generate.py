"""tether's Grafana dashboards as code, built with grafana-foundation-sdk: one function per dashboard.

`python -m grafana` writes them to grafana/dashboards/*.json; the committed JSON must match (a unit test
checks). Data source uids are those of grafana/provisioning/datasources/tether.yaml (`datasources.py`);
the Prometheus dashboard of the pipeline itself is built in `pipeline.py`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import elasticsearch as es
from grafana_foundation_sdk.builders import table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.elasticsearch import TermsOrder

from grafana.datasources import (
    JAEGER_UID,
    LOGS,
    SPANS,
    TIME_FIELD,
    TRACES,
)
from grafana.pipeline import pipeline_dashboard

DASHBOARDS_DIR = Path(__file__).parent / "dashboards"

ERROR_LEVELS = "(error OR fatal OR critical OR panic)"
# The worst levels that make a trace or span count as "logged errors": the collector's short names
# (collector/trace_summary.py LEVEL_ORDER), from error up.
ERROR_LOG_LEVELS = ("error", "fatal")
# The log levels the collector counts per trace (trace.logs_by_level.<level>), most severe first.
LOG_LEVELS = ("fatal", "error", "warn", "info", "debug", "trace")
ERROR_TRACE_COLUMNS = [
    "@timestamp",
    "trace.id",
    "trace.root.service",
    "trace.root.operation",
    "trace.duration.us",
    "trace.status",
    "trace.worst_log_level",
    "trace.log_count",
    *(f"trace.logs_by_level.{level}" for level in LOG_LEVELS),
]
# The bucket of a broken trace in which no service logged without spans (only orphan spans).
NO_SERVICE_WITHOUT_SPANS = "(none)"


def _service_variable(datasource: DataSourceRef, field: str) -> db.QueryVariable:
    """`$service`: the values of `field` in the data source; All is `*` so the query stays short."""
    return (
        db.QueryVariable("service")
        .label("Service")
        .datasource(datasource)
        .query(json.dumps({"find": "terms", "field": field}))
        .multi(True)
        .include_all(True)
        .all_value("*")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )


def _es(datasource: DataSourceRef, query: str) -> es.Dataquery:
    return es.Dataquery().ref_id("A").datasource(datasource).time_field(TIME_FIELD).query(query)


def _terms(
    agg_id: str, field: str, size: int = 10, order_by: str = "_count", missing: str | None = None
) -> es.Terms:
    """A terms bucket; `missing` is the key of the documents that have no value of the field
    (without it they are left out)."""
    settings = (
        es.ElasticsearchTermsSettings()
        .size(str(size))
        .order(TermsOrder.DESC)
        .order_by(order_by)
        .min_doc_count("1")
    )
    if missing is not None:
        settings = settings.missing(missing)
    return es.Terms().id(agg_id).field(field).settings(settings)


def _histogram(agg_id: str) -> es.DateHistogram:
    return (
        es.DateHistogram()
        .id(agg_id)
        .field(TIME_FIELD)
        .settings(es.ElasticsearchDateHistogramSettings().interval("auto").min_doc_count("0"))
    )


def _percentiles(metric_id: str, field: str) -> es.Percentiles:
    return (
        es.Percentiles()
        .id(metric_id)
        .field(field)
        .settings(es.ElasticsearchPercentilesSettings().percents(["50", "95", "99"]))
    )


def _trace_link(title: str = "Open trace in Jaeger") -> DynamicConfigValue:
    """A data link that opens the cell's trace id in the Jaeger data source (Explore)."""
    return DynamicConfigValue(
        id_val="links",
        value=[
            {
                "title": title,
                "url": "",
                "internal": {
                    "datasourceUid": JAEGER_UID,
                    "datasourceName": "Jaeger",
                    "query": {"query": "${__value.raw}", "refId": "A"},
                },
            }
        ],
    )


def _bars(panel: timeseries.Panel) -> timeseries.Panel:
    return (
        panel.draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(80)
        .stacking(cb.StackingConfig().mode(common.StackingMode.NORMAL))
    )


def logs_dashboard() -> db.Dashboard:
    service = "service.name:$service"
    by_level = _bars(
        timeseries.Panel()
        .title("Log volume by level")
        .description("Log lines per interval, by log.level.")
        .datasource(LOGS)
        .with_target(
            _es(LOGS, service)
            .metrics([es.Count().id("1")])
            .bucket_aggs([_terms("2", "log.level"), _histogram("3")])
        )
        .height(8)
        .span(12)
    )
    by_service = _bars(
        timeseries.Panel()
        .title("Log volume by service")
        .description("Log lines per interval, by service.name.")
        .datasource(LOGS)
        .with_target(
            _es(LOGS, service)
            .metrics([es.Count().id("1")])
            .bucket_aggs([_terms("2", "service.name", size=20), _histogram("3")])
        )
        .height(8)
        .span(12)
    )
    error_logs = (
        table.Panel()
        .title("Error logs")
        .description("The latest error-level lines; trace.id opens the trace in Jaeger.")
        .datasource(LOGS)
        .with_target(
            _es(LOGS, f"{service} AND log.level:{ERROR_LEVELS}").metrics(
                [es.RawData().id("1").settings(es.ElasticsearchRawDataSettings().size("200"))]
            )
        )
        .with_transformation(
            _organize(
                ["@timestamp", "service.name", "log.level", "message", "span.name", "trace.id", "span.id"]
            )
        )
        .override_by_name("trace.id", [_trace_link()])
        .height(12)
        .span(24)
    )
    return (
        db.Dashboard("tether / Logs")
        .uid("tether-logs")
        .tags(["tether"])
        .time("now-1h", "now")
        .refresh("30s")
        .with_variable(_service_variable(LOGS, "service.name"))
        .with_panel(by_level)
        .with_panel(by_service)
        .with_panel(error_logs)
    )


def _organize(columns: list[str], rename: dict[str, str] | None = None) -> DataTransformerConfig:
    """Keep and order the given columns of a raw-data table (Grafana's `organize` transformation)."""
    return DataTransformerConfig(
        id_val="organize",
        options={
            "indexByName": {name: i for i, name in enumerate(columns)},
            "includeByName": dict.fromkeys(columns, True),
            "excludeByName": {},
            "renameByName": rename or {},
        },
    )


def _error_traces_panel(root: str) -> table.Panel:
    """Trace summaries whose worst log level is error or fatal: a flag the collector writes, so no
    join of tether-logs to tether-traces is needed. Raw documents, because the counts by level live in
    a flattened field (trace.logs_by_level), which has no numeric aggregations."""
    levels = " OR ".join(ERROR_LOG_LEVELS)
    return (
        table.Panel()
        .title("Traces whose spans logged errors")
        .description(
            "The latest traces with an error or fatal log line (trace.worst_log_level), with their log "
            "lines by level; trace.id opens the trace in Jaeger."
        )
        .datasource(TRACES)
        .with_target(
            _es(TRACES, f"{root} AND trace.worst_log_level:({levels})").metrics(
                [es.RawData().id("1").settings(es.ElasticsearchRawDataSettings().size("100"))]
            )
        )
        .with_transformation(
            _organize(
                ERROR_TRACE_COLUMNS,
                {f"trace.logs_by_level.{level}": f"{level} logs" for level in LOG_LEVELS},
            )
        )
        .override_by_name("trace.id", [_trace_link()])
        .height(10)
        .span(24)
    )


def _broken_propagation_panel(root: str) -> table.Panel:
    """Traces with spans whose parent never arrived, or with services that logged under the trace id
    but sent no span: per root service and per service that sent no spans."""
    broken = "(trace.orphan_span_count:>0 OR trace.services_without_spans:*)"
    return (
        table.Panel()
        .title("Broken propagation by service")
        .description(
            "Traces whose context propagation broke, by root service and by the service that logged with "
            f"the trace id but sent no span ({NO_SERVICE_WITHOUT_SPANS}: only spans whose parent never "
            "arrived): traces, and spans without their parent."
        )
        .datasource(TRACES)
        .with_target(
            _es(TRACES, f"{root} AND {broken}")
            .metrics([es.Count().id("1"), es.Sum().id("2").field("trace.orphan_span_count")])
            .bucket_aggs(
                [
                    _terms("3", "trace.root.service", size=50),
                    _terms("4", "trace.services_without_spans", size=50, missing=NO_SERVICE_WITHOUT_SPANS),
                ]
            )
        )
        .height(10)
        .span(12)
    )


def traces_dashboard() -> db.Dashboard:
    root = "trace.root.service:$service"
    latency = (
        timeseries.Panel()
        .title("Trace latency p50 / p95 / p99 by root service")
        .description("Percentiles of trace.duration.us over the trace summaries (tether-traces).")
        .datasource(TRACES)
        .unit("µs")
        .with_target(
            _es(TRACES, root)
            .metrics([_percentiles("1", "trace.duration.us")])
            .bucket_aggs([_terms("2", "trace.root.service", size=20), _histogram("3")])
        )
        .height(8)
        .span(12)
    )
    errors = (
        timeseries.Panel()
        .title("Error rate by root service")
        .description("Traces by status per root service, stacked to 100%: the ERROR share is the error rate.")
        .datasource(TRACES)
        .with_target(
            _es(TRACES, root)
            .metrics([es.Count().id("1")])
            .bucket_aggs(
                [
                    _terms("2", "trace.root.service", size=20),
                    _terms("3", "trace.status", size=5),
                    _histogram("4"),
                ]
            )
        )
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(80)
        .stacking(cb.StackingConfig().mode(common.StackingMode.PERCENT))
        .unit("percentunit")
        .height(8)
        .span(12)
    )
    operations = (
        table.Panel()
        .title("Latency and errors by service and operation")
        .description(
            "Per root service, root operation and trace status: traces, p50/p95/p99 and max duration (µs)."
        )
        .datasource(TRACES)
        .with_target(
            _es(TRACES, root)
            .metrics(
                [
                    es.Count().id("1"),
                    _percentiles("2", "trace.duration.us"),
                    es.Max().id("3").field("trace.duration.us"),
                ]
            )
            .bucket_aggs(
                [
                    _terms("4", "trace.root.service", size=50),
                    _terms("5", "trace.root.operation", size=50),
                    _terms("6", "trace.status", size=5),
                ]
            )
        )
        .height(10)
        .span(24)
    )
    slowest = (
        table.Panel()
        .title("Slowest traces")
        .description("The 20 longest traces; trace.id opens the trace in Jaeger.")
        .datasource(TRACES)
        .with_target(
            _es(TRACES, root)
            .metrics([es.Max().id("1").field("trace.duration.us")])
            .bucket_aggs(
                [
                    _terms("2", "trace.id", size=20, order_by="1"),
                    _terms("3", "trace.root.service", size=1),
                    _terms("4", "trace.root.operation", size=1),
                    _terms("5", "trace.status", size=1),
                ]
            )
        )
        .override_by_name("trace.id", [_trace_link()])
        .sort_by([cb.TableSortByFieldState().display_name("Max trace.duration.us").desc(True)])
        .height(10)
        .span(12)
    )
    spans = (
        table.Panel()
        .title("Span latency by service and span name")
        .description("Every span (tether-spans), not only roots: p50/p95/p99 and max of span.duration.us.")
        .datasource(SPANS)
        .with_target(
            _es(SPANS, "service.name:$service")
            .metrics(
                [
                    es.Count().id("1"),
                    _percentiles("2", "span.duration.us"),
                    es.Max().id("3").field("span.duration.us"),
                ]
            )
            .bucket_aggs([_terms("4", "service.name", size=50), _terms("5", "span.name", size=50)])
        )
        .height(10)
        .span(12)
    )
    return (
        db.Dashboard("tether / Traces")
        .uid("tether-traces")
        .tags(["tether"])
        .time("now-1h", "now")
        .refresh("30s")
        .with_variable(_service_variable(TRACES, "trace.root.service"))
        .with_panel(latency)
        .with_panel(errors)
        .with_panel(operations)
        .with_panel(slowest)
        .with_panel(spans)
        .with_panel(_error_traces_panel(root))
        .with_panel(_broken_propagation_panel(root))
    )


DASHBOARDS: dict[str, Callable[[], db.Dashboard]] = {
    "logs": logs_dashboard,
    "traces": traces_dashboard,
    "pipeline": pipeline_dashboard,
}


def render(name: str) -> str:
    """A dashboard's JSON text: sorted keys, two-space indent, trailing newline (stable for diffs)."""
    model = DASHBOARDS[name]().build()
    return json.dumps(model, cls=JSONEncoder, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_all(directory: Path = DASHBOARDS_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in DASHBOARDS:
        path = directory / f"{name}.json"
        path.write_text(render(name), encoding="utf-8")
        written.append(path)
    return written
