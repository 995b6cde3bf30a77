# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Order an application's services by their declared dependencies.

``app_services | service_order`` returns the service names in start order (every
service after all it ``requires`` or ``wants``); stop order is its reverse.
A dependency on an undeclared service, a duplicate name or a cycle raises an
error that names the services involved and what to change.
"""
from __future__ import annotations

from typing import Any

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover - used without ansible in tools
    AnsibleFilterError = ValueError  # type: ignore[misc,assignment]

DOCUMENTATION = """
name: service_order
short_description: start order of services from their dependency graph
description:
  - Topological order of C(app_services) by their C(requires) and C(wants) lists.
  - Fails on an undeclared dependency, a duplicate service name or a cycle.
positional: _input
options:
  _input:
    description: list of service dicts with C(name), C(requires), C(wants)
    type: list
    elements: dict
    required: true
"""


def dependencies(service: dict[str, Any]) -> list[str]:
    return list(service.get("requires") or []) + list(service.get("wants") or [])


def service_order(services: list[dict[str, Any]]) -> list[str]:
    names = [s.get("name") for s in services]
    missing_name = [i for i, n in enumerate(names) if not n]
    if missing_name:
        raise AnsibleFilterError(f"app_services items {missing_name} have no 'name': give each service a name")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise AnsibleFilterError(
            f"app_services declares {', '.join(dupes)} more than once: service names must be unique")
    graph = {s["name"]: dependencies(s) for s in services}
    for name, deps in graph.items():
        unknown = [d for d in deps if d not in graph]
        if unknown:
            raise AnsibleFilterError(
                f"app_services: service '{name}' depends on {', '.join(repr(u) for u in unknown)}, which is not "
                f"declared: add it to app_services or remove it from '{name}'.requires/wants")
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = placed

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*path[path.index(name):], name]
            raise AnsibleFilterError(
                f"app_services has a dependency cycle: {' -> '.join(cycle)}; remove one of these "
                "requires/wants so the services can start in order")
        state[name] = 1
        for dep in graph[name]:
            visit(dep, [*path, name])
        state[name] = 2
        order.append(name)

    for name in names:  # declaration order breaks ties: stable, predictable
        visit(name, [])
    return order


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"service_order": service_order}
