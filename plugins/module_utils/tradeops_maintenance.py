# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scheduled maintenance of a host: SQLite upkeep, cache cleanup and health reports.

Standard library only. Shipped to hosts as ``tradeops_agent/maintenance.py`` in the ops agent wheel
(``scripts/build_agent.py``), the ``tradeops-maintenance`` command that role ``maintenance``'s timers call:

    tradeops-maintenance --config /etc/tradeops/maintenance.json sqlite
    tradeops-maintenance --config /etc/tradeops/maintenance.json cleanup [--dry-run]
    tradeops-maintenance --config /etc/tradeops/maintenance.json --json report --period daily
    tradeops-maintenance --config /etc/tradeops/maintenance.json check    # validate only

``sqlite``: for each configured database, on the live file (never a copy): ``PRAGMA journal_mode=WAL``,
``PRAGMA integrity_check``, then ``ANALYZE``, ``VACUUM`` and a WAL checkpoint, all under a busy timeout so the
application's own writes wait rather than fail. A database file that does not exist (yet) is skipped. Run as
root, the work is done with the database file's owner as effective user, so the ``-wal``/``-shm`` files it
creates stay usable by the application.

``cleanup``: files (and then empty directories) older than ``max_age_days`` under each configured
directory; the walk never follows a symbolic link and never leaves the directory.

