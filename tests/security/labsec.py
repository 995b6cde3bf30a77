"""The logic of the lab security gate (tests/security/test_lab_security.py), testable without a lab.

What a host must look like is derived from what the project declares, not from a hand list:

- the roles a host runs: the ``roles:`` of the plays of ``playbooks/site.yml`` and the roles
  ``playbooks/deploy.yml`` imports (not the ones it delegates to another host), by group;
- the secrets: every role variable that ``meta/argument_specs.yml`` marks ``no_log`` or whose name
  says it is one (password, secret, token, private key), and the app's ``app_secret_env``, with the
  values the inventory gives them on that host;
- the ports other hosts may reach: the host's firewall rules (``firewall_allow`` and every
  ``firewall_allow__*``, as roles/firewall reads them); the ports it may listen on for itself
  (loopback): the port variables of its roles (``*_port``, ``host:port`` of ``*_listen``, the
  ``port`` of ``app_services``).
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import yaml

SECRET_NAME = re.compile(r"password|secret|token|private_key|key_content|encryption_key")
PORT_NAME = re.compile(r"(^|_)port$")
LISTEN_NAME = re.compile(r"_listen$")
# Variables a role reads whose leaves are all secrets (a mapping of environment variables).
SECRET_MAPPINGS = ("app_secret_env",)
# Docker's embedded DNS resolver listens on 127.0.0.11 inside every container of a user network:
# the lab's platform, not a tradeops service.
PLATFORM_LOOPBACK = {ipaddress.ip_address("127.0.0.11")}
WILDCARDS = {"0.0.0.0", "::", "*"}


class Listener(NamedTuple):
    proto: str  # tcp / udp
    address: str  # as ss prints it, without brackets or %interface
    port: int
    process: str = ""


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def _tasks_roles(tasks: Iterable[dict[str, Any]]) -> Iterator[str]:
    for task in tasks or []:
        for key in ("block", "rescue", "always"):
            yield from _tasks_roles(task.get(key, []))
        for key in ("ansible.builtin.import_role", "ansible.builtin.include_role", "import_role", "include_role"):
            spec = task.get(key)
            if isinstance(spec, dict) and "delegate_to" not in spec.get("apply", {}) and "delegate_to" not in task:
                yield spec["name"]


def group_roles(project: Path, playbooks: Iterable[str] = ("site.yml", "deploy.yml")) -> dict[str, list[str]]:
    """{group or host pattern: [role, ...]} of the plays of these playbooks (imported playbooks not followed)."""
    out: dict[str, list[str]] = {}
    for name in playbooks:
        for play in load_yaml(project / "playbooks" / name) or []:
            if "hosts" not in play:
                continue
            roles = [r["role"] if isinstance(r, dict) else r for r in play.get("roles", [])]
            for key in ("pre_tasks", "tasks", "post_tasks"):
                roles += list(_tasks_roles(play.get(key, [])))
            bucket = out.setdefault(str(play["hosts"]), [])
            bucket += [r for r in roles if r not in bucket]
    return out


def roles_of(groups: Iterable[str], mapping: dict[str, list[str]]) -> list[str]:
    wanted = {*groups, "all"}
    roles: list[str] = []
    for pattern, names in mapping.items():
        if pattern in wanted:
            roles += [r for r in names if r not in roles]
    return roles


def _options(spec: dict[str, Any] | None, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    for name, option in (spec or {}).items():
        yield (*path, name), option
        yield from _options(option.get("options"), (*path, name))


def role_options(project: Path, role: str) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """Every option (nested ones with their path) of every entry point of a role's argument specs."""
    doc = load_yaml(project / "roles" / role / "meta" / "argument_specs.yml") or {}
    out = []
    for entry in (doc.get("argument_specs") or {}).values():
        out += list(_options(entry.get("options"), ()))
    return out


def secret_paths(project: Path, roles: Iterable[str]) -> list[tuple[str, ...]]:
    """Variable paths (name, then nested option names) holding secrets, as the roles declare them."""
    paths: list[tuple[str, ...]] = []
    for role in roles:
        for path, option in role_options(project, role):
            secret = option.get("no_log") or (SECRET_NAME.search(path[-1]) and option.get("type", "str") == "str")
            if secret and path not in paths:
                paths.append(path)
        for name in SECRET_MAPPINGS:
            if any(p == (name,) for p, _ in role_options(project, role)) and (name, "*") not in paths:
                paths.append((name, "*"))
    return paths


