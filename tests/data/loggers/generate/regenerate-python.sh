#!/usr/bin/env bash
# Rebuilds tests/data/loggers/python-*.jsonl and their .expected.jsonl by running the real libraries.
# The generator venv lives outside the repository (~/.cache/tether-gen/python), pinned by requirements.txt.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${TETHER_GEN_PYTHON_VENV:-$HOME/.cache/tether-gen/python}"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/python/requirements.txt"

# UTC so python-json-logger's asctime (local time, no zone) reads the same as the other clocks.
export TZ=UTC
cd "$here/python"
for generator in gen_structlog.py gen_json_logger.py gen_loguru.py gen_ecs_logging.py; do
  # One process per library: LoggingInstrumentor and loguru change process-wide state.
  "$venv/bin/python" "$generator"
done
ls -l "$here"/../python-*.jsonl