``report``: host facts, the health checks of ``tradeops-health`` (the app_health options in ``health``) and,
when ``prometheus.url`` is set, Prometheus figures over the period (CPU / memory / disk average and peak,
availability of the app's blackbox probes, alerts that fired), written atomically as
``<reports_dir>/<host>-<period>-<date>.md`` and ``.json``; the newest ``keep`` of each period are kept.

Every run records ``tradeops_job_last_success{task=...}``, ``tradeops_job_last_run_timestamp_seconds`` and
``tradeops_job_last_duration_seconds`` in node_exporter's textfile directory (``metrics_dir``) through the one
shared writer (tradeops_metrics.update_textfile); the Prometheus rule ScheduledJobFailed reads the first.

Exit codes: 0 ok; 1 problems found (a database failed its integrity check, a file could not be removed, the
host's health is not healthy in a report); 2 error (bad configuration or arguments, nothing done); 3 could not
check (a database stayed locked past the busy timeout, Prometheus or a health check could not be read).
The job metric is 1 for exit 0, and for a report whose only problem is the host's health (the job did its
work); 0 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import socket
import sqlite3
import stat
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

try:
    from ansible.module_utils.tradeops_metrics import atomic_write, escape_label, update_textfile
    from ansible.module_utils.tradeops_safefs import Dir, UnsafePath
except ImportError:  # in the ops agent wheel: tradeops_agent/metrics.py, safefs.py (scripts/build_agent.py)
    from tradeops_agent.metrics import atomic_write, escape_label, update_textfile  # type: ignore[no-redef]
    from tradeops_agent.safefs import Dir, UnsafePath  # type: ignore[no-redef]
try:
    from ansible.module_utils import tradeops_health as health
except ImportError:  # in the ops agent wheel
    from tradeops_agent import health  # type: ignore[no-redef]

TOOL = "tradeops-maintenance"
EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR, EXIT_CANNOT_CHECK = 0, 1, 2, 3
OK, FAILED, SKIPPED, CANNOT_CHECK = "ok", "failed", "skipped", "cannot_check"
PERIODS = {"daily": 1, "monthly": 30}  # days covered by a report
JOB_STEM = "tradeops_job"
JOB_METRICS = {
    "last_success": "1 when the scheduled job's last run succeeded, else 0",
    "last_run_timestamp_seconds": "Unix time the scheduled job last finished",
    "last_duration_seconds": "Seconds the scheduled job's last run took",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
# Directories cleanup refuses as roots (and anything less than two levels deep).
_SYSTEM_DIRS = {"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root", "/run",
                "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib", "/var/log", "/usr/local",  # noqa: S108 - refused, not used
                "/var/tmp"}  # noqa: S108 - refused, not used


class MaintenanceError(Exception):
    """Bad configuration or arguments: nothing was done (exit 2)."""


class CannotCheck(Exception):
    """A source the job needs could not be read (exit 3)."""


# --------------------------------------------------------------------------- configuration

_DEFAULTS: dict[str, Any] = {
    "host": None,
    "metrics_dir": None,
    "sqlite": [],
    "busy_timeout_ms": 30000,
    "vacuum": True,
    "cleanup": [],
    "reports_dir": None,
    "keep": {"daily": 31, "monthly": 12},
    "health": {},
    "health_deadline": 30.0,
    "disk_paths": ["/"],
    "prometheus": None,
}
_PROMETHEUS_DEFAULTS: dict[str, Any] = {"url": None, "instance": None, "timeout": 10.0, "rate_window": "5m",
                                        "step": None, "probe_job": "blackbox"}


def load_config(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """The configuration (a JSON file or a dict) with defaults filled in; MaintenanceError when invalid."""
    if isinstance(source, dict):
        raw = dict(source)
    else:
        try:
            raw = json.loads(Path(source).read_text(encoding="utf-8"))
        except OSError as exc:
            raise MaintenanceError(f"cannot read the configuration {source}: {exc.strerror}") from exc
        except ValueError as exc:
            raise MaintenanceError(f"the configuration {source} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise MaintenanceError("the configuration must be a JSON object")
    unknown = sorted(set(raw) - set(_DEFAULTS))
    if unknown:
        raise MaintenanceError(f"unknown configuration keys: {', '.join(unknown)} (known: {', '.join(_DEFAULTS)})")
    cfg = json.loads(json.dumps(_DEFAULTS))
    for key, value in raw.items():
        if key == "keep" and isinstance(value, dict):
            cfg["keep"].update(value)
        elif value is not None:
            cfg[key] = value
    cfg["host"] = str(cfg["host"] or socket.gethostname().split(".")[0])
    if not _NAME.match(cfg["host"]):
        raise MaintenanceError(f"host {cfg['host']!r}: letters, digits, '.', '_' and '-' only")
    if not isinstance(cfg["busy_timeout_ms"], int) or isinstance(cfg["busy_timeout_ms"], bool) \
            or cfg["busy_timeout_ms"] < 0:
        raise MaintenanceError("busy_timeout_ms must be an integer >= 0 (milliseconds a locked database is waited for)")
    names: set[str] = set()
    if not isinstance(cfg["sqlite"], list):
        raise MaintenanceError("sqlite must be a list of {name, path}")
    for item in cfg["sqlite"]:
        if not isinstance(item, dict) or not os.path.isabs(str(item.get("path") or "")):
            raise MaintenanceError(f"sqlite entry {item!r}: an object with an absolute path is required")
        item.setdefault("name", Path(item["path"]).stem)
        if not _NAME.match(str(item["name"])) or item["name"] in names:
            raise MaintenanceError(f"sqlite entry {item['name']!r}: names must be unique (letters, digits, . _ -)")
        names.add(item["name"])
    if not isinstance(cfg["cleanup"], list):
        raise MaintenanceError("cleanup must be a list of {path, max_age_days}")
    for item in cfg["cleanup"]:
        if not isinstance(item, dict):
            raise MaintenanceError("cleanup: each entry must be an object {path, max_age_days}")
        check_cleanup_root(str(item.get("path") or ""))
        age = item.setdefault("max_age_days", 7)
        if not isinstance(age, int | float) or isinstance(age, bool) or not math.isfinite(age) or age <= 0:
            raise MaintenanceError(f"cleanup {item['path']}: max_age_days must be a number > 0 (got {age!r})")
    for period, keep in cfg["keep"].items():
        if period not in PERIODS or not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
            raise MaintenanceError(f"keep.{period}: periods are {', '.join(PERIODS)}, each kept as an integer >= 1")
    if cfg["reports_dir"] is not None and not os.path.isabs(str(cfg["reports_dir"])):
        raise MaintenanceError("reports_dir must be an absolute directory")
    if not isinstance(cfg["health"], dict):
        raise MaintenanceError("health must be an object of app_health options (http, systemd_units, thresholds...)")
    if cfg["prometheus"] is not None:
        if not isinstance(cfg["prometheus"], dict):
            raise MaintenanceError("prometheus must be an object {url, instance, ...} (or null)")
        prom = dict(_PROMETHEUS_DEFAULTS)
        unknown = sorted(set(cfg["prometheus"]) - set(prom))
        if unknown:
            raise MaintenanceError(f"unknown prometheus keys: {', '.join(unknown)}")
        prom.update({k: v for k, v in cfg["prometheus"].items() if v is not None})
        if not prom["url"]:
            cfg["prometheus"] = None
        else:
            try:
                health.check_url(prom["url"], "prometheus")
            except health.CheckError as exc:
                raise MaintenanceError(f"{exc}: give http(s)://host:port") from None
            if not re.match(r"^[0-9]+[smhd]\Z", str(prom["rate_window"])):
                raise MaintenanceError("prometheus.rate_window must be a Prometheus duration such as 5m")
            prom["url"] = str(prom["url"]).rstrip("/")
            prom["instance"] = prom["instance"] or cfg["host"]
            cfg["prometheus"] = prom
    return cfg


def check_cleanup_root(path: str) -> Path:
    """A directory cleanup may work under: absolute, normalised, at least two levels deep, not a system directory."""
    if not os.path.isabs(path):
        raise MaintenanceError(f"cleanup path {path!r}: an absolute directory is required")
    norm = os.path.normpath(path)
    if norm in _SYSTEM_DIRS or len(Path(norm).parts) < 3:  # '/', 'opt', 'x' (or 'C:\\', ...): two levels
        raise MaintenanceError(f"cleanup path {path!r}: refusing a system or top-level directory; "
                               "give the application's own cache or tmp directory (e.g. /opt/refapp/shared/cache)")
    return Path(norm)


# --------------------------------------------------------------------------- job metric


def record_job(metrics_dir: str | None, task: str, success: bool, duration: float,
               now: Callable[[], float] = time.time) -> Path | None:
    """``tradeops_job_*{task=...}`` in ``<metrics_dir>/tradeops_job.prom`` (no directory configured: nothing)."""
    if not metrics_dir:
        return None
    return update_textfile(metrics_dir, JOB_STEM, JOB_METRICS,
                           [({"task": task}, {"last_success": int(success), "last_run_timestamp_seconds": now(),
                                              "last_duration_seconds": duration})])


# --------------------------------------------------------------------------- sqlite


@contextlib.contextmanager
def as_owner_of(path: Path) -> Iterator[None]:
    """Run as root: the block runs with the file's owner as effective user and group (files it creates,
    such as ``-wal`` and ``-shm``, belong to the owner). Otherwise (or for a root-owned file): unchanged."""
    st = path.stat()
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or st.st_uid == 0:  # Windows: no owners to become
        yield
        return
    uid, gid = os.geteuid(), os.getegid()
    os.setegid(st.st_gid)
    os.seteuid(st.st_uid)
    try:
        yield
    finally:
        os.seteuid(uid)
        os.setegid(gid)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def _busy(exc: sqlite3.Error) -> bool:
    text = str(exc)
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def execute_patiently(conn: sqlite3.Connection, sql: str, deadline: float) -> list[Any]:
    """``sql``'s rows, retried until ``deadline`` (monotonic) while the database is busy. The busy timeout alone
    is not enough on a live database: where waiting could deadlock (this connection reads while the app's
    holds the write lock, e.g. during the switch to WAL) SQLite answers SQLITE_BUSY at once."""
    pause = 0.02
    while True:
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


def maintain_sqlite(path: str | Path, busy_timeout_ms: int = 30000, vacuum: bool = True) -> dict[str, Any]:
    """WAL mode, integrity check, ANALYZE, VACUUM and a WAL checkpoint on the live database ``path``.

    Returns ``{path, status, detail, journal_mode, integrity, size_before, size_after, duration}``; status is
    ``ok``, ``failed`` (not a database, or the integrity check found problems: ANALYZE/VACUUM are then not run),
    ``skipped`` (no file) or ``cannot_check`` (locked past the busy timeout, unreadable)."""
    path = Path(path)
    started = time.monotonic()
    result: dict[str, Any] = {"path": str(path), "status": OK, "detail": "", "journal_mode": None,
                              "integrity": None, "size_before": None, "size_after": None}
    if not path.exists():
        result.update(status=SKIPPED, detail="no database file (not created yet)")
        return result
    if not path.is_file():
        result.update(status=FAILED, detail="not a regular file")
        return result
    result["size_before"] = _size(path)
    uri = "file:" + urllib.parse.quote(str(path)) + "?mode=rw"
    try:
        with as_owner_of(path):
            conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout_ms / 1000, isolation_level=None)
            deadline = time.monotonic() + busy_timeout_ms / 1000
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
                result["journal_mode"] = execute_patiently(conn, "PRAGMA journal_mode = WAL", deadline)[0][0]
                rows = [r[0] for r in execute_patiently(conn, "PRAGMA integrity_check(100)", deadline)]
                result["integrity"] = rows
                if rows != ["ok"]:
                    result.update(status=FAILED, detail=f"integrity_check: {'; '.join(rows[:5])}")
                else:
                    deadline = time.monotonic() + busy_timeout_ms / 1000
                    execute_patiently(conn, "ANALYZE", deadline)
                    if vacuum:
                        execute_patiently(conn, "VACUUM", deadline)
                    execute_patiently(conn, "PRAGMA wal_checkpoint(TRUNCATE)", deadline)
                    result["detail"] = "WAL on, integrity ok, analyzed" + (", vacuumed" if vacuum else "")
            finally:
                conn.close()
    except sqlite3.DatabaseError as exc:
        if _busy(exc):
            result.update(status=CANNOT_CHECK, detail=f"{exc} (waited {busy_timeout_ms} ms)")
        elif isinstance(exc, sqlite3.OperationalError) and "unable to open" in str(exc):
            result.update(status=CANNOT_CHECK, detail=str(exc))
        else:
            result.update(status=FAILED, detail=str(exc))
    except OSError as exc:
        result.update(status=CANNOT_CHECK, detail=f"{exc.strerror or exc}")
    result["size_after"] = _size(path) if path.exists() else None
    if result["journal_mode"] and result["journal_mode"].lower() != "wal" and result["status"] == OK:
        result.update(status=FAILED, detail=f"journal_mode stayed {result['journal_mode']} (WAL refused)")
    result["duration"] = round(time.monotonic() - started, 3)
    return result


def run_sqlite(cfg: dict[str, Any]) -> dict[str, Any]:
    """Every configured database; ``status`` is the worst (failed > cannot_check > ok; skipped counts as ok)."""
    items = [{"name": db["name"], **maintain_sqlite(db["path"], cfg["busy_timeout_ms"], cfg["vacuum"])}
             for db in cfg["sqlite"]]
    statuses = {i["status"] for i in items}
    status = FAILED if FAILED in statuses else CANNOT_CHECK if CANNOT_CHECK in statuses else OK
    return {"task": "sqlite", "status": status, "databases": items}


# --------------------------------------------------------------------------- cleanup


def cleanup_dir(root: str | Path, max_age_days: float, now: float | None = None,
                dry_run: bool = False) -> dict[str, Any]:
    """Remove files and symbolic links under ``root`` last modified more than ``max_age_days`` ago, then the
    empty directories below ``root`` that are as old. Never follows a link, never leaves ``root``: the root is
    opened without following a link another user could have planted on the way (safefs.Dir) and the tree is
    walked on directory descriptors, so a directory swapped for a link mid-walk is not entered; every entry is
    examined and removed relative to its directory's descriptor."""
    root = check_cleanup_root(str(root))
    cutoff = (time.time() if now is None else now) - max_age_days * 86400
    result: dict[str, Any] = {"path": str(root), "status": OK, "removed": [], "kept": 0, "bytes": 0, "errors": []}
    try:
        with Dir.open(str(root.parent)) as parent:
            top = parent.sub(root.name)
    except FileNotFoundError:
        result.update(status=SKIPPED, detail="no such directory")
        return result
    except UnsafePath as exc:
        result.update(status=SKIPPED, detail=f"{exc}")
        return result
    with top:
        for base, dirnames, filenames, here in top.walk():
            for name in filenames + dirnames:
                entry = os.path.join(base, name)
                try:
                    st = here.lstat(name)
                    if stat.S_ISDIR(st.st_mode):  # emptied below (deepest first): removed when old and empty
                        if st.st_mtime < cutoff and not dry_run:
                            with contextlib.suppress(OSError):  # not empty: kept
                                here.rmdir(name)
                                result["removed"].append(entry + "/")
                        continue
                    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)) or st.st_mtime >= cutoff:
                        result["kept"] += 1
                        continue
                    if not dry_run:
                        here.unlink(name)
                    result["removed"].append(entry)
                    result["bytes"] += st.st_size if stat.S_ISREG(st.st_mode) else 0
                except OSError as exc:
                    result["errors"].append(f"{entry}: {exc.strerror or exc}")
    if result["errors"]:
        result["status"] = FAILED
    return result


def run_cleanup(cfg: dict[str, Any], dry_run: bool = False, now: float | None = None) -> dict[str, Any]:
    items = [cleanup_dir(c["path"], c["max_age_days"], now=now, dry_run=dry_run) for c in cfg["cleanup"]]
    status = FAILED if any(i["status"] == FAILED for i in items) else OK
    return {"task": "cleanup", "status": status, "dry_run": dry_run, "directories": items}


# --------------------------------------------------------------------------- Prometheus


def _label_filter(**labels: str) -> str:
    """A PromQL label matcher list (PromQL strings escape like the exposition format's label values)."""
    return ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())


