"""scripts/build_refapp.py: real offline wheel builds, installed and run."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import BUILD_TOOL, DEPS_WHEELS, PYTHON, SOURCE, free_port, migrated_sqlite, port_open

_spec = importlib.util.spec_from_file_location("build_refapp", BUILD_TOOL)
assert _spec and _spec.loader
build_refapp = importlib.util.module_from_spec(_spec)
sys.modules["build_refapp"] = build_refapp
_spec.loader.exec_module(build_refapp)

BUILDS = {None: "1.4.2", "crash": "1.4.3rc1", "hang": "1.4.3.dev2", "unready": "1.4.3+lab.1", "leak": "1.4.4"}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str | None, Path]:
    out = tmp_path_factory.mktemp("wheels")
    with ThreadPoolExecutor(max_workers=len(BUILDS)) as pool:
        futures = {fault: pool.submit(build_refapp.build_wheel, SOURCE, version, fault, out)
                   for fault, version in BUILDS.items()}  # fmt: skip
        return {fault: future.result() for fault, future in futures.items()}


def test_wheel_names_and_source_tree_untouched(wheels):
    assert wheels[None].name == "tradeops_refapp-1.4.2-py3-none-any.whl"
    assert wheels["unready"].name == "tradeops_refapp-1.4.3+lab.1-py3-none-any.whl"
    text = (SOURCE / "refapp" / "_build.py").read_text()
    assert 'VERSION = "0.0.0.dev0"' in text and "FAULT = None" in text
    assert not (SOURCE / "build").exists() and not list(SOURCE.glob("*.egg-info"))


def test_installed_wheel_prints_its_version(wheels, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    proc = subprocess.run(
        [PYTHON, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-index",
         "--find-links", str(DEPS_WHEELS), "--disable-pip-version-check", "-q", str(wheels[None])],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = subprocess.run([str(venv / "bin" / "refapp"), "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == "1.4.2"
    # Its Requires-Dist brought the clients along, psycopg with its compiled libpq wheel.
    probe = "import psycopg, redis; print(psycopg.pq.__impl__, redis.__version__.split('.')[0])"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    impl, redis_major = out.stdout.split()
    assert impl == "binary" and int(redis_major) >= 5


def test_cli_prints_the_wheel_path_and_validates(tmp_path):
    proc = subprocess.run(
        [PYTHON, str(BUILD_TOOL), "--version", "2.0.0", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == tmp_path / "tradeops_refapp-2.0.0-py3-none-any.whl"
    assert Path(proc.stdout.strip()).is_file()
    for args, needle in (
        (["--version", "v1.2"], "drop the leading 'v'"),
        (["--version", "1.2-beta"], "PEP 440"),
        (["--version", "1.2", "--fault", "explode"], "invalid choice"),
        (["--version", "1.2", "--source", str(tmp_path)], "not the reference app source tree"),
    ):
        proc = subprocess.run([PYTHON, str(BUILD_TOOL), *args, "--out", str(tmp_path / "x")],
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert proc.returncode == 2 and needle in proc.stderr, (args, proc.stderr)


def test_validation_functions():
    for good in ("1.4.2", "0.1", "2!1.0", "1.0a1", "1.0rc2.post3.dev4", "1.0+ubuntu.1"):
        assert build_refapp.validate_version(good) == good
    for bad in ("", "1.4.2-1", "01.2", "1.0.RC1", "latest", "1.0+UPPER"):
        with pytest.raises(build_refapp.UsageError):
            build_refapp.validate_version(bad)
    with pytest.raises(build_refapp.UsageError):
        build_refapp.validate_fault("slow")


def _serve(wheel: Path, tmp_path: Path, **env: str) -> tuple[subprocess.Popen, int, Path]:
    from .conftest import base_env, pythonpath

    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [PYTHON, "-m", "refapp", "serve"], stdout=handle, stderr=subprocess.STDOUT,
            env=base_env(PYTHONPATH=pythonpath(wheel), APP_PORT=str(port), **env),
        )  # fmt: skip
    return proc, port, log


def test_fault_crash_exits_1_fast(wheels, tmp_path):
    start = time.monotonic()
    proc, port, log = _serve(wheels["crash"], tmp_path)
    assert proc.wait(timeout=10) == 1
    assert time.monotonic() - start < 5
    assert "fault injected: crash" in log.read_text()
    assert not port_open(port)


def test_fault_hang_never_listens_but_stops_on_sigterm(wheels, tmp_path):
    proc, port, log = _serve(wheels["hang"], tmp_path)
    try:
        deadline = time.monotonic() + 10
        while "fault injected: hang" not in log.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.02)
        time.sleep(0.3)
        assert not port_open(port)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.wait()


def test_fault_unready_is_live_but_never_ready(wheels, tmp_path):
    from .conftest import http_get

    url = migrated_sqlite(tmp_path / "ok.db")
    proc, port, log = _serve(wheels["unready"], tmp_path, APP_DATABASE_URL=url)
    try:
        deadline = time.monotonic() + 10
        while not port_open(port):
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.02)
        assert http_get(port, "/api/health/liveness").status == 200
        resp = http_get(port, "/api/health/readiness")
        assert resp.status == 503
        body = resp.json()
        assert body["checks"]["fault"] == {"ok": False, "error": "injected"}
        assert body["checks"]["database"]["ok"] is True and body["failed"] == ["fault"]
        assert body["version"] == "1.4.3+lab.1"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def test_fault_leak_keeps_4_mib_per_request_outside_health(wheels, tmp_path):
    from .conftest import http_get

    proc, port, log = _serve(wheels["leak"], tmp_path)
    try:
        deadline = time.monotonic() + 10
        while not port_open(port):
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.02)
        assert http_get(port, "/api/version").status == 200  # first request: imports, buffers
        base = _rss_kib(proc.pid)
        for _ in range(20):
            assert http_get(port, "/api/health/liveness").status == 200
            assert http_get(port, "/metrics").status == 200
        health_growth = _rss_kib(proc.pid) - base
        assert health_growth < 4096, f"health and metrics requests leaked {health_growth} KiB"
        base = _rss_kib(proc.pid)
        for _ in range(10):
            assert http_get(port, "/api/version").status == 200
        growth = _rss_kib(proc.pid) - base
        assert 10 * 4096 <= growth < 10 * 4096 + 8192, f"10 requests grew RSS by {growth} KiB, want ~40 MiB"
        assert "fault leak" in log.read_text()
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
