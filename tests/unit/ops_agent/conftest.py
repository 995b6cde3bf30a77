"""Fixtures for the ops agent tests: the wheel built by scripts/build_agent.py, installed
offline into a throwaway virtualenv (the way the ops_agent role installs it on hosts), and
a real HTTP server for tradeops-health to probe. No mocks."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from . import role_run

REPO = Path(__file__).resolve().parents[3]
BUILD_TOOL = REPO / "scripts" / "build_agent.py"
SOURCE = REPO / "files" / "ops_agent"
MODULE_UTILS = REPO / "plugins" / "module_utils"
ROLE = REPO / "roles" / "ops_agent"
PYTHON = sys.executable
# The hosts' interpreter when this machine has it (Debian's python3), else the test runner's.
HOST_PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
APP_VERSION = "1.4.2"

_spec = importlib.util.spec_from_file_location("build_agent", BUILD_TOOL)
assert _spec and _spec.loader
build_agent = importlib.util.module_from_spec(_spec)
sys.modules["build_agent"] = build_agent
_spec.loader.exec_module(build_agent)


def run(*argv: str | Path, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, check=False,
                          **kwargs)  # fmt: skip


CLI_VERSION = "2.0.0rc1"


@pytest.fixture(scope="session")
def builds(tmp_path_factory) -> dict[str, object]:
    """Every wheel the tests look at, built in parallel: ``default`` (as the role builds it),
    ``again`` (the same inputs rebuilt) and ``changed`` (a changed tradeops_health.py, built by
    the command line with --version CLI_VERSION: its CompletedProcess and out directory)."""
    base = tmp_path_factory.mktemp("agent-builds")
    changed_utils = base / "module_utils"
    changed_utils.mkdir()
    for origin in build_agent.SHIPPED.values():
        shutil.copy2(MODULE_UTILS / origin, changed_utils / origin)
    with (changed_utils / "tradeops_health.py").open("a") as handle:
        handle.write("# changed\n")
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {
            "default": pool.submit(build_agent.build_wheel, out=base / "default"),
            "again": pool.submit(build_agent.build_wheel, out=base / "again", force=True),
            "changed": pool.submit(run, PYTHON, BUILD_TOOL, "--version", CLI_VERSION, "--out", base / "changed",
                                   "--module-utils", changed_utils, timeout=120),
        }
        return {name: future.result() for name, future in futures.items()} | {"changed_out": base / "changed"}


@pytest.fixture(scope="session")
def wheel(builds) -> Path:
    """The agent wheel with the default version, as the role builds it."""
    return builds["default"]


@pytest.fixture(scope="session")
def venv(wheel, tmp_path_factory) -> Path:
    """A virtualenv with the wheel installed offline: --system-site-packages, pip --no-index --no-deps."""
    path = tmp_path_factory.mktemp("agent-venv") / "venv"
    proc = run(HOST_PYTHON, "-m", "venv", "--system-site-packages", "--without-pip", path)
    assert proc.returncode == 0, proc.stderr
    proc = run(PYTHON, "-m", "pip", "--python", path / "bin" / "python", "install", "--no-index", "--no-deps",
               "--disable-pip-version-check", "--no-cache-dir", "-q", wheel, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return path


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, json.dumps({"status": "ok", "version": APP_VERSION}).encode(), "application/json")
        elif self.path == "/down":
            self._send(503, b"maintenance\n", "text/plain")
        else:
            self._send(404, b"not found\n", "text/plain")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass


@pytest.fixture(scope="session")
def http_server() -> Iterator[str]:
    """Base URL of a real HTTP server: /health 200 JSON with a version, /down 503."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


_role_runs: list[role_run.RoleRun] = []


@pytest.hookimpl(trylast=True)  # after -k / -m deselection
def pytest_collection_modifyitems(session, config, items) -> None:
    """Start the real role run in the background when its test is selected (it waits for it)."""
    if config.option.collectonly or not any(item.name == role_run.TEST_NAME for item in items):
        return
    if role_run.blocker() is None:
        run_ = role_run.RoleRun()
        _role_runs.append(run_)
        config.add_cleanup(run_.close)


def started_role_run() -> role_run.RoleRun | None:
    return _role_runs[0] if _role_runs else None
