#!/usr/bin/env bash
# Rebuilds tests/data/loggers/go-*.jsonl and their .expected.jsonl by running the Go
# logging libraries pinned in generate/go/go.mod and go.sum.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/go"
# -trimpath keeps this machine's folders out of zap's caller and stacktrace fields.
GOFLAGS=-mod=mod go run -trimpath . "$here/.."
