# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The probes of a service's health contract: HTTP (expected status or range, a JSON field, a response
header), TCP, and a command run from a release. Each returns a ``CheckResult``; ``tradeops_health`` runs
them with the host-level checks (systemd units, PostgreSQL, Redis, thresholds), retries and deadlines.

Pure Python standard library: shipped to hosts with ``tradeops_health`` (module payloads, the ops agent's
``tradeops_agent/probes.py``).

A command probe never shows its environment (the release's env file holds secrets): its result carries
the exit code and the tail of its output (OUTPUT_LIMIT characters), with every value of the env file
that appears in it masked.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import os
import re
import signal
import socket
import ssl
import stat
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
RANK = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}
DEFAULT_TIMEOUT = 5.0
BODY_LIMIT = 1 << 20
OUTPUT_LIMIT = 400  # characters of a command probe's output kept in its result (the tail)
MASK = "***"
MASK_MIN_LENGTH = 6  # env file values this long or longer are masked in a command's output
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # an HTTP token (RFC 9110)
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class CheckError(Exception):
    """The checks could not be run as asked (bad option, missing tool): not a health result."""


@dataclass
class CheckResult:
    name: str
    kind: str
    status: str
    detail: str
    duration: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["duration"] = round(self.duration, 3)
        return out


def timed_check(name: str, kind: str, func: Callable[[], tuple[str, str, dict[str, Any]]]) -> CheckResult:
    """Run one probe: a probe that breaks reports unhealthy with the reason (a CheckError is raised)."""
    started = time.monotonic()
    try:
        status, detail, data = func()
    except CheckError:
        raise
    except Exception as exc:  # a probe that breaks reports unhealthy with the reason
        status, detail, data = UNHEALTHY, f"{type(exc).__name__}: {exc}", {}
    return CheckResult(name, kind, status, detail, time.monotonic() - started, data)


def error_reason(exc: BaseException) -> str:
    """A connection error in a few words (timed out, connection refused, ...)."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- HTTP


def parse_status(value: Any) -> list[tuple[int, int]]:
    """Accepted HTTP statuses: ``200``, ``"200-299"``, or a list of either -> inclusive ranges."""
    items = value if isinstance(value, list | tuple) else [value]
    ranges: list[tuple[int, int]] = []
    for item in items:
        text = str(item).strip() if isinstance(item, int | str) and not isinstance(item, bool) else ""
        low, sep, high = text.partition("-")
        bounds = (low.strip(), high.strip() if sep else low.strip())
        if not all(b.isdigit() and 100 <= int(b) <= 599 for b in bounds) or int(bounds[0]) > int(bounds[1]):
            raise CheckError(f"status {item!r}: give an HTTP status (200), a range (\"200-299\") or a list of them, "
                             "each between 100 and 599")
        ranges.append((int(bounds[0]), int(bounds[1])))
    if not ranges:
        raise CheckError("status is empty: give an HTTP status (200), a range (\"200-299\") or a list of them")
    return ranges


def status_text(ranges: Sequence[tuple[int, int]]) -> str:
    return "/".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


def redact_url(url: str) -> str:
    """The URL without user:password (names of checks end up in logs)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        parts = parts._replace(netloc=host)
    return urllib.parse.urlunsplit(parts)


def check_url(url: Any, where: str = "http probe") -> str:
    """An http(s) URL with a host and a valid port, on one line: returns it redacted for messages, else
    CheckError naming ``where`` (an unparsable URL is not echoed: it may hold a password)."""
    if not isinstance(url, str) or not url:
        raise CheckError(f"{where}: url must be a non-empty http(s) URL, got {type(url).__name__}")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CheckError(f"{where}: url is not a valid URL ({exc}); give e.g. http://127.0.0.1:8000/health") from None
    shown = redact_url(url)
    if parts.scheme not in ("http", "https"):
        raise CheckError(f"{where}: url {shown!r}: the URL must start with http:// or https://")
    if not parts.hostname or port == 0 or any(c.isspace() or ord(c) < 32 or c == "\x7f" for c in url):
        raise CheckError(f"{where}: url {shown!r} needs a host (and a port from 1 to 65535), and no white space "
                         "or control characters")
    return shown


