#!/usr/bin/env bash
# Every benchmark under tests/bench, one after another; each prints its figures.
set -euo pipefail
cd "$(dirname "$0")"
echo "=== tests/bench/lab.sh"
./lab.sh
echo "=== tests/bench/deploy_bench.py"
python deploy_bench.py
echo "=== tests/bench/apps_bench.py"
python apps_bench.py
echo "=== tests/bench/backup_bench.py"
python backup_bench.py --size-mb "${BACKUP_BENCH_SIZE_MB:-1024}"
echo "=== tests/bench/scale.py"
python scale.py --counts "${SCALE_BENCH_COUNTS:-1,2,4,8}" --runs "${SCALE_BENCH_RUNS:-3}"
