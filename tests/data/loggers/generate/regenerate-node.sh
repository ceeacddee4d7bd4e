#!/usr/bin/env bash
# Rebuilds tests/data/loggers/node-*.jsonl and their .expected.jsonl by running the real libraries.
# Dependencies come from node/package-lock.json (npm ci; node_modules is not committed).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/node"
npm ci --no-audit --no-fund
for library in node-pino node-bunyan node-winston node-winston-timestamp; do
  # One process per library: each instrumentation patches its library when it is first required.
  node generate.js "$library"
done
ls -l "$here"/../node-*.jsonl
