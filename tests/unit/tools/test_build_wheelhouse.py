"""scripts/build_wheelhouse.py: the controller-side release artefact."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "scripts"))
import build_wheelhouse as bw  # noqa: E402

REFAPP = ROOT / "files" / "reference_app"


def make_project(tmp: Path, name: str, version: str, deps: list[str]) -> Path:
    src = tmp / name
    pkg = src / name.replace("-", "_")
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"VERSION = {version!r}\n")
    (src / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{name}"
        version = "{version}"
        dependencies = {json.dumps(deps)}
        [tool.setuptools]
        packages = ["{name.replace('-', '_')}"]
    """))
    return src


def wheel_of(project: Path, out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(out), str(project)], check=True)
    return next(out.glob(f"{project.name.replace('-', '_')}-*.whl"))


def test_reference_app_is_stamped_and_cached(tmp_path):
    t0 = time.monotonic()
    wh = bw.build(REFAPP, "2.3.4", tmp_path, "3.11")
    cold = time.monotonic() - t0
    manifest = json.loads((wh / "wheelhouse.json").read_text())
    assert manifest["version"] == "2.3.4"
    assert manifest["name"] == "tradeops-refapp"
    assert manifest["app_wheel"] in manifest["files"]
    for name, digest in manifest["files"].items():
        assert bw.sha256_file(wh / name) == digest
    t0 = time.monotonic()
    assert bw.build(REFAPP, "2.3.4", tmp_path, "3.11") == wh  # same inputs: reused, not rebuilt
    assert time.monotonic() - t0 < cold
    other = bw.build(REFAPP, "2.3.5", tmp_path, "3.11")
    assert other != wh
    assert json.loads((other / "wheelhouse.json").read_text())["sha256"] != manifest["sha256"]


def test_dependencies_come_along_from_local_wheels(tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    wheel_of(make_project(tmp_path, "dep-lib", "1.0", []), links)
    app = make_project(tmp_path, "some-app", "0.9.0", ["dep-lib>=1.0"])
    wh = bw.build(app, "0.9.0", tmp_path / "out", "3.11", find_links=[links], no_index=True)
    names = sorted(json.loads((wh / "wheelhouse.json").read_text())["files"])
    assert [n.split("-")[0] for n in names] == ["dep_lib", "some_app"]


def test_version_mismatch_is_refused(tmp_path):
    app = make_project(tmp_path, "some-app", "0.9.0", [])
    with pytest.raises(bw.BuildError, match=r"builds version 0\.9\.0, not app_version 1\.0\.0"):
        bw.build(app, "1.0.0", tmp_path / "out", "3.11")
    assert not list((tmp_path / "out").glob("1.0.0*"))  # nothing half-built left under a final name


def test_a_ready_wheel_is_accepted(tmp_path):
    wheel = wheel_of(make_project(tmp_path, "some-app", "0.9.0", []), tmp_path)
    wh = bw.build(wheel, "0.9.0", tmp_path / "out", "3.11")
    assert json.loads((wh / "wheelhouse.json").read_text())["app_wheel"] == wheel.name


@pytest.mark.parametrize("args, code, words", [
    (["--version", "latest"], 2, "not a release version"),
    (["--version", "1.0.0", "--python-version", "eleven"], 2, "must look like 3.11"),
    (["--version", "1.0.0", "--source", "/nonexistent"], 2, "does not exist"),
])
def test_cli_bad_input(tmp_path, capsys, args, code, words):
    argv = ["--source", str(REFAPP), "--out", str(tmp_path), *args]
    if "--source" in args:
        argv = argv[2:]
    assert bw.main(argv) == code
    assert words in capsys.readouterr().err
