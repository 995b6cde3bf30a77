# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The health contract of an application's services (role app's ``app_services``), checked and
turned into what ``app_deploy`` gates, soaks, rolls back and verifies on.

Each service may declare a ``liveness`` and a ``readiness`` probe:

- ``{kind: http, path: /health}`` (or ``url`` on the host's loopback; ``port`` default the
  service's): ``status`` (``200``, ``"200-299"`` or a list), ``json_field`` (dotted path) with an
  optional ``json_value``, ``header`` with an optional ``header_value``, ``body_contains``;
- ``{kind: tcp}``: the service's port (or ``port``) accepts a connection;
- ``{kind: command, argv: [myapp, --version]}``: run from the release (its venv first on PATH,
  its env file, as the app user, in the release directory), exit 0 is healthy; ``expect_output`` is text
  its output must contain;
- ``{kind: none}``: no probe (the unit's systemd state only).

Every probe takes ``timeout`` (seconds) and ``name``; ``expect_version: true`` makes the JSON field's
or the header's value (http) or the output (command) carry the release's version. A service that
declares neither probe keeps the reference app's contract when it has a port (liveness GET
``app_health_liveness_path``, readiness GET ``app_health_readiness_path`` with a JSON ``version``
equal to the release's; the legacy ``health: {liveness, readiness}`` paths override them) and has
no probe when it has none (a worker: its systemd state only).

``app_services | health_contract_errors`` lists what is wrong (each message names the service, the
option and the fix); role app's preflight fails on it. ``app_services | app_deploy_services(...)``
renders the ``services`` option of ``app_deploy``, in start order.

The application's own gate, ``app_gate``, is one command probe with the same options (``kind`` may be
left out): run once from the release, it is the whole gate of a batch-only application (``app_services:
[]``, whose jobs run ``current``: it runs before the switch) and an extra gate after the services' own
otherwise. ``app_gate | app_gate_errors(app_services, deadline)`` lists its mistakes (a batch-only
application without one among them); ``app_gate | app_deploy_gate(...)`` renders ``app_deploy``'s
``gate``.
"""

from __future__ import annotations

import os
import re
import sys
import urllib.parse
from typing import Any

from ansible.errors import AnsibleFilterError

try:  # the unit tests register plugins/module_utils as ansible.module_utils (tests/unit/conftest.py)
    from ansible.module_utils import tradeops_probes as probes
    from ansible.module_utils import tradeops_release as release
except ImportError:  # Ansible loads controller plugins without its module_utils path: load it beside us
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "module_utils"))
    import tradeops_probes as probes  # type: ignore[no-redef]
    import tradeops_release as release  # type: ignore[no-redef]

DOCUMENTATION = """
name: health_contract_errors
short_description: what is wrong in the health contracts of app_services
description:
  - C(app_services | health_contract_errors) is the list of mistakes in the services' C(liveness) and
    C(readiness) probes, each naming the service, the option and the fix; empty when all is well.
  - C(app_services | app_deploy_services(order=..., user=..., group=..., env_file=..., liveness_path=...,
    readiness_path=...)) renders app_deploy's C(services) in start order (fails on the same mistakes).
  - C(app_gate | app_gate_errors(app_services, deadline)) is the list of mistakes in role app's C(app_gate)
    (a command probe; required when C(app_services) is empty); C(app_gate | app_deploy_gate(user=...,
    group=..., env_file=...)) renders app_deploy's C(gate).
  - C(app_services | lb_probe(port=..., liveness_path=..., readiness_path=...)) is what verify.yml requests
    through the load balancer of the service on the upstream C(port) (path, status, body checks).
  - C(console_scripts | app_install_errors(app_requirements)) is the list of mistakes in what a release runs
    (role app's C(__app_console_scripts), names with the setting naming each) and installs beside the app.
positional: _input
options:
  _input:
    description: role app's C(app_services)
    type: list
    elements: dict
    required: true
"""

PROBES = ("liveness", "readiness")
KINDS = ("http", "tcp", "command", "none")
_COMMON = {"kind", "name", "timeout"}
OPTIONS = {
    "http": _COMMON | {"expect_version", "path", "url", "port", "status", "json_field", "json_value", "header",
                       "header_value", "body_contains"},
    "tcp": _COMMON | {"port"},
    "command": _COMMON | {"expect_version", "expect_output", "argv"},
    "none": {"kind"},
}
LOOPBACK = ("127.0.0.1", "::1", "localhost")
DOTTED = re.compile(r"^[^.\s]+(\.[^.\s]+)*\Z")
EXAMPLE = "{kind: http, path: /health}"
GATE = "app_gate"
GATE_EXAMPLE = "{argv: [myapp, --version], expect_version: true}"


def _is_port(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


def _http_errors(probe: dict[str, Any], where: str) -> list[str]:
    errors = []
    path, url = probe.get("path"), probe.get("url")
    if path is not None and url is not None:
        errors.append(f"{where} has both path and url: keep one (path is requested on the service's port)")
    elif path is None and url is None:
        errors.append(f"{where}.path is missing: give the path to request, e.g. path: /health")
    elif path is not None and not (isinstance(path, str) and path.startswith("/")):
        errors.append(f"{where}.path is {path!r}: give a path that starts with /, e.g. /health")
    elif url is not None:
        parts = urllib.parse.urlsplit(str(url))
        if parts.scheme not in ("http", "https") or parts.hostname not in LOOPBACK:
            errors.append(f"{where}.url is {url!r}: probes check the service on this host, so give an http(s) URL on "
                          f"its loopback (127.0.0.1, [::1], localhost), or path")
    if "status" in probe:
        try:
            probes.parse_status(probe["status"])
        except probes.CheckError as exc:
            errors.append(f"{where}.{exc}")
    field, header = probe.get("json_field"), probe.get("header")
    if field is not None and not (isinstance(field, str) and DOTTED.match(field)):
        errors.append(f"{where}.json_field is {field!r}: give a dotted path of the JSON body, e.g. version or "
                      "build.version")
    if "json_value" in probe and field is None:
        errors.append(f"{where}.json_value needs json_field (the field it is compared with): add json_field or "
                      "remove json_value")
    if header is not None and not (isinstance(header, str) and probes.HEADER_NAME.match(header)):
        errors.append(f"{where}.header is {header!r}: give the name of a response header, e.g. X-Version")
    if "header_value" in probe and header is None:
        errors.append(f"{where}.header_value needs header (the response header it is compared with): add header "
                      "or remove header_value")
    if probe.get("expect_version") is True:
        if field is None and header is None:
            errors.append(f"{where}.expect_version needs json_field or header (where the version is read): add one, "
                          "or set expect_version: false")
        elif not ((field and "json_value" not in probe) or (header and "header_value" not in probe)):
            errors.append(f"{where}.expect_version leaves nothing to compare with the version (json_value and "
                          "header_value are set): remove one of them, or set expect_version: false")
    return errors


def probe_errors(service: dict[str, Any], which: str) -> list[str]:
    """The mistakes in one probe (``which``: liveness or readiness) of one service."""
    where = f"app_services '{service.get('name', '?')}': {which}"
    probe = service.get(which)
    if probe is None:
        return []
    if not isinstance(probe, dict):
        return [f"{where} is {probe!r}: give a probe such as {EXAMPLE}, or {{kind: none}} for none"]
    kind = probe.get("kind", "http")
    if kind not in KINDS:
        return [f"{where}.kind is {kind!r}: use http, tcp, command or none"]
    return _option_errors(probe, kind, where, service, which, KINDS)


def _option_errors(probe: dict[str, Any], kind: str, where: str, service: dict[str, Any], which: str,
                   kinds: tuple[str, ...]) -> list[str]:
    """The mistakes in the options of a probe of a known ``kind`` (``where`` prefixes each message); an option of
    another of the allowed ``kinds`` is named with that kind."""
    errors = []
    for key in sorted(set(probe) - OPTIONS[kind]):
        owners = [k for k in kinds if key in OPTIONS[k] and k != kind]
        fix = f"remove it, or use kind: {' or '.join(owners)}" if owners else "remove it (not a probe option)"
        if not owners and any(key in OPTIONS[k] for k in KINDS):
            fix = f"remove it (the only options of {where} are {', '.join(sorted(OPTIONS[kind]))})"
        errors.append(f"{where}.{key} is not an option of a {kind} probe: {fix}")
    if kind == "none":
        return errors
    timeout = probe.get("timeout")
    if "timeout" in probe and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
        errors.append(f"{where}.timeout is {timeout!r}: give the seconds the probe may take, more than 0 (e.g. 5)")
    if "expect_version" in probe and not isinstance(probe["expect_version"], bool):
        errors.append(f"{where}.expect_version is {probe['expect_version']!r}: give true or false")
    if kind in ("http", "tcp"):
        port = probe.get("port", service.get("port"))
        if "port" in probe and not _is_port(probe["port"]):
            errors.append(f"{where}.port is {probe['port']!r}: give a TCP port between 1 and 65535")
        elif port is None and not (kind == "http" and probe.get("url")):
            errors.append(f"{where} is a {kind} probe but service '{service.get('name', '?')}' has no port: give the "
                          f"service a port (or {which}.port), or use kind: command or none")
    if kind == "http":
        errors += _http_errors(probe, where)
    if kind == "command":
        try:
            probes.validate_argv(probe.get("argv"), "argv")
        except probes.CheckError as exc:
            errors.append(f"{where}.{exc}")
        output = probe.get("expect_output")
        if "expect_output" in probe and not (isinstance(output, str) and output):
            errors.append(f"{where}.expect_output is {output!r}: give the text its output must contain, e.g. "
                          "\"dry run ok\" (quote it), or remove it")
    return errors


def app_gate_errors(gate: Any, services: list[dict[str, Any]] | None, deadline: Any = None) -> list[str]:
    """Every mistake in role app's ``app_gate`` (``{}``: none), with ``app_services`` and ``app_health_deadline``:
    a batch-only application (no services) needs one; it is a command probe; its timeout fits the deadline."""
    if gate in (None, {}):
        if services:
            return []
        return [f"app_services is empty (a batch-only application: no service runs, its jobs run current) and "
                f"{GATE} is not set, so nothing would check a release before it becomes current: give {GATE} a "
                f"command run from the release, e.g. {GATE}: {GATE_EXAMPLE} (or a dry run), or list the "
                "application's services in app_services"]
    if not isinstance(gate, dict):
        return [f"{GATE} is {gate!r}: give a command probe such as {GATE_EXAMPLE}, or {{}} for none"]
    kind = gate.get("kind", "command")
    if kind != "command":
        return [f"{GATE}.kind is {kind!r}: the application's gate is a command run from the release; use kind: "
                "command (or leave kind out), and put http or tcp probes on a service's readiness"]
    errors = _option_errors(gate, kind, GATE, {"name": GATE}, GATE, (kind,))
    timeout = gate.get("timeout", probes.DEFAULT_TIMEOUT)
    if (not errors and isinstance(deadline, int | float) and not isinstance(deadline, bool)
            and isinstance(timeout, int | float) and timeout > deadline):
        errors.append(f"{GATE}.timeout is {timeout:g} but app_health_deadline is {deadline:g}: the gate would be cut "
                      f"at {deadline:g} s; raise app_health_deadline to at least {timeout:g}, or lower "
                      f"{GATE}.timeout")
    return errors


def health_contract_errors(services: list[dict[str, Any]]) -> list[str]:
    """Every mistake in the liveness and readiness probes of ``services``."""
    errors = []
    for service in services or []:
        if not isinstance(service, dict):
            continue  # role app's preflight reports malformed services
        legacy = service.get("health") or {}
        for which in PROBES:
            if which in service and isinstance(legacy, dict) and which in legacy:
                errors.append(f"app_services '{service.get('name', '?')}': health.{which} (a path) and {which} (a "
                              f"probe) are both set: keep {which} and put the path in it")
            errors += probe_errors(service, which)
    return errors


def _render(service: dict[str, Any], which: str, settings: dict[str, Any]) -> dict[str, Any] | None:
    probe, port = service.get(which), service.get("port")
    if probe is None:  # the reference app's contract, for a service with a port
        if port is None:
            return None
        path = (service.get("health") or {}).get(which) or settings[f"{which}_path"]
        out: dict[str, Any] = {"url": f"http://127.0.0.1:{port}{path}", "name": which}
        if which == "readiness":
            out["json_field"] = "version"
        return out
    kind = probe.get("kind", "http")
    if kind == "none":
        return None
    out = {"kind": kind, "name": probe.get("name") or which}
    if "timeout" in probe:
        out["timeout"] = float(probe["timeout"])
    if kind == "tcp":
        out["port"] = probe.get("port", port)
        return out
    out["expect_version"] = bool(probe.get("expect_version", False))
    if kind == "command":
        out.update(argv=list(probe["argv"]), user=settings["user"], group=settings["group"],
                   env_file=settings["env_file"])
        if "expect_output" in probe:
            out["expect_output"] = probe["expect_output"]
        return out
    out["url"] = probe.get("url") or f"http://127.0.0.1:{probe.get('port', port)}{probe['path']}"
    for key in ("json_field", "json_value", "header", "header_value", "body_contains"):
        if key in probe:
            out[key] = probe[key]
    if "status" in probe:
        out["status"] = probe["status"] if isinstance(probe["status"], list) else [probe["status"]]
    return out


def app_deploy_gate(gate: Any, user: str, group: str, env_file: str) -> list[dict[str, Any]]:
    """app_deploy's ``gate``: ``app_gate`` as a command probe named app_gate, run as ``user`` with ``env_file``
    (``[]`` for none). Fails on a mistake ``app_gate_errors`` names (the batch-only rule aside)."""
    if gate in (None, {}):
        return []
    errors = app_gate_errors(gate, [])
    if errors:
        raise AnsibleFilterError("; ".join(errors))
    settings = {"user": user, "group": group, "env_file": env_file}
    return [_render({GATE: {"kind": "command", **gate}}, GATE, settings)]


def app_deploy_services(services: list[dict[str, Any]], order: list[str], app_name: str, user: str, group: str,
                        env_file: str, liveness_path: str, readiness_path: str) -> list[dict[str, Any]]:
    """app_deploy's ``services`` in start ``order``: one unit each, with its liveness then readiness probe."""
    errors = health_contract_errors(services)
    if errors:
        raise AnsibleFilterError("; ".join(errors))
    settings = {"user": user, "group": group, "env_file": env_file, "liveness_path": liveness_path,
                "readiness_path": readiness_path}
    by_name = {s["name"]: s for s in services}
    out = []
    for name in order:
        rendered = [_render(by_name[name], which, settings) for which in PROBES]
        out.append({"unit": f"{app_name}-{name}.service", "probes": [p for p in rendered if p is not None]})
    return out


# Through the load balancer, for a service with no HTTP probe: any answer of a backend (4xx included) is
# one; nginx's 502/503/504 say none answered.
ANY_BACKEND_ANSWER = {"path": "/", "status": ["200-499"]}


def lb_probe(services: list[dict[str, Any]] | None, port: int, liveness_path: str, readiness_path: str,
             base_url: str | None = None) -> dict[str, Any]:
    """What a probe through the load balancer requests of the application behind it (verify.yml): the
    HTTP readiness probe (else liveness) of the service listening on ``port`` (the upstream port),
    with its path, status and body checks; a check of the release's version is left out (during a
    rolling deploy the backends serve two). ``services`` None is role app's default (a service on
    ``port`` with the reference app's contract). A service with no HTTP probe: ``ANY_BACKEND_ANSWER``.
    With ``base_url`` (the load balancer's, e.g. https://127.0.0.1:443): an app_health http probe, ``url``
    = base_url + path instead of ``path``."""
    probe = _lb_probe(services, port, liveness_path, readiness_path)
    if base_url is not None:
        probe["url"] = base_url.rstrip("/") + probe.pop("path")
    return probe


def _lb_probe(services: list[dict[str, Any]] | None, port: int, liveness_path: str,
              readiness_path: str) -> dict[str, Any]:
    settings = {"user": "", "group": "", "env_file": "", "liveness_path": liveness_path,
                "readiness_path": readiness_path}
    candidates = [{"name": "web", "port": port}] if services is None else services
    for service in (s for s in candidates if s.get("port") == port):
        for which in ("readiness", "liveness"):
            rendered = _render(service, which, settings)
            if rendered is None or rendered.get("kind", "http") != "http":
                continue
            url = urllib.parse.urlsplit(rendered["url"])
            out: dict[str, Any] = {"path": url.path + (f"?{url.query}" if url.query else ""),
                                   "status": rendered.get("status", [200])}
            for key in ("json_field", "body_contains"):
                if key in rendered:
                    out[key] = rendered[key]
            if "json_value" in rendered and not rendered.get("expect_version"):
                out["json_value"] = rendered["json_value"]
            return out
    return dict(ANY_BACKEND_ANSWER)


def app_install_errors(console_scripts: list[dict[str, Any]], requirements: list[Any]) -> list[str]:
    """Mistakes in the programs the services run (each a name in the release's venv/bin) and in
    ``app_requirements`` (requirement specifiers), with the checks app_deploy applies on the host."""
    errors = []
    for item in console_scripts or []:
        try:
            release.check_console_script(item.get("name"), item.get("setting", "app_console_script"))
        except release.ReleaseError as exc:
            errors.append(str(exc))
    try:
        release.check_requirements(requirements, "app_requirements")
    except release.ReleaseError as exc:
        errors.append(str(exc))
    return errors


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"health_contract_errors": health_contract_errors, "app_deploy_services": app_deploy_services,
                "app_gate_errors": app_gate_errors, "app_deploy_gate": app_deploy_gate,
                "app_install_errors": app_install_errors, "lb_probe": lb_probe}
