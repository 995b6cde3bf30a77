"""Set-up of the hostile-input regressions (issue 20): the plugins importable as in tests/unit
(its conftest is run here, not copied), the plugin test helpers, and a runner of the ops agent's
code under the hosts' own interpreter (Debian 12's Python 3.11, without ``tarfile.data_filter``)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("tradeops_unit_conftest", ROOT / "tests" / "unit" / "conftest.py")
assert _spec is not None and _spec.loader is not None
_spec.loader.exec_module(importlib.util.module_from_spec(_spec))
sys.path.insert(0, str(ROOT / "tests" / "unit" / "plugins"))
sys.path.insert(0, str(ROOT / "tests" / "unit"))  # reference_app.conftest: the throw-away PostgreSQL server
sys.path.insert(0, str(ROOT / "scripts"))

from build_agent import SHIPPED  # noqa: E402 - the wheel's module -> module_utils map, after the path set-up
from plugin_testlib import HOST_PYTHON, module_runner  # noqa: E402


@pytest.fixture
def run_module(capsys: pytest.CaptureFixture[str]) -> Callable[..., dict[str, Any]]:
    """``run_module(module, args, check_mode=False) -> exit JSON`` (``failed`` on fail_json, ``_rc``)."""
    return module_runner(capsys)


@pytest.fixture(scope="session")
def agent_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ops agent's package as the wheel lays it out (tradeops_agent/backup.py, ...), from this tree."""
    base = tmp_path_factory.mktemp("agent")
    package = base / "tradeops_agent"
    package.mkdir()
    shutil.copy(ROOT / "files" / "ops_agent" / "tradeops_agent" / "__init__.py", package / "__init__.py")
    for member, origin in SHIPPED.items():
        shutil.copy(ROOT / "plugins" / "module_utils" / origin, package / member)
    return base


@pytest.fixture
def on_host(agent_dir: Path) -> Callable[[str, dict[str, Any]], Any]:
    """``on_host(code, args)``: run ``code`` under the hosts' Python with ``args`` as a dict named ``args``
    and ``from tradeops_agent import backup, maintenance``; returns what the code puts in ``result``, or
    ``{"error": message}`` for an exception it raised."""

    def run(code: str, args: dict[str, Any]) -> Any:
        script = textwrap.dedent("""
            import json, sys
            sys.path.insert(0, sys.argv[1])
            from tradeops_agent import backup
            args = json.loads(sys.argv[2])
            try:
            {code}
            except Exception as exc:
                result = {{"error": f"{{type(exc).__name__}}: {{exc}}"}}
            print(json.dumps(result))
        """).format(code=textwrap.indent(textwrap.dedent(code), "    "))
        proc = subprocess.run([HOST_PYTHON, "-c", script, str(agent_dir), json.dumps(args)], capture_output=True,
                              text=True, timeout=60, check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    return run


FAKE_SYSTEMD = """#!/bin/sh
echo "$0 $*" >> "$FAKE_SYSTEMD_LOG"
exit 1
"""


@pytest.fixture
def fake_systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """systemctl, systemd-run and journalctl on PATH that log their arguments and fail: no module run by these
    tests reaches the machine's service manager. Returns the log."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    for tool in ("systemctl", "systemd-run", "journalctl"):
        (bin_dir / tool).write_text(FAKE_SYSTEMD)
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / "systemd.log"
    log.write_text("")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SYSTEMD_LOG", str(log))
    return log
