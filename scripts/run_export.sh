#!/bin/bash
# Export the integer ONNX model, the frozen MINDIR (AIR on Ascend) and the packed 2-bit file: a wrapper around export.py.
source "$(dirname "$0")/common.sh"
USAGE="usage: [DEVICE_TARGET=Ascend] bash scripts/run_export.sh --checkpoint CKPT --output OUT_PREFIX [--file_format ONNX MINDIR|AIR|NONE] [--no_packed]
  Log: <checkpoint folder>/run_export.log"
run_logged export.py "${DEVICE_TARGET:-CPU}" run_export.log "$USAGE" checkpoint output -- "$@"
