#!/usr/bin/env python3
"""Print the collections of requirements.yml that are not installed (space separated).

Uses `ansible-galaxy collection list --format json`, which sees the collections
bundled with the `ansible` package and those under ./.collections.
Exit 0 always when the check ran; 3 when it could not run.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml


def required(path: Path) -> list[str]:
    data = yaml.safe_load(path.read_text()) or {}
    return [c["name"] if isinstance(c, dict) else str(c) for c in data.get("collections", [])]


def installed(galaxy: str) -> set[str]:
    out = subprocess.run([galaxy, "collection", "list", "--format", "json"],
                         check=True, capture_output=True, text=True).stdout
    names: set[str] = set()
    for collections in json.loads(out).values():
        names.update(collections)
    return names


def main() -> int:
    req = Path(sys.argv[1])
    galaxy = str(Path(sys.executable).with_name("ansible-galaxy"))
    try:
        have = installed(galaxy)
    except (OSError, subprocess.CalledProcessError, ValueError) as exc:
        print(f"collections_missing: cannot list collections: {exc}", file=sys.stderr)
        return 3
    print(" ".join(n for n in required(req) if n not in have))
    return 0


if __name__ == "__main__":
    sys.exit(main())
