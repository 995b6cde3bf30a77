# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health checks of a host or service: HTTP, TCP and command probes (``tradeops_probes``), systemd units,
PostgreSQL and Redis reachability, disk / memory / CPU thresholds.

Pure Python standard library (psutil is used when installed, with a /proc fallback on
Linux), so that this file is both the logic of the ``app_health`` module and, shipped to
hosts, the ``tradeops-health`` command (``main_cli``) for cron and monitoring:

    tradeops-health --url http://127.0.0.1:8000/health --unit refapp.service --disk / --json

Exit codes: 0 healthy, 1 degraded, 2 unhealthy, 3 could not check (bad arguments or an
internal error).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

try:
    from ansible.module_utils import tradeops_probes as probes
except ImportError:
    try:  # in the ops agent wheel: tradeops_agent/probes.py (scripts/build_agent.py)
        from tradeops_agent import probes  # type: ignore[no-redef]
    except ImportError:  # on a host without Ansible, or run as a file: the module_utils side by side
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import tradeops_probes as probes  # type: ignore[no-redef]
try:
    from ansible.module_utils.tradeops_checks import number, seconds, text
except ImportError:
    try:  # in the ops agent wheel: tradeops_agent/checks.py
        from tradeops_agent.checks import number, seconds, text  # type: ignore[no-redef]
    except ImportError:  # the module_utils side by side (sys.path set above)
        from tradeops_checks import number, seconds, text  # type: ignore[no-redef]

# The probes of a service (tradeops_probes), under the names callers have always imported from here.
HEALTHY, DEGRADED, UNHEALTHY, RANK = probes.HEALTHY, probes.DEGRADED, probes.UNHEALTHY, probes.RANK
DEFAULT_TIMEOUT = probes.DEFAULT_TIMEOUT
CheckError, CheckResult = probes.CheckError, probes.CheckResult
check_http, check_tcp, check_command = probes.check_http, probes.check_tcp, probes.check_command
json_lookup, json_equal, redact_url, parse_status = probes.json_lookup, probes.json_equal, probes.redact_url, \
    probes.parse_status
check_url, check_headers = probes.check_url, probes.check_headers

EXIT_CODES = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}
EXIT_CANNOT_CHECK = 3

# Seed 001: degraded above 80 % CPU / 85 % memory, unhealthy above 95 %.
DEFAULT_THRESHOLDS = {
    "cpu": {"warning": 80.0, "critical": 95.0},
    "memory": {"warning": 85.0, "critical": 95.0},
    "disk": {"warning": 85.0, "critical": 95.0},
}
PG_SSL_REQUEST = struct.pack("!ii", 8, 80877103)
REDIS_PING = b"*1\r\n$4\r\nPING\r\n"
# A Redis that answers with one of these is up but refuses us (auth, ACL, protected mode).
REDIS_ANSWERING = ("-NOAUTH", "-WRONGPASS", "-NOPERM", "-DENIED", "-ERR")
# A Redis that answers with one of these is up but not ready to serve.
REDIS_NOT_READY = ("-LOADING", "-BUSY", "-MASTERDOWN", "-MISCONF", "-TRYAGAIN")
UNIT_PROPERTIES = ("Id", "LoadState", "ActiveState", "SubState", "NRestarts", "Result", "MemoryCurrent", "MemoryMax")
UNIT_OK_SUBSTATES = {"running", "exited", "listening", "waiting", "mounted", "plugged", "active", "elapsed"}
UNIT_NAME = re.compile(r"[A-Za-z0-9:_.@\\-]+")  # a unit's characters: no glob, no path, no white space
CPU_INTERVAL_MAX = 60.0


def probe_argument_spec() -> dict[str, Any]:
    """Ansible argument spec of one HTTP probe: app_health's ``http`` items and app_deploy's
    ``services[].probes`` (one definition for both modules)."""
    return dict(
        url=dict(type="str", required=True),
        name=dict(type="str"),
        status=dict(type="list", elements="raw", default=[200]),
        body_contains=dict(type="str"),
        json_field=dict(type="str"),
        json_value=dict(type="raw"),
        header=dict(type="str"),
        header_value=dict(type="str"),
        timeout=dict(type="float"),
        headers=dict(type="dict", no_log=True),
        method=dict(type="str", default="GET", choices=["GET", "HEAD"]),
        validate_certs=dict(type="bool", default=True),
        follow_redirects=dict(type="bool", default=True),
    )


PROBE_KINDS = ("http", "tcp", "command")


