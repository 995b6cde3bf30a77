#!/usr/bin/env python3
"""Build the wheel of the tradeops ops agent (``tradeops-health``, ``tradeops-release``, ``tradeops-backup``).

    python scripts/build_agent.py [--version 0.1.0] [--out DIR] [--force]
                                  [--source files/ops_agent] [--module-utils plugins/module_utils]

Copies files/ops_agent to a temporary directory, adds the host-side logic from
plugins/module_utils (tradeops_health.py -> tradeops_agent/health.py with its probes, tradeops_probes.py
-> tradeops_agent/probes.py, tradeops_release.py
-> tradeops_agent/release.py, tradeops_backup.py -> tradeops_agent/backup.py, tradeops_metrics.py ->
tradeops_agent/metrics.py, tradeops_safefs.py -> tradeops_agent/safefs.py, tradeops_checks.py ->
tradeops_agent/checks.py, tradeops_backup_auth.py -> tradeops_agent/backup_auth.py, tradeops_maintenance.py and
tradeops_schedule.py likewise: one source of
truth, the repository holds no copy), stamps
the version into tradeops_agent/__init__.py and builds the wheel offline with
``python -m pip wheel --no-deps --no-build-isolation --no-index`` (setuptools and wheel
must be installed in the running Python). The wheel is then checked (name, metadata
version, no dependencies, package files byte-equal to their sources) and published
atomically into DIR, next to ``<wheel>.json`` (its sha256 and a digest of the inputs).

Builds are reproducible (SOURCE_DATE_EPOCH is fixed): the same inputs give the same bytes,
so copying the wheel to hosts is idempotent. A wheel already built from the same inputs is
reused without running pip (``--force`` rebuilds). Prints the wheel's path on stdout.

Exit codes: 0 built or reused; 1 the build failed (pip's output is shown on stderr);
2 invalid arguments (version not PEP 440, missing or inconsistent source tree).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_SOURCE = ROOT / "files" / "ops_agent"
MODULE_UTILS = ROOT / "plugins" / "module_utils"
DEFAULT_OUT = ROOT / "dist" / "agent"
PACKAGE = "tradeops_agent"
DIST_NAME = "tradeops-agent"
# Module in the wheel -> its single source in plugins/module_utils.
SHIPPED = {"health.py": "tradeops_health.py", "release.py": "tradeops_release.py", "backup.py": "tradeops_backup.py",
           "metrics.py": "tradeops_metrics.py", "maintenance.py": "tradeops_maintenance.py",
           "schedule.py": "tradeops_schedule.py", "probes.py": "tradeops_probes.py", "safefs.py": "tradeops_safefs.py",
           "checks.py": "tradeops_checks.py", "backup_auth.py": "tradeops_backup_auth.py"}
# Wheels carry no build time: with a fixed SOURCE_DATE_EPOCH the same inputs give the same bytes.
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the oldest time a zip file can hold
_VERSION_LINE = re.compile(r'^__version__ = "[^"\n]*"$', re.MULTILINE)
_SKIP_DIRS = ("__pycache__", "build", "dist", ".pytest_cache")
_IGNORE = shutil.ignore_patterns(*_SKIP_DIRS, "*.pyc", "*.egg-info")

if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
from build_refapp import BuildError, UsageError, validate_version  # noqa: E402 - one PEP 440 rule for every build


def source_version(source: str | Path = DEFAULT_SOURCE) -> str:
    """The version written in the source tree's ``tradeops_agent/__init__.py`` (the default)."""
    text = (Path(source) / PACKAGE / "__init__.py").read_text(encoding="utf-8")
    found = _VERSION_LINE.findall(text)
    if len(found) != 1:
        raise UsageError(f"{source}/{PACKAGE}/__init__.py must hold exactly one line __version__ = \"X.Y.Z\"")
    return found[0].split('"')[1]


DEFAULT_VERSION = source_version()


def stamp_version(init_text: str, version: str) -> str:
    """``__init__.py`` with its ``__version__`` line set to ``version``."""
    text, count = _VERSION_LINE.subn(f"__version__ = {json.dumps(version)}", init_text)
    if count != 1:
        raise UsageError(f"{PACKAGE}/__init__.py must hold exactly one line __version__ = \"X.Y.Z\"")
    return text


def _check_source(source: Path, module_utils: Path) -> None:
    if not (source / "pyproject.toml").is_file() or not (source / PACKAGE / "__init__.py").is_file():
        raise UsageError(f"{source} is not the ops agent source tree (pyproject.toml, {PACKAGE}/__init__.py)")
    for target, origin in SHIPPED.items():
        if (source / PACKAGE / target).exists():
            raise UsageError(f"{source / PACKAGE / target} must not exist: the build copies it from "
                             f"{module_utils / origin} (one source of truth); delete it")
        if not (module_utils / origin).is_file():
            raise UsageError(f"{module_utils / origin} is missing: it is the source of {PACKAGE}/{target}")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _source_files(source: Path) -> list[tuple[str, Path]]:
    """The files of the source tree that a build copies (what _IGNORE leaves)."""
    files = []
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if (path.is_file() and path.suffix != ".pyc" and not set(rel.parts[:-1]) & set(_SKIP_DIRS)
                and not any(part.endswith(".egg-info") for part in rel.parts)):
            files.append((rel.as_posix(), path))
    return files


def inputs_digest(source: Path, module_utils: Path, version: str) -> str:
    """Digest of everything that goes into the wheel (source tree, shipped modules, version, this builder)."""
    h = hashlib.sha256(f"version {version}\nbuilder {_sha256(Path(__file__).read_bytes())}\n".encode())
    for rel, path in _source_files(source):
        h.update(f"source {rel} {_sha256(path.read_bytes())}\n".encode())
    for target, origin in sorted(SHIPPED.items()):
        h.update(f"shipped {target} {_sha256((module_utils / origin).read_bytes())}\n".encode())
    return h.hexdigest()


