# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host-side: write a set of rendered files (owner, group, mode) atomically, only those that
differ, then ``systemctl daemon-reload`` when a unit changed and enable units that are not.

One module call instead of a template task per file (each of which is a stat, and a file
or copy round trip) plus a systemd task per unit. Standard library only."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import stat
import subprocess
from dataclasses import dataclass
from typing import Any

try:
    from ansible.module_utils.tradeops_release import account_ids
    from ansible.module_utils.tradeops_safefs import Dir, UnsafePath
except ImportError:  # on a host without Ansible: the module_utils files side by side on sys.path
    from tradeops_release import account_ids  # type: ignore[no-redef]
    from tradeops_safefs import Dir, UnsafePath  # type: ignore[no-redef]

UNIT_DIRS = ("/etc/systemd/system/", "/lib/systemd/system/", "/usr/lib/systemd/system/", "/run/systemd/system/")
UNIT_NAME = re.compile(r"[A-Za-z0-9:_.@-]+\.(service|socket|timer|target|path|mount)")  # fullmatch
MODE = re.compile(r"0?[0-7]{3,4}")  # fullmatch: 0640, 640, 2750
SYSTEMCTL_TIMEOUT = 60


class FilesError(Exception):
    """Bad input or a failed write, with what to do."""


@dataclass(frozen=True)
class FileSpec:
    path: str
    content: str
    owner: str = "root"
    group: str = "root"
    mode: int = 0o644

    @property
    def data(self) -> bytes:
        return self.content.encode("utf-8")


def parse_files(items: list[dict[str, Any]]) -> list[FileSpec]:
    specs, seen = [], set()
    for index, item in enumerate(items or []):
        path = str(item.get("path") or "")
        where = f"files[{index}] ({path or 'no path'})"
        if not os.path.isabs(path) or os.path.normpath(path) != path:
            raise FilesError(f"{where}: path must be an absolute, normalised path")
        if path in seen:
            raise FilesError(f"{where}: {path} is given twice")
        seen.add(path)
        mode = item.get("mode") if item.get("mode") is not None else "0644"
        if not isinstance(mode, str):  # YAML reads an unquoted 0640 as the number 416 (written as 0o416)
            raise FilesError(f"{where}: mode {mode!r} is a {type(mode).__name__}, not a string: an unquoted 0640 "
                             "in YAML is the decimal number 416; quote it: mode: '0640'")
        if not MODE.fullmatch(mode):
            raise FilesError(f"{where}: mode {mode!r} is not octal, e.g. '0640'")
        mode_int = int(mode, 8)
        if item.get("content") is None:
            raise FilesError(f"{where}: content is required")
        specs.append(FileSpec(path, str(item["content"]), str(item.get("owner") or "root"),
                              str(item.get("group") or "root"), mode_int))
    return specs


def _ids(spec: FileSpec, check_mode: bool = False) -> tuple[int | None, int | None, list[str]]:
    """uid, gid and, in check mode only, the owner or group that does not exist yet (their id is None)."""
    return account_ids(spec.owner, spec.group, check_mode=check_mode, error=FilesError, where=f"{spec.path}: ")


def _open_checked(spec: FileSpec) -> tuple[int | None, str]:
    """A descriptor of the regular file at ``spec.path`` (None with why not: missing, not a regular file),
    reached without following a link: its directory opened by safefs.Dir, the file with O_NOFOLLOW."""
    directory, name = os.path.split(spec.path)
    try:
        with Dir.open(directory) as parent:
            if not stat.S_ISREG(parent.lstat(name).st_mode):
                return None, "not a regular file"
            fd = parent.open_file(name, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None, "missing"
    except UnsafePath as exc:
        raise FilesError(f"{spec.path}: {exc}") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # swapped for a link since the lstat
            return None, "not a regular file"
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None, "not a regular file"
    return fd, ""


def differences(spec: FileSpec, check_mode: bool = False) -> list[str]:
    """What differs between the file on disk and the spec: [] when it is already right. In check
    mode an owner or group that does not exist yet (an earlier task of the run would create it) is
    named among the differences instead of refused."""
    uid, gid, missing = _ids(spec, check_mode)
    fd, why = _open_checked(spec)
    if fd is None:
        return [why, *missing]
    out = []
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if hashlib.sha256(handle.read()).digest() != hashlib.sha256(spec.data).digest():
            out.append("content")
    if (st.st_uid, st.st_gid) != (uid, gid):
        out.append("owner")
    if stat.S_IMODE(st.st_mode) != spec.mode:
        out.append("mode")
    return out + missing


def write_atomically(spec: FileSpec) -> None:
    """A temporary file in the same directory, owner/mode set before its content lands,
    fsync'd, then renamed over the path: readers see the old file or the new one. The directory
    is opened without following a link (safefs.Dir) and every step works on it and on the
    temporary file's descriptor: a link put in the way is replaced, never written through."""
    uid, gid, _ = _ids(spec)
    directory, name = os.path.split(spec.path)
    try:
        parent = Dir.open(directory)
    except FileNotFoundError:
        raise FilesError(f"{spec.path}: directory {directory} does not exist (create it first)") from None
    except UnsafePath as exc:
        raise FilesError(f"{spec.path}: {exc}") from None
    with parent:
        tmp = f".{name}.{secrets.token_hex(4)}"
        fd = parent.open_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchown(handle.fileno(), uid, gid)
                os.fchmod(handle.fileno(), spec.mode)
                handle.write(spec.data)
                handle.flush()
                os.fsync(handle.fileno())
            parent.rename(tmp, parent, name)
        except BaseException:
            with contextlib.suppress(OSError):
                parent.unlink(tmp)
            raise


def fix_metadata(spec: FileSpec) -> None:
    """Owner and mode fixed on a descriptor of the file checked (O_NOFOLLOW); a file that is no longer
    a regular file (a link swapped in since the check) is replaced by the rendered one instead."""
    uid, gid, _ = _ids(spec)
    fd, _ = _open_checked(spec)
    if fd is None:
        write_atomically(spec)
        return
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, spec.mode)
    finally:
        os.close(fd)


