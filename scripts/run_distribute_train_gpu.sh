#!/bin/bash
# Data-parallel distillation on DEVICE_NUM GPUs of this node (msrun; LAUNCHER=mpirun for OpenMPI).
#   bash scripts/run_distribute_train_gpu.sh DEVICE_NUM --task_name TASK --teacher_model CKPT --data_dir DIR --output_dir OUT [train.py flags]
# Several nodes (msrun): WORKER_NUM=<all GPUs> NODE_RANK=<this node> MASTER_ADDR=<node 0 address> on every node.
# Per-rank logs: OUT/msrun_logs/worker_<rank>.log (msrun) or OUT/mpirun_logs (mpirun).
source "$(dirname "$0")/common.sh"
USAGE="usage: bash scripts/run_distribute_train_gpu.sh DEVICE_NUM --task_name TASK --teacher_model CKPT --data_dir DIR --output_dir OUT [train.py flags]"
DEVICE_NUM="${1:-}"
check_device_num "$USAGE" "$DEVICE_NUM"
shift
OUT="$(require_output_dir "$USAGE" "$@")" || exit 2
cd "$ROOT"
export PATH="$(dirname "$PYTHON"):$PATH"
if [ "${LAUNCHER:-msrun}" = "mpirun" ]; then
  mkdir -p "$OUT/mpirun_logs"
  mpirun -n "$DEVICE_NUM" --output-filename "$OUT/mpirun_logs" --merge-stderr-to-stdout \
    "$PYTHON" "${ENTRY:-train.py}" --device_target GPU --distribute "$@"
else
  mkdir -p "$OUT/msrun_logs"
  msrun --worker_num="${WORKER_NUM:-$DEVICE_NUM}" --local_worker_num="$DEVICE_NUM" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-8118}" --node_rank="${NODE_RANK:-0}" \
    --log_dir="$OUT/msrun_logs" --join=True "${ENTRY:-train.py}" --device_target GPU --distribute "$@"
fi