def period_range(period: str) -> str:
    return f"{PERIODS[period]}d"


def subquery_step(period: str) -> str:
    """The resolution of peaks and averages over a period: 1 min for a day, 10 min for a month."""
    return "1m" if period == "daily" else "10m"


def build_queries(instance: str, period: str, rate_window: str = "5m", step: str | None = None,
                  probe_job: str = "blackbox") -> dict[str, str]:
    """The PromQL of a report, by figure name. Averages and peaks are taken over ``[<period>:<step>]``."""
    rng, step = period_range(period), step or subquery_step(period)
    node = _label_filter(instance=instance)
    cpu = f'100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{{{node},mode="idle"}}[{rate_window}])))'
    mem = (f"100 * (1 - node_memory_MemAvailable_bytes{{{node}}} / node_memory_MemTotal_bytes{{{node}}})")
    probe = _label_filter(job=probe_job, instance=instance)
    fs = f'{node},fstype!~"tmpfs|ramfs|squashfs|overlay|nsfs"'
    disk = (f"max by (instance, mountpoint) (100 * (1 - node_filesystem_avail_bytes{{{fs}}}"
            f" / node_filesystem_size_bytes{{{fs}}}))")
    return {
        "cpu_avg": f"avg_over_time(({cpu})[{rng}:{step}])",
        "cpu_peak": f"max_over_time(({cpu})[{rng}:{step}])",
        "memory_avg": f"avg_over_time(({mem})[{rng}:{step}])",
        "memory_peak": f"max_over_time(({mem})[{rng}:{step}])",
        "disk_avg": f"avg_over_time(({disk})[{rng}:{step}])",
        "disk_peak": f"max_over_time(({disk})[{rng}:{step}])",
        "availability": f"100 * avg_over_time(probe_success{{{probe}}}[{rng}])",
        "alerts": f'max_over_time(ALERTS{{{_label_filter(alertstate="firing", instance=instance)}}}[{rng}])',
    }


