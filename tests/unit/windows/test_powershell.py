"""A real PowerShell parser (tree-sitter-powershell, scripts/check_powershell.py) over every .ps1 of
the repository and over the PowerShell embedded in the windows_* roles and playbooks
(ansible.windows.win_powershell ``script:``), and proof that it catches a broken script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
CHECK = ROOT / "scripts" / "check_powershell.py"


def check(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECK), "--json", *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def embedded_scripts() -> list[tuple[str, str]]:
    """(where, script) of every win_powershell task under roles/windows_* and playbooks/windows."""
    found = []
    files = [*ROOT.glob("roles/windows_*/tasks/*.yml"), *ROOT.glob("playbooks/windows/*.yml")]

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "ansible.windows.win_powershell" and isinstance(value, dict) and "script" in value:
                    found.append((f"{where} ({node.get('name')})", value["script"]))
                walk(value, where)
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    for path in files:
        walk(yaml.safe_load(path.read_text()), str(path.relative_to(ROOT)))
    return found


def test_every_ps1_parses() -> None:
    proc = check()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    parsed = {str(Path(r["file"]).relative_to(ROOT)) for r in result["results"]}
    assert {
        "plugins/modules/win_app_release.ps1",
        "plugins/modules/win_app_health.ps1",
        "scripts/windows/setup-ansible-host.ps1",
    } <= parsed
    assert result["with_errors"] == 0


def test_embedded_powershell_parses(tmp_path: Path) -> None:
    scripts = embedded_scripts()
    assert len(scripts) >= 2, scripts  # Defender exclusions, backup now
    names = {}
    for index, (where, script) in enumerate(scripts):
        path = tmp_path / f"embedded{index}.ps1"
        path.write_text(script)
        names[str(path)] = where
    proc = check(tmp_path)
    result = json.loads(proc.stdout)
    bad = {names[r["file"]]: r["errors"] for r in result["results"] if r["errors"]}
    assert proc.returncode == 0 and not bad, bad


def test_a_broken_script_is_caught_with_its_line(tmp_path: Path) -> None:
    good = tmp_path / "good.ps1"
    good.write_text("param([string]$Name)\n$items = @{ a = 1 }\nif ($Name) { Write-Output $Name }\n")
    broken = tmp_path / "broken.ps1"
    broken.write_text(
        "param([string]$Name)\n$items = @{ a = 1 }\nfunction Get-X {\n    if ($Name) { Write-Output $Name\n}\n"
    )
    proc = check(tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    result = {Path(r["file"]).name: r["errors"] for r in json.loads(proc.stdout)["results"]}
    assert result["good.ps1"] == []
    assert result["broken.ps1"], "the unclosed function body was not reported"
    assert all(err["line"] >= 3 for err in result["broken.ps1"]), result["broken.ps1"]
    text = subprocess.run(
        [sys.executable, str(CHECK), str(broken)], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert text.returncode == 1
    assert f"{broken}:" in text.stdout


def test_a_missing_path_cannot_be_checked(tmp_path: Path) -> None:
    proc = check(tmp_path / "nope.ps1")
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr
