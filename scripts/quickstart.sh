#!/bin/bash
# Fresh machine -> the main job: create .venv, install the pinned dependencies, run scripts/quickstart.py.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$ROOT/scripts/setup.sh" --deploy   # the deploy extra: the job ends with the ONNX export
cd "$ROOT"
exec "$ROOT/.venv/bin/python" scripts/quickstart.py "$@"
