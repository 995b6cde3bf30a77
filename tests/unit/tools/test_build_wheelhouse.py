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

sys.path.insert(0, str(ROOT / "tests" / "unit" / "plugins"))
from plugin_testlib import make_wheel  # noqa: E402  (a pure-Python wheel without a build: fast)

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
    make_wheel(links, "dep-lib", "1.0", {"dep_lib/__init__.py": ""})
    app = make_project(tmp_path, "some-app", "0.9.0", ["dep-lib>=1.0"])
    wh = bw.build(app, "0.9.0", tmp_path / "out", "3.11", find_links=[links], no_index=True)
    names = sorted(json.loads((wh / "wheelhouse.json").read_text())["files"])
    assert [n.split("-")[0] for n in names] == ["dep_lib", "some_app"]


def test_the_next_version_reuses_its_resolved_dependency_set_until_it_ages(tmp_path):
    """The same declared requirements: the set resolved for 0.9.0 serves 0.9.1 (no index asked: the newer
    dep-lib 1.1 in the links is not seen) until it is older than deps_max_age, or a kept wheel was altered."""
    links = tmp_path / "links"
    links.mkdir()
    make_wheel(links, "dep-lib", "1.0", {"dep_lib/__init__.py": ""})
    out = tmp_path / "out"

    def deps_of(version, **kw):
        (tmp_path / version).mkdir()
        app = make_wheel(tmp_path / version, "some-app", version, {"some_app/__init__.py": ""},
                         requires=("dep-lib>=1.0",))
        wh = bw.build(app, version, out, "3.11", find_links=[links], no_index=True, **kw)
        return sorted(n for n in json.loads((wh / "wheelhouse.json").read_text())["files"] if n.startswith("dep_lib"))

    assert deps_of("0.9.0") == ["dep_lib-1.0-py3-none-any.whl"]
    make_wheel(links, "dep-lib", "1.1", {"dep_lib/__init__.py": ""})
    assert deps_of("0.9.1") == ["dep_lib-1.0-py3-none-any.whl"]  # reused
    assert deps_of("0.9.2", deps_max_age=0) == ["dep_lib-1.1-py3-none-any.whl"]  # resolved again, and kept
    (kept,) = (out.parent / ".deps").iterdir()
    (kept / "dep_lib-1.1-py3-none-any.whl").write_bytes(b"altered")
    (links / "dep_lib-1.1-py3-none-any.whl").unlink()
    assert deps_of("0.9.3") == ["dep_lib-1.0-py3-none-any.whl"]  # an altered kept wheel is not used


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
    (["--version", "1.0.0", "--python-version", "eleven"], 2, "must look like 3.11 or 3.11.2"),
    (["--version", "1.0.0", "--source", "/nonexistent"], 2, "does not exist"),
])
def test_cli_bad_input(tmp_path, capsys, args, code, words):
    argv = ["--source", str(REFAPP), "--out", str(tmp_path), *args]
    if "--source" in args:
        argv = argv[2:]
    assert bw.main(argv) == code
    assert words in capsys.readouterr().err


def sdist_of(project: Path, version: str, out: Path) -> Path:
    """A source distribution of a make_project tree (the tar.gz pip builds from), with no wheel beside it."""
    import tarfile

    norm = project.name.replace("-", "_")
    (project / "PKG-INFO").write_text(f"Metadata-Version: 2.1\nName: {project.name}\nVersion: {version}\n")
    dest = out / f"{norm}-{version}.tar.gz"
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(project, arcname=f"{norm}-{version}")
    return dest


