# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host-side release store of tradeops: releases, shared paths, ``current``, ledger and lock.

Pure Python standard library, so the same code runs inside the ``app_release`` module and
as a command on the host. Layout under ``path`` (e.g. ``/opt/refapp``)::

    releases/<version>-<UTC YYYYmmddTHHMMSSZ>/   venv/ + release.json + shared links
    shared/{data,logs,config}                      survives releases
    deps/<sha256>/                                 dependency layer shared by releases
    wheelhouses/<build>/                           wheelhouses shipped by the controller
    current -> releases/<id>                       switched with rename(2)
    ledger.jsonl                                   one JSON line per action
    deploy.lock                                    holder of the deploy lock

Release order comes from the ledger (order of ``create`` lines), never from mtimes.
Every function that changes the disk takes ``check_mode`` and only reports when it is set.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import csv
import email.parser
import errno
import getpass
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

try:
    from ansible.module_utils.tradeops_checks import number
except ImportError:
    try:  # in the ops agent wheel: tradeops_agent/checks.py (scripts/build_agent.py)
        from tradeops_agent.checks import number  # type: ignore[no-redef]
    except ImportError:  # on a host without Ansible, or run as a file: the module_utils side by side
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from tradeops_checks import number  # type: ignore[no-redef]

RELEASES_DIR = "releases"
SHARED_DIR = "shared"
DEPS_DIR = "deps"
WHEELHOUSES_DIR = "wheelhouses"
CURRENT_LINK = "current"
LEDGER_NAME = "ledger.jsonl"
LOCK_NAME = "deploy.lock"
MANIFEST_NAME = "wheelhouse.json"
RELEASE_META = "release.json"
VENV_DIR = "venv"
DEPS_PTH = "_tradeops_deps.pth"
SHARED_SUBDIRS = ("data", "logs", "config")
DEFAULT_SHARED_LINKS = {"data": "data", "logs": "logs", "config": "config"}
DEFAULT_PYTHON = "/usr/bin/python3"
DEFAULT_KEEP = 5
DEFAULT_STALE_AFTER = 1800
LATEST_EPOCH = 253402300799  # 9999-12-31T23:59:59Z, the last second utc_iso can write
UNREADABLE_LOCK = "unreadable lock file"
PARTIAL_MAX_AGE = 600  # seconds before prune removes leftovers of an interrupted create
PIP_TIMEOUT = 900

VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]{0,99}\Z")
# A PEP 508 requirement with no URL, path or pip option: a name, extras, version clauses, a marker.
REQUIREMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?\s*([<>=!~]=?[^;@/\\\s]*)?"
                            r"\s*(;[^@\n]*)?\Z")
SCRIPT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}\Z")
STAMP_RE = r"\d{8}T\d{6}Z"
RELEASE_ID_RE = re.compile(rf"^(?P<version>[A-Za-z0-9][A-Za-z0-9._+!-]*)-(?P<stamp>{STAMP_RE})\Z")
WHEEL_RE = re.compile(
    r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-(?P<build>\d[^-]*))?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl\Z"
)
STATUSES = ("good", "bad", "unknown")


class ReleaseError(Exception):
    """A failure the user can act on. ``str()`` says what went wrong and what to do;
    ``details`` are returned next to the message (e.g. the candidates, the lock holder)."""

    def __init__(self, msg: str, **details: Any) -> None:
        super().__init__(msg)
        self.details = details


# --------------------------------------------------------------------------- helpers


