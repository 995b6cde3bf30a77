#!/usr/bin/env python3
"""Build the wheelhouse of one release on the controller.

A wheelhouse is a directory holding the application's wheel and the wheels of
every dependency, for one target Python, plus ``wheelhouse.json`` (files with
sha256, app name/version, and one checksum of the whole set). Hosts install it
offline (``pip install --no-index --find-links``): they never reach an index.

    build_wheelhouse.py --source PATH --version V --out DIR [--python-version 3.11]
                        [--requirement 'gunicorn>=22' ...]

PATH is a source tree with pyproject.toml, or a ready wheel. The reference app
(files/reference_app) gets V stamped in at build time; any other project must
already carry version V in its metadata — a mismatch is an error, so a deploy
of "2.0.0" can never ship something else. ``--requirement`` adds distributions the
application does not declare but runs with (its WSGI/ASGI server: gunicorn, uvicorn).

Dependencies are binary wheels for the hosts' Python and platform (manylinux
x86_64), taken from the index the controller's pip uses, whatever Python runs
this script. A dependency with no such wheel (an sdist only) is built once on the
controller and kept in ``<out>/../.built/py<X.Y>/`` for every later build: by a
``python<X.Y>`` found on the controller (so a compiled extension matches the hosts'
Python), else by this Python when the result is pure Python. One that can be neither
downloaded nor built fails here, naming the package, before anything reaches a host.

The dependency set is resolved against the index once per set of declared requirements,
target Python and wheel sources, and kept in ``<out>/../.deps/``: a later build whose app
declares the same requirements (the next version of the same app, usually) reuses it for
``--deps-max-age`` seconds (default a day, or TRADEOPS_DEPS_MAX_AGE; 0 = always ask the
index), after checking every kept wheel's sha256. A new release of an unpinned dependency
reaches the hosts at the first build after that age.

Prints the wheelhouse directory on stdout. Exit 0 on success, 2 on bad input,
1 when a build step fails. A wheelhouse already built for the same inputs is
reused (the source and the requirements are hashed), so a re-deploy costs no build.
"""
from __future__ import annotations

import argparse
import contextlib
import email.parser
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

try:  # ansible-core depends on packaging; pip carries a copy of it
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # pragma: no cover
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "plugins" / "module_utils"))
from tradeops_release import ReleaseError, check_requirements  # noqa: E402  (what hosts accept, checked here first)

VERSION_RE = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")
SKIP_DIRS = {"__pycache__", ".git", "build", "dist", ".venv", ".pytest_cache", ".ruff_cache"}
DEPS_MAX_AGE = 24 * 3600  # s: a resolved dependency set is reused this long (TRADEOPS_DEPS_MAX_AGE, --deps-max-age)


class BuildError(Exception):
    """A build step failed; the message says which and what to do."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_digest(source: Path) -> str:
    """Hash of every file of a source tree (or of the wheel itself)."""
    if source.is_file():
        return sha256_file(source)
    h = hashlib.sha256()
    for p in sorted(source.rglob("*")):
        if p.is_file() and not SKIP_DIRS.intersection(p.relative_to(source).parts) and p.suffix != ".pyc":
            h.update(str(p.relative_to(source)).encode() + b"\0" + sha256_file(p).encode())
    return h.hexdigest()


def wheel_metadata(wheel: Path) -> dict[str, object]:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = email.parser.Parser().parsestr(z.read(name).decode())
    return {"name": msg["Name"], "version": msg["Version"], "requires": msg.get_all("Requires-Dist") or []}


def build_app_wheel(source: Path, version: str, out: Path) -> Path:
    if source.suffix == ".whl":
        dest = out / source.name
        shutil.copy2(source, dest)
        return dest
    if not (source / "pyproject.toml").is_file():
        raise BuildError(f"app_source {source} has no pyproject.toml: give a Python project tree or a .whl")
    if (source / "refapp" / "_build.py").is_file():
        sys.path.insert(0, str(HERE))
        from build_refapp import build_wheel  # the reference app is version-stamped at build time

        return Path(build_wheel(source, version, None, out))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
                           "-w", str(out), str(source)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"building a wheel from {source} failed:\n{proc.stderr[-2000:]}")
    wheels = sorted(out.glob("*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one wheel from {source}, got {[w.name for w in wheels]}")
    return wheels[0]


PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64", "linux_x86_64", "any")
# What pip says when no distribution of a requirement fits: its name is the first word after.
_MISSING = re.compile(r"(?:No matching distribution found for|Could not find a version that satisfies the "
                      r"requirement) ([A-Za-z0-9][A-Za-z0-9._-]*(?:\[[^\]]*\])?(?:[<>=!~;][^\s()]*)?)")
MAX_BUILT = 20  # sdist-only dependencies built for one wheelhouse before giving up


def _pip_download(reqs: list[str], python_version: str, out: Path, links: list[Path],
                  no_index: bool) -> subprocess.CompletedProcess:
    # pip evaluates environment markers (python_version < "3.12") for the Python it runs under, whatever
    # --python-version says: a Python of the hosts' version resolves what the hosts need.
    cmd = [target_python(python_version) or sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
           "--only-binary=:all:", "--dest", str(out), "--python-version", python_version, "--implementation", "cp"]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    for link in links:
        cmd += ["--find-links", str(link)]
    if no_index:
        cmd.append("--no-index")
    return subprocess.run([*cmd, *reqs], capture_output=True, text=True, check=False)


def missing_requirement(stderr: str) -> str | None:
    """The requirement pip found no wheel for, from its error output (None: another failure)."""
    found = _MISSING.findall(stderr)
    return found[-1] if found else None


def minor_of(python_version: str) -> str:
    """3.11 of 3.11.2."""
    return ".".join(python_version.split(".")[:2])


@functools.cache  # its probe starts a Python: once per version and build
def target_python(python_version: str) -> str | None:
    """A Python of the hosts' version on the controller, with pip (python3.11 for 3.11): it builds
    wheels whose compiled parts match the hosts'. None when there is none."""
    python_version = minor_of(python_version)
    if f"{sys.version_info.major}.{sys.version_info.minor}" == python_version:
        return sys.executable
    found = shutil.which(f"python{python_version}")
    if found is None:
        return None
    probe = subprocess.run([found, "-m", "pip", "--version"], capture_output=True, text=True, check=False)
    return found if probe.returncode == 0 else None


