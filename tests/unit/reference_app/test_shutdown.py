"""Graceful shutdown of `refapp serve` on SIGTERM / SIGINT, against the real process."""

from __future__ import annotations

import signal
import socket
import threading
import time

from .conftest import Response, http_get


def _in_background(port: int, path: str) -> tuple[threading.Thread, list[Response | BaseException]]:
    outcome: list[Response | BaseException] = []

    def request() -> None:
        try:
            outcome.append(http_get(port, path, timeout=15))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=request)
    thread.start()
    return thread, outcome


def _wait_for_log(app, needle: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while needle not in app.log:
        assert time.monotonic() < deadline, f"{needle!r} not logged:\n{app.log}"
        time.sleep(0.01)


def test_sigterm_drains_in_flight_requests_and_refuses_new_ones(start_app, sqlite_url):
    app = start_app(env={"APP_DATABASE_URL": sqlite_url})
    thread, outcome = _in_background(app.port, "/api/work?ms=1500")
    time.sleep(0.3)  # the request is being served
    sent = time.monotonic()
    app.signal(signal.SIGTERM)
    _wait_for_log(app, "shutting down:")
    assert "shutting down: 1 in flight" in app.log
    refused = False
    try:
        with socket.create_connection(("127.0.0.1", app.port), timeout=1):
            pass
    except ConnectionRefusedError:
        refused = True
    assert refused, "a new connection after SIGTERM must be refused"
    assert thread.is_alive(), "the in-flight request is still being served"
    thread.join(timeout=10)
    assert isinstance(outcome[0], Response), outcome
    assert outcome[0].status == 200 and outcome[0].json()["slept_ms"] == 1500
    assert app.wait(timeout=10) == 0
    assert time.monotonic() - sent < 5
    assert app.log.rstrip().endswith("stopped")


def test_sigint_with_nothing_in_flight_exits_at_once(start_app):
    """Nothing in flight: it exits without waiting out its grace period (60 s here; the bound
    below is far under it, so a slow or busy machine does not fail the test)."""
    app = start_app(env={"APP_SHUTDOWN_GRACE": "60"})
    # start_app's readiness probe is a TCP connection the server counts until its handler thread
    # ends; on a loaded machine that can be after the probe returns. Let it end first.
    time.sleep(1.0)
    start = time.monotonic()
    app.signal(signal.SIGINT)
    assert app.wait(timeout=30) == 0
    assert time.monotonic() - start < 20
    assert "shutting down: 0 in flight" in app.log


def test_grace_period_bounds_the_drain(start_app):
    app = start_app(env={"APP_SHUTDOWN_GRACE": "0.5"})
    thread, outcome = _in_background(app.port, "/api/work?ms=10000")
    time.sleep(0.3)
    start = time.monotonic()
    app.signal()
    assert app.wait(timeout=5) == 0
    assert time.monotonic() - start < 3
    assert "stopping with 1 requests unfinished" in app.log
    thread.join(timeout=10)
    assert isinstance(outcome[0], BaseException)  # the abandoned request got no answer
