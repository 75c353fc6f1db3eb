#!/bin/bash
# Evaluate a checkpoint (or packed .tbq file): a wrapper around eval.py. DEVICE_TARGET=CPU|GPU|Ascend (default CPU).
source "$(dirname "$0")/common.sh"
USAGE="usage: [DEVICE_TARGET=GPU] bash scripts/run_eval.sh --checkpoint CKPT_OR_TBQ --data_dir RECORDS_DIR [eval.py flags]
  Log: <checkpoint folder>/run_eval.log"
run_logged eval.py "${DEVICE_TARGET:-CPU}" run_eval.log "$USAGE" checkpoint data_dir -- "$@"
