"""Helpers of the plugin tests: real wheels, a real HTTP server, tree snapshots."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import socket
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils.testing import patch_module_args

# The interpreter release virtualenvs are made with: Debian's, as on the hosts.
HOST_PYTHON = "/usr/bin/python3"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- wheels ------------------------------------------------------------------------------


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(outdir: Path, name: str, version: str, files: dict[str, str], requires: tuple[str, ...] = (),
               scripts: dict[str, str] | None = None) -> Path:  # fmt: skip
    """A real, spec-conformant pure-Python wheel (what setuptools would write, without the
    build: the tests stay fast). pip installs it like any other."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    content = dict(files)
    content[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires)
    )
    content[f"{info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: tradeops-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    if scripts:
        entry_points = "".join(f"{k} = {v}\n" for k, v in scripts.items())
        content[f"{info}/entry_points.txt"] = "[console_scripts]\n" + entry_points
    path = outdir / f"{dist}-{version}-py3-none-any.whl"
    rows = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, text in content.items():
            data = text.encode()
            archive.writestr(member, data)
            rows.append(f"{member},{_record_hash(data)},{len(data)}")
        rows.append(f"{info}/RECORD,,")
        archive.writestr(f"{info}/RECORD", "\n".join(rows) + "\n")
    return path


APP_CODE = '''import tinydep

VERSION = {version!r}


def main():
    print("tinyapp", VERSION, "tinydep", tinydep.VERSION)
'''


def build_wheelhouse(directory: Path, app_version: str, dep_version: str = "1.0",
                     requires: tuple[str, ...] = ("tinydep>=1.0",)) -> Path:  # fmt: skip
    """A wheelhouse as the controller builds it: the app wheel and its dependency wheel."""
    directory.mkdir(parents=True, exist_ok=True)
    dep_code = f"VERSION = {dep_version!r}\n\n\ndef main():\n    print(VERSION)\n"
    make_wheel(directory, "tinydep", dep_version, {"tinydep/__init__.py": dep_code},
               scripts={"tinydep-version": "tinydep:main"})  # fmt: skip
    make_wheel(directory, "tiny-app", app_version, {"tinyapp/__init__.py": APP_CODE.format(version=app_version)},
               requires=requires, scripts={"tinyapp": "tinyapp:main"})  # fmt: skip
    return directory


def wheelhouse_factory(tmp_path: Path) -> Callable[..., str]:
    """Factory: ``wheelhouses("1.0", dep_version="1.0") -> directory``."""
    count = iter(range(1000))

    def make(app_version: str, dep_version: str = "1.0", requires: tuple[str, ...] = ("tinydep>=1.0",)) -> str:
        return str(build_wheelhouse(tmp_path / f"wheelhouse-{next(count)}", app_version, dep_version, requires))

    return make


# -- HTTP --------------------------------------------------------------------------------


@dataclass
class Route:
    status: int = 200
    body: str | bytes = "ok"
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    require_header: tuple[str, str] | None = None


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.requests.append((self.path, dict(self.headers)))
        route = self.server.routes.get(self.path, Route(404, "not found"))
        if route.delay:
            time.sleep(route.delay)
        status = route.status
        if route.require_header and self.headers.get(route.require_header[0]) != route.require_header[1]:
            status = 401
        body = route.body.encode() if isinstance(route.body, str) else route.body
        self.send_response(status)
        for key, value in route.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    routes: dict[str, Route]
    requests: list[tuple[str, dict[str, str]]]


@dataclass
class HttpServer:
    server: _Server
    thread: threading.Thread

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, path: str, **kwargs: Any) -> str:
        self.server.routes[path] = Route(**kwargs)
        return self.url(path)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_http_server(port: int = 0) -> HttpServer:
    server = _Server(("127.0.0.1", port), _Handler)
    server.routes = {}
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return HttpServer(server, thread)


# -- tiny protocol servers ---------------------------------------------------------------


@dataclass
class TinyServer:
    """Accepts connections on 127.0.0.1, reads ``read`` bytes, writes ``reply``, closes."""

    sock: socket.socket
    received: list[bytes]
    thread: threading.Thread

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


def start_tiny_server(reply: bytes, read: int) -> TinyServer:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    received: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                data = b""
                try:
                    while len(data) < read:
                        chunk = conn.recv(read - len(data))
                        if not chunk:
                            break
                        data += chunk
                    received.append(data)
                    if reply:
                        conn.sendall(reply)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return TinyServer(sock, received, thread)


# -- modules -----------------------------------------------------------------------------


def module_runner(capsys: pytest.CaptureFixture[str]) -> Callable[..., dict[str, Any]]:
    """Call a module's main() with arguments; return its exit JSON (``failed`` set on fail_json)."""

    def run(module: Any, args: dict[str, Any], check_mode: bool = False, diff: bool = False) -> dict[str, Any]:
        capsys.readouterr()
        full = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
        with patch_module_args(full), pytest.raises(SystemExit) as exited:
            module.main()
        out = capsys.readouterr().out
        result = json.loads(out)
        result["_rc"] = exited.value.code
        result["_raw"] = out
        return result

    return run


def tree_snapshot(root: str) -> dict[str, tuple[int, float, str]]:
    """Every path under root with mode, mtime and symlink target: equal snapshots = nothing written."""
    snap: dict[str, tuple[int, float, str]] = {}
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            full = os.path.join(base, name)
            st = os.lstat(full)
            target = os.readlink(full) if os.path.islink(full) else ""
            snap[os.path.relpath(full, root)] = (st.st_mode, st.st_mtime_ns, target)
    return snap
