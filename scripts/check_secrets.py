#!/usr/bin/env python3
"""Secret scanner gate: detect-secrets (PyPI, offline) over the repository, against a baseline.

Every file git knows or would add (tracked, plus untracked files .gitignore does not exclude) is
scanned with detect-secrets' default plugins (AWS keys, private keys, high-entropy strings,
passwords in URLs and keywords, tokens of common services...). A finding that is not in the
committed baseline (``.secrets.baseline``, audited: placeholders and test credentials made up
for the unit tests) fails the gate. A directory that is not a git work tree has every file under
it scanned (what the unit test of this gate does with a planted key).

Findings are printed as ``file:line: type`` only: the secret itself never reaches the output.

Each file's findings are kept in ``.cache/security/secrets-scan.json`` under the file's SHA-256
(and the scanner's version and settings): a later run scans only the files that changed (make
lint runs it every time; a fresh clone scans everything). ``--no-cache`` scans every file.

Exit codes:
  0  no secret outside the baseline
  1  a secret that is not in the baseline (listed); remove it, or if it is not a real secret mark
     its line with a ``pragma: allowlist secret`` comment or run with --update-baseline and commit
     the baseline after auditing it
  2  could not check (detect-secrets missing, baseline unreadable, not a directory)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

BASELINE = ".secrets.baseline"
CACHE = ".cache/security/secrets-scan.json"
# Never scanned even outside git (tool caches and the controller's virtualenv: not ours).
SKIP_DIRS = {".git", ".venv", ".cache", ".collections", ".ansible", ".hypothesis", ".pytest_cache", ".ruff_cache",
             "__pycache__", "node_modules"}


def files_to_scan(root: Path, baseline: str) -> list[str]:
    """Paths relative to root: git's view when root is a work tree, else every file under it."""
    try:
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], capture_output=True, check=True).stdout
        inside = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-prefix"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        listed, inside = None, ""
    if listed is not None and inside == "":
        names = [name for name in listed.decode().split("\0") if name]
    else:
        names = []
        for directory, subdirs, files in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if d not in SKIP_DIRS)
            names += [os.path.relpath(os.path.join(directory, f), root) for f in sorted(files)]
    return sorted(name for name in set(names)
                  if name != baseline and name.split("/", 1)[0] not in SKIP_DIRS
                  and (root / name).is_file() and not (root / name).is_symlink())


def scan(root: Path, files: list[str], jobs: int, cache_path: Path | None) -> Any:
    """A SecretsCollection of every file; files whose content is in the cache are not rescanned."""
    from detect_secrets import SecretsCollection
    from detect_secrets.__version__ import VERSION
    from detect_secrets.core.potential_secret import PotentialSecret
    from detect_secrets.settings import get_settings

    settings = json.dumps(get_settings().json(), sort_keys=True)
    key = hashlib.sha256(f"{VERSION} {root} {settings}".encode()).hexdigest()
    cached: dict[str, Any] = {}
    if cache_path is not None and cache_path.exists():
        try:
            data = json.loads(cache_path.read_text())
            cached = data["files"] if data.get("key") == key else {}
        except (ValueError, KeyError, OSError):
            cached = {}  # a damaged cache is only a slower run
    digests = {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in files}
    stale = [name for name in files if cached.get(name, {}).get("sha256") != digests[name]]
    found = SecretsCollection(root=str(root))
    if stale:
        found.scan_files(*stale, num_processors=max(1, min(jobs, len(stale))))
    fresh = set(stale)
    entries: dict[str, Any] = {}
    for name in files:
        if name in fresh:
            secrets = [secret.json() for secret in found.data.get(name, ())]
        else:
            secrets = cached[name]["secrets"]
            for item in secrets:
                # as scanned (the same filename form as a fresh scan: baseline comparisons agree)
                found[name].add(PotentialSecret.load_secret_from_dict(item))
        entries[name] = {"sha256": digests[name], "secrets": secrets}
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "files": entries}))
        tmp.chmod(0o600)
        tmp.replace(cache_path)
    return found