def test_a_dependency_with_no_wheel_is_built_once_on_the_controller(tmp_path, monkeypatch):
    # Offline (--no-index) the build runs without isolation: by this Python, whose setuptools builds wheels (a
    # python3.11 found on the controller may lack the wheel-building half of setuptools).
    monkeypatch.setattr(bw, "target_python", lambda version: None)
    links = tmp_path / "links"
    links.mkdir()
    sdist_of(make_project(tmp_path, "dep-src", "1.0", []), "1.0", links)
    out = tmp_path / "cache" / "someapp"
    first = bw.build(make_project(tmp_path, "some-app", "0.9.0", ["dep-src>=1.0"]), "0.9.0", out, "3.11",
                     find_links=[links], no_index=True)
    manifest = json.loads((first / "wheelhouse.json").read_text())
    assert manifest["built_from_source"] == ["dep-src>=1.0"]
    built = sorted((tmp_path / "cache" / ".built" / "py3.11").glob("dep_src-1.0-*.whl"))
    assert len(built) == 1 and bw.wheel_fits(built[0], "3.11")
    assert any(n.startswith("dep_src-1.0-") for n in manifest["files"])
    stamp = built[0].stat().st_mtime_ns
    # The next release of the app (another source) takes the built wheel from the cache: not rebuilt.
    (tmp_path / "some-app" / "some_app" / "__init__.py").write_text("VERSION = '0.9.0'  # changed\n")
    # Resolved again (deps_max_age=0, not the kept dependency set): pip finds the wheel built before.
    second = bw.build(tmp_path / "some-app", "0.9.0", out, "3.11", find_links=[links], no_index=True, deps_max_age=0)
    assert second != first
    assert json.loads((second / "wheelhouse.json").read_text())["built_from_source"] == []
    assert built[0].stat().st_mtime_ns == stamp


def test_a_dependency_that_exists_nowhere_fails_naming_it_before_anything_ships(tmp_path):
    app = make_wheel(tmp_path, "some-app", "0.9.0", {"some_app/__init__.py": ""},
                     requires=("no-such-dependency-anywhere>=2",))
    with pytest.raises(bw.BuildError, match=r"dependency no-such-dependency-anywhere>=2: no wheel for Python 3\.11"):
        bw.build(app, "0.9.0", tmp_path / "out", "3.11", find_links=[tmp_path], no_index=True)
    assert not list((tmp_path / "out").glob("0.9.0*"))