def service_probe_argument_spec() -> dict[str, Any]:
    """A probe of app_deploy's ``services[].probes``: an HTTP probe (as ``probe_argument_spec``), a TCP
    probe (``host``, ``port``) or a command run from the release (``argv``, ``user``, ``group``,
    ``env_file``, ``expect_output``); ``expect_version`` gates it on the version of the release being started.
    app_deploy's ``gate`` takes the same probes."""
    spec = probe_argument_spec()
    spec["url"] = dict(type="str")
    spec.update(
        kind=dict(type="str", default="http", choices=list(PROBE_KINDS)),
        expect_version=dict(type="bool"),
        expect_output=dict(type="str"),
        host=dict(type="str", default="127.0.0.1"),
        port=dict(type="int"),
        argv=dict(type="list", elements="str"),
        user=dict(type="str"),
        group=dict(type="str"),
        env_file=dict(type="path"),
    )
    return spec


def unit_name(value: Any, where: str, app: str | None = None, error: type[Exception] = CheckError) -> str:
    """A systemd unit name (never a glob pattern such as ``*``, a path or an option); with ``app``, one of that
    application's own service units, ``<app>-<name>.service`` (what role app installs)."""
    unit = value if isinstance(value, str) else ""
    ok = bool(UNIT_NAME.fullmatch(unit)) and not unit.startswith("-")
    if ok and app is not None:
        ok = unit.startswith(f"{app}-") and unit.endswith(".service") and len(unit) > len(app) + len("-.service")
    if ok:
        return unit
    if app is not None:
        raise error(f"{where}: unit {value!r} is not one of the app's own units: give {app}-<service>.service "
                    f"(app_name {app!r})")
    raise error(f"{where}: unit {value!r} is not a systemd unit name, e.g. refapp-web.service")


def worst(statuses: Sequence[str]) -> str:
    """The aggregate status: the worst of the statuses (healthy when there is none)."""
    return max(statuses, key=lambda s: RANK[s], default=HEALTHY)


def at_least(status: str, minimum: str) -> bool:
    """True when ``status`` is as good as ``minimum`` or better."""
    return RANK[status] <= RANK[minimum]


# --------------------------------------------------------------------------- TCP, PostgreSQL, Redis


