#!/usr/bin/env bash
# pytest, where a run that collects no test is a failure (pytest exits 5), not a pass.
set -uo pipefail
pytest "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "run_pytest: no test was collected from $* — that is an error, not a pass" >&2
  exit 1
fi
exit "$rc"
