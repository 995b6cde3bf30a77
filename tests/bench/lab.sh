#!/usr/bin/env bash
# Lab benchmark: lab image build time cold (debootstrap from the mirror) and
# cached (recipe unchanged), and lab-up time of the five hosts (median of runs).
#
#   tests/bench/lab.sh [RUNS]        RUNS lab-up cycles and cached builds (default 5);
#                                    BENCH_COLD_RUNS cold builds (default 1: each is ~1 min
#                                    of mirror traffic)
# Leaves the lab down and the image built. Prints one line per figure.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LAB="$ROOT/scripts/lab.sh"
RUNS=${1:-5}
COLD=${BENCH_COLD_RUNS:-1}
export LAB_ID=bench LAB_PUBLISH=0

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
calc() { awk "BEGIN { printf \"%.4f\", $* }"; }
timeit() { local t0; t0=$(now); "$@" >/dev/null 2>&1; calc "$(now) - $t0"; }

cold=()
for _ in $(seq "$COLD"); do
  tag=$("$LAB" image-tag debian12)
  docker rmi -f "$tag" tradeops-lab:debian12 >/dev/null 2>&1 || true
  cold+=("$(timeit "$LAB" image debian12)")
done
cached=()
for _ in $(seq "$RUNS"); do cached+=("$(timeit "$LAB" image debian12)"); done
up=(); again=()
for _ in $(seq "$RUNS"); do
  "$LAB" down >/dev/null 2>&1
  up+=("$(timeit "$LAB" up)")
  again+=("$(timeit "$LAB" up)")
done
"$LAB" down >/dev/null 2>&1

m_cold=$(printf '%s\n' "${cold[@]}" | median)
m_cached=$(printf '%s\n' "${cached[@]}" | median)
m_up=$(printf '%s\n' "${up[@]}" | median)
m_again=$(printf '%s\n' "${again[@]}" | median)
printf 'lab image build, cold (debootstrap):   median %7.2f s of %d\n' "$m_cold" "$COLD"
printf 'lab image build, cached (same recipe): median %7.2f s of %d  (%.0fx faster than cold)\n' \
  "$m_cached" "$RUNS" "$(calc "$m_cold / $m_cached")"
printf 'lab-up, 5 hosts to systemd running:    median %7.2f s of %d\n' "$m_up" "$RUNS"
printf 'lab-up again (already up, no-op):      median %7.2f s of %d  (%.2f of a cold lab-up)\n' \
  "$m_again" "$RUNS" "$(calc "$m_again / $m_up")"
