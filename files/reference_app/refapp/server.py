"""`refapp serve`: the threaded HTTP server and its graceful shutdown."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from types import FrameType

from refapp.config import Settings
from refapp.errors import describe
from refapp.logs import get_logger
from refapp.metrics import Metrics
from refapp.urls import redact_url
from refapp.web import ROUTES, AppState, handler_for

LOG = get_logger()


class RefappServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that counts the connections being served."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], state: AppState) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self._active = 0
        self._idle = threading.Condition()
        super().__init__(address, handler_for(state))

    @property
    def active(self) -> int:
        with self._idle:
            return self._active

    def process_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        with self._idle:
            self._active += 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done()
            raise

    def process_request_thread(self, request: socket.socket, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done()

    def _done(self) -> None:
        with self._idle:
            self._active -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float, abort: Callable[[], bool]) -> int:
        """Wait until no request is active, ``timeout`` passes or ``abort()``; return those left."""
        end = time.monotonic() + timeout
        with self._idle:
            while self._active and not abort():
                remaining = end - time.monotonic()
                if remaining <= 0:
                    break
                self._idle.wait(min(remaining, 0.1))
            return self._active


class StopSignal:
    """Records SIGTERM / SIGINT; the first asks for a graceful stop, a second one to hurry."""

    def __init__(self) -> None:
        self.count = 0
        self._event = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self._event.set()

    def wait(self) -> None:
        while not self._event.wait(0.1):
            pass

    def repeated(self) -> bool:
        return self.count > 1


def serve(settings: Settings, version: str, fault: str | None) -> int:
    """Run the service until SIGTERM/SIGINT; return the process exit code."""
    if fault == "crash":
        LOG.error("fault injected: crash")
        return 1
    stop = StopSignal()
    if fault == "hang":
        LOG.warning("fault injected: hang (not listening, waiting for SIGTERM)")
        stop.wait()
        LOG.info("stopped (fault hang)")
        return 0
    state = AppState(settings, version, fault, Metrics(settings.service, version, frozenset(ROUTES)))
    try:
        server = RefappServer((settings.bind, settings.port), state)
    except OSError as exc:
        LOG.error("cannot listen on %s:%s: %s", settings.bind, settings.port, describe(exc))
        return 1
    host, port = server.server_address[:2]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="http")
    thread.start()
    LOG.info(
        "listening on http://%s:%s (service %s, version %s, database %s, redis %s%s)",
        host,
        port,
        settings.service,
        version,
        redact_url(settings.database_url) or "not configured",
        redact_url(settings.redis_url) or "not configured",
        f", fault {fault}" if fault else "",
    )
    stop.wait()
    server.shutdown()  # the accept loop ends ...
    server.socket.close()  # ... and new connections are refused from here on
    thread.join()
    LOG.info("shutting down: %d in flight", server.active)
    left = server.wait_idle(settings.shutdown_grace, abort=stop.repeated)
    if left:
        LOG.warning(
            "stopping with %d requests unfinished (grace %gs over or second signal)",
            left,
            settings.shutdown_grace,
        )
    LOG.info("stopped")
    return 0