def check_headers(headers: Any, where: str = "http probe") -> None:
    """Request headers: names that are HTTP tokens, values text on one line (never shown: they are secrets)."""
    if headers is None:
        return
    if not isinstance(headers, dict):
        raise CheckError(f"{where}: headers must be a mapping of name: value")
    for name, value in headers.items():
        if not isinstance(name, str) or not HEADER_NAME.match(name):
            raise CheckError(f"{where}: headers: {name!r} is not an HTTP header name, e.g. Authorization")
        if isinstance(value, bool) or not isinstance(value, str | int) or any(c in str(value) for c in "\r\n\0"):
            raise CheckError(f"{where}: headers: the value of {name} must be text on one line (value not shown)")


def read_private_file(path: str, what: str) -> str:
    """The text of a file that holds a secret (at most 1 MiB), refused when group or others may read it
    or it is no regular file. The mode is read from the opened descriptor, so a file swapped in between
    is not the one judged; opened non-blocking, so a FIFO planted in its place cannot hang the reader.
    The one reader of secret files for the health probes and the backups (tradeops_backup)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise CheckError(f"{what}: cannot read {path}: {exc.strerror}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise CheckError(f"{what}: {path} is not a regular file")
        if mode & 0o077:
            raise CheckError(f"{what}: {path} is readable by group or others (mode {stat.S_IMODE(mode):04o}): "
                             f"chmod 600 {path}")
        handle = os.fdopen(fd, encoding="utf-8", errors="replace")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        return handle.read(1 << 20)


def json_lookup(document: Any, dotted: str) -> Any:
    """``a.b.0.c`` in a JSON document; KeyError when absent."""
    node = document
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(dotted)
    return node


def json_equal(actual: Any, expected: Any) -> bool:
    if actual == expected:
        return True
    text = actual if isinstance(actual, str) else json.dumps(actual)
    return text == str(expected) or str(actual) == str(expected)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Redirects followed (or not); the caller's request headers (a token, a cookie) go along only to
    the same origin (scheme, host, port), as curl and browsers do: never to another host, and never
    from https down to http."""

    def __init__(self, follow: bool, header_names: Iterable[str]) -> None:
        super().__init__()
        self.follow = follow
        self.header_names = [name.capitalize() for name in header_names]  # urllib's spelling of keys

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if not self.follow:
            return None
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(new.full_url) != _origin(req.full_url):
            for name in self.header_names:
                new.remove_header(name)
        return new


def _expect_header(code: int, headers: Any, name: str, expected: str | None,
                   data: dict[str, Any]) -> tuple[str, str] | None:
    """The failure of a response header check, or None when it passes."""
    value = headers.get(name) if headers is not None else None
    if value is None:
        return UNHEALTHY, f"HTTP {code} but the response has no header {name!r}"
    data["header_value"] = value[:120]
    if expected is not None and value.strip() != str(expected):
        return UNHEALTHY, f"response header {name} is {value[:120]!r}, expected {str(expected)!r}"
    return None


