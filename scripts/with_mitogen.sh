#!/usr/bin/env bash
# Run a command (ansible-playbook ...) under Mitogen for Ansible when TRADEOPS_MITOGEN=1, as it is:
#   TRADEOPS_MITOGEN=1 scripts/with_mitogen.sh ansible-playbook -i inventory/lab playbooks/site.yml
# make site / deploy / verify go through it (make site TRADEOPS_MITOGEN=1). Opt-in: ansible-core
# deprecates third-party strategies, and ssh and Windows hosts are not tried under it here.
set -euo pipefail
if [ "${TRADEOPS_MITOGEN:-0}" = 1 ]; then
  # shellcheck source=scripts/lib/mitogen.sh
  . "$(dirname "$0")/lib/mitogen.sh"
  mitogen_export
fi
exec "$@"
