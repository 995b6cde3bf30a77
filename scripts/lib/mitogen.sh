# shellcheck shell=bash
# Mitogen for Ansible (in .venv, pyproject's dev group): mitogen_export sets its strategy for every
# ansible run of this shell and its children. A connection named "docker" (molecule's instances, the
# lab inventory) then becomes mitogen_docker: one Python per host and run instead of one per task.
# Measured: an idempotent site.yml on lb1 + 1 app host 58.4 -> 21.0 s (tests/bench/scale.py --mitogen,
# docs/scale.md). Sourced by scripts/run_molecule.sh (default on) and scripts/with_mitogen.sh.
mitogen_export() {
  local dir
  dir=$(python -c 'import ansible_mitogen, os; print(os.path.dirname(ansible_mitogen.__file__))') || {
    echo "mitogen is not in $(command -v python)'s environment (make venv), or set TRADEOPS_MITOGEN=0" >&2
    return 1
  }
  export ANSIBLE_STRATEGY_PLUGINS=$dir/plugins/strategy ANSIBLE_STRATEGY=mitogen_linear
  echo "=== Mitogen strategy ($dir), TRADEOPS_MITOGEN=0 to run without it" >&2
}
