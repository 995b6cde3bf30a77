# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backups that are proven restorable: back up, verify (scratch restores), prune, offsite (S3), restore.

Standard library only; boto3 is imported lazily by the offsite functions. This file is the logic of
the ``backup_verify`` module and, shipped to hosts, the ``tradeops-backup`` command (``main_cli``) that
the timers call:

    tradeops-backup --config /etc/tradeops/backup.json backup --verify
    tradeops-backup --config /etc/tradeops/backup.json --json verify --backup-id 20250101T020000Z-db1

A backup set is backed up into ``<backup_root>/<backup_id>/`` (``backup_id`` = ``YYYYmmddTHHMMSSZ-<host>``,
sortable): PostgreSQL ``pg_dump -Fc`` per database (counts taken in the dump's own snapshot), SQLite
through the online backup API, Redis by ``BGSAVE`` then a copy of the RDB, and ``tar.gz`` of directories.
Every stored file is encrypted with ``age`` and the manifest is signed (HMAC-SHA256), both with keys derived
from the set's ``encryption.key_file`` (why, and how: ``tradeops_backup_auth.py``); decrypt one by hand with::

    tradeops-backup --config /etc/tradeops/backup.json decrypt files/config.tar.gz.age -o config.tar.gz

A restore takes its targets (database, paths) from the configuration only, refuses an item the configuration
does not name, and refuses a backup whose manifest does not verify; backups made before signing (format 1)
only with ``allow_unsigned`` (``--allow-unsigned``).

The run works in ``<backup_root>/.<backup_id>.partial/`` and writes ``manifest.json`` (every file with size
and sha256, table row counts, key counts, versions, host, start/end) last, atomically, then renames the
directory: a backup without a manifest is incomplete and never trusted; on any error the partial directory
is removed and earlier backups are untouched. ``verify.json`` next to the manifest records the last
verification; the newest verified backup is never pruned.

Exit codes of the command: 0 ok; 1 verification failed or a partial result (e.g. the local backup is
done but the offsite copy is not); 2 error (nothing done: bad config, backup failed, unknown backup id);
3 could not check (a verification could not run its checks).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import errno
import fnmatch
import gzip
import hashlib
import json
import os
import re
import secrets as _secrets
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

try:
    from ansible.module_utils import tradeops_backup_auth as auth
    from ansible.module_utils import tradeops_safefs as safefs
    from ansible.module_utils.tradeops_checks import number, seconds, strings, text
    from ansible.module_utils.tradeops_metrics import atomic_write, fsync_dir, try_lock, update_textfile
    from ansible.module_utils.tradeops_probes import CheckError, read_private_file
except ImportError:  # in the ops agent wheel: tradeops_agent/metrics.py, safefs.py (scripts/build_agent.py)
    from tradeops_agent import backup_auth as auth  # type: ignore[no-redef]
    from tradeops_agent import safefs  # type: ignore[no-redef]
    from tradeops_agent.checks import number, seconds, strings, text  # type: ignore[no-redef]
    from tradeops_agent.metrics import atomic_write, fsync_dir, try_lock, update_textfile  # type: ignore[no-redef]
    from tradeops_agent.probes import CheckError, read_private_file  # type: ignore[no-redef]

__version__ = "0.1.0"
TOOL = "tradeops-backup"
MANIFEST = "manifest.json"
VERIFY_FILE = "verify.json"
OFFSITE_FILE = "offsite.json"
SIDE_FILES = (MANIFEST, VERIFY_FILE, OFFSITE_FILE)
FORMAT = 2  # 2: every file age-encrypted, manifest and verify.json signed; 1: unsigned, openssl for secrets
EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_CANNOT_CHECK = 0, 1, 2, 3
OK, FAILED, ERROR, SKIPPED = "ok", "failed", "error", "skipped"
PASSED = "passed"
CIPHER = ["-aes-256-cbc", "-pbkdf2", "-iter", "200000"]  # format 1 (before signing): read only
DECRYPT_HINT = "tradeops-backup --config CONFIG decrypt FILE.age -o FILE"
ENC_SUFFIX = ".age"
LEGACY_ENC_SUFFIX = ".enc"
SCRATCH_PREFIX = "tradeops_verify_"
_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[A-Za-z0-9._-]+\Z")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
# The typed fields of a configuration item (what each kind reads): checked by load_config.
_ITEM_TEXT = ("name", "path", "dbname", "host", "user", "username", "password_file", "passfile", "sslmode", "bindir",
              "maintenance_db", "owner", "rdb_path")
_ITEM_BOOL = ("secret", "no_owner")
_ITEM_SECONDS = ("connect_timeout", "busy_timeout")
_ITEM_LISTS = {"exclude_tables": "audit_log", "exclude": "*.tmp"}
CHUNK = 1 << 20


class BackupError(Exception):
    """Something failed; the message says what and what to do (never a secret)."""


class ConfigError(BackupError):
    """The configuration is invalid."""


class CannotCheck(BackupError):
    """A verification could not run (tool missing, server unreachable)."""


# --------------------------------------------------------------------------- small helpers


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime | float) -> str:
    if isinstance(moment, int | float):
        moment = dt.datetime.fromtimestamp(moment, dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_json(path: str | Path, data: Any, mode: int = 0o600) -> None:
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode)


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "********")
    return text


def _tail(text: str, lines: int = 8) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


def _disk_hint(exc: OSError, where: str) -> str:
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return (f"no space left (or file size limit) while writing under {where}: free space there, lower the "
                "local retention (tradeops-backup prune) or move backup_root")
    return f"{exc.strerror or exc} ({getattr(exc, 'filename', '') or where})"


def _which(tool: str, bindir: str | None = None) -> str:
    if bindir:
        candidate = os.path.join(bindir, tool)
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(tool)
    if not found:
        raise CannotCheck(f"{tool} is not installed (or not on PATH): install it (Debian: "
                          f"{_PACKAGE_HINT.get(tool, tool)})")
    return found


_PACKAGE_HINT = {
    "pg_dump": "postgresql-client", "pg_restore": "postgresql-client", "psql": "postgresql-client",
    "redis-server": "redis-server", "redis-check-rdb": "redis-tools", "openssl": "openssl",
    "age": "age",
}


def run_tool(argv: list[str], what: str, env: dict[str, str] | None = None, timeout: float = 3600,
             secrets: Sequence[str] = (), stdout: Any = subprocess.PIPE, pass_fds: Sequence[int] = (),
             stdin: Any = subprocess.DEVNULL) -> subprocess.CompletedProcess:
    """Run a tool; raise BackupError naming ``what`` with the end of its stderr (secrets redacted)."""
    try:
        proc = subprocess.run(argv, env=env, stdout=stdout, stderr=subprocess.PIPE, timeout=timeout, check=False,
                              stdin=stdin, pass_fds=tuple(pass_fds))
    except subprocess.TimeoutExpired as exc:
        raise BackupError(f"{what}: {os.path.basename(argv[0])} did not finish within {timeout:.0f} s") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace") if isinstance(proc.stderr, bytes) else proc.stderr or ""
        raise BackupError(redact(f"{what}: {os.path.basename(argv[0])} exit {proc.returncode}: {_tail(err)}",
                                 secrets))
    return proc


def _read_secret_file(path: str, what: str) -> str:
    try:
        value = read_private_file(path, what).rstrip("\r\n")
    except CheckError as exc:
        raise ConfigError(str(exc)) from exc
    if not value:
        raise ConfigError(f"{what}: {path} is empty")
    return value


# --------------------------------------------------------------------------- configuration

_DEFAULTS: dict[str, Any] = {
    "set": "default",
    "host": None,
    "postgresql": [],
    "sqlite": [],
    "redis": [],
    "paths": [],
    "encryption": {},
    "retention": {"keep_days": 7, "keep_count": 7},
    "offsite": None,
    "metrics_dir": None,
    "verify": {"max_age_hours": 26.0, "scratch_restore": True, "offsite": True},
    "timeouts": {"tool": 3600.0, "redis_bgsave": 600.0},
}
_OFFSITE_DEFAULTS: dict[str, Any] = {
    "bucket": None, "prefix": "tradeops", "endpoint_url": None, "region": "us-east-1",
    "access_key_id": None, "secret_access_key_file": None,
    "server_side_encryption": None, "sse_kms_key_id": None, "storage_class": None,
    "multipart_threshold_mb": 64, "multipart_chunksize_mb": 16, "download_verify_max_mb": 16,
    "attempts": 4, "backoff": 1.0, "max_backoff": 30.0, "connect_timeout": 10.0, "read_timeout": 60.0,
    "path_style": True, "retention": None,
}


def module_config(config: str | None, settings: dict[str, Any] | None) -> dict[str, Any]:
    """The configuration a module is given: the JSON file ``config`` (when set) with the
    module's ``settings`` laid over it, checked by load_config."""
    raw: dict[str, Any] = {}
    if config:
        raw = read_json(config)
        if not isinstance(raw, dict):
            raise BackupError(f"{config} must hold a JSON object")
    raw.update(copy.deepcopy(settings or {}))
    return load_config(raw)


