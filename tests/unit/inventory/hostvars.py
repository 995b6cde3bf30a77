#!/usr/bin/env python3
"""Every host's variables of each inventory given, as ``ansible-inventory -i INV --list`` resolves them, printed as
one JSON object ``{inventory: {"hostvars": {host: vars}} | {"error": message}}``.

The same calls as ansible-inventory (``VariableManager.get_vars(host=..., include_hostvars=False, stage="all")``,
then the internal keys removed), for many inventories in one interpreter: ansible-inventory itself costs a Python
start and Ansible's imports per inventory (about 1 s of CPU each). Run it from the repository root, so that
``ansible.cfg`` applies as it does to the playbooks. An inventory that does not parse is an error (set
``ANSIBLE_INVENTORY_UNPARSED_FAILED=true`` in the environment, as the test does).

Usage: hostvars.py INVENTORY [INVENTORY ...]
"""

from __future__ import annotations

import json
import sys
from typing import Any


def hostvars(source: str) -> dict[str, dict[str, Any]]:
    from ansible import constants as C
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    loader = DataLoader()
    inventory = InventoryManager(loader=loader, sources=[source])
    manager = VariableManager(loader=loader, inventory=inventory)
    out = {}
    for host in inventory.get_hosts():
        found = manager.get_vars(host=host, include_hostvars=False, stage="all")
        out[host.name] = {k: v for k, v in found.items() if k not in C.INTERNAL_STATIC_VARS}
    return out


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    result: dict[str, Any] = {}
    for source in argv:
        try:
            result[source] = {"hostvars": hostvars(source)}
        except Exception as exc:  # one inventory's error must not hide the others' results
            result[source] = {"error": f"{type(exc).__name__}: {exc}"}
    json.dump(result, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
