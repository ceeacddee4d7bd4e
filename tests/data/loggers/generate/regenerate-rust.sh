#!/usr/bin/env bash
# Rebuilds tests/data/loggers/rust-tracing-subscriber.jsonl and its .expected.jsonl by
# running tracing-subscriber, tracing-opentelemetry and opentelemetry_sdk as pinned in
# generate/rust/Cargo.lock.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/rust"
# The build folder stays out of the repository unless CARGO_TARGET_DIR says where.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tether-gen/rust-target}"
cargo run --locked --quiet -- "$here/.."
