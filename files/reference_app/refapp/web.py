"""The HTTP handler: health, readiness, detailed health, metrics, work and version routes."""

from __future__ import annotations

import hmac
import json
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from refapp import metrics as metrics_mod
from refapp.checks import readiness
from refapp.config import Settings
from refapp.logs import get_logger

if TYPE_CHECKING:
    from refapp.metrics import Metrics

MAX_WORK_MS = 30_000
# Fault "leak" (scripts/build_refapp.py --fault leak): every request outside the health and metrics
# routes keeps this much memory for good (written, so the pages are really in use), until the
# unit's MemoryMax makes the kernel kill the process.
LEAK_BYTES = 4 * 1024 * 1024
LEAK_EXEMPT = ("/health", "/api/health", "/metrics")
ACCESS_LOG = get_logger("access")
ERROR_LOG = get_logger("http")


class AppState:
    """What the handler needs: settings, build, metrics and the start time."""

    def __init__(self, settings: Settings, version: str, fault: str | None, metrics: Metrics) -> None:
        self.settings = settings
        self.version = version
        self.fault = fault
        self.metrics = metrics
        self.started_monotonic = time.monotonic()
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.leaked: list[bytes] = []  # fault "leak" only


class Handler(BaseHTTPRequestHandler):
    """One request per connection (HTTP/1.0): nothing idle blocks a graceful shutdown."""

    server_version = "refapp"
    sys_version = ""
    protocol_version = "HTTP/1.0"
    timeout = 10  # seconds a client may take to send its request
    error_content_type = "application/json"
    error_message_format = '{"error": "%(message)s", "status": %(code)d}\n'

    state: AppState  # set on the subclass made by handler_for()
    _status: int = 0
    _metric: tuple[float, str, bool] = (0.0, "", True)

    # -- dispatch --------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        start = time.monotonic()
        path, _, query = self.path.partition("?")
        self.state.metrics.started_request()
        self._status = 0
        self._metric = (start, path, False)
        try:
            route = ROUTES.get(path)
            if self.state.fault == "leak" and route is not None and not path.startswith(LEAK_EXEMPT):
                self.state.leaked.append(b"\x01" * LEAK_BYTES)
            if route is None:
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found", "path": path[:200]})
            elif self.command not in ("GET", "HEAD"):
                self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "method not allowed"}, {"Allow": "GET, HEAD"})
            else:
                route(self, query)
        except (BrokenPipeError, ConnectionResetError):
            self._status = self._status or 499  # the client went away
        except Exception:
            ERROR_LOG.exception("error serving %s %s", self.command, path)
            if not self._status:
                try:
                    self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})
                except OSError:
                    self._status = 500
        finally:
            self._record()
            seconds = time.monotonic() - start
            ACCESS_LOG.info(
                '%s "%s %s" %s %.1fms',
                self.client_address[0],
                self.command,
                path,
                self._status,
                seconds * 1000,
                extra={
                    "service": self.state.settings.service,
                    "remote": self.client_address[0],
                    "method": self.command,
                    "path": path,
                    "status": self._status,
                    "duration_ms": round(seconds * 1000, 2),
                },
            )

    # -- responses -------------------------------------------------------------------------

    def _record(self) -> None:
        """Count the request once, before its body is sent: a client that has read the
        response always finds it in the next /metrics scrape."""
        start, path, done = self._metric
        if not done:
            self._metric = (start, path, True)
            self.state.metrics.finished_request(self.command, path, self._status or 500, time.monotonic() - start)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self._status = int(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self._record()
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: dict[str, object], headers: dict[str, str] | None = None) -> None:
        body = (json.dumps(payload, separators=(",", ":")) + "\n").encode("utf-8")
        self._send(status, body, "application/json", headers)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """The access log line is written by _dispatch, with the duration."""

    def log_message(self, format: str, *args: object) -> None:
        ERROR_LOG.warning("%s: %s", self.client_address[0], format % args)

    # -- routes ----------------------------------------------------------------------------

    def _identity(self) -> dict[str, object]:
        return {"service": self.state.settings.service, "version": self.state.version}

    def health(self, query: str) -> None:
        self._json(HTTPStatus.OK, {"status": "ok", **self._identity()})

    def liveness(self, query: str) -> None:
        self._json(HTTPStatus.OK, {"status": "alive", **self._identity()})

    def readiness(self, query: str) -> None:
        ready, checks = readiness(self.state.settings, self.state.fault)
        payload: dict[str, object] = {"status": "ready" if ready else "not ready", "checks": checks}
        if not ready:
            payload["failed"] = [name for name, check in checks.items() if not check["ok"]]
        payload.update(self._identity())
        self._json(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE, payload)

    def detailed(self, query: str) -> None:
        if not self._authorized():
            self._json(
                HTTPStatus.UNAUTHORIZED,
                {"error": "a valid bearer token is required"},
                {"WWW-Authenticate": 'Bearer realm="refapp"'},
            )
            return
        ready, checks = readiness(self.state.settings, self.state.fault)
        payload: dict[str, object] = {
            "status": "ready" if ready else "not ready",
            "checks": checks,
            **self._identity(),
            "pid": os.getpid(),
            "started_at": self.state.started_at,
            "uptime_seconds": round(time.monotonic() - self.state.started_monotonic, 3),
            "python": platform.python_version(),
            "requests": self.state.metrics.counters(),
        }
        if self.state.fault:
            payload["fault"] = self.state.fault
        self._json(HTTPStatus.OK, payload)

    def _authorized(self) -> bool:
        token = self.state.settings.health_token
        scheme, _, given = (self.headers.get("Authorization") or "").strip().partition(" ")
        if not token or scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8"))

    def prometheus(self, query: str) -> None:
        self._send(HTTPStatus.OK, self.state.metrics.render().encode("utf-8"), metrics_mod.CONTENT_TYPE)

    def work(self, query: str) -> None:
        values = parse_qs(query).get("ms", ["0"])
        try:
            ms = int(values[-1])
            if ms < 0:
                raise ValueError
        except ValueError:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "ms must be a non-negative integer"})
            return
        ms = min(ms, MAX_WORK_MS)
        time.sleep(ms / 1000)
        self._json(HTTPStatus.OK, {"status": "ok", "slept_ms": ms, **self._identity()})

    def version(self, query: str) -> None:
        self._json(HTTPStatus.OK, {"version": self.state.version, "service": self.state.settings.service})


ROUTES: dict[str, Callable[[Handler, str], None]] = {
    "/health": Handler.health,
    "/api/health": Handler.health,
    "/api/health/liveness": Handler.liveness,
    "/api/health/readiness": Handler.readiness,
    "/api/health/detailed": Handler.detailed,
    "/metrics": Handler.prometheus,
    "/api/work": Handler.work,
    "/api/version": Handler.version,
}


def handler_for(state: AppState) -> type[Handler]:
    """A Handler subclass bound to ``state``."""
    return type("BoundHandler", (Handler,), {"state": state})