def wheel_name(version: str) -> str:
    return f"{PACKAGE}-{version}-py3-none-any.whl"


def verify_wheel(wheel: Path, version: str, expected: dict[str, bytes]) -> None:
    """Raise BuildError unless the wheel has this version, no dependencies and exactly the
    package files ``expected`` (name inside the package -> bytes)."""
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta_name = f"{PACKAGE}-{version}.dist-info/METADATA"
        if meta_name not in names:
            raise BuildError(f"{wheel.name} has no {meta_name}")
        meta = Parser().parsestr(z.read(meta_name).decode("utf-8"))
        if meta["Name"] != DIST_NAME or meta["Version"] != version:
            raise BuildError(f"{wheel.name} is {meta['Name']} {meta['Version']}, expected {DIST_NAME} {version}")
        required = [r for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r]
        if required:
            raise BuildError(f"{wheel.name} must have no runtime dependencies, has {required}")
        package = sorted(n[len(PACKAGE) + 1:] for n in names if n.startswith(f"{PACKAGE}/"))
        if package != sorted(expected):
            raise BuildError(f"{wheel.name} holds {package} in {PACKAGE}/, expected {sorted(expected)}")
        for name, data in expected.items():
            if z.read(f"{PACKAGE}/{name}") != data:
                raise BuildError(f"{wheel.name}: {PACKAGE}/{name} differs from its source")


def _publish(data: bytes, target: Path) -> None:
    """Write ``target`` atomically (concurrent builds of the same inputs are safe)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_wheel(
    version: str = DEFAULT_VERSION,
    out: str | Path = DEFAULT_OUT,
    source: str | Path = DEFAULT_SOURCE,
    module_utils: str | Path = MODULE_UTILS,
    python: str = sys.executable,
    force: bool = False,
) -> Path:
    """Build (or reuse) the agent wheel in ``out`` and return its path.

    Raises UsageError for invalid arguments and BuildError when pip fails or the wheel is wrong.
    """
    validate_version(version)
    source, module_utils = Path(source).resolve(), Path(module_utils).resolve()
    _check_source(source, module_utils)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    target = out / wheel_name(version)
    info_path = out / f"{target.name}.json"
    digest = inputs_digest(source, module_utils, version)
    if not force and target.is_file() and info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except ValueError:
            info = {}
        if info.get("inputs") == digest and info.get("sha256") == _sha256(target.read_bytes()):
            return target
    with tempfile.TemporaryDirectory(prefix="agent-build-") as tmp:
        tree = Path(tmp) / "src"
        shutil.copytree(source, tree, ignore=_IGNORE)
        init = tree / PACKAGE / "__init__.py"
        init.write_text(stamp_version(init.read_text(encoding="utf-8"), version), encoding="utf-8")
        expected = {"__init__.py": init.read_bytes()}
        for name, origin in SHIPPED.items():
            shutil.copyfile(module_utils / origin, tree / PACKAGE / name)
            expected[name] = (module_utils / origin).read_bytes()
        for path in tree.rglob("*"):  # the modes of the copies must not depend on the checkout
            path.chmod(0o755 if path.is_dir() else 0o644)
        wheel_dir = Path(tmp) / "wheels"
        command = [
            python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
            "--disable-pip-version-check", "--no-cache-dir", "-q", "-w", str(wheel_dir), str(tree),
        ]  # fmt: skip
        env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.run(command, capture_output=True, text=True, cwd=tmp, env=env, check=False)
        wheels = sorted(wheel_dir.glob("*.whl")) if wheel_dir.is_dir() else []
        if proc.returncode != 0 or len(wheels) != 1:
            raise BuildError(
                f"pip wheel failed (exit {proc.returncode}); setuptools and wheel must be installed in "
                f"{python}\n{proc.stdout}{proc.stderr}".rstrip()
            )
        if wheels[0].name != target.name:
            raise BuildError(f"pip built {wheels[0].name}, expected {target.name}")
        verify_wheel(wheels[0], version, expected)
        data = wheels[0].read_bytes()
    _publish(data, target)
    info = {"name": DIST_NAME, "version": version, "wheel": target.name, "sha256": _sha256(data), "inputs": digest}
    _publish((json.dumps(info, indent=2, sort_keys=True) + "\n").encode(), info_path)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="build_agent.py",
        description="Build the tradeops ops agent wheel (tradeops-health, tradeops-release, tradeops-backup) from "
                    "files/ops_agent and plugins/module_utils.",
        epilog="exit codes: 0 built or reused (wheel path on stdout), 1 build failed, 2 invalid arguments",
    )
    parser.add_argument("--version", default=DEFAULT_VERSION,
                        help=f"PEP 440 version to stamp in (default {DEFAULT_VERSION}, from files/ops_agent)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--source", default=str(DEFAULT_SOURCE), help="ops agent source tree")
    parser.add_argument("--module-utils", default=str(MODULE_UTILS),
                        help="where tradeops_{health,release,backup,metrics}.py are "
                             "(default plugins/module_utils)")
    parser.add_argument("--force", action="store_true", help="rebuild even when a wheel of the same inputs exists")
    args = parser.parse_args(argv)
    try:
        wheel = build_wheel(args.version, args.out, args.source, args.module_utils, force=args.force)
    except UsageError as exc:
        print(f"build_agent.py: error: {exc}", file=sys.stderr)
        return 2
    except (BuildError, OSError) as exc:
        print(f"build_agent.py: error: {exc}", file=sys.stderr)
        return 1
    print(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
