#!/bin/bash
# Shared by the run_*.sh wrappers: pick the interpreter, print usage, log to a file.
# Not meant to be run directly.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "$PYTHON" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
export GLOG_v=${GLOG_v:-3}   # MindSpore's C++ warnings off unless asked for

# flag_value NAME ARGS... -> the value after --NAME (empty if absent)
flag_value() {
  local name="$1"; shift
  while [ $# -gt 0 ]; do
    case "$1" in
      --"$name") echo "$2"; return ;;
      --"$name"=*) echo "${1#*=}"; return ;;
    esac
    shift
  done
}

# run_logged ENTRY DEVICE LOGNAME USAGE REQUIRED_FLAGS... -- ARGS...
run_logged() {
  local entry="$1" device="$2" logname="$3" usage="$4"; shift 4
  local required=()
  while [ "$1" != "--" ]; do required+=("$1"); shift; done
  shift
  for a in "$@"; do
    if [ "$a" = "-h" ] || [ "$a" = "--help" ]; then
      echo -e "$usage"; echo; "$PYTHON" "$ROOT/$entry" --help; exit 0
    fi
  done
  local missing=()
  for r in "${required[@]}"; do
    [ -n "$(flag_value "$r" "$@")" ] || missing+=("--$r")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "error: missing ${missing[*]}" >&2; echo -e "$usage" >&2; exit 2
  fi
  local logdir
  logdir="$(flag_value output_dir "$@")"
  [ -n "$logdir" ] || logdir="$(dirname "$(flag_value checkpoint "$@")")"
  mkdir -p "$logdir"
  local log="$logdir/$logname"
  echo "[$(date '+%F %T')] $PYTHON $entry --device_target $device $*" | tee -a "$log"
  "$PYTHON" "$ROOT/$entry" --device_target "$device" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "log: $log (exit $rc)"
  return "$rc"
}

# check_device_num USAGE VALUE: exit 2 unless VALUE is a positive integer
check_device_num() {
  if ! [[ "$2" =~ ^[0-9]+$ ]] || [ "$2" -lt 1 ]; then
    echo -e "error: DEVICE_NUM must be a positive integer\n$1" >&2; exit 2
  fi
}

# require_output_dir USAGE ARGS...: the --output_dir value, or exit 2
require_output_dir() {
  local usage="$1"; shift
  local out; out="$(flag_value output_dir "$@")"
  [ -n "$out" ] || { echo -e "error: missing --output_dir\n$usage" >&2; exit 2; }
  echo "$out"
}
