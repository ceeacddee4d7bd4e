#!/usr/bin/env bash
# Rebuilds tests/data/loggers/dotnet-*.jsonl and their .expected.jsonl.
# BY SPECIFICATION, NOT PRODUCED BY THE LIBRARY: .NET cannot be installed here, so
# dotnet/spec_lines.py writes the lines from the published formats (see dotnet/README.md).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Standard library only; any Python 3.11 or newer.
"${PYTHON:-python3}" "$here/dotnet/spec_lines.py" "$here/.."
