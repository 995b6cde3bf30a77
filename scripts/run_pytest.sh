#!/usr/bin/env bash
# pytest, where a run that collects no test is a failure (pytest exits 5), not a pass.
# Test files run in parallel on every core (pytest-xdist; one file stays on one worker,
# so its module fixtures — a PostgreSQL cluster, a redis-server — start once).
set -uo pipefail
# The 15 slowest tests with their times (make check must stay fast: this says where it goes).
pytest -n "${PYTEST_WORKERS:-auto}" --dist loadfile --durations=15 "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "run_pytest: no test was collected from $* — that is an error, not a pass" >&2
  exit 1
fi
exit "$rc"