def check_http(url: str, *, status: Any = 200, body_contains: str | None = None,
               json_field: str | None = None, json_value: Any = None, timeout: float = DEFAULT_TIMEOUT,
               headers: dict[str, str] | None = None, method: str = "GET", validate_certs: bool = True,
               follow_redirects: bool = True, header: str | None = None, header_value: str | None = None,
               name: str | None = None) -> CheckResult:
    """GET ``url``; healthy when the status is expected (``parse_status``), the body contains
    ``body_contains``, the JSON field ``json_field`` (dotted path) equals ``json_value`` and the
    response header ``header`` is there (equal to ``header_value`` when given). Request header
    values are never reported, nor sent to another origin on a redirect. Proxies from the environment
    are not used (probes target the host
    itself)."""
    expected = parse_status(status)
    shown = check_url(url)
    if header is not None and not HEADER_NAME.match(header):
        raise CheckError(f"http probe {shown!r}: header {header!r} is not an HTTP header name, e.g. X-Version")

    def probe() -> tuple[str, str, dict[str, Any]]:
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({}),
                                                       _Redirects(follow_redirects, (headers or {}).keys())]
        if url.startswith("https://"):
            context = ssl.create_default_context()
            if not validate_certs:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            handlers.append(urllib.request.HTTPSHandler(context=context))
        opener = urllib.request.build_opener(*handlers)
        request = urllib.request.Request(url, method=method, headers=dict(headers or {}))  # noqa: S310 - http(s) only
        try:
            with opener.open(request, timeout=timeout) as response:
                code, body, answered = response.status, response.read(BODY_LIMIT), response.headers
        except urllib.error.HTTPError as exc:
            code, body, answered = exc.code, exc.read(BODY_LIMIT) if exc.fp else b"", exc.headers
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            return UNHEALTHY, f"{method} {shown}: {error_reason(exc)}", {}
        data: dict[str, Any] = {"status": code}
        if not any(lo <= code <= hi for lo, hi in expected):
            snippet = body[:120].decode("utf-8", "replace").strip()
            return UNHEALTHY, f"expected HTTP {status_text(expected)}, got {code}: {snippet}", data
        text = body.decode("utf-8", "replace")
        if body_contains is not None and body_contains not in text:
            return UNHEALTHY, f"HTTP {code} but the body does not contain {body_contains!r}", data
        if json_field:
            try:
                value = json_lookup(json.loads(text), json_field)
            except (ValueError, KeyError):
                return UNHEALTHY, f"HTTP {code} but the body has no JSON field {json_field!r}", data
            data["json_value"] = value
            if json_value is not None and not json_equal(value, json_value):
                return UNHEALTHY, f"JSON field {json_field} is {value!r}, expected {json_value!r}", data
        if header is not None:
            failed = _expect_header(code, answered, header, header_value, data)
            if failed:
                return failed[0], failed[1], data
        return HEALTHY, f"HTTP {code}", data

    return timed_check(name or shown, "http", probe)


# --------------------------------------------------------------------------- TCP


def check_tcp(host: str, port: int, *, timeout: float = DEFAULT_TIMEOUT, name: str | None = None) -> CheckResult:
    def probe() -> tuple[str, str, dict[str, Any]]:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return HEALTHY, f"{host}:{port} accepts connections", {}
        except OSError as exc:
            return UNHEALTHY, f"{host}:{port}: {error_reason(exc)}", {}

    return timed_check(name or f"tcp:{host}:{port}", "tcp", probe)


# --------------------------------------------------------------------------- command


def validate_argv(argv: Any, where: str = "argv") -> list[str]:
    """A command's argv: a non-empty list of strings whose first one names a program."""
    if not isinstance(argv, list | tuple) or not argv:
        raise CheckError(f"{where} must be a non-empty list of strings, e.g. [myapp, --version]")
    for index, item in enumerate(argv):
        if not isinstance(item, str):
            raise CheckError(f"{where}[{index}] is {item!r} ({type(item).__name__}): every item must be a string "
                             f"(quote it: '{item}')")
    if not argv[0].strip():
        raise CheckError(f"{where}[0] is empty: name the program, e.g. myapp (found on the release's venv/bin first)")
    return list(argv)


