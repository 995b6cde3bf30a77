"""Fixtures for the plugin tests: wheelhouses of real wheels, a real HTTP server, tiny
protocol servers, and a runner that calls a module's ``main()`` with ``patch_module_args``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from plugin_testlib import (
    HttpServer,
    TinyServer,
    module_runner,
    start_http_server,
    start_tiny_server,
    wheelhouse_factory,
)


@pytest.fixture
def wheelhouses(tmp_path: Path) -> Callable[..., str]:
    """Factory: ``wheelhouses("1.0", dep_version="1.0") -> directory`` with the app and dependency wheels."""
    return wheelhouse_factory(tmp_path)


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    server = start_http_server()
    yield server
    server.stop()


@pytest.fixture
def tiny_server() -> Iterator[Callable[[bytes, int], TinyServer]]:
    """Factory: ``tiny_server(reply, read)``: reads ``read`` bytes per connection, answers ``reply``."""
    servers: list[TinyServer] = []

    def start(reply: bytes, read: int) -> TinyServer:
        server = start_tiny_server(reply, read)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def run_module(capsys: pytest.CaptureFixture[str]) -> Callable[..., dict[str, Any]]:
    """``run_module(module, args, check_mode=False, diff=False) -> exit JSON`` (with ``_rc``)."""
    return module_runner(capsys)
