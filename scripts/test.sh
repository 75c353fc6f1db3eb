#!/bin/bash
# The test suite as two pytest processes at once (what CI runs, through .ci/run).
#
#   bash scripts/test.sh                  # everything
#   bash scripts/test.sh -m "not slow"    # any pytest options, passed to both processes
#
# Most of the suite's time is single-threaded (process start, MindSpore graph compilation), so two
# processes on 2 cores finish in about half the time of one (measured: the end-to-end file beside
# four others, 380 s together against 750 s one after the other). The end-to-end and real-teacher
# files run in the first process, with its output live; every other tests/test_*.py in the second,
# whose output follows. A new test file lands in the second by default. With one core: one process.
# `python -m pytest tests` runs the same tests in one process.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export GLOG_v=${GLOG_v:-3}
if [ ! -x "$PY" ]; then
  echo "scripts/test.sh: no Python at $PY: run 'bash scripts/setup.sh --dev' first (or set PYTHON)" >&2
  exit 2
fi
if [ "$(nproc)" -lt 2 ]; then
  exec "$PY" -m pytest -q "$@" tests
fi
FIRST=(tests/test_e2e.py tests/test_checkpoint.py tests/test_api.py tests/test_data.py tests/test_quickstart.py)
SECOND=()
for f in tests/test_*.py; do
  [[ " ${FIRST[*]} " == *" $f "* ]] || SECOND+=("$f")
done
tmp=$(mktemp -d)
second_pid=
cleanup() {
  [ -n "$second_pid" ] && kill "$second_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# own temporary folders: the two processes never share a pytest base directory or its cache
"$PY" -m pytest -q -p no:cacheprovider --basetemp "$tmp/second" "$@" "${SECOND[@]}" > "$tmp/second.log" 2>&1 &
second_pid=$!
echo "== tests, process 1 of 2: ${FIRST[*]}"
"$PY" -m pytest -q -p no:cacheprovider --basetemp "$tmp/first" "$@" "${FIRST[@]}"
rc1=$?
wait "$second_pid"
rc2=$?
second_pid=
echo "== tests, process 2 of 2: ${SECOND[*]}"
cat "$tmp/second.log"
# pytest's 5: no test selected (a -k or -m that matches nothing in one process only)
if [ "$rc1" = 5 ] && [ "$rc2" = 5 ]; then
  echo "== no test selected"; exit 5
fi
[ "$rc1" = 5 ] && rc1=0
[ "$rc2" = 5 ] && rc2=0
if [ "$rc1" != 0 ] || [ "$rc2" != 0 ]; then
  echo "== FAILED: process 1 exit $rc1, process 2 exit $rc2"; exit 1
fi
echo "== all tests passed (both processes)"