def relative(filename: str, root: Path) -> str:
    """A finding's file relative to the scanned root (absolute filenames come from detect-secrets)."""
    return os.path.relpath(filename, root) if os.path.isabs(filename) else os.path.normpath(filename)


def portable_baseline(path: Path, root: Path) -> None:
    """The baseline with every path relative to root: the same file works in any clone."""
    doc = json.loads(path.read_text())
    for item in doc.get("filters_used", []):
        if "filename" in item:
            item["filename"] = relative(item["filename"], root)
    for secrets in doc.get("results", {}).values():
        for secret in secrets:
            secret["filename"] = relative(secret["filename"], root)
    doc["results"] = {relative(name, root): secrets for name, secrets in doc.get("results", {}).items()}
    path.write_text(json.dumps(doc, indent=2) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                        help="directory to scan (default: the repository)")
    parser.add_argument("--baseline", default=BASELINE,
                        help=f"audited findings, relative to --root (default: {BASELINE}); a missing file is an "
                             "empty baseline")
    parser.add_argument("--update-baseline", action="store_true",
                        help="write every current finding into the baseline (keeps audit marks); audit the diff "
                             "before committing it")
    parser.add_argument("--json", action="store_true", help="print the new findings as JSON (no secret values)")
    parser.add_argument("--no-cache", action="store_true", help=f"scan every file (ignore and keep no {CACHE})")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="scanner processes (default: cores)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from detect_secrets import SecretsCollection
        from detect_secrets.core import baseline as ds_baseline
        from detect_secrets.settings import default_settings
    except ImportError:
        print("check_secrets: detect-secrets is not installed: run `make venv` (pyproject's dev group)",
              file=sys.stderr)
        return 2
    root = args.root.resolve()
    if not root.is_dir():
        print(f"check_secrets: --root {root} is not a directory", file=sys.stderr)
        return 2
    baseline_path = root / args.baseline
    files = files_to_scan(root, args.baseline)
    with default_settings():
        known = SecretsCollection(root=str(root))
        if baseline_path.exists():
            try:
                known = ds_baseline.load(ds_baseline.load_from_file(str(baseline_path)), str(baseline_path))
            except (ValueError, KeyError, OSError) as exc:
                print(f"check_secrets: baseline {baseline_path} is unreadable ({exc}): regenerate it with "
                      "--update-baseline and audit it", file=sys.stderr)
                return 2
        found = scan(root, files, args.jobs, None if args.no_cache else root / CACHE)
        if args.update_baseline:
            found.merge(known)
            ds_baseline.save_to_file(found, str(baseline_path))
            portable_baseline(baseline_path, root)
            print(f"check_secrets: {sum(len(found[f]) for f in found.files)} finding(s) written to {baseline_path}"
                  f" from {len(files)} files: audit them before committing")
            return 0
        # Compared by (path relative to root, type, hash): detect-secrets stores absolute filenames in the
        # collections (and used to in the baseline), which would make a clone elsewhere see every audited
        # finding as new.
        audited = {(relative(secret.filename, root), secret.type, secret.secret_hash)
                   for name in known.files for secret in known[name]}
    rows = sorted({(relative(secret.filename, root), secret.line_number or 0, secret.type)
                   for name in found.files for secret in found[name]
                   if (relative(secret.filename, root), secret.type, secret.secret_hash) not in audited})
    if args.json:
        print(json.dumps([{"file": f, "line": n, "type": t} for f, n, t in rows], indent=2))
    if rows:
        if not args.json:
            for name, line, kind in rows:
                print(f"{name}:{line}: {kind}")
        print(f"check_secrets: {len(rows)} possible secret(s) in {len(files)} files scanned, not in the baseline "
              f"{args.baseline}. Remove real secrets (vault them: inventory/examples/production/README.md); for a "
              "made-up value add a `pragma: allowlist secret` comment on its line, or audit and run "
              "scripts/check_secrets.py --update-baseline", file=sys.stderr)
        return 1
    if not args.json:
        print(f"check_secrets: {len(files)} files scanned, no secret outside the baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
