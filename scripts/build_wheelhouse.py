#!/usr/bin/env python3
"""Build the wheelhouse of one release on the controller.

A wheelhouse is a directory holding the application's wheel and the wheels of
every dependency, for one target Python, plus ``wheelhouse.json`` (files with
sha256, app name/version, and one checksum of the whole set). Hosts install it
offline (``pip install --no-index --find-links``): they never reach an index.

    build_wheelhouse.py --source PATH --version V --out DIR [--python-version 3.11]

PATH is a source tree with pyproject.toml, or a ready wheel. The reference app
(files/reference_app) gets V stamped in at build time; any other project must
already carry version V in its metadata — a mismatch is an error, so a deploy
of "2.0.0" can never ship something else.

Prints the wheelhouse directory on stdout. Exit 0 on success, 2 on bad input,
1 when a build step fails. A wheelhouse already built for the same inputs is
reused (the source is hashed), so a re-deploy costs no build.
"""
from __future__ import annotations

import argparse
import email.parser
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSION_RE = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")
SKIP_DIRS = {"__pycache__", ".git", "build", "dist", ".venv", ".pytest_cache", ".ruff_cache"}


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


def fetch_dependencies(requires: list[str], python_version: str, out: Path,
                       find_links: list[Path] | None = None, no_index: bool = False) -> None:
    """Binary wheels of the dependencies for the target Python, from the controller's
    index and/or local wheel directories (find_links)."""
    reqs = [r for r in requires if "extra ==" not in r]
    if not reqs:
        return
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
           "--dest", str(out), "--python-version", python_version, "--implementation", "cp",
           "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
           "--platform", "linux_x86_64", "--platform", "any", *reqs]
    for link in find_links or []:
        cmd += ["--find-links", str(link)]
    if no_index:
        cmd.append("--no-index")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"fetching dependency wheels for Python {python_version} failed "
                         f"(every dependency needs a binary wheel):\n{proc.stderr[-2000:]}")


def build(source: Path, version: str, out_root: Path, python_version: str,
          find_links: list[Path] | None = None, no_index: bool = False) -> Path:
    if not VERSION_RE.match(version):
        raise ValueError(f"app_version '{version}' is not a release version (PEP 440, e.g. 1.4.2)")
    if not re.match(r"^3\.\d+$", python_version):
        raise ValueError(f"python version '{python_version}' must look like 3.11")
    if not source.exists():
        raise ValueError(f"app_source {source} does not exist: give a project tree with pyproject.toml or a .whl")
    digest = source_digest(source)[:16]
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
        fetch_dependencies(list(meta["requires"]), python_version, tmp, find_links, no_index)
        files = {p.name: sha256_file(p) for p in sorted(tmp.glob("*.whl"))}
        whole = hashlib.sha256("".join(f"{n} {s}\n" for n, s in files.items()).encode()).hexdigest()
        (tmp / "wheelhouse.json").write_text(json.dumps({
            "name": meta["name"], "version": version, "python": python_version, "app_wheel": app.name,
            "files": files, "sha256": whole, "source_digest": digest}, indent=2) + "\n")
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
    ap.add_argument("--python-version", default="3.11", help="target hosts' Python, e.g. 3.11 (default)")
    ap.add_argument("--find-links", action="append", type=Path, default=[],
                    help="local directory of dependency wheels (repeatable)")
    ap.add_argument("--no-index", action="store_true", help="take dependencies from --find-links only")
    args = ap.parse_args(argv)
    try:
        print(build(args.source.resolve(), args.version, args.out.resolve(), args.python_version,
                    args.find_links, args.no_index))
    except ValueError as exc:
        print(f"build_wheelhouse: {exc}", file=sys.stderr)
        return 2
    except BuildError as exc:
        print(f"build_wheelhouse: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
