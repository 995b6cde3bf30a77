#!/usr/bin/env bash
# Every benchmark under tests/bench, one after another; each prints its figures.
set -euo pipefail
cd "$(dirname "$0")"
for b in lab.sh; do
  echo "=== tests/bench/$b"
  "./$b"
done
