#!/usr/bin/env bash
# Run molecule scenarios, MOLECULE_JOBS at a time (default 2), and report each one's time.
#   scripts/run_molecule.sh [scenario ...]        (default: every molecule/*/molecule.yml)
# Scenarios never share anything on the hosts side: each has its own lab containers and
# network (LAB_ID per scenario, .config/molecule/create.yml), so they can run side by side;
# the controller's build caches are written atomically (scripts/build_*.py). Each scenario's
# output goes to .cache/molecule-logs/<name>.log: printed whole when it fails, its last lines
# when it passes. Longest scenarios start first (times of the previous run, when known), so
# the lanes end together. Exit 1 when any scenario failed (all of them still run).
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${MOLECULE_JOBS:-2}
# Mitogen for Ansible (scripts/lib/mitogen.sh): every ansible run of a scenario (molecule's steps, the
# playbooks and testinfra calls of its tests) under its strategy; the instances' connection "docker"
# (.config/molecule/create.yml) becomes mitogen_docker. TRADEOPS_MITOGEN=0 runs with Ansible's own.
if [ "${TRADEOPS_MITOGEN:-1}" = 1 ]; then
  # shellcheck source=scripts/lib/mitogen.sh
  . scripts/lib/mitogen.sh
  mitogen_export || exit 1
fi
LOGS=.cache/molecule-logs
TIMES=.cache/molecule-times
mkdir -p "$LOGS"
if [ $# -gt 0 ]; then
  scenarios=("$@")
else
  mapfile -t scenarios < <(for f in molecule/*/molecule.yml; do basename "$(dirname "$f")"; done)
fi
[ ${#scenarios[@]} -gt 0 ] || { echo "run_molecule: no molecule scenario found" >&2; exit 1; }
# Longest first: the times of the previous run here when known, else these (s, CI machine), else 300.
# (Clean-clone rehearsal of 60da5bd under Mitogen, 2 at a time: 1800 s of molecule.)
declare -A ESTIMATE=([apps]=640 [monitoring]=550 [rollback]=500 [edge]=450 [cluster]=370 [backup]=300
                     [deploy]=170 [datatier]=150 [multiservice]=145 [schedule]=125 [maintenance]=110 [default]=50)
order=$(for s in "${scenarios[@]}"; do
  t=$(awk -v s="$s" '$1 == s {print $2}' "$TIMES" 2>/dev/null | tail -1)
  echo "${t:-${ESTIMATE[$s]:-300}} $s"
done | sort -k1,1rn -k2 | awk '{print $2}')

# Copy molecule's output and time each of its steps (from its "<step>] Executing" to the next step's).
steps_timed() {
  awk '{ print; fflush()
         line = $0; gsub(/\033\[[0-9;]*m/, "", line)
         # molecule 25 prints "[<scenario> > <step>] Executing" (no colours) or "<scenario> ➜ <step>: Executing".
         if (match(line, /[a-z_]+[]:] Executing$/)) {
           now = systime(); if (step != "") times = times sep step " " (now - t0) " s"
           if (step != "") sep = ", "
           step = substr(line, RSTART, RLENGTH - 11); t0 = now
         } }
       END { if (step != "") times = times sep step " " (systime() - t0) " s"; print "=== steps: " times }'
}
export -f steps_timed

run_one() {
  local s=$1 start rc elapsed log=$LOGS/$1.log
  start=$(date +%s)
  echo "=== molecule test -s $s: started ($(date -u +%H:%M:%S))"
  set -o pipefail
  # steps_timed appends "=== steps: create 31 s, converge 402 s, ..." to the log.
  # Unbuffered: a pipe makes Python buffer its output, and steps_timed stamps lines as they come.
  if PYTHONUNBUFFERED=1 molecule test -s "$s" 2>&1 | steps_timed >"$log"; then rc=0; else rc=$?; fi
  elapsed=$(( $(date +%s) - start ))
  echo "$s $elapsed $rc" >>"$LOGS/.results"
  if [ "$rc" -eq 0 ]; then
    { echo "=== molecule test -s $s: passed in $elapsed s"; grep -E '(passed|failed)( in|,)' "$log" | tail -3
      grep '^=== steps:' "$log"; } | sed "s/^/[$s] /"
  else
    { echo "=== molecule test -s $s: FAILED (exit $rc) in $elapsed s, its whole output:"; cat "$log"; } | sed "s/^/[$s] /"
  fi
  return 0
}
export -f run_one
export LOGS
rm -f "$LOGS/.results"
start=$(date +%s)
echo "$order" | xargs -P "$JOBS" -I{} bash -c 'run_one "$@"' _ {}
total=$(( $(date +%s) - start ))

echo "=== molecule: $JOBS at a time, $total s in all"
failed=0
while read -r s elapsed rc; do
  printf '  %-14s %5s s  %s\n' "$s" "$elapsed" "$([ "$rc" -eq 0 ] && echo passed || echo "FAILED (exit $rc)")"
  [ "$rc" -eq 0 ] || failed=$((failed + 1))
done < <(sort -k2 -rn "$LOGS/.results")
awk '{print $1, $2}' "$LOGS/.results" >"$TIMES"
ran=$(wc -l <"$LOGS/.results")
[ "$ran" -eq ${#scenarios[@]} ] || { echo "run_molecule: $ran of ${#scenarios[@]} scenarios reported" >&2; exit 1; }
[ "$failed" -eq 0 ] || { echo "run_molecule: $failed scenario(s) failed" >&2; exit 1; }