def parse_vector(answer: Any) -> list[dict[str, Any]]:
    """``[{labels, value}]`` of a ``/api/v1/query`` answer holding an instant vector (CannotCheck otherwise)."""
    if not isinstance(answer, dict) or answer.get("status") != "success":
        error = answer.get("error") if isinstance(answer, dict) else None
        raise CannotCheck(f"Prometheus answered an error: {error or answer!r}")
    data = answer.get("data") or {}
    if data.get("resultType") != "vector":
        raise CannotCheck(f"Prometheus answered a {data.get('resultType')!r}, expected a vector")
    out = []
    for sample in data.get("result") or []:
        labels = {k: v for k, v in (sample.get("metric") or {}).items() if k != "__name__"}
        value = float(sample["value"][1])
        out.append({"labels": labels, "value": None if value != value else value})  # NaN: no data
    return out


def prometheus_get(url: str, query: str, at: float, timeout: float) -> Any:
    """One instant query (``GET /api/v1/query``) answered as decoded JSON; CannotCheck when unreachable."""
    full = f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": query, "time": f"{at:.3f}"})
    try:
        with urllib.request.urlopen(full, timeout=timeout) as resp:  # noqa: S310 - http(s) only (load_config)
            return json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:  # 400/422/503 carry Prometheus' JSON error
        with contextlib.suppress(ValueError, OSError):
            return json.loads(exc.read().decode("utf-8"))
        raise CannotCheck(f"Prometheus {url}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CannotCheck(f"Prometheus {url} unreachable: {reason}") from exc


def _one(samples: list[dict[str, Any]]) -> float | None:
    values = [s["value"] for s in samples if s["value"] is not None]
    return round(max(values), 2) if values else None


def summarize(answers: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Report figures from the parsed answers of ``build_queries`` (None = no data in the period)."""
    disks: dict[str, dict[str, float | None]] = {}
    for kind in ("avg", "peak"):
        for s in answers.get(f"disk_{kind}", []):
            mount = s["labels"].get("mountpoint", "?")
            disks.setdefault(mount, {"avg": None, "peak": None})[kind] = \
                None if s["value"] is None else round(s["value"], 2)
    availability = {s["labels"].get("probe", s["labels"].get("target", "?")): round(s["value"], 3)
                    for s in answers.get("availability", []) if s["value"] is not None}
    alerts = sorted({(s["labels"].get("alertname", "?"), s["labels"].get("severity", "")) for s in
                     answers.get("alerts", [])})
    return {
        "cpu_percent": {"avg": _one(answers.get("cpu_avg", [])), "peak": _one(answers.get("cpu_peak", []))},
        "memory_percent": {"avg": _one(answers.get("memory_avg", [])), "peak": _one(answers.get("memory_peak", []))},
        "disk_percent": dict(sorted(disks.items())),
        "availability_percent": dict(sorted(availability.items())),
        "alerts_fired": [{"alertname": a, "severity": s} for a, s in alerts],
    }


def prometheus_figures(prom: dict[str, Any], period: str, at: float,
                       get: Callable[[str, str, float, float], Any] = prometheus_get) -> dict[str, Any]:
    """Every figure of the period ending at ``at``, from the Prometheus at ``prom['url']``."""
    queries = build_queries(prom["instance"], period, prom["rate_window"], prom["step"], prom["probe_job"])
    answers = {name: parse_vector(get(prom["url"], q, at, float(prom["timeout"]))) for name, q in queries.items()}
    return {"url": prom["url"], "instance": prom["instance"], **summarize(answers), "queries": queries}


# --------------------------------------------------------------------------- report


def host_facts(disk_paths: Sequence[str]) -> dict[str, Any]:
    facts: dict[str, Any] = {"hostname": socket.gethostname(), "kernel": platform.release(),
                             "python": platform.python_version(), "cpus": os.cpu_count()}
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                facts["os"] = line.split("=", 1)[1].strip('"')
    with contextlib.suppress(OSError, ValueError, IndexError):
        facts["uptime_seconds"] = round(float(Path("/proc/uptime").read_text().split()[0]))
    with contextlib.suppress(OSError):
        facts["load_average"] = [round(v, 2) for v in os.getloadavg()]
    with contextlib.suppress(Exception):
        facts["memory_percent"] = round(health.memory_percent(), 1)
    disks = {}
    for path in disk_paths:
        with contextlib.suppress(OSError):
            disks[path] = round(health.disk_percent(path), 1)
    facts["disk_percent"] = disks
    return facts


def run_health(options: dict[str, Any], deadline: float) -> dict[str, Any] | None:
    """The checks of ``tradeops-health --config`` (app_health options); None when none are configured."""
    spec = health.HealthSpec.from_params(options)
    if spec.empty():
        return None
    try:
        return health.evaluate(spec, deadline=deadline).as_dict()
    except health.CheckError as exc:
        return {"status": CANNOT_CHECK, "error": str(exc), "checks": [], "failed_checks": []}


def report_stamp(period: str, when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d" if period == "daily" else "%Y-%m")


def _fmt(value: float | None, unit: str = " %") -> str:
    return "no data" if value is None else f"{value:g}{unit}"


def render_markdown(report: dict[str, Any]) -> str:
    """The Markdown of a report (the JSON holds the same figures)."""
    facts, lines = report["host_facts"], []
    lines += [f"# {report['host']}: {report['period']} report {report['date']}", "",
              f"Period {report['start']} to {report['end']} (UTC). Generated by {TOOL}.", "",
              "## Host", "", "| fact | value |", "| --- | --- |"]
    for key in ("hostname", "os", "kernel", "cpus", "uptime_seconds", "load_average", "memory_percent"):
        if key in facts:
            lines.append(f"| {key} | {facts[key]} |")
    for path, pct in facts.get("disk_percent", {}).items():
        lines.append(f"| disk {path} | {pct} % |")
    lines += ["", "## Health", ""]
    hc = report.get("health")
    if hc is None:
        lines.append("No health checks configured.")
    else:
        lines.append(f"Status: **{hc['status']}**" + (f" ({hc['error']})" if hc.get("error") else ""))
        if hc.get("checks"):
            lines += ["", "| check | status | detail |", "| --- | --- | --- |"]
            lines += [f"| {c['name']} | {c['status']} | {str(c.get('detail', '')).replace('|', '/')} |"
                      for c in hc["checks"]]
    lines += ["", "## Prometheus", ""]
    prom = report.get("prometheus")
    if prom is None:
        lines.append("No Prometheus URL configured.")
    elif prom.get("error"):
        lines.append(f"Could not read Prometheus: {prom['error']}")
    else:
        lines += [f"From {prom['url']} (instance {prom['instance']}).", "",
                  "| figure | average | peak |", "| --- | --- | --- |",
                  f"| CPU | {_fmt(prom['cpu_percent']['avg'])} | {_fmt(prom['cpu_percent']['peak'])} |",
                  f"| memory | {_fmt(prom['memory_percent']['avg'])} | {_fmt(prom['memory_percent']['peak'])} |"]
        lines += [f"| disk {m} | {_fmt(v['avg'])} | {_fmt(v['peak'])} |" for m, v in prom["disk_percent"].items()]
        lines += ["", "| probe | availability |", "| --- | --- |"]
        lines += [f"| {p} | {_fmt(v)} |" for p, v in prom["availability_percent"].items()] or ["| (none) | no data |"]
        fired = prom["alerts_fired"]
        lines += ["", "Alerts fired: " + (", ".join(f"{a['alertname']} ({a['severity']})" for a in fired)
                                         if fired else "none")]
    lines += ["", f"Result: **{report['status']}**" + "".join(f"\n- {p}" for p in report["problems"]), ""]
    return "\n".join(lines)


def prune_reports(directory: Path, host: str, period: str, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` reports of ``host`` and ``period`` (each of .md and .json)."""
    deleted = []
    for ext in (".md", ".json"):
        pattern = re.compile(rf"^{re.escape(host)}-{period}-\d{{4}}-\d{{2}}(-\d{{2}})?{re.escape(ext)}\Z")
        names = sorted((p.name for p in directory.iterdir() if pattern.match(p.name)), reverse=True)
        for name in names[keep:]:
            (directory / name).unlink()
            deleted.append(name)
    return deleted


def make_report(cfg: dict[str, Any], period: str, now: dt.datetime | None = None,
                get: Callable[[str, str, float, float], Any] = prometheus_get) -> dict[str, Any]:
    """Gather a report (nothing written): facts, health, Prometheus figures, status and problems."""
    if period not in PERIODS:
        raise MaintenanceError(f"--period {period!r}: use {' or '.join(PERIODS)}")
    now = now or dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(days=PERIODS[period])
    report: dict[str, Any] = {"host": cfg["host"], "period": period, "date": report_stamp(period, now),
                              "start": start.isoformat(timespec="seconds"), "end": now.isoformat(timespec="seconds"),
                              "host_facts": host_facts(cfg["disk_paths"]),
                              "health": run_health(cfg["health"], float(cfg["health_deadline"])),
                              "prometheus": None}
    problems, unreadable = [], []
    hc = report["health"]
    if hc is not None and hc["status"] == CANNOT_CHECK:
        unreadable.append(f"health: could not check: {hc['error']}")
    elif hc is not None and hc["status"] != health.HEALTHY:
        problems.append(f"health {hc['status']}: failing {', '.join(hc['failed_checks'])}")
    if cfg["prometheus"]:
        try:
            report["prometheus"] = prometheus_figures(cfg["prometheus"], period, now.timestamp(), get)
            fired = report["prometheus"]["alerts_fired"]
            if fired:
                problems.append("alerts fired: " + ", ".join(sorted({a["alertname"] for a in fired})))
        except CannotCheck as exc:
            report["prometheus"] = {"url": cfg["prometheus"]["url"], "error": str(exc)}
            unreadable.append(str(exc))
    report["problems"] = unreadable + problems
    report["status"] = CANNOT_CHECK if unreadable else FAILED if problems else OK
    return report


def write_report(cfg: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """Write ``<reports_dir>/<host>-<period>-<date>.{md,json}`` atomically, then apply the retention."""
    if not cfg["reports_dir"]:
        raise MaintenanceError("reports_dir is not configured: set it to the directory the reports go to")
    directory = Path(cfg["reports_dir"])
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{report['host']}-{report['period']}-{report['date']}"
    written = []
    for ext, text in ((".json", json.dumps(report, indent=2, sort_keys=True, default=str) + "\n"),
                      (".md", render_markdown(report))):
        atomic_write(directory / f"{stem}{ext}", text, 0o640)
        written.append(str(directory / f"{stem}{ext}"))
    deleted = prune_reports(directory, report["host"], report["period"], int(cfg["keep"][report["period"]]))
    return {"written": written, "deleted": deleted}


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=TOOL, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Scheduled maintenance of a tradeops host: SQLite upkeep (WAL, integrity_check, ANALYZE, "
                    "VACUUM), cleanup of old cache/tmp files, daily and monthly health reports (Markdown + JSON).",
        epilog="exit codes: 0 ok; 1 problems found (integrity check failed, a file not removed, host not healthy "
               "in a report); 2 error (bad configuration or arguments, nothing done); 3 could not check (database "
               "locked past the busy timeout, Prometheus or a health check unreadable).\n"
               "Each run writes tradeops_job_last_success{task=\"maintenance-<job>\"} to metrics_dir.")
    parser.add_argument("--config", required=True, help="JSON configuration (role maintenance writes it)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--no-metrics", action="store_true", help="do not write the job metric")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="only validate the configuration (exit 0 valid, 2 invalid); writes nothing")
    sub.add_parser("sqlite", help="WAL mode, integrity_check, ANALYZE, VACUUM on each configured database")
    c = sub.add_parser("cleanup", help="remove files older than max_age_days under the configured directories")
    c.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    r = sub.add_parser("report", help="write the health report of the period")
    r.add_argument("--period", choices=sorted(PERIODS), default="daily")
    return parser


def _text(result: dict[str, Any]) -> str:
    if result["task"] == "sqlite":
        return "\n".join(f"{d['name']}: {d['status']} {d['detail']}" for d in result["databases"]) or "no databases"
    if result["task"] == "cleanup":
        return "\n".join(f"{d['path']}: {d['status']}, removed {len(d['removed'])} ({d['bytes']} bytes), "
                         f"kept {d['kept']}" + "".join(f"\n  error: {e}" for e in d["errors"])
                         for d in result["directories"]) or "no directories"
    return "\n".join([f"report {result['status']}: {', '.join(result['written'])}"]
                     + [f"problem: {p}" for p in result["problems"]])


def main_cli(argv: Sequence[str] | None = None) -> int:
    """``tradeops-maintenance``; returns the exit code (0 ok, 1 problems, 2 error, 3 could not check)."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return int(exc.code or 0) and EXIT_ERROR
    started = time.monotonic()
    try:
        cfg = load_config(args.config)
    except MaintenanceError as exc:
        print(f"{TOOL}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.command == "check":
        print(json.dumps(cfg, indent=2, sort_keys=True) if args.json else f"{args.config}: valid")
        return EXIT_OK
    task = f"maintenance-{args.command}" + (f"-{args.period}" if args.command == "report" else "")
    try:
        if args.command == "sqlite":
            result = run_sqlite(cfg)
        elif args.command == "cleanup":
            result = run_cleanup(cfg, dry_run=args.dry_run)
        else:
            report = make_report(cfg, args.period)
            result = {"task": "report", **report, **write_report(cfg, report)}
        code = {OK: EXIT_OK, FAILED: EXIT_PROBLEMS, CANNOT_CHECK: EXIT_CANNOT_CHECK}[result["status"]]
    except MaintenanceError as exc:
        print(f"{TOOL}: error: {exc}", file=sys.stderr)
        result, code = None, EXIT_ERROR
    except Exception as exc:  # internal error: say so, never a success code
        print(f"{TOOL}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        result, code = None, EXIT_ERROR
    # A report that was written and only found the host unhealthy is a job that did its work.
    success = code == EXIT_OK or (result is not None and result["task"] == "report" and code == EXIT_PROBLEMS)
    if not args.no_metrics:
        try:
            record_job(cfg["metrics_dir"], task, success, time.monotonic() - started)
        except (OSError, ValueError) as exc:
            print(f"{TOOL}: could not write the job metric to {cfg['metrics_dir']}: {exc}", file=sys.stderr)
            code = code or EXIT_ERROR
    if result is not None:
        print(json.dumps(result, indent=2, sort_keys=True, default=str) if args.json else _text(result))
    return code


if __name__ == "__main__":
    sys.exit(main_cli())