def parse_host_port(value: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``host`` (with a default port)."""
    text = value.strip()
    host, port = text, None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if port is None:
        if default_port is None:
            raise CheckError(f"{value!r}: give host:port, e.g. 127.0.0.1:5432")
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise CheckError(f"{value!r}: give host:port with a port between 1 and 65535")
    return host, int(port)


def tcp_target(value: str | dict[str, Any]) -> tuple[str, int]:
    """A TCP probe's target: ``host:port`` or ``{host, port}`` (host default 127.0.0.1)."""
    if not isinstance(value, dict):
        return parse_host_port(value)
    port = value.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise CheckError(f"tcp probe {value.get('name') or ''}: port {port!r} must be between 1 and 65535")
    return str(value.get("host") or "127.0.0.1"), port


def _exchange(host: str, port: int, payload: bytes, timeout: float, size: int) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(payload)
        chunks = b""
        while len(chunks) < size:
            chunk = sock.recv(size - len(chunks))
            if not chunk:
                break
            chunks += chunk
            if size > 1 and chunks.endswith(b"\r\n"):
                break
        return sock, chunks
    except BaseException:
        sock.close()
        raise


def check_postgresql(host: str, port: int = 5432, *, timeout: float = DEFAULT_TIMEOUT,
                     name: str | None = None) -> CheckResult:
    """A PostgreSQL server answers the protocol's SSLRequest with one byte, 'S' or 'N'. After 'S'
    the TLS handshake is completed and shut down cleanly (close_notify) before closing: the
    server then stays quiet, as for any connection that ends before a startup packet (closing
    right after 'S' would log "could not accept SSL connection"). No credentials needed."""

    def probe() -> tuple[str, str, dict[str, Any]]:
        try:
            sock, answer = _exchange(host, port, PG_SSL_REQUEST, timeout, 1)
        except OSError as exc:
            return UNHEALTHY, f"{host}:{port}: {probes.error_reason(exc)}", {}
        with sock:
            if answer == b"S":
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                with contextlib.suppress(OSError):
                    tls = context.wrap_socket(sock, server_hostname=host)
                    tls.unwrap()  # close_notify both ways: the server sees a clean EOF and logs nothing
                return HEALTHY, f"PostgreSQL at {host}:{port} answers (TLS offered)", {"ssl": True}
            if answer == b"N":
                return HEALTHY, f"PostgreSQL at {host}:{port} answers (no TLS)", {"ssl": False}
        if not answer:
            return UNHEALTHY, f"{host}:{port} closed the connection without answering the PostgreSQL SSLRequest", {}
        return UNHEALTHY, f"{host}:{port} does not speak the PostgreSQL protocol (answered {answer!r})", {}

    return probes.timed_check(name or f"postgresql:{host}:{port}", "postgresql", probe)


def check_redis(host: str, port: int = 6379, *, timeout: float = DEFAULT_TIMEOUT,
                name: str | None = None) -> CheckResult:
    """PING; +PONG is healthy, an authentication/ACL refusal (-NOAUTH, -WRONGPASS ...) means the
    server answers (healthy: reachability without the password), -LOADING and the like mean
    up but not ready (degraded)."""

    def probe() -> tuple[str, str, dict[str, Any]]:
        try:
            sock, answer = _exchange(host, port, REDIS_PING, timeout, 512)
        except OSError as exc:
            return UNHEALTHY, f"{host}:{port}: {probes.error_reason(exc)}", {}
        sock.close()
        line = answer.split(b"\r\n", 1)[0].decode("utf-8", "replace")
        if line == "+PONG":
            return HEALTHY, f"Redis at {host}:{port} answers PONG", {"reply": line}
        if line.startswith(REDIS_NOT_READY):
            return DEGRADED, f"Redis at {host}:{port} is up but not ready: {line[1:]}", {"reply": line}
        if line.startswith(REDIS_ANSWERING):
            return HEALTHY, f"Redis at {host}:{port} answers ({line[1:60]})", {"reply": line}
        if not line:
            return UNHEALTHY, f"{host}:{port} closed the connection without answering PING", {}
        return UNHEALTHY, f"{host}:{port} does not answer like Redis ({line[:60]!r})", {}

    return probes.timed_check(name or f"redis:{host}:{port}", "redis", probe)


# --------------------------------------------------------------------------- systemd


def parse_systemctl_show(text: str) -> list[dict[str, str]]:
    """``systemctl show --property=...`` output for one or more units: blocks of KEY=VALUE
    lines separated by blank lines, in the order of the units given."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            current[key] = value
    if current:
        blocks.append(current)
    return blocks


def memory_bytes(value: str | None) -> int | None:
    """A systemd memory property in bytes: None for "[not set]" (no memory accounting), "infinity" (no limit),
    systemd's UINT64_MAX spelling of either, or nothing."""
    try:
        number = int(value or "")
    except ValueError:
        return None
    return number if 0 <= number < 2**64 - 1 else None


def unit_status(unit: str, props: dict[str, str]) -> tuple[str, str, dict[str, Any]]:
    """Health of one unit from its properties: active and running (or exited for oneshot
    units) is healthy, automatic restarts since its start make it degraded, anything else
    (not found, failed, inactive, still activating) is unhealthy."""
    load, active, sub = props.get("LoadState", ""), props.get("ActiveState", ""), props.get("SubState", "")
    try:
        restarts = int(props.get("NRestarts", "0") or 0)
    except ValueError:
        restarts = 0
    data = {"load_state": load, "active_state": active, "sub_state": sub, "restarts": restarts,
            "memory_current": memory_bytes(props.get("MemoryCurrent")),
            "memory_max": memory_bytes(props.get("MemoryMax"))}
    if load == "not-found":
        return UNHEALTHY, f"{unit} not found (LoadState=not-found)", data
    state = f"{active}/{sub}"
    if active == "active" and sub in UNIT_OK_SUBSTATES:
        if restarts > 0:
            return DEGRADED, f"{state}, restarted {restarts} time(s) by systemd since it was started", data
        return HEALTHY, state, data
    if active == "reloading":
        return DEGRADED, f"{state} (reloading)", data
    result = props.get("Result", "")
    extra = f", result {result}" if result and result != "success" else ""
    extra += f", {restarts} restart(s)" if restarts else ""
    return UNHEALTHY, f"{state}{extra}", data


def check_units(units: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT,
                runner: Callable[[list[str], float], str] | None = None) -> list[CheckResult]:
    """State of systemd units with one ``systemctl show`` call."""
    if not units:
        return []
    started = time.monotonic()
    cmd = ["systemctl", "show", f"--property={','.join(UNIT_PROPERTIES)}", "--", *units]
    try:
        if runner is not None:
            out = runner(cmd, timeout)
        else:
            if shutil.which("systemctl") is None:
                raise OSError("systemctl not found: this host does not run systemd")
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
            if proc.returncode != 0:
                raise OSError(proc.stderr.strip() or f"systemctl exited {proc.returncode}")
            out = proc.stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        elapsed = time.monotonic() - started
        return [CheckResult(f"unit:{u}", "systemd", UNHEALTHY, f"cannot read the unit state: {exc}", elapsed)
                for u in units]
    blocks = parse_systemctl_show(out)
    elapsed = time.monotonic() - started
    results = []
    for index, unit in enumerate(units):
        props = blocks[index] if index < len(blocks) else {}
        if not props:
            results.append(CheckResult(f"unit:{unit}", "systemd", UNHEALTHY, "systemctl returned no state", elapsed))
            continue
        status, detail, data = unit_status(unit, props)
        results.append(CheckResult(f"unit:{unit}", "systemd", status, detail, elapsed / len(units), data))
    return results


# --------------------------------------------------------------------------- resources


def _psutil() -> Any:
    try:
        import psutil  # optional: imported only when thresholds are asked for
    except ImportError:
        return None
    return psutil


def memory_percent() -> float:
    ps = _psutil()
    if ps is not None:
        return float(ps.virtual_memory().percent)
    try:
        values = {}
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                values[key] = int(rest.split()[0])
        total, available = values["MemTotal"], values["MemAvailable"]
    except (OSError, KeyError, ValueError, IndexError) as exc:
        raise CheckError(
            "cannot measure memory: psutil is not installed and /proc/meminfo is unreadable; "
            "install python3-psutil (Debian) on the host"
        ) from exc
    return round(100.0 * (total - available) / total, 1)


def _proc_stat() -> tuple[int, int]:
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields[:8]), idle


