"""tether's Grafana setup: provisioning files, dashboards generated as code, and a translator of their
Elasticsearch panel queries into the `_search` bodies Grafana sends (so tests can run them for real)."""
