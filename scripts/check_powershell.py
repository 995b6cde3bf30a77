#!/usr/bin/env python3
"""Parse every PowerShell script with a real PowerShell grammar (tree-sitter-powershell).

Windows cannot run here, so this is the syntax gate of the repository's ``.ps1`` files:
each file is parsed with tree-sitter's PowerShell grammar and every ERROR or MISSING node
is reported as ``file:line:column``.

The parser comes from npm, pinned, into the user's cache (``$XDG_CACHE_HOME/tradeops/npm/<pins>``,
else ``~/.cache/...``: a fresh clone reuses it, as CI's do; 56-65 s of every clean-clone
``make check`` went to this install) the first time it is needed: the ``tree-sitter`` Node
binding (ships prebuilt binaries) and
``tree-sitter-powershell`` (compiled by node-gyp on install: needs make and a C compiler).
``tree-sitter-cli`` is not used: its npm package downloads its binary from GitHub when it
installs, which machines without internet (like the lab) cannot reach.

Exit codes: 0 every file parses; 1 at least one file has a syntax error; 2 could not check
(node/npm missing, the install failed, a path does not exist).

    scripts/check_powershell.py                      # every .ps1 under the repository
    scripts/check_powershell.py plugins/modules x.ps1 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Pinned: tree-sitter-powershell's peer dependency is tree-sitter ^0.25.
PACKAGES = {"tree-sitter": "0.25.1", "tree-sitter-powershell": "0.25.10"}
# One directory per set of pins, shared by every clone of the user.
DEFAULT_CACHE = (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tradeops" / "npm"
                 / "_".join(f"{p}-{v}" for p, v in sorted(PACKAGES.items())))
SKIP_DIRS = {".git", ".venv", ".cache", ".collections", "node_modules", "__pycache__"}
EXIT_OK, EXIT_ERRORS, EXIT_CANNOT_CHECK = 0, 1, 2

RUNNER = r"""
const Parser = require('tree-sitter');
const PowerShell = require('tree-sitter-powershell');
const fs = require('fs');
const parser = new Parser();
parser.setLanguage(PowerShell);
const out = [];
for (const file of JSON.parse(fs.readFileSync(0, 'utf8'))) {
  let text = fs.readFileSync(file, 'utf8');
  if (text.charCodeAt(0) === 0xFEFF) text = text.slice(1);
  const tree = parser.parse(text, null, { bufferSize: Math.max(32768, text.length * 4) });
  const errors = [];
  const walk = (node) => {
    if (node.type === 'ERROR' || node.isMissing) {
      errors.push({ kind: node.isMissing ? 'MISSING' : 'ERROR', type: node.type,
                    line: node.startPosition.row + 1, column: node.startPosition.column + 1,
                    text: node.text.split('\n')[0].slice(0, 80) });
      if (node.type === 'ERROR') return;  // one report per broken region
    }
    for (const child of node.children) walk(child);
  };
  walk(tree.rootNode);
  out.push({ file, errors });
}
process.stdout.write(JSON.stringify(out));
"""


class CannotCheck(Exception):
    """The parser could not be installed or run."""


def installed_version(cache: Path, package: str) -> str | None:
    try:
        return json.loads((cache / "node_modules" / package / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def parser_installed(prefix: Path) -> bool:
    return all(installed_version(prefix, p) == v for p, v in PACKAGES.items())


def ensure_parser(cache: Path) -> None:
    """Install the pinned packages into ``cache`` unless they are there already."""
    if parser_installed(cache):
        return
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise CannotCheck(
                f"{tool} is not installed: apt-get install nodejs npm (scripts/bootstrap.sh servers does)"
            )
    # Installed beside the cache and renamed into place: two clones checking at once never see a half install.
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
    cmd = [
        "npm",
        "install",
        "--prefix",
        str(staging),
        "--no-audit",
        "--no-fund",
        "--no-save",
        "--loglevel=error",
        *(f"{p}@{v}" for p, v in PACKAGES.items()),
    ]
    print(f"check_powershell: installing {' '.join(cmd[-2:])} into {cache}", file=sys.stderr)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        if proc.returncode != 0 or not parser_installed(staging):
            raise CannotCheck(f"npm install failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
        if cache.exists():  # an older or broken install of these pins
            shutil.rmtree(cache)
        try:
            staging.rename(cache)
        except OSError:  # another check installed it meanwhile
            if not parser_installed(cache):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def find_scripts(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
                found += [Path(dirpath) / f for f in sorted(filenames) if f.lower().endswith((".ps1", ".psm1"))]
        else:
            raise CannotCheck(f"{path} does not exist")
    return found


def parse(files: list[Path], cache: Path) -> list[dict]:
    if not files:
        return []
    # The runner is given on node's command line: no file to write into the cache every clone shares.
    proc = subprocess.run(
        ["node", "-e", RUNNER],
        input=json.dumps([str(f) for f in files]),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "NODE_PATH": str(cache / "node_modules")},
    )
    if proc.returncode != 0:
        raise CannotCheck(f"the parser failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Parse PowerShell scripts with tree-sitter-powershell and report every syntax error as "
        "file:line:column. Exit 0 all parse, 1 syntax errors found, 2 could not check."
    )
    parser.add_argument("paths", nargs="*", type=Path, help="files or directories (default: the repository)")
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help=f"npm install prefix (default {DEFAULT_CACHE})"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        files = find_scripts(args.paths or [ROOT])
        ensure_parser(args.cache)
        results = parse(files, args.cache)
    except (CannotCheck, subprocess.TimeoutExpired) as exc:
        print(f"check_powershell: could not check: {exc}", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    bad = [r for r in results if r["errors"]]
    if args.json:
        print(json.dumps({"files": len(results), "with_errors": len(bad), "results": results}, indent=2))
    else:
        for result in bad:
            for err in result["errors"]:
                print(f"{result['file']}:{err['line']}:{err['column']}: {err['kind']} {err['type']}: {err['text']}")
        print(f"check_powershell: {len(results)} file(s) parsed, {len(bad)} with syntax errors", file=sys.stderr)
    return EXIT_ERRORS if bad else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
