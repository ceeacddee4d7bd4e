"""The Pipeline health dashboard: Prometheus panels of the agent and the collector, with RED metrics
from spans and correlation health per service."""

from __future__ import annotations

from grafana_foundation_sdk.builders import barchart, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DataTransformerConfig,
    DynamicConfigValue,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from grafana.datasources import PROMETHEUS, RATE


def _prom(expr: str, legend: str, ref: str = "A") -> prom.Dataquery:
    return prom.Dataquery().ref_id(ref).datasource(PROMETHEUS).expr(expr).legend_format(legend).range()


def _prom_panel(title: str, description: str, unit: str, *targets: prom.Dataquery) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).description(description).datasource(PROMETHEUS).unit(unit)
    for target in targets:
        panel = panel.with_target(target)
    return panel.height(8).span(12)


def _p95(buckets: str) -> str:
    return f"histogram_quantile(0.95, sum by (le) (rate({buckets}[{RATE}])))"


def _select(*matchers: str) -> str:
    """A PromQL label selector: the dashboard's `$instance`, and these matchers."""
    return "{" + ",".join(('instance=~"$instance"', *matchers)) + "}"


def _red_panels() -> list[timeseries.Panel]:
    """Rate, errors and duration per service and operation, from the collector's span metrics
    (collector/red_metrics.py: counted before sampling; pairs past the cap share `_overflow`)."""
    by, instance = "service, operation", _select()
    legend = "{{service}} {{operation}}"
    requests = f"sum by ({by}) (rate(tether_collector_span_requests_total{instance}[{RATE}]))"
    errors = f"sum by ({by}) (rate(tether_collector_span_errors_total{instance}[{RATE}]))"
    buckets = f"sum by (le, {by}) (rate(tether_collector_span_duration_seconds_bucket{instance}[{RATE}]))"
    return [
        _prom_panel(
            "Span requests by service and operation",
            "Spans per second by service and span name (the RED rate), counted by the collectors as "
            "they arrive, before any sampling. Pairs beyond red_metrics.max_series: _overflow.",
            "reqps",
            _prom(requests, legend, "A"),
        ),
        _prom_panel(
            "Span error rate by service and operation",
            "Share of spans with status ERROR, by service and span name.",
            "percentunit",
            _prom(f"{errors} / {requests}", legend, "A"),
        ),
        _prom_panel(
            "Span duration p50 / p99 by service and operation",
            "Percentiles of span duration from the collectors' histogram (tether_collector_span_duration_"
            "seconds); as exact as its buckets (red_metrics.duration_buckets_ms).",
            "s",
            _prom(f"histogram_quantile(0.5, {buckets})", f"p50 {legend}", "A"),
            _prom(f"histogram_quantile(0.99, {buckets})", f"p99 {legend}", "B"),
        ).span(24),
    ]


CORRELATION_RESULTS = {"span": "green", "inferred": "blue", "trace": "orange", "none": "red"}


def _correlation_health_panels() -> list[barchart.Panel | timeseries.Panel]:
    """Per service: how its traced log lines were correlated, and how many of its traces had logs,
    so a service that breaks context propagation or logs without ids stands out."""
    lines = "tether_collector_service_log_correlation_total"
    traces = "tether_collector_service_traces_total"
    instance = _select()
    by_result = f"sum by (service, result) (increase({lines}{instance}[$__range]))"
    all_lines = f"sum by (service) (increase({lines}{instance}[$__range]))"
    shares = (
        barchart.Panel()
        .title("Log correlation by service")
        .description(
            "Over the time range, each service's traced log lines by correlation result: joined to "
            "their span, span inferred (no span id on the line), trace only, no trace found."
        )
        .datasource(PROMETHEUS)
        .with_target(
            prom.Dataquery()
            .ref_id("A")
            .datasource(PROMETHEUS)
            .expr(f"{by_result} / ignoring (result) group_left {all_lines}")
            .instant()
            .format(PromQueryFormat.TABLE)
        )
        # One row per service, one column per result (no segment where a service had none of it).
        .with_transformation(
            DataTransformerConfig(
                id_val="groupingToMatrix",
                options={
                    "columnField": "result",
                    "rowField": "service",
                    "valueField": "Value",
                    "emptyValue": "null",
                },
            )
        )
        .with_transformation(
            DataTransformerConfig(
                id_val="organize",
                options={
                    "indexByName": {"service\\result": 0}
                    | {r: i + 1 for i, r in enumerate(CORRELATION_RESULTS)},
                    "renameByName": {"service\\result": "service"},
                    "excludeByName": {},
                },
            )
        )
        .orientation(common.VizOrientation.HORIZONTAL)
        .stacking(common.StackingMode.NORMAL)
        .legend(
            cb.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
        )
        .tooltip(cb.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.NONE))
        .unit("percentunit")
        .min(0)
        .max(1)
        .height(8)
        .span(12)
    )
    for result, color in CORRELATION_RESULTS.items():
        shares = shares.override_by_name(
            result, [DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color})]
        )
    joined, with_logs = _select('result=~"span|inferred"'), _select('logs="yes"')
    over_time = _prom_panel(
        "Correlation health by service",
        "Share of each service's traced log lines joined to a span (named or inferred), and share of "
        "the traces rooted in it that had logs.",
        "percentunit",
        _prom(
            f"sum by (service) (rate({lines}{joined}[{RATE}]))"
            f" / sum by (service) (rate({lines}{instance}[{RATE}]))",
            "{{service}} lines joined to a span",
            "A",
        ),
        _prom(
            f"sum by (service) (rate({traces}{with_logs}[{RATE}]))"
            f" / sum by (service) (rate({traces}{instance}[{RATE}]))",
            "{{service}} traces with logs",
            "B",
        ),
    )
    return [shares, over_time.min(0).max(1)]


