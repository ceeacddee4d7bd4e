"""The data sources the dashboards query: the uids of grafana/provisioning/datasources/tether.yaml."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import DataSourceRef

# The data source uids of grafana/provisioning/datasources/tether.yaml.
LOGS_UID, SPANS_UID, TRACES_UID = "tether-es-logs", "tether-es-spans", "tether-es-traces"
JAEGER_UID, PROMETHEUS_UID = "tether-jaeger", "tether-prometheus"
LOGS = DataSourceRef(type_val="elasticsearch", uid=LOGS_UID)
SPANS = DataSourceRef(type_val="elasticsearch", uid=SPANS_UID)
TRACES = DataSourceRef(type_val="elasticsearch", uid=TRACES_UID)
PROMETHEUS = DataSourceRef(type_val="prometheus", uid=PROMETHEUS_UID)
TIME_FIELD = "@timestamp"
RATE = "$__rate_interval"
