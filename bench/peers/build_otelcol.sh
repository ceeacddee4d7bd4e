#!/usr/bin/env bash
# Builds the OpenTelemetry Collector peer for bench/peers_bench.py with the collector's own builder
# (ocb, go.opentelemetry.io/collector/cmd/builder) from the Go module proxy: the filelog receiver
# (its stanza operators include json_parser), the otlp receiver, the batch processor and the kafka
# exporter for the agent's peer runs; the kafka receiver (with the kafka exporter's otlp_json, or the
# debug exporter, behind it) for the collector tier's (bench/collector_peer_bench.py) and for the
# interop test (tests/e2e/test_otelcol_interop.py). The contrib elasticsearch exporter and file
# exporter are not in it: the module proxy refuses the first (403 at v0.165.1, v0.165.0 and the
# v0.161.0 zip) and the second's v0.165.1 (a test dependency, otlpencodingextension, is refused).
# Output: $PEERS_CACHE/otelcol-$CORE_VERSION/otelcol-peer (cached: a second run does nothing).
# Versions follow the approved Go list of the tool library: one release throughout, core v0.165.0 /
# v1.71.0 with contrib v0.165.1.
#
#   bench/peers/build_otelcol.sh            # prints the binary's path
set -euo pipefail
CORE_VERSION=${CORE_VERSION:-v0.165.0}
STABLE_VERSION=${STABLE_VERSION:-v1.71.0}
CONTRIB_VERSION=${CONTRIB_VERSION:-v0.165.1}
PEERS_CACHE=${PEERS_CACHE:-$HOME/.cache/tether/peers}
out=$PEERS_CACHE/otelcol-$CORE_VERSION
binary=$out/otelcol-peer
mkdir -p "$out"
contrib=github.com/open-telemetry/opentelemetry-collector-contrib
cat > "$out/manifest.next.yaml" <<MANIFEST
dist:
  name: otelcol-peer
  description: OpenTelemetry Collector peer of the tether benchmarks
  output_path: $out/build
  version: ${CORE_VERSION#v}
receivers:
  - gomod: $contrib/receiver/filelogreceiver $CONTRIB_VERSION
  - gomod: go.opentelemetry.io/collector/receiver/otlpreceiver $CORE_VERSION
  - gomod: $contrib/receiver/kafkareceiver $CONTRIB_VERSION
processors:
  - gomod: go.opentelemetry.io/collector/processor/batchprocessor $CORE_VERSION
exporters:
  - gomod: $contrib/exporter/kafkaexporter $CONTRIB_VERSION
  - gomod: go.opentelemetry.io/collector/exporter/debugexporter $CORE_VERSION
providers:
  # env is the builder's default scheme: the collector refuses to start without its provider
  - gomod: go.opentelemetry.io/collector/confmap/provider/envprovider $STABLE_VERSION
  - gomod: go.opentelemetry.io/collector/confmap/provider/fileprovider $STABLE_VERSION
MANIFEST
# The cached binary stands while it was built from this very manifest.
if [ -x "$binary" ] && cmp -s "$out/manifest.next.yaml" "$out/manifest.yaml"; then
  rm "$out/manifest.next.yaml"
  echo "$binary"
  exit 0
fi
mv "$out/manifest.next.yaml" "$out/manifest.yaml"
rm -f "$binary"
command -v go >/dev/null || { echo "go is not on PATH (the Jaeger build of tether stack needs it too)" >&2; exit 1; }
# The builder itself, as the Jaeger build gets its modules: the module proxy, no cgo.
export CGO_ENABLED=0 GOBIN=$out/bin
[ -x "$GOBIN/builder" ] || go install "go.opentelemetry.io/collector/cmd/builder@${CORE_VERSION}"
began=$(date +%s)
"$GOBIN/builder" --config "$out/manifest.yaml" >"$out/build.log" 2>&1 || {
  tail -40 "$out/build.log" >&2
  exit 1
}
cp "$out/build/otelcol-peer" "$binary.partial"
mv "$binary.partial" "$binary"
echo "built in $(($(date +%s) - began)) s" >>"$out/build.log"
echo "$binary"
