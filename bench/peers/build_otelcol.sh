#!/usr/bin/env bash
# Builds the OpenTelemetry Collector peers of the benchmarks with the collector's own builder (ocb,
# go.opentelemetry.io/collector/cmd/builder) from the Go module proxy. Two profiles, each with its own
# manifest, cache directory and release (one release throughout each binary):
#
# PROFILE=peer (the default): the filelog receiver (its stanza operators include json_parser), the
# otlp receiver, the batch processor and the kafka exporter for the agent's peer runs
# (bench/peers_bench.py); the kafka receiver (with the kafka exporter's otlp_json, or the debug
# exporter, behind it) for the collector tier's json-kafka and debug runs and for the interop test
# (tests/e2e/test_otelcol_interop.py). Core v0.165.0 / v1.71.0 with contrib v0.165.1, the approved Go
# list's release. The contrib file exporter is not in it: its v0.165.1 needs a test dependency
# (otlpencodingextension) that the module proxy refuses.
#
# PROFILE=collector-peer: the kafka receiver, the elasticsearch exporter and the debug exporter: the
# tool a user would put in the tether collector's place (bench/collector_peer_bench.py's
# otelcol+elasticsearch run). The module proxy refuses the elasticsearch exporter at v0.165.1,
# v0.165.0, v0.164.0, v0.163.0, v0.162.0, v0.161.0 (zip) and v0.140.0, so this profile is at the
# release it serves: contrib v0.150.0 with the core it requires (v0.150.0 / v1.56.0), the builder of
# that release too.
#
# Output: $PEERS_CACHE/otelcol-$CORE_VERSION/otelcol-peer (peer) or
# $PEERS_CACHE/otelcol-collector-peer-$CORE_VERSION/otelcol-collector-peer (collector-peer); cached:
# a second run does nothing while the manifest is unchanged.
#
#   bench/peers/build_otelcol.sh                         # prints the binary's path
#   PROFILE=collector-peer bench/peers/build_otelcol.sh  # the elasticsearch exporter's binary
set -euo pipefail
PROFILE=${PROFILE:-peer}
PEERS_CACHE=${PEERS_CACHE:-$HOME/.cache/tether/peers}
contrib=github.com/open-telemetry/opentelemetry-collector-contrib
case $PROFILE in
peer)
  CORE_VERSION=${CORE_VERSION:-v0.165.0}
  STABLE_VERSION=${STABLE_VERSION:-v1.71.0}
  CONTRIB_VERSION=${CONTRIB_VERSION:-v0.165.1}
  name=otelcol-peer
  out=$PEERS_CACHE/otelcol-$CORE_VERSION
  ;;
collector-peer)
  # the newest release whose elasticsearch exporter the module proxy serves, and its core
  CORE_VERSION=${CORE_VERSION:-v0.150.0}
  STABLE_VERSION=${STABLE_VERSION:-v1.56.0}
  CONTRIB_VERSION=${CONTRIB_VERSION:-v0.150.0}
  name=otelcol-collector-peer
  out=$PEERS_CACHE/otelcol-collector-peer-$CORE_VERSION
  ;;
*)
  echo "PROFILE is peer or collector-peer, not $PROFILE" >&2
  exit 2
  ;;
esac
binary=$out/$name
mkdir -p "$out"
if [ "$PROFILE" = peer ]; then
  # This manifest stays byte for byte what it was: the cached binary is kept while it matches.
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
else
  cat > "$out/manifest.next.yaml" <<MANIFEST
dist:
  name: $name
  description: OpenTelemetry Collector in the tether collector's place (kafka -> elasticsearch)
  output_path: $out/build
  version: ${CORE_VERSION#v}
receivers:
  - gomod: $contrib/receiver/kafkareceiver $CONTRIB_VERSION
exporters:
  - gomod: $contrib/exporter/elasticsearchexporter $CONTRIB_VERSION
  - gomod: go.opentelemetry.io/collector/exporter/debugexporter $CORE_VERSION
providers:
  - gomod: go.opentelemetry.io/collector/confmap/provider/envprovider $STABLE_VERSION
  - gomod: go.opentelemetry.io/collector/confmap/provider/fileprovider $STABLE_VERSION
MANIFEST
fi
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
cp "$out/build/$name" "$binary.partial"
mv "$binary.partial" "$binary"
echo "built in $(($(date +%s) - began)) s" >>"$out/build.log"
echo "$binary"