def is_unit_file(path: str) -> bool:
    return path.startswith(UNIT_DIRS)


def systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT,
                          check=False)


def not_enabled(units: list[str]) -> list[str]:
    """Units whose ``systemctl is-enabled`` is not enabled (one call for all of them)."""
    if not units:
        return []
    proc = systemctl("is-enabled", *units)
    states = proc.stdout.split()
    if len(states) != len(units):  # an unknown unit makes systemctl print fewer lines
        states = [systemctl("is-enabled", u).stdout.strip() or "unknown" for u in units]
    return [u for u, s in zip(units, states, strict=True) if s not in ("enabled", "enabled-runtime", "static")]


def sync(items: list[dict[str, Any]], enable_units: list[str] | None = None, daemon_reload: str = "auto",
         check_mode: bool = False) -> dict[str, Any]:
    """Write what differs, reload systemd when a unit file changed (``auto``) or always
    (``always``) or never, enable what is not enabled. The result names paths, never content."""
    specs = parse_files(items)
    units = list(enable_units or [])
    bad = [u for u in units if not isinstance(u, str) or not UNIT_NAME.fullmatch(u)]
    if bad:
        raise FilesError(f"enable_units: {', '.join(map(repr, bad))} is not a unit name (e.g. refapp-web.service)")
    changes = {s.path: differences(s, check_mode) for s in specs}
    changed = [p for p, why in changes.items() if why]
    missing_dirs = sorted({os.path.dirname(p) for p in changed if not os.path.isdir(os.path.dirname(p))})
    if missing_dirs and not check_mode:  # refused before anything is written
        raise FilesError(f"directory {', '.join(missing_dirs)} does not exist (create it first)")
    for path in changed:  # check mode: made by an earlier task of the run (role app's release tree), or refused then
        if os.path.dirname(path) in missing_dirs:
            changes[path].append(f"directory {os.path.dirname(path)} does not exist yet")
    reload_needed = daemon_reload == "always" or (daemon_reload == "auto" and any(is_unit_file(p) for p in changed))
    if not check_mode:
        for spec in specs:
            why = set(changes[spec.path])
            if why - {"owner", "mode"}:  # missing, content, not a regular file
                write_atomically(spec)
            elif why:
                fix_metadata(spec)
        if reload_needed:
            proc = systemctl("daemon-reload")
            if proc.returncode != 0:
                raise FilesError(f"systemctl daemon-reload failed: {proc.stderr.strip() or proc.stdout.strip()}")
    # In check mode a unit written by this very call is not known to systemd yet: report it to enable.
    to_enable = not_enabled(units) if not (check_mode and reload_needed) else units
    if to_enable and not check_mode:
        proc = systemctl("enable", *to_enable)
        if proc.returncode != 0:
            raise FilesError(f"systemctl enable {' '.join(to_enable)} failed: "
                             f"{proc.stderr.strip() or proc.stdout.strip()}")
    return {
        "changed": bool(changed or to_enable or (reload_needed and daemon_reload == "always")),
        "changed_files": changed,
        "reasons": {p: why for p, why in changes.items() if why},
        "daemon_reloaded": reload_needed and not check_mode,
        "enabled": to_enable,
        "diff": {"before": "".join(f"{p}: {', '.join(changes[p])}\n" for p in changed),
                 "after": "".join(f"{p}: as rendered\n" for p in changed)},
    }