def cpu_percent(interval: float = 0.5) -> float:
    ps = _psutil()
    if ps is not None:
        return float(ps.cpu_percent(interval=interval))
    try:
        total1, idle1 = _proc_stat()
        time.sleep(interval)
        total2, idle2 = _proc_stat()
    except (OSError, ValueError, IndexError) as exc:
        raise CheckError(
            "cannot measure CPU: psutil is not installed and /proc/stat is unreadable; "
            "install python3-psutil (Debian) on the host"
        ) from exc
    busy = (total2 - total1) - (idle2 - idle1)
    return round(100.0 * busy / max(total2 - total1, 1), 1)


def disk_percent(path: str) -> float:
    """Used space as ``df`` shows it: used / (used + available to unprivileged users)."""
    ps = _psutil()
    if ps is not None:
        return float(ps.disk_usage(path).percent)
    if not hasattr(os, "statvfs"):  # Windows without psutil: no reserved blocks to tell apart
        usage = shutil.disk_usage(path)
        return round(100.0 * usage.used / max(usage.used + usage.free, 1), 1)
    st = os.statvfs(path)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    avail = st.f_bavail * st.f_frsize
    return round(100.0 * used / max(used + avail, 1), 1)


def threshold_status(value: float, warning: float, critical: float) -> str:
    if value > critical:
        return UNHEALTHY
    if value > warning:
        return DEGRADED
    return HEALTHY


def _limits(spec: dict[str, Any] | None, kind: str) -> tuple[float, float]:
    spec = spec or {}
    if not isinstance(spec, dict):
        raise CheckError(f"thresholds.{kind} must be a mapping (warning, critical)")
    warning, critical = (float(number(spec[key] if spec.get(key) is not None else DEFAULT_THRESHOLDS[kind][key],
                                      f"thresholds.{kind}.{key}", error=CheckError)) for key in ("warning", "critical"))
    if not 0 <= warning <= critical <= 100:
        raise CheckError(f"thresholds.{kind}: need 0 <= warning ({warning}) <= critical ({critical}) <= 100")
    return warning, critical


def check_thresholds(thresholds: dict[str, Any] | None) -> list[CheckResult]:
    """``{"cpu": {warning, critical, interval}, "memory": {...}, "disk": {paths, warning,
    critical}}``; a resource not named is not checked. Over warning is degraded, over
    critical unhealthy (percent, strictly greater)."""
    results: list[CheckResult] = []
    thresholds = thresholds or {}
    unknown = set(thresholds) - {"cpu", "memory", "disk"}
    if unknown:
        raise CheckError(f"thresholds: unknown resource(s) {', '.join(sorted(unknown))}; use cpu, memory, disk")

    def measure(name: str, kind: str, func: Callable[[], float], warning: float, critical: float) -> CheckResult:
        started = time.monotonic()
        try:
            value = func()
        except OSError as exc:
            return CheckResult(name, kind, UNHEALTHY, f"cannot measure: {exc}", time.monotonic() - started)
        status = threshold_status(value, warning, critical)
        detail = f"{value:.1f} % used (warning > {warning:g}, critical > {critical:g})"
        return CheckResult(name, kind, status, detail, time.monotonic() - started,
                           {"percent": value, "warning": warning, "critical": critical})

    if thresholds.get("cpu") is not None:
        warning, critical = _limits(thresholds["cpu"], "cpu")
        interval = _cpu_interval(thresholds["cpu"])
        results.append(measure("cpu", "cpu", lambda: cpu_percent(interval), warning, critical))
    if thresholds.get("memory") is not None:
        warning, critical = _limits(thresholds["memory"], "memory")
        results.append(measure("memory", "memory", memory_percent, warning, critical))
    if thresholds.get("disk") is not None:
        warning, critical = _limits(thresholds["disk"], "disk")
        for path in _disk_paths(thresholds["disk"]):
            results.append(measure(f"disk:{path}", "disk", lambda p=path: disk_percent(p), warning, critical))
    return results