def leaves(value: Any, path: tuple[str, ...]) -> list[str]:
    """The string values at path in value (lists are walked through; '*' is every key of a mapping)."""
    if isinstance(value, list):
        return [leaf for item in value for leaf in leaves(item, path)]
    if not path:
        return [str(value)] if isinstance(value, (str, int)) and str(value) else []
    if not isinstance(value, dict):
        return []
    if path[0] == "*":
        return [leaf for item in value.values() for leaf in leaves(item, path[1:])]
    return leaves(value[path[0]], path[1:]) if path[0] in value else []


def role_defaults(project: Path, roles: Iterable[str]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for role in roles:
        merged |= load_yaml(project / "roles" / role / "defaults" / "main.yml") or {}
    return merged


def declared_variables(project: Path, roles: Iterable[str]) -> list[str]:
    """Names of the top-level variables the gate reads for these roles (ports, listen addresses, secrets)."""
    names: list[str] = []
    for role in roles:
        for path, option in role_options(project, role):
            top = path[0]
            wanted = (PORT_NAME.search(top) or LISTEN_NAME.search(top) or SECRET_NAME.search(top)
                      or top in SECRET_MAPPINGS or len(path) > 1 or option.get("no_log")
                      or option.get("type") in ("list", "dict"))
            if wanted and top not in names:
                names.append(top)
    return names


def merged_values(defaults: dict[str, Any], inventory: dict[str, Any]) -> dict[str, Any]:
    """The inventory's (rendered) value of each variable, else the role default when it is literal."""
    out = {k: v for k, v in defaults.items() if not (isinstance(v, str) and "{{" in v)}
    return out | inventory


def _secret_keys(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            if SECRET_NAME.search(str(k)) and isinstance(v, str):
                yield f"{path}.{k}", v
            else:
                yield from _secret_keys(v, f"{path}.{k}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            yield from _secret_keys(item, f"{path}[{n}]")


def secrets(values: dict[str, Any], paths: Iterable[tuple[str, ...]]) -> dict[str, str]:
    """{"variable.path[#n]": value} of every non-empty secret: the declared paths, and any key of a
    mapping inside a role variable whose name says it is a secret (backup_postgresql[0].password)."""
    out: dict[str, str] = {}
    for path in paths:
        if path[0] not in values:
            continue
        for n, leaf in enumerate(leaves(values[path[0]], path[1:])):
            out[".".join(path) + (f"#{n}" if n else "")] = leaf
    for name, value in values.items():
        out |= {k: v for k, v in _secret_keys(value, name) if v}
    return out


def _ports_in(value: Any, key: str = "") -> Iterator[int]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _ports_in(v, str(k))
    elif isinstance(value, list):
        for item in value:
            yield from _ports_in(item, key)
    elif PORT_NAME.search(key) and str(value).isdigit():
        yield int(value)
    elif LISTEN_NAME.search(key) and isinstance(value, str) and re.search(r":(\d+)$", value):
        yield int(value.rsplit(":", 1)[1])


def role_ports(values: dict[str, Any]) -> set[int]:
    """Every port a host's role variables name (*_port, *_listen host:port, app_services[].port)."""
    ports: set[int] = set()
    for name, value in values.items():
        if PORT_NAME.search(name) or LISTEN_NAME.search(name) or name == "app_services":
            ports |= set(_ports_in(value, name))
    return ports


def firewall_ports(rules: Iterable[dict[str, Any]]) -> set[tuple[str, int]]:
    """(proto, port) of every firewall rule (port: one or a list; proto default tcp)."""
    out: set[tuple[str, int]] = set()
    for rule in rules:
        ports = rule["port"] if isinstance(rule["port"], list) else [rule["port"]]
        protos = rule.get("proto", "tcp")
        for proto in protos if isinstance(protos, list) else [protos]:
            out |= {(str(proto), int(p)) for p in ports}
    return out


def parse_ss(text: str) -> list[Listener]:
    """Listening sockets from ``ss -Hlntup`` (Netid State Recv-Q Send-Q Local:Port Peer:Port [Process])."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        local = fields[4]
        address, _, port = local.rpartition(":")
        address = address.split("%", 1)[0].strip("[]")
        process = re.search(r'users:\(\("([^"]+)"', line)
        out.append(Listener(fields[0], address, int(port), process.group(1) if process else ""))
    return out


def is_loopback(address: str) -> bool:
    if address in WILDCARDS:
        return False
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def is_platform(address: str) -> bool:
    try:
        return ipaddress.ip_address(address) in PLATFORM_LOOPBACK
    except ValueError:
        return False


def port_problems(listeners: Iterable[Listener], external: set[tuple[str, int]], local: set[int]) -> list[str]:
    """What differs between the listening sockets and the declared sets.

    external: (proto, port) other hosts may reach (the firewall rules): exactly these listen on a
    non-loopback address; local: the ports of the host's roles, the only ones allowed on loopback.
    """
    problems = []
    listening = [s for s in listeners if not is_platform(s.address)]
    outside = {(s.proto, s.port) for s in listening if not is_loopback(s.address)}
    for proto, port in sorted(outside - external):
        who = sorted({f"{s.address} ({s.process})" for s in listening if (s.proto, s.port) == (proto, port)})
        problems.append(f"{proto}/{port} listens on {', '.join(who)} but no firewall rule declares it")
    for proto, port in sorted(external - outside):
        problems.append(f"{proto}/{port} is declared in the firewall rules but nothing listens on it "
                        "beyond loopback")
    for s in sorted({s for s in listening if is_loopback(s.address) and s.port not in local}):
        problems.append(f"{s.proto}/{s.port} listens on {s.address} ({s.process}) but no role variable of this "
                        "host declares that port")
    return problems


def wildcard_problems(listeners: Iterable[Listener], port: int, declared: Iterable[str], what: str) -> list[str]:
    """A data service bound to every address although its declared listen addresses are not a wildcard."""
    if any(str(a) in WILDCARDS for a in declared):
        return []
    return [f"{what} listens on {s.address}:{s.port} (every address) but declares {list(declared)}"
            for s in listeners if s.port == port and s.address in WILDCARDS]


def file_problems(files: Iterable[dict[str, Any]], max_uid: int = 999) -> list[str]:
    """A secret-holding file is readable by root and ONE service account only: nothing for other; owned
    by root or a system account (uid <= max_uid, not nobody); group bits only when the group is a
    single system account's own (root:prometheus 0640 for Alertmanager's receivers, Debian's
    root:ssl-cert 0640 key that only postgres is in), never a group that several accounts share."""
    problems = []
    for f in files:
        mode = int(f["mode"], 8)
        where = f"{f['path']} (holds {', '.join(f['holds'])}) is mode {f['mode']} {f['owner']}:{f['group']}"
        members = f.get("group_members", {})
        if mode & 0o007:
            problems.append(f"{where}: other can read it, want 0600 (or 0640 to one service's own group)")
        if mode & 0o070 and not (len(members) == 1 and all(0 <= uid <= max_uid for uid in members.values())):
            problems.append(f"{where}: its group is shared by {sorted(members) or 'no account'}, want 0600 "
                            "(or 0640 to one service's own group)")
        if f["uid"] != 0 and (f["uid"] > max_uid or f["owner"] in ("nobody", "nogroup")):
            problems.append(f"{where}: owned by {f['owner']} (uid {f['uid']}), want root or the service's "
                            "system account")
    return problems


TLS_LINE = re.compile(r"New, (\S+), Cipher is (\S+)")
TLS_PROTOCOL = re.compile(r"Protocol\s*:\s*(\S+)")


def tls_outcome(s_client_output: str) -> tuple[str, str] | None:
    """(protocol, cipher) of a completed ``openssl s_client`` handshake, None when refused. The protocol
    is the session's (``Protocol  : TLSv1.1``): the ``New, TLSv1.0, Cipher is`` line names the oldest
    version the cipher exists in, not the negotiated one."""
    m = TLS_LINE.search(s_client_output)
    if not m or "NONE" in m.group(1) or m.group(2) == "(NONE)":
        return None
    protocol = TLS_PROTOCOL.search(s_client_output)
    return (protocol.group(1) if protocol else m.group(1)), m.group(2)


def weak_cipher(name: str) -> bool:
    """Modern = TLS 1.3 suite, or forward secret (ECDHE/DHE) with an AEAD (GCM, ChaCha20-Poly1305)."""
    if name.startswith("TLS_"):
        return False
    forward_secret = name.startswith(("ECDHE-", "DHE-"))
    aead = "-GCM-" in name or name.endswith("CHACHA20-POLY1305")
    return not (forward_secret and aead)