def wheel_fits(wheel: Path, python_version: str) -> bool:
    """Whether a wheel built on the controller installs on the hosts' Python (x86_64 Linux)."""
    python_tags, abi, platform = wheel.stem.rsplit("-", 3)[-3:]  # name-version[-build]-python-abi-platform
    minor = int(python_version.split(".")[1])

    def python_ok(tag: str) -> bool:
        if tag.startswith("py3"):
            return True
        if not re.fullmatch(r"cp3\d+", tag):
            return False
        built_for = int(tag[3:])
        return built_for == minor or (abi == "abi3" and built_for <= minor)

    return (any(python_ok(t) for t in python_tags.split(".")) and abi in ("none", "abi3", f"cp3{minor}")
            and (platform == "any" or platform.endswith("x86_64")))


def build_missing(requirement: str, python_version: str, built: Path, links: list[Path], no_index: bool) -> Path:
    """Build the wheel of one dependency that has none for the target (from its sdist), into the
    cache of built wheels; returns the wheel. Raises BuildError naming the package."""
    builder = target_python(python_version)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=built))
    try:
        cmd = [builder or sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--no-deps",
               "--wheel-dir", str(tmp), requirement]
        for link in links:
            cmd += ["--find-links", str(link)]
        if no_index:
            cmd += ["--no-index", "--no-build-isolation"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = sorted(tmp.glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            raise BuildError(
                f"dependency {requirement}: no wheel for Python {python_version} (manylinux x86_64) on the index, "
                f"and building one from its source failed:\n{(proc.stderr or proc.stdout)[-1500:]}\n"
                "Give a wheel of it (--find-links DIR), or require a version that publishes wheels.")
        wheel = wheels[0]
        if not wheel_fits(wheel, python_version):
            raise BuildError(
                f"dependency {requirement}: no wheel for Python {python_version} on the index, and the one built "
                f"here ({wheel.name}) is compiled for this controller's Python, not the hosts': install "
                f"python{python_version} (with pip) on the controller, or give a wheel of it (--find-links DIR).")
        dest = built / wheel.name
        wheel.replace(dest)  # atomic: a concurrent build of the same wheel leaves one whole file
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def target_environment(python_version: str) -> dict[str, str]:
    """Environment markers of the hosts (CPython X.Y on x86_64 Linux)."""
    env = default_environment()
    full = python_version if python_version.count(".") == 2 else f"{python_version}.0"
    env.update(python_version=minor_of(python_version), python_full_version=full,
               implementation_name="cpython", platform_python_implementation="CPython", sys_platform="linux",
               platform_system="Linux", platform_machine="x86_64", os_name="posix")
    return env


def unmet_requirements(wheels: list[Path], requires: list[str], python_version: str,
                       app: str = "the application") -> dict[str, str]:
    """What the hosts' Python needs that the downloaded wheels do not satisfy, walking from ``requires``
    through each wheel's Requires-Dist with the hosts' markers: {requirement without its marker (it holds for
    the hosts): why}, empty when complete."""
    have = {canonicalize_name(str(meta["name"])): meta for meta in map(wheel_metadata, wheels)}  # read once each
    env = target_environment(python_version)

    def holds(marker: Any, extras: frozenset[str]) -> bool:
        return marker is None or any(marker.evaluate({**env, "extra": e}) for e in extras or {""})

    todo = [(Requirement(r), app) for r in requires]
    seen: set[tuple[str, frozenset[str]]] = set()
    unmet: dict[str, str] = {}
    while todo:
        req, parent = todo.pop()
        extras = frozenset(req.extras)
        if not holds(req.marker, extras):
            continue
        name = canonicalize_name(req.name)
        meta = have.get(name)
        version = str(meta["version"]) if meta else None
        if meta is None or not req.specifier.contains(str(version), prereleases=True):
            bare = f"{req.name}{'[' + ','.join(sorted(req.extras)) + ']' if req.extras else ''}{req.specifier}"
            unmet[bare] = f"{bare} (required by {parent}; the wheelhouse has {version or 'none'})"
            continue
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for line in meta["requires"]:  # type: ignore[attr-defined]
            dep = Requirement(str(line))
            if holds(dep.marker, extras):
                todo.append((Requirement(str(dep).split(";")[0]), f"{req.name} {version}"))
    return unmet


def fetch_dependencies(requires: list[str], python_version: str, out: Path,
                       find_links: list[Path] | None = None, no_index: bool = False,
                       built: Path | None = None, app: str = "the application") -> list[str]:
    """Binary wheels of the dependencies for the target Python (X.Y or X.Y.Z), from the controller's
    index and/or local wheel directories (find_links), plus the cache of wheels built from source
    (``built``), where a dependency with no wheel is built once. The set is then walked with the
    hosts' markers; what a marker adds for them (python_full_version < "3.11.3") is fetched too.
    Returns the requirements built from source."""
    reqs = [r for r in requires if "extra ==" not in r]
    if not reqs:
        return []
    links = list(find_links or [])
    if built is not None:
        built.mkdir(parents=True, exist_ok=True)
        links.append(built)
    made: list[str] = []
    added: list[str] = []
    unmet: dict[str, str] = {}

    def incomplete() -> BuildError:
        return BuildError(
            f"the dependency wheels do not satisfy what Python {python_version} needs: {'; '.join(unmet.values())}. "
            f"pip resolved them under {target_python(python_version) or sys.executable}, whose environment markers "
            f"(python_version...) differ from the hosts': install python{minor_of(python_version)} with pip on the "
            "controller, or pin the dependency.")

    while True:
        dest = Path(tempfile.mkdtemp(prefix=".deps-", dir=out))
        try:
            proc = _pip_download([*reqs, *added], python_version, dest, links, no_index)
            if proc.returncode == 0:
                wheels = sorted(dest.glob("*.whl"))
                unmet = unmet_requirements([*wheels, *out.glob("*.whl")], reqs, python_version, app)
                if not unmet:
                    for wheel in wheels:
                        wheel.replace(out / wheel.name)
                    return made
                new = [r for r in unmet if r not in added]
                if not new or len(added) >= MAX_BUILT:
                    raise incomplete()
                added += new  # what a marker adds for the hosts only (python_full_version < "3.11.3")
                continue
        finally:
            shutil.rmtree(dest, ignore_errors=True)
        if added:  # the hosts' requirements conflict with what pip resolved here
            raise incomplete()
        missing = missing_requirement(proc.stderr)
        if missing is None or built is None or missing in made or len(made) >= MAX_BUILT:
            named = f" ({missing} has none)" if missing else ""
            raise BuildError(f"fetching dependency wheels for Python {python_version} failed{named}: every "
                             f"dependency needs a binary wheel or a source that builds:\n{proc.stderr[-2000:]}")
        build_missing(missing, python_version, built, links, no_index)
        made.append(missing)


def deps_key(requires: list[str], python_version: str, find_links: list[Path] | None, no_index: bool) -> str:
    """Names a dependency set: what the app declares and runs with, for which Python, from which sources."""
    blob = json.dumps({"requires": sorted(requires), "python": python_version, "no_index": no_index,
                       "links": sorted(str(p) for p in find_links or [])}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def reuse_dependencies(kept: Path, out: Path, max_age: float) -> list[str] | None:
    """Copies a dependency set resolved less than max_age seconds ago into out; returns the requirements
    that were built from source for it. None when there is none that young, or one of its wheels does
    not match its recorded sha256 (then the index is asked again)."""
    manifest = kept / "deps.json"
    try:
        if max_age <= 0 or time.time() - manifest.stat().st_mtime > max_age:
            return None
        meta = json.loads(manifest.read_text())
        files = dict(meta["files"])
        if any(Path(n).name != n or sha256_file(kept / n) != d for n, d in files.items()):
            return None
        for name in files:
            shutil.copyfile(kept / name, out / name)
        return [str(r) for r in meta["built_from_source"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def keep_dependencies(kept: Path, wheels: list[Path], built: list[str]) -> None:
    """Keeps a resolved dependency set for reuse_dependencies, replacing an older one (written aside, renamed)."""
    kept.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".keeping-", dir=kept.parent))
    try:
        for wheel in wheels:
            shutil.copyfile(wheel, tmp / wheel.name)
        (tmp / "deps.json").write_text(json.dumps({
            "files": {w.name: sha256_file(tmp / w.name) for w in wheels}, "built_from_source": built}, indent=2) + "\n")
        shutil.rmtree(kept, ignore_errors=True)
        with contextlib.suppress(OSError):  # a concurrent build kept the same set first
            tmp.rename(kept)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build(source: Path, version: str, out_root: Path, python_version: str,
          find_links: list[Path] | None = None, no_index: bool = False,
          requirements: list[str] | None = None, deps_max_age: float = DEPS_MAX_AGE) -> Path:
    if not VERSION_RE.match(version):
        raise ValueError(f"app_version '{version}' is not a release version (PEP 440, e.g. 1.4.2)")
    if not re.match(r"^3\.\d+(\.\d+)?\Z", python_version):
        raise ValueError(f"python version '{python_version}' must look like 3.11 or 3.11.2")
    if not source.exists():
        raise ValueError(f"app_source {source} does not exist: give a project tree with pyproject.toml or a .whl")
    try:
        requirements = check_requirements(requirements, "--requirement")
    except ReleaseError as exc:
        raise ValueError(str(exc)) from exc
    digest = source_digest(source)
    if requirements:
        digest = hashlib.sha256("\n".join([digest, *requirements]).encode()).hexdigest()
    digest = digest[:16]
    final = out_root / f"{version}-py{python_version}-{digest}"
    manifest = final / "wheelhouse.json"
    if manifest.is_file():
        return final
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=out_root))
    try:
        app = build_app_wheel(source, version, tmp)
        meta = wheel_metadata(app)
        if meta["version"] != version:
            raise BuildError(f"{source} builds version {meta['version']}, not app_version {version}: "
                             "set the version in the project (or deploy that version)")
        requires = [*meta["requires"], *requirements]
        key = deps_key(requires, python_version, find_links, no_index)
        kept = out_root.parent / ".deps" / f"py{python_version}-{key}"
        built = reuse_dependencies(kept, tmp, deps_max_age)
        if built is None:
            built = fetch_dependencies(requires, python_version, tmp, find_links, no_index,
                                       out_root.parent / ".built" / f"py{minor_of(python_version)}",
                                       f"{meta['name']} {version}")
            keep_dependencies(kept, [w for w in sorted(tmp.glob("*.whl")) if w.name != app.name], built)
        files = {p.name: sha256_file(p) for p in sorted(tmp.glob("*.whl"))}
        whole = hashlib.sha256("".join(f"{n} {s}\n" for n, s in files.items()).encode()).hexdigest()
        (tmp / "wheelhouse.json").write_text(json.dumps({
            "name": meta["name"], "version": version, "python": python_version, "app_wheel": app.name,
            "files": files, "sha256": whole, "source_digest": digest,
            "requirements": requirements, "built_from_source": built}, indent=2) + "\n")
        try:
            tmp.rename(final)
        except OSError:
            if not manifest.is_file():  # not a concurrent build of the same inputs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, type=Path, help="project tree with pyproject.toml, or a .whl")
    ap.add_argument("--version", required=True, help="release version, PEP 440")
    ap.add_argument("--out", required=True, type=Path, help="directory under which wheelhouses are kept")
    ap.add_argument("--python-version", default="3.11",
                    help="target hosts' Python, e.g. 3.11 (default) or 3.11.2 (its environment markers are exact)")
    ap.add_argument("--find-links", action="append", type=Path, default=[],
                    help="local directory of dependency wheels (repeatable)")
    ap.add_argument("--no-index", action="store_true", help="take dependencies from --find-links only")
    ap.add_argument("--requirement", action="append", default=[], metavar="REQ",
                    help="a distribution the app runs with but does not declare, e.g. 'gunicorn>=22' (repeatable)")
    ap.add_argument("--deps-max-age", type=float, metavar="SECONDS",
                    default=os.environ.get("TRADEOPS_DEPS_MAX_AGE", str(DEPS_MAX_AGE)),
                    help="reuse a dependency set resolved this recently for the same requirements "
                         "(default TRADEOPS_DEPS_MAX_AGE or a day; 0 = always resolve against the index)")
    args = ap.parse_args(argv)
    try:
        print(build(args.source.resolve(), args.version, args.out.resolve(), args.python_version,
                    args.find_links, args.no_index, args.requirement, args.deps_max_age))
    except ValueError as exc:
        print(f"build_wheelhouse: {exc}", file=sys.stderr)
        return 2
    except BuildError as exc:
        print(f"build_wheelhouse: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