def pipeline_dashboard() -> db.Dashboard:
    i = _select()
    panels = [
        _prom_panel(
            "Agent throughput",
            "What agents read and what Kafka acknowledged.",
            "ops",
            _prom(f"sum(rate(tether_agent_file_lines_total{i}[{RATE}]))", "file lines/s", "A"),
            _prom(
                f"sum by (signal) (rate(tether_agent_otlp_received_total{i}[{RATE}]))",
                "OTLP {{signal}}/s",
                "B",
            ),
            _prom(
                f"sum by (topic) (rate(tether_agent_kafka_records_total{i}[{RATE}]))",
                "Kafka records {{topic}}/s",
                "C",
            ),
        ),
        _prom_panel(
            "Collector throughput",
            "Kafka records consumed and documents Elasticsearch acknowledged.",
            "ops",
            _prom(
                f"sum by (topic) (rate(tether_collector_records_in_total{i}[{RATE}]))", "in {{topic}}/s", "A"
            ),
            _prom(
                f"sum by (index) (rate(tether_collector_documents_out_total{i}[{RATE}]))",
                "out {{index}}/s",
                "B",
            ),
        ),
        _prom_panel(
            "Agent queue and spool depth",
            "Batches waiting for Kafka in memory, and what spilled to the on-disk spool.",
            "short",
            _prom(f"sum(tether_agent_queue_depth{i})", "in-memory batches", "A"),
            _prom(f"sum(tether_agent_spool_batches{i})", "spool batches", "B"),
            _prom(f"sum(tether_agent_spool_bytes{i})", "spool bytes", "C"),
        ),
        _prom_panel(
            "Consumer lag and held traces",
            "Records behind the end of each topic, and traces the collectors hold in their window.",
            "short",
            _prom(f"sum by (topic) (tether_collector_consumer_lag{i})", "lag {{topic}}", "A"),
            _prom(f"sum(tether_collector_buffered_traces{i})", "held traces", "B"),
        ),
        _prom_panel(
            "Rejections, drops and retries",
            "OTLP items rejected, lines not JSON (agent) or no usable JSON object (collector), records "
            "dropped, Kafka and Elasticsearch retries.",
            "ops",
            _prom(
                f"sum by (signal, reason) (rate(tether_agent_otlp_rejected_total{i}[{RATE}]))",
                "rejected {{signal}} {{reason}}",
                "A",
            ),
            _prom(f"sum(rate(tether_agent_parse_errors_total{i}[{RATE}]))", "parse errors", "B"),
            _prom(
                f"sum by (reason) (rate(tether_agent_dropped_total{i}[{RATE}]))", "dropped {{reason}}", "C"
            ),
            _prom(f"sum(rate(tether_agent_kafka_errors_total{i}[{RATE}]))", "Kafka send errors", "D"),
            _prom(
                f"sum by (reason) (rate(tether_collector_bulk_retries_total{i}[{RATE}]))",
                "bulk retries {{reason}}",
                "E",
            ),
            _prom(
                f"sum by (reason) (rate(tether_collector_unparsed_lines_total{i}[{RATE}]))",
                "collector: lines indexed as plain messages {{reason}}",
                "F",
            ),
        ),
        _prom_panel(
            "Dead letters",
            "Documents Elasticsearch refused for good, by target index, and Kafka records that are no "
            "OTLP request (undecodable-logs, undecodable-spans); all kept in the tether-deadletter index.",
            "ops",
            _prom(f"sum by (index) (rate(tether_collector_deadlettered_total{i}[{RATE}]))", "{{index}}", "A"),
        ),
        _prom_panel(
            "Delivery latency p95",
            "Agent: send to Kafka acknowledgement. Collector: Elasticsearch bulk request.",
            "s",
            _prom(
                _p95(f"tether_agent_kafka_send_seconds_bucket{i}"),
                "agent → Kafka",
                "A",
            ),
            _prom(
                _p95(f"tether_collector_bulk_seconds_bucket{i}"),
                "collector → Elasticsearch",
                "B",
            ),
        ),
        _prom_panel(
            "Log correlation",
            "Logs by correlation result: span, trace (only the trace known), none, untraced.",
            "ops",
            _prom(
                f"sum by (result) (rate(tether_collector_log_correlation_total{i}[{RATE}]))",
                "{{result}}",
                "A",
            ),
        ),
        *_red_panels(),
        *_correlation_health_panels(),
    ]
    instance = (
        db.QueryVariable("instance")
        .label("Instance")
        .datasource(PROMETHEUS)
        .query({"query": 'label_values({__name__=~"tether_.*"}, instance)', "refId": "instance"})
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )
    dashboard = (
        db.Dashboard("tether / Pipeline health")
        .uid("tether-pipeline")
        .tags(["tether"])
        .time("now-1h", "now")
        .refresh("30s")
        .with_variable(instance)
    )
    for panel in panels:
        dashboard = dashboard.with_panel(panel)
    return dashboard
