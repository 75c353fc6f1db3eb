#!/bin/bash
# Fine-tune the full-precision teacher: a wrapper around finetune.py. DEVICE_TARGET=CPU|GPU|Ascend (default CPU).
source "$(dirname "$0")/common.sh"
USAGE="usage: [DEVICE_TARGET=GPU] bash scripts/run_finetune.sh --task_name TASK --model BACKBONE.ckpt --data_dir RECORDS_DIR --output_dir OUT [finetune.py flags]
  Log: OUT/run_finetune.log"
run_logged finetune.py "${DEVICE_TARGET:-CPU}" run_finetune.log "$USAGE" task_name model data_dir output_dir -- "$@"
