#!/bin/bash
# Data-parallel distillation on Ascend: one process per device from an HCCL rank table, or msrun.
#   bash scripts/run_distribute_train_ascend.sh RANK_TABLE_FILE DEVICE_NUM --task_name TASK --teacher_model CKPT --data_dir DIR --output_dir OUT [train.py flags]
#   RANK_TABLE_FILE=msrun: launch with msrun instead (no rank table).
# Per-rank logs: OUT/rank_<id>/train.out
source "$(dirname "$0")/common.sh"
USAGE="usage: bash scripts/run_distribute_train_ascend.sh RANK_TABLE_FILE|msrun DEVICE_NUM --task_name TASK --teacher_model CKPT --data_dir DIR --output_dir OUT [train.py flags]"
TABLE="${1:-}"; DEVICE_NUM="${2:-}"
if [ -z "$TABLE" ] || ! [[ "$DEVICE_NUM" =~ ^[0-9]+$ ]]; then echo -e "$USAGE" >&2; exit 2; fi
shift 2
OUT="$(require_output_dir "$USAGE" "$@")" || exit 2
cd "$ROOT"
if [ "$TABLE" = "msrun" ]; then
  mkdir -p "$OUT/msrun_logs"
  exec msrun --worker_num="$DEVICE_NUM" --local_worker_num="$DEVICE_NUM" --master_addr=127.0.0.1 \
    --master_port="${MASTER_PORT:-8118}" --log_dir="$OUT/msrun_logs" --join=True \
    "${ENTRY:-train.py}" --device_target Ascend --distribute "$@"
fi
[ -f "$TABLE" ] || { echo "error: rank table $TABLE does not exist" >&2; exit 2; }
export RANK_TABLE_FILE="$(realpath "$TABLE")" RANK_SIZE="$DEVICE_NUM"
pids=()
for ((i = 0; i < DEVICE_NUM; i++)); do
  mkdir -p "$OUT/rank_$i"
  DEVICE_ID=$i RANK_ID=$i "$PYTHON" "${ENTRY:-train.py}" --device_target Ascend --device_id "$i" --distribute "$@" \
    > "$OUT/rank_$i/train.out" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
echo "per-rank logs: $OUT/rank_*/train.out (exit $rc)"
exit $rc
