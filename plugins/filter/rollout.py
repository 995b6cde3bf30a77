# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The batches of a rolling deploy (``app_serial``), checked against the load balancers' pools.

``app_serial`` is what the deploy and rollback plays give Ansible's ``serial``: a host count,
a percentage of the play's hosts ("25%") or a list of them (``[1, "25%", "50%"]``: a canary
host, then growing batches; the last entry repeats until every host had its turn). Ansible
accepts more than a deploy should (0 or a negative count mean "every host at once") and fails
late on a word it cannot read; ``rollout_batches`` refuses both, naming app_serial, and returns
the batches exactly as Ansible will cut them (ansible.executor.playbook_executor's
``_get_serialized_batches`` with ``pct_to_int``), so the plan can be checked before anything
changes.

``rollout_empty_pools`` names every batch that holds all the backends of a load balancer: its
hosts restart together, so that pool would serve nothing while they do (draining them would be
refused half-way, by tradeops-nginx-backend's last-backend rule, after the first ones changed).
"""
from __future__ import annotations

import re
from typing import Any

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover - used without ansible in tools
    AnsibleFilterError = ValueError  # type: ignore[misc,assignment]

DOCUMENTATION = """
name: rollout_batches
short_description: the batches of hosts a rolling deploy with app_serial runs
description:
  - The play's hosts cut into batches as Ansible's serial keyword cuts them.
  - Refuses a count below 1, a percentage outside 1-100 and anything else, naming app_serial.
positional: _input, serial
options:
  _input:
    description: the play's hosts, in play order
    type: list
    elements: str
    required: true
  serial:
    description: app_serial, a count, a percentage such as "25%" or a non-empty list of them
    type: raw
    required: true
"""

_PERCENT = re.compile(r"^\s*(\d+)\s*%\s*$")
_COUNT = re.compile(r"^\s*(\d+)\s*$")
_FIX = ('give a host count (2), a share of the hosts ("25%") or a list of them for growing batches '
        '(app_serial: [1, "25%", "50%"]; on the command line as JSON: -e \'{"app_serial": [1, "25%"]}\')')


def _size(entry: Any, total: int, serial: Any) -> int:
    """Hosts in a batch for one app_serial entry, as Ansible's pct_to_int computes it."""
    if isinstance(entry, bool) or not isinstance(entry, (int, str)):
        raise AnsibleFilterError(f"app_serial {serial!r}: {entry!r} is not a host count or a percentage: {_FIX}")
    text = str(entry)
    percent, count = _PERCENT.match(text), _COUNT.match(text)
    if percent:
        value = int(percent.group(1))
        if not 1 <= value <= 100:
            raise AnsibleFilterError(f"app_serial {serial!r}: {text.strip()} is not a share of the hosts "
                                     f"between 1% and 100%: {_FIX}")
        return int(value / 100.0 * total) or 1
    if count and int(count.group(1)) >= 1:
        return int(count.group(1))
    raise AnsibleFilterError(f"app_serial {serial!r}: {entry!r} is not a host count of at least 1 (0 and "
                             f"negative counts would restart every host at once): {_FIX}")


def rollout_batches(hosts: list[str], serial: Any) -> list[list[str]]:
    entries = serial if isinstance(serial, (list, tuple)) else [serial]
    if not entries:
        raise AnsibleFilterError(f"app_serial []: an empty plan: {_FIX}")
    sizes = [_size(e, len(hosts), serial) for e in entries]  # every entry checked, even unused ones
    todo, batches, i = list(hosts), [], 0
    while todo:
        batches.append(todo[:sizes[i]])
        del todo[:sizes[i]]
        i = min(i + 1, len(sizes) - 1)
    return batches


def rollout_empty_pools(batches: list[list[str]], pools: dict[str, list[str]],
                        forced: list[str] | None = None) -> list[str]:
    """One sentence per batch that holds every backend of a load balancer (an empty list: none). A pool
    whose backends in that batch are all ``forced`` (nginx_backend_force: their operator accepts that
    draining them may leave nothing active, as for a single backend) is not named."""
    found = []
    for number, batch in enumerate(batches, 1):
        for lb, backends in pools.items():
            members = [b for b in backends or [] if b in batch]
            if members and len(members) == len(set(backends)) and not set(members) <= set(forced or []):
                found.append(f"batch {number} ({', '.join(batch)}) holds every backend of {lb} "
                             f"({', '.join(members)}): they would restart together and {lb} would serve nothing")
    return found


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"rollout_batches": rollout_batches, "rollout_empty_pools": rollout_empty_pools}