def test_requirements_the_app_does_not_declare_come_along_and_key_the_cache(tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    make_wheel(links, "server-lib", "2.0", {"server_lib/__init__.py": ""})
    app = make_wheel(tmp_path, "some-app", "0.9.0", {"some_app/__init__.py": ""})
    bare = bw.build(app, "0.9.0", tmp_path / "out", "3.11", find_links=[links], no_index=True)
    served = bw.build(app, "0.9.0", tmp_path / "out", "3.11", find_links=[links], no_index=True,
                      requirements=["server-lib>=2"])
    assert served != bare
    manifest = json.loads((served / "wheelhouse.json").read_text())
    assert manifest["requirements"] == ["server-lib>=2"]
    assert sorted(n.split("-")[0] for n in manifest["files"]) == ["server_lib", "some_app"]


@pytest.mark.parametrize("requirement", ["gunicorn @ https://example.invalid/g.whl", "../gunicorn", "-e .",
                                         "gunicorn\n--index-url=http://x", ""])
def test_a_requirement_that_is_no_specifier_is_refused(tmp_path, requirement):
    app = make_project(tmp_path, "some-app", "0.9.0", [])
    with pytest.raises(ValueError, match="is not a requirement specifier"):
        bw.build(app, "0.9.0", tmp_path / "out", "3.11", requirements=[requirement])


@pytest.mark.parametrize("name, python, fits", [
    ("x-1.0-py3-none-any.whl", "3.11", True),
    ("x-1.0-py2.py3-none-any.whl", "3.13", True),
    ("x-1.0-cp311-cp311-linux_x86_64.whl", "3.11", True),
    ("x-1.0-cp313-cp313-linux_x86_64.whl", "3.11", False),   # built by the controller's 3.13 for 3.11 hosts
    ("x-1.0-cp39-abi3-linux_x86_64.whl", "3.11", True),
    ("x-1.0-cp312-abi3-linux_x86_64.whl", "3.11", False),
    ("x-1.0-cp311-cp311-linux_aarch64.whl", "3.11", False),
    ("x-1.0-1build-cp311-cp311-manylinux2014_x86_64.whl", "3.11", True),
])
def test_wheel_fits_the_hosts_python(name, python, fits):
    """A wheel built on the controller is kept only when the hosts' Python installs it."""
    assert bw.wheel_fits(Path(name), python) is fits


@pytest.mark.parametrize("stderr, found", [
    ("ERROR: Could not find a version that satisfies the requirement docopt (from versions: none)\n"
     "ERROR: No matching distribution found for docopt", "docopt"),
    ("ERROR: No matching distribution found for dep-src>=1.0", "dep-src>=1.0"),
    ("ERROR: HTTP error 503 while getting https://...", None),
])
def test_missing_requirement_is_read_from_pips_error(stderr, found):
    assert bw.missing_requirement(stderr) == found


def test_the_target_python_is_this_one_when_versions_match():
    this = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert bw.target_python(this) == sys.executable
    assert bw.target_python("3.99") is None


@pytest.fixture
def marked(tmp_path):
    """Wheels whose requirements hold for some Pythons only, as on PyPI (redis: async-timeout below 3.11.3)."""
    def wheel(name, version, *requires):
        return make_wheel(tmp_path, name, version, {f"{name.replace('-', '_')}/__init__.py": ""}, requires=requires)
    return {
        "dep-a": wheel("dep-a", "1.0"),
        "dep-b": wheel("dep-b", "1.0"),
        "dep-c": wheel("dep-c", "1.0", 'dep-e>=2; extra == "fast"', "dep-a; sys_platform == 'win32'"),
        "dep-e": wheel("dep-e", "2.1"),
    }


APP_REQUIRES = ['dep-a; python_full_version < "3.11.3"', 'dep-b>=2; python_version >= "3.12"', "dep-c[fast]"]


@pytest.mark.parametrize("python, have, unmet", [
    ("3.11.2", ["dep-c", "dep-e"], ["dep-a"]),                   # the marker holds for Debian 12's 3.11.2 only
    ("3.11.7", ["dep-c", "dep-e"], []),
    ("3.11", ["dep-c", "dep-e"], ["dep-a"]),                     # X.Y: read as X.Y.0
    ("3.13.1", ["dep-c", "dep-e", "dep-b"], ["dep-b>=2"]),      # dep-b 1.0 is there, 2 or later is needed
    ("3.11.7", ["dep-c"], ["dep-e>=2"]),                         # the extra [fast] of dep-c asks for it
])
def test_the_wheel_set_is_walked_with_the_hosts_markers(marked, python, have, unmet):
    found = bw.unmet_requirements([marked[n] for n in have], APP_REQUIRES, python, "shop 1.0")
    assert sorted(found) == unmet
    if unmet:
        assert "required by" in found[unmet[0]]


def test_a_requirement_only_the_hosts_python_has_is_fetched_too(tmp_path, marked, monkeypatch):
    """pip resolves with the Python it runs under; a marker true for the hosts only adds its requirement."""
    monkeypatch.setattr(bw, "target_python", lambda version: None)
    (tmp_path / "app").mkdir()
    app = make_wheel(tmp_path / "app", "shop", "1.0", {"shop/__init__.py": ""},
                     requires=('dep-a; python_full_version < "3.11.3"', "dep-c"))
    wh = bw.build(app, "1.0", tmp_path / "out", "3.11.2", find_links=[tmp_path], no_index=True)
    names = sorted(n.split("-")[0] for n in json.loads((wh / "wheelhouse.json").read_text())["files"])
    assert names == ["dep_a", "dep_c", "shop"]
    wh = bw.build(app, "1.0", tmp_path / "out", "3.11.7", find_links=[tmp_path], no_index=True)
    assert sorted(n.split("-")[0] for n in json.loads((wh / "wheelhouse.json").read_text())["files"]) == [
        "dep_c", "shop"]
