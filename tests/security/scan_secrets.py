#!/usr/bin/env python3
"""Find the files of a host that hold a secret, with their mode and owner (run ON the lab host).

Reads a JSON document on standard input, never from the command line (the secrets must not show
in a process list or a log):

    {"secrets": {"<variable>": "<value>", ...}, "roots": ["/etc", "/opt", ...], "max_bytes": 67108864}

and walks every regular file under the roots (symbolic links are not followed; /proc, /sys and /dev
are never entered). A file holds a secret when its content contains one of the values, or a PEM
private key (outside Python packages' site-packages/dist-packages: their keys are published ones).
Prints one JSON document: {"files": [{"path", "mode", "owner", "group", "uid", "holds",
"group_members": {account: uid}}], "scanned": N, "unreadable": [...]}; ``holds`` names the
variables (or "PEM private key"), never a value.

Standard library only (the hosts' /usr/bin/python3). Exit codes: 0 scanned; 2 bad input.
"""
from __future__ import annotations

import argparse
import grp
import json
import os
import pwd
import stat
import sys
from typing import Any

NEVER = ("/proc", "/sys", "/dev")
PEM_KEY = b"PRIVATE KEY-----"
PEM = "PEM private key"
LIBRARY_DIRS = ("/site-packages/", "/dist-packages/")


def name_of(lookup: Any, ident: int) -> str:
    try:
        return str(lookup(ident)[0])
    except KeyError:
        return str(ident)


def group_members(gid: int) -> list[str]:
    """Every account in a group: its listed members and the accounts whose primary group it is."""
    try:
        members = set(grp.getgrgid(gid).gr_mem)
    except KeyError:
        members = set()
    members |= {p.pw_name for p in pwd.getpwall() if p.pw_gid == gid}
    return sorted(members)


def uid_of(name: str) -> int:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return -1


def holds(data: bytes, needles: dict[str, bytes], path: str = "") -> list[str]:
    """Names of the secrets (and PEM) found in data. PEM keys inside Python packages are the libraries'
    own test and example keys (moto's proxy CA, botocore's examples), public by publication."""
    found = sorted(name for name, value in needles.items() if value in data)
    if PEM_KEY in data and not any(part in path for part in LIBRARY_DIRS):
        found.append(PEM)
    return found


def scan(secrets: dict[str, str], roots: list[str], max_bytes: int) -> dict[str, Any]:
    # Values shorter than 8 characters would match by chance (and are no secrets worth the name).
    needles = {name: value.encode() for name, value in secrets.items() if len(value) >= 8}
    files: list[dict[str, Any]] = []
    unreadable: list[str] = []
    scanned = 0
    for root in roots:
        for directory, subdirs, names in os.walk(root):
            subdirs[:] = [d for d in subdirs if os.path.join(directory, d) not in NEVER]
            for name in names:
                path = os.path.join(directory, name)
                try:
                    st = os.lstat(path)
                    if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
                        continue
                    with open(path, "rb") as f:
                        data = f.read()
                except OSError:
                    unreadable.append(path)
                    continue
                scanned += 1
                found = holds(data, needles, path)
                if found:
                    files.append({"path": path, "mode": f"{stat.S_IMODE(st.st_mode):04o}", "uid": st.st_uid,
                                  "owner": name_of(pwd.getpwuid, st.st_uid),
                                  "group": name_of(grp.getgrgid, st.st_gid), "holds": found,
                                  "group_members": {m: uid_of(m) for m in group_members(st.st_gid)}})
    return {"files": files, "scanned": scanned, "unreadable": unreadable}


def main() -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    try:
        doc = json.load(sys.stdin)
        secrets, roots = dict(doc["secrets"]), list(doc["roots"])
        max_bytes = int(doc.get("max_bytes", 64 << 20))
    except (ValueError, KeyError, TypeError) as exc:
        print(f"scan_secrets: standard input must be the JSON document of --help ({exc})", file=sys.stderr)
        return 2
    json.dump(scan(secrets, roots, max_bytes), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
