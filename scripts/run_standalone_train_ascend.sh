#!/bin/bash
# Distil a ternary student on one Ascend device (DEVICE_ID or --device_id): a wrapper around train.py.
source "$(dirname "$0")/common.sh"
USAGE="usage: bash scripts/run_standalone_train_ascend.sh --task_name TASK --teacher_model TEACHER.ckpt --data_dir RECORDS_DIR --output_dir OUT [--device_id N] [train.py flags]
  Log: OUT/run_train.log"
EXTRA=()
if [ -n "$DEVICE_ID" ] && [ -z "$(flag_value device_id "$@")" ]; then EXTRA=(--device_id "$DEVICE_ID"); fi
run_logged train.py Ascend run_train.log "$USAGE" task_name teacher_model data_dir output_dir -- "$@" "${EXTRA[@]}"