def _cpu_interval(spec: dict[str, Any]) -> float:
    value = spec.get("interval")
    return 0.5 if value is None else seconds(value, "thresholds.cpu.interval", error=CheckError,
                                             maximum=CPU_INTERVAL_MAX)


def _disk_paths(spec: dict[str, Any]) -> list[str]:
    paths = spec.get("paths")
    if paths is None:
        return ["/"]
    if not isinstance(paths, list) or not paths:
        raise CheckError("thresholds.disk.paths must be a non-empty list of paths (leave it out for /)")
    return [text(p, f"thresholds.disk.paths[{i}]", error=CheckError) for i, p in enumerate(paths)]


# --------------------------------------------------------------------------- running a set of checks


@dataclass
class HealthSpec:
    """Everything to check, in the module's option names."""

    http: list[dict[str, Any]] = field(default_factory=list)
    systemd_units: list[str] = field(default_factory=list)
    tcp: list[str | dict[str, Any]] = field(default_factory=list)  # "host:port", or {host, port, name, timeout}
    commands: list[dict[str, Any]] = field(default_factory=list)  # check_command's keyword arguments and argv
    postgresql: list[dict[str, Any]] = field(default_factory=list)
    redis: list[dict[str, Any]] = field(default_factory=list)
    thresholds: dict[str, Any] | None = None
    timeout: float = DEFAULT_TIMEOUT

    def empty(self) -> bool:
        return not (self.http or self.systemd_units or self.tcp or self.commands or self.postgresql or self.redis
                    or any(v is not None for v in (self.thresholds or {}).values()))

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> HealthSpec:
        return cls(
            http=[dict(p) for p in params.get("http") or []],
            systemd_units=list(params.get("systemd_units") or []),
            tcp=list(params.get("tcp") or []),
            commands=[dict(c) for c in params.get("commands") or []],
            postgresql=[dict(p) for p in params.get("postgresql") or []],
            redis=[dict(p) for p in params.get("redis") or []],
            thresholds=params.get("thresholds"),
            timeout=DEFAULT_TIMEOUT if params.get("timeout") is None else params["timeout"],
        )

    def validate(self) -> None:
        if self.empty():
            raise CheckError("nothing to check: give at least one of http, systemd_units, tcp, commands, "
                             "postgresql, redis or thresholds")
        seconds(self.timeout, "timeout", error=CheckError)
        for probe in self.http:
            if not probe.get("url"):
                raise CheckError("every http probe needs a url")
            where = f"http probe {probe.get('name') or ''}".strip()
            check_url(probe["url"], where)
            parse_status(200 if probe.get("status") is None else probe["status"])
            check_headers(probe.get("headers"), where)
        for value in self.tcp:
            tcp_target(value)
        for command in self.commands:
            probes.validate_argv(command.get("argv"), f"command {command.get('name') or ''}".strip() + " argv")
        for index, unit in enumerate(self.systemd_units):
            unit_name(unit, f"systemd_units[{index}]")
        for kind in ("postgresql", "redis"):
            for index, item in enumerate(getattr(self, kind)):
                if not item.get("host"):
                    raise CheckError(f"every {kind} entry needs a host")
                text(item["host"], f"{kind}[{index}].host", error=CheckError)
                if item.get("port") is not None:
                    number(item["port"], f"{kind}[{index}].port", error=CheckError, integer=True, minimum=1,
                           maximum=65535)
        for item in [*self.http, *self.commands, *(t for t in self.tcp if isinstance(t, dict)), *self.postgresql,
                     *self.redis]:
            if item.get("timeout") is not None:
                seconds(item["timeout"], f"probe {item.get('name') or ''}: timeout", error=CheckError)
        for kind in ("cpu", "memory", "disk"):
            if (self.thresholds or {}).get(kind) is not None:
                _limits(self.thresholds[kind], kind)  # type: ignore[index]
        if (self.thresholds or {}).get("cpu") is not None:
            _cpu_interval(self.thresholds["cpu"])  # type: ignore[index]
        if (self.thresholds or {}).get("disk") is not None:
            _disk_paths(self.thresholds["disk"])  # type: ignore[index]


