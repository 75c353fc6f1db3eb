#!/bin/bash
# Distil a ternary student on one GPU: a thin wrapper around train.py.
source "$(dirname "$0")/common.sh"
USAGE="usage: bash scripts/run_train_gpu.sh --task_name TASK --teacher_model TEACHER.ckpt --data_dir RECORDS_DIR --output_dir OUT [train.py flags]
  e.g. bash scripts/run_train_gpu.sh --task_name sts-b --teacher_model out/teacher/best.ckpt \\
         --data_dir data/sts-b-128 --output_dir out/student --learning_rate 1e-4
  Log: OUT/run_train.log"
run_logged train.py GPU run_train.log "$USAGE" task_name teacher_model data_dir output_dir -- "$@"
