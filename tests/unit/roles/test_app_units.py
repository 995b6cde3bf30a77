"""Role app's systemd units, rendered by Ansible and scored by systemd-analyze.

The exposure score is measured with `systemd-analyze security --offline=yes`
of systemd 252 (Debian 12, the lab's reference platform): scores shift between
systemd versions, so the test pins the version it trusts.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))


def render(tmp_path: Path, overrides: dict) -> dict[str, str]:
    extra = tmp_path / "overrides.json"
    extra.write_text(json.dumps(overrides))
    proc = subprocess.run([ANSIBLE_PLAYBOOK, "-i", "localhost,", str(HERE / "render_app_units.yml"),
                           "-e", f"out={tmp_path}", "-e", f"@{extra}", "-e", f"playbook_dir={ROOT / 'playbooks'}"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return {p.name: p.read_text() for p in tmp_path.glob("*.service")}


def systemd_version() -> int:
    out = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True, check=True).stdout
    return int(re.match(r"systemd (\d+)", out).group(1))



@pytest.mark.parametrize("overrides, expected", [({}, 1.1), ({"app_private_users": False}, 1.3)])
def test_unit_exposure_at_most_2(tmp_path, overrides, expected):
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd (only the binary is used)")
    if systemd_version() != 252:
        pytest.fail(f"exposure scores are pinned to systemd 252 (Debian 12); this is {systemd_version()}")
    units = render(tmp_path, overrides)
    assert list(units) == ["refapp-web.service"]
    unit = tmp_path / "refapp-web.service"
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=20", str(unit)],
                          capture_output=True, text=True, check=False)
    score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", proc.stdout).group(1))
    print(f"exposure of the default app unit: {score}")
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert score <= 2.0
    assert score == expected  # a change in hardening shows up here first


def test_default_unit_policy(tmp_path):
    text = render(tmp_path, {})["refapp-web.service"]
    for line in ["Restart=on-failure", "RestartSec=2", "StartLimitIntervalSec=120", "StartLimitBurst=5",
                 "TimeoutStopSec=35", "MemoryMax=512M", "CPUQuota=100%", "LimitNOFILE=65536",
                 "User=refapp", "EnvironmentFile=/opt/refapp/shared/config/.env",
                 "ReadWritePaths=/opt/refapp/shared/data /opt/refapp/shared/logs",
                 "ExecStart=/opt/refapp/current/venv/bin/refapp serve --service web --port 8000 --bind 0.0.0.0"]:
        assert line in text.splitlines(), line
    families = next(ln for ln in text.splitlines() if ln.startswith("RestrictAddressFamilies="))
    assert "AF_NETLINK" in families  # psutil lists interfaces over netlink
    assert "MemoryDenyWriteExecute" not in text  # off by default: breaks cffi callbacks


def test_memory_deny_write_execute_is_opt_in(tmp_path):
    text = render(tmp_path, {"app_memory_deny_write_execute": True})["refapp-web.service"]
    assert "MemoryDenyWriteExecute=yes" in text.splitlines()


def test_service_graph_becomes_unit_dependencies(tmp_path):
    services = [
        {"name": "news", "args": ["serve"], "port": 5008},
        {"name": "scanner", "args": ["serve"], "port": 5001, "requires": ["news"]},
        {"name": "reporting", "args": ["serve"], "port": 5009, "wants": ["scanner"]},
    ]
    units = render(tmp_path, {"app_name": "catalyst", "app_services": services})
    scanner = units["catalyst-scanner.service"].splitlines()
    assert "Requires=catalyst-news.service" in scanner
    assert "After=network-online.target catalyst-news.service" in scanner
    reporting = units["catalyst-reporting.service"].splitlines()
    assert not any(ln.startswith("Requires=") for ln in reporting)
    assert "Wants=network-online.target catalyst-scanner.service" in reporting
    assert "After=network-online.target catalyst-scanner.service" in reporting


def test_arguments_are_shell_quoted(tmp_path):
    services = [{"name": "web", "args": ["serve", "--label", "two words"], "port": 8000}]
    text = render(tmp_path, {"app_services": services})["refapp-web.service"]
    assert "ExecStart=/opt/refapp/current/venv/bin/refapp serve --label 'two words'" in text.splitlines()