def run_checks(spec: HealthSpec, budget: float | None = None,
               unit_runner: Callable[[list[str], float], str] | None = None) -> list[CheckResult]:
    """One pass over every check. ``budget`` (seconds left of the deadline) caps each timeout.
    ``unit_runner`` runs the ``systemctl show`` of the unit checks (see ``check_units``)."""

    def cap(timeout: float | None) -> float:
        value = float(timeout or spec.timeout)
        if budget is not None:
            value = min(value, max(budget, 0.1))
        return value

    results: list[CheckResult] = []
    for probe in spec.http:
        results.append(check_http(
            probe["url"],
            status=probe.get("status") or 200,
            body_contains=probe.get("body_contains"),
            json_field=probe.get("json_field"),
            json_value=probe.get("json_value"),
            timeout=cap(probe.get("timeout")),
            headers=probe.get("headers"),
            method=probe.get("method") or "GET",
            validate_certs=probe.get("validate_certs", True) is not False,
            follow_redirects=probe.get("follow_redirects", True) is not False,
            header=probe.get("header"),
            header_value=probe.get("header_value"),
            name=probe.get("name"),
        ))
    results.extend(check_units(spec.systemd_units, timeout=cap(None), runner=unit_runner))
    for value in spec.tcp:
        host, port = tcp_target(value)
        item = value if isinstance(value, dict) else {}
        results.append(check_tcp(host, port, timeout=cap(item.get("timeout")), name=item.get("name")))
    for command in spec.commands:
        options = {k: v for k, v in command.items() if k not in ("argv", "timeout")}
        results.append(check_command(command["argv"], timeout=cap(command.get("timeout")), **options))
    for item in spec.postgresql:
        results.append(check_postgresql(item["host"], int(item.get("port") or 5432), timeout=cap(item.get("timeout")),
                                        name=item.get("name")))
    for item in spec.redis:
        results.append(check_redis(item["host"], int(item.get("port") or 6379), timeout=cap(item.get("timeout")),
                                   name=item.get("name")))
    results.extend(check_thresholds(spec.thresholds))
    return results


@dataclass
class HealthReport:
    status: str
    checks: list[CheckResult]
    attempts: int
    elapsed: float

    @property
    def failing(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status != HEALTHY]

    def failing_text(self) -> str:
        return "; ".join(f"{c.name} [{c.status}] {c.detail}" for c in self.failing)

    def summary(self) -> str:
        text = f"{self.status} after {self.attempts} attempt(s) in {self.elapsed:.1f} s"
        return f"{text}; failing: {self.failing_text()}" if self.failing else text

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "checks": [c.as_dict() for c in self.checks],
            "attempts": self.attempts,
            "elapsed": round(self.elapsed, 3),
            "failed_checks": [c.name for c in self.failing],
        }


def probe_timeout(spec: HealthSpec) -> float:
    """The longest timeout of the spec's probes (each its own, else the spec's); 0 with no probe."""
    probes = [*spec.http, *spec.commands, *spec.postgresql, *spec.redis, *spec.tcp]
    timeouts = [float((p.get("timeout") if isinstance(p, dict) else None) or spec.timeout) for p in probes]
    if spec.systemd_units:
        timeouts.append(float(spec.timeout))
    return max(timeouts, default=0.0)


def evaluate(spec: HealthSpec, *, retries: int = 0, delay: float = 1.0, max_delay: float = 5.0,
             deadline: float = 60.0, min_status: str = HEALTHY,
             sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic,
             unit_runner: Callable[[list[str], float], str] | None = None) -> HealthReport:
    """Run the checks until the result is ``min_status`` or better, at most ``retries`` more
    times, sleeping ``delay`` then twice as long each time (at most ``max_delay``), all inside
    ``deadline`` seconds: probe timeouts are cut to the time left, and no attempt starts after
    it. The report is the last attempt's. ``unit_runner``: see ``check_units``."""
    spec.validate()
    retries = number(retries, "retries", error=CheckError, integer=True, minimum=0, maximum=1_000_000)
    delay = seconds(delay, "delay", error=CheckError, zero=True)
    max_delay = seconds(max_delay, "max_delay", error=CheckError, zero=True)
    deadline = seconds(deadline, "deadline", error=CheckError)
    if min_status not in RANK:
        raise CheckError(f"min_status={min_status!r}: use healthy, degraded or unhealthy")
    start = clock()
    attempts = 0
    wait = max(delay, 0.0)
    longest = probe_timeout(spec)
    whole: tuple[str, list[CheckResult]] | None = None  # the last attempt whose probes had their full timeouts

    def report(status: str, checks: list[CheckResult], cut: bool) -> HealthReport:
        # An attempt the deadline cut short fails on its shortened timeouts ("did not finish within 0.2 s"):
        # the last whole attempt says better why the checks fail.
        if cut and whole is not None and not at_least(status, min_status):
            status, checks = whole
        return HealthReport(status, checks, attempts, clock() - start)

    while True:
        attempts += 1
        left = deadline - (clock() - start)
        cut = left < longest
        checks = run_checks(spec, budget=left, unit_runner=unit_runner)
        status = worst([c.status for c in checks])
        left = deadline - (clock() - start)
        if at_least(status, min_status) or attempts > retries or left <= 0:
            return report(status, checks, cut)
        if not cut:
            whole = (status, checks)
        pause = min(wait, left)
        sleep(pause)
        wait = min(wait * 2, max(max_delay, delay))
        if deadline - (clock() - start) <= 0:
            return report(status, checks, cut)