def utc_stamp(epoch: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def utc_iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def stamp_epoch(stamp: str) -> float:
    import calendar

    return float(calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ")))


def normalize_name(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_actor() -> str:
    """Who acts: the sudo caller when there is one, else the login name."""
    for var in ("SUDO_USER", "TRADEOPS_ACTOR"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_relative(value: str, what: str) -> str:
    if not isinstance(value, str) or "\0" in value:
        raise ReleaseError(f"{what} {value!r} must be a relative path (a string) inside the tree, without '..'")
    norm = os.path.normpath(value)
    if not value or os.path.isabs(value) or norm.startswith("..") or norm in (".", ""):
        raise ReleaseError(f"{what} {value!r} must be a relative path inside the tree, without '..'")
    return norm


def check_console_script(name: Any, what: str) -> str:
    """A program's file name under a release's venv/bin: no path, no option."""
    if not isinstance(name, str) or not SCRIPT_RE.match(name):
        raise ReleaseError(f"{what} = {name!r}: give the name of a program in the release's venv/bin (e.g. "
                           "gunicorn), not a path")
    return name


def check_requirements(requirements: Iterable[str] | None, what: str = "requirements") -> list[str]:
    """Requirement specifiers given beside the app's own (its server: gunicorn, uvicorn), each one a
    name with optional extras, versions and marker: never a URL, a path or a pip option."""
    checked = []
    for req in requirements or []:
        if not isinstance(req, str) or not REQUIREMENT_RE.match(req):
            raise ReleaseError(f"{what}: {req!r} is not a requirement specifier; give a distribution name with an "
                               "optional version, e.g. 'gunicorn>=22,<24' (no URL, path or pip option)")
        checked.append(req)
    return checked


def validate_version(version: str | None) -> str:
    if not version or not VERSION_RE.match(version):
        raise ReleaseError(
            f"version {version!r} is not usable as a release name: use letters, digits and . _ + ! - "
            "(at most 100 characters, starting with a letter or digit), e.g. -e app_version=1.4.2"
        )
    return version


def run_command(cmd: list[str], what: str, *, env: dict[str, str] | None = None, timeout: int = 300) -> str:
    """Run a command without a shell; raise ReleaseError with the tail of its output on failure."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise ReleaseError(f"{what}: {cmd[0]} not found ({exc.strerror})") from exc
    except subprocess.TimeoutExpired as exc:
        raise ReleaseError(f"{what}: timed out after {timeout} s: {' '.join(cmd)}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
        raise ReleaseError(f"{what} failed (exit {proc.returncode}): {tail}", command=cmd)
    return proc.stdout


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def account_ids(owner: str | None, group: str | None, *, check_mode: bool = False,
                error: type[Exception] = ReleaseError, where: str = "") -> tuple[int | None, int | None, list[str]]:
    """uid and gid of an owner and a group name (-1 for one not given: left as it is).

    A name this host does not know is an error (``error``, prefixed with ``where``) that says what
    to do. Except in check mode: there the run's own earlier tasks, which only report, would have
    created the account (role app's user and group tasks before its tree and files), so its id is
    None (no file is owned by it: it differs) and it is named in the list returned, e.g.
    ``["owner 'refapp' does not exist yet"]``. The one place tradeops resolves an owner."""
    import grp
    import pwd

    ids: list[int | None] = []
    pending: list[str] = []
    for kind, name, lookup, account in (("owner", owner, pwd.getpwnam, "user"),
                                        ("group", group, grp.getgrnam, "group")):
        if name is None:
            ids.append(-1)
            continue
        if not isinstance(name, str) or not name or any(c in name for c in "\0\n:"):
            raise error(f"{where}{kind} {name!r} is not a valid {account} name")
        try:
            ids.append(lookup(name)[2])
        except KeyError:
            if not check_mode:
                raise error(f"{where}{kind} {name!r} does not exist on this host; "
                            f"create the app {account} first") from None
            ids.append(None)
            pending.append(f"{kind} {name!r} does not exist yet")
    return ids[0], ids[1], pending


def _chown(path: str, owner: str | None, group: str | None, dry_run: bool = False) -> bool:
    """lchown to owner/group names when they differ; True when something changed (or would:
    ``dry_run``, where an account that does not exist yet counts as a difference)."""
    if owner is None and group is None:
        return False
    uid, gid, _ = account_ids(owner, group, check_mode=dry_run)
    st = os.lstat(path)
    if (uid in (-1, st.st_uid)) and (gid in (-1, st.st_gid)):
        return False
    if not dry_run:
        assert uid is not None and gid is not None  # unknown names raised above
        os.lchown(path, uid, gid)
    return True


def make_read_only(root: str, group: str | None = None) -> None:
    """Strip group/other write bits in a tree (the app user may read, never write) and
    give it to ``group`` when set. Symlinks are left alone."""
    entries = [root]
    for base, dirs, files in os.walk(root):
        entries.extend(os.path.join(base, name) for name in dirs + files)
    for entry in entries:
        st = os.lstat(entry)
        if stat.S_ISLNK(st.st_mode):
            continue
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o022:
            os.chmod(entry, mode & ~0o022)
        if group is not None:
            _chown(entry, None, group)


# --------------------------------------------------------------------------- wheelhouse


@dataclass
class Wheelhouse:
    path: str
    package: str
    app_wheel: str
    app_version: str
    dep_wheels: list[str]
    hashes: dict[str, str]  # file name -> sha256
    sha256: str  # of the whole set (names and contents)


def parse_wheel_name(filename: str) -> tuple[str, str] | None:
    match = WHEEL_RE.match(filename)
    if not match:
        return None
    return match.group("name"), match.group("version")


def set_digest(hashes: dict[str, str], extra: Iterable[str] = ()) -> str:
    digest = hashlib.sha256()
    for name in sorted(hashes):
        digest.update(f"{name} {hashes[name]}\n".encode())
    for line in extra:
        digest.update(f"{line}\n".encode())
    return digest.hexdigest()


def scan_wheelhouse(wheelhouse: str, package: str | None, version: str | None = None) -> Wheelhouse:
    """Find the app wheel of ``package`` (default: the ``name`` in wheelhouse.json) and the
    dependency wheels; checksum the set (sha256 of the sorted "name sha256" lines, the same
    checksum the controller's wheelhouse.json carries)."""
    if not os.path.isdir(wheelhouse):
        raise ReleaseError(
            f"wheelhouse {wheelhouse} is not a directory on this host; copy the wheelhouse built on the "
            "controller (app wheel + dependency wheels) there first"
        )
    wheels = sorted(name for name in os.listdir(wheelhouse) if name.endswith(".whl"))
    if not wheels:
        raise ReleaseError(f"wheelhouse {wheelhouse} holds no .whl file; build it with 'pip wheel -w DIR SOURCE'")
    hashes = {name: sha256_file(os.path.join(wheelhouse, name)) for name in wheels}
    manifest = verify_manifest(wheelhouse, hashes)
    if not package:
        package = (manifest or {}).get("name")
        if not package:
            raise ReleaseError(f"set package= (the app's distribution name): {wheelhouse} has no {MANIFEST_NAME}")
    built_for = (manifest or {}).get("version")
    if built_for and version and str(built_for) != version:
        raise ReleaseError(
            f"wheelhouse {wheelhouse} was built for version {built_for}, not {version}; deploy {built_for} "
            f"or build the wheelhouse of {version}"
        )
    want = normalize_name(package)
    apps: list[tuple[str, str]] = []
    for name in wheels:
        parsed = parse_wheel_name(name)
        if parsed and normalize_name(parsed[0]) == want:
            apps.append((name, parsed[1]))
    if not apps:
        raise ReleaseError(
            f"no wheel of package {package!r} in wheelhouse {wheelhouse} (found: {', '.join(wheels)}); "
            "set package= to the distribution name of the app (its [project] name)"
        )
    if len(apps) > 1:
        chosen = [a for a in apps if version is not None and a[1] in (version, version.lstrip("vV"))]
        if len(chosen) != 1:
            raise ReleaseError(
                f"wheelhouse {wheelhouse} holds {len(apps)} wheels of {package} "
                f"({', '.join(a[0] for a in apps)}) and none matches version {version!r}; "
                "keep one app wheel per wheelhouse"
            )
        apps = chosen
    app_name = apps[0][0]
    return Wheelhouse(
        path=wheelhouse,
        package=package,
        app_wheel=os.path.join(wheelhouse, app_name),
        app_version=apps[0][1],
        dep_wheels=[os.path.join(wheelhouse, n) for n in wheels if n != app_name],
        hashes=hashes,
        sha256=set_digest(hashes),
    )


def wheel_content_digest(wheel: str) -> str:
    """sha256 of a wheel's RECORD (the hash of every file in it), sorted: equal for the same
    contents whatever the zip timestamps, so a dependency wheel rebuilt from the same sdist
    keys the same dependency layer."""
    with zipfile.ZipFile(wheel) as archive:
        records = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/RECORD")]
        if len(records) != 1:
            raise ReleaseError(f"{wheel} is not a valid wheel: expected one *.dist-info/RECORD")
        lines = sorted(
            line.strip() for line in archive.read(records[0]).decode("utf-8").splitlines()
            if line.strip() and not line.startswith(records[0] + ",")
        )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def verify_manifest(wheelhouse: str, hashes: dict[str, str]) -> dict[str, Any] | None:
    """When the wheelhouse carries the controller's ``wheelhouse.json``, its files and checksums
    must be exactly what is on disk (a partial or corrupt copy is refused)."""
    path = os.path.join(wheelhouse, MANIFEST_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
        files = dict(manifest.get("files") or {})
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ReleaseError(f"{path} is unreadable ({exc}); copy the wheelhouse from the controller again") from exc
    missing = sorted(set(files) - set(hashes))
    differ = sorted(n for n in files if n in hashes and hashes[n] != files[n])
    extra = sorted(set(hashes) - set(files))
    if missing or differ or extra:
        raise ReleaseError(
            f"wheelhouse {wheelhouse} does not match its {MANIFEST_NAME}: missing {missing or 'none'}, "
            f"different {differ or 'none'}, unlisted {extra or 'none'}; copy it from the controller again"
        )
    return manifest


def read_wheel_requires(wheel: str) -> tuple[str, str, list[str]]:
    """(name, version, Requires-Dist lines) from a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        metas = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        if len(metas) != 1:
            raise ReleaseError(f"{wheel} is not a valid wheel: expected one *.dist-info/METADATA")
        message = email.parser.Parser().parsestr(archive.read(metas[0]).decode("utf-8"))
    return message["Name"], message["Version"], sorted(message.get_all("Requires-Dist") or [])


# --------------------------------------------------------------------------- python, pip, venv

_PY_INFO = r"""
import json, platform, sys, sysconfig
m = "/__TRADEOPS_VENV__"
keys = ("base", "platbase", "installed_base", "installed_platbase", "userbase")
scheme = "venv" if "venv" in sysconfig.get_scheme_names() else "posix_prefix"
paths = sysconfig.get_paths(scheme, vars=dict.fromkeys(keys, m))
print(json.dumps({
    "version": "%d.%d.%d" % sys.version_info[:3],
    "cache_tag": sys.implementation.cache_tag,
    "machine": platform.machine(),
    "soabi": sysconfig.get_config_var("SOABI") or "",
    "venv_paths": {k: v[len(m) + 1:] for k, v in paths.items() if v.startswith(m + "/")},
}))
"""


def python_info(python: str) -> dict[str, Any]:
    """Version, ABI and venv layout of the interpreter used for release virtualenvs."""
    if not os.path.isfile(python) or not os.access(python, os.X_OK):
        raise ReleaseError(
            f"python interpreter {python} not found on this host; set python= to an installed "
            "interpreter (Debian: apt install python3 python3-venv)"
        )
    out = run_command([python, "-I", "-c", _PY_INFO], f"querying {python}", timeout=60)
    info = json.loads(out)
    info["tag"] = f"{info['cache_tag']}-{info['soabi']}-{info['machine']}"
    return info


def python_version(python: str) -> str:
    """X.Y.Z of the interpreter release virtualenvs are made with ("" when it is not installed), the
    controller's wheelhouse is resolved for it. The module's own interpreter when it is that one, so the
    usual case costs no process; another one is asked by ``python_info``."""
    if not os.path.isfile(python) or not os.access(python, os.X_OK):
        return ""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        return ".".join(str(n) for n in sys.version_info[:3])
    return python_info(python)["version"]


def account_state(owner: str, group: str, account: dict[str, Any]) -> tuple[bool, bool]:
    """(the owner and group exist, and the owner is as role app's user task makes it): its primary group
    is ``group`` and its shell, home and comment are ``account``'s (those given). Read only: the role
    skips its group and user tasks when both are true, and runs them (Ansible's own modules) otherwise."""
    import grp
    import pwd

    try:
        gid = grp.getgrnam(group).gr_gid
        user = pwd.getpwnam(owner)
    except KeyError:
        return False, False
    actual = {"shell": user.pw_shell, "home": user.pw_dir, "comment": user.pw_gecos}
    same = user.pw_gid == gid and all(account.get(k) is None or account[k] == v for k, v in actual.items())
    return True, same


def find_pip(python: str, wheelhouse: str | None = None) -> list[str]:
    """Command prefix running pip with ``python``: its own pip, else a pip wheel (pip runs
    from a wheel file): one in the wheelhouse, Debian's python3-pip-whl, ensurepip's."""
    probe = subprocess.run([python, "-I", "-c", "import pip"], capture_output=True, check=False)
    if probe.returncode == 0:
        return [python, "-I", "-m", "pip"]
    candidates: list[str] = []
    if wheelhouse and os.path.isdir(wheelhouse):
        candidates += [os.path.join(wheelhouse, n) for n in os.listdir(wheelhouse) if n.startswith("pip-")]
    for directory in ("/usr/share/python-wheels",):
        if os.path.isdir(directory):
            candidates += [os.path.join(directory, n) for n in os.listdir(directory) if n.startswith("pip-")]
    out = subprocess.run(
        [python, "-I", "-c", "import ensurepip, os; print(os.path.dirname(ensurepip.__file__))"],
        capture_output=True,
        text=True,
        check=False,
    )
    bundled = os.path.join(out.stdout.strip(), "_bundled")
    if out.returncode == 0 and os.path.isdir(bundled):
        candidates += [os.path.join(bundled, n) for n in os.listdir(bundled) if n.startswith("pip-")]
    candidates = sorted(c for c in candidates if c.endswith(".whl"))
    if candidates:
        return [python, "-I", os.path.join(candidates[-1], "pip")]
    raise ReleaseError(
        f"pip is needed to build a new dependency layer but {python} has none; install python3-pip "
        "(or python3-venv) on the host, or add a pip wheel to the wheelhouse"
    )


def pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        PIP_NO_CACHE_DIR="1",
        PIP_ROOT_USER_ACTION="ignore",
    )
    return env


def create_venv(python: str, dest: str) -> None:
    run_command(
        [python, "-I", "-m", "venv", "--without-pip", dest],
        f"creating the virtualenv {dest} (Debian: apt install python3-venv)",
        timeout=120,
    )


def relocate_venv(venv: str, final_venv: str) -> None:
    """A venv built under a temporary name: rewrite the temporary path in its text files
    (activate scripts, pyvenv.cfg, shebangs) to the final one."""
    old, new = venv.encode(), final_venv.encode()
    bindir = os.path.join(venv, "bin")
    files = [os.path.join(venv, "pyvenv.cfg")]
    if os.path.isdir(bindir):
        files += [os.path.join(bindir, n) for n in os.listdir(bindir)]
    for name in files:
        if os.path.islink(name) or not os.path.isfile(name):
            continue
        with open(name, "rb") as handle:
            data = handle.read()
        if old in data and b"\0" not in data[:4096]:
            mode = stat.S_IMODE(os.stat(name).st_mode)
            with open(name, "wb") as handle:
                handle.write(data.replace(old, new))
            os.chmod(name, mode)


# --------------------------------------------------------------------------- wheel installer


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def shebang(python: str) -> str:
    if len(python) <= 127 and " " not in python:
        return f"#!{python}\n"
    return f"#!/bin/sh\n'''exec' \"{python}\" \"$0\" \"$@\"\n' '''\n"


SCRIPT_TEMPLATE = """# -*- coding: utf-8 -*-
import re
import sys
from {module} import {head}
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit({call}())
"""


def entry_point_scripts(text: str, python: str) -> dict[str, str]:
    """console_scripts / gui_scripts of an entry_points.txt -> {script name: content}."""
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    scripts: dict[str, str] = {}
    for section in ("console_scripts", "gui_scripts"):
        if not parser.has_section(section):
            continue
        for name, value in parser.items(section):
            target = value.split("[", 1)[0].strip()
            module, _, attr = target.partition(":")
            if not module or not attr or "/" in name or name.strip() in ("", ".", ".."):
                continue
            head = attr.split(".")[0]
            scripts[name.strip()] = shebang(python) + SCRIPT_TEMPLATE.format(
                module=module.strip(), head=head, call=attr.strip()
            )
    return scripts


def _write_file(path: str, data: bytes, mode: int) -> None:
    """Write a file of a release being built: never through a link already there (a fresh venv's
    bin/python* point at the system's interpreter)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ReleaseError(f"refusing to write {path}: it is a symbolic link (of the venv: a wheel file or "
                               "script of that name would replace its interpreter); rename it in the wheel") from None
        raise
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        os.fchmod(handle.fileno(), mode)


def install_wheel(wheel: str, scheme: dict[str, str], python: str) -> list[str]:
    """Install one wheel (no dependencies) into ``scheme`` (purelib, platlib, scripts, data,
    headers directories), as pip would: RECORD hashes verified, ``.data`` directories mapped,
    console scripts written with ``python`` in the shebang, INSTALLER and a new RECORD.

    Returns the installed files. This is what replaces a second pip run per release (pip's
    start-up alone costs about a second); anything it does not understand raises ReleaseError.
    """
    installed: list[str] = []
    records: list[tuple[str, str, int]] = []
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_infos = {n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")}
        if len(dist_infos) != 1:
            raise ReleaseError(f"{wheel} is not a valid wheel: expected exactly one .dist-info directory")
        dist_info = dist_infos.pop()
        data_dir = dist_info[: -len(".dist-info")] + ".data"
        wheel_meta = email.parser.Parser().parsestr(archive.read(f"{dist_info}/WHEEL").decode("utf-8"))
        if not str(wheel_meta.get("Wheel-Version", "1.0")).startswith("1."):
            raise ReleaseError(f"{wheel}: unsupported Wheel-Version {wheel_meta.get('Wheel-Version')}")
        purelib = str(wheel_meta.get("Root-Is-Purelib", "true")).strip().lower() == "true"
        root = scheme["purelib"] if purelib else scheme["platlib"]
        expected: dict[str, str] = {}
        for row in csv.reader(io.StringIO(archive.read(f"{dist_info}/RECORD").decode("utf-8"))):
            if row and len(row) >= 2 and row[1]:
                expected[row[0]] = row[1]
        for info in archive.infolist():
            name = info.filename
            if name.endswith("/"):
                continue
            if name.startswith("/") or ".." in name.split("/") or "\\" in name or "\0" in name:
                raise ReleaseError(f"{wheel}: refusing unsafe path {name!r} in the wheel")
            if name == f"{dist_info}/RECORD" or name.startswith(f"{dist_info}/RECORD."):
                continue
            data = archive.read(info)
            if name in expected:
                algo, _, _value = expected[name].partition("=")
                if algo != "sha256":
                    raise ReleaseError(f"{wheel}: unsupported hash {algo} in RECORD for {name}")
                if _record_hash(data) != expected[name]:
                    raise ReleaseError(f"{wheel}: {name} does not match its RECORD hash; rebuild the wheel")
            elif not name.startswith(f"{dist_info}/"):
                raise ReleaseError(f"{wheel}: {name} is not listed in RECORD; rebuild the wheel")
            mode = 0o755 if (info.external_attr >> 16) & 0o111 else 0o644
            if name.startswith(data_dir + "/"):
                _, key, rest = name.split("/", 2)
                if key not in scheme:
                    raise ReleaseError(f"{wheel}: unknown data directory {key!r}")
                target = os.path.join(scheme[key], rest)
                if key == "scripts":
                    mode = 0o755
                    if data.startswith(b"#!python"):
                        data = shebang(python).encode() + data.split(b"\n", 1)[1]
            else:
                target = os.path.join(root, name)
            _write_file(target, data, mode)
            installed.append(target)
            records.append((os.path.relpath(target, root), _record_hash(data), len(data)))
        ep_name = f"{dist_info}/entry_points.txt"
        scripts = entry_point_scripts(archive.read(ep_name).decode("utf-8"), python) if ep_name in names else {}
    for script, content in scripts.items():
        target = os.path.join(scheme["scripts"], script)
        _write_file(target, content.encode(), 0o755)
        installed.append(target)
        records.append((os.path.relpath(target, root), _record_hash(content.encode()), len(content.encode())))
    installer = os.path.join(root, dist_info, "INSTALLER")
    _write_file(installer, b"tradeops\n", 0o644)
    records.append((os.path.relpath(installer, root), _record_hash(b"tradeops\n"), 9))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in records:
        writer.writerow(row)
    writer.writerow((f"{dist_info}/RECORD", "", ""))
    _write_file(os.path.join(root, dist_info, "RECORD"), out.getvalue().encode(), 0o644)
    return installed


def layer_scripts(layer: str, python: str) -> dict[str, str]:
    """Console scripts of every distribution in a dependency layer, for a release venv."""
    scripts: dict[str, str] = {}
    for name in sorted(os.listdir(layer)):
        ep = os.path.join(layer, name, "entry_points.txt")
        if name.endswith(".dist-info") and os.path.isfile(ep):
            with open(ep, encoding="utf-8") as handle:
                scripts.update(entry_point_scripts(handle.read(), python))
    return scripts


# --------------------------------------------------------------------------- ledger and lock


def append_jsonl(path: str, entry: dict[str, Any], mode: int = 0o640) -> None:
    """Append one JSON line with a single write(2) on an O_APPEND descriptor, then fsync. A file whose
    last line was cut (a kill, a full disk: no newline at its end) gets the newline first, in the same
    write, so the new entry is a line of its own and the cut one alone is unreadable."""
    line = (json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, mode)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse_line(line: str) -> tuple[Any, bool]:
    """A JSON line, and whether it had to be recovered: a line cut by a kill with the next entry appended
    to it (before append_jsonl started a new line after a cut one) holds that entry at its end."""
    try:
        return json.loads(line), False
    except ValueError:
        text = line.rstrip()
        decoder = json.JSONDecoder()
        start = text.find("{", 1)
        while start != -1:
            with contextlib.suppress(ValueError):
                item, end = decoder.raw_decode(text, start)
                if end == len(text) and isinstance(item, dict):
                    return item, True
            start = text.find("{", start + 1)
        raise


def read_jsonl(path: str, check: Callable[[dict[str, Any]], str | None] | None = None
               ) -> tuple[list[dict[str, Any]], list[str]]:
    """Entries of a JSON-lines file and what was wrong with the others, by line number: a line cut by a
    kill (an entry appended to it is recovered), a line that is not an object, or one ``check`` refuses
    (it returns why)."""
    entries: list[dict[str, Any]] = []
    problems: list[str] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for number_, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    item, recovered = _parse_line(line)
                except ValueError:
                    problems.append(f"line {number_}: not valid JSON (cut by a kill?)")
                    continue
                if recovered:
                    problems.append(f"line {number_}: cut by a kill before the entry that follows on it")
                why = "not a JSON object" if not isinstance(item, dict) else check(item) if check else None
                if why:
                    problems.append(f"line {number_}: {why}")
                    continue
                entries.append(item)
    except FileNotFoundError:
        pass
    return entries, problems


LEDGER_TEXT_FIELDS = ("time", "action", "user", "host", "version", "release", "wheelhouse_sha256", "outcome",
                      "reason", "previous")


def ledger_problem(entry: dict[str, Any]) -> str | None:
    """Why a ledger entry cannot be used (a field of the wrong JSON type), None when it can."""
    for key in LEDGER_TEXT_FIELDS:
        if entry.get(key) is not None and not isinstance(entry[key], str):
            return f"field {key!r} must be a string or null, got {type(entry[key]).__name__}; line skipped"
    return None


@dataclass
class LockInfo:
    owner: str
    host: str
    pid: int | None
    time: str
    epoch: float
    reason: str | None

    def describe(self, now: float) -> str:
        pid = f" pid {self.pid}" if self.pid else ""
        why = f", reason: {self.reason}" if self.reason else ""
        return f"{self.owner}@{self.host}{pid} since {self.time} ({int(now - self.epoch)} s ago{why})"


def read_lock(path: str) -> LockInfo | None:
    """The holder of a lock file, None when there is no lock. An unreadable lock file is
    reported with owner 'unknown' and its mtime, so that it shows up as stale."""
    try:
        with open(path, encoding="utf-8") as handle:
            raw = handle.read()
        mtime = os.stat(path).st_mtime
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        for key in ("owner", "host"):
            if not isinstance(data.get(key), str):
                raise ValueError(f"field {key!r} must be a string, got {data.get(key)!r}")
        epoch = float(number(data.get("epoch"), "field 'epoch'", minimum=0, maximum=LATEST_EPOCH))
        pid = data.get("pid")
        pid = None if pid in (None, "") else int(number(pid, "field 'pid'", integer=True, minimum=1,
                                                        maximum=2**31 - 1))
        reason = data.get("reason")
        return LockInfo(
            owner=data["owner"],
            host=data["host"],
            pid=pid,
            time=str(data.get("time") or utc_iso(epoch)),
            epoch=epoch,
            reason=reason if reason is None else str(reason),
        )
    except ValueError as exc:
        return LockInfo("unknown", "unknown", None, utc_iso(mtime), mtime, f"{UNREADABLE_LOCK}: {exc}")


def lock_staleness(holder: LockInfo, now: float, stale_after: float, this_host: str,
                   alive: Callable[[int], bool] = pid_alive, peer_host: str | None = None,
                   peer_pids: Iterable[int] | None = None) -> str | None:
    """Why a lock is stale (None when it is live): older than ``stale_after`` seconds, held
    by a process of this machine that no longer exists, or held from ``peer_host`` (the
    controller asking) by a process that is not among ``peer_pids`` (its live playbook
    processes, listed there by the caller)."""
    age = now - holder.epoch
    if age > stale_after:
        return f"older than {int(stale_after)} s"
    if holder.owner == "unknown" and (holder.reason or "").startswith(UNREADABLE_LOCK):
        return holder.reason
    if holder.pid and holder.host == this_host and not alive(holder.pid):
        return f"process {holder.pid} on {this_host} is gone"
    if holder.pid and peer_pids is not None and holder.host == peer_host and holder.pid not in set(peer_pids):
        return f"process {holder.pid} on {peer_host} is gone"
    return None


# --------------------------------------------------------------------------- release order and status


@dataclass
class Release:
    id: str
    version: str
    created: str
    status: str = "unknown"
    reason: str | None = None
    wheelhouse_sha256: str | None = None
    deps_sha256: str | None = None
    python: str | None = None
    current: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def release_order(on_disk: Iterable[str], ledger: list[dict[str, Any]]) -> list[str]:
    """Release ids oldest first: the order of their ``create`` lines in the ledger; a release
    the ledger does not know (ledger lost, kill before the line) goes by its id's timestamp."""
    present = set(on_disk)
    ordered: list[str] = []
    for entry in ledger:
        rid = entry.get("release")
        created = entry.get("action") == "create" and entry.get("outcome") == "created"
        if created and rid in present and rid not in ordered:
            ordered.append(rid)
    missing = sorted(present - set(ordered), key=lambda r: (_id_epoch(r), r))
    for rid in missing:
        epoch = _id_epoch(rid)
        index = next((i for i, other in enumerate(ordered) if _id_epoch(other) > epoch), len(ordered))
        ordered.insert(index, rid)
    return ordered


def _id_epoch(release_id: str) -> float:
    match = RELEASE_ID_RE.match(release_id)
    return stamp_epoch(match.group("stamp")) if match else 0.0


def release_statuses(ledger: list[dict[str, Any]]) -> dict[str, tuple[str, str | None]]:
    """Latest ``mark`` of each release: {release: (good|bad, reason)}."""
    statuses: dict[str, tuple[str, str | None]] = {}
    for entry in ledger:
        if entry.get("action") == "mark" and entry.get("outcome") in ("good", "bad") and entry.get("release"):
            statuses[entry["release"]] = (entry["outcome"], entry.get("reason"))
    return statuses


def last_good(order: list[str], status: dict[str, str]) -> str | None:
    goods = [r for r in order if status.get(r) == "good"]
    return goods[-1] if goods else None


def previous_good(order: list[str], status: dict[str, str], current: str | None) -> str | None:
    """The release a rollback goes to: the newest good release before ``current`` in release
    order (the newest good one when nothing, or something unknown, is current)."""
    before = order[: order.index(current)] if current in order else [r for r in order if r != current]
    goods = [r for r in before if status.get(r) == "good"]
    return goods[-1] if goods else None


def plan_prune(order: list[str], status: dict[str, str], current: str | None, keep: int) -> tuple[list[str], list[str]]:
    """(kept, removed): keep the ``keep`` newest by release order plus ``current``, the last
    good release and the previous good one (the rollback target); bad releases count like
    any other, so they stay for inspection until they fall out of the newest ``keep``."""
    if keep < 1:
        raise ReleaseError(f"keep={keep}: keep at least 1 release")
    protected = {current, last_good(order, status), previous_good(order, status, current)} - {None}
    newest = set(order[-keep:])
    kept = [r for r in order if r in newest or r in protected]
    removed = [r for r in order if r not in newest and r not in protected]
    return kept, removed


# --------------------------------------------------------------------------- the store


class ReleaseStore:
    """All actions on one application tree. Methods return a result dict (``changed`` and
    data) or raise ReleaseError; with ``check_mode`` they report and write nothing."""

    def __init__(self, path: str, *, actor: str | None = None, host: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if not os.path.isabs(path):
            raise ReleaseError(f"path {path!r} must be absolute, e.g. /opt/refapp")
        self.path = os.path.normpath(path)
        self.actor = actor or default_actor()
        self.host = host or socket.gethostname()
        self.clock = clock

    # paths
    def _p(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    @property
    def releases_dir(self) -> str:
        return self._p(RELEASES_DIR)

    @property
    def ledger_path(self) -> str:
        return self._p(LEDGER_NAME)

    @property
    def lock_path(self) -> str:
        return self._p(LOCK_NAME)

    def release_path(self, release_id: str) -> str:
        return self._p(RELEASES_DIR, release_id)

    # reading
    def ledger(self) -> list[dict[str, Any]]:
        return read_jsonl(self.ledger_path, ledger_problem)[0]

    def release_ids(self) -> list[str]:
        try:
            names = os.listdir(self.releases_dir)
        except FileNotFoundError:
            return []
        return [n for n in names if RELEASE_ID_RE.match(n) and os.path.isdir(self.release_path(n))]

    def read_meta(self, release_id: str) -> dict[str, Any]:
        try:
            with open(os.path.join(self.release_path(release_id), RELEASE_META), encoding="utf-8") as handle:
                data = json.load(handle)
                return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def current(self) -> str | None:
        link = self._p(CURRENT_LINK)
        try:
            target = os.readlink(link)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ReleaseError(
                f"{link} exists but is not a symlink; move it away so tradeops can manage it"
            ) from exc
        name = os.path.basename(os.path.normpath(target))
        return name if os.path.isdir(self.release_path(name)) else None

    def state(self) -> tuple[list[str], dict[str, str], str | None, list[dict[str, Any]]]:
        ledger = self.ledger()
        order = release_order(self.release_ids(), ledger)
        status = {r: s for r, (s, _) in release_statuses(ledger).items()}
        return order, status, self.current(), ledger

    def releases(self) -> list[Release]:
        ledger = self.ledger()
        order = release_order(self.release_ids(), ledger)
        statuses = release_statuses(ledger)
        current = self.current()
        out = []
        for rid in order:
            meta = self.read_meta(rid)
            match = RELEASE_ID_RE.match(rid)
            assert match is not None
            status, reason = statuses.get(rid, ("unknown", None))
            out.append(Release(
                id=rid,
                version=meta.get("version", match.group("version")),
                created=meta.get("created", utc_iso(stamp_epoch(match.group("stamp")))),
                status=status,
                reason=reason,
                wheelhouse_sha256=meta.get("wheelhouse_sha256"),
                deps_sha256=meta.get("deps_sha256"),
                python=meta.get("python"),
                current=rid == current,
            ))
        return out

    def resolve(self, release: str | None, version: str | None, order: list[str],
                status: dict[str, str]) -> str:
        """A release id from an id or a version (the newest release of it, good ones first)."""
        if release:
            if release not in order:
                raise ReleaseError(
                    f"release {release!r} does not exist under {self.releases_dir}; "
                    f"existing releases: {', '.join(order) or 'none'}", candidates=order)
            if version and RELEASE_ID_RE.match(release).group("version") != version:  # type: ignore[union-attr]
                raise ReleaseError(f"release {release} is not of version {version}; give one of release= or version=")
            return release
        if version:
            same = [r for r in order if RELEASE_ID_RE.match(r).group("version") == version]  # type: ignore[union-attr]
            if not same:
                raise ReleaseError(
                    f"no release of version {version!r} under {self.releases_dir}; "
                    f"existing releases: {', '.join(order) or 'none'}", candidates=order)
            good = [r for r in same if status.get(r) == "good"]
            return (good or same)[-1]
        raise ReleaseError("give release= (a release id) or version=")

    def _entry(self, action: str, **fields: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "time": utc_iso(self.clock()),
            "action": action,
            "user": self.actor,
            "host": self.host,
            "version": None,
            "release": None,
            "wheelhouse_sha256": None,
            "outcome": None,
            "duration_s": None,
            "reason": None,
            "previous": None,
        }
        entry.update(fields)
        return entry

    def record(self, action: str, **fields: Any) -> dict[str, Any]:
        entry = self._entry(action, **fields)
        os.makedirs(self.path, exist_ok=True)
        append_jsonl(self.ledger_path, entry)
        return entry

    # ------------------------------------------------------------------ create

    def ensure_tree(self, owner: str | None, group: str | None, check_mode: bool) -> tuple[list[str], list[str]]:
        """releases/, deps/, shared/{data,logs,config} (the shared ones owned by owner:group);
        returns the directories made or given to owner:group (or that would be), and the owner
        or group that does not exist yet (check mode only: otherwise it is refused before
        anything is made)."""
        _, _, missing = account_ids(owner, group, check_mode=check_mode)
        made = []
        wanted = [(RELEASES_DIR, 0o755, False), (DEPS_DIR, 0o755, False), (SHARED_DIR, 0o755, False)]
        wanted += [(os.path.join(SHARED_DIR, d), 0o750, True) for d in SHARED_SUBDIRS]
        for rel, mode, own in wanted:
            full = self._p(rel)
            if not os.path.isdir(full):
                made.append(full)
                if not check_mode:
                    os.makedirs(full, exist_ok=True)
                    os.chmod(full, mode)
                    if own:
                        _chown(full, owner, group)
            elif own and _chown(full, owner, group, dry_run=check_mode):
                made.append(full)
        return made, missing

    def find_existing(self, version: str, wheelhouse_sha256: str, python_tag: str) -> str | None:
        for rid in reversed(release_order(self.release_ids(), self.ledger())):
            meta = self.read_meta(rid)
            if (meta.get("version") == version and meta.get("wheelhouse_sha256") == wheelhouse_sha256
                    and meta.get("python_tag") == python_tag):
                return rid
        return None

    def new_release_id(self, version: str) -> str:
        epoch = self.clock()
        while True:
            rid = f"{version}-{utc_stamp(epoch)}"
            if not os.path.exists(self.release_path(rid)):
                return rid
            epoch += 1

    def create(self, *, version: str, wheelhouse: str, package: str | None = None, python: str = DEFAULT_PYTHON,
               shared_links: dict[str, str] | None = None, owner: str | None = None,
               group: str | None = None, requirements: list[str] | None = None,
               check_mode: bool = False) -> dict[str, Any]:
        started = time.monotonic()
        validate_version(version)
        extra = check_requirements(requirements)
        links = {check_relative(k, "shared_links key"): check_relative(v, "shared_links target")
                 for k, v in (DEFAULT_SHARED_LINKS if shared_links is None else shared_links).items()}
        for key in links:
            if key.split(os.sep)[0] in (VENV_DIR, RELEASE_META):
                raise ReleaseError(f"shared_links key {key!r} collides with the release's own {key.split(os.sep)[0]}")
        timings: dict[str, float] = {}

        def lap(name: str, since: float) -> float:
            now = time.monotonic()
            timings[name] = round(now - since, 3)
            return now

        t = time.monotonic()
        wh = scan_wheelhouse(wheelhouse, package, version)
        t = lap("wheelhouse_s", t)
        info = python_info(python)
        _, _, requires = read_wheel_requires(wh.app_wheel)
        requires = [*requires, *(r for r in extra if r not in requires)]
        dep_hashes = {os.path.basename(w): wheel_content_digest(w) for w in wh.dep_wheels}
        deps_sha = set_digest(dep_hashes, [f"python {info['tag']}", *(f"requires {r}" for r in requires)])
        deps_sha = deps_sha if requires else None
        t = lap("inspect_s", t)
        made, missing = self.ensure_tree(owner, group, check_mode)
        result: dict[str, Any] = {
            "version": version,
            "wheelhouse_sha256": wh.sha256,
            "deps_sha256": deps_sha,
            "deps_path": self._p(DEPS_DIR, deps_sha) if deps_sha else None,
            "python": python,
            "python_version": info["version"],
            "changed_dirs": made,
        }
        if missing:
            result["missing_accounts"] = missing
        existing = self.find_existing(version, wh.sha256, info["tag"])
        if existing:
            statuses = release_statuses(self.ledger())
            result.update(
                changed=bool(made), release=existing, release_path=self.release_path(existing), deps_reused=True,
                status=statuses.get(existing, ("unknown", None))[0], existed=True,
            )
            lap("total_s", started)
            result["timings"] = timings
            return result
        rid = self.new_release_id(version)
        final = self.release_path(rid)
        layer = self._p(DEPS_DIR, deps_sha) if deps_sha else None
        reused = bool(layer and os.path.isdir(layer))
        result.update(changed=True, release=rid, release_path=final, deps_reused=reused, status="unknown",
                      existed=False)
        if check_mode:
            lap("total_s", started)
            result["timings"] = timings
            return result
        tmp = self._p(RELEASES_DIR, f".tmp-{rid}-{secrets.token_hex(4)}")
        t = time.monotonic()
        try:
            if layer and not reused:
                self.build_layer(layer, requires, wh, python)
            t = lap("deps_s", t)
            os.mkdir(tmp, 0o755)
            venv = os.path.join(tmp, VENV_DIR)
            final_venv = os.path.join(final, VENV_DIR)
            create_venv(python, venv)
            relocate_venv(venv, final_venv)
            t = lap("venv_s", t)
            scheme = {k: os.path.join(venv, v) for k, v in info["venv_paths"].items()}
            scheme.setdefault("headers", os.path.join(venv, "include", "site", wh.package))
            final_python = os.path.join(final_venv, "bin", "python")
            if layer:
                with open(os.path.join(scheme["purelib"], DEPS_PTH), "w", encoding="utf-8") as handle:
                    handle.write(layer + "\n")
                for script, content in layer_scripts(layer, final_python).items():
                    _write_file(os.path.join(scheme["scripts"], script), content.encode(), 0o755)
            install_wheel(wh.app_wheel, scheme, final_python)
            t = lap("install_s", t)
            run_command([os.path.join(venv, "bin", "python"), "-I", "-m", "compileall", "-q", scheme["purelib"]],
                        "compiling the release's Python files")
            t = lap("compile_s", t)
            for key, target in sorted(links.items()):
                link = os.path.join(tmp, key)
                os.makedirs(os.path.dirname(link), exist_ok=True)
                os.symlink(self._p(SHARED_DIR, target), link)
                parent = os.path.dirname(self._p(SHARED_DIR, target))
                os.makedirs(parent, exist_ok=True)
            meta = {
                "release": rid,
                "version": version,
                "created": utc_iso(self.clock()),
                "package": wh.package,
                "app_wheel": os.path.basename(wh.app_wheel),
                "app_version": wh.app_version,
                "wheelhouse_sha256": wh.sha256,
                "wheelhouse": os.path.abspath(wh.path),
                "wheels": wh.hashes,
                "deps_sha256": deps_sha,
                "requires": requires,
                "python": python,
                "python_version": info["version"],
                "python_tag": info["tag"],
                "user": self.actor,
            }
            with open(os.path.join(tmp, RELEASE_META), "w", encoding="utf-8") as handle:
                json.dump(meta, handle, indent=2, sort_keys=True)
            make_read_only(tmp, group)
            os.sync()  # the release's files are on disk before its name appears
            os.rename(tmp, final)
            fsync_dir(self.releases_dir)
            t = lap("finalize_s", t)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, (ReleaseError, OSError)):
                with contextlib.suppress(OSError, ReleaseError):  # never hide the original error
                    self.record("create", version=version, release=rid, wheelhouse_sha256=wh.sha256,
                                outcome="failed", duration_s=round(time.monotonic() - started, 3),
                                reason=str(exc)[:500], previous=self.current())
            if isinstance(exc, OSError):
                raise ReleaseError(f"creating release {rid} failed: {exc}") from exc
            raise
        lap("total_s", started)
        result["timings"] = timings
        result["ledger_entry"] = self.record(
            "create", version=version, release=rid, wheelhouse_sha256=wh.sha256, outcome="created",
            duration_s=timings["total_s"], previous=self.current(), deps_sha256=deps_sha, deps_reused=reused,
        )
        return result

    def build_layer(self, layer: str, requires: list[str], wh: Wheelhouse, python: str) -> None:
        """pip-install the app's requirements, offline from the wheelhouse, into a new
        dependency layer (``pip --target``), built under a temporary name then renamed."""
        tmp = f"{layer}.tmp-{secrets.token_hex(4)}"
        try:
            pip = find_pip(python, wh.path)
            run_command(
                [*pip, "install", "--quiet", "--no-index", "--find-links", wh.path, "--target", tmp,
                 "--no-warn-script-location", *requires],
                f"installing the dependencies offline from {wh.path} (a missing wheel means the wheelhouse "
                "was built without it: rebuild it on the controller with 'pip wheel')",
                env=pip_env(), timeout=PIP_TIMEOUT,
            )
            with open(os.path.join(tmp, ".tradeops-layer.json"), "w", encoding="utf-8") as handle:
                json.dump({"requires": requires, "wheels": sorted(os.path.basename(w) for w in wh.dep_wheels),
                           "created": utc_iso(self.clock())}, handle, indent=2)
            make_read_only(tmp)
            os.sync()
            try:
                os.rename(tmp, layer)
            except OSError:
                if not os.path.isdir(layer):  # another create made it meanwhile: use theirs
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # ------------------------------------------------------------------ activate / rollback / mark

    def switch(self, release_id: str, check_mode: bool) -> None:
        """Point ``current`` at the release: a new symlink under a temporary name renamed over
        ``current`` (rename(2) is atomic, so readers see the old or the new target)."""
        if check_mode:
            return
        tmp = self._p(f".{CURRENT_LINK}.tmp-{secrets.token_hex(4)}")
        os.symlink(os.path.join(RELEASES_DIR, release_id), tmp)
        try:
            os.replace(tmp, self._p(CURRENT_LINK))
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_dir(self.path)

    def _diff(self, before: str | None, after: str | None) -> dict[str, str]:
        def show(rid: str | None) -> str:
            return f"current -> {RELEASES_DIR}/{rid}\n" if rid else "current absent\n"

        link = self._p(CURRENT_LINK)
        return {"before": show(before), "after": show(after), "before_header": link, "after_header": link}

    def activate(self, *, release: str | None = None, version: str | None = None, allow_bad: bool = False,
                 check_mode: bool = False, action: str = "activate", reason: str | None = None) -> dict[str, Any]:
        started = time.monotonic()
        order, status, current, _ = self.state()
        target = self.resolve(release, version, order, status)
        if status.get(target) == "bad" and not allow_bad:
            raise ReleaseError(
                f"release {target} is marked bad in {self.ledger_path}; choose another release, or mark it "
                "good first (action=mark outcome=good), or set allow_bad=true",
                candidates=[r for r in order if status.get(r) != "bad"])
        result = self._switch_result(target, current, action, reason, started, check_mode)
        return result

    def _switch_result(self, target: str, current: str | None, action: str, reason: str | None,
                       started: float, check_mode: bool) -> dict[str, Any]:
        meta = self.read_meta(target)
        result: dict[str, Any] = {
            "changed": target != current,
            "release": target,
            "release_path": self.release_path(target),
            "previous": current,
            "version": meta.get("version"),
            "diff": self._diff(current, target),
        }
        if target != current and not check_mode:
            self.switch(target, check_mode)
            result["ledger_entry"] = self.record(
                action, version=meta.get("version"), release=target, wheelhouse_sha256=meta.get("wheelhouse_sha256"),
                outcome="switched", duration_s=round(time.monotonic() - started, 3), reason=reason, previous=current)
        return result

    def rollback(self, *, release: str | None = None, version: str | None = None, allow_bad: bool = False,
                 reason: str | None = None, check_mode: bool = False) -> dict[str, Any]:
        started = time.monotonic()
        order, status, current, _ = self.state()
        if release or version:
            target = self.resolve(release, version, order, status)
            if status.get(target) == "bad" and not allow_bad:
                raise ReleaseError(
                    f"release {target} is marked bad; roll back to a good one "
                    f"({', '.join(r for r in order if status.get(r) == 'good') or 'none is marked good'}) "
                    "or set allow_bad=true", candidates=[r for r in order if status.get(r) == "good"])
        else:
            found = previous_good(order, status, current)
            if found is None:
                listing = [f"{r} ({status.get(r, 'unknown')}{', current' if r == current else ''})" for r in order]
                raise ReleaseError(
                    f"no good release to roll back to before {current or 'nothing (no current release)'}; "
                    f"releases: {', '.join(listing) or 'none'}. Name one with -e rollback_to=<release>, "
                    "or mark one good (action=mark outcome=good)",
                    candidates=[{"release": r, "status": status.get(r, "unknown")} for r in order])
            target = found
        return self._switch_result(target, current, "rollback", reason, started, check_mode)

    def mark(self, *, release: str | None = None, version: str | None = None, outcome: str,
             reason: str | None = None, check_mode: bool = False) -> dict[str, Any]:
        if outcome not in ("good", "bad"):
            raise ReleaseError(f"outcome={outcome!r}: use good or bad")
        order, status, current, ledger = self.state()
        if release or version:
            target = self.resolve(release, version, order, status)
        elif current:
            target = current
        else:
            raise ReleaseError("nothing is current; give release= to mark")
        before = release_statuses(ledger).get(target, ("unknown", None))
        changed = before[0] != outcome or (reason is not None and before[1] != reason)
        meta = self.read_meta(target)
        result: dict[str, Any] = {
            "changed": changed, "release": target, "outcome": outcome, "previous_status": before[0],
            "diff": {"before": f"{target}: {before[0]}\n", "after": f"{target}: {outcome}\n"},
        }
        if changed and not check_mode:
            result["ledger_entry"] = self.record(
                "mark", version=meta.get("version"), release=target, wheelhouse_sha256=meta.get("wheelhouse_sha256"),
                outcome=outcome, reason=reason, previous=current)
        return result

    # ------------------------------------------------------------------ prune / list

    def _remove_tree(self, path: str) -> None:
        """Rename out of the way first, so an interrupted removal never leaves a half tree
        under a release's name, then delete."""
        trash = os.path.join(os.path.dirname(path), f".trash-{os.path.basename(path)}-{secrets.token_hex(4)}")
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def place_wheelhouse(self, source: str, name: str, group: str | None = None,
                         check_mode: bool = False) -> dict[str, Any]:
        """Keep the wheelhouse shipped into ``source`` (a temporary directory) as
        ``wheelhouses/<name>`` (root:group, 0750/0640), replaced atomically; an identical one
        already there is reused. Check mode: nothing is written and ``source`` itself is used."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,200}", name or ""):
            raise ReleaseError(f"wheelhouse name {name!r} is not a plain directory name (letters, digits, . _ + -)")
        if not os.path.isdir(source):
            raise ReleaseError(f"shipped wheelhouse {source} is not a directory on this host")
        files = sorted(n for n in os.listdir(source) if os.path.isfile(os.path.join(source, n)))
        target = os.path.join(self._p(WHEELHOUSES_DIR), name)

        def same() -> bool:
            if not os.path.isdir(target) or sorted(os.listdir(target)) != files:
                return False
            return all(sha256_file(os.path.join(source, n)) == sha256_file(os.path.join(target, n)) for n in files)

        if same():
            return {"changed": False, "wheelhouse": target}
        if check_mode:
            return {"changed": True, "wheelhouse": source}
        parent = self._p(WHEELHOUSES_DIR)
        os.makedirs(parent, mode=0o750, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=parent)
        try:
            for n in files:
                shutil.copyfile(os.path.join(source, n), os.path.join(tmp, n))
                os.chmod(os.path.join(tmp, n), 0o640)
                _chown(os.path.join(tmp, n), "root", group)
            os.chmod(tmp, 0o750)  # noqa: S103 -- the app group reads its wheelhouse
            _chown(tmp, "root", group)
            if os.path.isdir(target):
                os.rename(target, f"{tmp}.old")
                shutil.rmtree(f"{tmp}.old", ignore_errors=True)
            os.rename(tmp, target)
            fsync_dir(parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return {"changed": True, "wheelhouse": target}

    def prune(self, *, keep: int = DEFAULT_KEEP, check_mode: bool = False) -> dict[str, Any]:
        started = time.monotonic()
        order, status, current, _ = self.state()
        kept, removed = plan_prune(order, status, current, keep)
        used_layers = {self.read_meta(r).get("deps_sha256") for r in kept}
        layers_dir = self._p(DEPS_DIR)
        layers = sorted(os.listdir(layers_dir)) if os.path.isdir(layers_dir) else []
        unused = [n for n in layers if re.fullmatch(r"[0-9a-f]{64}", n) and n not in used_layers]
        now = time.time()
        # Shipped wheelhouses no kept release was built from (a fresh one may belong to a
        # deploy that has not taken the lock yet: only those older than PARTIAL_MAX_AGE).
        used_wheelhouses = {self.read_meta(r).get("wheelhouse") for r in kept}
        wheelhouses_dir = self._p(WHEELHOUSES_DIR)
        stale_wheelhouses = [
            full for full in (os.path.join(wheelhouses_dir, n) for n in
                              (sorted(os.listdir(wheelhouses_dir)) if os.path.isdir(wheelhouses_dir) else []))
            if os.path.isdir(full) and not os.path.islink(full) and full not in used_wheelhouses
            and now - os.lstat(full).st_mtime > PARTIAL_MAX_AGE]
        partial = []
        for directory in (self.releases_dir, layers_dir):
            if os.path.isdir(directory):
                for name in os.listdir(directory):
                    full = os.path.join(directory, name)
                    leftover = ".tmp-" in name or name.startswith(".trash-")
                    if leftover and now - os.lstat(full).st_mtime > PARTIAL_MAX_AGE:
                        partial.append(full)
        changed = bool(removed or unused or partial or stale_wheelhouses)
        if not check_mode:
            for full in stale_wheelhouses:
                shutil.rmtree(full, ignore_errors=True)
            for rid in removed:
                self._remove_tree(self.release_path(rid))
            for name in unused:
                self._remove_tree(os.path.join(layers_dir, name))
            for full in partial:
                shutil.rmtree(full, ignore_errors=True)
        result: dict[str, Any] = {
            "changed": changed,
            "kept": kept,
            "removed": removed,
            "removed_layers": unused,
            "removed_partial": partial,
            "removed_wheelhouses": stale_wheelhouses,
        }
        if removed and not check_mode:
            result["ledger_entry"] = self.record(
                "prune", outcome="removed", reason=f"keep {keep}: removed {', '.join(removed)}",
                duration_s=round(time.monotonic() - started, 3), previous=current, removed=removed)
        return result

    def listing(self) -> dict[str, Any]:
        releases = self.releases()
        order = [r.id for r in releases]
        status = {r.id: r.status for r in releases}
        current = self.current()
        _, problems = read_jsonl(self.ledger_path, ledger_problem)
        return {
            "changed": False,
            "releases": [r.as_dict() for r in reversed(releases)],
            "current": current,
            "last_good": last_good(order, status),
            "previous_good": previous_good(order, status, current),
            "ledger_unreadable_lines": len(problems),
            "ledger_problems": problems,
        }

    # ------------------------------------------------------------------ lock

    def lock(self, *, owner: str | None = None, host: str | None = None, pid: int | None = None,
             reason: str | None = None, stale_after: float = DEFAULT_STALE_AFTER, force: bool = False,
             peer_pids: list[int] | None = None, check_mode: bool = False, record: bool = True) -> dict[str, Any]:
        """Take the deploy lock. ``record=False``: no ledger line for an ordinary acquisition (a caller
        that records its whole run itself, e.g. app_deploy); breaking a lock is always recorded."""
        owner = owner or self.actor
        host = host or self.host
        now = self.clock()
        holder = read_lock(self.lock_path)
        broken = None
        if holder is not None:
            stale = lock_staleness(holder, now, stale_after, socket.gethostname(), peer_host=host,
                                   peer_pids=peer_pids)
            if holder.owner == owner and holder.host == host and pid is not None and holder.pid == pid:
                return {"changed": False, "lock": asdict(holder), "stale": False, "msg": "lock already held by us"}
            if not force:
                if stale:
                    raise ReleaseError(
                        f"deploy lock {self.lock_path} is stale ({stale}): held by {holder.describe(now)}. "
                        "If that deploy is dead, re-run with -e force_unlock=true to break it",
                        stale=True, lock=asdict(holder))
                raise ReleaseError(
                    f"deploy lock {self.lock_path} is held by {holder.describe(now)}. Wait for that deploy "
                    "to finish; if you are sure it is dead, re-run with -e force_unlock=true",
                    stale=False, lock=asdict(holder))
            broken = asdict(holder) | {"stale_reason": stale}
        info = LockInfo(owner=owner, host=host, pid=pid, time=utc_iso(now), epoch=now, reason=reason)
        result: dict[str, Any] = {
            "changed": True, "lock": asdict(info), "stale": bool(broken and broken["stale_reason"]), "broken": broken,
        }
        if check_mode:
            return result
        os.makedirs(self.path, exist_ok=True)
        if broken is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.lock_path)
        self._create_lock_file(info)
        if record or broken is not None:
            result["ledger_entry"] = self.record(
                "lock", outcome="broken-and-acquired" if broken else "acquired", reason=reason,
                lock_owner=owner, lock_host=host, lock_pid=pid, broken=broken)
        return result

    def _create_lock_file(self, info: LockInfo) -> None:
        """Write the holder into a private file (O_CREAT|O_EXCL), fsync, then link(2) it to the
        lock name: link fails with EEXIST when a lock exists, and nobody ever sees a half-written
        lock file."""
        tmp = f"{self.lock_path}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, json.dumps(asdict(info), sort_keys=True).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, self.lock_path)
        except FileExistsError as exc:
            holder = read_lock(self.lock_path)
            raise ReleaseError(
                f"deploy lock {self.lock_path} was taken meanwhile by "
                f"{holder.describe(self.clock()) if holder else 'another deploy'}; try again later",
                stale=False, lock=asdict(holder) if holder else None) from exc
        finally:
            os.unlink(tmp)
        fsync_dir(self.path)

    def unlock(self, *, owner: str | None = None, host: str | None = None, pid: int | None = None,
               force: bool = False, check_mode: bool = False, record: bool = True) -> dict[str, Any]:
        """Release the deploy lock; ``record=False``: no ledger line unless it is somebody else's (forced)."""
        owner = owner or self.actor
        host = host or self.host
        holder = read_lock(self.lock_path)
        if holder is None:
            return {"changed": False, "lock": None, "msg": "no lock held"}
        ours = holder.owner == owner and holder.host == host and holder.pid == pid
        if not ours and not force:
            raise ReleaseError(
                f"deploy lock {self.lock_path} is held by {holder.describe(self.clock())}, not by "
                f"{owner}@{host}{f' pid {pid}' if pid else ''}; only its holder releases it. If that deploy is "
                "dead, re-run with -e force_unlock=true", lock=asdict(holder))
        result: dict[str, Any] = {"changed": True, "lock": asdict(holder), "forced": not ours}
        if not check_mode:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.lock_path)
        if not check_mode and (record or not ours):
            result["ledger_entry"] = self.record(
                "unlock", outcome="forced" if not ours else "released", lock_owner=holder.owner,
                lock_host=holder.host, lock_pid=holder.pid)
        return result


def lock_argument_spec() -> dict[str, dict[str, Any]]:
    """The deploy lock's module options, shared by app_release and app_deploy."""
    return {
        "actor": {"type": "str"},
        "lock_owner": {"type": "str"},
        "lock_host": {"type": "str"},
        "lock_pid": {"type": "int"},
        "lock_peer_pids": {"type": "list", "elements": "int"},
        "lock_reason": {"type": "str"},
        "lock_stale_after": {"type": "int", "default": int(DEFAULT_STALE_AFTER)},
        "force_unlock": {"type": "bool", "default": False},
    }


def option(params: dict[str, Any], name: str, default: Any, **bounds: Any) -> Any:
    """``params[name]`` checked as a number (``checks.number`` with ``bounds``: a bool, NaN, an infinity or
    a value out of bounds is refused naming the option), ``default`` when it is not given: never the
    default in place of a value given (``keep=0`` is refused, not made 5)."""
    value = params.get(name)
    return default if value is None else number(value, name, error=ReleaseError, **bounds)


def lock_options(params: dict[str, Any]) -> dict[str, Any]:
    """The lock options of ``lock_argument_spec`` as ``ReleaseStore.lock``'s arguments, checked:
    ``lock_stale_after=0`` means what it says (any lock is stale), a negative one is refused."""
    return {
        "owner": params.get("lock_owner"), "host": params.get("lock_host"),
        "pid": option(params, "lock_pid", None, integer=True, minimum=1, maximum=2**31 - 1),
        "stale_after": float(option(params, "lock_stale_after", DEFAULT_STALE_AFTER, minimum=0, unit="seconds")),
        "force": bool(params.get("force_unlock")), "peer_pids": params.get("lock_peer_pids"),
    }


def check_free_space(path: str, min_free_mb: int) -> None:
    """Refuse a create, before anything is written, when the disk under path is short."""
    if min_free_mb <= 0:
        return
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe) or "/"
    free_mb = shutil.disk_usage(probe).free // (1024 * 1024)
    if free_mb < min_free_mb:
        raise ReleaseError(f"only {free_mb} MB free under {path}; a release needs {min_free_mb} MB (min_free_mb). "
                           "Free space or prune releases, then re-run", free_mb=free_mb)


def run_action(store: ReleaseStore, action: str, params: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    """Dispatch one app_release action with the module's parameter names."""
    if action == "init":
        result = {"python_version": python_version(params.get("python") or DEFAULT_PYTHON)}
        account = params.get("account")
        if account is not None:
            if not params.get("owner") or not params.get("group"):
                raise ReleaseError("action=init with account needs owner and group")
            exists, same = account_state(params["owner"], params["group"], account)
            result["account_in_place"] = same
            if not exists and not check_mode:
                # The role creates the accounts next, then calls init again (tree_pending).
                result.update(changed=False, made=[], tree_pending=True,
                              msg=f"owner {params['owner']!r} or group {params['group']!r} does not exist yet: "
                                  "the tree is made once they do")
                return result
        made, missing = store.ensure_tree(params.get("owner"), params.get("group"), check_mode)
        result.update(changed=bool(made), made=made, tree_pending=False)
        if missing:
            result.update(missing_accounts=missing, msg=f"check mode: would make or re-own {', '.join(made)}; "
                          f"{', '.join(missing)} (a real run needs them first)")
    elif action == "create":
        missing = [k for k in ("version", "wheelhouse") if not params.get(k)]
        if missing:
            raise ReleaseError(f"action=create needs {', '.join(missing)}")
        check_free_space(store.path, option(params, "min_free_mb", 0, integer=True, minimum=0))
        result = store.create(version=params["version"], wheelhouse=params["wheelhouse"], package=params["package"],
                              python=params.get("python") or DEFAULT_PYTHON, shared_links=params.get("shared_links"),
                              owner=params.get("owner"), group=params.get("group"),
                              requirements=params.get("requirements"), check_mode=check_mode)
    elif action == "activate":
        result = store.activate(release=params.get("release"), version=params.get("version"),
                                allow_bad=bool(params.get("allow_bad")), reason=params.get("reason"),
                                check_mode=check_mode)
    elif action == "rollback":
        result = store.rollback(release=params.get("release"), version=params.get("version"),
                                allow_bad=bool(params.get("allow_bad")), reason=params.get("reason"),
                                check_mode=check_mode)
    elif action == "mark":
        result = store.mark(release=params.get("release"), version=params.get("version"),
                            outcome=params.get("outcome") or "", reason=params.get("reason"), check_mode=check_mode)
    elif action == "prune":
        result = store.prune(keep=option(params, "keep", DEFAULT_KEEP, integer=True, minimum=1), check_mode=check_mode)
    elif action == "list":
        result = store.listing()
    elif action == "lock":
        result = store.lock(**lock_options(params), reason=params.get("lock_reason"), check_mode=check_mode)
    elif action == "unlock":
        lock = lock_options(params)
        result = store.unlock(owner=lock["owner"], host=lock["host"], pid=lock["pid"], force=lock["force"],
                              check_mode=check_mode)
    else:
        raise ReleaseError(f"unknown action {action!r}")
    result.setdefault("current", store.current())
    result["action"] = action
    return result


def main_cli(argv: list[str] | None = None) -> int:
    """``tradeops-release``: the same actions on the host without Ansible (e.g. an emergency
    rollback). Prints the result as JSON; exit 0 done, 1 refused/failed (message on stderr),
    2 bad arguments."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="tradeops-release",
        description="Releases of one application tree: list, create, activate, rollback, mark, prune, lock, unlock.",
        epilog="example: tradeops-release --path /opt/refapp rollback --reason 'errors after 1.4.2'",
    )
    parser.add_argument("--path", required=True, help="application tree, e.g. /opt/refapp")
    parser.add_argument("--check", action="store_true", help="report what would change, change nothing")
    parser.add_argument("--actor", help="who acts (recorded in the ledger)")
    parser.add_argument("action", choices=["init", "create", "activate", "rollback", "prune", "list", "mark", "lock",
                                           "unlock"])
    parser.add_argument("--release", help="release id")
    parser.add_argument("--version", dest="version", help="version (create; or the newest release of it)")
    parser.add_argument("--wheelhouse", help="wheelhouse directory (create)")
    parser.add_argument("--package", help="distribution name of the app (create; default from wheelhouse.json)")
    parser.add_argument("--python", default=DEFAULT_PYTHON, help=f"interpreter for the venv (default {DEFAULT_PYTHON})")
    parser.add_argument("--outcome", choices=["good", "bad"], help="mark: good or bad")
    parser.add_argument("--reason", help="recorded in the ledger")
    parser.add_argument("--keep", type=int, default=DEFAULT_KEEP, help="prune: releases to keep (default 5)")
    parser.add_argument("--allow-bad", action="store_true", help="activate/rollback to a release marked bad")
    parser.add_argument("--lock-reason", help="lock: why")
    parser.add_argument("--lock-pid", type=int, help="lock/unlock: pid of the holder")
    parser.add_argument("--force-unlock", action="store_true", help="break or release somebody else's lock")
    args = parser.parse_args(argv)
    params = {
        "version": args.version, "release": args.release, "wheelhouse": args.wheelhouse, "package": args.package,
        "python": args.python, "shared_links": None, "outcome": args.outcome, "reason": args.reason,
        "keep": args.keep, "allow_bad": args.allow_bad, "lock_reason": args.lock_reason, "lock_pid": args.lock_pid,
        "force_unlock": args.force_unlock, "lock_stale_after": DEFAULT_STALE_AFTER,
    }
    try:
        store = ReleaseStore(os.path.abspath(args.path), actor=args.actor)
        result = run_action(store, args.action, params, args.check)
    except ReleaseError as exc:
        print(f"tradeops-release: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"tradeops-release: {exc} (run as root?)", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main_cli())