def mask_values(text: str, secrets: Sequence[str]) -> str:
    for value in sorted({s for s in secrets if len(s) >= MASK_MIN_LENGTH}, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def _run_killing_group(argv: list[str], timeout: float, **popen: Any) -> tuple[int | None, str]:
    """(exit code or None on timeout, combined output). The command runs in its own session: on timeout
    its whole process group is killed, so a child it started cannot keep the probe waiting."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, **popen)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            proc.kill()
        try:
            out, _ = proc.communicate(timeout=2)
        except subprocess.TimeoutExpired:  # a descendant left the group and holds the pipe: stop reading
            out = b""
        return None, out.decode("utf-8", "replace")


def check_command(argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT, expect_output: str | None = None,
                  expect_version: str | None = None, cwd: str | None = None, env: dict[str, str] | None = None,
                  user: int | None = None, group: int | None = None, groups: list[int] | None = None,
                  secrets: Sequence[str] = (), name: str | None = None) -> CheckResult:
    """Run ``argv`` (as ``user``/``group``/``groups`` ids when given, in ``cwd`` with ``env``); healthy on exit 0
    within ``timeout`` seconds whose output contains ``expect_output`` and the version ``expect_version`` (each when
    given; a failure names the one missing). The result holds the exit code and the tail of the output, ``secrets``
    masked; never the environment nor the arguments."""
    command = validate_argv(argv)
    program = command[0]

    def probe() -> tuple[str, str, dict[str, Any]]:
        popen: dict[str, Any] = {"cwd": cwd, "env": env}
        if user is not None:
            popen.update(user=user, group=group, extra_groups=groups or [])
        try:
            rc, output = _run_killing_group(command, timeout, **popen)
        except FileNotFoundError:
            where = f" (PATH {(env or {}).get('PATH', os.environ.get('PATH', ''))})"
            return UNHEALTHY, f"{program}: no such program{where}", {}
        except PermissionError as exc:
            return UNHEALTHY, f"{program}: {error_reason(exc)}", {}
        tail = mask_values(output, secrets).strip()[-OUTPUT_LIMIT:]
        data: dict[str, Any] = {"rc": rc, "output": tail}
        shown = tail.splitlines()[-1][:160] if tail else "no output"
        if rc is None:
            return UNHEALTHY, f"{program} did not finish within {timeout:g} s (killed): {shown}", data
        if rc != 0:
            return UNHEALTHY, f"{program} exited {rc}: {shown}", data
        for wanted, what, option in ((expect_output, "", "expect_output"),
                                     (expect_version, "the version ", "expect_version")):
            if wanted is not None and str(wanted) not in output:
                missing = f"its output does not contain {what}{str(wanted)!r} ({option})"
                return UNHEALTHY, f"{program} exited 0 but {missing}: {shown}", data
        return HEALTHY, f"{program} exited 0", data

    return timed_check(name or f"command:{program}", "command", probe)


ENV_FILE_MAX = 1 << 20  # an env file is a few lines; more means a wrong file


def read_env_file(path: str, owners: Sequence[int] = (0,)) -> dict[str, str]:
    """``KEY=value`` lines as systemd's ``EnvironmentFile=`` reads them (comments ``#``/``;``, blank lines,
    surrounding quotes removed). Read by root; its values are never shown.

    The file sits in a directory the app user owns, so it is hostile input: opened without following a
    link, and refused unless it is a regular file with one link (no hard link to another file) owned by
    one of ``owners`` (root or the probe's user): root never hands another file's content to the probe."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid not in owners:
            raise PermissionError(errno.EPERM, "not a regular file with one link owned by root or the app user")
        data = handle.read(ENV_FILE_MAX + 1)
    if len(data) > ENV_FILE_MAX:
        raise PermissionError(errno.EFBIG, f"larger than {ENV_FILE_MAX} bytes")
    env: dict[str, str] = {}
    for raw in data.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        env[key] = value
    return env


def release_command(release_path: str, *, user: str | None = None, group: str | None = None,
                    env_file: str | None = None) -> dict[str, Any]:
    """How a command probe runs from a release, as ``check_command``'s keyword arguments: in the release
    directory, its ``venv/bin`` first on PATH, the env file's entries in the environment (read here, by
    root; masked in the output), as ``user`` with ``group`` and ``user``'s own groups (none of root's)."""
    import grp
    import pwd

    env: dict[str, str] = {"LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    secrets: list[str] = []
    owners = [0]
    if user:
        with contextlib.suppress(KeyError):  # an unknown user is refused below, with the group
            owners.append(pwd.getpwnam(user).pw_uid)
    if env_file:
        try:
            loaded = read_env_file(env_file, owners)
        except OSError as exc:
            raise CheckError(f"env_file {env_file}: {error_reason(exc)}; role app writes it (shared/config/.env)"
                             ) from exc
        env.update(loaded)
        secrets = list(loaded.values())
    venv = os.path.join(release_path, "venv")
    env.update(VIRTUAL_ENV=venv, PATH=f"{venv}/bin:{env.get('PATH') or SYSTEM_PATH}")
    out: dict[str, Any] = {"cwd": release_path, "env": env, "secrets": secrets}
    if user:
        try:
            account = pwd.getpwnam(user)
            gid = grp.getgrnam(group).gr_gid if group else account.pw_gid
        except KeyError as exc:
            raise CheckError(f"command probe: user {user!r} or group {group!r} does not exist on this host") from exc
        env.update(HOME=account.pw_dir, USER=user, LOGNAME=user)
        out.update(user=account.pw_uid, group=gid, groups=sorted(set(os.getgrouplist(user, gid))))
    return out