# --------------------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_CANNOT_CHECK, f"{self.prog}: error: {message}\n")


def _pair(text: str, what: str) -> tuple[float, float]:
    try:
        warning, critical = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: give WARNING:CRITICAL percents, e.g. 80:95") from None
    return warning, critical


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tradeops-health",
        description="Check the health of this host and its services. Every option can be repeated; "
                    "the result is healthy, degraded or unhealthy (the worst check).",
        epilog="exit codes: 0 healthy, 1 degraded, 2 unhealthy, 3 could not check (bad arguments, internal error). "
               "Example: tradeops-health --url http://127.0.0.1:8000/health --json-field version --json-value 1.4.2 "
               "--unit refapp.service --redis 127.0.0.1:6379 --disk / --memory --json; "
               "tradeops-health --url http://127.0.0.1:8080/healthz --expect-status 200-299 "
               "--expect-header 'X-Version: 2.0.1' --command '/opt/app/current/venv/bin/app --version' "
               "--expect-output 2.0.1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", action="append", default=[], help="HTTP(S) URL to probe")
    parser.add_argument("--expect-status", action="append", metavar="CODE|LOW-HIGH",
                        help="expected HTTP status or range, e.g. 204 or 200-299 (default 200)")
    parser.add_argument("--body-contains", help="text the HTTP body must contain")
    parser.add_argument("--json-field", help="dotted JSON field of the HTTP body to check, e.g. version")
    parser.add_argument("--json-value", help="value the JSON field must have")
    parser.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="HTTP request header that is no secret (credentials: --header-file or --header-env)")
    parser.add_argument("--header-file", action="append", default=[], metavar="FILE",
                        help="HTTP request headers, one 'NAME: VALUE' per line, from a file of mode 0600 (tokens)")
    parser.add_argument("--header-env", action="append", default=[], metavar="NAME=VARIABLE",
                        help="HTTP request header NAME with the value of environment variable VARIABLE (tokens)")
    parser.add_argument("--expect-header", metavar="'NAME[: VALUE]'",
                        help="response header of --url that must be present (with this value when given)")
    parser.add_argument("--insecure", action="store_true", help="do not verify TLS certificates of --url")
    parser.add_argument("--command", action="append", default=[], metavar="'PROGRAM ARGS'",
                        help="command that must exit 0 within --timeout (split like a shell, never run by one)")
    parser.add_argument("--expect-output", metavar="TEXT", help="text the output of --command must contain")
    parser.add_argument("--unit", action="append", default=[], help="systemd unit that must be active")
    parser.add_argument("--tcp", action="append", default=[], metavar="HOST:PORT", help="TCP port that must accept")
    parser.add_argument("--postgresql", action="append", default=[], metavar="HOST[:PORT]",
                        help="PostgreSQL server that must answer (no credentials needed)")
    parser.add_argument("--redis", action="append", default=[], metavar="HOST[:PORT]",
                        help="Redis server that must answer PING")
    parser.add_argument("--disk", action="append", default=[], metavar="PATH", help="filesystem to check for space")
    parser.add_argument("--disk-limits", default="85:95", metavar="WARN:CRIT",
                        help="disk percent used for degraded / unhealthy (default 85:95)")
    parser.add_argument("--memory", nargs="?", const="85:95", metavar="WARN:CRIT",
                        help="check memory use (default limits 85:95)")
    parser.add_argument("--cpu", nargs="?", const="80:95", metavar="WARN:CRIT",
                        help="check CPU use over 0.5 s (default limits 80:95)")
    parser.add_argument("--config", metavar="FILE",
                        help="JSON file with the app_health module's options (http, systemd_units, tcp, ...)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per probe (default 5)")
    parser.add_argument("--retries", type=int, default=0, help="attempts after the first while not healthy")
    parser.add_argument("--delay", type=float, default=1.0, help="first pause between attempts, doubled each time")
    parser.add_argument("--deadline", type=float, default=60.0, help="overall limit in seconds (default 60)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON (for machines)")
    return parser


# Headers whose value is a credential: never taken from argv, which every user of the host reads in
# /proc/<pid>/cmdline (and ps shows).
CREDENTIAL_HEADER = re.compile(r"(?i)^(authorization|proxy-authorization|cookie)\Z|token|secret|key|auth|pass")


