"""Filter `nginx_backends` of role nginx: the address nginx connects to for each backend.

nginx resolves a host name in `upstream { server NAME:PORT; }` when it loads its
configuration, and refuses the whole configuration when one name does not resolve
("host not found in upstream"). So the role renders IP addresses by default, taken
from each backend's facts, and keeps names only as an explicit choice.

For each upstream host, first match wins:

1. the host's own `nginx_backend_address` (a name or an IP, as given);
2. `nginx_upstream_address_source`:
   - `fact` (default): the IPv4 address of the host's interface `nginx_upstream_interface`
     (empty: the interface of its default route, `ansible_facts['default_ipv4']`);
     when the facts have none (host unreachable, network cut), the address this host
     has in the live upstream file (so an unreachable backend never blocks a re-render);
   - `var`: the hostvar named by `nginx_upstream_address_var`;
   - `name`: the inventory name (resolved by nginx at every load).

A backend whose address cannot be found gets an `error` naming the variable to set
(the role's preflight fails with it before anything changes); one whose facts lacked an
address is listed by `needs_facts`, so the role gathers them (delegated) and asks again.
So does a backend whose inventory declares `app_services` (role app) none of which has a
`port`: a batch-only application, where nothing listens for nginx.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

SOURCES = ("fact", "var", "name")
# A rendered upstream line: `    server <endpoint> <params>[ down];  # <inventory name>`
_LIVE_LINE = re.compile(r"^\s*server\s+(?P<endpoint>\S+)\s.*;\s+#\s+(?P<name>\S+)\s*$")


def live_addresses(text: str) -> dict[str, str]:
    """Inventory name -> address, from the server lines of a rendered upstream file."""
    found = {}
    for line in (text or "").splitlines():
        m = _LIVE_LINE.match(line)
        if m:
            endpoint = m["endpoint"]
            address = endpoint[1:endpoint.index("]")] if endpoint.startswith("[") else endpoint.rsplit(":", 1)[0]
            found[m["name"]] = address
    return found


def fact_address(facts: Mapping[str, Any] | None, interface: str = "") -> str:
    """IPv4 address of `interface` (empty: the default route's) in a host's facts, or ''."""
    facts = facts or {}
    if interface:
        iface = facts.get(interface.replace("-", "_").replace(".", "_")) or {}
        ipv4 = iface.get("ipv4") if isinstance(iface, Mapping) else None
    else:
        ipv4 = facts.get("default_ipv4")
    address = ipv4.get("address") if isinstance(ipv4, Mapping) else None
    return str(address) if address else ""


def _where(interface: str) -> str:
    return f"interface {interface}" if interface else "its default route (default_ipv4)"


def nginx_backends(hosts: Iterable[str], hostvars: Mapping[str, Any], source: str = "fact",
                   address_var: str = "", interface: str = "", port: Any = 8000,
                   live_upstream: str = "") -> list[dict[str, Any]]:
    """One dict per upstream host: name, address, port, endpoint, origin, needs_facts, error."""
    if source not in SOURCES:
        raise ValueError(f"nginx_upstream_address_source must be one of {', '.join(SOURCES)}, got {source!r}")
    live = live_addresses(live_upstream)
    out = []
    for name in hosts:
        hv = hostvars[name]
        address, origin, error, needs_facts = "", "", "", False
        if hv.get("nginx_backend_address") not in (None, ""):
            address, origin = str(hv["nginx_backend_address"]), "nginx_backend_address"
        elif source == "name":
            address, origin = str(name), "inventory name"
        elif source == "var":
            value = hv.get(address_var) if address_var else None
            if value in (None, ""):
                error = (f"backend {name}: nginx_upstream_address_source is 'var' but hostvar "
                         f"'{address_var}' (nginx_upstream_address_var) is not set for it. Set it, "
                         f"or set nginx_backend_address for {name}, or use nginx_upstream_address_source: fact.")
            else:
                address, origin = str(value), f"hostvar {address_var}"
        else:
            address = fact_address(hv.get("ansible_facts"), interface)
            if address:
                origin = f"facts ({_where(interface)})"
            elif name in live:
                address, origin, needs_facts = live[name], "live upstream (no address in its facts)", True
            else:
                needs_facts = True
                error = (f"backend {name}: no IPv4 address on {_where(interface)} in its facts "
                         f"(host unreachable or interface missing) and none in the live upstream. Set "
                         f"nginx_backend_address for {name}, or fix nginx_upstream_interface, or bring the "
                         f"host back and run again.")
        services = hv.get("app_services")
        if not error and isinstance(services, list) and not any(
                isinstance(s, Mapping) and s.get("port") not in (None, "") for s in services):
            error = (f"backend {name}: its app_services declare no port (a batch-only application: nothing "
                     f"listens for nginx there). Remove {name} from nginx_upstream_hosts (default: the app "
                     "group), or give the service nginx fronts a port in its app_services.")
        backend_port = hv.get("nginx_backend_port")
        backend_port = port if backend_port in (None, "") else backend_port
        host = f"[{address}]" if ":" in address else address
        out.append({"name": str(name), "address": address, "port": backend_port,
                    "endpoint": f"{host}:{backend_port}", "origin": origin,
                    "needs_facts": needs_facts, "error": error})
    return out


class FilterModule:
    """Role nginx's filters."""

    def filters(self) -> dict[str, Any]:
        return {"nginx_backends": nginx_backends}