def load_config(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """The configuration (a JSON file or a dict) with defaults filled in; ConfigError when invalid."""
    if isinstance(source, dict):
        raw = dict(source)
    else:
        try:
            raw = read_json(source)
        except OSError as exc:
            raise ConfigError(f"cannot read the configuration {source}: {exc.strerror}") from exc
        except ValueError as exc:
            raise ConfigError(f"the configuration {source} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError("the configuration must be a JSON object")
    unknown = set(raw) - set(_DEFAULTS) - {"backup_root"}
    if unknown:
        raise ConfigError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
    if not raw.get("backup_root"):
        raise ConfigError("backup_root is required (the local directory that holds the backups)")
    text(raw["backup_root"], "backup_root", error=ConfigError)
    for key in ("set", "host"):
        if raw.get(key) is not None:
            text(raw[key], key, error=ConfigError)
    for key in ("retention", "verify", "timeouts", "encryption"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise ConfigError(f"{key} must be an object, got {raw[key]!r}")
    cfg = json.loads(json.dumps(_DEFAULTS))
    for key, value in raw.items():
        if isinstance(cfg.get(key), dict) and isinstance(value, dict) and key != "offsite":
            cfg[key].update(value)
        elif value is not None or key in ("offsite", "metrics_dir", "host"):
            cfg[key] = value
    cfg["backup_root"] = os.path.abspath(str(cfg["backup_root"]))
    cfg["host"] = cfg["host"] or socket.gethostname().split(".")[0]
    if not _NAME_RE.match(cfg["set"]) or not re.match(r"^[A-Za-z0-9._-]+\Z", cfg["host"]):
        raise ConfigError(f"set {cfg['set']!r} and host {cfg['host']!r} may hold letters, digits, '.', '_' and '-' "
                          "only")
    names: set[str] = set()
    for kind in ("postgresql", "sqlite", "redis", "paths"):
        if not isinstance(cfg[kind], list):
            raise ConfigError(f"{kind} must be a list")
        for item in cfg[kind]:
            if not isinstance(item, dict):
                raise ConfigError(f"{kind}: each entry must be an object")
            _check_item(kind, item)
            if kind == "postgresql":
                item.setdefault("name", item.get("dbname"))
                item.setdefault("dbname", item.get("name"))
            elif kind in ("sqlite", "paths") and not item.get("path"):
                raise ConfigError(f"{kind} entry {item.get('name')!r}: path is required")
            elif kind == "redis":
                item.setdefault("name", "redis")
            if kind in ("sqlite", "paths"):
                item.setdefault("name", Path(item["path"]).stem or "root")
            name = item.get("name")
            if not name or not _NAME_RE.match(str(name)):
                raise ConfigError(f"{kind} entry {name!r}: name must match {_NAME_RE.pattern}")
            if name in names:
                raise ConfigError(f"item name {name!r} is used twice: names must be unique in a backup set")
            names.add(name)
            if item.get("secret") and not cfg["encryption"].get("key_file"):
                raise ConfigError(f"{kind} entry {name!r} is secret: encryption.key_file is required")
    ret = cfg["retention"]
    for key in ("keep_days", "keep_count"):
        if ret.get(key) is not None:
            number(ret[key], f"retention.{key} (null for no limit)", error=ConfigError, minimum=0,
                   integer=key == "keep_count")
    _check_sections(cfg)
    if cfg["offsite"] is not None:
        if not isinstance(cfg["offsite"], dict):
            raise ConfigError("offsite must be an object (or null)")
        off = dict(_OFFSITE_DEFAULTS)
        unknown = set(cfg["offsite"]) - set(off)
        if unknown:
            raise ConfigError(f"unknown offsite keys: {', '.join(sorted(unknown))}")
        off.update({k: v for k, v in cfg["offsite"].items() if v is not None})
        if not off["bucket"]:
            raise ConfigError("offsite.bucket is required when offsite is set")
        off["prefix"] = str(off["prefix"]).strip("/")
        if off["retention"] is None:
            off["retention"] = dict(cfg["retention"])
        cfg["offsite"] = off
    return cfg


def _check_item(kind: str, item: dict[str, Any]) -> None:
    """The typed fields of one configuration item: a string where a string is read, a list of strings where a
    list is (a lone string would be iterated by character), a bool, a port, a number of seconds."""
    where = f"{kind} entry {item.get('name')!r}"
    for key in _ITEM_TEXT:
        if item.get(key) is not None:
            text(item[key], f"{where}: {key}", error=ConfigError)
    for key in _ITEM_BOOL:
        if item.get(key) is not None and not isinstance(item[key], bool):
            raise ConfigError(f"{where}: {key} must be true or false, got {item[key]!r}")
    for key in _ITEM_SECONDS:
        if item.get(key) is not None:
            seconds(item[key], f"{where}: {key}", error=ConfigError)
    if item.get("port") is not None:
        number(item["port"], f"{where}: port", error=ConfigError, integer=True, minimum=1, maximum=65535)
    for key, example in _ITEM_LISTS.items():
        if item.get(key) is not None:
            strings(item[key], f"{where}: {key}", error=ConfigError, example=example)


def _check_sections(cfg: dict[str, Any]) -> None:
    """verify, timeouts and encryption: numbers of hours and seconds that are finite and > 0, bools, a path."""
    vcfg, timeouts = cfg["verify"], cfg["timeouts"]
    if vcfg.get("max_age_hours") is not None:
        number(vcfg["max_age_hours"], "verify.max_age_hours (null for no limit)", error=ConfigError, minimum=0)
    for key in ("scratch_restore", "offsite"):
        if not isinstance(vcfg.get(key, True), bool):
            raise ConfigError(f"verify.{key} must be true or false, got {vcfg[key]!r}")
    for key in ("tool", "redis_bgsave"):
        seconds(timeouts.get(key), f"timeouts.{key}", error=ConfigError)
    if cfg["encryption"].get("key_file") is not None:
        text(cfg["encryption"]["key_file"], "encryption.key_file", error=ConfigError)


def config_secrets(cfg: dict[str, Any]) -> list[str]:
    """Every secret the configuration points to (to redact them from any message)."""
    found = []
    for item in [*cfg["postgresql"], *cfg["redis"]]:
        if item.get("password_file"):
            with contextlib.suppress(BackupError, OSError):
                found.append(_read_secret_file(item["password_file"], "password"))
    off = cfg.get("offsite") or {}
    if off.get("secret_access_key_file"):
        with contextlib.suppress(BackupError, OSError):
            found.append(_read_secret_file(off["secret_access_key_file"], "secret"))
    return found


class Keys:
    """The set's backup key (``encryption.key_file``): the derived age identity and MAC key
    (``tradeops_backup_auth``), and the file itself for format-1 backups (``openssl -pass file:``)."""

    def __init__(self, key_file: str, set_name: str) -> None:
        _read_secret_file(key_file, "encryption key")  # exists, not empty, mode 0600
        try:
            self.key = auth.BackupKey.from_file(key_file)
        except auth.AuthError as exc:
            raise ConfigError(str(exc)) from None
        self.file = key_file
        self.set_name = set_name


def _keys(cfg: dict[str, Any]) -> Keys:
    key = cfg["encryption"].get("key_file")
    if not key:
        raise ConfigError("encryption.key_file is required: every backup is encrypted (age) and its manifest "
                          "signed with the set's key; set backup_encryption_key (role backup, from ansible-vault)")
    return Keys(key, cfg["set"])


def check_key(cfg: dict[str, Any]) -> str:
    """The key id of the set's key; ConfigError naming encryption.key_file when it is missing or unusable."""
    return _keys(cfg).key.key_id


def _keys_or_none(cfg: dict[str, Any]) -> Keys | None:
    """The set's keys, or None when none is configured or readable (then nothing is trusted as verified)."""
    with contextlib.suppress(BackupError):
        return _keys(cfg)
    return None


# --------------------------------------------------------------------------- encryption


def _openssl(decrypt: bool, key_file: str) -> list[str]:
    return [_which("openssl"), "enc", *(["-d"] if decrypt else ["-salt"]), *CIPHER, "-pass", f"file:{key_file}"]


@contextlib.contextmanager
def _cipher(keys: Keys, decrypt: bool, source: Path | None = None, out: Path | None = None
            ) -> Iterator[tuple[list[str], tuple[int, ...]]]:
    """``(argv, pass_fds)`` of the tool that encrypts (age) or decrypts (age, or openssl for a format-1 ``.enc``
    file) ``source`` (None: standard input) into ``out`` (None: standard output). age reads the derived identity
    from a pipe (``/dev/fd/N``): never on disk, never in argv."""
    if decrypt and source is not None and source.name.endswith(LEGACY_ENC_SUFFIX):
        yield [*_openssl(True, keys.file), "-in", str(source), *(["-out", str(out)] if out else [])], ()
        return
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, keys.key.age_identity().encode() + b"\n")  # < 100 bytes: fits the pipe's buffer
        os.close(write_end)
        write_end = -1
        yield [_which("age"), "-d" if decrypt else "-e", "-i", f"/dev/fd/{read_end}",
               *(["-o", str(out)] if out else []), *([str(source)] if source else [])], (read_end,)
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def encrypt_file(plain: Path, out: Path, keys: Keys) -> None:
    with _cipher(keys, False, plain, out) as (argv, fds):
        run_tool(argv, f"encrypting {plain.name}", pass_fds=fds)


def decrypt_file(enc: Path, out: Path, keys: Keys) -> None:
    with _cipher(keys, True, enc, out) as (argv, fds):
        run_tool(argv, f"decrypting {enc.name} (another set's key, or altered: age authenticates every chunk)",
                 pass_fds=fds)


class _HashingWriter:
    """A write-only file object that hashes and counts what passes through to ``target``."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target, self.sha, self.size = target, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.target.write(data)
        return len(data)

    def flush(self) -> None:
        self.target.flush()


class _HashingReader:
    def __init__(self, source: IO[bytes]) -> None:
        self.source, self.sha, self.size = source, hashlib.sha256(), 0
        self.finish: Callable[[], None] = lambda: None  # _plain_reader: the decryption's verdict, when it is done

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.sha.update(data)
        self.size += len(data)
        return data


@contextlib.contextmanager
def _plain_reader(path: Path, keys: Keys | None) -> Iterator[_HashingReader]:
    """Read a stored file as plain bytes (decrypted by age, or openssl for format 1, when ``keys`` is given)."""
    if keys is None:
        with open(path, "rb") as handle:
            yield _HashingReader(handle)
        return
    with _cipher(keys, True, path) as (argv, fds):
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                pass_fds=fds)
    assert proc.stdout is not None and proc.stderr is not None
    stdout, stderr = proc.stdout, proc.stderr
    reader = _HashingReader(stdout)
    ended: dict[str, Any] = {}

    def finish(drain: bool = True) -> None:
        """Read what is left, wait for the tool and raise BackupError unless every byte was authentic
        (``reader.finish()``: also called by whoever consumed ``reader.source`` directly, before it trusts it)."""
        if not ended:
            try:
                while drain and stdout.read(CHUNK):
                    pass
            finally:
                stdout.close()
                ended["err"] = stderr.read().decode("utf-8", "replace")
                stderr.close()
                ended["code"] = proc.wait()
        if ended["code"] != 0:
            raise BackupError(f"decrypting {path.name} failed (another set's key, or the file was altered: age "
                              f"authenticates every chunk): {_tail(ended['err'], 2)}")

    reader.finish = finish
    try:
        yield reader
    except BaseException:
        with contextlib.suppress(BackupError):
            finish(drain=False)
        raise
    finish()


# --------------------------------------------------------------------------- Redis (RESP2)


class RedisReplyError(BackupError):
    pass


class Resp:
    """The smallest Redis client that does what backups need (RESP2 over one socket)."""

    def __init__(self, host: str, port: int, password: str | None = None, username: str | None = None,
                 timeout: float = 10.0, unix_socket: str | None = None) -> None:
        if unix_socket is None:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            try:
                self.sock.connect(unix_socket)
            except OSError:
                self.sock.close()
                raise
        self.reader = self.sock.makefile("rb")
        try:
            if password is not None:
                self.call(*(["AUTH", username, password] if username else ["AUTH", password]))
        except BaseException:
            self.close()
            raise

    def call(self, *args: str | int) -> Any:
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = str(arg).encode("utf-8")
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _line(self) -> bytes:
        line = self.reader.readline(1 << 20)
        if not line.endswith(b"\r\n"):
            raise BackupError("Redis closed the connection or sent a malformed reply")
        return line[:-2]

    def _reply(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisReplyError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.reader.read(n + 2)
            return data[:-2].decode("utf-8", "replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise BackupError(f"unexpected Redis reply type {kind!r}")

    def info(self, section: str) -> dict[str, str]:
        text = self.call("INFO", section)
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.reader.close()
            self.sock.close()

    def __enter__(self) -> Resp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def keyspace_counts(info: dict[str, str]) -> dict[str, int]:
    """``{"db0": keys, ...}`` from INFO keyspace."""
    counts = {}
    for key, value in info.items():
        if re.match(r"^db\d+\Z", key):
            fields = dict(part.split("=", 1) for part in value.split(","))
            counts[key] = int(fields.get("keys", 0))
    return counts


def check_rdb(path: Path) -> dict[str, int]:
    """``redis-check-rdb``: raise BackupError when the file is damaged; return keys / expires read."""
    proc = run_tool([_which("redis-check-rdb"), str(path)], f"redis-check-rdb {path.name}", timeout=600)
    out = proc.stdout.decode("utf-8", "replace")
    if "RDB looks OK" not in out:
        raise BackupError(f"redis-check-rdb {path.name}: {_tail(out, 3)}")
    found = {k: int(v) for v, k in re.findall(r"\[info\] (\d+) (keys read|expires)", out)}
    return {"keys": found.get("keys read", 0), "expires": found.get("expires", 0)}


# --------------------------------------------------------------------------- PostgreSQL


class Pg:
    """A PostgreSQL connection described by a config item; the password goes to the tools' environment only."""

    def __init__(self, item: dict[str, Any], timeout: float = 3600) -> None:
        self.item, self.timeout = item, timeout
        self.password = _read_secret_file(item["password_file"], f"postgresql {item['name']} password_file") \
            if item.get("password_file") else None
        self.bindir = item.get("bindir")

    @property
    def secrets(self) -> list[str]:
        return [self.password] if self.password else []

    def tool(self, name: str) -> str:
        return _which(name, self.bindir)

    def env(self, dbname: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        item = self.item
        for key, var in (("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER"), ("passfile", "PGPASSFILE"),
                         ("sslmode", "PGSSLMODE")):
            if item.get(key) is not None:
                env[var] = str(item[key])
        env["PGDATABASE"] = dbname or item["dbname"]
        env["PGCONNECT_TIMEOUT"] = str(item.get("connect_timeout", 10))
        env["PGAPPNAME"] = TOOL
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        return env

    def psql(self, sql: str, dbname: str | None = None, what: str = "psql") -> str:
        argv = [self.tool("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]
        return run_tool(argv, what, env=self.env(dbname), timeout=self.timeout, secrets=self.secrets
                        ).stdout.decode("utf-8").strip()

    def maintenance_db(self) -> str:
        return self.item.get("maintenance_db", "postgres")

    def database_exists(self, name: str) -> bool:
        return self.psql(f"SELECT 1 FROM pg_database WHERE datname = {_sql_literal(name)}",  # noqa: S608 - quoted
                         self.maintenance_db(), f"looking up database {name}") == "1"


def _sql_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_TABLES_SQL = (
    "SELECT coalesce(json_agg(json_build_array(n.nspname, c.relname) ORDER BY n.nspname, c.relname), '[]') "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"
)


def _counts_sql(tables: list[list[str]]) -> str:
    if not tables:
        return "SELECT '[]'"
    # identifiers quoted by _sql_ident: names from pg_class, not user input
    parts = [f"SELECT {i} AS i, count(*) AS n FROM {_sql_ident(s)}.{_sql_ident(t)}"  # noqa: S608
             for i, (s, t) in enumerate(tables)]
    return f"SELECT json_agg(json_build_array(i, n) ORDER BY i) FROM ({' UNION ALL '.join(parts)}) AS c"  # noqa: S608


def _counts_from(tables: list[list[str]], rows: str) -> dict[str, int]:
    by_index = {i: n for i, n in json.loads(rows or "[]")}
    return {f"{s}.{t}": int(by_index[i]) for i, (s, t) in enumerate(tables)}


def pg_table_counts(pg: Pg, dbname: str) -> dict[str, int]:
    """Exact ``count(*)`` of every user table of ``dbname``."""
    tables = json.loads(pg.psql(_TABLES_SQL, dbname, f"listing the tables of {dbname}") or "[]")
    return _counts_from(tables, pg.psql(_counts_sql(tables), dbname, f"counting the rows of {dbname}"))


class _PgSession:
    """A psql session holding a REPEATABLE READ transaction whose snapshot pg_dump imports: the counts in
    the manifest describe exactly the data in the dump, even while the application writes."""

    def __init__(self, pg: Pg) -> None:
        self.pg = pg
        self.proc = subprocess.Popen(
            [pg.tool("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"], env=pg.env(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8")

    def query(self, sql: str) -> str:
        """Send SQL whose last statement returns exactly one row of one column; return that line."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(sql.rstrip().rstrip(";") + ";\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        watchdog = threading.Timer(self.pg.timeout, self.proc.kill)  # a hung server must not hang the backup
        watchdog.start()
        try:
            line = self.proc.stdout.readline()
        finally:
            watchdog.cancel()
        if not line:
            raise BackupError(redact(f"psql on {self.pg.item['dbname']}: {self._stderr()}", self.pg.secrets))
        return line.rstrip("\n")

    def _stderr(self) -> str:
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=10)
        err = self.proc.stderr.read() if self.proc.stderr else ""
        return _tail(err) or f"psql exit {self.proc.returncode}"

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin:
                self.proc.stdin.write("COMMIT;\n\\q\n")
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


def backup_postgresql(pg: Pg, out: Path) -> dict[str, Any]:
    dbname = pg.item["dbname"]
    session = _PgSession(pg)
    try:
        snapshot = session.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_export_snapshot()")
        version = session.query("SHOW server_version")
        argv = [pg.tool("pg_dump"), "-Fc", "--no-password", f"--snapshot={snapshot}", "-f", str(out)]
        argv += [f"--exclude-table={t}" for t in pg.item.get("exclude_tables", [])]
        run_tool(argv, f"pg_dump of database {dbname}", env=pg.env(), timeout=pg.timeout, secrets=pg.secrets)
        tables = json.loads(session.query(_TABLES_SQL) or "[]")
        excluded = set(pg.item.get("exclude_tables", []))
        tables = [t for t in tables if f"{t[0]}.{t[1]}" not in excluded and t[1] not in excluded]
        counts = _counts_from(tables, session.query(_counts_sql(tables)))
    finally:
        session.close()
    return {"database": dbname, "server_version": version, "tables": counts}


# --------------------------------------------------------------------------- SQLite


def sqlite_counts(conn: sqlite3.Connection) -> dict[str, int]:
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    return {n: conn.execute(f"SELECT count(*) FROM {_sql_ident(n)}").fetchone()[0] for n in names}  # noqa: S608


def sqlite_integrity(conn: sqlite3.Connection) -> str:
    rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    return "ok" if rows == ["ok"] else "; ".join(rows[:5])


def sqlite_copy(source: Path, target: Path, timeout: float = 60) -> None:
    """Copy ``source`` into ``target`` with the online backup API in one step (a consistent snapshot even
    while other processes write: never a file copy of a live database)."""
    if not source.is_file():
        raise BackupError(f"SQLite database {source} does not exist")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=timeout)
    try:
        dst = sqlite3.connect(str(target))
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file (no -wal / -shm beside it)
        finally:
            dst.close()
    finally:
        src.close()


def backup_sqlite(item: dict[str, Any], out: Path) -> dict[str, Any]:
    source = Path(item["path"])
    try:
        sqlite_copy(source, out, float(item.get("busy_timeout", 60)))
    except sqlite3.Error as exc:
        raise BackupError(f"SQLite backup of {source} failed: {exc}") from exc
    conn = sqlite3.connect(f"file:{out}?mode=ro", uri=True)
    try:
        integrity = sqlite_integrity(conn)
        counts = sqlite_counts(conn)
    finally:
        conn.close()
    if integrity != "ok":
        raise BackupError(f"SQLite database {source} fails PRAGMA integrity_check ({integrity}): repair it first")
    return {"source": str(source), "sqlite_version": sqlite3.sqlite_version, "tables": counts}


# --------------------------------------------------------------------------- Redis backup


def _redis_connect(item: dict[str, Any], timeout: float = 10.0) -> Resp:
    password = _read_secret_file(item["password_file"], f"redis {item['name']} password_file") \
        if item.get("password_file") else None
    try:
        return Resp(item.get("host", "127.0.0.1"), int(item.get("port", 6379)), password, item.get("username"),
                    timeout)
    except OSError as exc:
        raise BackupError(f"cannot connect to Redis {item['name']} at {item.get('host', '127.0.0.1')}:"
                          f"{item.get('port', 6379)}: {exc.strerror or exc}") from exc


def backup_redis(item: dict[str, Any], out: Path, deadline_s: float) -> dict[str, Any]:
    name = item["name"]
    with _redis_connect(item) as r:
        server = r.info("server")
        before = r.info("persistence")
        if item.get("rdb_path"):
            rdb = Path(item["rdb_path"])
        else:
            try:
                rdb = Path(r.call("CONFIG", "GET", "dir")[1]) / r.call("CONFIG", "GET", "dbfilename")[1]
            except (RedisReplyError, IndexError) as exc:
                raise BackupError(f"Redis {name}: CONFIG GET is not allowed ({exc}); set rdb_path for this item")\
                    from exc
        live = keyspace_counts(r.info("keyspace"))
        deadline = time.monotonic() + deadline_s
        while True:  # a BGSAVE already running was started before us: wait for it, then start ours
            before = r.info("persistence")
            try:
                r.call("BGSAVE")
                break
            except RedisReplyError as exc:
                if "in progress" not in str(exc) or time.monotonic() > deadline:
                    raise BackupError(f"Redis {name}: BGSAVE refused: {exc}") from exc
                time.sleep(0.1)
        saves_before = int(before.get("rdb_saves", -1))
        lastsave_before = int(before.get("rdb_last_save_time", 0))
        pause = 0.02
        while True:
            state = r.info("persistence")
            done = state.get("rdb_bgsave_in_progress") == "0" and (
                int(state.get("rdb_saves", -1)) > saves_before if saves_before >= 0
                else int(state.get("rdb_last_save_time", 0)) != lastsave_before)
            if done:
                break
            if time.monotonic() > deadline:
                raise BackupError(f"Redis {name}: BGSAVE did not finish within {deadline_s:.0f} s")
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
        if state.get("rdb_last_bgsave_status") != "ok":
            raise BackupError(f"Redis {name}: BGSAVE failed (rdb_last_bgsave_status="
                              f"{state.get('rdb_last_bgsave_status')}): see the Redis log (disk full?)")
    try:
        with open(rdb, "rb") as src, open(out, "wb") as dst:  # the renamed, complete RDB of our BGSAVE (or newer)
            shutil.copyfileobj(src, dst, CHUNK)
    except FileNotFoundError as exc:
        raise BackupError(f"Redis {name}: the RDB file {rdb} does not exist; set rdb_path for this item") from exc
    rdb_info = check_rdb(out)
    return {"server_version": server.get("redis_version", ""), "source": str(rdb), "keys": live,
            "rdb_keys": rdb_info["keys"], "rdb_expires": rdb_info["expires"]}


# --------------------------------------------------------------------------- directories


def _excluded(rel: str, patterns: Sequence[str], skip: set[str], full: str) -> bool:
    if full in skip:
        return True
    base = os.path.basename(rel)
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(base, p) for p in patterns)


def backup_paths(item: dict[str, Any], out: Path, keys: Keys | None, skip: set[str]) -> dict[str, Any]:
    """tar.gz of a directory (or one file) streamed to ``out`` (through age when ``keys``): the plain archive
    never touches the disk. Read by safefs.pack_tree: never through a link the app's user swaps
    in while it is archived."""
    root = Path(item["path"])
    if not root.exists():
        raise BackupError(f"path {root} of item {item['name']!r} does not exist")
    patterns = list(item.get("exclude", []))
    members = 0
    handle: IO[bytes]
    proc = None
    if keys:
        with _cipher(keys, False, None, out) as (argv, fds):
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, pass_fds=fds)
        assert proc.stdin is not None
        handle = proc.stdin
    else:
        handle = open(out, "wb")  # noqa: SIM115 - closed in the finally below
    writer = _HashingWriter(handle)
    broken = False
    try:
        with gzip.GzipFile(fileobj=writer, mode="wb", compresslevel=6, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            members = safefs.pack_tree(tar, str(root), lambda rel, full: _excluded(rel, patterns, skip, full))
    except BrokenPipeError:
        broken = True  # age stopped reading: its exit status and message (below) say why
    finally:
        if proc is None:
            handle.close()  # a failing flush (disk full) is reported by the caller
        else:
            with contextlib.suppress(BrokenPipeError):  # age's own exit status tells what happened
                handle.close()
            err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
            if proc.stderr:
                proc.stderr.close()
            if proc.wait() != 0 or broken:
                if re.search(r"no space left|file too large|quota exceeded", err, re.IGNORECASE):
                    raise BackupError(f"encrypting {item['name']}: age: " + _disk_hint(
                        OSError(errno.ENOSPC, "no space left"), str(out.parent)))
                how = f"exit {proc.returncode}" if proc.returncode >= 0 else f"killed by signal {-proc.returncode}"
                raise BackupError(f"encrypting {item['name']}: age {how}: {_tail(err) or 'no message'} (when the "
                                  "disk is full: free space under backup_root or lower the local retention)")
    return {"source": str(root), "members": members, "plain_sha256": writer.sha.hexdigest(),
            "plain_size": writer.size}


# --------------------------------------------------------------------------- backup


def _lock(root: Path, wait: float = 0) -> IO[str]:
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle = open(root / ".lock", "a+")  # noqa: SIM115 - returned, closed by the caller
    deadline = time.monotonic() + wait
    while True:
        if try_lock(handle):
            break
        if time.monotonic() >= deadline:
            handle.close()
            raise BackupError(f"another tradeops-backup run holds {root / '.lock'}; wait for it to finish")
        time.sleep(0.2)
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def new_backup_id(root: Path, host: str, now: dt.datetime | None = None) -> str:
    base = f"{(now or utcnow()).strftime('%Y%m%dT%H%M%SZ')}-{host}"
    candidate, n = base, 1
    while (root / candidate).exists() or (root / f".{candidate}.partial").exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _file_entry(directory: Path, rel: str, item: str, encrypted: bool, **extra: Any) -> dict[str, Any]:
    path = directory / rel
    return {"path": rel, "item": item, "size": path.stat().st_size, "sha256": sha256_file(path),
            "encrypted": encrypted, **extra}


def _server_version_sqlite() -> str:
    return sqlite3.sqlite_version


def run_backup(cfg: dict[str, Any], now: dt.datetime | None = None) -> dict[str, Any]:
    """Back up the set into a new ``<backup_root>/<backup_id>/``; return the manifest.

    On any error the partial directory is removed and BackupError says what failed (earlier backups untouched).
    """
    root = Path(cfg["backup_root"])
    started = time.time()
    lock = _lock(root)
    old_umask = os.umask(0o077)
    partial: Path | None = None
    secrets = config_secrets(cfg)
    try:
        _remove_stale_partials(root)
        backup_id = new_backup_id(root, cfg["host"], now)
        partial = root / f".{backup_id}.partial"
        partial.mkdir(mode=0o700)
        keys = _keys(cfg)  # every file is encrypted and the manifest signed: no key, no backup
        files: list[dict[str, Any]] = []
        items: list[dict[str, Any]] = []
        timeout = float(cfg["timeouts"]["tool"])

        def store(kind: str, item: dict[str, Any], rel: str, make: Callable[[Path], dict[str, Any]]) -> None:
            (partial / kind).mkdir(exist_ok=True)
            secret = True  # everything: a dump in the bucket is as private as the config (tradeops_backup_auth)
            streamed = kind == "files"  # archives are encrypted while streamed
            target = partial / (rel + ENC_SUFFIX if streamed else rel)
            info = make(target)
            extra: dict[str, Any] = {}
            if secret and not streamed:
                extra["plain_sha256"], extra["plain_size"] = sha256_file(target), target.stat().st_size
                encrypt_file(target, target.with_name(target.name + ENC_SUFFIX), keys)
                target.unlink()
                rel += ENC_SUFFIX
            elif secret:
                extra["plain_sha256"], extra["plain_size"] = info.pop("plain_sha256"), info.pop("plain_size")
                rel += ENC_SUFFIX
            else:
                info.pop("plain_sha256", None)
                info.pop("plain_size", None)
            files.append(_file_entry(partial, rel, item["name"], secret, **extra))
            items.append({"name": item["name"], "kind": kind, "file": rel, "encrypted": secret, **info})

        def guarded(kind: str, name: str, func: Callable[[], None]) -> None:
            try:
                func()
            except BackupError as exc:
                raise BackupError(f"{kind} item {name!r}: {exc}") from exc
            except OSError as exc:
                raise BackupError(f"{kind} item {name!r}: {_disk_hint(exc, str(root))}") from exc

        for item in cfg["postgresql"]:
            pg = Pg(item, timeout)
            secrets += pg.secrets
            guarded("postgresql", item["name"], lambda item=item, pg=pg: store(
                "postgresql", item, f"postgresql/{item['name']}.dump", lambda p, pg=pg: backup_postgresql(pg, p)))
        for item in cfg["sqlite"]:
            guarded("sqlite", item["name"], lambda item=item: store(
                "sqlite", item, f"sqlite/{item['name']}.sqlite3", lambda p, item=item: backup_sqlite(item, p)))
        for item in cfg["redis"]:
            guarded("redis", item["name"], lambda item=item: store(
                "redis", item, f"redis/{item['name']}.rdb",
                lambda p, item=item: backup_redis(item, p, float(cfg["timeouts"]["redis_bgsave"]))))
        skip = set()
        for item in cfg["sqlite"]:  # live databases inside data/ are backed up through the API, not tar
            full = os.path.abspath(item["path"])
            skip.update({full, f"{full}-wal", f"{full}-shm", f"{full}-journal"})
        for item in cfg["paths"]:
            guarded("paths", item["name"], lambda item=item: store(
                "files", item, f"files/{item['name']}.tar.gz",
                lambda p, item=item: backup_paths(item, p, keys, skip)))
        finished = time.time()
        manifest = {
            "format": FORMAT, "tool": TOOL, "tool_version": __version__, "backup_id": backup_id, "set": cfg["set"],
            "host": cfg["host"], "started": iso(started), "finished": iso(finished),
            "duration": round(finished - started, 3), "outcome": "complete",
            "bytes": sum(f["size"] for f in files), "files": files, "items": items,
            "versions": {"python": sys.version.split()[0], "sqlite": _server_version_sqlite(),
                         "age": _age_version()},
            "encryption": {"method": "age (X25519, ChaCha20-Poly1305), identity derived from encryption.key_file",
                           "decrypt": DECRYPT_HINT},
        }
        manifest = auth.sign(manifest, keys.key)  # over every file's size and sha256: tampering shows
        try:
            atomic_write_json(partial / MANIFEST, manifest)  # last: without it the backup is incomplete
            os.rename(partial, root / backup_id)
        except OSError as exc:
            raise BackupError(f"writing the manifest: {_disk_hint(exc, str(root))}") from exc
        fsync_dir(root)
        partial = None
        return manifest
    except BackupError as exc:
        raise BackupError(redact(f"backup of set {cfg['set']!r} failed: {exc}", secrets)) from None
    except OSError as exc:
        raise BackupError(f"backup of set {cfg['set']!r} failed: {_disk_hint(exc, str(root))}") from None
    finally:
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
        os.umask(old_umask)
        lock.close()


def _age_version() -> str:
    with contextlib.suppress(Exception):
        return run_tool([_which("age"), "--version"], "age --version", timeout=10).stdout.decode().strip()
    return ""


def _remove_stale_partials(root: Path) -> list[str]:
    """Partial directories left by killed runs (we hold the lock: no run is writing them)."""
    removed = []
    for path in root.glob(".*.partial"):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed


# --------------------------------------------------------------------------- listing


def load_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        manifest = read_json(directory / MANIFEST)
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("outcome") != "complete" or "files" not in manifest:
        return None
    return manifest


_KINDS = {"postgresql": ".dump", "sqlite": ".sqlite3", "redis": ".rdb", "files": ".tar.gz"}


def _check_layout(manifest: dict[str, Any], what: str) -> None:
    """The manifest's shape: every file a safe relative name under its kind's directory with a size and a
    sha256, every item of a known kind pointing at one of those files (an unsigned one is read too)."""
    files, items = manifest.get("files"), manifest.get("items")
    if not isinstance(files, list) or not isinstance(items, list):
        raise BackupError(f"{what} has no files/items lists: refused")
    names = set()
    for entry in files:
        rel = entry.get("path") if isinstance(entry, dict) else None
        if (not isinstance(rel, str) or not re.match(r"^(postgresql|sqlite|redis|files)/[A-Za-z0-9][A-Za-z0-9._-]*\Z",
                                                      rel) or ".." in rel
                or not isinstance(entry.get("size"), int) or not isinstance(entry.get("sha256"), str)):
            raise BackupError(f"{what} lists an invalid file {str(entry)[:120]}: refused")
        names.add(rel)
    for item in items:
        if (not isinstance(item, dict) or item.get("kind") not in _KINDS or item.get("file") not in names
                or not isinstance(item.get("name"), str) or not _NAME_RE.match(item["name"])):
            raise BackupError(f"{what} lists an invalid item {str(item)[:120]}: refused")


def check_manifest(manifest: Any, backup_id: str, keys: Keys | None, allow_unsigned: bool = False) -> str | None:
    """Raise BackupError unless ``manifest`` is signed with the set's key (or is unsigned, format 1, and
    ``allow_unsigned``), names ``backup_id`` and the set, and is well formed. Returns its MAC (None for an
    unsigned one accepted by ``allow_unsigned``)."""
    what = f"the manifest of backup {backup_id}"
    try:
        mac: str | None = auth.check(manifest, keys.key if keys else None, what)
    except auth.Unsigned as exc:
        if not allow_unsigned:
            raise BackupError(str(exc)) from None
        mac = None
    except auth.AuthError as exc:
        raise BackupError(str(exc)) from None
    if manifest.get("backup_id") != backup_id:
        raise BackupError(f"{what} names backup {str(manifest.get('backup_id'))[:80]!r}: a backup copied under "
                          "another id; refused")
    if keys is not None and manifest.get("set") != keys.set_name:
        raise BackupError(f"{what} belongs to set {str(manifest.get('set'))[:80]!r}, this configuration's set is "
                          f"{keys.set_name!r}: refused")
    _check_layout(manifest, what)
    return mac


def check_record(record: Any, backup_id: str, manifest_mac: str | None, keys: Keys | None) -> bool:
    """True when ``record`` (a ``verify.json``) is signed with the set's key, is about ``backup_id`` and the
    manifest whose MAC is ``manifest_mac``, and says passed. A bare object from the bucket never is."""
    if manifest_mac is None or keys is None:
        return False
    try:
        auth.check(record, keys.key, f"the verification record of backup {backup_id}")
    except auth.AuthError:
        return False
    return (record.get("backup_id") == backup_id and record.get("manifest_mac") == manifest_mac
            and record.get("status") == PASSED)


def backup_status(directory: Path, keys: Keys | None = None) -> dict[str, Any]:
    """A local backup: ``complete`` (has a manifest), ``authentic`` (the manifest verifies with ``keys``),
    ``verified`` (authentic, and its signed verification record says passed)."""
    manifest = load_manifest(directory)
    verify = offsite = None
    with contextlib.suppress(OSError, ValueError):
        verify = read_json(directory / VERIFY_FILE)
    with contextlib.suppress(OSError, ValueError):
        offsite = read_json(directory / OFFSITE_FILE)
    mac = None
    if manifest is not None and keys is not None:
        with contextlib.suppress(BackupError):
            mac = check_manifest(manifest, directory.name, keys)
    verify = verify if isinstance(verify, dict) else None
    return {
        "backup_id": directory.name, "path": str(directory), "complete": manifest is not None,
        "finished": manifest.get("finished") if manifest else None,
        "bytes": manifest.get("bytes") if manifest else None,
        "authentic": mac is not None,
        "verified": check_record(verify, directory.name, mac, keys),
        "verify_status": verify.get("status") if verify else None,
        "verified_at": verify.get("verified_at") if verify else None,
        "offsite": offsite.get("status") if isinstance(offsite, dict) else None,
    }


def list_backups(root: str | Path, keys: Keys | None = None) -> list[dict[str, Any]]:
    """Local backups (complete and incomplete), newest first; dot-directories (runs in progress) are ignored.
    Without ``keys`` none is authentic nor verified."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [backup_status(p, keys) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(found, key=lambda b: b["backup_id"], reverse=True)


def resolve_backup(root: Path, backup_id: str | None, keys: Keys | None = None) -> Path:
    backups = [b for b in list_backups(root, keys) if b["complete"]]
    if backup_id in (None, "", "latest"):
        if not backups:
            raise BackupError(f"no complete backup in {root}")
        return Path(backups[0]["path"])
    if backup_id == "latest-verified":
        for b in backups:
            if b["verified"]:
                return Path(b["path"])
        raise BackupError(f"no verified backup in {root}")
    if backup_id not in {b["backup_id"] for b in backups}:
        ids = ", ".join(b["backup_id"] for b in backups) or "none"
        raise BackupError(f"unknown backup_id {backup_id!r}; available: {ids}")
    return root / backup_id


# --------------------------------------------------------------------------- retention


def plan_retention(backups: list[dict[str, Any]], keep_days: float | None, keep_count: int | None,
                   now: float | None = None) -> tuple[list[str], list[str]]:
    """(keep, delete) backup ids. A complete backup is kept when it is one of the ``keep_count`` newest or
    younger than ``keep_days`` (a null limit keeps everything); the newest verified backup is always kept.
    Incomplete ones are deleted."""
    now = time.time() if now is None else now
    complete = sorted((b for b in backups if b["complete"]), key=lambda b: b["backup_id"], reverse=True)
    protected = next((b["backup_id"] for b in complete if b["verified"]), None)
    keep, delete = [], []
    for rank, b in enumerate(complete):
        age_days = (now - parse_iso(b["finished"])) / 86400 if b.get("finished") else 0.0
        by_count = keep_count is not None and rank < keep_count
        by_age = keep_days is not None and age_days < keep_days
        unlimited = keep_count is None and keep_days is None
        (keep if unlimited or by_count or by_age or b["backup_id"] == protected else delete).append(b["backup_id"])
    delete += [b["backup_id"] for b in backups if not b["complete"]]
    return keep, delete


def prune_local(cfg: dict[str, Any], dry_run: bool = False, now: float | None = None) -> dict[str, Any]:
    root = Path(cfg["backup_root"])
    ret = cfg["retention"]
    lock = _lock(root, wait=60)
    try:
        keep, delete = plan_retention(list_backups(root, _keys_or_none(cfg)), ret.get("keep_days"),
                                      ret.get("keep_count"), now)
        if not dry_run:
            for backup_id in delete:
                shutil.rmtree(root / backup_id)
            _remove_stale_partials(root)
    finally:
        lock.close()
    return {"kept": keep, "deleted": delete, "dry_run": dry_run}


# --------------------------------------------------------------------------- verify

class Report:
    def __init__(self, backup_id: str) -> None:
        self.backup_id = backup_id
        self.checks: list[dict[str, str]] = []
        self.started = time.monotonic()

    def add(self, item: str, check: str, status: str, detail: str) -> str:
        self.checks.append({"item": item, "check": check, "status": status, "detail": detail})
        return status

    def run(self, item: str, check: str, func: Callable[[], str], secrets: Sequence[str] = ()) -> str:
        try:
            return self.add(item, check, OK, func())
        except CannotCheck as exc:
            return self.add(item, check, ERROR, redact(str(exc), secrets))
        except (BackupError, sqlite3.Error, tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as exc:
            return self.add(item, check, FAILED, redact(f"{exc}", secrets))

    @property
    def status(self) -> str:
        statuses = {c["status"] for c in self.checks}
        return FAILED if FAILED in statuses else ERROR if ERROR in statuses else PASSED

    def failing(self, status: str) -> list[str]:
        return list(dict.fromkeys(c["item"] for c in self.checks if c["status"] == status))

    def as_dict(self) -> dict[str, Any]:
        return {"backup_id": self.backup_id, "status": self.status, "checks": self.checks,
                "failed_items": self.failing(FAILED), "error_items": self.failing(ERROR),
                "verified_at": iso(time.time()), "elapsed": round(time.monotonic() - self.started, 3)}

    def message(self) -> str:
        bad = [f"{c['item']} ({c['check']}: {c['detail']})" for c in self.checks if c["status"] in (FAILED, ERROR)]
        return f"backup {self.backup_id} {self.status}" + (": " + "; ".join(bad) if bad else "")


def _scratch_plain(directory: Path, entry: dict[str, Any], scratch: Path, keys: Keys | None) -> Path:
    """The stored file as a plain file (decrypted into ``scratch`` when encrypted)."""
    stored = directory / entry["path"]
    if not entry.get("encrypted"):
        return stored
    if keys is None:
        raise CannotCheck(f"{entry['path']} is encrypted and no encryption.key_file is configured")
    plain = scratch / Path(entry["path"]).name.rsplit(".", 1)[0]
    decrypt_file(stored, plain, keys)
    if sha256_file(plain) != entry.get("plain_sha256"):
        raise BackupError("decrypted content differs from the sha256 recorded at backup time")
    return plain


def _compare_counts(kind: str, expected: dict[str, int], actual: dict[str, int]) -> str:
    if expected != actual:
        diff = [f"{k}: manifest {expected.get(k)} restored {actual.get(k)}"
                for k in sorted(set(expected) | set(actual)) if expected.get(k) != actual.get(k)]
        raise BackupError(f"{kind} counts differ from the manifest: " + ", ".join(diff[:10]))
    return f"{len(actual)} tables, {sum(actual.values())} rows equal to the manifest"


def _verify_pg(pg: Pg, dump: Path, item: dict[str, Any], scratch_restore: bool) -> Callable[[], str]:
    def check() -> str:
        run_tool([pg.tool("pg_restore"), "--list", str(dump)], f"pg_restore --list {dump.name}", timeout=600)
        if not scratch_restore:
            return "archive readable (pg_restore --list)"
        name = f"{SCRATCH_PREFIX}{item['name'][:20]}_{_secrets.token_hex(4)}".lower()
        admin = pg.maintenance_db()
        try:
            pg.psql(f"CREATE DATABASE {_sql_ident(name)}", admin, f"creating the scratch database {name}")
        except BackupError as exc:
            raise CannotCheck(f"cannot create a scratch database (the user needs CREATEDB): {exc}") from exc
        try:
            run_tool([pg.tool("pg_restore"), "--no-owner", "--no-acl", "--exit-on-error", "--no-password",
                      "-d", name, str(dump)], f"pg_restore into {name}", env=pg.env(name), timeout=pg.timeout,
                     secrets=pg.secrets)
            counts = pg_table_counts(pg, name)
        finally:
            with contextlib.suppress(BackupError):
                pg.psql(f"DROP DATABASE IF EXISTS {_sql_ident(name)} WITH (FORCE)", admin,
                        f"dropping the scratch database {name}")
        return f"restored into scratch database {name} (dropped): " + _compare_counts(
            "table row", item.get("tables", {}), counts)
    return check


def _verify_sqlite(path: Path, item: dict[str, Any], scratch: Path) -> Callable[[], str]:
    def check() -> str:
        copy = scratch / f"{item['name']}.restore.sqlite3"
        sqlite_copy(path, copy)
        conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
        try:
            integrity = sqlite_integrity(conn)
            if integrity != "ok":
                raise BackupError(f"PRAGMA integrity_check: {integrity}")
            counts = sqlite_counts(conn)
        finally:
            conn.close()
        return "integrity_check ok; " + _compare_counts("table row", item.get("tables", {}), counts)
    return check


def load_rdb_keys(rdb: Path, scratch: Path, timeout: float = 120) -> dict[str, int]:
    """Load an RDB copy into a throw-away ``redis-server``; return its keyspace.

    The copy holds production data: the server listens on no TCP port, only on a Unix socket in a
    directory of its own (mode 0700, random name), and wants a random password, which it reads from a
    config file of mode 0600 (never from argv, which /proc/<pid>/cmdline shows every user). The socket's
    directory is under the system's temporary directory: a socket path is limited to 107 bytes, and
    ``scratch`` may be deep."""
    binary = _which("redis-server")
    workdir = scratch / f"redis-{_secrets.token_hex(4)}"
    workdir.mkdir(mode=0o700)
    shutil.copyfile(rdb, workdir / "dump.rdb")
    password = _secrets.token_hex(24)
    sockdir = Path(tempfile.mkdtemp(prefix="tradeops-redis-"))
    sock, log, conf = sockdir / "redis.sock", workdir / "redis.log", workdir / "redis.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"port 0\nunixsocket {sock}\nunixsocketperm 700\nrequirepass {password}\n"
                     f'dir "{workdir}"\ndbfilename dump.rdb\nsave ""\nappendonly no\ndaemonize no\n'
                     f'logfile "{log}"\n')
    proc = subprocess.Popen([binary, str(conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=workdir)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with Resp("", 0, password=password, timeout=5, unix_socket=str(sock)) as r:
                    info = r.info("persistence")
                    if info.get("loading") == "0":
                        keys = keyspace_counts(r.info("keyspace"))
                        with contextlib.suppress(BackupError, OSError):
                            r.call("SHUTDOWN", "NOSAVE")
                        return keys
            except (OSError, RedisReplyError):
                pass
            time.sleep(0.02)
        last = _tail(log.read_text(errors="replace"), 3) if log.exists() else ""
        if proc.poll() is None:
            raise BackupError(f"the throw-away redis-server did not load the RDB within {timeout:.0f} s")
        raise BackupError(f"the throw-away redis-server refused the RDB: {last or 'no log'}")
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(sockdir, ignore_errors=True)


def _verify_redis(path: Path, item: dict[str, Any], scratch: Path, scratch_restore: bool) -> Callable[[], str]:
    def check() -> str:
        info = check_rdb(path)
        if info["keys"] != item.get("rdb_keys"):
            raise BackupError(f"redis-check-rdb read {info['keys']} keys, the manifest says {item.get('rdb_keys')}")
        if not scratch_restore:
            return f"redis-check-rdb ok, {info['keys']} keys"
        loaded = sum(load_rdb_keys(path, scratch).values())
        low = item.get("rdb_keys", 0) - item.get("rdb_expires", 0)
        if not low <= loaded <= item.get("rdb_keys", 0):
            raise BackupError(f"the throw-away redis-server holds {loaded} keys, the manifest says "
                              f"{item.get('rdb_keys')} ({item.get('rdb_expires')} with a TTL)")
        return f"redis-check-rdb ok; loaded into a throw-away redis-server: {loaded} keys (manifest " \
               f"{item.get('rdb_keys')}, {item.get('rdb_expires')} with a TTL)"
    return check


def _verify_archive(path: Path, entry: dict[str, Any], item: dict[str, Any], keys: Keys | None
                    ) -> Callable[[], str]:
    def check() -> str:
        if entry.get("encrypted") and keys is None:
            raise CannotCheck(f"{entry['path']} is encrypted and no encryption.key_file is configured")
        members, plain_sha256 = read_archive(path, keys if entry.get("encrypted") else None)
        if entry.get("encrypted") and plain_sha256 != entry.get("plain_sha256"):
            raise BackupError("decrypted archive differs from the sha256 recorded at backup time")
        if members != item.get("members"):
            raise BackupError(f"archive holds {members} members, the manifest says {item.get('members')}")
        return f"tar.gz readable, {members} members" + (", decrypted with the key" if entry.get("encrypted") else "")
    return check


def _configured(cfg: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """The items the configuration names: ``{name: (manifest kind, item)}`` (paths are stored as kind files)."""
    return {i["name"]: ("files" if kind == "paths" else kind, i)
            for kind in ("postgresql", "sqlite", "redis", "paths") for i in cfg[kind]}


def configured_item(cfg: dict[str, Any], item: dict[str, Any], backup_id: str) -> dict[str, Any]:
    """The configuration's own item for a manifest item (where it is restored to comes from here, never from the
    manifest); BackupError naming the item and the fix when the configuration does not name it, as that kind."""
    found = _configured(cfg).get(item["name"])
    if found is None or found[0] != item["kind"]:
        role_var = {"files": "backup_paths"}.get(item["kind"], f"backup_{item['kind']}")
        now = f" (it names {item['name']!r} as a {found[0]} item)" if found else ""
        raise BackupError(f"backup {backup_id} holds {item['kind']} item {item['name']!r}, which the configuration of "
                          f"set {cfg['set']!r} does not name{now}: refused, nothing restored from it. If it is yours, "
                          f"add it to {role_var} (role backup) and converge; otherwise restore the other items by "
                          "name (--item)")
    return found[1]


def verify_backup(cfg: dict[str, Any], backup_id: str | None = None, scratch_restore: bool | None = None,
                  offsite: bool | None = None, max_age_hours: float | None = None,
                  record: bool = True, allow_unsigned: bool = False) -> dict[str, Any]:
    """Prove a backup restorable. Read-only for production data: scratch restores go into temporary databases,
    copies and servers that are removed afterwards. Returns ``{backup_id, status, checks, failed_items, ...}``
    where status is ``passed``, ``failed`` (a check failed: the items are named) or ``error`` (could not check).

    First the manifest's signature (``authenticity``): one that does not verify fails the backup, named, and
    nothing else is read from it; an unsigned one (format 1) only with ``allow_unsigned``. Then every item must
    be one the configuration names (``configuration``): what a restore refuses never passes here. The record
    (``verify.json``) is signed and bound to the manifest's MAC: only such a record makes a backup verified.
    """
    root = Path(cfg["backup_root"])
    vcfg = cfg["verify"]
    scratch_restore = vcfg.get("scratch_restore", True) if scratch_restore is None else scratch_restore
    offsite = bool(cfg.get("offsite")) and (vcfg.get("offsite", True) if offsite is None else offsite)
    max_age = vcfg.get("max_age_hours") if max_age_hours is None else max_age_hours
    if max_age is not None:
        number(max_age, "max_age_hours", error=ConfigError, minimum=0)
    keys = _keys_or_none(cfg)
    directory = resolve_backup(root, backup_id, keys)
    manifest = load_manifest(directory)
    assert manifest is not None
    report = Report(directory.name)
    secrets = config_secrets(cfg)
    holder: dict[str, str | None] = {}

    def authentic() -> str:
        if keys is None:
            _keys(cfg)  # raises the ConfigError that says why
        holder["mac"] = check_manifest(manifest, directory.name, keys, allow_unsigned)
        return ("manifest signed with the set's key (HMAC-SHA256), every file's sha256 covered"
                if holder["mac"] else "UNSIGNED manifest (format 1) accepted by allow_unsigned")
    if report.run(directory.name, "authenticity", authentic) != OK:
        return _finish(report, directory, None, keys, record)
    for item in manifest["items"]:
        report.run(item["file"], "configuration", lambda item=item: (
            configured_item(cfg, item, directory.name) and "named by the configuration, restored to its target"))
    if max_age is not None:
        def fresh() -> str:
            age = (time.time() - parse_iso(manifest["finished"])) / 3600
            if age > max_age:
                raise BackupError(f"finished {age:.1f} h ago, more than the limit of {max_age} h")
            return f"finished {age:.1f} h ago (limit {max_age} h)"
        report.run(directory.name, "freshness", fresh)
    good: set[str] = set()
    for entry in manifest["files"]:
        def checksum(entry: dict[str, Any] = entry) -> str:
            path = directory / entry["path"]
            if not path.is_file():
                raise BackupError("file is missing")
            size = path.stat().st_size
            if size != entry["size"]:
                raise BackupError(f"size {size} differs from the manifest's {entry['size']} (truncated or damaged)")
            if sha256_file(path) != entry["sha256"]:
                raise BackupError("sha256 differs from the manifest (damaged)")
            return f"{size} bytes, sha256 equal to the manifest"
        if report.run(entry["path"], "checksum", checksum) == OK:
            good.add(entry["path"])
    by_file = {e["path"]: e for e in manifest["files"]}
    items_cfg = _configured(cfg)
    with tempfile.TemporaryDirectory(prefix="tradeops-verify-") as tmp:
        scratch = Path(tmp)
        for item in manifest["items"]:
            entry = by_file[item["file"]]
            label = entry["path"]
            if label not in good:
                report.add(label, "restore", SKIPPED, "not checked further: the checksum failed")
                continue
            path = directory / entry["path"]
            if item["kind"] == "files":
                report.run(label, "archive", _verify_archive(path, entry, item, keys), secrets)
                continue

            def restore(item: dict[str, Any] = item, entry: dict[str, Any] = entry) -> str:
                plain = _scratch_plain(directory, entry, scratch, keys)
                if item["kind"] == "postgresql":
                    kind_cfg = items_cfg.get(item["name"])
                    if kind_cfg is None or kind_cfg[0] != "postgresql":
                        if not scratch_restore:
                            run_tool([_which("pg_restore"), "--list", str(plain)], "pg_restore --list", timeout=600)
                            return "archive readable (pg_restore --list)"
                        raise CannotCheck(f"no postgresql connection named {item['name']!r} is configured for the "
                                          "scratch restore")
                    return _verify_pg(Pg(kind_cfg[1], float(cfg["timeouts"]["tool"])), plain, item,
                                      scratch_restore)()
                if item["kind"] == "sqlite":
                    return _verify_sqlite(plain, item, scratch)()
                if item["kind"] == "redis":
                    return _verify_redis(plain, item, scratch, scratch_restore)()
                raise BackupError(f"unknown item kind {item['kind']!r}")

            report.run(label, "restore" if scratch_restore else "integrity", restore, secrets)
    if offsite:
        try:
            store = S3Store(cfg)
            for entry, status, detail in store.compare(directory.name, manifest):
                report.add(entry, "offsite", status, detail)
        except CannotCheck as exc:
            report.add(directory.name, "offsite", ERROR, redact(str(exc), secrets))
        except BackupError as exc:
            report.add(directory.name, "offsite", FAILED, redact(str(exc), secrets))
    return _finish(report, directory, holder.get("mac"), keys, record)


def _finish(report: Report, directory: Path, manifest_mac: str | None, keys: Keys | None, record: bool
            ) -> dict[str, Any]:
    """The report; recorded in ``verify.json`` signed and bound to the manifest's MAC (when there is a key)."""
    result = report.as_dict()
    if record:
        doc = {**result, "manifest_mac": manifest_mac}
        with contextlib.suppress(OSError):
            atomic_write_json(directory / VERIFY_FILE, auth.sign(doc, keys.key) if keys else doc)
    result["message"] = report.message()
    return result


# --------------------------------------------------------------------------- offsite (S3, boto3)

# Errors that retrying cannot fix (a missing object does not appear by asking again).
# A bare 403 is what S3 answers a HEAD signed with a wrong secret (a HEAD reply has no body to name the cause).
_FATAL_S3 = {"403", "Forbidden", "404", "NoSuchKey", "NotFound", "AccessDenied", "InvalidAccessKeyId",
             "SignatureDoesNotMatch",
             "NoSuchBucket", "InvalidBucketName", "AllAccessDisabled", "InvalidArgument", "InvalidStorageClass",
             "KMS.NotFoundException"}


_S3_CLIENTS: dict[tuple[Any, ...], Any] = {}


class S3Store:
    """The offsite copy: ``s3://<bucket>/<prefix>/<set>/<backup_id>/<file>``, sha256 in the object metadata."""

    def __init__(self, cfg: dict[str, Any], sleep: Callable[[float], None] = time.sleep) -> None:
        off = cfg.get("offsite")
        if not off:
            raise ConfigError("offsite is not configured")
        try:
            import boto3
            from boto3.exceptions import Boto3Error
            from boto3.s3.transfer import TransferConfig
            from botocore.config import Config as BotoConfig
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError as exc:
            raise CannotCheck("boto3 is not installed: install python3-boto3 (Debian) next to tradeops-backup")\
                from exc
        self.cfg, self.off, self.sleep = cfg, off, sleep
        self.keys = _keys_or_none(cfg)
        self.ClientError, self.BotoCoreError, self.Boto3Error = ClientError, BotoCoreError, Boto3Error
        secret = _read_secret_file(off["secret_access_key_file"], "offsite.secret_access_key_file") \
            if off.get("secret_access_key_file") else None
        self.secrets = [secret] if secret else []
        cache_key = (off.get("endpoint_url"), off.get("region"), off.get("access_key_id"),
                     hashlib.sha256((secret or "").encode()).hexdigest(), off["connect_timeout"], off["read_timeout"],
                     bool(off.get("path_style")))
        self.client = _S3_CLIENTS.get(cache_key)
        if self.client is None:  # building a client costs ~0.2 s (service model): one per settings and process
            session = boto3.session.Session(aws_access_key_id=off.get("access_key_id") if secret else None,
                                            aws_secret_access_key=secret, region_name=off.get("region"))
            self.client = _S3_CLIENTS[cache_key] = session.client(
                "s3", endpoint_url=off.get("endpoint_url"), config=BotoConfig(
                    retries={"total_max_attempts": 1}, connect_timeout=float(off["connect_timeout"]),
                    read_timeout=float(off["read_timeout"]),
                    s3={"addressing_style": "path"} if off.get("path_style") else None))
        mib = 1024 * 1024
        self.transfer = TransferConfig(multipart_threshold=int(off["multipart_threshold_mb"] * mib),
                                       multipart_chunksize=int(off["multipart_chunksize_mb"] * mib))
        self.bucket = off["bucket"]
        self.download_max = int(float(off["download_verify_max_mb"]) * mib)
        self.base = "/".join(p for p in (off["prefix"], cfg["set"]) if p)

    # -- plumbing
    def where(self, backup_id: str = "") -> str:
        return f"s3://{self.bucket}/{self.base}/{backup_id}".rstrip("/")

    def key(self, backup_id: str, rel: str) -> str:
        return f"{self.base}/{backup_id}/{rel}"

    def _explain(self, exc: Exception, diagnose: bool = True) -> str:
        if isinstance(exc, self.ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("403", "Forbidden") and diagnose:
                # a HEAD reply has no body: one listing call names the cause (wrong key id, wrong secret, policy)
                try:
                    self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.base}/", MaxKeys=1)
                except self.ClientError as listed:
                    return "403 Forbidden; listing the bucket says " + self._explain(listed, diagnose=False)
                except (self.BotoCoreError, OSError):
                    pass
            hint = {
                "InvalidAccessKeyId": "the endpoint does not know this key id: check offsite.access_key_id "
                                      "(role variable backup_s3_access_key_id)",
                "SignatureDoesNotMatch": "the secret does not belong to the key id: check the secret in "
                                         "offsite.secret_access_key_file (role variable backup_s3_secret_access_key)",
                "AccessDenied": "the credentials may not write this bucket/prefix",
                "403": "refused: check offsite.access_key_id and offsite.secret_access_key_file (wrong secret?), "
                       "and that these credentials may use this bucket/prefix",
                "Forbidden": "refused: check offsite.access_key_id and offsite.secret_access_key_file",
                "NoSuchBucket": "create the bucket or fix offsite.bucket",
            }.get(code, "")
            text = f"{code}: {exc.response.get('Error', {}).get('Message', '')}" + (f" ({hint})" if hint else "")
        else:
            text = f"{type(exc).__name__}: {exc}"
        return redact(text, self.secrets)

    def _unwrap(self, exc: Exception) -> Exception:
        """The S3 error inside boto3's transfer errors (upload_file raises S3UploadFailedError while handling the
        ClientError of a multipart upload; download_file RetriesExceededError around the last error)."""
        if isinstance(exc, self.Boto3Error):
            inner = getattr(exc, "last_exception", None) or exc.__cause__ or exc.__context__
            if isinstance(inner, Exception):
                return inner
        return exc

    def _fatal(self, exc: Exception) -> bool:
        return isinstance(exc, self.ClientError) and exc.response.get("Error", {}).get("Code") in _FATAL_S3

    def retry(self, what: str, func: Callable[[], Any]) -> Any:
        attempts = max(1, int(self.off["attempts"]))
        delay = float(self.off["backoff"])
        for attempt in range(1, attempts + 1):
            try:
                return func()
            except (self.ClientError, self.BotoCoreError, self.Boto3Error, OSError, _Mismatch) as caught:
                exc = self._unwrap(caught)
                if self._fatal(exc) or attempt == attempts:
                    raise BackupError(f"{what} failed after {attempt} attempt(s): {self._explain(exc)}") from None
                self.sleep(min(delay, float(self.off["max_backoff"])))
                delay *= 2
        raise AssertionError("unreachable")

    def head(self, key: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except self.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    # -- operations
    def put_file(self, path: Path, key: str, sha256: str, size: int) -> None:
        extra: dict[str, Any] = {"Metadata": {"sha256": sha256}}
        if self.off.get("server_side_encryption"):
            extra["ServerSideEncryption"] = self.off["server_side_encryption"]
            if self.off.get("sse_kms_key_id"):
                extra["SSEKMSKeyId"] = self.off["sse_kms_key_id"]
        if self.off.get("storage_class"):
            extra["StorageClass"] = self.off["storage_class"]

        def attempt() -> None:
            self.client.upload_file(str(path), self.bucket, key, ExtraArgs=extra, Config=self.transfer)
            self.check_object(key, sha256, size, download=size <= self.download_max)

        self.retry(f"upload of {path.name} to s3://{self.bucket}/{key}", attempt)

    def check_object(self, key: str, sha256: str, size: int, download: bool = False) -> str:
        head = self.head(key)
        if head is None:
            raise _Mismatch("missing offsite")
        if head["ContentLength"] != size:
            raise _Mismatch(f"offsite size {head['ContentLength']} differs from {size}")
        if head.get("Metadata", {}).get("sha256") != sha256:
            raise _Mismatch("offsite sha256 metadata differs from the manifest")
        if download:
            h = hashlib.sha256()
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            for block in iter(lambda: body.read(CHUNK), b""):
                h.update(block)
            if h.hexdigest() != sha256:
                raise _Mismatch("offsite content differs from the manifest (downloaded and hashed)")
            return f"{size} bytes, sha256 equal (downloaded and hashed)"
        return f"{size} bytes, sha256 metadata equal"

    def upload_backup(self, directory: Path) -> dict[str, Any]:
        """Upload what is missing or different of one local backup; the manifest goes last."""
        manifest = load_manifest(directory)
        if manifest is None:
            raise BackupError(f"{directory} has no manifest: an incomplete backup is never uploaded")
        backup_id = directory.name
        uploaded, present = [], []
        for entry in manifest["files"]:
            key = self.key(backup_id, entry["path"])
            try:
                self.retry(f"checking s3://{self.bucket}/{key}",
                           lambda entry=entry: self._check_once(backup_id, entry["path"], entry["sha256"],
                                                                entry["size"], entry["size"] <= self.download_max))
                present.append(entry["path"])
                continue
            except _FinalMismatch:
                pass
            self.put_file(directory / entry["path"], key, entry["sha256"], entry["size"])
            uploaded.append(entry["path"])
        for name in (MANIFEST, VERIFY_FILE):
            path = directory / name
            if path.is_file():
                digest = sha256_file(path)
                size = path.stat().st_size
                key = self.key(backup_id, name)
                try:
                    self.retry(f"checking s3://{self.bucket}/{key}",
                               lambda name=name, d=digest, s=size: self._check_once(backup_id, name, d, s))
                    present.append(name)
                except _FinalMismatch:
                    self.put_file(path, key, digest, size)
                    uploaded.append(name)
        status = {"status": "complete", "uploaded_at": iso(time.time()), "where": self.where(backup_id),
                  "uploaded": uploaded}
        atomic_write_json(directory / OFFSITE_FILE, status)
        return {"backup_id": backup_id, "uploaded": uploaded, "present": present, "where": self.where(backup_id)}

    def put_sidecar(self, directory: Path, name: str = VERIFY_FILE) -> None:
        """Upload ``verify.json`` (the offsite retention keeps the newest verified backup too)."""
        path = directory / name
        if path.is_file():
            self.put_file(path, self.key(directory.name, name), sha256_file(path), path.stat().st_size)

    def compare(self, backup_id: str, manifest: dict[str, Any]) -> list[tuple[str, str, str]]:
        results = []
        for entry in [*manifest["files"], None]:
            if entry is None:
                rel = MANIFEST
                local = Path(self.cfg["backup_root"]) / backup_id / MANIFEST
                digest, size = sha256_file(local), local.stat().st_size
            else:
                rel, digest, size = entry["path"], entry["sha256"], entry["size"]
            try:
                detail = self.retry(f"checking the offsite copy of {rel}",
                                    lambda rel=rel, d=digest, s=size: self._check_once(
                                        backup_id, rel, d, s, download=s <= self.download_max))
                results.append((rel, OK, detail))
            except _FinalMismatch as exc:
                results.append((rel, FAILED, str(exc)))
            except BackupError as exc:
                results.append((rel, ERROR, f"could not check: {exc}"))
        return results

    def _check_once(self, backup_id: str, rel: str, digest: str, size: int, download: bool = False) -> str:
        try:
            return self.check_object(self.key(backup_id, rel), digest, size, download)
        except _Mismatch as exc:
            raise _FinalMismatch(str(exc)) from None

    def _get_json(self, key: str) -> Any:
        def read() -> Any:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            return json.loads(body.read(CHUNK * 16))  # a manifest or record: small; a huge object is not one
        return self.retry(f"reading s3://{self.bucket}/{key}", read)

    def list_backups(self) -> list[dict[str, Any]]:
        """The offsite backups, newest first: ``complete`` (a manifest object exists), ``authentic`` (it verifies
        with the set's key and names this id and set), ``verified`` (authentic, and its ``verify.json`` is signed,
        bound to that manifest and says passed). Whoever can write the bucket can make none of these true."""
        ids: set[str] = set()
        has_manifest: set[str] = set()
        has_record: set[str] = set()

        def scan() -> None:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.base}/"):
                for obj in page.get("Contents", []):
                    parts = obj["Key"][len(self.base) + 1:].split("/", 1)
                    if len(parts) == 2:
                        ids.add(parts[0])
                        if parts[1] == MANIFEST:
                            has_manifest.add(parts[0])
                        if parts[1] == VERIFY_FILE:
                            has_record.add(parts[0])

        self.retry(f"listing {self.where()}", scan)
        out = []
        for backup_id in sorted(ids, reverse=True):
            finished = None
            match = re.match(r"^(\d{8}T\d{6}Z)", backup_id)
            if match:
                finished = iso(dt.datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(
                    tzinfo=dt.UTC))
            mac = None
            if backup_id in has_manifest and self.keys is not None and _ID_RE.match(backup_id):
                with contextlib.suppress(BackupError, ValueError):
                    mac = check_manifest(self._get_json(self.key(backup_id, MANIFEST)), backup_id, self.keys)
            verified = False
            if mac is not None and backup_id in has_record:
                with contextlib.suppress(BackupError, ValueError):
                    verified = check_record(self._get_json(self.key(backup_id, VERIFY_FILE)), backup_id, mac,
                                            self.keys)
            out.append({"backup_id": backup_id, "complete": backup_id in has_manifest, "finished": finished,
                        "authentic": mac is not None, "verified": verified, "where": self.where(backup_id)})
        return out

    def delete_backup(self, backup_id: str) -> int:
        def delete() -> int:
            count = 0
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.key(backup_id, '')}"):
                objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                # the manifest first: a half-deleted backup is incomplete, never trusted
                objects.sort(key=lambda o: not o["Key"].endswith("/" + MANIFEST))
                if objects:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})
                    count += len(objects)
            return count
        return self.retry(f"deleting {self.where(backup_id)}", delete)

    def fetch(self, backup_id: str, root: Path, allow_unsigned: bool = False) -> Path:
        """Download an offsite backup into ``root``: its manifest first, which must verify with the set's key
        (or be unsigned, with ``allow_unsigned``), then every file it names, each checked against it; atomic
        rename."""
        target = root / backup_id
        if not _ID_RE.match(backup_id):
            raise BackupError(f"{backup_id!r} is not a backup id")
        if load_manifest(target) is not None:
            return target
        remote = {b["backup_id"]: b for b in self.list_backups()}
        if backup_id not in remote or not remote[backup_id]["complete"]:
            ids = ", ".join(b for b, v in remote.items() if v["complete"]) or "none"
            raise BackupError(f"no complete offsite backup {backup_id!r} in {self.where()}; available: {ids}")
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = root / f".{backup_id}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(mode=0o700)
        try:
            def get(rel: str) -> None:
                dest = partial / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                self.client.download_file(self.bucket, self.key(backup_id, rel), str(dest), Config=self.transfer)
            self.retry("downloading the manifest", lambda: get(MANIFEST))
            try:
                manifest = read_json(partial / MANIFEST)
            except ValueError as exc:
                raise BackupError(f"the offsite manifest of {backup_id} is not JSON: refused ({exc})") from None
            check_manifest(manifest, backup_id, self.keys, allow_unsigned)
            for entry in manifest["files"]:
                rel = entry["path"]  # checked by check_manifest: <kind>/<name>, no '..'
                self.retry(f"downloading {rel}", lambda rel=rel: get(rel))
                if sha256_file(partial / rel) != entry["sha256"]:
                    raise BackupError(f"downloaded {rel} differs from its manifest sha256")
            with contextlib.suppress(BackupError):
                self.retry("downloading verify.json", lambda: get(VERIFY_FILE))
            os.rename(partial, target)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return target


class _Mismatch(Exception):
    """The offsite object is missing or differs (retried: it may be an eventual-consistency moment)."""


class _FinalMismatch(BackupError):
    pass


def upload_missing(cfg: dict[str, Any], backup_id: str | None = None, store: S3Store | None = None,
                   recheck: bool = False) -> dict[str, Any]:
    """Upload every complete local backup (or one), newest first, whose offsite copy is missing or incomplete.

    Backups whose last upload completed (``offsite.json``) are not looked at again unless ``recheck``
    (``verify`` compares the offsite copy of the backup it checks). A failed upload is recorded in
    ``offsite.json`` and the next run completes it."""
    store = store or S3Store(cfg)
    root = Path(cfg["backup_root"])
    targets = [resolve_backup(root, backup_id)] if backup_id else [
        Path(b["path"]) for b in list_backups(root) if b["complete"] and (recheck or b["offsite"] != "complete")]
    results, errors = [], []
    for directory in targets:
        try:
            results.append(store.upload_backup(directory))
        except BackupError as exc:
            errors.append(f"{directory.name}: {exc}")
            with contextlib.suppress(OSError):
                atomic_write_json(directory / OFFSITE_FILE, {"status": "failed", "failed_at": iso(time.time()),
                                                             "error": str(exc)})
            if "failed after" in str(exc):  # the endpoint is down: do not hammer it for every backup
                break
    return {"uploaded": results, "errors": errors, "status": "failed" if errors else "complete"}


def prune_offsite(cfg: dict[str, Any], dry_run: bool = False, now: float | None = None,
                  store: S3Store | None = None) -> dict[str, Any]:
    store = store or S3Store(cfg)
    ret = cfg["offsite"]["retention"]
    remote = store.list_backups()
    local = {b["backup_id"] for b in list_backups(cfg["backup_root"]) if b["complete"]}
    # an incomplete offsite copy of a local backup is completed by upload, not deleted; backups whose manifest
    # does not verify (planted, or made before signing) take no place among the keep_count newest: a bucket
    # writer's forgeries never push a real backup out. They go by keep_days alone.
    candidates = [b for b in remote if b.get("authentic") or (not b["complete"] and b["backup_id"] not in local)]
    keep, delete = plan_retention(candidates, ret.get("keep_days"), ret.get("keep_count"), now)
    others = [b for b in remote if b["complete"] and not b.get("authentic")]
    other_keep, other_delete = plan_retention(others, ret.get("keep_days"), 0 if ret.get("keep_days") is not None
                                              else None, now)
    keep, delete = keep + other_keep, delete + other_delete
    if not dry_run:
        for backup_id in delete:
            store.delete_backup(backup_id)
    return {"kept": keep, "deleted": delete, "dry_run": dry_run}


# --------------------------------------------------------------------------- restore


def _stored(directory: Path, manifest: dict[str, Any], name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    for item in manifest["items"]:
        if item["name"] == name:
            entry = next(e for e in manifest["files"] if e["path"] == item["file"])
            path = directory / entry["path"]
            if not path.is_file() or path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
                raise BackupError(f"{entry['path']} of backup {directory.name} is missing or damaged; restore "
                                  "another backup or fetch it again from offsite")
            return item, entry
    names = ", ".join(i["name"] for i in manifest["items"])
    raise BackupError(f"backup {directory.name} has no item {name!r}; it has: {names}")


def restore_postgresql(pg: Pg, dump: Path | _HashingReader, target_db: str, confirm: bool = False,
                       expected: dict[str, int] | None = None) -> dict[str, Any]:
    """Restore a dump into ``target_db``: into a new database first, counts compared, then swapped in by
    rename (the old database is dropped). An existing ``target_db`` is replaced only with ``confirm``.

    ``dump`` is a file, or a decrypting reader (``_plain_reader``) that pg_restore reads as its standard input:
    no plain copy of the dump on disk, decryption beside the restore; the reader's verdict (every chunk
    authentic) is awaited before anything is swapped in."""
    admin = pg.maintenance_db()
    exists = pg.database_exists(target_db)
    if exists and not confirm:
        raise BackupError(f"database {target_db} exists; restoring replaces it: pass confirm (-e confirm_restore=true"
                          " / --confirm) after an emergency backup")
    tmp = f"{target_db[:40]}_restore_{_secrets.token_hex(3)}"
    owner = pg.item.get("owner")
    pg.psql(f"CREATE DATABASE {_sql_ident(tmp)}" + (f" OWNER {_sql_ident(owner)}" if owner else ""), admin,
            f"creating {tmp}")
    try:
        argv = [pg.tool("pg_restore"), "--exit-on-error", "--no-password", "-d", tmp,
                *([] if isinstance(dump, _HashingReader) else [str(dump)])]
        if pg.item.get("no_owner", False):
            argv[1:1] = ["--no-owner", "--no-acl"]
        try:
            run_tool(argv, f"pg_restore into {tmp}", env=pg.env(tmp), timeout=pg.timeout, secrets=pg.secrets,
                     stdin=dump.source if isinstance(dump, _HashingReader) else subprocess.DEVNULL)
        finally:
            if isinstance(dump, _HashingReader):
                dump.finish()  # a failed decryption is the cause to report, and it stops the swap
        counts = pg_table_counts(pg, tmp)
        if expected is not None:
            _compare_counts("table row", expected, counts)
        old = f"{target_db[:40]}_pre_restore_{_secrets.token_hex(3)}"
        if exists:
            terminate = ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE pid <> pg_backend_pid() AND datname = ")
            pg.psql(terminate + _sql_literal(target_db), admin, "disconnecting sessions")
            pg.psql(f"ALTER DATABASE {_sql_ident(target_db)} RENAME TO {_sql_ident(old)}", admin,
                    f"renaming {target_db} aside")
        pg.psql(f"ALTER DATABASE {_sql_ident(tmp)} RENAME TO {_sql_ident(target_db)}", admin, f"renaming {tmp}")
        tmp = ""
        if exists:
            pg.psql(f"DROP DATABASE {_sql_ident(old)} WITH (FORCE)", admin, f"dropping {old}")
    finally:
        if tmp:
            with contextlib.suppress(BackupError):
                pg.psql(f"DROP DATABASE IF EXISTS {_sql_ident(tmp)} WITH (FORCE)", admin, f"dropping {tmp}")
    return {"database": target_db, "tables": counts, "replaced": exists}


def restore_sqlite(source: Path, target: Path, confirm: bool = False) -> dict[str, Any]:
    """Restore through the backup API into ``target`` (one transaction of the target database: readers see the
    old or the new content; its WAL is handled by SQLite, never by file copies). A target that is a symbolic
    link (the application's user owns its data directory) is refused, and SQLite opens it with nofollow=1."""
    if target.is_symlink():
        raise BackupError(f"{target} is a symbolic link: not followed; remove it (or restore to another path)")
    if target.exists() and not confirm:
        raise BackupError(f"{target} exists; restoring replaces its content: pass confirm")
    check = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        integrity = sqlite_integrity(check)
    finally:
        check.close()
    if integrity != "ok":
        raise BackupError(f"the backup copy fails PRAGMA integrity_check: {integrity}")
    target.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(f"file:{urllib.parse.quote(str(target))}?nofollow=1", uri=True, timeout=60)
    except sqlite3.Error as exc:
        src.close()
        raise BackupError(f"cannot open {target} for the restore (a symbolic link is not followed): {exc}") from None
    try:
        src.backup(dst)
        counts = sqlite_counts(dst)
    finally:
        dst.close()
        src.close()
    return {"path": str(target), "tables": counts}


def place_redis_rdb(source: Path, target: Path, confirm: bool = False) -> dict[str, Any]:
    """Put the RDB where redis-server loads it (the service must be stopped: that is the role's job).
    Checked with redis-check-rdb first; placed atomically; owner and mode of the file it replaces are kept."""
    if os.path.lexists(target) and not confirm:
        raise BackupError(f"{target} exists; placing the RDB replaces it: pass confirm (and stop redis first)")
    info = check_rdb(source)
    before = os.lstat(target) if os.path.lexists(target) else None
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, CHUNK)
            if before is not None and stat.S_ISREG(before.st_mode):  # on the descriptor: never through a link
                with contextlib.suppress(PermissionError):
                    safefs.set_meta(out.fileno(), tmp, before.st_uid, before.st_gid, stat.S_IMODE(before.st_mode))
            out.flush()
            os.fsync(out.fileno())
            written = os.fstat(out.fileno())
        now = os.lstat(tmp)
        if (now.st_dev, now.st_ino) != (written.st_dev, written.st_ino):
            raise BackupError(f"{tmp} was replaced while it was written (another user writes in {target.parent}); "
                              "nothing was placed")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"path": str(target), "keys": info["keys"]}


def read_archive(path: Path, keys: Keys | None, into: safefs.Dir | None = None) -> tuple[int, str]:
    """Read a stored archive (decrypted with ``keys``) member by member with the checks a restore makes
    (``safefs.unpack_tar``): verify calls it without ``into``, restore with a fresh directory, so "verified"
    means "restore accepts it". Returns the number of members and the sha256 of the plain archive; BackupError
    names a member it refuses."""
    unreadable: Exception | None = None
    members = 0
    try:
        with _plain_reader(path, keys) as reader:
            try:
                members = safefs.unpack_tar(reader, into)
                while reader.read(CHUNK):  # the whole stream: age's exit status and gzip's trailer are checked
                    pass
            except (tarfile.TarError, EOFError, zlib.error) as exc:
                unreadable = exc  # a failed decryption (raised when the reader closes) says more
    except safefs.UnsafeMember as exc:
        raise BackupError(f"{path.name} holds an {exc}; a restore refuses it, nothing was extracted") from None
    if unreadable is not None:
        raise BackupError(f"{path.name} is not a readable tar.gz: {unreadable}")
    return members, reader.sha.hexdigest()


def extract_archive(path: Path, target: Path, keys: Keys | None, confirm: bool = False) -> dict[str, Any]:
    """Extract a (decrypted) archive over ``target``; files not in the archive are left alone. The archive is
    unpacked into a fresh private directory beside ``target`` first (``read_archive``: unsafe members refused
    before anything reaches the target), then moved in rename by rename on directory descriptors: a link that
    the target holds (planted after the backup) is replaced, never followed. Replaces existing files only with
    ``confirm``."""
    target = Path(os.path.abspath(target))
    try:
        with safefs.Dir.open(str(target.parent), create=0o777) as parent, parent.sub(target.name, create=0o777) as dest:
            if dest.listdir() and not confirm:
                raise BackupError(f"{target} is not empty; extracting overwrites files there: pass confirm")
            with parent.fresh(f".{target.name}.restore-") as staging:
                count, _ = read_archive(path, keys, staging)
                safefs.merge(staging, dest, dry_run=True)
                safefs.merge(staging, dest)
    except safefs.UnsafePath as exc:
        raise BackupError(f"restoring {path.name} into {target}: {exc}") from None
    return {"path": str(target), "members": count}


def authentic_backup(cfg: dict[str, Any], backup_id: str | None, allow_unsigned: bool = False
                     ) -> tuple[Path, dict[str, Any]]:
    """The backup's directory and its manifest, which verifies with the set's key (BackupError otherwise; an
    unsigned one, format 1, only with ``allow_unsigned``)."""
    keys = _keys(cfg)
    directory = resolve_backup(Path(cfg["backup_root"]), backup_id, keys)
    manifest = load_manifest(directory)
    assert manifest is not None
    check_manifest(manifest, directory.name, keys, allow_unsigned)
    return directory, manifest


def restore_item(cfg: dict[str, Any], backup_id: str | None, name: str, target: str | None = None,
                 confirm: bool = False, allow_unsigned: bool = False) -> dict[str, Any]:
    """Restore one item. The backup's manifest must verify (``authentic_backup``); the item must be one the
    configuration names, as the same kind; where it goes (the database, the file, the directory) comes from the
    configuration, or from ``target`` (the operator's), never from the manifest."""
    directory, manifest = authentic_backup(cfg, backup_id, allow_unsigned)
    item, entry = _stored(directory, manifest, name)
    conf = configured_item(cfg, item, directory.name)
    keys = _keys(cfg) if entry.get("encrypted") else None
    where = {"postgresql": "dbname", "sqlite": "path", "redis": "rdb_path", "files": "path"}[item["kind"]]
    destination = target or conf.get(where)
    if not destination:
        raise ConfigError(f"{item['kind']} item {name!r}: {where} is not configured, and a restore never takes it "
                          f"from the backup's manifest; set {where} for this item (role backup) or pass --target")
    stored = directory / entry["path"]
    if item["kind"] == "postgresql" and entry.get("encrypted") and stored.name.endswith(ENC_SUFFIX):
        # age straight into pg_restore: no plain dump on disk, decryption beside the restore (format 1's
        # openssl CBC authenticates nothing: that one goes through _scratch_plain and its plain sha256)
        with _plain_reader(stored, keys) as reader:
            result = restore_postgresql(Pg(conf, float(cfg["timeouts"]["tool"])), reader, destination, confirm,
                                        item.get("tables"))
        return {"backup_id": directory.name, "item": name, "kind": item["kind"], **result}
    with tempfile.TemporaryDirectory(prefix="tradeops-restore-") as tmp:
        plain = stored
        if entry.get("encrypted") and item["kind"] != "files":
            plain = _scratch_plain(directory, entry, Path(tmp), keys)
        if item["kind"] == "postgresql":
            result = restore_postgresql(Pg(conf, float(cfg["timeouts"]["tool"])), plain, destination, confirm,
                                        item.get("tables"))
        elif item["kind"] == "sqlite":
            result = restore_sqlite(plain, Path(destination), confirm)
        elif item["kind"] == "redis":
            result = place_redis_rdb(plain, Path(destination), confirm)
        else:
            result = extract_archive(plain, Path(destination), keys, confirm)
    return {"backup_id": directory.name, "item": name, "kind": item["kind"], **result}


# --------------------------------------------------------------------------- metrics (node_exporter textfile)

_METRICS = {
    "last_success_timestamp_seconds": "Unix time of the last fully successful run (backup, offsite, verify asked)",
    "last_failure_timestamp_seconds": "Unix time of the last failed run",
    "last_run_success": "1 when the last run succeeded",
    "last_duration_seconds": "Seconds the last backup took",
    "last_size_bytes": "Bytes of the last backup",
    "last_verified": "1 when the newest backup passed its last verification (scratch restore), else 0",
    "last_verify_timestamp_seconds": "Unix time of the last verification",
    "offsite_pending": "Local backups whose offsite copy is not complete",
}


def write_metrics(metrics_dir: str | Path, set_name: str, **values: float | None) -> Path:
    """Update this set's values in ``<dir>/tradeops_backup.prom`` (every set of the host, one file)."""
    return update_textfile(metrics_dir, "tradeops_backup", _METRICS, [({"set": set_name}, values)])


# --------------------------------------------------------------------------- CLI


UNSIGNED_HELP = ("accept a backup made before manifests were signed (format 1); anyone who can write the bucket can "
                 "forge one: only on purpose")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=TOOL, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Back up a tradeops backup set (PostgreSQL, SQLite, Redis, directories), prove it restorable, "
                    "keep it offsite (S3) and restore it.",
        epilog="exit codes: 0 ok; 1 verification failed or partial (e.g. local backup kept, offsite failed); "
               "2 error (nothing done: bad config, backup failed, unknown backup id); 3 could not check\n\n"
               f"decrypt a stored file by hand: {DECRYPT_HINT}\n"
               "backups made before manifests were signed (format 1) are refused unless --allow-unsigned")
    parser.add_argument("--config", required=True, help="the backup set's JSON configuration file")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("backup", help="back up now, then upload what is missing offsite and prune")
    b.add_argument("--no-upload", action="store_true", help="do not upload offsite")
    b.add_argument("--no-prune", action="store_true", help="do not apply retention")
    b.add_argument("--verify", action="store_true", help="verify the new backup (scratch restores) before pruning")
    v = sub.add_parser("verify", help="prove a backup restorable (checksums, archives, scratch restores, offsite)")
    v.add_argument("--backup-id", help="backup to verify (default the newest)")
    v.add_argument("--no-scratch", action="store_true", help="no scratch restores (checksums and archives only)")
    v.add_argument("--no-offsite", action="store_true", help="do not compare the offsite copy")
    v.add_argument("--max-age-hours", type=float, help="freshness limit (default from the configuration)")
    v.add_argument("--allow-unsigned", action="store_true", help=UNSIGNED_HELP)
    ls = sub.add_parser("list", help="list local (or offsite) backups, newest first")
    ls.add_argument("--offsite", action="store_true", help="list the offsite backups")
    p = sub.add_parser("prune", help="apply retention (the newest verified backup is always kept)")
    p.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    p.add_argument("--offsite", action="store_true", help="prune the offsite copies too")
    u = sub.add_parser("upload", help="upload every local backup whose offsite copy is missing or incomplete")
    u.add_argument("--backup-id", help="only this backup")
    u.add_argument("--recheck", action="store_true", help="also compare backups whose upload completed before")
    f = sub.add_parser("fetch", help="download an offsite backup into backup_root (checked against its manifest)")
    f.add_argument("--backup-id", required=True)
    f.add_argument("--allow-unsigned", action="store_true", help=UNSIGNED_HELP)
    r = sub.add_parser("restore", help="restore items of a backup (stop the application first)")
    r.add_argument("--backup-id", help="default: latest-verified; 'latest' for the newest")
    r.add_argument("--item", action="append", help="item name (repeatable; default every item)")
    r.add_argument("--target", help="database name / file / directory to restore into (one --item only)")
    r.add_argument("--confirm", action="store_true", help="allow replacing existing data")
    r.add_argument("--allow-unsigned", action="store_true", help=UNSIGNED_HELP)
    d = sub.add_parser("decrypt", help="decrypt one stored file by hand with the set's key (age, or openssl for "
                                       "format 1)")
    d.add_argument("file", help="a stored .age (or format-1 .enc) file")
    d.add_argument("-o", "--output", required=True, help="where to write the plain file (created mode 0600)")
    return parser


def _print(result: Any, as_json: bool, text: str) -> None:
    print(json.dumps(result, indent=2, sort_keys=True, default=str) if as_json else text)


def backup_now(cfg: dict[str, Any], upload: bool = True, verify: bool = False, prune: bool = True
               ) -> dict[str, Any]:
    """What a scheduled run does: back up, upload what is missing offsite, verify (optional), prune, metrics.

    Raises BackupError when the backup itself failed (nothing kept). Otherwise returns the result; its
    ``problems`` list what failed after the local backup was made (offsite, verification, retention)."""
    started = time.time()
    metrics = cfg.get("metrics_dir")
    try:
        manifest = run_backup(cfg)
    except BackupError:
        if metrics:
            write_metrics(metrics, cfg["set"], last_failure_timestamp_seconds=time.time(), last_run_success=0)
        raise
    path = Path(cfg["backup_root"]) / manifest["backup_id"]
    result: dict[str, Any] = {"backup_id": manifest["backup_id"], "bytes": manifest["bytes"],
                              "duration": manifest["duration"], "path": str(path)}
    problems: list[str] = []
    upload = upload and bool(cfg.get("offsite"))
    if upload:
        try:
            result["offsite"] = upload_missing(cfg)
            problems += result["offsite"]["errors"]
        except BackupError as exc:
            problems.append(str(exc))
    if verify:
        report = verify_backup(cfg, manifest["backup_id"], offsite=upload and not problems)
        result["verify"] = report
        if report["status"] != PASSED:
            problems.append(report["message"])
        publish_verification(cfg, report, offsite=upload and not problems)
    if prune:
        try:
            result["prune"] = prune_local(cfg)
            if upload and not problems:
                result["prune_offsite"] = prune_offsite(cfg)
        except BackupError as exc:
            problems.append(str(exc))
    result["problems"] = problems
    if metrics:
        pending = sum(1 for b in list_backups(cfg["backup_root"]) if b["complete"] and b["offsite"] != "complete") \
            if cfg.get("offsite") else 0
        now = time.time()
        write_metrics(metrics, cfg["set"], last_duration_seconds=now - started, last_size_bytes=manifest["bytes"],
                      offsite_pending=pending, last_run_success=int(not problems),
                      **({"last_failure_timestamp_seconds": now} if problems else
                         {"last_success_timestamp_seconds": now}))
    return result


def _cmd_backup(cfg: dict[str, Any], args: argparse.Namespace) -> tuple[int, Any, str]:
    result = backup_now(cfg, upload=not args.no_upload, verify=args.verify, prune=not args.no_prune)
    problems = result["problems"]
    text = f"backup {result['backup_id']}: {result['bytes']} bytes in {result['duration']:.1f} s"
    text += "".join(f"\nproblem: {p}" for p in problems)
    return (EXIT_FAILED if problems else EXIT_OK), result, text


def publish_verification(cfg: dict[str, Any], report: dict[str, Any], offsite: bool = True) -> None:
    """After a recorded verification: the set's metrics, and ``verify.json`` offsite when it passed (best effort:
    the offsite retention then keeps this backup too)."""
    if cfg.get("metrics_dir"):
        write_metrics(cfg["metrics_dir"], cfg["set"], last_verified=int(report["status"] == PASSED),
                      last_verify_timestamp_seconds=time.time())
    if cfg.get("offsite") and offsite and report["status"] == PASSED:
        with contextlib.suppress(BackupError):
            S3Store(cfg).put_sidecar(Path(cfg["backup_root"]) / report["backup_id"])


def _cmd_verify(cfg: dict[str, Any], args: argparse.Namespace) -> tuple[int, Any, str]:
    report = verify_backup(cfg, args.backup_id, scratch_restore=not args.no_scratch,
                           offsite=False if args.no_offsite else None, max_age_hours=args.max_age_hours,
                           allow_unsigned=args.allow_unsigned)
    publish_verification(cfg, report, offsite=not args.no_offsite)
    lines = [report["message"]] + [f"  [{c['status']:>7}] {c['item']} {c['check']}: {c['detail']}"
                                   for c in report["checks"]]
    code = {PASSED: EXIT_OK, FAILED: EXIT_FAILED}.get(report["status"], EXIT_CANNOT_CHECK)
    return code, report, "\n".join(lines)


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main_cli(argv: Sequence[str] | None = None) -> int:
    """``tradeops-backup``; returns the exit code (0 ok, 1 failed/partial, 2 error, 3 could not check)."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return int(exc.code or 0) and EXIT_ERROR
    previous = None
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        previous = signal.signal(signal.SIGTERM, _interrupted)  # a stopped timer removes the partial backup
    secrets: list[str] = []
    try:
        cfg = load_config(args.config)
        secrets = config_secrets(cfg)
        if args.command == "backup":
            code, result, text = _cmd_backup(cfg, args)
        elif args.command == "verify":
            code, result, text = _cmd_verify(cfg, args)
        elif args.command == "list":
            result = S3Store(cfg).list_backups() if args.offsite else list_backups(cfg["backup_root"],
                                                                                  _keys_or_none(cfg))
            code = EXIT_OK
            text = "\n".join(f"{b['backup_id']}  {'complete' if b['complete'] else 'INCOMPLETE'}"
                             f"{'' if b.get('authentic') else '  NOT-AUTHENTIC'}"
                             f"{'  verified' if b.get('verified') else ''}" for b in result) or "no backups"
        elif args.command == "prune":
            result = {"local": prune_local(cfg, args.dry_run)}
            if args.offsite:
                result["offsite"] = prune_offsite(cfg, args.dry_run)
            code = EXIT_OK
            text = "\n".join(f"{where}: deleted {', '.join(r['deleted']) or 'nothing'}" for where, r in result.items())
        elif args.command == "upload":
            result = upload_missing(cfg, args.backup_id, recheck=args.recheck)
            code = EXIT_OK if not result["errors"] else EXIT_FAILED
            text = "\n".join([f"{u['backup_id']}: uploaded {len(u['uploaded'])} file(s)" for u in result["uploaded"]]
                             + [f"error: {e}" for e in result["errors"]])
        elif args.command == "fetch":
            path = S3Store(cfg).fetch(args.backup_id, Path(cfg["backup_root"]), args.allow_unsigned)
            result, code, text = {"path": str(path)}, EXIT_OK, str(path)
        elif args.command == "decrypt":
            source = Path(args.file)
            if not source.name.endswith((ENC_SUFFIX, LEGACY_ENC_SUFFIX)):
                raise ConfigError(f"{source} is not an encrypted backup file (.age, or .enc of format 1)")
            old_umask = os.umask(0o077)
            try:
                decrypt_file(source, Path(args.output), _keys(cfg))
            finally:
                os.umask(old_umask)
            result, code, text = {"path": args.output}, EXIT_OK, args.output
        else:
            result = []
            directory, manifest = authentic_backup(cfg, args.backup_id or "latest-verified", args.allow_unsigned)
            names = args.item or [i["name"] for i in manifest["items"]]
            if args.target and len(names) != 1:
                raise ConfigError("--target needs exactly one --item")
            by_name = {i["name"]: i for i in manifest["items"]}
            for name in names:  # every item checked before anything is restored
                if name in by_name:
                    configured_item(cfg, by_name[name], directory.name)
            for name in names:
                result.append(restore_item(cfg, directory.name, name, args.target, args.confirm,
                                           args.allow_unsigned))
            code = EXIT_OK
            text = "\n".join(f"restored {r['item']} ({r['kind']}) from {r['backup_id']}" for r in result)
    except CannotCheck as exc:
        print(f"{TOOL}: could not check: {redact(str(exc), secrets)}", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    except BackupError as exc:
        print(f"{TOOL}: error: {redact(str(exc), secrets)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{TOOL}: interrupted; partial files were removed", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # internal error: say so, never a success code
        print(f"{TOOL}: internal error: {type(exc).__name__}: {redact(str(exc), secrets)}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    _print(result, args.json, text)
    return code


if __name__ == "__main__":
    sys.exit(main_cli())