def _header_line(line: str, where: str) -> tuple[str, str]:
    key, sep, value = line.partition(":")
    if not sep or not key.strip():
        raise CheckError(f"{where} {key.strip()[:40]!r}...: give 'Name: value'")
    return key.strip(), value.strip()


def request_headers(args: Sequence[str], files: Sequence[str], env: Sequence[str]) -> dict[str, str]:
    """Request headers of the CLI: --header for plain values, --header-file and --header-env for
    credentials (a credential given with --header is refused, naming both)."""
    headers: dict[str, str] = {}
    for line in args:
        key, value = _header_line(line, "--header")
        if CREDENTIAL_HEADER.search(key):
            raise CheckError(f"--header {key}: a credential on the command line is readable by every user of the "
                             f"host (/proc/<pid>/cmdline): use --header-file FILE (mode 0600, '{key}: VALUE' lines) "
                             f"or --header-env '{key}=VARIABLE'")
        headers[key] = value
    for path in files:
        for line in probes.read_private_file(path, "--header-file").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key, value = _header_line(line, f"--header-file {path}:")
                headers[key] = value
    for item in env:
        key, sep, variable = item.partition("=")
        if not sep or not key.strip() or not variable.strip():
            raise CheckError(f"--header-env {item[:40]!r}: give 'Name=VARIABLE'")
        if variable.strip() not in os.environ:
            raise CheckError(f"--header-env {key.strip()}: environment variable {variable.strip()} is not set")
        headers[key.strip()] = os.environ[variable.strip()]
    check_headers(headers, "request headers")
    return headers


def spec_from_args(args: argparse.Namespace) -> tuple[HealthSpec, dict[str, Any]]:
    options: dict[str, Any] = {}
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as handle:
                options = json.load(handle)
        except (OSError, ValueError) as exc:
            raise CheckError(f"--config {args.config}: {exc}") from exc
        if not isinstance(options, dict):
            raise CheckError(f"--config {args.config}: expected a JSON object of app_health options")
    spec = HealthSpec.from_params(options)
    headers = request_headers(args.header, args.header_file, args.header_env)
    expect_header, _, expect_value = (args.expect_header or "").partition(":")
    for url in args.url:
        spec.http.append({"url": url, "status": args.expect_status or [200], "body_contains": args.body_contains,
                          "json_field": args.json_field, "json_value": args.json_value, "headers": headers,
                          "validate_certs": not args.insecure, "header": expect_header.strip() or None,
                          "header_value": expect_value.strip() or None})
    for command in args.command:
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise CheckError(f"--command {command!r}: {exc}") from exc
        spec.commands.append({"argv": argv, "expect_output": args.expect_output})
    spec.systemd_units += args.unit
    spec.tcp += args.tcp
    for kind, default_port in (("postgresql", 5432), ("redis", 6379)):
        for value in getattr(args, kind):
            host, port = parse_host_port(value, default_port)
            getattr(spec, kind).append({"host": host, "port": port})
    thresholds = dict(spec.thresholds or {})
    try:
        if args.cpu:
            warning, critical = _pair(args.cpu, "--cpu")
            thresholds["cpu"] = {"warning": warning, "critical": critical}
        if args.memory:
            warning, critical = _pair(args.memory, "--memory")
            thresholds["memory"] = {"warning": warning, "critical": critical}
        if args.disk:
            warning, critical = _pair(args.disk_limits, "--disk-limits")
            thresholds["disk"] = {"paths": args.disk, "warning": warning, "critical": critical}
    except argparse.ArgumentTypeError as exc:
        raise CheckError(str(exc)) from exc
    spec.thresholds = thresholds or None
    spec.timeout = args.timeout
    run = {
        "retries": int(options.get("retries", args.retries)),
        "delay": float(options.get("delay", args.delay)),
        "deadline": float(options.get("deadline", args.deadline)),
    }
    return spec, run


def main_cli(argv: Sequence[str] | None = None) -> int:
    """``tradeops-health``: returns the exit code (0 healthy, 1 degraded, 2 unhealthy, 3 could not check)."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help (0) or a usage error (3)
        return int(exc.code or 0)
    try:
        spec, run = spec_from_args(args)
        report = evaluate(spec, **run)
    except CheckError as exc:
        print(f"tradeops-health: could not check: {exc}", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    except Exception as exc:  # internal error: say so, never a healthy exit code
        print(f"tradeops-health: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, sort_keys=True, default=str))
    else:
        print(f"{report.status.upper()}: {report.summary()}")
        for check in report.checks:
            print(f"  [{check.status:>9}] {check.name} ({check.duration * 1000:.0f} ms): {check.detail}")
    return EXIT_CODES[report.status]


if __name__ == "__main__":
    sys.exit(main_cli())
