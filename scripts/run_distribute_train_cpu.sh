#!/bin/bash
# Data-parallel distillation with N local CPU workers under msrun (development / CI).
#   bash scripts/run_distribute_train_cpu.sh DEVICE_NUM --task_name TASK --teacher_model CKPT --data_dir DIR --output_dir OUT [train.py flags]
# ENTRY=finetune.py runs teacher fine-tuning instead. MASTER_PORT (default 8118) picks the scheduler port.
# Per-rank logs: OUT/msrun_logs/worker_<rank>.log; rank 0 writes the checkpoints and train.log.
source "$(dirname "$0")/common.sh"
USAGE="usage: bash scripts/run_distribute_train_cpu.sh DEVICE_NUM --task_name TASK --teacher_model CKPT --data_dir DIR --output_dir OUT [train.py flags]"
DEVICE_NUM="${1:-}"
check_device_num "$USAGE" "$DEVICE_NUM"
shift
OUT="$(require_output_dir "$USAGE" "$@")" || exit 2
mkdir -p "$OUT/msrun_logs"
MSRUN="$(dirname "$PYTHON")/msrun"; [ -x "$MSRUN" ] || MSRUN=msrun
# msrun starts workers with the python on PATH: put the interpreter's folder first
export PATH="$(dirname "$PYTHON"):$PATH"
cd "$ROOT"
"$MSRUN" --worker_num="$DEVICE_NUM" --local_worker_num="$DEVICE_NUM" --master_addr=127.0.0.1 \
  --master_port="${MASTER_PORT:-8118}" --log_dir="$OUT/msrun_logs" --join=True \
  "${ENTRY:-train.py}" --device_target CPU --distribute "$@"
rc=$?
echo "per-rank logs: $OUT/msrun_logs (exit $rc)"
exit $rc
