#!/usr/bin/env bash
# Every benchmark under tests/bench, one after another; each prints its figures.
set -euo pipefail
cd "$(dirname "$0")"
echo "=== tests/bench/lab.sh"
./lab.sh
echo "=== tests/bench/deploy_bench.py"
python deploy_bench.py
