#!/usr/bin/env bash
# Regenerates the Kubernetes container log fixtures (var/log/pods/...) with the runtimes' own
# writers (containerd's CRI logger, dockerd's json-file driver): see generate/main.go.
# Needs Go (go.mod names the version); modules come from the Go module proxy.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
rm -rf "$here/var"
(cd "$here/generate" && go run . "$here")
find "$here/var" -type f | sort
