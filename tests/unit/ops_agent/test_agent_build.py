"""scripts/build_agent.py: real offline builds; the wheel ships plugins/module_utils byte for byte."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from .conftest import BUILD_TOOL, CLI_VERSION, MODULE_UTILS, PYTHON, SOURCE, build_agent, run

SHIPPED = {"tradeops_agent/health.py": "tradeops_health.py", "tradeops_agent/release.py": "tradeops_release.py",
           "tradeops_agent/backup.py": "tradeops_backup.py", "tradeops_agent/metrics.py": "tradeops_metrics.py",
           "tradeops_agent/maintenance.py": "tradeops_maintenance.py",
           "tradeops_agent/schedule.py": "tradeops_schedule.py", "tradeops_agent/probes.py": "tradeops_probes.py",
           "tradeops_agent/safefs.py": "tradeops_safefs.py", "tradeops_agent/checks.py": "tradeops_checks.py",
           "tradeops_agent/backup_auth.py": "tradeops_backup_auth.py"}


def test_wheel_ships_exactly_the_module_utils_bytes(wheel):
    assert wheel.name == f"tradeops_agent-{build_agent.DEFAULT_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        package = sorted(n for n in names if not n.startswith("tradeops_agent-"))
        assert package == ["tradeops_agent/__init__.py", *sorted(SHIPPED)]
        for member, origin in SHIPPED.items():
            assert z.read(member) == (MODULE_UTILS / origin).read_bytes(), f"{member} drifted from {origin}"
        init = z.read("tradeops_agent/__init__.py").decode()
        assert f'__version__ = "{build_agent.DEFAULT_VERSION}"' in init
        dist = f"tradeops_agent-{build_agent.DEFAULT_VERSION}.dist-info"
        entry_points = z.read(f"{dist}/entry_points.txt").decode()
        assert "tradeops-health = tradeops_agent.health:main_cli" in entry_points
        assert "tradeops-release = tradeops_agent.release:main_cli" in entry_points
        assert "tradeops-backup = tradeops_agent.backup:main_cli" in entry_points
        assert "tradeops-maintenance = tradeops_agent.maintenance:main_cli" in entry_points
        metadata = z.read(f"{dist}/METADATA").decode()
    assert "Name: tradeops-agent" in metadata
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert all("extra ==" in line for line in requires), requires  # psutil is optional only
    # one source of truth: the repository holds no copy of the shipped modules
    assert sorted(p.name for p in (SOURCE / "tradeops_agent").glob("*.py")) == ["__init__.py"]
    info = json.loads(Path(f"{wheel}.json").read_text())
    assert info["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert info["version"] == build_agent.DEFAULT_VERSION and info["wheel"] == wheel.name


def test_default_version_is_the_source_version():
    text = (SOURCE / "tradeops_agent" / "__init__.py").read_text()
    assert f'__version__ = "{build_agent.DEFAULT_VERSION}"' in text
    assert build_agent.source_version(SOURCE) == build_agent.DEFAULT_VERSION


def test_reproducible_and_reused(builds, wheel):
    assert builds["again"].read_bytes() == wheel.read_bytes()  # same inputs, same bytes: copies stay idempotent
    # a second build of the same inputs reuses the wheel without running pip
    before = wheel.stat().st_mtime_ns
    assert build_agent.build_wheel(out=wheel.parent) == wheel
    assert wheel.stat().st_mtime_ns == before
    proc = run(PYTHON, BUILD_TOOL, "--out", wheel.parent)
    assert proc.returncode == 0 and proc.stdout == f"{wheel}\n", proc.stderr
    assert wheel.stat().st_mtime_ns == before


def test_cli_builds_the_version_and_the_changed_module_utils(builds, wheel):
    proc, out = builds["changed"], builds["changed_out"]
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert path == out / f"tradeops_agent-{CLI_VERSION}-py3-none-any.whl" and path.is_file()
    with zipfile.ZipFile(path) as z:
        assert f'__version__ = "{CLI_VERSION}"' in z.read("tradeops_agent/__init__.py").decode()
        assert f"Version: {CLI_VERSION}" in z.read(f"tradeops_agent-{CLI_VERSION}.dist-info/METADATA").decode()
        assert z.read("tradeops_agent/health.py") == (MODULE_UTILS / "tradeops_health.py").read_bytes() + b"# changed\n"
        assert z.read("tradeops_agent/release.py") == (MODULE_UTILS / "tradeops_release.py").read_bytes()
        assert z.read("tradeops_agent/backup.py") == (MODULE_UTILS / "tradeops_backup.py").read_bytes()


def test_cli_rejects_bad_input_with_exit_2(tmp_path):
    stray = tmp_path / "stray"
    shutil.copytree(SOURCE, stray)
    (stray / "tradeops_agent" / "health.py").write_text("# a hand-made copy\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, needle in (
        (["--version", "v1.0"], "drop the leading 'v'"),
        (["--version", "1.0-beta"], "PEP 440"),
        (["--version", ""], "PEP 440"),
        (["--source", str(empty)], "not the ops agent source tree"),
        (["--source", str(stray)], "one source of truth"),
        (["--frobnicate"], "unrecognized arguments"),
    ):
        proc = run(PYTHON, BUILD_TOOL, *args, "--out", tmp_path / "out")
        assert proc.returncode == 2 and needle in proc.stderr, (args, proc.stderr)
    assert not list((tmp_path / "out").glob("*.whl")) if (tmp_path / "out").exists() else True


@pytest.mark.parametrize(("text", "version", "expected"), [
    ('"""doc"""\n\n__version__ = "0.1.0"\n', "1.2.3", '"""doc"""\n\n__version__ = "1.2.3"\n'),
    ('__version__ = "0.0.0"\nX = 1\n', "1.0+lab.1", '__version__ = "1.0+lab.1"\nX = 1\n'),
])  # fmt: skip
def test_stamp_version(text, version, expected):
    assert build_agent.stamp_version(text, version) == expected


@pytest.mark.parametrize("text", ["X = 1\n", '__version__ = "1"\n__version__ = "2"\n', "__version__ = VERSION\n"])
def test_stamp_version_needs_exactly_one_literal_line(text):
    with pytest.raises(build_agent.UsageError):
        build_agent.stamp_version(text, "1.0")
