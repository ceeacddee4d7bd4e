# Two commands for a fresh clone:  `make up` (set up + run the pipeline)  and  `make test`.
SHELL := /bin/bash
# rustup and Go install into the home directory; make them findable from a non-login shell too.
export PATH := $(HOME)/.cargo/bin:/usr/local/go/bin:$(PATH)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN := .run
STAMP := $(VENV)/.installed

.PHONY: up down test unit native-check status dashboards

NATIVE := native/fastlog
$(STAMP): pyproject.toml $(NATIVE)/pyproject.toml $(NATIVE)/Cargo.toml $(NATIVE)/Cargo.lock $(shell find $(NATIVE)/src -name '*.rs')
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "tether needs Python >= 3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@command -v cargo >/dev/null || { echo "cargo not found: the agent's native fast path needs a Rust toolchain (rustup)"; exit 1; }
	$(BIN)/pip install -q ./$(NATIVE)   # the Rust fast paths of both tiers (maturin + cargo)
	touch $(STAMP)

## up: install, start Kafka + Elasticsearch + Jaeger, run an agent and a collector with deploy/examples.
up: $(STAMP)
	$(BIN)/tether stack up
	@mkdir -p $(RUN)/logs
	@for component in agent collector; do \
	  if [ -f $(RUN)/$$component.pid ] && kill -0 $$(cat $(RUN)/$$component.pid) 2>/dev/null; then \
	    echo "$$component: already running (pid $$(cat $(RUN)/$$component.pid))"; \
	  else \
	    TETHER_RUN_DIR=$(RUN) nohup $(BIN)/tether $$component --config deploy/examples/$$component.yaml \
	      >> $(RUN)/$$component.log 2>&1 & echo $$! > $(RUN)/$$component.pid; \
	    echo "$$component: started (pid $$(cat $(RUN)/$$component.pid)), log $(RUN)/$$component.log"; \
	  fi; \
	done
	@echo
	@echo "tether is running. Where to look:"
	@echo "  send spans:  point any OTLP exporter at 127.0.0.1:4317 (gRPC) or http://127.0.0.1:4318 (HTTP)"
	@echo "  write logs:  append JSON lines to $(RUN)/logs/*.log  (e.g. {\"level\":\"info\",\"trace_id\":\"...\",\"message\":\"hi\"})"
	@echo "  search:      curl 'http://127.0.0.1:9200/tether-logs/_search?q=log.level:error'   (aliases tether-logs, tether-spans)"
	@echo "  traces:      http://127.0.0.1:16686  (Jaeger UI and /api/traces/<trace id>)"
	@echo "  terminal:    $(BIN)/tether logs --since 15m     $(BIN)/tether trace <trace id>     (docs/terminal.md)"
	@echo "  Kibana:      import deploy/kibana/tether.ndjson (deploy/kibana/README.md); Grafana: grafana/README.md"
	@echo "  everything in containers: docker compose -f deploy/compose/compose.yaml up  (Kibana :5601, Grafana :3000)"
	@echo "  agent:       http://127.0.0.1:9464/metrics  /healthz  /readyz"
	@echo "  our logs:    $(RUN)/agent.log  $(RUN)/collector.log   servers: $(BIN)/tether stack status"
	@echo "  stop:        make down"

## down: stop the agent, the collector and the stack (by pid).
down:
	@for component in agent collector; do \
	  if [ -f $(RUN)/$$component.pid ]; then kill $$(cat $(RUN)/$$component.pid) 2>/dev/null || true; \
	  rm -f $(RUN)/$$component.pid; echo "$$component: stopped"; fi; \
	done
	@if [ -x $(BIN)/tether ]; then $(BIN)/tether stack down; fi

## dashboards: regenerate grafana/dashboards/*.json from grafana/generate.py (a test fails if they are stale).
dashboards: $(STAMP)
	$(BIN)/python -m grafana

status: $(STAMP)
	$(BIN)/tether stack status

## unit: the fast in-process suite, no stack (seconds): run it on every change.
unit: $(STAMP)
	$(BIN)/python -m pytest -ra -m "not stack" tests/unit

## native-check: the Rust crate's format, lints (with and without its test-only features) and its own
## unit tests, including the differential tests against the reference JSON parser.
native-check:
	cd $(NATIVE) && cargo fmt --check \
	  && cargo clippy --all-targets -- -D warnings \
	  && cargo clippy --all-targets --features reference,bench -- -D warnings \
	  && cargo test --features reference

## test: lint, type-check, the crate's checks, then unit and end-to-end tests (they start the real stack).
test: $(STAMP) native-check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy bench/*.py
	$(BIN)/python -m pytest -ra
